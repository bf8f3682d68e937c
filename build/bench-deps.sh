#!/bin/sh
# Installs the peers that `make bench-peers` measures storegate against
# (Debian's tinyproxy and squid) when run as root, and stops the system
# services their packages start: the harness runs its own instances on free
# loopback ports with generated configs. Without root it only names what is
# missing; the harness then skips those columns and says why.
set -eu
need=""
[ -x /usr/bin/tinyproxy ] || [ -x /usr/sbin/tinyproxy ] || need="$need tinyproxy"
[ -x /usr/sbin/squid ] || need="$need squid"
if [ -n "$need" ]; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "bench-deps: installing$need"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq >/dev/null
		# shellcheck disable=SC2086
		apt-get install -y -qq --no-install-recommends $need >/dev/null
	else
		echo "bench-deps: missing$need (apt-get install$need as root); their columns will be skipped" >&2
		exit 0
	fi
fi
# The packages start system instances; stop and disable them so only the
# harness's own instances run during the measurement.
if [ "$(id -u)" = 0 ]; then
	for svc in tinyproxy squid; do
		if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
			systemctl disable --now "$svc" >/dev/null 2>&1 || true
		fi
		if [ -x "/etc/init.d/$svc" ]; then
			"/etc/init.d/$svc" stop >/dev/null 2>&1 || true
		fi
	done
fi
