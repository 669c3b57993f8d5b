//! Turns the raw file into the validated [`Config`]: every cross-reference checked, every
//! problem collected with its key path.

use crate::locate::KeyPath;
use crate::raw::*;
use crate::{
    AlertConfig, ChainSettings, Commitment, Config, ReportConfig, ServerConfig, WalletKeys, ALERT_EVENTS,
    REPORT_FORMATS,
};
use chrono_tz::Tz;
use rust_decimal::Decimal;
use spendguard_core::model::{
    Agent, Asset, Chain, ChainKind, Limit, Measure, Merchant, Model, Operation, Operator, OutflowAction, Policy,
    RecipientAction, RecipientMatch, RecipientRule, RecipientRules, Scope, Tiers, Wallet,
};
use spendguard_core::money::decimal_places;
use spendguard_core::time::{parse_weekday, HoursRange, Schedule};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;

pub(crate) struct Checker {
    pub(crate) issues: Vec<(KeyPath, String)>,
}

impl Checker {
    fn err(&mut self, path: KeyPath, message: impl Into<String>) {
        self.issues.push((path, message.into()));
    }

    /// Records a duplicate identifier; returns true when `id` is new.
    fn unique<'a>(&mut self, seen: &mut HashSet<&'a str>, id: &'a str, path: KeyPath, what: &str) -> bool {
        if id.is_empty() {
            self.err(path, format!("{what} id must not be empty"));
            return false;
        }
        if !seen.insert(id) {
            self.err(path, format!("duplicate {what} id {id:?}"));
            return false;
        }
        true
    }
}

fn env_name_ok(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase() || c == '_')
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

