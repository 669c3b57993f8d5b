//! The ledger's conformance suite: the same tests against each engine — an SQLite file and a
//! PostgreSQL database on a real server the test starts (Debian's binaries). Each test opens
//! the ledger through [`Engine`]; opening it again is a restart, opening it twice is two
//! daemons (two processes on one file, or two servers on one database).

use chrono::{DateTime, Utc};
use spendguard_core::model::Scope;
use spendguard_core::{Balances, Freeze, Model, ReasonCode, SpendRequest, SpendStatus};
use spendguard_store::{
    Account, AuditStore, BalanceReading, DecisionStore, FreezeOutcome, FreezeStore, IndexedTransaction, LeaseStore,
    LedgerOptions, OutboxStore, OutflowStore, Receipt, ReserveOutcome, ReserveRequest, SignedRecord, Signing,
    SigningStore, SqlStore, StoreError,
};
use spendguard_tests::postgres::Postgres;
use std::sync::Arc;

const CONFIG: &str = r#"
[server]
database = "ledger.db"

[org]
id = "acme"

[[chain]]
id = "eth"
kind = "evm"
chain_id = 31337
rpc = ["http://127.0.0.1:8545"]

[[asset]]
chain = "eth"
symbol = "USDC"
contract = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
decimals = 6
price_usd = "1"

[[wallet]]
id = "hot"
chain = "eth"
address = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"

[[agent]]
id = "bot"
wallets = ["hot"]

[[agent]]
id = "other"
wallets = ["hot"]

[[policy]]
id = "bot-daily"
scope = "agent:bot"
limits = [ { window = "day", max_usd = "1000" } ]

[[policy]]
id = "org-ceiling"
scope = "org"
limits = [ { window = "day", max_usd = "1000000" } ]
"#;

const RECIPIENT: &str = "0xa0Ee7A142d267C1f36714E4a8F75612F20a79720";
const NOON: &str = "2026-11-23T12:00:00Z";

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
}

fn model() -> Arc<Model> {
    Arc::new(spendguard_config::parse(CONFIG, std::path::Path::new("ledger.toml")).unwrap().model)
}

/// Where a test's ledger lives.
enum Engine {
    Sqlite(tempfile::TempDir),
    Postgres { _server: Postgres, url: String },
}

impl Engine {
    fn sqlite() -> Engine {
        Engine::Sqlite(tempfile::tempdir().unwrap())
    }

    fn postgres() -> Engine {
        let server = Postgres::start();
        let url = server.database();
        Engine::Postgres { _server: server, url }
    }

    /// Opens the ledger (again: a restart; twice: two daemons).
    fn open(&self) -> SqlStore {
        let options = LedgerOptions::default();
        match self {
            Engine::Sqlite(dir) => SqlStore::open(&dir.path().join("l.db"), model(), at(NOON), options),
            Engine::Postgres { url, .. } => SqlStore::open_postgres(url, model(), at(NOON), options),
        }
        .unwrap_or_else(|e| panic!("open the ledger: {e}"))
    }
}

fn usdc(agent: &str, amount: &str) -> ReserveRequest {
    ReserveRequest {
        request: SpendRequest {
            agent: agent.into(),
            wallet: "hot".into(),
            to: RECIPIENT.into(),
            amount: spendguard_core::money::parse_decimal(amount).unwrap(),
            asset: Some("USDC".into()),
            operation: None,
            at: at(NOON),
            domain: None,
        },
        balances: Balances::default(),
        prices: Default::default(),
        idempotency_key: None,
        memo: None,
        x402: None,
    }
}

fn decided(outcome: ReserveOutcome) -> Receipt {
    match outcome {
        ReserveOutcome::Decided { receipt, .. } => receipt,
        other => panic!("expected a decision, got {other:?}"),
    }
}

/// Each test, once per engine.
macro_rules! on_each_engine {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Engine::sqlite()).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Engine::postgres()).await })*
        }
    };
}

on_each_engine!(
    an_idempotency_key_replays_the_first_result_and_refuses_other_arguments,
    reservations_survive_a_restart_and_still_count,
    a_second_daemon_sees_the_firsts_reservations_and_freezes,
    illegal_transitions_and_unknown_things_are_errors,
    two_daemons_racing_for_one_budget_never_overspend_and_keep_one_audit_head,
    nonces_from_two_daemons_have_no_gap_and_no_twin,
    an_alert_is_claimed_by_one_daemon_and_a_lease_held_by_one_until_it_runs_out,
    a_balance_read_beside_a_movement_is_passed_over_and_one_that_does_not_add_up_freezes,
);

