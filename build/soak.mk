# Soak: storegate under sustained mixed load on loopback (build/soak): TLS
# tunnels through inspection, a third of them on the TLS listener, spool
# deliveries with receiver outages, a
# policy rewrite every 2 s; it fails when descriptors, goroutines,
# connections or memory are not given back. SOAK_TIME=10m by default.
SOAK_TIME ?= 10m

.PHONY: soak

soak: build ## storegate under mixed load for SOAK_TIME (10m), then checks it gave back descriptors, goroutines, connections and memory
	$(GO) run ./build/soak -storegate bin/storegate -duration $(SOAK_TIME)
