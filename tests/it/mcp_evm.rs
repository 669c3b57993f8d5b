//! Agents spend through spendguard's MCP tools on a real anvil, with rmcp's own client.

use serde_json::json;
use spendguard_core::model::Scope;
use spendguard_core::Freeze;
use spendguard_tests::evm_org::*;
use spendguard_tests::mcp_client::McpAgent;
use spendguard_tests::prelude::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spends_at_every_tier() {
    let org = EvmOrg::start(BUYER_TIERS).await;
    let node = org.node().await;
    let agent = McpAgent::connect(&node.services, "buyer").await;
    let before = org.token_balance(PAYEE).await;

    let pay = |amount: &str| json!({ "wallet": "hot", "to": PAYEE, "amount": amount, "asset": "TUSD", "memo": "e2e" });
    let instant = agent.call("spend", pay("5")).await;
    assert!(!instant.is_error, "{}", instant.text);
    assert_eq!((instant.data["status"].as_str(), instant.data["tier"].as_str()), (Some("executed"), Some("INSTANT")));
    assert!(instant.data["tx_hash"].as_str().is_some_and(|h| h.starts_with("0x") && h.len() == 66));

    let notify = agent.call("spend", pay("50")).await;
    assert_eq!((notify.data["status"].as_str(), notify.data["tier"].as_str()), (Some("executed"), Some("NOTIFY")));
    let events = node.ledger().events(Some(EventKind::NotifyTier)).await.unwrap();
    assert_eq!(events.len(), 1, "NOTIFY records a notification event");

    let delayed = agent.call("spend", pay("500")).await;
    assert_eq!((delayed.data["status"].as_str(), delayed.data["tier"].as_str()), (Some("queued"), Some("DELAY")));
    assert!(delayed.data["execute_after"].is_string());
    assert_eq!(delayed.data["reasons"][0]["code"], "DELAYED");

    let approval = agent.call("spend", pay("5000")).await;
    assert_eq!(
        (approval.data["status"].as_str(), approval.data["tier"].as_str()),
        (Some("pending_approval"), Some("APPROVAL"))
    );
    assert!(approval.data["approval_expires_at"].is_string());

    // Not yet due: nothing happens to the queued spend.
    node.tick().await;
    let id = delayed.data["decision_id"].as_str().unwrap();
    assert_eq!(agent.call("spend_status", json!({ "decision_id": id })).await.data["status"], "queued");
    spendguard_tests::wait_until("the DELAY spend to be executed once due", Duration::from_secs(30), async || {
        node.tick().await;
        let status = agent.call("spend_status", json!({ "decision_id": id })).await;
        matches!(status.data["status"].as_str(), Some("executed" | "confirmed"))
    })
    .await;

    // The approval request can be cancelled by the agent; its budget is released.
    let pending = approval.data["decision_id"].as_str().unwrap();
    let cancelled = agent.call("cancel_spend", json!({ "decision_id": pending })).await;
    assert_eq!(cancelled.data["status"], "released", "{}", cancelled.text);
    let again = agent.call("cancel_spend", json!({ "decision_id": pending })).await;
    assert!(again.is_error && again.text.starts_with("INVALID_REQUEST"), "{}", again.text);

    // Everything executed landed: 5 + 50 + 500 TUSD, confirmed with receipts.
    node.tick().await;
    assert_eq!(org.token_balance(PAYEE).await - before, 555 * 1_000_000);
    let first = agent.call("spend_status", json!({ "decision_id": instant.data["decision_id"] })).await;
    assert_eq!(first.data["status"], "confirmed", "{}", first.text);
    assert!(first.data["confirmations"].as_u64().unwrap() >= 1);
    assert!(first.data["fee_paid"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_eth_spend_lands_and_balance_reads_the_chain() {
    let org = EvmOrg::start(BUYER_TIERS).await;
    let node = org.node().await;
    let agent = McpAgent::connect(&node.services, "buyer").await;
    let r = agent.call("spend", json!({ "wallet": "hot", "to": PAYEE2, "amount": "0.001" })).await;
    assert_eq!(r.data["status"], "executed", "{}", r.text);
    let balance = agent.call("balance", json!({ "wallet": "hot" })).await;
    assert!(!balance.is_error, "{}", balance.text);
    let wallet = &balance.data["wallets"][0];
    assert_eq!(wallet["wallet"], "hot");
    let assets: Vec<&str> =
        wallet["balances"].as_array().unwrap().iter().map(|b| b["asset"].as_str().unwrap()).collect();
    assert_eq!(assets, ["eth-local:ETH", "eth-local:TUSD"]);
    assert_eq!(wallet["balances"][1]["amount"], "100000");
    assert!(wallet["limits"].as_array().unwrap().iter().any(|l| l["policy_id"] == "buyer" && l["window"] == "24h"));
    let all = agent.call("balance", json!({})).await;
    assert_eq!(all.data["wallets"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_budget_pools_both_wallets() {
    let org = EvmOrg::start("").await;
    let agent = McpAgent::connect(&org.node().await.services, "saver").await;
    let first = agent.call("spend", json!({ "wallet": "hot", "to": PAYEE, "amount": "60", "asset": "TUSD" })).await;
    assert_eq!(first.data["status"], "executed", "{}", first.text);
    let second = agent.call("spend", json!({ "wallet": "cold", "to": PAYEE, "amount": "50", "asset": "TUSD" })).await;
    assert!(second.is_error);
    assert_eq!(
        second.text.lines().next().unwrap(),
        "WINDOW_LIMIT: agent saver 24h spend 60.00 + reserved 0.00 + 50.00 = 110.00 USD exceeds 100.00 USD"
    );
    assert_eq!(second.data["reasons"][0]["policy_id"], "saver-daily");
    assert_eq!(second.data["status"], "denied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_retry_pays_once_and_a_conflicting_key_is_refused() {
    let org = EvmOrg::start(BUYER_TIERS).await;
    let agent = McpAgent::connect(&org.node().await.services, "buyer").await;
    let before = org.token_balance(PAYEE).await;
    let args = json!({ "wallet": "hot", "to": PAYEE, "amount": "7", "asset": "TUSD", "idempotency_key": "inv-1" });
    let first = agent.call("spend", args.clone()).await;
    let retry = agent.call("spend", args).await;
    assert_eq!(first.data["decision_id"], retry.data["decision_id"]);
    assert_eq!(retry.data["replayed"], true);
    assert_eq!(first.data["tx_hash"], retry.data["tx_hash"]);
    assert_eq!(org.token_balance(PAYEE).await - before, 7_000_000, "paid once");
    let conflict = agent
        .call(
            "spend",
            json!({ "wallet": "hot", "to": PAYEE, "amount": "8", "asset": "TUSD", "idempotency_key": "inv-1" }),
        )
        .await;
    assert!(conflict.is_error && conflict.text.starts_with("IDEMPOTENCY_CONFLICT: "), "{}", conflict.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_agent_can_still_read_but_not_spend() {
    let org = EvmOrg::start(BUYER_TIERS).await;
    let node = org.node().await;
    let agent = McpAgent::connect(&node.services, "buyer").await;
    let paid = agent.call("spend", json!({ "wallet": "hot", "to": PAYEE, "amount": "1", "asset": "TUSD" })).await;
    node.ledger()
        .freeze(Freeze {
            scope: Scope::Agent("buyer".into()),
            frozen_by: "ops@e2e.example".into(),
            reason: "investigating".into(),
            frozen_at: chrono::Utc::now(),
            evidence: None,
        })
        .await
        .unwrap();
    let denied = agent.call("spend", json!({ "wallet": "hot", "to": PAYEE, "amount": "1", "asset": "TUSD" })).await;
    assert!(
        denied.is_error && denied.text.starts_with("KILL_SWITCH: agent buyer is frozen by ops@e2e.example"),
        "{}",
        denied.text
    );
    let eval = agent.call("evaluate", json!({ "wallet": "hot", "to": PAYEE, "amount": "1", "asset": "TUSD" })).await;
    assert!(!eval.is_error, "evaluate still answers");
    assert_eq!(eval.data["decision"], "deny");
    assert!(!agent.call("balance", json!({})).await.is_error);
    assert!(!agent.call("spend_status", json!({ "decision_id": paid.data["decision_id"] })).await.is_error);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cannot_touch_another_agents_wallet_or_decisions() {
    let org = EvmOrg::start(BUYER_TIERS).await;
    let node = org.node().await;
    let other = McpAgent::connect(&node.services, "other").await;
    let r = other.call("spend", json!({ "wallet": "hot", "to": PAYEE, "amount": "1", "asset": "TUSD" })).await;
    assert!(
        r.is_error && r.text.starts_with("WALLET_NOT_ASSIGNED: wallet hot is not assigned to agent other"),
        "{}",
        r.text
    );
    let b = other.call("balance", json!({ "wallet": "hot" })).await;
    assert!(b.is_error && b.text.starts_with("WALLET_NOT_ASSIGNED"), "{}", b.text);
    let buyer = McpAgent::connect(&node.services, "buyer").await;
    let mine = buyer.call("spend", json!({ "wallet": "hot", "to": PAYEE, "amount": "1", "asset": "TUSD" })).await;
    let peek = other.call("spend_status", json!({ "decision_id": mine.data["decision_id"] })).await;
    assert!(peek.is_error && peek.text.starts_with("UNKNOWN_DECISION"), "{}", peek.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insufficient_balance_is_refused_before_signing_and_bad_amounts_are_explained() {
    let org = EvmOrg::start(BUYER_TIERS).await;
    let node = org.node().await;
    let agent = McpAgent::connect(&node.services, "buyer").await;
    let r =
        agent.call("spend", json!({ "wallet": "cold", "to": PAYEE, "amount": "100000.000001", "asset": "TUSD" })).await;
    assert!(r.is_error && r.text.starts_with("INSUFFICIENT_BALANCE: wallet cold holds 100000"), "{}", r.text);
    assert!(r.data["tx_hash"].is_null());
    let bad = agent.call("spend", json!({ "wallet": "cold", "to": PAYEE, "amount": "1e3", "asset": "TUSD" })).await;
    assert!(bad.is_error && bad.text.starts_with("INVALID_AMOUNT: "), "{}", bad.text);
    let decimals =
        agent.call("spend", json!({ "wallet": "cold", "to": PAYEE, "amount": "0.0000001", "asset": "TUSD" })).await;
    assert!(decimals.text.starts_with("INVALID_AMOUNT: amount 0.0000001 has 7 decimals"), "{}", decimals.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_no_longer_authenticates() {
    let org = EvmOrg::start("").await;
    let node = org.node().await;
    let token = &org.tokens["other"];
    assert_eq!(node.services.credentials.agent(token).await.unwrap().as_deref(), Some("other"));
    node.ledger().revoke_agent("other", "test", chrono::Utc::now()).await.unwrap();
    assert_eq!(node.services.credentials.agent(token).await.unwrap(), None);
    assert_eq!(node.services.credentials.agent("sgt_not-a-token").await.unwrap(), None);
}

/// What the model sees is reviewed: `SPENDGUARD_BLESS=1` rewrites fixtures/mcp/tools_list.json.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_list_matches_the_golden_snapshot() {
    let org = EvmOrg::start("").await;
    let agent = McpAgent::connect(&org.node().await.services, "buyer").await;
    let tools = agent.tools().await;
    let names: Vec<&str> = tools.as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 6, "{names:?}");
    for t in tools.as_array().unwrap() {
        let a = &t["annotations"];
        let read_only = matches!(t["name"].as_str(), Some("evaluate" | "balance" | "spend_status"));
        assert_eq!(a["readOnlyHint"], read_only, "{}", t["name"]);
        let moves_money = matches!(t["name"].as_str(), Some("spend" | "pay_x402"));
        assert_eq!(a["destructiveHint"], moves_money, "{}", t["name"]);
    }
    let path = spendguard_tests::manifest_dir().join("../fixtures/mcp/tools_list.json");
    let pretty = serde_json::to_string_pretty(&tools).unwrap() + "\n";
    if std::env::var_os("SPENDGUARD_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &pretty).unwrap();
    }
    let golden = std::fs::read_to_string(&path).expect("fixtures/mcp/tools_list.json (SPENDGUARD_BLESS=1 writes it)");
    assert_eq!(pretty, golden, "tools/list changed: review it, then rerun with SPENDGUARD_BLESS=1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fee_cap_is_recorded_and_a_chain_above_it_is_refused() {
    let org = EvmOrg::start(BUYER_TIERS).await;
    let node = org.node().await;
    let agent = McpAgent::connect(&node.services, "buyer").await;
    let paid = agent.call("spend", json!({ "wallet": "hot", "to": PAYEE, "amount": "1", "asset": "TUSD" })).await;
    let record = node.ledger().decision(paid.data["decision_id"].as_str().unwrap()).await.unwrap().unwrap();
    let fee_cap = record.fee_cap.unwrap();
    assert!(fee_cap > rust_decimal::Decimal::ZERO);
    assert!(record.fee_terms.as_deref().unwrap().starts_with("gas "), "{:?}", record.fee_terms);
    // A cap below the chain's base fee: nothing is signed, the reservation is released.
    org.edit_config("max_fee_per_gas_gwei = \"100\"", "max_fee_per_gas_gwei = \"0.000000001\"");
    let capped = McpAgent::connect(&org.node().await.services, "buyer").await;
    let r = capped.call("spend", json!({ "wallet": "hot", "to": PAYEE, "amount": "1", "asset": "TUSD" })).await;
    assert!(r.is_error && r.text.starts_with("SPEND_FAILED: chain eth-local: fee"), "{}", r.text);
    assert!(r.text.contains("exceeds the cap 0.000000001 gwei"), "{}", r.text);
    assert_eq!(r.data["status"], "failed");
    assert!(r.data["tx_hash"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_requests_expire_and_queued_spends_respect_cancels_and_freezes() {
    let org = EvmOrg::start(&BUYER_TIERS.replace("approval_ttl = \"1h\"", "approval_ttl = \"1s\"")).await;
    let node = org.node().await;
    let agent = McpAgent::connect(&node.services, "buyer").await;
    let pay = |amount: &str| json!({ "wallet": "hot", "to": PAYEE, "amount": amount, "asset": "TUSD" });
    let approval = agent.call("spend", pay("5000")).await;
    assert_eq!(approval.data["status"], "pending_approval");
    let queued_cancel = agent.call("spend", pay("200")).await;
    let queued_frozen = agent.call("spend", pay("300")).await;
    assert_eq!(
        (queued_cancel.data["status"].as_str(), queued_frozen.data["status"].as_str()),
        (Some("queued"), Some("queued"))
    );
    let cancelled = agent.call("cancel_spend", json!({ "decision_id": queued_cancel.data["decision_id"] })).await;
    assert_eq!(cancelled.data["status"], "released", "{}", cancelled.text);
    node.ledger()
        .freeze(Freeze {
            scope: Scope::Wallet("hot".into()),
            frozen_by: "ops@e2e.example".into(),
            reason: "rotating keys".into(),
            frozen_at: chrono::Utc::now(),
            evidence: None,
        })
        .await
        .unwrap();
    let before = org.token_balance(PAYEE).await;
    let status = |r: &spendguard_tests::mcp_client::ToolReply| json!({ "decision_id": r.data["decision_id"] });
    // The request expires after 1 s, the DELAY spend falls due after 2 s (and meets the freeze).
    spendguard_tests::wait_until("the expiry and the frozen delay", Duration::from_secs(30), async || {
        node.tick().await;
        let expired = agent.call("spend_status", status(&approval)).await;
        let held = agent.call("spend_status", status(&queued_frozen)).await;
        expired.data["status"] == "released" && held.data["status"] == "released"
    })
    .await;
    let expired = agent.call("spend_status", status(&approval)).await;
    assert_eq!(
        (expired.data["status"].as_str(), expired.data["failure"].as_str()),
        (Some("released"), Some("approval request expired"))
    );
    let held = agent.call("spend_status", status(&queued_frozen)).await;
    assert_eq!(held.data["status"], "released", "{}", held.text);
    assert!(
        held.data["failure"].as_str().unwrap().contains("wallet hot is frozen by ops@e2e.example"),
        "{}",
        held.text
    );
    assert_eq!(org.token_balance(PAYEE).await, before, "nothing left the wallet");
}

/// An agent no policy with a limit bounds spends nothing, however small: `NO_POLICY`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_no_limit_bounds_is_refused_no_policy() {
    let org = EvmOrg::start("").await;
    // Without the organisation's ceiling, only saver is bounded (saver-daily).
    let config = org.variant(
        "uncovered",
        &[("id = \"e2e-ceiling\"\nscope = \"org\"", "id = \"e2e-ceiling\"\nscope = \"agent:saver\"")],
    );
    let node = org.node_for(config, vec![]).await;
    let other = McpAgent::connect(&node.services, "other").await;
    let before = org.token_balance(PAYEE).await;
    let r = other.call("spend", json!({ "wallet": "cold", "to": PAYEE, "amount": "0.01", "asset": "TUSD" })).await;
    assert!(
        r.is_error && r.text.starts_with("NO_POLICY: no policy with a limit (per_tx_usd or limits) covers agent other"),
        "{}",
        r.text
    );
    assert_eq!(r.data["status"], "denied");
    let eval =
        other.call("evaluate", json!({ "wallet": "cold", "to": PAYEE, "amount": "0.01", "asset": "TUSD" })).await;
    assert!(eval.text.starts_with("deny NO_POLICY: "), "{}", eval.text);
    assert_eq!(org.token_balance(PAYEE).await, before, "nothing left the wallet");
}

/// An approval binds what the spend pays on chain: when the configuration changes the token
/// under a pending request (here TUSD's contract now names another token), the approved spend
/// is refused at signing and released, and nothing of either token moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_changed_under_an_approval_is_never_signed() {
    use spendguard_evm::testing::{deploy_token, send_token};
    use spendguard_tests::anvil::DEV_KEYS;
    let org = EvmOrg::start(BUYER_TIERS).await;
    let node = org.node().await;
    let agent = McpAgent::connect(&node.services, "buyer").await;
    let r = agent.call("spend", json!({ "wallet": "hot", "to": PAYEE, "amount": "5000", "asset": "TUSD" })).await;
    assert_eq!(r.data["status"], "pending_approval", "{}", r.text);
    let id = r.data["decision_id"].as_str().unwrap().to_string();

    // Another token the wallet also holds, so that everything but the intent check would pass.
    let other =
        deploy_token(&org.anvil.url, DEV_KEYS[0], spendguard_tests::TEST_TOKEN_BIN, "Other", "OTH", 10u128.pow(12))
            .await
            .unwrap();
    send_token(&org.anvil.url, DEV_KEYS[0], &other, HOT, 10u128.pow(11)).await.unwrap();
    let changed =
        org.variant("token-swapped", &[(&format!("contract = \"{}\"", org.token), &format!("contract = \"{other}\""))]);
    let swapped = org.node_for(changed, vec![]).await;
    let before = (org.token_balance(PAYEE).await, token_of(&org, &other, PAYEE).await);
    let d = swapped.services.operators.approve(&id, "ops@e2e.example", None).await.unwrap();
    assert_eq!(d.status, SpendStatus::Failed, "{d:?}");
    assert!(d.failure.as_deref().unwrap().contains("no longer matches the intent hash"), "{d:?}");
    assert_eq!(d.tx_hash, None, "nothing was signed");
    assert_eq!((org.token_balance(PAYEE).await, token_of(&org, &other, PAYEE).await), before);
}

/// Base units of `token` held by `owner`.
async fn token_of(org: &EvmOrg, token: &str, owner: &str) -> u128 {
    let data = format!("0x70a08231000000000000000000000000{}", &owner[2..]);
    let out =
        spendguard_evm::testing::rpc_call(&org.anvil.url, "eth_call", json!([{ "to": token, "data": data }, "latest"]))
            .await
            .unwrap();
    u128::from_str_radix(out.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}
