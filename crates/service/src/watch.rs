//! The auditor's side of [`Guard`]: indexing each chain's blocks into the ledger, unwinding
//! reorgs, noticing a watcher that makes no progress, spends that never showed up on chain, and
//! wallets running low.

use crate::guard::{chain_tx, Guard, GuardError, GuardResult};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use spendguard_chain::ChainClient;
use spendguard_core::model::{Asset, Wallet};
use spendguard_core::reconcile::{evidence, Class, Outflow};
use spendguard_store::{Finding, StoreError};
use std::sync::Arc;

/// What one pass of a chain's watcher did.
#[derive(Debug, Clone)]
pub struct WatchPass {
    /// Chain id.
    pub chain: String,
    /// The block the pass started from.
    pub from: u64,
    /// Blocks indexed in this pass.
    pub indexed: u64,
    /// The next block to index.
    pub next: u64,
    /// head − confirmations, the last block final enough to index; `None` while the chain is
    /// shorter than its confirmations.
    pub target: Option<u64>,
    /// Outflows that did not reconcile as plain matches.
    pub findings: Vec<Finding>,
}

impl WatchPass {
    /// True when everything final has been indexed.
    pub fn caught_up(&self) -> bool {
        self.target.is_none_or(|t| self.next > t)
    }
}

/// In-memory progress of one chain's watcher, for stall alerts.
#[derive(Debug, Clone)]
pub(crate) struct WatcherState {
    last_progress: DateTime<Utc>,
    stalled: bool,
    /// Set when a reorg deeper than the limit stopped the watcher; it stays stopped until restart.
    halted: Option<String>,
}

impl Guard {
    /// Indexes `chain` from its cursor (or `start_block`) up to head − confirmations, at most
    /// `max_blocks` blocks: each block's outflows of registered wallets are stored, reconciled
    /// against their decisions, and unexplained or mismatched ones trip the kill switch.
    ///
    /// A watcher behind the final head that makes no progress for the chain's `stall_after`
    /// (errors, a node that never answers) records one `watcher_stalled` event until it moves
    /// again; one stopped by a too-deep reorg refuses to run until the process restarts.
    pub async fn watch_once(&self, chain: &str, max_blocks: u64) -> GuardResult<WatchPass> {
        let started = self.clock.now();
        let halted = self.watcher(chain, started, |s| s.halted.clone());
        if let Some(why) = halted {
            return Err(GuardError::Invalid(why));
        }
        let result = self.index_chain(chain, max_blocks).await;
        let now = self.clock.now();
        let stall_after = self.config.chain_settings(chain).map(|s| s.stall_after).unwrap_or_default();
        let progressed = matches!(&result, Ok(pass) if pass.indexed > 0 || pass.caught_up());
        let stalled_for = self.watcher(chain, started, |s| {
            if progressed {
                if s.stalled {
                    tracing::info!(chain, "watcher is making progress again");
                }
                s.last_progress = now;
                s.stalled = false;
                None
            } else if !s.stalled && now - s.last_progress >= stall_after {
                s.stalled = true;
                Some(now - s.last_progress)
            } else {
                None
            }
        });
        if let Some(idle) = stalled_for {
            let cause = match &result {
                Ok(pass) => format!("next block {} is not available from any RPC URL", pass.next),
                Err(e) => e.to_string(),
            };
            let detail = format!("chain {chain}: no indexing progress for {}s: {cause}", idle.num_seconds());
            tracing::error!(chain, %detail, "watcher stalled");
            self.blocking(move |l| l.record_event("watcher_stalled", None, &detail, now)).await?;
        }
        result
    }

    /// Runs `f` on `chain`'s watcher state, created (as of `now`) on first use.
    fn watcher<T>(&self, chain: &str, now: DateTime<Utc>, f: impl FnOnce(&mut WatcherState) -> T) -> T {
        let mut states = self.watchers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let state = states.entry(chain.to_string()).or_insert(WatcherState {
            last_progress: now,
            stalled: false,
            halted: None,
        });
        f(state)
    }

