//! Ledger tests on real SQLite files (WAL): idempotency, restarts, several handles and several
//! processes on one file, through the per-concern store traits.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod concurrency;
mod ledger;

use chrono::{DateTime, Utc};
use spendguard_core::{Balances, Model, SpendRequest};
use spendguard_store::{LedgerOptions, Receipt, ReserveOutcome, ReserveRequest, SqlStore};
use std::path::Path;
use std::sync::Arc;

pub(crate) const CONFIG: &str = r#"
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
symbol = "ETH"
decimals = 18
price_usd = "3000"

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

# Every agent is covered by a limit (spendguard denies spends no limit bounds).
[[policy]]
id = "org-ceiling"
scope = "org"
limits = [ { window = "day", max_usd = "1000000" } ]
"#;

pub(crate) const RECIPIENT: &str = "0xa0Ee7A142d267C1f36714E4a8F75612F20a79720";

pub(crate) fn model() -> Arc<Model> {
    Arc::new(spendguard_config::parse(CONFIG, Path::new("ledger.toml")).expect("test config").model)
}

pub(crate) fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
}

pub(crate) const NOON: &str = "2026-11-23T12:00:00Z";

pub(crate) fn open(path: &Path) -> SqlStore {
    SqlStore::open(path, model(), at(NOON), LedgerOptions::default()).expect("open ledger")
}

pub(crate) fn usdc(agent: &str, amount: &str) -> ReserveRequest {
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

pub(crate) fn decided(outcome: ReserveOutcome) -> Receipt {
    match outcome {
        ReserveOutcome::Decided { receipt, .. } => receipt,
        other => panic!("expected a decision, got {other:?}"),
    }
}
