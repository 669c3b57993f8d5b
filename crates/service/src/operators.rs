//! What treasury operators do and see: approvals, operator cancellations, decommissioning, the
//! status of every wallet, and the spend already committed to (exposures).

use crate::guard::{Guard, GuardError, GuardResult};
use chrono::{DateTime, TimeDelta, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use spendguard_core::model::Scope;
use spendguard_core::money::parse_decimal;
use spendguard_core::{Freeze, SpendStatus};
use spendguard_store::{DecisionRecord, Decommissioned, FreezeOutcome};

/// A decision as operators see it in listings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingItem {
    /// Decision id.
    pub decision_id: String,
    /// Agent.
    pub agent: String,
    /// Wallet.
    pub wallet: String,
    /// Amount and asset, e.g. `150 eth-local:USDC`.
    pub amount: String,
    /// Asset key.
    pub asset: Option<String>,
    /// USD value.
    pub usd: Option<String>,
    /// Recipient.
    pub recipient: String,
    /// Merchant, when known.
    pub merchant: Option<String>,
    /// Status.
    pub status: String,
    /// When it was requested.
    pub requested_at: DateTime<Utc>,
    /// When a queued spend executes.
    pub execute_after: Option<DateTime<Utc>>,
    /// When an approval request expires.
    pub approval_expires_at: Option<DateTime<Utc>>,
    /// Role that may approve it.
    pub approver_role: Option<String>,
    /// Hash of what it pays, bound when it was requested.
    pub intent_hash: Option<String>,
    /// Reason codes of the decision.
    pub reasons: Vec<String>,
}

impl PendingItem {
    /// The listing form of a stored decision.
    pub fn of(d: &DecisionRecord) -> PendingItem {
        PendingItem {
            decision_id: d.id.clone(),
            agent: d.agent.clone(),
            wallet: d.wallet.clone(),
            amount: d.amount.clone(),
            asset: d.asset.clone(),
            usd: d.usd.clone(),
            recipient: d.recipient.clone(),
            merchant: d.merchant.clone(),
            status: d.status.to_string(),
            requested_at: d.created_at,
            execute_after: d.execute_after,
            approval_expires_at: d.approval_expires_at,
            approver_role: d.approver_role.clone(),
            intent_hash: d.intent_hash.clone(),
            reasons: d.reasons.iter().map(|r| format!("{} {}", r.code, r.detail)).collect(),
        }
    }
}

/// Utilisation of one limit by one agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LimitUse {
    /// Policy.
    pub policy: String,
    /// Rule.
    pub rule: String,
    /// Whose spend it sums.
    pub scope: String,
    /// Window.
    pub window: String,
    /// Unit.
    pub unit: String,
    /// The limit.
    pub limit: String,
    /// Used plus reserved.
    pub used: String,
    /// Percent of the limit used or reserved, rounded to one decimal.
    pub percent: String,
}

/// One wallet in `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WalletStatus {
    /// Wallet.
    pub wallet: String,
    /// Chain.
    pub chain: String,
    /// Address.
    pub address: String,
    /// Live balances (`chain:SYMBOL` → amount).
    pub balances: Vec<(String, String)>,
    /// Set when the chain could not be read.
    pub balance_error: Option<String>,
    /// USD spent (executed or in flight) from it today, in the server's timezone.
    pub spent_today_usd: String,
    /// Is it frozen?
    pub frozen: bool,
    /// Each agent using it, with its utilisation of every limit that applies.
    pub agents: Vec<(String, Vec<LimitUse>)>,
}

/// The answer of `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// When.
    pub at: DateTime<Utc>,
    /// Every wallet.
    pub wallets: Vec<WalletStatus>,
    /// Approval requests waiting.
    pub pending_approvals: Vec<PendingItem>,
    /// DELAY spends waiting.
    pub queued_delays: Vec<PendingItem>,
    /// Frozen scopes.
    pub frozen: Vec<FrozenScope>,
}

