//! What agents ask and are answered, as the MCP tools carry it: arguments, the agent-facing
//! status of a spend, and the results of `spend`, `spend_status` and `balance`.

use crate::chains::AssetBalance;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use spendguard_core::price::Valuation;
use spendguard_core::reconcile::Class;
use spendguard_core::{Decision, Headroom, Reason, SpendStatus, Tier};
use spendguard_store::{AuthorizationRecord, AuthorizationState, DecisionRecord};

/// The arguments of `evaluate` (and of `spend`, with an idempotency key).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EvaluateArgs {
    /// Wallet id.
    pub wallet: String,
    /// Recipient address.
    pub to: String,
    /// Decimal string in asset units.
    pub amount: String,
    /// `SYMBOL` or `chain:SYMBOL`.
    pub asset: Option<String>,
    /// Operation name.
    pub operation: Option<String>,
    /// Free text recorded with the decision.
    pub memo: Option<String>,
}

/// Longest id an argument may be (wallet, decision, asset, operation).
pub(crate) const ID_MAX: usize = 64;
/// Longest recipient address (a Solana address is at most 44 characters, an EVM one 42).
const ADDRESS_MAX: usize = 128;
/// Longest amount: spendguard's decimals hold 28 digits; with a point and a sign, fewer than 40.
const AMOUNT_MAX: usize = 40;
/// Longest memo: a few words, as the tool asks.
pub const MEMO_MAX: usize = 1024;
/// Longest idempotency key (Stripe's limit).
pub const IDEMPOTENCY_KEY_MAX: usize = 255;

/// Refuses `value` of argument `name` when longer than `max` characters, before anything is
/// recorded: free text must not fill the ledger's disk.
pub(crate) fn bounded(name: &str, value: &str, max: usize) -> crate::ServiceResult<()> {
    // Counting characters of a huge string costs as much as reading it: bytes bound it first.
    let len = if value.len() > 4 * max { value.len() } else { value.chars().count() };
    if len > max {
        return Err(crate::ServiceError::Invalid(format!(
            "{name} is {len} characters long; at most {max} are accepted"
        )));
    }
    Ok(())
}

impl EvaluateArgs {
    /// Refuses an argument longer than its bound.
    pub(crate) fn check_sizes(&self) -> crate::ServiceResult<()> {
        bounded("wallet", &self.wallet, ID_MAX)?;
        bounded("to", &self.to, ADDRESS_MAX)?;
        bounded("amount", &self.amount, AMOUNT_MAX)?;
        bounded("asset", self.asset.as_deref().unwrap_or_default(), ID_MAX)?;
        bounded("operation", self.operation.as_deref().unwrap_or_default(), ID_MAX)?;
        bounded("memo", self.memo.as_deref().unwrap_or_default(), MEMO_MAX)
    }
}

/// The arguments of `spend`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpendArgs {
    /// What to spend.
    pub request: EvaluateArgs,
    /// Stripe-style idempotency key.
    pub idempotency_key: Option<String>,
}

/// The arguments of `pay_x402`.
#[derive(Debug, Clone, PartialEq)]
pub struct PayX402Args {
    /// The wallet to pay from (EVM, custodial).
    pub wallet: String,
    /// The server's 402 `PaymentRequired` body, as JSON.
    pub payment_required: serde_json::Value,
    /// Free text recorded with the decision.
    pub memo: Option<String>,
    /// Stripe-style idempotency key: the same key returns the same header.
    pub idempotency_key: Option<String>,
}

impl PayX402Args {
    /// Refuses an argument larger than its bound.
    pub(crate) fn check_sizes(&self) -> crate::ServiceResult<()> {
        bounded("wallet", &self.wallet, ID_MAX)?;
        bounded("memo", self.memo.as_deref().unwrap_or_default(), MEMO_MAX)?;
        bounded("idempotency_key", self.idempotency_key.as_deref().unwrap_or_default(), IDEMPOTENCY_KEY_MAX)?;
        let size = self.payment_required.to_string().len();
        if size > crate::x402::CHALLENGE_MAX {
            return Err(crate::ServiceError::Invalid(format!(
                "payment_required is {size} bytes; at most {} are accepted",
                crate::x402::CHALLENGE_MAX
            )));
        }
        Ok(())
    }
}

