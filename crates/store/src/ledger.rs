//! The ledger handle: a writer thread that owns the write connection and commits in groups,
//! and a read connection for lookups.
//!
//! Every write goes through one queue. The writer takes whatever is waiting (up to
//! `max_batch` jobs), opens one `BEGIN IMMEDIATE` transaction, brings its in-memory usage index
//! up to date with anything another process committed, evaluates and records each job in turn
//! (each sees the ones before it), and commits once: one fsync for the whole group. Callers
//! get their answer only after that commit is durable.

use crate::error::{StoreError, StoreResult};
pub(crate) use crate::writer::Writer;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use spendguard_core::model::Scope;
use spendguard_core::{
    Balances, Decision, Evaluation, Freeze, Headroom, Model, Reason, SpendRequest, SpendStatus, Tier,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Tuning of a ledger.
#[derive(Debug, Clone)]
pub struct LedgerOptions {
    /// How long to wait for another process's write lock before failing.
    pub busy_timeout: Duration,
    /// Most jobs committed in one transaction.
    pub max_batch: usize,
}

impl Default for LedgerOptions {
    fn default() -> Self {
        LedgerOptions { busy_timeout: Duration::from_secs(30), max_batch: 512 }
    }
}

/// A spend to evaluate and, if allowed, reserve.
#[derive(Debug, Clone)]
pub struct ReserveRequest {
    /// The request (agent from authentication).
    pub request: SpendRequest,
    /// Live balances of the wallet, where known.
    pub balances: Balances,
    /// Stripe-style idempotency key, scoped to the agent.
    pub idempotency_key: Option<String>,
    /// Free text from the agent, recorded with the decision.
    pub memo: Option<String>,
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
    pub amount: String,
    /// Asset, `chain:SYMBOL`, when resolved.
    pub asset: Option<String>,
    /// USD value, when resolved.
    pub usd: Option<String>,
    /// Price used for the USD value.
    pub price_usd: Option<String>,
}

/// The answer to [`Ledger::reserve`].
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

/// The answer to [`Ledger::freeze`].
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
    pub amount: String,
    /// USD value.
    pub usd: Option<String>,
    /// Price used.
    pub price_usd: Option<String>,
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
    /// Account sequence (EVM nonce) of its transaction.
    pub nonce: Option<u64>,
    /// Transaction hash (EVM) or signature (Solana), once signed.
    pub tx_hash: Option<String>,
    /// Most the fee may cost, in the chain's native units.
    pub fee_cap: Option<String>,
    /// The fee terms signed, e.g. `gas 21000 × max 3 gwei (tip 1 gwei)`.
    pub fee_terms: Option<String>,
    /// Block (slot) it landed in.
    pub block: Option<u64>,
    /// Fee paid, in native units.
    pub fee_paid: Option<String>,
    /// Why it failed or was released.
    pub failure: Option<String>,
    /// Hash of what it pays (agent, wallet, chain, asset, recipient, amount, operation, memo),
    /// bound when it was decided; approval and signing refuse a decision that no longer matches.
    pub intent_hash: Option<String>,
    /// Operator who approved it.
    pub approved_by: Option<String>,
    /// When it was approved.
    pub approved_at: Option<DateTime<Utc>>,
}

/// How one outflow reconciled, and what the kill switch did about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The outflow.
    pub outflow: spendguard_core::reconcile::Outflow,
    /// Its class.
    pub class: spendguard_core::reconcile::Class,
    /// The decision its transaction belongs to.
    pub decision_id: Option<String>,
    /// Scopes frozen because of it.
    pub frozen: Vec<Scope>,
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
    /// `native`, `token` or `fee`.
    pub kind: String,
    /// Wallet it left.
    pub wallet: String,
    /// Recipient, when there is one.
    pub recipient: Option<String>,
    /// Asset key when configured.
    pub asset: Option<String>,
    /// Token contract or mint.
    pub token: Option<String>,
    /// Amount (asset units; base units for unknown tokens).
    pub amount: rust_decimal::Decimal,
    /// Reconciliation class.
    pub class: String,
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
    /// Kind, e.g. `unexplained_outflow`, `kill_switch`, `notify_tier`.
    pub kind: String,
    /// When.
    pub at: DateTime<Utc>,
    /// The decision it concerns.
    pub decision_id: Option<String>,
    /// What happened, in words.
    pub detail: String,
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
    pub fee_cap: rust_decimal::Decimal,
    /// Fee terms in words.
    pub fee_terms: String,
}

