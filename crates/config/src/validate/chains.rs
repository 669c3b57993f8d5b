//! `[[chain]]` and `[[asset]]`.

use super::{Checker, Refs};
use crate::locate::KeyPath;
use crate::raw::{RawAsset, RawChain, RawCommitment};
use crate::{ChainSettings, Commitment};
use chrono::TimeDelta;
use rust_decimal::Decimal;
use spendguard_core::model::{Asset, Chain, ChainKind};
use spendguard_core::price::{AssetPrice, FeedKind, Peg, PriceFeed, PriceSource};
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
                    ("range_blocks", ch.range_blocks.is_some()),
                    ("range_wait", ch.range_wait.is_some()),
                ] {
                    if set {
                        c.err(p.key(key), "applies only to evm chains");
                    }
                }
            }
        }
        let stall_after = ch.stall_after.map_or(chrono::TimeDelta::minutes(2), |d| d.0);
        if let Some(wait) = ch.range_wait.map(|d| d.0) {
            if ch.range_blocks == Some(0) {
                c.err(p.key("range_wait"), "needs range_blocks above 0 (ranges are off)");
            }
            if wait >= stall_after {
                c.err(
                    p.key("range_wait"),
                    "must be shorter than stall_after (the watcher would be reported stalled while it waits)",
                );
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
            stall_after,
            missing_after: ch.missing_after.map_or(chrono::TimeDelta::minutes(10), |d| d.0),
            // One poll: a balance is no older than the watcher's view of the chain.
            balance_max_age: ch.balance_max_age.map_or(poll_interval, |d| d.0),
            balance_conservation: ch.balance_conservation.unwrap_or(true),
            range_blocks: ch.range_blocks.unwrap_or(if ch.kind == ChainKind::Evm { DEFAULT_RANGE_BLOCKS } else { 0 }),
            range_wait: ch.range_wait.map_or(chrono::TimeDelta::zero(), |d| d.0),
        });
    }
    refs.chain_kinds = chains.iter().map(|ch| (ch.id.clone(), ch.kind)).collect();
    (chains, chain_settings)
}

/// Blocks an EVM watcher reads as one range when that many are waiting (a backfill).
const DEFAULT_RANGE_BLOCKS: u64 = 100;

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
        let price = asset_price(c, a, &p, refs);
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
            price: price.unwrap_or_else(|| AssetPrice::fixed(Decimal::ONE)),
        });
    }
    refs.assets = assets;
}

/// `price_usd = "…"` (static) or `price = {…}` (a live feed), exactly one of them. `None` after
/// an error has been reported.
fn asset_price(c: &mut Checker, a: &RawAsset, p: &KeyPath, refs: &Refs) -> Option<AssetPrice> {
    let raw = match (&a.price_usd, &a.price) {
        (Some(usd), None) => {
            if usd.0 <= Decimal::ZERO {
                c.err(p.key("price_usd"), "must be greater than zero");
                return None;
            }
            return Some(AssetPrice::fixed(usd.0));
        }
        (None, Some(raw)) => raw,
        (Some(_), Some(_)) => {
            c.err(p.key("price"), "give either price_usd (a fixed price) or price = {…} (a live feed), not both");
            return None;
        }
        (None, None) => {
            c.err(
                p.key("price_usd"),
                "missing: every asset needs price_usd = \"…\" or price = { source = \"chainlink\" | \"pyth\", … }",
            );
            return None;
        }
    };
    let pp = p.key("price");
    let errors = c.issues.len();
    let chain = raw.chain.clone().unwrap_or_else(|| a.chain.clone());
    let chain_kind = refs.chain(c, &chain, pp.key("chain"));
    let address = |c: &mut Checker, key: &str, value: &Option<String>, kind: ChainKind| -> Option<String> {
        let Some(text) = value else {
            c.err(pp.key(key), format!("missing: a {} price needs {key}", raw.source));
            return None;
        };
        kind.normalize_address(text).map_err(|e| c.err(pp.key(key), e.to_string())).ok()
    };
    let refuse = |c: &mut Checker, key: &str, given: bool| {
        if given {
            c.err(pp.key(key), format!("does not apply to a {} price", raw.source));
        }
    };
    let want = |c: &mut Checker, kind: ChainKind| {
        if chain_kind.is_some_and(|k| k != kind) {
            c.err(pp.key("chain"), format!("a {} feed must be on a {} chain; {chain} is not", raw.source, kind));
        }
    };
    let kind = match raw.source.as_str() {
        "chainlink" => {
            want(c, ChainKind::Evm);
            refuse(c, "account", raw.account.is_some());
            refuse(c, "max_confidence", raw.max_confidence.is_some());
            let feed = address(c, "feed", &raw.feed, ChainKind::Evm);
            let sequencer = match (&raw.sequencer_feed, raw.sequencer_grace) {
                (Some(_), grace) => address(c, "sequencer_feed", &raw.sequencer_feed, ChainKind::Evm)
                    // Chainlink's documented grace after a sequencer restart.
                    .map(|s| (s, grace.map_or(TimeDelta::hours(1), |g| g.0))),
                (None, Some(_)) => {
                    c.err(pp.key("sequencer_grace"), "applies only with sequencer_feed");
                    None
                }
                (None, None) => None,
            };
            feed.map(|feed| FeedKind::Chainlink { feed, sequencer })
        }
        "pyth" => {
            want(c, ChainKind::Solana);
            for (key, given) in [
                ("feed", raw.feed.is_some()),
                ("sequencer_feed", raw.sequencer_feed.is_some()),
                ("sequencer_grace", raw.sequencer_grace.is_some()),
            ] {
                refuse(c, key, given);
            }
            let max_confidence = raw.max_confidence.map(|m| m.0);
            if max_confidence.is_some_and(|m| m.is_zero()) {
                c.err(pp.key("max_confidence"), "must be greater than 0%");
            }
            address(c, "account", &raw.account, ChainKind::Solana)
                .map(|account| FeedKind::Pyth { account, max_confidence })
        }
        "static" => {
            c.err(pp.key("source"), "a fixed price is written price_usd = \"…\" beside decimals, not in price = {…}");
            None
        }
        other => {
            c.err(pp.key("source"), format!("{other:?} is not a price source: write \"chainlink\" or \"pyth\""));
            None
        }
    };
    let max_age = match raw.max_age {
        Some(age) => Some(age.0),
        None => {
            c.err(
                pp.key("max_age"),
                "missing: how old a price may be before spends needing it are denied, e.g. \"1h\"",
            );
            None
        }
    };
    let peg = match (raw.peg_usd, raw.max_peg_deviation) {
        (Some(usd), Some(dev)) => {
            if usd.0 <= Decimal::ZERO {
                c.err(pp.key("peg_usd"), "must be greater than zero");
            }
            Some(Peg { usd: usd.0, max_deviation: dev.0 })
        }
        (Some(_), None) => {
            c.err(pp.key("max_peg_deviation"), "missing: peg_usd needs the deviation it tolerates, e.g. \"2%\"");
            None
        }
        (None, Some(_)) => {
            c.err(pp.key("peg_usd"), "missing: max_peg_deviation needs the peg it is measured from, e.g. \"1\"");
            None
        }
        (None, None) => None,
    };
    let refresh = raw.refresh.map_or(TimeDelta::seconds(10), |r| r.0);
    if c.issues.len() > errors {
        return None;
    }
    Some(AssetPrice { source: PriceSource::Live(PriceFeed { chain, kind: kind?, max_age: max_age? }), peg, refresh })
}
