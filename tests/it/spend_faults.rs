//! The RPC misbehaving while agents spend: down, slow, rate-limited, failing, answering garbage
//! or JSON-RPC errors, serving another chain, losing the answer to a broadcast. Each spend is
//! refused or retried; none is sent twice, none is re-signed with a new nonce, and what left
//! the wallet is exactly what the ledger says was paid.

use serde_json::json;
use spendguard_tests::evm_org::*;
use spendguard_tests::mcp_client::McpAgent;
use spendguard_tests::prelude::*;
use spendguard_tests::rpc_proxy::{Faults, RpcProxy};
use std::collections::HashSet;
use std::time::Duration;

fn is_final(status: SpendStatus) -> bool {
    matches!(status, SpendStatus::Confirmed | SpendStatus::Failed | SpendStatus::Released | SpendStatus::Denied)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misbehaving_rpc_never_makes_a_spend_go_out_twice() {
    let org = EvmOrg::start("").await;
    let proxy = RpcProxy::start(&org.anvil.url, Faults::default()).await;
    let config = org.via_rpc("faulty", &[&proxy.url], "rpc_timeout = \"1s\"");
    let node = org.node_for(config, vec![]).await;
    let agent = McpAgent::connect(&node.services, "buyer").await;
    let paid_before = org.token_balance(PAYEE).await;

    let faults = [
        ("down", Faults { down: true, ..Faults::default() }),
        ("slower than the timeout", Faults { slow_every: Some((2, Duration::from_secs(2))), ..Faults::default() }),
        ("429", Faults { too_many_every: Some(2), ..Faults::default() }),
        ("502", Faults { bad_gateway_every: Some(2), ..Faults::default() }),
        ("garbage", Faults { garbage_every: Some(3), ..Faults::default() }),
        ("JSON-RPC internal errors", Faults { rpc_error_every: Some(4), ..Faults::default() }),
        ("lost broadcast answers", Faults { lose_send_answers: true, ..Faults::default() }),
    ];
    let mut answers = vec![];
    for (name, fault) in faults {
        proxy.set_faults(fault);
        for i in 1..=3 {
            let amount = format!("1.{i}");
            let r =
                agent.call("spend", json!({ "wallet": "hot", "to": PAYEE, "amount": amount, "asset": "TUSD" })).await;
            // Every answer is one an agent can act on: paid, or refused with a code.
            let code = r.text.split(':').next().unwrap_or_default().to_string();
            assert!(
                !r.is_error || ["CHAIN_UNAVAILABLE", "CHAIN_ERROR", "SPEND_FAILED"].contains(&code.as_str()),
                "{name}: {}",
                r.text
            );
            answers.push((name, r));
        }
    }

    // Faults the client retries through (everything but a node that stays down) still pay.
    for (name, r) in answers.iter().filter(|(name, _)| *name != "down") {
        assert_eq!(r.data["status"], "executed", "{name}: {}", r.text);
    }
    // The RPC heals: every decision reaches a final state.
    proxy.set_faults(Faults::default());
    spendguard_tests::wait_until("every decision to be final", Duration::from_secs(60), async || {
        org.mine().await;
        node.tick().await;
        node.ledger().decisions(Some("buyer")).await.unwrap().iter().all(|d| is_final(d.status))
    })
    .await;
    let decisions = node.ledger().decisions(Some("buyer")).await.unwrap();
    let confirmed: Vec<_> = decisions.iter().filter(|d| d.status == SpendStatus::Confirmed).collect();
    assert_eq!(confirmed.len(), 18, "{decisions:#?}");

    // What left the wallet is what the ledger says was paid, once each, nonce after nonce.
    let paid: rust_decimal::Decimal = confirmed.iter().map(|d| d.amount).sum();
    let moved = org.token_balance(PAYEE).await - paid_before;
    assert_eq!(rust_decimal::Decimal::from(moved) / rust_decimal::Decimal::from(1_000_000), paid);
    assert_eq!(org.nonce(HOT).await, confirmed.len() as u64, "one transaction per confirmed spend");
    let hashes: HashSet<_> = confirmed.iter().map(|d| d.tx_hash.clone()).collect();
    assert_eq!(hashes.len(), confirmed.len());
    // The auditor agrees: every outflow matched its decision, nothing frozen.
    assert!(node.ledger().freezes().await.unwrap().is_empty(), "{:?}", node.ledger().freezes().await.unwrap());
    // A spend whose broadcast answer was lost landed with the transaction first signed.
    for (name, r) in answers.iter().filter(|(name, _)| *name == "lost broadcast answers") {
        let id = r.data["decision_id"].as_str().unwrap();
        let d = decisions.iter().find(|d| d.id == id).unwrap();
        assert_eq!(d.status, SpendStatus::Confirmed, "{name}: {d:?}");
        if let Some(hash) = r.data["tx_hash"].as_str() {
            assert_eq!(d.tx_hash.as_deref(), Some(hash), "{name}: re-signed");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_serving_another_chain_is_skipped_for_the_right_one() {
    let org = EvmOrg::start("").await;
    let wrong = RpcProxy::start(&org.anvil.url, Faults { chain_id: Some(1), ..Faults::default() }).await;
    let config = org.via_rpc("two-urls", &[&wrong.url, &org.anvil.url], "");
    let node = org.node_for(config, vec![]).await;
    let agent = McpAgent::connect(&node.services, "buyer").await;
    let r = agent.call("spend", json!({ "wallet": "hot", "to": PAYEE, "amount": "2", "asset": "TUSD" })).await;
    assert_eq!(r.data["status"], "executed", "{}", r.text);
    let stats = wrong.stats();
    assert!(stats.injected.contains_key("wrong chain id"), "{stats:?}");
    assert!(!stats.forwarded.contains_key("eth_sendRawTransaction"), "sent through the wrong chain's URL: {stats:?}");
}
