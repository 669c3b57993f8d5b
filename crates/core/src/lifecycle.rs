//! The spend lifecycle: one status per decision, and which transitions are legal.

use crate::usage::EntryState;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Where a decision stands (shared/ARCHITECTURE.md, "Spend lifecycle").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpendStatus {
    /// Denied by policy; never counted.
    Denied,
    /// Allowed; budget held, about to be signed.
    Reserved,
    /// DELAY tier; budget held until `execute_after`.
    Queued,
    /// APPROVAL tier; budget held until approved, rejected or expired.
    PendingApproval,
    /// Cancelled, rejected, expired or proven dead; budget returned.
    Released,
    /// Signed; raw transaction persisted, not yet known to be broadcast.
    Signed,
    /// Broadcast; waiting for the chain.
    Broadcast,
    /// Seen on chain and reconciled.
    Confirmed,
    /// Failed on chain or before it; budget returned (fees are booked by the watcher).
    Failed,
    /// External custody: authorized for the agent to pay from its own wallet; budget held
    /// until the auditor matches the payment (then confirmed), or the authorization expires or
    /// is revoked (then released).
    Authorized,
}

impl SpendStatus {
    /// Every status.
    pub const ALL: [SpendStatus; 10] = [
        SpendStatus::Denied,
        SpendStatus::Reserved,
        SpendStatus::Queued,
        SpendStatus::PendingApproval,
        SpendStatus::Released,
        SpendStatus::Signed,
        SpendStatus::Broadcast,
        SpendStatus::Confirmed,
        SpendStatus::Failed,
        SpendStatus::Authorized,
    ];

    /// The status as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            SpendStatus::Denied => "denied",
            SpendStatus::Reserved => "reserved",
            SpendStatus::Queued => "queued",
            SpendStatus::PendingApproval => "pending_approval",
            SpendStatus::Released => "released",
            SpendStatus::Signed => "signed",
            SpendStatus::Broadcast => "broadcast",
            SpendStatus::Confirmed => "confirmed",
            SpendStatus::Failed => "failed",
            SpendStatus::Authorized => "authorized",
        }
    }

    /// Parses [`SpendStatus::as_str`].
    pub fn parse(text: &str) -> Option<SpendStatus> {
        SpendStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// How a decision in this status counts against limits; `None` when it no longer does.
    pub fn counts_as(self) -> Option<EntryState> {
        match self {
            SpendStatus::Reserved | SpendStatus::Queued | SpendStatus::PendingApproval | SpendStatus::Authorized => {
                Some(EntryState::Reserved)
            }
            SpendStatus::Signed | SpendStatus::Broadcast | SpendStatus::Confirmed => Some(EntryState::Spent),
            SpendStatus::Denied | SpendStatus::Released | SpendStatus::Failed => None,
        }
    }

    /// Is `self → next` a legal transition?
    pub fn can_become(self, next: SpendStatus) -> bool {
        use SpendStatus::*;
        matches!(
            (self, next),
            (Reserved, Signed | Released | Failed | Authorized)
                | (Authorized, Confirmed | Released)
                | (Queued, Reserved | Signed | Released)
                | (PendingApproval, Reserved | Signed | Released)
                | (Signed, Broadcast | Failed | Released)
                | (Broadcast, Confirmed | Failed | Released | Signed)
                | (Confirmed, Broadcast | Authorized)
        )
    }
}

impl fmt::Display for SpendStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_and_terminal_ones_stay_put() {
        for s in SpendStatus::ALL {
            assert_eq!(SpendStatus::parse(s.as_str()), Some(s));
        }
        for terminal in [SpendStatus::Denied, SpendStatus::Released, SpendStatus::Failed] {
            assert!(SpendStatus::ALL.iter().all(|n| !terminal.can_become(*n)));
            assert_eq!(terminal.counts_as(), None);
        }
        assert!(SpendStatus::Queued.can_become(SpendStatus::Released));
        assert!(!SpendStatus::Released.can_become(SpendStatus::Reserved));
    }
}
