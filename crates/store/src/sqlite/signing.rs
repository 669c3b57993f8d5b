//! [`SigningStore`] on SQLite: the two-step signing (nonce allocated and signed transaction
//! stored in one transaction, before anything is sent), re-signing, broadcast, settlement,
//! failure and missing spends.

use super::rows::{decision_row, load_signed, money, query_decisions, to_us};
use super::{SqlStore, Writer};
use crate::api::SigningStore;
use crate::error::{StoreError, StoreResult};
use crate::intent::Intent;
use crate::records::{Account, DecisionRecord, Resigning, Settlement, SignWith, SignedRecord, Signing};
use crate::sql::{params, OptionalExtension};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use spendguard_core::{EventKind, SpendStatus};

#[async_trait]
impl SigningStore for SqlStore {
    async fn sign(
        &self,
        id: &str,
        intent: Intent,
        account: Option<Account>,
        sign: SignWith,
        at: DateTime<Utc>,
    ) -> StoreResult<Signing> {
        let id = id.to_string();
        self.write(move |w| w.sign(&id, &intent, account, sign, at)).await
    }

    async fn resign(
        &self,
        id: &str,
        dead_hash: &str,
        intent: Intent,
        sign: SignWith,
        at: DateTime<Utc>,
    ) -> StoreResult<Resigning> {
        let (id, dead) = (id.to_string(), dead_hash.to_string());
        self.write(move |w| w.resign(&id, &dead, &intent, sign, at)).await
    }

    async fn signed_tx(&self, id: &str) -> StoreResult<Option<SignedRecord>> {
        let id = id.to_string();
        self.read(move |c| load_signed(c, &id)).await
    }

    async fn mark_broadcast(&self, id: &str, at: DateTime<Utc>) -> StoreResult<DecisionRecord> {
        let id = id.to_string();
        self.write(move |w| w.mark_broadcast(&id, at)).await
    }

    async fn settle(&self, id: &str, settlement: Settlement, at: DateTime<Utc>) -> StoreResult<DecisionRecord> {
        let id = id.to_string();
        self.write(move |w| w.settle(&id, settlement, at)).await
    }

    async fn fail(
        &self,
        id: &str,
        reason: &str,
        sequence_used: bool,
        at: DateTime<Utc>,
    ) -> StoreResult<DecisionRecord> {
        let (id, reason) = (id.to_string(), reason.to_string());
        self.write(move |w| w.fail(&id, &reason, sequence_used, at)).await
    }

    async fn missing(
        &self,
        chain: &str,
        deadline: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<DecisionRecord>> {
        let chain = chain.to_string();
        self.write(move |w| w.missing(&chain, deadline, at)).await
    }
}

/// What is about to reach the chain must be exactly what was decided (and approved): its
/// intent hashes to the one bound to the decision, which must have one.
pub(crate) fn check_intent(d: &DecisionRecord, intent: &Intent) -> StoreResult<()> {
    let bound = d.intent_hash.as_deref().ok_or_else(|| StoreError::IntentMissing(d.id.clone()))?;
    if intent.hash(&d.id) != bound {
        return Err(StoreError::IntentChanged(d.id.clone()));
    }
    Ok(())
}

impl Writer {
    fn sign(
        &mut self,
        id: &str,
        intent: &Intent,
        account: Option<Account>,
        sign: SignWith,
        at: DateTime<Utc>,
    ) -> StoreResult<Signing> {
        if let Some(signed) = load_signed(&self.conn, id)? {
            return Ok(Signing::AlreadySigned(signed));
        }
        let current = decision_row(&self.conn, id)?;
        if current.status != SpendStatus::Reserved {
            return Ok(Signing::NotExecutable(current.status));
        }
        // A freeze that landed after the reservation (or the approval) still stops it: nothing
        // is signed for a frozen agent or wallet.
        if let Some(frozen) = self.freeze_covering(&current) {
            let released = self.set_status(id, SpendStatus::Released, at, Some(&format!("not executed: {frozen}")))?;
            return Ok(Signing::NotExecutable(released.status));
        }
        check_intent(&current, intent)?;
        let sequence = match &account {
            Some(a) => Some(self.allocate_nonce(a)?),
            None => None,
        };
        // An error here rolls the job's savepoint back, nonce allocation included.
        let signed = sign(sequence)?;
        let change_seq = self.change_seq()?;
        self.conn.execute(
            "UPDATE decisions SET status = 'signed', nonce = ?1, tx_hash = ?2, raw_tx = ?3, fee_cap = ?4, fee_terms = ?5,
                updated_at_us = ?6, change_seq = ?7 WHERE id = ?8",
            params![
                signed.sequence.map(|n| n as i64),
                signed.hash,
                signed.raw,
                money(signed.fee_cap),
                signed.fee_terms,
                to_us(at),
                change_seq,
                id
            ],
        )?;
        self.reindex(id)?;
        self.audit_decision(
            "signed",
            "spendguard",
            &current,
            serde_json::json!({
                "from": current.status.as_str(),
                "to": "signed",
                "tx_hash": signed.hash,
                "nonce": signed.sequence,
                "fee_cap": money(signed.fee_cap),
                "fee_terms": signed.fee_terms,
            }),
            at,
        )?;
        Ok(Signing::Signed(signed))
    }

