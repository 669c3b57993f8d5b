//! `[[policy]]`: scope, limits, allowlists, schedule, tiers, recipient rules and operations.

use super::{Checker, Refs};
use crate::locate::KeyPath;
use crate::raw::{RawLimit, RawOperation, RawPolicy, RawRecipients, RawSchedule, RawTiers};
use chrono_tz::Tz;
use rust_decimal::Decimal;
use spendguard_core::model::{
    Asset, Limit, Measure, Operation, Policy, RecipientAction, RecipientMatch, RecipientRule, RecipientRules, Scope,
    Tiers,
};
use spendguard_core::money::decimal_places;
use spendguard_core::time::{parse_weekday, HoursRange, Schedule};
use std::collections::HashSet;

pub(super) fn policies(c: &mut Checker, raw: &[RawPolicy], root: &KeyPath, server_tz: Tz, refs: &Refs) -> Vec<Policy> {
    let mut policy_ids = HashSet::new();
    let mut policies = vec![];
    for (i, rp) in raw.iter().enumerate() {
        let p = root.key("policy").index(i);
        if !c.unique(&mut policy_ids, &rp.id, p.key("id"), "policy") {
            continue;
        }
        let Some(scope) = scope(c, &rp.scope, p.key("scope"), refs) else { continue };
        let timezone = rp
            .timezone
            .map(|t| t.0)
            .or(rp.schedule.as_ref().and_then(|s| s.timezone.map(|t| t.0)))
            .unwrap_or(server_tz);
        let limits = limits(c, &rp.limits, &p.key("limits"), refs);
        let chains = rp.chains.as_ref().map(|list| {
            list.iter()
                .enumerate()
                .filter(|(j, ch)| refs.chain(c, ch, p.key("chains").index(*j)).is_some())
                .map(|(_, ch)| ch.clone())
                .collect::<Vec<_>>()
        });
        let assets = rp.assets.as_ref().map(|list| {
            list.iter()
                .enumerate()
                .filter_map(|(j, a)| refs.asset(c, a, p.key("assets").index(j)).map(Asset::key))
                .collect::<Vec<_>>()
        });
        let schedule = rp.schedule.as_ref().and_then(|s| schedule(c, s, &p.key("schedule"), timezone));
        let tiers = rp.tiers.as_ref().map(|t| tiers(c, t, &p.key("tiers"), refs));
        let approver = rp.tiers.as_ref().and_then(|t| t.approver_role.as_ref()).is_some();
        let recipients = rp.recipients.as_ref().map(|r| recipients(c, r, &p.key("recipients"), approver, refs));
        let operations = operations(c, &rp.operation, &p.key("operation"), refs);
        let per_tx_usd = rp.per_tx_usd.and_then(|m| c.non_negative(m.0, p.key("per_tx_usd")));
        policies.push(Policy {
            id: rp.id.clone(),
            scope,
            timezone,
            per_tx_usd,
            limits,
            chains,
            assets,
            schedule,
            tiers,
            recipients,
            operations,
        });
    }
    policies
}

fn scope(c: &mut Checker, text: &str, path: KeyPath, refs: &Refs) -> Option<Scope> {
    let Some(s) = Scope::parse(text) else {
        c.err(
            path,
            format!("{text:?} is not a scope: write \"org\", \"department:ID\", \"agent:ID\" or \"wallet:ID\""),
        );
        return None;
    };
    let exists = match &s {
        Scope::Org => true,
        Scope::Department(id) => refs.departments.contains(id),
        Scope::Agent(id) => refs.agents.contains(id),
        Scope::Wallet(id) => refs.wallets.contains(id),
    };
    if !exists {
        c.err(path, format!("no {} {:?} is configured", s.kind(), s.id()));
    }
    Some(s)
}

fn limits(c: &mut Checker, raw: &[RawLimit], path: &KeyPath, refs: &Refs) -> Vec<Limit> {
    raw.iter().enumerate().filter_map(|(j, l)| limit(c, l, path.index(j), refs)).collect()
}

