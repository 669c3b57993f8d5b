//! `evaluate` answers from a balance read moments ago (`balance_max_age`) instead of asking the
//! chain on every call; `spend` always asks the chain; a spend spendguard sends forgets what
//! was read of its wallet.

use serde_json::json;
use spendguard_evm::testing;
use spendguard_tests::anvil::DEV_KEYS;
use spendguard_tests::evm_org::*;
use spendguard_tests::mcp_client::McpAgent;
use spendguard_tests::node::TestNode;
use spendguard_tests::rpc_proxy::{Faults, RpcProxy};
use std::sync::Arc;

/// The org, a counting proxy its node reaches the chain through (with `chain_lines` added to
/// the chain's table), the node and buyer's MCP session on it.
async fn through_a_proxy(chain_lines: &str) -> (EvmOrg, RpcProxy, Arc<TestNode>, McpAgent) {
    let org = EvmOrg::start("").await;
    let proxy = RpcProxy::start(&org.anvil.url, Faults::default()).await;
    let node = org.node_for(org.via_rpc("proxied", &[&proxy.url], chain_lines), vec![]).await;
    let agent = McpAgent::connect(&node.services, "buyer").await;
    (org, proxy, node, agent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluate_reuses_a_recent_balance_and_spend_reads_the_chain() {
    let (org, proxy, _node, agent) = through_a_proxy("balance_max_age = \"1h\"").await;
    let balance_reads = || proxy.stats().forwarded.get("eth_call").copied().unwrap_or(0);
    let tusd = |amount: &str| json!({ "wallet": "hot", "to": PAYEE, "amount": amount, "asset": "TUSD" });

    // The wallet holds 100,000 TUSD: twenty dry runs of all of it, one read of the chain.
    proxy.reset_stats();
    for _ in 0..20 {
        let r = agent.call("evaluate", tusd("100000")).await;
        assert_eq!(r.data["decision"], "allow", "{}", r.text);
    }
    assert_eq!(balance_reads(), 1, "{:?}", proxy.stats());

    // Money taken behind spendguard's back: a dry run may not know yet (the age is the
    // config's), but a spend reads the chain and refuses.
    testing::send_token(&org.anvil.url, DEV_KEYS[1], &org.token, PAYEE, 1_000 * 1_000_000).await.unwrap();
    assert_eq!(agent.call("evaluate", tusd("100000")).await.data["decision"], "allow");
    let r = agent.call("spend", tusd("100000")).await;
    assert!(r.is_error && r.text.starts_with("INSUFFICIENT_BALANCE: wallet hot holds 99000"), "{}", r.text);

    // A spend spendguard sends forgets the wallet's balances: the next dry run reads again.
    let r = agent.call("spend", tusd("98000")).await;
    assert_eq!(r.data["status"], "executed", "{}", r.text);
    let reads_before = balance_reads();
    let r = agent.call("evaluate", tusd("1000.000001")).await;
    assert_eq!(r.data["decision"], "deny", "{}", r.text);
    assert!(r.text.contains("INSUFFICIENT_BALANCE"), "{}", r.text);
    assert_eq!(balance_reads(), reads_before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_balance_max_age_reads_the_chain_on_every_dry_run() {
    let (_org, proxy, _node, agent) = through_a_proxy("balance_max_age = \"0s\"").await;
    proxy.reset_stats();
    for _ in 0..5 {
        agent.call("evaluate", json!({ "wallet": "hot", "to": PAYEE, "amount": "1", "asset": "TUSD" })).await;
    }
    assert_eq!(proxy.stats().forwarded.get("eth_call"), Some(&5));
}
