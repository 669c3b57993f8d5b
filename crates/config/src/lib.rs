//! spendguard's configuration: parse the TOML file, validate every key and cross-reference, and
//! build the [`spendguard_core::Model`] the engine evaluates against.
//!
//! The format is shared/spec/spendguard.example.toml; see this crate's README for the rules
//! the spec leaves open. Errors name the file, the line and the key:
//!
//! ```text
//! spendguard.toml:74: policy[2].per_tx_usd: money must be a quoted decimal string, not a TOML float: write "200.5" (in quotes)
//! ```
//!
//! # Layout
//! - `raw.rs`: the file as written (serde, unknown keys refused, money only as strings).
//! - `validate/`: the raw file checked and turned into [`Config`], a module per part of the
//!   file (`server`, `chains`, `parties`, `policies`, `outputs`), collecting every problem.
//! - `locate.rs`: key paths and the line each stands on; `error.rs`: [`ConfigError`].
//! - here: [`Config`] and its settings types, [`AdminRoles`], the summary `check` prints and
//!   its [`Config::warnings`].
#![doc = include_str!("../README.md")]

mod error;
mod locate;
mod raw;
mod validate;

pub use error::{ConfigError, ConfigIssue, ConfigResult};
pub use raw::AlertKind;

use chrono::TimeDelta;
use chrono_tz::Tz;
use locate::{KeyPath, Locator};
use rust_decimal::Decimal;
use spendguard_core::model::ChainKind;
use spendguard_core::Model;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Formats a `[[report]]` can be written in.
pub const REPORT_FORMATS: &[&str] = &["json", "csv", "md", "html"];

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// `[server]`, with paths resolved against the file's directory.
    pub server: ServerConfig,
    /// Everything the policy engine needs.
    pub model: Model,
    /// Connection settings of each chain.
    pub chains: Vec<ChainSettings>,
    /// Where each wallet's key material is.
    pub wallet_keys: Vec<WalletKeys>,
    /// Alert channels.
    pub alerts: Vec<AlertConfig>,
    /// Scheduled reports.
    pub reports: Vec<ReportConfig>,
    /// Which operator roles may take each admin action.
    pub roles: AdminRoles,
    /// `[x402]`.
    pub x402: X402Settings,
}

/// `[x402]`: paying HTTP 402 challenges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct X402Settings {
    /// An authorization's `validBefore` is never later than now plus this, whatever the server
    /// asks (default 5 minutes).
    pub max_timeout: TimeDelta,
}

/// An action operators take through the admin API or the CLI, each allowed to the roles
/// `[roles]` names for it (approving and rejecting follow each policy's `approver_role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AdminAction {
    /// Read approvals, delays, freezes, status, exposures and reports.
    View,
    /// Freeze a scope.
    Freeze,
    /// Lift a freeze an operator set.
    Unfreeze,
    /// Lift a freeze the reconciler set (money left with no decision behind it).
    UnfreezeReconciler,
    /// Cancel a queued DELAY spend.
    CancelDelay,
    /// Decommission an agent.
    Decommission,
    /// Revoke an agent's tokens.
    RevokeAgent,
    /// Cancel an outstanding authorization (x402: on chain, with the wallet's key).
    CancelAuthorization,
}

impl AdminAction {
    /// Every action.
    pub const ALL: [AdminAction; 8] = [
        AdminAction::View,
        AdminAction::Freeze,
        AdminAction::Unfreeze,
        AdminAction::UnfreezeReconciler,
        AdminAction::CancelDelay,
        AdminAction::Decommission,
        AdminAction::RevokeAgent,
        AdminAction::CancelAuthorization,
    ];

    /// The action's key in `[roles]`.
    pub fn as_str(self) -> &'static str {
        match self {
            AdminAction::View => "view",
            AdminAction::Freeze => "freeze",
            AdminAction::Unfreeze => "unfreeze",
            AdminAction::UnfreezeReconciler => "unfreeze_reconciler",
            AdminAction::CancelDelay => "cancel_delay",
            AdminAction::Decommission => "decommission",
            AdminAction::RevokeAgent => "revoke_agent",
            AdminAction::CancelAuthorization => "cancel_authorization",
        }
    }

    /// The action in words, after "may" or "could".
    pub fn describe(self) -> &'static str {
        match self {
            AdminAction::View => "view approvals, delays, freezes, status and reports",
            AdminAction::Freeze => "freeze",
            AdminAction::Unfreeze => "unfreeze what an operator froze",
            AdminAction::UnfreezeReconciler => "unfreeze what the reconciler froze",
            AdminAction::CancelDelay => "cancel a queued spend",
            AdminAction::Decommission => "decommission an agent",
            AdminAction::RevokeAgent => "revoke an agent's tokens",
            AdminAction::CancelAuthorization => "cancel an outstanding authorization",
        }
    }
}

