//! spendguard's ledger on SQLite: every decision, the reservations that hold budget, idempotency
//! keys, kill-switch state, operator actions, and the hash-chained audit log ([`audit`]) of all
//! of it.
//!
//! # Design
//! - [`Ledger`] is the one handle. Its writer thread owns the write connection and an in-memory
//!   [`spendguard_core::usage::UsageIndex`] of every spend that still counts against a limit.
//! - Evaluate-and-reserve is one `BEGIN IMMEDIATE` transaction, so two processes on one file
//!   never both spend the same headroom. Jobs that arrive together share one transaction and one
//!   fsync (group commit); each is evaluated after the ones before it in the batch.
//! - When another process commits, `PRAGMA data_version` changes and the index is refreshed
//!   from rows whose `change_seq` is newer than the last one seen.
//! - WAL journaling, `synchronous = FULL`: a decision reported to a caller survives a crash.
//! - Schema versions live in `PRAGMA user_version` ([`schema`](crate)).

pub mod audit;
mod error;
mod ledger;
mod schema;
mod writer;

pub use error::{StoreError, StoreResult};
pub use ledger::{
    Account, DecisionRecord, Decommissioned, Event, Finding, FreezeOutcome, Ledger, LedgerOptions, LedgerStats,
    Receipt, RecordedOutflow, ReserveOutcome, ReserveRequest, Resigning, Settlement, SignWith, SignedRecord, Signing,
};
pub use writer::intent_hash_of;
