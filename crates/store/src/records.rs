//! What the ledger records and answers, as typed values: money as `Decimal`, statuses, classes
//! and event kinds as enums.

use crate::error::SigningError;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use spendguard_core::model::Scope;
use spendguard_core::price::{Prices, Valuation};
use spendguard_core::reconcile::{Class, OutflowKind};
use spendguard_core::{Balances, Decision, EventKind, Freeze, Headroom, Reason, SpendRequest, SpendStatus, Tier};
use std::borrow::Cow;

/// A spend to evaluate and, if allowed, reserve.
#[derive(Debug, Clone)]
pub struct ReserveRequest {
    /// The request (agent from authentication).
    pub request: SpendRequest,
    /// Live balances of the wallet, where known.
    pub balances: Balances,
    /// Latest readings of the live price feeds.
    pub prices: Prices,
    /// Stripe-style idempotency key, scoped to the agent.
    pub idempotency_key: Option<String>,
    /// Free text from the agent, recorded with the decision.
    pub memo: Option<String>,
    /// The x402 challenge requirement this spend pays, when it pays one.
    pub x402: Option<X402Request>,
}

/// What an x402 payment answers: the server's requirement it accepted, kept as the server wrote
/// it (the payment payload echoes it), and the resource it buys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct X402Request {
    /// The protocol version of the challenge (1 or 2).
    pub version: u8,
    /// The accepted entry of `accepts[]`, verbatim.
    pub accepted: serde_json::Value,
    /// The challenge's `resource` (v2: `{url, description, mimeType}`; v1: built from the
    /// requirement's `resource` and `description`).
    pub resource: serde_json::Value,
    /// The token's EIP-712 domain name and version (`extra.name`, `extra.version`).
    pub domain_name: String,
    /// See `domain_name`.
    pub domain_version: String,
    /// Seconds the server lets the authorization live (`maxTimeoutSeconds`).
    pub max_timeout_seconds: u64,
}

impl X402Request {
    /// The resource's URL, if the challenge named one.
    pub fn url(&self) -> Option<&str> {
        self.resource.get("url").and_then(|u| u.as_str())
    }

    /// The resource's description, if the challenge gave one.
    pub fn description(&self) -> Option<&str> {
        self.resource.get("description").and_then(|u| u.as_str()).filter(|d| !d.is_empty())
    }
}

/// What the ledger recorded for a spend; also the response replayed for an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// Decision identifier.
    pub decision_id: String,
    /// Status right after the decision.
    pub status: SpendStatus,
    /// Verdict.
    pub decision: Decision,
    /// Tier (for a denial: would have been).
    pub tier: Tier,
    /// Every reason.
    pub reasons: Vec<Reason>,
    /// Headroom under each applicable limit, before this spend.
    pub headroom: Vec<Headroom>,
    /// When a DELAY spend becomes due.
    pub execute_after: Option<DateTime<Utc>>,
    /// When an APPROVAL request expires.
    pub approval_expires_at: Option<DateTime<Utc>>,
    /// Amount in asset units, as recorded.
    pub amount: Decimal,
    /// Asset, `chain:SYMBOL`, when resolved.
    pub asset: Option<String>,
    /// What the amount was valued at, when the asset had a usable price.
    pub valuation: Option<Valuation>,
}

/// The answer to a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReserveOutcome {
    /// A decision: new, or replayed for a repeated idempotency key with the same request.
    Decided {
        /// What was recorded.
        receipt: Receipt,
        /// True when this is the first response replayed.
        replayed: bool,
    },
    /// The idempotency key was already used for a different request.
    IdempotencyConflict {
        /// The decision the key belongs to.
        original_decision_id: String,
    },
}

/// The answer to a freeze.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FreezeOutcome {
    /// The scope is now frozen.
    Frozen(Freeze),
    /// It already was; the original freeze stands.
    AlreadyFrozen(Freeze),
}

