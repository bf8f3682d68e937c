#!/bin/sh
# Measures storegate's idle tunnels (1,000, 5,000 and 10,000 by default) inside
# a small KVM guest, where init can raise RLIMIT_NOFILE past this host's hard
# limit (see build/bench/README.md):
#   build/bench-vm.sh [HARNESS FLAGS...]
# Env: REPS (default 3), TIMEOUT_MIN (bound on the guest under KVM in minutes,
# default 20; TCG gets 4 times it), GO, OUT (default build/out).
# Results: the harness's table on stdout, JSON lines in
# $OUT/bench-vm-DATE.jsonl and the table in $OUT/bench-vm-DATE.txt.
set -eu
cd "$(dirname "$0")/.."
: "${GO:=go}" "${OUT:=build/out}" "${REPS:=3}" "${TIMEOUT_MIN:=20}"
began=$(date +%s)

# qemu-system-x86 comes with the firmware test tools.
build/firmware-deps.sh test amd64

# Debian's kernel, fetched as the firmware build fetches it, into the same
# package cache; only its vmlinuz is unpacked, beside the firmware's sysroot.
cache=build/cache/amd64
mkdir -p "$cache/debs" "$cache/bench-vm"
kdepends() { apt-cache depends linux-image-amd64:amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9][^ :]*\).*/\1/p' | head -n1; }
kpkg=$(kdepends)
if [ -z "$kpkg" ]; then
	apt-get update -qq || true
	kpkg=$(kdepends)
fi
deb=""
if [ -n "$kpkg" ]; then
	file=$(apt-get download --print-uris "$kpkg:amd64" 2>/dev/null | awk '{print $2}' | tr -d "'")
	if [ -n "$file" ] && [ ! -s "$cache/debs/$file" ]; then
		echo "bench-vm: fetching $file"
		(cd "$cache/debs" && apt-get download -q "$kpkg:amd64" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
	fi
	[ -n "$file" ] && [ -s "$cache/debs/$file" ] && deb=$cache/debs/$file
fi
if [ -z "$deb" ]; then
	# Offline: any kernel package already in the cache will do.
	deb=$(ls -t "$cache"/debs/linux-image-[0-9]*_amd64.deb 2>/dev/null | head -n1 || true)
	[ -n "$deb" ] || { echo "bench-vm: no Debian kernel package: apt knows none and the cache $cache/debs has none" >&2; exit 1; }
	echo "bench-vm: apt unavailable; using the cached $deb"
fi
kdir=$cache/bench-vm/$(basename "$deb" .deb)
if ! ls "$kdir"/boot/vmlinuz-* >/dev/null 2>&1; then
	rm -rf "$kdir"
	mkdir -p "$kdir"
	dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$kdir" --wildcards './boot/vmlinuz-*'
fi
vmlinuz=$(ls "$kdir"/boot/vmlinuz-* | head -n1)

# Static binaries for the guest.
bin=$OUT/bench-vm
mkdir -p "$bin"
export CGO_ENABLED=0 GOOS=linux GOARCH=amd64
"$GO" build -trimpath -ldflags "-s -w" -o "$bin/init" ./build/bench/vm/init
"$GO" build -trimpath -ldflags "-s -w -X main.version=$(git describe --tags --always --dirty 2>/dev/null || echo dev)" \
	-o "$bin/storegate" ./cmd/storegate
"$GO" build -trimpath -o "$bin/storegate-bench" ./build/bench
"$GO" build -trimpath -o "$bin/runner" ./build/bench/vm/runner

if [ $# -eq 0 ]; then
	set -- -subjects storegate -only "idle tunnels" -tunnels 1000,5000,10000 -open-time 120s -reps "$REPS"
fi
out=$OUT/bench-vm-$(date -u +%Y%m%dT%H%M%SZ).jsonl
# The runner bounds qemu itself (a KVM try of at most 90 s, then up to 4 times
# TIMEOUT_MIN under TCG); timeout is the backstop for the runner.
status=0
timeout --kill-after=30s "$((TIMEOUT_MIN * 5 + 5))m" "$bin/runner" -kernel "$vmlinuz" -init "$bin/init" -storegate "$bin/storegate" \
	-bench "$bin/storegate-bench" -out "$out" -timeout "${TIMEOUT_MIN}m" -- "$@" || status=$?
echo "bench-vm: whole target took $(( $(date +%s) - began )) s (exit $status)"
exit "$status"
