#!/usr/bin/env bash
# Installs the official MCP Python SDK (PyPI `mcp`, pinned) into target/mcp-venv, a venv of its
# own: tests/mcp.rs runs its server behind Envoy and its client in front. Nothing system-wide.
set -euo pipefail
cd "$(dirname "$0")/../.."
tests/python-venv.sh target/mcp-venv tests/mcp/requirements.txt
target/mcp-venv/bin/python -c 'import mcp.server.mcpserver, mcp.client.streamable_http'
