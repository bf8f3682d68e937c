#!/bin/sh
# Checks that the cross builds are reproducible: rebuilds every target with
# an empty Go build cache, from a copy of the tree at another path, and
# compares the result byte for byte with build/out/. Run after `make cross`.
set -eu
cd "$(dirname "$0")/.."
: "${GO:=go}" "${VERSION:=dev}" "${OUT:=build/out}" "${FLAGS:=-trimpath -buildvcs=false}"
: "${LDFLAGS:=-s -w -buildid= -X main.version=$VERSION}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Another path for the source, so -trimpath is what makes paths disappear.
mkdir -p "$tmp/src"
git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$tmp/src"
mkdir -p "$tmp/out"
(cd "$tmp/src" && GOCACHE="$tmp/cache" GO=$GO VERSION=$VERSION OUT="$tmp/out" \
	FLAGS="$FLAGS" LDFLAGS="$LDFLAGS" sh build/cross.sh "$@" >/dev/null)
fail=0
for f in "$tmp"/out/storegate-*; do
	b=$(basename "$f")
	if cmp -s "$f" "$OUT/$b"; then
		echo "repro: $b identical ($(sha256sum <"$f" | cut -c1-16))"
	else
		echo "repro: $b DIFFERS from $OUT/$b" >&2
		fail=1
	fi
done
exit $fail
