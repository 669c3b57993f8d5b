//! The auditor's poll loop: each pass indexes a chain from where the ledger's cursor stands to
//! the final head, hands every block's (or transaction's) outflows to an [`IndexSink`] that
//! records and reconciles them, and unwinds reorgs to the last block both agree on.
//!
//! Blocks (EVM) are indexed up to head − confirmations, each checked against the parent hash
//! the ledger holds; signature-indexed chains (Solana) per wallet, from each wallet's cursor,
//! at the chain's commitment. A node that does not have a block or transaction yet is waited
//! for, never taken as empty.

use crate::{BlockOutflows, ChainClient, ChainError, Indexing, SignatureRef, TxOutflows};
use async_trait::async_trait;
use spendguard_core::model::Asset;
use spendguard_core::reconcile::{Class, Finding, WalletCursor};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// A failure of the sink, whatever it is (the ledger's error, typically).
pub type SinkError = Box<dyn std::error::Error + Send + Sync>;

/// What recording a block did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockOutcome {
    /// Recorded, with how each outflow reconciled.
    Recorded(Vec<Finding>),
    /// The block's parent is not the block recorded below it: the chain reorganised; nothing
    /// was recorded.
    Reorg,
}

/// Where a watcher records what it indexed: the reconciler.
#[async_trait]
pub trait IndexSink: Send + Sync {
    /// The next block to index on `chain`, if indexing has started.
    async fn chain_cursor(&self, chain: &str) -> Result<Option<u64>, SinkError>;
    /// The hash recorded for block `number`.
    async fn block_hash(&self, chain: &str, number: u64) -> Result<Option<String>, SinkError>;
    /// Records a block's outflows and moves the cursor past it, in one transaction.
    async fn record_block(&self, chain: &str, block: BlockOutflows) -> Result<BlockOutcome, SinkError>;
    /// Records that blocks `first..=last` hold nothing of the watched wallets: `last`'s hash and
    /// the cursor move past it, in one transaction.
    async fn record_range(&self, chain: &str, first: u64, last: u64, hash: String) -> Result<(), SinkError>;
    /// The highest block below `number` whose hash is recorded.
    async fn recorded_below(&self, chain: &str, number: u64) -> Result<Option<u64>, SinkError>;
    /// Undoes indexing from block `from` on; returns how many decisions were reopened.
    async fn rewind(&self, chain: &str, from: u64) -> Result<usize, SinkError>;
    /// Where indexing of account `address` stands (signature-indexed chains).
    async fn wallet_cursor(&self, chain: &str, address: &str) -> Result<Option<WalletCursor>, SinkError>;
    /// The transactions recorded at slots above `above`, oldest first (signature-indexed chains).
    async fn recorded_transactions(&self, chain: &str, above: u64) -> Result<Vec<SignatureRef>, SinkError>;
    /// Records one transaction's outflows and moves `address`'s cursor to it, in one transaction.
    async fn record_transaction(
        &self,
        chain: &str,
        address: &str,
        signature: &str,
        tx: TxOutflows,
    ) -> Result<Vec<Finding>, SinkError>;
}

/// Why a pass failed.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The chain could not be read (retried with backoff inside the client already).
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The ledger could not record.
    #[error("recording failed: {0}")]
    Sink(SinkError),
    /// A reorg deeper than the configured limit, found in this pass: the watcher stopped rather
    /// than guess.
    #[error("{0}")]
    ReorgTooDeep(String),
    /// The watcher stopped at such a reorg earlier, and stays stopped until an operator
    /// restarts it.
    #[error("{0}")]
    Halted(String),
    /// Another process holds the chain's watching lease: this one stands by (not a failure).
    #[error("chain {chain} is watched by {holder} (its lease runs until {until})")]
    Standby {
        /// Chain id.
        chain: String,
        /// Who watches it.
        holder: String,
        /// When its lease runs out unless renewed.
        until: String,
    },
}

