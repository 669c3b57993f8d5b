//! The outcome of evaluating a spend: decision, tier, reasons with stable codes, headroom.

use crate::model::ChainKind;
use crate::money::DecimalText;
use crate::price::{PriceProblem, Valuation};
use chrono::TimeDelta;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fmt;
use std::sync::{LazyLock, Mutex, PoisonError};

/// What happens to a spend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Execute at once.
    Allow,
    /// Execute at once and notify.
    Notify,
    /// Execute after a delay, cancellable meanwhile.
    Delay,
    /// Execute once an approver approves.
    RequireApproval,
    /// Never execute.
    Deny,
}

impl Decision {
    /// The decision as written in JSON and the ledger.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Notify => "notify",
            Decision::Delay => "delay",
            Decision::RequireApproval => "require_approval",
            Decision::Deny => "deny",
        }
    }

    /// Parses [`Decision::as_str`].
    pub fn parse(text: &str) -> Option<Decision> {
        [Decision::Allow, Decision::Notify, Decision::Delay, Decision::RequireApproval, Decision::Deny]
            .into_iter()
            .find(|d| d.as_str() == text)
    }
}

/// How much scrutiny an allowed spend gets; ordered from least to most strict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Tier {
    /// Execute at once.
    Instant,
    /// Execute at once, and notify.
    Notify,
    /// Execute after a delay.
    Delay,
    /// Execute after approval.
    Approval,
}

impl Tier {
    /// The tier as written in JSON and the ledger.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Instant => "INSTANT",
            Tier::Notify => "NOTIFY",
            Tier::Delay => "DELAY",
            Tier::Approval => "APPROVAL",
        }
    }

    /// Parses [`Tier::as_str`].
    pub fn parse(text: &str) -> Option<Tier> {
        [Tier::Instant, Tier::Notify, Tier::Delay, Tier::Approval].into_iter().find(|t| t.as_str() == text)
    }

    /// The decision an allowed spend of this tier gets.
    pub fn decision(self) -> Decision {
        match self {
            Tier::Instant => Decision::Allow,
            Tier::Notify => Decision::Notify,
            Tier::Delay => Decision::Delay,
            Tier::Approval => Decision::RequireApproval,
        }
    }
}

/// Stable reason codes of the MCP contract (shared/spec/MCP_TOOLS.md), plus `INVALID_RECIPIENT`
/// and `NO_POLICY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)]
pub enum ReasonCode {
    PerTxLimit,
    WindowLimit,
    VelocityLimit,
    BalanceFractionLimit,
    RecipientBlocked,
    RecipientNotAllowed,
    AssetNotAllowed,
    ChainNotAllowed,
    OutsideSchedule,
    OperationNotAllowed,
    KillSwitch,
    UnknownWallet,
    WalletNotAssigned,
    InsufficientBalance,
    InvalidAmount,
    /// Extension: the recipient is not a valid address on the wallet's chain.
    InvalidRecipient,
    IdempotencyConflict,
    ApprovalRequired,
    Delayed,
    /// Extension: no policy with a limit covers the agent and wallet, so nothing bounds the
    /// spend; spendguard fails closed.
    NoPolicy,
    /// A rule needs the amount's USD value and the asset has no fresh, sane price.
    PriceUnavailable,
    /// No requirement of an x402 challenge can be paid from the wallet (scheme, network,
    /// token, amount or timeout).
    X402Unpayable,
}

impl ReasonCode {
    /// The code as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::PerTxLimit => "PER_TX_LIMIT",
            ReasonCode::WindowLimit => "WINDOW_LIMIT",
            ReasonCode::VelocityLimit => "VELOCITY_LIMIT",
            ReasonCode::BalanceFractionLimit => "BALANCE_FRACTION_LIMIT",
            ReasonCode::RecipientBlocked => "RECIPIENT_BLOCKED",
            ReasonCode::RecipientNotAllowed => "RECIPIENT_NOT_ALLOWED",
            ReasonCode::AssetNotAllowed => "ASSET_NOT_ALLOWED",
            ReasonCode::ChainNotAllowed => "CHAIN_NOT_ALLOWED",
            ReasonCode::OutsideSchedule => "OUTSIDE_SCHEDULE",
            ReasonCode::OperationNotAllowed => "OPERATION_NOT_ALLOWED",
            ReasonCode::KillSwitch => "KILL_SWITCH",
            ReasonCode::UnknownWallet => "UNKNOWN_WALLET",
            ReasonCode::WalletNotAssigned => "WALLET_NOT_ASSIGNED",
            ReasonCode::InsufficientBalance => "INSUFFICIENT_BALANCE",
            ReasonCode::InvalidAmount => "INVALID_AMOUNT",
            ReasonCode::InvalidRecipient => "INVALID_RECIPIENT",
            ReasonCode::IdempotencyConflict => "IDEMPOTENCY_CONFLICT",
            ReasonCode::ApprovalRequired => "APPROVAL_REQUIRED",
            ReasonCode::Delayed => "DELAYED",
            ReasonCode::NoPolicy => "NO_POLICY",
            ReasonCode::PriceUnavailable => "PRICE_UNAVAILABLE",
            ReasonCode::X402Unpayable => "X402_UNPAYABLE",
        }
    }

    /// True for codes that deny (as opposed to explaining a tier).
    pub fn denies(self) -> bool {
        !matches!(self, ReasonCode::ApprovalRequired | ReasonCode::Delayed)
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a decision came out as it did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    /// Stable code.
    pub code: ReasonCode,
    /// Policy that gave the reason; `None` for checks that precede policies.
    pub policy_id: Option<String>,
    /// Which rule of the policy, e.g. `limits[0]`, `recipients.rules[1]`.
    pub rule: String,
    /// The numbers, in words a model can read.
    pub detail: String,
}

