//! What operators do to the ledger: approve and reject requests, cancel delays, start due
//! delays, decommission agents, hold operator tokens, and record configuration changes.

use super::{load_by_status, load_decision, to_us, Writer};
use crate::audit::AuditInput;
use crate::error::{StoreError, StoreResult};
use crate::ledger::{DecisionRecord, Decommissioned};
use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};
use spendguard_core::engine::covering_scopes;
use spendguard_core::model::Scope;
use spendguard_core::{Freeze, SpendStatus};

impl Writer {
    fn pending(&self, id: &str, doing: &str) -> StoreResult<DecisionRecord> {
        let d = load_decision(&self.conn, id)?.ok_or_else(|| StoreError::UnknownDecision(id.to_string()))?;
        if d.status != SpendStatus::PendingApproval {
            let why = d.failure.as_deref().map(|f| format!(" ({f})")).unwrap_or_default();
            return Err(StoreError::NotPermitted(format!(
                "decision {id} is {}{why}; only a pending approval request can be {doing}",
                d.status
            )));
        }
        Ok(d)
    }

    /// A configured operator.
    fn operator(&self, operator: &str) -> StoreResult<&spendguard_core::model::Operator> {
        self.model
            .operator(operator)
            .ok_or_else(|| StoreError::NotPermitted(format!("no operator {operator:?} is configured")))
    }

    /// The operator, if configured and holding the role `d` needs.
    fn approver(&self, operator: &str, d: &DecisionRecord) -> StoreResult<()> {
        let op = self.operator(operator)?;
        match d.approver_role.as_deref() {
            Some(role) if !op.roles.iter().any(|r| r == role) => Err(StoreError::NotPermitted(format!(
                "operator {operator} does not hold the role {role:?} that decision {} needs",
                d.id
            ))),
            _ => Ok(()),
        }
    }

    /// The freeze that covers a decision's agent or wallet now, if any.
    pub(super) fn freeze_covering(&self, d: &DecisionRecord) -> Option<String> {
        match (self.model.agent(&d.agent), self.model.wallet(&d.wallet)) {
            (Some(a), Some(w)) => {
                let scopes = covering_scopes(a, w);
                self.freezes.iter().find(|f| scopes.contains(&f.scope)).map(Freeze::describe)
            }
            _ => Some("its agent or wallet is no longer configured".into()),
        }
    }

