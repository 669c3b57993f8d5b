//! The organisation as spendguard sees it: chains, assets, wallets, agents, merchants, policies.
//!
//! These are plain values built by `spendguard-config` after validation; lookups return
//! `Option` so that a stale identifier (say, from an old ledger row) is never a panic.

pub use crate::address::{eip55_address, AddressError};
use crate::decision::HeadroomLabels;
use crate::fast_map::FastMap;
use crate::time::{Schedule, Window};
use crate::usage::{UsageKey, UsageSpec};
use chrono::TimeDelta;
use chrono_tz::Tz;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The family of a chain, which decides address format and how money moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChainKind {
    /// Ethereum and EVM-compatible chains.
    Evm,
    /// Solana.
    Solana,
}

impl fmt::Display for ChainKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChainKind::Evm => "evm",
            ChainKind::Solana => "solana",
        })
    }
}

/// A chain spendguard spends on and watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// Configured identifier, e.g. `eth-local`.
    pub id: String,
    /// Family of the chain.
    pub kind: ChainKind,
}

/// An asset on one chain: the native coin (no token address) or a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asset {
    /// Chain the asset lives on.
    pub chain: String,
    /// Symbol, unique per chain.
    pub symbol: String,
    /// ERC-20 contract or SPL mint; `None` for the native asset.
    pub token: Option<String>,
    /// Decimals of the base unit.
    pub decimals: u32,
    /// How the asset is valued in USD.
    pub price: crate::price::AssetPrice,
}

impl Asset {
    /// The asset's global name, `chain:SYMBOL`.
    pub fn key(&self) -> String {
        asset_key(&self.chain, &self.symbol)
    }

    /// Whether `key` (`chain:SYMBOL`) names this asset.
    pub fn is_named(&self, key: &str) -> bool {
        key.split_once(':').is_some_and(|(chain, symbol)| chain == self.chain && symbol == self.symbol)
    }
}

/// Builds the global name of an asset, `chain:SYMBOL`.
pub fn asset_key(chain: &str, symbol: &str) -> String {
    // Built by hand rather than with `format!`: every evaluation builds one.
    let mut key = String::with_capacity(chain.len() + 1 + symbol.len());
    key.push_str(chain);
    key.push(':');
    key.push_str(symbol);
    key
}

/// A custodial wallet on one chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wallet {
    /// Configured identifier.
    pub id: String,
    /// Chain the wallet lives on.
    pub chain: String,
    /// Canonical address (see [`ChainKind::normalize_address`]).
    pub address: String,
    /// EVM: the addresses its code may be delegated to (EIP-7702), canonical.
    pub delegates: Vec<String>,
    /// The addresses its refills are expected from, canonical; an inflow from any other is
    /// reported as `unexpected_inflow`.
    pub refill_from: Vec<String>,
    /// Who holds its key.
    pub custody: Custody,
}

/// Who holds a wallet's key, and so how an allowed spend is carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Custody {
    /// spendguard: it signs and broadcasts the transfer itself.
    Spendguard,
    /// The agent (its own MetaMask, CDP, Privy… wallet): spendguard authorizes the spend and
    /// the agent pays; the auditor matches what leaves to the open authorizations.
    External {
        /// How long an authorization waits for the agent's payment.
        authorization_ttl: TimeDelta,
    },
}

impl Wallet {
    /// Does the agent pay from this wallet itself, after an authorization?
    pub fn is_external(&self) -> bool {
        matches!(self.custody, Custody::External { .. })
    }
}

/// An LLM agent allowed to spend from some wallets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    /// Configured identifier.
    pub id: String,
    /// Department the agent belongs to, if any.
    pub department: Option<String>,
    /// Wallets the agent may use.
    pub wallets: Vec<String>,
}

/// A known counterparty, recognised by its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merchant {
    /// Configured identifier, e.g. `mer_github`.
    pub id: String,
    /// Category, e.g. `saas` or `gambling`.
    pub category: Option<String>,
    /// `(chain, canonical address)` pairs.
    pub addresses: Vec<(String, String)>,
}

