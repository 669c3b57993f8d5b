//! Errors of the ledger, whatever engine holds it.

use spendguard_core::SpendStatus;
use std::path::PathBuf;

/// Why a signing step failed, and whether trying again later may succeed. The cause is kept
/// whole (a chain client's error, typically), so the caller can look at it as its own type.
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub struct SigningError {
    /// True when the same signing may succeed later (nothing about the spend is wrong).
    pub retryable: bool,
    /// What failed.
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// What can go wrong in the ledger.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database file could not be opened or prepared.
    #[error("cannot open the database {}: {source}", path.display())]
    Open {
        /// File.
        path: PathBuf,
        /// Cause.
        source: rusqlite::Error,
    },
    /// The database refused an operation (disk full, locked for longer than the busy
    /// timeout, …).
    #[error("database error: {0}")]
    Database(#[from] crate::sql::Error),
    /// The file was written by a newer spendguard.
    #[error(
        "the database schema is version {found}, but this spendguard knows only up to {supported}; upgrade spendguard"
    )]
    SchemaTooNew {
        /// Version in the file.
        found: i64,
        /// Newest version known here.
        supported: i64,
    },
    /// A row could not be read back (edited by hand, or written by a broken build).
    #[error("ledger row is corrupt: {table} {row}: {detail}")]
    Corrupt {
        /// Table.
        table: &'static str,
        /// Which row: its key.
        row: String,
        /// What is wrong with it, naming the column.
        detail: String,
    },
    /// The ledger file is empty: what is left of a ledger that was truncated, never re-created
    /// silently.
    #[error(
        "the ledger {} is empty (0 bytes): a ledger that held limits, tokens, nonces and idempotency keys is \
         never re-created silently; restore it from a backup, or, if this is a new installation, run \
         `spendguard init` to create it",
        .0.display()
    )]
    EmptyLedger(PathBuf),
    /// The ledger file is gone (or empty) but its write-ahead log, holding committed
    /// transactions, is still there.
    #[error(
        "the ledger {} is missing or empty, but its write-ahead log {} holds committed transactions: the ledger \
         was deleted or truncated; restore it from a backup (with its log), or move the log aside and run \
         `spendguard init` to start a new ledger",
        path.display(),
        wal.display()
    )]
    OrphanedLog {
        /// The ledger file.
        path: PathBuf,
        /// Its write-ahead log.
        wal: PathBuf,
    },
    /// The ledger can only be read (file permissions, or a read-only mount).
    #[error(
        "the ledger {} is read-only (its file permissions, or a read-only mount): spendguard records every \
         decision in it; make it writable by the user spendguard runs as",
        .0.display()
    )]
    ReadOnly(PathBuf),
    /// `init` found a file with content at the ledger's path.
    #[error(
        "{} exists and is not empty; init creates a ledger only where there is no file or an empty one, and never \
         overwrites one",
        .0.display()
    )]
    NotEmpty(PathBuf),
    /// The file is an SQLite database, but not a spendguard ledger.
    #[error("{} holds tables but no spendguard ledger; point [server].database at the ledger", .0.display())]
    NotALedger(PathBuf),
    /// The database cannot be used as a ledger (e.g. WAL journaling refused).
    #[error("{0}")]
    Unusable(String),
    /// The transaction holding this request was rolled back; nothing of it was recorded.
    #[error("the ledger transaction was rolled back, nothing was recorded: {0}")]
    NotCommitted(String),
    /// The writer (or a reader) thread is gone: the ledger was closed or its thread panicked.
    #[error("the ledger has stopped")]
    Stopped,
    /// A scope, agent or operator that is not configured.
    #[error("no {kind} {id:?} is configured")]
    UnknownScope {
        /// `org`, `department`, `agent`, `wallet` or `operator`.
        kind: &'static str,
        /// Identifier.
        id: String,
    },
    /// No decision with this id.
    #[error("no decision {0:?}")]
    UnknownDecision(String),
    /// Signing failed; nothing was allocated or stored.
    #[error("signing failed: {0}")]
    Signing(#[from] SigningError),
    /// An agent touched a decision that is not its own.
    #[error("decision {0:?} does not belong to this agent")]
    NotYours(String),
    /// A decision carries no intent hash (made before spendguard bound one), so what it pays
    /// cannot be proven to be what was decided.
    #[error("decision {0} has no intent hash binding what it pays; refusing to execute it")]
    IntentMissing(String),
    /// What a decision would pay no longer matches the intent hash bound when it was decided.
    #[error("decision {0}: what it pays no longer matches the intent hash bound when it was decided; refusing to execute it")]
    IntentChanged(String),
    /// The intent hash an operator was shown is not the one bound to the decision.
    #[error("decision {id}: the intent hash given ({given}) is not the one bound to it ({bound})")]
    IntentNotShown {
        /// Decision.
        id: String,
        /// The hash the operator gave.
        given: String,
        /// The hash bound to the decision.
        bound: String,
    },
    /// The decision is not in the status the request needs.
    #[error("decision {id} is {status}{}; {needs}", failure.as_deref().map(|f| format!(" ({f})")).unwrap_or_default())]
    WrongStatus {
        /// Decision.
        id: String,
        /// Where it stands.
        status: SpendStatus,
        /// Why it ended there, if it failed or was released.
        failure: Option<String>,
        /// What the request needs, in words: "only a pending approval request can be approved".
        needs: &'static str,
    },
    /// An approval request that expired.
    #[error("approval request {0} has expired")]
    Expired(String),
    /// A freeze covers the decision's agent or wallet.
    #[error("decision {id} cannot be {doing}: {freeze}")]
    Frozen {
        /// Decision.
        id: String,
        /// What was asked: "approved".
        doing: &'static str,
        /// The freeze, in words.
        freeze: String,
    },
    /// A status change the lifecycle does not allow.
    #[error("decision {id} is {from}; it cannot become {to}")]
    IllegalTransition {
        /// Decision.
        id: String,
        /// Current status.
        from: SpendStatus,
        /// Requested status.
        to: SpendStatus,
    },
}

impl StoreError {
    /// Can the same request succeed if tried again later (the database was busy, the batch
    /// holding it was rolled back)?
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::NotCommitted(_) => true,
            StoreError::Database(e) => e.is_busy(),
            StoreError::Signing(e) => e.retryable,
            _ => false,
        }
    }
}

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> StoreError {
        StoreError::Database(crate::sql::Error::Postgres(e))
    }
}

impl From<crate::postgres::schema::SchemaError> for StoreError {
    fn from(e: crate::postgres::schema::SchemaError) -> StoreError {
        use crate::postgres::schema::SchemaError;
        match e {
            SchemaError::Postgres(e) => e.into(),
            SchemaError::TooNew { found, supported } => StoreError::SchemaTooNew { found, supported },
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        StoreError::Database(crate::sql::Error::Sqlite(e))
    }
}

/// Result alias of this crate.
pub type StoreResult<T> = Result<T, StoreError>;
