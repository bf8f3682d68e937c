# The flashable firmware image and its boot test under QEMU with UEFI.
# ARCH=amd64 (default) or arm64; DEBUG=1 adds a shell on tty1.

ARCH    ?= amd64
# VERSION (:=) runs git describe once per make run; a sub-make runs it again,
# so firmware-test-arm64 hands FW_VERSION down: a commit landing mid-build
# must not rename the image.
FW_VERSION := $(VERSION)
DEBUG   ?=
FIRMWARE_IMAGE = build/out/storegate-$(FW_VERSION)-$(ARCH).img

.PHONY: firmware firmware-test firmware-test-arm64

firmware: ## disk image build/out/storegate-VERSION-ARCH.img (ARCH=amd64|arm64)
	@GO='$(GO)' VERSION='$(FW_VERSION)' OUT=build/out DEBUG='$(DEBUG)' build/firmware.sh $(ARCH)

firmware-test: firmware ## boot the image in QEMU with OVMF/AAVMF, drive console and proxy, power off
	@build/firmware-deps.sh test $(ARCH)
	STOREGATE_FIRMWARE_IMAGE=$(CURDIR)/$(FIRMWARE_IMAGE) STOREGATE_FIRMWARE_ARCH=$(ARCH) \
		$(GO) test -count=1 -v -timeout 20m -run '^TestBootImage$$' ./firmware/

firmware-test-arm64: ## the boot test for arm64 (slower: full emulation)
	@$(MAKE) --no-print-directory firmware-test ARCH=arm64 VERSION='$(FW_VERSION)'
