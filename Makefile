# storegate build. `make help` lists the targets.
GO       ?= go
VERSION  := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
GOFLAGS  := -trimpath
POLICY   ?=
TESTFLAGS ?=

.PHONY: all build run test test-deps bench bench-go bench-go-compare lint clean help

all: build

help: ## list targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | sort

build: ## build the host binary into bin/storegate
	CGO_ENABLED=0 $(GO) build $(GOFLAGS) -ldflags '$(LDFLAGS)' -o bin/storegate ./cmd/storegate

run: build ## run the gateway in the foreground (POLICY=path, else the embedded default)
	./bin/storegate run $(if $(POLICY),--policy $(POLICY))

test-deps: ## install (as root) or name the tools the tests need
	@build/test-deps.sh

test: test-deps ## run all tests, then the concurrent packages again under the race detector
	$(GO) vet ./...
	$(GO) test -count=1 $(TESTFLAGS) ./...
	$(GO) test -race -count=1 $(TESTFLAGS) ./gateway/... ./cmd/... ./device/... ./agentside/...

BENCHCOUNT ?= 3
bench: bench-go bench-peers bench-tunnels-vm ## all benchmarks: Go micro-benchmarks, storegate vs direct, tinyproxy and squid, then 10,000 idle tunnels in a guest

# benchstat, pinned: `go run` fetches it into the module cache, go.mod is untouched.
BENCHSTAT ?= $(GO) run golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da

bench-go: build ## Go benchmarks: hot functions, tunnel throughput and CONNECT rate vs direct, with ratios
	@mkdir -p build/out
	$(GO) test -run '^$$' -bench . -benchmem -count $(BENCHCOUNT) ./gateway/ ./gateway/policy/ ./gateway/tlspeek/ | tee build/out/bench-go.txt
	@cp build/out/bench-go.txt build/out/bench-go-$$(date -u +%Y%m%dT%H%M%SZ).txt
	@awk -f build/ratios.awk build/out/bench-go.txt

bench-go-compare: ## two bench-go runs compared with benchstat: OLD=build/out/bench-go-A.txt NEW=build/out/bench-go-B.txt
	@test -n "$(OLD)" -a -n "$(NEW)" || { echo "usage: make bench-go-compare OLD=build/out/bench-go-A.txt NEW=build/out/bench-go-B.txt" >&2; exit 2; }
	$(BENCHSTAT) old=$(OLD) new=$(NEW)

lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf bin build/out

# Further targets (cross builds, firmware, benchmarks against peers) live in build/*.mk.
-include build/*.mk
