//! The chain traits spendguard's service talks to. Each chain SDK (alloy, solana-client) lives
//! in its own crate behind [`ChainClient`]; only core types cross this boundary. Also what every
//! chain shares: failover with backoff ([`with_failover`]), the encrypted key file format
//! ([`keystore`]), and the auditor's poll loop ([`watch`]): indexing each chain to its final
//! head into an [`watch::IndexSink`], unwinding reorgs.
//!
//! # Signing protocol
//! A spend is signed in two steps so that the ledger can allocate the account sequence (EVM
//! nonce) and persist the signed transaction in one transaction:
//! 1. [`ChainClient::prepare`] does the I/O: fees, gas, the chain's current account sequence.
//! 2. The returned [`Prepared::sign`] closure is pure and fast; the ledger calls it with the
//!    sequence it allocated, inside its transaction, and stores the [`SignedTx`] before anyone
//!    broadcasts it.
//!
//! x402 payments are signed, not sent: [`ChainClient::sign_transfer_authorization`] (an
//! EIP-3009 authorization, pure, run inside the ledger transaction that stores it); cancelling
//! one is a transaction like a spend's ([`ChainClient::prepare_cancel_authorization`]).

pub mod keystore;
pub mod watch;

use async_trait::async_trait;
use rust_decimal::Decimal;
use spendguard_core::model::{Asset, ChainKind};
use spendguard_core::price::{FeedKind, Observation};
use std::time::Duration;

/// Result alias of chain operations.
pub type ChainResult<T> = Result<T, ChainError>;

/// What can go wrong talking to a chain. [`ChainError::is_retryable`] tells a caller whether to
/// try again (with backoff) or give up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// Timeout, connection refused, HTTP 429 or 5xx: try again later.
    #[error("chain {chain}: RPC unavailable: {message}")]
    Unavailable {
        /// Chain id.
        chain: String,
        /// What the transport said.
        message: String,
    },
    /// The node refused the transaction; it will not land as it is.
    #[error("chain {chain}: transaction rejected: {reason}")]
    Rejected {
        /// Chain id.
        chain: String,
        /// The node's reason.
        reason: String,
        /// True when the account sequence (nonce) it used is taken on chain anyway.
        sequence_used: bool,
    },
    /// Paying the current fee would exceed the configured cap.
    #[error("chain {chain}: fee {needed} exceeds the cap {cap}")]
    FeeAboveCap {
        /// Chain id.
        chain: String,
        /// What the chain asks (in gwei for EVM).
        needed: String,
        /// The configured cap.
        cap: String,
    },
    /// No key is loaded for the wallet's address.
    #[error("no signing key is loaded for {address} on chain {chain}")]
    NoKey {
        /// Chain id.
        chain: String,
        /// Wallet address.
        address: String,
    },
    /// An amount cannot be represented on chain (more decimals than the asset, or too large).
    #[error("amount: {0}")]
    Amount(String),
    /// An RPC endpoint serves another chain than the one configured (its EIP-155 chain id
    /// differs): it is skipped, and another URL of the list is tried.
    #[error("chain {chain}: the RPC endpoint {endpoint} serves chain id {found}, not the configured {expected}")]
    WrongChain {
        /// Chain id in the config.
        chain: String,
        /// The endpoint, as scheme and host only (a URL's path may hold an API key).
        endpoint: String,
        /// The configured chain id.
        expected: u64,
        /// What the endpoint answered.
        found: u64,
    },
    /// The node answered something that makes no sense.
    #[error("chain {chain}: unexpected answer: {message}")]
    BadResponse {
        /// Chain id.
        chain: String,
        /// What was wrong.
        message: String,
    },
}

impl ChainError {
    /// Should the caller try again later?
    pub fn is_retryable(&self) -> bool {
        // A URL serving the wrong chain is skipped like one that is down: another may be right.
        matches!(self, ChainError::Unavailable { .. } | ChainError::WrongChain { .. })
    }
}

/// A URL as logs and errors may show it: scheme and host, never the path or query (where
/// providers put API keys) or credentials.
pub fn endpoint_name(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    if scheme.is_empty() {
        host.to_string()
    } else {
        format!("{scheme}://{host}")
    }
}

