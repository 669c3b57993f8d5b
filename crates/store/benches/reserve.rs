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
    // The floor under one caller: what one durable commit of one small row costs on this disk
    // at this moment, with the ledger's settings. The disk's speed moves by 2x from hour to
    // hour here, so `1_caller` is read against this, measured in the same run.
    let floor = floor_connection(&dir.path().join("floor.db"));
    let body = "x".repeat(200); // about what a decision's row holds besides its indices
    group.bench_function("commit_floor_1_row", |b| {
        b.iter(|| {
            floor.execute_batch("BEGIN IMMEDIATE").unwrap();
            floor.execute("INSERT INTO t (body) VALUES (?1)", [&body]).unwrap();
            floor.execute_batch("COMMIT").unwrap();
        })
    });
    // The same with as many pages as a decision's commit writes: `strace -c` counts about 21
    // `pwrite64` per one-caller decision, two per WAL frame (its row, five indices, the audit
    // entry and its index, the change counter, and its share of checkpoints). Ten tables, one
    // row each per commit: ten appended leaves, ten frames, one fsync.
    group.bench_function("commit_floor_10_pages", |b| {
        b.iter(|| {
            floor.execute_batch("BEGIN IMMEDIATE").unwrap();
            for table in 0..FLOOR_PAGES {
                floor
                    .prepare_cached(&format!("INSERT INTO p{table} (body) VALUES (?1)"))
                    .unwrap()
                    .execute([&body])
                    .unwrap();
            }
            floor.execute_batch("COMMIT").unwrap();
        })
    });
    let before = ledger.stats();
    group.bench_function("1_caller", |b| b.iter(|| runtime.block_on(reserve(&ledger, &clock, start()))));
    report("1_caller", before);
    let before = ledger.stats();
    let ledgers = [Arc::clone(&ledger)];
    group.bench_function("64_callers", |b| b.iter_custom(|iters| concurrent(&runtime, &ledgers, 64, iters, &clock)));
    report("64_callers", before);
    group.finish();
}

/// Tables of `commit_floor_10_pages`.
const FLOOR_PAGES: usize = 10;

/// A connection set up as the ledger's are (WAL, `synchronous = FULL`, the same cache and
/// checkpoint settings) to a table with one row per commit, and [`FLOOR_PAGES`] more.
fn floor_connection(path: &std::path::Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(())).unwrap();
    conn.execute_batch(
        "PRAGMA synchronous = FULL; PRAGMA temp_store = MEMORY; PRAGMA cache_size = -16384;
         PRAGMA wal_autocheckpoint = 8000; CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL);",
    )
    .unwrap();
    for table in 0..FLOOR_PAGES {
        conn.execute_batch(&format!("CREATE TABLE p{table} (id INTEGER PRIMARY KEY, body TEXT NOT NULL);")).unwrap();
    }
    conn
}

criterion_group!(benches, bench);
criterion_main!(benches);