pub(crate) fn build(raw: RawConfig, file: &Path) -> Result<Config, Vec<(KeyPath, String)>> {
    let mut c = Checker { issues: vec![] };
    let root = KeyPath::root();
    let base_dir = file.parent().map(Path::to_path_buf).unwrap_or_default();

    // [server]
    let sp = root.key("server");
    let server_tz = raw.server.timezone.map_or(Tz::UTC, |t| t.0);
    let listen = match raw.server.listen.as_deref().unwrap_or("127.0.0.1:3100").parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => {
            c.err(sp.key("listen"), "must be an address and port such as \"127.0.0.1:3100\"");
            SocketAddr::from(([127, 0, 0, 1], 3100))
        }
    };
    if raw.server.database.trim().is_empty() {
        c.err(sp.key("database"), "must name an SQLite file");
    }
    let server = ServerConfig {
        database: base_dir.join(&raw.server.database),
        listen,
        timezone: server_tz,
        reports_dir: base_dir.join(raw.server.reports_dir.as_deref().unwrap_or("reports")),
    };
    if raw.org.id.is_empty() {
        c.err(root.key("org").key("id"), "must not be empty");
    }

    // [[chain]]
    let mut chain_ids = HashSet::new();
    let mut chains = vec![];
    let mut chain_settings = vec![];
    for (i, ch) in raw.chain.iter().enumerate() {
        let p = root.key("chain").index(i);
        if !c.unique(&mut chain_ids, &ch.id, p.key("id"), "chain") {
            continue;
        }
        if ch.id.contains(':') {
            c.err(p.key("id"), "chain id must not contain ':' (it separates chain and symbol)");
        }
        if ch.rpc.is_empty() {
            c.err(p.key("rpc"), "needs at least one RPC URL");
        }
        for (j, url) in ch.rpc.iter().enumerate() {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                c.err(p.key("rpc").index(j), format!("{url:?} is not an http:// or https:// URL"));
            }
        }
        match ch.kind {
            ChainKind::Evm => {
                if ch.chain_id.is_none() {
                    c.err(p.key("chain_id"), "is required for an evm chain");
                }
                if ch.commitment.is_some() {
                    c.err(p.key("commitment"), "applies only to solana chains");
                }
            }
            ChainKind::Solana => {
                for (key, set) in [
                    ("chain_id", ch.chain_id.is_some()),
                    ("max_fee_per_gas_gwei", ch.max_fee_per_gas_gwei.is_some()),
                    ("start_block", ch.start_block.is_some()),
                ] {
                    if set {
                        c.err(p.key(key), "applies only to evm chains");
                    }
                }
            }
        }
        if ch.max_reorg_depth == Some(0) {
            c.err(p.key("max_reorg_depth"), "must be at least 1");
        }
        if let Some(fee) = ch.max_fee_per_gas_gwei {
            if fee.0 <= Decimal::ZERO {
                c.err(p.key("max_fee_per_gas_gwei"), "must be greater than zero");
            }
        }
        chains.push(Chain { id: ch.id.clone(), kind: ch.kind });
        chain_settings.push(ChainSettings {
            id: ch.id.clone(),
            kind: ch.kind,
            chain_id: ch.chain_id,
            rpc: ch.rpc.clone(),
            confirmations: ch.confirmations.unwrap_or(if ch.kind == ChainKind::Evm { 2 } else { 0 }),
            poll_interval: ch.poll_interval.map_or(chrono::TimeDelta::seconds(1), |d| d.0),
            start_block: ch.start_block.unwrap_or(0),
            max_fee_per_gas_gwei: ch.max_fee_per_gas_gwei.map(|m| m.0),
            commitment: match ch.commitment {
                Some(RawCommitment::Finalized) => Commitment::Finalized,
                _ => Commitment::Confirmed,
            },
            rpc_timeout: ch.rpc_timeout.map_or(chrono::TimeDelta::seconds(10), |d| d.0),
            max_reorg_depth: ch.max_reorg_depth.unwrap_or(64),
            stall_after: ch.stall_after.map_or(chrono::TimeDelta::minutes(2), |d| d.0),
            missing_after: ch.missing_after.map_or(chrono::TimeDelta::minutes(10), |d| d.0),
        });
    }
    let kind_of: HashMap<&str, ChainKind> = chains.iter().map(|ch| (ch.id.as_str(), ch.kind)).collect();
    let mut chain_ref = |c: &mut Checker, id: &str, path: KeyPath| -> Option<ChainKind> {
        let kind = kind_of.get(id).copied();
        if kind.is_none() {
            c.err(path, format!("no chain {id:?} is configured"));
        }
        kind
    };

    // [[asset]]
    let mut assets: Vec<Asset> = vec![];
    let mut native_seen = HashSet::new();
    for (i, a) in raw.asset.iter().enumerate() {
        let p = root.key("asset").index(i);
        let Some(kind) = chain_ref(&mut c, &a.chain, p.key("chain")) else { continue };
        if a.symbol.is_empty() || a.symbol.contains(':') || a.symbol.contains(char::is_whitespace) {
            c.err(p.key("symbol"), "must be a non-empty symbol without ':' or spaces");
            continue;
        }
        if assets.iter().any(|x| x.chain == a.chain && x.symbol == a.symbol) {
            c.err(p.key("symbol"), format!("duplicate asset {}:{}", a.chain, a.symbol));
            continue;
        }
        if a.decimals > 28 {
            c.err(p.key("decimals"), "must be at most 28 (the precision of spendguard's decimals)");
        }
        if a.price_usd.0 <= Decimal::ZERO {
            c.err(p.key("price_usd"), "must be greater than zero");
        }
        let token = match (kind, &a.contract, &a.mint) {
            (ChainKind::Evm, _, Some(_)) => {
                c.err(p.key("mint"), "applies only to solana assets; use contract on an evm chain");
                None
            }
            (ChainKind::Solana, Some(_), _) => {
                c.err(p.key("contract"), "applies only to evm assets; use mint on a solana chain");
                None
            }
            (_, Some(t), _) | (_, _, Some(t)) => {
                let key = if a.contract.is_some() { "contract" } else { "mint" };
                match kind.normalize_address(t) {
                    Ok(addr) => Some(addr),
                    Err(e) => {
                        c.err(p.key(key), e.to_string());
                        None
                    }
                }
            }
            (_, None, None) => {
                if !native_seen.insert(a.chain.as_str()) {
                    c.err(
                        p.key("symbol"),
                        format!("chain {} already has a native asset (one without contract or mint)", a.chain),
                    );
                }
                None
            }
        };
        assets.push(Asset {
            chain: a.chain.clone(),
            symbol: a.symbol.clone(),
            token,
            decimals: a.decimals,
            price_usd: a.price_usd.0,
        });
    }
    let asset_ref = |c: &mut Checker, name: &str, path: KeyPath| -> Option<&Asset> {
        let found = name.split_once(':').and_then(|(ch, sym)| assets.iter().find(|a| a.chain == ch && a.symbol == sym));
        if found.is_none() {
            c.err(path, format!("no asset {name:?} is configured (write chain:SYMBOL, e.g. \"eth-local:USDC\")"));
        }
        found
    };

    // [[department]]
    let mut dept_ids = HashSet::new();
    for (i, d) in raw.department.iter().enumerate() {
        c.unique(&mut dept_ids, &d.id, root.key("department").index(i).key("id"), "department");
    }

    // [[wallet]]
    let mut wallet_ids = HashSet::new();
    let mut wallet_addresses: HashMap<(String, String), String> = HashMap::new();
    let mut wallets = vec![];
    let mut wallet_keys = vec![];
    for (i, w) in raw.wallet.iter().enumerate() {
        let p = root.key("wallet").index(i);
        if !c.unique(&mut wallet_ids, &w.id, p.key("id"), "wallet") {
            continue;
        }
        let Some(kind) = chain_ref(&mut c, &w.chain, p.key("chain")) else { continue };
        let address = match kind.normalize_address(&w.address) {
            Ok(a) => a,
            Err(e) => {
                c.err(p.key("address"), e.to_string());
                continue;
            }
        };
        if let Some(other) = wallet_addresses.insert((w.chain.clone(), address.clone()), w.id.clone()) {
            c.err(p.key("address"), format!("wallet {other} already has this address"));
        }
        match kind {
            ChainKind::Evm => {
                if w.keypair.is_some() {
                    c.err(p.key("keypair"), "applies only to solana wallets; use keystore and password_env");
                }
                if w.keystore.is_some() != w.password_env.is_some() {
                    c.err(
                        p.key(if w.keystore.is_some() { "password_env" } else { "keystore" }),
                        "keystore and password_env go together",
                    );
                }
            }
            // password_env is allowed on Solana too: it unlocks an encrypted keypair file.
            ChainKind::Solana => {
                if w.keystore.is_some() {
                    c.err(p.key("keystore"), "applies only to evm wallets; use keypair");
                }
            }
        }
        if let Some(env) = &w.password_env {
            if !env_name_ok(env) {
                c.err(p.key("password_env"), format!("{env:?} is not an environment variable name (A-Z, 0-9, _)"));
            }
        }
        wallets.push(Wallet { id: w.id.clone(), chain: w.chain.clone(), address });
        wallet_keys.push(WalletKeys {
            wallet: w.id.clone(),
            keystore: w.keystore.as_ref().map(|k| base_dir.join(k)),
            password_env: w.password_env.clone(),
            keypair: w.keypair.as_ref().map(|k| base_dir.join(k)),
            balance_low_usd: w.balance_low_usd.and_then(|m| non_negative(&mut c, m.0, p.key("balance_low_usd"))),
        });
    }

    // [[agent]]
    let mut agent_ids = HashSet::new();
    let mut agents = vec![];
    for (i, a) in raw.agent.iter().enumerate() {
        let p = root.key("agent").index(i);
        if !c.unique(&mut agent_ids, &a.id, p.key("id"), "agent") {
            continue;
        }
        if let Some(d) = &a.department {
            if !dept_ids.contains(d.as_str()) {
                c.err(p.key("department"), format!("no department {d:?} is configured"));
            }
        }
        let mut seen = HashSet::new();
        for (j, w) in a.wallets.iter().enumerate() {
            if !wallet_ids.contains(w.as_str()) {
                c.err(p.key("wallets").index(j), format!("no wallet {w:?} is configured"));
            } else if !seen.insert(w) {
                c.err(p.key("wallets").index(j), format!("wallet {w:?} is listed twice"));
            }
        }
        agents.push(Agent { id: a.id.clone(), department: a.department.clone(), wallets: a.wallets.clone() });
    }

    // [[merchant]]
    let mut merchant_ids = HashSet::new();
    let mut merchants = vec![];
    let mut merchant_of_address: HashMap<(String, String), String> = HashMap::new();
    for (i, m) in raw.merchant.iter().enumerate() {
        let p = root.key("merchant").index(i);
        if !c.unique(&mut merchant_ids, &m.id, p.key("id"), "merchant") {
            continue;
        }
        let mut addresses = vec![];
        for (j, entry) in m.addresses.iter().enumerate() {
            let ap = p.key("addresses").index(j);
            if let Some(pair) = chain_address(&mut c, &mut chain_ref, entry, ap.clone()) {
                if let Some(other) = merchant_of_address.insert(pair.clone(), m.id.clone()) {
                    c.err(ap, format!("address already belongs to merchant {other}"));
                }
                addresses.push(pair);
            }
        }
        merchants.push(Merchant { id: m.id.clone(), category: m.category.clone(), addresses });
    }

    // [[operator]]
    let mut operator_ids = HashSet::new();
    let mut operators = vec![];
    for (i, o) in raw.operator.iter().enumerate() {
        if c.unique(&mut operator_ids, &o.id, root.key("operator").index(i).key("id"), "operator") {
            operators.push(Operator { id: o.id.clone(), roles: o.roles.clone() });
        }
    }
    let roles_held: HashSet<&str> = operators.iter().flat_map(|o| o.roles.iter().map(String::as_str)).collect();

    // [[policy]]
    let mut policy_ids = HashSet::new();
    let mut policies = vec![];
    for (i, rp) in raw.policy.iter().enumerate() {
        let p = root.key("policy").index(i);
        if !c.unique(&mut policy_ids, &rp.id, p.key("id"), "policy") {
            continue;
        }
        let scope = match Scope::parse(&rp.scope) {
            None => {
                c.err(
                    p.key("scope"),
                    format!(
                        "{:?} is not a scope: write \"org\", \"department:ID\", \"agent:ID\" or \"wallet:ID\"",
                        rp.scope
                    ),
                );
                continue;
            }
            Some(s) => {
                let exists = match &s {
                    Scope::Org => true,
                    Scope::Department(id) => dept_ids.contains(id.as_str()),
                    Scope::Agent(id) => agent_ids.contains(id.as_str()),
                    Scope::Wallet(id) => wallet_ids.contains(id.as_str()),
                };
                if !exists {
                    c.err(p.key("scope"), format!("no {} {:?} is configured", s.kind(), s.id()));
                }
                s
            }
        };
        let timezone = rp
            .timezone
            .map(|t| t.0)
            .or(rp.schedule.as_ref().and_then(|s| s.timezone.map(|t| t.0)))
            .unwrap_or(server_tz);
        let limit = |c: &mut Checker, l: &RawLimit, lp: KeyPath| -> Option<Limit> {
            let asset = match &l.asset {
                Some(name) => Some(asset_ref(c, name, lp.key("asset"))?),
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
                Measure::Usd(non_negative(c, m.0, lp.key("max_usd"))?)
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
                Measure::Amount(non_negative(c, m.0, lp.key("max_amount"))?)
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
        };
        let limits: Vec<Limit> =
            rp.limits.iter().enumerate().filter_map(|(j, l)| limit(&mut c, l, p.key("limits").index(j))).collect();
        let chains_allowed = rp.chains.as_ref().map(|list| {
            list.iter()
                .enumerate()
                .filter(|(j, ch)| chain_ref(&mut c, ch, p.key("chains").index(*j)).is_some())
                .map(|(_, ch)| ch.clone())
                .collect::<Vec<_>>()
        });
        let assets_allowed = rp.assets.as_ref().map(|list| {
            list.iter()
                .enumerate()
                .filter_map(|(j, a)| asset_ref(&mut c, a, p.key("assets").index(j)).map(Asset::key))
                .collect::<Vec<_>>()
        });
        let schedule = rp.schedule.as_ref().and_then(|s| {
            let sp = p.key("schedule");
            let mut days = vec![];
            for (j, d) in s.days.iter().enumerate() {
                match parse_weekday(d) {
                    Some(wd) => days.push(wd),
                    None => c.err(sp.key("days").index(j), format!("{d:?} is not a day: write mon, tue, wed, thu, fri, sat or sun")),
                }
            }
            let hours = match &s.hours {
                None => None,
                Some(h) => match HoursRange::parse(h) {
                    Some(r) => Some(r),
                    None => {
                        c.err(sp.key("hours"), format!("{h:?} is not an hours range: write \"HH:MM-HH:MM\", e.g. \"09:00-18:00\" or \"22:00-06:00\""));
                        return None;
                    }
                },
            };
            Some(Schedule { days, hours, timezone: s.timezone.map_or(timezone, |t| t.0) })
        });
        let tiers = rp.tiers.as_ref().map(|t| {
            let tp = p.key("tiers");
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
                Some(role) if !roles_held.contains(role.as_str()) => {
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
        });
        let recipients = rp.recipients.as_ref().map(|r| {
            let rp_path = p.key("recipients");
            let mut rules = vec![];
            let mut needs_approver = r.default_action == RecipientAction::RequireApproval;
            for (j, rule) in r.rules.iter().enumerate() {
                let rule_path = rp_path.key("rules").index(j);
                let given = [rule.category.is_some(), rule.merchant.is_some(), rule.address.is_some()];
                if given.iter().filter(|g| **g).count() != 1 {
                    c.err(rule_path, "a recipient rule needs exactly one of category, merchant, address");
                    continue;
                }
                let matcher = if let Some(cat) = &rule.category {
                    RecipientMatch::Category(cat.clone())
                } else if let Some(m) = &rule.merchant {
                    if !merchant_ids.contains(m.as_str()) {
                        c.err(rule_path.key("merchant"), format!("no merchant {m:?} is configured"));
                        continue;
                    }
                    RecipientMatch::Merchant(m.clone())
                } else {
                    let text = rule.address.as_deref().unwrap_or_default();
                    let Some((chain, address)) = chain_address(&mut c, &mut chain_ref, text, rule_path.key("address"))
                    else {
                        continue;
                    };
                    RecipientMatch::Address { chain, address }
                };
                needs_approver |= rule.action == RecipientAction::RequireApproval;
                let per_tx_cap_usd = match rule.per_tx_cap_usd {
                    Some(m) => match non_negative(&mut c, m.0, rule_path.key("per_tx_cap_usd")) {
                        Some(v) => Some(v),
                        None => continue,
                    },
                    None => None,
                };
                rules.push(RecipientRule { matcher, action: rule.action, per_tx_cap_usd });
            }
            if needs_approver && rp.tiers.as_ref().and_then(|t| t.approver_role.as_ref()).is_none() {
                c.err(rp_path, "require_approval needs [policy.tiers] with an approver_role");
            }
            RecipientRules { default_action: r.default_action, rules }
        });
        let mut op_names = HashSet::new();
        let mut operations = vec![];
        for (j, op) in rp.operation.iter().enumerate() {
            let op_path = p.key("operation").index(j);
            if op.name.is_empty() || !op_names.insert(op.name.as_str()) {
                c.err(op_path.key("name"), format!("operation name {:?} is empty or used twice", op.name));
                continue;
            }
            let per_tx_usd = op.per_tx_usd.and_then(|m| non_negative(&mut c, m.0, op_path.key("per_tx_usd")));
            let limits = op
                .limits
                .iter()
                .enumerate()
                .filter_map(|(k, l)| limit(&mut c, l, op_path.key("limits").index(k)))
                .collect();
            operations.push(Operation { name: op.name.clone(), per_tx_usd, limits });
        }
        let per_tx_usd = rp.per_tx_usd.and_then(|m| non_negative(&mut c, m.0, p.key("per_tx_usd")));
        policies.push(Policy {
            id: rp.id.clone(),
            scope,
            timezone,
            per_tx_usd,
            limits,
            chains: chains_allowed,
            assets: assets_allowed,
            schedule,
            tiers,
            recipients,
            operations,
        });
    }

    // [[alert]]
    let mut alert_ids = HashSet::new();
    let mut alerts = vec![];
    for (i, a) in raw.alert.iter().enumerate() {
        let p = root.key("alert").index(i);
        if !c.unique(&mut alert_ids, &a.id, p.key("id"), "alert") {
            continue;
        }
        if !env_name_ok(&a.url_env) {
            c.err(p.key("url_env"), format!("{:?} is not an environment variable name (A-Z, 0-9, _)", a.url_env));
        }
        for (j, e) in a.events.iter().enumerate() {
            if !ALERT_EVENTS.contains(&e.as_str()) {
                c.err(p.key("events").index(j), format!("{e:?} is not an event: one of {}", ALERT_EVENTS.join(", ")));
            }
        }
        alerts.push(AlertConfig {
            id: a.id.clone(),
            kind: a.kind,
            url_env: a.url_env.clone(),
            events: a.events.clone(),
        });
    }

    // [[report]]
    let mut report_ids = HashSet::new();
    let mut reports = vec![];
    for (i, r) in raw.report.iter().enumerate() {
        let p = root.key("report").index(i);
        if !c.unique(&mut report_ids, &r.id, p.key("id"), "report") {
            continue;
        }
        let schedule = match cron::Schedule::from_str(&r.schedule) {
            Ok(s) => s,
            Err(e) => {
                // The cron crate's message is several lines with a caret; its last line says why.
                let why = e.to_string();
                let why = why.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("invalid").trim().to_string();
                c.err(
                    p.key("schedule"),
                    format!("{:?} is not a cron expression (sec min hour day month weekday): {why}", r.schedule),
                );
                continue;
            }
        };
        if r.formats.is_empty() {
            c.err(p.key("formats"), format!("needs at least one of {}", REPORT_FORMATS.join(", ")));
        }
        for (j, f) in r.formats.iter().enumerate() {
            if !REPORT_FORMATS.contains(&f.as_str()) {
                c.err(
                    p.key("formats").index(j),
                    format!("{f:?} is not a format: one of {}", REPORT_FORMATS.join(", ")),
                );
            }
        }
        reports.push(ReportConfig { id: r.id.clone(), schedule, formats: r.formats.clone() });
    }

    if !c.issues.is_empty() {
        return Err(c.issues);
    }
    let model = Model::new(
        raw.org.id.clone(),
        server_tz,
        raw.org.on_unexplained_outflow.unwrap_or(OutflowAction::FreezeWallet),
        chains,
        assets,
        raw.department.iter().map(|d| d.id.clone()).collect(),
        wallets,
        agents,
        merchants,
        policies,
        operators,
    );
    Ok(Config { path: file.to_path_buf(), server, model, chains: chain_settings, wallet_keys, alerts, reports })
}

fn non_negative(c: &mut Checker, value: Decimal, path: KeyPath) -> Option<Decimal> {
    if value < Decimal::ZERO {
        c.err(path, "must not be negative");
        return None;
    }
    Some(value)
}

/// Parses `chain:address` into the chain and the canonical address.
fn chain_address(
    c: &mut Checker,
    chain_ref: &mut impl FnMut(&mut Checker, &str, KeyPath) -> Option<ChainKind>,
    text: &str,
    path: KeyPath,
) -> Option<(String, String)> {
    let Some((chain, address)) = text.split_once(':') else {
        c.err(
            path,
            format!(
                "{text:?} must be written chain:address, e.g. \"eth-local:0x70997970C51812dc3A010C7d01b50e0d17dc79C8\""
            ),
        );
        return None;
    };
    let kind = chain_ref(c, chain, path.clone())?;
    match kind.normalize_address(address) {
        Ok(a) => Some((chain.to_string(), a)),
        Err(e) => {
            c.err(path, e.to_string());
            None
        }
    }
}
