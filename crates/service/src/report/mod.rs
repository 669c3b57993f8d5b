//! [`Reports`]: the reconciliation report of a period — what was spent (per org, department,
//! agent, wallet, chain and asset), how every outflow reconciled, every exception with its
//! evidence, spend per agent per day and each limit's utilisation — rendered as JSON, CSV,
//! Markdown or HTML ([`render`]), written on a schedule (`schedule.rs`); and the audit log's
//! reads.

mod render;
mod schedule;

use crate::clock::Clock;
use crate::error::ServiceResult;
use crate::limits::{percent_used, Limits};
use crate::overview::{usd_of, AuthorizationItem};
use crate::usd::Usd;
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use spendguard_config::Config;
use spendguard_core::reconcile::Class;
use spendguard_core::{Balances, Decision, EventKind, SpendStatus};
use spendguard_store::audit::{Anchor, AuditCheck, AuditEntry, AuditFilter};
use spendguard_store::{
    AuditStore, AuthorizationKind, AuthorizationState, AuthorizationStore, DecisionRecord, ReportStore,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

pub use render::{csv_field, render, ReportFormat};

/// Spend under one heading.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Total {
    /// Heading: an id, or `chain:SYMBOL` for assets.
    pub key: String,
    /// Spends counted.
    pub count: u64,
    /// Their USD value.
    pub usd: Usd,
    /// For assets: the amount in asset units.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<Decimal>,
}

/// Totals by every heading the report breaks spend down by.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// The whole organisation.
    pub org: Total,
    /// Per department.
    pub departments: Vec<Total>,
    /// Per agent.
    pub agents: Vec<Total>,
    /// Per wallet.
    pub wallets: Vec<Total>,
    /// Per chain.
    pub chains: Vec<Total>,
    /// Per asset.
    pub assets: Vec<Total>,
}

/// A reconciliation class as a report counts it: the auditor's classes, plus spends missing on
/// chain and blocks that left the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportClass {
    /// Matches its decision.
    Matched,
    /// Matches, fee above the cap.
    FeeOverCap,
    /// The decision's transaction paid something else.
    Mismatch,
    /// No decision behind it.
    Unexplained,
    /// Broadcast but not seen on chain in time.
    Missing,
    /// Its block left the canonical chain.
    Reorged,
}

impl ReportClass {
    /// Every class, in report order.
    pub const ALL: [ReportClass; 6] = [
        ReportClass::Matched,
        ReportClass::FeeOverCap,
        ReportClass::Mismatch,
        ReportClass::Unexplained,
        ReportClass::Missing,
        ReportClass::Reorged,
    ];

    /// As written in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ReportClass::Matched => "matched",
            ReportClass::FeeOverCap => "fee_over_cap",
            ReportClass::Mismatch => "mismatch",
            ReportClass::Unexplained => "unexplained",
            ReportClass::Missing => "missing",
            ReportClass::Reorged => "reorged",
        }
    }

    fn of(class: Class) -> ReportClass {
        match class {
            Class::Matched => ReportClass::Matched,
            Class::FeeOverCap => ReportClass::FeeOverCap,
            Class::Mismatch => ReportClass::Mismatch,
            Class::Unexplained => ReportClass::Unexplained,
        }
    }
}

impl std::fmt::Display for ReportClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One reconciliation class in the period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClassSummary {
    /// The class.
    pub class: ReportClass,
    /// How many.
    pub count: u64,
    /// Amounts per asset (`chain:SYMBOL`, or the token address of an unknown token).
    pub amounts: Vec<(String, Decimal)>,
    /// USD value of what is priced.
    pub usd: Usd,
}

/// Something an auditor must look at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Exception {
    /// Class.
    pub class: ReportClass,
    /// When it was seen.
    pub at: Option<DateTime<Utc>>,
    /// Chain.
    pub chain: Option<String>,
    /// Wallet.
    pub wallet: Option<String>,
    /// Transaction.
    pub tx_hash: Option<String>,
    /// The decision concerned.
    pub decision_id: Option<String>,
    /// The evidence, in words.
    pub evidence: String,
}

