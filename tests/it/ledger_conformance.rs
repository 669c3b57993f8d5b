//! The ledger's conformance suite: the same tests against each engine — an SQLite file and a
//! PostgreSQL database on a real server the test starts (Debian's binaries). Each test opens
//! the ledger through [`Engine`]; opening it again is a restart, opening it twice is two
//! daemons (two processes on one file, or two servers on one database).

use chrono::{DateTime, Utc};
use spendguard_core::model::Scope;
use spendguard_core::{Balances, Freeze, Model, ReasonCode, SpendRequest, SpendStatus};
use spendguard_store::{
    DecisionStore, FreezeOutcome, FreezeStore, LedgerOptions, Receipt, ReserveOutcome, ReserveRequest, SqlStore,
    StoreError,
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
        balances: Balances::new(),
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
