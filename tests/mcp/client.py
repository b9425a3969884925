"""A real MCP client (the official SDK's streamable HTTP transport and ClientSession) presenting an
agent's X509-SVID and a bearer token through Envoy. Usage: client.py STEPS.json

Each step: {"url", "ca", "cert", "key", "token", "action": "list" | "call", "tool", "arguments"}.
Prints one JSON line per step: {"ok": true, "tools": [...]} / {"ok": true, "text": "..."} or
{"ok": false, "code": <JSON-RPC code>, "message": "...", "data": {...}}."""
import asyncio
import json
import ssl
import sys

import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError


async def run(step):
    context = ssl.create_default_context(cafile=step["ca"])
    context.load_cert_chain(step["cert"], step["key"])
    # The chain is verified against the trust bundle; Envoy's SVID names no loopback address.
    context.check_hostname = False
    headers = {"Authorization": f"Bearer {step['token']}"}
    async with httpx2.AsyncClient(verify=context, headers=headers, timeout=20) as http:
        async with streamable_http_client(step["url"], http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                if step["action"] == "list":
                    tools = await session.list_tools()
                    return {"ok": True, "tools": sorted(tool.name for tool in tools.tools)}
                result = await session.call_tool(step["tool"], step.get("arguments", {}))
                text = "".join(getattr(part, "text", "") for part in result.content)
                return {"ok": not result.is_error, "text": text}


def mcp_error(error):
    """The MCPError inside `error` (task groups wrap what their tasks raise), or None."""
    if isinstance(error, MCPError):
        return error
    for inner in getattr(error, "exceptions", ()):
        found = mcp_error(inner)
        if found is not None:
            return found
    return None


async def main():
    steps = json.load(open(sys.argv[1]))
    for step in steps:
        try:
            outcome = await asyncio.wait_for(run(step), 30)
        except Exception as error:  # surfaced to the test, which names the step
            found = mcp_error(error)
            if found is not None:
                outcome = {"ok": False, "code": found.code, "message": found.message, "data": found.data}
            else:
                outcome = {"ok": False, "exception": repr(error)}
        print(json.dumps(outcome), flush=True)


asyncio.run(main())