/// What a [`Headroom`] is about; shared by every evaluation of the same limit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HeadroomLabels {
    /// Policy of the limit.
    pub policy_id: String,
    /// Rule within the policy.
    pub rule: String,
    /// Whose spend the limit sums, e.g. `agent:procurement-bot`.
    pub scope: String,
    /// Window, e.g. `24h`, `day`.
    pub window: String,
    /// `USD`, `count` or an asset (`chain:SYMBOL`).
    pub unit: String,
}

impl HeadroomLabels {
    /// These labels for the life of the process, one copy per distinct value. An evaluation
    /// names dozens of limits, and counting references to shared labels (two atomic operations
    /// per limit) was a tenth of it; the distinct labels are few (those of the configurations
    /// loaded and of stored decisions read back), so they are kept rather than counted.
    pub fn intern(self) -> &'static HeadroomLabels {
        static INTERNED: LazyLock<Mutex<HashSet<&'static HeadroomLabels>>> = LazyLock::new(Default::default);
        let mut interned = INTERNED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(labels) = interned.get(&self) {
            return labels;
        }
        let labels: &'static HeadroomLabels = Box::leak(Box::new(self));
        interned.insert(labels);
        labels
    }

    /// Formats a number in this limit's unit (USD with at least two decimals).
    pub fn fmt(&self, value: Decimal) -> String {
        self.text(value).as_str().to_owned()
    }

    fn text(&self, value: Decimal) -> DecimalText {
        if self.unit == "USD" {
            DecimalText::usd(value)
        } else {
            DecimalText::units(value)
        }
    }
}

/// Remaining room under one limit. Numbers are decimals, written as decimal strings in JSON
/// (USD with at least two decimals); the labels are flattened beside them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Headroom {
    /// Policy, rule, scope, window and unit.
    pub labels: &'static HeadroomLabels,
    /// The limit.
    pub limit: Decimal,
    /// Executed spend in the window.
    pub used: Decimal,
    /// Open reservations in the window.
    pub reserved: Decimal,
    /// This request.
    pub requested: Decimal,
}

impl Headroom {
    /// `limit - used - reserved` before this request, never below zero (worked out when asked:
    /// an evaluation builds dozens of these and most are never read).
    pub fn remaining(&self) -> Decimal {
        self.limit.saturating_sub(self.used).saturating_sub(self.reserved).max(Decimal::ZERO)
    }

    /// True when this request takes the limit from below `fraction` of it to `fraction` or
    /// more (open reservations count as used): the moment to warn once, not on every spend after.
    pub fn crosses(&self, fraction: Decimal) -> bool {
        if self.limit <= Decimal::ZERO {
            return false;
        }
        let before = self.used + self.reserved;
        let mark = self.limit * fraction;
        before < mark && before + self.requested >= mark
    }

    /// Formats one of the numbers in this limit's unit.
    pub fn fmt(&self, value: Decimal) -> String {
        self.labels.fmt(value)
    }
}

/// A headroom entry as stored and sent: the labels flattened beside the numbers, which are
/// decimal strings (written by hand in `Serialize for Headroom`, read back through this).
#[derive(Deserialize)]
struct HeadroomWire {
    #[serde(flatten)]
    labels: HeadroomLabels,
    limit: Decimal,
    used: Decimal,
    reserved: Decimal,
    requested: Decimal,
    #[allow(dead_code)] // derived from the others on the way in
    remaining: Decimal,
}

