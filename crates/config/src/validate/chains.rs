//! `[[chain]]` and `[[asset]]`.

use super::{Checker, Refs};
use crate::locate::KeyPath;
use crate::raw::{RawAsset, RawChain, RawCommitment};
use crate::{ChainSettings, Commitment};
use rust_decimal::Decimal;
use spendguard_core::model::{Asset, Chain, ChainKind};
use std::collections::HashSet;

pub(super) fn chains(
    c: &mut Checker,
    raw: &[RawChain],
    root: &KeyPath,
    refs: &mut Refs,
) -> (Vec<Chain>, Vec<ChainSettings>) {
    let mut chain_ids = HashSet::new();
    let mut chains = vec![];
    let mut chain_settings = vec![];
    for (i, ch) in raw.iter().enumerate() {
        let p = root.key("chain").index(i);
        if !c.unique(&mut chain_ids, &ch.id, p.key("id"), "chain") {
            continue;
        }
        if ch.id.contains(':') {
            c.err(p.key("id"), "chain id must not contain ':' (it separates chain and symbol)");
        }
        if ch.rpc.is_empty() {
            c.err(p.key("rpc"), "needs at least one RPC URL");
        }
        for (j, url) in ch.rpc.iter().enumerate() {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                c.err(p.key("rpc").index(j), format!("{url:?} is not an http:// or https:// URL"));
            }
        }
        match ch.kind {
            ChainKind::Evm => {
                if ch.chain_id.is_none() {
                    c.err(p.key("chain_id"), "is required for an evm chain");
                }
                if ch.commitment.is_some() {
                    c.err(p.key("commitment"), "applies only to solana chains");
                }
            }
            ChainKind::Solana => {
                for (key, set) in [
                    ("chain_id", ch.chain_id.is_some()),
                    ("max_fee_per_gas_gwei", ch.max_fee_per_gas_gwei.is_some()),
                    ("start_block", ch.start_block.is_some()),
                ] {
                    if set {
                        c.err(p.key(key), "applies only to evm chains");
                    }
                }
            }
        }
        if ch.max_reorg_depth == Some(0) {
            c.err(p.key("max_reorg_depth"), "must be at least 1");
        }
        if let Some(fee) = ch.max_fee_per_gas_gwei {
            if fee.0 <= Decimal::ZERO {
                c.err(p.key("max_fee_per_gas_gwei"), "must be greater than zero");
            }
        }
        chains.push(Chain { id: ch.id.clone(), kind: ch.kind });
        let poll_interval = ch.poll_interval.map_or(chrono::TimeDelta::seconds(1), |d| d.0);
        chain_settings.push(ChainSettings {
            id: ch.id.clone(),
            kind: ch.kind,
            chain_id: ch.chain_id,
            rpc: ch.rpc.clone(),
            confirmations: ch.confirmations.unwrap_or(if ch.kind == ChainKind::Evm { 2 } else { 0 }),
            poll_interval,
            start_block: ch.start_block.unwrap_or(0),
            max_fee_per_gas_gwei: ch.max_fee_per_gas_gwei.map(|m| m.0),
            commitment: match ch.commitment {
                Some(RawCommitment::Finalized) => Commitment::Finalized,
                _ => Commitment::Confirmed,
            },
            rpc_timeout: ch.rpc_timeout.map_or(chrono::TimeDelta::seconds(10), |d| d.0),
            max_reorg_depth: ch.max_reorg_depth.unwrap_or(64),
            stall_after: ch.stall_after.map_or(chrono::TimeDelta::minutes(2), |d| d.0),
            missing_after: ch.missing_after.map_or(chrono::TimeDelta::minutes(10), |d| d.0),
            // One poll: a balance is no older than the watcher's view of the chain.
            balance_max_age: ch.balance_max_age.map_or(poll_interval, |d| d.0),
        });
    }
    refs.chain_kinds = chains.iter().map(|ch| (ch.id.clone(), ch.kind)).collect();
    (chains, chain_settings)
}

pub(super) fn assets(c: &mut Checker, raw: &[RawAsset], root: &KeyPath, refs: &mut Refs) {
    let mut assets: Vec<Asset> = vec![];
    let mut native_seen = HashSet::new();
    for (i, a) in raw.iter().enumerate() {
        let p = root.key("asset").index(i);
        let Some(kind) = refs.chain(c, &a.chain, p.key("chain")) else { continue };
        if a.symbol.is_empty() || a.symbol.contains(':') || a.symbol.contains(char::is_whitespace) {
            c.err(p.key("symbol"), "must be a non-empty symbol without ':' or spaces");
            continue;
        }
        if assets.iter().any(|x| x.chain == a.chain && x.symbol == a.symbol) {
            c.err(p.key("symbol"), format!("duplicate asset {}:{}", a.chain, a.symbol));
            continue;
        }
        if a.decimals > 28 {
            c.err(p.key("decimals"), "must be at most 28 (the precision of spendguard's decimals)");
        }
        if a.price_usd.0 <= Decimal::ZERO {
            c.err(p.key("price_usd"), "must be greater than zero");
        }
        let token = match (kind, &a.contract, &a.mint) {
            (ChainKind::Evm, _, Some(_)) => {
                c.err(p.key("mint"), "applies only to solana assets; use contract on an evm chain");
                None
            }
            (ChainKind::Solana, Some(_), _) => {
                c.err(p.key("contract"), "applies only to evm assets; use mint on a solana chain");
                None
            }
            (_, Some(t), _) | (_, _, Some(t)) => {
                let key = if a.contract.is_some() { "contract" } else { "mint" };
                match kind.normalize_address(t) {
                    Ok(addr) => Some(addr),
                    Err(e) => {
                        c.err(p.key(key), e.to_string());
                        None
                    }
                }
            }
            (_, None, None) => {
                if !native_seen.insert(a.chain.as_str()) {
                    c.err(
                        p.key("symbol"),
                        format!("chain {} already has a native asset (one without contract or mint)", a.chain),
                    );
                }
                None
            }
        };
        assets.push(Asset {
            chain: a.chain.clone(),
            symbol: a.symbol.clone(),
            token,
            decimals: a.decimals,
            price_usd: a.price_usd.0,
        });
    }
    refs.assets = assets;
}
