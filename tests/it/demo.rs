//! The README's first command, run as it is: the demo must go end to end on the local chains.

use spendguard_tests::evm_org::EvmOrg;

#[test]
fn the_demo_runs_end_to_end() {
    let out = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_spendguard-demo"))
        .arg(out.path())
        .env("SPENDGUARD_BIN", EvmOrg::binary())
        .output()
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "the demo failed:\n{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    for expected in [
        "→ executed (INSTANT)",
        "→ executed (NOTIFY)",
        "→ queued (DELAY)",
        "→ pending_approval (APPROVAL)",
        "cancelled dec_",
        "\"approved_by\":\"treasurer@acme.example\"",
        "40 USDC on Solana → refused: WINDOW_LIMIT",
        "wallet:eth-ops\tby reconciler",
        "after the freeze → refused: KILL_SWITCH",
        "0.003 ETH to GitHub → refused: PRICE_UNAVAILABLE",
        "0.003 ETH to GitHub → executed (INSTANT)",
        "valued 9.30 USD at 3100 from chainlink:0x",
        "spendguard_price_usable{asset=\"eth-local:ETH\"} 1",
        "spendguard_price_age_seconds{asset=\"sol-local:SOL\"}",
        "eth-local:ETH\t$3100\tchainlink:0x",
        "sol-local:SOL\t$150\tpyth:",
        "pending approvals (0)",
        "| unexplained | 3 |",
        "EIP-7702 delegation of wallet eth-research's code to",
        "1 USDC from eth-research after the delegation → refused: KILL_SWITCH",
        "[UNEXPECTED: sender not in refill_from]",
        "## Inflows",
        "-----BEGIN PUBLIC KEY-----",
        "(counted in the same 100 USD a day) → authorized",
        "POST /v1/authorizations/verify → \"valid\"",
        "reconciliation \"matched\", authorization \"consumed\"",
        "POST /v1/authorizations/verify → \"consumed\"",
        "/weather → 402 Payment Required (PAYMENT-REQUIRED: 500000 base units of USDC",
        "research-bot: pay_x402 → signed (INSTANT)",
        "GET /weather with PAYMENT-SIGNATURE → 200 OK {\"forecast\":\"sunny\"",
        "settled by the facilitator in 0x",
        "reconciliation \"matched\"\n",
        "ok: ",
    ] {
        assert!(stdout.contains(expected), "missing {expected:?} in the demo's output:\n{stdout}");
    }
    for format in ["md", "html", "json", "csv"] {
        assert!(out.path().join(format!("reports/reconciliation.{format}")).exists(), "no {format} report");
    }
}
