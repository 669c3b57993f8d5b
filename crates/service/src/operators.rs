//! [`Operators`]: what treasury operators do, through the admin API or the CLI alike —
//! approve and reject requests, cancel delays, freeze and unfreeze, decommission and revoke
//! agents — each allowed only to a configured operator holding a role `[roles]` names for it
//! (approvals: the policy's `approver_role`).

use crate::clock::Clock;
use crate::error::{ServiceError, ServiceResult};
use crate::execution::Executor;
use serde::Serialize;
use spendguard_config::{AdminAction, Config};
use spendguard_core::freeze::scopes_for_decommission;
use spendguard_core::model::{Operator, Scope};
use spendguard_core::{Freeze, SpendStatus};
use spendguard_store::{CredentialStore, DecisionRecord, DecisionStore, Decommissioned, FreezeOutcome, FreezeStore};
use std::sync::Arc;

/// A frozen scope: what, by whom, since when and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FrozenScope {
    /// `org`, `department:ID`, `agent:ID` or `wallet:ID`.
    pub scope: String,
    /// Operator, or `reconciler`.
    pub frozen_by: String,
    /// Since.
    pub since: chrono::DateTime<chrono::Utc>,
    /// Why.
    pub reason: String,
    /// The on-chain evidence, for freezes the reconciler tripped.
    pub evidence: Option<String>,
}

impl FrozenScope {
    /// The listing form of a freeze.
    pub fn of(f: &Freeze) -> FrozenScope {
        FrozenScope {
            scope: f.scope.to_string(),
            frozen_by: f.frozen_by.clone(),
            since: f.frozen_at,
            reason: f.reason.clone(),
            evidence: f.evidence.clone(),
        }
    }
}

/// Who froze a scope when the reconciler did (money left with no decision behind it).
const RECONCILER: &str = "reconciler";
/// Longest reason or acknowledgment an operator may give.
const TEXT_MAX: usize = 1024;

/// Refuses an operator's text `name` that is blank (`missing` says why it is needed) or longer
/// than [`TEXT_MAX`].
fn required_text(name: &str, text: &str, missing: &str) -> ServiceResult<()> {
    crate::answers::bounded(name, text, TEXT_MAX)?;
    if text.trim().is_empty() {
        return Err(ServiceError::Invalid(missing.into()));
    }
    Ok(())
}

/// Operators' actions and the reads behind them.
pub struct Operators {
    pub(crate) config: Arc<Config>,
    pub(crate) decisions: Arc<dyn DecisionStore>,
    pub(crate) freezes: Arc<dyn FreezeStore>,
    pub(crate) credentials: Arc<dyn CredentialStore>,
    pub(crate) executor: Arc<Executor>,
    pub(crate) clock: Arc<dyn Clock>,
}

impl Operators {
    /// A configured operator, or a refusal naming the one that is not.
    fn operator(&self, id: &str) -> ServiceResult<&Operator> {
        self.config
            .model
            .operator(id)
            .ok_or_else(|| ServiceError::Forbidden(format!("no operator {id:?} is configured")))
    }

    /// Refuses unless `operator` is configured and holds one of the roles `action` needs.
    pub fn permit(&self, operator: &str, action: AdminAction) -> ServiceResult<()> {
        let op = self.operator(operator)?;
        let needed = self.config.roles.for_action(action);
        if op.roles.iter().any(|r| needed.contains(r)) {
            return Ok(());
        }
        Err(ServiceError::Forbidden(format!(
            "operator {operator} may not {}: that needs one of the roles {} ([roles] {})",
            action.describe(),
            needed.iter().map(|r| format!("{r:?}")).collect::<Vec<_>>().join(", "),
            action.as_str()
        )))
    }

    /// Refuses unless `operator` holds the approver role decision `d` needs.
    fn permit_approval(&self, operator: &str, d: &DecisionRecord) -> ServiceResult<()> {
        let op = self.operator(operator)?;
        match d.approver_role.as_deref() {
            Some(role) if op.roles.iter().any(|r| r == role) => Ok(()),
            Some(role) => Err(ServiceError::Forbidden(format!(
                "operator {operator} does not hold the role {role:?} that decision {} needs",
                d.id
            ))),
            None => Err(ServiceError::Forbidden(format!("decision {} names no approver role", d.id))),
        }
    }

    async fn decision_of(&self, id: &str) -> ServiceResult<DecisionRecord> {
        self.decisions.decision(id).await?.ok_or_else(|| ServiceError::UnknownDecision(id.to_string()))
    }

    /// Approval requests waiting, oldest first.
    pub async fn pending_approvals(&self) -> ServiceResult<Vec<DecisionRecord>> {
        Ok(self.decisions.decisions_in(&[SpendStatus::PendingApproval]).await?)
    }

    /// Queued DELAY spends, oldest first.
    pub async fn queued_delays(&self) -> ServiceResult<Vec<DecisionRecord>> {
        Ok(self.decisions.decisions_in(&[SpendStatus::Queued]).await?)
    }

    /// One decision, as stored.
    pub async fn decision(&self, id: &str) -> ServiceResult<Option<DecisionRecord>> {
        Ok(self.decisions.decision(id).await?)
    }

    /// The frozen scopes, oldest first.
    pub async fn frozen(&self) -> ServiceResult<Vec<FrozenScope>> {
        Ok(self.freezes.freezes().await?.iter().map(FrozenScope::of).collect())
    }