/// A frozen scope: what, by whom, since when and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FrozenScope {
    /// `org`, `department:ID`, `agent:ID` or `wallet:ID`.
    pub scope: String,
    /// Operator, or `reconciler`.
    pub frozen_by: String,
    /// Since.
    pub since: DateTime<Utc>,
    /// Why.
    pub reason: String,
    /// The on-chain evidence, for freezes the reconciler tripped.
    pub evidence: Option<String>,
}

impl FrozenScope {
    /// The listing form of a freeze.
    pub fn of(f: &spendguard_core::Freeze) -> FrozenScope {
        FrozenScope {
            scope: f.scope.to_string(),
            frozen_by: f.frozen_by.clone(),
            since: f.frozen_at,
            reason: f.reason.clone(),
            evidence: f.evidence.clone(),
        }
    }
}

/// Spend already committed to within a horizon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Exposures {
    /// From.
    pub at: DateTime<Utc>,
    /// Until.
    pub until: DateTime<Utc>,
    /// USD of queued DELAY spends due within the horizon.
    pub queued_usd: String,
    /// USD of approval requests that could still be approved (they hold their reservation).
    pub pending_usd: String,
    /// USD of spends being executed (reserved, signed or broadcast, not yet confirmed).
    pub in_flight_usd: String,
    /// Everything above.
    pub total_usd: String,
    /// Totals per agent.
    pub per_agent: Vec<(String, String)>,
    /// Totals per wallet.
    pub per_wallet: Vec<(String, String)>,
    /// The decisions counted.
    pub items: Vec<PendingItem>,
}

/// How much of a limit is used or reserved, in percent to one decimal (0 for a zero limit).
pub(crate) fn percent_used(h: &spendguard_core::Headroom) -> Decimal {
    if h.limit > Decimal::ZERO {
        ((h.used + h.reserved) * Decimal::ONE_HUNDRED / h.limit).round_dp(1)
    } else {
        Decimal::ZERO
    }
}

fn usd_of(d: &DecisionRecord) -> Decimal {
    d.usd.as_deref().and_then(|u| parse_decimal(u).ok()).unwrap_or_default()
}

fn add_to(totals: &mut Vec<(String, Decimal)>, key: &str, v: Decimal) {
    match totals.iter_mut().find(|(k, _)| k == key) {
        Some((_, t)) => *t += v,
        None => totals.push((key.to_string(), v)),
    }
}

fn usd_text(v: Decimal) -> String {
    spendguard_core::money::fmt_usd(v)
}

impl Guard {
    /// The operator a live operator token belongs to.
    pub async fn authenticate_operator(&self, token: &str) -> GuardResult<Option<String>> {
        let hash = crate::tokens::hash_token(token);
        self.blocking(move |l| l.operator_for_token(&hash)).await
    }

    /// Approval requests waiting, oldest first.
    pub async fn pending_approvals(&self) -> GuardResult<Vec<DecisionRecord>> {
        self.blocking(|l| l.decisions_in(&[SpendStatus::PendingApproval])).await
    }

    /// Queued DELAY spends, oldest first.
    pub async fn queued_delays(&self) -> GuardResult<Vec<DecisionRecord>> {
        self.blocking(|l| l.decisions_in(&[SpendStatus::Queued])).await
    }

    /// Approves a pending request as `operator` and executes it at once: exactly the intent that
    /// was requested (its hash is checked again when it is signed).
    pub async fn approve(&self, id: &str, operator: &str, expected_hash: Option<&str>) -> GuardResult<DecisionRecord> {
        self.record_approval(id, operator, expected_hash).await?;
        self.execute(id).await
    }

    /// Records an approval without executing it (a process that cannot sign leaves that to the
    /// daemon, whose next pass executes approved spends at once).
    pub async fn record_approval(
        &self,
        id: &str,
        operator: &str,
        expected_hash: Option<&str>,
    ) -> GuardResult<DecisionRecord> {
        let now = self.clock.now();
        // An expired request is released first, so approving it is refused.
        self.blocking(move |l| l.expire_approvals(now)).await?;
        let (id, op, expected) = (id.to_string(), operator.to_string(), expected_hash.map(str::to_string));
        self.blocking(move |l| l.approve(&id, &op, expected.as_deref(), now)).await.map_err(permission)
    }

