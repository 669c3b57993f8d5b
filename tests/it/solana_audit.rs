//! The Solana auditor at `confirmed` (surfpool, in-process): balance conservation per wallet
//! (lamports and token accounts, read at the finalized slot), and a `confirmed` slot rolled back
//! — unwound, indexed again when its transaction lands again, no false freeze and no outflow
//! lost or counted twice.
//!
//! Surfpool has no rollback cheatcode and its state has no forks: the rollback is the RPC
//! proxy's fault (the transaction gone from every read that would show it, the finalized slot
//! held below it). Conservation is off for that test, since the proxy cannot take the
//! transaction's effect out of the balances surfpool serves as it would be on a real fork.

use serde_json::json;
use spendguard_core::EventKind;
use spendguard_store::OutboxStore;
use spendguard_tests::mcp_client::McpAgent;
use spendguard_tests::node::TestNode;
use spendguard_tests::prelude::*;
use spendguard_tests::rpc_proxy::Faults;
use spendguard_tests::solana_org::*;
use std::time::Duration;

/// Runs background passes until `done` holds (at most 15 s).
async fn tick_until(node: &TestNode, what: &str, mut done: impl AsyncFnMut() -> bool) {
    for _ in 0..150 {
        node.tick().await;
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = node.services.overview.status().await.unwrap();
    let inflows = node.ledger().inflows(None).await.unwrap();
    let outflows = node.ledger().outflows(None).await.unwrap();
    panic!("never: {what}\n{status:#?}\n{inflows:#?}\n{outflows:#?}");
}

/// The treasury's 0.002 SOL into `sol-hot`, once booked.
async fn refill(node: &TestNode) -> Option<spendguard_store::RecordedInflow> {
    let inflows = node.ledger().inflows(Some("sol-local")).await.unwrap();
    inflows.into_iter().find(|i| i.amount == "0.002".parse().unwrap())
}

/// `spend_status` of decision `id`, as the agent sees it.
async fn status_of(agent: &McpAgent, id: &str) -> serde_json::Value {
    agent.call("spend_status", json!({ "decision_id": id })).await.data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn solana_balances_are_conserved_and_lamports_gone_without_a_transaction_freeze_the_wallet() {
    let org = SolanaOrg::start("").await;
    let node = org.node().await;
    let agent = McpAgent::connect(&node.services, "sol-buyer").await;
    let differences = async || node.ledger().events(Some(EventKind::UnexplainedBalanceChange)).await.unwrap();

    // SOL and USDS paid by spendguard (the USDS payee's token account created, its rent paid),
    // a refill from a stranger: every balance change has its transaction in the ledger.
    let sol =
        agent.call("spend", json!({ "wallet": "sol-hot", "to": SOL_PAYEE, "amount": "0.05", "asset": "SOL" })).await;
    let usds =
        agent.call("spend", json!({ "wallet": "sol-hot", "to": SOL_PAYEE, "amount": "5", "asset": "USDS" })).await;
    let ids: Vec<String> = [&sol, &usds].iter().map(|r| r.data["decision_id"].as_str().unwrap().to_string()).collect();
    spendguard_solana::testing::send_sol(&org.surfnet.url, &org.treasury, &org.address, 2_000_000).await.unwrap();
    tick_until(&node, "both spends matched and the refill booked", async || {
        let mut matched = 0;
        for id in &ids {
            matched += usize::from(status_of(&agent, id).await["reconciliation"] == "matched");
        }
        matched == 2 && refill(&node).await.is_some()
    })
    .await;
    // Conservation has run past all of it (a checkpoint after the last transaction) and held.
    let last_slot = refill(&node).await.unwrap().block;
    tick_until(&node, "balances checked above the refill's slot", async || checked_above(&node, last_slot).await).await;
    assert!(differences().await.is_empty(), "{:?}", differences().await);

    // Money leaves with no transaction any watcher can list (here: surfpool's cheatcode; in
    // life, a path the auditor does not read): the finalized balance does not add up.
    let lamports = org.lamports(&org.address).await;
    spendguard_evm::testing::rpc_call(
        &org.surfnet.url,
        "surfnet_setAccount",
        json!([org.address, { "lamports": lamports - 1_000_000_000 }]),
    )
    .await
    .unwrap();
    tick_until(&node, "an unexplained balance change", async || !differences().await.is_empty()).await;
    let found = differences().await;
    assert_eq!(found.len(), 1, "{found:?}");
    let detail = &found[0].detail;
    assert!(detail.contains("sol-local:SOL balance of wallet sol-hot") && detail.contains("difference -1"), "{detail}");
    let denied =
        agent.call("spend", json!({ "wallet": "sol-hot", "to": SOL_PAYEE, "amount": "0.01", "asset": "SOL" })).await;
    assert!(denied.is_error && denied.text.starts_with("KILL_SWITCH: wallet sol-hot is frozen"), "{}", denied.text);
    assert!(denied.text.contains("unexplained balance change of wallet sol-hot"), "{}", denied.text);
}

/// Whether `status` shows `sol-hot`'s SOL and USDS balances checked at a slot above `slot`.
async fn checked_above(node: &TestNode, slot: u64) -> bool {
    let status = node.services.overview.status().await.unwrap();
    let hot = status.wallets.iter().find(|w| w.wallet == "sol-hot").unwrap();
    let assets: Vec<&str> = hot.conserved.iter().filter(|c| c.block > slot).map(|c| c.asset.as_str()).collect();
    assets == ["sol-local:SOL", "sol-local:USDS"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_confirmed_slot_is_unwound_and_its_transaction_indexed_again_once() {
    let org = SolanaOrg::start("balance_conservation = false").await;
    let node = org.node().await;
    let agent = McpAgent::connect(&node.services, "sol-buyer").await;
    node.tick().await;
    // From here on nothing becomes final: the slots to come are on a fork.
    let head = spendguard_evm::testing::rpc_call(&org.surfnet.url, "getSlot", json!([])).await.unwrap();
    let held = head.as_u64().unwrap();
    org.proxy.set_faults(Faults { finalized_at_most: Some(held), ..Faults::default() });

    let paid =
        agent.call("spend", json!({ "wallet": "sol-hot", "to": SOL_PAYEE, "amount": "0.05", "asset": "SOL" })).await;
    assert_eq!(paid.data["status"], "executed", "{}", paid.text);
    let id = paid.data["decision_id"].as_str().unwrap().to_string();
    tick_until(&node, "the spend confirmed and matched", async || {
        let s = status_of(&agent, &id).await;
        s["status"] == "confirmed" && s["reconciliation"] == "matched"
    })
    .await;
    let signature = status_of(&agent, &id).await["tx_hash"].as_str().unwrap().to_string();

    // The fork is abandoned: the transaction is gone. The watcher unwinds it; the decision is
    // open again (its transaction re-sent), nothing is frozen.
    org.proxy.set_faults(Faults {
        finalized_at_most: Some(held),
        rolled_back: vec![signature.clone()],
        ..Faults::default()
    });
    tick_until(&node, "the rolled-back transaction unwound", async || {
        status_of(&agent, &id).await["status"] != "confirmed"
            && node.ledger().outflows(Some("sol-local")).await.unwrap().is_empty()
    })
    .await;
    let rollbacks = node.ledger().events(Some(EventKind::Reorg)).await.unwrap();
    assert_eq!(rollbacks.len(), 1, "{rollbacks:?}");
    assert!(rollbacks[0].detail.starts_with("chain sol-local: slots from"), "{}", rollbacks[0].detail);
    assert!(rollbacks[0].detail.contains("were rolled back; 1 decision(s) reopened"), "{}", rollbacks[0].detail);

    // It lands again (the same signed transaction, re-sent while its blockhash is valid): indexed
    // again, matched, counted once; the wallet still spends.
    org.proxy.set_faults(Faults::default());
    tick_until(&node, "the transaction indexed again", async || {
        let s = status_of(&agent, &id).await;
        s["status"] == "confirmed" && s["reconciliation"] == "matched"
    })
    .await;
    let outflows = node.ledger().outflows(Some("sol-local")).await.unwrap();
    let of_tx: Vec<_> = outflows.iter().filter(|o| o.tx_hash == signature).map(|o| o.kind).collect();
    assert_eq!(of_tx.len(), 2, "its transfer and its fee, once each: {outflows:#?}");
    assert!(node.ledger().freezes().await.unwrap().is_empty());
    let next =
        agent.call("spend", json!({ "wallet": "sol-hot", "to": SOL_PAYEE, "amount": "0.01", "asset": "SOL" })).await;
    assert_eq!(next.data["status"], "executed", "{}", next.text);
}
