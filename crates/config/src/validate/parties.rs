//! Who holds what: `[[department]]`, `[[wallet]]`, `[[agent]]`, `[[merchant]]`, `[[operator]]`
//! and `[roles]` (which operator roles may take each admin action).

use super::{env_name_ok, Checker, Refs};
use crate::locate::KeyPath;
use crate::raw::{RawAgent, RawCustody, RawDepartment, RawMerchant, RawOperator, RawRoles, RawWallet};
use crate::{AdminAction, AdminRoles, WalletKeys};
use chrono::TimeDelta;
use spendguard_core::model::{Agent, ChainKind, Custody, Merchant, Operator, Wallet};
use std::collections::{HashMap, HashSet};
use std::path::Path;

pub(super) fn departments(c: &mut Checker, raw: &[RawDepartment], root: &KeyPath, refs: &mut Refs) {
    let mut dept_ids = HashSet::new();
    for (i, d) in raw.iter().enumerate() {
        c.unique(&mut dept_ids, &d.id, root.key("department").index(i).key("id"), "department");
    }
    refs.departments = dept_ids.into_iter().map(str::to_string).collect();
}

pub(super) fn wallets(
    c: &mut Checker,
    raw: &[RawWallet],
    root: &KeyPath,
    base_dir: &Path,
    refs: &mut Refs,
) -> (Vec<Wallet>, Vec<WalletKeys>) {
    let mut wallet_ids = HashSet::new();
    let mut wallet_addresses: HashMap<(String, String), String> = HashMap::new();
    let mut wallets = vec![];
    let mut wallet_keys = vec![];
    for (i, w) in raw.iter().enumerate() {
        let p = root.key("wallet").index(i);
        if !c.unique(&mut wallet_ids, &w.id, p.key("id"), "wallet") {
            continue;
        }
        let Some(kind) = refs.chain(c, &w.chain, p.key("chain")) else { continue };
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
                if w.delegates.is_some() {
                    c.err(p.key("delegates"), "applies only to evm wallets (EIP-7702 delegations)");
                }
            }
        }
        let custody = match w.custody.unwrap_or(RawCustody::Spendguard) {
            RawCustody::Spendguard => {
                if w.authorization_ttl.is_some() {
                    c.err(p.key("authorization_ttl"), "applies only to wallets with custody = \"external\"");
                }
                Custody::Spendguard
            }
            RawCustody::External => {
                // Its key is the agent's: one configured here would be a second way to spend.
                for (key, set) in [
                    ("keystore", w.keystore.is_some()),
                    ("keypair", w.keypair.is_some()),
                    ("password_env", w.password_env.is_some()),
                ] {
                    if set {
                        c.err(p.key(key), "an external wallet's key is the agent's; spendguard holds none");
                    }
                }
                Custody::External { authorization_ttl: w.authorization_ttl.map_or(TimeDelta::minutes(15), |d| d.0) }
            }
        };
        let mut addresses = |key: &str, list: &Option<Vec<String>>| {
            let mut out = vec![];
            for (j, d) in list.iter().flatten().enumerate() {
                match kind.normalize_address(d) {
                    Ok(a) => out.push(a),
                    Err(e) => c.err(p.key(key).index(j), e.to_string()),
                }
            }
            out
        };
        let delegates = addresses("delegates", &w.delegates);
        let refill_from = addresses("refill_from", &w.refill_from);
        if let Some(env) = &w.password_env {
            if !env_name_ok(env) {
                c.err(p.key("password_env"), format!("{env:?} is not an environment variable name (A-Z, 0-9, _)"));
            }
        }
        wallets.push(Wallet { id: w.id.clone(), chain: w.chain.clone(), address, delegates, refill_from, custody });
        wallet_keys.push(WalletKeys {
            wallet: w.id.clone(),
            keystore: w.keystore.as_ref().map(|k| base_dir.join(k)),
            password_env: w.password_env.clone(),
            keypair: w.keypair.as_ref().map(|k| base_dir.join(k)),
            balance_low_usd: w.balance_low_usd.and_then(|m| c.non_negative(m.0, p.key("balance_low_usd"))),
        });
    }
    refs.wallets = wallet_ids.into_iter().map(str::to_string).collect();
    (wallets, wallet_keys)
}

