//! Engine-neutral SQL access: the small part of a database API the ledger's logic uses —
//! `execute`, `query_row`, `prepare_cached` with `query_map`/`query`, `execute_batch`, typed
//! column reads and `optional()` — shaped like rusqlite's so the engine's code reads the same,
//! over a [`Connection`] to SQLite (rusqlite) or PostgreSQL (the `postgres` client). The
//! ledger's rules — evaluate-and-reserve, signing, reconciliation, the audit chain — are
//! written once, against this.
//!
//! SQL is written in the dialect both accept: numbered parameters (`?1`, sent to PostgreSQL as
//! `$1`), `ON CONFLICT … DO NOTHING | DO UPDATE`, `RETURNING`, `CAST(… AS BIGINT)` where a
//! type must be pinned. Integers are `i64` (`BIGINT` on PostgreSQL), money and JSON text.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;

/// A failure of the database, or a value that did not decode.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// SQLite refused an operation (disk full, locked for longer than the busy timeout, …).
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL refused an operation, or the connection to it failed.
    #[error("{}", postgres_message(.0))]
    Postgres(#[from] postgres::Error),
    /// A column's value could not be read as what the ledger stores there.
    #[error("{column}: {why}")]
    Conversion {
        /// Column name (or position).
        column: String,
        /// Why.
        why: String,
    },
    /// `query_row` found no row.
    #[error("no row")]
    NoRows,
}

impl Error {
    /// True when trying again may succeed: SQLite busy or locked (another writer holds it),
    /// PostgreSQL's serialization failure or deadlock, or a lost connection.
    pub(crate) fn is_busy(&self) -> bool {
        use postgres::error::SqlState;
        match self {
            Error::Sqlite(e) => matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ),
            Error::Postgres(e) => {
                e.is_closed()
                    || matches!(e.code(), Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE
                        || *c == SqlState::T_R_DEADLOCK_DETECTED)
            }
            _ => false,
        }
    }
}

/// A PostgreSQL error with what the server said (its `Display` alone says only "db error").
fn postgres_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// Result of a database call.
pub(crate) type Result<T> = std::result::Result<T, Error>;

/// A value bound to a statement parameter.
pub(crate) trait Param: rusqlite::ToSql + postgres::types::ToSql + Sync {}
impl<T: rusqlite::ToSql + postgres::types::ToSql + Sync + ?Sized> Param for T {}

/// A value a column is read as.
pub(crate) trait Column: rusqlite::types::FromSql + for<'a> postgres::types::FromSql<'a> {}
impl<T: rusqlite::types::FromSql + for<'a> postgres::types::FromSql<'a>> Column for T {}

/// Statement parameters, in order: `params![a, b]`.
macro_rules! params {
    () => { &[] as &[&dyn $crate::sql::Param] };
    ($($p:expr),+ $(,)?) => { &[$(&$p as &dyn $crate::sql::Param),+] as &[&dyn $crate::sql::Param] };
}
pub(crate) use params;

/// Parameters of a statement.
pub(crate) type Params<'a> = &'a [&'a dyn Param];

/// The columns of one row.
pub(crate) enum Row<'a> {
    Sqlite(&'a rusqlite::Row<'a>),
    Postgres(&'a postgres::Row),
}

/// Which column: its position.
pub(crate) trait ColumnIndex: Copy {
    /// Zero-based position.
    fn position(self) -> usize;
}

impl ColumnIndex for usize {
    fn position(self) -> usize {
        self
    }
}

impl Row<'_> {
    /// Column `i` as `T`.
    pub(crate) fn get<I: ColumnIndex, T: Column>(&self, i: I) -> Result<T> {
        let i = i.position();
        match self {
            Row::Sqlite(r) => Ok(r.get(i)?),
            Row::Postgres(r) => r.try_get(i).map_err(|e| self.bad(i, e)),
        }
    }

    /// Column `i`'s name, for errors.
    pub(crate) fn column_name(&self, i: usize) -> String {
        let name = match self {
            Row::Sqlite(r) => r.as_ref().column_name(i).ok().map(str::to_string),
            Row::Postgres(r) => r.columns().get(i).map(|c| c.name().to_string()),
        };
        name.unwrap_or_else(|| format!("column {i}"))
    }

    /// A failure to decode column `i`: `why`, naming the column.
    pub(crate) fn bad(&self, i: usize, why: impl fmt::Display) -> Error {
        Error::Conversion { column: self.column_name(i), why: why.to_string() }
    }

    /// Column `i` as text, whatever its type, for naming a row in errors.
    pub(crate) fn key_text(&self, i: usize) -> String {
        use rusqlite::types::ValueRef;
        let unreadable = || "(unreadable key)".to_string();
        match self {
            Row::Sqlite(r) => match r.get_ref(i) {
                Ok(ValueRef::Text(t)) => String::from_utf8_lossy(t).into_owned(),
                Ok(ValueRef::Integer(n)) => n.to_string(),
                _ => unreadable(),
            },
            Row::Postgres(r) => r
                .try_get::<_, String>(i)
                .or_else(|_| r.try_get::<_, i64>(i).map(|n| n.to_string()))
                .unwrap_or_else(|_| unreadable()),
        }
    }
}