// Formatting is deferred to serialisation: evaluation builds dozens of these per request.
impl Serialize for Headroom {
    /// The wire form of `HeadroomWire` (labels flattened beside the numbers), written field by
    /// field: a decision stores and returns one of these per limit, and going through `flatten`
    /// with a `String` per number was 6–8 % of the ledger writer's time at 64 callers.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let HeadroomLabels { policy_id, rule, scope, window, unit } = self.labels;
        let mut map = s.serialize_map(Some(10))?;
        for (key, label) in
            [("policy_id", policy_id), ("rule", rule), ("scope", scope), ("window", window), ("unit", unit)]
        {
            map.serialize_entry(key, label)?;
        }
        for (key, value) in [
            ("limit", self.limit),
            ("used", self.used),
            ("reserved", self.reserved),
            ("requested", self.requested),
            ("remaining", self.remaining()),
        ] {
            map.serialize_entry(key, self.labels.text(value).as_str())?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Headroom {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = HeadroomWire::deserialize(d)?;
        Ok(Headroom {
            labels: w.labels.intern(),
            limit: w.limit,
            used: w.used,
            reserved: w.reserved,
            requested: w.requested,
        })
    }
}

/// Everything the engine worked out about a spend besides the verdict: what will be signed and
/// how it is valued. Present whenever the wallet, asset, amount and recipient were understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedSpend {
    /// Chain of the wallet.
    pub chain: String,
    /// Chain family.
    pub chain_kind: ChainKind,
    /// Asset, `chain:SYMBOL`.
    pub asset: String,
    /// Asset decimals.
    pub decimals: u32,
    /// Token contract or mint; `None` for native.
    pub token: Option<String>,
    /// Canonical recipient address.
    pub recipient: String,
    /// Merchant derived from the recipient address.
    pub merchant: Option<String>,
    /// Merchant category.
    pub category: Option<String>,
    /// Agent's department.
    pub department: Option<String>,
    /// The amount's USD value, or why the asset has no usable price.
    pub valuation: Result<Valuation, PriceProblem>,
    /// Delay to wait for a DELAY spend (the longest any policy asks).
    pub delay: Option<TimeDelta>,
    /// Time an APPROVAL request stays open (the shortest any policy allows).
    pub approval_ttl: Option<TimeDelta>,
    /// Role that may approve (of the first policy requiring approval).
    pub approver_role: Option<String>,
}

impl ResolvedSpend {
    /// The amount's USD value, when the asset had a usable price.
    pub fn usd(&self) -> Option<Decimal> {
        self.valuation.as_ref().ok().map(|v| v.usd)
    }
}

/// The result of [`crate::evaluate`]; serialises as the `evaluate` tool's result object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evaluation {
    /// The verdict.
    pub decision: Decision,
    /// The tier the spend takes (for a denial: would have taken).
    pub tier: Tier,
    /// Every reason, denials first.
    pub reasons: Vec<Reason>,
    /// Room left under each applicable limit.
    pub headroom: Vec<Headroom>,
    /// What the amount was valued at, when the asset had a usable price.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valuation: Option<Valuation>,
    /// What the spend resolved to.
    #[serde(skip)]
    pub spend: Option<ResolvedSpend>,
}

impl Evaluation {
    /// True when the spend may go ahead (at once, later or after approval).
    pub fn is_allowed(&self) -> bool {
        self.decision != Decision::Deny
    }

    /// The code of the first denying reason.
    pub fn first_denial(&self) -> Option<ReasonCode> {
        self.reasons.iter().map(|r| r.code).find(|c| c.denies())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headroom(limit: i64, used: i64, reserved: i64, requested: i64) -> Headroom {
        Headroom {
            labels: HeadroomLabels {
                policy_id: "p".into(),
                rule: "limits[0]".into(),
                scope: "agent:a".into(),
                window: "24h".into(),
                unit: "USD".into(),
            }
            .intern(),
            limit: Decimal::from(limit),
            used: Decimal::from(used),
            reserved: Decimal::from(reserved),
            requested: Decimal::from(requested),
        }
    }

    #[test]
    fn a_limit_is_crossed_once_by_the_request_that_reaches_the_mark() {
        let mark = Decimal::new(8, 1);
        assert!(!headroom(100, 70, 0, 9).crosses(mark), "79 % is below");
        assert!(headroom(100, 70, 0, 10).crosses(mark), "exactly 80 % crosses");
        assert!(headroom(100, 40, 30, 15).crosses(mark), "reservations count as used");
        assert!(!headroom(100, 80, 0, 5).crosses(mark), "already at the mark before");
        assert!(!headroom(0, 0, 0, 5).crosses(mark), "a zero limit has no 80 %");
    }

    /// What decisions store and agents read: labels first, then the numbers as decimal strings
    /// in the limit's unit; and it reads back as it was.
    #[test]
    fn headroom_is_written_as_labels_then_numbers_and_reads_back() {
        let usd = headroom(100, 70, 5, 9);
        let json = serde_json::to_string(&usd).unwrap();
        assert_eq!(
            json,
            r#"{"policy_id":"p","rule":"limits[0]","scope":"agent:a","window":"24h","unit":"USD","limit":"100.00","used":"70.00","reserved":"5.00","requested":"9.00","remaining":"25.00"}"#
        );
        assert_eq!(serde_json::from_str::<Headroom>(&json).unwrap(), usd);
        let count = Headroom {
            labels: HeadroomLabels { unit: "count".into(), ..usd.labels.clone() }.intern(),
            limit: Decimal::new(30, 1),
            ..usd
        };
        let json = serde_json::to_string(&count).unwrap();
        assert!(json.contains(r#""unit":"count","limit":"3","used":"70","#), "{json}");
        assert_eq!(serde_json::from_str::<Headroom>(&json).unwrap(), count);
    }
}
