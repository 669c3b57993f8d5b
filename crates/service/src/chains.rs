//! The chain clients the services talk to, by chain id, and reading wallets' live balances —
//! or, for dry runs, balances read moments ago (at most a chain's `balance_max_age`), so that
//! `evaluate` does not wait on an RPC round trip per call.

use crate::error::{ServiceError, ServiceResult};
use rust_decimal::Decimal;
use serde::Serialize;
use spendguard_chain::{ChainClient, ChainError};
use spendguard_core::engine::requested_asset_key;
use spendguard_core::model::{Asset, Wallet};
use spendguard_core::{Balances, Model, SpendRequest};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// One asset balance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AssetBalance {
    /// `chain:SYMBOL`.
    pub asset: String,
    /// Amount in asset units.
    pub amount: Decimal,
}

/// A wallet's live balances as read: by asset for the engine, listed for people, or why they
/// could not be read.
#[derive(Debug, Clone, Default)]
pub(crate) struct WalletRead {
    pub(crate) known: Balances,
    pub(crate) listed: Vec<AssetBalance>,
    pub(crate) error: Option<String>,
}

/// Balances read lately, by wallet id and asset key, with when they were read; and when each
/// wallet's were last forgotten, so that a read begun before money left is not kept after.
#[derive(Default)]
struct RecentBalances {
    read: HashMap<(String, String), (Decimal, Instant)>,
    forgotten: HashMap<String, Instant>,
}

/// The chain clients, by chain id.
#[derive(Clone, Default)]
pub struct Chains {
    clients: HashMap<String, Arc<dyn ChainClient>>,
    /// How long a balance read serves dry runs, by chain; a chain not named keeps none.
    balance_max_age: HashMap<String, Duration>,
    recent: Arc<Mutex<RecentBalances>>,
}

impl Chains {
    /// One client per chain; a later client for the same chain replaces an earlier one.
    pub fn new(clients: Vec<Arc<dyn ChainClient>>) -> Chains {
        Chains { clients: clients.into_iter().map(|c| (c.chain_id().to_string(), c)).collect(), ..Chains::default() }
    }

    /// Lets a balance read on `chain` answer dry runs for `max_age` (zero: every dry run reads
    /// the chain).
    pub fn keep_balances(mut self, chain: &str, max_age: Duration) -> Chains {
        self.balance_max_age.insert(chain.to_string(), max_age);
        self
    }

    /// Forgets what was read of `wallet`'s balances: money just left it.
    pub(crate) fn forget_balances(&self, wallet: &str) {
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        recent.read.retain(|(w, _), _| w != wallet);
        recent.forgotten.insert(wallet.to_string(), Instant::now());
    }

    /// The client of `chain`.
    pub fn get(&self, chain: &str) -> ServiceResult<&Arc<dyn ChainClient>> {
        self.clients
            .get(chain)
            .ok_or_else(|| ServiceError::Unconfigured(format!("chain {chain} has no client configured")))
    }

    /// Every client.
    pub fn all(&self) -> impl Iterator<Item = &Arc<dyn ChainClient>> {
        self.clients.values()
    }

    /// Live balances of every configured asset of `wallet`'s chain.
    pub(crate) async fn read_wallet(&self, model: &Model, wallet: &Wallet) -> WalletRead {
        let assets: Vec<Asset> = model.assets_on(&wallet.chain).cloned().collect();
        let read = match self.clients.get(&wallet.chain) {
            Some(c) => c.balances(&wallet.address, &assets).await.map_err(|e| e.to_string()),
            None => Err(format!("chain {} has no client configured", wallet.chain)),
        };
        match read {
            Ok(amounts) => WalletRead {
                known: assets.iter().zip(&amounts).map(|(a, v)| (a.key(), *v)).collect(),
                listed: assets
                    .iter()
                    .zip(amounts)
                    .map(|(a, v)| AssetBalance { asset: a.key(), amount: v.normalize() })
                    .collect(),
                error: None,
            },
            Err(e) => WalletRead { error: Some(e), ..WalletRead::default() },
        }
    }

    /// Live balance of the asset a request names, when its wallet and asset are known.
    pub(crate) async fn request_balance(&self, model: &Model, req: &SpendRequest) -> Result<Balances, ChainError> {
        self.read_request_balance(model, req, false).await
    }

    /// [`Chains::request_balance`] for a dry run: a balance read within the chain's
    /// `balance_max_age` is used instead of asking the chain again.
    pub(crate) async fn recent_request_balance(
        &self,
        model: &Model,
        req: &SpendRequest,
    ) -> Result<Balances, ChainError> {
        self.read_request_balance(model, req, true).await
    }

    async fn read_request_balance(
        &self,
        model: &Model,
        req: &SpendRequest,
        recent_will_do: bool,
    ) -> Result<Balances, ChainError> {
        let mut balances = Balances::default();
        let Some(wallet) = model.wallet(&req.wallet) else { return Ok(balances) };
        let Some(key) = requested_asset_key(model, wallet, req.asset.as_deref()) else { return Ok(balances) };
        let Some(asset) = model.assets.iter().find(|a| a.key() == key) else { return Ok(balances) };
        let Some(client) = self.clients.get(&wallet.chain) else { return Ok(balances) };
        let max_age = self.balance_max_age.get(&wallet.chain).copied().unwrap_or_default();
        let slot = (wallet.id.clone(), key.clone());
        if recent_will_do && !max_age.is_zero() {
            let recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner).read.get(&slot).copied();
            if let Some((amount, read_at)) = recent.filter(|(_, read_at)| read_at.elapsed() < max_age) {
                tracing::trace!(wallet = wallet.id, asset = key, age = ?read_at.elapsed(), "balance read lately");
                balances.insert(key, amount);
                return Ok(balances);
            }
        }
        let read_at = Instant::now();
        let amounts = client.balances(&wallet.address, std::slice::from_ref(asset)).await?;
        if let Some(a) = amounts.first() {
            let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
            let forgotten_since = recent.forgotten.get(&wallet.id).is_some_and(|at| *at >= read_at);
            if !max_age.is_zero() && !forgotten_since {
                recent.read.insert(slot, (*a, read_at));
            }
            balances.insert(key, *a);
        }
        Ok(balances)
    }
}
