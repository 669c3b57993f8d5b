"""spendguard driven by the official MCP Python SDK, as an agent's host would.

Run by tests/it/python_mcp.rs with a JSON scenario on stdin:
  {"transport": "stdio" | "http", "binary": ..., "config": ..., "url": ... (http),
   "tokens": {agent: token}, "env": {...}, "payee": "0x...", "revoked_agent": ..., "revoked_token": ...}
Prints one line per check and a closing "N passed, N failed"; exits non-zero on any failure.
"""

import asyncio
import time
import json
import os
import subprocess
import sys
from contextlib import asynccontextmanager

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from agent_checks import call, check, http_session, summary

SCENARIO = json.load(sys.stdin)


@asynccontextmanager
async def session(agent, token=None):
    token = token or SCENARIO["tokens"][agent]
    if SCENARIO["transport"] == "stdio":
        env = dict(os.environ)
        env.update(SCENARIO["env"])
        env["SPENDGUARD_TOKEN"] = token
        params = StdioServerParameters(
            command=SCENARIO["binary"],
            args=["--config", SCENARIO["config"], "mcp", "--agent", agent],
            env=env,
        )
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as s:
                await s.initialize()
                yield s
    else:
        async with http_session(SCENARIO["url"], token) as s:
            yield s


def spend_args(wallet, amount, **extra):
    return dict(wallet=wallet, to=SCENARIO["payee"], amount=amount, asset="TUSD", **extra)


async def main():
    async with session("buyer") as s:
        init_tools = await s.list_tools()
        names = sorted(t.name for t in init_tools.tools)
        check(
            "tools/list has the six tools",
            names == ["balance", "cancel_spend", "evaluate", "pay_x402", "spend", "spend_status"],
            names,
        )
        spend_tool = next(t for t in init_tools.tools if t.name == "spend")
        check("spend is marked destructive", spend_tool.annotations.destructive_hint is True, spend_tool.annotations)
        evaluate_tool = next(t for t in init_tools.tools if t.name == "evaluate")
        check("evaluate is marked read-only", evaluate_tool.annotations.read_only_hint is True, evaluate_tool.annotations)

        tiers = {}
        decisions = {}
        for amount in ["5", "50", "500", "5000"]:
            err, text, data = await call(s, "spend", **spend_args("hot", amount, memo="python e2e"))
            tiers[amount] = (data.get("status"), data.get("tier"))
            decisions[amount] = data.get("decision_id")
        check(
            "spends at every tier",
            tiers
            == {
                "5": ("executed", "INSTANT"),
                "50": ("executed", "NOTIFY"),
                "500": ("queued", "DELAY"),
                "5000": ("pending_approval", "APPROVAL"),
            },
            tiers,
        )

        key_args = spend_args("hot", "3", idempotency_key="py-order-1")
        _, _, first = await call(s, "spend", **key_args)
        _, _, again = await call(s, "spend", **key_args)
        check("an idempotent retry returns the first decision", first.get("decision_id") == again.get("decision_id") and again.get("replayed") is True, (first, again))
        err, text, _ = await call(s, "spend", **spend_args("hot", "4", idempotency_key="py-order-1"))
        check("a conflicting key is refused", err and text.startswith("IDEMPOTENCY_CONFLICT: "), text)

        _, _, status = await call(s, "spend_status", decision_id=first["decision_id"])
        check("spend_status follows a spend", status.get("status") in ("executed", "confirmed") and status.get("tx_hash") == first.get("tx_hash"), status)

        # The DELAY spend executes once due (2 s): this server's background work (stdio) or the
        # daemon's (HTTP) sends it. Waited for here, before the freeze below.
        deadline = time.monotonic() + 60
        while True:
            _, _, delayed = await call(s, "spend_status", decision_id=decisions["500"])
            if delayed.get("status") in ("executed", "confirmed") or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        check("the DELAY spend executes once due", delayed.get("status") in ("executed", "confirmed") and delayed.get("tx_hash"), delayed)

    async with session("saver") as s:
        await call(s, "spend", **spend_args("hot", "60"))
        err, text, data = await call(s, "spend", **spend_args("cold", "50"))
        check("a budget pooled across two wallets denies the second spend", err and data.get("status") == "denied", text)
        check(
            "the denial reads as the reason code with both amounts",
            text.splitlines()[0] == "WINDOW_LIMIT: agent saver 24h spend 60.00 + reserved 0.00 + 50.00 = 110.00 USD exceeds 100.00 USD",
            text,
        )
        reasons = data.get("reasons", [])
        check("the structured reasons carry code, policy and rule", reasons and reasons[0]["code"] == "WINDOW_LIMIT" and reasons[0]["policy_id"] == "saver-daily" and reasons[0]["rule"] == "limits[0]", reasons)

    async with session("other") as s:
        err, text, _ = await call(s, "spend", **spend_args("hot", "1"))
        check("another agent's wallet is refused", err and text.startswith("WALLET_NOT_ASSIGNED: "), text)

    # Freeze the buyer with the operator CLI: spends are refused, reads still work.
    subprocess.run(
        [SCENARIO["binary"], "--config", SCENARIO["config"], "freeze", "--agent", "buyer", "--reason", "python test", "--as", "ops@e2e.example"],
        check=True,
        capture_output=True,
    )
    async with session("buyer") as s:
        err, text, _ = await call(s, "spend", **spend_args("hot", "1"))
        check("a frozen agent's spend is refused", err and text.startswith("KILL_SWITCH: agent buyer is frozen by ops@e2e.example"), text)
        err, text, data = await call(s, "balance")
        check("a frozen agent can still read its balance", not err and len(data.get("wallets", [])) == 2, text)
        err, text, data = await call(s, "evaluate", **spend_args("hot", "1"))
        check("a frozen agent can still evaluate", not err and data.get("decision") == "deny", text)

    # A revoked agent cannot even connect.
    refused = False
    try:
        async with session(SCENARIO["revoked_agent"], token=SCENARIO["revoked_token"]) as s:
            await call(s, "balance")
    except Exception:  # the SDK raises on a closed stdio server or an HTTP 401
        refused = True
    check("a revoked agent is refused at authentication", refused)

    return summary()


if __name__ == "__main__":
    sys.exit(0 if asyncio.run(main()) else 1)
