//! The chain clients the services talk to, by chain id, and reading wallets' live balances.

use crate::error::{ServiceError, ServiceResult};
use rust_decimal::Decimal;
use serde::Serialize;
use spendguard_chain::{ChainClient, ChainError};
use spendguard_core::engine::requested_asset_key;
use spendguard_core::model::{Asset, Wallet};
use spendguard_core::{Balances, Model, SpendRequest};
use std::collections::HashMap;
use std::sync::Arc;

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

/// The chain clients, by chain id.
#[derive(Clone, Default)]
pub struct Chains {
    clients: HashMap<String, Arc<dyn ChainClient>>,
}

impl Chains {
    /// One client per chain; a later client for the same chain replaces an earlier one.
    pub fn new(clients: Vec<Arc<dyn ChainClient>>) -> Chains {
        Chains { clients: clients.into_iter().map(|c| (c.chain_id().to_string(), c)).collect() }
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
        let mut balances = Balances::new();
        let Some(wallet) = model.wallet(&req.wallet) else { return Ok(balances) };
        let Some(key) = requested_asset_key(model, wallet, req.asset.as_deref()) else { return Ok(balances) };
        let Some(asset) = model.assets.iter().find(|a| a.key() == key) else { return Ok(balances) };
        let Some(client) = self.clients.get(&wallet.chain) else { return Ok(balances) };
        let amounts = client.balances(&wallet.address, std::slice::from_ref(asset)).await?;
        if let Some(a) = amounts.first() {
            balances.insert(key, *a);
        }
        Ok(balances)
    }
}
