//! The reconciliation report of a period: what was spent (per org, department, agent, wallet,
//! chain and asset), how every outflow reconciled, every exception with its evidence, spend per
//! agent per day and each limit's utilisation — rendered as JSON, CSV, Markdown or HTML.

mod render;

use crate::guard::{Guard, GuardResult};
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use spendguard_core::money::{fmt_units, fmt_usd, parse_decimal};
use spendguard_core::{Balances, SpendStatus};
use std::collections::BTreeMap;

pub use render::{csv_field, render, ReportFormat};

/// Spend under one heading.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Total {
    /// Heading: an id, or `chain:SYMBOL` for assets.
    pub key: String,
    /// Spends counted.
    pub count: u64,
    /// Their USD value.
    pub usd: String,
    /// For assets: the amount in asset units.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<String>,
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

/// One reconciliation class in the period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClassSummary {
    /// `matched`, `fee_over_cap`, `mismatch`, `unexplained`, `missing` or `reorged`.
    pub class: String,
    /// How many.
    pub count: u64,
    /// Amounts per asset (`chain:SYMBOL`, or the token address of an unknown token).
    pub amounts: Vec<(String, String)>,
    /// USD value of what is priced.
    pub usd: String,
}

/// Something an auditor must look at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Exception {
    /// Class.
    pub class: String,
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
    pub usd: String,
}

/// One limit's utilisation by one agent from one wallet, at the end of the period.
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
    /// Percent.
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
    /// Decisions made in the period, by verdict (`allow`, `notify`, `delay`,
    /// `require_approval`, `deny`).
    pub decisions: Vec<(String, u64)>,
    /// Spend (executed or being executed) of decisions made in the period.
    pub totals: Totals,
    /// Every reconciliation class, with counts and amounts.
    pub reconciliation: Vec<ClassSummary>,
    /// Every exception with its evidence.
    pub exceptions: Vec<Exception>,
    /// Spend per agent per day.
    pub daily: Vec<DailySpend>,
    /// Utilisation of each limit.
    pub limits: Vec<LimitUtilisation>,
}

/// Statuses whose money has left or is leaving.
fn spent(s: SpendStatus) -> bool {
    matches!(s, SpendStatus::Reserved | SpendStatus::Signed | SpendStatus::Broadcast | SpendStatus::Confirmed)
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
            usd: fmt_usd(s.usd),
            amount: with_amount.then(|| fmt_units(s.amount)),
        })
        .collect()
}

const CLASSES: &[&str] = &["matched", "fee_over_cap", "mismatch", "unexplained", "missing", "reorged"];

