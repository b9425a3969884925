#!/usr/bin/env bash
# Runs the independent Python ext_authz client against the real `actguard serve`.
# Sets up its own virtualenv under target/ (PyPI only); nothing is installed system-wide.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=target/independent-venv
tests/python-venv.sh "$venv" tests/independent/requirements.txt
# Envoy's own API definitions ship inside the envoy-types crate source.
proto_root=$(cargo metadata --locked --format-version 1 | "$venv/bin/python" -c '
import json, os, sys
packages = json.load(sys.stdin)["packages"]
print(next(os.path.join(os.path.dirname(p["manifest_path"]), "proto") for p in packages if p["name"] == "envoy-types"))')
"$venv/bin/python" tests/independent/gen_stubs.py "$proto_root" target/independent-stubs
cargo build --locked --quiet --bin actguard
"$venv/bin/python" tests/independent/ext_authz_client.py target/debug/actguard target/independent-stubs
