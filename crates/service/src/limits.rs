//! The room left under every limit that applies to an agent spending from a wallet: what
//! `balance`, `status` and reports show.

use crate::clock::Clock;
use crate::error::ServiceResult;
use rust_decimal::Decimal;
use spendguard_core::model::Wallet;
use spendguard_core::{Balances, Headroom, Model, SpendRequest};
use spendguard_store::DecisionStore;
use std::sync::Arc;

/// Reads limits' headroom by dry runs against the ledger.
#[derive(Clone)]
pub(crate) struct Limits {
    pub(crate) decisions: Arc<dyn DecisionStore>,
    pub(crate) prices: Arc<crate::prices::PriceBook>,
    pub(crate) clock: Arc<dyn Clock>,
}

impl Limits {
    /// Every limit that applies to `agent` spending from `wallet`, asset by asset: a dry run
    /// of the smallest amount to the wallet itself, merged by rule. `balances` are the
    /// wallet's known balances (a balance-fraction limit without one fails closed).
    pub(crate) async fn headroom(
        &self,
        model: &Model,
        agent: &str,
        wallet: &Wallet,
        balances: &Balances,
    ) -> ServiceResult<Vec<Headroom>> {
        let mut limits: Vec<Headroom> = vec![];
        for asset in model.assets_on(&wallet.chain) {
            let req = SpendRequest {
                agent: agent.to_string(),
                wallet: wallet.id.clone(),
                to: wallet.address.clone(),
                amount: Decimal::new(1, asset.decimals.min(28)),
                asset: Some(asset.key()),
                operation: None,
                at: self.clock.now(),
                domain: None,
            };
            let known: Balances =
                balances.iter().filter(|(k, _)| **k == asset.key()).map(|(k, v)| (k.clone(), *v)).collect();
            let prices = self.prices.for_asset(Some(&asset.key())).await;
            let eval = self.decisions.evaluate(req, known, prices).await?;
            for mut h in eval.headroom {
                h.requested = Decimal::ZERO;
                if !limits.iter().any(|x| x.labels == h.labels) {
                    limits.push(h);
                }
            }
        }
        Ok(limits)
    }
}

/// How much of a limit is used or reserved, in percent to one decimal (0 for a zero limit).
pub(crate) fn percent_used(h: &Headroom) -> Decimal {
    if h.limit > Decimal::ZERO {
        ((h.used + h.reserved) * Decimal::ONE_HUNDRED / h.limit).round_dp(1)
    } else {
        Decimal::ZERO
    }
}
