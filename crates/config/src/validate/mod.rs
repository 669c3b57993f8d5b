//! Turns the raw file into the validated [`Config`]: every cross-reference checked, every
//! problem collected with its key path. One module per part of the file, run in the order the
//! parts refer to each other: server and org, chains and assets, who holds what (departments,
//! wallets, agents, merchants, operators, roles), policies, then alerts and reports.

mod chains;
mod outputs;
mod parties;
mod policies;
mod server;

use crate::locate::KeyPath;
use crate::raw::RawConfig;
use crate::Config;
use rust_decimal::Decimal;
use spendguard_core::model::{Asset, ChainKind, Model, OutflowAction};
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// Collects every problem found, each with the key path it is about.
pub(crate) struct Checker {
    pub(crate) issues: Vec<(KeyPath, String)>,
}

impl Checker {
    fn err(&mut self, path: KeyPath, message: impl Into<String>) {
        self.issues.push((path, message.into()));
    }

    /// Records a duplicate or empty identifier; returns true when `id` is new.
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

    fn non_negative(&mut self, value: Decimal, path: KeyPath) -> Option<Decimal> {
        if value < Decimal::ZERO {
            self.err(path, "must not be negative");
            return None;
        }
        Some(value)
    }
}

/// What later parts of the file may refer to: chains, assets and the ids defined so far.
#[derive(Default)]
pub(crate) struct Refs {
    chain_kinds: HashMap<String, ChainKind>,
    assets: Vec<Asset>,
    departments: HashSet<String>,
    wallets: HashSet<String>,
    agents: HashSet<String>,
    merchants: HashSet<String>,
    roles_held: HashSet<String>,
}

impl Refs {
    /// The kind of a configured chain, or an error at `path`.
    fn chain(&self, c: &mut Checker, id: &str, path: KeyPath) -> Option<ChainKind> {
        let kind = self.chain_kinds.get(id).copied();
        if kind.is_none() {
            c.err(path, format!("no chain {id:?} is configured"));
        }
        kind
    }

    /// A configured asset named `chain:SYMBOL`, or an error at `path`.
    fn asset(&self, c: &mut Checker, name: &str, path: KeyPath) -> Option<&Asset> {
        let found =
            name.split_once(':').and_then(|(ch, sym)| self.assets.iter().find(|a| a.chain == ch && a.symbol == sym));
        if found.is_none() {
            c.err(path, format!("no asset {name:?} is configured (write chain:SYMBOL, e.g. \"eth-local:USDC\")"));
        }
        found
    }

    /// Parses `chain:address` into the chain and the canonical address.
    fn chain_address(&self, c: &mut Checker, text: &str, path: KeyPath) -> Option<(String, String)> {
        let Some((chain, address)) = text.split_once(':') else {
            c.err(
                path,
                format!(
                    "{text:?} must be written chain:address, e.g. \"eth-local:0x70997970C51812dc3A010C7d01b50e0d17dc79C8\""
                ),
            );
            return None;
        };
        let kind = self.chain(c, chain, path.clone())?;
        match kind.normalize_address(address) {
            Ok(a) => Some((chain.to_string(), a)),
            Err(e) => {
                c.err(path, e.to_string());
                None
            }
        }
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
    let mut refs = Refs::default();

    let server = server::server(&mut c, &raw, &root, &base_dir);
    let (chains, chain_settings) = chains::chains(&mut c, &raw.chain, &root, &mut refs);
    chains::assets(&mut c, &raw.asset, &root, &mut refs);
    parties::departments(&mut c, &raw.department, &root, &mut refs);
    let (wallets, wallet_keys) = parties::wallets(&mut c, &raw.wallet, &root, &base_dir, &mut refs);
    let agents = parties::agents(&mut c, &raw.agent, &root, &mut refs);
    let merchants = parties::merchants(&mut c, &raw.merchant, &root, &mut refs);
    let operators = parties::operators(&mut c, &raw.operator, &root, &mut refs);
    let roles = parties::roles(&mut c, raw.roles.as_ref(), &root, &refs);
    let policies = policies::policies(&mut c, &raw.policy, &root, server.timezone, &refs);
    let alerts = outputs::alerts(&mut c, &raw.alert, &root);
    let reports = outputs::reports(&mut c, &raw.report, &root);

    if !c.issues.is_empty() {
        return Err(c.issues);
    }
    let model = Model::new(
        raw.org.id.clone(),
        server.timezone,
        raw.org.on_unexplained_outflow.unwrap_or(OutflowAction::FreezeWallet),
        chains,
        refs.assets,
        raw.department.iter().map(|d| d.id.clone()).collect(),
        wallets,
        agents,
        merchants,
        policies,
        operators,
    );
    let x402 = crate::X402Settings {
        max_timeout: raw.x402.as_ref().and_then(|x| x.max_timeout).map_or(chrono::TimeDelta::minutes(5), |d| d.0),
    };
    Ok(Config {
        path: file.to_path_buf(),
        server,
        model,
        chains: chain_settings,
        wallet_keys,
        alerts,
        reports,
        roles,
        x402,
    })
}
