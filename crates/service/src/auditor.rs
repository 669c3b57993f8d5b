//! [`Auditor`]: the reconciler behind each chain's watcher. The poll loop and the indexing
//! itself are `spendguard_chain::watch`'s; here each block's or transaction's outflows are
//! turned into ledger outflows of registered wallets and recorded (the ledger classifies them
//! and trips the kill switch), watchers that make no progress are reported, and every pass is
//! published for whoever watches (`spendguard watch` prints them).

use crate::chains::Chains;
use crate::clock::Clock;
use crate::metrics::Metrics;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use spendguard_chain::watch::{BlockOutcome, ChainWatcher, IndexSink, SinkError, WatchError, WatchPass, WatchSettings};
use spendguard_chain::{BlockOutflows, ChainOutflow, TxOutflows};
use spendguard_config::Config;
use spendguard_core::model::Wallet;
use spendguard_core::reconcile::{evidence, Class, Finding, Outflow};
use spendguard_core::EventKind;
use spendguard_store::{BlockRecorded, IndexedBlock, OutboxStore, OutflowStore};
use std::collections::HashMap;
use std::sync::Arc;
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
}

impl Reconciler {
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
        let indexed = IndexedBlock {
            chain: chain.to_string(),
            number: block.number,
            hash: block.hash,
            parent_hash: block.parent_hash,
            outflows,
        };
        Ok(match self.outflows.record_block(indexed, self.clock.now()).await? {
            BlockRecorded::Recorded(findings) => BlockOutcome::Recorded(findings),
            BlockRecorded::Reorg { .. } => BlockOutcome::Reorg,
        })
    }

    async fn rewind(&self, chain: &str, from: u64) -> Result<usize, SinkError> {
        Ok(self.outflows.rewind(chain, from, self.clock.now()).await?.len())
    }

    async fn wallet_cursor(&self, chain: &str, address: &str) -> Result<Option<(String, u64)>, SinkError> {
        Ok(self.outflows.wallet_cursor(chain, address).await?)
    }

    async fn record_transaction(
        &self,
        chain: &str,
        address: &str,
        signature: &str,
        tx: TxOutflows,
    ) -> Result<Vec<Finding>, SinkError> {
        let outflows = self.ledger_outflows(chain, tx.slot, tx.outflows);
        Ok(self.outflows.record_transaction(chain, address, signature, tx.slot, outflows, self.clock.now()).await?)
    }
}

/// One chain's watcher and how its progress looks, for stall alerts.
struct Watched {
    watcher: ChainWatcher,
    last_progress: DateTime<Utc>,
    stalled: bool,
}

/// Watches every configured chain a client exists for.
pub struct Auditor {
    config: Arc<Config>,
    outbox: Arc<dyn OutboxStore>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    watchers: HashMap<String, Mutex<Watched>>,
    passes: broadcast::Sender<WatchPass>,
}

impl Auditor {
    pub(crate) fn new(
        config: Arc<Config>,
        outflows: Arc<dyn OutflowStore>,
        outbox: Arc<dyn OutboxStore>,
        chains: &Chains,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Auditor {
        let sink: Arc<dyn IndexSink> =
            Arc::new(Reconciler { config: Arc::clone(&config), outflows, clock: Arc::clone(&clock) });
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
                };
                let watcher = ChainWatcher::new(client, Arc::clone(&sink), watch);
                Some((settings.id.clone(), Mutex::new(Watched { watcher, last_progress: now, stalled: false })))
            })
            .collect();
        Auditor { config, outbox, clock, metrics, watchers, passes: broadcast::channel(64).0 }
    }

    /// Every pass of every chain's watcher from now on (a slow receiver misses some).
    pub fn subscribe(&self) -> broadcast::Receiver<WatchPass> {
        self.passes.subscribe()
    }

    /// The chains watched.
    pub fn chains(&self) -> impl Iterator<Item = &str> {
        self.watchers.keys().map(String::as_str)
    }

    /// One pass of `chain`'s watcher, at most `max` blocks (transactions): outflows of
    /// registered wallets recorded and reconciled, unexplained or mismatched ones tripping the
    /// kill switch, reorgs unwound.
    ///
    /// A watcher behind the final head that makes no progress for the chain's `stall_after`
    /// records one `watcher_stalled` event until it moves again; one stopped by a too-deep
    /// reorg records it at once and refuses to run until the process restarts.
    pub async fn watch_once(&self, chain: &str, max: u64) -> Result<WatchPass, WatchError> {
        let Some(watched) = self.watchers.get(chain) else {
            return Err(WatchError::Halted(format!("chain {chain} is not configured or has no client")));
        };
        let mut w = watched.lock().await;
        let result = w.watcher.pass(max).await;
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
                    if let Err(e) = auditor.watch_once(&chain, BLOCKS_PER_PASS).await {
                        tracing::warn!(chain, error = %e, "watching the chain failed; will retry");
                    }
                })
                .await;
            }));
        }
        for task in tasks {
            let _ = task.await;
        }
    }
}
