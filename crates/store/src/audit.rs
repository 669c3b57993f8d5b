//! The audit log: an append-only, hash-chained record of everything the ledger does.
//!
//! Each entry's hash covers every field of the entry, its sequence number included, and the
//! previous entry's hash; entries are appended inside the same transaction as the change they
//! record. Editing, deleting, inserting or reordering rows breaks the chain at the first
//! entry touched. Someone able to rewrite every later hash can forge a consistent chain, so the
//! head (sequence and hash) is printed by `audit verify` and in reports: keep it elsewhere and
//! check the chain still passes through it (`Anchor`).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The previous hash of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit log entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    /// Position in the chain, from 1, without gaps.
    pub seq: i64,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// What happened: `decision`, `status`, `signed`, `approved`, `rejected`, `cancelled`,
    /// `freeze`, `unfreeze`, `outflow`, `event`, `alert_delivery`, `agent_token`,
    /// `agent_revoked`, `operator_token`, `config`.
    pub kind: String,
    /// Who did it: an agent, an operator, `reconciler` or `spendguard`.
    pub actor: String,
    /// The decision concerned.
    pub decision_id: Option<String>,
    /// The agent concerned.
    pub agent: Option<String>,
    /// The wallet concerned.
    pub wallet: Option<String>,
    /// The USD value concerned.
    pub usd: Option<rust_decimal::Decimal>,
    /// Everything else, as JSON.
    pub detail: serde_json::Value,
    /// Hash of the entry before (GENESIS for the first).
    pub prev_hash: String,
    /// Hash of this entry.
    pub hash: String,
}

/// An entry to append; the chain fields are filled in by `append`. The detail is anything that
/// serializes to a JSON object — usually a `json!` value; a struct on the hot path (a decision's
/// entry), where building a map of copies first was a measurable share of a decision.
#[derive(Debug, Clone, Default)]
pub(crate) struct AuditInput<'a, D = serde_json::Value> {
    pub(crate) kind: &'a str,
    pub(crate) actor: &'a str,
    pub(crate) decision_id: Option<&'a str>,
    pub(crate) agent: Option<&'a str>,
    pub(crate) wallet: Option<&'a str>,
    pub(crate) usd: Option<&'a str>,
    pub(crate) detail: D,
}

/// The hash of an entry: SHA-256 over a JSON array of every field, in order.
#[allow(clippy::too_many_arguments)]
pub(crate) fn entry_hash(
    seq: i64,
    at_us: i64,
    kind: &str,
    actor: &str,
    decision_id: Option<&str>,
    agent: Option<&str>,
    wallet: Option<&str>,
    usd: Option<&str>,
    detail: &str,
    prev_hash: &str,
) -> String {
    // A tuple serializes as the same JSON array a `json!` array of these fields would, without
    // copying them into one first, and streams into the hash.
    let canonical = (seq, at_us, kind, actor, decision_id, agent, wallet, usd, detail, prev_hash);
    let mut hasher = Sha256::new();
    // Writing into a hasher cannot fail, nor can serializing numbers and strings.
    let _ = serde_json::to_writer(&mut hasher, &canonical);
    hex::encode(hasher.finalize())
}

/// What `audit verify` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditCheck {
    /// Entries read.
    pub entries: u64,
    /// The last entry's sequence and hash, when the chain is intact.
    pub head: Option<(i64, String)>,
    /// The first entry that breaks the chain, and how.
    pub first_bad: Option<BadEntry>,
}

/// Where and how the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BadEntry {
    /// The first sequence number that is not what the chain says it should be.
    pub seq: i64,
    /// What is wrong there.
    pub why: String,
}

/// A sequence and hash recorded earlier, which the chain must still pass through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    /// Sequence number.
    pub seq: i64,
    /// Its hash then.
    pub hash: String,
}

/// Which entries an export holds.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// At or after.
    pub from: Option<DateTime<Utc>>,
    /// Before.
    pub to: Option<DateTime<Utc>>,
    /// Only entries concerning this agent.
    pub agent: Option<String>,
    /// Only entries concerning this wallet.
    pub wallet: Option<String>,
    /// Only entries with a USD value of at least this (entries without one are left out).
    pub min_usd: Option<rust_decimal::Decimal>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ledgers written before the hash was streamed hashed a `json!` array: the bytes hashed
    /// must not have changed, escapes, non-ASCII text and nulls included.
    #[test]
    fn entry_hashes_are_those_of_the_json_array_of_the_fields() {
        let detail =
            serde_json::json!({"memo": "a \"quoted\" line\nand a tab\t", "who": "zoë ✓", "n": null}).to_string();
        let fields = (
            7_i64,
            -1_700_000_000_000_000_i64,
            "decision",
            "bot\\x",
            Some("dec_1"),
            None::<&str>,
            Some("hot"),
            Some("1.25"),
        );
        let (seq, at, kind, actor, decision_id, agent, wallet, usd) = fields;
        let array = serde_json::json!([seq, at, kind, actor, decision_id, agent, wallet, usd, detail, GENESIS]);
        let expected = hex::encode(Sha256::digest(array.to_string().as_bytes()));
        assert_eq!(entry_hash(seq, at, kind, actor, decision_id, agent, wallet, usd, &detail, GENESIS), expected);
    }
}
