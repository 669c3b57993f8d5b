//! Wallets spendguard does not hold (`custody = "external"`): `spend` authorizes, the agent pays
//! with its own key, and the auditor holds what left the wallet against the open
//! authorizations — matched and counted once, or unexplained / mismatched and frozen. Tokens
//! are checked by PyJWT (a general JOSE library) and through `POST /v1/authorizations/verify`.

use chrono::{TimeDelta, Utc};
use serde_json::{json, Value};
use spendguard_config::AlertKind;
use spendguard_core::model::Scope;
use spendguard_core::reconcile::Class;
use spendguard_core::EventKind;
use spendguard_evm::testing;
use spendguard_service::AlertChannel;
use spendguard_store::{OutboxStore, OutflowStore};
use spendguard_tests::anvil::DEV_KEYS;
use spendguard_tests::clock::SteppedClock;
use spendguard_tests::evm_org::*;
use spendguard_tests::mcp_client::McpAgent;
use spendguard_tests::node::TestNode;
use std::sync::Arc;

/// The org's config with `cold` held by the agent (no keystore) and `chain_extra` in the chain.
fn external_cold(org: &EvmOrg, name: &str, wallet_extra: &str) -> spendguard_config::Config {
    let keystore = format!("keystore = \"{}\"\n", org.dir.path().join("cold.json").display());
    org.variant(
        name,
        &[(&keystore, ""), ("password_env = \"COLD_PASSWORD\"", &format!("custody = \"external\"\n{wallet_extra}"))],
    )
}

/// TUSD base units (6 decimals).
fn tusd(units: u128) -> u128 {
    units * 1_000_000
}

/// A spend of `amount` TUSD from `cold` to `to`.
fn pay(to: &str, amount: &str) -> Value {
    json!({ "wallet": "cold", "to": to, "amount": amount, "asset": "TUSD" })
}

/// The daemon's HTTP routes for `node`, on a free port; returns the base URL.
async fn serve(node: &Arc<TestNode>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let services = node.services.clone();
    tokio::spawn(spendguard_mcp::serve_http(services, listener, std::future::pending()));
    url
}

