#!/usr/bin/env bash
# Validates deploy/kubernetes offline (kustomize outputs against the Kubernetes API schemas,
# CRDs against Istio's and cert-manager's models or the fields we rely on) and drives the real
# `actguard inject` webhook with AdmissionReviews, applying its patches with an independent
# JSON Patch library. Needs kubectl (with kustomize) on PATH.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v kubectl >/dev/null || { echo "tests/kubernetes: kubectl (with kustomize) is required" >&2; exit 1; }
venv=target/kubernetes-venv
tests/python-venv.sh "$venv" tests/kubernetes/requirements.txt
cargo build --locked --quiet --bin actguard
"$venv/bin/python" tests/kubernetes/validate.py target/debug/actguard