/// Spend of one agent on one day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DailySpend {
    /// Day (server timezone).
    pub day: NaiveDate,
    /// Agent.
    pub agent: String,
    /// USD.
    pub usd: Usd,
}

/// One limit's utilisation by one agent from one wallet, at the end of the period; its
/// numbers written in the limit's unit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LimitUtilisation {
    /// Agent.
    pub agent: String,
    /// Wallet.
    pub wallet: String,
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
    /// Limit.
    pub limit: String,
    /// Used plus reserved.
    pub used: String,
    /// Percent (for the chart).
    pub percent: f64,
}

/// The report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Organisation.
    pub org: String,
    /// Period start (inclusive).
    pub from: DateTime<Utc>,
    /// Period end (exclusive).
    pub to: DateTime<Utc>,
    /// When it was made.
    pub generated_at: DateTime<Utc>,
    /// The audit log's head when it was made: sequence and hash, an anchor for `audit verify`.
    pub audit_head: Option<(i64, String)>,
    /// Decisions made in the period, by verdict.
    pub decisions: Vec<(Decision, u64)>,
    /// Spend (executed or being executed) of decisions made in the period.
    pub totals: Totals,
    /// Every reconciliation class, with counts and amounts.
    pub reconciliation: Vec<ClassSummary>,
    /// Every exception with its evidence.
    pub exceptions: Vec<Exception>,
    /// Money that came into registered wallets in the period, with balances around it.
    pub inflows: Vec<spendguard_store::RecordedInflow>,
    /// Authorizations issued in the period (external wallets' spends and x402 payments), and
    /// what became of them.
    pub authorizations: Vec<AuthorizationItem>,
    /// x402 payments signed in the period, settled or still outstanding, per resource host.
    pub x402_hosts: Vec<Total>,
    /// Spend per agent per day.
    pub daily: Vec<DailySpend>,
    /// Utilisation of each limit.
    pub limits: Vec<LimitUtilisation>,
}

/// Statuses whose money has left or is leaving (an external wallet's authorization: may leave
/// any moment).
fn spent(s: SpendStatus) -> bool {
    matches!(
        s,
        SpendStatus::Reserved
            | SpendStatus::Signed
            | SpendStatus::Broadcast
            | SpendStatus::Confirmed
            | SpendStatus::Authorized
    )
}

#[derive(Default)]
struct Sum {
    count: u64,
    usd: Decimal,
    amount: Decimal,
}

fn totals_of(map: BTreeMap<String, Sum>, with_amount: bool) -> Vec<Total> {
    map.into_iter()
        .map(|(key, s)| Total {
            key,
            count: s.count,
            usd: Usd(s.usd),
            amount: with_amount.then(|| s.amount.normalize()),
        })
        .collect()
}

#[derive(Default)]
struct ClassSum {
    count: u64,
    amounts: BTreeMap<String, Decimal>,
    usd: Decimal,
}

/// Reports and the audit log's reads.
pub struct Reports {
    pub(crate) config: Arc<Config>,
    pub(crate) store: Arc<dyn ReportStore>,
    pub(crate) audit: Arc<dyn AuditStore>,
    pub(crate) authorizations: Arc<dyn AuthorizationStore>,
    pub(crate) prices: Arc<crate::prices::PriceBook>,
    pub(crate) limits: Limits,
    pub(crate) clock: Arc<dyn Clock>,
}

impl Reports {
    /// Checks the audit chain; with `anchor`, also that it still passes through it.
    pub async fn verify_audit(&self, anchor: Option<Anchor>) -> ServiceResult<AuditCheck> {
        Ok(self.audit.verify_audit(anchor).await?)
    }

    /// Audit entries matching `filter`.
    pub async fn audit_entries(&self, filter: AuditFilter) -> ServiceResult<Vec<AuditEntry>> {
        Ok(self.audit.audit_entries(filter).await?)
    }

