//! Balance conservation on anvil: a fee-on-transfer token (fixtures/evm/TestFeeToken.sol) takes
//! 1 % more from the sender than its `Transfer` log says. The spend spendguard signed matches
//! its decision by the log, but the wallet's balance falls further than the outflows recorded:
//! `unexplained_balance_change`, and the wallet is frozen.

use serde_json::json;
use spendguard_core::EventKind;
use spendguard_evm::testing;
use spendguard_store::{OutboxStore, OutflowStore};
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

/// An OP-stack chain (Optimism, Base) charges an L1 data fee beside gas × price and says so in
/// each receipt's `l1Fee`: spendguard books it with the spend's fee, so the wallet's balance
/// adds up there. Anvil charges none, so the RPC proxy adds one to every receipt — and balance
/// conservation, which would rightly find the balance higher than booked, is off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_op_stack_l1_data_fee_is_booked_with_the_spend() {
    use spendguard_tests::rpc_proxy::{Faults, RpcProxy};
    let org = EvmOrg::start("").await;
    // 1 ETH: far above any gas cost here, so the fee shows whether it was counted.
    let l1_fee = 1_000_000_000_000_000_000u128;
    let proxy = RpcProxy::start(&org.anvil.url, Faults { l1_fee: Some(l1_fee), ..Faults::default() }).await;
    let node = org.node_for(org.via_rpc("op-stack", &[&proxy.url], "balance_conservation = false"), vec![]).await;
    let agent = McpAgent::connect(&node.services, "buyer").await;
    let r = agent.call("spend", json!({ "wallet": "hot", "to": PAYEE, "amount": "1", "asset": "TUSD" })).await;
    assert_eq!(r.data["status"], "executed", "{}", r.text);
    let id = r.data["decision_id"].as_str().unwrap().to_string();
    let mut status = serde_json::Value::Null;
    for _ in 0..100 {
        org.mine().await;
        node.tick().await;
        status = agent.call("spend_status", json!({ "decision_id": id })).await.data;
        if status["reconciliation"] == "matched" {
            break;
        }
    }
    assert_eq!(status["status"], "confirmed", "{status}");
    // What the execution saw and what the auditor booked agree: gas × price + the L1 fee.
    let fee: rust_decimal::Decimal = status["fee_paid"].as_str().expect("fee_paid").parse().unwrap();
    let outflows = node.ledger().outflows(Some("eth-local")).await.unwrap();
    let booked = outflows.iter().find(|o| o.kind == spendguard_core::reconcile::OutflowKind::Fee).unwrap();
    assert_eq!(booked.amount, fee, "{outflows:#?}");
    let l1 = rust_decimal::Decimal::from_i128_with_scale(l1_fee as i128, 18);
    assert!(fee > l1 && fee - l1 < rust_decimal::Decimal::new(1, 2), "the fee {fee} is gas plus the L1 data fee {l1}");
}
