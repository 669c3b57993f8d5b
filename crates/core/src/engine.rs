//! The policy engine: one request in, one [`Evaluation`] out, no side effects.
//!
//! Order of checks: the wallet and the agent's right to it, then the kill switch (a frozen scope
//! stops everything else), then what is being sent (asset, amount, recipient), then every
//! applicable policy. All policies are checked even after a denial, so the agent learns every
//! reason at once; the strictest tier wins.

use crate::decision::{Decision, Evaluation, Headroom, HeadroomLabels, Reason, ReasonCode, ResolvedSpend, Tier};
use crate::fast_map::FastMap;
use crate::freeze::Freeze;
use crate::model::{
    asset_key, Agent, Asset, Limit, LimitPlan, Measure, Model, Policy, PolicyPlan, RecipientAction, RecipientMatch,
    Scope, Wallet,
};
use crate::money::{decimal_places, exceeds, fmt_units, fmt_usd, sum_exceeds};
use crate::price::{quote, Prices, Valuation};
use crate::time::{fmt_duration, Window};
use crate::usage::{ScopeUsage, UsageQuery, UsageSource, UsageSpec};
use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;
use std::borrow::Cow;

/// A spend an agent asks for. The agent comes from authentication, never from the request body.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpendRequest {
    /// Authenticated agent.
    pub agent: String,
    /// Wallet to spend from.
    pub wallet: String,
    /// Recipient address.
    pub to: String,
    /// Amount in asset units.
    pub amount: Decimal,
    /// `SYMBOL` or `chain:SYMBOL`; default: the wallet chain's native asset.
    pub asset: Option<String>,
    /// Operation, for policies with operation budgets.
    pub operation: Option<String>,
    /// When the request is evaluated.
    pub at: DateTime<Utc>,
    /// The host of the resource an x402 payment buys (`api.weather.example`), for recipient
    /// rules naming a `domain`; `None` for plain transfers.
    pub domain: Option<String>,
}

/// Live wallet balances by asset (`chain:SYMBOL`); an absent asset means "not known".
pub type Balances = FastMap<String, Decimal>;

/// What the engine reads besides the model and the request.
pub struct Context<'a> {
    /// Spend already made or reserved.
    pub usage: &'a dyn UsageSource,
    /// Frozen scopes.
    pub freezes: &'a [Freeze],
    /// Balances of the request's wallet.
    pub balances: &'a Balances,
    /// Latest readings of the live price feeds (static prices need none).
    pub prices: &'a Prices,
}