/// What a policy attaches to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// The whole organisation.
    Org,
    /// One department: all its agents.
    Department(String),
    /// One agent: all its wallets on all chains.
    Agent(String),
    /// One wallet: all agents using it.
    Wallet(String),
}

impl Scope {
    /// Parses `org`, `department:ID`, `agent:ID` or `wallet:ID`.
    pub fn parse(text: &str) -> Option<Scope> {
        if text == "org" {
            return Some(Scope::Org);
        }
        let (kind, id) = text.split_once(':')?;
        if id.is_empty() {
            return None;
        }
        match kind {
            "department" => Some(Scope::Department(id.to_string())),
            "agent" => Some(Scope::Agent(id.to_string())),
            "wallet" => Some(Scope::Wallet(id.to_string())),
            _ => None,
        }
    }

    /// The scope's kind as a word: `org`, `department`, `agent` or `wallet`.
    pub fn kind(&self) -> &'static str {
        match self {
            Scope::Org => "org",
            Scope::Department(_) => "department",
            Scope::Agent(_) => "agent",
            Scope::Wallet(_) => "wallet",
        }
    }

    /// The scope's identifier; the org's is empty.
    pub fn id(&self) -> &str {
        match self {
            Scope::Org => "",
            Scope::Department(id) | Scope::Agent(id) | Scope::Wallet(id) => id,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Org => f.write_str("org"),
            other => write!(f, "{}:{}", other.kind(), other.id()),
        }
    }
}

/// What a limit measures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Measure {
    /// USD value at the configured price.
    Usd(Decimal),
    /// Units of one asset.
    Amount(Decimal),
    /// Number of spends (velocity).
    Count(u64),
    /// Fraction of the wallet's current balance of the spent asset.
    BalanceFraction(Decimal),
}

/// One limit: a measure over a window, optionally restricted to one asset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// Window the measure sums over.
    pub window: Window,
    /// What is limited, and to how much.
    pub measure: Measure,
    /// Only spends of this asset (`chain:SYMBOL`) count, and only they are checked.
    pub asset: Option<String>,
}

/// Tier thresholds of a policy. A spend takes the first tier whose maximum it does not exceed;
/// above every configured maximum it needs approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tiers {
    /// Largest USD value executed at once.
    pub instant_max_usd: Option<Decimal>,
    /// Largest USD value executed at once with a notification.
    pub notify_max_usd: Option<Decimal>,
    /// Largest USD value executed after [`Tiers::delay`].
    pub delay_max_usd: Option<Decimal>,
    /// How long a DELAY spend waits (cancellable meanwhile).
    pub delay: TimeDelta,
    /// Role an operator must hold to approve.
    pub approver_role: Option<String>,
    /// How long an approval request stays open.
    pub approval_ttl: TimeDelta,
}

/// What a recipient rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecipientAction {
    /// The recipient may be paid.
    Allow,
    /// The recipient may not be paid.
    Block,
    /// Paying the recipient needs an approval.
    RequireApproval,
}

/// What a recipient rule matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientMatch {
    /// Any recipient whose merchant has this category.
    Category(String),
    /// One merchant's addresses.
    Merchant(String),
    /// One address on one chain (canonical form).
    Address {
        /// Chain of the address.
        chain: String,
        /// Canonical address.
        address: String,
    },
    /// The host of the resource an x402 payment buys (lower case).
    Domain(String),
}

/// One recipient rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientRule {
    /// What it matches.
    pub matcher: RecipientMatch,
    /// What it does on a match.
    pub action: RecipientAction,
    /// Largest USD value of one spend to a matching recipient.
    pub per_tx_cap_usd: Option<Decimal>,
}

/// Recipient rules of a policy: the first matching rule wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientRules {
    /// Action when no rule matches.
    pub default_action: RecipientAction,
    /// Rules in order.
    pub rules: Vec<RecipientRule>,
}

