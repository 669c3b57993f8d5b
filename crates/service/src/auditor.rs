//! [`Auditor`]: the reconciler behind each chain's watcher. The poll loop and the indexing
//! itself are `spendguard_chain::watch`'s; here each block's or transaction's outflows are
//! turned into ledger outflows of registered wallets and recorded (the ledger classifies them
//! and trips the kill switch), watchers that make no progress are reported, and every pass is
//! published for whoever watches (`spendguard watch` prints them).

use crate::chains::Chains;
use crate::clock::Clock;
use crate::metrics::Metrics;
use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use spendguard_chain::watch::{BlockOutcome, ChainWatcher, IndexSink, SinkError, WatchError, WatchPass, WatchSettings};
use spendguard_chain::{BlockOutflows, ChainClient, ChainInflow, ChainOutflow, Indexing, SignatureRef, TxOutflows};
use spendguard_config::{Commitment, Config};
use spendguard_core::model::{ChainKind, Wallet};
use spendguard_core::reconcile::{evidence, Class, Finding, Inflow, Outflow, WalletCursor};
use spendguard_core::EventKind;
use spendguard_store::{BlockRecorded, IndexedBlock, LeaseStore, OutboxStore, OutflowStore};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError};
use std::time::Duration;
use tokio::sync::{broadcast, Mutex};
use tokio_util::sync::CancellationToken;

/// Most blocks (transactions) one pass indexes per chain; a backfill continues on the next.
pub const BLOCKS_PER_PASS: u64 = 500;

/// Records what watchers index into the ledger, as ledger outflows of registered wallets.
struct Reconciler {
    config: Arc<Config>,
    outflows: Arc<dyn OutflowStore>,
    clock: Arc<dyn Clock>,
    /// Chains rewound by a reorg since their identity was last checked.
    rewound: std::sync::Mutex<HashSet<String>>,
}

impl Reconciler {
    /// A chain's inflows as the ledger books them: each into a registered wallet, with its id.
    fn ledger_inflows(&self, chain: &str, block: u64, inflows: Vec<ChainInflow>) -> Vec<Inflow> {
        let wallets: Vec<&Wallet> = self.config.model.wallets.iter().filter(|w| w.chain == chain).collect();
        inflows
            .into_iter()
            .filter_map(|i| {
                let wallet = wallets.iter().find(|w| w.address == i.to)?;
                Some(Inflow {
                    chain: chain.to_string(),
                    block,
                    tx_hash: i.tx_hash,
                    index: i.index,
                    kind: i.kind,
                    wallet: wallet.id.clone(),
                    sender: i.from,
                    asset: i.asset,
                    token: i.token,
                    amount: i.amount,
                    balance_before: i.balance_before,
                    balance_after: i.balance_after,
                })
            })
            .collect()
    }

    /// A chain's outflows as the ledger records them: each from a registered wallet, with its id.
    fn ledger_outflows(&self, chain: &str, block: u64, outflows: Vec<ChainOutflow>) -> Vec<Outflow> {
        let wallets: Vec<&Wallet> = self.config.model.wallets.iter().filter(|w| w.chain == chain).collect();
        outflows
            .into_iter()
            .filter_map(|o| {
                let wallet = wallets.iter().find(|w| w.address == o.from)?;
                Some(Outflow {
                    chain: chain.to_string(),
                    block,
                    tx_hash: o.tx_hash,
                    index: o.index,
                    kind: o.kind,
                    wallet: wallet.id.clone(),
                    recipient: o.to,
                    asset: o.asset,
                    token: o.token,
                    amount: o.amount,
                    authorization_nonce: o.authorization_nonce,
                })
            })
            .collect()
    }
}

#[async_trait]
impl IndexSink for Reconciler {
    async fn chain_cursor(&self, chain: &str) -> Result<Option<u64>, SinkError> {
        Ok(self.outflows.chain_cursor(chain).await?)
    }

    async fn block_hash(&self, chain: &str, number: u64) -> Result<Option<String>, SinkError> {
        Ok(self.outflows.block_hash(chain, number).await?)
    }