/// Wait before retry round `round` (1-based): 200 ms doubling up to 5 s, with "equal jitter"
/// (half fixed, half random) so many watchers hitting one rate limit do not retry in lock-step.
pub fn backoff(round: u32) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let full =
        Duration::from_millis(200).saturating_mul(1 << round.saturating_sub(1).min(5)).min(Duration::from_secs(5));
    // A fresh RandomState is randomly keyed: enough randomness for jitter without a dependency.
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    let half = full / 2;
    half + Duration::from_nanos(random % (half.as_nanos() as u64).max(1))
}

/// How a client retries: how long one call to one URL may take, and how many more rounds over
/// its URL list a retryable failure gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Per call, per URL.
    pub timeout: Duration,
    /// Extra rounds after the first.
    pub retries: u32,
}

impl RetryPolicy {
    /// Retry rounds when none is configured: with [`backoff`] they span about 3 s.
    pub const DEFAULT_RETRIES: u32 = 4;
}

/// Runs `call` against each endpoint in turn until one answers; when all fail with a retryable
/// error (timeout, connection, 429, 5xx, a lagging node's null), waits [`backoff`] and goes round
/// again, up to `policy.retries` more rounds. Refusals are returned at once.
pub async fn with_failover<C, T, F, Fut>(chain: &str, endpoints: &[C], policy: RetryPolicy, call: F) -> ChainResult<T>
where
    C: Clone,
    F: Fn(C) -> Fut,
    Fut: std::future::Future<Output = ChainResult<T>>,
{
    let mut last = None;
    for round in 0..=policy.retries {
        if round > 0 {
            tokio::time::sleep(backoff(round)).await;
        }
        for (i, endpoint) in endpoints.iter().enumerate() {
            let err = match tokio::time::timeout(policy.timeout, call(endpoint.clone())).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => e,
                Err(_) => ChainError::Unavailable {
                    chain: chain.to_string(),
                    message: format!("no answer within {:?}", policy.timeout),
                },
            };
            if !err.is_retryable() {
                return Err(err);
            }
            tracing::debug!(chain, url = i, round, error = %err, "RPC failed; trying again");
            last = Some(err);
        }
    }
    let err =
        last.unwrap_or_else(|| ChainError::Unavailable { chain: chain.to_string(), message: "no RPC URL".into() });
    tracing::warn!(chain, error = %err, "every RPC URL failed, retries exhausted");
    Err(err)
}

/// A transfer to sign: `amount` of `asset` from `from` to `to` (canonical addresses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// Sending wallet address.
    pub from: String,
    /// Recipient address.
    pub to: String,
    /// What is sent.
    pub asset: Asset,
    /// How much, in asset units.
    pub amount: Decimal,
}

/// A signed transaction, ready to broadcast as many times as needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTx {
    /// Transaction hash (EVM) or signature (Solana).
    pub hash: String,
    /// The raw signed transaction.
    pub raw: Vec<u8>,
    /// Account sequence used (EVM nonce).
    pub sequence: Option<u64>,
    /// Most the fee can cost, in the chain's native units.
    pub fee_cap: Decimal,
    /// Human description of the fee terms, e.g. `gas 21000 × max 3.2 gwei`.
    pub fee_terms: String,
}

/// The signing step of a prepared transfer; called with the allocated sequence.
pub type SignFn = Box<dyn FnOnce(Option<u64>) -> ChainResult<SignedTx> + Send>;

/// A transfer with everything fetched from the chain, waiting for its sequence number.
pub struct Prepared {
    /// The chain's count of mined transactions of the sender (EVM), a floor for allocation;
    /// `None` on chains without account sequences.
    pub sequence_floor: Option<u64>,
    /// Signs with the allocated sequence. Pure: no I/O.
    pub sign: SignFn,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared").field("sequence_floor", &self.sequence_floor).finish_non_exhaustive()
    }
}

/// What became of a broadcast transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxOutcome {
    /// True when it executed; false when it was included but reverted.
    pub success: bool,
    /// Block (slot) it was included in.
    pub block: u64,
    /// Fee paid, in native units.
    pub fee: Decimal,
}

/// Value that left one of the watched addresses in a block, as the chain reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainOutflow {
    /// Transaction hash (signature).
    pub tx_hash: String,
    /// Position in the transaction: the log index for tokens, 0 otherwise.
    pub index: u64,
    /// Native value, token transfer or fee.
    pub kind: spendguard_core::reconcile::OutflowKind,
    /// The watched address it left.
    pub from: String,
    /// Recipient (canonical); `None` for fees and contract creations.
    pub to: Option<String>,
    /// Token contract or mint (canonical), for tokens.
    pub token: Option<String>,
    /// Asset key when the asset is configured.
    pub asset: Option<String>,
    /// Amount: asset units for configured assets, base units for unknown tokens.
    pub amount: Decimal,
    /// A token transfer made by an EIP-3009 authorization (an x402 payment settled by a
    /// facilitator): the nonce of its `AuthorizationUsed` log, hex.
    pub authorization_nonce: Option<String>,
}