/// Evaluates one spend request against the organisation's model.
pub fn evaluate(model: &Model, req: &SpendRequest, ctx: &Context<'_>) -> Evaluation {
    let Some(wallet) = model.wallet(&req.wallet) else {
        return rejected(ReasonCode::UnknownWallet, "wallet", format!("no wallet {:?} is configured", req.wallet));
    };
    let Some(agent) = model.agent(&req.agent).filter(|a| a.wallets.contains(&wallet.id)) else {
        return rejected(
            ReasonCode::WalletNotAssigned,
            "wallet",
            format!("wallet {} is not assigned to agent {}", wallet.id, req.agent),
        );
    };
    let covering = |scope: &Scope| covers(scope, agent, wallet);
    let frozen: Vec<Reason> = ctx
        .freezes
        .iter()
        .filter(|f| covering(&f.scope))
        .map(|f| Reason {
            code: ReasonCode::KillSwitch,
            policy_id: None,
            rule: "kill_switch".into(),
            detail: f.describe(),
        })
        .collect();
    if !frozen.is_empty() {
        return Evaluation {
            decision: Decision::Deny,
            tier: Tier::Instant,
            reasons: frozen,
            headroom: vec![],
            valuation: None,
            spend: None,
        };
    }
    let (spend, asset_place) = match resolve(model, req, ctx, agent, wallet) {
        Ok(resolved) => resolved,
        Err(reason) => {
            return Evaluation {
                decision: Decision::Deny,
                tier: Tier::Instant,
                reasons: vec![reason],
                headroom: vec![],
                valuation: None,
                spend: None,
            }
        }
    };

    let mut run = Run {
        req,
        spend: &spend,
        ctx,
        wallet,
        asset_place,
        wallet_scope: None,
        window_starts: WindowStarts::default(),
        out: Outcome::default(),
    };
    // Room for every limit's headroom at once (each covering policy's limits, or its largest
    // operation's).
    let limits = model
        .policies
        .iter()
        .filter(|p| covering(&p.scope))
        .map(|p| p.operations.iter().map(|o| o.limits.len()).fold(p.limits.len(), usize::max))
        .sum();
    run.out.headroom.reserve_exact(limits);
    // Fail closed: a spend no limit bounds is denied, whatever else the policies say.
    if !model.policies.iter().any(|p| p.has_limit() && covering(&p.scope)) {
        run.out.deny(
            ReasonCode::NoPolicy,
            None,
            "policies",
            format!(
                "no policy with a limit (per_tx_usd or limits) covers agent {} spending from wallet {} \
                 (scopes {}); spendguard denies what no limit bounds",
                agent.id,
                wallet.id,
                covering_scopes(agent, wallet).iter().map(Scope::to_string).collect::<Vec<_>>().join(", ")
            ),
        );
    }
    // Money sent to the chain's zero address is burnt, and a payment to the paying wallet
    // itself moves nothing but fees: neither is ever what an agent meant.
    if spend.recipient == wallet.address || spend.chain_kind.is_zero_address(&spend.recipient) {
        let what = if spend.recipient == wallet.address { "the paying wallet itself" } else { "the zero address" };
        run.out.deny(
            ReasonCode::InvalidRecipient,
            None,
            "to",
            format!("recipient `to` {} is {what}; spendguard does not pay it", spend.recipient),
        );
    }
    if let Some(&balance) = ctx.balances.get(&spend.asset) {
        if exceeds(req.amount, balance) {
            run.out.deny(
                ReasonCode::InsufficientBalance,
                None,
                "balance",
                format!(
                    "wallet {} holds {} {}, less than {}",
                    wallet.id,
                    fmt_units(balance),
                    spend.asset,
                    fmt_units(req.amount)
                ),
            );
        }
    }
    for (policy, plan) in model.policies_with_plans().filter(|(p, _)| covering(&p.scope)) {
        run.check_policy(policy, plan);
    }
    let out = run.out;
    finish(out, spend, req)
}

fn rejected(code: ReasonCode, rule: &str, detail: String) -> Evaluation {
    Evaluation {
        decision: Decision::Deny,
        tier: Tier::Instant,
        reasons: vec![Reason { code, policy_id: None, rule: rule.into(), detail }],
        headroom: vec![],
        valuation: None,
        spend: None,
    }
}

/// Whether `scope` is one of the [`covering_scopes`] of a spend by `agent` from `wallet`
/// (without building them: this runs for every policy of every evaluation).
pub fn covers(scope: &Scope, agent: &Agent, wallet: &Wallet) -> bool {
    match scope {
        Scope::Org => true,
        Scope::Department(d) => agent.department.as_ref() == Some(d),
        Scope::Agent(a) => *a == agent.id,
        Scope::Wallet(w) => *w == wallet.id,
    }
}

/// The scopes whose policies and freezes cover a spend by `agent` from `wallet`.
pub fn covering_scopes(agent: &Agent, wallet: &Wallet) -> Vec<Scope> {
    let mut scopes = vec![Scope::Org];
    if let Some(d) = &agent.department {
        scopes.push(Scope::Department(d.clone()));
    }
    scopes.push(Scope::Agent(agent.id.clone()));
    scopes.push(Scope::Wallet(wallet.id.clone()));
    scopes
}

