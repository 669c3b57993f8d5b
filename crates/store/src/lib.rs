//! spendguard's ledger: every decision, the reservations that hold budget, idempotency keys,
//! signed transactions and nonces, what the auditor saw on chain, kill-switch state, alerts,
//! tokens, and the hash-chained audit log of all of it.
//!
//! # Layout
//! - [`api`]: the ledger as services see it, one small async trait per concern
//!   ([`DecisionStore`], [`SigningStore`], [`AuthorizationStore`], [`OutflowStore`], [`OutboxStore`],
//!   [`CredentialStore`], [`FreezeStore`], [`AuditStore`], [`ReportStore`], [`LeaseStore`]); an engine
//!   implementing them all is a [`Store`].
//! - [`records`]: what the ledger records and answers, typed (money as `Decimal`, statuses,
//!   classes and event kinds as enums).
//! - [`intent`]: the hash binding a decision to what it pays, checked at approval and signing.
//! - [`audit`]: the audit chain's entries and how an entry is hashed.
//! - [`error`](StoreError): typed errors that know whether to retry.
//! - [`postgres`]: the PostgreSQL ledger's schema and migrations; `copy` copies an SQLite
//!   ledger into one ([`copy_to_postgres`], `spendguard migrate`).
//! - `sql`: engine-neutral SQL access (connection, statements, typed rows) shaped like
//!   rusqlite's, over which the engines' logic is written once ([`DatabaseError`]).
//! - `sqlite`: the engine ([`SqlStore`]) on an SQLite file or a PostgreSQL database, a file per
//!   concern behind a group-commit writer thread; evaluate-and-reserve is one transaction under
//!   the database's write lock (`BEGIN IMMEDIATE`, or the change counter's row lock on
//!   PostgreSQL), so two processes or daemons never both spend the same headroom.

pub mod api;
pub mod audit;
mod copy;
mod error;
pub mod intent;
pub mod postgres;
pub mod records;
mod sql;
mod sqlite;

pub use api::{
    AuditStore, AuthorizationStore, CredentialStore, DecisionStore, FreezeStore, LeaseStore, OutboxStore, OutflowStore,
    ReportStore, SigningStore, Store,
};
pub use copy::{copy_to_postgres, CopiedTable};
pub use error::{SigningError, StoreError, StoreResult};
pub use intent::Intent;
pub use records::*;
pub use sql::Error as DatabaseError;
pub use sqlite::SqlStore;
