#!/bin/sh
# Builds the storegate firmware image for one architecture:
#   build/firmware.sh ARCH   (ARCH=amd64 or arm64; DEBUG=1 adds a shell)
# into build/out/storegate-$VERSION-$ARCH.img: a GPT disk with
#   1. "EFI system"      FAT32, \EFI\BOOT\BOOT{X64,AA64}.EFI, a unified kernel
#                        image (systemd's EFI stub + Debian's kernel + our
#                        initramfs + the kernel command line);
#   2. "STOREGATE"       FAT, label STOREGATE: policy.yaml and README.txt;
#   3. "storegate-data"  left empty: init creates ext4 on it at first boot and
#                        checks (e2fsck -p) and repairs it on every boot.
# Debian packages (kernel, e2fsprogs and its libraries, the EFI stub) are
# fetched with apt-get download into build/cache/$ARCH (not committed).
set -eu
cd "$(dirname "$0")/.."
ARCH=${1:-${ARCH:-amd64}}
: "${GO:=go}" "${VERSION:=dev}" "${OUT:=build/out}" "${DEBUG:=}"
: "${SOURCE_DATE_EPOCH:=$(git log -1 --format=%ct 2>/dev/null || echo 0)}"
export SOURCE_DATE_EPOCH

case "$ARCH" in
amd64) stub=linuxx64.efi.stub bootefi=BOOTX64.EFI console=ttyS0 binutils="" ;;
arm64) stub=linuxaa64.efi.stub bootefi=BOOTAA64.EFI console=ttyAMA0 binutils=aarch64-linux-gnu- ;;
*) echo "firmware: ARCH must be amd64 or arm64, not $ARCH" >&2; exit 2 ;;
esac
build/firmware-deps.sh build "$ARCH"
if [ "$ARCH" != "$(dpkg --print-architecture)" ]; then
	if ! dpkg --print-foreign-architectures | grep -qx "$ARCH"; then
		echo "firmware: enabling apt's $ARCH architecture to fetch its packages"
		dpkg --add-architecture "$ARCH"
		apt-get update -qq
	fi
fi

cache=build/cache/$ARCH
sysroot=$cache/sysroot
work=$cache/work
mkdir -p "$cache/debs" "$OUT"
rm -rf "$sysroot" "$work"
mkdir -p "$sysroot" "$work"

# The kernel: linux-image-$ARCH is a metapackage naming the current ABI.
kpkg=$(apt-cache depends "linux-image-$ARCH:$ARCH" 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9][^ :]*\).*/\1/p' | head -n1)
if [ -z "$kpkg" ]; then
	apt-get update -qq
	kpkg=$(apt-cache depends "linux-image-$ARCH:$ARCH" | sed -n 's/^ *Depends: \(linux-image-[0-9][^ :]*\).*/\1/p' | head -n1)
