//! [`Overview`]: what operators see at a glance — every wallet's balances, today's spend and
//! each agent's use of each limit, pending approvals, queued delays and freezes (`status`);
//! and the spend already committed to over a horizon (`exposures`).

use crate::chains::Chains;
use crate::clock::Clock;
use crate::error::ServiceResult;
use crate::limits::{percent_used, Limits};
use crate::operators::FrozenScope;
use crate::usd::Usd;
use chrono::{DateTime, TimeDelta, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use spendguard_config::Config;
use spendguard_core::model::Scope;
use spendguard_core::time::{CalendarPeriod, Window};
use spendguard_core::SpendStatus;
use spendguard_store::{DecisionRecord, DecisionStore, FreezeStore};
use std::sync::Arc;

/// A decision as operators see it in listings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingItem {
    /// Decision id.
    pub decision_id: String,
    /// Agent.
    pub agent: String,
    /// Wallet.
    pub wallet: String,
    /// Amount in asset units.
    pub amount: Decimal,
    /// Asset key.
    pub asset: Option<String>,
    /// USD value.
    pub usd: Option<Decimal>,
    /// Recipient.
    pub recipient: String,
    /// Merchant, when known.
    pub merchant: Option<String>,
    /// Status.
    pub status: SpendStatus,
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
    /// x402 payment: the resource it buys (URL) and the server's description of it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// See `resource`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_description: Option<String>,
}

impl PendingItem {
    /// The listing form of a stored decision.
    pub fn of(d: &DecisionRecord) -> PendingItem {
        PendingItem {
            decision_id: d.id.clone(),
            agent: d.agent.clone(),
            wallet: d.wallet.clone(),
            amount: d.amount,
            asset: d.asset.clone(),
            usd: d.usd,
            recipient: d.recipient.clone(),
            merchant: d.merchant.clone(),
            status: d.status,
            requested_at: d.created_at,
            execute_after: d.execute_after,
            approval_expires_at: d.approval_expires_at,
            approver_role: d.approver_role.clone(),
            intent_hash: d.intent_hash.clone(),
            reasons: d.reasons.iter().map(|r| format!("{} {}", r.code, r.detail)).collect(),
            resource: d.x402.as_ref().and_then(|x| x.url()).map(str::to_string),
            resource_description: d.x402.as_ref().and_then(|x| x.description()).map(str::to_string),
        }
    }
}

/// Utilisation of one limit by one agent, its numbers written in the limit's unit.
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
    pub percent: Decimal,
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
    pub balances: Vec<(String, Decimal)>,
    /// Set when the chain could not be read.
    pub balance_error: Option<String>,
    /// USD spent (executed or in flight) from it today, in the server's timezone.
    pub spent_today_usd: Usd,
    /// Is it frozen?
    pub frozen: bool,
    /// Each agent using it, with its utilisation of every limit that applies.
    pub agents: Vec<(String, Vec<LimitUse>)>,
    /// The latest money that came into it (up to five), newest last.
    pub recent_inflows: Vec<spendguard_store::RecordedInflow>,
    /// `spendguard` (it signs) or `external` (the agent pays after an authorization).
    pub custody: &'static str,
    /// USD of its open authorizations: what the agent may still pay from it.
    pub authorized_usd: Usd,
    /// Balance conservation: the newest checkpoint of each asset, up to which its balance on
    /// chain and the ledger's outflows and inflows were held against each other.
    pub conserved: Vec<spendguard_store::BalanceCheckpoint>,
}

/// An authorization of an external wallet's spend, as operators see it in `status` (open ones)
/// and reports (all issued in the period) — without its token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuthorizationItem {
    /// Decision id.
    pub decision_id: String,
    /// Agent.
    pub agent: String,
    /// Wallet.
    pub wallet: String,
    /// Asset key.
    pub asset: String,
    /// Amount in asset units.
    pub amount: Decimal,
    /// USD value.
    pub usd: Option<Decimal>,
    /// Recipient.
    pub recipient: String,
    /// Issued.
    pub issued_at: DateTime<Utc>,
    /// Pay before this.
    pub expires_at: DateTime<Utc>,
    /// Open (exposure: the agent may still pay it), consumed, expired or revoked.
    pub state: spendguard_store::AuthorizationState,
    /// The transaction that paid it, or what expired or revoked it.
    pub ended_by: Option<String>,
    /// `external` (the agent pays from its own wallet) or `x402` (a facilitator settles it).
    pub kind: spendguard_store::AuthorizationKind,
    /// x402: the resource it pays for (URL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
}

