//! x402 payments: an agent pays an HTTP 402 API through `pay_x402`. The paid API and its
//! facilitator are the official x402 Python SDK, unchanged (`tests/x402/paid_api.py`); the token
//! is a USDC-like EIP-3009 contract (`fixtures/evm/TestEip3009Token.sol`). What spendguard signs
//! is evaluated like a spend, settled by the SDK's facilitator, and matched on chain through the
//! `AuthorizationUsed` log; authorizations signed with the wallet's key outside spendguard freeze
//! the wallet.

use base64::Engine;
use serde_json::{json, Value};
use spendguard_chain::TransferAuthorization;
use spendguard_config::AlertKind;
use spendguard_core::reconcile::Class;
use spendguard_core::EventKind;
use spendguard_evm::testing;
use spendguard_service::AlertChannel;
use spendguard_store::{OutboxStore, OutflowStore};
use spendguard_tests::anvil::DEV_KEYS;
use spendguard_tests::evm_org::*;
use spendguard_tests::mcp_client::McpAgent;
use spendguard_tests::wait_until;
use std::io::BufRead;
use std::time::Duration;

/// The facilitator's key (pays the gas of settlements); registered nowhere.
const FACILITATOR_KEY: &str = DEV_KEYS[9];
/// The API's payee.
const API_PAYEE: &str = PAYEE2;

/// The EVM organisation with a USDC-like EIP-3009 token configured as `USDC` (1 USD) and
/// 10,000 USDC in wallet `hot`; `extra` is appended to the config (policies, `[x402]`).
struct X402Org {
    org: EvmOrg,
    usdc: String,
    config_path: std::path::PathBuf,
}

impl X402Org {
    async fn start(extra: &str) -> X402Org {
        let org = EvmOrg::start(BUYER_TIERS).await;
        let usdc = testing::deploy_eip3009_token(
            &org.anvil.url,
            DEV_KEYS[0],
            spendguard_tests::TEST_EIP3009_TOKEN_BIN,
            10u128.pow(13),
        )
        .await
        .unwrap();
        testing::send_token(&org.anvil.url, DEV_KEYS[0], &usdc, HOT, 10_000 * 1_000_000).await.unwrap();
        let asset = format!(
            "[[asset]]\nchain = \"eth-local\"\nsymbol = \"USDC\"\ncontract = \"{usdc}\"\ndecimals = 6\nprice_usd = \"1\"\n\n[[department]]"
        );
        let config = org.variant("x402", &[("[[department]]", &asset)]);
        let config_path = config.path.clone();
        let text = std::fs::read_to_string(&config_path).unwrap() + extra;
        std::fs::write(&config_path, text).unwrap();
        X402Org { org, usdc, config_path }
    }

    fn config(&self) -> spendguard_config::Config {
        spendguard_config::load(&self.config_path).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A v2 challenge as the SDK writes it, for `amount` base units of `asset` to `pay_to`.
    fn challenge(&self, asset: &str, amount: &str, pay_to: &str) -> Value {
        json!({
            "x402Version": 2,
            "error": "Payment required",
            "resource": { "url": "http://api.weather.example/weather", "description": "Today's weather", "mimeType": "application/json" },
            "accepts": [{
                "scheme": "exact", "network": "eip155:31337", "asset": asset, "amount": amount, "payTo": pay_to,
                "maxTimeoutSeconds": 120, "extra": { "name": "USD Coin", "version": "2" }
            }]
        })
    }
}

/// The paid API (the x402 SDK's FastAPI middleware and facilitator); killed when dropped.
struct PaidApi {
    child: std::process::Child,
    url: String,
}

impl Drop for PaidApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl PaidApi {
    fn start(rpc: &str, token: &str, pay_to: &str, price: &str) -> PaidApi {
        let python = spendguard_tests::python::python();
        let has_sdk = std::process::Command::new(&python)
            .args(["-c", "import x402.http.middleware.fastapi, x402.mechanisms.evm.exact"])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            has_sdk,
            "the x402 Python SDK is missing: run tools/dev/test.sh, or pip install 'x402[evm,fastapi]==2.25.0'"
        );
        let script = spendguard_tests::manifest_dir().join("x402/paid_api.py");
        let mut child = std::process::Command::new(python)
            .arg(script)
            .args([rpc, "31337", FACILITATOR_KEY, token, pay_to, price])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start the paid API");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("paid API said {line:?}"));
        PaidApi { url: format!("http://127.0.0.1:{port}"), child }
    }
}