fi
[ -n "$kpkg" ] || { echo "firmware: apt knows no linux-image-$ARCH" >&2; exit 1; }
pkgs="$kpkg e2fsprogs libext2fs2 libcom-err2 libblkid1 libuuid1 libc6 systemd-boot-efi"
[ -n "$DEBUG" ] && pkgs="$pkgs busybox-static"
for p in $pkgs; do
	# Download only what the cache lacks (the file name carries the version).
	file=$(apt-get download --print-uris "$p:$ARCH" | awk '{print $2}' | tr -d "'")
	[ -n "$file" ] || { echo "firmware: apt cannot download $p:$ARCH" >&2; exit 1; }
	if [ ! -s "$cache/debs/$file" ]; then
		echo "firmware: fetching $file"
		(cd "$cache/debs" && apt-get download -q "$p:$ARCH" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
		[ -s "$cache/debs/$file" ] || { echo "firmware: download of $p:$ARCH failed" >&2; exit 1; }
	fi
	dpkg-deb -x "$cache/debs/$file" "$sysroot"
done
release=$(ls "$sysroot/lib/modules")
depmod -b "$sysroot" "$release"
vmlinuz=$sysroot/boot/vmlinuz-$release
# arm64's vmlinuz is a gzip-compressed Image; the stub needs the PE inside.
if [ "$(head -c2 "$vmlinuz" | od -An -tx1 | tr -d ' ')" = 1f8b ]; then
	gzip -dc "$vmlinuz" >"$work/Image"
	vmlinuz=$work/Image
fi

# Our init and the gateway, static, for the target.
CGO_ENABLED=0 GOOS=linux GOARCH=$ARCH "$GO" build -trimpath -buildvcs=false \
	-ldflags "-s -w -buildid=" -o "$work/init" ./firmware/init
gw=$OUT/storegate-$VERSION-linux-$ARCH
GO=$GO VERSION=$VERSION OUT=$OUT LDFLAGS="-s -w -buildid= -X main.version=$VERSION" build/cross.sh "linux/$ARCH" >/dev/null

# The example policy: the gateway's embedded default, with a firmware note.
CGO_ENABLED=0 "$GO" build -trimpath -o "$work/storegate-host" ./cmd/storegate
{
	cat firmware/policy-header.yaml
	if ! "$work/storegate-host" policy default 2>/dev/null; then
		cat gateway/policy/default.yaml
	fi
} >"$work/policy.yaml"
"$work/storegate-host" policy check "$work/policy.yaml" >/dev/null 2>&1 ||
	echo "firmware: warning: 'storegate policy check' does not accept the example policy (yet)" >&2

shell=""
[ -n "$DEBUG" ] && shell=$sysroot/bin/busybox
CGO_ENABLED=0 "$GO" run ./firmware/mkinitramfs -o "$work/initrd.gz" -sysroot "$sysroot" -release "$release" \
	-init "$work/init" -storegate "$gw" ${shell:+-shell "$shell"} \
	-elf sbin/mke2fs=/sbin/mke2fs -elf sbin/e2fsck=/sbin/e2fsck \
	-file "etc/mke2fs.conf=$sysroot/etc/mke2fs.conf" \
	-file "etc/ssl/certs/ca-certificates.crt=/etc/ssl/certs/ca-certificates.crt" \
	-file "etc/storegate/policy.yaml=$work/policy.yaml"

# The unified kernel image: the stub boots the kernel in .linux with the
# initramfs in .initrd and the command line in .cmdline; sections go after
# the stub's own image, each aligned.
cmdline="console=$console,115200 quiet loglevel=4 panic=10 storegate.console=$console"
[ -n "$DEBUG" ] && cmdline="$cmdline storegate.debug=1"
printf '%s' "$cmdline" >"$work/cmdline"
printf 'NAME="storegate"\nID=storegate\nVERSION_ID="%s"\nPRETTY_NAME="storegate %s (%s)"\n' \
	"$VERSION" "$VERSION" "$release" >"$work/os-release"
stubfile=$sysroot/usr/lib/systemd/boot/efi/$stub
align() { echo $(( ($1 + 0xfffff) / 0x100000 * 0x100000 )); }
size() { wc -c <"$1"; }
base=$(${binutils}objdump -p "$stubfile" | awk '/^ImageBase/{print $2}')
soi=$(${binutils}objdump -p "$stubfile" | awk '/^SizeOfImage/{print $2}')
osrel=$(align $((0x$base + 0x$soi)))
cmdl=$(align $((osrel + $(size "$work/os-release"))))
linux=$(align $((cmdl + $(size "$work/cmdline"))))
initrd=$(align $((linux + $(size "$vmlinuz"))))
mkdir -p "$work/esp/EFI/BOOT"
"${binutils}objcopy" \
	--add-section .osrel="$work/os-release" --change-section-vma .osrel="$(printf 0x%x "$osrel")" \
	--add-section .cmdline="$work/cmdline" --change-section-vma .cmdline="$(printf 0x%x "$cmdl")" \
	--add-section .linux="$vmlinuz" --change-section-vma .linux="$(printf 0x%x "$linux")" \
	--add-section .initrd="$work/initrd.gz" --change-section-vma .initrd="$(printf 0x%x "$initrd")" \
	"$stubfile" "$work/esp/EFI/BOOT/$bootefi"
# objcopy stamps the PE header with the current time: use the commit's, and
# clear the (optional, unchecked by UEFI) checksum that depends on it.
uki=$work/esp/EFI/BOOT/$bootefi
pe=$(od -An -tu4 -j60 -N4 "$uki" | tr -d ' ')
perl -e 'print pack("V", $ARGV[0])' "$SOURCE_DATE_EPOCH" | dd of="$uki" bs=1 seek=$((pe + 8)) conv=notrunc status=none
head -c4 /dev/zero | dd of="$uki" bs=1 seek=$((pe + 88)) conv=notrunc status=none

# The STOREGATE partition's files.
mkdir -p "$work/cfg"
cp "$work/policy.yaml" "$work/cfg/policy.yaml"
sed "s/@VERSION@/$VERSION/g; s/@ARCH@/$ARCH/g" firmware/README.txt >"$work/cfg/README.txt"
find "$work/esp" "$work/cfg" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

# Partition sizes in MiB; the image is the sum plus 1 MiB in front (GPT and
# alignment) and 1 MiB behind (the backup GPT).
esp_mib=64 cfg_mib=16 data_mib=64
total_mib=$((1 + esp_mib + cfg_mib + data_mib + 1))
mkfs=$(command -v mkfs.fat || echo /sbin/mkfs.fat)
rm -f "$work/esp.img" "$work/cfg.img"
"$mkfs" --invariant -i 5354470e -F 32 -n EFI -C "$work/esp.img" $((esp_mib * 1024)) >/dev/null
"$mkfs" --invariant -i 53544701 -F 16 -n STOREGATE -C "$work/cfg.img" $((cfg_mib * 1024)) >/dev/null
export MTOOLS_SKIP_CHECK=1
mmd -i "$work/esp.img" ::/EFI ::/EFI/BOOT
mcopy -m -i "$work/esp.img" "$work/esp/EFI/BOOT/$bootefi" "::/EFI/BOOT/$bootefi"
mcopy -m -i "$work/cfg.img" "$work/cfg/policy.yaml" "$work/cfg/README.txt" ::/

img=$OUT/storegate-$VERSION-$ARCH.img
rm -f "$img"
truncate -s "${total_mib}M" "$img"
sfdisk=$(command -v sfdisk || echo /sbin/sfdisk)
"$sfdisk" --quiet --no-reread --no-tell-kernel "$img" <<EOT
label: gpt
label-id: 5354524F-4547-4154-4500-000000000000
unit: sectors
first-lba: 2048
start=2048, size=$((esp_mib * 2048)), type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=5354524F-4547-4154-4500-000000000001, name="EFI system"
start=$(( (1 + esp_mib) * 2048 )), size=$((cfg_mib * 2048)), type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, uuid=5354524F-4547-4154-4500-000000000002, name="STOREGATE"
start=$(( (1 + esp_mib + cfg_mib) * 2048 )), size=$((data_mib * 2048)), type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=5354524F-4547-4154-4500-000000000003, name="storegate-data"
EOT
dd if="$work/esp.img" of="$img" bs=1M seek=1 conv=notrunc,sparse status=none
dd if="$work/cfg.img" of="$img" bs=1M seek=$((1 + esp_mib)) conv=notrunc,sparse status=none
echo "firmware: $img ($(wc -c <"$img") bytes; kernel $release; UKI $(wc -c <"$work/esp/EFI/BOOT/$bootefi") bytes, initramfs $(wc -c <"$work/initrd.gz") bytes)"