/// What the watcher of one chain indexes.
#[derive(Debug, Clone)]
pub struct WatchSettings {
    /// Chain id.
    pub chain: String,
    /// First block (slot) indexed when there is no cursor yet.
    pub start: u64,
    /// Blocks below the head considered final (EVM).
    pub confirmations: u64,
    /// Deepest reorg unwound without stopping.
    pub max_reorg_depth: u64,
    /// Addresses of the registered wallets on the chain.
    pub addresses: Vec<String>,
    /// The configured assets on the chain, so amounts come back in asset units.
    pub assets: Vec<Asset>,
    /// Block-indexed chains: read this many final blocks at once as a range when that many
    /// wait (or `range_wait` has passed), one by one only when the wallets' marks or logs show
    /// something of theirs moved in it; 0 reads every block.
    pub range_blocks: u64,
    /// How long fewer than `range_blocks` final blocks may wait to be read as one range; zero
    /// reads them one by one at once.
    pub range_wait: Duration,
    /// Signature-indexed chains read below finality (Solana at `confirmed`): a slot indexed
    /// may still be rolled back, so what was recorded above the finalized slot is checked
    /// again each pass and unwound when it left the chain.
    pub unfinal: bool,
}

/// What one pass of a chain's watcher did.
#[derive(Debug, Clone)]
pub struct WatchPass {
    /// Chain id.
    pub chain: String,
    /// How the chain is indexed: by block (the numbers below are blocks, `indexed` counts
    /// blocks) or by signature (they are slots, `indexed` counts transactions).
    pub indexing: Indexing,
    /// The block the pass started from; by signature, the oldest wallet cursor's slot.
    pub from: u64,
    /// Blocks (by signature: transactions) indexed in this pass.
    pub indexed: u64,
    /// The next block to index; by signature, one past the newest slot indexed.
    pub next: u64,
    /// head − confirmations, the last block final enough to index; `None` while the chain is
    /// shorter than its confirmations. By signature: the head slot at the chain's commitment.
    pub target: Option<u64>,
    /// By signature: transactions listed but left for a later pass.
    pub pending: u64,
    /// Outflows that did not reconcile as plain matches.
    pub findings: Vec<Finding>,
}

impl WatchPass {
    fn starting(chain: &str, indexing: Indexing, from: u64) -> WatchPass {
        WatchPass {
            chain: chain.to_string(),
            indexing,
            from,
            indexed: 0,
            next: from,
            target: None,
            pending: 0,
            findings: vec![],
        }
    }

    /// Keeps the findings that are not plain matches.
    fn note(&mut self, findings: Vec<Finding>) {
        self.findings.extend(findings.into_iter().filter(|f| f.class != Class::Matched));
    }

    /// How far behind the final head the watcher still is: blocks, or transactions listed but
    /// not yet indexed.
    pub fn behind(&self) -> u64 {
        match self.indexing {
            Indexing::Blocks => self.target.map_or(0, |t| (t + 1).saturating_sub(self.next)),
            Indexing::Signatures => self.pending,
        }
    }

    /// True when everything final has been indexed.
    pub fn caught_up(&self) -> bool {
        match self.indexing {
            Indexing::Blocks => self.target.is_none_or(|t| self.next > t),
            Indexing::Signatures => self.pending == 0,
        }
    }
}

/// The watcher of one chain.
pub struct ChainWatcher {
    client: Arc<dyn ChainClient>,
    sink: Arc<dyn IndexSink>,
    settings: WatchSettings,
    /// Set when a reorg deeper than the limit stopped it.
    halted: Option<String>,
    /// Signature-indexed chains read below finality: the finalized slot at the last check,
    /// below which nothing recorded can be rolled back any more.
    final_through: u64,
    /// The wallets' marks at the end of the last range read, and that block: the next range's
    /// starting marks when it begins right after.
    marks: Option<(u64, Vec<String>)>,
    /// Since when fewer than `range_blocks` final blocks have been waiting.
    waiting_since: Option<tokio::time::Instant>,
}

impl ChainWatcher {
    /// A watcher of `client`'s chain recording into `sink`.
    pub fn new(client: Arc<dyn ChainClient>, sink: Arc<dyn IndexSink>, settings: WatchSettings) -> ChainWatcher {
        ChainWatcher { client, sink, settings, halted: None, final_through: 0, marks: None, waiting_since: None }
    }

    /// Forgets what it remembered between passes (a range's end marks, waits, the finalized
    /// slot): after another process watched for a while, the ledger's cursor is what counts.
    pub fn forget(&mut self) {
        self.final_through = 0;
        self.marks = None;
        self.waiting_since = None;
    }

