#!/bin/sh
# Builds storegate for each GOOS/GOARCH given as an argument into $OUT as
# storegate-$VERSION-$GOOS-$GOARCH[.exe] and prints the sizes. Called by
# `make cross`; the Makefile passes GO, VERSION, LDFLAGS, FLAGS and OUT.
set -eu
: "${GO:=go}" "${VERSION:=dev}" "${OUT:=build/out}" "${FLAGS:=-trimpath -buildvcs=false}"
: "${LDFLAGS:=-s -w -buildid= -X main.version=$VERSION}"
# binpath GOOS/GOARCH sets goos, goarch and bin, the output file.
binpath() {
	goos=${1%/*}
	goarch=${1#*/}
	ext=""
	if [ "$goos" = windows ]; then ext=".exe"; fi
	bin="$OUT/storegate-$VERSION-$goos-$goarch$ext"
}
mkdir -p "$OUT"
for target in "$@"; do
	binpath "$target"
	# GOARM=7 only matters for linux/arm; GOAMD64=v1 keeps old store boxes working.
	# shellcheck disable=SC2086
	CGO_ENABLED=0 GOOS=$goos GOARCH=$goarch GOARM=7 GOAMD64=v1 GOARM64=v8.0 \
		"$GO" build $FLAGS -ldflags "$LDFLAGS" -o "$bin" ./cmd/storegate
done
echo "cross: sizes (bytes)"
for target in "$@"; do
	binpath "$target"
	printf '  %-40s %10d\n' "$(basename "$bin")" "$(wc -c <"$bin")"
done