impl Guard {
    /// The reconciliation report of `[from, to)`.
    pub async fn report(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> GuardResult<Report> {
        let model = &self.config.model;
        let tz = self.config.server.timezone;
        let decisions = self.blocking(|l| l.decisions(None)).await?;
        let outflows = self.blocking(|l| l.all_outflows()).await?;
        let events = self.blocking(|l| l.all_events()).await?;
        let audit_head = self.blocking(|l| l.audit_head()).await?;
        let in_period = |t: DateTime<Utc>| t >= from && t < to;

        let mut verdicts: BTreeMap<String, u64> = BTreeMap::new();
        let (mut org, mut departments, mut agents, mut wallets, mut chains, mut assets) = (
            Sum::default(),
            BTreeMap::<String, Sum>::new(),
            BTreeMap::<String, Sum>::new(),
            BTreeMap::<String, Sum>::new(),
            BTreeMap::<String, Sum>::new(),
            BTreeMap::<String, Sum>::new(),
        );
        let mut daily: BTreeMap<(NaiveDate, String), Decimal> = BTreeMap::new();
        for d in decisions.iter().filter(|d| in_period(d.created_at)) {
            *verdicts.entry(d.decision.as_str().to_string()).or_default() += 1;
            if !spent(d.status) {
                continue;
            }
            let usd = d.usd.as_deref().and_then(|u| parse_decimal(u).ok()).unwrap_or_default();
            let amount = parse_decimal(&d.amount).unwrap_or_default();
            let add = |s: &mut Sum| {
                s.count += 1;
                s.usd += usd;
                s.amount += amount;
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
        let price = |asset: &str| asset.split_once(':').and_then(|(c, s)| model.asset(c, s)).map(|a| a.price_usd);
        let mut classes: BTreeMap<&str, (u64, BTreeMap<String, Decimal>, Decimal)> =
            CLASSES.iter().map(|c| (*c, (0, BTreeMap::new(), Decimal::ZERO))).collect();
        let mut exceptions = vec![];
        for o in outflows.iter().filter(|o| o.seen_at.is_some_and(in_period)) {
            let asset = o.asset.clone().or_else(|| o.token.clone()).unwrap_or_else(|| "?".into());
            let entry = classes.entry(class_key(&o.class)).or_insert((0, BTreeMap::new(), Decimal::ZERO));
            entry.0 += 1;
            *entry.1.entry(asset.clone()).or_default() += o.amount;
            if let Some(p) = o.asset.as_deref().and_then(price) {
                entry.2 += o.amount * p;
            }
            if o.class != "matched" {
                let to = o.recipient.as_deref().map(|r| format!(" to {r}")).unwrap_or_default();
                let what = if o.asset.is_none() && o.token.is_some() { " (unknown token)" } else { "" };
                exceptions.push(Exception {
                    class: o.class.clone(),
                    at: o.seen_at,
                    chain: Some(o.chain.clone()),
                    wallet: Some(o.wallet.clone()),
                    tx_hash: Some(o.tx_hash.clone()),
                    decision_id: o.decision_id.clone(),
                    evidence: format!(
                        "{} {} {}{what} left {} in block {} ({} #{}){to}",
                        o.kind,
                        fmt_units(o.amount),
                        asset,
                        o.wallet,
                        o.block,
                        o.tx_hash,
                        o.index
                    ),
                });
            }
        }
        let by_id: std::collections::HashMap<&str, &spendguard_store::DecisionRecord> =
            decisions.iter().map(|d| (d.id.as_str(), d)).collect();
        for e in events.iter().filter(|e| in_period(e.at)) {
            let class = match e.kind.as_str() {
                "missing_outflow" => "missing",
                "reorg" => "reorged",
                _ => continue,
            };
            let entry = classes.entry(class).or_insert((0, BTreeMap::new(), Decimal::ZERO));
            entry.0 += 1;
            let d = e.decision_id.as_deref().and_then(|id| by_id.get(id).copied());
            if let Some(d) = d {
                *entry.1.entry(d.asset.clone().unwrap_or_default()).or_default() +=
                    parse_decimal(&d.amount).unwrap_or_default();
                entry.2 += d.usd.as_deref().and_then(|u| parse_decimal(u).ok()).unwrap_or_default();
            }
            exceptions.push(Exception {
                class: class.into(),
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
            .map(|(class, (count, amounts, usd))| ClassSummary {
                class: class.to_string(),
                count,
                amounts: amounts.into_iter().map(|(a, v)| (a, fmt_units(v))).collect(),
                usd: fmt_usd(usd.round_dp(2)),
            })
            .collect();

        // Limits as they stand now (the ledger holds no history of headroom).
        let mut limits = vec![];
        for a in &model.agents {
            for w in a.wallets.iter().filter_map(|w| model.wallet(w)) {
                for h in self.limit_headroom(&a.id, w, Balances::new()).await? {
                    // A limit over the agent (or wider) is the same from each of its wallets.
                    let seen = limits.iter().any(|l: &LimitUtilisation| {
                        l.agent == a.id
                            && l.policy == h.labels.policy_id
                            && l.rule == h.labels.rule
                            && l.scope == h.labels.scope
                    });
                    if seen {
                        continue;
                    }
                    let used = h.used + h.reserved;
                    let percent = crate::operators::percent_used(&h).try_into().unwrap_or(0.0);
                    limits.push(LimitUtilisation {
                        agent: a.id.clone(),
                        wallet: w.id.clone(),
                        policy: h.labels.policy_id.clone(),
                        rule: h.labels.rule.clone(),
                        scope: h.labels.scope.clone(),
                        window: h.labels.window.clone(),
                        unit: h.labels.unit.clone(),
                        limit: h.fmt(h.limit),
                        used: h.fmt(used),
                        percent,
                    });
                }
            }
        }
        // A balance-fraction limit has no number without a live balance: leave it out.
        limits.retain(|l| !l.limit.is_empty());

        Ok(Report {
            org: model.org_id.clone(),
            from,
            to,
            generated_at: self.clock.now(),
            audit_head,
            decisions: verdicts.into_iter().collect(),
            totals: Totals {
                org: Total { key: model.org_id.clone(), count: org.count, usd: fmt_usd(org.usd), amount: None },
                departments: totals_of(departments, false),
                agents: totals_of(agents, false),
                wallets: totals_of(wallets, false),
                chains: totals_of(chains, false),
                assets: totals_of(assets, true),
            },
            reconciliation,
            exceptions,
            daily: daily.into_iter().map(|((day, agent), usd)| DailySpend { day, agent, usd: fmt_usd(usd) }).collect(),
            limits,
        })
    }
}

/// The report's class for a stored outflow class.
fn class_key(class: &str) -> &'static str {
    CLASSES.iter().find(|c| **c == class).copied().unwrap_or("unexplained")
}

impl Guard {
    /// Writes the report of `[from, to)` into `dir` in each format, as
    /// `{name}-{to:%Y%m%dT%H%M%SZ}.{ext}`; each file is written whole (a temporary file renamed
    /// into place), so a reader never sees half a report.
    pub async fn write_report(
        &self,
        name: &str,
        formats: &[ReportFormat],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        dir: &std::path::Path,
    ) -> GuardResult<Vec<std::path::PathBuf>> {
        let report = self.report(from, to).await?;
        let io = |e: std::io::Error, what: &std::path::Path| {
            crate::guard::GuardError::Invalid(format!("writing the report {}: {e}", what.display()))
        };
        std::fs::create_dir_all(dir).map_err(|e| io(e, dir))?;
        let mut written = vec![];
        for format in formats {
            let path = dir.join(format!("{name}-{}.{}", to.format("%Y%m%dT%H%M%SZ"), format.extension()));
            let tmp = path.with_extension(format!("{}.tmp", format.extension()));
            std::fs::write(&tmp, render(&report, *format)).map_err(|e| io(e, &tmp))?;
            std::fs::rename(&tmp, &path).map_err(|e| io(e, &path))?;
            written.push(path);
        }
        Ok(written)
    }

    /// Runs every `[[report]]` on its cron schedule (in the server's timezone) until `shutdown`:
    /// each run reports the period since the schedule's previous run and writes to `reports_dir`.
    pub async fn run_reports(self: std::sync::Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let tz = self.config.server.timezone;
        let mut last_run: Option<DateTime<Utc>> = None;
        loop {
            // Never before the last run: a sleep that wakes a hair early must not run it twice.
            let now = last_run.map_or(self.clock.now(), |l| l.max(self.clock.now()));
            // The next run of each report, and the one after it (their gap is the period).
            let next = self
                .config
                .reports
                .iter()
                .filter_map(|r| {
                    let mut upcoming = r.schedule.after(&now.with_timezone(&tz));
                    let at = upcoming.next()?.with_timezone(&Utc);
                    let after = upcoming.next()?.with_timezone(&Utc);
                    Some((at, after - at, r))
                })
                .min_by_key(|(at, _, _)| *at);
            let Some((at, period, report)) = next else { return };
            let wait = (at - now).to_std().unwrap_or_default();
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(wait) => {}
            }
            last_run = Some(at);
            let formats: Vec<ReportFormat> = report.formats.iter().filter_map(|f| ReportFormat::parse(f)).collect();
            match self.write_report(&report.id, &formats, at - period, at, &self.config.server.reports_dir).await {
                Ok(paths) => tracing::info!(report = %report.id, files = paths.len(), "scheduled report written"),
                Err(e) => tracing::error!(report = %report.id, error = %e, "scheduled report failed"),
            }
        }
    }
}