/// `[roles]` (an extension): the operator roles each admin action needs. Every action needs
/// one; by default `admin` for all of them, and viewing also `approver` or `viewer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminRoles {
    roles: std::collections::HashMap<AdminAction, Vec<String>>,
}

impl Default for AdminRoles {
    fn default() -> Self {
        let admin = || vec!["admin".to_string()];
        let roles = AdminAction::ALL
            .into_iter()
            .map(|a| match a {
                AdminAction::View => (a, vec!["admin".into(), "approver".into(), "viewer".into()]),
                _ => (a, admin()),
            })
            .collect();
        AdminRoles { roles }
    }
}

impl AdminRoles {
    /// The roles that may take `action` (any one of them suffices).
    pub fn for_action(&self, action: AdminAction) -> &[String] {
        self.roles.get(&action).map(Vec::as_slice).unwrap_or_default()
    }

    pub(crate) fn set(&mut self, action: AdminAction, roles: Vec<String>) {
        self.roles.insert(action, roles);
    }
}

/// Where the ledger lives: `[server] database`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// An SQLite file (a path, relative to the config file): the embedded default.
    Sqlite(PathBuf),
    /// A PostgreSQL database several daemons share (`postgres://user:password@host:port/db`).
    Postgres(String),
}

impl Database {
    /// What to call it in messages: the file, or the URL without its password.
    pub fn describe(&self) -> String {
        match self {
            Database::Sqlite(path) => path.display().to_string(),
            Database::Postgres(url) => redact_password(url),
        }
    }
}

/// `url` with the password of its user info, if any, replaced by `***`.
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let (authority, path) = rest.split_once('/').map_or((rest, None), |(a, p)| (a, Some(p)));
    let authority = match authority.rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => authority.to_string(),
        },
        None => authority.to_string(),
    };
    match path {
        Some(p) => format!("{scheme}://{authority}/{p}"),
        None => format!("{scheme}://{authority}"),
    }
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The ledger.
    pub database: Database,
    /// Daemon listen address.
    pub listen: SocketAddr,
    /// Default timezone.
    pub timezone: Tz,
    /// Where scheduled reports are written.
    pub reports_dir: PathBuf,
    /// Host names (or `host:port`) the HTTP routes answer to: a request whose `Host` is not
    /// one of them is refused, against DNS rebinding. Default: the loopback names and the
    /// listen address.
    pub allowed_hosts: Vec<String>,
    /// Browser origins (`scheme://host[:port]`) allowed to call `/mcp`; a request carrying any
    /// other `Origin` is refused. Default: none (agents are not browsers).
    pub allowed_origins: Vec<String>,
    /// The Ed25519 key spendguard signs external wallets' authorizations with (created on
    /// first use, readable by its owner only); default `authority.key` beside the config.
    pub authority_key: PathBuf,
    /// How long a daemon's hold on watching a chain lasts unless renewed (each poll renews it):
    /// of several daemons sharing the ledger, one watches each chain, and when it dies another
    /// takes over once this has passed. Default 30s.
    pub watcher_lease: chrono::TimeDelta,
}

/// The names of this machine that `[server] allowed_hosts` holds by default.
pub(crate) const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Solana commitment level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commitment {
    /// Voted on by a supermajority.
    Confirmed,
    /// Rooted.
    Finalized,
}