/// What decommissioning an agent did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decommissioned {
    /// Live tokens revoked.
    pub tokens_revoked: usize,
    /// Scopes frozen (the agent, and each wallet only it used).
    pub frozen: Vec<Scope>,
    /// Its queued and pending decisions, released.
    pub released: Vec<String>,
}

/// A decision as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionRecord {
    /// Identifier.
    pub id: String,
    /// Ledger sequence number.
    pub seq: i64,
    /// When it was decided.
    pub created_at: DateTime<Utc>,
    /// Last status change.
    pub updated_at: DateTime<Utc>,
    /// Agent.
    pub agent: String,
    /// Wallet.
    pub wallet: String,
    /// Department of the agent.
    pub department: Option<String>,
    /// Chain.
    pub chain: Option<String>,
    /// Asset `chain:SYMBOL`.
    pub asset: Option<String>,
    /// Recipient (canonical when resolved).
    pub recipient: String,
    /// Amount in asset units.
    pub amount: Decimal,
    /// USD value.
    pub usd: Option<Decimal>,
    /// Price used.
    pub price_usd: Option<Decimal>,
    /// Where that price came from (`static`, `chainlink:<feed>`, `pyth:<account>`).
    pub price_source: Option<String>,
    /// When that price was published (`None` for a static price).
    pub price_as_of: Option<DateTime<Utc>>,
    /// Operation.
    pub operation: Option<String>,
    /// Memo.
    pub memo: Option<String>,
    /// Merchant derived from the recipient.
    pub merchant: Option<String>,
    /// Category of that merchant.
    pub category: Option<String>,
    /// Verdict.
    pub decision: Decision,
    /// Tier.
    pub tier: Tier,
    /// Current status.
    pub status: SpendStatus,
    /// Reasons.
    pub reasons: Vec<Reason>,
    /// Headroom at decision time.
    pub headroom: Vec<Headroom>,
    /// When a DELAY spend becomes due.
    pub execute_after: Option<DateTime<Utc>>,
    /// When an APPROVAL request expires.
    pub approval_expires_at: Option<DateTime<Utc>>,
    /// Role that may approve.
    pub approver_role: Option<String>,
    /// Idempotency key given.
    pub idempotency_key: Option<String>,
    /// The wallet's address when it was decided.
    pub from_address: Option<String>,
    /// Token contract or mint of the asset when it was decided (`None` for native).
    pub token: Option<String>,
    /// Decimals of the asset when it was decided.
    pub decimals: Option<u32>,
    /// Account sequence (EVM nonce) of its transaction.
    pub nonce: Option<u64>,
    /// Transaction hash (EVM) or signature (Solana), once signed.
    pub tx_hash: Option<String>,
    /// Most the fee may cost, in the chain's native units.
    pub fee_cap: Option<Decimal>,
    /// The fee terms signed, e.g. `gas 21000 × max 3 gwei (tip 1 gwei)`.
    pub fee_terms: Option<String>,
    /// Block (slot) it landed in.
    pub block: Option<u64>,
    /// Fee paid, in native units.
    pub fee_paid: Option<Decimal>,
    /// Why it failed or was released.
    pub failure: Option<String>,
    /// Hash of what it pays ([`crate::Intent`]), bound when it was decided; approval and signing
    /// refuse a decision that no longer matches it.
    pub intent_hash: Option<String>,
    /// Operator who approved it.
    pub approved_by: Option<String>,
    /// When it was approved.
    pub approved_at: Option<DateTime<Utc>>,
    /// The x402 requirement it pays, for an x402 payment.
    pub x402: Option<X402Request>,
}

impl DecisionRecord {
    /// What the decision valued its amount at; `None` for one that was never valued.
    pub fn valuation(&self) -> Option<Valuation> {
        Some(Valuation {
            usd: self.usd?,
            price: self.price_usd?,
            // Decisions recorded before live prices were all valued at the static price.
            source: self.price_source.clone().map_or(Cow::Borrowed("static"), Cow::Owned),
            as_of: self.price_as_of,
        })
    }

