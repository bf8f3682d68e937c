#!/bin/sh
# Makes sure the programs the tests drive are present. As root it installs
# what is missing with apt; otherwise it names the packages and fails, so a
# test is never skipped silently for want of a tool.
set -eu
need=""
have() { command -v "$1" >/dev/null 2>&1; }
have curl      || need="$need curl"
have openssl   || need="$need openssl"
have tinyproxy || [ -x /usr/bin/tinyproxy ] || [ -x /usr/sbin/tinyproxy ] || need="$need tinyproxy"
have socat     || need="$need socat"
[ -n "$need" ] || exit 0
if [ "$(id -u)" = 0 ] && have apt-get; then
	echo "test-deps: installing$need"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $need >/dev/null
	# tinyproxy's package starts a system instance; the tests run their own.
	if command -v systemctl >/dev/null 2>&1; then systemctl disable --now tinyproxy >/dev/null 2>&1 || true; fi
	if [ -x /etc/init.d/tinyproxy ]; then /etc/init.d/tinyproxy stop >/dev/null 2>&1 || true; fi
	exit 0
fi
echo "test-deps: missing packages:$need" >&2
echo "test-deps: install them (apt-get install$need) or run 'make test' as root" >&2
exit 1