fn limit(c: &mut Checker, l: &RawLimit, lp: KeyPath, refs: &Refs) -> Option<Limit> {
    let asset = match &l.asset {
        Some(name) => Some(refs.asset(c, name, lp.key("asset"))?),
        None => None,
    };
    let set: Vec<&str> = [
        ("max_usd", l.max_usd.is_some()),
        ("max_amount", l.max_amount.is_some()),
        ("max_count", l.max_count.is_some()),
        ("max_balance_fraction", l.max_balance_fraction.is_some()),
    ]
    .iter()
    .filter(|(_, s)| *s)
    .map(|(k, _)| *k)
    .collect();
    if set.len() != 1 {
        c.err(
            lp.clone(),
            format!(
                "a limit needs exactly one of max_usd, max_amount, max_count, max_balance_fraction (found {})",
                if set.is_empty() { "none".to_string() } else { set.join(", ") }
            ),
        );
        return None;
    }
    let measure = if let Some(m) = l.max_usd {
        Measure::Usd(c.non_negative(m.0, lp.key("max_usd"))?)
    } else if let Some(m) = l.max_amount {
        let Some(asset) = asset else {
            c.err(lp.key("max_amount"), "a limit in asset units needs asset = \"chain:SYMBOL\"");
            return None;
        };
        if decimal_places(m.0) > asset.decimals {
            c.err(
                lp.key("max_amount"),
                format!("has {} decimals; {} allows {}", decimal_places(m.0), asset.key(), asset.decimals),
            );
            return None;
        }
        Measure::Amount(c.non_negative(m.0, lp.key("max_amount"))?)
    } else if let Some(n) = l.max_count {
        Measure::Count(n)
    } else {
        let f = l.max_balance_fraction.map(|m| m.0).unwrap_or_default();
        if f <= Decimal::ZERO || f > Decimal::ONE {
            c.err(lp.key("max_balance_fraction"), "must be greater than 0 and at most 1");
            return None;
        }
        Measure::BalanceFraction(f)
    };
    Some(Limit { window: l.window.0, measure, asset: asset.map(Asset::key) })
}

fn schedule(c: &mut Checker, s: &RawSchedule, sp: &KeyPath, timezone: Tz) -> Option<Schedule> {
    let mut days = vec![];
    for (j, d) in s.days.iter().enumerate() {
        match parse_weekday(d) {
            Some(wd) => days.push(wd),
            None => {
                c.err(sp.key("days").index(j), format!("{d:?} is not a day: write mon, tue, wed, thu, fri, sat or sun"))
            }
        }
    }
    let hours = match &s.hours {
        None => None,
        Some(h) => match HoursRange::parse(h) {
            Some(r) => Some(r),
            None => {
                c.err(
                    sp.key("hours"),
                    format!(
                        "{h:?} is not an hours range: write \"HH:MM-HH:MM\", e.g. \"09:00-18:00\" or \"22:00-06:00\""
                    ),
                );
                return None;
            }
        },
    };
    Some(Schedule { days, hours, timezone: s.timezone.map_or(timezone, |t| t.0) })
}

fn tiers(c: &mut Checker, t: &RawTiers, tp: &KeyPath, refs: &Refs) -> Tiers {
    let steps = [
        ("instant_max_usd", t.instant_max_usd),
        ("notify_max_usd", t.notify_max_usd),
        ("delay_max_usd", t.delay_max_usd),
    ];
    let mut last: Option<(&str, Decimal)> = None;
    for (name, value) in steps {
        if let Some(v) = value {
            if let Some((prev, pv)) = last {
                if v.0 < pv {
                    c.err(tp.key(name), format!("must not be below {prev} ({pv})"));
                }
            }
            last = Some((name, v.0));
        }
    }
    if t.delay_max_usd.is_some() && t.delay.is_none() {
        c.err(tp.key("delay"), "is required when delay_max_usd is set (e.g. delay = \"5m\")");
    }
    match &t.approver_role {
        None => c.err(tp.key("approver_role"), "is required: spends above the highest tier need an approver"),
        Some(role) if !refs.roles_held.contains(role) => {
            c.err(tp.key("approver_role"), format!("no operator holds role {role:?}, so nobody could approve"))
        }
        Some(_) => {}
    }
    Tiers {
        instant_max_usd: t.instant_max_usd.map(|m| m.0),
        notify_max_usd: t.notify_max_usd.map(|m| m.0),
        delay_max_usd: t.delay_max_usd.map(|m| m.0),
        delay: t.delay.map_or(chrono::TimeDelta::zero(), |d| d.0),
        approver_role: t.approver_role.clone(),
        approval_ttl: t.approval_ttl.map_or(chrono::TimeDelta::hours(24), |d| d.0),
    }
}

