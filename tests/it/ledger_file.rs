//! The ledger file on a bad day: truncated to nothing, deleted under its write-ahead log,
//! replaced by another database. spendguard refuses to start on any of them and says why; only
//! `spendguard init` makes a new ledger, and never over one.

use crate::operators::{cli, err, out};
use spendguard_store::{LedgerOptions, SqlStore};
use std::path::Path;

/// `audit verify`, which every operator runs: it must not report "ok" on a ledger that is gone.
fn verify(config: &Path) -> std::process::Output {
    cli(config, &["audit", "verify"])
}

#[test]
fn a_truncated_or_deleted_ledger_is_refused_until_init() {
    let dir = tempfile::tempdir().unwrap();
    let config = spendguard_tests::write_config(dir.path(), "");
    let db = dir.path().join("test.db");

    // First use creates the ledger, whole: the agent token lands in it.
    let o = cli(&config, &["agent", "token", "alice"]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(out(&verify(&config)).starts_with("ok: "), "a fresh ledger verifies");

    // Truncated to 0 bytes: every command refuses, naming the file and the way out.
    std::fs::write(&db, b"").unwrap();
    for args in [&["audit", "verify"][..], &["agent", "token", "alice"], &["frozen"]] {
        let o = cli(&config, args);
        assert!(!o.status.success(), "{args:?} ran on an empty ledger: {}", out(&o));
        let e = err(&o);
        assert!(e.contains("is empty (0 bytes)") && e.contains("spendguard init"), "{args:?}: {e}");
    }
    assert_eq!(std::fs::metadata(&db).unwrap().len(), 0, "nothing was written to it");

    // `init` creates the new ledger there; a second `init` refuses to overwrite it.
    let o = cli(&config, &["init"]);
    assert!(o.status.success() && out(&o).contains("created a new, empty ledger"), "{}", err(&o));
    assert!(out(&verify(&config)).starts_with("ok: "));
    let o = cli(&config, &["init"]);
    assert!(!o.status.success() && err(&o).contains("never overwrites"), "{}", err(&o));

    // Deleted while its write-ahead log still holds transactions: refused, by init too.
    std::fs::remove_file(&db).unwrap();
    std::fs::write(dir.path().join("test.db-wal"), b"committed frames").unwrap();
    for args in [&["audit", "verify"][..], &["init"]] {
        let o = cli(&config, args);
        assert!(!o.status.success(), "{args:?} ran without its ledger: {}", out(&o));
        assert!(err(&o).contains("write-ahead log"), "{args:?}: {}", err(&o));
    }
    assert!(!db.exists(), "nothing was created over the lost ledger");
}

#[test]
fn another_database_is_not_taken_for_a_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let config = spendguard_tests::write_config(dir.path(), "");
    let other = rusqlite::Connection::open(dir.path().join("test.db")).unwrap();
    other.execute_batch("CREATE TABLE invoices (id INTEGER PRIMARY KEY); INSERT INTO invoices VALUES (1);").unwrap();
    drop(other);
    let o = verify(&config);
    assert!(!o.status.success() && err(&o).contains("holds tables but no spendguard ledger"), "{}", err(&o));
    let o = cli(&config, &["init"]);
    assert!(!o.status.success() && err(&o).contains("never overwrites"), "{}", err(&o));
}

