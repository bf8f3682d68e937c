#!/bin/sh
# Release steps called by build/release.mk (see RELEASING.md):
#   build/release.sh check      refuse a dirty tree or a version that is not vX.Y.Z
#   build/release.sh assemble   collect, compress, checksum and sign into build/out/release-$VERSION
#   build/release.sh verify     check the signature and the checksums as a user does
# RELEASE_ALLOW_DEV=1 lets a dirty tree or a non-release version through (for
# trying the process; such a build must never be published).
set -eu
cd "$(dirname "$0")/.."
: "${VERSION:=dev}" "${RELEASE_ARCHS:=amd64 arm64}" "${SIGNING_KEY:=}" "${RELEASE_ALLOW_DEV:=}"
namespace=storegate-release
dir=build/out/release-$VERSION

is_release_version() {
	echo "$VERSION" | grep -Eq '^v[0-9]+\.[0-9]+\.[0-9]+(-rc\.[0-9]+)?$'
}

case "${1:-}" in
check)
	if ! is_release_version || [ -n "$(git status --porcelain 2>/dev/null)" ]; then
		if [ -z "$RELEASE_ALLOW_DEV" ]; then
			echo "release: version $VERSION is not a clean vX.Y.Z tag checkout (tag the commit, commit or remove changes; RELEASE_ALLOW_DEV=1 to try the process)" >&2
			exit 1
		fi
		echo "release: WARNING: $VERSION is not a release version; do not publish this build" >&2
	fi
	if is_release_version && ! grep -q "^## $VERSION" CHANGELOG.md 2>/dev/null; then
		echo "release: CHANGELOG.md has no '## $VERSION' section" >&2
		[ -n "$RELEASE_ALLOW_DEV" ] || exit 1
	fi
	if [ -z "$SIGNING_KEY" ] && [ -z "$RELEASE_ALLOW_DEV" ]; then
		echo "release: set SIGNING_KEY to the release signing key (see RELEASING.md)" >&2
		exit 1
	fi
	;;
assemble)
	rm -rf "$dir"
	mkdir -p "$dir"
	for f in build/out/storegate-"$VERSION"-linux-* build/out/storegate-"$VERSION"-windows-*; do
		[ -f "$f" ] && cp "$f" "$dir/"
	done
	for a in $RELEASE_ARCHS; do
		img=build/out/storegate-$VERSION-$a.img
		[ -f "$img" ] || { echo "release: missing $img" >&2; exit 1; }
		# The image is mostly empty space: xz makes it a small download.
		xz -T2 -6 -c "$img" >"$dir/$(basename "$img").xz"
	done
	if [ -f CHANGELOG.md ]; then
		awk -v v="## $VERSION" 'index($0, v) == 1 {on=1; print; next} on && /^## / {exit} on {print}' CHANGELOG.md >"$dir/RELEASE-NOTES.md"
		[ -s "$dir/RELEASE-NOTES.md" ] || rm -f "$dir/RELEASE-NOTES.md"
	fi
	(cd "$dir" && find . -maxdepth 1 -type f ! -name 'SHA256SUMS*' -printf '%f\n' | LC_ALL=C sort | xargs sha256sum >SHA256SUMS)
	if [ -n "$SIGNING_KEY" ]; then
		ssh-keygen -q -Y sign -f "$SIGNING_KEY" -n "$namespace" "$dir/SHA256SUMS"
		echo "release: signed SHA256SUMS -> SHA256SUMS.sig"
	else
		echo "release: WARNING: unsigned (no SIGNING_KEY)" >&2
	fi
	echo "release: $dir"
	(cd "$dir" && ls -l | awk 'NR>1 {printf "  %-48s %12d\n", $9, $5}')
	;;
verify)
	: "${ALLOWED_SIGNERS:=build/allowed_signers}"
	[ -f "$ALLOWED_SIGNERS" ] || { echo "release: no $ALLOWED_SIGNERS (the trusted release keys)" >&2; exit 1; }
	signer=$(awk 'NF && $1 !~ /^#/ {print $1; exit}' "$ALLOWED_SIGNERS")
	ssh-keygen -Y verify -f "$ALLOWED_SIGNERS" -I "$signer" -n "$namespace" -s "$dir/SHA256SUMS.sig" <"$dir/SHA256SUMS"
	(cd "$dir" && sha256sum --strict -c SHA256SUMS)
	;;
*)
	echo "usage: build/release.sh check|assemble|verify" >&2
	exit 2
	;;
esac