/// A block's identity and the outflows of the watched addresses in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockOutflows {
    /// Block number (slot).
    pub number: u64,
    /// Block hash.
    pub hash: String,
    /// Parent block hash.
    pub parent_hash: String,
    /// Outflows in transaction order.
    pub outflows: Vec<ChainOutflow>,
    /// Money that came into the watched addresses.
    pub inflows: Vec<ChainInflow>,
}

/// Money that came into a watched address, as a chain client reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainInflow {
    /// Transaction hash.
    pub tx_hash: String,
    /// Position within the transaction.
    pub index: u64,
    /// Native or token.
    pub kind: spendguard_core::reconcile::OutflowKind,
    /// Who sent it.
    pub from: String,
    /// The watched address it came into.
    pub to: String,
    /// Token contract or mint.
    pub token: Option<String>,
    /// Configured asset key, when known.
    pub asset: Option<String>,
    /// Amount in asset units (base units for unknown tokens).
    pub amount: Decimal,
    /// The receiver's balance of the asset at the end of the block before, when read.
    pub balance_before: Option<Decimal>,
    /// Its balance at the end of this block, when read.
    pub balance_after: Option<Decimal>,
}

/// How a chain's watcher finds the outflows of registered wallets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Indexing {
    /// Block by block, following parent hashes to notice reorgs (EVM).
    Blocks,
    /// Per wallet, by the signatures of the transactions that involve it (Solana), read at the
    /// chain's commitment.
    Signatures,
}

/// A transaction that involves a watched address, as a signature-indexed chain lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureRef {
    /// Transaction signature.
    pub signature: String,
    /// Slot it landed in.
    pub slot: u64,
}

/// What a signature-indexed chain lists for an account.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Transactions final at the chain's commitment, oldest first, up to the first one that
    /// is not.
    pub ready: Vec<SignatureRef>,
    /// Newer transactions listed but not final yet (left for a later pass).
    pub not_final: u64,
}

/// A wallet's balances read at one finalized slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalBalances {
    /// The slot they were read at.
    pub slot: u64,
    /// One per asset asked for, in that order.
    pub balances: Vec<Decimal>,
}

/// The outflows of the watched addresses in one transaction, and the money that came into them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxOutflows {
    /// Slot it landed in.
    pub slot: u64,
    /// Outflows in the order of the transaction's instructions, the fee last.
    pub outflows: Vec<ChainOutflow>,
    /// Inflows, with the receiving account's balance before and after the transaction.
    pub inflows: Vec<ChainInflow>,
}

/// An EIP-3009 `TransferWithAuthorization` to sign: what x402's `exact` scheme on EVM pays
/// with, submitted by a facilitator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferAuthorization {
    /// The paying wallet (the authorizer).
    pub from: String,
    /// The payee.
    pub to: String,
    /// The token contract: the EIP-712 domain's verifying contract.
    pub token: String,
    /// The token's EIP-712 domain name (USDC: "USD Coin").
    pub domain_name: String,
    /// The token's EIP-712 domain version (USDC: "2").
    pub domain_version: String,
    /// Amount in base units.
    pub value: u128,
    /// Valid after this Unix time (exclusive).
    pub valid_after: u64,
    /// Valid before this Unix time (exclusive).
    pub valid_before: u64,
    /// Random 32 bytes, used once per authorizer.
    pub nonce: [u8; 32],
}

/// An unused EIP-3009 authorization to cancel on chain (`cancelAuthorization`), in a
/// transaction its authorizer sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationCancel {
    /// The authorizer: the wallet that sends the cancellation.
    pub from: String,
    /// The token contract.
    pub token: String,
    /// The token's EIP-712 domain name.
    pub domain_name: String,
    /// The token's EIP-712 domain version.
    pub domain_version: String,
    /// The authorization's nonce.
    pub nonce: [u8; 32],
}

/// One chain, as the service uses it.
#[async_trait]
pub trait ChainClient: Send + Sync {
    /// The chain's configured id.
    fn chain_id(&self) -> &str;