    /// Rejects a pending request as `operator`; its reservation is released.
    pub async fn reject(&self, id: &str, operator: &str, reason: &str) -> GuardResult<DecisionRecord> {
        let (id, op, reason, now) = (id.to_string(), operator.to_string(), reason.to_string(), self.clock.now());
        self.blocking(move |l| l.reject(&id, &op, &reason, now)).await.map_err(permission)
    }

    /// An operator cancels a queued DELAY spend.
    pub async fn cancel_delay(&self, id: &str, operator: &str, reason: &str) -> GuardResult<DecisionRecord> {
        let (id, op, reason, now) = (id.to_string(), operator.to_string(), reason.to_string(), self.clock.now());
        self.blocking(move |l| l.cancel_delay(&id, &op, &reason, now)).await.map_err(permission)
    }

    /// Revokes an agent and freezes it and every wallet only it uses, in one step.
    pub async fn decommission(&self, agent: &str, operator: &str, reason: &str) -> GuardResult<Decommissioned> {
        let (agent, op, reason, now) = (agent.to_string(), operator.to_string(), reason.to_string(), self.clock.now());
        self.blocking(move |l| l.decommission(&agent, &op, &reason, now)).await.map_err(permission)
    }

    /// One decision, as stored.
    pub async fn decision(&self, id: &str) -> GuardResult<Option<DecisionRecord>> {
        let id = id.to_string();
        self.blocking(move |l| l.decision(&id)).await
    }

    /// The frozen scopes, oldest first.
    pub async fn frozen(&self) -> GuardResult<Vec<FrozenScope>> {
        Ok(self.blocking(|l| l.freezes()).await?.iter().map(FrozenScope::of).collect())
    }

    /// Freezes a scope as `operator`.
    pub async fn freeze(&self, scope: Scope, operator: &str, reason: &str) -> GuardResult<FreezeOutcome> {
        if reason.trim().is_empty() {
            return Err(GuardError::Invalid("a freeze needs a reason".into()));
        }
        let freeze = Freeze {
            scope,
            frozen_by: operator.to_string(),
            reason: reason.to_string(),
            frozen_at: self.clock.now(),
            evidence: None,
        };
        self.blocking(move |l| l.freeze(freeze)).await.map_err(permission)
    }

    /// Lifts a freeze as `operator`; `ack` must say why it is safe. False when it was not frozen.
    pub async fn unfreeze(&self, scope: Scope, operator: &str, ack: &str) -> GuardResult<bool> {
        if ack.trim().is_empty() {
            return Err(GuardError::Invalid("unfreezing needs an acknowledgment saying why it is safe".into()));
        }
        let (op, ack, now) = (operator.to_string(), ack.to_string(), self.clock.now());
        self.blocking(move |l| l.unfreeze(scope, &op, &ack, now)).await.map_err(permission)
    }

