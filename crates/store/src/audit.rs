//! The audit log: an append-only, hash-chained record of everything the ledger does.
//!
//! Each entry's hash covers every field of the entry, its sequence number included, and the
//! previous entry's hash; entries are appended inside the same transaction as the change they
//! record. Editing, deleting, inserting or reordering rows breaks the chain at the first
//! entry touched. Someone able to rewrite every later hash can forge a consistent chain, so the
//! head (sequence and hash) is printed by `audit verify` and in reports: keep it elsewhere and
//! check the chain still passes through it (`Anchor`).

use crate::error::StoreResult;
use crate::writer::{from_us, to_us};
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};
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
    pub usd: Option<String>,
    /// Everything else, as JSON.
    pub detail: serde_json::Value,
    /// Hash of the entry before (GENESIS for the first).
    pub prev_hash: String,
    /// Hash of this entry.
    pub hash: String,
}

/// An entry to append; the chain fields are filled in by [`append`].
#[derive(Debug, Clone, Default)]
pub(crate) struct AuditInput<'a> {
    pub(crate) kind: &'a str,
    pub(crate) actor: &'a str,
    pub(crate) decision_id: Option<&'a str>,
    pub(crate) agent: Option<&'a str>,
    pub(crate) wallet: Option<&'a str>,
    pub(crate) usd: Option<&'a str>,
    pub(crate) detail: serde_json::Value,
}

/// The hash of an entry: SHA-256 over a JSON array of every field, in order.
#[allow(clippy::too_many_arguments)]
fn entry_hash(
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
    let canonical = serde_json::json!([seq, at_us, kind, actor, decision_id, agent, wallet, usd, detail, prev_hash]);
    let digest = Sha256::digest(canonical.to_string().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Appends an entry after the current head. Runs inside the writer's transaction, so two
/// processes never append at once.
pub(crate) fn append(conn: &Connection, e: AuditInput<'_>, at: DateTime<Utc>) -> StoreResult<i64> {
    let (seq, prev) = match head(conn)? {
        Some((seq, hash)) => (seq + 1, hash),
        None => (1, GENESIS.to_string()),
    };
    let at_us = to_us(at);
    let detail = e.detail.to_string();
    let hash = entry_hash(seq, at_us, e.kind, e.actor, e.decision_id, e.agent, e.wallet, e.usd, &detail, &prev);
    conn.prepare_cached(
        "INSERT INTO audit_log (seq, at_us, kind, actor, decision_id, agent, wallet, usd, detail, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![seq, at_us, e.kind, e.actor, e.decision_id, e.agent, e.wallet, e.usd, detail, prev, hash])?;
    Ok(seq)
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

/// Walks the whole chain in sequence order and reports the first entry that breaks it.
pub(crate) fn verify(conn: &Connection, anchor: Option<&Anchor>) -> StoreResult<AuditCheck> {
    let mut stmt = conn.prepare(
        "SELECT seq, at_us, kind, actor, decision_id, agent, wallet, usd, detail, prev_hash, hash
         FROM audit_log ORDER BY seq",
    )?;
    let mut rows = stmt.query([])?;
    let mut expected_seq = 1i64;
    let mut prev = GENESIS.to_string();
    let mut entries = 0u64;
    let mut anchor_seen = false;
    let bad = |seq: i64, why: String, entries: u64| AuditCheck {
        entries,
        head: None,
        first_bad: Some(BadEntry { seq, why }),
    };
    while let Some(r) = rows.next()? {
        entries += 1;
        let seq: i64 = r.get(0)?;
        let stored_prev: String = r.get(9)?;
        let stored_hash: String = r.get(10)?;
        if seq != expected_seq {
            let why = if seq > expected_seq {
                format!("entry {expected_seq} is missing (the next entry is {seq})")
            } else {
                format!("entry {seq} appears again after {}", expected_seq - 1)
            };
            return Ok(bad(expected_seq, why, entries));
        }
        if stored_prev != prev {
            return Ok(bad(seq, "its previous-hash does not match the entry before it".into(), entries));
        }
        let hash = entry_hash(
            seq,
            r.get(1)?,
            &r.get::<_, String>(2)?,
            &r.get::<_, String>(3)?,
            r.get::<_, Option<String>>(4)?.as_deref(),
            r.get::<_, Option<String>>(5)?.as_deref(),
            r.get::<_, Option<String>>(6)?.as_deref(),
            r.get::<_, Option<String>>(7)?.as_deref(),
            &r.get::<_, String>(8)?,
            &prev,
        );
        if hash != stored_hash {
            return Ok(bad(seq, "its contents do not match its hash (edited)".into(), entries));
        }
        if let Some(a) = anchor.filter(|a| a.seq == seq) {
            if a.hash != hash {
                return Ok(bad(
                    seq,
                    format!("the chain no longer passes through the anchor {}:{}", a.seq, a.hash),
                    entries,
                ));
            }
            anchor_seen = true;
        }
        prev = hash;
        expected_seq += 1;
    }
    if let Some(a) = anchor.filter(|_| !anchor_seen) {
        return Ok(bad(
            a.seq,
            format!("the anchored entry {} is gone (the log ends at {})", a.seq, expected_seq - 1),
            entries,
        ));
    }
    let head = (entries > 0).then(|| (expected_seq - 1, prev));
    Ok(AuditCheck { entries, head, first_bad: None })
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

/// The entries matching `filter`, in sequence order.
pub(crate) fn export(conn: &Connection, filter: &AuditFilter) -> StoreResult<Vec<AuditEntry>> {
    let mut stmt = conn.prepare(
        "SELECT seq, at_us, kind, actor, decision_id, agent, wallet, usd, detail, prev_hash, hash FROM audit_log
         WHERE (?1 IS NULL OR at_us >= ?1) AND (?2 IS NULL OR at_us < ?2)
           AND (?3 IS NULL OR agent = ?3) AND (?4 IS NULL OR wallet = ?4)
         ORDER BY seq",
    )?;
    let mut rows = stmt.query(params![filter.from.map(to_us), filter.to.map(to_us), filter.agent, filter.wallet])?;
    let mut out = vec![];
    while let Some(r) = rows.next()? {
        let usd: Option<String> = r.get(7)?;
        if let Some(min) = filter.min_usd {
            match usd.as_deref().and_then(|u| u.parse::<rust_decimal::Decimal>().ok()) {
                Some(v) if v >= min => {}
                _ => continue,
            }
        }
        let detail: String = r.get(8)?;
        out.push(AuditEntry {
            seq: r.get(0)?,
            at: from_us(r.get(1)?)?,
            kind: r.get(2)?,
            actor: r.get(3)?,
            decision_id: r.get(4)?,
            agent: r.get(5)?,
            wallet: r.get(6)?,
            usd,
            // A detail that is not JSON (edited by hand) is exported as the text it is.
            detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::String(detail)),
            prev_hash: r.get(9)?,
            hash: r.get(10)?,
        });
    }
    Ok(out)
}

/// The sequence and hash of the newest entry.
pub(crate) fn head(conn: &Connection) -> StoreResult<Option<(i64, String)>> {
    Ok(conn
        .prepare_cached("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}
