//! [`FreezeStore`] on SQLite: the kill switch. Freezes are held in the writer's memory too,
//! so every evaluation sees them without a read.

use super::rows::{load_by_status, load_freezes, to_us};
use super::{SqlStore, Writer};
use crate::api::FreezeStore;
use crate::audit::AuditInput;
use crate::error::{StoreError, StoreResult};
use crate::records::{Decommissioned, FreezeOutcome};
use crate::sql::params;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use spendguard_core::model::Scope;
use spendguard_core::{EventKind, Freeze, SpendStatus};

#[async_trait]
impl FreezeStore for SqlStore {
    async fn freeze(&self, freeze: Freeze) -> StoreResult<FreezeOutcome> {
        self.write(move |w| w.freeze(freeze)).await
    }

    async fn unfreeze(&self, scope: Scope, by: &str, ack: &str, at: DateTime<Utc>) -> StoreResult<bool> {
        let (by, ack) = (by.to_string(), ack.to_string());
        self.write(move |w| w.unfreeze(scope, &by, &ack, at)).await
    }

    async fn freezes(&self) -> StoreResult<Vec<Freeze>> {
        self.read(load_freezes).await
    }

    async fn decommission(
        &self,
        agent: &str,
        scopes: Vec<Scope>,
        by: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<Decommissioned> {
        let (agent, by, reason) = (agent.to_string(), by.to_string(), reason.to_string());
        self.write(move |w| w.decommission(&agent, scopes, &by, &reason, at)).await
    }
}

/// The agent a scope names, for the audit log.
fn scope_agent(scope: &Scope) -> Option<&str> {
    match scope {
        Scope::Agent(a) => Some(a),
        _ => None,
    }
}

/// The wallet a scope names, for the audit log.
fn scope_wallet(scope: &Scope) -> Option<&str> {
    match scope {
        Scope::Wallet(w) => Some(w),
        _ => None,
    }
}

impl Writer {
    pub(crate) fn freeze(&mut self, freeze: Freeze) -> StoreResult<FreezeOutcome> {
        if !self.model.scope_exists(&freeze.scope) {
            return Err(StoreError::UnknownScope { kind: freeze.scope.kind(), id: freeze.scope.id().to_string() });
        }
        if let Some(existing) = self.freezes.iter().find(|f| f.scope == freeze.scope) {
            return Ok(FreezeOutcome::AlreadyFrozen(existing.clone()));
        }
        // Freezes are held in memory beside the usage index: other daemons on PostgreSQL notice
        // that they must reload them by the change counter.
        self.change_seq()?;
        let scope = freeze.scope.to_string();
        let at = to_us(freeze.frozen_at);
        self.conn.execute(
            "INSERT INTO freezes (scope, frozen_by, reason, frozen_at_us, evidence) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![scope, freeze.frozen_by, freeze.reason, at, freeze.evidence],
        )?;
        self.conn.execute(
            "INSERT INTO freeze_log (scope, action, actor, text, at_us) VALUES (?1, 'freeze', ?2, ?3, ?4)",
            params![scope, freeze.frozen_by, freeze.reason, at],
        )?;
        self.audit(
            AuditInput {
                kind: "freeze",
                actor: &freeze.frozen_by,
                agent: scope_agent(&freeze.scope),
                wallet: scope_wallet(&freeze.scope),
                detail: serde_json::json!({"scope": scope, "reason": freeze.reason, "evidence": freeze.evidence}),
                ..AuditInput::default()
            },
            freeze.frozen_at,
        )?;
        // An external wallet's open authorizations die with the freeze: the agent's own wallet
        // could still pay them, and spendguard would then have approved money it froze. The
        // alert names the external wallets, to be frozen at their vendor too.
        let revoked = self.revoke_authorizations(&freeze)?;
        let external: Vec<String> = spendguard_core::freeze::external_wallets_in(&self.model, &freeze.scope)
            .into_iter()
            .map(|w| w.id.clone())
            .collect();
        let detail = match external.is_empty() {
            true => freeze.describe(),
            false => format!(
                "{}; {revoked} open authorization(s) revoked; external wallets {} are held by the agent's own \
                 vendor: freeze them there too",
                freeze.describe(),
                external.join(", ")
            ),
        };
        self.record_event(EventKind::KillSwitch, None, &detail, freeze.frozen_at)?;
        // Memory last: a failure above leaves it as the rolled-back database is.
        self.freezes.push(freeze.clone());
        self.memory_writes += 1;
        Ok(FreezeOutcome::Frozen(freeze))
    }

    fn unfreeze(&mut self, scope: Scope, by: &str, ack: &str, at: DateTime<Utc>) -> StoreResult<bool> {
        if !self.model.scope_exists(&scope) {
            return Err(StoreError::UnknownScope { kind: scope.kind(), id: scope.id().to_string() });
        }
        let key = scope.to_string();
        let removed = self.conn.execute("DELETE FROM freezes WHERE scope = ?1", params![key])?;
        if removed == 0 {
            return Ok(false);
        }
        self.change_seq()?;
        self.conn.execute(
            "INSERT INTO freeze_log (scope, action, actor, text, at_us) VALUES (?1, 'unfreeze', ?2, ?3, ?4)",
            params![key, by, ack, to_us(at)],
        )?;
        self.audit(
            AuditInput {
                kind: "unfreeze",
                actor: by,
                agent: scope_agent(&scope),
                wallet: scope_wallet(&scope),
                detail: serde_json::json!({"scope": key, "ack": ack}),
                ..AuditInput::default()
            },
            at,
        )?;
        self.freezes.retain(|f| f.scope != scope);
        self.memory_writes += 1;
        Ok(true)
    }

    fn decommission(
        &mut self,
        agent: &str,
        scopes: Vec<Scope>,
        by: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<Decommissioned> {
        if self.model.agent(agent).is_none() {
            return Err(StoreError::UnknownScope { kind: "agent", id: agent.to_string() });
        }
        let tokens_revoked = self.revoke_agent(agent, by, at)?;
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
}