    /// The reconciliation report of `[from, to)`.
    pub async fn report(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> ServiceResult<Report> {
        let model = &self.config.model;
        let tz = self.config.server.timezone;
        let decisions = self.store.decisions_between(from, to).await?;
        let audit_head = self.audit.audit_head().await?;

        let mut verdicts: BTreeMap<&'static str, (Decision, u64)> = BTreeMap::new();
        let (mut org, mut departments, mut agents, mut wallets, mut chains, mut assets) = (
            Sum::default(),
            BTreeMap::<String, Sum>::new(),
            BTreeMap::<String, Sum>::new(),
            BTreeMap::<String, Sum>::new(),
            BTreeMap::<String, Sum>::new(),
            BTreeMap::<String, Sum>::new(),
        );
        let mut daily: BTreeMap<(NaiveDate, String), Decimal> = BTreeMap::new();
        for d in &decisions {
            verdicts.entry(d.decision.as_str()).or_insert((d.decision, 0)).1 += 1;
            if !spent(d.status) {
                continue;
            }
            let usd = usd_of(d)?;
            let add = |s: &mut Sum| {
                s.count += 1;
                s.usd += usd;
                s.amount += d.amount;
            };
            add(&mut org);
            add(departments.entry(d.department.clone().unwrap_or_else(|| "(none)".into())).or_default());
            add(agents.entry(d.agent.clone()).or_default());
            add(wallets.entry(d.wallet.clone()).or_default());
            add(chains.entry(d.chain.clone().unwrap_or_default()).or_default());
            add(assets.entry(d.asset.clone().unwrap_or_default()).or_default());
            *daily.entry((d.created_at.with_timezone(&tz).date_naive(), d.agent.clone())).or_default() += usd;
        }

        // Reconciliation: outflows seen in the period, missing spends and reorgs reported in it.
        // Outflows are valued at today's usable price (decisions at their own, above).
        self.prices.read_unread().await;
        let now = self.clock.now();
        let price = |asset: &str| {
            let asset = asset.split_once(':').and_then(|(c, s)| model.asset(c, s))?;
            self.prices.quote(asset, now).ok().map(|q| q.price)
        };
        let mut classes: BTreeMap<ReportClass, ClassSum> =
            ReportClass::ALL.iter().map(|c| (*c, ClassSum::default())).collect();
        let mut exceptions = vec![];
        for o in self.store.outflows_between(from, to).await? {
            let asset = o.asset.clone().or_else(|| o.token.clone()).unwrap_or_else(|| "?".into());
            let class = ReportClass::of(o.class);
            let entry = classes.entry(class).or_default();
            entry.count += 1;
            // A delegation moves nothing itself: counted, with no amount.
            if o.kind != spendguard_core::reconcile::OutflowKind::Delegation {
                *entry.amounts.entry(asset.clone()).or_default() += o.amount;
            }
            if let Some(p) = o.asset.as_deref().and_then(price) {
                entry.usd += o.amount * p;
            }
            if o.class != Class::Matched {
                let to = o.recipient.as_deref().map(|r| format!(" to {r}")).unwrap_or_default();
                let what = if o.asset.is_none() && o.token.is_some() { " (unknown token)" } else { "" };
                exceptions.push(Exception {
                    class,
                    at: o.seen_at,
                    chain: Some(o.chain.clone()),
                    wallet: Some(o.wallet.clone()),
                    tx_hash: Some(o.tx_hash.clone()),
                    decision_id: o.decision_id.clone(),
                    evidence: format!(
                        "{} {} {}{what} left {} in block {} ({} #{}){to}",
                        o.kind,
                        o.amount.normalize(),
                        asset,
                        o.wallet,
                        o.block,
                        o.tx_hash,
                        o.index
                    ),
                });
            }
        }
        let events = self.store.events_between(&[EventKind::MissingOutflow, EventKind::Reorg], from, to).await?;
        let named: Vec<String> = events.iter().filter_map(|e| e.decision_id.clone()).collect();
        let by_id: HashMap<String, DecisionRecord> =
            self.store.decisions_by_id(&named).await?.into_iter().map(|d| (d.id.clone(), d)).collect();
        for e in &events {
            let class = if e.kind == EventKind::Reorg { ReportClass::Reorged } else { ReportClass::Missing };
            let entry = classes.entry(class).or_default();
            entry.count += 1;
            let d = e.decision_id.as_deref().and_then(|id| by_id.get(id));
            if let Some(d) = d {
                *entry.amounts.entry(d.asset.clone().unwrap_or_default()).or_default() += d.amount;
                entry.usd += d.usd.unwrap_or_default();
            }
            exceptions.push(Exception {
                class,
                at: Some(e.at),
                chain: d.and_then(|d| d.chain.clone()),
                wallet: d.map(|d| d.wallet.clone()),
                tx_hash: d.and_then(|d| d.tx_hash.clone()),
                decision_id: e.decision_id.clone(),
                evidence: e.detail.clone(),
            });
        }
        let reconciliation = classes
            .into_iter()
            .map(|(class, s)| ClassSummary {
                class,
                count: s.count,
                amounts: s.amounts.into_iter().map(|(a, v)| (a, v.normalize())).collect(),
                usd: Usd(s.usd.round_dp(2)),
            })
            .collect();

        let authorizations: Vec<AuthorizationItem> = self
            .authorizations
            .authorizations_between(from, to)
            .await?
            .into_iter()
            .map(AuthorizationItem::of)
            .collect();
        let mut hosts: BTreeMap<String, Sum> = BTreeMap::new();
        for a in authorizations.iter().filter(|a| {
            a.kind == AuthorizationKind::X402
                && matches!(a.state, AuthorizationState::Open | AuthorizationState::Consumed)
        }) {
            let host = a.resource.as_deref().and_then(crate::x402::url_host).unwrap_or_else(|| "(unknown)".into());
            let sum = hosts.entry(host).or_default();
            sum.count += 1;
            sum.usd += a.usd.unwrap_or_default();
        }

        Ok(Report {
            org: model.org_id.clone(),
            from,
            to,
            generated_at: self.clock.now(),
            audit_head,
            decisions: verdicts.into_values().collect(),
            totals: Totals {
                org: Total { key: model.org_id.clone(), count: org.count, usd: Usd(org.usd), amount: None },
                departments: totals_of(departments, false),
                agents: totals_of(agents, false),
                wallets: totals_of(wallets, false),
                chains: totals_of(chains, false),
                assets: totals_of(assets, true),
            },
            reconciliation,
            exceptions,
            inflows: self.store.inflows_between(from, to).await?,
            authorizations,
            x402_hosts: totals_of(hosts, false),
            daily: daily.into_iter().map(|((day, agent), usd)| DailySpend { day, agent, usd: Usd(usd) }).collect(),
            limits: self.utilisation().await?,
        })
    }

    /// Limits as they stand now (the ledger holds no history of headroom), once per agent and
    /// limit.
    async fn utilisation(&self) -> ServiceResult<Vec<LimitUtilisation>> {
        let model = &self.config.model;
        let mut limits: Vec<LimitUtilisation> = vec![];
        for a in &model.agents {
            for w in a.wallets.iter().filter_map(|w| model.wallet(w)) {
                for h in self.limits.headroom(model, &a.id, w, &Balances::default()).await? {
                    // A limit over the agent (or wider) is the same from each of its wallets.
                    let seen = limits.iter().any(|l| {
                        l.agent == a.id
                            && l.policy == h.labels.policy_id
                            && l.rule == h.labels.rule
                            && l.scope == h.labels.scope
                    });
                    if seen {
                        continue;
                    }
                    limits.push(LimitUtilisation {
                        agent: a.id.clone(),
                        wallet: w.id.clone(),
                        policy: h.labels.policy_id.clone(),
                        rule: h.labels.rule.clone(),
                        scope: h.labels.scope.clone(),
                        window: h.labels.window.clone(),
                        unit: h.labels.unit.clone(),
                        limit: h.fmt(h.limit),
                        used: h.fmt(h.used + h.reserved),
                        percent: percent_used(&h).try_into().unwrap_or(0.0),
                    });
                }
            }
        }
        // A balance-fraction limit has no number without a live balance: leave it out.
        limits.retain(|l| !l.limit.is_empty());
        Ok(limits)
    }
}
