//! Sparse indexing on anvil: the same chain — long quiet stretches, a rogue ether transfer, a
//! rogue token transfer, money coming in (ether and tokens) and an EIP-7702 delegation to an
//! address nobody allowed — indexed block by block (`range_blocks = 0`) and in ranges of 50
//! blocks. Both ledgers end with the same outflows, inflows, events and freezes; the ranged one
//! read only the blocks of the ranges where something of the wallets' moved.

use serde_json::json;
use spendguard_evm::testing;
use spendguard_store::{FreezeStore, OutboxStore, OutflowStore};
use spendguard_tests::anvil::DEV_KEYS;
use spendguard_tests::evm_org::*;
use spendguard_tests::node::TestNode;
use spendguard_tests::rpc_proxy::{Faults, RpcProxy};

/// Runs `node`'s watcher until it has indexed every final block.
async fn catch_up(node: &TestNode) {
    for _ in 0..100 {
        let pass = node.watch_once("eth-local", spendguard_service::BLOCKS_PER_PASS).await.unwrap();
        if pass.caught_up() {
            return;
        }
    }
    panic!("the watcher did not catch up in 100 passes");
}

/// An event's detail without the time it names (" since 2026-…Z"): the two ledgers were
/// written seconds apart.
fn without_time(detail: &str) -> String {
    match detail.split_once(" since ") {
        Some((head, rest)) => format!("{head}{}", rest.split_once('Z').map_or("", |(_, tail)| tail)),
        None => detail.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_and_block_by_block_indexing_agree() {
    let org = EvmOrg::start("").await;
    let mine = async |n: u64| {
        testing::rpc_call(&org.anvil.url, "anvil_mine", json!([n])).await.unwrap();
    };
    mine(120).await;
    testing::send_native(&org.anvil.url, DEV_KEYS[1], PAYEE, 1_000_000_000_000_000).await.unwrap();
    mine(200).await;
    testing::send_token(&org.anvil.url, DEV_KEYS[0], &org.token, COLD, 5_000_000).await.unwrap();
    mine(130).await;
    testing::send_native(&org.anvil.url, DEV_KEYS[0], HOT, 2_000_000_000_000_000).await.unwrap();
    mine(300).await;
    testing::send_token(&org.anvil.url, DEV_KEYS[2], &org.token, PAYEE, 7_000_000).await.unwrap();
    mine(75).await;
    testing::delegate_code(&org.anvil.url, DEV_KEYS[0], DEV_KEYS[2], PAYEE2).await.unwrap();
    mine(90).await;

    let mut ledgers = vec![];
    let mut receipts_read = vec![];
    for (name, range) in [("each-block", 0), ("ranges", 50)] {
        let proxy = RpcProxy::start(&org.anvil.url, Faults::default()).await;
        let config = org.variant(
            name,
            &[
                ("database = \"spendguard.db\"", &format!("database = \"{name}.db\"")),
                (
                    &format!("rpc = [\"{}\"]", org.anvil.url),
                    &format!("rpc = [\"{}\"]\nrange_blocks = {range}", proxy.url),
                ),
            ],
        );
        let node = org.node_for(config, vec![]).await;
        catch_up(&node).await;
        let ledger = node.ledger();
        let events: Vec<(String, String)> = ledger
            .events(None)
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.kind.as_str().to_string(), without_time(&e.detail)))
            .collect();
        let freezes: Vec<String> =
            ledger.freezes().await.unwrap().into_iter().map(|f| format!("{:?}: {}", f.scope, f.reason)).collect();
        ledgers.push((
            spendguard_tests::timeless(ledger.outflows(Some("eth-local")).await.unwrap()),
            ledger
                .inflows(Some("eth-local"))
                .await
                .unwrap()
                .into_iter()
                .map(|i| {
                    format!("{:?}", spendguard_store::RecordedInflow { seen_at: chrono::DateTime::UNIX_EPOCH, ..i })
                })
                .collect::<Vec<_>>(),
            events,
            freezes,
        ));
        receipts_read.push(proxy.stats().forwarded.get("eth_getBlockReceipts").copied().unwrap_or(0));
    }
    let (each, ranged) = (&ledgers[0], &ledgers[1]);
    assert!(each.0.len() >= 5, "the rogue transfers, their fees and the delegation: {:#?}", each.0);
    assert_eq!(each.0, ranged.0, "outflows");
    assert_eq!(each.1.len(), 4, "the funding of both wallets and two refills: {:#?}", each.1);
    assert_eq!(each.1, ranged.1, "inflows");
    assert_eq!(each.2, ranged.2, "events");
    assert_eq!(each.3.len(), 2, "hot and cold frozen: {:?}", each.3);
    assert_eq!(each.3, ranged.3, "freezes");
    // Five ranges of 50 held something, the first (from genesis) and the last blocks (fewer than
    // a range, near the head) are read one by one: the rest only through the wallets' marks
    // and logs.
    let (all, few) = (receipts_read[0], receipts_read[1]);
    assert!(all > 900 && few <= 8 * 50, "blocks read one by one: {all} block by block, {few} in ranges");
}