    /// Every wallet's balances, today's spend and each agent's use of each limit; pending
    /// approvals, queued delays and freezes.
    pub async fn status(&self) -> GuardResult<Status> {
        let now = self.clock.now();
        let model = &self.config.model;
        let tz = self.config.server.timezone;
        let day_start =
            spendguard_core::time::Window::Calendar(spendguard_core::time::CalendarPeriod::Day).start(now, tz);
        let decisions = self.blocking(|l| l.decisions(None)).await?;
        let freezes = self.blocking(|l| l.freezes()).await?;
        let mut wallets = vec![];
        for w in &model.wallets {
            let spent: Decimal = decisions
                .iter()
                .filter(|d| d.wallet == w.id && d.created_at >= day_start && d.status.counts_as().is_some())
                .filter(|d| !matches!(d.status, SpendStatus::Queued | SpendStatus::PendingApproval))
                .map(usd_of)
                .sum();
            // The chain is read once per wallet; each agent's limits are dry runs against it.
            let (known, listed, balance_error) = self.read_balances(w).await;
            let mut agents = vec![];
            for a in model.agents_of_wallet(&w.id) {
                let uses = self
                    .limit_headroom(&a.id, w, known.clone())
                    .await?
                    .iter()
                    .map(|h| LimitUse {
                        policy: h.labels.policy_id.clone(),
                        rule: h.labels.rule.clone(),
                        scope: h.labels.scope.clone(),
                        window: h.labels.window.clone(),
                        unit: h.labels.unit.clone(),
                        limit: h.fmt(h.limit),
                        used: h.fmt(h.used + h.reserved),
                        percent: percent_used(h).normalize().to_string(),
                    })
                    .collect();
                agents.push((a.id.clone(), uses));
            }
            let balances = listed.into_iter().map(|b| (b.asset, b.amount)).collect();
            let frozen = freezes.iter().any(|f| f.scope == Scope::Wallet(w.id.clone()) || f.scope == Scope::Org);
            wallets.push(WalletStatus {
                wallet: w.id.clone(),
                chain: w.chain.clone(),
                address: w.address.clone(),
                balances,
                balance_error,
                spent_today_usd: usd_text(spent),
                frozen,
                agents,
            });
        }
        let of = |s: SpendStatus| decisions.iter().filter(|d| d.status == s).map(PendingItem::of).collect();
        Ok(Status {
            at: now,
            wallets,
            pending_approvals: of(SpendStatus::PendingApproval),
            queued_delays: of(SpendStatus::Queued),
            frozen: freezes.iter().map(FrozenScope::of).collect(),
        })
    }

    /// The spend already committed to over the next `horizon`: queued delays due by then,
    /// approval requests still open, and spends being executed.
    pub async fn exposures(&self, horizon: TimeDelta) -> GuardResult<Exposures> {
        let now = self.clock.now();
        let until = now + horizon;
        let open = self
            .blocking(|l| {
                l.decisions_in(&[
                    SpendStatus::Queued,
                    SpendStatus::PendingApproval,
                    SpendStatus::Reserved,
                    SpendStatus::Signed,
                    SpendStatus::Broadcast,
                ])
            })
            .await?;
        let (mut queued, mut pending, mut in_flight) = (Decimal::ZERO, Decimal::ZERO, Decimal::ZERO);
        let (mut per_agent, mut per_wallet) = (vec![], vec![]);
        let mut items = vec![];
        for d in open {
            let usd = usd_of(&d);
            match d.status {
                SpendStatus::Queued if d.execute_after.is_none_or(|t| t <= until) => queued += usd,
                SpendStatus::PendingApproval if d.approval_expires_at.is_none_or(|t| t > now) => pending += usd,
                SpendStatus::Reserved | SpendStatus::Signed | SpendStatus::Broadcast => in_flight += usd,
                _ => continue,
            }
            add_to(&mut per_agent, &d.agent, usd);
            add_to(&mut per_wallet, &d.wallet, usd);
            items.push(PendingItem::of(&d));
        }
        let text = |v: Vec<(String, Decimal)>| v.into_iter().map(|(k, v)| (k, usd_text(v))).collect();
        Ok(Exposures {
            at: now,
            until,
            queued_usd: usd_text(queued),
            pending_usd: usd_text(pending),
            in_flight_usd: usd_text(in_flight),
            total_usd: usd_text(queued + pending + in_flight),
            per_agent: text(per_agent),
            per_wallet: text(per_wallet),
            items,
        })
    }
}

/// Operator refusals are permission errors, not ledger failures.
fn permission(e: GuardError) -> GuardError {
    match e {
        GuardError::Store(spendguard_store::StoreError::NotPermitted(why)) => GuardError::Forbidden(why),
        GuardError::Store(spendguard_store::StoreError::IntentChanged(id)) => GuardError::Forbidden(format!(
            "decision {id}: what it pays no longer matches the intent hash bound when it was requested"
        )),
        GuardError::Store(spendguard_store::StoreError::UnknownDecision(id)) => GuardError::UnknownDecision(id),
        GuardError::Store(spendguard_store::StoreError::UnknownScope { kind, id }) => {
            GuardError::Invalid(format!("no {kind} {id:?} is configured"))
        }
        other => other,
    }
}