/// Works out asset, amount, recipient and value (with the asset's place in the model's assets),
/// or the reason the request is malformed.
fn resolve(
    model: &Model,
    req: &SpendRequest,
    ctx: &Context<'_>,
    agent: &Agent,
    wallet: &Wallet,
) -> Result<(ResolvedSpend, usize), Reason> {
    let bad = |code, rule: &str, detail: String| Reason { code, policy_id: None, rule: rule.into(), detail };
    let chain = model.chain(&wallet.chain).ok_or_else(|| {
        bad(ReasonCode::ChainNotAllowed, "chain", format!("chain {} is not configured", wallet.chain))
    })?;
    let asset_place = match req.asset.as_deref() {
        None => model.native_asset_place(&chain.id).ok_or_else(|| {
            bad(ReasonCode::AssetNotAllowed, "asset", format!("chain {} has no native asset configured", chain.id))
        })?,
        Some(name) => {
            let (asset_chain, symbol) = name.split_once(':').unwrap_or((chain.id.as_str(), name));
            if asset_chain != chain.id {
                return Err(bad(
                    ReasonCode::AssetNotAllowed,
                    "asset",
                    format!(
                        "asset {name} is on chain {asset_chain}, but wallet {} is on chain {}",
                        wallet.id, chain.id
                    ),
                ));
            }
            model.asset_place(asset_chain, symbol).ok_or_else(|| {
                bad(
                    ReasonCode::AssetNotAllowed,
                    "asset",
                    format!("no asset {symbol} is configured on chain {}", chain.id),
                )
            })?
        }
    };
    let asset: &Asset = &model.assets[asset_place];
    let key = asset.key();
    if req.amount <= Decimal::ZERO {
        return Err(bad(
            ReasonCode::InvalidAmount,
            "amount",
            format!("amount {} must be greater than zero", fmt_units(req.amount)),
        ));
    }
    let places = decimal_places(req.amount);
    if places > asset.decimals {
        return Err(bad(
            ReasonCode::InvalidAmount,
            "amount",
            format!("amount {} has {places} decimals; {key} allows {}", req.amount.normalize(), asset.decimals),
        ));
    }
    // No usable price is not denied here: each rule that needs the USD value names itself in
    // the denial, and `finish` denies a spend no such rule covered.
    let valuation = match quote(&asset.price, ctx.prices.get(&key), req.at) {
        Ok(q) => Ok(Valuation {
            usd: req.amount.checked_mul(q.price).ok_or_else(|| {
                bad(
                    ReasonCode::InvalidAmount,
                    "amount",
                    format!("amount {} is too large to value", fmt_units(req.amount)),
                )
            })?,
            price: q.price,
            source: q.source,
            as_of: q.as_of,
        }),
        Err(problem) => Err(problem),
    };
    let recipient = chain
        .kind
        .normalize_address(&req.to)
        .map_err(|e| bad(ReasonCode::InvalidRecipient, "to", format!("recipient `to`: {e} on chain {}", chain.id)))?;
    let merchant = model.merchant_at(&chain.id, &recipient);
    let spend = ResolvedSpend {
        chain: chain.id.clone(),
        chain_kind: chain.kind,
        asset: key,
        decimals: asset.decimals,
        token: asset.token.clone(),
        merchant: merchant.map(|m| m.id.clone()),
        category: merchant.and_then(|m| m.category.clone()),
        recipient,
        department: agent.department.clone(),
        valuation,
        delay: None,
        approval_ttl: None,
        approver_role: None,
    };
    Ok((spend, asset_place))
}

#[derive(Default)]
struct Outcome {
    denials: Vec<Reason>,
    tier: Option<(Tier, Vec<Reason>)>,
    headroom: Vec<Headroom>,
    delay: Option<TimeDelta>,
    approval_ttl: Option<TimeDelta>,
    approver_role: Option<String>,
    /// PRICE_UNAVAILABLE was given already (once per evaluation is enough).
    price_denied: bool,
}

impl Outcome {
    fn deny(&mut self, code: ReasonCode, policy: Option<&Policy>, rule: &str, detail: String) {
        self.denials.push(Reason { code, policy_id: policy.map(|p| p.id.clone()), rule: rule.into(), detail });
    }

    /// Records a tier a policy asks for; keeps the strictest, and the reasons of every policy
    /// asking for it.
    fn raise_tier(&mut self, tier: Tier, reason: Option<Reason>) {
        match &mut self.tier {
            Some((current, reasons)) if *current == tier => reasons.extend(reason),
            Some((current, _)) if *current > tier => {}
            _ => self.tier = Some((tier, reason.into_iter().collect())),
        }
    }
}

struct Run<'a> {
    req: &'a SpendRequest,
    spend: &'a ResolvedSpend,
    ctx: &'a Context<'a>,
    wallet: &'a Wallet,
    /// The spent asset's place in the model's assets ([`LimitPlan::asset`]).
    asset_place: usize,
    /// `wallet:<id>`, built when a balance-fraction limit first needs it.
    wallet_scope: Option<Scope>,
    window_starts: WindowStarts,
    out: Outcome,
}

/// The window starts one evaluation has worked out, by the model's window number
/// ([`LimitPlan::window`]), on the stack: policies name a handful of distinct windows, and past
/// sixteen a start is simply worked out again.
#[derive(Default)]
struct WindowStarts([Option<DateTime<Utc>>; 16]);