/// `POST /v1/authorizations/verify` with `bearer`.
async fn verify(url: &str, bearer: &str, token: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{url}/v1/authorizations/verify"))
        .bearer_auth(bearer)
        .json(&json!({ "token": token }))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// The token's claims as PyJWT reads them, verified with the PEM key `spendguard authority
/// pubkey` prints (EdDSA; `exp` checked too).
fn pyjwt_claims(token: &str, pem: &str) -> Value {
    let python = spendguard_tests::python::python();
    let script = "import json, sys, jwt\n\
                  print(json.dumps(jwt.decode(sys.argv[1], sys.argv[2], algorithms=['EdDSA'])))";
    let out = std::process::Command::new(&python).args(["-c", script, token, pem]).output().unwrap();
    assert!(
        out.status.success(),
        "PyJWT refused the token (install it with tools/dev/test.sh, or pip install 'pyjwt[crypto]==2.15.1'): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn status_of(r: &spendguard_tests::mcp_client::ToolReply) -> &str {
    r.data["status"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authorized_payment_from_the_agents_own_wallet_is_matched_and_counted_once() {
    let org = EvmOrg::start(BUYER_TIERS).await;
    let config = external_cold(&org, "external", "");
    let node = org.node_for(config, vec![]).await;
    let operator_token = node.services.credentials.issue_operator_token("ops@e2e.example").await.unwrap();
    let url = serve(&node).await;
    let agent = McpAgent::connect(&node.services, "buyer").await;

    let spend = json!({ "wallet": "cold", "to": PAYEE, "amount": "5", "asset": "TUSD", "idempotency_key": "ext-1" });
    let r = agent.call("spend", spend.clone()).await;
    assert!(!r.is_error && status_of(&r) == "authorized", "{}", r.text);
    let auth = &r.data["authorization"];
    let id = r.data["decision_id"].as_str().unwrap().to_string();
    assert_eq!(auth["decision_id"], id.as_str());
    assert_eq!((auth["from"].as_str(), auth["to"].as_str()), (Some(COLD), Some(PAYEE)), "{auth}");
    assert_eq!((auth["asset"].as_str(), auth["amount"].as_str()), (Some("eth-local:TUSD"), Some("5")), "{auth}");
    assert_eq!(auth["state"], "open");
    let token = auth["token"].as_str().unwrap().to_string();
    let replay = agent.call("spend", spend).await;
    assert_eq!(replay.data["authorization"]["token"], token.as_str(), "the same key answers the same token");

    // A general JOSE library verifies it with the printed public key.
    let pem = node.services.authorizations.authority().unwrap().public_key_pem();
    let claims = pyjwt_claims(&token, &pem);
    assert_eq!((claims["jti"].as_str(), claims["sub"].as_str()), (Some(id.as_str()), Some("buyer")), "{claims}");
    assert_eq!((claims["to"].as_str(), claims["amount"].as_str()), (Some(PAYEE), Some("5")), "{claims}");
    assert_eq!(claims["intent_hash"].as_str().map(str::len), Some(64), "{claims}");
    assert!(claims["exp"].as_i64().unwrap() > claims["iat"].as_i64().unwrap());
    let (code, v) = verify(&url, &org.tokens["buyer"], &token).await;
    assert_eq!((code, v["status"].as_str()), (200, Some("valid")), "{v}");
    let (_, v) = verify(&url, &org.tokens["other"], &token).await;
    assert_eq!(v["status"], "invalid", "another agent learns nothing: {v}");
    let mut forged = token.clone();
    forged.replace_range(forged.len() - 4.., "AAAA");
    assert_eq!(verify(&url, &operator_token, &forged).await.1["status"], "invalid");
    assert_eq!(verify(&url, "sgt_nobody", &token).await.0, 401);

    // Held while unpaid: the limit counts it as reserved.
    let limits = agent.call("balance", json!({ "wallet": "cold" })).await.data["wallets"][0]["limits"].clone();
    let buyer = limits.as_array().unwrap().iter().find(|l| l["policy_id"] == "buyer").unwrap().clone();
    assert_eq!((buyer["used"].as_str(), buyer["reserved"].as_str()), (Some("0.00"), Some("5.00")), "{buyer}");
    let exposures = node.services.overview.exposures(TimeDelta::hours(1)).await.unwrap();
    assert_eq!(exposures.authorized_usd.0, "5".parse().unwrap());
    let status = node.services.overview.status().await.unwrap();
    assert_eq!(status.open_authorizations.len(), 1);
    let cold = status.wallets.iter().find(|w| w.wallet == "cold").unwrap();
    assert_eq!((cold.custody, cold.authorized_usd.0), ("external", "5".parse().unwrap()));

    // The agent pays with its own key: matched, confirmed, counted once as spent.
    let paid = testing::send_token(&org.anvil.url, DEV_KEYS[2], &org.token, PAYEE, tusd(5)).await.unwrap();
    org.mine().await;
    node.tick().await;
    let s = agent.call("spend_status", json!({ "decision_id": id })).await;
    assert_eq!((status_of(&s), s.data["reconciliation"].as_str()), ("confirmed", Some("matched")), "{}", s.text);
    assert_eq!(s.data["tx_hash"], paid.as_str());
    assert_eq!(s.data["authorization"]["state"], "consumed");
    assert!(s.data["fee_paid"].as_str().is_some(), "the payment's fee is booked with it: {}", s.text);
    let limits = agent.call("balance", json!({ "wallet": "cold" })).await.data["wallets"][0]["limits"].clone();
    let buyer = limits.as_array().unwrap().iter().find(|l| l["policy_id"] == "buyer").unwrap().clone();
    assert_eq!((buyer["used"].as_str(), buyer["reserved"].as_str()), (Some("5.00"), Some("0.00")), "{buyer}");
    let outflows = node.ledger().outflows(Some("eth-local")).await.unwrap();
    let of_payment: Vec<_> = outflows.iter().filter(|o| o.tx_hash == paid).map(|o| (o.kind, o.class)).collect();
    assert!(of_payment.iter().all(|(_, c)| *c == Class::Matched) && of_payment.len() == 2, "{of_payment:?}");
    let (_, v) = verify(&url, &operator_token, &token).await;
    assert_eq!(v["status"], "consumed", "{v}");
    assert!(v["detail"].as_str().unwrap().contains(&paid), "{v}");
    assert!(node.services.operators.frozen().await.unwrap().is_empty());
    let differences = node.ledger().events(Some(EventKind::UnexplainedBalanceChange)).await.unwrap();
    assert!(differences.is_empty(), "{differences:?}");

    // An open authorization is revoked by a freeze, and the alert names the external wallet.
    let r = agent.call("spend", pay(PAYEE2, "3")).await;
    let second = r.data["authorization"]["token"].as_str().unwrap().to_string();
    node.services.operators.freeze(Scope::Agent("buyer".into()), "ops@e2e.example", "audit").await.unwrap();
    let (_, v) = verify(&url, &org.tokens["buyer"], &second).await;
    assert_eq!(v["status"], "revoked", "{v}");
    let s = agent.call("spend_status", json!({ "decision_id": r.data["decision_id"] })).await;
    assert_eq!(status_of(&s), "released", "{}", s.text);
    let switches = node.ledger().events(Some(EventKind::KillSwitch)).await.unwrap();
    assert!(switches.iter().any(|e| e.detail.contains("external wallets cold")), "{switches:?}");

    // The report lists both authorizations and what became of them; the matched payment counts.
    let now = Utc::now();
    let report = node.services.reports.report(now - TimeDelta::hours(1), now + TimeDelta::hours(1)).await.unwrap();
    let md = spendguard_service::report::render(&report, spendguard_service::report::ReportFormat::Markdown);
    assert!(md.contains(&format!("- cold 5 eth-local:TUSD: consumed: {paid}; agent buyer to {PAYEE} ($5.00)")), "{md}");
    assert!(md.contains("- cold 3 eth-local:TUSD: revoked: authorization revoked: agent buyer is frozen"), "{md}");
    let cold_total = report.totals.wallets.iter().find(|t| t.key == "cold").unwrap();
    assert_eq!((cold_total.count, cold_total.usd.0), (1, "5".parse().unwrap()), "{cold_total:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn money_leaving_an_external_wallet_without_or_beyond_its_authorization_freezes_it() {
    let org = EvmOrg::start(BUYER_TIERS).await;
    let config = external_cold(&org, "external-rogue", "");
    let (hook_url, seen) = spendguard_tests::alert_receiver::receiver(0).await;
    let hook = AlertChannel {
        id: "treasury".into(),
        kind: AlertKind::Webhook,
        url: Some(format!("{hook_url}/hook")),
        events: vec![EventKind::UnexplainedOutflow, EventKind::KillSwitch],
    };
    let node = org.node_for(config, vec![hook]).await;
    let agent = McpAgent::connect(&node.services, "buyer").await;

    // Nobody authorized this: unexplained, frozen, alerted, and the next spend refused.
    let rogue = testing::send_token(&org.anvil.url, DEV_KEYS[2], &org.token, PAYEE2, tusd(7)).await.unwrap();
    org.mine().await;
    node.tick().await;
    let outflows = node.ledger().outflows(Some("eth-local")).await.unwrap();
    let seen_rogue = outflows.iter().find(|o| o.tx_hash == rogue && o.asset.is_some()).unwrap();
    assert_eq!(seen_rogue.class, Class::Unexplained);
    let r = agent.call("spend", pay(PAYEE, "1")).await;
    assert!(r.is_error && r.text.starts_with("KILL_SWITCH: wallet cold is frozen"), "{}", r.text);
    let delivered = seen.lock().unwrap().clone();
    assert!(delivered.iter().any(|(_, b)| b["event"] == "unexplained_outflow"), "{delivered:?}");
    assert!(
        delivered.iter().any(|(_, b)| b["event"] == "kill_switch" && b.to_string().contains("external wallets cold")),
        "{delivered:?}"
    );

    // Authorized 5, paid 6: a mismatch, frozen again after the operator lifted the first freeze.
    let frozen = node.services.operators.frozen().await.unwrap();
    for f in frozen {
        let scope = Scope::parse(&f.scope).unwrap();
        node.services.operators.unfreeze(scope, "ops@e2e.example", "rotated").await.unwrap();
    }
    let r = agent.call("spend", pay(PAYEE, "5")).await;
    assert_eq!(status_of(&r), "authorized", "{}", r.text);
    let id = r.data["decision_id"].as_str().unwrap().to_string();
    testing::send_token(&org.anvil.url, DEV_KEYS[2], &org.token, PAYEE, tusd(6)).await.unwrap();
    org.mine().await;
    node.tick().await;
    let s = agent.call("spend_status", json!({ "decision_id": id })).await;
    assert_eq!(s.data["reconciliation"], "mismatch", "{}", s.text);
    let r = agent.call("spend", pay(PAYEE, "1")).await;
    assert!(r.is_error && r.text.starts_with("KILL_SWITCH"), "{}", r.text);
    let events = node.ledger().events(Some(EventKind::UnexplainedOutflow)).await.unwrap();
    assert!(events.iter().any(|e| e.detail.starts_with("mismatch outflow from wallet cold")), "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authorization_not_paid_in_time_is_released_and_a_later_payment_is_unexplained() {
    let org = EvmOrg::start(BUYER_TIERS).await;
    let config = external_cold(&org, "external-expiry", "authorization_ttl = \"10m\"");
    let config_path = config.path.clone();
    std::fs::write(
        &config_path,
        std::fs::read_to_string(&config_path)
            .unwrap()
            .replace("confirmations = 1", "confirmations = 1\nmissing_after = \"1m\""),
    )
    .unwrap();
    let config = spendguard_config::load(&config_path).unwrap();
    let start = Utc::now();
    let clock = Arc::new(SteppedClock::new(start));
    let keys = spendguard_node::KeyRing::default();
    let node = TestNode::build_with_clock(config, keys, clock.clone()).await;
    let agent = McpAgent::connect(&node.services, "buyer").await;

    let r = agent.call("spend", pay(PAYEE, "4")).await;
    assert_eq!(status_of(&r), "authorized", "{}", r.text);
    let id = r.data["decision_id"].as_str().unwrap().to_string();
    assert_eq!(
        r.data["authorization"]["expires_at"].as_str().unwrap()[..16],
        (start + TimeDelta::minutes(10)).to_rfc3339()[..16]
    );

    // Past its expiry but within the chain's grace: still held.
    clock.set(start + TimeDelta::minutes(10) + TimeDelta::seconds(30));
    node.tick().await;
    let s = agent.call("spend_status", json!({ "decision_id": id })).await;
    assert_eq!(status_of(&s), "authorized", "{}", s.text);
    // Past the grace: released, its budget back.
    clock.set(start + TimeDelta::minutes(11) + TimeDelta::seconds(1));
    node.tick().await;
    let s = agent.call("spend_status", json!({ "decision_id": id })).await;
    assert_eq!((status_of(&s), s.data["authorization"]["state"].as_str()), ("released", Some("expired")), "{}", s.text);
    let limits = agent.call("balance", json!({ "wallet": "cold" })).await.data["wallets"][0]["limits"].clone();
    let buyer = limits.as_array().unwrap().iter().find(|l| l["policy_id"] == "buyer").unwrap().clone();
    assert_eq!(buyer["reserved"], "0.00", "{buyer}");

    // The agent pays anyway: nothing authorizes it any more.
    let late = testing::send_token(&org.anvil.url, DEV_KEYS[2], &org.token, PAYEE, tusd(4)).await.unwrap();
    org.mine().await;
    node.tick().await;
    let outflows = node.ledger().outflows(Some("eth-local")).await.unwrap();
    let landed = outflows.iter().find(|o| o.tx_hash == late && o.asset.is_some()).unwrap();
    assert_eq!((landed.class, landed.decision_id.as_deref()), (Class::Unexplained, None), "{landed:?}");
    let frozen = node.services.operators.frozen().await.unwrap();
    assert!(frozen.iter().any(|f| f.scope == "wallet:cold"), "{frozen:?}");
}
