"""spendguard on Solana (and EVM beside it) driven by the official MCP Python SDK over streamable
HTTP, against a running `spendguard serve`.

Run by tests/it/python_mcp.rs in phases, each with a JSON scenario on stdin:
  {"phase": "spend" | "expire" | "frozen", "url": ..., "tokens": {agent: token},
   "sol_payee": base58, "evm_payee": "0x...", "expired": {"decision_id": ..., "tx_hash": ...} (frozen)}
Prints one line per check and a closing "N passed, N failed"; exits non-zero on any failure.
The "expire" phase also prints `SPEND <decision_id> <tx_hash>` for the harness.
"""

import asyncio
import json
import sys
import time

from agent_checks import call, check, http_session, summary

SCENARIO = json.load(sys.stdin)


def session(agent):
    return http_session(SCENARIO["url"], SCENARIO["tokens"][agent])


def sol(amount, asset="SOL", wallet="sol-hot"):
    return dict(wallet=wallet, to=SCENARIO["sol_payee"], amount=amount, asset=asset)


def evm(amount):
    return dict(wallet="cold", to=SCENARIO["evm_payee"], amount=amount, asset="TUSD")


async def wait_status(s, decision_id, wanted, seconds=30):
    deadline = time.monotonic() + seconds
    status = {}
    while time.monotonic() < deadline:
        _, _, status = await call(s, "spend_status", decision_id=decision_id)
        if status.get("status") in wanted:
            return status
        await asyncio.sleep(0.2)
    return status


async def spend_phase():
    expected = {
        "INSTANT": ("executed", "INSTANT"),
        "NOTIFY": ("executed", "NOTIFY"),
        "DELAY": ("queued", "DELAY"),
        "APPROVAL": ("pending_approval", "APPROVAL"),
    }
    async with session("sol-buyer") as s:
        # $5, $50, $500 and $5,000 of SOL (at $100) and of USDS (at $1).
        for asset, amounts in [("SOL", ["0.05", "0.5", "5", "50"]), ("USDS", ["5", "50", "500", "5000"])]:
            got = {}
            ids = {}
            for tier, amount in zip(expected, amounts):
                _, text, data = await call(s, "spend", **sol(amount, asset))
                got[tier] = (data.get("status"), data.get("tier"))
                ids[tier] = data.get("decision_id")
            check(f"{asset} spends at every tier", got == expected, got)
            for tier in ["INSTANT", "NOTIFY"]:
                status = await wait_status(s, ids[tier], ["confirmed"])
                check(f"the {tier} {asset} spend is confirmed on Solana", status.get("status") == "confirmed" and status.get("tx_hash"), status)
            status = await wait_status(s, ids["DELAY"], ["confirmed"])
            check(f"the DELAY {asset} spend is executed by the daemon when due and confirmed", status.get("status") == "confirmed", status)
            _, _, status = await call(s, "spend_status", decision_id=ids["APPROVAL"])
            check(f"the APPROVAL {asset} spend waits for an approver", status.get("status") == "pending_approval", status)
            err, text, _ = await call(s, "cancel_spend", decision_id=ids["APPROVAL"])
            check(f"the agent withdraws its APPROVAL {asset} request", not err, text)

        err, text, data = await call(s, "balance", wallet="sol-hot")
        balances = {b["asset"]: b["amount"] for b in data.get("wallets", [{}])[0].get("balances", [])}
        check("balance reads SOL and the configured SPL token", set(balances) == {"sol-local:SOL", "sol-local:USDS"}, (text, balances))
        check("USDS went down by exactly the executed spends", balances.get("sol-local:USDS") == "9445", balances)

    # One agent's budget pooled across chains, consumed on EVM and then denied on Solana ...
    async with session("saver") as s:
        _, text, data = await call(s, "spend", **evm("70"))
        check("saver spends $70 on EVM", data.get("status") == "executed", text)
        err, text, data = await call(s, "spend", **sol("0.4"))
        check("... and is denied $40 on Solana", err and text.startswith("WINDOW_LIMIT: agent saver 24h spend 70.00"), text)
    # ... and the other way round.
    async with session("pooler") as s:
        _, text, data = await call(s, "spend", **sol("0.7"))
        check("pooler spends $70 on Solana", data.get("status") == "executed", text)
        err, text, data = await call(s, "spend", **evm("40"))
        check("... and is denied $40 on EVM", err and text.startswith("WINDOW_LIMIT: agent pooler 24h spend 70.00"), text)


async def expire_phase():
    async with session("sol-buyer") as s:
        _, text, data = await call(s, "spend", **sol("0.01"))
        check("a spend to a node that drops it still reads as executed", data.get("status") == "executed", text)
        print(f"SPEND {data.get('decision_id')} {data.get('tx_hash')}")


async def frozen_phase():
    expired = SCENARIO["expired"]
    async with session("sol-buyer") as s:
        _, _, status = await call(s, "spend_status", decision_id=expired["decision_id"])
        check(
            "the expired spend was re-signed and confirmed under a new signature",
            status.get("status") == "confirmed" and status.get("tx_hash") not in (None, expired["tx_hash"]),
            status,
        )
        err, text, _ = await call(s, "spend", **sol("0.01"))
        check("after a rogue transfer the wallet is frozen", err and text.startswith("KILL_SWITCH: wallet sol-hot is frozen by reconciler"), text)
        err, text, data = await call(s, "balance", wallet="sol-hot")
        check("a frozen wallet's balance can still be read", not err and data.get("wallets"), text)


async def main():
    await {"spend": spend_phase, "expire": expire_phase, "frozen": frozen_phase}[SCENARIO["phase"]]()
    return summary()


if __name__ == "__main__":
    sys.exit(0 if asyncio.run(main()) else 1)
