//! The auditor on a real anvil: outflows that spendguard approved reconcile as matched; value
//! moved with a wallet's key behind spendguard's back is unexplained and freezes the wallet,
//! and the next spend through MCP is refused with the evidence.

use serde_json::json;
use spendguard_core::reconcile::{Class, OutflowKind};
use spendguard_evm::testing::{rpc_call, send_native, send_token};
use spendguard_tests::anvil::DEV_KEYS;
use spendguard_tests::evm_org::*;
use spendguard_tests::mcp_client::McpAgent;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_that_bypasses_spendguard_freezes_its_wallet() {
    let org = EvmOrg::start(BUYER_TIERS).await;
    let guard = org.guard();
    let agent = McpAgent::connect(guard.clone(), "buyer").await;
    let mine = || async { rpc_call(&org.anvil.url, "evm_mine", json!([])).await.unwrap() };

    // Spends through spendguard: matched, nothing frozen.
    for (wallet, asset, amount) in [("hot", "TUSD", "5"), ("cold", "ETH", "0.001")] {
        let r = agent.call("spend", json!({ "wallet": wallet, "to": PAYEE, "amount": amount, "asset": asset })).await;
        assert_eq!(r.data["status"], "executed", "{}", r.text);
    }
    mine().await;
    let findings = guard.watch_once("eth-local", 1000).await.unwrap();
    assert!(findings.is_empty(), "only matched outflows expected: {findings:?}");
    assert!(guard.ledger().freezes().unwrap().is_empty());

    // The hot wallet's key sends ETH directly.
    let rogue = send_native(&org.anvil.url, DEV_KEYS[1], PAYEE2, 1_000_000_000_000_000).await.unwrap();
    mine().await;
    let findings = guard.watch_once("eth-local", 1000).await.unwrap();
    let kinds: Vec<(OutflowKind, Class)> = findings.iter().map(|f| (f.outflow.kind, f.class)).collect();
    assert_eq!(kinds, [(OutflowKind::Native, Class::Unexplained), (OutflowKind::Fee, Class::Unexplained)]);
    assert_eq!(findings[0].outflow.tx_hash, rogue);
    assert_eq!(findings[0].frozen, [spendguard_core::model::Scope::Wallet("hot".into())]);
    let denied = agent.call("spend", json!({ "wallet": "hot", "to": PAYEE, "amount": "1", "asset": "TUSD" })).await;
    assert!(
        denied.is_error && denied.text.starts_with("KILL_SWITCH: wallet hot is frozen by reconciler"),
        "{}",
        denied.text
    );
    assert!(denied.text.contains(&rogue), "the evidence names the transaction: {}", denied.text);
    assert!(
        denied.text.contains("native 0.001 eth-local:ETH to 0xa0ee7a142d267c1f36714e4a8f75612f20a79720"),
        "{}",
        denied.text
    );

    // The cold wallet's key moves tokens directly: the same.
    let rogue_token = send_token(&org.anvil.url, DEV_KEYS[2], &org.token, PAYEE2, 2_500_000).await.unwrap();
    mine().await;
    let findings = guard.watch_once("eth-local", 1000).await.unwrap();
    let token = findings.iter().find(|f| f.outflow.kind == OutflowKind::Token).expect("the token outflow");
    assert_eq!((token.class, token.outflow.tx_hash.as_str()), (Class::Unexplained, rogue_token.as_str()));
    assert_eq!(token.outflow.amount, "2.5".parse().unwrap());
    let denied = agent.call("spend", json!({ "wallet": "cold", "to": PAYEE, "amount": "1", "asset": "TUSD" })).await;
    assert!(denied.is_error && denied.text.contains(&rogue_token), "{}", denied.text);

    // Indexing is idempotent and durable: a fresh guard resumes after the last block.
    let events = guard.ledger().events("unexplained_outflow").unwrap().len();
    let again = org.guard();
    assert!(again.watch_once("eth-local", 1000).await.unwrap().is_empty());
    assert_eq!(again.ledger().events("unexplained_outflow").unwrap().len(), events);
}