    async fn index_chain(&self, chain: &str, max_blocks: u64) -> GuardResult<WatchPass> {
        let settings = self
            .config
            .chain_settings(chain)
            .ok_or_else(|| GuardError::Invalid(format!("chain {chain} is not configured")))?;
        let client = Arc::clone(self.chain(chain)?);
        let model = &self.config.model;
        let wallets: Vec<&Wallet> = model.wallets.iter().filter(|w| w.chain == chain).collect();
        let addresses: Vec<String> = wallets.iter().map(|w| w.address.clone()).collect();
        let assets: Vec<Asset> = model.assets_on(chain).cloned().collect();
        let chain_id = chain.to_string();
        let from = match self.blocking(move |l| l.chain_cursor(&chain_id)).await? {
            Some(n) => n,
            None => settings.start_block,
        };
        let mut pass =
            WatchPass { chain: chain.to_string(), from, indexed: 0, next: from, target: None, findings: vec![] };
        let head = client.head().await?;
        pass.target = head.checked_sub(settings.confirmations);
        let Some(target) = pass.target else { return Ok(pass) };
        let end = target.min(from.saturating_add(max_blocks.saturating_sub(1)));
        if target.saturating_sub(from) > max_blocks {
            tracing::info!(chain, from, target, "backfilling: {} blocks behind", target - from + 1);
        }
        while pass.next <= end {
            let number = pass.next;
            // A node without the block yet (it lags) answers None: wait for the next pass rather
            // than record an empty block.
            let Some(block) = client.block_outflows(number, &addresses, &assets).await? else { break };
            let outflows = block
                .outflows
                .into_iter()
                .filter_map(|o| {
                    let wallet = wallets.iter().find(|w| w.address == o.from)?;
                    Some(Outflow {
                        chain: chain.to_string(),
                        block: block.number,
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
                .collect();
            let (chain_id, hash, parent, at) = (chain.to_string(), block.hash, block.parent_hash, self.clock.now());
            let findings =
                match self.blocking(move |l| l.record_block(&chain_id, number, &hash, &parent, outflows, at)).await {
                    Ok(f) => f,
                    Err(GuardError::Store(StoreError::Reorg { .. })) => {
                        pass.next = self.unwind_reorg(chain, client.as_ref(), number, settings.max_reorg_depth).await?;
                        continue;
                    }
                    Err(e) => return Err(e),
                };
            for f in findings.into_iter().filter(|f| f.class != Class::Matched) {
                tracing::warn!(
                    chain,
                    class = f.class.as_str(),
                    frozen = ?f.frozen,
                    evidence = %evidence(&f.outflow),
                    "outflow did not reconcile"
                );
                pass.findings.push(f);
            }
            pass.indexed += 1;
            pass.next += 1;
        }
        Ok(pass)
    }

    /// Walks back from `at` (whose parent no longer matches) to the last block both the ledger
    /// and the node agree on, rewinds everything above it, and returns where to index from.
    /// A reorg deeper than `max_depth` stops the watcher rather than guess.
    async fn unwind_reorg(&self, chain: &str, client: &dyn ChainClient, at: u64, max_depth: u64) -> GuardResult<u64> {
        let mut n = at.saturating_sub(1);
        loop {
            if at - n > max_depth {
                let detail = format!(
                    "chain {chain}: reorg deeper than max_reorg_depth ({max_depth} blocks) below block {at}; \
                     watcher stopped until an operator investigates and restarts it"
                );
                let (now, d) = (self.clock.now(), detail.clone());
                self.watcher(chain, now, |s| s.halted = Some(detail.clone()));
                self.blocking(move |l| l.record_event("watcher_stalled", None, &d, now)).await?;
                return Err(GuardError::Invalid(detail));
            }
            let chain_id = chain.to_string();
            let stored = self.blocking(move |l| l.block_hash(&chain_id, n)).await?;
            let Some(canonical) = client.block_hash(n).await? else {
                // The node does not have a block below one it just served: it is not a node to
                // decide a reorg with. Retry on the next pass.
                return Err(GuardError::Chain(spendguard_chain::ChainError::Unavailable {
                    chain: chain.to_string(),
                    message: format!("the node has no block {n} while unwinding a reorg"),
                }));
            };
            if stored.is_none() || stored.as_deref() == Some(canonical.as_str()) {
                let (chain_id, now) = (chain.to_string(), self.clock.now());
                let reopened = self.blocking(move |l| l.rewind(&chain_id, n + 1, now)).await?;
                tracing::warn!(chain, from = n + 1, reopened = reopened.len(), "reorg: re-indexing");
                return Ok(n + 1);
            }
            if n == 0 {
                return Ok(0);
            }
            n -= 1;
        }
    }

    /// Broadcast spends not seen on `chain` within its `missing_after` are reported
    /// (`missing_outflow`, once each); those the chain's final state proves can no longer land
    /// fail, which releases their reservation.
    pub(crate) async fn check_missing(&self, chain: &str, client: &dyn ChainClient) -> GuardResult<()> {
        let Some(settings) = self.config.chain_settings(chain) else { return Ok(()) };
        let now = self.clock.now();
        let (chain_id, deadline) = (chain.to_string(), now - settings.missing_after);
        let missing = self.blocking(move |l| l.missing(&chain_id, deadline, now)).await?;
        if missing.is_empty() {
            return Ok(());
        }
        let Some(final_block) = client.head().await?.checked_sub(settings.confirmations) else { return Ok(()) };
        for d in missing {
            let id = d.id.clone();
            let (Some(signed), Some(wallet)) =
                (self.blocking(move |l| l.signed_tx(&id)).await?, self.config.model.wallet(&d.wallet))
            else {
                continue;
            };
            if client.cannot_land(&chain_tx(&signed), &wallet.address, final_block).await? {
                let why = format!(
                    "missing: {} never landed, and the chain's final state (block {final_block}) proves it no \
                     longer can (EVM: its nonce went to another transaction; Solana: its blockhash expired)",
                    signed.hash
                );
                self.fail(&d.id, &why, true).await?;
            }
        }
        Ok(())
    }

    /// After a spend from `wallet_id` lands: a wallet with `balance_low_usd` whose configured
    /// assets are now worth less records `balance_low` (once, until it is topped up again).
    pub(crate) async fn check_balance_low(&self, wallet_id: &str) -> GuardResult<()> {
        let Some(threshold) = self.config.wallet_keys(wallet_id).and_then(|k| k.balance_low_usd) else {
            return Ok(());
        };
        let Some(wallet) = self.config.model.wallet(wallet_id) else { return Ok(()) };
        let client = Arc::clone(self.chain(&wallet.chain)?);
        let assets: Vec<Asset> = self.config.model.assets_on(&wallet.chain).cloned().collect();
        let balances = client.balances(&wallet.address, &assets).await?;
        let worth: Decimal = assets.iter().zip(&balances).map(|(a, b)| a.price_usd * b).sum();
        let newly_low = {
            let mut low = self.low_wallets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if worth < threshold {
                low.insert(wallet_id.to_string())
            } else {
                low.remove(wallet_id);
                false
            }
        };
        if newly_low {
            let detail = format!(
                "wallet {wallet_id} holds ${} of configured assets, below its balance_low_usd of ${}",
                spendguard_core::money::fmt_usd(worth.round_dp(2)),
                spendguard_core::money::fmt_usd(threshold)
            );
            let now = self.clock.now();
            self.blocking(move |l| l.record_event("balance_low", None, &detail, now)).await?;
        }
        Ok(())
    }
}
