//! spendguard's pure core: the policy engine and the rules it applies, with no I/O and no clock.
//!
//! # Layout
//! - [`model`]: the organisation (chains, assets, wallets, agents, merchants, policies) as plain
//!   values, built by `spendguard-config`.
//! - [`address`]: chain addresses — format checks, canonical form (EIP-55 for mixed-case EVM),
//!   burn addresses.
//! - [`time`]: durations, rolling and calendar windows in a timezone, weekly schedules.
//! - [`usage`]: what was already spent or reserved; [`usage::UsageIndex`] is the in-memory index
//!   the ledger keeps, [`usage::UsageSource`] what the engine reads.
//! - [`engine`]: [`evaluate`] turns a [`SpendRequest`] into an [`Evaluation`] — decision, tier,
//!   every reason with its stable code, and the headroom left under every limit.
//! - [`freeze`]: kill-switch state, checked before any policy, and which scopes an unexplained
//!   outflow or a decommissioning freezes.
//! - [`event`]: the kinds of events operators are told about.
//! - [`lifecycle`]: decision statuses and their legal transitions.
//! - [`fast_map`]: the hash map for keys the configuration chooses (FNV instead of SipHash).
//! - [`money`]: strict decimal parsing and display; money is never a float.
//! - [`price`]: where each asset's USD price comes from, and [`price::quote`], which judges a
//!   live feed's latest reading at the request's instant (fresh, sane, on peg) or says why not.
//! - [`reconcile`]: on-chain outflows classified against the decisions that approved them.
//!
//! Time is always a parameter: the caller says when a request happens.

pub mod address;
pub mod decision;
pub mod engine;
pub mod event;
pub mod fast_map;
pub mod freeze;
pub mod lifecycle;
pub mod model;
pub mod money;
pub mod price;
pub mod reconcile;
pub mod time;
pub mod usage;

pub use decision::{Decision, Evaluation, Headroom, HeadroomLabels, Reason, ReasonCode, ResolvedSpend, Tier};
pub use engine::{evaluate, Balances, Context, SpendRequest};
pub use event::EventKind;
pub use freeze::Freeze;
pub use lifecycle::SpendStatus;
pub use model::Model;
