# Side-by-side benchmark: storegate against a direct connection, tinyproxy and
# squid, all on loopback (build/bench). QUICK=1 for a short run (under a
# minute; 33 s here), REPS=N to change the repetitions (default 3), BENCH_FLAGS
# for the rest (`go run ./build/bench -h`). Results: a table on stdout and JSON lines
# in build/out/bench-DATE.jsonl.
BENCH_FLAGS ?=
REPS        ?=
QUICK       ?=

.PHONY: bench-peers bench-deps bench-compare bench-tunnels-vm

bench-deps: ## install tinyproxy and squid for bench-peers (as root) and stop their services
	@build/bench-deps.sh

# A failed `make build` does not stop the run: the storegate columns are
# skipped with the reason and the peers are still measured.
bench-peers: bench-deps ## storegate vs direct, tinyproxy and squid side by side (QUICK=1, REPS=N)
	@mkdir -p build/out
	$(GO) build -o build/out/storegate-bench ./build/bench
	$(GO) build -o build/out/go-relay ./build/bench/relay
	@if $(MAKE) --no-print-directory build; then sg=bin/storegate; \
	else echo "bench-peers: make build failed; storegate will be skipped" >&2; sg=""; fi; \
	set -x; build/out/storegate-bench -storegate "$$sg" \
		-out build/out/bench-$$(date -u +%Y%m%dT%H%M%SZ).jsonl \
		$(if $(QUICK),-quick) $(if $(REPS),-reps $(REPS)) $(BENCH_FLAGS)

bench-compare: ## medians of two bench-peers runs side by side: OLD=a.jsonl NEW=b.jsonl
	@test -n "$(OLD)" -a -n "$(NEW)" || { echo "usage: make bench-compare OLD=build/out/bench-A.jsonl NEW=build/out/bench-B.jsonl" >&2; exit 2; }
	$(GO) run ./build/bench compare $(OLD) $(NEW)

# This host's hard RLIMIT_NOFILE (20,000) is too low for 10,000 tunnels, so
# the idle-tunnel levels also run in a small qemu guest whose init lifts it.
bench-tunnels-vm: ## idle tunnels 1,000/5,000/10,000 through storegate in a qemu guest (REPS=N, TIMEOUT_MIN=M, BENCH_FLAGS replace the harness flags)
	@mkdir -p build/out
	GO=$(GO) $(if $(REPS),REPS=$(REPS)) build/bench-vm.sh $(BENCH_FLAGS)