/// How to reach and watch one chain.
#[derive(Debug, Clone)]
pub struct ChainSettings {
    /// Chain id in the config.
    pub id: String,
    /// Family.
    pub kind: ChainKind,
    /// EVM chain id.
    pub chain_id: Option<u64>,
    /// RPC URLs in failover order.
    pub rpc: Vec<String>,
    /// Blocks behind head considered final (EVM).
    pub confirmations: u64,
    /// Watcher poll interval.
    pub poll_interval: TimeDelta,
    /// First block indexed (EVM).
    pub start_block: u64,
    /// Fee cap in gwei (EVM).
    pub max_fee_per_gas_gwei: Option<Decimal>,
    /// Commitment (Solana).
    pub commitment: Commitment,
    /// How long one RPC call may take before it counts as failed and is retried (extension).
    pub rpc_timeout: TimeDelta,
    /// Deepest reorg the watcher unwinds by itself; a deeper one stops it with an alert
    /// (extension).
    pub max_reorg_depth: u64,
    /// How long the watcher may make no progress towards the final head before a
    /// `watcher_stalled` alert (extension).
    pub stall_after: TimeDelta,
    /// How long a broadcast spend may go unseen on chain before it is reported missing
    /// (extension).
    pub missing_after: TimeDelta,
    /// How long a balance read answers `evaluate` (dry runs) before the chain is asked again;
    /// zero asks on every call. `spend` always reads the chain (extension).
    pub balance_max_age: TimeDelta,
    /// Check balance conservation after each watcher pass.
    pub balance_conservation: bool,
    /// EVM: the watcher reads this many final blocks at once as a range — the registered
    /// wallets' nonce, native balance and code at its ends and the token transfers naming
    /// them in it — reading its blocks one by one only when something of theirs moved; 0 reads
    /// every block (extension).
    pub range_blocks: u64,
    /// EVM: a range is read once `range_blocks` final blocks wait, or when the oldest has
    /// waited this long; zero reads fewer waiting blocks one by one at once (extension).
    pub range_wait: TimeDelta,
}

/// Gas an external wallet's payment may use when its fee is held to the chain's fee cap: a
/// native transfer takes 21,000 and a token transfer about 35,000–65,000; the rest is room for
/// tokens with hooks.
pub const EXTERNAL_PAYMENT_GAS: u64 = 200_000;

impl ChainSettings {
    /// Most the fee of an external wallet's own payment may cost, in native units, before it
    /// is reported `fee_over_cap`: EVM, [`EXTERNAL_PAYMENT_GAS`] at `max_fee_per_gas_gwei`
    /// (none when the chain sets no cap); Solana, 0.005 SOL — the base fee, a priority fee and
    /// the rent of one new token account (0.00203928 SOL).
    pub fn external_fee_cap(&self) -> Option<Decimal> {
        match self.kind {
            ChainKind::Evm => self
                .max_fee_per_gas_gwei
                .map(|gwei| gwei * Decimal::from(EXTERNAL_PAYMENT_GAS) / Decimal::from(1_000_000_000u64)),
            ChainKind::Solana => Some(Decimal::new(5, 3)),
        }
    }
}

/// Key material of one wallet (paths resolved against the config's directory).
#[derive(Debug, Clone)]
pub struct WalletKeys {
    /// Wallet id.
    pub wallet: String,
    /// Web3 Secret Storage file (EVM).
    pub keystore: Option<PathBuf>,
    /// Environment variable holding the password.
    pub password_env: Option<String>,
    /// Solana keypair file.
    pub keypair: Option<PathBuf>,
    /// Below this USD value of its configured assets the wallet raises `balance_low`
    /// (extension).
    pub balance_low_usd: Option<Decimal>,
}

/// One `[[alert]]` channel.
#[derive(Debug, Clone)]
pub struct AlertConfig {
    /// Identifier.
    pub id: String,
    /// Payload format.
    pub kind: AlertKind,
    /// Environment variable holding the URL (a secret).
    pub url_env: String,
    /// Subscribed events.
    pub events: Vec<spendguard_core::EventKind>,
}

/// One `[[report]]`.
#[derive(Debug, Clone)]
pub struct ReportConfig {
    /// Identifier.
    pub id: String,
    /// Cron schedule.
    pub schedule: cron::Schedule,
    /// Output formats.
    pub formats: Vec<String>,
}

/// Reads and validates a configuration file.
pub fn load(path: &Path) -> ConfigResult<Config> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::Read { path: path.to_path_buf(), message: e.to_string() })?;
    parse(&text, path)
}

/// Validates configuration text; `path` names it in errors and anchors relative paths.
pub fn parse(text: &str, path: &Path) -> ConfigResult<Config> {
    let locator = Locator::new(text);
    let invalid = |issues: Vec<ConfigIssue>| ConfigError::Invalid { path: path.to_path_buf(), issues };
    let raw: raw::RawConfig = match serde_path_to_error::deserialize(toml::Deserializer::new(text)) {
        Ok(raw) => raw,
        Err(e) => {
            let key = KeyPath::from_serde(e.path());
            let inner = e.inner();
            // A missing top-level table has no line of its own; the span would be the whole file.
            let at_root = key.to_string().is_empty() && inner.message().starts_with("missing field");
            let line = if at_root {
                None
            } else {
                inner.span().map(|s| locator.line_at(s.start)).or_else(|| locator.line_of(&key))
            };
            // No key at all and not a missing table: the text is not TOML where the line says.
            let message = match key.to_string().is_empty() && !at_root {
                true => format!("not valid TOML: {}", inner.message()),
                false => inner.message().to_string(),
            };
            return Err(invalid(vec![ConfigIssue { line, key: key.to_string(), message }]));
        }
    };
    validate::build(raw, path).map_err(|issues| {
        let mut issues: Vec<ConfigIssue> = issues
            .into_iter()
            .map(|(key, message)| ConfigIssue { line: locator.line_of(&key), key: key.to_string(), message })
            .collect();
        issues.sort_by_key(|i| i.line.unwrap_or(0));
        invalid(issues)
    })
}