impl Run<'_> {
    /// The amount's USD value for a rule that needs it; without a usable price the spend is
    /// denied `PRICE_UNAVAILABLE` (fail closed) and the rule is skipped. `rule` is written out
    /// only for that denial.
    fn usd_for(&mut self, policy: &Policy, rule: impl std::fmt::Display) -> Option<Decimal> {
        match &self.spend.valuation {
            Ok(v) => Some(v.usd),
            Err(problem) => {
                if !self.out.price_denied {
                    self.out.price_denied = true;
                    let detail = format!(
                        "policy {} {rule} needs the USD value of {} {}, and there is no usable price: {problem}",
                        policy.id,
                        fmt_units(self.req.amount),
                        self.spend.asset
                    );
                    self.out.deny(ReasonCode::PriceUnavailable, Some(policy), &rule.to_string(), detail);
                }
                None
            }
        }
    }

    fn check_policy(&mut self, policy: &Policy, plan: &PolicyPlan) {
        let spend = self.spend;
        if let Some(chains) = &policy.chains {
            if !chains.contains(&spend.chain) {
                self.out.deny(
                    ReasonCode::ChainNotAllowed,
                    Some(policy),
                    "chains",
                    format!("chain {} is not among the allowed chains {}", spend.chain, chains.join(", ")),
                );
            }
        }
        if let Some(assets) = &policy.assets {
            if !assets.contains(&spend.asset) {
                self.out.deny(
                    ReasonCode::AssetNotAllowed,
                    Some(policy),
                    "assets",
                    format!("asset {} is not among the allowed assets {}", spend.asset, assets.join(", ")),
                );
            }
        }
        if let Some(schedule) = &policy.schedule {
            if !schedule.allows(self.req.at) {
                let local = self.req.at.with_timezone(&schedule.timezone);
                self.out.deny(
                    ReasonCode::OutsideSchedule,
                    Some(policy),
                    "schedule",
                    format!("{} is outside the schedule {}", local.format("%a %Y-%m-%d %H:%M %Z"), schedule.describe()),
                );
            }
        }

        // An operation's own per-tx cap and limits take the place of the policy's for its spends.
        let mut per_tx = policy.per_tx_usd.map(|cap| (cap, None));
        let mut limits: (&[Limit], &[LimitPlan], Option<&str>) = (&policy.limits, &plan.limits, None);
        if !policy.operations.is_empty() {
            let names = || policy.operations.iter().map(|o| o.name.as_str()).collect::<Vec<_>>().join(", ");
            match self.req.operation.as_deref() {
                None => self.out.deny(
                    ReasonCode::OperationNotAllowed,
                    Some(policy),
                    "operation",
                    format!("policy {} requires an operation: one of {}", policy.id, names()),
                ),
                Some(name) => match policy.operations.iter().position(|o| o.name == name) {
                    None => self.out.deny(
                        ReasonCode::OperationNotAllowed,
                        Some(policy),
                        "operation",
                        format!("operation {name:?} is not one of {}", names()),
                    ),
                    Some(i) => {
                        let op = &policy.operations[i];
                        if let Some(cap) = op.per_tx_usd {
                            per_tx = Some((cap, Some(op.name.as_str())));
                        }
                        if !op.limits.is_empty() {
                            limits = (&op.limits, &plan.operations[i], Some(op.name.as_str()));
                        }
                    }
                },
            }
        }
        if let Some((cap, operation)) = per_tx {
            let rule: Cow<'_, str> = match operation {
                None => Cow::Borrowed("per_tx_usd"),
                Some(o) => Cow::Owned(format!("operation[{o}].per_tx_usd")),
            };
            if let Some(usd) = self.usd_for(policy, &rule).filter(|usd| exceeds(*usd, cap)) {
                self.out.deny(
                    ReasonCode::PerTxLimit,
                    Some(policy),
                    &rule,
                    format!("{} USD exceeds the per-transaction cap of {} USD", fmt_usd(usd), fmt_usd(cap)),
                );
            }
        }
        let (limits, plans, operation) = limits;
        // The policy's scope is looked up once for all its limits.
        let spent = self.ctx.usage.of_scope(&policy.scope);
        for (limit, plan) in limits.iter().zip(plans) {
            self.check_limit(policy, plan, limit, operation, spent);
        }
        self.check_recipient(policy);
        self.apply_tiers(policy);
    }

    fn check_limit(
        &mut self,
        policy: &Policy,
        plan: &LimitPlan,
        limit: &Limit,
        operation: Option<&str>,
        spent: Option<&dyn ScopeUsage>,
    ) {
        let spend = self.spend;
        if plan.asset.is_some_and(|a| a != self.asset_place) {
            return;
        }
        let label = plan.labels;
        // Without a price the spend is denied, and the limit's headroom is still shown.
        let requested_usd = match limit.measure {
            Measure::Usd(_) => self.usd_for(policy, &label.rule).unwrap_or_default(),
            _ => Decimal::ZERO,
        };
        let since = self.window_start(plan, limit.window, policy.timezone);
        // A balance fraction is about one wallet's balance of one asset, whoever spends from it:
        // the wallet's usage of the spent asset (which the plan's spec names when the limit does).
        let balance_fraction = matches!(limit.measure, Measure::BalanceFraction(_));
        let wallet = self.wallet;
        let (scope, usage) = if balance_fraction {
            let spec = match limit.asset {
                Some(_) => plan.usage,
                None => UsageSpec::of(limit.window, policy.timezone, Some(&spend.asset), operation),
            };
            let scope = &*self.wallet_scope.get_or_insert_with(|| Scope::Wallet(wallet.id.clone()));
            (scope, self.ctx.usage.usage(scope, &UsageQuery { spec, since }))
        } else {
            let query = UsageQuery { spec: plan.usage, since };
            (&policy.scope, spent.map_or_else(Default::default, |s| s.usage(&query)))
        };
        let amount = self.req.amount;
        let (code, max, used, reserved, requested) = match limit.measure {
            Measure::Usd(max) => (ReasonCode::WindowLimit, max, usage.spent_usd, usage.reserved_usd, requested_usd),
            Measure::Amount(max) => (ReasonCode::WindowLimit, max, usage.spent_amount, usage.reserved_amount, amount),
            Measure::Count(max) => (
                ReasonCode::VelocityLimit,
                Decimal::from(max),
                Decimal::from(usage.spent_count),
                Decimal::from(usage.reserved_count),
                Decimal::ONE,
            ),
            Measure::BalanceFraction(fraction) => {
                let Some(&balance) = self.ctx.balances.get(&spend.asset) else {
                    self.out.deny(
                        ReasonCode::BalanceFractionLimit,
                        Some(policy),
                        &label.rule,
                        format!(
                            "the balance of {} in wallet {} is unknown, so {} of it cannot be checked",
                            spend.asset,
                            self.wallet.id,
                            fraction.normalize()
                        ),
                    );
                    return;
                };
                (
                    ReasonCode::BalanceFractionLimit,
                    fraction.saturating_mul(balance),
                    usage.spent_amount,
                    usage.reserved_amount,
                    amount,
                )
            }
        };
        let labels = if balance_fraction {
            HeadroomLabels {
                scope: Scope::Wallet(self.wallet.id.clone()).to_string(),
                unit: spend.asset.clone(),
                ..HeadroomLabels::clone(label)
            }
            .intern()
        } else {
            label
        };
        let exceeded = match limit.measure {
            // Counts add up as integers; only the headroom shows them as decimals.
            Measure::Count(max) => usage.spent_count.saturating_add(usage.reserved_count).saturating_add(1) > max,
            _ => sum_exceeds([used, reserved, requested], max),
        };
        if exceeded {
            let total = used.saturating_add(reserved).saturating_add(requested);
            let fmt = |d| labels.fmt(d);
            let unit_word = if labels.unit == "count" { "spends" } else { labels.unit.as_str() };
            let max_text = match limit.measure {
                Measure::BalanceFraction(f) => format!(
                    "{} × balance {} = {} {unit_word}",
                    f.normalize(),
                    fmt_units(self.ctx.balances.get(&spend.asset).copied().unwrap_or_default()),
                    fmt(max)
                ),
                _ => format!("{} {unit_word}", fmt(max)),
            };
            let detail = format!(
                "{} {} spend {} + reserved {} + {} = {} {unit_word} exceeds {max_text}",
                limit_subject(scope, operation),
                limit.window,
                fmt(used),
                fmt(reserved),
                fmt(requested),
                fmt(total),
            );
            self.out.deny(code, Some(policy), &label.rule, detail);
        }
        // Built where it is stored: a copy made earlier was the slowest step of the whole
        // evaluation (the 16-byte reads of the copy straddled the writes that built it).
        self.out.headroom.push(Headroom { limit: max, used, reserved, requested, labels });
    }

    /// Start of a limit's window at the request's instant, worked out once per distinct window
    /// (several policies name the same ones).
    fn window_start(&mut self, plan: &LimitPlan, window: Window, tz: Tz) -> DateTime<Utc> {
        let at = self.req.at;
        match self.window_starts.0.get_mut(plan.window) {
            Some(known) => *known.get_or_insert_with(|| window.start(at, tz)),
            None => window.start(at, tz),
        }
    }

    fn check_recipient(&mut self, policy: &Policy) {
        let Some(rules) = &policy.recipients else { return };
        let spend = self.spend;
        let matched = rules.rules.iter().enumerate().find(|(_, r)| match &r.matcher {
            RecipientMatch::Category(c) => spend.category.as_ref() == Some(c),
            RecipientMatch::Merchant(m) => spend.merchant.as_ref() == Some(m),
            RecipientMatch::Address { chain, address } => *chain == spend.chain && *address == spend.recipient,
            RecipientMatch::Domain(d) => self.req.domain.as_deref().is_some_and(|host| host.eq_ignore_ascii_case(d)),
        });
        // Rule names and the recipient's description are written only for a reason given.
        let who = || match (&spend.merchant, &spend.category) {
            (Some(m), Some(c)) => format!("recipient {} (merchant {m}, category {c})", spend.recipient),
            (Some(m), None) => format!("recipient {} (merchant {m})", spend.recipient),
            _ => format!("recipient {} (no known merchant)", spend.recipient),
        };
        match matched {
            Some((i, rule)) => {
                let name = || format!("recipients.rules[{i}]");
                match rule.action {
                    RecipientAction::Block => {
                        self.out.deny(
                            ReasonCode::RecipientBlocked,
                            Some(policy),
                            &name(),
                            format!("{} is blocked", who()),
                        );
                    }
                    RecipientAction::RequireApproval => self.require_approval_for_recipient(policy, &name(), &who()),
                    RecipientAction::Allow => {}
                }
                if let Some(cap) = rule.per_tx_cap_usd {
                    let cap_rule = format_args!("recipients.rules[{i}].per_tx_cap_usd");
                    if let Some(usd) = self.usd_for(policy, cap_rule).filter(|usd| exceeds(*usd, cap)) {
                        self.out.deny(
                            ReasonCode::PerTxLimit,
                            Some(policy),
                            &cap_rule.to_string(),
                            format!(
                                "{} USD to {} exceeds its per-transaction cap of {} USD",
                                fmt_usd(usd),
                                who(),
                                fmt_usd(cap)
                            ),
                        );
                    }
                }
            }
            None => match rules.default_action {
                RecipientAction::Allow => {}
                RecipientAction::Block => self.out.deny(
                    ReasonCode::RecipientNotAllowed,
                    Some(policy),
                    "recipients.default_action",
                    format!("{} matches no allow rule, and the default action is block", who()),
                ),
                RecipientAction::RequireApproval => {
                    self.require_approval_for_recipient(policy, "recipients.default_action", &who())
                }
            },
        }
    }

    fn require_approval_for_recipient(&mut self, policy: &Policy, rule: &str, who: &str) {
        self.note_approval(policy);
        self.out.raise_tier(
            Tier::Approval,
            Some(Reason {
                code: ReasonCode::ApprovalRequired,
                policy_id: Some(policy.id.clone()),
                rule: rule.into(),
                detail: format!("paying {who} requires approval{}", approver_text(policy)),
            }),
        );
    }

    fn note_approval(&mut self, policy: &Policy) {
        if let Some(tiers) = &policy.tiers {
            self.out.approval_ttl =
                Some(self.out.approval_ttl.map_or(tiers.approval_ttl, |t| t.min(tiers.approval_ttl)));
            if self.out.approver_role.is_none() {
                self.out.approver_role = tiers.approver_role.clone();
            }
        }
    }

    fn apply_tiers(&mut self, policy: &Policy) {
        let Some(tiers) = &policy.tiers else {
            self.out.raise_tier(Tier::Instant, None);
            return;
        };
        let Some(usd) = self.usd_for(policy, "tiers") else { return };
        let steps = [
            (Tier::Instant, tiers.instant_max_usd, "instant_max_usd"),
            (Tier::Notify, tiers.notify_max_usd, "notify_max_usd"),
            (Tier::Delay, tiers.delay_max_usd, "delay_max_usd"),
        ];
        let chosen = steps.iter().find(|(_, max, _)| max.is_some_and(|m| !exceeds(usd, m))).map(|(t, _, _)| *t);
        // "45.00 USD is above tiers.notify_max_usd 10.00 USD; " (empty when no lower tier exists).
        let above = steps
            .iter()
            .rfind(|(t, max, _)| max.is_some() && chosen.is_none_or(|c| *t < c))
            .map(|(_, max, name)| {
                format!("{} USD is above tiers.{name} {} USD; ", fmt_usd(usd), fmt_usd(max.unwrap_or_default()))
            })
            .unwrap_or_default();
        match chosen.unwrap_or(Tier::Approval) {
            Tier::Delay => {
                self.out.delay = Some(self.out.delay.map_or(tiers.delay, |d| d.max(tiers.delay)));
                let detail = format!("{above}executes after {} unless cancelled", fmt_duration(tiers.delay));
                self.out.raise_tier(Tier::Delay, Some(tier_reason(ReasonCode::Delayed, policy, detail)));
            }
            Tier::Approval => {
                self.note_approval(policy);
                let detail = format!("{above}requires approval{}", approver_text(policy));
                self.out.raise_tier(Tier::Approval, Some(tier_reason(ReasonCode::ApprovalRequired, policy, detail)));
            }
            other => self.out.raise_tier(other, None),
        }
    }
}

