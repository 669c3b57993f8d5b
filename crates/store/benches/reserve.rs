//! Evaluate-and-reserve committed durably (WAL, synchronous = FULL) to a real SQLite file, with
//! one caller and with 64 concurrent callers. Each iteration is one durable decision.
//! Run: `cargo bench -p spendguard-store --bench reserve`.
#![allow(clippy::unwrap_used, missing_docs)] // bench code: a panic is the failure report; criterion macros make undocumented fns

use chrono::{DateTime, TimeDelta, Utc};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use spendguard_core::{Balances, SpendRequest};
use spendguard_store::{DecisionStore, LedgerOptions, ReserveOutcome, ReserveRequest, SqlStore};
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
        balances: Balances::new(),
        prices: Default::default(),
        idempotency_key: None,
        memo: None,
        x402: None,
    }
}

async fn reserve(ledger: &SqlStore, clock: &AtomicI64, start: DateTime<Utc>) {
    // Every decision one millisecond after the last, all inside the windows.
    let at = start + TimeDelta::microseconds(clock.fetch_add(1000, Ordering::Relaxed));
    match ledger.reserve(request(at)).await.expect("reserve") {
        ReserveOutcome::Decided { receipt, .. } => assert_eq!(receipt.status, spendguard_core::SpendStatus::Reserved),
        other => panic!("{other:?}"),
    }
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let model = Arc::new(spendguard_config::parse(CONFIG, Path::new("bench.toml")).unwrap().model);
    let start: DateTime<Utc> = "2026-11-23T00:00:00Z".parse().unwrap();
    let ledger =
        Arc::new(SqlStore::open(&dir.path().join("bench.db"), model, start, LedgerOptions::default()).unwrap());
    // The callers are tasks on a runtime like the daemon's; the ledger answers them from its
    // writer thread.
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let clock = Arc::new(AtomicI64::new(0));

    let mut group = c.benchmark_group("reserve_durable");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(10));
    let report = |name: &str, before: spendguard_store::LedgerStats| {
        let after = ledger.stats();
        let (tx, jobs) = (after.transactions - before.transactions, after.jobs - before.jobs);
        println!("{name}: {jobs} decisions in {tx} transactions, {:.1} per fsync", jobs as f64 / tx.max(1) as f64);
    };
    let before = ledger.stats();
    group.bench_function("1_caller", |b| b.iter(|| runtime.block_on(reserve(&ledger, &clock, start))));
    report("1_caller", before);
    let before = ledger.stats();
    group.bench_function("64_callers", |b| {
        b.iter_custom(|iters| {
            let per_thread = iters.div_ceil(64);
            let began = Instant::now();
            runtime.block_on(async {
                let callers: Vec<_> = (0..64)
                    .map(|_| {
                        let (ledger, clock) = (Arc::clone(&ledger), Arc::clone(&clock));
                        tokio::spawn(async move {
                            for _ in 0..per_thread {
                                reserve(&ledger, &clock, start).await;
                            }
                        })
                    })
                    .collect();
                for caller in callers {
                    caller.await.unwrap();
                }
            });
            // Report time per decision actually made.
            began.elapsed().mul_f64(iters as f64 / (per_thread * 64) as f64)
        })
    });
    report("64_callers", before);
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
