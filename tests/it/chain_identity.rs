//! A chain that is not the one the ledger knows: an RPC URL serving another chain id, a node
//! restarted empty, a node that lost transactions the ledger saw confirmed. spendguard refuses
//! to start on the first, and freezes the chain's wallets (with a `chain_reset` alert) and
//! stops its watcher on the others — instead of signing nonces the chain will never reach.

use serde_json::json;
use spendguard_evm::testing::rpc_call;
use spendguard_tests::anvil::Anvil;
use spendguard_tests::evm_org::*;
use spendguard_tests::mcp_client::McpAgent;
use spendguard_tests::node::TestNode;
use spendguard_tests::prelude::*;
use std::time::Duration;

/// Pays 5 TUSD from `hot` and waits until the ledger holds it confirmed (nonce 0).
async fn confirmed_spend(org: &EvmOrg, node: &TestNode) {
    let agent = McpAgent::connect(&node.services, "buyer").await;
    let paid = agent.call("spend", json!({ "wallet": "hot", "to": PAYEE, "amount": "5", "asset": "TUSD" })).await;
    assert_eq!(paid.data["status"], "executed", "{}", paid.text);
    let id = paid.data["decision_id"].as_str().unwrap().to_string();
    spendguard_tests::wait_until("the spend to be confirmed", Duration::from_secs(30), async || {
        org.mine().await;
        node.tick().await;
        node.ledger().decision(&id).await.unwrap().is_some_and(|d| d.status == SpendStatus::Confirmed)
    })
    .await;
}

/// What an agent of `node` hears when it tries to pay from `hot` now.
async fn next_spend(node: &TestNode) -> String {
    let agent = McpAgent::connect(&node.services, "buyer").await;
    agent.call("spend", json!({ "wallet": "hot", "to": PAYEE, "amount": "1", "asset": "TUSD" })).await.text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_id_that_differs_from_the_nodes_stops_the_daemon_at_start() {
    let org = EvmOrg::start("").await;
    let wrong = org.variant("wrong-chain", &[("chain_id = 31337", "chain_id = 1")]);
    let watch = std::process::Command::new(EvmOrg::binary())
        .arg("--config")
        .arg(&wrong.path)
        .arg("watch")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let o = spendguard_tests::finish(watch, "spendguard watch on the wrong chain", Duration::from_secs(60));
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("serves chain id 31337, not the configured 1"), "{e}");
    assert!(e.contains(&org.anvil.url), "names the endpoint: {e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_as_a_new_chain_freezes_its_wallets() {
    let mut org = EvmOrg::start_on(Anvil::start_with(&["--timestamp", "1700000000"]), "").await;
    let node = org.node().await;
    confirmed_spend(&org, &node).await;

    // The same URL now serves a fresh chain (another genesis block, nonces from 0).
    org.anvil.restart_empty(&["--timestamp", "1800000000"]);
    node.tick().await;
    let err = node.watch_once("eth-local", 1000).await.unwrap_err().to_string();
    assert!(err.contains("its first block is now") && err.contains("the node was reset"), "{err}");
    let resets = node.ledger().events(Some(EventKind::ChainReset)).await.unwrap();
    assert_eq!(resets.len(), 1, "one alert: {resets:?}");
    let mut frozen: Vec<String> = node.ledger().freezes().await.unwrap().iter().map(|f| f.scope.to_string()).collect();
    frozen.sort();
    assert_eq!(frozen, ["wallet:cold", "wallet:hot"]);
    let refused = next_spend(&node).await;
    assert!(refused.starts_with("KILL_SWITCH") && refused.contains("was reset or replaced"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_lost_confirmed_transactions_is_caught_at_start() {
    // A fixed genesis timestamp: the node restarted empty has the same first block.
    let mut org = EvmOrg::start_on(Anvil::start_with(&["--timestamp", "1700000000"]), "").await;
    confirmed_spend(&org, &*org.node().await).await;
    let blocks = org.node().await.ledger().decisions(Some("buyer")).await.unwrap()[0].block.unwrap();

    org.anvil.restart_empty(&["--timestamp", "1700000000"]);
    rpc_call(&org.anvil.url, "anvil_mine", json!([blocks + 5])).await.unwrap();
    // The daemon restarts: its first pass compares the chain with the ledger.
    let node = org.node().await;
    let err = node.watch_once("eth-local", 1000).await.unwrap_err().to_string();
    assert!(err.contains("wallet hot had sent 0 transactions") && err.contains("lost transactions"), "{err}");
    assert_eq!(node.ledger().events(Some(EventKind::ChainReset)).await.unwrap().len(), 1);
    let refused = next_spend(&node).await;
    assert!(refused.starts_with("KILL_SWITCH"), "{refused}");
}