pub(super) fn agents(c: &mut Checker, raw: &[RawAgent], root: &KeyPath, refs: &mut Refs) -> Vec<Agent> {
    let mut agent_ids = HashSet::new();
    let mut agents = vec![];
    for (i, a) in raw.iter().enumerate() {
        let p = root.key("agent").index(i);
        if !c.unique(&mut agent_ids, &a.id, p.key("id"), "agent") {
            continue;
        }
        if let Some(d) = &a.department {
            if !refs.departments.contains(d) {
                c.err(p.key("department"), format!("no department {d:?} is configured"));
            }
        }
        let mut seen = HashSet::new();
        for (j, w) in a.wallets.iter().enumerate() {
            if !refs.wallets.contains(w) {
                c.err(p.key("wallets").index(j), format!("no wallet {w:?} is configured"));
            } else if !seen.insert(w) {
                c.err(p.key("wallets").index(j), format!("wallet {w:?} is listed twice"));
            }
        }
        agents.push(Agent { id: a.id.clone(), department: a.department.clone(), wallets: a.wallets.clone() });
    }
    refs.agents = agent_ids.into_iter().map(str::to_string).collect();
    agents
}

pub(super) fn merchants(c: &mut Checker, raw: &[RawMerchant], root: &KeyPath, refs: &mut Refs) -> Vec<Merchant> {
    let mut merchant_ids = HashSet::new();
    let mut merchants = vec![];
    let mut merchant_of_address: HashMap<(String, String), String> = HashMap::new();
    for (i, m) in raw.iter().enumerate() {
        let p = root.key("merchant").index(i);
        if !c.unique(&mut merchant_ids, &m.id, p.key("id"), "merchant") {
            continue;
        }
        let mut addresses = vec![];
        for (j, entry) in m.addresses.iter().enumerate() {
            let ap = p.key("addresses").index(j);
            if let Some(pair) = refs.chain_address(c, entry, ap.clone()) {
                if let Some(other) = merchant_of_address.insert(pair.clone(), m.id.clone()) {
                    c.err(ap, format!("address already belongs to merchant {other}"));
                }
                addresses.push(pair);
            }
        }
        merchants.push(Merchant { id: m.id.clone(), category: m.category.clone(), addresses });
    }
    refs.merchants = merchant_ids.into_iter().map(str::to_string).collect();
    merchants
}

pub(super) fn operators(c: &mut Checker, raw: &[RawOperator], root: &KeyPath, refs: &mut Refs) -> Vec<Operator> {
    let mut operator_ids = HashSet::new();
    let mut operators = vec![];
    for (i, o) in raw.iter().enumerate() {
        if c.unique(&mut operator_ids, &o.id, root.key("operator").index(i).key("id"), "operator") {
            operators.push(Operator { id: o.id.clone(), roles: o.roles.clone() });
        }
    }
    refs.roles_held = operators.iter().flat_map(|o| o.roles.iter().cloned()).collect();
    operators
}

/// `[roles]`: each admin action's roles, defaulting to [`AdminRoles::default`]. A role named
/// here must be held by some operator, or nobody could take the action.
pub(super) fn roles(c: &mut Checker, raw: Option<&RawRoles>, root: &KeyPath, refs: &Refs) -> AdminRoles {
    let mut roles = AdminRoles::default();
    let Some(raw) = raw else { return roles };
    let p = root.key("roles");
    for action in AdminAction::ALL {
        let Some(given) = raw.get(action) else { continue };
        let key = p.key(action.as_str());
        if given.is_empty() {
            c.err(key, "must name at least one role");
            continue;
        }
        for (j, role) in given.iter().enumerate() {
            if role.trim().is_empty() {
                c.err(key.index(j), "a role must not be empty");
            } else if !refs.roles_held.contains(role) {
                c.err(key.index(j), format!("no operator holds role {role:?}, so nobody could {}", action.describe()));
            }
        }
        roles.set(action, given.clone());
    }
    roles
}
