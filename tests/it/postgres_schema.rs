//! The PostgreSQL ledger's schema on a real server (Debian's binaries, started by the test):
//! it applies, a second migration finds it done, a newer schema is refused, and it has exactly
//! the tables and columns of the SQLite ledger — the engines share the ledger's SQL, so a
//! column missing on one side is a query that fails there.

use spendguard_store::postgres::schema::{migrate, SchemaError, MIGRATIONS};
use spendguard_tests::postgres::Postgres;
use std::collections::BTreeSet;

/// `(table, column)` of every column of a fresh SQLite ledger.
fn sqlite_columns() -> BTreeSet<(String, String)> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    spendguard_store::SqlStore::init(&path, &spendguard_store::LedgerOptions::default()).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut columns = BTreeSet::new();
    for table in tables {
        let mut stmt = conn.prepare(&format!("PRAGMA table_info({table})")).unwrap();
        for name in stmt.query_map([], |r| r.get::<_, String>(1)).unwrap() {
            columns.insert((table.clone(), name.unwrap()));
        }
    }
    columns
}

#[test]
fn the_postgres_schema_applies_once_and_matches_the_sqlite_ledger_column_for_column() {
    let server = Postgres::start();
    let url = server.database();
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    assert_eq!(migrate(&mut client).unwrap(), MIGRATIONS.len() as i64);
    // Again (a second daemon starting): nothing to do, nothing broken.
    assert_eq!(migrate(&mut client).unwrap(), MIGRATIONS.len() as i64);

    let pg: BTreeSet<(String, String)> = client
        .query(
            "SELECT table_name::text, column_name::text FROM information_schema.columns WHERE table_schema = 'public'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let sqlite = sqlite_columns();
    let only_sqlite: Vec<_> = sqlite.difference(&pg).collect();
    let only_pg: Vec<_> = pg.difference(&sqlite).collect();
    assert!(
        only_sqlite.is_empty() && only_pg.is_empty(),
        "only in SQLite: {only_sqlite:?}; only in PostgreSQL: {only_pg:?}"
    );

    // A database a newer spendguard migrated is refused, naming both versions.
    client.execute("UPDATE meta SET value = 99 WHERE key = 'schema_version'", &[]).unwrap();
    match migrate(&mut client) {
        Err(e @ SchemaError::TooNew { found: 99, .. }) => {
            assert!(e.to_string().contains("version 99") && e.to_string().contains("upgrade spendguard"), "{e}")
        }
        other => panic!("expected TooNew, got {other:?}"),
    }
}