    async fn record_block(&self, chain: &str, block: BlockOutflows) -> Result<BlockOutcome, SinkError> {
        let outflows = self.ledger_outflows(chain, block.number, block.outflows);
        let inflows = self.ledger_inflows(chain, block.number, block.inflows);
        let indexed = IndexedBlock {
            chain: chain.to_string(),
            number: block.number,
            hash: block.hash,
            parent_hash: block.parent_hash,
            outflows,
            inflows,
        };
        Ok(match self.outflows.record_block(indexed, self.clock.now()).await? {
            BlockRecorded::Recorded(findings) => BlockOutcome::Recorded(findings),
            BlockRecorded::Reorg { .. } => BlockOutcome::Reorg,
        })
    }

    async fn rewind(&self, chain: &str, from: u64) -> Result<usize, SinkError> {
        self.rewound.lock().unwrap_or_else(PoisonError::into_inner).insert(chain.to_string());
        Ok(self.outflows.rewind(chain, from, self.clock.now()).await?.len())
    }

    async fn wallet_cursor(&self, chain: &str, address: &str) -> Result<Option<WalletCursor>, SinkError> {
        Ok(self.outflows.wallet_cursor(chain, address).await?)
    }

    async fn record_range(&self, chain: &str, first: u64, last: u64, hash: String) -> Result<(), SinkError> {
        tracing::debug!(chain, first, last, "nothing of the wallets' moved in this range");
        Ok(self.outflows.record_range(chain, last, &hash).await?)
    }

    async fn recorded_below(&self, chain: &str, number: u64) -> Result<Option<u64>, SinkError> {
        Ok(self.outflows.recorded_below(chain, number).await?)
    }

    async fn recorded_transactions(&self, chain: &str, above: u64) -> Result<Vec<SignatureRef>, SinkError> {
        let recorded = self.outflows.recorded_transactions(chain, above).await?;
        Ok(recorded.into_iter().map(|(signature, slot)| SignatureRef { signature, slot }).collect())
    }

    async fn record_transaction(
        &self,
        chain: &str,
        address: &str,
        signature: &str,
        tx: TxOutflows,
    ) -> Result<Vec<Finding>, SinkError> {
        let indexed = spendguard_store::IndexedTransaction {
            chain: chain.to_string(),
            address: address.to_string(),
            signature: signature.to_string(),
            slot: tx.slot,
            outflows: self.ledger_outflows(chain, tx.slot, tx.outflows),
            inflows: self.ledger_inflows(chain, tx.slot, tx.inflows),
        };
        Ok(self.outflows.record_transaction(indexed, self.clock.now()).await?)
    }
}

/// One chain's watcher and how its progress looks, for stall alerts.
struct Watched {
    watcher: ChainWatcher,
    client: Arc<dyn ChainClient>,
    last_progress: DateTime<Utc>,
    stalled: bool,
    /// When the chain was last checked to be the one the ledger knows.
    identity_checked: Option<DateTime<Utc>>,
    /// Set when it was not: the watcher stays stopped (its wallets are frozen).
    reset: Option<String>,
    /// Whether this process held the chain's lease at its last pass.
    leased: bool,
    /// Whether it has been standing by for another holder since it last held the lease.
    standing_by: bool,
    /// Signature-indexed chains: balances read before an earlier pass, checked after a later
    /// one (see [`Auditor::watch_once`]).
    deferred: Vec<FinalSnapshot>,
}

/// How often a watcher checks that its chain is still the one the ledger knows, besides at
/// its first pass and whenever the head falls below what it indexed.
const IDENTITY_RECHECK: TimeDelta = TimeDelta::minutes(5);

/// How many slots either side of a signature-indexed chain's balance reading its wallet must
/// not have moved in for the reading to be checked. A node's reading labelled with slot S need
/// not split the chain's history exactly at S: surfpool's holds part of slot S (transactions
/// run in the slot it is building); the margin makes any such reading unambiguous.
const QUIET_SLOTS: u64 = 2;

/// Watches every configured chain a client exists for.
pub struct Auditor {
    config: Arc<Config>,
    reconciler: Arc<Reconciler>,
    outflows: Arc<dyn OutflowStore>,
    outbox: Arc<dyn OutboxStore>,
    leases: Arc<dyn LeaseStore>,
    /// This process's name on the leases it holds.
    holder: std::sync::RwLock<String>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    watchers: HashMap<String, Mutex<Watched>>,
    passes: broadcast::Sender<WatchPass>,
}

/// The lease on watching `chain`.
fn lease_name(chain: &str) -> String {
    format!("watch:{chain}")
}