    /// Approves a pending request as `operator` and executes it when this process holds the
    /// wallet's key (otherwise a process that does executes it on its next pass): exactly the
    /// intent that was requested, whose hash is checked again when it is signed. `shown_hash`,
    /// when given, must be the intent hash the operator was shown.
    pub async fn approve(&self, id: &str, operator: &str, shown_hash: Option<&str>) -> ServiceResult<DecisionRecord> {
        let now = self.clock.now();
        // An expired request is released first, so approving it is refused.
        self.decisions.expire_approvals(now).await?;
        let d = self.decision_of(id).await?;
        self.permit_approval(operator, &d)?;
        self.decisions.approve(id, operator, shown_hash, now).await.map_err(ServiceError::refusal)?;
        self.executor.execute(id).await
    }

    /// Rejects a pending request as `operator`; its reservation is released.
    pub async fn reject(&self, id: &str, operator: &str, reason: &str) -> ServiceResult<DecisionRecord> {
        required_text("reason", reason, "a rejection needs a reason")?;
        let d = self.decision_of(id).await?;
        self.permit_approval(operator, &d)?;
        self.decisions.reject(id, operator, reason, self.clock.now()).await.map_err(ServiceError::refusal)
    }

    /// Cancels a queued DELAY spend as `operator`; its reservation is released.
    pub async fn cancel_delay(&self, id: &str, operator: &str, reason: &str) -> ServiceResult<DecisionRecord> {
        crate::answers::bounded("reason", reason, TEXT_MAX)?;
        self.permit(operator, AdminAction::CancelDelay)?;
        self.decisions.cancel_delay(id, operator, reason, self.clock.now()).await.map_err(ServiceError::refusal)
    }

    /// Cancels an outstanding authorization as `operator`: an x402 payment's on chain (the
    /// wallet sends `cancelAuthorization`), an external wallet's in the ledger (the agent's
    /// payment would then be unexplained). Either way its budget is released.
    pub async fn cancel_authorization(
        &self,
        id: &str,
        operator: &str,
        reason: &str,
    ) -> ServiceResult<spendguard_store::AuthorizationRecord> {
        required_text("reason", reason, "cancelling an authorization needs a reason")?;
        self.permit(operator, AdminAction::CancelAuthorization)?;
        let d = self.decision_of(id).await?;
        if d.x402.is_some() {
            return self.executor.cancel_x402(id).await;
        }
        let why = format!("authorization cancelled by {operator}: {reason}");
        self.decisions.cancel(&d.agent, id, &why, self.clock.now()).await.map_err(ServiceError::refusal)?;
        self.executor
            .authorization(id)
            .await?
            .ok_or_else(|| ServiceError::Invalid(format!("decision {id} has no authorization")))
    }

    /// Freezes a scope as `operator`.
    pub async fn freeze(&self, scope: Scope, operator: &str, reason: &str) -> ServiceResult<FreezeOutcome> {
        required_text("reason", reason, "a freeze needs a reason")?;
        self.permit(operator, AdminAction::Freeze)?;
        let freeze = Freeze {
            scope,
            frozen_by: operator.to_string(),
            reason: reason.to_string(),
            frozen_at: self.clock.now(),
            evidence: None,
        };
        self.freezes.freeze(freeze).await.map_err(ServiceError::refusal)
    }

    /// Lifts a freeze as `operator`; `ack` must say why it is safe. A freeze the reconciler
    /// set (money left unexplained) needs the role `[roles] unfreeze_reconciler` names. False
    /// when the scope was not frozen.
    pub async fn unfreeze(&self, scope: Scope, operator: &str, ack: &str) -> ServiceResult<bool> {
        required_text("ack", ack, "unfreezing needs an acknowledgment saying why it is safe")?;
        let current = self.freezes.freezes().await?.into_iter().find(|f| f.scope == scope);
        let action = match &current {
            Some(f) if f.frozen_by == RECONCILER => AdminAction::UnfreezeReconciler,
            _ => AdminAction::Unfreeze,
        };
        self.permit(operator, action)?;
        self.freezes.unfreeze(scope, operator, ack, self.clock.now()).await.map_err(ServiceError::refusal)
    }

    /// Revokes an agent, freezes it and every wallet only it uses, and releases its queued and
    /// pending spends, in one step.
    pub async fn decommission(&self, agent: &str, operator: &str, reason: &str) -> ServiceResult<Decommissioned> {
        required_text("reason", reason, "a decommission needs a reason saying why")?;
        self.permit(operator, AdminAction::Decommission)?;
        if self.config.model.agent(agent).is_none() {
            return Err(ServiceError::Invalid(format!("no agent {agent:?} is configured")));
        }
        let scopes = scopes_for_decommission(&self.config.model, agent);
        self.freezes
            .decommission(agent, scopes, operator, reason, self.clock.now())
            .await
            .map_err(ServiceError::refusal)
    }

    /// Revokes every token of an agent: it can no longer authenticate. Returns how many were
    /// live.
    pub async fn revoke_agent(&self, agent: &str, operator: &str) -> ServiceResult<usize> {
        self.permit(operator, AdminAction::RevokeAgent)?;
        if self.config.model.agent(agent).is_none() {
            return Err(ServiceError::Invalid(format!("no agent {agent:?} is configured")));
        }
        Ok(self.credentials.revoke_agent(agent, operator, self.clock.now()).await?)
    }
}