impl AuthorizationItem {
    /// The listing form of a stored authorization.
    pub fn of(a: spendguard_store::AuthorizationRecord) -> AuthorizationItem {
        AuthorizationItem {
            decision_id: a.decision_id,
            agent: a.agent,
            wallet: a.wallet,
            asset: a.asset,
            amount: a.amount,
            usd: a.usd,
            recipient: a.recipient,
            issued_at: a.issued_at,
            expires_at: a.expires_at,
            state: a.state,
            ended_by: a.ended_by,
            kind: a.kind,
            resource: a.resource,
        }
    }
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
    /// Every asset's price: source, value, publish time, age, and whether decisions may use it.
    pub prices: Vec<crate::prices::PriceState>,
    /// External wallets' authorizations waiting for the agent's payment, oldest first.
    pub open_authorizations: Vec<AuthorizationItem>,
    /// Who watches each chain: the holder of its lease (of several daemons on one ledger, one).
    pub watchers: Vec<WatcherLease>,
}

/// Who watches a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WatcherLease {
    /// Chain id.
    pub chain: String,
    /// The process holding its lease (host and listen address), if any ever took it.
    pub holder: Option<String>,
    /// When the lease runs out unless renewed.
    pub expires: Option<DateTime<Utc>>,
    /// Whether the lease is running now: false when its holder stopped renewing it (dead, or
    /// no process watches), until another takes it.
    pub live: bool,
}

/// Spend already committed to within a horizon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Exposures {
    /// From.
    pub at: DateTime<Utc>,
    /// Until.
    pub until: DateTime<Utc>,
    /// USD of queued DELAY spends due within the horizon.
    pub queued_usd: Usd,
    /// USD of approval requests that could still be approved (they hold their reservation).
    pub pending_usd: Usd,
    /// USD of spends being executed (reserved, signed or broadcast, not yet confirmed).
    pub in_flight_usd: Usd,
    /// USD of external wallets' open authorizations: the agents may pay them any moment.
    pub authorized_usd: Usd,
    /// Everything above.
    pub total_usd: Usd,
    /// Totals per agent.
    pub per_agent: Vec<(String, Usd)>,
    /// Totals per wallet.
    pub per_wallet: Vec<(String, Usd)>,
    /// The decisions counted.
    pub items: Vec<PendingItem>,
}

/// The USD value of a decision that holds budget; a row without one is corrupt, never zero.
pub(crate) fn usd_of(d: &DecisionRecord) -> ServiceResult<Decimal> {
    d.usd.ok_or_else(|| {
        spendguard_store::StoreError::Corrupt {
            table: "decision",
            row: d.id.clone(),
            detail: format!("usd: none, though it is {}", d.status),
        }
        .into()
    })
}

fn add_to(totals: &mut Vec<(String, Usd)>, key: &str, v: Decimal) {
    match totals.iter_mut().find(|(k, _)| k == key) {
        Some((_, t)) => *t += v,
        None => totals.push((key.to_string(), Usd(v))),
    }
}

/// The operators' read views.
pub struct Overview {
    pub(crate) config: Arc<Config>,
    pub(crate) decisions: Arc<dyn DecisionStore>,
    pub(crate) freezes: Arc<dyn FreezeStore>,
    pub(crate) inflows: Arc<dyn spendguard_store::OutflowStore>,
    pub(crate) authorizations: Arc<dyn spendguard_store::AuthorizationStore>,
    pub(crate) leases: Arc<dyn spendguard_store::LeaseStore>,
    pub(crate) chains: Chains,
    pub(crate) limits: Limits,
    pub(crate) prices: Arc<crate::prices::PriceBook>,
    pub(crate) clock: Arc<dyn Clock>,
}