/// A PostgreSQL client and the statements it prepared, by their SQL.
pub(crate) struct Pg {
    client: postgres::Client,
    statements: HashMap<String, postgres::Statement>,
}

impl Pg {
    fn statement(&mut self, sql: &str) -> Result<postgres::Statement> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let prepared = self.client.prepare(sql)?;
        self.statements.insert(sql.to_string(), prepared.clone());
        Ok(prepared)
    }

    fn query(&mut self, sql: &str, params: Params<'_>) -> Result<Vec<postgres::Row>> {
        let statement = self.statement(sql)?;
        let rows = self.client.query_raw(&statement, pg_params(params))?;
        Ok(postgres::fallible_iterator::FallibleIterator::collect(rows)?)
    }

    fn execute(&mut self, sql: &str, params: Params<'_>) -> Result<usize> {
        let statement = self.statement(sql)?;
        let bound: Vec<&(dyn postgres::types::ToSql + Sync)> =
            params.iter().map(|p| *p as &(dyn postgres::types::ToSql + Sync)).collect();
        let changed = self.client.execute(&statement, &bound)?;
        Ok(changed as usize)
    }
}

fn pg_params<'a>(params: Params<'a>) -> impl ExactSizeIterator<Item = &'a dyn postgres::types::ToSql> {
    params.iter().map(|p| *p as &dyn postgres::types::ToSql)
}

/// SQL with SQLite's numbered parameters (`?1`) as PostgreSQL's (`$1`); text in quotes is
/// left alone.
fn postgres_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quoted = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '?' if !quoted && chars.peek().is_some_and(char::is_ascii_digit) => out.push('$'),
            _ => out.push(c),
        }
    }
    out
}

enum Backend {
    Sqlite(rusqlite::Connection),
    Postgres(Box<RefCell<Pg>>),
}

/// A database connection.
pub(crate) struct Connection {
    backend: Backend,
}

fn bind(params: Params<'_>) -> impl rusqlite::Params + '_ {
    rusqlite::params_from_iter(params.iter().map(|p| *p as &dyn rusqlite::ToSql))
}

impl Connection {
    /// Wraps an open SQLite connection.
    pub(crate) fn sqlite(inner: rusqlite::Connection) -> Connection {
        Connection { backend: Backend::Sqlite(inner) }
    }

    /// Wraps a connected PostgreSQL client.
    pub(crate) fn postgres(client: postgres::Client) -> Connection {
        Connection { backend: Backend::Postgres(Box::new(RefCell::new(Pg { client, statements: HashMap::new() }))) }
    }

    /// Runs one statement; answers the number of rows it changed.
    pub(crate) fn execute(&self, sql: &str, params: Params<'_>) -> Result<usize> {
        match &self.backend {
            Backend::Sqlite(c) => Ok(c.prepare_cached(sql)?.execute(bind(params))?),
            Backend::Postgres(pg) => pg.borrow_mut().execute(&postgres_sql(sql), params),
        }
    }

    /// Runs several statements separated by `;`, without parameters.
    pub(crate) fn execute_batch(&self, sql: &str) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Backend::Postgres(pg) => Ok(pg.borrow_mut().client.batch_execute(sql)?),
        }
    }

    /// Runs a statement without parameters that the writer issues all the time (`BEGIN`,
    /// `SAVEPOINT`, `COMMIT`): on SQLite prepared once and kept, where [`Connection::execute_batch`]
    /// parses it every time; on PostgreSQL a simple query (one round trip, may hold several).
    pub(crate) fn run(&self, sql: &str) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(c) => c.prepare_cached(sql)?.execute([]).map(drop).map_err(Into::into),
            Backend::Postgres(pg) => Ok(pg.borrow_mut().client.batch_execute(sql)?),
        }
    }

    /// The first row of a query, read by `f`; [`Error::NoRows`] when there is none.
    pub(crate) fn query_row<T>(
        &self,
        sql: &str,
        params: Params<'_>,
        f: impl FnOnce(&Row<'_>) -> Result<T>,
    ) -> Result<T> {
        self.prepare_cached(sql)?.query_row(params, f)
    }

    /// A statement, prepared once per connection and kept.
    pub(crate) fn prepare_cached<'c>(&'c self, sql: &str) -> Result<Statement<'c>> {
        Ok(match &self.backend {
            Backend::Sqlite(c) => Statement::Sqlite(c.prepare_cached(sql)?),
            Backend::Postgres(pg) => Statement::Postgres { pg, sql: postgres_sql(sql) },
        })
    }

    /// Alias of [`Connection::prepare_cached`].
    pub(crate) fn prepare<'c>(&'c self, sql: &str) -> Result<Statement<'c>> {
        self.prepare_cached(sql)
    }

    /// True on PostgreSQL: the few statements whose SQL differs between the engines ask.
    pub(crate) fn is_postgres(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }
}

