//! Solana watcher throughput against a real surfpool (in-process): a wallet's history of SOL
//! and SPL transfers indexed from scratch, directly and through a counting proxy (for RPC calls
//! per transaction).
//! Run: `cargo bench -p spendguard-tests --bench solana_indexing`. `SOLANA_TRANSACTIONS`
//! (default 2000) sets the traffic, half SOL and half USDS transfers. Under `cargo test` (no
//! `--bench` argument) it runs 20 as a smoke test.
#![allow(clippy::unwrap_used, missing_docs)] // bench code: a panic is the failure report

use spendguard_solana::testing;
use spendguard_store::OutflowStore;
use spendguard_tests::solana_org::{SolanaOrg, SOL_PAYEE};
use std::time::Instant;

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let transactions: u64 = match std::env::var("SOLANA_TRANSACTIONS").ok().and_then(|r| r.parse().ok()) {
        Some(n) => n,
        None if benching => 2000,
        None => 20,
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let org = SolanaOrg::start("").await;
        testing::mint_to(&org.surfnet.url, &org.treasury, &org.usds, SOL_PAYEE, 0).await.unwrap();
        let started = Instant::now();
        let half = transactions / 2;
        // SOL to the (funded) treasury: a new account would need its rent-exempt minimum.
        let treasury = spendguard_solana::keypair_address(&org.treasury);
        testing::send_many(&org.surfnet.url, &org.keypair, None, &treasury, half, 1_000).await.unwrap();
        testing::send_many(&org.surfnet.url, &org.keypair, Some(&org.usds), SOL_PAYEE, transactions - half, 1)
            .await
            .unwrap();
        eprintln!("generated {transactions} transactions in {:.1?}", started.elapsed());

        let proxied = format!("rpc = [\"{}\"]", org.proxy.url);
        let direct = org
            .evm
            .node_for(
                org.variant(
                    "direct",
                    &[
                        ("database = \"spendguard.db\"", "database = \"direct.db\""),
                        (&proxied, &format!("rpc = [\"{}\"]", org.surfnet.url)),
                    ],
                ),
                vec![],
            )
            .await;
        let (indexed, elapsed) = index_all(&direct).await;
        let outflows = direct.ledger().outflows(Some("sol-local")).await.unwrap().len();
        println!(
            "direct:  {indexed} transactions, {outflows} outflows in {elapsed:.2?}: {:.0} transactions/s",
            indexed as f64 / elapsed.as_secs_f64()
        );
        assert!(indexed >= transactions, "every transaction indexed ({indexed} of at least {transactions})");

        org.proxy.reset_stats();
        let through_proxy = org.node().await;
        let (indexed, elapsed) = index_all(&through_proxy).await;
        let stats = org.proxy.stats();
        let calls: u64 = stats.forwarded.values().sum();
        println!(
            "proxied: {indexed} transactions in {elapsed:.2?}: {:.0} transactions/s; {calls} RPC calls = {:.3} per \
             transaction {:?}",
            indexed as f64 / elapsed.as_secs_f64(),
            calls as f64 / indexed as f64,
            stats.forwarded
        );
    });
}

/// Indexes every listed transaction in passes of 500, as the daemon does; returns how many and
/// the time it took.
async fn index_all(node: &spendguard_tests::node::TestNode) -> (u64, std::time::Duration) {
    let started = Instant::now();
    let mut indexed = 0;
    loop {
        let pass = node.watch_once("sol-local", 500).await.unwrap();
        indexed += pass.indexed;
        if pass.caught_up() {
            return (indexed, started.elapsed());
        }
    }
}
