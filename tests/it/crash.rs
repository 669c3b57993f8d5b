//! The server process is killed between signing and broadcast, and between broadcast and
//! confirmation. After a restart every decision ends exactly once on chain, and no nonce is
//! skipped or reused.

use serde_json::json;
use spendguard_evm::testing::rpc_call;
use spendguard_tests::evm_org::*;
use spendguard_tests::prelude::*;
use spendguard_tests::stdio_agent::StdioAgent;
use std::time::Duration;

async fn wait_confirmed(org: &EvmOrg, id: &str) {
    let node = org.node().await;
    for _ in 0..150 {
        if node.ledger().decision(id).await.unwrap().is_some_and(|d| d.status == SpendStatus::Confirmed) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("decision {id} was not confirmed after the restart: {:?}", node.ledger().decision(id).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_signing_or_after_broadcast_loses_nothing_and_doubles_nothing() {
    let org = EvmOrg::start(BUYER_TIERS).await;
    let bin = spendguard_tests::binary::spendguard_with_fail_points();
    let env = org.server_env();
    let token = org.tokens["buyer"].clone();
    let pay = |amount: &str| json!({ "wallet": "hot", "to": PAYEE, "amount": amount, "asset": "TUSD" });
    let ledger_decisions = async || org.node().await.ledger().decisions(Some("buyer")).await.unwrap();

    // 1. Killed after the signed transaction is stored, before it is broadcast.
    let mut crashing = StdioAgent::spawn(
        &bin,
        &org.config_path,
        "buyer",
        &token,
        &[env.clone(), vec![("SPENDGUARD_FAILPOINT".into(), "after_sign".into())]].concat(),
    );
    assert!(crashing.call("spend", pay("5")).is_none(), "the process should die mid-spend");
    assert_eq!(crashing.wait().code(), Some(86));
    let signed = ledger_decisions().await.pop().expect("the decision was recorded");
    assert_eq!((signed.status, signed.nonce), (SpendStatus::Signed, Some(0)));
    assert_eq!(org.nonce(HOT).await, 0, "nothing was sent");

    // The restarted server sends exactly that transaction.
    let mut agent = StdioAgent::spawn(&bin, &org.config_path, "buyer", &token, &env);
    wait_confirmed(&org, &signed.id).await;
    let (_, text, next) = agent.call("spend", pay("1")).expect("spend");
    assert_eq!(next["status"], "executed", "{text}");
    drop(agent);

    // 2. Killed after broadcast, before the broadcast is recorded.
    let mut crashing = StdioAgent::spawn(
        &bin,
        &org.config_path,
        "buyer",
        &token,
        &[env.clone(), vec![("SPENDGUARD_FAILPOINT".into(), "after_broadcast".into())]].concat(),
    );
    assert!(crashing.call("spend", pay("6")).is_none());
    assert_eq!(crashing.wait().code(), Some(87));
    let sent = ledger_decisions().await.pop().expect("recorded");
    assert_eq!((sent.status, sent.nonce), (SpendStatus::Signed, Some(2)));
    let agent = StdioAgent::spawn(&bin, &org.config_path, "buyer", &token, &env);
    wait_confirmed(&org, &sent.id).await;
    drop(agent);

    // Three decisions, three transactions, nonces 0, 1, 2: none skipped, none reused.
    let all = ledger_decisions().await;
    assert_eq!(all.len(), 3);
    assert!(all.iter().all(|d| d.status == SpendStatus::Confirmed), "{all:?}");
    let mut nonces: Vec<u64> = all.iter().map(|d| d.nonce.unwrap()).collect();
    nonces.sort_unstable();
    assert_eq!(nonces, [0, 1, 2]);
    assert_eq!(org.nonce(HOT).await, 3, "exactly three transactions left the wallet");
    for d in &all {
        let receipt = rpc_call(&org.anvil.url, "eth_getTransactionReceipt", json!([d.tx_hash])).await.unwrap();
        assert_eq!(receipt["status"], "0x1", "{}", d.id);
    }
}
