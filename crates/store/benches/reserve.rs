//! Evaluate-and-reserve committed durably (WAL, synchronous = FULL) to a real SQLite file, with
//! one caller and with 64 concurrent callers. Each iteration is one durable decision.
//! Run: `cargo bench -p spendguard-store --bench reserve`.
#![allow(clippy::unwrap_used, missing_docs)] // bench code: a panic is the failure report; criterion macros make undocumented fns

#[path = "shared/reserve_org.rs"]
mod reserve_org;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use reserve_org::{concurrent, dry_run, model, reserve, start};
use spendguard_store::{LedgerOptions, SqlStore};
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let ledger =
        Arc::new(SqlStore::open(&dir.path().join("bench.db"), model(), start(), LedgerOptions::default()).unwrap());
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
    // What a decision costs besides its write: the hop to the writer thread and back, and the
    // evaluation.
    group.bench_function("dry_run_1_caller", |b| b.iter(|| runtime.block_on(dry_run(&ledger, &clock, start()))));
    let before = ledger.stats();
    group.bench_function("1_caller", |b| b.iter(|| runtime.block_on(reserve(&ledger, &clock, start()))));
    report("1_caller", before);
    let before = ledger.stats();
    let ledgers = [Arc::clone(&ledger)];
    group.bench_function("64_callers", |b| b.iter_custom(|iters| concurrent(&runtime, &ledgers, 64, iters, &clock)));
    report("64_callers", before);
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
