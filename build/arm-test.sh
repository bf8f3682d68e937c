#!/bin/sh
# Runs the gateway's test suites as 32-bit ARM (v7) and arm64 programs under
# qemu user-mode emulation on this machine: the box hardware storegate ships
# for, with its word size and alignment rules. The system calls go to the host
# kernel, so the tunnels, splice and sockets are real.
#
# Three tests cannot run under user-mode emulation and are skipped by name:
#   TestIdleTunnelIsClosed, TestRelayBytesWithItsAnswer
#                           qemu passes getsockopt(TCP_INFO) back truncated to
#                           an int, so the idle time reads as zero;
#   TestKillDurability      re-executes its own binary, which needs binfmt_misc.
set -eu
GO=${GO:-go}
pkgs="./gateway ./gateway/events ./gateway/link ./gateway/metrics ./gateway/policy ./gateway/spool ./gateway/spool/queue ./gateway/tlspeek ./agentside"
skip='^(TestIdleTunnelIsClosed|TestRelayBytesWithItsAnswer|TestKillDurability)$'
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
status=0
for arch in arm arm64; do
	qemu=qemu-$arch
	[ "$arch" = arm64 ] && qemu=qemu-aarch64
	if ! command -v "$qemu" >/dev/null 2>&1; then
		echo "arm-test: $qemu not found (apt-get install qemu-user)" >&2
		exit 1
	fi
	for p in $pkgs; do
		bin="$tmp/$(echo "$p" | tr ./ __)-$arch.test"
		GOOS=linux GOARCH=$arch GOARM=7 CGO_ENABLED=0 $GO test -c -o "$bin" "$p"
		[ -f "$bin" ] || continue # no test files
		# A test binary runs in its package directory, as go test does.
		if (cd "$p" && "$qemu" "$bin" -test.count=1 -test.skip "$skip" >"$bin.log" 2>&1); then
			echo "ok   $arch $p"
		else
			echo "FAIL $arch $p"
			tail -30 "$bin.log"
			status=1
		fi
	done
done
exit $status