async fn an_idempotency_key_replays_the_first_result_and_refuses_other_arguments(engine: Engine) {
    let ledger = engine.open();
    let mut req = usdc("bot", "10");
    req.idempotency_key = Some("order-42".into());
    let ReserveOutcome::Decided { receipt: first, replayed: false } = ledger.reserve(req.clone()).await.unwrap() else {
        panic!("a first decision")
    };
    // A retry, even a moment later, gets the same answer and spends nothing more.
    let mut retry = req.clone();
    retry.request.at += chrono::TimeDelta::seconds(30);
    let ReserveOutcome::Decided { receipt: again, replayed: true } = ledger.reserve(retry).await.unwrap() else {
        panic!("a replay")
    };
    assert_eq!(again, first);
    assert_eq!(ledger.decisions(Some("bot")).await.unwrap().len(), 1);
    // The same key with another amount is a conflict naming the original decision.
    let mut different = req.clone();
    different.request.amount = spendguard_core::money::parse_decimal("11").unwrap();
    assert_eq!(
        ledger.reserve(different).await.unwrap(),
        ReserveOutcome::IdempotencyConflict { original_decision_id: first.decision_id.clone() }
    );
    // Keys belong to an agent: another agent may use the same key.
    let mut other = usdc("other", "10");
    other.idempotency_key = Some("order-42".into());
    assert!(matches!(ledger.reserve(other).await.unwrap(), ReserveOutcome::Decided { replayed: false, .. }));
    // And the key survives a restart.
    drop(ledger);
    let ledger = engine.open();
    assert!(matches!(ledger.reserve(req).await.unwrap(), ReserveOutcome::Decided { replayed: true, .. }));
}

async fn reservations_survive_a_restart_and_still_count(engine: Engine) {
    {
        let ledger = engine.open();
        assert_eq!(decided(ledger.reserve(usdc("bot", "600")).await.unwrap()).status, SpendStatus::Reserved);
    }
    let ledger = engine.open();
    let denied = decided(ledger.reserve(usdc("bot", "400.01")).await.unwrap());
    assert_eq!(denied.reasons[0].code, ReasonCode::WindowLimit);
    assert!(denied.reasons[0].detail.contains("reserved 600.00"), "{}", denied.reasons[0].detail);
    assert_eq!(decided(ledger.reserve(usdc("bot", "400")).await.unwrap()).status, SpendStatus::Reserved);
}

async fn a_second_daemon_sees_the_firsts_reservations_and_freezes(engine: Engine) {
    let (a, b) = (engine.open(), engine.open());
    decided(a.reserve(usdc("bot", "600")).await.unwrap());
    let denied = decided(b.reserve(usdc("bot", "401")).await.unwrap());
    assert_eq!(denied.reasons[0].code, ReasonCode::WindowLimit, "b must see a's reservation");
    // A release through b frees budget for a.
    let held = decided(b.reserve(usdc("bot", "400")).await.unwrap());
    b.set_status(&held.decision_id, SpendStatus::Released, at(NOON)).await.unwrap();
    assert_eq!(decided(a.reserve(usdc("bot", "400")).await.unwrap()).status, SpendStatus::Reserved);
    // b writes last before the freeze: it must still notice a's freeze, not trust its own view.
    decided(b.reserve(usdc("other", "1")).await.unwrap());
    // A freeze through a stops spends through b at once.
    let freeze = Freeze {
        scope: Scope::Wallet("hot".into()),
        frozen_by: "ops".into(),
        reason: "rogue transfer".into(),
        frozen_at: at(NOON),
        evidence: Some("tx 0xabc".into()),
    };
    assert!(matches!(a.freeze(freeze.clone()).await.unwrap(), FreezeOutcome::Frozen(_)));
    assert!(matches!(a.freeze(freeze).await.unwrap(), FreezeOutcome::AlreadyFrozen(_)));
    let frozen = decided(b.reserve(usdc("other", "1")).await.unwrap());
    assert_eq!(frozen.reasons[0].code, ReasonCode::KillSwitch);
    assert!(frozen.reasons[0].detail.contains("rogue transfer (evidence: tx 0xabc)"));
    assert!(b.unfreeze(Scope::Wallet("hot".into()), "ops", "key rotated", at(NOON)).await.unwrap());
    assert_eq!(decided(a.reserve(usdc("other", "1")).await.unwrap()).status, SpendStatus::Reserved);
    assert!(b.freezes().await.unwrap().is_empty());
}