    /// What the stored decision pays, as its intent hash binds it; `None` for a decision that
    /// never resolved to a chain transfer (a denial), or one recorded before the hash bound
    /// the sender, token and decimals.
    pub fn intent(&self) -> Option<crate::Intent> {
        Some(crate::Intent {
            agent: self.agent.clone(),
            wallet: self.wallet.clone(),
            from_address: self.from_address.clone()?,
            chain: self.chain.clone()?,
            asset: self.asset.clone()?,
            token: self.token.clone(),
            decimals: self.decimals?,
            recipient: self.recipient.clone(),
            amount: self.amount,
            operation: self.operation.clone(),
            memo: self.memo.clone(),
        })
    }
}

/// An outflow as the ledger recorded it, with how it reconciled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedOutflow {
    /// Block (slot).
    pub block: u64,
    /// Transaction hash.
    pub tx_hash: String,
    /// Position in the transaction.
    pub index: u64,
    /// Native value, token transfer or fee.
    pub kind: OutflowKind,
    /// Wallet it left.
    pub wallet: String,
    /// Recipient, when there is one.
    pub recipient: Option<String>,
    /// Asset key when configured.
    pub asset: Option<String>,
    /// Token contract or mint.
    pub token: Option<String>,
    /// Amount (asset units; base units for unknown tokens).
    pub amount: Decimal,
    /// Reconciliation class.
    pub class: Class,
    /// The decision it matched, if any.
    pub decision_id: Option<String>,
    /// Chain.
    pub chain: String,
    /// When the watcher recorded it (none for outflows recorded before this was kept).
    pub seen_at: Option<DateTime<Utc>>,
}

/// Something operators are told about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Sequence number.
    pub id: i64,
    /// What happened.
    pub kind: EventKind,
    /// When.
    pub at: DateTime<Utc>,
    /// The decision it concerns.
    pub decision_id: Option<String>,
    /// What happened, in words.
    pub detail: String,
}

/// Where the delivery of one event to one channel stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Attempts made.
    pub attempts: u32,
    /// Delivered?
    pub delivered: bool,
    /// The last failure, in words.
    pub last_error: Option<String>,
}

/// A signed transaction as the ledger keeps it (written before it is ever broadcast).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRecord {
    /// Transaction hash or signature.
    pub hash: String,
    /// Raw signed transaction.
    pub raw: Vec<u8>,
    /// Account sequence used.
    pub sequence: Option<u64>,
    /// Most the fee may cost, in native units.
    pub fee_cap: Decimal,
    /// Fee terms in words.
    pub fee_terms: String,
}

/// Signs with the sequence the ledger allocated; pure and quick (it runs inside the ledger's
/// transaction). An `Err` leaves nothing allocated.
pub type SignWith = Box<dyn FnOnce(Option<u64>) -> Result<SignedRecord, SigningError> + Send>;

/// The sending account whose nonce the ledger allocates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Chain id.
    pub chain: String,
    /// Canonical address.
    pub address: String,
    /// The chain's count of the account's mined transactions: nonces below it are used.
    pub floor: u64,
}

/// How a signing request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signing {
    /// Signed now and stored.
    Signed(SignedRecord),
    /// It had been signed before; here is what was stored.
    AlreadySigned(SignedRecord),
    /// It is not (or no longer) reserved: released, cancelled, frozen, …
    NotExecutable(SpendStatus),
}

/// Signs an authorization over the decision's intent hash (given); pure and quick, inside the
/// ledger's transaction, so that a token exists only once it is stored.
pub type IssueWith = Box<dyn FnOnce(&str) -> Result<Issued, SigningError> + Send>;

/// An authorization to store: what it is, what it pays, until when, and the signing step.
pub struct AuthorizationRequest {
    /// What it lets happen.
    pub kind: AuthorizationKind,
    /// What it pays, as the decision's intent hash must still bind it.
    pub intent: crate::Intent,
    /// Until when it may be used.
    pub expires_at: DateTime<Utc>,
    /// Most the payment's fee may cost (external wallets), in native units.
    pub fee_cap: Option<Decimal>,
    /// Signs it, given the intent hash.
    pub issue: IssueWith,
}

