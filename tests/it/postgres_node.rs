//! A whole node on the PostgreSQL ledger (`[server] database = "postgres://…"`, a real server
//! the test starts), on anvil: spends at each tier signed with nonces from the ledger, the
//! auditor matching them and freezing the wallet a rogue transfer left, the events and the
//! audit chain — every SQL path the SQLite node takes, on the other engine.

use serde_json::json;
use spendguard_core::reconcile::Class;
use spendguard_core::EventKind;
use spendguard_evm::testing;
use spendguard_store::{AuditStore, OutboxStore, OutflowStore};
use spendguard_tests::anvil::DEV_KEYS;
use spendguard_tests::evm_org::*;
use spendguard_tests::mcp_client::McpAgent;
use spendguard_tests::postgres::Postgres;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_postgres_spends_audits_and_freezes_as_on_sqlite() {
    let server = Postgres::start();
    let url = server.database();
    let org = EvmOrg::start("").await;
    let config = org.variant("postgres", &[("database = \"spendguard.db\"", &format!("database = \"{url}\""))]);
    assert_eq!(config.server.database, spendguard_config::Database::Postgres(url.clone()));
    let node = org.node_for(config, vec![]).await;
    let agent = McpAgent::connect(&node.services, "buyer").await;

    // Two INSTANT spends from one wallet: consecutive nonces from the ledger, both land.
    let mut ids = vec![];
    for amount in ["3", "4"] {
        let r = agent.call("spend", json!({ "wallet": "hot", "to": PAYEE, "amount": amount, "asset": "TUSD" })).await;
        assert_eq!(r.data["status"], "executed", "{}", r.text);
        ids.push(r.data["decision_id"].as_str().unwrap().to_string());
    }
    let mut statuses = vec![];
    for _ in 0..50 {
        org.mine().await;
        node.tick().await;
        statuses = vec![];
        for id in &ids {
            statuses.push(agent.call("spend_status", json!({ "decision_id": id })).await.data);
        }
        if statuses.iter().all(|s| s["reconciliation"] == "matched") {
            break;
        }
    }
    for s in &statuses {
        assert_eq!((s["status"].as_str(), s["reconciliation"].as_str()), (Some("confirmed"), Some("matched")), "{s}");
    }
    let balance = agent.call("balance", json!({ "wallet": "hot" })).await;
    assert!(balance.text.contains("\"used\""), "{}", balance.text);

    // A transfer nobody approved: unexplained, the wallet frozen, the next spend refused.
    let rogue = testing::send_token(&org.anvil.url, DEV_KEYS[1], &org.token, PAYEE, 1_000_000).await.unwrap();
    for _ in 0..50 {
        org.mine().await;
        node.tick().await;
        if !node.ledger().events(Some(EventKind::KillSwitch)).await.unwrap().is_empty() {
            break;
        }
    }
    let outflows = node.ledger().outflows(Some("eth-local")).await.unwrap();
    assert!(outflows.iter().any(|o| o.tx_hash == rogue && o.class == Class::Unexplained), "{outflows:#?}");
    let r = agent.call("spend", json!({ "wallet": "hot", "to": PAYEE, "amount": "1", "asset": "TUSD" })).await;
    assert!(r.is_error && r.text.starts_with("KILL_SWITCH: wallet hot is frozen"), "{}", r.text);

    // The operator's view reads it too.
    let status = node.services.overview.status().await.unwrap();
    let hot = status.wallets.iter().find(|w| w.wallet == "hot").unwrap();
    assert!(hot.frozen && !hot.conserved.is_empty(), "{hot:?}");

    // The audit chain holds together.
    let check = node.ledger().verify_audit(None).await.unwrap();
    assert!(check.first_bad.is_none() && check.entries > 5, "{check:?}");
}
