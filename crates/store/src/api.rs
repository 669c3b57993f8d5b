//! The ledger as the service sees it: one small trait per concern, each implemented by every
//! engine. Services hold only the traits they use (`Arc<dyn DecisionStore>`, …); an engine
//! that implements them all is a [`Store`], from which each can be taken by upcasting.
//!
//! Every method is async: the SQLite engine answers from its writer or reader threads over a
//! oneshot channel, so callers never block a runtime thread.

use crate::audit::{Anchor, AuditCheck, AuditEntry, AuditFilter};
use crate::error::StoreResult;
use crate::intent::Intent;
use crate::records::*;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use spendguard_core::model::Scope;
use spendguard_core::price::Prices;
use spendguard_core::reconcile::{Class, Finding, WalletCursor};
use spendguard_core::{Balances, Evaluation, EventKind, Freeze, SpendRequest, SpendStatus};

/// Decisions and the reservations they hold: evaluate-and-reserve, the moves agents and
/// operators ask for, and reads.
#[async_trait]
pub trait DecisionStore: Send + Sync {
    /// Evaluates a spend against the current ledger without recording anything.
    async fn evaluate(&self, request: SpendRequest, balances: Balances, prices: Prices) -> StoreResult<Evaluation>;
    /// Evaluates a spend and records the decision in one transaction; an allowed spend's amount
    /// is reserved against every limit until it is released. Durable when this returns.
    async fn reserve(&self, request: ReserveRequest) -> StoreResult<ReserveOutcome>;
    /// Moves a decision along its lifecycle; reservations are released or turned into spend.
    async fn set_status(&self, id: &str, status: SpendStatus, at: DateTime<Utc>) -> StoreResult<DecisionRecord>;
    /// Cancels a queued or pending-approval spend of `agent`, releasing its reservation.
    async fn cancel(&self, agent: &str, id: &str, why: &str, at: DateTime<Utc>) -> StoreResult<DecisionRecord>;
    /// Releases every pending approval whose request expired by `now`; returns them.
    async fn expire_approvals(&self, now: DateTime<Utc>) -> StoreResult<Vec<DecisionRecord>>;
    /// Approves a pending request as `operator` (whose role the caller checked): it becomes
    /// reserved, to be executed exactly as decided. Refused when it expired, a freeze covers
    /// it, its stored intent no longer matches its hash, or `shown_hash` is not that hash.
    async fn approve(
        &self,
        id: &str,
        operator: &str,
        shown_hash: Option<&str>,
        at: DateTime<Utc>,
    ) -> StoreResult<DecisionRecord>;
    /// Rejects a pending request as `operator`; its reservation is released.
    async fn reject(&self, id: &str, operator: &str, reason: &str, at: DateTime<Utc>) -> StoreResult<DecisionRecord>;
    /// An operator cancels a queued (DELAY) spend; its reservation is released.
    async fn cancel_delay(
        &self,
        id: &str,
        operator: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<DecisionRecord>;
    /// Starts a due DELAY spend (reserved for execution), or releases it when a freeze covers
    /// it now, in one transaction. `None` when it is no longer queued.
    async fn start_due(&self, id: &str, at: DateTime<Utc>) -> StoreResult<Option<DecisionRecord>>;
    /// One decision.
    async fn decision(&self, id: &str) -> StoreResult<Option<DecisionRecord>>;
    /// Decisions in sequence order, optionally of one agent.
    async fn decisions(&self, agent: Option<&str>) -> StoreResult<Vec<DecisionRecord>>;
    /// Decisions in any of `statuses`, oldest first.
    async fn decisions_in(&self, statuses: &[SpendStatus]) -> StoreResult<Vec<DecisionRecord>>;
}

/// Signing and nonces: the signed transaction stored before it is sent, and where it went.
#[async_trait]
pub trait SigningStore: Send + Sync {
    /// Signs a reserved decision: checks that `intent` (what is about to reach the chain)
    /// hashes to the decision's bound intent, allocates the account's next nonce (or a hole a
    /// refused transaction left), calls `sign` with it and stores the signed transaction, all
    /// in one transaction. A decision signed before gets its stored transaction back; one a
    /// freeze now covers is released instead.
    async fn sign(
        &self,
        id: &str,
        intent: Intent,
        account: Option<Account>,
        sign: SignWith,
        at: DateTime<Utc>,
    ) -> StoreResult<Signing>;
    /// Re-signs a broadcast decision whose transaction `dead_hash` the chain proved can never
    /// land, storing the new one before it is sent; at most once per decision, and only when
    /// `intent` still hashes to the decision's bound intent.
    async fn resign(
        &self,
        id: &str,
        dead_hash: &str,
        intent: Intent,
        sign: SignWith,
        at: DateTime<Utc>,
    ) -> StoreResult<Resigning>;
    /// The signed transaction of a decision, if any.
    async fn signed_tx(&self, id: &str) -> StoreResult<Option<SignedRecord>>;
    /// Records that a signed transaction was sent (idempotent).
    async fn mark_broadcast(&self, id: &str, at: DateTime<Utc>) -> StoreResult<DecisionRecord>;
    /// Records how a broadcast transaction ended: confirmed, or failed when it reverted.
    async fn settle(&self, id: &str, settlement: Settlement, at: DateTime<Utc>) -> StoreResult<DecisionRecord>;
    /// Fails a decision whose transaction will never land, releasing its reservation; a nonce
    /// not used on chain is kept for the next transaction.
    async fn fail(&self, id: &str, reason: &str, sequence_used: bool, at: DateTime<Utc>)
        -> StoreResult<DecisionRecord>;
    /// Decisions on `chain` broadcast at or before `deadline` and still not seen on chain; each
    /// is reported once per broadcast with a `missing_outflow` event.
    async fn missing(
        &self,
        chain: &str,
        deadline: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<DecisionRecord>>;
}

/// What the auditor indexed: outflows with their reconciliation, and where each watcher is.
#[async_trait]
pub trait OutflowStore: Send + Sync {
    /// Records a block: its outflows are stored and reconciled, the kill switch applied to
    /// unexplained or mismatched ones, and the chain's cursor moved past it, in one
    /// transaction. A block whose parent is not the stored block below is not recorded.
    async fn record_block(&self, block: IndexedBlock, at: DateTime<Utc>) -> StoreResult<BlockRecorded>;
    /// Records the outflows and inflows of one transaction of a signature-indexed chain
    /// (Solana) and moves the listing wallet's cursor to it, in one transaction.
    async fn record_transaction(&self, tx: IndexedTransaction, at: DateTime<Utc>) -> StoreResult<Vec<Finding>>;
    /// Records that blocks up to `last` of `chain` hold nothing of the registered wallets (a
    /// range the watcher read whole): `last`'s hash, which moves the cursor past it.
    async fn record_range(&self, chain: &str, last: u64, hash: &str) -> StoreResult<()>;
    /// The highest block of `chain` below `number` whose hash is recorded.
    async fn recorded_below(&self, chain: &str, number: u64) -> StoreResult<Option<u64>>;
    /// Undoes indexing from block `from` on (a reorg orphaned it): decisions confirmed there
    /// are reopened. Returns them.
    async fn rewind(&self, chain: &str, from: u64, at: DateTime<Utc>) -> StoreResult<Vec<String>>;
    /// The stored hash of block `number` of `chain`.
    async fn block_hash(&self, chain: &str, number: u64) -> StoreResult<Option<String>>;
    /// The next block the watcher of `chain` indexes, if it has started.
    async fn chain_cursor(&self, chain: &str) -> StoreResult<Option<u64>>;
    /// Where the watcher of signature-indexed `chain` stands for account `address`.
    async fn wallet_cursor(&self, chain: &str, address: &str) -> StoreResult<Option<WalletCursor>>;
    /// The transactions recorded on signature-indexed `chain` at slots above `above` (those
    /// with outflows or inflows, and each account's newest): signature and slot, oldest first.
    /// What a rollback could still take away.
    async fn recorded_transactions(&self, chain: &str, above: u64) -> StoreResult<Vec<(String, u64)>>;
    /// Every outflow recorded, of one chain or all, in chain, block and transaction order.
    async fn outflows(&self, chain: Option<&str>) -> StoreResult<Vec<RecordedOutflow>>;
    /// Inflows recorded (of one chain, or all), in chain, block and transaction order.
    async fn inflows(&self, chain: Option<&str>) -> StoreResult<Vec<RecordedInflow>>;
    /// The latest `limit` inflows into `wallet`, oldest first.
    async fn recent_inflows(&self, wallet: &str, limit: usize) -> StoreResult<Vec<RecordedInflow>>;
    /// The newest balance conservation checkpoint of each asset of `wallet`, by asset.
    async fn balance_checkpoints(&self, wallet: &str) -> StoreResult<Vec<BalanceCheckpoint>>;
    /// Balance conservation at `block` (indexed up to it): each reading is checked against the
    /// wallet's latest checkpoint of the asset minus the outflows plus the inflows recorded
    /// since, and becomes the next checkpoint. A difference records
    /// `unexplained_balance_change` and applies `on_unexplained_outflow`, in one transaction.
    ///
    /// With `quiet` above 0 a reading is taken only when the wallet's asset moved nothing
    /// within `quiet` blocks (slots) either side of `block`; else it is passed over (no
    /// checkpoint, no difference): a node's reading labelled with a slot need not draw its line
    /// exactly there (surfpool's includes part of the slot it names).
    async fn check_balances(
        &self,
        chain: &str,
        block: u64,
        readings: Vec<BalanceReading>,
        quiet: u64,
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<BalanceDifference>>;
    /// How the outflows of a decision's transaction reconciled: the worst class among them,
    /// `None` until the watcher has seen it.
    async fn reconciliation(&self, decision_id: &str) -> StoreResult<Option<Class>>;
    /// The genesis hash recorded for `chain`, recording `seen` (with an audit entry) when none
    /// is: a later answer that differs means the RPC now serves another chain, or the node was
    /// reset.
    async fn chain_genesis(&self, chain: &str, seen: &str, at: DateTime<Utc>) -> StoreResult<String>;
    /// The highest nonce among `wallet`'s spends confirmed on chain, and the block it landed
    /// in: the chain must count at least one more transaction from the wallet there.
    async fn highest_confirmed_nonce(&self, wallet: &str) -> StoreResult<Option<(u64, u64)>>;
    /// Records that `chain` no longer is the chain the ledger knows (`detail` says how) and
    /// freezes every wallet on it, in one transaction; returns the scopes newly frozen.
    async fn chain_reset(&self, chain: &str, detail: &str, at: DateTime<Utc>) -> StoreResult<Vec<Scope>>;
}

/// Authorizations of external wallets' spends: spendguard signs nothing on chain for them;
/// the agent pays with its own wallet and the auditor (`OutflowStore`) consumes the matching
/// authorization. Freezes revoke them (`FreezeStore`).
#[async_trait]
pub trait AuthorizationStore: Send + Sync {
    /// Authorizes a reserved decision (an external wallet's spend, or an x402 payment), in one
    /// transaction: the decision
    /// must still be reserved and not covered by a freeze, `intent` must hash to the one bound
    /// to it; then `issue` signs the token over that hash, the authorization is stored open
    /// until `expires_at`, the decision becomes `authorized` (booking `fee_cap` as the most its
    /// payment's fee may cost) and the audit log records it. A decision authorized before
    /// answers its stored authorization.
    async fn authorize(&self, id: &str, request: AuthorizationRequest, at: DateTime<Utc>) -> StoreResult<Authorizing>;
    /// The authorization of decision `id`.
    async fn authorization(&self, id: &str) -> StoreResult<Option<AuthorizationRecord>>;
    /// Every open authorization, oldest first.
    async fn open_authorizations(&self) -> StoreResult<Vec<AuthorizationRecord>>;
    /// Authorizations issued in `[from, to)`, whatever became of them, oldest first.
    async fn authorizations_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> StoreResult<Vec<AuthorizationRecord>>;
    /// Signs the on-chain cancellation of open x402 authorization `id` with the wallet's next
    /// nonce (allocated here) and stores the transaction before it is sent, in one transaction;
    /// one signed before is returned as it was (to send again).
    async fn sign_cancellation(
        &self,
        id: &str,
        account: Account,
        sign: SignWith,
        at: DateTime<Utc>,
    ) -> StoreResult<SignedRecord>;
    /// The chain's answer to a cancellation: executed, the authorization is revoked and its
    /// decision released; reverted (the server settled it first), it stays as it is.
    async fn cancellation_landed(&self, id: &str, success: bool, at: DateTime<Utc>)
        -> StoreResult<AuthorizationRecord>;
    /// Expires the open authorizations of wallets on `chain` whose expiry is before `deadline`
    /// (their expiry plus the chain's grace has passed): each decision is released and its
    /// budget returned, in one transaction. Returns them.
    async fn expire_authorizations(
        &self,
        chain: &str,
        deadline: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<AuthorizationRecord>>;
}

/// The alert outbox: events, and their delivery to each channel.
#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// Records an event for operators.
    async fn record_event(
        &self,
        kind: EventKind,
        decision_id: Option<&str>,
        detail: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// Events of `kinds` not yet delivered to `channel` and due for an attempt by `now`
    /// (deliveries give up after `max_attempts`), oldest first.
    async fn undelivered(
        &self,
        channel: &str,
        kinds: &[EventKind],
        now: DateTime<Utc>,
        max_attempts: u32,
    ) -> StoreResult<Vec<Event>>;
    /// Claims the next delivery attempt of an event to a channel until `lease_until`, so that
    /// of several processes only one posts it. False when delivered, or claimed by another.
    async fn claim_delivery(
        &self,
        event_id: i64,
        channel: &str,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Records one delivery attempt: delivered, or failed with the error in words and when to
    /// try again.
    async fn record_delivery(
        &self,
        event_id: i64,
        channel: &str,
        outcome: Result<(), String>,
        next_attempt: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// Where the delivery of an event to a channel stands.
    async fn delivery(&self, event_id: i64, channel: &str) -> StoreResult<Option<Delivery>>;
    /// Events of one kind (or all), oldest first.
    async fn events(&self, kind: Option<EventKind>) -> StoreResult<Vec<Event>>;
}

/// Agents' and operators' bearer tokens, stored as hashes.
#[async_trait]
pub trait CredentialStore: Send + Sync {
    /// Stores a new token for a configured agent (its hash).
    async fn add_agent_token(&self, agent: &str, token_hash: &str, by: &str, at: DateTime<Utc>) -> StoreResult<()>;
    /// Revokes every token of `agent`; returns how many were live.
    async fn revoke_agent(&self, agent: &str, by: &str, at: DateTime<Utc>) -> StoreResult<usize>;
    /// The agent a live token (by hash) belongs to.
    async fn agent_for_token(&self, token_hash: &str) -> StoreResult<Option<String>>;
    /// Stores a new token for a configured operator (its hash).
    async fn add_operator_token(&self, operator: &str, token_hash: &str, at: DateTime<Utc>) -> StoreResult<()>;
    /// The operator a live operator token (by hash) belongs to.
    async fn operator_for_token(&self, token_hash: &str) -> StoreResult<Option<String>>;
}

/// The kill switch: frozen scopes, and decommissioned agents.
#[async_trait]
pub trait FreezeStore: Send + Sync {
    /// Freezes a scope: every spend it covers is denied with `KILL_SWITCH` from now on.
    async fn freeze(&self, freeze: Freeze) -> StoreResult<FreezeOutcome>;
    /// Lifts a freeze, recording the acknowledgment; false when it was not frozen.
    async fn unfreeze(&self, scope: Scope, by: &str, ack: &str, at: DateTime<Utc>) -> StoreResult<bool>;
    /// The frozen scopes, oldest first.
    async fn freezes(&self) -> StoreResult<Vec<Freeze>>;
    /// Revokes an agent, freezes `scopes` (the agent and the wallets only it uses) and releases
    /// its queued and pending spends, in one transaction.
    async fn decommission(
        &self,
        agent: &str,
        scopes: Vec<Scope>,
        by: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<Decommissioned>;
}

/// The hash-chained audit log.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Checks the chain from its first entry; with `anchor`, also that it still passes through
    /// an entry recorded earlier.
    async fn verify_audit(&self, anchor: Option<Anchor>) -> StoreResult<AuditCheck>;
    /// Entries matching `filter`, in sequence order.
    async fn audit_entries(&self, filter: AuditFilter) -> StoreResult<Vec<AuditEntry>>;
    /// The newest entry's sequence and hash.
    async fn audit_head(&self) -> StoreResult<Option<(i64, String)>>;
    /// Records the configuration in use (its hash and a summary) when it differs from the last
    /// one recorded; returns whether it did.
    async fn record_config(&self, hash: &str, summary: &str, at: DateTime<Utc>) -> StoreResult<bool>;
}

/// What a period's report reads.
#[async_trait]
pub trait ReportStore: Send + Sync {
    /// Decisions made in `[from, to)`, oldest first.
    async fn decisions_between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> StoreResult<Vec<DecisionRecord>>;
    /// Inflows the watcher recorded in `[from, to)`, in chain, block and transaction order.
    async fn inflows_between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> StoreResult<Vec<RecordedInflow>>;
    /// Outflows the watcher recorded in `[from, to)`, in chain, block and transaction order.
    async fn outflows_between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> StoreResult<Vec<RecordedOutflow>>;
    /// Events of `kinds` recorded in `[from, to)`, oldest first.
    async fn events_between(
        &self,
        kinds: &[EventKind],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> StoreResult<Vec<Event>>;
    /// Decisions by id (the ones events of a period name), in no particular order.
    async fn decisions_by_id(&self, ids: &[String]) -> StoreResult<Vec<DecisionRecord>>;
}

/// Leases: a named piece of work (watching a chain) that one process at a time does, for as
/// long as it keeps renewing its lease.
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Takes or renews `name` for `holder` until `until`, unless another holder's lease is
    /// still running at `now`: returns who holds it after the call (compare its holder).
    async fn hold_lease(
        &self,
        name: &str,
        holder: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<Lease>;
    /// Gives `name` up at once if `holder` holds it (a clean stop), so another need not wait.
    async fn release_lease(&self, name: &str, holder: &str) -> StoreResult<()>;
    /// Who holds `name`, if anyone has (the lease may have run out).
    async fn lease(&self, name: &str) -> StoreResult<Option<Lease>>;
}

/// A ledger engine: every concern. Take the part a service needs by upcasting an
/// `Arc<dyn Store>` to `Arc<dyn DecisionStore>` and so on.
pub trait Store:
    DecisionStore
    + SigningStore
    + AuthorizationStore
    + OutflowStore
    + OutboxStore
    + CredentialStore
    + FreezeStore
    + AuditStore
    + ReportStore
    + LeaseStore
{
    /// The engine's name, for logs: `sqlite`, `postgres`.
    fn engine(&self) -> &'static str;
}
