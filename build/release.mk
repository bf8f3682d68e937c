# A release: cross builds, firmware images, SHA256SUMS and an ssh-keygen
# signature in build/out/release-VERSION/. See RELEASING.md.
# SIGNING_KEY=path to the release key (ssh-keygen -Y sign); RELEASE_ARCHS
# are the firmware architectures.

RELEASE_ARCHS ?= amd64 arm64
REL_VERSION   := $(VERSION)
SIGNING_KEY   ?=
RELEASE_ALLOW_DEV ?=

.PHONY: release release-verify

release: ## cross builds + firmware images + SHA256SUMS + signature (SIGNING_KEY=...)
	@GO='$(GO)' VERSION='$(REL_VERSION)' SIGNING_KEY='$(SIGNING_KEY)' RELEASE_ALLOW_DEV='$(RELEASE_ALLOW_DEV)' build/release.sh check
	@$(MAKE) --no-print-directory cross cross-test VERSION='$(REL_VERSION)'
	@for a in $(RELEASE_ARCHS); do $(MAKE) --no-print-directory firmware ARCH=$$a VERSION='$(REL_VERSION)' || exit 1; done
	@GO='$(GO)' VERSION='$(REL_VERSION)' RELEASE_ARCHS='$(RELEASE_ARCHS)' SIGNING_KEY='$(SIGNING_KEY)' RELEASE_ALLOW_DEV='$(RELEASE_ALLOW_DEV)' \
		build/release.sh assemble

release-verify: ## verify build/out/release-VERSION/ as a user would (ALLOWED_SIGNERS=file)
	@VERSION='$(REL_VERSION)' build/release.sh verify
