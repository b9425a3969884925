#!/usr/bin/env bash
# Usage: tests/python-venv.sh VENV REQUIREMENTS
# Creates VENV (under target/) if needed and installs the pinned REQUIREMENTS from PyPI;
# nothing is installed system-wide. Prints nothing on success.
set -euo pipefail
venv=$1 requirements=$2
command -v python3 >/dev/null || { echo "python3 is required" >&2; exit 1; }
if [ ! -x "$venv/bin/python" ] && ! python3 -m venv "$venv" 2>/dev/null; then
  # No venv module (Debian without python3-venv): a virtualenv from PyPI, still under target/.
  rm -rf "$venv"
  python3 -m pip install --quiet --disable-pip-version-check --target target/virtualenv-bootstrap virtualenv
  PYTHONPATH=target/virtualenv-bootstrap python3 -m virtualenv --quiet "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
