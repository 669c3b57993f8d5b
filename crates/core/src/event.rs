//! What operators are told about: the kinds of events the ledger records and alert channels
//! deliver.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The kind of an event. Every kind but [`EventKind::Reorg`] can be subscribed to by an
/// `[[alert]]` channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Money left a wallet with no decision behind it, or differently from its decision.
    UnexplainedOutflow,
    /// A scope was frozen.
    KillSwitch,
    /// A spend waits for an operator's approval.
    ApprovalRequested,
    /// A spend took a limit to 80 % or more.
    Limit80Percent,
    /// A NOTIFY-tier spend is being executed.
    NotifyTier,
    /// A chain's watcher makes no progress, or stopped at a reorg too deep to unwind.
    WatcherStalled,
    /// A wallet's configured assets fell below its `balance_low_usd`.
    BalanceLow,
    /// A broadcast spend was not seen on chain in time.
    MissingOutflow,
    /// A spend whose transaction expired unlanded was signed again.
    Resigned,
    /// Blocks the auditor had indexed left the canonical chain.
    Reorg,
    /// A chain answers as another chain than the ledger knows (its genesis changed, or it
    /// counts fewer transactions from a wallet than were confirmed): its wallets are frozen.
    ChainReset,
    /// An asset's live price became unusable (stale, unreachable, off its peg…): spends that
    /// need its USD value are denied `PRICE_UNAVAILABLE` until it is fresh again.
    PriceStale,
    /// A registered wallet's key signed an EIP-7702 delegation of its code to an address not
    /// in its `delegates`: `on_unexplained_outflow` is applied before any money moves.
    DelegationChanged,
    /// Money came into a registered wallet from an address not in its `refill_from`.
    UnexpectedInflow,
    /// A wallet's balance moved by more (or less) than the outflows and inflows recorded: money
    /// left in a way no transaction, log or trace showed. Handled like an unexplained outflow.
    UnexplainedBalanceChange,
}

impl EventKind {
    /// Every kind.
    pub const ALL: [EventKind; 15] = [
        EventKind::UnexplainedOutflow,
        EventKind::KillSwitch,
        EventKind::ApprovalRequested,
        EventKind::Limit80Percent,
        EventKind::NotifyTier,
        EventKind::WatcherStalled,
        EventKind::BalanceLow,
        EventKind::MissingOutflow,
        EventKind::Resigned,
        EventKind::Reorg,
        EventKind::ChainReset,
        EventKind::PriceStale,
        EventKind::DelegationChanged,
        EventKind::UnexpectedInflow,
        EventKind::UnexplainedBalanceChange,
    ];

    /// The kind as stored, subscribed to and sent.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::UnexplainedOutflow => "unexplained_outflow",
            EventKind::KillSwitch => "kill_switch",
            EventKind::ApprovalRequested => "approval_requested",
            EventKind::Limit80Percent => "limit_80_percent",
            EventKind::NotifyTier => "notify_tier",
            EventKind::WatcherStalled => "watcher_stalled",
            EventKind::BalanceLow => "balance_low",
            EventKind::MissingOutflow => "missing_outflow",
            EventKind::Resigned => "resigned",
            EventKind::Reorg => "reorg",
            EventKind::ChainReset => "chain_reset",
            EventKind::PriceStale => "price_stale",
            EventKind::DelegationChanged => "delegation_changed",
            EventKind::UnexpectedInflow => "unexpected_inflow",
            EventKind::UnexplainedBalanceChange => "unexplained_balance_change",
        }
    }

    /// Parses [`EventKind::as_str`].
    pub fn parse(text: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// Can an alert channel subscribe to it? (A reorg is reported in reports, not alerted.)
    pub fn alertable(self) -> bool {
        self != EventKind::Reorg
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(EventKind::parse("nope"), None);
        assert_eq!(EventKind::ALL.iter().filter(|k| k.alertable()).count(), 14);
    }
}
