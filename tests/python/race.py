"""32 concurrent MCP clients over streamable HTTP, spread over two spendguard daemons sharing one
database, all spending ETH from one wallet against one budget. Run by tests/it/race.rs with a
JSON scenario on stdin: {"urls": [...], "token": ..., "payee": ..., "clients": 32, "spends": 5}.
Prints a JSON list of the outcomes (status, tx_hash, amount) of every spend. With
"tolerate_loss": true (a daemon is killed mid-run), a client whose server goes away records its
unanswered call as {"status": "lost"} and stops."""

import asyncio
import json
import random
import sys

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

SCENARIO = json.load(sys.stdin)


async def client(n, start):
    outcomes = []
    try:
        await spend(n, start, outcomes)
    except Exception as e:  # noqa: BLE001 - the server was killed: what it answered stands
        if not SCENARIO.get("tolerate_loss"):
            raise
        outcomes.append({"status": "lost", "error": repr(e)[:200]})
    return outcomes


async def spend(n, start, outcomes):
    url = SCENARIO["urls"][n % len(SCENARIO["urls"])]
    rng = random.Random(n)
    headers = {"Authorization": f"Bearer {SCENARIO['token']}"}
    async with create_mcp_http_client(headers=headers) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as s:
                await s.initialize()
                await start.wait()
                for i in range(SCENARIO["spends"]):
                    amount = f"0.00{rng.randint(1, 3)}"
                    call = s.call_tool(
                        "spend",
                        {"wallet": "hot", "to": SCENARIO["payee"], "amount": amount, "idempotency_key": f"race-{n}-{i}"},
                    )
                    # A call to a server that was killed may never be answered.
                    r = await (asyncio.wait_for(call, 60) if SCENARIO.get("tolerate_loss") else call)
                    data = r.structured_content or {}
                    outcomes.append({"status": data.get("status"), "tx_hash": data.get("tx_hash"), "amount": amount,
                                     "code": (data.get("reasons") or [{}])[0].get("code")})


async def main():
    start = asyncio.Event()
    tasks = [asyncio.create_task(client(n, start)) for n in range(SCENARIO["clients"])]
    await asyncio.sleep(1.0)  # let every client connect, then release them together
    start.set()
    results = await asyncio.gather(*tasks)
    print(json.dumps([o for r in results for o in r]))


asyncio.run(main())