/// What signing an authorization produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// What the agent is handed: an external wallet's JWS, or an x402 payment's
    /// `PAYMENT-SIGNATURE` header value.
    pub token: String,
    /// x402: the EIP-3009 nonce (hex), by which the auditor finds the authorization on chain.
    pub nonce: Option<String>,
}

/// What an authorization lets happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthorizationKind {
    /// The agent pays from its own (external) wallet.
    External,
    /// A facilitator settles an EIP-3009 authorization spendguard signed (x402).
    X402,
}

impl AuthorizationKind {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthorizationKind::External => "external",
            AuthorizationKind::X402 => "x402",
        }
    }

    /// Parses [`AuthorizationKind::as_str`].
    pub fn parse(text: &str) -> Option<AuthorizationKind> {
        [AuthorizationKind::External, AuthorizationKind::X402].into_iter().find(|k| k.as_str() == text)
    }
}

/// Where an external wallet's authorization stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthorizationState {
    /// Waiting for the agent's payment.
    Open,
    /// A payment on chain was matched to it (or was what the agent got wrong: a mismatch).
    Consumed,
    /// Not paid by its expiry (plus the chain's grace); its budget is back.
    Expired,
    /// Revoked by a freeze or a decommission before it was paid; its budget is back.
    Revoked,
}

impl AuthorizationState {
    /// As stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthorizationState::Open => "open",
            AuthorizationState::Consumed => "consumed",
            AuthorizationState::Expired => "expired",
            AuthorizationState::Revoked => "revoked",
        }
    }

    /// Parses [`AuthorizationState::as_str`].
    pub fn parse(text: &str) -> Option<AuthorizationState> {
        [
            AuthorizationState::Open,
            AuthorizationState::Consumed,
            AuthorizationState::Expired,
            AuthorizationState::Revoked,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

impl std::fmt::Display for AuthorizationState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An authorization of an external wallet's spend, with the decision it carries out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationRecord {
    /// The decision.
    pub decision_id: String,
    /// What it lets happen.
    pub kind: AuthorizationKind,
    /// x402: the EIP-3009 nonce (hex).
    pub nonce: Option<String>,
    /// x402: the URL of the resource it pays for.
    pub resource: Option<String>,
    /// Agent it was issued to.
    pub agent: String,
    /// Wallet the agent pays from.
    pub wallet: String,
    /// Chain.
    pub chain: String,
    /// The wallet's address.
    pub from: String,
    /// Asset `chain:SYMBOL`.
    pub asset: String,
    /// Canonical recipient.
    pub recipient: String,
    /// Amount in asset units.
    pub amount: Decimal,
    /// USD value the decision booked.
    pub usd: Option<Decimal>,
    /// The signed token handed to the agent.
    pub token: String,
    /// When it was issued.
    pub issued_at: DateTime<Utc>,
    /// Until when the agent may pay.
    pub expires_at: DateTime<Utc>,
    /// Where it stands.
    pub state: AuthorizationState,
    /// When it was consumed, expired or revoked.
    pub ended_at: Option<DateTime<Utc>>,
    /// What ended it: the transaction that paid it, or who revoked it and why.
    pub ended_by: Option<String>,
}

/// How an authorization request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorizing {
    /// Authorized now (or before: the stored authorization).
    Authorized(Box<AuthorizationRecord>),
    /// It is not (or no longer) reserved: released, cancelled, frozen, …
    NotExecutable(SpendStatus),
}

/// How a re-signing request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resigning {
    /// Re-signed and stored; send this.
    Resigned(SignedRecord),
    /// It was re-signed once already: give up on it.
    Exhausted,
    /// Its status or transaction changed meanwhile; nothing to do.
    Stale,
}

/// How a broadcast transaction ended on chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settlement {
    /// True when it executed; false when it reverted.
    pub success: bool,
    /// Block (slot) it landed in.
    pub block: u64,
    /// Fee paid, in native units.
    pub fee: Decimal,
}

