//! 64 callers in this process and 16 in a second process reserve against one agent's budget on
//! one database file. The total reserved never exceeds the limit, and every request has exactly
//! one recorded decision.

use crate::*;
use rust_decimal::Decimal;
use spendguard_core::SpendStatus;
use spendguard_store::DecisionStore;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

const REQUESTS_PER_THREAD: usize = 25;
const PARENT_THREADS: usize = 64;
const CHILD_THREADS: usize = 16;

/// Amounts from 0.01 to 4.00 USDC, different per thread and request: about 500 of the 2,000
/// requests fit the budget, so both processes race for it until the end.
fn amount(thread: usize, i: usize, salt: usize) -> String {
    let x = (thread * 7919 + i * 104_729 + salt * 1_299_709) % 400 + 1;
    format!("{}.{:02}", x / 100, x % 100)
}

/// Runs `callers` concurrent callers against a ledger on `path`, once `go` returns; returns
/// (decision id, status, amount) per request.
fn hammer(
    path: &std::path::Path,
    callers: usize,
    salt: usize,
    go: impl FnOnce(),
) -> Vec<(String, SpendStatus, String)> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let ledger = std::sync::Arc::new(open(path));
    // Both processes have their ledger open before either starts.
    go();
    runtime.block_on(async {
        let tasks: Vec<_> = (0..callers)
            .map(|t| {
                let ledger = std::sync::Arc::clone(&ledger);
                tokio::spawn(async move {
                    let mut out = vec![];
                    for i in 0..REQUESTS_PER_THREAD {
                        let amt = amount(t, i, salt);
                        let r = decided(ledger.reserve(usdc("bot", &amt)).await.expect("reserve"));
                        out.push((r.decision_id, r.status, amt));
                    }
                    out
                })
            })
            .collect();
        let mut all = vec![];
        for task in tasks {
            all.extend(task.await.expect("caller"));
        }
        all
    })
}

#[test]
fn concurrent_reservations_from_two_processes_never_exceed_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shared.db");
    drop(open(&db)); // create and migrate before both sides start
    let go_file = dir.path().join("go");
    let ready_file = dir.path().join("ready");
    let child_out = dir.path().join("child.txt");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "concurrency::second_process", "--ignored", "--nocapture", "--test-threads", "1"])
        .env("SPENDGUARD_CHILD_DB", &db)
        .env("SPENDGUARD_CHILD_GO", &go_file)
        .env("SPENDGUARD_CHILD_READY", &ready_file)
        .env("SPENDGUARD_CHILD_OUT", &child_out)
        // Its own test summary would read like one of ours; its stderr still shows failures.
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn the second process");
    // Both sides open their ledger and line up their threads; then both start at once.
    let ours = hammer(&db, PARENT_THREADS, 1, || {
        wait_for(&ready_file);
        std::fs::write(&go_file, b"go").unwrap();
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the second process did not finish within 5 minutes");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(status.success(), "second process failed: {status}");
    let theirs: Vec<(String, SpendStatus, String)> = std::fs::read_to_string(&child_out)
        .unwrap()
        .lines()
        .map(|l| {
            let mut p = l.split(' ');
            let (id, st, amt) = (p.next().unwrap(), p.next().unwrap(), p.next().unwrap());
            (id.to_string(), SpendStatus::parse(st).unwrap(), amt.to_string())
        })
        .collect();
    assert_eq!(ours.len(), PARENT_THREADS * REQUESTS_PER_THREAD);
    assert_eq!(theirs.len(), CHILD_THREADS * REQUESTS_PER_THREAD);

    let ledger = open(&db);
    let rows = tokio::runtime::Runtime::new().unwrap().block_on(ledger.decisions(Some("bot"))).unwrap();
    assert_eq!(rows.len(), ours.len() + theirs.len(), "every request has exactly one decision row");
    let by_id: std::collections::HashMap<_, _> = rows.iter().map(|r| (r.id.clone(), r)).collect();
    for (id, status, amt) in ours.iter().chain(&theirs) {
        let row = by_id.get(id).unwrap_or_else(|| panic!("decision {id} was reported but not recorded"));
        let dec = |t: &str| spendguard_core::money::parse_decimal(t).unwrap();
        assert_eq!((row.status, row.amount), (*status, dec(amt)), "{id}");
    }
    let reserved: Decimal = rows.iter().filter(|r| r.status == SpendStatus::Reserved).map(|r| r.amount).sum();
    assert!(reserved <= Decimal::from(1000), "overspent: {reserved}");
    assert!(reserved > Decimal::from(996), "the budget should be nearly used up, got {reserved}");
    let from_child = theirs.iter().filter(|(_, s, _)| *s == SpendStatus::Reserved).count();
    let from_parent = ours.iter().filter(|(_, s, _)| *s == SpendStatus::Reserved).count();
    // The two processes really ran at once: their decisions interleave in the ledger.
    let child_ids: std::collections::HashSet<&String> = theirs.iter().map(|(id, _, _)| id).collect();
    let switches = rows.windows(2).filter(|w| child_ids.contains(&w[0].id) != child_ids.contains(&w[1].id)).count();
    eprintln!(
        "reserved {reserved} USD: {from_parent} spends from this process, {from_child} from the other; \
         the ledger switched between processes {switches} times"
    );
    assert!(switches >= 2, "the processes did not overlap");
}

fn wait_for(file: &std::path::Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !file.exists() {
        assert!(std::time::Instant::now() < deadline, "{} never appeared", file.display());
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// The second process of the test above; it does nothing unless started by it.
#[test]
#[ignore = "run as a child process by concurrent_reservations_from_two_processes_never_exceed_the_budget"]
fn second_process() {
    let var = |name| {
        std::env::var_os(name).map(PathBuf::from).unwrap_or_else(|| panic!("{name} is set by the concurrency test"))
    };
    let (db, go, ready, out) = (
        var("SPENDGUARD_CHILD_DB"),
        var("SPENDGUARD_CHILD_GO"),
        var("SPENDGUARD_CHILD_READY"),
        var("SPENDGUARD_CHILD_OUT"),
    );
    let results = hammer(&db, CHILD_THREADS, 2, || {
        std::fs::write(&ready, b"ready").unwrap();
        wait_for(&go);
    });
    let mut file = std::fs::File::create(out).unwrap();
    for (id, status, amt) in results {
        writeln!(file, "{id} {status} {amt}").unwrap();
    }
}