/// Where an x402 payment stands, as the agent sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum X402Status {
    /// Signed: send `payment_signature` to the server.
    Signed,
    /// DELAY tier: signed when due (`spend_status` then carries the header).
    Queued,
    /// APPROVAL tier: signed once approved.
    PendingApproval,
    /// Refused.
    Denied,
    /// Allowed, not yet signed; spendguard keeps trying.
    Processing,
    /// Settled on chain by the server's facilitator.
    Settled,
    /// Cancelled, expired unpaid or frozen before signing; the budget is back.
    Released,
    /// Could not be signed.
    Failed,
}

/// The result of `pay_x402`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct X402Outcome {
    /// Decision id (absent when the challenge could not be paid at all).
    pub decision_id: Option<String>,
    /// Where it stands.
    pub status: X402Status,
    /// The verdict.
    pub decision: Decision,
    /// Tier.
    pub tier: Tier,
    /// Every reason.
    pub reasons: Vec<Reason>,
    /// The requirement paid, as the server wrote it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accepted: Option<serde_json::Value>,
    /// The EIP-3009 authorization signed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorization: Option<crate::x402::PaymentAuthorization>,
    /// The `PAYMENT-SIGNATURE` header's value (version 1: `X-PAYMENT`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_signature: Option<String>,
    /// When a DELAY payment is signed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execute_after: Option<DateTime<Utc>>,
    /// When an APPROVAL request expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_expires_at: Option<DateTime<Utc>>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// True when this answers a repeated idempotency key.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
    /// What the amount was valued at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valuation: Option<Valuation>,
}

impl X402Outcome {
    /// The x402 answer of a decided spend, from the authorization it carries (the header).
    pub(crate) fn of(o: SpendOutcome, accepted: Option<serde_json::Value>) -> X402Outcome {
        let status = match o.status {
            AgentStatus::Authorized => X402Status::Signed,
            AgentStatus::Confirmed => X402Status::Settled,
            AgentStatus::Queued => X402Status::Queued,
            AgentStatus::PendingApproval => X402Status::PendingApproval,
            AgentStatus::Denied => X402Status::Denied,
            AgentStatus::Processing | AgentStatus::Executed => X402Status::Processing,
            AgentStatus::Released => X402Status::Released,
            AgentStatus::Failed => X402Status::Failed,
        };
        let header = o.authorization.map(|a| a.token);
        X402Outcome {
            decision_id: o.decision_id,
            status,
            decision: o.decision,
            tier: o.tier,
            reasons: o.reasons,
            accepted,
            authorization: header.as_deref().and_then(crate::x402::authorization_in),
            payment_signature: header,
            execute_after: o.execute_after,
            approval_expires_at: o.approval_expires_at,
            failure: o.failure,
            replayed: o.replayed,
            valuation: o.valuation,
        }
    }
}

/// Where a spend stands, as the agent sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    /// Signed and sent (or being sent).
    Executed,
    /// DELAY tier: waits until `execute_after`, cancellable.
    Queued,
    /// APPROVAL tier: waits for an operator.
    PendingApproval,
    /// Refused.
    Denied,
    /// Allowed and reserved, not yet sent: the chain was unreachable; spendguard keeps trying.
    Processing,
    /// Cancelled, rejected, expired or frozen before it was sent; its budget is back.
    Released,
    /// Seen on chain.
    Confirmed,
    /// The chain refused it or it reverted; its budget is back.
    Failed,
    /// External wallet: authorized; the agent pays it from its own wallet with the
    /// `authorization` before it expires.
    Authorized,
}

impl AgentStatus {
    /// The status an agent sees for a lifecycle status.
    pub fn of(s: SpendStatus) -> AgentStatus {
        match s {
            SpendStatus::Denied => AgentStatus::Denied,
            SpendStatus::Reserved => AgentStatus::Processing,
            SpendStatus::Queued => AgentStatus::Queued,
            SpendStatus::PendingApproval => AgentStatus::PendingApproval,
            SpendStatus::Released => AgentStatus::Released,
            SpendStatus::Signed | SpendStatus::Broadcast => AgentStatus::Executed,
            SpendStatus::Confirmed => AgentStatus::Confirmed,
            SpendStatus::Failed => AgentStatus::Failed,
            SpendStatus::Authorized => AgentStatus::Authorized,
        }
    }
}

