//! The system clock stepping back or forward an hour while windows are open: no window
//! forgets a spend early and none counts one twice, because windows are computed from the
//! times the ledger recorded.

use chrono::{TimeDelta, Utc};
use serde_json::json;
use spendguard_tests::clock::SteppedClock;
use spendguard_tests::evm_org::*;
use spendguard_tests::mcp_client::McpAgent;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_stepping_back_or_forward_neither_resets_nor_double_counts_a_window() {
    let org = EvmOrg::start("").await;
    let start = Utc::now();
    let clock = Arc::new(SteppedClock::new(start));
    let node = org.node_with_clock(clock.clone()).await;
    // saver: 100 USD per rolling 24h, across both wallets.
    let agent = McpAgent::connect(&node.services, "saver").await;
    let pay = async |amount: &str| {
        let r = agent.call("spend", json!({ "wallet": "hot", "to": PAYEE, "amount": amount, "asset": "TUSD" })).await;
        (r.data["status"].as_str().unwrap_or_default().to_string(), r.text)
    };

    assert_eq!(pay("60").await.0, "executed");
    // An hour back: the spend "from the future" still counts.
    clock.set(start - TimeDelta::hours(1));
    let (status, text) = pay("50").await;
    assert!(status == "denied" && text.contains("spend 60.00"), "{text}");
    assert_eq!(pay("30").await.0, "executed");
    // Two hours forward: both count, once each.
    clock.set(start + TimeDelta::hours(1));
    let (status, text) = pay("20").await;
    assert!(status == "denied" && text.contains("spend 90.00"), "{text}");
    // A day after both were recorded, the window is empty again.
    clock.set(start + TimeDelta::hours(24) + TimeDelta::seconds(1));
    let (status, text) = pay("20").await;
    assert_eq!(status, "executed", "{text}");
}