    /// The chain watched.
    pub fn chain(&self) -> &str {
        &self.settings.chain
    }

    /// Indexes from the cursor towards the final head, at most `max` blocks (by signature:
    /// transactions) in this pass.
    pub async fn pass(&mut self, max: u64) -> Result<WatchPass, WatchError> {
        if let Some(why) = &self.halted {
            return Err(WatchError::Halted(why.clone()));
        }
        match self.client.indexing() {
            Indexing::Blocks => self.index_blocks(max).await,
            Indexing::Signatures => self.index_signatures(max).await,
        }
    }

    async fn index_blocks(&mut self, max: u64) -> Result<WatchPass, WatchError> {
        let chain = self.settings.chain.clone();
        let from = self.sink.chain_cursor(&chain).await.map_err(WatchError::Sink)?.unwrap_or(self.settings.start);
        let mut pass = WatchPass::starting(&chain, Indexing::Blocks, from);
        let head = self.client.head().await?;
        pass.target = head.checked_sub(self.settings.confirmations);
        let Some(target) = pass.target else { return Ok(pass) };
        let end = target.min(from.saturating_add(max.saturating_sub(1)));
        if target.saturating_sub(from) > max {
            tracing::info!(chain, from, target, "backfilling: {} blocks behind", target - from + 1);
        }
        let range = self.settings.range_blocks.min(max);
        if range == 0 {
            return self.index_each(pass, end).await;
        }
        while pass.next <= end {
            let first = pass.next;
            let waiting = end - first + 1;
            let waited = self.waiting_since.get_or_insert_with(tokio::time::Instant::now).elapsed();
            let due = !self.settings.range_wait.is_zero() && waited >= self.settings.range_wait;
            if waiting < range && !due {
                if self.settings.range_wait.is_zero() {
                    // Near the head: each block as it becomes final.
                    self.waiting_since = None;
                    return self.index_each(pass, end).await;
                }
                // Wait for a range to fill, or for `range_wait`.
                return Ok(pass);
            }
            self.waiting_since = None;
            let last = end.min(first + range - 1);
            if !self.index_range(&mut pass, last).await? {
                // Something of the wallets' moved in it: read its blocks one by one.
                pass = self.index_each(pass, last).await?;
            }
            if pass.next != last + 1 {
                // Stopped short (a node behind, a reorg unwound): the next pass goes on.
                return Ok(pass);
            }
        }
        Ok(pass)
    }

    /// Reads blocks `pass.next..=end` one by one.
    async fn index_each(&mut self, mut pass: WatchPass, end: u64) -> Result<WatchPass, WatchError> {
        let chain = self.settings.chain.clone();
        // The marks cached describe a block this reading may leave behind.
        self.marks = None;
        while pass.next <= end {
            let number = pass.next;
            // A node without the block yet (it lags) answers None: wait for the next pass rather
            // than record an empty block.
            let Some(block) =
                self.client.block_outflows(number, &self.settings.addresses, &self.settings.assets).await?
            else {
                break;
            };
            match self.sink.record_block(&chain, block).await.map_err(WatchError::Sink)? {
                BlockOutcome::Recorded(findings) => {
                    pass.note(findings);
                    pass.indexed += 1;
                    pass.next += 1;
                }
                BlockOutcome::Reorg => pass.next = self.unwind(number).await?,
            }
        }
        Ok(pass)
    }

