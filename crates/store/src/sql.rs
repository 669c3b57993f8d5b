//! Engine-neutral SQL access: the small part of a database API the ledger's logic uses —
//! `execute`, `query_row`, `prepare_cached` with `query_map`/`query`, `execute_batch`, typed
//! column reads and `optional()` — shaped like rusqlite's so the engine's code reads the same,
//! over a [`Connection`] that hides which database answers. Today that is SQLite; the
//! PostgreSQL engine (issue 18) adds its client behind the same types, so the ledger's rules —
//! evaluate-and-reserve, signing, reconciliation, the audit chain — are written once.
//!
//! SQL is written in the dialect both engines accept: numbered parameters (`?1`), `ON CONFLICT
//! … DO NOTHING | DO UPDATE`, `RETURNING`, `CAST(… AS BIGINT)` where a type must be pinned.

use std::fmt;

/// A failure of the database, or a value that did not decode.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// SQLite refused an operation (disk full, locked for longer than the busy timeout, …).
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
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
    /// True when the database answered busy or locked (another writer holds it).
    pub(crate) fn is_busy(&self) -> bool {
        matches!(
            self,
            Error::Sqlite(e) if matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            )
        )
    }
}

/// Result of a database call.
pub(crate) type Result<T> = std::result::Result<T, Error>;

/// A value bound to a statement parameter.
pub(crate) trait Param: rusqlite::ToSql + Sync {}
impl<T: rusqlite::ToSql + Sync + ?Sized> Param for T {}

/// A value a column is read as.
pub(crate) trait Column: rusqlite::types::FromSql {}
impl<T: rusqlite::types::FromSql> Column for T {}

/// Statement parameters, in order: `params![a, b]`.
macro_rules! params {
    () => { &[] as &[&dyn $crate::sql::Param] };
    ($($p:expr),+ $(,)?) => { &[$(&$p as &dyn $crate::sql::Param),+] as &[&dyn $crate::sql::Param] };
}
pub(crate) use params;

/// Parameters of a statement.
pub(crate) type Params<'a> = &'a [&'a dyn Param];

/// The columns of one row.
pub(crate) struct Row<'a> {
    inner: &'a rusqlite::Row<'a>,
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
        Ok(self.inner.get(i.position())?)
    }

    /// Column `i`'s name, for errors.
    pub(crate) fn column_name(&self, i: usize) -> String {
        self.inner.as_ref().column_name(i).map_or_else(|_| format!("column {i}"), str::to_string)
    }

    /// A failure to decode column `i`: `why`, naming the column.
    pub(crate) fn bad(&self, i: usize, why: impl fmt::Display) -> Error {
        Error::Conversion { column: self.column_name(i), why: why.to_string() }
    }

    /// Column `i` as text, whatever its type, for naming a row in errors.
    pub(crate) fn key_text(&self, i: usize) -> String {
        use rusqlite::types::ValueRef;
        match self.inner.get_ref(i) {
            Ok(ValueRef::Text(t)) => String::from_utf8_lossy(t).into_owned(),
            Ok(ValueRef::Integer(n)) => n.to_string(),
            _ => "(unreadable key)".to_string(),
        }
    }
}

/// A database connection.
pub(crate) struct Connection {
    inner: rusqlite::Connection,
}

fn bind(params: Params<'_>) -> impl rusqlite::Params + '_ {
    rusqlite::params_from_iter(params.iter().map(|p| *p as &dyn rusqlite::ToSql))
}

impl Connection {
    /// Wraps an open SQLite connection.
    pub(crate) fn sqlite(inner: rusqlite::Connection) -> Connection {
        Connection { inner }
    }

    /// Runs one statement; answers the number of rows it changed.
    pub(crate) fn execute(&self, sql: &str, params: Params<'_>) -> Result<usize> {
        Ok(self.inner.prepare_cached(sql)?.execute(bind(params))?)
    }

    /// Runs several statements separated by `;`, without parameters.
    pub(crate) fn execute_batch(&self, sql: &str) -> Result<()> {
        Ok(self.inner.execute_batch(sql)?)
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
        Ok(Statement { inner: self.inner.prepare_cached(sql)? })
    }

    /// Alias of [`Connection::prepare_cached`].
    pub(crate) fn prepare<'c>(&'c self, sql: &str) -> Result<Statement<'c>> {
        self.prepare_cached(sql)
    }
}

/// A prepared statement.
pub(crate) struct Statement<'c> {
    inner: rusqlite::CachedStatement<'c>,
}

impl Statement<'_> {
    /// Runs it; answers the number of rows changed.
    pub(crate) fn execute(&mut self, params: Params<'_>) -> Result<usize> {
        Ok(self.inner.execute(bind(params))?)
    }

    /// The rows, to step through with [`Rows::next`].
    pub(crate) fn query(&mut self, params: Params<'_>) -> Result<Rows<'_>> {
        Ok(Rows { inner: self.inner.query(bind(params))? })
    }

    /// Every row, each read by `f`.
    pub(crate) fn query_map<T>(
        &mut self,
        params: Params<'_>,
        mut f: impl FnMut(&Row<'_>) -> Result<T>,
    ) -> Result<std::vec::IntoIter<Result<T>>> {
        let mut rows = self.inner.query(bind(params))?;
        let mut out = vec![];
        while let Some(r) = rows.next()? {
            out.push(f(&Row { inner: r }));
        }
        Ok(out.into_iter())
    }

    /// Every row, each read by `f`; the first failure names the row by its first column.
    pub(crate) fn query_each<T>(
        &mut self,
        params: Params<'_>,
        mut f: impl FnMut(&Row<'_>) -> Result<T>,
    ) -> Result<Vec<std::result::Result<T, (String, Error)>>> {
        let mut rows = self.inner.query(bind(params))?;
        let mut out = vec![];
        while let Some(r) = rows.next()? {
            let row = Row { inner: r };
            out.push(f(&row).map_err(|e| (row.key_text(0), e)));
        }
        Ok(out)
    }

    /// The first row, read by `f`; [`Error::NoRows`] when there is none.
    pub(crate) fn query_row<T>(&mut self, params: Params<'_>, f: impl FnOnce(&Row<'_>) -> Result<T>) -> Result<T> {
        let mut rows = self.inner.query(bind(params))?;
        match rows.next()? {
            Some(r) => f(&Row { inner: r }),
            None => Err(Error::NoRows),
        }
    }
}

/// The rows of a query, stepped through one at a time.
pub(crate) struct Rows<'s> {
    inner: rusqlite::Rows<'s>,
}

impl Rows<'_> {
    /// The next row, if any.
    #[allow(clippy::should_implement_trait)] // a lending step, not an Iterator: each row borrows the cursor
    pub(crate) fn next(&mut self) -> Result<Option<Row<'_>>> {
        Ok(self.inner.next()?.map(|inner| Row { inner }))
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