    /// Replaces the transaction of a broadcast decision that was proven dead (Solana: its
    /// blockhash expired unlanded) with a new signing, once per decision.
    fn resign(
        &mut self,
        id: &str,
        dead_hash: &str,
        intent: &Intent,
        sign: SignWith,
        at: DateTime<Utc>,
    ) -> StoreResult<Resigning> {
        let current = decision_row(&self.conn, id)?;
        // Only the transaction the caller proved dead is replaced: a concurrent pass that already
        // re-signed (or a status change) leaves nothing to do.
        if current.status != SpendStatus::Broadcast || current.tx_hash.as_deref() != Some(dead_hash) {
            return Ok(Resigning::Stale);
        }
        let resigned: i64 =
            self.conn.query_row("SELECT resigned FROM decisions WHERE id = ?1", params![id], |r| r.get(0))?;
        if resigned > 0 {
            return Ok(Resigning::Exhausted);
        }
        check_intent(&current, intent)?;
        let signed = sign(None)?;
        self.set_status(id, SpendStatus::Signed, at, None)?;
        self.conn.execute(
            "UPDATE decisions SET tx_hash = ?1, raw_tx = ?2, fee_cap = ?3, fee_terms = ?4, resigned = resigned + 1,
                broadcast_at_us = NULL WHERE id = ?5",
            params![signed.hash, signed.raw, money(signed.fee_cap), signed.fee_terms, id],
        )?;
        self.record_event(
            EventKind::Resigned,
            Some(id),
            &format!("decision {id}: transaction {dead_hash} expired without landing; re-signed as {}", signed.hash),
            at,
        )?;
        Ok(Resigning::Resigned(signed))
    }

    /// The next nonce of an account: the lowest hole a refused transaction left (at or above
    /// the chain's floor), else the allocator's next, never below the floor.
    pub(crate) fn allocate_nonce(&mut self, a: &Account) -> StoreResult<u64> {
        let floor = a.floor as i64;
        self.conn.execute(
            "DELETE FROM nonce_holes WHERE chain = ?1 AND address = ?2 AND nonce < ?3",
            params![a.chain, a.address, floor],
        )?;
        let hole: Option<i64> = self.conn.query_row(
            "SELECT min(nonce) FROM nonce_holes WHERE chain = ?1 AND address = ?2",
            params![a.chain, a.address],
            |r| r.get(0),
        )?;
        if let Some(n) = hole {
            self.conn.execute(
                "DELETE FROM nonce_holes WHERE chain = ?1 AND address = ?2 AND nonce = ?3",
                params![a.chain, a.address, n],
            )?;
            return Ok(n as u64);
        }
        let next: Option<i64> = self
            .conn
            .query_row("SELECT next FROM nonces WHERE chain = ?1 AND address = ?2", params![a.chain, a.address], |r| {
                r.get(0)
            })
            .optional()?;
        let n = next.unwrap_or(0).max(floor);
        self.conn.execute(
            "INSERT INTO nonces (chain, address, next) VALUES (?1, ?2, ?3)
             ON CONFLICT (chain, address) DO UPDATE SET next = excluded.next",
            params![a.chain, a.address, n + 1],
        )?;
        Ok(n as u64)
    }

