//! spendguard's imperative shell: what happens when an agent asks to spend.
//!
//! [`Guard`] ties the ledger, the chains and a clock together:
//! - `evaluate` and `spend` read live balances, evaluate against the ledger, and (for `spend`)
//!   reserve; INSTANT and NOTIFY spends are then signed (the signed transaction is stored
//!   before it is broadcast) and broadcast at once;
//! - background loops ([`Guard::run`]) broadcast what was signed but not sent (after a crash),
//!   follow broadcast transactions to their receipts, execute DELAY spends when due unless
//!   cancelled or frozen meanwhile, and release approval requests that expired;
//! - the watcher ([`Guard::watch_once`]) indexes every outflow of the registered wallets,
//!   reconciles it, trips the kill switch, unwinds reorgs, and reports stalls and missing spends;
//! - agents are known by bearer tokens, stored hashed.
//!
//! Everything that blocks (the ledger) runs on tokio's blocking pool.

mod alerts;
mod guard;
mod metrics;
mod operators;
pub mod report;
mod tokens;
mod watch;

pub use alerts::AlertChannel;
pub use guard::{
    BalanceReport, Clock, EvaluateArgs, Guard, GuardError, GuardResult, SpendArgs, SpendOutcome, StatusReport,
    SystemClock, WalletBalances,
};
pub use metrics::Metrics;
pub use operators::{Exposures, FrozenScope, LimitUse, PendingItem, Status, WalletStatus};
pub use tokens::{hash_token, new_operator_token, new_token};
pub use watch::WatchPass;
