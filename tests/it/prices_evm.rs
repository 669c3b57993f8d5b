//! Live prices from Chainlink-interface feeds on anvil (fixtures/evm/TestPriceFeed.sol): a USD
//! limit follows the price; stale, zero and negative answers, a depegged stablecoin and an
//! unreachable feed deny `PRICE_UNAVAILABLE` with nothing signed; a fresh price recovers; every
//! decision carries its valuation, and status, `/metrics` and the `price_stale` alert show it.

use serde_json::{json, Value};
use spendguard_config::AlertKind;
use spendguard_core::EventKind;
use spendguard_evm::testing::{self, FeedRound};
use spendguard_service::AlertChannel;
use spendguard_store::OutboxStore;
use spendguard_tests::anvil::DEV_KEYS;
use spendguard_tests::evm_org::*;
use spendguard_tests::mcp_client::{McpAgent, ToolReply};
use spendguard_tests::rpc_proxy::{Faults, RpcProxy};

const POLICY: &str = r#"
[[policy]]
id = "buyer"
scope = "agent:buyer"
per_tx_usd = "5000"
limits = [ { window = "24h", max_usd = "100000" } ]
"#;

/// The org with ETH priced by one test feed and TUSD by another (pegged to 1 USD within 2 %).
struct Priced {
    org: EvmOrg,
    eth_feed: String,
    tusd_feed: String,
}

impl Priced {
    async fn start() -> Priced {
        let org = EvmOrg::start(POLICY).await;
        let deploy =
            || testing::deploy_price_feed(&org.anvil.url, DEV_KEYS[0], spendguard_tests::TEST_PRICE_FEED_BIN, 8);
        let eth_feed = deploy().await.expect("deploy ETH feed");
        let tusd_feed = deploy().await.expect("deploy TUSD feed");
        let priced = Priced { org, eth_feed, tusd_feed };
        priced.set(&priced.eth_feed, 3000_00000000, 0).await;
        priced.set(&priced.tusd_feed, 1_00000000, 0).await;
        priced.org.edit_config(
            "price_usd = \"3000\"",
            &format!("price = {{ source = \"chainlink\", feed = \"{}\", max_age = \"1h\" }}", priced.eth_feed),
        );
        priced.org.edit_config(
            "price_usd = \"1\"",
            &format!(
                "price = {{ source = \"chainlink\", feed = \"{}\", max_age = \"25h\", peg_usd = \"1\", max_peg_deviation = \"2%\" }}",
                priced.tusd_feed
            ),
        );
        priced
    }

    /// Sets a feed's latest round: `answer` (8 decimals) published `age` seconds ago.
    async fn set(&self, feed: &str, answer: i128, age: u64) {
        let now = chrono::Utc::now().timestamp() as u64;
        let round = FeedRound { id: 7, answer, started: now - age, updated: now - age, answered_in: 7 };
        testing::set_feed_round(&self.org.anvil.url, DEV_KEYS[0], feed, round).await.expect("set round");
    }
}

fn eth(amount: &str) -> Value {
    json!({ "wallet": "hot", "to": PAYEE, "amount": amount })
}

fn tusd(amount: &str) -> Value {
    json!({ "wallet": "hot", "to": PAYEE, "amount": amount, "asset": "TUSD" })
}

