//! The configuration file as written: serde structs that refuse unknown keys, and value types
//! that refuse floats for money and say how to write durations, windows and timezones.

use chrono::TimeDelta;
use chrono_tz::Tz;
use rust_decimal::Decimal;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use spendguard_core::model::{ChainKind, OutflowAction, RecipientAction};
use spendguard_core::money::parse_decimal;
use spendguard_core::time::{parse_duration, Window};
use std::fmt;

/// A decimal written as a string. Floats and integers are refused: `0.1` in TOML is a binary
/// float, and money must never pass through one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Money(pub(crate) Decimal);

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Money;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a decimal string such as \"12.50\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Money, E> {
                parse_decimal(v).map(Money).map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Money, E> {
                Err(E::custom(format!(
                    "money must be a quoted decimal string, not a TOML float: write \"{v}\" (in quotes)"
                )))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Money, E> {
                Err(E::custom(format!(
                    "money must be a quoted decimal string, not a TOML number: write \"{v}\" (in quotes)"
                )))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Money, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
            }
        }
        d.deserialize_any(V)
    }
}

macro_rules! string_value {
    ($name:ident, $inner:ty, $parse:expr, $hint:literal) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) struct $name(pub(crate) $inner);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                let parse: fn(&str) -> Option<$inner> = $parse;
                parse(&text).map($name).ok_or_else(|| de::Error::custom(format!($hint, text)))
            }
        }
    };
}

string_value!(
    DurationText,
    TimeDelta,
    parse_duration,
    "{:?} is not a duration: write a whole number and s, m, h or d, e.g. \"30s\", \"5m\", \"24h\", \"7d\""
);
string_value!(
    AgeText,
    TimeDelta,
    |s| if s == "0s" { Some(TimeDelta::zero()) } else { parse_duration(s) },
    "{:?} is not a duration: write \"0s\" or a whole number and s, m, h or d, e.g. \"1s\", \"5m\""
);
string_value!(
    PercentText,
    Decimal,
    |s| s
        .strip_suffix('%')
        .and_then(|n| parse_decimal(n).ok())
        .filter(|n| *n >= Decimal::ZERO)
        .map(|n| n / Decimal::ONE_HUNDRED),
    "{:?} is not a percentage: write a decimal and %, e.g. \"0.5%\", \"2%\""
);
string_value!(
    WindowText,
    Window,
    Window::parse,
    "{:?} is not a window: write \"day\", \"week\", \"month\" or a duration such as \"1h\", \"24h\", \"30d\""
);
string_value!(
    TimezoneText,
    Tz,
    |s| s.parse::<Tz>().ok(),
    "{:?} is not an IANA timezone: write a name such as \"UTC\" or \"America/New_York\""
);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub(crate) server: RawServer,
    pub(crate) org: RawOrg,
    #[serde(default)]
    pub(crate) chain: Vec<RawChain>,
    #[serde(default)]
    pub(crate) asset: Vec<RawAsset>,
    #[serde(default)]
    pub(crate) department: Vec<RawDepartment>,
    #[serde(default)]
    pub(crate) wallet: Vec<RawWallet>,
    #[serde(default)]
    pub(crate) agent: Vec<RawAgent>,
    #[serde(default)]
    pub(crate) merchant: Vec<RawMerchant>,
    #[serde(default)]
    pub(crate) policy: Vec<RawPolicy>,
    #[serde(default)]
    pub(crate) operator: Vec<RawOperator>,
    #[serde(default)]
    pub(crate) alert: Vec<RawAlert>,
    #[serde(default)]
    pub(crate) report: Vec<RawReport>,
    pub(crate) roles: Option<RawRoles>,
    pub(crate) x402: Option<RawX402>,
}

/// `[x402]`: paying HTTP 402 challenges.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawX402 {
    pub(crate) max_timeout: Option<DurationText>,
}

/// `[roles]`: for each admin action, the operator roles that may take it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoles {
    pub(crate) view: Option<Vec<String>>,
    pub(crate) freeze: Option<Vec<String>>,
    pub(crate) unfreeze: Option<Vec<String>>,
    pub(crate) unfreeze_reconciler: Option<Vec<String>>,
    pub(crate) cancel_delay: Option<Vec<String>>,
    pub(crate) decommission: Option<Vec<String>>,
    pub(crate) revoke_agent: Option<Vec<String>>,
    pub(crate) cancel_authorization: Option<Vec<String>>,
}

