#!/usr/bin/env bash
# Usage: tests/system-packages.sh PROGRAM=PACKAGE...
# Installs the Debian package of each real component the tests run (nginx, …) when its program
# is missing. apt-get needs root (CI runs as root); elsewhere, install the packages yourself.
set -euo pipefail
missing=()
for pair in "$@"; do
  program=${pair%%=*} package=${pair#*=}
  command -v "$program" >/dev/null || [ -x "/usr/sbin/$program" ] || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${missing[*]} (install them as root: apt-get install ${missing[*]})" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Installing a server must not start it: the tests start their own, on their own ports.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