async fn illegal_transitions_and_unknown_things_are_errors(engine: Engine) {
    let ledger = engine.open();
    let r = decided(ledger.reserve(usdc("bot", "1")).await.unwrap());
    ledger.set_status(&r.decision_id, SpendStatus::Released, at(NOON)).await.unwrap();
    let err = ledger.set_status(&r.decision_id, SpendStatus::Signed, at(NOON)).await.unwrap_err();
    assert_eq!(err.to_string(), format!("decision {} is released; it cannot become signed", r.decision_id));
    assert!(matches!(
        ledger.set_status("dec_nope", SpendStatus::Signed, at(NOON)).await,
        Err(StoreError::UnknownDecision(_))
    ));
    let ghost = Freeze {
        scope: Scope::Agent("ghost".into()),
        frozen_by: "ops".into(),
        reason: "x".into(),
        frozen_at: at(NOON),
        evidence: None,
    };
    assert_eq!(ledger.freeze(ghost).await.unwrap_err().to_string(), "no agent \"ghost\" is configured");
    // A failed job does not disturb the ledger.
    assert_eq!(decided(ledger.reserve(usdc("bot", "1")).await.unwrap()).status, SpendStatus::Reserved);
}

async fn two_daemons_racing_for_one_budget_never_overspend_and_keep_one_audit_head(engine: Engine) {
    let daemons = [Arc::new(engine.open()), Arc::new(engine.open())];
    // 64 callers, half on each daemon, 4 spends of 10 USD each: 2,560 USD asked of 1,000.
    let callers: Vec<_> = (0..64)
        .map(|i| {
            let ledger = Arc::clone(&daemons[i % 2]);
            tokio::spawn(async move {
                let mut reserved = 0;
                for _ in 0..4 {
                    let r = decided(ledger.reserve(usdc("bot", "10")).await.unwrap());
                    match r.status {
                        SpendStatus::Reserved => reserved += 1,
                        SpendStatus::Denied => assert_eq!(r.reasons[0].code, ReasonCode::WindowLimit),
                        other => panic!("{other:?}"),
                    }
                }
                reserved
            })
        })
        .collect();
    let mut reserved = 0;
    for caller in callers {
        reserved += caller.await.unwrap();
    }
    assert_eq!(reserved, 100, "exactly the budget: 100 spends of 10 USD");
    let decisions = daemons[1].decisions(Some("bot")).await.unwrap();
    assert_eq!(decisions.len(), 256, "one decision per request");
    // Both appended to one chain: it verifies whole, with an entry per decision at least.
    for ledger in &daemons {
        let check = ledger.verify_audit(None).await.unwrap();
        assert!(check.first_bad.is_none() && check.entries >= 256, "{check:?}");
    }
}

async fn nonces_from_two_daemons_have_no_gap_and_no_twin(engine: Engine) {
    let daemons = [Arc::new(engine.open()), Arc::new(engine.open())];
    let mut ids = vec![];
    for _ in 0..20 {
        ids.push(decided(daemons[0].reserve(usdc("other", "1")).await.unwrap()).decision_id);
    }
    let signers: Vec<_> = ids
        .into_iter()
        .enumerate()
        .map(|(i, id)| {
            let ledger = Arc::clone(&daemons[i % 2]);
            tokio::spawn(async move {
                let intent = ledger.decision(&id).await.unwrap().unwrap().intent().unwrap();
                let account = Account { chain: "eth".into(), address: intent.from_address.clone(), floor: 0 };
                let hash = format!("0x{id}");
                let sign: spendguard_store::SignWith = Box::new(move |nonce| {
                    Ok(SignedRecord {
                        hash,
                        raw: vec![1],
                        sequence: nonce,
                        fee_cap: rust_decimal::Decimal::ZERO,
                        fee_terms: String::new(),
                    })
                });
                match ledger.sign(&id, intent, Some(account), sign, at(NOON)).await.unwrap() {
                    Signing::Signed(record) => record.sequence.expect("a nonce"),
                    other => panic!("{other:?}"),
                }
            })
        })
        .collect();
    let mut nonces = vec![];
    for signer in signers {
        nonces.push(signer.await.unwrap());
    }
    nonces.sort_unstable();
    assert_eq!(nonces, (0..20).collect::<Vec<u64>>());
}