fn b64(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_pays_an_x402_api_through_spendguard_serve_and_the_settlement_is_matched() {
    let x = X402Org::start("").await;
    let api = PaidApi::start(&x.org.anvil.url, &x.usdc, API_PAYEE, "5000000");
    let (daemon, mcp_url) = x.org.start_daemon_for(&x.config_path, &[]);
    let agent = McpAgent::connect_http(&mcp_url, &x.org.tokens["buyer"]).await;
    let http = reqwest::Client::new();

    // The API asks for payment: 402 with the challenge in PAYMENT-REQUIRED.
    let mut first = None;
    wait_until("the paid API to answer", Duration::from_secs(30), async || {
        first = http.get(format!("{}/weather", api.url)).send().await.ok();
        first.is_some()
    })
    .await;
    let first = first.unwrap();
    assert_eq!(first.status(), 402);
    let challenge: Value = serde_json::from_slice(&b64(first.headers()["payment-required"].to_str().unwrap())).unwrap();

    let pay = json!({ "wallet": "hot", "payment_required": challenge, "idempotency_key": "weather-1" });
    let r = agent.call("pay_x402", pay.clone()).await;
    assert!(!r.is_error && r.data["status"] == "signed", "{}", r.text);
    let header = r.data["payment_signature"].as_str().unwrap().to_string();
    let auth = &r.data["authorization"];
    let lower = |v: &Value| v.as_str().map(str::to_lowercase);
    assert_eq!((lower(&auth["from"]), lower(&auth["to"])), (Some(HOT.into()), Some(API_PAYEE.into())), "{auth}");
    assert_eq!(auth["value"], "5000000");
    assert_eq!(r.data["valuation"]["usd"], "5.00", "{}", r.text);
    let replay = agent.call("pay_x402", pay).await;
    assert_eq!(replay.data["payment_signature"], header.as_str(), "the same key returns the same header");
    let id = r.data["decision_id"].as_str().unwrap().to_string();

    // The retry carries the header: the SDK verifies, settles and serves the resource.
    let paid = http.get(format!("{}/weather", api.url)).header("PAYMENT-SIGNATURE", &header).send().await.unwrap();
    if paid.status() != 200 {
        let why = paid
            .headers()
            .get("payment-required")
            .map(|h| String::from_utf8_lossy(&b64(h.to_str().unwrap())).to_string());
        panic!("the API refused the payment: {} {why:?} {:?}", paid.status(), paid.text().await);
    }
    let receipt: Value = serde_json::from_slice(&b64(paid.headers()["payment-response"].to_str().unwrap())).unwrap();
    assert_eq!(receipt["success"], true, "{receipt}");
    let settled_tx = receipt["transaction"].as_str().unwrap().to_lowercase();
    assert_eq!(paid.json::<Value>().await.unwrap()["forecast"], "sunny");

    // The auditor matches the facilitator's transaction to the authorization, by its nonce.
    wait_until("the settlement to be matched", Duration::from_secs(60), async || {
        x.org.mine().await;
        let s = agent.call("spend_status", json!({ "decision_id": id })).await;
        s.data["reconciliation"] == "matched"
    })
    .await;
    let s = agent.call("spend_status", json!({ "decision_id": id })).await;
    assert_eq!((s.data["status"].as_str(), s.data["tx_hash"].as_str()), (Some("confirmed"), Some(settled_tx.as_str())));
    assert_eq!(s.data["authorization"]["state"], "consumed");
    assert_eq!(x.org.token_balance_of(&x.usdc, API_PAYEE).await, 5_000_000);
    let e = agent.call("evaluate", json!({ "wallet": "hot", "to": PAYEE, "amount": "1", "asset": "USDC" })).await;
    assert_eq!(e.data["decision"], "allow", "nothing frozen: {}", e.text);
    assert!(EvmOrg::stop_daemon(daemon));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorizations_signed_with_the_wallets_key_outside_spendguard_freeze_it() {
    let x = X402Org::start("").await;
    let (hook_url, seen) = spendguard_tests::alert_receiver::receiver(0).await;
    let hook = AlertChannel {
        id: "treasury".into(),
        kind: AlertKind::Webhook,
        url: Some(format!("{hook_url}/hook")),
        events: vec![EventKind::UnexplainedOutflow],
    };
    let node = x.org.node_for(x.config(), vec![hook]).await;
    let agent = McpAgent::connect(&node.services, "buyer").await;
    let authorization = |to: &str, value: u128, nonce: [u8; 32]| TransferAuthorization {
        from: HOT.into(),
        to: to.into(),
        token: x.usdc.clone(),
        domain_name: "USD Coin".into(),
        domain_version: "2".into(),
        value,
        valid_after: 0,
        valid_before: u64::try_from(chrono::Utc::now().timestamp()).unwrap() + 600,
        nonce,
    };

    // A leaked key signs an authorization nobody approved, and someone settles it.
    let rogue = authorization(API_PAYEE, 7_000_000, [7; 32]);
    let tx =
        testing::settle_authorization(&x.org.anvil.url, FACILITATOR_KEY, DEV_KEYS[1], 31337, &rogue).await.unwrap();
    x.org.mine().await;
    node.tick().await;
    let outflows = node.ledger().outflows(Some("eth-local")).await.unwrap();
    let o = outflows.iter().find(|o| o.tx_hash == tx).expect("the settlement is an outflow of hot");
    assert_eq!((o.class, o.decision_id.as_deref()), (Class::Unexplained, None), "{o:?}");
    let r = agent
        .call("pay_x402", json!({ "wallet": "hot", "payment_required": x.challenge(&x.usdc, "1000000", API_PAYEE) }))
        .await;
    assert!(r.is_error && r.text.starts_with("KILL_SWITCH: wallet hot is frozen"), "{}", r.text);
    let delivered = seen.lock().unwrap().clone();
    assert!(delivered.iter().any(|(_, b)| b["event"] == "unexplained_outflow"), "{delivered:?}");

    // After the freeze is lifted: spendguard signs 2 USDC to the API; the same nonce is used by
    // an authorization for another payee, signed outside: a mismatch, frozen again.
    for f in node.services.operators.frozen().await.unwrap() {
        let scope = spendguard_core::model::Scope::parse(&f.scope).unwrap();
        node.services.operators.unfreeze(scope, "ops@e2e.example", "key rotated").await.unwrap();
    }
    let r = agent
        .call("pay_x402", json!({ "wallet": "hot", "payment_required": x.challenge(&x.usdc, "2000000", API_PAYEE) }))
        .await;
    assert_eq!(r.data["status"], "signed", "{}", r.text);
    let id = r.data["decision_id"].as_str().unwrap().to_string();
    let nonce_hex = r.data["authorization"]["nonce"].as_str().unwrap().trim_start_matches("0x").to_string();
    let nonce: [u8; 32] = hex::decode(nonce_hex).unwrap().try_into().unwrap();
    let diverted = authorization(PAYEE, 2_000_000, nonce);
    testing::settle_authorization(&x.org.anvil.url, FACILITATOR_KEY, DEV_KEYS[1], 31337, &diverted).await.unwrap();
    x.org.mine().await;
    node.tick().await;
    let s = agent.call("spend_status", json!({ "decision_id": id })).await;
    assert_eq!(s.data["reconciliation"], "mismatch", "{}", s.text);
    let events = node.ledger().events(Some(EventKind::UnexplainedOutflow)).await.unwrap();
    assert!(events.iter().any(|e| e.detail.starts_with("mismatch outflow from wallet hot")), "{events:?}");
    let r = agent
        .call("pay_x402", json!({ "wallet": "hot", "payment_required": x.challenge(&x.usdc, "1000000", API_PAYEE) }))
        .await;
    assert!(r.is_error && r.text.starts_with("KILL_SWITCH"), "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn challenges_that_cannot_be_honoured_are_refused_naming_why_and_nothing_is_signed() {
    let x = X402Org::start(
        r#"
[[policy]]
id = "no-casino-apis"
scope = "agent:buyer"
  [policy.recipients]
  default_action = "allow"
  rules = [ { domain = "casino.example", action = "block" } ]
"#,
    )
    .await;
    let node = x.org.node_for(x.config(), vec![]).await;
    let agent = McpAgent::connect(&node.services, "buyer").await;
    let pay = |challenge: Value| json!({ "wallet": "hot", "payment_required": challenge });
    let refused = async |challenge: Value| {
        let r = agent.call("pay_x402", pay(challenge)).await;
        assert!(r.is_error, "{}", r.text);
        r.text
    };
    let unknown = "0x000000000000000000000000000000000000dead";
    let text = refused(x.challenge(unknown, "1000000", API_PAYEE)).await;
    assert!(text.starts_with("X402_UNPAYABLE") && text.contains("is not a configured asset"), "{text}");
    let mut c = x.challenge(&x.usdc, "1000000", API_PAYEE);
    c["accepts"][0]["scheme"] = json!("upto");
    assert!(refused(c).await.contains("scheme \"upto\" is not supported"));
    let mut c = x.challenge(&x.usdc, "1.5", API_PAYEE);
    assert!(refused(c.clone()).await.contains("amount is not a positive integer of base units"));
    c = x.challenge(&x.usdc, "1000000", API_PAYEE);
    c["accepts"][0]["maxTimeoutSeconds"] = json!(0);
    assert!(refused(c).await.contains("maxTimeoutSeconds is not a positive integer"));
    let mut c = x.challenge(&x.usdc, "1000000", API_PAYEE);
    c["accepts"][0]["network"] = json!("eip155:8453");
    assert!(refused(c).await.contains("network eip155:8453 is not a configured chain"));
    let mut c = x.challenge(&x.usdc, "1000000", API_PAYEE);
    c["resource"]["url"] = json!("https://CASINO.example/spin");
    let text = refused(c).await;
    assert!(text.starts_with("RECIPIENT_BLOCKED"), "{text}");
    // Malformed arguments are refused before anything is recorded.
    for (bad, expect) in [
        (json!({ "wallet": "hot", "payment_required": "eyJ4NDAy..." }), "INVALID_REQUEST"),
        (json!({ "wallet": "hot", "payment_required": { "x402Version": 3, "accepts": [] } }), "X402_UNPAYABLE"),
        (json!({ "wallet": "hot", "payment_required": { "x402Version": 2 } }), "X402_UNPAYABLE"),
        (
            json!({ "wallet": "hot", "payment_required": { "x402Version": 2, "accepts": [], "pad": "x".repeat(70_000) } }),
            "INVALID_REQUEST",
        ),
        (
            json!({ "wallet": "hot", "payment_required": x.challenge(&x.usdc, "1000000", API_PAYEE), "agent": "saver" }),
            "INVALID_REQUEST",
        ),
        (
            json!({ "wallet": "cold-storage", "payment_required": x.challenge(&x.usdc, "1000000", API_PAYEE) }),
            "UNKNOWN_WALLET",
        ),
    ] {
        let r = agent.call("pay_x402", bad.clone()).await;
        assert!(r.is_error && r.text.starts_with(expect), "{bad}: {}", r.text);
    }
    // The first payable requirement wins; version 1's maxAmountRequired form is read too.
    let v1 = json!({ "x402Version": 1, "accepts": [
        { "scheme": "upto", "network": "eip155:31337" },
        { "scheme": "exact", "network": "eip155:31337", "maxAmountRequired": "3000000", "resource": "http://api.weather.example/v1",
          "description": "v1", "payTo": API_PAYEE, "asset": x.usdc, "maxTimeoutSeconds": 60, "extra": { "name": "USD Coin", "version": "2" } }
    ]});
    let r = agent.call("pay_x402", pay(v1)).await;
    assert_eq!(r.data["status"], "signed", "{}", r.text);
    let payload: Value = serde_json::from_slice(&b64(r.data["payment_signature"].as_str().unwrap())).unwrap();
    assert_eq!((payload["x402Version"].as_u64(), payload["scheme"].as_str()), (Some(1), Some("exact")), "{payload}");
    assert_eq!(payload["payload"]["authorization"]["value"], "3000000");
    let before = chrono::Utc::now().timestamp();
    let valid_before: i64 = payload["payload"]["authorization"]["validBefore"].as_str().unwrap().parse().unwrap();
    assert!(valid_before <= before + 61, "validBefore within the server's 60 s: {valid_before} vs {before}");
    assert_eq!(x.org.nonce(HOT).await, 0, "nothing was sent from the wallet");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_payment_is_signed_when_due_and_a_large_one_after_an_approval_that_shows_the_resource() {
    let x = X402Org::start("").await;
    let node = x.org.node_for(x.config(), vec![]).await;
    let agent = McpAgent::connect(&node.services, "buyer").await;
    let header_of = async |id: &str| {
        let s = agent.call("spend_status", json!({ "decision_id": id })).await;
        s.data["payment_signature"].as_str().map(str::to_string)
    };

    // 500 USDC is DELAY (2 s): queued, signed by the background pass when due.
    let r = agent
        .call("pay_x402", json!({ "wallet": "hot", "payment_required": x.challenge(&x.usdc, "500000000", API_PAYEE) }))
        .await;
    assert_eq!(r.data["status"], "queued", "{}", r.text);
    assert!(r.data["payment_signature"].is_null(), "nothing signed before it is due: {}", r.text);
    let delayed = r.data["decision_id"].as_str().unwrap().to_string();
    wait_until("the delayed payment to be signed", Duration::from_secs(30), async || {
        node.tick().await;
        header_of(&delayed).await.is_some()
    })
    .await;

    // 1,500 USDC needs an approver, who sees what it buys.
    let r = agent
        .call("pay_x402", json!({ "wallet": "hot", "payment_required": x.challenge(&x.usdc, "1500000000", API_PAYEE) }))
        .await;
    assert_eq!(r.data["status"], "pending_approval", "{}", r.text);
    let big = r.data["decision_id"].as_str().unwrap().to_string();
    let pending = node.services.operators.pending_approvals().await.unwrap();
    let item = spendguard_service::PendingItem::of(pending.iter().find(|p| p.id == big).unwrap());
    assert_eq!(item.resource.as_deref(), Some("http://api.weather.example/weather"));
    assert_eq!(item.resource_description.as_deref(), Some("Today's weather"));
    let requested = node.ledger().events(Some(EventKind::ApprovalRequested)).await.unwrap();
    assert!(
        requested.iter().any(|e| e.detail.contains("x402 payment for http://api.weather.example/weather")),
        "{requested:?}"
    );
    assert_eq!(header_of(&big).await, None);
    node.services.operators.approve(&big, "ops@e2e.example", None).await.unwrap();
    let header = header_of(&big).await.expect("signed once approved");
    let payload: Value = serde_json::from_slice(&b64(&header)).unwrap();
    assert_eq!(payload["payload"]["authorization"]["value"], "1500000000");

    // Both are held as exposure until settled, and listed with their resource.
    let exposures = node.services.overview.exposures(chrono::TimeDelta::hours(1)).await.unwrap();
    assert_eq!(exposures.authorized_usd.0, "2000".parse().unwrap());
    let status = node.services.overview.status().await.unwrap();
    let open: Vec<_> = status.open_authorizations.iter().filter_map(|a| a.resource.as_deref()).collect();
    assert_eq!(open, ["http://api.weather.example/weather"; 2], "{:?}", status.open_authorizations);
    let now = chrono::Utc::now();
    let report = node
        .services
        .reports
        .report(now - chrono::TimeDelta::hours(1), now + chrono::TimeDelta::hours(1))
        .await
        .unwrap();
    let md = spendguard_service::report::render(&report, spendguard_service::report::ReportFormat::Markdown);
    assert!(
        md.contains(
            "| x402 host | spends | USD | amount |\n|---|---:|---:|---:|\n| api.weather.example | 2 | 2000.00 |"
        ),
        "{md}"
    );
    assert!(md.contains("x402 payment for http://api.weather.example/weather, OPEN until"), "{md}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_cancels_an_outstanding_x402_authorization_on_chain_from_the_cli() {
    let x = X402Org::start("").await;
    let node = x.org.node_for(x.config(), vec![]).await;
    let agent = McpAgent::connect(&node.services, "buyer").await;
    let r = agent
        .call("pay_x402", json!({ "wallet": "hot", "payment_required": x.challenge(&x.usdc, "2000000", API_PAYEE) }))
        .await;
    assert_eq!(r.data["status"], "signed", "{}", r.text);
    let id = r.data["decision_id"].as_str().unwrap().to_string();
    let auth = r.data["authorization"].clone();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(EvmOrg::binary())
            .arg("--config")
            .arg(&x.config_path)
            .args(args)
            .envs(x.org.server_env())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "spendguard {args:?}: {text}");
        text
    };
    let listed = cli(&["authorizations", "list"]);
    assert!(
        listed.contains(&id)
            && listed.contains("x402\tbuyer\thot")
            && listed.contains("x402 for http://api.weather.example/weather"),
        "{listed}"
    );

    // The agent cannot take it back itself: the server holds the signed authorization.
    let refused = agent.call("cancel_spend", json!({ "decision_id": id })).await;
    assert!(refused.is_error && refused.text.contains("cancelled on chain by an operator"), "{}", refused.text);

    let cancelled = cli(&["authorizations", "cancel", &id, "--reason", "the API is down", "--as", "ops@e2e.example"]);
    assert!(cancelled.contains(&format!("{id}: revoked (authorization cancelled on chain by 0x")), "{cancelled}");
    let s = agent.call("spend_status", json!({ "decision_id": id })).await;
    assert_eq!(
        (s.data["status"].as_str(), s.data["authorization"]["state"].as_str()),
        (Some("released"), Some("revoked")),
        "{}",
        s.text
    );
    assert!(cli(&["authorizations", "list"]).contains("no open authorizations"));

    // The server can no longer settle it: the token refuses the cancelled nonce.
    let mut nonce = [0u8; 32];
    hex::decode_to_slice(auth["nonce"].as_str().unwrap().trim_start_matches("0x"), &mut nonce).unwrap();
    let same = TransferAuthorization {
        from: HOT.into(),
        to: API_PAYEE.into(),
        token: x.usdc.clone(),
        domain_name: "USD Coin".into(),
        domain_version: "2".into(),
        value: 2_000_000,
        valid_after: 0,
        valid_before: auth["validBefore"].as_str().unwrap().parse().unwrap(),
        nonce,
    };
    let settled = testing::settle_authorization(&x.org.anvil.url, FACILITATOR_KEY, DEV_KEYS[1], 31337, &same).await;
    assert!(settled.is_err(), "a cancelled authorization cannot be settled: {settled:?}");
    // The cancellation's fee is booked with the payment it cancelled: nothing unexplained.
    x.org.mine().await;
    node.tick().await;
    let outflows = node.ledger().outflows(Some("eth-local")).await.unwrap();
    let fee =
        outflows.iter().find(|o| o.wallet == "hot" && o.kind == spendguard_core::reconcile::OutflowKind::Fee).unwrap();
    assert_eq!((fee.class, fee.decision_id.as_deref()), (Class::Matched, Some(id.as_str())), "{fee:?}");
    assert!(node.services.operators.frozen().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_facilitator_settling_several_payments_in_one_transaction_has_each_matched_to_its_own() {
    let x = X402Org::start("").await;
    let settler =
        testing::deploy(&x.org.anvil.url, DEV_KEYS[0], spendguard_tests::TEST_BATCH_SETTLER_BIN).await.unwrap();
    let node = x.org.node_for(x.config(), vec![]).await;
    let agent = McpAgent::connect(&node.services, "buyer").await;
    let mut signed = vec![];
    let mut ids = vec![];
    for amount in ["2000000", "3000000"] {
        let r = agent
            .call("pay_x402", json!({ "wallet": "hot", "payment_required": x.challenge(&x.usdc, amount, API_PAYEE) }))
            .await;
        assert_eq!(r.data["status"], "signed", "{}", r.text);
        ids.push(r.data["decision_id"].as_str().unwrap().to_string());
        let payload: Value = serde_json::from_slice(&b64(r.data["payment_signature"].as_str().unwrap())).unwrap();
        let a = &payload["payload"]["authorization"];
        let mut nonce = [0u8; 32];
        hex::decode_to_slice(a["nonce"].as_str().unwrap().trim_start_matches("0x"), &mut nonce).unwrap();
        let mut signature = [0u8; 65];
        hex::decode_to_slice(
            payload["payload"]["signature"].as_str().unwrap().trim_start_matches("0x"),
            &mut signature,
        )
        .unwrap();
        let authorization = TransferAuthorization {
            from: a["from"].as_str().unwrap().into(),
            to: a["to"].as_str().unwrap().into(),
            token: x.usdc.clone(),
            domain_name: "USD Coin".into(),
            domain_version: "2".into(),
            value: a["value"].as_str().unwrap().parse().unwrap(),
            valid_after: a["validAfter"].as_str().unwrap().parse().unwrap(),
            valid_before: a["validBefore"].as_str().unwrap().parse().unwrap(),
            nonce,
        };
        signed.push((authorization, signature));
    }
    // Settled in the reverse order, in one transaction: each Transfer pairs with its own log.
    signed.reverse();
    let tx = testing::settle_batch(&x.org.anvil.url, FACILITATOR_KEY, &settler, &x.usdc, &signed).await.unwrap();
    x.org.mine().await;
    node.tick().await;
    for id in &ids {
        let s = agent.call("spend_status", json!({ "decision_id": id })).await;
        assert_eq!(
            (s.data["reconciliation"].as_str(), s.data["tx_hash"].as_str()),
            (Some("matched"), Some(tx.as_str())),
            "{}",
            s.text
        );
    }
    assert!(node.services.operators.frozen().await.unwrap().is_empty());
}
