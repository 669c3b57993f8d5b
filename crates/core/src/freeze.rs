//! Kill-switch rules: which scopes are frozen, by whom, when and why; which scopes an
//! unexplained outflow or a decommissioned agent freezes.

use crate::model::{Agent, Model, OutflowAction, Scope, Wallet};
use crate::reconcile::Class;
use chrono::{DateTime, SecondsFormat, Utc};

/// A frozen scope. Every spend it covers is denied with `KILL_SWITCH`; reads still work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freeze {
    /// What is frozen.
    pub scope: Scope,
    /// Operator, or `reconciler` when the chain watcher tripped it.
    pub frozen_by: String,
    /// Why.
    pub reason: String,
    /// When.
    pub frozen_at: DateTime<Utc>,
    /// Evidence (for automatic freezes: tx hash, block, amount, recipient).
    pub evidence: Option<String>,
}

impl Freeze {
    /// One sentence for a `KILL_SWITCH` reason.
    pub fn describe(&self) -> String {
        let what = match &self.scope {
            Scope::Org => "the organisation is".to_string(),
            other => format!("{} {} is", other.kind(), other.id()),
        };
        let mut text = format!(
            "{what} frozen by {} since {}: {}",
            self.frozen_by,
            self.frozen_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            self.reason
        );
        if let Some(evidence) = &self.evidence {
            text.push_str(&format!(" (evidence: {evidence})"));
        }
        text
    }
}

/// The first of `freezes` that covers a spend by `agent` from `wallet` (its org, department,
/// agent or wallet), if any.
pub fn covering<'a>(freezes: &'a [Freeze], agent: &Agent, wallet: &Wallet) -> Option<&'a Freeze> {
    freezes.iter().find(|f| crate::engine::covers(&f.scope, agent, wallet))
}

/// The external wallets (custody with the agent's own vendor) a freeze of `scope` covers: the
/// kill-switch alert names them, since spendguard cannot stop their keys — operators freeze
/// them at the vendor too.
pub fn external_wallets_in<'a>(model: &'a Model, scope: &Scope) -> Vec<&'a Wallet> {
    let used_by = |wallet: &str, pred: &dyn Fn(&Agent) -> bool| model.agents_of_wallet(wallet).any(pred);
    model
        .wallets
        .iter()
        .filter(|w| w.is_external())
        .filter(|w| match scope {
            Scope::Org => true,
            Scope::Wallet(id) => &w.id == id,
            Scope::Agent(id) => used_by(&w.id, &|a| &a.id == id),
            Scope::Department(d) => used_by(&w.id, &|a| a.department.as_ref() == Some(d)),
        })
        .collect()
}

/// The scopes an outflow of `class` leaving `wallet` freezes under the organisation's
/// `on_unexplained_outflow`: none for classes that do not trip the kill switch.
pub fn scopes_for_outflow(model: &Model, class: Class, wallet: &str) -> Vec<Scope> {
    if !class.trips_kill_switch() {
        return vec![];
    }
    match model.on_unexplained_outflow {
        OutflowAction::AlertOnly => vec![],
        OutflowAction::FreezeOrg => vec![Scope::Org],
        OutflowAction::FreezeWallet => vec![Scope::Wallet(wallet.to_string())],
        OutflowAction::FreezeWalletAgents => std::iter::once(Scope::Wallet(wallet.to_string()))
            .chain(model.agents_of_wallet(wallet).map(|a| Scope::Agent(a.id.clone())))
            .collect(),
    }
}

/// The scopes decommissioning `agent` freezes: the agent, and every wallet no other agent uses.
pub fn scopes_for_decommission(model: &Model, agent: &str) -> Vec<Scope> {
    let Some(a) = model.agent(agent) else { return vec![] };
    std::iter::once(Scope::Agent(agent.to_string()))
        .chain(
            a.wallets
                .iter()
                .filter(|w| model.agents_of_wallet(w).all(|other| other.id == agent))
                .map(|w| Scope::Wallet(w.clone())),
        )
        .collect()
}

/// The scopes a chain found reset (another genesis, or fewer transactions than the ledger saw
/// confirmed) freezes: every wallet on it, since nonces and balances the ledger holds for them
/// no longer describe that chain.
pub fn scopes_for_chain_reset(model: &Model, chain: &str) -> Vec<Scope> {
    model.wallets.iter().filter(|w| w.chain == chain).map(|w| Scope::Wallet(w.id.clone())).collect()
}