    /// Approves a pending request: it becomes reserved, to be executed exactly as decided.
    /// `expected_hash`, when given, must be the intent hash the operator was shown.
    pub(crate) fn approve(
        &mut self,
        id: &str,
        operator: &str,
        expected_hash: Option<&str>,
        at: DateTime<Utc>,
    ) -> StoreResult<DecisionRecord> {
        let d = self.pending(id, "approved")?;
        self.approver(operator, &d)?;
        if d.approval_expires_at.is_some_and(|t| t <= at) {
            return Err(StoreError::NotPermitted(format!("approval request {id} has expired")));
        }
        self.check_intent(&d)?;
        if let Some(expected) = expected_hash {
            if d.intent_hash.as_deref() != Some(expected) {
                return Err(StoreError::NotPermitted(format!(
                    "decision {id}: the intent hash given ({expected}) is not the one bound to it ({})",
                    d.intent_hash.as_deref().unwrap_or("none")
                )));
            }
        }
        if let Some(frozen) = self.freeze_covering(&d) {
            return Err(StoreError::NotPermitted(format!("decision {id} cannot be approved: {frozen}")));
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

    /// Rejects a pending request; its reservation is released.
    pub(crate) fn reject(
        &mut self,
        id: &str,
        operator: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<DecisionRecord> {
        if reason.trim().is_empty() {
            return Err(StoreError::NotPermitted("a rejection needs a reason".into()));
        }
        let d = self.pending(id, "rejected")?;
        self.approver(operator, &d)?;
        let record =
            self.set_status(id, SpendStatus::Released, at, Some(&format!("rejected by {operator}: {reason}")))?;
        self.audit_decision("rejected", operator, &record, serde_json::json!({"reason": reason}), at)?;
        Ok(record)
    }

    /// An operator cancels a queued (DELAY) spend; its reservation is released.
    pub(crate) fn cancel_delay(
        &mut self,
        id: &str,
        operator: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<DecisionRecord> {
        self.operator(operator)?;
        let d = load_decision(&self.conn, id)?.ok_or_else(|| StoreError::UnknownDecision(id.to_string()))?;
        if d.status != SpendStatus::Queued {
            return Err(StoreError::NotPermitted(format!(
                "decision {id} is {}; only a queued (DELAY) spend can be cancelled",
                d.status
            )));
        }
        let why = format!("cancelled by {operator}: {reason}");
        let record = self.set_status(id, SpendStatus::Released, at, Some(&why))?;
        self.audit_decision("cancelled", operator, &record, serde_json::json!({"reason": reason}), at)?;
        Ok(record)
    }

    /// Starts a due DELAY spend: reserved for execution, or released if a freeze covers it now.
    /// `None` when it is no longer queued (another process took it, or it was cancelled).
    pub(crate) fn start_due(&mut self, id: &str, at: DateTime<Utc>) -> StoreResult<Option<DecisionRecord>> {
        let d = load_decision(&self.conn, id)?.ok_or_else(|| StoreError::UnknownDecision(id.to_string()))?;
        if d.status != SpendStatus::Queued {
            return Ok(None);
        }
        let record = match self.freeze_covering(&d) {
            Some(frozen) => self.set_status(id, SpendStatus::Released, at, Some(&format!("not executed: {frozen}")))?,
            None => self.set_status(id, SpendStatus::Reserved, at, None)?,
        };
        Ok(Some(record))
    }

    /// Revokes an agent's tokens, freezes it and every wallet only it uses, and releases its
    /// queued and pending spends: one transaction.
    pub(crate) fn decommission(
        &mut self,
        agent: &str,
        by: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<Decommissioned> {
        let a = self
            .model
            .agent(agent)
            .cloned()
            .ok_or_else(|| StoreError::UnknownScope { kind: "agent", id: agent.to_string() })?;
        let tokens_revoked = self.revoke_agent(agent, by, at)?;
        let mut scopes = vec![Scope::Agent(agent.to_string())];
        for w in &a.wallets {
            if self.model.agents_of_wallet(w).all(|other| other.id == agent) {
                scopes.push(Scope::Wallet(w.clone()));
            }
        }
        let mut frozen = vec![];
        for scope in scopes {
            let freeze = Freeze {
                scope: scope.clone(),
                frozen_by: by.to_string(),
                reason: format!("agent {agent} decommissioned: {reason}"),
                frozen_at: at,
                evidence: None,
            };
            self.freeze(freeze)?;
            frozen.push(scope);
        }
        let open = load_by_status(&self.conn, &[SpendStatus::Queued, SpendStatus::PendingApproval])?;
        let mut released = vec![];
        for d in open.into_iter().filter(|d| d.agent == agent) {
            self.set_status(&d.id, SpendStatus::Released, at, Some(&format!("agent {agent} decommissioned")))?;
            released.push(d.id);
        }
        self.audit(
            AuditInput {
                kind: "decommissioned",
                actor: by,
                agent: Some(agent),
                detail: serde_json::json!({
                    "reason": reason,
                    "tokens_revoked": tokens_revoked,
                    "frozen": frozen.iter().map(Scope::to_string).collect::<Vec<_>>(),
                    "released": released,
                }),
                ..AuditInput::default()
            },
            at,
        )?;
        Ok(Decommissioned { tokens_revoked, frozen, released })
    }

    /// Records the configuration in use when it differs from the last one recorded.
    pub(crate) fn record_config(&mut self, hash: &str, summary: &str, at: DateTime<Utc>) -> StoreResult<bool> {
        let last: Option<String> = self
            .conn
            .query_row(
                "SELECT json_extract(detail, '$.hash') FROM audit_log WHERE kind = 'config' ORDER BY seq DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
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

    /// Stores a new operator token (its hash).
    pub(crate) fn add_operator_token(&mut self, operator: &str, hash: &str, at: DateTime<Utc>) -> StoreResult<()> {
        self.operator(operator)?;
        self.conn.execute(
            "INSERT INTO operator_tokens (token_hash, operator, created_at_us) VALUES (?1, ?2, ?3)",
            params![hash, operator, to_us(at)],
        )?;
        self.audit(
            AuditInput {
                kind: "operator_token",
                actor: operator,
                detail: serde_json::json!({"token_hash_prefix": &hash[..hash.len().min(12)]}),
                ..AuditInput::default()
            },
            at,
        )
    }
}

/// The operator a live operator token (by hash) belongs to.
pub(crate) fn operator_for_token(conn: &rusqlite::Connection, hash: &str) -> StoreResult<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT operator FROM operator_tokens WHERE token_hash = ?1 AND revoked_at_us IS NULL")?
        .query_row(params![hash], |r| r.get(0))
        .optional()?)
}