async fn an_alert_is_claimed_by_one_daemon_and_a_lease_held_by_one_until_it_runs_out(engine: Engine) {
    let (a, b) = (engine.open(), engine.open());
    a.record_event(spendguard_core::EventKind::KillSwitch, None, "wallet hot frozen", at(NOON)).await.unwrap();
    let event = b.events(None).await.unwrap().pop().expect("the event").id;
    let until = at(NOON) + chrono::TimeDelta::seconds(30);
    let (first, second) = tokio::join!(
        a.claim_delivery(event, "slack", until, at(NOON)),
        b.claim_delivery(event, "slack", until, at(NOON))
    );
    assert_eq!([first.unwrap(), second.unwrap()].iter().filter(|c| **c).count(), 1, "claimed exactly once");

    // Watching a chain: one holder at a time, another only once the lease runs out.
    let s = |secs| at(NOON) + chrono::TimeDelta::seconds(secs);
    assert_eq!(a.hold_lease("watch:eth", "a", s(3), s(0)).await.unwrap().holder, "a");
    assert_eq!(b.hold_lease("watch:eth", "b", s(4), s(1)).await.unwrap().holder, "a", "a's lease runs");
    assert_eq!(a.hold_lease("watch:eth", "a", s(5), s(2)).await.unwrap().holder, "a", "renewed");
    assert_eq!(b.hold_lease("watch:eth", "b", s(9), s(6)).await.unwrap().holder, "b", "taken over once run out");
    assert_eq!(a.hold_lease("watch:eth", "a", s(10), s(7)).await.unwrap().holder, "b", "a lost it");
    a.release_lease("watch:eth", "a").await.unwrap();
    assert_eq!(a.lease("watch:eth").await.unwrap().unwrap().holder, "b", "only the holder gives it up");
    b.release_lease("watch:eth", "b").await.unwrap();
    assert_eq!(a.lease("watch:eth").await.unwrap(), None);
    assert_eq!(a.hold_lease("watch:eth", "a", s(11), s(8)).await.unwrap().holder, "a", "free again");
    // Each change of holder is on the audit record.
    let entries = a.audit_entries(Default::default()).await.unwrap();
    let taken: Vec<_> = entries.iter().filter(|e| e.kind == "lease_taken").map(|e| e.actor.as_str()).collect();
    assert_eq!(taken, ["a", "b", "a"]);
}

async fn a_balance_read_beside_a_movement_is_passed_over_and_one_that_does_not_add_up_freezes(engine: Engine) {
    let ledger = engine.open();
    let usdc = |balance: &str| {
        vec![BalanceReading {
            wallet: "hot".into(),
            asset: "eth:USDC".into(),
            balance: spendguard_core::money::parse_decimal(balance).unwrap(),
        }]
    };
    let checked_at =
        async || ledger.balance_checkpoints("hot").await.unwrap().iter().map(|c| c.block).collect::<Vec<_>>();
    let quiet = 2;
    assert!(ledger.check_balances("eth", 100, usdc("10"), quiet, at(NOON)).await.unwrap().is_empty());
    // 3 USDC come in at block 110.
    let inflow = spendguard_core::reconcile::Inflow {
        chain: "eth".into(),
        block: 110,
        tx_hash: "0xaa".into(),
        index: 0,
        kind: spendguard_core::reconcile::OutflowKind::Token,
        wallet: "hot".into(),
        sender: RECIPIENT.into(),
        asset: Some("eth:USDC".into()),
        token: None,
        amount: 3.into(),
        balance_before: None,
        balance_after: None,
    };
    let tx = IndexedTransaction {
        chain: "eth".into(),
        address: "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266".into(),
        signature: "0xaa".into(),
        slot: 110,
        outflows: vec![],
        inflows: vec![inflow],
    };
    ledger.record_transaction(tx, at(NOON)).await.unwrap();
    // Read within two blocks of it (a node whose slot 111 holds only part of its history), a
    // balance that does not show it yet is passed over: no difference, no checkpoint.
    for block in [108, 111, 112] {
        assert!(ledger.check_balances("eth", block, usdc("10"), quiet, at(NOON)).await.unwrap().is_empty(), "{block}");
    }
    assert_eq!(checked_at().await, [100]);
    // Clear of it, the balance adds up and is the next checkpoint.
    assert!(ledger.check_balances("eth", 113, usdc("13"), quiet, at(NOON)).await.unwrap().is_empty());
    assert_eq!(checked_at().await, [113]);
    // A unit gone with nothing recorded: a difference, the wallet frozen.
    let differences = ledger.check_balances("eth", 120, usdc("12"), quiet, at(NOON)).await.unwrap();
    assert_eq!(differences.len(), 1, "{differences:?}");
    assert_eq!(differences[0].check.actual - differences[0].check.expected(), (-1).into());
    assert_eq!(differences[0].frozen, [Scope::Wallet("hot".into())]);
    let events = ledger.events(Some(spendguard_core::EventKind::UnexplainedBalanceChange)).await.unwrap();
    assert_eq!(events.len(), 1);
}