/// The result of `spend` as the agent sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpendOutcome {
    /// Decision id (absent when the request was too malformed to record).
    pub decision_id: Option<String>,
    /// Where it stands.
    pub status: AgentStatus,
    /// The verdict.
    pub decision: Decision,
    /// Tier.
    pub tier: Tier,
    /// Every reason.
    pub reasons: Vec<Reason>,
    /// Transaction hash once signed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tx_hash: Option<String>,
    /// When a DELAY spend executes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execute_after: Option<DateTime<Utc>>,
    /// When an APPROVAL request expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_expires_at: Option<DateTime<Utc>>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// True when this answers a repeated idempotency key.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
    /// What the amount was valued at (absent when the asset had no usable price).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valuation: Option<Valuation>,
    /// External wallet: what the agent may pay, with the signed token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorization: Option<AuthorizationView>,
}

/// An external wallet's authorization as the agent (and a wallet-side hook) sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuthorizationView {
    /// The decision it carries out.
    pub decision_id: String,
    /// Chain.
    pub chain: String,
    /// The wallet's address: who pays.
    pub from: String,
    /// Recipient.
    pub to: String,
    /// Asset `chain:SYMBOL`.
    pub asset: String,
    /// Amount in asset units: pay exactly this.
    pub amount: Decimal,
    /// Pay before this.
    pub expires_at: DateTime<Utc>,
    /// JWS compact (EdDSA) over the intent, the agent and the expiry; verify it with the key
    /// `spendguard authority pubkey` prints.
    pub token: String,
    /// `open`, `consumed`, `expired` or `revoked`.
    pub state: AuthorizationState,
    /// The transaction that paid it, or what revoked or expired it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_by: Option<String>,
}

impl AuthorizationView {
    pub(crate) fn of(a: AuthorizationRecord) -> AuthorizationView {
        AuthorizationView {
            decision_id: a.decision_id,
            chain: a.chain,
            from: a.from,
            to: a.recipient,
            asset: a.asset,
            amount: a.amount,
            expires_at: a.expires_at,
            token: a.token,
            state: a.state,
            ended_by: a.ended_by,
        }
    }
}

impl SpendArgs {
    /// Refuses an argument longer than its bound.
    pub(crate) fn check_sizes(&self) -> crate::ServiceResult<()> {
        self.request.check_sizes()?;
        bounded("idempotency_key", self.idempotency_key.as_deref().unwrap_or_default(), IDEMPOTENCY_KEY_MAX)
    }
}

impl SpendOutcome {
    /// A refusal that is not (or not newly) a recorded decision.
    pub(crate) fn refused(decision_id: Option<String>, reasons: Vec<Reason>) -> SpendOutcome {
        SpendOutcome {
            decision_id,
            status: AgentStatus::Denied,
            decision: Decision::Deny,
            tier: Tier::Instant,
            reasons,
            tx_hash: None,
            execute_after: None,
            approval_expires_at: None,
            failure: None,
            replayed: false,
            valuation: None,
            authorization: None,
        }
    }

    /// A decision recorded whose record cannot be read back now (the ledger failed after
    /// committing it): as the receipt left it. Never "nothing was spent": the background
    /// passes may still execute it, and `spend_status` follows it.
    pub(crate) fn recorded(receipt: spendguard_store::Receipt) -> SpendOutcome {
        SpendOutcome {
            decision_id: Some(receipt.decision_id),
            status: AgentStatus::of(receipt.status),
            decision: receipt.decision,
            tier: receipt.tier,
            reasons: receipt.reasons,
            tx_hash: None,
            execute_after: receipt.execute_after,
            approval_expires_at: receipt.approval_expires_at,
            failure: None,
            replayed: false,
            valuation: receipt.valuation,
            authorization: None,
        }
    }

    /// Where a recorded decision stands.
    pub(crate) fn of(record: DecisionRecord, replayed: bool) -> SpendOutcome {
        SpendOutcome {
            valuation: record.valuation(),
            decision_id: Some(record.id),
            status: AgentStatus::of(record.status),
            decision: record.decision,
            tier: record.tier,
            reasons: record.reasons,
            tx_hash: record.tx_hash,
            execute_after: record.execute_after,
            approval_expires_at: record.approval_expires_at,
            failure: record.failure,
            replayed,
            authorization: None,
        }
    }