/// A prepared statement.
pub(crate) enum Statement<'c> {
    Sqlite(rusqlite::CachedStatement<'c>),
    Postgres { pg: &'c RefCell<Pg>, sql: String },
}

impl Statement<'_> {
    /// Runs it; answers the number of rows changed.
    pub(crate) fn execute(&mut self, params: Params<'_>) -> Result<usize> {
        match self {
            Statement::Sqlite(s) => Ok(s.execute(bind(params))?),
            Statement::Postgres { pg, sql } => pg.borrow_mut().execute(sql, params),
        }
    }

    /// The rows, to step through with [`Rows::next`].
    pub(crate) fn query(&mut self, params: Params<'_>) -> Result<Rows<'_>> {
        match self {
            Statement::Sqlite(s) => Ok(Rows::Sqlite(s.query(bind(params))?)),
            Statement::Postgres { pg, sql } => {
                Ok(Rows::Postgres { rows: pg.borrow_mut().query(sql, params)?, next: 0 })
            }
        }
    }

    /// Every row, each read by `f`.
    pub(crate) fn query_map<T>(
        &mut self,
        params: Params<'_>,
        mut f: impl FnMut(&Row<'_>) -> Result<T>,
    ) -> Result<std::vec::IntoIter<Result<T>>> {
        let mut rows = self.query(params)?;
        let mut out = vec![];
        while let Some(r) = rows.next()? {
            out.push(f(&r));
        }
        Ok(out.into_iter())
    }

    /// Every row, each read by `f`; a failure names the row by its first column.
    pub(crate) fn query_each<T>(
        &mut self,
        params: Params<'_>,
        mut f: impl FnMut(&Row<'_>) -> Result<T>,
    ) -> Result<Vec<std::result::Result<T, (String, Error)>>> {
        let mut rows = self.query(params)?;
        let mut out = vec![];
        while let Some(row) = rows.next()? {
            out.push(f(&row).map_err(|e| (row.key_text(0), e)));
        }
        Ok(out)
    }

    /// The first row, read by `f`; [`Error::NoRows`] when there is none.
    pub(crate) fn query_row<T>(&mut self, params: Params<'_>, f: impl FnOnce(&Row<'_>) -> Result<T>) -> Result<T> {
        let mut rows = self.query(params)?;
        match rows.next()? {
            Some(r) => f(&r),
            None => Err(Error::NoRows),
        }
    }
}

/// The rows of a query, stepped through one at a time.
pub(crate) enum Rows<'s> {
    Sqlite(rusqlite::Rows<'s>),
    Postgres { rows: Vec<postgres::Row>, next: usize },
}

impl Rows<'_> {
    /// The next row, if any.
    #[allow(clippy::should_implement_trait)] // a lending step, not an Iterator: each row borrows the cursor
    pub(crate) fn next(&mut self) -> Result<Option<Row<'_>>> {
        match self {
            Rows::Sqlite(rows) => Ok(rows.next()?.map(Row::Sqlite)),
            Rows::Postgres { rows, next } => {
                let row = rows.get(*next).map(Row::Postgres);
                *next += 1;
                Ok(row)
            }
        }
    }
}

/// `optional()`: a query that found no row is `None` rather than an error.
pub(crate) trait OptionalExtension<T> {
    /// `Ok(None)` for [`Error::NoRows`].
    fn optional(self) -> Result<Option<T>>;
}

impl<T> OptionalExtension<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(Error::NoRows) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::postgres_sql;

    #[test]
    fn numbered_parameters_become_postgres_ones_outside_quotes() {
        assert_eq!(
            postgres_sql("SELECT a FROM t WHERE b = ?1 AND c = '?2' AND d IN (?10, ?2)"),
            "SELECT a FROM t WHERE b = $1 AND c = '?2' AND d IN ($10, $2)"
        );
        assert_eq!(postgres_sql("SELECT json_extract(x, '$.hash') FROM t"), "SELECT json_extract(x, '$.hash') FROM t");
    }
}