fn recipients(
    c: &mut Checker,
    r: &RawRecipients,
    rp_path: &KeyPath,
    has_approver: bool,
    refs: &Refs,
) -> RecipientRules {
    let mut rules = vec![];
    let mut needs_approver = r.default_action == RecipientAction::RequireApproval;
    for (j, rule) in r.rules.iter().enumerate() {
        let rule_path = rp_path.key("rules").index(j);
        let given = [rule.category.is_some(), rule.merchant.is_some(), rule.address.is_some(), rule.domain.is_some()];
        if given.iter().filter(|g| **g).count() != 1 {
            c.err(rule_path, "a recipient rule needs exactly one of category, merchant, address, domain");
            continue;
        }
        let matcher = if let Some(domain) = &rule.domain {
            // The host of an x402 resource URL, as the URL names it: no scheme, path or port.
            let valid = !domain.is_empty()
                && domain.len() <= 253
                && domain.chars().all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '-'));
            if !valid {
                c.err(
                    rule_path.key("domain"),
                    format!("{domain:?} is not a host name such as \"api.weather.example\""),
                );
                continue;
            }
            RecipientMatch::Domain(domain.to_ascii_lowercase())
        } else if let Some(cat) = &rule.category {
            RecipientMatch::Category(cat.clone())
        } else if let Some(m) = &rule.merchant {
            if !refs.merchants.contains(m) {
                c.err(rule_path.key("merchant"), format!("no merchant {m:?} is configured"));
                continue;
            }
            RecipientMatch::Merchant(m.clone())
        } else {
            let text = rule.address.as_deref().unwrap_or_default();
            let Some((chain, address)) = refs.chain_address(c, text, rule_path.key("address")) else { continue };
            RecipientMatch::Address { chain, address }
        };
        needs_approver |= rule.action == RecipientAction::RequireApproval;
        let per_tx_cap_usd = match rule.per_tx_cap_usd {
            Some(m) => match c.non_negative(m.0, rule_path.key("per_tx_cap_usd")) {
                Some(v) => Some(v),
                None => continue,
            },
            None => None,
        };
        rules.push(RecipientRule { matcher, action: rule.action, per_tx_cap_usd });
    }
    if needs_approver && !has_approver {
        c.err(rp_path.clone(), "require_approval needs [policy.tiers] with an approver_role");
    }
    RecipientRules { default_action: r.default_action, rules }
}

fn operations(c: &mut Checker, raw: &[RawOperation], path: &KeyPath, refs: &Refs) -> Vec<Operation> {
    let mut names = HashSet::new();
    let mut operations = vec![];
    for (j, op) in raw.iter().enumerate() {
        let op_path = path.index(j);
        if op.name.is_empty() || !names.insert(op.name.as_str()) {
            c.err(op_path.key("name"), format!("operation name {:?} is empty or used twice", op.name));
            continue;
        }
        let per_tx_usd = op.per_tx_usd.and_then(|m| c.non_negative(m.0, op_path.key("per_tx_usd")));
        let limits = limits(c, &op.limits, &op_path.key("limits"), refs);
        operations.push(Operation { name: op.name.clone(), per_tx_usd, limits });
    }
    operations
}