    /// With the authorization an external wallet's spend carries.
    pub(crate) fn with_authorization(mut self, a: Option<AuthorizationRecord>) -> SpendOutcome {
        self.authorization = a.map(AuthorizationView::of);
        self
    }
}

/// The result of `spend_status` and `cancel_spend`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusReport {
    /// Decision id.
    pub decision_id: String,
    /// Where it stands, as the agent sees it.
    pub status: AgentStatus,
    /// The ledger's lifecycle status.
    pub lifecycle: SpendStatus,
    /// Verdict.
    pub decision: Decision,
    /// Tier.
    pub tier: Tier,
    /// Reasons given at decision time.
    pub reasons: Vec<Reason>,
    /// Wallet.
    pub wallet: String,
    /// Asset `chain:SYMBOL`.
    pub asset: Option<String>,
    /// Amount in asset units.
    pub amount: Decimal,
    /// Recipient.
    pub to: String,
    /// Transaction hash.
    pub tx_hash: Option<String>,
    /// Blocks on top of (and including) the one it landed in.
    pub confirmations: Option<u64>,
    /// Fee paid in native units.
    pub fee_paid: Option<Decimal>,
    /// How the auditor reconciled what landed with what was decided (`matched`,
    /// `fee_over_cap`, `mismatch`); null until the watcher has seen it.
    pub reconciliation: Option<Class>,
    /// When a DELAY spend executes.
    pub execute_after: Option<DateTime<Utc>>,
    /// When an APPROVAL request expires.
    pub approval_expires_at: Option<DateTime<Utc>>,
    /// Why it failed or was released.
    pub failure: Option<String>,
    /// What the amount was valued at when decided: USD value, price, source, publish time.
    pub valuation: Option<Valuation>,
    /// External wallet: its authorization and where it stands.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorization: Option<AuthorizationView>,
    /// x402 payment: the `PAYMENT-SIGNATURE` header's value once signed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_signature: Option<String>,
}

impl StatusReport {
    pub(crate) fn of(r: DecisionRecord, confirmations: Option<u64>, reconciliation: Option<Class>) -> StatusReport {
        StatusReport {
            valuation: r.valuation(),
            status: AgentStatus::of(r.status),
            lifecycle: r.status,
            decision: r.decision,
            tier: r.tier,
            reasons: r.reasons,
            wallet: r.wallet,
            asset: r.asset,
            amount: r.amount,
            to: r.recipient,
            tx_hash: r.tx_hash,
            confirmations,
            fee_paid: r.fee_paid,
            reconciliation,
            execute_after: r.execute_after,
            approval_expires_at: r.approval_expires_at,
            failure: r.failure,
            decision_id: r.id,
            authorization: None,
            payment_signature: None,
        }
    }

    /// With the authorization an external wallet's spend or an x402 payment carries.
    pub(crate) fn with_authorization(mut self, a: Option<AuthorizationRecord>) -> StatusReport {
        let x402 = a.as_ref().filter(|a| a.kind == spendguard_store::AuthorizationKind::X402);
        self.payment_signature = x402.map(|a| a.token.clone());
        // The facilitator's transaction that settled it (it may have settled others too).
        if let Some(settled) = x402.filter(|a| a.state == AuthorizationState::Consumed) {
            self.tx_hash = self.tx_hash.take().or_else(|| settled.ended_by.clone());
        }
        self.authorization = a.map(AuthorizationView::of);
        self
    }
}

/// Balances and limit headroom of one wallet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WalletBalances {
    /// Wallet id.
    pub wallet: String,
    /// Chain id.
    pub chain: String,
    /// Address.
    pub address: String,
    /// Live on-chain balances of every configured asset.
    pub balances: Vec<AssetBalance>,
    /// Set when the chain could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balance_error: Option<String>,
    /// Every limit that applies to spends from this wallet.
    pub limits: Vec<Headroom>,
}

/// The result of `balance`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BalanceReport {
    /// One entry per wallet asked about.
    pub wallets: Vec<WalletBalances>,
}
