//! Errors of the ledger.

use std::path::PathBuf;

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
    /// SQLite refused an operation (disk full, locked for longer than the busy timeout, …).
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
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
    #[error("ledger row is corrupt: {0}")]
    Corrupt(String),
    /// The transaction holding this request was rolled back; nothing of it was recorded.
    #[error("the ledger transaction was rolled back, nothing was recorded: {0}")]
    NotCommitted(String),
    /// The writer thread is gone (the ledger was closed or its thread panicked).
    #[error("the ledger writer has stopped")]
    WriterStopped,
    /// A freeze named a scope that is not configured.
    #[error("no {kind} {id:?} is configured")]
    UnknownScope {
        /// Scope kind.
        kind: &'static str,
        /// Identifier.
        id: String,
    },
    /// An unfreeze came without an acknowledgment.
    #[error("unfreezing needs an acknowledgment (--ack TEXT) saying why it is safe")]
    AckRequired,
    /// No decision with this id.
    #[error("no decision {0:?}")]
    UnknownDecision(String),
    /// Signing failed; nothing was allocated or stored.
    #[error("signing failed: {0}")]
    SigningFailed(String),
    /// A block does not continue the chain the ledger holds: the chain reorganised.
    #[error("chain {chain}: block {number}'s parent {parent} is not the stored block {stored}")]
    Reorg {
        /// Chain id.
        chain: String,
        /// Block number.
        number: u64,
        /// Its parent hash.
        parent: String,
        /// The stored hash of the block below.
        stored: String,
    },
    /// An agent touched a decision that is not its own.
    #[error("decision {0:?} does not belong to this agent")]
    NotYours(String),
    /// A decision's stored intent no longer matches the hash bound when it was made.
    #[error("decision {0}: what it pays no longer matches the intent hash bound when it was decided; refusing to execute it")]
    IntentChanged(String),
    /// An operator may not do this.
    #[error("{0}")]
    NotPermitted(String),
    /// A status change the lifecycle does not allow.
    #[error("decision {id} is {from}; it cannot become {to}")]
    IllegalTransition {
        /// Decision.
        id: String,
        /// Current status.
        from: String,
        /// Requested status.
        to: String,
    },
}

/// Result alias of this crate.
pub type StoreResult<T> = Result<T, StoreError>;