    /// Reads blocks `pass.next..=last` as one range: when the block before it is still the one
    /// recorded, the wallets' marks are equal at both ends and no token transfer names them,
    /// nothing of theirs moved in it and it is recorded at once (its last block's hash and the
    /// cursor move) — true. False when something moved (or the range could not be read
    /// whole): the caller reads its blocks one by one. A reorg below it is unwound first.
    async fn index_range(&mut self, pass: &mut WatchPass, last: u64) -> Result<bool, WatchError> {
        let chain = self.settings.chain.clone();
        let first = pass.next;
        if let Some(below) = first.checked_sub(1) {
            let stored = self.sink.block_hash(&chain, below).await.map_err(WatchError::Sink)?;
            if let Some(stored) = stored {
                if self.client.block_hash(below).await?.as_deref() != Some(stored.as_str()) {
                    pass.next = self.unwind(first).await?;
                    self.marks = None;
                    return Ok(true);
                }
            }
        }
        let Some(hash) = self.client.block_hash(last).await? else { return Ok(false) };
        let quiet = match self.range_is_quiet(first, last).await {
            Ok(quiet) => quiet,
            // A node that keeps no state that old (not an archive node, in a backfill) refuses
            // the marks: its blocks are read one by one instead.
            Err(e) if !e.is_retryable() => {
                tracing::debug!(chain, first, last, error = %e, "range not readable as a whole; reading its blocks");
                false
            }
            Err(e) => return Err(e.into()),
        };
        if !quiet {
            return Ok(false);
        }
        self.sink.record_range(&chain, first, last, hash).await.map_err(WatchError::Sink)?;
        pass.indexed += last - first + 1;
        pass.next = last + 1;
        Ok(true)
    }

    /// Whether nothing of the wallets' moved in `first..=last`: equal marks at both ends, no
    /// token transfer naming them. When so, the marks at `last` are kept for the next range.
    async fn range_is_quiet(&mut self, first: u64, last: u64) -> Result<bool, ChainError> {
        let addresses = &self.settings.addresses;
        let before = match self.marks.take() {
            Some((at, marks)) if Some(at) == first.checked_sub(1) => marks,
            _ => match first.checked_sub(1) {
                Some(below) => self.client.wallet_marks(addresses, below).await?,
                // From genesis: no state before it to compare with.
                None => return Ok(false),
            },
        };
        let after = self.client.wallet_marks(addresses, last).await?;
        if before != after || !self.client.logged_blocks(addresses, first, last).await?.is_empty() {
            return Ok(false);
        }
        self.marks = Some((last, after));
        Ok(true)
    }

    /// Indexes a signature-indexed chain: for each registered wallet and its token accounts, the
    /// transactions listed after that account's cursor, oldest first, each recorded with the
    /// cursor move in one transaction (one listed for several of them is recorded once).
    async fn index_signatures(&mut self, max: u64) -> Result<WatchPass, WatchError> {
        let chain = self.settings.chain.clone();
        let start = self.settings.start;
        let mut pass = WatchPass::starting(&chain, Indexing::Signatures, u64::MAX);
        pass.next = 0;
        if self.settings.unfinal {
            self.unwind_rollbacks().await?;
        }
        pass.target = Some(self.client.head().await?);
        let listed_accounts: Vec<String> = self
            .settings
            .addresses
            .iter()
            .flat_map(|wallet| self.client.listed_accounts(wallet, &self.settings.assets))
            .collect();
        for address in &listed_accounts {
            let cursor = self.sink.wallet_cursor(&chain, address).await.map_err(WatchError::Sink)?;
            pass.from = pass.from.min(cursor.as_ref().map_or(start, |c| c.slot));
            pass.next = pass.next.max(cursor.as_ref().map_or(start, |c| c.slot + 1));
            let (until, min_slot) = match &cursor {
                Some(WalletCursor { signature: Some(s), .. }) => (Some(s.as_str()), start),
                // Unwound by a rollback: everything above its slot again.
                Some(WalletCursor { signature: None, slot }) => (None, start.max(slot + 1)),
                None => (None, start),
            };
            let listing = self.client.signatures_since(address, until, min_slot).await?;
            pass.pending += listing.not_final;
            let listed = listing.ready;
            for (n, listed_tx) in listed.iter().enumerate() {
                let left = (listed.len() - n) as u64;
                if pass.indexed >= max {
                    pass.pending += left;
                    break;
                }
                // Listed but not served yet (a lagging node): never skip it, wait for a later pass.
                let Some(tx) = self
                    .client
                    .transaction_outflows(&listed_tx.signature, &self.settings.addresses, &self.settings.assets)
                    .await?
                else {
                    pass.pending += left;
                    break;
                };
                let slot = tx.slot;
                let findings = self
                    .sink
                    .record_transaction(&chain, address, &listed_tx.signature, tx)
                    .await
                    .map_err(WatchError::Sink)?;
                pass.note(findings);
                pass.indexed += 1;
                pass.next = pass.next.max(slot + 1);
            }
        }
        if pass.from == u64::MAX {
            pass.from = start;
        }
        Ok(pass)
    }