#[test]
fn two_processes_creating_one_ledger_make_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("new.db");
    let opened: Vec<_> = (0..4)
        .map(|_| {
            let db = db.clone();
            std::thread::spawn(move || {
                let model = std::sync::Arc::new(spendguard_tests::model(""));
                SqlStore::open(&db, model, chrono::Utc::now(), LedgerOptions::default()).map(drop)
            })
        })
        .collect();
    for handle in opened {
        handle.join().unwrap().unwrap_or_else(|e| panic!("{e}"));
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".new-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_damaged_or_newer_ledger_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = spendguard_tests::write_config(dir.path(), "");
    let db = dir.path().join("test.db");
    for i in 0..20 {
        let o = cli(&config, &["agent", "token", if i % 2 == 0 { "alice" } else { "bob" }]);
        assert!(o.status.success(), "{}", err(&o));
    }
    let whole = std::fs::read(&db).unwrap();
    let refused = |what: &str, needles: &[&str]| {
        let o = verify(&config);
        let e = err(&o);
        assert!(!o.status.success(), "{what}: verify passed: {}", out(&o));
        assert!(e.contains(&db.display().to_string()), "{what}: the file is not named: {e}");
        assert!(needles.iter().any(|n| e.contains(n)), "{what}: {e}");
    };

    // Cut in half, or its header overwritten.
    std::fs::write(&db, &whole[..whole.len() / 2]).unwrap();
    refused("truncated", &["malformed", "not a database"]);
    let mut garbage = whole.clone();
    garbage[..16].copy_from_slice(b"not sqlite at al");
    std::fs::write(&db, &garbage).unwrap();
    refused("a garbage header", &["not a database"]);

    // Written by a newer spendguard.
    std::fs::write(&db, &whole).unwrap();
    rusqlite::Connection::open(&db).unwrap().pragma_update(None, "user_version", 99).unwrap();
    refused("a newer schema", &["schema is version 99", "upgrade spendguard"]);
}

#[test]
fn a_ledger_from_an_older_spendguard_is_migrated_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let config = spendguard_tests::write_config(dir.path(), "");
    let db = dir.path().join("test.db");
    assert!(cli(&config, &["agent", "token", "alice"]).status.success());
    let before = out(&verify(&config));
    // Schema 8: what spendguard wrote before it recorded each chain's genesis (9), each
    // decision's price source (10), inflows and balance checkpoints (11), external wallets'
    // authorizations (12), x402 payments (13) and their cancellations (14); the Solana cursor table
    // is rebuilt with an optional signature (15); watcher leases (16); decisions rebuilt without
    // AUTOINCREMENT (17).
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "DROP TABLE chain_identity; ALTER TABLE decisions DROP COLUMN price_source;
         ALTER TABLE decisions DROP COLUMN price_as_of_us; DROP TABLE inflows; DROP TABLE balance_checkpoints;
         DROP TABLE authorizations; ALTER TABLE decisions DROP COLUMN x402; DROP TABLE leases;
         PRAGMA user_version = 8;",
    )
    .unwrap();
    drop(conn);
    let after = out(&verify(&config));
    assert_eq!(after, before, "the audit chain is untouched by the migration");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version, 17);
    let decisions: String =
        conn.query_row("SELECT sql FROM sqlite_master WHERE name = 'decisions'", [], |r| r.get(0)).unwrap();
    assert!(!decisions.contains("AUTOINCREMENT"), "{decisions}");
    let tokens: i64 = conn.query_row("SELECT count(*) FROM agent_tokens", [], |r| r.get(0)).unwrap();
    assert_eq!(tokens, 1, "the agent's token survived");
}

#[test]
fn a_read_only_ledger_is_refused_naming_the_file_until_it_is_writable_again() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let config = spendguard_tests::write_config(dir.path(), "");
    let db = dir.path().join("test.db");
    assert!(cli(&config, &["agent", "token", "alice"]).status.success());
    // Root writes any file whatever its mode: the read-only ledger is met by an unprivileged
    // user, as an operator's account would.
    let binary = dir.path().join("spendguard");
    std::fs::copy(spendguard_tests::binary::spendguard(), &binary).unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o444)).unwrap();
    let o = std::process::Command::new("runuser")
        .args(["-u", "nobody", "--"])
        .arg(&binary)
        .arg("--config")
        .arg(&config)
        .args(["agent", "token", "bob"])
        .output()
        .expect("runuser (util-linux) to run spendguard as nobody");
    let e = err(&o);
    assert!(!o.status.success(), "a token was issued into a read-only ledger: {}", out(&o));
    assert!(e.contains(&db.display().to_string()) && e.contains("is read-only"), "{e}");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = cli(&config, &["agent", "token", "bob"]);
    assert!(o.status.success(), "{}", err(&o));
}