impl Config {
    /// A short human summary for `spendguard check`.
    pub fn summary(&self) -> String {
        let m = &self.model;
        let mut out = format!(
            "{}: valid\norg {} ({} departments), database {}\n",
            self.path.display(),
            m.org_id,
            m.departments.len(),
            self.server.database.describe()
        );
        out.push_str(&format!("chains ({}):\n", m.chains.len()));
        for c in &self.chains {
            let assets: Vec<String> = m.assets_on(&c.id).map(|a| a.symbol.clone()).collect();
            out.push_str(&format!("  {} [{}] assets {}\n", c.id, c.kind, assets.join(", ")));
        }
        out.push_str(&format!("wallets ({}):\n", m.wallets.len()));
        for w in &m.wallets {
            let users: Vec<&str> = m.agents_of_wallet(&w.id).map(|a| a.id.as_str()).collect();
            out.push_str(&format!("  {} on {} {} used by {}\n", w.id, w.chain, w.address, list_or_none(&users)));
        }
        out.push_str(&format!("agents ({}):\n", m.agents.len()));
        for a in &m.agents {
            let dept = a.department.as_deref().unwrap_or("no department");
            out.push_str(&format!(
                "  {} ({dept}) wallets {}\n",
                a.id,
                list_or_none(&a.wallets.iter().map(String::as_str).collect::<Vec<_>>())
            ));
        }
        out.push_str(&format!("policies ({}):\n", m.policies.len()));
        for p in &m.policies {
            let mut parts = vec![];
            if let Some(cap) = p.per_tx_usd {
                parts.push(format!("per-tx {cap} USD"));
            }
            if !p.limits.is_empty() {
                parts.push(format!("{} limits", p.limits.len()));
            }
            if p.schedule.is_some() {
                parts.push("schedule".into());
            }
            if p.tiers.is_some() {
                parts.push("tiers".into());
            }
            if let Some(r) = &p.recipients {
                parts.push(format!("{} recipient rules", r.rules.len()));
            }
            if !p.operations.is_empty() {
                parts.push(format!("{} operations", p.operations.len()));
            }
            out.push_str(&format!(
                "  {} on {}: {}\n",
                p.id,
                p.scope,
                list_or_none(&parts.iter().map(String::as_str).collect::<Vec<_>>())
            ));
        }
        out.push_str(&format!(
            "merchants {}, operators {}, alert channels {}, reports {}\n",
            m.merchants.len(),
            m.operators.len(),
            self.alerts.len(),
            self.reports.len()
        ));
        out
    }

    /// What is valid but probably not meant: agents and wallets no policy with a limit covers
    /// (their spends are denied `NO_POLICY`).
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings: Vec<String> = self
            .model
            .uncovered()
            .into_iter()
            .map(|(a, w)| {
                format!(
                    "agent {} spending from wallet {}: no policy with a limit (per_tx_usd or limits) covers it, so \
                     its spends are denied (NO_POLICY); add a [[policy]] for agent:{}, wallet:{}, its department or the org",
                    a.id, w.id, a.id, w.id
                )
            })
            .collect();
        let loopback = |h: &String| LOOPBACK_HOSTS.contains(&h.as_str());
        if self.server.listen.ip().is_unspecified() && self.server.allowed_hosts.iter().all(loopback) {
            warnings.push(format!(
                "[server] listen = \"{}\" accepts connections on every interface, but only requests addressed to \
                 localhost are answered; list the names clients use in [server] allowed_hosts",
                self.server.listen
            ));
        }
        warnings
    }

    /// Key material of a wallet.
    pub fn wallet_keys(&self, wallet: &str) -> Option<&WalletKeys> {
        self.wallet_keys.iter().find(|k| k.wallet == wallet)
    }

    /// Connection settings of a chain.
    pub fn chain_settings(&self, chain: &str) -> Option<&ChainSettings> {
        self.chains.iter().find(|c| c.id == chain)
    }
}

fn list_or_none(items: &[&str]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}
