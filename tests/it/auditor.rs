//! The auditor on a real anvil: outflows that spendguard approved reconcile as matched; value
//! moved with a wallet's key behind spendguard's back is unexplained and freezes the wallet,
//! and the next spend through MCP is refused with the evidence.

use serde_json::json;
use spendguard_core::reconcile::OutflowKind;
use spendguard_evm::testing::{rpc_call, send_native, send_token};
use spendguard_tests::anvil::DEV_KEYS;
use spendguard_tests::evm_org::*;
use spendguard_tests::mcp_client::McpAgent;
use spendguard_tests::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_that_bypasses_spendguard_freezes_its_wallet() {
    let org = EvmOrg::start(BUYER_TIERS).await;
    let node = org.node().await;
    let agent = McpAgent::connect(&node.services, "buyer").await;

    // Spends through spendguard: matched, nothing frozen.
    let mut paid = vec![];
    for (wallet, asset, amount) in [("hot", "TUSD", "5"), ("cold", "ETH", "0.001")] {
        let r = agent.call("spend", json!({ "wallet": wallet, "to": PAYEE, "amount": amount, "asset": asset })).await;
        assert_eq!(r.data["status"], "executed", "{}", r.text);
        // Not seen on chain yet: no reconciliation class.
        let status = agent.call("spend_status", json!({ "decision_id": r.data["decision_id"] })).await;
        assert!(status.data["reconciliation"].is_null(), "{}", status.text);
        paid.push(r.data["decision_id"].clone());
    }
    org.mine().await;
    let findings = node.watch_once("eth-local", 1000).await.unwrap().findings;
    assert!(findings.is_empty(), "only matched outflows expected: {findings:?}");
    assert!(node.ledger().freezes().await.unwrap().is_empty());
    // The agent sees how the auditor reconciled each of its spends.
    for id in &paid {
        let status = agent.call("spend_status", json!({ "decision_id": id })).await;
        assert_eq!(status.data["reconciliation"], "matched", "{}", status.text);
    }

    // The hot wallet's key sends ETH directly.
    let rogue = send_native(&org.anvil.url, DEV_KEYS[1], PAYEE2, 1_000_000_000_000_000).await.unwrap();
    org.mine().await;
    let findings = node.watch_once("eth-local", 1000).await.unwrap().findings;
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
    org.mine().await;
    let findings = node.watch_once("eth-local", 1000).await.unwrap().findings;
    let token = findings.iter().find(|f| f.outflow.kind == OutflowKind::Token).expect("the token outflow");
    assert_eq!((token.class, token.outflow.tx_hash.as_str()), (Class::Unexplained, rogue_token.as_str()));
    assert_eq!(token.outflow.amount, "2.5".parse().unwrap());
    let denied = agent.call("spend", json!({ "wallet": "cold", "to": PAYEE, "amount": "1", "asset": "TUSD" })).await;
    assert!(denied.is_error && denied.text.contains(&rogue_token), "{}", denied.text);

    // Indexing is idempotent and durable: a fresh node resumes after the last block.
    let events = node.ledger().events(Some(EventKind::UnexplainedOutflow)).await.unwrap().len();
    let again = org.node().await;
    assert!(again.watch_once("eth-local", 1000).await.unwrap().findings.is_empty());
    assert_eq!(again.ledger().events(Some(EventKind::UnexplainedOutflow)).await.unwrap().len(), events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reorg_that_drops_a_matched_spend_reopens_it_and_matches_it_again() {
    let org = EvmOrg::start(BUYER_TIERS).await;
    let node = org.node().await;
    let agent = McpAgent::connect(&node.services, "buyer").await;
    let before = org.token_balance(PAYEE).await;
    let paid = agent.call("spend", json!({ "wallet": "hot", "to": PAYEE, "amount": "5", "asset": "TUSD" })).await;
    let id = paid.data["decision_id"].as_str().unwrap().to_string();
    org.mine().await;
    node.tick().await;
    node.tick().await;
    let status = async || node.ledger().decision(&id).await.unwrap().unwrap();
    let confirmed = status().await;
    assert_eq!(confirmed.status, SpendStatus::Confirmed);
    let tx_hash = confirmed.tx_hash.clone().expect("signed");

    // Replace the last three blocks (the spend's among them) with empty ones, then grow the chain.
    // Whatever anvil does with the orphaned transaction, it is gone from its pool too: only
    // spendguard sending it again can land it.
    rpc_call(&org.anvil.url, "anvil_reorg", json!([3, []])).await.unwrap();
    rpc_call(&org.anvil.url, "anvil_dropTransaction", json!([tx_hash])).await.unwrap();
    for _ in 0..3 {
        org.mine().await;
    }
    let gone = rpc_call(&org.anvil.url, "eth_getTransactionByHash", json!([tx_hash])).await.unwrap();
    assert!(gone.is_null(), "the node no longer knows the spend's transaction: {gone}");
    let findings = node.watch_once("eth-local", 1000).await.unwrap().findings;
    assert!(findings.is_empty(), "no false finding: {findings:?}");
    let reopened = status().await;
    assert_eq!(reopened.status, SpendStatus::Broadcast, "the reorg reopened it: {reopened:?}");
    assert_eq!(reopened.block, None);
    assert_eq!(node.ledger().events(Some(EventKind::Reorg)).await.unwrap().len(), 1);

    // Followed again: re-sent by spendguard (the node had lost it), confirmed, matched once more.
    node.tick().await;
    let resent = rpc_call(&org.anvil.url, "eth_getTransactionByHash", json!([tx_hash])).await.unwrap();
    assert!(!resent.is_null(), "spendguard sent the same signed transaction again");
    for _ in 0..4 {
        org.mine().await;
        node.tick().await;
    }
    assert_eq!(status().await.status, SpendStatus::Confirmed);
    assert!(node.ledger().freezes().await.unwrap().is_empty(), "no false freeze");
    assert_eq!(org.token_balance(PAYEE).await - before, 5_000_000, "landed exactly once");
    let matched = node.ledger().reconciliation(&id).await.unwrap();
    assert_eq!(matched, Some(Class::Matched), "matched again after the reorg");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_command_freezes_a_rogue_transfer_within_a_poll() {
    let org = EvmOrg::start("").await;
    // The clock starts once the watcher is up and has caught up with the chain, not while the
    // process is still starting (on a busy machine that alone can take seconds).
    let watching = spendguard_tests::Watching::start(&org.config_path);
    tokio::task::block_in_place(|| watching.caught_up("eth-local"));
    let rogue = send_native(&org.anvil.url, DEV_KEYS[1], PAYEE2, 1_000_000_000_000_000).await.unwrap();
    // confirmations = 1: the rogue block is final once one more block is on top.
    org.mine().await;
    let final_at = std::time::Instant::now();
    let line = tokio::task::block_in_place(|| watching.line_with(&rogue, std::time::Duration::from_secs(20)));
    let elapsed = final_at.elapsed();
    assert!(line.starts_with("unexplained hot: native 0.001 eth-local:ETH"), "{line}");
    assert!(line.contains(&rogue), "{line}");
    let freezes = org.node().await.ledger().freezes().await.unwrap();
    assert_eq!(freezes.len(), 1);
    assert_eq!((freezes[0].frozen_by.as_str(), freezes[0].scope.to_string()), ("reconciler", "wallet:hot".to_string()));
    eprintln!("rogue transfer final → wallet frozen in {elapsed:?} (poll interval 1s)");
    assert!(
        elapsed < std::time::Duration::from_secs(3),
        "target: within confirmations × block time + 2 s; took {elapsed:?}"
    );
    assert!(EvmOrg::stop_daemon(watching.child), "watch stops cleanly on SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unexplained_outflows_and_freezes_are_alerted_with_retries() {
    use spendguard_config::AlertKind;
    use spendguard_service::AlertChannel;
    let org = EvmOrg::start("").await;
    let (url, seen) = spendguard_tests::alert_receiver::receiver(1).await;
    let node = org
        .node_with_alerts(vec![
            AlertChannel {
                id: "ops-webhook".into(),
                kind: AlertKind::Webhook,
                url: Some(format!("{url}/hook")),
                events: vec![EventKind::UnexplainedOutflow, EventKind::KillSwitch],
            },
            AlertChannel {
                id: "ops-slack".into(),
                kind: AlertKind::Slack,
                url: Some(format!("{url}/slack")),
                events: vec![EventKind::UnexplainedOutflow],
            },
            AlertChannel { id: "unset".into(), kind: AlertKind::Slack, url: None, events: vec![EventKind::KillSwitch] },
        ])
        .await;
    let rogue = send_native(&org.anvil.url, DEV_KEYS[1], PAYEE2, 1_000_000_000_000_000).await.unwrap();
    org.mine().await;
    node.watch_once("eth-local", 1000).await.unwrap();
    node.services.alerts.pass().await.unwrap();
    // Slack got its message at once; the webhook's first attempt failed (503) and is recorded.
    let webhook_events = |seen: &Vec<(String, serde_json::Value)>| {
        seen.iter()
            .filter(|(p, _)| p == "hook")
            .map(|(_, b)| b["event"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    {
        let seen = seen.lock().unwrap();
        let slack: Vec<&serde_json::Value> = seen.iter().filter(|(p, _)| p == "slack").map(|(_, b)| b).collect();
        assert_eq!(slack.len(), 2, "one message per unexplained outflow (value and fee): {slack:?}");
        assert!(slack[0]["text"].as_str().unwrap().contains(&rogue));
        assert_eq!(webhook_events(&seen).len(), 2, "the first of three webhook posts failed");
    }
    let events = node.ledger().events(Some(EventKind::UnexplainedOutflow)).await.unwrap();
    let first = node.ledger().delivery(events[0].id, "ops-webhook").await.unwrap().unwrap();
    assert_eq!(
        first,
        spendguard_store::Delivery {
            attempts: 1,
            delivered: false,
            last_error: Some("HTTP 503 Service Unavailable".into())
        }
    );
    let unset = node.ledger().events(Some(EventKind::KillSwitch)).await.unwrap();
    let unset = node.ledger().delivery(unset[0].id, "unset").await.unwrap().unwrap();
    assert_eq!((unset.attempts, unset.delivered), (1, false));
    assert!(unset.last_error.unwrap().contains("url_env is not set"));
    // A second process's pass at the same moment posts nothing twice.
    let other = org
        .node_with_alerts(vec![AlertChannel {
            id: "ops-slack".into(),
            kind: AlertKind::Slack,
            url: Some(format!("{url}/slack")),
            events: vec![EventKind::UnexplainedOutflow],
        }])
        .await;
    other.services.alerts.pass().await.unwrap();
    assert_eq!(seen.lock().unwrap().iter().filter(|(p, _)| p == "slack").count(), 2, "no duplicate alert");
    // Not before its backoff (1–1.25 s) ends; then the failed delivery goes through.
    node.services.alerts.pass().await.unwrap();
    assert_eq!(webhook_events(&seen.lock().unwrap()).len(), 2, "retried only after its backoff");
    spendguard_tests::wait_until("the failed delivery's retry", std::time::Duration::from_secs(30), async || {
        node.services.alerts.pass().await.unwrap();
        webhook_events(&seen.lock().unwrap()).len() == 3
    })
    .await;
    let mut got = webhook_events(&seen.lock().unwrap());
    got.sort();
    assert_eq!(got, ["kill_switch", "unexplained_outflow", "unexplained_outflow"]);
    let retried = node.ledger().delivery(events[0].id, "ops-webhook").await.unwrap().unwrap();
    assert_eq!((retried.attempts, retried.delivered, retried.last_error), (2, true, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_stopped_mid_backfill_resumes_with_identical_results() {
    let org = EvmOrg::start(BUYER_TIERS).await;
    let agent_node = org.node().await;
    let agent = McpAgent::connect(&agent_node.services, "buyer").await;
    // Mixed traffic: spends through spendguard from both wallets, empty blocks, a rogue transfer.
    for i in 0..8 {
        let wallet = if i % 2 == 0 { "hot" } else { "cold" };
        let r = agent.call("spend", json!({ "wallet": wallet, "to": PAYEE, "amount": "1", "asset": "TUSD" })).await;
        assert_eq!(r.data["status"], "executed", "{}", r.text);
        org.mine().await;
    }
    send_token(&org.anvil.url, DEV_KEYS[2], &org.token, PAYEE2, 1).await.unwrap();
    for _ in 0..3 {
        org.mine().await;
    }
    // A fresh ledger copy indexes it all in one go: the reference.
    let reference_dir = tempfile::tempdir().unwrap();
    let reference_db = reference_dir.path().join("spendguard.db");
    {
        // Copy decisions as they are now (WAL checkpointed by closing the node's handles first).
        drop(agent);
        drop(agent_node);
        std::fs::copy(org.dir.path().join("spendguard.db"), &reference_db).unwrap();
        for suffix in ["-wal", "-shm"] {
            let from = org.dir.path().join(format!("spendguard.db{suffix}"));
            if from.exists() {
                std::fs::copy(&from, reference_dir.path().join(format!("spendguard.db{suffix}"))).unwrap();
            }
        }
    }
    // The real one is stopped twice in the middle of the backfill (5 blocks a pass) and resumed.
    for _ in 0..2 {
        let watcher = org.node().await;
        watcher.watch_once("eth-local", 5).await.unwrap();
        drop(watcher);
    }
    let resumed = org.node().await;
    resumed.watch_once("eth-local", 1000).await.unwrap();
    let got = spendguard_tests::timeless(resumed.ledger().outflows(Some("eth-local")).await.unwrap());

    org.edit_config("database = \"spendguard.db\"", &format!("database = \"{}\"", reference_db.display()));
    let reference = org.node().await;
    reference.watch_once("eth-local", 1000).await.unwrap();
    let expected = spendguard_tests::timeless(reference.ledger().outflows(Some("eth-local")).await.unwrap());
    assert_eq!(got, expected, "no gap, no duplicate");
    // 8 spends (token + fee each, matched) and the rogue token transfer (token + fee, unexplained).
    assert_eq!(got.len(), 18);
    assert_eq!(got.iter().filter(|o| o.class == Class::Matched).count(), 16);
    assert_eq!(
        resumed.ledger().chain_cursor("eth-local").await.unwrap(),
        reference.ledger().chain_cursor("eth-local").await.unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crossing_80_percent_of_a_limit_and_a_low_balance_are_each_reported_once() {
    let org = EvmOrg::start("").await;
    // cold starts with 10,000 ETH ($30,000,000) and 100,000 TUSD: $30,100,000.
    org.edit_config(
        "password_env = \"COLD_PASSWORD\"",
        "password_env = \"COLD_PASSWORD\"\nbalance_low_usd = \"30099990\"",
    );
    let node = org.node().await;
    let agent = McpAgent::connect(&node.services, "saver").await; // 100 USD a day
    let spend = |amount: &'static str| {
        let (agent, org, node) = (&agent, &org, &node);
        async move {
            let r =
                agent.call("spend", json!({ "wallet": "cold", "to": PAYEE, "amount": amount, "asset": "TUSD" })).await;
            assert_eq!(r.data["status"], "executed", "{}", r.text);
            org.mine().await;
            node.tick().await;
        }
    };
    let events = async |kind| node.ledger().events(Some(kind)).await.unwrap();

    spend("70").await; // 70 %: nothing yet; $30,099,930 left: below the mark
    assert!(events(EventKind::Limit80Percent).await.is_empty());
    let low = events(EventKind::BalanceLow).await;
    assert_eq!(low.len(), 1, "{low:?}");
    assert!(low[0].detail.starts_with("wallet cold holds $300999"), "{low:?}");
    spend("15").await; // 85 %: crossed
    let crossed = events(EventKind::Limit80Percent).await;
    assert_eq!(crossed.len(), 1, "{crossed:?}");
    assert!(
        crossed[0].detail.contains("$85.00 of the agent:saver limit $100.00 (24h window, policy saver-daily)"),
        "{crossed:?}"
    );
    assert!(crossed[0].detail.ends_with(": 85%"), "{crossed:?}");
    spend("5").await; // 90 %: already past the mark
    assert_eq!(events(EventKind::Limit80Percent).await.len(), 1, "reported when crossed, not on every spend after");
    assert_eq!(events(EventKind::BalanceLow).await.len(), 1, "reported when it drops below, not on every spend after");

    // A refill of 85 TUSD lifts it above the mark (about $4 over, after the gas paid): the low
    // state clears, so the next drop below is reported again.
    spendguard_evm::testing::send_token(
        &org.anvil.url,
        spendguard_tests::anvil::DEV_KEYS[0],
        &org.token,
        COLD,
        85_000_000,
    )
    .await
    .unwrap();
    org.mine().await;
    node.tick().await;
    assert_eq!(events(EventKind::BalanceLow).await.len(), 1, "above the mark again: nothing to report");
    spend("10").await;
    let low = events(EventKind::BalanceLow).await;
    assert_eq!(low.len(), 2, "dropped below again after the refill: {low:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_command_shows_backfill_progress() {
    use std::io::BufRead;
    let org = EvmOrg::start("").await;
    rpc_call(&org.anvil.url, "anvil_mine", json!([1200])).await.unwrap();
    let mut watcher = std::process::Command::new(EvmOrg::binary())
        .arg("--config")
        .arg(&org.config_path)
        .arg("watch")
        .envs(org.server_env())
        .env("SPENDGUARD_LOG", "error")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start spendguard watch");
    let stderr = std::io::BufReader::new(watcher.stderr.take().unwrap());
    let mut progress = vec![];
    tokio::task::block_in_place(|| {
        for line in stderr.lines().map_while(Result::ok).filter(|l| l.starts_with("eth-local:")) {
            let done = line.contains("caught up");
            progress.push(line);
            if done {
                break;
            }
        }
    });
    assert!(EvmOrg::stop_daemon(watcher.into()));
    // Head 1203 (3 set-up blocks + 1200), confirmations 1: blocks 0..=1202, 500 a pass.
    assert_eq!(
        progress,
        [
            "eth-local: indexed blocks 0..=499 (500 blocks); 703 to go to block 1202",
            "eth-local: indexed blocks 500..=999 (500 blocks); 203 to go to block 1202",
            "eth-local: caught up; indexed through block 1202",
        ]
    );
}
