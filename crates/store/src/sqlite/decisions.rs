//! [`DecisionStore`] on SQLite: evaluate-and-reserve (the policy engine runs inside the
//! writer's transaction), the lifecycle moves agents and operators ask for, and reads.

use super::rows::{decision_row, load_by_status, load_decision, money, query_decisions, to_us, ENTRY_COLUMNS};
use super::writer::truncate_to_micros;
use super::{SqlStore, Writer};
use crate::api::DecisionStore;
use crate::audit::AuditInput;
use crate::error::{StoreError, StoreResult};
use crate::intent::Intent;
use crate::records::{DecisionRecord, Receipt, ReserveOutcome, ReserveRequest};
use crate::sql::{params, OptionalExtension};
use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use sha2::{Digest, Sha256};
use spendguard_core::money::fmt_units;
use spendguard_core::price::Prices;
use spendguard_core::usage::LedgerEntry;
use spendguard_core::{evaluate, Balances, Context, Decision, Evaluation, Freeze, SpendRequest, SpendStatus};

#[async_trait]
impl DecisionStore for SqlStore {
    async fn evaluate(&self, request: SpendRequest, balances: Balances, prices: Prices) -> StoreResult<Evaluation> {
        self.dry(move |w| w.dry_run(request, balances, prices)).await
    }

    async fn reserve(&self, request: ReserveRequest) -> StoreResult<ReserveOutcome> {
        self.write(move |w| w.reserve(request)).await
    }

    async fn set_status(&self, id: &str, status: SpendStatus, at: DateTime<Utc>) -> StoreResult<DecisionRecord> {
        let id = id.to_string();
        self.write(move |w| w.set_status(&id, status, at, None)).await
    }

    async fn cancel(&self, agent: &str, id: &str, why: &str, at: DateTime<Utc>) -> StoreResult<DecisionRecord> {
        let (agent, id, why) = (agent.to_string(), id.to_string(), why.to_string());
        self.write(move |w| w.cancel(&agent, &id, &why, at)).await
    }

    async fn expire_approvals(&self, now: DateTime<Utc>) -> StoreResult<Vec<DecisionRecord>> {
        self.write(move |w| w.expire_approvals(now)).await
    }

    async fn approve(
        &self,
        id: &str,
        operator: &str,
        shown_hash: Option<&str>,
        at: DateTime<Utc>,
    ) -> StoreResult<DecisionRecord> {
        let (id, operator, shown) = (id.to_string(), operator.to_string(), shown_hash.map(str::to_string));
        self.write(move |w| w.approve(&id, &operator, shown.as_deref(), at)).await
    }

    async fn reject(&self, id: &str, operator: &str, reason: &str, at: DateTime<Utc>) -> StoreResult<DecisionRecord> {
        let (id, operator, reason) = (id.to_string(), operator.to_string(), reason.to_string());
        self.write(move |w| w.reject(&id, &operator, &reason, at)).await
    }

