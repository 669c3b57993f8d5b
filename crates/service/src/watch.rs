//! The auditor's side of [`Guard`]: indexing each chain's blocks into the ledger, unwinding
//! reorgs, noticing a watcher that makes no progress, spends that never showed up on chain, and
//! wallets running low.

use crate::guard::{chain_tx, Guard, GuardError, GuardResult};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use spendguard_chain::{ChainClient, ChainOutflow, Indexing};
use spendguard_core::model::{Asset, Wallet};
use spendguard_core::reconcile::{evidence, Class, Outflow};
use spendguard_store::{Finding, StoreError};
use std::sync::Arc;

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

/// A chain's outflows as the ledger records them: each from a registered wallet, with its id.
fn ledger_outflows(chain: &str, block: u64, outflows: Vec<ChainOutflow>, wallets: &[&Wallet]) -> Vec<Outflow> {
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

impl WatchPass {
    /// Keeps (and logs) the findings that are not plain matches.
    fn note(&mut self, findings: Vec<Finding>) {
        for f in findings.into_iter().filter(|f| f.class != Class::Matched) {
            tracing::warn!(
                chain = %self.chain,
                class = f.class.as_str(),
                frozen = ?f.frozen,
                evidence = %evidence(&f.outflow),
                "outflow did not reconcile"
            );
            self.findings.push(f);
        }
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
        match &result {
            Ok(pass) => self.metrics.watcher_lag(chain, pass.behind()),
            Err(_) => self.metrics.watcher_error(chain),
        }
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
        if client.indexing() == Indexing::Signatures {
            return self.index_signatures(chain, client.as_ref(), settings.start_block, max_blocks).await;
        }
        let model = &self.config.model;
        let wallets: Vec<&Wallet> = model.wallets.iter().filter(|w| w.chain == chain).collect();
        let addresses: Vec<String> = wallets.iter().map(|w| w.address.clone()).collect();
        let assets: Vec<Asset> = model.assets_on(chain).cloned().collect();
        let chain_id = chain.to_string();
        let from = match self.blocking(move |l| l.chain_cursor(&chain_id)).await? {
            Some(n) => n,
            None => settings.start_block,
        };
        let mut pass = WatchPass {
            chain: chain.to_string(),
            indexing: Indexing::Blocks,
            from,
            indexed: 0,
            next: from,
            target: None,
            pending: 0,
            findings: vec![],
        };
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
            let outflows = ledger_outflows(chain, block.number, block.outflows, &wallets);
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
            pass.note(findings);
            pass.indexed += 1;
            pass.next += 1;
        }
        Ok(pass)
    }

    /// Indexes a signature-indexed chain (Solana): for each registered wallet, the transactions
    /// listed after its cursor, oldest first, each recorded with the cursor move in one ledger
    /// transaction; at most `max_transactions` in the pass.
    async fn index_signatures(
        &self,
        chain: &str,
        client: &dyn ChainClient,
        start_slot: u64,
        max_transactions: u64,
    ) -> GuardResult<WatchPass> {
        let model = &self.config.model;
        let wallets: Vec<&Wallet> = model.wallets.iter().filter(|w| w.chain == chain).collect();
        let addresses: Vec<String> = wallets.iter().map(|w| w.address.clone()).collect();
        let assets: Vec<Asset> = model.assets_on(chain).cloned().collect();
        let mut pass = WatchPass {
            chain: chain.to_string(),
            indexing: Indexing::Signatures,
            from: u64::MAX,
            indexed: 0,
            next: 0,
            target: Some(client.head().await?),
            pending: 0,
            findings: vec![],
        };
        for wallet in &wallets {
            let (chain_id, address) = (chain.to_string(), wallet.address.clone());
            let cursor = self.blocking(move |l| l.wallet_cursor(&chain_id, &address)).await?;
            pass.from = pass.from.min(cursor.as_ref().map_or(start_slot, |(_, slot)| *slot));
            pass.next = pass.next.max(cursor.as_ref().map_or(start_slot, |(_, slot)| slot + 1));
            let listed =
                client.signatures_since(&wallet.address, cursor.as_ref().map(|(s, _)| s.as_str()), start_slot).await?;
            for (n, listed_tx) in listed.iter().enumerate() {
                let left = (listed.len() - n) as u64;
                if pass.indexed >= max_transactions {
                    pass.pending += left;
                    break;
                }
                // Listed but not served yet (a lagging node): never skip it, wait for a later pass.
                let Some(tx) = client.transaction_outflows(&listed_tx.signature, &addresses, &assets).await? else {
                    pass.pending += left;
                    break;
                };
                let outflows = ledger_outflows(chain, tx.slot, tx.outflows, &wallets);
                let (chain_id, address, signature, at) =
                    (chain.to_string(), wallet.address.clone(), listed_tx.signature.clone(), self.clock.now());
                let findings = self
                    .blocking(move |l| l.record_transaction(&chain_id, &address, &signature, tx.slot, outflows, at))
                    .await?;
                pass.note(findings);
                pass.indexed += 1;
                pass.next = pass.next.max(tx.slot + 1);
            }
        }
        if pass.from == u64::MAX {
            pass.from = start_slot;
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
                self.replace_dead(&d, client, &signed, &why).await?;
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
