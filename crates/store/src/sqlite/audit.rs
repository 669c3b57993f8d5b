//! [`AuditStore`] on SQLite: the hash-chained audit log, appended inside the transaction of the
//! change each entry records, so two processes never append at once.

use super::rows::{corrupt, decimal_col_opt, money, time_col, to_us};
use super::{SqlStore, Writer};
use crate::api::AuditStore;
use crate::audit::{entry_hash, Anchor, AuditCheck, AuditEntry, AuditFilter, AuditInput, BadEntry, GENESIS};
use crate::error::{StoreError, StoreResult};
use crate::records::DecisionRecord;
use crate::sql::{params, Connection, OptionalExtension};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

#[async_trait]
impl AuditStore for SqlStore {
    async fn verify_audit(&self, anchor: Option<Anchor>) -> StoreResult<AuditCheck> {
        self.read(move |c| verify(c, anchor.as_ref())).await
    }

    async fn audit_entries(&self, filter: AuditFilter) -> StoreResult<Vec<AuditEntry>> {
        self.read(move |c| export(c, &filter)).await
    }

    async fn audit_head(&self) -> StoreResult<Option<(i64, String)>> {
        self.read(head).await
    }

    async fn record_config(&self, hash: &str, summary: &str, at: DateTime<Utc>) -> StoreResult<bool> {
        let (hash, summary) = (hash.to_string(), summary.to_string());
        self.write(move |w| w.record_config(&hash, &summary, at)).await
    }
}

impl Writer {
    /// Appends to the audit log, in this job's transaction.
    pub(crate) fn audit<D: serde::Serialize>(
        &mut self,
        entry: AuditInput<'_, D>,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        append(&self.conn, entry, at).map(|_| ())
    }

    /// Appends an entry about a decision, naming its agent, wallet and USD value.
    pub(crate) fn audit_decision(
        &mut self,
        kind: &str,
        actor: &str,
        d: &DecisionRecord,
        detail: serde_json::Value,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let usd = d.usd.map(money);
        self.audit(
            AuditInput {
                kind,
                actor,
                decision_id: Some(&d.id),
                agent: Some(&d.agent),
                wallet: Some(&d.wallet),
                usd: usd.as_deref(),
                detail,
            },
            at,
        )
    }

    /// Records the configuration in use when it differs from the last one recorded.
    fn record_config(&mut self, hash: &str, summary: &str, at: DateTime<Utc>) -> StoreResult<bool> {
        let detail: Option<String> = self
            .conn
            .query_row("SELECT detail FROM audit_log WHERE kind = 'config' ORDER BY seq DESC LIMIT 1", params![], |r| {
                r.get(0)
            })
            .optional()?;
        // Read in Rust: the engines' JSON functions differ.
        let last = detail
            .and_then(|d| serde_json::from_str::<serde_json::Value>(&d).ok())
            .and_then(|d| d["hash"].as_str().map(str::to_string));
        if last.as_deref() == Some(hash) {
            return Ok(false);
        }
        self.audit(
            AuditInput {
                kind: "config",
                actor: "spendguard",
                detail: serde_json::json!({"hash": hash, "previous": last, "summary": summary}),
                ..AuditInput::default()
            },
            at,
        )?;
        Ok(true)
    }
}

/// Appends an entry after the current head. Runs inside the writer's transaction, so two
/// processes never append at once.
fn append<D: serde::Serialize>(conn: &Connection, e: AuditInput<'_, D>, at: DateTime<Utc>) -> StoreResult<i64> {
    let (seq, prev) = match head(conn)? {
        Some((seq, hash)) => (seq + 1, hash),
        None => (1, GENESIS.to_string()),
    };
    let at_us = to_us(at);
    let detail = serde_json::to_string(&e.detail).map_err(|e| StoreError::Unusable(format!("audit detail: {e}")))?;
    let hash = entry_hash(seq, at_us, e.kind, e.actor, e.decision_id, e.agent, e.wallet, e.usd, &detail, &prev);
    conn.prepare_cached(
        "INSERT INTO audit_log (seq, at_us, kind, actor, decision_id, agent, wallet, usd, detail, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![seq, at_us, e.kind, e.actor, e.decision_id, e.agent, e.wallet, e.usd, detail, prev, hash])?;
    Ok(seq)
}

/// Walks the whole chain in sequence order and reports the first entry that breaks it.
fn verify(conn: &Connection, anchor: Option<&Anchor>) -> StoreResult<AuditCheck> {
    let mut stmt = conn.prepare(
        "SELECT seq, at_us, kind, actor, decision_id, agent, wallet, usd, detail, prev_hash, hash
         FROM audit_log ORDER BY seq",
    )?;
    let mut rows = stmt.query(params![])?;
    let mut expected_seq = 1i64;
    let mut prev = GENESIS.to_string();
    let mut entries = 0u64;
    let mut anchor_seen = false;
    let bad = |seq: i64, why: String, entries: u64| AuditCheck {
        entries,
        head: None,
        first_bad: Some(BadEntry { seq, why }),
    };
    while let Some(row) = rows.next()? {
        let r = &row;
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

/// The entries matching `filter`, in sequence order.
fn export(conn: &Connection, filter: &AuditFilter) -> StoreResult<Vec<AuditEntry>> {
    let mut stmt = conn.prepare(
        "SELECT seq, at_us, kind, actor, decision_id, agent, wallet, usd, detail, prev_hash, hash FROM audit_log
         WHERE (CAST(?1 AS BIGINT) IS NULL OR at_us >= ?1) AND (CAST(?2 AS BIGINT) IS NULL OR at_us < ?2)
           AND (CAST(?3 AS TEXT) IS NULL OR agent = ?3) AND (CAST(?4 AS TEXT) IS NULL OR wallet = ?4)
         ORDER BY seq",
    )?;
    let mut rows = stmt.query(params![filter.from.map(to_us), filter.to.map(to_us), filter.agent, filter.wallet])?;
    let mut out = vec![];
    while let Some(row) = rows.next()? {
        let r = &row;
        let seq: i64 = r.get(0)?;
        let usd = decimal_col_opt(r, 7).map_err(corrupt("audit entry", seq.to_string()))?;
        if let Some(min) = filter.min_usd {
            match usd {
                Some(v) if v >= min => {}
                _ => continue,
            }
        }
        let detail: String = r.get(8)?;
        out.push(AuditEntry {
            seq,
            at: time_col(r, 1).map_err(corrupt("audit entry", seq.to_string()))?,
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
fn head(conn: &Connection) -> StoreResult<Option<(i64, String)>> {
    Ok(conn
        .prepare_cached("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")?
        .query_row(params![], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}
