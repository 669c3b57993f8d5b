//! Watcher throughput against a real anvil: a few thousand blocks of mixed traffic indexed from
//! scratch, directly and through a counting proxy (for RPC calls per block).
//! Run: `cargo bench -p spendguard-tests --bench indexing` (needs anvil: `source tools/dev/deps.sh`).
//! `INDEXING_ROUNDS` (default 700) sets the traffic: each round is four transactions in four
//! blocks and two empty blocks. Then quiet wallets at the head: `INDEXING_QUIET_ROUNDS` (default
//! 50) times, 200 blocks in which the wallets do nothing, then a pass — read block by block and
//! as ranges of 200. Under `cargo test` (no `--bench` argument) it runs three rounds and two
//! quiet rounds as a smoke test.
#![allow(clippy::unwrap_used, missing_docs)] // bench code: a panic is the failure report

use serde_json::json;
use spendguard_evm::testing::{rpc_call, send_native, send_token};
use spendguard_store::OutflowStore;
use spendguard_tests::anvil::DEV_KEYS;
use spendguard_tests::evm_org::*;
use spendguard_tests::rpc_proxy::{Faults, RpcProxy};
use std::time::Instant;

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let rounds: usize = match std::env::var("INDEXING_ROUNDS").ok().and_then(|r| r.parse().ok()) {
        Some(n) => n,
        None if benching => 700,
        None => 3,
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let org = EvmOrg::start("").await;
        let started = Instant::now();
        for i in 0..rounds as u128 {
            // Outflows of both wallets (native and token), a stranger's transfer, and a token
            // transfer *to* a wallet (not an outflow), then two empty blocks.
            send_native(&org.anvil.url, DEV_KEYS[1], PAYEE, 1_000_000_000 + i).await.unwrap();
            send_token(&org.anvil.url, DEV_KEYS[2], &org.token, PAYEE2, 1_000 + i).await.unwrap();
            send_native(&org.anvil.url, DEV_KEYS[3], PAYEE, 1).await.unwrap();
            send_token(&org.anvil.url, DEV_KEYS[0], &org.token, HOT, 1).await.unwrap();
            rpc_call(&org.anvil.url, "anvil_mine", json!([2])).await.unwrap();
        }
        org.mine().await;
        eprintln!("generated {} blocks of traffic in {:.1?}", rounds * 6, started.elapsed());

        let direct = org.node().await;
        let (blocks, elapsed) = index_all(&direct).await;
        let outflows = direct.ledger().outflows(Some("eth-local")).await.unwrap().len();
        println!(
            "direct:  {blocks} blocks, {outflows} outflows in {elapsed:.2?}: {:.0} blocks/s",
            blocks as f64 / elapsed.as_secs_f64()
        );

        let proxy = RpcProxy::start(&org.anvil.url, Faults::default()).await;
        let rpc = format!("rpc = [\"{}\"]", org.anvil.url);
        let config = org.variant(
            "proxied",
            &[
                ("database = \"spendguard.db\"", "database = \"proxied.db\""),
                (&rpc, &format!("rpc = [\"{}\"]", proxy.url)),
            ],
        );
        let proxied = org.node_for(config, vec![]).await;
        let (blocks, elapsed) = index_all(&proxied).await;
        let stats = proxy.stats();
        let calls: u64 = stats.forwarded.values().sum();
        println!(
            "proxied: {blocks} blocks in {elapsed:.2?}: {:.0} blocks/s; {calls} RPC calls = {:.3} per block {:?}",
            blocks as f64 / elapsed.as_secs_f64(),
            calls as f64 / blocks as f64,
            stats.forwarded
        );

        // Quiet wallets at the head: the chain grows by `QUIET_ROUND` blocks in which nothing of
        // the wallets' moves between two passes, read block by block and as ranges of that size
        // (the marks at a range's start come from the one before, so a node that keeps only
        // recent state serves them).
        let rounds: u64 = std::env::var("INDEXING_QUIET_ROUNDS").ok().and_then(|q| q.parse().ok()).unwrap_or(
            if benching { 50 } else { 2 },
        );
        for range in [0, QUIET_ROUND] {
            let org = EvmOrg::start("").await;
            let proxy = RpcProxy::start(&org.anvil.url, Faults::default()).await;
            let rpc = format!("rpc = [\"{}\"]", org.anvil.url);
            let name = format!("quiet-{range}");
            let config = org.variant(
                &name,
                &[
                    ("database = \"spendguard.db\"", &format!("database = \"{name}.db\"")),
                    (&rpc, &format!("rpc = [\"{}\"]\nrange_blocks = {range}", proxy.url)),
                ],
            );
            let node = org.node_for(config, vec![]).await;
            index_all(&node).await;
            proxy.reset_stats();
            let (mut blocks, mut elapsed) = (0, std::time::Duration::ZERO);
            for _ in 0..rounds {
                rpc_call(&org.anvil.url, "anvil_mine", json!([QUIET_ROUND])).await.unwrap();
                let (b, e) = index_all(&node).await;
                blocks += b;
                elapsed += e;
            }
            let stats = proxy.stats();
            let calls: u64 = stats.forwarded.values().sum();
            println!(
                "quiet, range_blocks = {range}: {blocks} blocks in {elapsed:.2?}: {:.0} blocks/s; {calls} RPC calls = {:.4} per block {:?}",
                blocks as f64 / elapsed.as_secs_f64(),
                calls as f64 / blocks as f64,
                stats.forwarded
            );
        }
    });
}

/// Blocks the chain grows by between two passes in the quiet-wallets part.
const QUIET_ROUND: u64 = 200;

/// Indexes every final block in passes of 500, as the daemon does; returns blocks and time.
async fn index_all(node: &spendguard_tests::node::TestNode) -> (u64, std::time::Duration) {
    let started = Instant::now();
    let mut blocks = 0;
    loop {
        let pass = node.watch_once("eth-local", 500).await.unwrap();
        blocks += pass.indexed;
        if pass.caught_up() {
            return (blocks, started.elapsed());
        }
    }
}