/// A transaction of a signature-indexed chain (Solana) the watcher indexed for one wallet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedTransaction {
    /// Chain id.
    pub chain: String,
    /// The watched address whose history listed it (its cursor moves to it).
    pub address: String,
    /// Its signature.
    pub signature: String,
    /// The slot it landed in.
    pub slot: u64,
    /// What left registered wallets in it.
    pub outflows: Vec<spendguard_core::reconcile::Outflow>,
    /// What came into registered wallets in it.
    pub inflows: Vec<spendguard_core::reconcile::Inflow>,
}

/// A block the watcher indexed, to record with its outflows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedBlock {
    /// Chain id.
    pub chain: String,
    /// Block number.
    pub number: u64,
    /// Its hash.
    pub hash: String,
    /// Its parent's hash.
    pub parent_hash: String,
    /// Outflows of registered wallets in it.
    pub outflows: Vec<spendguard_core::reconcile::Outflow>,
    /// Money that came into registered wallets in it.
    pub inflows: Vec<spendguard_core::reconcile::Inflow>,
}

/// A wallet's balance of an asset, read at a block, for balance conservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceReading {
    /// Wallet id.
    pub wallet: String,
    /// Asset key.
    pub asset: String,
    /// The balance.
    pub balance: Decimal,
}

/// The newest balance conservation checkpoint of a wallet's asset: the balance the auditor
/// read at that block (slot), after every outflow and inflow recorded up to it added up (or,
/// when they did not, after the difference was reported).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BalanceCheckpoint {
    /// Asset key.
    pub asset: String,
    /// Block (slot) it was read at.
    pub block: u64,
    /// The balance.
    pub balance: Decimal,
}

/// A balance that did not add up, and what was frozen for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceDifference {
    /// The check.
    pub check: spendguard_core::reconcile::BalanceCheck,
    /// Scopes frozen because of it.
    pub frozen: Vec<Scope>,
}

/// An inflow as the ledger recorded it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RecordedInflow {
    /// Chain id.
    pub chain: String,
    /// Block (slot).
    pub block: u64,
    /// Transaction hash (signature).
    pub tx_hash: String,
    /// Position in the transaction.
    pub index: u64,
    /// Native or token.
    pub kind: OutflowKind,
    /// Wallet id it came into.
    pub wallet: String,
    /// Who sent it.
    pub sender: String,
    /// Asset key, when configured.
    pub asset: Option<String>,
    /// Token contract or mint.
    pub token: Option<String>,
    /// Amount.
    pub amount: Decimal,
    /// The wallet's balance at the end of the block before.
    pub balance_before: Option<Decimal>,
    /// Its balance at the end of the block it landed in.
    pub balance_after: Option<Decimal>,
    /// From one of the wallet's `refill_from` addresses.
    pub expected: bool,
    /// When the watcher recorded it.
    pub seen_at: DateTime<Utc>,
}

/// What recording a block did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockRecorded {
    /// Recorded, with how each outflow reconciled.
    Recorded(Vec<spendguard_core::reconcile::Finding>),
    /// Its parent is not the block the ledger holds below it: the chain reorganised. Nothing
    /// was recorded.
    Reorg {
        /// The hash stored for the block below.
        stored_parent: String,
    },
}

/// Who holds a lease, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The holder's name (a daemon: its host and listen address).
    pub holder: String,
    /// When it runs out unless renewed.
    pub expires: DateTime<Utc>,
}

/// Tuning of a SQLite ledger.
#[derive(Debug, Clone)]
pub struct LedgerOptions {
    /// How long to wait for another process's write lock before failing.
    pub busy_timeout: std::time::Duration,
    /// Most jobs committed in one transaction.
    pub max_batch: usize,
}

impl Default for LedgerOptions {
    fn default() -> Self {
        LedgerOptions { busy_timeout: std::time::Duration::from_secs(30), max_batch: 512 }
    }
}

/// How many transactions the writer ran and how many jobs they held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerStats {
    /// Transactions committed or rolled back.
    pub transactions: u64,
    /// Jobs run in them.
    pub jobs: u64,
}