/// What this process is called on the leases it holds: its host and listen address, unique
/// among daemons (two cannot listen on one address) and the same when one restarts in place;
/// with port 0 (not yet bound, or a test), its process id.
fn holder_name(listen: SocketAddr) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string());
    match listen.port() {
        0 => format!("{host}/pid {}", std::process::id()),
        _ => format!("{host}/{listen}"),
    }
}

impl Auditor {
    pub(crate) fn new(
        config: Arc<Config>,
        outflows: Arc<dyn OutflowStore>,
        outbox: Arc<dyn OutboxStore>,
        leases: Arc<dyn LeaseStore>,
        chains: &Chains,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Auditor {
        let reconciler = Arc::new(Reconciler {
            config: Arc::clone(&config),
            outflows: Arc::clone(&outflows),
            clock: Arc::clone(&clock),
            rewound: std::sync::Mutex::default(),
        });
        let sink: Arc<dyn IndexSink> = reconciler.clone();
        let now = clock.now();
        let watchers = config
            .chains
            .iter()
            .filter_map(|settings| {
                let client = Arc::clone(chains.get(&settings.id).ok()?);
                let model = &config.model;
                let watch = WatchSettings {
                    chain: settings.id.clone(),
                    start: settings.start_block,
                    confirmations: settings.confirmations,
                    max_reorg_depth: settings.max_reorg_depth,
                    addresses: model
                        .wallets
                        .iter()
                        .filter(|w| w.chain == settings.id)
                        .map(|w| w.address.clone())
                        .collect(),
                    assets: model.assets_on(&settings.id).cloned().collect(),
                    unfinal: settings.kind == ChainKind::Solana && settings.commitment == Commitment::Confirmed,
                    range_blocks: settings.range_blocks,
                    range_wait: settings.range_wait.to_std().unwrap_or_default(),
                };
                let watcher = ChainWatcher::new(Arc::clone(&client), Arc::clone(&sink), watch);
                let watched = Watched {
                    watcher,
                    client,
                    last_progress: now,
                    stalled: false,
                    identity_checked: None,
                    reset: None,
                    leased: false,
                    standing_by: false,
                    deferred: vec![],
                };
                Some((settings.id.clone(), Mutex::new(watched)))
            })
            .collect();
        let holder = std::sync::RwLock::new(holder_name(config.server.listen));
        Auditor {
            config,
            reconciler,
            outflows,
            outbox,
            leases,
            holder,
            clock,
            metrics,
            watchers,
            passes: broadcast::channel(64).0,
        }
    }

    /// Names this process on its leases by the address it listens on (known once bound);
    /// call before [`Auditor::run`].
    pub fn listening_on(&self, address: SocketAddr) {
        *self.holder.write().unwrap_or_else(PoisonError::into_inner) = holder_name(address);
    }

    fn holder(&self) -> String {
        self.holder.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Every pass of every chain's watcher from now on (a slow receiver misses some).
    pub fn subscribe(&self) -> broadcast::Receiver<WatchPass> {
        self.passes.subscribe()
    }

    /// The chains watched.
    pub fn chains(&self) -> impl Iterator<Item = &str> {
        self.watchers.keys().map(String::as_str)
    }

    /// Balance conservation at `block`, the last one indexed: one balance read per wallet and
    /// asset, checked against the outflows and inflows recorded since the last checkpoint.
    async fn check_conservation(
        &self,
        chain: &str,
        client: &Arc<dyn ChainClient>,
        block: u64,
    ) -> crate::ServiceResult<()> {
        let assets = self.assets_on(chain);
        let mut readings = vec![];
        for wallet in self.config.model.wallets.iter().filter(|w| w.chain == chain) {
            let balances = client.balances_at(&wallet.address, &assets, block).await?;
            readings.extend(balance_readings(wallet, &assets, balances));
        }
        self.check_readings(chain, block, readings, 0).await
    }

    /// Signature-indexed chains read no past state: each wallet's balances at the newest
    /// finalized slot, read *before* the pass that indexes up to it, one read per wallet.
    /// Wallets with a reading still `waiting` are not read again.
    async fn final_balances(
        &self,
        chain: &str,
        client: &Arc<dyn ChainClient>,
        waiting: &[FinalSnapshot],
    ) -> crate::ServiceResult<Vec<FinalSnapshot>> {
        let assets = self.assets_on(chain);
        let mut snapshots = vec![];
        let wallets = self.config.model.wallets.iter().filter(|w| w.chain == chain);
        for wallet in wallets.filter(|w| !waiting.iter().any(|s| s.address == w.address)) {
            let read = client.final_balances(&wallet.address, &assets).await?;
            snapshots.push(FinalSnapshot {
                address: wallet.address.clone(),
                slot: read.slot,
                readings: balance_readings(wallet, &assets, read.balances).collect(),
            });
        }
        Ok(snapshots)
    }

    fn assets_on(&self, chain: &str) -> Vec<spendguard_core::model::Asset> {
        self.config.model.assets_on(chain).cloned().collect()
    }

    async fn check_readings(
        &self,
        chain: &str,
        block: u64,
        readings: Vec<spendguard_store::BalanceReading>,
        quiet: u64,
    ) -> crate::ServiceResult<()> {
        for d in self.outflows.check_balances(chain, block, readings, quiet, self.clock.now()).await? {
            tracing::warn!(chain, frozen = ?d.frozen, evidence = %d.check.evidence(), "balance did not add up");
        }
        Ok(())
    }

    /// One pass of `chain`'s watcher, at most `max` blocks (transactions): outflows of
    /// registered wallets recorded and reconciled, unexplained or mismatched ones tripping the
    /// kill switch, reorgs unwound, and balance conservation checked: by block at the last
    /// block indexed; by signature, balances read at the finalized slot before an earlier pass,
    /// once a caught-up pass has listed [`QUIET_SLOTS`] past them.
    ///
    /// A watcher behind the final head that makes no progress for the chain's `stall_after`
    /// records one `watcher_stalled` event until it moves again; one stopped by a too-deep
    /// reorg records it at once and refuses to run until the process restarts.
    ///
    /// Each pass first takes or renews the chain's lease (`watch:<chain>`, for `[server]
    /// watcher_lease`); while another process holds it, the pass indexes nothing and returns
    /// [`WatchError::Standby`]. The lease is renewed once a pass, so a pass longer than the lease
    /// (a long backfill over a slow RPC) may overlap with another process's: recording is
    /// idempotent, so that costs work, not books.
    pub async fn watch_once(&self, chain: &str, max: u64) -> Result<WatchPass, WatchError> {
        let Some(watched) = self.watchers.get(chain) else {
            return Err(WatchError::Halted(format!("chain {chain} is not configured or has no client")));
        };
        let mut w = watched.lock().await;
        if let Some(why) = &w.reset {
            return Err(WatchError::Halted(why.clone()));
        }
        // Of several processes on one ledger, the lease's holder watches; the others stand by,
        // neither indexing nor reporting a stall (the holder does).
        let now = self.clock.now();
        let lease = self.config.server.watcher_lease;
        let holder = self.holder();
        let held = self.leases.hold_lease(&lease_name(chain), &holder, now + lease, now).await;
        let mut unleased = None;
        match held {
            Ok(held) if held.holder != holder => {
                // Said once each time this process starts standing by (`spendguard watch`
                // beside a daemon would otherwise print nothing at all).
                if !w.standing_by {
                    tracing::warn!(chain, holder = %held.holder, until = %held.expires,
                        "another process watches the chain; standing by to take over if it stops");
                }
                w.standing_by = true;
                w.leased = false;
                w.last_progress = now;
                w.stalled = false;
                return Err(WatchError::Standby {
                    chain: chain.to_string(),
                    holder: held.holder,
                    until: held.expires.to_rfc3339(),
                });
            }
            Ok(_) if !w.leased => {
                tracing::info!(chain, %holder, "watching the chain (lease held)");
                w.leased = true;
                w.standing_by = false;
                w.watcher.forget();
                w.deferred.clear();
                w.identity_checked = None;
            }
            Ok(_) => {}
            // Without knowing who holds it, do not watch: a failed pass, retried (and reported
            // as a stall when it lasts).
            Err(e) => {
                w.leased = false;
                unleased = Some(WatchError::Sink(Box::new(e)));
            }
        }
        let conserving =
            unleased.is_none() && self.config.chain_settings(chain).is_some_and(|s| s.balance_conservation);
        // By signature, the balances come first: they are checked once a caught-up pass has
        // listed every transaction a few slots past the slot they were read at.
        let snapshots = if conserving && w.client.indexing() == Indexing::Signatures {
            match self.final_balances(chain, &w.client, &w.deferred).await {
                Ok(snapshots) => snapshots,
                Err(e) => {
                    tracing::warn!(chain, error = %e, "balance conservation could not be checked; will retry");
                    vec![]
                }
            }
        } else {
            vec![]
        };
        let due = w.identity_checked.is_none_or(|at| self.clock.now() - at >= IDENTITY_RECHECK);
        let checked = match unleased {
            Some(e) => Err(e),
            None if due => self.check_identity(chain, &mut w).await,
            None => Ok(()),
        };
        // A failed check is a failed pass: retried, and reported when it lasts.
        let mut result = match checked {
            Ok(()) => w.watcher.pass(max).await,
            Err(e) => Err(e),
        };
        // A head below what was indexed, or a reorg: is this still the chain the ledger knows?
        let rewound = self.reconciler.rewound.lock().unwrap_or_else(PoisonError::into_inner).remove(chain);
        let went_back = rewound
            || matches!(&result, Ok(p) if p.indexing == Indexing::Blocks && p.from > p.target.map_or(0, |t| t + 1))
            || matches!(&result, Err(WatchError::ReorgTooDeep(_)));
        if went_back {
            if let Err(reset @ WatchError::Halted(_)) = self.check_identity(chain, &mut w).await {
                result = Err(reset);
            }
        }
        if let Ok(pass) = &result {
            if pass.indexing == Indexing::Blocks && pass.indexed > 0 && conserving {
                if let Err(e) = self.check_conservation(chain, &w.client, pass.next - 1).await {
                    tracing::warn!(chain, error = %e, "balance conservation could not be checked; will retry");
                }
            }
            if pass.indexing == Indexing::Signatures {
                // One reading waits per wallet; a newer one is taken once it has been checked.
                w.deferred.extend(snapshots);
                // A reading at slot S is checked once a pass has listed everything up to
                // S + QUIET_SLOTS and left nothing for later; and only for assets that moved
                // nothing within QUIET_SLOTS of S (see `check_balances`).
                if pass.caught_up() {
                    let target = pass.target.unwrap_or(0);
                    let (due, waiting) =
                        std::mem::take(&mut w.deferred).into_iter().partition(|s| target >= s.slot + QUIET_SLOTS);
                    w.deferred = waiting;
                    for s in due {
                        if let Err(e) = self.check_readings(chain, s.slot, s.readings, QUIET_SLOTS).await {
                            tracing::warn!(chain, error = %e, "balance conservation could not be checked; will retry");
                        }
                    }
                }
            }
        }
        let now = self.clock.now();
        match &result {
            Ok(pass) => {
                self.metrics.watcher_lag(chain, pass.behind());
                for f in pass.findings.iter().filter(|f| f.class != Class::Matched) {
                    tracing::warn!(chain, class = f.class.as_str(), frozen = ?f.frozen, evidence = %evidence(&f.outflow),
                        "outflow did not reconcile");
                }
                // Nobody listening is fine.
                let _ = self.passes.send(pass.clone());
            }
            Err(_) => self.metrics.watcher_error(chain),
        }
        let stall_after = self.config.chain_settings(chain).map(|s| s.stall_after).unwrap_or_default();
        let progressed = matches!(&result, Ok(pass) if pass.indexed > 0 || pass.caught_up());
        let mut stalled = None;
        if let Err(WatchError::ReorgTooDeep(why)) = &result {
            tracing::error!(chain, %why, "watcher stopped");
            stalled = Some(why.clone());
        } else if progressed {
            if w.stalled {
                tracing::info!(chain, "watcher is making progress again");
            }
            w.last_progress = now;
            w.stalled = false;
        } else if !w.stalled && now - w.last_progress >= stall_after {
            w.stalled = true;
            let cause = match &result {
                Ok(pass) => format!("next block {} is not available from any RPC URL", pass.next),
                Err(e) => e.to_string(),
            };
            let idle = (now - w.last_progress).num_seconds();
            let detail = format!("chain {chain}: no indexing progress for {idle}s: {cause}");
            tracing::error!(chain, %detail, "watcher stalled");
            stalled = Some(detail);
        }
        if let Some(detail) = stalled {
            self.outbox
                .record_event(EventKind::WatcherStalled, None, &detail, now)
                .await
                .map_err(|e| WatchError::Sink(Box::new(e)))?;
        }
        result
    }

    /// Checks that `chain` is still the chain the ledger knows: the same first block (recorded
    /// the first time it is seen), and at least as many transactions sent from each wallet as
    /// the ledger saw confirmed. If not — the RPC now serves another chain, or the node was
    /// reset — the ledger's nonces and balances no longer describe it: its wallets are frozen,
    /// a `chain_reset` event is recorded, and the watcher stops.
    async fn check_identity(&self, chain: &str, w: &mut Watched) -> Result<(), WatchError> {
        let sink = |e: spendguard_store::StoreError| WatchError::Sink(Box::new(e));
        let now = self.clock.now();
        let genesis = w.client.genesis().await?;
        let recorded = self.outflows.chain_genesis(chain, &genesis, now).await.map_err(sink)?;
        let mut reset = (recorded != genesis).then(|| {
            format!(
                "chain {chain}: its first block is now {genesis}, but the ledger recorded {recorded}: \
                 the RPC serves another chain, or the node was reset"
            )
        });
        for wallet in self.config.model.wallets.iter().filter(|w| w.chain == chain) {
            if reset.is_some() {
                break;
            }
            let Some((confirmed, block)) = self.outflows.highest_confirmed_nonce(&wallet.id).await.map_err(sink)?
            else {
                continue;
            };
            if let Some(sent) = w.client.sent_count(&wallet.address, block).await? {
                if sent <= confirmed {
                    reset = Some(format!(
                        "chain {chain}: wallet {} had sent {sent} transactions by block {block}, but the ledger \
                         saw its nonce {confirmed} confirmed there: the node lost transactions (reset or replaced)",
                        wallet.id
                    ));
                }
            }
        }
        w.identity_checked = Some(now);
        let Some(why) = reset else { return Ok(()) };
        let frozen = self.outflows.chain_reset(chain, &why, now).await.map_err(sink)?;
        tracing::error!(chain, %why, ?frozen, "chain reset: its wallets are frozen and its watcher stopped");
        w.reset = Some(why.clone());
        Err(WatchError::Halted(why))
    }

    /// Watches every chain, each on its `poll_interval`, until `shutdown` is cancelled.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tasks = vec![];
        for chain in self.watchers.keys() {
            let chain = chain.clone();
            let interval = self
                .config
                .chain_settings(&chain)
                .and_then(|s| s.poll_interval.to_std().ok())
                .unwrap_or(Duration::from_secs(1));
            let (auditor, stop) = (Arc::clone(&self), shutdown.clone());
            tasks.push(tokio::spawn(async move {
                spendguard_chain::watch::poll(interval, stop.cancelled_owned(), || async {
                    match auditor.watch_once(&chain, BLOCKS_PER_PASS).await {
                        Ok(_) => {}
                        Err(e @ WatchError::Standby { .. }) => tracing::debug!(chain, "{e}"),
                        Err(e) => tracing::warn!(chain, error = %e, "watching the chain failed; will retry"),
                    }
                })
                .await;
            }));
        }
        for task in tasks {
            let _ = task.await;
        }
        // A clean stop hands each chain over at once rather than after the lease runs out.
        for (chain, watched) in &self.watchers {
            if watched.lock().await.leased {
                if let Err(e) = self.leases.release_lease(&lease_name(chain), &self.holder()).await {
                    tracing::warn!(chain, error = %e, "could not give up the watching lease; it runs out by itself");
                }
            }
        }
    }
}

/// A wallet's balances of `assets` as conservation readings.
fn balance_readings<'a>(
    wallet: &'a Wallet,
    assets: &'a [spendguard_core::model::Asset],
    balances: Vec<rust_decimal::Decimal>,
) -> impl Iterator<Item = spendguard_store::BalanceReading> + 'a {
    assets.iter().zip(balances).map(|(a, balance)| spendguard_store::BalanceReading {
        wallet: wallet.id.clone(),
        asset: a.key(),
        balance,
    })
}

/// A wallet's balances read at the finalized slot before a pass (signature-indexed chains).
struct FinalSnapshot {
    address: String,
    slot: u64,
    readings: Vec<spendguard_store::BalanceReading>,
}
