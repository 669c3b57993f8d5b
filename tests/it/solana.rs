//! Guarded spending and auditing on a real Solana JSON-RPC (surfpool, in-process) beside a real
//! anvil: SOL and SPL spends signed and sent by spendguard, limits pooled across both chains,
//! the signature-indexed watcher reconciling them, rogue transfers frozen, expired blockhashes
//! re-signed once, and a watcher restarted through RPC faults indexing exactly once.

use serde_json::json;
use spendguard_core::model::Scope;
use spendguard_core::reconcile::{Finding, OutflowKind};
use spendguard_solana::testing;
use spendguard_tests::evm_org::PAYEE;
use spendguard_tests::mcp_client::McpAgent;
use spendguard_tests::node::TestNode;
use spendguard_tests::prelude::*;
use spendguard_tests::rpc_proxy::Faults;
use spendguard_tests::solana_org::*;
use std::time::Duration;

/// Runs background passes until decision `id` reaches `status`; returns it.
async fn settle(node: &TestNode, id: &str, status: SpendStatus) -> spendguard_store::DecisionRecord {
    let mut record = node.ledger().decision(id).await.unwrap().unwrap();
    for _ in 0..150 {
        node.tick().await;
        record = node.ledger().decision(id).await.unwrap().unwrap();
        if record.status == status {
            return record;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("decision {id} never became {status}: {record:?}");
}

/// Runs watcher passes until `sol-local` has `n` outflows recorded; returns the findings seen.
async fn watch_until(node: &TestNode, n: usize) -> Vec<Finding> {
    let mut findings = vec![];
    for _ in 0..150 {
        if let Ok(pass) = node.watch_once("sol-local", 1000).await {
            findings.extend(pass.findings);
        }
        let recorded = node.ledger().outflows(Some("sol-local")).await.unwrap();
        if recorded.len() >= n {
            assert_eq!(recorded.len(), n, "{recorded:#?}");
            return findings;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("sol-local never had {n} outflows: {:#?}", node.ledger().outflows(Some("sol-local")).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sol_spends_land_once_and_limits_pool_across_evm_and_solana() {
    let org = SolanaOrg::start("").await;
    let node = org.node().await;
    let agent = McpAgent::connect(&node.services, "saver").await;

    // $20 of SOL: signed and sent by spendguard, confirmed with its fee.
    let paid =
        agent.call("spend", json!({ "wallet": "sol-hot", "to": SOL_PAYEE, "amount": "0.2", "asset": "SOL" })).await;
    assert_eq!(paid.data["status"], "executed", "{}", paid.text);
    let record = settle(&node, paid.data["decision_id"].as_str().unwrap(), SpendStatus::Confirmed).await;
    assert_eq!(record.fee_paid, Some("0.000005".parse().unwrap()), "{record:?}");
    let balance = agent.call("balance", json!({ "wallet": "sol-hot" })).await;
    let sol = &balance.data["wallets"][0]["balances"];
    assert_eq!(sol[0]["amount"], "99.799995", "{}", balance.text);
    assert_eq!(sol[1]["amount"], "10000", "USDS is read from the wallet's token account: {}", balance.text);

    // $70 of TUSD on EVM: the day's budget is now $90 of $100, pooled across both chains.
    let evm = agent.call("spend", json!({ "wallet": "cold", "to": PAYEE, "amount": "70", "asset": "TUSD" })).await;
    assert_eq!(evm.data["status"], "executed", "{}", evm.text);
    let denied =
        agent.call("spend", json!({ "wallet": "sol-hot", "to": SOL_PAYEE, "amount": "0.2", "asset": "SOL" })).await;
    assert!(denied.is_error && denied.text.starts_with("WINDOW_LIMIT"), "{}", denied.text);
    let fits =
        agent.call("spend", json!({ "wallet": "sol-hot", "to": SOL_PAYEE, "amount": "0.1", "asset": "SOL" })).await;
    assert_eq!(fits.data["status"], "executed", "{}", fits.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_matches_sol_and_spl_spends_and_freezes_a_rogue_transfer() {
    let org = SolanaOrg::start("").await;
    let (url, seen) = spendguard_tests::alert_receiver::receiver(0).await;
    let node = org
        .node_with_alerts(vec![spendguard_service::AlertChannel {
            id: "ops-webhook".into(),
            kind: spendguard_config::AlertKind::Webhook,
            url: Some(format!("{url}/hook")),
            events: vec![EventKind::UnexplainedOutflow, EventKind::KillSwitch],
        }])
        .await;
    let agent = McpAgent::connect(&node.services, "sol-buyer").await;

    // SOL, and USDS to a payee with no token account yet: spendguard creates it, paying its rent.
    let sol =
        agent.call("spend", json!({ "wallet": "sol-hot", "to": SOL_PAYEE, "amount": "0.05", "asset": "SOL" })).await;
    let usds =
        agent.call("spend", json!({ "wallet": "sol-hot", "to": SOL_PAYEE, "amount": "5", "asset": "USDS" })).await;
    for r in [&sol, &usds] {
        assert_eq!(r.data["status"], "executed", "{}", r.text);
    }
    settle(&node, sol.data["decision_id"].as_str().unwrap(), SpendStatus::Confirmed).await;
    let token_spend = settle(&node, usds.data["decision_id"].as_str().unwrap(), SpendStatus::Confirmed).await;
    assert_eq!(token_spend.fee_paid, Some("0.00204428".parse().unwrap()), "fee 5000 + rent 2039280 lamports");

    // Each spend: its transfer and its fee, matched by signature.
    let findings = watch_until(&node, 4).await;
    assert!(findings.is_empty(), "only matched outflows expected: {findings:?}");
    let recorded = node.ledger().outflows(Some("sol-local")).await.unwrap();
    let token = recorded.iter().find(|o| o.kind == OutflowKind::Token).expect("the USDS outflow");
    assert_eq!(
        (token.asset.as_deref(), token.recipient.as_deref(), token.amount, token.class),
        (Some("sol-local:USDS"), Some(SOL_PAYEE), "5".parse().unwrap(), Class::Matched),
        "the recipient is the owner of the token account the tokens went to"
    );
    assert!(node.ledger().freezes().await.unwrap().is_empty());

    // The wallet's key sends SOL, and a token spendguard does not know, behind its back.
    testing::mint_to(&org.surfnet.url, &org.treasury, &org.junk, SOL_PAYEE, 0).await.unwrap();
    let rogue = testing::send_sol(&org.surfnet.url, &org.keypair, SOL_PAYEE, 1_000_000).await.unwrap();
    let rogue_junk = testing::send_token(&org.surfnet.url, &org.keypair, &org.junk, SOL_PAYEE, 7).await.unwrap();
    let findings = watch_until(&node, 8).await;
    let seen_kinds: Vec<(OutflowKind, Class, &str)> =
        findings.iter().map(|f| (f.outflow.kind, f.class, f.outflow.tx_hash.as_str())).collect();
    assert_eq!(
        seen_kinds,
        [
            (OutflowKind::Native, Class::Unexplained, rogue.as_str()),
            (OutflowKind::Fee, Class::Unexplained, rogue.as_str()),
            (OutflowKind::Token, Class::Unexplained, rogue_junk.as_str()),
            (OutflowKind::Fee, Class::Unexplained, rogue_junk.as_str()),
        ]
    );
    // The unknown mint is flagged: no asset, its base units, the mint named.
    let junk = &findings[2].outflow;
    assert_eq!((junk.asset.as_deref(), junk.token.as_deref(), junk.amount), (None, Some(org.junk.as_str()), 7.into()));
    assert!(
        spendguard_core::reconcile::evidence(junk).contains("unknown token"),
        "{}",
        spendguard_core::reconcile::evidence(junk)
    );
    assert_eq!(findings[0].outflow.amount, "0.001".parse().unwrap());
    assert_eq!(findings[0].outflow.recipient.as_deref(), Some(SOL_PAYEE));
    assert!(findings[0].frozen.contains(&Scope::Wallet("sol-hot".into())), "{:?}", findings[0].frozen);
    let denied =
        agent.call("spend", json!({ "wallet": "sol-hot", "to": SOL_PAYEE, "amount": "0.01", "asset": "SOL" })).await;
    assert!(
        denied.is_error && denied.text.starts_with("KILL_SWITCH: wallet sol-hot is frozen by reconciler"),
        "{}",
        denied.text
    );
    assert!(denied.text.contains(&rogue), "the evidence names the transaction: {}", denied.text);

    // Operators hear of it.
    node.services.alerts.pass().await.unwrap();
    let posted: Vec<String> =
        seen.lock().unwrap().iter().map(|(_, body)| body["event"].as_str().unwrap_or_default().to_string()).collect();
    assert!(
        posted.iter().any(|e| e == "unexplained_outflow") && posted.iter().any(|e| e == "kill_switch"),
        "{posted:?}"
    );

    // Indexing is durable: a restarted watcher resumes after each wallet's cursor.
    let restarted = org.node().await;
    assert!(restarted.watch_once("sol-local", 1000).await.unwrap().findings.is_empty(), "nothing indexed twice");
    assert_eq!(restarted.ledger().outflows(Some("sol-local")).await.unwrap().len(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_blockhash_is_re_signed_once_and_lands_once() {
    let org = SolanaOrg::start("missing_after = \"1s\"").await;
    let node = org.node().await;
    let agent = McpAgent::connect(&node.services, "sol-buyer").await;

    // The node accepts the transaction and drops it: it never lands with this blockhash.
    org.proxy.set_faults(Faults { swallow_sends: true, ..Faults::default() });
    let paid =
        agent.call("spend", json!({ "wallet": "sol-hot", "to": SOL_PAYEE, "amount": "0.01", "asset": "SOL" })).await;
    assert_eq!(paid.data["status"], "executed", "{}", paid.text);
    let id = paid.data["decision_id"].as_str().unwrap().to_string();
    let dropped = node.ledger().signed_tx(&id).await.unwrap().unwrap().hash;
    org.proxy.set_faults(Faults::default());

    // Missing after 1 s, but only once its blockhash has expired (150 slots) is it proven dead
    // and re-signed with a new one.
    let started = std::time::Instant::now();
    let record = settle(&node, &id, SpendStatus::Confirmed).await;
    let landed = record.tx_hash.clone().unwrap();
    assert_ne!(landed, dropped, "confirmed under a new signature");
    eprintln!("dropped transaction re-signed and confirmed after {:?}", started.elapsed());
    assert_eq!(node.ledger().events(Some(EventKind::MissingOutflow)).await.unwrap().len(), 1);
    let resigned = node.ledger().events(Some(EventKind::Resigned)).await.unwrap();
    assert_eq!(resigned.len(), 1, "{resigned:?}");
    assert!(resigned[0].detail.contains(&dropped) && resigned[0].detail.contains(&landed), "{}", resigned[0].detail);
    assert!(org.proxy.stats().injected.get("swallowed send").is_some_and(|n| *n >= 1));

    // Landed once: the payee got 0.01 SOL, and the watcher sees one matched transfer.
    assert_eq!(org.lamports(SOL_PAYEE).await, 10_000_000);
    watch_until(&node, 2).await;
    let recorded = node.ledger().outflows(Some("sol-local")).await.unwrap();
    assert!(recorded.iter().all(|o| o.tx_hash == landed && o.class == Class::Matched), "{recorded:#?}");
    for _ in 0..5 {
        node.tick().await;
    }
    assert_eq!(node.ledger().decision(&id).await.unwrap().unwrap().status, SpendStatus::Confirmed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_restarted_through_rpc_faults_indexes_every_transaction_exactly_once() {
    let org = SolanaOrg::start("rpc_timeout = \"1s\"").await;
    let node = org.node().await;
    let agent = McpAgent::connect(&node.services, "sol-buyer").await;
    // Spends through spendguard, then transfers behind its back.
    for i in 1..=3 {
        for asset in ["SOL", "USDS"] {
            let amount = if asset == "SOL" { format!("0.00{i}") } else { format!("{i}") };
            let r = agent
                .call("spend", json!({ "wallet": "sol-hot", "to": SOL_PAYEE, "amount": amount, "asset": asset }))
                .await;
            assert_eq!(r.data["status"], "executed", "{}", r.text);
        }
    }
    // No background pass runs here: nothing is indexed into this database until the faults are on.
    for i in 0..3 {
        testing::send_sol(&org.surfnet.url, &org.keypair, SOL_PAYEE, 1_000 + i).await.unwrap();
    }
    drop(agent);
    drop(node);

    // What a clean run records, straight from the node into a database of its own.
    let direct = format!("rpc = [\"{}\"]", org.surfnet.url);
    let proxied = format!("rpc = [\"{}\"]", org.proxy.url);
    let reference = org
        .evm
        .node_for(
            org.variant(
                "reference",
                &[("database = \"spendguard.db\"", "database = \"reference.db\""), (&proxied, &direct)],
            ),
            vec![],
        )
        .await;
    watch_until(&reference, 6 * 2 + 3 * 2).await;
    let key = |o: &spendguard_store::RecordedOutflow| {
        (o.tx_hash.clone(), o.kind, o.index, o.recipient.clone(), o.asset.clone(), o.amount)
    };
    let expected: Vec<_> = reference.ledger().outflows(Some("sol-local")).await.unwrap().iter().map(key).collect();
    assert_eq!(expected.len(), 6 * 2 + 3 * 2, "transfer and fee of each spend and rogue transfer");

    // The same, three transactions per pass, a fresh process (node) every pass, through a node
    // that rate-limits, fails and answers late.
    org.proxy.set_faults(Faults {
        too_many_every: Some(4),
        bad_gateway_every: Some(7),
        slow_every: Some((9, Duration::from_millis(1500))),
        ..Faults::default()
    });
    let mut passes = 0;
    loop {
        passes += 1;
        assert!(passes < 100, "no progress");
        let restarted = org.node().await;
        if let Ok(pass) = restarted.watch_once("sol-local", 3).await {
            assert!(pass.indexed <= 3);
            if pass.caught_up() && restarted.ledger().outflows(Some("sol-local")).await.unwrap().len() >= expected.len()
            {
                break;
            }
        }
    }
    let ledger = org.node().await;
    let recorded = ledger.ledger().outflows(Some("sol-local")).await.unwrap();
    assert_eq!(recorded.iter().map(key).collect::<Vec<_>>(), expected, "no gap, no duplicate");
    assert_eq!(recorded.iter().filter(|o| o.class == Class::Matched).count(), 12, "the spends' outflows matched");
    assert_eq!(recorded.iter().filter(|o| o.class == Class::Unexplained).count(), 6);
    let injected = org.proxy.stats().injected;
    for kind in ["429", "502", "slow"] {
        assert!(injected.get(kind).is_some_and(|n| *n > 0), "{kind} never injected: {injected:?}");
    }
    eprintln!("{passes} passes, faults injected: {injected:?}");
}

/// `spendguard watch` audits every registered wallet, Solana's too: a rogue SOL transfer is
/// printed as unexplained and freezes its wallet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_command_audits_solana_wallets_too() {
    let org = SolanaOrg::start("").await;
    let watching = spendguard_tests::Watching::start(&org.config_path);
    tokio::task::block_in_place(|| watching.caught_up("sol-local"));
    let rogue = testing::send_sol(&org.surfnet.url, &org.keypair, SOL_PAYEE, 1_000_000).await.unwrap();
    let line = tokio::task::block_in_place(|| watching.line_with(&rogue, Duration::from_secs(60)));
    assert!(line.starts_with("unexplained sol-hot: native 0.001 sol-local:SOL"), "{line}");
    let freezes = org.node().await.ledger().freezes().await.unwrap();
    assert!(
        freezes.iter().any(|f| f.scope == Scope::Wallet("sol-hot".into()) && f.frozen_by == "reconciler"),
        "{freezes:?}"
    );
    assert!(spendguard_tests::evm_org::EvmOrg::stop_daemon(watching.child), "watch stops cleanly on SIGTERM");
}