    /// Its family.
    fn kind(&self) -> ChainKind;

    /// Live balances of `address` for each asset, in asset units, in the order given.
    async fn balances(&self, address: &str, assets: &[Asset]) -> ChainResult<Vec<Decimal>>;

    /// Fetches what signing `transfer` needs and returns the signing step.
    async fn prepare(&self, transfer: &Transfer) -> ChainResult<Prepared>;

    /// Sends a signed transaction; sending one the node already has is not an error.
    async fn broadcast(&self, signed: &SignedTx) -> ChainResult<()>;

    /// The outcome of a transaction, once it is included.
    async fn outcome(&self, hash: &str) -> ChainResult<Option<TxOutcome>>;

    /// True when `tx`, sent from `from`, can no longer land: the chain's state at `final_block`
    /// (a block no reorg will undo) rules it out. On EVM: the sender's nonce there is past the
    /// transaction's, and the transaction itself is not in the chain. False when unsure.
    async fn cannot_land(&self, tx: &SignedTx, from: &str, final_block: u64) -> ChainResult<bool>;

    /// The current head block (slot).
    async fn head(&self) -> ChainResult<u64>;

    /// The hash of the chain's first block: what tells a chain from another one (or from the
    /// same node restarted empty).
    async fn genesis(&self) -> ChainResult<String>;

    /// Asks every RPC endpoint which chain it serves: [`ChainError::WrongChain`] for the first
    /// that names another. Endpoints that do not answer are left for later.
    async fn check_endpoints(&self) -> ChainResult<()> {
        Ok(())
    }

    /// How many transactions `address` had sent as of block `block`, on chains that count them
    /// (the EVM nonce); `None` elsewhere. Asked at a block the ledger saw, so that a node
    /// lagging behind the head is not mistaken for one that lost transactions.
    async fn sent_count(&self, address: &str, block: u64) -> ChainResult<Option<u64>> {
        let _ = (address, block);
        Ok(None)
    }

    /// Balances of `address` for each asset at the end of block `number`, in the order given
    /// (balance conservation); chains that cannot read past state say so.
    async fn balances_at(&self, address: &str, assets: &[Asset], number: u64) -> ChainResult<Vec<Decimal>> {
        let _ = (address, assets, number);
        Err(ChainError::BadResponse {
            chain: self.chain_id().to_string(),
            message: "this chain's client reads no balances at a past block".into(),
        })
    }

    /// [`Indexing::Signatures`] chains, which read no past state: balances of `address` for each
    /// asset at the newest *finalized* slot, all read at that one slot, with the slot (balance
    /// conservation; a slot that is final cannot be rolled back under the check).
    async fn final_balances(&self, address: &str, assets: &[Asset]) -> ChainResult<FinalBalances> {
        let _ = (address, assets);
        Err(ChainError::BadResponse {
            chain: self.chain_id().to_string(),
            message: "this chain's client reads balances at a block (balances_at)".into(),
        })
    }

    /// [`Indexing::Signatures`] chains: the newest finalized slot.
    async fn finalized_slot(&self) -> ChainResult<u64> {
        Err(ChainError::BadResponse {
            chain: self.chain_id().to_string(),
            message: "this chain is indexed by block, not by signature".into(),
        })
    }

    /// [`Indexing::Signatures`] chains: the slot each of `signatures` is in now, in the order
    /// given; `None` for one the chain no longer has (its slot was rolled back and it did not
    /// land again).
    async fn signature_slots(&self, signatures: &[String]) -> ChainResult<Vec<Option<u64>>> {
        let _ = signatures;
        Err(ChainError::BadResponse {
            chain: self.chain_id().to_string(),
            message: "this chain is indexed by block, not by signature".into(),
        })
    }

    /// Reads a price feed on this chain ([`FeedKind::Chainlink`] on EVM, [`FeedKind::Pyth`] on
    /// Solana), converted to plain values; judging it is the core's business.
    async fn read_price(&self, feed: &FeedKind) -> ChainResult<Observation> {
        let _ = feed;
        Err(ChainError::BadResponse {
            chain: self.chain_id().to_string(),
            message: "this chain has no price feeds of that kind".into(),
        })
    }

    /// Signs an EIP-3009 transfer authorization with the key of `authorization.from`: the
    /// 65-byte signature, hex. Pure and quick (no RPC): it runs inside the ledger transaction
    /// that stores it. Chains without EIP-3009 tokens refuse.
    fn sign_transfer_authorization(&self, authorization: &TransferAuthorization) -> ChainResult<String> {
        let _ = authorization;
        Err(ChainError::BadResponse {
            chain: self.chain_id().to_string(),
            message: "this chain has no EIP-3009 transfer authorizations".into(),
        })
    }

