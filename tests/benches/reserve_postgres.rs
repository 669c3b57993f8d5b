//! Evaluate-and-reserve committed durably on a real PostgreSQL server (started by the bench from
//! Debian's binaries, `fsync` and `synchronous_commit` on): the same decisions as the SQLite
//! bench (`cargo bench -p spendguard-store --bench reserve`), with 1 and 64 callers on one
//! ledger handle (one daemon), and 64 callers spread over three handles — each with its own
//! writer connection, as three daemons sharing the database have.
//! Run: `cargo bench -p spendguard-tests --bench reserve_postgres`.
#![allow(clippy::unwrap_used, missing_docs)] // bench code: a panic is the failure report; criterion macros make undocumented fns

#[path = "../../crates/store/benches/shared/reserve_org.rs"]
mod reserve_org;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use reserve_org::{concurrent, model, start};
use spendguard_store::{LedgerOptions, SqlStore};
use spendguard_tests::postgres::Postgres;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;

fn bench(c: &mut Criterion) {
    let server = Postgres::start();
    let url = server.database();
    let open = || Arc::new(SqlStore::open_postgres(&url, model(), start(), LedgerOptions::default()).unwrap());
    let one = [open()];
    let three = [Arc::clone(&one[0]), open(), open()];
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let clock = Arc::new(AtomicI64::new(0));

    let mut group = c.benchmark_group("reserve_durable_postgres");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(10));
    let stats = |ledgers: &[Arc<SqlStore>]| {
        ledgers.iter().fold((0, 0), |(t, j), l| (t + l.stats().transactions, j + l.stats().jobs))
    };
    for (name, ledgers, callers) in
        [("1_caller", &one[..], 1), ("64_callers_1_daemon", &one[..], 64), ("64_callers_3_daemons", &three[..], 64)]
    {
        let before = stats(ledgers);
        group.bench_function(name, |b| b.iter_custom(|iters| concurrent(&runtime, ledgers, callers, iters, &clock)));
        let after = stats(ledgers);
        let (tx, jobs) = (after.0 - before.0, after.1 - before.1);
        println!("{name}: {jobs} decisions in {tx} transactions, {:.1} per commit", jobs as f64 / tx.max(1) as f64);
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