/// The evaluation of `spend` from what the policies found.
fn finish(mut out: Outcome, mut resolved: ResolvedSpend, req: &SpendRequest) -> Evaluation {
    // Every admitted spend is booked at its USD value (ceilings, reports, exposure): one
    // that no USD rule needed is still refused without a price rather than booked at zero.
    if let (Err(problem), false) = (&resolved.valuation, out.price_denied) {
        let detail = format!(
            "spendguard books every spend at its USD value, and {} {} has no usable price: {problem}",
            fmt_units(req.amount),
            resolved.asset
        );
        out.deny(ReasonCode::PriceUnavailable, None, "valuation", detail);
    }
    let (tier, tier_reasons) = out.tier.take().unwrap_or((Tier::Instant, vec![]));
    let decision = if out.denials.is_empty() { tier.decision() } else { Decision::Deny };
    let mut reasons = out.denials;
    reasons.extend(tier_reasons);
    resolved.delay = (tier == Tier::Delay).then_some(out.delay).flatten();
    if tier == Tier::Approval {
        resolved.approval_ttl = out.approval_ttl;
        resolved.approver_role = out.approver_role;
    }
    let valuation = resolved.valuation.clone().ok();
    Evaluation { decision, tier, reasons, headroom: out.headroom, valuation, spend: Some(resolved) }
}