    /// Signature-indexed chains read below finality: asks where each transaction recorded above
    /// the last finalized slot is now. One that is gone (its slot was rolled back) or in another
    /// slot (it landed again after the rollback) is unwound with everything recorded from its
    /// old slot on, to be listed and recorded again from the chain as it now is: no outflow is
    /// lost and none is counted twice.
    async fn unwind_rollbacks(&mut self) -> Result<(), WatchError> {
        let chain = self.settings.chain.clone();
        let finalized = self.client.finalized_slot().await?;
        let recorded = self.sink.recorded_transactions(&chain, self.final_through).await.map_err(WatchError::Sink)?;
        if !recorded.is_empty() {
            let signatures: Vec<String> = recorded.iter().map(|r| r.signature.clone()).collect();
            let now = self.client.signature_slots(&signatures).await?;
            let moved = recorded.iter().zip(&now).filter(|(r, now)| **now != Some(r.slot));
            if let Some(first) = moved.clone().map(|(r, _)| r.slot).min() {
                let gone: Vec<String> = moved
                    .map(|(r, now)| match now {
                        Some(slot) => format!("{} (slot {} → {slot})", r.signature, r.slot),
                        None => format!("{} (slot {}, gone)", r.signature, r.slot),
                    })
                    .collect();
                let reopened = self.sink.rewind(&chain, first).await.map_err(WatchError::Sink)?;
                tracing::warn!(chain, from = first, reopened, transactions = ?gone, "rollback: re-indexing");
                return Ok(());
            }
        }
        // Only once nothing had to be unwound: what was recorded up to here is final.
        self.final_through = finalized;
        Ok(())
    }

    /// Walks back from `at` (whose parent no longer matches) to the last block both the ledger
    /// and the node agree on, rewinds everything above it, and returns where to index from. A
    /// reorg deeper than `max_reorg_depth` halts the watcher rather than guess.
    async fn unwind(&mut self, at: u64) -> Result<u64, WatchError> {
        let chain = self.settings.chain.clone();
        let max_depth = self.settings.max_reorg_depth;
        let mut n = at.saturating_sub(1);
        // Blocks compared: a range recorded whole is stepped over, not counted block by block.
        let mut depth = 0;
        loop {
            let stored = self.sink.block_hash(&chain, n).await.map_err(WatchError::Sink)?;
            if stored.is_none() {
                // Inside a range recorded whole: only its last block's hash is stored. Compare
                // at the block recorded below it; the range itself holds nothing to undo.
                if let Some(below) = self.sink.recorded_below(&chain, n).await.map_err(WatchError::Sink)? {
                    n = below;
                    continue;
                }
            }
            depth += 1;
            if depth > max_depth {
                let why = format!(
                    "chain {chain}: reorg deeper than max_reorg_depth ({max_depth} blocks) below block {at}; \
                     watcher stopped until an operator investigates and restarts it"
                );
                self.halted = Some(why.clone());
                return Err(WatchError::ReorgTooDeep(why));
            }
            let Some(canonical) = self.client.block_hash(n).await? else {
                // The node does not have a block below one it just served: it is not a node to
                // decide a reorg with. Retry on the next pass.
                return Err(WatchError::Chain(ChainError::Unavailable {
                    chain: chain.clone(),
                    message: format!("the node has no block {n} while unwinding a reorg"),
                }));
            };
            if stored.is_none() || stored.as_deref() == Some(canonical.as_str()) {
                let reopened = self.sink.rewind(&chain, n + 1).await.map_err(WatchError::Sink)?;
                tracing::warn!(chain, from = n + 1, reopened, "reorg: re-indexing");
                return Ok(n + 1);
            }
            if n == 0 {
                return Ok(0);
            }
            n -= 1;
        }
    }
}

/// Runs `pass` every `interval` until `shutdown` completes; a pass under way finishes first.
pub async fn poll<F, Fut>(interval: Duration, shutdown: impl Future<Output = ()>, mut pass: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    tokio::pin!(shutdown);
    loop {
        pass().await;
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}
