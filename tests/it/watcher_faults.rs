//! The watcher when the world misbehaves: RPC faults and a lagging node (through a
//! fault-injecting proxy in front of a real anvil), a node that stays down, a reorg deeper than
//! the configured limit, and a spend that never lands.

use serde_json::json;
use spendguard_core::SpendStatus;
use spendguard_evm::testing::{rpc_call, send_native, send_token};
use spendguard_tests::anvil::DEV_KEYS;
use spendguard_tests::clock::SteppedClock;
use spendguard_tests::evm_org::*;
use spendguard_tests::mcp_client::McpAgent;
use spendguard_tests::prelude::*;
use spendguard_tests::rpc_proxy::{Faults, RpcProxy};
use std::sync::Arc;
use std::time::Duration;

/// Anvil account 3: an address no wallet is registered for.
const STRANGER: &str = DEV_KEYS[3];

/// Mixed traffic from the wallets' keys (outside spendguard), from a stranger, and empty blocks.
async fn mixed_traffic(org: &EvmOrg, rounds: usize) {
    for i in 0..rounds {
        send_native(&org.anvil.url, DEV_KEYS[1], PAYEE, 1_000_000_000_000 + i as u128).await.unwrap();
        send_token(&org.anvil.url, DEV_KEYS[2], &org.token, PAYEE2, 1_000 + i as u128).await.unwrap();
        send_native(&org.anvil.url, STRANGER, PAYEE, 1).await.unwrap();
        rpc_call(&org.anvil.url, "anvil_mine", json!([2])).await.unwrap();
    }
    org.mine().await;
}

