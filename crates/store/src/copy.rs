//! Copying an SQLite ledger into PostgreSQL (`spendguard migrate --to postgres://…`): every
//! table row for row, read from one snapshot of the file and written in one PostgreSQL
//! transaction, so the copy is whole or absent. The audit chain's hashes cover what its rows
//! hold, byte for byte, so it verifies on the copy as it did on the file.

use crate::error::{StoreError, StoreResult};
use crate::records::LedgerOptions;
use crate::sqlite::{file, schema, writer};
use postgres::types::ToSql;
use rusqlite::types::ValueRef;
use std::path::Path;

/// Rows copied from one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopiedTable {
    /// Table.
    pub table: String,
    /// Rows.
    pub rows: u64,
}

/// Copies the SQLite ledger at `path` (brought to the current schema first) into the
/// PostgreSQL database at `url`, which must hold no ledger yet (its tables are created if
/// missing). Returns the rows copied per table. A daemon may keep writing to the file: the copy
/// is of one consistent moment; what it writes after that is not in the copy.
pub fn copy_to_postgres(path: &Path, url: &str) -> StoreResult<Vec<CopiedTable>> {
    let refuse = |why: String| StoreError::Unusable(format!("cannot copy the ledger: {why}"));
    if !std::fs::metadata(path).is_ok_and(|m| m.len() > 0) {
        return Err(refuse(format!("there is no ledger at {}", path.display())));
    }
    let options = LedgerOptions::default();
    file::prepare(path, &options, file::Creation::IfMissing)?;
    let mut source = writer::connect(path, &options)?;
    schema::migrate(&mut source)?;

    let mut target = writer::connect_postgres(url)?;
    crate::postgres::schema::migrate(&mut target)
        .map_err(|e| refuse(format!("preparing the PostgreSQL database: {e}")))?;
    let held: i64 =
        target.query_one("SELECT (SELECT count(*) FROM audit_log) + (SELECT count(*) FROM decisions)", &[])?.get(0);
    if held > 0 {
        return Err(refuse(
            "the PostgreSQL database already holds a ledger (decisions or audit entries); copy into an empty database"
                .into(),
        ));
    }

    // One read transaction: every table as of the same commit.
    let snapshot = source.transaction()?;
    let tables: Vec<String> = snapshot
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut tx = target.transaction()?;
    let mut copied = vec![];
    for table in tables {
        let columns: Vec<String> = snapshot
            .prepare(&format!("PRAGMA table_info(\"{table}\")"))?
            .query_map([], |r| r.get(1))?
            .collect::<Result<_, _>>()?;
        let mut types = vec![];
        for column in &columns {
            let found = tx.query_opt(
                "SELECT data_type::text FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $1 AND column_name = $2",
                &[&table, column],
            )?;
            let Some(found) = found else {
                return Err(refuse(format!("column {table}.{column} has no counterpart in the PostgreSQL ledger")));
            };
            types.push(found.get::<_, String>(0));
        }
        let list = columns.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ");
        let slots = (1..=columns.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
        // The fresh database's own counters (the change counter) give way to the file's.
        let on_conflict = if table == "meta" { " ON CONFLICT (key) DO UPDATE SET value = excluded.value" } else { "" };
        let insert = tx.prepare(&format!("INSERT INTO \"{table}\" ({list}) VALUES ({slots}){on_conflict}"))?;
        let mut select = snapshot.prepare(&format!("SELECT {list} FROM \"{table}\""))?;
        let mut rows = select.query([])?;
        let mut count = 0u64;
        while let Some(row) = rows.next()? {
            let mut values: Vec<Box<dyn ToSql + Sync>> = vec![];
            for (i, pg_type) in types.iter().enumerate() {
                let value = convert(row.get_ref(i)?, pg_type)
                    .map_err(|why| refuse(format!("{table}.{} of row {}: {why}", columns[i], count + 1)))?;
                values.push(value);
            }
            let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v.as_ref()).collect();
            tx.execute(&insert, &params)?;
            count += 1;
        }
        // Identity columns continue after the rows copied.
        let identities: Vec<String> = tx
            .query(
                "SELECT column_name::text FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $1 AND is_identity = 'YES'",
                &[&table],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for column in identities {
            tx.execute(
                &format!(
                    "SELECT setval(pg_get_serial_sequence('\"{table}\"', '{column}'), \
                     COALESCE((SELECT MAX(\"{column}\") FROM \"{table}\"), 0) + 1, false)"
                ),
                &[],
            )?;
        }
        copied.push(CopiedTable { table, rows: count });
    }
    tx.commit()?;
    Ok(copied)
}

/// One SQLite value as the PostgreSQL column of `pg_type` takes it.
fn convert(value: ValueRef<'_>, pg_type: &str) -> Result<Box<dyn ToSql + Sync>, String> {
    let wrong = || format!("{} value cannot go into a {pg_type} column", kind(value));
    Ok(match (pg_type, value) {
        ("bigint", ValueRef::Null) => Box::new(None::<i64>),
        ("bigint", ValueRef::Integer(i)) => Box::new(i),
        ("boolean", ValueRef::Null) => Box::new(None::<bool>),
        ("boolean", ValueRef::Integer(i)) => Box::new(i != 0),
        ("text", ValueRef::Null) => Box::new(None::<String>),
        ("text", ValueRef::Text(t)) => Box::new(String::from_utf8(t.to_vec()).map_err(|_| "text that is not UTF-8")?),
        ("text", ValueRef::Integer(i)) => Box::new(i.to_string()),
        ("bytea", ValueRef::Null) => Box::new(None::<Vec<u8>>),
        ("bytea", ValueRef::Blob(b)) => Box::new(b.to_vec()),
        _ => return Err(wrong()),
    })
}

fn kind(value: ValueRef<'_>) -> &'static str {
    match value {
        ValueRef::Null => "a null",
        ValueRef::Integer(_) => "an integer",
        ValueRef::Real(_) => "a real",
        ValueRef::Text(_) => "a text",
        ValueRef::Blob(_) => "a blob",
    }
}
