//! EIP-7702 on anvil (prague): a registered wallet's key signing a delegation of its code is
//! seen in whoever's type-4 transaction carries it. To an allowed `delegates` address it is
//! recorded and matched; to anything else it freezes the wallet at once — before any money
//! moves — with a `delegation_changed` alert, and the agent's next spend is refused. With a
//! drainer allowed, what its code moves out of the wallet — tokens by log, ether by an internal
//! call seen in call traces — is unexplained and freezes the wallet.

use serde_json::json;
use spendguard_core::reconcile::{Class, OutflowKind};
use spendguard_core::EventKind;
use spendguard_evm::testing;
use spendguard_store::{OutboxStore, OutflowStore};
use spendguard_tests::anvil::DEV_KEYS;
use spendguard_tests::evm_org::*;
use spendguard_tests::mcp_client::McpAgent;
use spendguard_tests::rpc_proxy::{Faults, RpcProxy};

/// An address the wallet may delegate to (a smart-account implementation the treasury chose).
const ALLOWED: &str = "0x1111111111111111111111111111111111111111";
/// A drainer contract's address.
const DRAINER: &str = "0x2222222222222222222222222222222222222222";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delegation_outside_the_allowed_list_freezes_the_wallet_before_money_moves() {
    let org = EvmOrg::start("").await;
    let config = org.variant(
        "delegates",
        &[(
            "password_env = \"HOT_PASSWORD\"",
            &format!("password_env = \"HOT_PASSWORD\"\ndelegates = [\"{ALLOWED}\"]"),
        )],
    );
    let node = org.node_for(config, vec![]).await;
    let agent = McpAgent::connect(&node.services, "buyer").await;

    // The allowed delegate, sent by someone else: recorded as matched, nothing frozen.
    let allowed_tx = testing::delegate_code(&org.anvil.url, DEV_KEYS[0], DEV_KEYS[1], ALLOWED).await.unwrap();
    org.mine().await;
    node.tick().await;
    let delegations = |outflows: Vec<spendguard_store::RecordedOutflow>| {
        outflows.into_iter().filter(|o| o.kind == OutflowKind::Delegation).collect::<Vec<_>>()
    };
    let seen = delegations(node.ledger().outflows(Some("eth-local")).await.unwrap());
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!((seen[0].tx_hash.as_str(), seen[0].class), (allowed_tx.as_str(), Class::Matched), "{seen:?}");
    let pay = json!({ "wallet": "hot", "to": PAYEE, "amount": "1", "asset": "TUSD" });
    assert_eq!(agent.call("evaluate", pay.clone()).await.data["decision"], "allow");

    // The drainer: the wallet is frozen with the evidence, before anything left it.
    let balance = org.token_balance(HOT).await;
    let drain_tx = testing::delegate_code(&org.anvil.url, DEV_KEYS[0], DEV_KEYS[1], DRAINER).await.unwrap();
    org.mine().await;
    node.tick().await;
    let events = node.ledger().events(Some(EventKind::DelegationChanged)).await.unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0].detail.contains(DRAINER) && events[0].detail.contains(&drain_tx), "{:?}", events[0]);
    let r = agent.call("spend", pay).await;
    assert!(r.is_error && r.text.starts_with("KILL_SWITCH: wallet hot is frozen"), "{}", r.text);
    assert!(r.text.contains("EIP-7702 delegation of wallet hot's code to"), "{}", r.text);
    assert_eq!(org.token_balance(HOT).await, balance, "nothing left the wallet");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ether_and_tokens_drained_through_delegated_code_are_unexplained() {
    let org = EvmOrg::start("").await;
    let drainer = testing::deploy(&org.anvil.url, DEV_KEYS[0], spendguard_tests::TEST_DRAINER_BIN).await.unwrap();
    let config = org.variant(
        "drainer-allowed",
        &[(
            "password_env = \"HOT_PASSWORD\"",
            &format!("password_env = \"HOT_PASSWORD\"\ndelegates = [\"{drainer}\"]"),
        )],
    );
    let node = org.node_for(config, vec![]).await;
    testing::delegate_code(&org.anvil.url, DEV_KEYS[0], DEV_KEYS[1], &drainer).await.unwrap();
    org.mine().await;
    node.tick().await;
    assert!(node.ledger().events(Some(EventKind::DelegationChanged)).await.unwrap().is_empty(), "an allowed delegate");

    // Someone else calls the delegated code on the wallet's address.
    let attacker = testing::address_of(DEV_KEYS[4]).unwrap();
    let drain_tx = testing::drain(&org.anvil.url, DEV_KEYS[4], HOT, &org.token, &attacker).await.unwrap();
    org.mine().await;
    node.tick().await;
    let outflows = node.ledger().outflows(Some("eth-local")).await.unwrap();
    let drained: Vec<_> = outflows.iter().filter(|o| o.tx_hash == drain_tx).collect();
    let kinds: Vec<(OutflowKind, Class)> = drained.iter().map(|o| (o.kind, o.class)).collect();
    assert!(kinds.contains(&(OutflowKind::Token, Class::Unexplained)), "{drained:?}");
    let ether =
        drained.iter().find(|o| o.kind == OutflowKind::Native).expect("the internal ether transfer, from traces");
    assert_eq!((ether.class, ether.recipient.as_deref()), (Class::Unexplained, Some(attacker.as_str())), "{ether:?}");
    assert_eq!(ether.amount, "5000".parse().unwrap(), "half of the wallet's 10,000 ETH: {ether:?}");
    let agent = McpAgent::connect(&node.services, "buyer").await;
    let r = agent.call("spend", json!({ "wallet": "hot", "to": PAYEE, "amount": "1", "asset": "TUSD" })).await;
    assert!(r.is_error && r.text.starts_with("KILL_SWITCH: wallet hot is frozen"), "{}", r.text);
    // Everything that moved was recorded: the balances add up.
    let differences = node.ledger().events(Some(EventKind::UnexplainedBalanceChange)).await.unwrap();
    assert!(differences.is_empty(), "{differences:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_call_traces_ether_drained_by_delegated_code_is_caught_by_balance_conservation() {
    let org = EvmOrg::start("").await;
    let drainer = testing::deploy(&org.anvil.url, DEV_KEYS[0], spendguard_tests::TEST_DRAINER_BIN).await.unwrap();
    let proxy = RpcProxy::start(&org.anvil.url, Faults { no_traces: true, ..Faults::default() }).await;
    let config = org.via_rpc("no-traces", &[&proxy.url], "");
    let delegates = format!("password_env = \"HOT_PASSWORD\"\ndelegates = [\"{drainer}\"]");
    let config = spendguard_tests::evm_org::write_variant(
        &config.path,
        "no-traces-drainer",
        &[("password_env = \"HOT_PASSWORD\"", &delegates)],
    );
    let node = org.node_for(config, vec![]).await;
    node.tick().await;
    testing::delegate_code(&org.anvil.url, DEV_KEYS[0], DEV_KEYS[1], &drainer).await.unwrap();
    org.mine().await;
    node.tick().await;
    assert!(node.ledger().events(Some(EventKind::UnexplainedBalanceChange)).await.unwrap().is_empty());

    let attacker = testing::address_of(DEV_KEYS[4]).unwrap();
    testing::drain(&org.anvil.url, DEV_KEYS[4], HOT, &org.token, &attacker).await.unwrap();
    org.mine().await;
    node.tick().await;
    let outflows = node.ledger().outflows(Some("eth-local")).await.unwrap();
    assert!(
        !outflows.iter().any(|o| o.kind == OutflowKind::Native && o.recipient.as_deref() == Some(attacker.as_str())),
        "without traces the internal ether transfer is not seen as an outflow"
    );
    let differences = node.ledger().events(Some(EventKind::UnexplainedBalanceChange)).await.unwrap();
    assert_eq!(differences.len(), 1, "only ETH fails to add up; the tokens left by a log: {differences:?}");
    let d = &differences[0].detail;
    assert!(d.contains("eth-local:ETH balance of wallet hot") && d.contains("difference -5000"), "{d}");
    let frozen = node.services.operators.frozen().await.unwrap();
    assert!(frozen.iter().any(|f| f.scope == "wallet:hot"), "{frozen:?}");
}