impl RawRoles {
    pub(crate) fn get(&self, action: crate::AdminAction) -> Option<&Vec<String>> {
        use crate::AdminAction::*;
        match action {
            View => self.view.as_ref(),
            Freeze => self.freeze.as_ref(),
            Unfreeze => self.unfreeze.as_ref(),
            UnfreezeReconciler => self.unfreeze_reconciler.as_ref(),
            CancelDelay => self.cancel_delay.as_ref(),
            CancelAuthorization => self.cancel_authorization.as_ref(),
            Decommission => self.decommission.as_ref(),
            RevokeAgent => self.revoke_agent.as_ref(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    pub(crate) database: String,
    pub(crate) listen: Option<String>,
    pub(crate) timezone: Option<TimezoneText>,
    pub(crate) reports_dir: Option<String>,
    pub(crate) allowed_hosts: Option<Vec<String>>,
    pub(crate) allowed_origins: Option<Vec<String>>,
    pub(crate) authority_key: Option<String>,
    pub(crate) watcher_lease: Option<DurationText>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOrg {
    pub(crate) id: String,
    pub(crate) on_unexplained_outflow: Option<OutflowAction>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawCommitment {
    Confirmed,
    Finalized,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawChain {
    pub(crate) id: String,
    pub(crate) kind: ChainKind,
    pub(crate) chain_id: Option<u64>,
    pub(crate) rpc: Vec<String>,
    pub(crate) confirmations: Option<u64>,
    pub(crate) poll_interval: Option<DurationText>,
    pub(crate) start_block: Option<u64>,
    pub(crate) max_fee_per_gas_gwei: Option<Money>,
    pub(crate) commitment: Option<RawCommitment>,
    pub(crate) rpc_timeout: Option<DurationText>,
    pub(crate) max_reorg_depth: Option<u64>,
    pub(crate) stall_after: Option<DurationText>,
    pub(crate) missing_after: Option<DurationText>,
    pub(crate) balance_max_age: Option<AgeText>,
    pub(crate) balance_conservation: Option<bool>,
    pub(crate) range_blocks: Option<u64>,
    pub(crate) range_wait: Option<DurationText>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAsset {
    pub(crate) chain: String,
    pub(crate) symbol: String,
    pub(crate) contract: Option<String>,
    pub(crate) mint: Option<String>,
    pub(crate) decimals: u32,
    pub(crate) price_usd: Option<Money>,
    pub(crate) price: Option<RawPrice>,
}

/// `price = { source = "chainlink" | "pyth", … }`: a live price feed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPrice {
    pub(crate) source: String,
    pub(crate) chain: Option<String>,
    pub(crate) feed: Option<String>,
    pub(crate) account: Option<String>,
    pub(crate) max_age: Option<DurationText>,
    pub(crate) max_confidence: Option<PercentText>,
    pub(crate) sequencer_feed: Option<String>,
    pub(crate) sequencer_grace: Option<DurationText>,
    pub(crate) peg_usd: Option<Money>,
    pub(crate) max_peg_deviation: Option<PercentText>,
    pub(crate) refresh: Option<DurationText>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDepartment {
    pub(crate) id: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWallet {
    pub(crate) id: String,
    pub(crate) chain: String,
    pub(crate) address: String,
    pub(crate) keystore: Option<String>,
    pub(crate) password_env: Option<String>,
    pub(crate) keypair: Option<String>,
    pub(crate) balance_low_usd: Option<Money>,
    pub(crate) delegates: Option<Vec<String>>,
    pub(crate) refill_from: Option<Vec<String>>,
    pub(crate) custody: Option<RawCustody>,
    pub(crate) authorization_ttl: Option<DurationText>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawCustody {
    Spendguard,
    External,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAgent {
    pub(crate) id: String,
    pub(crate) department: Option<String>,
    #[serde(default)]
    pub(crate) wallets: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMerchant {
    pub(crate) id: String,
    pub(crate) category: Option<String>,
    pub(crate) addresses: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimit {
    pub(crate) window: WindowText,
    pub(crate) max_usd: Option<Money>,
    pub(crate) max_amount: Option<Money>,
    pub(crate) max_count: Option<u64>,
    pub(crate) max_balance_fraction: Option<Money>,
    pub(crate) asset: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSchedule {
    #[serde(default)]
    pub(crate) days: Vec<String>,
    pub(crate) hours: Option<String>,
    pub(crate) timezone: Option<TimezoneText>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTiers {
    pub(crate) instant_max_usd: Option<Money>,
    pub(crate) notify_max_usd: Option<Money>,
    pub(crate) delay_max_usd: Option<Money>,
    pub(crate) delay: Option<DurationText>,
    pub(crate) approver_role: Option<String>,
    pub(crate) approval_ttl: Option<DurationText>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRecipientRule {
    pub(crate) category: Option<String>,
    pub(crate) merchant: Option<String>,
    pub(crate) address: Option<String>,
    pub(crate) domain: Option<String>,
    pub(crate) action: RecipientAction,
    pub(crate) per_tx_cap_usd: Option<Money>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRecipients {
    pub(crate) default_action: RecipientAction,
    #[serde(default)]
    pub(crate) rules: Vec<RawRecipientRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOperation {
    pub(crate) name: String,
    pub(crate) per_tx_usd: Option<Money>,
    #[serde(default)]
    pub(crate) limits: Vec<RawLimit>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPolicy {
    pub(crate) id: String,
    pub(crate) scope: String,
    pub(crate) timezone: Option<TimezoneText>,
    pub(crate) per_tx_usd: Option<Money>,
    #[serde(default)]
    pub(crate) limits: Vec<RawLimit>,
    pub(crate) chains: Option<Vec<String>>,
    pub(crate) assets: Option<Vec<String>>,
    pub(crate) schedule: Option<RawSchedule>,
    pub(crate) tiers: Option<RawTiers>,
    pub(crate) recipients: Option<RawRecipients>,
    #[serde(default)]
    pub(crate) operation: Vec<RawOperation>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOperator {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) roles: Vec<String>,
}

/// Alert channel kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertKind {
    /// Slack incoming-webhook JSON.
    Slack,
    /// spendguard's own webhook JSON.
    Webhook,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAlert {
    pub(crate) id: String,
    pub(crate) kind: AlertKind,
    pub(crate) url_env: String,
    pub(crate) events: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawReport {
    pub(crate) id: String,
    pub(crate) schedule: String,
    pub(crate) formats: Vec<String>,
}