fn tier_reason(code: ReasonCode, policy: &Policy, detail: String) -> Reason {
    Reason { code, policy_id: Some(policy.id.clone()), rule: "tiers".into(), detail }
}

fn approver_text(policy: &Policy) -> String {
    match policy.tiers.as_ref() {
        Some(t) => {
            let role = t.approver_role.as_deref().map(|r| format!(" by role {r}")).unwrap_or_default();
            format!("{role} within {}", fmt_duration(t.approval_ttl))
        }
        None => String::new(),
    }
}

/// `agent procurement-bot`, `org`, `wallet trading-hot operation refund`.
fn limit_subject(scope: &Scope, operation: Option<&str>) -> String {
    let base = match scope {
        Scope::Org => "org".to_string(),
        other => format!("{} {}", other.kind(), other.id()),
    };
    match operation {
        Some(op) => format!("{base} operation {op}"),
        None => base,
    }
}

/// The asset key a request names, resolved against the wallet's chain (for callers that need it
/// before evaluation, e.g. to fetch the right balance).
pub fn requested_asset_key(model: &Model, wallet: &Wallet, asset: Option<&str>) -> Option<String> {
    match asset {
        None => model.native_asset(&wallet.chain).map(Asset::key),
        Some(name) => {
            let (chain, symbol) = name.split_once(':').unwrap_or((wallet.chain.as_str(), name));
            model.asset(chain, symbol).map(|a| asset_key(&a.chain, &a.symbol))
        }
    }
}
