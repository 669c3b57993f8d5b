//! Balance conservation on anvil: a fee-on-transfer token (fixtures/evm/TestFeeToken.sol) takes
//! 1 % more from the sender than its `Transfer` log says. The spend spendguard signed matches
//! its decision by the log, but the wallet's balance falls further than the outflows recorded:
//! `unexplained_balance_change`, and the wallet is frozen.

use serde_json::json;
use spendguard_core::EventKind;
use spendguard_evm::testing;
use spendguard_store::OutboxStore;
use spendguard_tests::anvil::DEV_KEYS;
use spendguard_tests::evm_org::*;
use spendguard_tests::mcp_client::McpAgent;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fee_on_transfer_token_moving_more_than_its_log_says_is_caught() {
    let org = EvmOrg::start("").await;
    let supply = 1_000_000u128 * 1_000_000;
    let creation = format!("{}{supply:064x}", spendguard_tests::TEST_FEE_TOKEN_BIN.trim());
    let fee_token = testing::deploy(&org.anvil.url, DEV_KEYS[0], &creation).await.unwrap();
    testing::send_token(&org.anvil.url, DEV_KEYS[0], &fee_token, HOT, 1_000 * 1_000_000).await.unwrap();
    let asset = format!(
        "[[asset]]\nchain = \"eth-local\"\nsymbol = \"FEE\"\ncontract = \"{fee_token}\"\ndecimals = 6\nprice_usd = \"1\"\n\n[[department]]"
    );
    let node = org.node_for(org.variant("fee-token", &[("[[department]]", &asset)]), vec![]).await;
    node.tick().await;
    org.mine().await;
    node.tick().await;
    assert!(node.ledger().events(Some(EventKind::UnexplainedBalanceChange)).await.unwrap().is_empty());

    // spendguard pays 10 FEE; the token takes 10.1.
    let agent = McpAgent::connect(&node.services, "buyer").await;
    let r = agent.call("spend", json!({ "wallet": "hot", "to": PAYEE, "amount": "10", "asset": "FEE" })).await;
    assert_eq!(r.data["status"], "executed", "{}", r.text);
    org.mine().await;
    node.tick().await;
    node.tick().await;
    let id = r.data["decision_id"].as_str().unwrap();
    let status = agent.call("spend_status", json!({ "decision_id": id })).await;
    assert_eq!(status.data["reconciliation"], "matched", "the log matches the decision: {}", status.text);
    let differences = node.ledger().events(Some(EventKind::UnexplainedBalanceChange)).await.unwrap();
    assert_eq!(differences.len(), 1, "{differences:?}");
    let d = &differences[0].detail;
    assert!(d.contains("eth-local:FEE balance of wallet hot") && d.contains("difference -0.1"), "{d}");
    let r = agent.call("spend", json!({ "wallet": "hot", "to": PAYEE, "amount": "1", "asset": "TUSD" })).await;
    assert!(r.is_error && r.text.starts_with("KILL_SWITCH: wallet hot is frozen"), "{}", r.text);
    assert!(r.text.contains("unexplained balance change of wallet hot"), "{}", r.text);
}
