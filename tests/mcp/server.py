"""A real MCP server (the official SDK's MCPServer, streamable HTTP) with a few calendar and mail
tools: the workload behind Envoy in tests/mcp.rs. Usage: server.py PORT"""
import sys

from mcp.server.mcpserver import MCPServer

server = MCPServer("calendar")


@server.tool(name="calendar.list_events")
def list_events(day: str = "today") -> str:
    return f"events on {day}: standup at 09:00"


@server.tool(name="calendar.create_event")
def create_event(title: str) -> str:
    return f"created {title}"


@server.tool(name="calendar.delete_event")
def delete_event(event_id: str) -> str:
    return f"deleted {event_id}"


@server.tool(name="email.send")
def send(to: str, body: str) -> str:
    return f"sent to {to}"


if __name__ == "__main__":
    server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[1]), json_response=True)
