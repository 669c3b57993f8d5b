//! 32 concurrent MCP clients, two server processes on one database, one wallet, one budget:
//! every admitted spend lands on chain exactly once with consecutive nonces, and the ETH that
//! actually left the wallet never exceeds the limit.

use serde_json::{json, Value};
use spendguard_evm::testing::rpc_call;
use spendguard_tests::evm_org::*;
use spendguard_tests::prelude::*;
use std::collections::HashSet;

const RACER: &str = r#"
[[policy]]
id = "racer"
scope = "agent:buyer"
limits = [ { window = "24h", max_amount = "0.05", asset = "eth-local:ETH" } ]
"#;

/// Starts `python/race.py` (the official MCP Python SDK's clients) on `scenario`; its outcomes
/// come on stdout.
pub(crate) fn start_race(scenario: &Value) -> std::process::Child {
    spendguard_tests::python::start_script(&spendguard_tests::manifest_dir().join("python/race.py"), scenario)
}

/// A JSON-RPC hex quantity.
pub(crate) fn hex_u128(v: &Value) -> u128 {
    u128::from_str_radix(v.as_str().expect("hex").trim_start_matches("0x"), 16).expect("number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_clients_on_two_servers_never_overspend_and_land_each_spend_once() {
    let org = EvmOrg::start(RACER).await;
    let (a, url_a) = org.start_daemon();
    let (b, url_b) = org.start_daemon();
    let child = start_race(
        &json!({ "urls": [url_a, url_b], "token": org.tokens["buyer"], "payee": PAYEE2, "clients": 32, "spends": 5 }),
    );
    let out =
        tokio::task::block_in_place(|| spendguard_tests::finish(child, "race.py", std::time::Duration::from_secs(600)));
    assert!(out.status.success(), "race.py failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let outcomes: Vec<Value> = serde_json::from_slice(&out.stdout).expect("outcomes JSON");
    assert_eq!(outcomes.len(), 160);

    // Let both daemons settle every receipt.
    let node = org.node().await;
    spendguard_tests::wait_until(
        "both daemons to settle every spend",
        std::time::Duration::from_secs(60),
        async || {
            let open = [SpendStatus::Reserved, SpendStatus::Signed, SpendStatus::Broadcast];
            node.ledger().decisions_in(&open).await.unwrap().is_empty()
        },
    )
    .await;
    for daemon in [a, b] {
        assert!(EvmOrg::stop_daemon(daemon), "daemons stop cleanly on SIGTERM");
    }

    let admitted: Vec<&Value> = outcomes.iter().filter(|o| o["status"] == "executed").collect();
    let denied = outcomes.iter().filter(|o| o["status"] == "denied").count();
    assert_eq!(admitted.len() + denied, 160, "every spend was either executed or denied: {outcomes:?}");
    assert!(outcomes.iter().filter(|o| o["status"] == "denied").all(|o| o["code"] == "WINDOW_LIMIT"));
    assert!(admitted.len() >= 10, "the budget should admit a good number of spends");

    // Exactly one transaction per admitted spend, consecutive nonces from 0, all mined.
    let hashes: HashSet<&str> = admitted.iter().map(|o| o["tx_hash"].as_str().expect("tx_hash")).collect();
    assert_eq!(hashes.len(), admitted.len(), "no transaction shared by two spends");
    let count = hex_u128(&rpc_call(&org.anvil.url, "eth_getTransactionCount", json!([HOT, "latest"])).await.unwrap());
    assert_eq!(count as usize, admitted.len(), "the wallet sent exactly the admitted spends");
    let mut nonces = vec![];
    let mut wei_sent: u128 = 0;
    for h in &hashes {
        let tx = rpc_call(&org.anvil.url, "eth_getTransactionByHash", json!([h])).await.unwrap();
        let receipt = rpc_call(&org.anvil.url, "eth_getTransactionReceipt", json!([h])).await.unwrap();
        assert_eq!(receipt["status"], "0x1");
        nonces.push(hex_u128(&tx["nonce"]));
        wei_sent += hex_u128(&tx["value"]);
    }
    nonces.sort_unstable();
    assert_eq!(nonces, (0..admitted.len() as u128).collect::<Vec<_>>(), "consecutive nonces");
    assert!(wei_sent <= 50_000_000_000_000_000, "ETH sent {wei_sent} wei exceeds the 0.05 ETH limit");
    let confirmed = node
        .ledger()
        .decisions(Some("buyer"))
        .await
        .unwrap()
        .iter()
        .filter(|d| d.status == SpendStatus::Confirmed)
        .count();
    assert_eq!(confirmed, admitted.len());
    eprintln!("{} of 160 spends admitted, {wei_sent} wei sent, nonces 0..{}", admitted.len(), admitted.len());
}
