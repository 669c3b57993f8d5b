//! The organisation and the decision the reserve benches make (`reserve` on SQLite here,
//! `reserve_postgres` in spendguard-tests), and the callers that make them: one module so the
//! engines are measured on the same work.

use chrono::{DateTime, TimeDelta, Utc};
use spendguard_core::{Balances, SpendRequest};
use spendguard_store::{DecisionStore, ReserveOutcome, ReserveRequest, SqlStore};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The benches' organisation: four policies cover the agent (org day, department month, agent
/// 24h and 1h-count limits, a per-tx cap).
pub(crate) fn model() -> Arc<spendguard_core::Model> {
    Arc::new(spendguard_config::parse(CONFIG, std::path::Path::new("bench.toml")).unwrap().model)
}

/// The instant the benches' decisions start from.
pub(crate) fn start() -> DateTime<Utc> {
    "2026-11-23T00:00:00Z".parse().unwrap()
}

const CONFIG: &str = r#"
[server]
database = "bench.db"
[org]
id = "bench"
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
[[department]]
id = "eng"
[[wallet]]
id = "hot"
chain = "eth"
address = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
[[agent]]
id = "bot"
department = "eng"
wallets = ["hot"]
[[policy]]
id = "org"
scope = "org"
limits = [ { window = "day", max_usd = "1000000000" } ]
[[policy]]
id = "eng"
scope = "department:eng"
limits = [ { window = "month", max_usd = "1000000000" } ]
[[policy]]
id = "bot"
scope = "agent:bot"
per_tx_usd = "1000"
limits = [ { window = "24h", max_usd = "1000000000" }, { window = "1h", max_count = 100000000 } ]
"#;

fn request(at: DateTime<Utc>) -> ReserveRequest {
    ReserveRequest {
        request: SpendRequest {
            agent: "bot".into(),
            wallet: "hot".into(),
            to: "0xa0Ee7A142d267C1f36714E4a8F75612F20a79720".into(),
            amount: spendguard_core::money::parse_decimal("1.25").unwrap(),
            asset: Some("USDC".into()),
            operation: None,
            at,
            domain: None,
        },
        balances: Balances::default(),
        prices: Default::default(),
        idempotency_key: None,
        memo: None,
        x402: None,
    }
}

pub(crate) async fn reserve(ledger: &SqlStore, clock: &AtomicI64, start: DateTime<Utc>) {
    // Every decision one millisecond after the last, all inside the windows.
    let at = start + TimeDelta::microseconds(clock.fetch_add(1000, Ordering::Relaxed));
    match ledger.reserve(request(at)).await.expect("reserve") {
        ReserveOutcome::Decided { receipt, .. } => assert_eq!(receipt.status, spendguard_core::SpendStatus::Reserved),
        other => panic!("{other:?}"),
    }
}

/// The same request evaluated without reserving: the writer thread's round trip and the
/// policy engine, with no write and no fsync.
#[allow(dead_code)] // only the SQLite bench asks
pub(crate) async fn dry_run(ledger: &SqlStore, clock: &AtomicI64, start: DateTime<Utc>) {
    let at = start + TimeDelta::microseconds(clock.fetch_add(1000, Ordering::Relaxed));
    let ReserveRequest { request, balances, prices, .. } = request(at);
    let evaluation = ledger.evaluate(request, balances, prices).await.expect("evaluate");
    assert_eq!(evaluation.decision, spendguard_core::Decision::Allow);
}

/// `callers` concurrent tasks on `runtime` making about `iters` decisions between them, each
/// caller on the ledgers in turn (one ledger handle per daemon); the time per decision made.
pub(crate) fn concurrent(
    runtime: &tokio::runtime::Runtime,
    ledgers: &[Arc<SqlStore>],
    callers: u64,
    iters: u64,
    clock: &Arc<AtomicI64>,
) -> Duration {
    let per_caller = iters.div_ceil(callers);
    let began = Instant::now();
    runtime.block_on(async {
        let tasks: Vec<_> = (0..callers)
            .map(|i| {
                let (ledger, clock) = (Arc::clone(&ledgers[i as usize % ledgers.len()]), Arc::clone(clock));
                tokio::spawn(async move {
                    for _ in 0..per_caller {
                        reserve(&ledger, &clock, start()).await;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
    began.elapsed().mul_f64(iters as f64 / (per_caller * callers) as f64)
}