fn assert_unavailable(r: &ToolReply, why: &str) {
    assert!(r.text.contains("PRICE_UNAVAILABLE"), "{}", r.text);
    assert!(r.text.contains(why), "expected {why:?} in {}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_follow_a_chainlink_price_and_unusable_prices_deny() {
    let p = Priced::start().await;
    let (url, seen) = spendguard_tests::alert_receiver::receiver(0).await;
    let hook = AlertChannel {
        id: "treasury".into(),
        kind: AlertKind::Webhook,
        url: Some(format!("{url}/hook")),
        events: vec![EventKind::PriceStale],
    };
    let node = p.org.node_with_alerts(vec![hook]).await;
    let agent = McpAgent::connect(&node.services, "buyer").await;
    node.tick().await;

    // 1.5 ETH at 3,000 USD: 4,500 USD, under the 5,000 per-transaction cap; valued and recorded.
    let r = agent.call("evaluate", eth("1.5")).await;
    assert_eq!(r.data["decision"], "allow", "{}", r.text);
    let v = &r.data["valuation"];
    assert_eq!((v["usd"].as_str(), v["price"].as_str()), (Some("4500.00"), Some("3000")), "{v}");
    assert_eq!(v["source"].as_str(), Some(format!("chainlink:{}", p.eth_feed).as_str()), "{v}");
    assert!(v["as_of"].is_string(), "{v}");
    let spent = agent.call("spend", eth("1.5")).await;
    assert_eq!(spent.data["status"], "executed", "{}", spent.text);
    assert_eq!(spent.data["valuation"]["usd"], "4500.00", "{}", spent.text);
    let id = spent.data["decision_id"].as_str().unwrap().to_string();
    let status = agent.call("spend_status", json!({ "decision_id": id })).await;
    assert_eq!(status.data["valuation"], spent.data["valuation"], "{}", status.text);
    let audit = node.services.reports.audit_entries(Default::default()).await.unwrap();
    let decided = audit.iter().find(|e| e.kind == "decision" && e.decision_id.as_deref() == Some(&id)).unwrap();
    assert_eq!(decided.detail["valuation"]["price"], "3000", "{:?}", decided.detail);

    // ETH at 4,000 USD: the same 1.5 ETH is 6,000 USD, over the cap.
    p.set(&p.eth_feed, 4000_00000000, 0).await;
    node.tick().await;
    let r = agent.call("evaluate", eth("1.5")).await;
    assert_eq!(r.data["decision"], "deny", "{}", r.text);
    assert!(r.text.contains("6000.00 USD exceeds the per-transaction cap"), "{}", r.text);

    // Stale, zero, negative: denied with the reason, and a spend signs nothing.
    let nonce = p.org.nonce(HOT).await;
    for (answer, age, why) in [
        (4000_00000000, 7200, "stale since"),
        (0, 0, "answered zero"),
        (-1_00000000, 0, "answered a negative price (-1)"),
    ] {
        p.set(&p.eth_feed, answer, age).await;
        node.tick().await;
        let r = agent.call("evaluate", eth("0.001")).await;
        assert_eq!(r.data["decision"], "deny", "{}", r.text);
        assert_unavailable(&r, why);
        assert!(r.data.get("valuation").is_none(), "{}", r.text);
        let r = agent.call("spend", eth("0.001")).await;
        assert!(r.is_error, "{}", r.text);
        assert_unavailable(&r, why);
    }
    assert_eq!(p.org.nonce(HOT).await, nonce, "nothing was signed while the price was unusable");
    let status = node.services.overview.status().await.unwrap();
    let eth_price = status.prices.iter().find(|s| s.asset == "eth-local:ETH").unwrap();
    assert!(!eth_price.usable && eth_price.problem.as_deref().unwrap().contains("negative"), "{eth_price:?}");
    let stale_events = node.ledger().events(Some(EventKind::PriceStale)).await.unwrap();
    assert_eq!(stale_events.len(), 1, "one alert while it stays unusable: {stale_events:?}");
    assert!(stale_events[0].detail.contains("eth-local:ETH"), "{:?}", stale_events[0]);
    let delivered = seen.lock().unwrap().clone();
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert_eq!(delivered[0].1["event"], "price_stale", "{delivered:?}");
    assert!(delivered[0].1["detail"].as_str().unwrap().contains("stale since"), "{delivered:?}");

    // Fresh again: allowed, and a later failure alerts again.
    p.set(&p.eth_feed, 3000_00000000, 5).await;
    node.tick().await;
    let r = agent.call("spend", eth("0.01")).await;
    assert_eq!(r.data["status"], "executed", "{}", r.text);
    let metrics = node.services.prices.render_metrics();
    assert!(metrics.contains("spendguard_price_age_seconds{asset=\"eth-local:ETH\"}"), "{metrics}");
    assert!(metrics.contains("spendguard_price_usable{asset=\"eth-local:ETH\"} 1"), "{metrics}");

    // A stablecoin 3 % off its peg is denied; within 2 % it pays.
    p.set(&p.tusd_feed, 97_000000, 0).await;
    node.tick().await;
    let r = agent.call("spend", tusd("10")).await;
    assert_unavailable(&r, "3% away from its peg of 1.00 USD");
    p.set(&p.tusd_feed, 99_000000, 0).await;
    node.tick().await;
    let r = agent.call("spend", tusd("10")).await;
    assert_eq!(r.data["status"], "executed", "{}", r.text);
    assert_eq!(r.data["valuation"]["usd"], "9.90", "{}", r.text);
    assert_eq!(node.ledger().events(Some(EventKind::PriceStale)).await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_feed_denies() {
    let p = Priced::start().await;
    let proxy = RpcProxy::start(&p.org.anvil.url, Faults::default()).await;
    let node = p.org.node_for(p.org.via_rpc("proxied", &[&proxy.url], "rpc_timeout = \"1s\""), vec![]).await;
    let agent = McpAgent::connect(&node.services, "buyer").await;
    node.tick().await;
    assert_eq!(agent.call("evaluate", eth("0.1")).await.data["decision"], "allow");

    proxy.set_faults(Faults { down: true, ..Faults::default() });
    node.tick().await;
    let r = agent.call("evaluate", eth("0.1")).await;
    assert_eq!(r.data["decision"], "deny", "{}", r.text);
    assert_unavailable(&r, "unreachable");
    let r = agent.call("spend", eth("0.1")).await;
    assert!(r.is_error && r.data.get("decision_id").is_none_or(|d| d.is_null()), "{}", r.text);

    proxy.set_faults(Faults::default());
    node.tick().await;
    assert_eq!(agent.call("evaluate", eth("0.1")).await.data["decision"], "allow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_l2_sequencer_down_or_within_its_grace_denies() {
    let p = Priced::start().await;
    let sequencer = testing::deploy_price_feed(&p.org.anvil.url, DEV_KEYS[0], spendguard_tests::TEST_PRICE_FEED_BIN, 0)
        .await
        .expect("deploy the sequencer-uptime feed");
    p.set(&sequencer, 0, 7200).await; // up for two hours
    let config = p.org.variant(
        "l2",
        &[(
            "max_age = \"1h\" }",
            &format!("max_age = \"1h\", sequencer_feed = \"{sequencer}\", sequencer_grace = \"1h\" }}"),
        )],
    );
    let node = p.org.node_for(config, vec![]).await;
    let agent = McpAgent::connect(&node.services, "buyer").await;
    node.tick().await;
    assert_eq!(agent.call("evaluate", eth("0.1")).await.data["decision"], "allow");

    p.set(&sequencer, 1, 0).await; // down since now
    node.tick().await;
    assert_unavailable(&agent.call("evaluate", eth("0.1")).await, "the L2 sequencer is down since");
    p.set(&sequencer, 0, 60).await; // back up a minute ago
    node.tick().await;
    assert_unavailable(&agent.call("evaluate", eth("0.1")).await, "within its grace period of 1h");
    p.set(&sequencer, 0, 3601).await;
    node.tick().await;
    assert_eq!(agent.call("evaluate", eth("0.1")).await.data["decision"], "allow");
}