    fn mark_broadcast(&mut self, id: &str, at: DateTime<Utc>) -> StoreResult<DecisionRecord> {
        let current = decision_row(&self.conn, id)?;
        if current.status == SpendStatus::Broadcast {
            return Ok(current);
        }
        let record = self.set_status(id, SpendStatus::Broadcast, at, None)?;
        self.conn.execute("UPDATE decisions SET broadcast_at_us = ?1 WHERE id = ?2", params![to_us(at), id])?;
        Ok(record)
    }

    fn settle(&mut self, id: &str, s: Settlement, at: DateTime<Utc>) -> StoreResult<DecisionRecord> {
        let next = if s.success { SpendStatus::Confirmed } else { SpendStatus::Failed };
        let why = (!s.success).then_some("the transaction reverted on chain");
        let current = decision_row(&self.conn, id)?;
        if current.status == next {
            return Ok(current);
        }
        self.conn.execute(
            "UPDATE decisions SET block = ?1, fee_paid = ?2 WHERE id = ?3",
            params![s.block as i64, money(s.fee), id],
        )?;
        self.set_status(id, next, at, why)
    }

    fn fail(&mut self, id: &str, reason: &str, sequence_used: bool, at: DateTime<Utc>) -> StoreResult<DecisionRecord> {
        let record = self.set_status(id, SpendStatus::Failed, at, Some(reason))?;
        if let (false, Some(nonce), Some(chain)) = (sequence_used, record.nonce, record.chain.as_deref()) {
            // The hole is the sender's as it was signed: the address bound with the decision.
            if let Some(address) =
                record.from_address.clone().or_else(|| self.model.wallet(&record.wallet).map(|w| w.address.clone()))
            {
                self.conn.execute(
                    "INSERT INTO nonce_holes (chain, address, nonce) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                    params![chain, address, nonce as i64],
                )?;
            }
        }
        Ok(record)
    }

    fn missing(&mut self, chain: &str, deadline: DateTime<Utc>, at: DateTime<Utc>) -> StoreResult<Vec<DecisionRecord>> {
        let overdue = query_decisions(
            &self.conn,
            "chain = ?1 AND status = 'broadcast' AND broadcast_at_us <= ?2 ORDER BY seq",
            params![chain, to_us(deadline)],
        )?;
        let mut out = vec![];
        for d in overdue {
            let reported: bool = self.conn.query_row(
                "SELECT EXISTS (SELECT 1 FROM events e, decisions d WHERE e.kind = 'missing_outflow'
                    AND e.decision_id = ?1 AND d.id = ?1 AND e.at_us >= d.broadcast_at_us)",
                params![d.id],
                |r| r.get(0),
            )?;
            if !reported {
                let detail = format!(
                    "decision {}: {} {} from wallet {} to {} was broadcast as {} but is not on chain {chain}",
                    d.id,
                    money(d.amount),
                    d.asset.as_deref().unwrap_or("?"),
                    d.wallet,
                    d.recipient,
                    d.tx_hash.as_deref().unwrap_or("?"),
                );
                self.record_event(EventKind::MissingOutflow, Some(&d.id), &detail, at)?;
            }
            out.push(d);
        }
        Ok(out)
    }
}
