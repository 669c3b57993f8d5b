"""What the spendguard scenarios share: numbered checks, a tool call's (is_error, text, data),
and an agent's session over streamable HTTP with its bearer token."""

from contextlib import asynccontextmanager

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

RESULTS = {"passed": 0, "failed": 0}


def check(name, condition, detail=""):
    if condition:
        RESULTS["passed"] += 1
        print(f"ok   {name}")
    else:
        RESULTS["failed"] += 1
        print(f"FAIL {name}: {detail}")


def summary():
    """Prints the closing line the Rust harness looks for; true when nothing failed."""
    print(f"{RESULTS['passed']} passed, {RESULTS['failed']} failed")
    return RESULTS["failed"] == 0


async def call(s, tool, **args):
    r = await s.call_tool(tool, args)
    text = r.content[0].text if r.content else ""
    return r.is_error, text, r.structured_content or {}


@asynccontextmanager
async def http_session(url, token):
    headers = {"Authorization": f"Bearer {token}"}
    async with create_mcp_http_client(headers=headers) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as s:
                await s.initialize()
                yield s
