"""A legacy HTTP+SSE MCP server built with the Python `mcp` SDK, as an upstream of the
gateway in the interop test: tool `greet`, resource `memo://py`.

    upstream.py PORT
"""

import sys

from mcp.server.mcpserver import MCPServer

server = MCPServer("pyold")


@server.tool()
def greet(name: str) -> str:
    """Greets someone."""
    return f"hello {name}"


@server.resource("memo://py")
def memo() -> str:
    """A memo."""
    return "from python"


if __name__ == "__main__":
    server.run("sse", host="127.0.0.1", port=int(sys.argv[1]))