/// A named operation with its own budget (e.g. `refund`, `payroll`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// Name the agent gives.
    pub name: String,
    /// Largest USD value of one spend for this operation.
    pub per_tx_usd: Option<Decimal>,
    /// Limits summing only this operation's spends.
    pub limits: Vec<Limit>,
}

/// Rules attached to a scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Configured identifier.
    pub id: String,
    /// What the policy covers.
    pub scope: Scope,
    /// Timezone of calendar windows.
    pub timezone: Tz,
    /// Largest USD value of one spend.
    pub per_tx_usd: Option<Decimal>,
    /// Window limits.
    pub limits: Vec<Limit>,
    /// Allowed chains, if restricted.
    pub chains: Option<Vec<String>>,
    /// Allowed assets (`chain:SYMBOL`), if restricted.
    pub assets: Option<Vec<String>>,
    /// When spending is allowed, if restricted.
    pub schedule: Option<Schedule>,
    /// Tier thresholds; without them every allowed spend is INSTANT.
    pub tiers: Option<Tiers>,
    /// Recipient rules, if any.
    pub recipients: Option<RecipientRules>,
    /// Operation budgets; when present, a spend must name one of them.
    pub operations: Vec<Operation>,
}

impl Policy {
    /// Does the policy bound spending: a per-transaction cap or a window limit, of its own or of
    /// an operation? (Tiers, allowlists and schedules shape spending but bound no total.)
    pub fn has_limit(&self) -> bool {
        self.per_tx_usd.is_some()
            || !self.limits.is_empty()
            || self.operations.iter().any(|o| o.per_tx_usd.is_some() || !o.limits.is_empty())
    }
}

/// A person who operates spendguard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    /// Identifier, usually an e-mail address.
    pub id: String,
    /// Roles held, e.g. `admin`, `approver`.
    pub roles: Vec<String>,
}

/// What the reconciler does on an unexplained or mismatched outflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutflowAction {
    /// Freeze the wallet the money left.
    FreezeWallet,
    /// Freeze the wallet and every agent using it.
    FreezeWalletAgents,
    /// Freeze the whole organisation.
    FreezeOrg,
    /// Only alert.
    AlertOnly,
}

/// The whole organisation: every definition the engine consults, with lookup indices.
#[derive(Debug, Clone)]
pub struct Model {
    /// Organisation identifier.
    pub org_id: String,
    /// Default timezone.
    pub timezone: Tz,
    /// Reaction to unexplained outflows.
    pub on_unexplained_outflow: OutflowAction,
    /// Chains.
    pub chains: Vec<Chain>,
    /// Assets.
    pub assets: Vec<Asset>,
    /// Department identifiers.
    pub departments: Vec<String>,
    /// Wallets.
    pub wallets: Vec<Wallet>,
    /// Agents.
    pub agents: Vec<Agent>,
    /// Merchants.
    pub merchants: Vec<Merchant>,
    /// Policies, in configuration order.
    pub policies: Vec<Policy>,
    /// Operators.
    pub operators: Vec<Operator>,
    merchant_by_address: FastMap<String, FastMap<String, usize>>,
    plans: Vec<PolicyPlan>,
}

/// What the engine needs of each limit of a policy beyond the limit itself, made once per
/// model rather than once per request.
#[derive(Debug, Clone)]
pub struct PolicyPlan {
    /// One per `limits` entry.
    pub limits: Vec<LimitPlan>,
    /// One list per operation, one entry per limit of it.
    pub operations: Vec<Vec<LimitPlan>>,
}

