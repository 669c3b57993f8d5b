//! Revoking an agent's tokens stops a running stdio session at its next call.

use serde_json::json;
use spendguard_tests::evm_org::*;
use spendguard_tests::prelude::*;
use spendguard_tests::stdio_agent::StdioAgent;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_stdio_session_stops_serving_once_its_token_is_revoked() {
    let org = EvmOrg::start("").await;
    let mut agent =
        StdioAgent::spawn(&EvmOrg::binary(), &org.config_path, "other", &org.tokens["other"], &org.server_env());
    let (is_error, text, _) = agent.call("balance", json!({})).expect("served");
    assert!(!is_error, "{text}");
    org.node().await.ledger().revoke_agent("other", "test", chrono::Utc::now()).await.unwrap();
    let refused = agent.request("tools/call", json!({ "name": "balance", "arguments": {} })).expect("answered");
    assert!(
        refused["error"]["message"].as_str().is_some_and(|m| m.contains("revoked")),
        "a revoked agent must not be served: {refused}"
    );
}