impl Overview {
    /// Every wallet's balances, today's spend and each agent's use of each limit; pending
    /// approvals, queued delays and freezes.
    pub async fn status(&self) -> ServiceResult<Status> {
        let now = self.clock.now();
        let model = &self.config.model;
        let day_start = Window::Calendar(CalendarPeriod::Day).start(now, self.config.server.timezone);
        let decisions = self.decisions.decisions(None).await?;
        let freezes = self.freezes.freezes().await?;
        let open = self.authorizations.open_authorizations().await?;
        let mut wallets = vec![];
        for w in &model.wallets {
            let mut spent = Decimal::ZERO;
            for d in decisions
                .iter()
                .filter(|d| d.wallet == w.id && d.created_at >= day_start && d.status.counts_as().is_some())
                .filter(|d| !matches!(d.status, SpendStatus::Queued | SpendStatus::PendingApproval))
            {
                spent += usd_of(d)?;
            }
            // The chain is read once per wallet; each agent's limits are dry runs against it.
            let read = self.chains.read_wallet(model, w).await;
            let mut agents = vec![];
            for a in model.agents_of_wallet(&w.id) {
                let uses = self
                    .limits
                    .headroom(model, &a.id, w, &read.known)
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
                        percent: percent_used(h).normalize(),
                    })
                    .collect();
                agents.push((a.id.clone(), uses));
            }
            let frozen = freezes.iter().any(|f| f.scope == Scope::Wallet(w.id.clone()) || f.scope == Scope::Org);
            wallets.push(WalletStatus {
                wallet: w.id.clone(),
                chain: w.chain.clone(),
                address: w.address.clone(),
                balances: read.listed.into_iter().map(|b| (b.asset, b.amount)).collect(),
                balance_error: read.error,
                spent_today_usd: Usd(spent),
                frozen,
                agents,
                recent_inflows: self.inflows.recent_inflows(&w.id, 5).await?,
                custody: if w.is_external() { "external" } else { "spendguard" },
                authorized_usd: Usd(open.iter().filter(|a| a.wallet == w.id).filter_map(|a| a.usd).sum()),
                conserved: self.inflows.balance_checkpoints(&w.id).await?,
            });
        }
        let of = |s: SpendStatus| decisions.iter().filter(|d| d.status == s).map(PendingItem::of).collect();
        let mut watchers = vec![];
        for chain in &self.config.chains {
            let lease = self.leases.lease(&format!("watch:{}", chain.id)).await?;
            watchers.push(WatcherLease {
                chain: chain.id.clone(),
                live: lease.as_ref().is_some_and(|l| l.expires > now),
                holder: lease.as_ref().map(|l| l.holder.clone()),
                expires: lease.map(|l| l.expires),
            });
        }
        Ok(Status {
            at: now,
            wallets,
            pending_approvals: of(SpendStatus::PendingApproval),
            queued_delays: of(SpendStatus::Queued),
            frozen: freezes.iter().map(FrozenScope::of).collect(),
            prices: {
                self.prices.read_unread().await;
                self.prices.states(now)
            },
            open_authorizations: open.into_iter().map(AuthorizationItem::of).collect(),
            watchers,
        })
    }

    /// Every open authorization (external wallets' and x402 payments'), oldest first.
    pub async fn open_authorizations(&self) -> ServiceResult<Vec<AuthorizationItem>> {
        Ok(self.authorizations.open_authorizations().await?.into_iter().map(AuthorizationItem::of).collect())
    }

    /// The spend already committed to over the next `horizon`: queued delays due by then,
    /// approval requests still open, spends being executed, and external wallets' open
    /// authorizations.
    pub async fn exposures(&self, horizon: TimeDelta) -> ServiceResult<Exposures> {
        let now = self.clock.now();
        let until = now + horizon;
        let open = self
            .decisions
            .decisions_in(&[
                SpendStatus::Queued,
                SpendStatus::PendingApproval,
                SpendStatus::Reserved,
                SpendStatus::Signed,
                SpendStatus::Broadcast,
                SpendStatus::Authorized,
            ])
            .await?;
        let (mut queued, mut pending, mut in_flight, mut authorized) =
            (Usd::default(), Usd::default(), Usd::default(), Usd::default());
        let (mut per_agent, mut per_wallet) = (vec![], vec![]);
        let mut items = vec![];
        for d in open {
            let usd = usd_of(&d)?;
            match d.status {
                SpendStatus::Queued if d.execute_after.is_none_or(|t| t <= until) => queued += usd,
                SpendStatus::PendingApproval if d.approval_expires_at.is_none_or(|t| t > now) => pending += usd,
                SpendStatus::Reserved | SpendStatus::Signed | SpendStatus::Broadcast => in_flight += usd,
                SpendStatus::Authorized => authorized += usd,
                _ => continue,
            }
            add_to(&mut per_agent, &d.agent, usd);
            add_to(&mut per_wallet, &d.wallet, usd);
            items.push(PendingItem::of(&d));
        }
        Ok(Exposures {
            at: now,
            until,
            queued_usd: queued,
            pending_usd: pending,
            in_flight_usd: in_flight,
            authorized_usd: authorized,
            total_usd: Usd(queued.0 + pending.0 + in_flight.0 + authorized.0),
            per_agent,
            per_wallet,
            items,
        })
    }
}
