//! External custody on surfpool: a Solana wallet the agent holds itself is authorized, paid
//! with its own keypair and matched; and an agent with a custodial Solana wallet and an external
//! EVM wallet has one daily limit across both.

use serde_json::json;
use spendguard_core::SpendStatus;
use spendguard_solana::{testing, Keypair};
use spendguard_store::DecisionStore;
use spendguard_tests::evm_org::{COLD, PAYEE};
use spendguard_tests::mcp_client::McpAgent;
use spendguard_tests::solana_org::{SolanaOrg, SOL_PAYEE};
use spendguard_tests::wait_until;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_solana_wallet_paid_by_the_agent_is_matched_and_limits_pool_with_an_external_evm_wallet() {
    let org = SolanaOrg::start("").await;
    let own = Keypair::new();
    let own_address = spendguard_solana::keypair_address(&own);
    testing::send_sol(&org.surfnet.url, &org.treasury, &own_address, 2_000_000_000).await.unwrap();
    let cold_keystore = format!("keystore = \"{}\"\n", org.evm.dir.path().join("cold.json").display());
    let sol_ext = format!(
        "[[wallet]]\nid = \"sol-own\"\nchain = \"sol-local\"\naddress = \"{own_address}\"\ncustody = \"external\"\n\n[[agent]]\nid = \"sol-buyer\""
    );
    let config = org.variant(
        "external-two-chains",
        &[
            (&cold_keystore, ""),
            ("password_env = \"COLD_PASSWORD\"", "custody = \"external\""),
            ("[[agent]]\nid = \"sol-buyer\"", &sol_ext),
            ("wallets = [\"sol-hot\"]", "wallets = [\"sol-hot\", \"sol-own\"]"),
        ],
    );
    let node = org.evm.node_for(config, vec![]).await;

    // sol-buyer: 0.05 SOL (5 USD, INSTANT) from its own wallet.
    let buyer = McpAgent::connect(&node.services, "sol-buyer").await;
    let r =
        buyer.call("spend", json!({ "wallet": "sol-own", "to": SOL_PAYEE, "amount": "0.05", "asset": "SOL" })).await;
    assert_eq!(r.data["status"], "authorized", "{}", r.text);
    assert_eq!(r.data["authorization"]["from"], own_address.as_str());
    let id = r.data["decision_id"].as_str().unwrap().to_string();
    let paid = testing::send_sol(&org.surfnet.url, &own, SOL_PAYEE, 50_000_000).await.unwrap();
    wait_until("the payment matched", Duration::from_secs(30), async || {
        node.tick().await;
        node.ledger().decision(&id).await.unwrap().unwrap().status == SpendStatus::Confirmed
    })
    .await;
    let s = buyer.call("spend_status", json!({ "decision_id": id })).await;
    assert_eq!((s.data["reconciliation"].as_str(), s.data["tx_hash"].as_str()), (Some("matched"), Some(paid.as_str())));
    assert_eq!(s.data["authorization"]["state"], "consumed", "{}", s.text);
    assert!(node.services.operators.frozen().await.unwrap().is_empty());

    // pooler: 100 USD a day over hot, cold (external, EVM) and sol-hot (custodial, Solana).
    let pooler = McpAgent::connect(&node.services, "pooler").await;
    let r = pooler.call("spend", json!({ "wallet": "cold", "to": PAYEE, "amount": "60", "asset": "TUSD" })).await;
    assert_eq!(r.data["status"], "authorized", "{}", r.text);
    assert_eq!(r.data["authorization"]["from"], COLD);
    let r =
        pooler.call("spend", json!({ "wallet": "sol-hot", "to": SOL_PAYEE, "amount": "0.5", "asset": "SOL" })).await;
    assert!(r.is_error && r.text.starts_with("WINDOW_LIMIT"), "{}", r.text);
    assert!(r.text.contains("60.00") && r.text.contains("50.00") && r.text.contains("100.00 USD"), "{}", r.text);
    let r =
        pooler.call("spend", json!({ "wallet": "sol-hot", "to": SOL_PAYEE, "amount": "0.3", "asset": "SOL" })).await;
    assert_eq!(r.data["status"], "executed", "30 USD still fits: {}", r.text);
}
