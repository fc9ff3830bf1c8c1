"""Drives a Gatehouse workspace with the Python `mcp` SDK's own clients, over both
transports, and exits non-zero on the first thing that is not as expected.

    client.py streamable|sse URL TOKEN

Expects the workspace the Rust test `interop` sets up: an rmcp server `notes` (tool
`search`, prompt `summarize`, resource `memo://insights`) and, when
GATEHOUSE_INTEROP_PY_UPSTREAM is set, the legacy SSE server `pyold` (upstream.py).
"""

import asyncio
import json
import os
import sys

import mcp_types as types
from mcp import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


def check(condition, what):
    if not condition:
        raise SystemExit(f"interop check failed: {what}")
    print(f"ok: {what}", flush=True)


async def sampling(context, params):
    text = params.messages[-1].content.text
    return types.CreateMessageResult(
        role="assistant",
        content=types.TextContent(type="text", text=f"python sampled: {text}"),
        model="python-test-model",
        stop_reason="endTurn",
    )


async def exercise(session: ClientSession, transport: str):
    init = await session.initialize()
    check(init.server_info.name == "gatehouse", f"{transport}: initialized with the gateway")

    tools = await session.list_tools()
    names = [t.name for t in tools.tools]
    check("notes__search" in names, f"{transport}: tools/list has notes__search ({names})")

    result = await session.call_tool("notes__search", {"q": "interop"})
    echo = json.loads(result.content[0].text)
    check(
        echo == {"server": "notes", "tool": "search", "arguments": {"q": "interop"}},
        f"{transport}: tools/call reaches notes with the upstream's own name ({echo})",
    )

    resources = await session.list_resources()
    uris = [str(r.uri) for r in resources.resources]
    check("gatehouse://notes/memo://insights" in uris, f"{transport}: resources/list ({uris})")
    read = await session.read_resource("gatehouse://notes/memo://insights")
    content = json.loads(read.contents[0].text)
    check(content == {"server": "notes", "uri": "memo://insights"}, f"{transport}: resources/read ({content})")

    prompts = await session.list_prompts()
    prompt_names = [p.name for p in prompts.prompts]
    check("notes__summarize" in prompt_names, f"{transport}: prompts/list ({prompt_names})")
    prompt = await session.get_prompt("notes__summarize", {"topic": "interop"})
    text = json.loads(prompt.messages[0].content.text)
    check(
        text["prompt"] == "summarize" and text["arguments"] == {"topic": "interop"},
        f"{transport}: prompts/get ({text})",
    )

    sampled = await session.call_tool("notes__sample", {"prompt": "from python"})
    sample_echo = json.loads(sampled.content[0].text)
    check(
        sample_echo["sampled"]["content"]["text"] == "python sampled: from python",
        f"{transport}: a sampling request during a tool call is answered by this client",
    )

    if os.environ.get("GATEHOUSE_INTEROP_PY_UPSTREAM"):
        greeted = await session.call_tool("pyold__greet", {"name": transport})
        check(
            greeted.content[0].text == f"hello {transport}",
            f"{transport}: a Python legacy SSE upstream answers through the gateway ({greeted.content[0].text})",
        )
        read = await session.read_resource("gatehouse://pyold/memo://py")
        check(read.contents[0].text == "from python", f"{transport}: the Python upstream's resource")


async def main():
    transport, url, token = sys.argv[1:4]
    headers = {"Authorization": f"Bearer {token}"}
    if transport == "streamable":
        async with create_mcp_http_client(headers=headers) as http:
            async with streamable_http_client(url, http_client=http) as (read, write):
                async with ClientSession(read, write, sampling_callback=sampling) as session:
                    await exercise(session, transport)
    elif transport == "sse":
        async with sse_client(url, headers=headers) as (read, write):
            async with ClientSession(read, write, sampling_callback=sampling) as session:
                await exercise(session, transport)
    else:
        raise SystemExit(f"unknown transport {transport!r}")
    print(f"interop {transport}: all checks passed", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