/// Signs with the sequence the ledger allocated; pure and quick (it runs inside the ledger's
/// transaction). An `Err` leaves nothing allocated.
pub type SignWith = Box<dyn FnOnce(Option<u64>) -> Result<SignedRecord, String> + Send>;

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

/// The answer to [`Ledger::sign`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signing {
    /// Signed now and stored.
    Signed(SignedRecord),
    /// It had been signed before (a retry or a restart): the same transaction, never another.
    AlreadySigned(SignedRecord),
    /// The decision is not in a state that executes (released, denied, still queued…).
    NotExecutable(SpendStatus),
}

/// The answer to [`Ledger::resign`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resigning {
    /// Re-signed and stored, to be sent.
    Resigned(SignedRecord),
    /// It was re-signed once before: the decision should fail instead.
    Exhausted,
    /// Its transaction is no longer the dead one, or it is no longer broadcast (another pass
    /// got there first): nothing to do.
    Stale,
}

/// How a broadcast transaction ended on chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    /// Executed (true) or reverted (false).
    pub success: bool,
    /// Block (slot).
    pub block: u64,
    /// Fee paid in native units.
    pub fee: rust_decimal::Decimal,
}

/// Sends a job's result to its caller once the batch's commit is known: `Some(error)` when the
/// commit failed.
pub(crate) type Deliver = Box<dyn FnOnce(Option<&str>) + Send>;

/// Runs inside the batch transaction; says whether it succeeded and how to deliver.
pub(crate) type RunJob = Box<dyn FnOnce(&mut Writer) -> (bool, Deliver) + Send>;

/// One unit of work for the writer thread.
pub(crate) struct Job {
    /// The work.
    pub(crate) run: RunJob,
    /// Tells the caller the batch never ran.
    pub(crate) fail: Box<dyn FnOnce(&str) + Send>,
}

/// Counters of the writer, for metrics and for checking that group commit happens.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) transactions: AtomicU64,
    pub(crate) jobs: AtomicU64,
}

/// A snapshot of the writer's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerStats {
    /// Write transactions committed (or attempted).
    pub transactions: u64,
    /// Jobs (reservations, dry runs, freezes, status changes) processed in them.
    pub jobs: u64,
}

/// The ledger: one per process and database file.
pub struct Ledger {
    jobs: Option<mpsc::Sender<Job>>,
    writer: Option<JoinHandle<()>>,
    reader: Mutex<rusqlite::Connection>,
    model: Arc<Model>,
    path: PathBuf,
    counters: Arc<Counters>,
}

