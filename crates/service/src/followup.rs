//! The executor's background pass: broadcast what was signed but not sent (after a crash),
//! follow sent transactions to their receipts (re-sending ones the node lost), execute DELAY
//! spends when due unless frozen meanwhile, release expired approval requests, pick up
//! reservations a crash left unsigned, and deal with spends missing on chain (reported, and
//! re-signed or released once the chain proves they cannot land).

use crate::error::ServiceResult;
use crate::execution::{chain_tx, Executor};
use chrono::TimeDelta;
use rust_decimal::Decimal;
use spendguard_chain::ChainClient;
use spendguard_core::model::Asset;
use spendguard_core::{EventKind, SpendStatus};
use spendguard_store::{DecisionRecord, Settlement};
use std::sync::Arc;

/// How long a reserved-but-unsigned decision waits before the background pass takes it over
/// (normally the request that reserved it signs it within milliseconds).
const ORPHAN_AFTER: TimeDelta = TimeDelta::seconds(5);
/// How often a broadcast transaction without a receipt is sent again.
const REBROADCAST_AFTER: TimeDelta = TimeDelta::seconds(15);

impl Executor {
    /// One background pass. Each failure is logged and retried on the next pass; only a ledger
    /// that cannot be read stops the pass early.
    pub async fn pass(&self) -> ServiceResult<()> {
        let now = self.clock.now();
        // An expired request is released whether or not this process signs.
        self.decisions.expire_approvals(now).await?;
        self.expire_authorizations().await?;
        if !self.signs {
            return Ok(());
        }
        for d in self.decisions.decisions_in(&[SpendStatus::Signed, SpendStatus::Broadcast]).await? {
            if let Err(e) = self.follow(&d).await {
                tracing::warn!(decision = %d.id, error = %e, "following a sent spend failed; will retry");
            }
        }
        let orphans = self.decisions.decisions_in(&[SpendStatus::Reserved]).await?;
        // An approved spend is executed at once (the approver may have used the CLI); others
        // only once the process that reserved them had time to sign them itself.
        for d in orphans.into_iter().filter(|d| d.approved_by.is_some() || now - d.updated_at > ORPHAN_AFTER) {
            if let Err(e) = self.execute(&d.id).await {
                tracing::warn!(decision = %d.id, error = %e, "executing a reserved spend failed; will retry");
            }
        }
        let due = self.decisions.decisions_in(&[SpendStatus::Queued]).await?;
        for d in due.into_iter().filter(|d| d.execute_after.is_some_and(|t| t <= now)) {
            // Whether a freeze covers it is decided in the same transaction that starts it.
            match self.decisions.start_due(&d.id, now).await {
                Ok(Some(started)) if started.status == SpendStatus::Reserved => {
                    if let Err(e) = self.execute(&d.id).await {
                        tracing::warn!(decision = %d.id, error = %e, "executing a due spend failed; will retry");
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(decision = %d.id, error = %e, "starting a due spend failed; will retry"),
            }
        }
        // A wallet reported low is checked again until a refill lifts it, so that the next time
        // it runs low is reported again.
        let low: Vec<String> =
            self.low_wallets.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().cloned().collect();
        for wallet in low {
            if let Err(e) = self.check_balance_low(&wallet).await {
                tracing::warn!(wallet = %wallet, error = %e, "checking a low wallet again failed; will retry");
            }
        }
        for client in self.chains.all() {
            if let Err(e) = self.check_missing(client.as_ref()).await {
                tracing::warn!(chain = client.chain_id(), error = %e, "checking for missing spends failed; will retry");
            }
        }
        Ok(())
    }

    /// Releases external wallets' authorizations not paid by their expiry plus the chain's
    /// `missing_after` — the time a payment sent just before the expiry may take to be seen
    /// by the watcher. A payment landing later is unexplained.
    async fn expire_authorizations(&self) -> ServiceResult<()> {
        let now = self.clock.now();
        for settings in &self.config.chains {
            let expired =
                self.authorizations.expire_authorizations(&settings.id, now - settings.missing_after, now).await?;
            for a in expired {
                tracing::info!(decision = %a.decision_id, wallet = %a.wallet, "authorization expired unpaid; released");
            }
        }
        Ok(())
    }

    /// A signed decision is sent (again); a broadcast one settled when its receipt is there,
    /// or sent again when the node seems to have lost it.
    async fn follow(&self, d: &DecisionRecord) -> ServiceResult<()> {
        let Some(client) = d.chain.as_deref().and_then(|c| self.chains.get(c).ok()).cloned() else { return Ok(()) };
        match d.status {
            SpendStatus::Signed => {
                self.execute(&d.id).await?;
            }
            SpendStatus::Broadcast => {
                let Some(hash) = d.tx_hash.as_deref() else { return Ok(()) };
                let now = self.clock.now();
                match client.outcome(hash).await? {
                    Some(o) => {
                        let settlement = Settlement { success: o.success, block: o.block, fee: o.fee };
                        self.signing.settle(&d.id, settlement, now).await?;
                        if let Err(e) = self.check_balance_low(&d.wallet).await {
                            tracing::warn!(wallet = %d.wallet, error = %e, "balance check failed");
                        }
                    }
                    None if now - d.updated_at > REBROADCAST_AFTER => {
                        if let Some(s) = self.signing.signed_tx(&d.id).await? {
                            if let Err(e) = client.broadcast(&chain_tx(&s)).await {
                                tracing::warn!(decision = %d.id, error = %e, "re-broadcast failed");
                            }
                        }
                    }
                    None => {}
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Broadcast spends not seen on the chain within its `missing_after` are reported
    /// (`missing_outflow`, once each); those the chain's final state proves can no longer land
    /// are re-signed (Solana, once) or fail, which releases their reservation.
    async fn check_missing(&self, client: &dyn ChainClient) -> ServiceResult<()> {
        let chain = client.chain_id();
        let Some(settings) = self.config.chain_settings(chain) else { return Ok(()) };
        let now = self.clock.now();
        let missing = self.signing.missing(chain, now - settings.missing_after, now).await?;
        if missing.is_empty() {
            return Ok(());
        }
        let Some(final_block) = client.head().await?.checked_sub(settings.confirmations) else { return Ok(()) };
        for d in missing {
            let (Some(signed), Some(wallet)) =
                (self.signing.signed_tx(&d.id).await?, self.config.model.wallet(&d.wallet))
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
    async fn check_balance_low(&self, wallet_id: &str) -> ServiceResult<()> {
        let Some(threshold) = self.config.wallet_keys(wallet_id).and_then(|k| k.balance_low_usd) else {
            return Ok(());
        };
        let Some(wallet) = self.config.model.wallet(wallet_id) else { return Ok(()) };
        let client = Arc::clone(self.chains.get(&wallet.chain)?);
        let assets: Vec<Asset> = self.config.model.assets_on(&wallet.chain).cloned().collect();
        let balances = client.balances(&wallet.address, &assets).await?;
        let now = self.clock.now();
        let mut worth = Decimal::ZERO;
        for (asset, balance) in assets.iter().zip(&balances) {
            match self.prices.quote(asset, now) {
                Ok(q) => worth += q.price * balance,
                // Never valued at zero: the wallet is judged once its prices are usable again
                // (`price_stale` tells operators why).
                Err(_) if !balance.is_zero() => return Ok(()),
                Err(_) => {}
            }
        }
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
            self.outbox.record_event(EventKind::BalanceLow, None, &detail, self.clock.now()).await?;
        }
        Ok(())
    }
}