/// One limit's headroom labels and the usage it sums.
#[derive(Debug, Clone, Copy)]
pub struct LimitPlan {
    /// Labels of the limit's headroom.
    pub labels: &'static HeadroomLabels,
    /// The usage the limit sums in the policy's scope (a balance fraction sums the wallet's
    /// usage of the spent asset instead, whose spec the engine looks up per request).
    pub usage: UsageKey,
    /// The limit's window (in the policy's timezone) numbered among the distinct windows of the
    /// model's policies: an evaluation works each start out once, by this number.
    pub window: usize,
    /// The only asset the limit checks, by its place in [`Model::assets`] (compared per limit
    /// as a number rather than as a name); an asset the model does not configure gets a place
    /// no spend's asset has. `None`: every asset.
    pub asset: Option<usize>,
}

fn limit_plans(
    policy: &Policy,
    operation: Option<&str>,
    limits: &[Limit],
    assets: &[Asset],
    windows: &mut Vec<(Window, Tz)>,
) -> Vec<LimitPlan> {
    let prefix = operation.map(|o| format!("operation[{o}].")).unwrap_or_default();
    limits
        .iter()
        .enumerate()
        .map(|(i, l)| LimitPlan {
            labels: HeadroomLabels {
                policy_id: policy.id.clone(),
                rule: format!("{prefix}limits[{i}]"),
                scope: policy.scope.to_string(),
                window: l.window.to_string(),
                // A balance fraction is the wallet's, in the spent asset: the engine fills
                // scope and unit in per request when they are not fixed here.
                unit: match (&l.measure, &l.asset) {
                    (Measure::Usd(_), _) => "USD".into(),
                    (Measure::Count(_), _) => "count".into(),
                    (_, Some(asset)) => asset.clone(),
                    (_, None) => String::new(),
                },
            }
            .intern(),
            usage: UsageSpec::of(l.window, policy.timezone, l.asset.as_deref(), operation),
            window: {
                // A rolling window starts at the same instant in every timezone.
                let window = (l.window, if l.window.is_rolling() { Tz::UTC } else { policy.timezone });
                windows.iter().position(|w| *w == window).unwrap_or_else(|| {
                    windows.push(window);
                    windows.len() - 1
                })
            },
            asset: l.asset.as_deref().map(|key| assets.iter().position(|a| a.is_named(key)).unwrap_or(usize::MAX)),
        })
        .collect()
}