impl Ledger {
    /// Opens (creating and migrating if needed) the database at `path` for `model`. `now`
    /// decides how far back the usage index is loaded.
    pub fn open(path: &Path, model: Arc<Model>, now: DateTime<Utc>, options: LedgerOptions) -> StoreResult<Ledger> {
        let counters = Arc::new(Counters::default());
        let writer = Writer::open(path, Arc::clone(&model), now, &options, Arc::clone(&counters))?;
        let reader = crate::writer::connect(path, &options)?;
        let (tx, rx) = mpsc::channel();
        let max_batch = options.max_batch.max(1);
        let handle = std::thread::Builder::new()
            .name("spendguard-ledger".into())
            .spawn(move || writer.run(rx, max_batch))
            .map_err(|e| StoreError::Corrupt(format!("cannot start the ledger writer: {e}")))?;
        Ok(Ledger {
            jobs: Some(tx),
            writer: Some(handle),
            reader: Mutex::new(reader),
            model,
            path: path.to_path_buf(),
            counters,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The model decisions are made against.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Runs `work` on the writer thread inside the next batch transaction and waits for the
    /// commit. Results of work that wrote are only reported once durable.
    pub(crate) fn call<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Writer) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let (reply, answer) = mpsc::sync_channel::<StoreResult<T>>(1);
        let on_fail = reply.clone();
        let job = Job {
            run: Box::new(move |writer| {
                let result = work(writer);
                let ok = result.is_ok();
                let deliver: Deliver = Box::new(move |commit_error| {
                    let result = match (result, commit_error) {
                        (Ok(_), Some(msg)) => Err(StoreError::NotCommitted(msg.to_string())),
                        (r, _) => r,
                    };
                    // A caller that stopped waiting is no concern of ours.
                    let _ = reply.send(result);
                });
                (ok, deliver)
            }),
            fail: Box::new(move |msg| {
                let _ = on_fail.send(Err(StoreError::NotCommitted(msg.to_string())));
            }),
        };
        self.jobs.as_ref().ok_or(StoreError::WriterStopped)?.send(job).map_err(|_| StoreError::WriterStopped)?;
        answer.recv().map_err(|_| StoreError::WriterStopped)?
    }

    /// Evaluates a spend and records the decision; an allowed spend's amount is reserved against
    /// every limit until it is released. Durable when this returns.
    pub fn reserve(&self, request: ReserveRequest) -> StoreResult<ReserveOutcome> {
        self.call(move |w| w.reserve(request))
    }

    /// Evaluates a spend against the current ledger without recording anything.
    pub fn evaluate(&self, request: SpendRequest, balances: Balances) -> StoreResult<Evaluation> {
        self.call(move |w| w.dry_run(request, balances))
    }

    /// Freezes a scope: every spend it covers is denied with `KILL_SWITCH` from now on.
    pub fn freeze(&self, freeze: Freeze) -> StoreResult<FreezeOutcome> {
        self.call(move |w| w.freeze(freeze))
    }

    /// Lifts a freeze; `ack` must say why it is safe. Returns false when it was not frozen.
    pub fn unfreeze(&self, scope: Scope, by: &str, ack: &str, at: DateTime<Utc>) -> StoreResult<bool> {
        let (by, ack) = (by.to_string(), ack.to_string());
        self.call(move |w| w.unfreeze(scope, &by, &ack, at))
    }

    /// Moves a decision along its lifecycle; reservations are released or turned into spend.
    pub fn set_status(&self, decision_id: &str, status: SpendStatus, at: DateTime<Utc>) -> StoreResult<DecisionRecord> {
        let id = decision_id.to_string();
        self.call(move |w| w.set_status(&id, status, at, None))
    }

    /// Signs a reserved decision: allocates the account's next nonce (or a hole left by a refused
    /// transaction), calls `sign` with it and stores the signed transaction, all in one
    /// transaction. A decision that was signed before gets its stored transaction back.
    pub fn sign(
        &self,
        decision_id: &str,
        account: Option<Account>,
        sign: SignWith,
        at: DateTime<Utc>,
    ) -> StoreResult<Signing> {
        let id = decision_id.to_string();
        self.call(move |w| w.sign(&id, account, sign, at))
    }

    /// Re-signs a broadcast decision whose transaction `dead_hash` the chain proved can never
    /// land (Solana: blockhash expired, signature unknown), storing the new transaction before it
    /// is sent; the decision goes back to `signed`. A decision is re-signed at most once.
    pub fn resign(
        &self,
        decision_id: &str,
        dead_hash: &str,
        sign: SignWith,
        at: DateTime<Utc>,
    ) -> StoreResult<Resigning> {
        let (id, dead) = (decision_id.to_string(), dead_hash.to_string());
        self.call(move |w| w.resign(&id, &dead, sign, at))
    }

    /// The signed transaction of a decision, if any.
    pub fn signed_tx(&self, decision_id: &str) -> StoreResult<Option<SignedRecord>> {
        self.read(|c| crate::writer::load_signed(c, decision_id))
    }

    /// Records that a signed transaction was sent (idempotent).
    pub fn mark_broadcast(&self, decision_id: &str, at: DateTime<Utc>) -> StoreResult<DecisionRecord> {
        let id = decision_id.to_string();
        self.call(move |w| w.mark_broadcast(&id, at))
    }

    /// Records how a broadcast transaction ended: confirmed, or failed when it reverted (its
    /// reservation is then released; its fee was still paid).
    pub fn settle(&self, decision_id: &str, settlement: Settlement, at: DateTime<Utc>) -> StoreResult<DecisionRecord> {
        let id = decision_id.to_string();
        self.call(move |w| w.settle(&id, settlement, at))
    }

    /// Fails a decision whose transaction will never land, releasing its reservation. When its
    /// nonce was not used on chain it is kept for the next transaction, so no gap stalls others.
    pub fn fail(
        &self,
        decision_id: &str,
        reason: &str,
        sequence_used: bool,
        at: DateTime<Utc>,
    ) -> StoreResult<DecisionRecord> {
        let (id, reason) = (decision_id.to_string(), reason.to_string());
        self.call(move |w| w.fail(&id, &reason, sequence_used, at))
    }

    /// Cancels a queued or pending-approval spend of `agent`, releasing its reservation.
    pub fn cancel(&self, agent: &str, decision_id: &str, why: &str, at: DateTime<Utc>) -> StoreResult<DecisionRecord> {
        let (agent, id, why) = (agent.to_string(), decision_id.to_string(), why.to_string());
        self.call(move |w| w.cancel(&agent, &id, &why, at))
    }

    /// Releases every pending approval whose request expired by `now`; returns them.
    pub fn expire_approvals(&self, now: DateTime<Utc>) -> StoreResult<Vec<DecisionRecord>> {
        self.call(move |w| w.expire_approvals(now))
    }

    /// Decisions signed or broadcast but not yet settled.
    pub fn in_flight(&self) -> StoreResult<Vec<DecisionRecord>> {
        self.read(|c| crate::writer::load_by_status(c, &[SpendStatus::Signed, SpendStatus::Broadcast]))
    }

    /// Decisions on `chain` broadcast at or before `deadline` and still not seen on chain.
    /// Each is reported once (per broadcast) with a `missing_outflow` event; all are returned,
    /// reported now or before, so the caller can release those the chain proves cannot land.
    pub fn missing(&self, chain: &str, deadline: DateTime<Utc>, at: DateTime<Utc>) -> StoreResult<Vec<DecisionRecord>> {
        let chain = chain.to_string();
        self.call(move |w| w.missing(&chain, deadline, at))
    }

    /// Reserved decisions not yet signed (work a crash may have interrupted).
    pub fn unsigned_reserved(&self) -> StoreResult<Vec<DecisionRecord>> {
        self.read(|c| crate::writer::load_by_status(c, &[SpendStatus::Reserved]))
    }

    /// Queued (DELAY) decisions due by `now`.
    pub fn due_delays(&self, now: DateTime<Utc>) -> StoreResult<Vec<DecisionRecord>> {
        let queued = self.read(|c| crate::writer::load_by_status(c, &[SpendStatus::Queued]))?;
        Ok(queued.into_iter().filter(|d| d.execute_after.is_some_and(|t| t <= now)).collect())
    }

    /// Records a block the watcher indexed: its outflows are stored and reconciled, the
    /// kill switch applied to unexplained or mismatched ones (per `[org].on_unexplained_outflow`),
    /// and the chain's cursor moved past it — all in one transaction. A block whose parent is
    /// not the block stored below it is refused ([`StoreError::Reorg`]).
    pub fn record_block(
        &self,
        chain: &str,
        number: u64,
        hash: &str,
        parent_hash: &str,
        outflows: Vec<spendguard_core::reconcile::Outflow>,
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<Finding>> {
        let (chain, hash, parent) = (chain.to_string(), hash.to_string(), parent_hash.to_string());
        self.call(move |w| w.record_block(&chain, number, &hash, &parent, outflows, at))
    }

    /// Records the outflows of one transaction of a signature-indexed chain (Solana) and, in the
    /// same transaction, moves the watcher cursor of wallet `address` to it. Outflows are
    /// reconciled as in [`Ledger::record_block`]; ones stored before are ignored.
    pub fn record_transaction(
        &self,
        chain: &str,
        address: &str,
        signature: &str,
        slot: u64,
        outflows: Vec<spendguard_core::reconcile::Outflow>,
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<Finding>> {
        let (chain, address, signature) = (chain.to_string(), address.to_string(), signature.to_string());
        self.call(move |w| w.record_transaction(&chain, &address, &signature, slot, outflows, at))
    }

    /// The newest transaction indexed for wallet `address` on signature-indexed `chain`: its
    /// signature and slot.
    pub fn wallet_cursor(&self, chain: &str, address: &str) -> StoreResult<Option<(String, u64)>> {
        self.read(|c| crate::writer::wallet_cursor(c, chain, address))
    }

    /// The stored hash of block `number` of `chain`.
    pub fn block_hash(&self, chain: &str, number: u64) -> StoreResult<Option<String>> {
        self.read(|c| crate::writer::stored_block_hash(c, chain, number))
    }

    /// Undoes indexing from block `from` on (a reorg orphaned those blocks): their outflows and
    /// hashes are removed, and decisions confirmed in them are reopened (back to `broadcast`, to
    /// be followed and matched again). Returns the reopened decisions.
    pub fn rewind(&self, chain: &str, from: u64, at: DateTime<Utc>) -> StoreResult<Vec<String>> {
        let chain = chain.to_string();
        self.call(move |w| w.rewind(&chain, from, at))
    }

    /// Every outflow recorded for `chain`, in block and transaction order.
    pub fn outflows(&self, chain: &str) -> StoreResult<Vec<RecordedOutflow>> {
        let chain = chain.to_string();
        self.read(move |c| crate::writer::load_outflows(c, &chain))
    }

    /// The next block the watcher of `chain` indexes, if it has started.
    pub fn chain_cursor(&self, chain: &str) -> StoreResult<Option<u64>> {
        self.read(|c| crate::writer::chain_cursor(c, chain))
    }

    /// Records an event for operators (e.g. `notify_tier`, `approval_requested`).
    pub fn record_event(
        &self,
        kind: &str,
        decision_id: Option<&str>,
        detail: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let (kind, id, detail) = (kind.to_string(), decision_id.map(str::to_string), detail.to_string());
        self.call(move |w| w.record_event(&kind, id.as_deref(), &detail, at))
    }

    /// Events of the given kinds not yet delivered to `channel` and due for an attempt by
    /// `now` (deliveries give up after `max_attempts`), oldest first.
    pub fn undelivered(
        &self,
        channel: &str,
        kinds: &[String],
        now: DateTime<Utc>,
        max_attempts: u32,
    ) -> StoreResult<Vec<Event>> {
        let (channel, kinds) = (channel.to_string(), kinds.to_vec());
        self.read(move |c| crate::writer::undelivered(c, &channel, &kinds, now, max_attempts))
    }

    /// Claims the next delivery attempt of an event to a channel until `lease_until`, so that of
    /// several processes only one posts it. False when it is delivered, or claimed by another.
    pub fn claim_delivery(
        &self,
        event_id: i64,
        channel: &str,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let channel = channel.to_string();
        self.call(move |w| w.claim_delivery(event_id, &channel, lease_until, now))
    }

    /// Records one delivery attempt of an event to a channel: delivered, or failed with the
    /// error and when to try again.
    pub fn record_delivery(
        &self,
        event_id: i64,
        channel: &str,
        outcome: Result<(), String>,
        next_attempt: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let channel = channel.to_string();
        self.call(move |w| w.record_delivery(event_id, &channel, outcome, next_attempt, at))
    }

    /// (attempts, delivered, last error) of an event on a channel.
    pub fn delivery(&self, event_id: i64, channel: &str) -> StoreResult<Option<(u32, bool, Option<String>)>> {
        let channel = channel.to_string();
        self.read(move |c| crate::writer::delivery(c, event_id, &channel))
    }

    /// Events of one kind, oldest first.
    pub fn events(&self, kind: &str) -> StoreResult<Vec<Event>> {
        self.read(|c| crate::writer::load_events(c, kind))
    }

    /// Stores a new token for `agent` (its SHA-256 hash, never the token).
    pub fn add_agent_token(&self, agent: &str, token_hash: &str, at: DateTime<Utc>) -> StoreResult<()> {
        let (agent, hash) = (agent.to_string(), token_hash.to_string());
        self.call(move |w| w.add_agent_token(&agent, &hash, at))
    }

    /// Revokes every token of `agent`; returns how many were live.
    pub fn revoke_agent(&self, agent: &str, by: &str, at: DateTime<Utc>) -> StoreResult<usize> {
        let (agent, by) = (agent.to_string(), by.to_string());
        self.call(move |w| w.revoke_agent(&agent, &by, at))
    }

    /// Approves a pending request as `operator` (who must hold its approver role); it becomes
    /// reserved and is executed exactly as decided. `expected_hash` guards against approving
    /// something other than what the operator was shown.
    pub fn approve(
        &self,
        id: &str,
        operator: &str,
        expected_hash: Option<&str>,
        at: DateTime<Utc>,
    ) -> StoreResult<DecisionRecord> {
        let (id, operator, expected) = (id.to_string(), operator.to_string(), expected_hash.map(str::to_string));
        self.call(move |w| w.approve(&id, &operator, expected.as_deref(), at))
    }

    /// Rejects a pending request as `operator`; its reservation is released.
    pub fn reject(&self, id: &str, operator: &str, reason: &str, at: DateTime<Utc>) -> StoreResult<DecisionRecord> {
        let (id, operator, reason) = (id.to_string(), operator.to_string(), reason.to_string());
        self.call(move |w| w.reject(&id, &operator, &reason, at))
    }

    /// An operator cancels a queued (DELAY) spend.
    pub fn cancel_delay(
        &self,
        id: &str,
        operator: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<DecisionRecord> {
        let (id, operator, reason) = (id.to_string(), operator.to_string(), reason.to_string());
        self.call(move |w| w.cancel_delay(&id, &operator, &reason, at))
    }

    /// Starts a due DELAY spend (reserved for execution), or releases it when a freeze covers
    /// it now, in one transaction. `None` when it is no longer queued.
    pub fn start_due(&self, id: &str, at: DateTime<Utc>) -> StoreResult<Option<DecisionRecord>> {
        let id = id.to_string();
        self.call(move |w| w.start_due(&id, at))
    }

    /// Revokes an agent, freezes it and every wallet only it uses (on every chain), and releases
    /// its queued and pending spends, in one transaction.
    pub fn decommission(&self, agent: &str, by: &str, reason: &str, at: DateTime<Utc>) -> StoreResult<Decommissioned> {
        let (agent, by, reason) = (agent.to_string(), by.to_string(), reason.to_string());
        self.call(move |w| w.decommission(&agent, &by, &reason, at))
    }

    /// Records the configuration in use (its hash and a summary) in the audit log, if it differs
    /// from the last one recorded. Returns whether it did.
    pub fn record_config(&self, hash: &str, summary: &str, at: DateTime<Utc>) -> StoreResult<bool> {
        let (hash, summary) = (hash.to_string(), summary.to_string());
        self.call(move |w| w.record_config(&hash, &summary, at))
    }

    /// Stores a new token for a configured operator (its hash).
    pub fn add_operator_token(&self, operator: &str, token_hash: &str, at: DateTime<Utc>) -> StoreResult<()> {
        let (operator, hash) = (operator.to_string(), token_hash.to_string());
        self.call(move |w| w.add_operator_token(&operator, &hash, at))
    }

    /// The operator a live operator token (by hash) belongs to.
    pub fn operator_for_token(&self, token_hash: &str) -> StoreResult<Option<String>> {
        self.read(|c| crate::writer::operator_for_token(c, token_hash))
    }

    /// Decisions in any of `statuses`, oldest first.
    pub fn decisions_in(&self, statuses: &[SpendStatus]) -> StoreResult<Vec<DecisionRecord>> {
        self.read(|c| crate::writer::load_by_status(c, statuses))
    }

    /// Checks the audit chain from its first entry; with `anchor`, also that it still passes
    /// through an entry recorded earlier.
    pub fn verify_audit(&self, anchor: Option<&crate::audit::Anchor>) -> StoreResult<crate::audit::AuditCheck> {
        self.read(|c| crate::audit::verify(c, anchor))
    }

    /// Audit entries matching `filter`, in sequence order.
    pub fn audit_entries(&self, filter: &crate::audit::AuditFilter) -> StoreResult<Vec<crate::audit::AuditEntry>> {
        self.read(|c| crate::audit::export(c, filter))
    }

    /// The newest audit entry's sequence and hash.
    pub fn audit_head(&self) -> StoreResult<Option<(i64, String)>> {
        self.read(crate::audit::head)
    }

    /// Every outflow recorded, of every chain, oldest first.
    pub fn all_outflows(&self) -> StoreResult<Vec<RecordedOutflow>> {
        self.read(crate::writer::load_all_outflows)
    }

    /// Every event, oldest first.
    pub fn all_events(&self) -> StoreResult<Vec<Event>> {
        self.read(crate::writer::load_all_events)
    }

    /// The agent a live token (by hash) belongs to.
    pub fn agent_for_token(&self, token_hash: &str) -> StoreResult<Option<String>> {
        self.read(|c| crate::writer::agent_for_token(c, token_hash))
    }

    fn read<T>(&self, f: impl FnOnce(&rusqlite::Connection) -> StoreResult<T>) -> StoreResult<T> {
        let conn = self.reader.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&conn)
    }

    /// How many transactions the writer ran and how many jobs they held.
    pub fn stats(&self) -> LedgerStats {
        LedgerStats {
            transactions: self.counters.transactions.load(Ordering::Relaxed),
            jobs: self.counters.jobs.load(Ordering::Relaxed),
        }
    }

    /// SQLite's `synchronous` setting of this ledger's connections (2 = FULL).
    pub fn synchronous(&self) -> StoreResult<i64> {
        self.read(|c| Ok(c.query_row("PRAGMA synchronous", [], |r| r.get(0))?))
    }

    /// The frozen scopes, oldest first.
    pub fn freezes(&self) -> StoreResult<Vec<Freeze>> {
        self.read(crate::writer::load_freezes)
    }

    /// One decision.
    pub fn decision(&self, id: &str) -> StoreResult<Option<DecisionRecord>> {
        self.read(|c| crate::writer::load_decision(c, id))
    }

    /// Decisions in sequence order, optionally of one agent.
    pub fn decisions(&self, agent: Option<&str>) -> StoreResult<Vec<DecisionRecord>> {
        self.read(|c| crate::writer::load_decisions(c, agent))
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        // Closing the queue lets the writer finish what it holds and stop.
        self.jobs.take();
        if let Some(handle) = self.writer.take() {
            let _ = handle.join();
        }
    }
}
