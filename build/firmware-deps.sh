#!/bin/sh
# Installs (as root, with apt) the Debian packages that `make firmware` and
# `make firmware-test` need on the build machine; otherwise names them and fails.
#   build/firmware-deps.sh build|test [amd64|arm64]
set -eu
what=${1:-build}
need=""
have() { command -v "$1" >/dev/null 2>&1; }
hasfile() { [ -e "$1" ]; }
have mcopy      || need="$need mtools"
have mkfs.fat   || hasfile /sbin/mkfs.fat || need="$need dosfstools"
have sfdisk     || hasfile /sbin/sfdisk || need="$need fdisk"
have mkfs.ext4  || hasfile /sbin/mkfs.ext4 || need="$need e2fsprogs"
have objcopy    || need="$need binutils"
have depmod     || hasfile /sbin/depmod || need="$need kmod"
have xz         || need="$need xz-utils"
hasfile /etc/ssl/certs/ca-certificates.crt || need="$need ca-certificates"
if [ "$what" = build ] && [ "${2:-amd64}" = arm64 ]; then
	have aarch64-linux-gnu-objcopy || need="$need binutils-aarch64-linux-gnu"
fi
if [ "$what" = test ]; then
	case "${2:-amd64}" in
	amd64)
		have qemu-system-x86_64 || need="$need qemu-system-x86"
		hasfile /usr/share/OVMF/OVMF_CODE.fd || need="$need ovmf" ;;
	arm64)
		have qemu-system-aarch64 || need="$need qemu-system-arm"
		hasfile /usr/share/AAVMF/AAVMF_CODE.fd || need="$need qemu-efi-aarch64" ;;
	esac
fi
[ -n "$need" ] || exit 0
if [ "$(id -u)" = 0 ] && have apt-get; then
	echo "firmware-deps: installing$need"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $need >/dev/null
	exit 0
fi
echo "firmware-deps: missing packages:$need (apt-get install$need, or run as root)" >&2
exit 1