impl Model {
    /// Assembles a model. Cross-references are expected to be valid (the config crate checks
    /// them); lookups of anything missing simply return `None`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        org_id: String,
        timezone: Tz,
        on_unexplained_outflow: OutflowAction,
        chains: Vec<Chain>,
        assets: Vec<Asset>,
        departments: Vec<String>,
        wallets: Vec<Wallet>,
        agents: Vec<Agent>,
        merchants: Vec<Merchant>,
        policies: Vec<Policy>,
        operators: Vec<Operator>,
    ) -> Model {
        let mut merchant_by_address: FastMap<String, FastMap<String, usize>> = FastMap::default();
        for (i, m) in merchants.iter().enumerate() {
            for (chain, address) in &m.addresses {
                merchant_by_address.entry(chain.clone()).or_default().entry(address.clone()).or_insert(i);
            }
        }
        let mut windows = vec![];
        let plans = policies
            .iter()
            .map(|p| PolicyPlan {
                limits: limit_plans(p, None, &p.limits, &assets, &mut windows),
                operations: p
                    .operations
                    .iter()
                    .map(|o| limit_plans(p, Some(&o.name), &o.limits, &assets, &mut windows))
                    .collect(),
            })
            .collect();
        Model {
            org_id,
            timezone,
            on_unexplained_outflow,
            chains,
            assets,
            departments,
            wallets,
            agents,
            merchants,
            policies,
            operators,
            merchant_by_address,
            plans,
        }
    }

    /// Policies with what the engine precomputes of their limits.
    pub fn policies_with_plans(&self) -> impl Iterator<Item = (&Policy, &PolicyPlan)> {
        self.policies.iter().zip(&self.plans)
    }

    /// The chain with this identifier.
    pub fn chain(&self, id: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.id == id)
    }

    /// The wallet with this identifier.
    pub fn wallet(&self, id: &str) -> Option<&Wallet> {
        self.wallets.iter().find(|w| w.id == id)
    }

    /// The agent with this identifier.
    pub fn agent(&self, id: &str) -> Option<&Agent> {
        self.agents.iter().find(|a| a.id == id)
    }

    /// The asset with this symbol on this chain.
    pub fn asset(&self, chain: &str, symbol: &str) -> Option<&Asset> {
        self.asset_place(chain, symbol).map(|i| &self.assets[i])
    }

    /// The place in [`Model::assets`] of the asset with this symbol on this chain.
    pub fn asset_place(&self, chain: &str, symbol: &str) -> Option<usize> {
        self.assets.iter().position(|a| a.chain == chain && a.symbol == symbol)
    }

    /// The native asset of a chain (the one without a token address).
    pub fn native_asset(&self, chain: &str) -> Option<&Asset> {
        self.native_asset_place(chain).map(|i| &self.assets[i])
    }

    /// The place in [`Model::assets`] of a chain's native asset.
    pub fn native_asset_place(&self, chain: &str) -> Option<usize> {
        self.assets.iter().position(|a| a.chain == chain && a.token.is_none())
    }

    /// Every asset configured on a chain.
    pub fn assets_on<'a>(&'a self, chain: &'a str) -> impl Iterator<Item = &'a Asset> + 'a {
        self.assets.iter().filter(move |a| a.chain == chain)
    }

    /// The merchant registered for a canonical address on a chain.
    pub fn merchant_at(&self, chain: &str, address: &str) -> Option<&Merchant> {
        self.merchant_by_address.get(chain).and_then(|m| m.get(address)).map(|&i| &self.merchants[i])
    }

    /// The merchant with this identifier.
    pub fn merchant(&self, id: &str) -> Option<&Merchant> {
        self.merchants.iter().find(|m| m.id == id)
    }

    /// The agents assigned to a wallet.
    pub fn agents_of_wallet<'a>(&'a self, wallet: &'a str) -> impl Iterator<Item = &'a Agent> + 'a {
        self.agents.iter().filter(move |a| a.wallets.iter().any(|w| w == wallet))
    }

    /// The operator with this identifier.
    pub fn operator(&self, id: &str) -> Option<&Operator> {
        self.operators.iter().find(|o| o.id == id)
    }

    /// Is a spend by `agent` from `wallet` bounded by at least one policy with a limit over one
    /// of the scopes that cover it? Spends that are not are denied (`NO_POLICY`).
    pub fn limits_cover(&self, agent: &Agent, wallet: &Wallet) -> bool {
        let scopes = crate::engine::covering_scopes(agent, wallet);
        self.policies.iter().any(|p| p.has_limit() && scopes.contains(&p.scope))
    }

    /// Every (agent, wallet) pair no policy with a limit covers: spends there are denied.
    pub fn uncovered(&self) -> Vec<(&Agent, &Wallet)> {
        self.agents
            .iter()
            .flat_map(|a| a.wallets.iter().filter_map(|w| self.wallet(w)).map(move |w| (a, w)))
            .filter(|(a, w)| !self.limits_cover(a, w))
            .collect()
    }

    /// Does this scope name something that exists?
    pub fn scope_exists(&self, scope: &Scope) -> bool {
        match scope {
            Scope::Org => true,
            Scope::Department(id) => self.departments.iter().any(|d| d == id),
            Scope::Agent(id) => self.agent(id).is_some(),
            Scope::Wallet(id) => self.wallet(id).is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse() {
        assert_eq!(Scope::parse("org"), Some(Scope::Org));
        assert_eq!(Scope::parse("agent:bot"), Some(Scope::Agent("bot".into())));
        assert_eq!(Scope::parse("agent:"), None);
        assert_eq!(Scope::parse("team:x"), None);
        assert_eq!(Scope::Wallet("w".into()).to_string(), "wallet:w");
    }
}