    async fn cancel_delay(
        &self,
        id: &str,
        operator: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<DecisionRecord> {
        let (id, operator, reason) = (id.to_string(), operator.to_string(), reason.to_string());
        self.write(move |w| w.cancel_delay(&id, &operator, &reason, at)).await
    }

    async fn start_due(&self, id: &str, at: DateTime<Utc>) -> StoreResult<Option<DecisionRecord>> {
        let id = id.to_string();
        self.write(move |w| w.start_due(&id, at)).await
    }

    async fn decision(&self, id: &str) -> StoreResult<Option<DecisionRecord>> {
        let id = id.to_string();
        self.read(move |c| load_decision(c, &id)).await
    }

    async fn decisions(&self, agent: Option<&str>) -> StoreResult<Vec<DecisionRecord>> {
        let agent = agent.map(str::to_string);
        self.read(move |c| query_decisions(c, "CAST(?1 AS TEXT) IS NULL OR agent = ?1 ORDER BY seq", params![agent]))
            .await
    }

    async fn decisions_in(&self, statuses: &[SpendStatus]) -> StoreResult<Vec<DecisionRecord>> {
        let statuses = statuses.to_vec();
        self.read(move |c| load_by_status(c, &statuses)).await
    }
}

/// Hash of everything that makes two requests "the same" for idempotency (not the time).
fn request_hash(r: &SpendRequest, memo: Option<&str>, x402: Option<&str>) -> String {
    let mut h = Sha256::new();
    for part in [
        r.wallet.as_str(),
        r.to.as_str(),
        &fmt_units(r.amount),
        r.asset.as_deref().unwrap_or(""),
        r.operation.as_deref().unwrap_or(""),
        memo.unwrap_or(""),
        x402.unwrap_or(""),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

/// A decision's audit entry: the keys and values the `json!` map written before it held, its
/// fields in the map's (alphabetical) order.
#[derive(serde::Serialize)]
struct DecisionAudit<'a> {
    amount: String,
    approval_expires_at: Option<String>,
    asset: Option<&'a str>,
    chain: Option<&'a str>,
    decision: &'a str,
    execute_after: Option<String>,
    intent_hash: Option<&'a str>,
    operation: Option<&'a str>,
    reasons: Vec<&'a str>,
    recipient: &'a str,
    status: &'a str,
    tier: &'a str,
    valuation: Option<&'a spendguard_core::price::Valuation>,
}

/// A new decision's id: a UUIDv7 over the decision's time, so ids are unique (74 random bits)
/// and ordered in time — a new decision's entry in the id index lands beside the last one
/// instead of on a random page of it, one page rewritten per commit instead of one per decision.
fn decision_id(at: DateTime<Utc>) -> String {
    let secs = u64::try_from(at.timestamp()).unwrap_or(0);
    let when = uuid::Timestamp::from_unix(uuid::NoContext, secs, at.timestamp_subsec_nanos());
    format!("dec_{}", uuid::Uuid::new_v7(when).simple())
}

impl Writer {
    pub(crate) fn dry_run(
        &mut self,
        mut request: SpendRequest,
        balances: Balances,
        prices: Prices,
    ) -> StoreResult<Evaluation> {
        request.at = truncate_to_micros(request.at);
        self.ensure_loaded(request.at)?;
        let ctx = Context { usage: &self.index, freezes: &self.freezes, balances: &balances, prices: &prices };
        Ok(evaluate(&self.model, &request, &ctx))
    }

    pub(crate) fn reserve(&mut self, req: ReserveRequest) -> StoreResult<ReserveOutcome> {
        let ReserveRequest { mut request, balances, prices, idempotency_key, memo, x402 } = req;
        request.at = truncate_to_micros(request.at);
        self.ensure_loaded(request.at)?;
        let x402 =
            x402.map(|x| serde_json::to_string(&x)).transpose().map_err(|e| StoreError::Unusable(e.to_string()))?;
        let hash = request_hash(&request, memo.as_deref(), x402.as_deref());
        if let Some(key) = &idempotency_key {
            let prior: Option<(String, String, String)> = self
                .conn
                .prepare_cached(
                    "SELECT request_hash, decision_id, response FROM idempotency WHERE agent = ?1 AND key = ?2",
                )?
                .query_row(params![request.agent, key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?;
            if let Some((prior_hash, decision_id, response)) = prior {
                if prior_hash != hash {
                    return Ok(ReserveOutcome::IdempotencyConflict { original_decision_id: decision_id });
                }
                let receipt: Receipt = serde_json::from_str(&response).map_err(|e| StoreError::Corrupt {
                    table: "idempotency",
                    row: key.clone(),
                    detail: format!("response of {decision_id}: {e}"),
                })?;
                return Ok(ReserveOutcome::Decided { receipt, replayed: true });
            }
        }

        let ctx = Context { usage: &self.index, freezes: &self.freezes, balances: &balances, prices: &prices };
        let eval = evaluate(&self.model, &request, &ctx);
        let status = match eval.decision {
            Decision::Deny => SpendStatus::Denied,
            Decision::Allow | Decision::Notify => SpendStatus::Reserved,
            Decision::Delay => SpendStatus::Queued,
            Decision::RequireApproval => SpendStatus::PendingApproval,
        };
        let spend = eval.spend.as_ref();
        let valuation = eval.valuation.as_ref();
        let execute_after =
            (status == SpendStatus::Queued).then(|| request.at + spend.and_then(|s| s.delay).unwrap_or_default());
        let approval_expires_at = (status == SpendStatus::PendingApproval)
            .then(|| request.at + spend.and_then(|s| s.approval_ttl).unwrap_or(TimeDelta::hours(24)));
        let id = decision_id(request.at);
        let reasons = serde_json::to_string(&eval.reasons).map_err(|e| StoreError::Unusable(e.to_string()))?;
        let headroom = serde_json::to_string(&eval.headroom).map_err(|e| StoreError::Unusable(e.to_string()))?;
        let at_us = to_us(request.at);
        let recipient = spend.map_or_else(|| request.to.clone(), |s| s.recipient.clone());
        let from_address = self.model.wallet(&request.wallet).map(|w| w.address.clone());
        // Every decision that resolved to a chain transfer is bound to what it pays.
        let intent = match (spend, &from_address) {
            (Some(s), Some(from)) => Some(Intent {
                agent: request.agent.clone(),
                wallet: request.wallet.clone(),
                from_address: from.clone(),
                chain: s.chain.clone(),
                asset: s.asset.clone(),
                token: s.token.clone(),
                decimals: s.decimals,
                recipient: recipient.clone(),
                amount: request.amount,
                operation: request.operation.clone(),
                memo: memo.clone(),
            }),
            _ => None,
        };
        let intent_hash = intent.as_ref().map(|i| i.hash(&id));
        let change_seq = self.change_seq()?;
        let seq: i64 = self
            .conn
            .prepare_cached(
                "INSERT INTO decisions (id, created_at_us, updated_at_us, agent, wallet, department, chain, asset,
                    recipient, amount, usd, price_usd, operation, memo, merchant, category, decision, tier, status,
                    reasons, headroom, execute_after_us, approval_expires_us, approver_role, request_hash,
                    idempotency_key, change_seq, intent_hash, from_address, token, decimals, price_source,
                    price_as_of_us)
                 VALUES (?1, ?2, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19,
                    ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31, ?32)
                 RETURNING seq",
            )?
            .query_row(
                params![
                    id,
                    at_us,
                    request.agent,
                    request.wallet,
                    self.model.agent(&request.agent).and_then(|a| a.department.clone()),
                    spend.map(|s| s.chain.clone()),
                    spend.map(|s| s.asset.clone()),
                    recipient,
                    money(request.amount),
                    valuation.map(|v| money(v.usd)),
                    valuation.map(|v| money(v.price)),
                    request.operation,
                    memo,
                    spend.and_then(|s| s.merchant.clone()),
                    spend.and_then(|s| s.category.clone()),
                    eval.decision.as_str(),
                    eval.tier.as_str(),
                    status.as_str(),
                    reasons,
                    headroom,
                    execute_after.map(to_us),
                    approval_expires_at.map(to_us),
                    spend.and_then(|s| s.approver_role.clone()),
                    hash,
                    idempotency_key,
                    change_seq,
                    intent_hash,
                    intent.as_ref().map(|i| i.from_address.clone()),
                    spend.and_then(|s| s.token.clone()),
                    spend.map(|s| i64::from(s.decimals)),
                    valuation.map(|v| v.source.clone()),
                    valuation.and_then(|v| v.as_of).map(to_us),
                ],
                |r| r.get(0),
            )?;
        if let Some(x402) = &x402 {
            self.conn.execute("UPDATE decisions SET x402 = ?1 WHERE id = ?2", params![x402, id])?;
        }
        let codes: Vec<&str> = eval.reasons.iter().map(|r| r.code.as_str()).collect();
        let usd = valuation.map(|v| money(v.usd));
        self.audit(
            AuditInput {
                kind: "decision",
                actor: &request.agent,
                decision_id: Some(&id),
                agent: Some(&request.agent),
                wallet: Some(&request.wallet),
                usd: usd.as_deref(),
                detail: DecisionAudit {
                    amount: money(request.amount),
                    approval_expires_at: approval_expires_at.map(|t| t.to_rfc3339()),
                    asset: spend.map(|s| s.asset.as_str()),
                    chain: spend.map(|s| s.chain.as_str()),
                    decision: eval.decision.as_str(),
                    execute_after: execute_after.map(|t| t.to_rfc3339()),
                    intent_hash: intent_hash.as_deref(),
                    operation: request.operation.as_deref(),
                    reasons: codes,
                    recipient: &recipient,
                    status: status.as_str(),
                    tier: eval.tier.as_str(),
                    valuation,
                },
            },
            request.at,
        )?;
        let receipt = Receipt {
            decision_id: id.clone(),
            status,
            decision: eval.decision,
            tier: eval.tier,
            reasons: eval.reasons.clone(),
            headroom: eval.headroom.clone(),
            execute_after,
            approval_expires_at,
            amount: request.amount.normalize(),
            asset: spend.map(|s| s.asset.clone()),
            valuation: valuation.cloned(),
        };
        if let Some(key) = &idempotency_key {
            let response = serde_json::to_string(&receipt).map_err(|e| StoreError::Unusable(e.to_string()))?;
            self.conn
                .prepare_cached(
                    "INSERT INTO idempotency (agent, key, request_hash, decision_id, response, created_at_us)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![request.agent, key, hash, id, response, at_us])?;
        }
        if let (Some(state), Some(spend)) = (status.counts_as(), spend) {
            self.index.upsert(LedgerEntry {
                seq,
                at: request.at,
                agent: request.agent.clone(),
                department: spend.department.clone(),
                wallet: request.wallet.clone(),
                asset: spend.asset.clone(),
                operation: request.operation.clone(),
                amount: request.amount,
                usd: valuation
                    .map(|v| v.usd)
                    .ok_or_else(|| StoreError::Unusable(format!("decision {id} holds budget without a USD value")))?,
                state,
            });
            self.memory_writes += 1;
        }
        Ok(ReserveOutcome::Decided { receipt, replayed: false })
    }

    /// Moves a decision to `next` when the lifecycle allows it, keeping the usage index and
    /// the audit log in step.
    pub(crate) fn set_status(
        &mut self,
        id: &str,
        next: spendguard_core::SpendStatus,
        at: DateTime<Utc>,
        failure: Option<&str>,
    ) -> StoreResult<DecisionRecord> {
        let current = decision_row(&self.conn, id)?;
        if !current.status.can_become(next) {
            return Err(StoreError::IllegalTransition { id: id.to_string(), from: current.status, to: next });
        }
        let change_seq = self.change_seq()?;
        self.conn.execute(
            "UPDATE decisions SET status = ?1, updated_at_us = ?2, change_seq = ?3, failure = coalesce(?5, failure)
             WHERE id = ?4",
            params![next.as_str(), to_us(at), change_seq, id, failure],
        )?;
        self.reindex(id)?;
        let record = decision_row(&self.conn, id)?;
        self.audit_decision(
            "status",
            "spendguard",
            &record,
            serde_json::json!({
                "from": current.status.as_str(),
                "to": next.as_str(),
                "failure": failure,
                "tx_hash": record.tx_hash,
                "block": record.block,
                "fee_paid": record.fee_paid.map(money),
            }),
            at,
        )?;
        Ok(record)
    }

    /// Brings the usage index in line with a decision's stored status.
    pub(crate) fn reindex(&mut self, id: &str) -> StoreResult<()> {
        let (entry, status) = self
            .conn
            .prepare_cached(&format!("SELECT {ENTRY_COLUMNS} FROM decisions WHERE id = ?1"))?
            .query_row(params![id], super::rows::entry_from_row)
            .map_err(super::rows::corrupt("decision", id))?;
        match status.counts_as() {
            Some(_) if entry.at >= self.loaded_from => self.index.upsert(entry),
            _ => self.index.remove(entry.seq),
        }
        self.memory_writes += 1;
        Ok(())
    }

    /// The freeze that covers a decision's agent or wallet now, in words.
    pub(crate) fn freeze_covering(&self, d: &DecisionRecord) -> Option<String> {
        match (self.model.agent(&d.agent), self.model.wallet(&d.wallet)) {
            (Some(a), Some(w)) => spendguard_core::freeze::covering(&self.freezes, a, w).map(Freeze::describe),
            _ => Some("its agent or wallet is no longer configured".into()),
        }
    }

    /// Refuses a decision whose stored fields no longer hash to the intent bound when it was
    /// made (someone changed what it would pay), or that has none.
    pub(crate) fn check_stored_intent(&self, d: &DecisionRecord) -> StoreResult<()> {
        let bound = d.intent_hash.as_deref().ok_or_else(|| StoreError::IntentMissing(d.id.clone()))?;
        match d.intent() {
            Some(intent) if intent.hash(&d.id) == bound => Ok(()),
            _ => Err(StoreError::IntentChanged(d.id.clone())),
        }
    }

    fn cancel(&mut self, agent: &str, id: &str, why: &str, at: DateTime<Utc>) -> StoreResult<DecisionRecord> {
        let current = decision_row(&self.conn, id)?;
        if current.agent != agent {
            return Err(StoreError::NotYours(id.to_string()));
        }
        if current.status == SpendStatus::Authorized {
            // A signed x402 payment is in the server's hands: only its cancellation on chain
            // (an operator's `authorizations cancel`) makes it unusable, so its budget stays.
            let kind = super::authorizations::load_authorization(&self.conn, id)?.map(|a| a.kind);
            if kind == Some(crate::records::AuthorizationKind::X402) {
                return Err(StoreError::WrongStatus {
                    id: id.to_string(),
                    status: current.status,
                    failure: None,
                    needs:
                        "a signed x402 payment is cancelled on chain by an operator (spendguard authorizations cancel)",
                });
            }
            // The agent will not pay it: a payment that lands anyway is unexplained.
            self.end_authorization(id, crate::records::AuthorizationState::Revoked, why, at)?;
            return decision_row(&self.conn, id);
        }
        if !matches!(current.status, SpendStatus::Queued | SpendStatus::PendingApproval) {
            return Err(StoreError::WrongStatus {
                id: id.to_string(),
                status: current.status,
                failure: None,
                needs: "only queued, pending-approval or authorized (not yet paid) spends can be cancelled",
            });
        }
        self.set_status(id, SpendStatus::Released, at, Some(why))
    }

    fn expire_approvals(&mut self, now: DateTime<Utc>) -> StoreResult<Vec<DecisionRecord>> {
        let pending = load_by_status(&self.conn, &[SpendStatus::PendingApproval])?;
        let mut out = vec![];
        for d in pending.into_iter().filter(|d| d.approval_expires_at.is_some_and(|t| t <= now)) {
            out.push(self.set_status(&d.id, SpendStatus::Released, now, Some("approval request expired"))?);
        }
        Ok(out)
    }

    /// A decision that must be pending approval for what is asked.
    fn pending(&self, id: &str, needs: &'static str) -> StoreResult<DecisionRecord> {
        let d = decision_row(&self.conn, id)?;
        if d.status != SpendStatus::PendingApproval {
            return Err(StoreError::WrongStatus { id: id.to_string(), status: d.status, failure: d.failure, needs });
        }
        Ok(d)
    }

    fn approve(
        &mut self,
        id: &str,
        operator: &str,
        shown_hash: Option<&str>,
        at: DateTime<Utc>,
    ) -> StoreResult<DecisionRecord> {
        let d = self.pending(id, "only a pending approval request can be approved")?;
        if d.approval_expires_at.is_some_and(|t| t <= at) {
            return Err(StoreError::Expired(id.to_string()));
        }
        self.check_stored_intent(&d)?;
        if let Some(shown) = shown_hash {
            if d.intent_hash.as_deref() != Some(shown) {
                return Err(StoreError::IntentNotShown {
                    id: id.to_string(),
                    given: shown.to_string(),
                    bound: d.intent_hash.clone().unwrap_or_default(),
                });
            }
        }
        if let Some(freeze) = self.freeze_covering(&d) {
            return Err(StoreError::Frozen { id: id.to_string(), doing: "approved", freeze });
        }
        self.conn.execute(
            "UPDATE decisions SET approved_by = ?1, approved_at_us = ?2 WHERE id = ?3",
            params![operator, to_us(at), id],
        )?;
        let record = self.set_status(id, SpendStatus::Reserved, at, None)?;
        self.audit_decision(
            "approved",
            operator,
            &record,
            serde_json::json!({"intent_hash": record.intent_hash, "approver_role": record.approver_role}),
            at,
        )?;
        Ok(record)
    }

    fn reject(&mut self, id: &str, operator: &str, reason: &str, at: DateTime<Utc>) -> StoreResult<DecisionRecord> {
        self.pending(id, "only a pending approval request can be rejected")?;
        let record =
            self.set_status(id, SpendStatus::Released, at, Some(&format!("rejected by {operator}: {reason}")))?;
        self.audit_decision("rejected", operator, &record, serde_json::json!({"reason": reason}), at)?;
        Ok(record)
    }

    fn cancel_delay(
        &mut self,
        id: &str,
        operator: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<DecisionRecord> {
        let d = decision_row(&self.conn, id)?;
        if d.status != SpendStatus::Queued {
            return Err(StoreError::WrongStatus {
                id: id.to_string(),
                status: d.status,
                failure: d.failure,
                needs: "only a queued (DELAY) spend can be cancelled",
            });
        }
        let why = format!("cancelled by {operator}: {reason}");
        let record = self.set_status(id, SpendStatus::Released, at, Some(&why))?;
        self.audit_decision("cancelled", operator, &record, serde_json::json!({"reason": reason}), at)?;
        Ok(record)
    }

    fn start_due(&mut self, id: &str, at: DateTime<Utc>) -> StoreResult<Option<DecisionRecord>> {
        let d = decision_row(&self.conn, id)?;
        if d.status != SpendStatus::Queued {
            return Ok(None);
        }
        let record = match self.freeze_covering(&d) {
            Some(frozen) => self.set_status(id, SpendStatus::Released, at, Some(&format!("not executed: {frozen}")))?,
            None => self.set_status(id, SpendStatus::Reserved, at, None)?,
        };
        Ok(Some(record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;

    /// A decision's audit entry written from the struct holds what the `json!` map entries were
    /// written from before it held, its keys in the same order.
    #[test]
    fn a_decision_audit_entry_reads_as_the_map_it_replaced() {
        let valuation = spendguard_core::price::Valuation {
            usd: Decimal::new(125, 2),
            price: Decimal::ONE,
            source: "static".into(),
            as_of: None,
        };
        let entry = DecisionAudit {
            amount: "1.25".into(),
            approval_expires_at: Some("2026-12-03T00:00:00+00:00".into()),
            asset: Some("eth:USDC"),
            chain: Some("eth"),
            decision: "allow",
            execute_after: Some("2026-12-02T00:00:00+00:00".into()),
            intent_hash: Some("ab"),
            operation: Some("op"),
            reasons: vec!["within_limits", "notify"],
            recipient: "0xa0",
            status: "reserved",
            tier: "instant",
            valuation: Some(&valuation),
        };
        let map = serde_json::json!({
            "decision": entry.decision,
            "tier": entry.tier,
            "status": entry.status,
            "chain": entry.chain,
            "asset": entry.asset,
            "amount": entry.amount,
            "recipient": entry.recipient,
            "operation": entry.operation,
            "reasons": entry.reasons,
            "intent_hash": entry.intent_hash,
            "execute_after": entry.execute_after,
            "approval_expires_at": entry.approval_expires_at,
            "valuation": entry.valuation,
        });
        let written = serde_json::to_string(&entry).unwrap();
        assert_eq!(serde_json::from_str::<serde_json::Value>(&written).unwrap(), map);
        let at = |key: &String| written.find(&format!("\"{key}\":")).unwrap();
        let keys: Vec<&String> = map.as_object().unwrap().keys().collect();
        assert!(keys.windows(2).all(|pair| at(pair[0]) < at(pair[1])), "{written}");
    }
}