/// Runs passes of at most `per_pass` blocks until the watcher has caught up; returns how many
/// passes failed on the way.
async fn catch_up(node: &spendguard_tests::node::TestNode, per_pass: u64) -> usize {
    let mut failed = 0;
    for _ in 0..500 {
        match node.watch_once("eth-local", per_pass).await {
            Ok(pass) if pass.caught_up() => return failed,
            Ok(_) => {}
            Err(_) => failed += 1,
        }
    }
    panic!("the watcher did not catch up in 500 passes ({failed} failed)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_faults_and_a_lagging_node_neither_skip_nor_double_count_a_block() {
    let org = EvmOrg::start("").await;
    mixed_traffic(&org, 10).await;

    let reference = org.node().await;
    catch_up(&reference, 1000).await;
    let expected = spendguard_tests::timeless(reference.ledger().outflows(Some("eth-local")).await.unwrap());
    // Per round: native + fee (hot), token + fee (cold); the stranger's transfers are not ours.
    assert_eq!(expected.len(), 40);

    // The same chain through two unreliable URLs: the first lags 4 blocks behind the head it
    // reports and sometimes has no receipts; the second rate-limits, fails and answers late.
    let lagging =
        RpcProxy::start(&org.anvil.url, Faults { lag: Some(4), null_receipts_every: Some(3), ..Faults::default() })
            .await;
    let flaky = RpcProxy::start(
        &org.anvil.url,
        Faults {
            too_many_every: Some(4),
            bad_gateway_every: Some(7),
            slow_every: Some((19, Duration::from_millis(1500))),
            ..Faults::default()
        },
    )
    .await;
    let rpc = format!("rpc = [\"{}\"]", org.anvil.url);
    let config = org.variant(
        "faulty",
        &[
            ("database = \"spendguard.db\"", "database = \"faulty.db\""),
            (&rpc, &format!("rpc = [\"{}\", \"{}\"]\nrpc_timeout = \"1s\"", lagging.url, flaky.url)),
        ],
    );
    let faulty = org.node_for(config, vec![]).await;
    let failed_passes = catch_up(&faulty, 7).await;
    let got = spendguard_tests::timeless(faulty.ledger().outflows(Some("eth-local")).await.unwrap());

    assert_eq!(got, expected, "no block skipped, no outflow counted twice");
    assert_eq!(
        faulty.ledger().chain_cursor("eth-local").await.unwrap(),
        reference.ledger().chain_cursor("eth-local").await.unwrap()
    );
    let (lagging, flaky) = (lagging.stats(), flaky.stats());
    for (stats, kinds) in
        [(&lagging, &["lagging null block", "null receipts"][..]), (&flaky, &["429", "502", "slow"][..])]
    {
        for kind in kinds {
            assert!(stats.injected.get(kind).is_some_and(|n| *n > 0), "{kind} was injected: {stats:?}");
        }
    }
    eprintln!(
        "faults injected: lagging {:?}, flaky {:?}; {failed_passes} passes failed",
        lagging.injected, flaky.injected
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_without_progress_raises_watcher_stalled_once_per_episode() {
    let org = EvmOrg::start("").await;
    org.mine().await;
    let proxy = RpcProxy::start(&org.anvil.url, Faults { down: true, ..Faults::default() }).await;
    let config = org.via_rpc("stalling", &[&proxy.url], "stall_after = \"1s\"");
    let node = org.node_for(config, vec![]).await;
    let stalled = async || node.ledger().events(Some(EventKind::WatcherStalled)).await.unwrap();

    // Each failing pass spends its retries (about 1.5–3 s of backoff), more than stall_after.
    assert!(node.watch_once("eth-local", 100).await.is_err());
    let first = stalled().await;
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(first[0].detail.contains("chain eth-local: no indexing progress for"), "{first:?}");
    assert!(node.watch_once("eth-local", 100).await.is_err());
    assert_eq!(stalled().await.len(), 1, "one alert per stall, not one per pass");

    proxy.set_faults(Faults::default());
    assert!(node.watch_once("eth-local", 100).await.unwrap().caught_up());
    proxy.set_faults(Faults { down: true, ..Faults::default() });
    org.mine().await;
    assert!(node.watch_once("eth-local", 100).await.is_err());
    assert_eq!(stalled().await.len(), 2, "a new stall after progress alerts again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reorg_deeper_than_the_limit_stops_the_watcher_with_one_alert() {
    let org = EvmOrg::start("").await;
    for _ in 0..6 {
        org.mine().await;
    }
    let config = org.variant("shallow", &[("confirmations = 1", "confirmations = 1\nmax_reorg_depth = 2")]);
    let node = org.node_for(config, vec![]).await;
    assert!(node.watch_once("eth-local", 1000).await.unwrap().caught_up());
    rpc_call(&org.anvil.url, "anvil_reorg", json!([4, []])).await.unwrap();
    org.mine().await;
    let err = node.watch_once("eth-local", 1000).await.unwrap_err().to_string();
    assert!(err.contains("reorg deeper than max_reorg_depth (2 blocks)"), "{err}");
    let err_again = node.watch_once("eth-local", 1000).await.unwrap_err().to_string();
    assert_eq!(err, err_again, "stays stopped");
    assert_eq!(node.ledger().events(Some(EventKind::WatcherStalled)).await.unwrap().len(), 1);
    assert!(node.ledger().events(Some(EventKind::Reorg)).await.unwrap().is_empty(), "nothing was unwound by guessing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spend_that_never_lands_is_reported_missing_and_released_once_it_cannot() {
    let org = EvmOrg::start(BUYER_TIERS).await;
    let config = org.variant("missing", &[("confirmations = 1", "confirmations = 1\nmissing_after = \"1s\"")]);
    // The deadline is passed by stepping the node's clock, not by waiting: on a loaded machine
    // the steps before the first look could take longer than the deadline itself.
    let start = chrono::Utc::now();
    let clock = Arc::new(SteppedClock::new(start));
    let node = org.node_for_with_clock(config, clock.clone()).await;
    let agent = McpAgent::connect(&node.services, "buyer").await;

    // The spend is broadcast into the mempool, then the node forgets it, and the wallet's key
    // (leaked) uses the same nonce for something else.
    rpc_call(&org.anvil.url, "evm_setAutomine", json!([false])).await.unwrap();
    let r = agent.call("spend", json!({ "wallet": "hot", "to": PAYEE, "amount": "5", "asset": "TUSD" })).await;
    assert_eq!(r.data["status"], "executed", "{}", r.text);
    let id = r.data["decision_id"].as_str().unwrap().to_string();
    let hash = r.data["tx_hash"].as_str().unwrap().to_string();
    rpc_call(&org.anvil.url, "anvil_dropTransaction", json!([hash])).await.unwrap();
    rpc_call(&org.anvil.url, "evm_setAutomine", json!([true])).await.unwrap();
    let rogue = send_native(&org.anvil.url, DEV_KEYS[1], PAYEE2, 1_000_000_000_000).await.unwrap();
    org.mine().await;

    // Before its deadline it is only in flight; after, it is reported, and the chain's final
    // state (the nonce taken by the rogue transfer) proves it cannot land: released.
    node.tick().await;
    assert_eq!(node.ledger().decision(&id).await.unwrap().unwrap().status, SpendStatus::Broadcast);
    assert!(node.ledger().events(Some(EventKind::MissingOutflow)).await.unwrap().is_empty());
    clock.set(start + chrono::TimeDelta::seconds(2));
    node.tick().await;
    let events = node.ledger().events(Some(EventKind::MissingOutflow)).await.unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0].detail.contains(&hash), "{events:?}");
    let record = node.ledger().decision(&id).await.unwrap().unwrap();
    assert_eq!(record.status, SpendStatus::Failed);
    assert!(record.failure.as_deref().is_some_and(|f| f.starts_with("missing:")), "{record:?}");
    let status = agent.call("spend_status", json!({ "decision_id": id })).await;
    assert_eq!(status.data["status"], "failed", "{}", status.text);

    // The rogue transfer itself is unexplained and froze the wallet; nothing is reported twice.
    assert!(node.ledger().outflows(Some("eth-local")).await.unwrap().iter().any(|o| o.tx_hash == rogue));
    assert_eq!(node.ledger().freezes().await.unwrap().len(), 1);
    node.tick().await;
    assert_eq!(node.ledger().events(Some(EventKind::MissingOutflow)).await.unwrap().len(), 1);
}