    /// Fetches what signing a cancellation of an unused EIP-3009 authorization needs (the
    /// wallet's EIP-712 signature inside a `cancelAuthorization` call it sends) and returns the
    /// signing step, as [`ChainClient::prepare`] does for transfers.
    async fn prepare_cancel_authorization(&self, cancel: &AuthorizationCancel) -> ChainResult<Prepared> {
        let _ = cancel;
        Err(ChainError::BadResponse {
            chain: self.chain_id().to_string(),
            message: "this chain has no EIP-3009 transfer authorizations".into(),
        })
    }

    /// The hash of block `number` on the node's canonical chain, if it has one.
    async fn block_hash(&self, number: u64) -> ChainResult<Option<String>>;

    /// Every outflow of `watched` addresses in block `number`; `assets` name the configured
    /// assets so amounts come back in asset units. `None` when the chain has no such block yet;
    /// a client that cannot tell "not yet" from a lagging node must return a retryable error
    /// instead, so that no block is ever taken as empty.
    async fn block_outflows(
        &self,
        number: u64,
        watched: &[String],
        assets: &[Asset],
    ) -> ChainResult<Option<BlockOutflows>>;

    /// [`Indexing::Blocks`] chains that can read ranges: for each of `addresses`, a mark of
    /// everything that moves when the wallet acts or is acted on without a log — on EVM its
    /// nonce (a transaction sent, an EIP-7702 delegation signed), its native balance (ether in
    /// or out, by a transaction or an internal call) and its code (a delegation) — at the end
    /// of block `number`. Equal marks at both ends of a range in which no token transfer names
    /// the wallets ([`ChainClient::logged_blocks`]) mean nothing of theirs moved in it.
    async fn wallet_marks(&self, addresses: &[String], number: u64) -> ChainResult<Vec<String>> {
        let _ = (addresses, number);
        Err(ChainError::BadResponse {
            chain: self.chain_id().to_string(),
            message: "this chain's client reads no ranges".into(),
        })
    }

    /// [`Indexing::Blocks`] chains that can read ranges: the blocks in `[from, to]` with a token
    /// `Transfer` log from or to one of `addresses`, ascending.
    async fn logged_blocks(&self, addresses: &[String], from: u64, to: u64) -> ChainResult<Vec<u64>> {
        let _ = (addresses, from, to);
        Err(ChainError::BadResponse {
            chain: self.chain_id().to_string(),
            message: "this chain's client reads no ranges".into(),
        })
    }

    /// How this chain's watcher indexes it; [`Indexing::Blocks`] unless a client says otherwise.
    fn indexing(&self) -> Indexing {
        Indexing::Blocks
    }

    /// [`Indexing::Signatures`] chains: the accounts whose transaction histories show what
    /// moves in and out of wallet `address` — the wallet, and on Solana its token accounts for
    /// the configured tokens (a transfer into an existing token account does not name the
    /// wallet).
    fn listed_accounts(&self, address: &str, assets: &[Asset]) -> Vec<String> {
        let _ = assets;
        vec![address.to_string()]
    }

    /// [`Indexing::Signatures`] chains: the transactions involving `address` that landed after
    /// `until` (exclusive; from the start when `None`) and at or above slot `min_slot`, final at
    /// the chain's commitment, oldest first — and how many newer ones are not final yet.
    async fn signatures_since(&self, address: &str, until: Option<&str>, min_slot: u64) -> ChainResult<Listing> {
        let _ = (address, until, min_slot);
        Err(ChainError::BadResponse {
            chain: self.chain_id().to_string(),
            message: "this chain is indexed by block, not by signature".into(),
        })
    }

    /// [`Indexing::Signatures`] chains: what left the `watched` addresses in transaction
    /// `signature`, or `None` when the node does not have it at the chain's commitment yet.
    async fn transaction_outflows(
        &self,
        signature: &str,
        watched: &[String],
        assets: &[Asset],
    ) -> ChainResult<Option<TxOutflows>> {
        let _ = (signature, watched, assets);
        Err(ChainError::BadResponse {
            chain: self.chain_id().to_string(),
            message: "this chain is indexed by block, not by signature".into(),
        })
    }
}
