//! Live prices from a Pyth `PriceUpdateV2` account on surfpool, written through its
//! `surfnet_setAccount` cheatcode: a daily limit and a tier follow the price; stale, zero and
//! negative prices, a confidence interval wider than `max_confidence` and a stablecoin off its
//! peg deny `PRICE_UNAVAILABLE` with nothing signed; a fresh price recovers.

use serde_json::json;
use spendguard_solana::price::{PriceUpdate, PYTH_RECEIVER};
use spendguard_tests::mcp_client::{McpAgent, ToolReply};
use spendguard_tests::solana_org::*;

/// Writes the Pyth account: `price` and `conf` at exponent -8, published `age` seconds ago.
async fn publish(org: &SolanaOrg, account: &str, price: i64, conf: u64, age: i64) {
    let update = PriceUpdate {
        fully_verified: true,
        price,
        conf,
        exponent: -8,
        publish_time: chrono::Utc::now().timestamp() - age,
    };
    // The cheatcode takes the account data in hex.
    let data: String = update.encode([9; 32]).iter().map(|b| format!("{b:02x}")).collect();
    let params = json!([account, { "lamports": 10_000_000u64, "data": data, "owner": PYTH_RECEIVER }]);
    spendguard_evm::testing::rpc_call(&org.surfnet.url, "surfnet_setAccount", params).await.expect("setAccount");
}

fn sol(amount: &str) -> serde_json::Value {
    json!({ "wallet": "sol-hot", "to": SOL_PAYEE, "amount": amount })
}

fn assert_unavailable(r: &ToolReply, why: &str) {
    assert!(r.text.contains("PRICE_UNAVAILABLE") && r.text.contains(why), "expected {why:?} in {}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pyth_price_values_sol_and_unusable_prices_deny() {
    let org = SolanaOrg::start("").await;
    let account = spendguard_solana::keypair_address(&spendguard_solana::Keypair::new());
    let usds_account = spendguard_solana::keypair_address(&spendguard_solana::Keypair::new());
    publish(&org, &account, 150_00000000, 50_000000, 0).await;
    publish(&org, &usds_account, 1_00000000, 100_000, 0).await;
    // SOL by one account; USDS (the second `price_usd = "1"` in the file: the first is TUSD's)
    // by another, pegged to 1 USD within 2 %.
    let text = std::fs::read_to_string(&org.config_path).unwrap();
    let usds_at = text.find("symbol = \"USDS\"").expect("USDS in the config");
    let usds_price = usds_at + text[usds_at..].find("price_usd = \"1\"").unwrap();
    let text = format!(
        "{}price = {{ source = \"pyth\", account = \"{usds_account}\", max_age = \"60s\", peg_usd = \"1\", \
         max_peg_deviation = \"2%\" }}{}",
        &text[..usds_price],
        &text[usds_price + "price_usd = \"1\"".len()..]
    )
    .replacen(
        "price_usd = \"100\"",
        &format!(
            "price = {{ source = \"pyth\", account = \"{account}\", max_age = \"60s\", max_confidence = \"0.5%\" }}"
        ),
        1,
    );
    let path = org.config_path.with_file_name("pyth.toml");
    std::fs::write(&path, text).unwrap();
    let node = org.evm.node_for(spendguard_config::load(&path).unwrap(), vec![]).await;
    let agent = McpAgent::connect(&node.services, "sol-buyer").await;
    let pooler = McpAgent::connect(&node.services, "pooler").await;
    node.tick().await;

    // pooler's 100 USD a day follows the price: 0.6 SOL is 90 USD at 150, 150 USD at 250.
    assert_eq!(pooler.call("evaluate", sol("0.6")).await.data["decision"], "allow");

    // 0.05 SOL at 150 USD is 7.50 USD: INSTANT (≤ 10).
    let r = agent.call("evaluate", sol("0.05")).await;
    assert_eq!((r.data["decision"].as_str(), r.data["tier"].as_str()), (Some("allow"), Some("INSTANT")), "{}", r.text);
    let v = &r.data["valuation"];
    assert_eq!((v["usd"].as_str(), v["price"].as_str()), (Some("7.50"), Some("150")), "{v}");
    assert_eq!(v["source"].as_str(), Some(format!("pyth:{account}").as_str()), "{v}");

    // At 250 USD the same 0.05 SOL is 12.50 USD: NOTIFY.
    publish(&org, &account, 250_00000000, 50_000000, 0).await;
    node.tick().await;
    let r = agent.call("evaluate", sol("0.05")).await;
    assert_eq!(r.data["tier"], "NOTIFY", "{}", r.text);
    let r = pooler.call("evaluate", sol("0.6")).await;
    assert!(r.text.contains("WINDOW_LIMIT") && r.text.contains("150.00"), "{}", r.text);

    // USDS off its peg is denied; back within 2 % it pays.
    let usds = json!({ "wallet": "sol-hot", "to": SOL_PAYEE, "amount": "5", "asset": "USDS" });
    publish(&org, &usds_account, 96_000000, 100_000, 0).await;
    node.tick().await;
    assert_unavailable(&agent.call("evaluate", usds.clone()).await, "4% away from its peg of 1.00 USD");
    publish(&org, &usds_account, 99_500000, 100_000, 0).await;
    node.tick().await;
    assert_eq!(agent.call("evaluate", usds).await.data["decision"], "allow");

    let lamports = org.lamports(&org.address).await;
    for (price, conf, age, why) in [
        (250_00000000, 50_000000, 120, "stale since"),
        (0, 0, 0, "answered zero"),
        (-250_00000000, 50_000000, 0, "negative price"),
        (250_00000000, 1_50000000, 0, "0.6% of the price, wider than max_confidence 0.5%"),
    ] {
        publish(&org, &account, price, conf, age).await;
        node.tick().await;
        let r = agent.call("evaluate", sol("0.05")).await;
        assert_eq!(r.data["decision"], "deny", "{}", r.text);
        assert_unavailable(&r, why);
        let r = agent.call("spend", sol("0.05")).await;
        assert!(r.is_error, "{}", r.text);
        assert_unavailable(&r, why);
    }
    assert_eq!(org.lamports(&org.address).await, lamports, "nothing was signed while the price was unusable");

    // Fresh and tight again: paid, valued at the Pyth price.
    publish(&org, &account, 100_00000000, 10_000000, 0).await;
    node.tick().await;
    let r = agent.call("spend", sol("0.05")).await;
    assert_eq!(r.data["status"], "executed", "{}", r.text);
    assert_eq!(r.data["valuation"]["usd"], "5.00", "{}", r.text);
}
