# Cross builds: static, CGO off, trimmed, stripped, version-stamped binaries for
# every platform a release ships, into build/out/. Two builds of one commit are
# byte-identical (no VCS stamp, empty build ID, fixed paths).

CROSS_VERSION := $(VERSION)
CROSS_TARGETS := linux/amd64 linux/arm64 linux/arm windows/amd64
OUT           := build/out
CROSS_LDFLAGS := -s -w -X main.version=$(CROSS_VERSION) -buildid=
CROSS_FLAGS   := $(GOFLAGS) -buildvcs=false

.PHONY: cross cross-test cross-repro arm-test

cross: ## static binaries for linux/amd64, linux/arm64, linux/arm (v7), windows/amd64 into build/out/
	@GO='$(GO)' VERSION='$(CROSS_VERSION)' LDFLAGS='$(CROSS_LDFLAGS)' FLAGS='$(CROSS_FLAGS)' OUT='$(OUT)' \
		build/cross.sh $(CROSS_TARGETS)

cross-test: cross ## size budgets and dependency denylist of the cross-built binaries
	STOREGATE_CROSS_DIR=$(CURDIR)/$(OUT) STOREGATE_VERSION='$(CROSS_VERSION)' \
		$(GO) test -count=1 -v ./firmware/budget/

cross-repro: cross ## rebuild every target with an empty build cache elsewhere and compare byte for byte
	@GO='$(GO)' VERSION='$(CROSS_VERSION)' LDFLAGS='$(CROSS_LDFLAGS)' FLAGS='$(CROSS_FLAGS)' OUT='$(OUT)' \
		build/repro.sh $(CROSS_TARGETS)

arm-test: ## the gateway's tests as arm (v7) and arm64 programs under qemu user emulation
	GO='$(GO)' build/arm-test.sh
