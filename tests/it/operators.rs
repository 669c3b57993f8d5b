//! Operators at work on a real anvil and a real daemon: approvals (CLI and admin API, roles,
//! the intent hash), delays cancelled or frozen, freezes, decommissioning, status, exposures,
//! reports, health and metrics, and the audit chain behind all of it.

use serde_json::{json, Value};
use spendguard_tests::evm_org::*;
use spendguard_tests::mcp_client::McpAgent;
use spendguard_tests::prelude::*;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

/// `spendguard --config CONFIG ARGS…`.
pub(crate) fn cli(config: &Path, args: &[&str]) -> Output {
    std::process::Command::new(EvmOrg::binary())
        .arg("--config")
        .arg(config)
        .args(args)
        .env("SPENDGUARD_LOG", "error")
        .output()
        .expect("run spendguard")
}

pub(crate) fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub(crate) fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// An admin API call as an operator; returns the status and the JSON answer.
async fn admin(base: &str, token: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let url = format!("{base}/admin{path}");
    let mut req = if method == "GET" { client.get(&url) } else { client.post(&url) };
    if !token.is_empty() {
        req = req.bearer_auth(token);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("admin request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn wait_for(what: &str, done: impl AsyncFnMut() -> bool) {
    spendguard_tests::wait_until(what, Duration::from_secs(30), done).await;
}

const SOLO: &str = r#"
[[wallet]]
id = "solo"
chain = "eth-local"
address = "0x14dc79964da2c08b23698b3d3cc7ca32193d9955"

[[agent]]
id = "solo-bot"
department = "ops"
wallets = ["solo"]

[[operator]]
id = "viewer@e2e.example"
roles = ["viewer"]

[[report]]
id = "every-2s"
schedule = "*/2 * * * * *"
formats = ["json", "html"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_approve_reject_cancel_freeze_and_decommission() {
    let org = EvmOrg::start(&format!("{BUYER_TIERS}{SOLO}")).await;
    let config = org.config_path.clone();
    let (daemon, url) = org.start_daemon();
    let base = url.trim_end_matches("/mcp").to_string();
    let agent = McpAgent::connect_http(&url, &org.tokens["buyer"]).await;
    let pay = |amount: &str| json!({ "wallet": "hot", "to": PAYEE, "amount": amount, "asset": "TUSD" });
    let before = org.token_balance(PAYEE).await;

    // Operator tokens for the admin API.
    let token = |op: &str| {
        let o = cli(&config, &["operator", "token", op]);
        assert!(o.status.success(), "{}", err(&o));
        out(&o).trim().to_string()
    };
    let (approver, viewer) = (token("ops@e2e.example"), token("viewer@e2e.example"));
    let o = cli(&config, &["operator", "token", "nobody@e2e.example"]);
    assert!(!o.status.success() && err(&o).contains("no operator \"nobody@e2e.example\""), "{}", err(&o));

    // Three approval requests and a delay.
    let mut pending = vec![];
    for amount in ["1500", "1200", "1100"] {
        let r = agent.call("spend", pay(amount)).await;
        assert_eq!(r.data["status"], "pending_approval", "{}", r.text);
        pending.push(r.data["decision_id"].as_str().unwrap().to_string());
    }
    let listed = out(&cli(&config, &["approvals", "list"]));
    assert!(pending.iter().all(|id| listed.contains(id.as_str())), "{listed}");
    let shown: Value = serde_json::from_str(&out(&cli(&config, &["approvals", "show", &pending[0]]))).unwrap();
    let intent = shown["intent_hash"].as_str().expect("intent hash").to_string();
    assert_eq!(intent.len(), 64);

    // Roles: the viewer may not approve, through either door.
    let o = cli(&config, &["approvals", "approve", &pending[0], "--as", "viewer@e2e.example"]);
    assert!(!o.status.success() && err(&o).contains("does not hold the role \"approver\""), "{}", err(&o));
    let (status, body) = admin(&base, &viewer, "POST", &format!("/approvals/{}/approve", pending[0]), None).await;
    assert_eq!(status, 403, "{body}");
    // No token, or an agent's token, is not an operator.
    assert_eq!(admin(&base, "", "GET", "/approvals", None).await.0, 401);
    assert_eq!(admin(&base, &org.tokens["buyer"], "GET", "/approvals", None).await.0, 401);

    // Approving binds the intent hash shown: a different one is refused, the right one executes.
    let approve = format!("/approvals/{}/approve", pending[0]);
    let (status, body) = admin(&base, &approver, "POST", &approve, Some(json!({"intent_hash": "00".repeat(32)}))).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = admin(&base, &approver, "POST", &approve, Some(json!({"intent_hash": intent}))).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["tx_hash"].as_str().is_some_and(|h| h.starts_with("0x")), "{body}");
    let (status, _) = admin(&base, &approver, "POST", &approve, None).await;
    assert_eq!(status, 403, "approving twice is refused");

    // Reject through the CLI; its reservation is released.
    let o = cli(&config, &["approvals", "reject", &pending[1], "--as", "ops@e2e.example", "--reason", "not budgeted"]);
    assert!(o.status.success(), "{}", err(&o));
    // An intent changed in the database after the request is never approved.
    let db = org.dir.path().join("spendguard.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute("UPDATE decisions SET amount = '1' WHERE id = ?1", [&pending[2]]).unwrap();
    let o = cli(&config, &["approvals", "approve", &pending[2], "--as", "ops@e2e.example"]);
    assert!(!o.status.success() && err(&o).contains("intent hash"), "{}", err(&o));
    conn.execute("UPDATE decisions SET amount = '1100' WHERE id = ?1", [&pending[2]]).unwrap();
    // The CLI approves; it cannot unlock keys here (no passwords), so the daemon executes it.
    let o = cli(&config, &["approvals", "approve", &pending[2], "--as", "ops@e2e.example"]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(out(&o).contains("spendguard serve"), "{}", out(&o));
    let node = org.node().await;
    let d = |id: String| {
        let node = node.clone();
        async move { node.services.operators.decision(&id).await.unwrap().unwrap() }
    };
    // (Before the freeze below: a freeze stops an approved spend that was not signed yet.)
    wait_for("the daemon to execute the CLI's approval", async || {
        matches!(d(pending[2].clone()).await.status.as_str(), "broadcast" | "confirmed")
    })
    .await;

    // A delay cancelled by an operator, and one a freeze catches before it is due.
    let delayed = agent.call("spend", pay("500")).await;
    let delayed = delayed.data["decision_id"].as_str().unwrap().to_string();
    assert!(out(&cli(&config, &["delays", "list"])).contains(&delayed));
    let o = cli(&config, &["delays", "cancel", &delayed, "--as", "ops@e2e.example", "--reason", "duplicate"]);
    assert!(o.status.success(), "{}", err(&o));
    let frozen_later = agent.call("spend", pay("400")).await;
    let frozen_later = frozen_later.data["decision_id"].as_str().unwrap().to_string();
    let (status, body) =
        admin(&base, &approver, "POST", "/freeze", Some(json!({"scope": "agent:buyer", "reason": "review"}))).await;
    assert_eq!(status, 200, "{body}");
    wait_for("the frozen delay to be released", async || d(frozen_later.clone()).await.status.as_str() == "released")
        .await;
    assert!(d(frozen_later.clone()).await.failure.unwrap().contains("not executed: agent buyer is frozen"));
    let (status, body) =
        admin(&base, &approver, "POST", "/unfreeze", Some(json!({"scope": "agent:buyer", "ack": ""}))).await;
    assert_eq!(status, 400, "an unfreeze needs an ack: {body}");
    let (status, body) =
        admin(&base, &approver, "POST", "/unfreeze", Some(json!({"scope": "agent:buyer", "ack": "reviewed"}))).await;
    assert_eq!((status, &body["unfrozen"]), (200, &json!(true)), "{body}");

    // Both approved spends land, each exactly once; the rejected and cancelled ones never do.
    for id in [&pending[0], &pending[2]] {
        wait_for("an approved spend to confirm", async || d(id.clone()).await.status.as_str() == "confirmed").await;
    }
    assert_eq!(org.token_balance(PAYEE).await - before, (1500 + 1100) * 1_000_000);
    assert_eq!(d(pending[1].clone()).await.failure.as_deref(), Some("rejected by ops@e2e.example: not budgeted"));
    assert_eq!(d(pending[2].clone()).await.approved_by.as_deref(), Some("ops@e2e.example"));
    assert_eq!(d(delayed.clone()).await.failure.as_deref(), Some("cancelled by ops@e2e.example: duplicate"));

    // Exposures: one open approval request.
    let open = agent.call("spend", pay("1300")).await;
    assert_eq!(open.data["status"], "pending_approval");
    let e: Value = serde_json::from_str(&out(&cli(&config, &["exposures", "--horizon", "24h", "--json"]))).unwrap();
    assert_eq!((e["pending_usd"].as_str(), e["total_usd"].as_str()), (Some("1300.00"), Some("1300.00")), "{e}");
    let o = cli(&config, &["exposures", "--horizon", "soon"]);
    assert!(!o.status.success() && err(&o).contains("--horizon \"soon\""), "{}", err(&o));

    // Decommission: the CLI for an agent sharing its wallets, the API for one with its own.
    let o = cli(&config, &["agent", "decommission", "other", "--reason", "retired", "--as", "ops@e2e.example"]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(out(&o).matches("frozen: ").count(), 1, "cold is shared, only the agent is frozen: {}", out(&o));
    let (status, body) =
        admin(&base, &approver, "POST", "/agents/solo-bot/decommission", Some(json!({"reason": "key leaked"}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["frozen"], json!(["agent:solo-bot", "wallet:solo"]));
    let frozen = out(&cli(&config, &["frozen"]));
    assert!(frozen.contains("wallet:solo\tby ops@e2e.example") && frozen.contains("agent:other"), "{frozen}");

    // Status: balances, today's spend, utilisation, the open request, the freezes. "Today" is the
    // UTC day the status was taken on: a run across midnight expects what that day holds.
    let (status_text, day) = loop {
        let day = chrono::Utc::now().date_naive();
        let text = out(&cli(&config, &["status"]));
        if chrono::Utc::now().date_naive() == day {
            break (text, day);
        }
    };
    let spent_on_day: rust_decimal::Decimal = node
        .ledger()
        .decisions(None)
        .await
        .unwrap()
        .iter()
        .filter(|d| d.wallet == "hot" && d.created_at.date_naive() == day)
        .filter(|d| d.status.counts_as().is_some())
        .filter(|d| !matches!(d.status, SpendStatus::Queued | SpendStatus::PendingApproval))
        .map(|d| d.usd.unwrap())
        .sum();
    let all_today = node.ledger().decisions(None).await.unwrap().iter().all(|d| d.created_at.date_naive() == day);
    let spent_today = if all_today {
        "spent today: $2600.00".to_string()
    } else {
        format!("spent today: ${}", spendguard_service::Usd(spent_on_day))
    };
    for expected in
        ["wallet hot (eth-local", &spent_today, "agent buyer:", "% ", "pending approvals (1)", "wallet:solo"]
    {
        assert!(status_text.contains(expected), "missing {expected:?} in\n{status_text}");
    }
    let s: Value = serde_json::from_str(&out(&cli(&config, &["status", "--json"]))).unwrap();
    let hot = s["wallets"].as_array().unwrap().iter().find(|w| w["wallet"] == "hot").unwrap();
    assert!(hot["balances"].as_array().unwrap().iter().any(|b| b[0] == "eth-local:TUSD"), "{hot}");

    // The report: the daemon's watcher matched both approved transfers; nothing unexplained.
    wait_for("the watcher to match the approved spends", async || {
        let r: Value = serde_json::from_str(&out(&cli(
            &config,
            &["report", "--from", "2020-01-01", "--to", "2100-01-01", "--format", "json"],
        )))
        .unwrap();
        r["reconciliation"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["class"] == "matched" && c["count"].as_u64() >= Some(2))
    })
    .await;
    let r: Value = serde_json::from_str(&out(&cli(
        &config,
        &["report", "--from", "2020-01-01", "--to", "2100-01-01", "--format", "json"],
    )))
    .unwrap();
    assert_eq!(r["totals"]["org"]["usd"], "2600.00", "{r}");
    assert!(r["exceptions"].as_array().unwrap().is_empty(), "{r}");
    for format in ["csv", "md", "html"] {
        let o = cli(&config, &["report", "--from", "2020-01-01", "--to", "2100-01-01", "--format", format]);
        assert!(o.status.success() && out(&o).contains("buyer"), "{format}: {}", err(&o));
    }
    let o = cli(&config, &["report", "--from", "yesterday", "--to", "2100-01-01"]);
    assert!(!o.status.success() && err(&o).contains("--from \"yesterday\" is not a time"), "{}", err(&o));

    // The daemon wrote its scheduled reports; its health and metrics answer.
    let reports = org.dir.path().join("reports");
    wait_for("a scheduled report", async || {
        std::fs::read_dir(&reports)
            .is_ok_and(|d| d.filter_map(Result::ok).any(|f| f.file_name().to_string_lossy().ends_with(".html")))
    })
    .await;
    let health = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let metrics = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    for expected in [
        "spendguard_decisions_total{outcome=\"require_approval\"} 4",
        "spendguard_decisions_total{outcome=\"delay\"} 2",
        "spendguard_reservation_seconds_count 6",
        "spendguard_watcher_lag{chain=\"eth-local\"}",
    ] {
        assert!(metrics.contains(expected), "missing {expected:?} in\n{metrics}");
    }

    // Everything above is in the audit log, and the chain is intact.
    let o = cli(&config, &["audit", "verify"]);
    assert!(o.status.success() && out(&o).starts_with("ok: "), "{}{}", out(&o), err(&o));
    let o = cli(&config, &["audit", "export", "--agent", "buyer", "--min-usd", "1000", "--format", "jsonl"]);
    let kinds: Vec<String> = out(&o)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["kind"].as_str().unwrap().to_string())
        .collect();
    for kind in ["decision", "approved", "rejected", "status", "signed"] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} entry in {kinds:?}");
    }
    assert!(EvmOrg::stop_daemon(daemon), "the daemon stops cleanly on SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_no_decision_and_leaves_no_reservation_dangling() {
    let org = EvmOrg::start(BUYER_TIERS).await;
    let (daemon, url) = org.start_daemon();
    let before = org.token_balance(PAYEE).await;
    // Six clients pay 1 TUSD (INSTANT: reserved, signed and broadcast before the answer) as
    // fast as they can, until the daemon is gone.
    let mut clients = vec![];
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for c in 0..6 {
        let agent = McpAgent::connect_http(&url, &org.tokens["buyer"]).await;
        let count = std::sync::Arc::clone(&count);
        clients.push(tokio::spawn(async move {
            let mut answered = vec![];
            for i in 0.. {
                let args = json!({ "wallet": if c % 2 == 0 { "hot" } else { "cold" }, "to": PAYEE, "amount": "1",
                    "asset": "TUSD", "idempotency_key": format!("load-{c}-{i}") });
                match agent.try_call("spend", args).await {
                    Ok(r) => {
                        assert_eq!(r.data["status"], "executed", "{}", r.text);
                        answered.push(r.data["decision_id"].as_str().unwrap().to_string());
                        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    Err(_) => break,
                }
            }
            answered
        }));
    }
    // The daemon is stopped under load: once the clients have had ten spends answered, while
    // they keep paying.
    spendguard_tests::wait_until("ten answered spends", Duration::from_secs(120), async || {
        count.load(std::sync::atomic::Ordering::SeqCst) >= 10
    })
    .await;
    assert!(EvmOrg::stop_daemon(daemon), "the daemon exits cleanly on SIGTERM");
    let mut answered = vec![];
    for c in clients {
        answered.extend(c.await.unwrap());
    }
    assert!(answered.len() >= 10, "the load was real: {} spends answered", answered.len());

    // Every answered spend is in the ledger, broadcast; nothing was left reserved or unsent.
    let node = org.node().await;
    let decisions = node.ledger().decisions(None).await.unwrap();
    let stuck: Vec<_> = decisions.iter().filter(|d| matches!(d.status.as_str(), "reserved" | "signed")).collect();
    assert!(stuck.is_empty(), "dangling after shutdown: {stuck:?}");
    for id in &answered {
        let d = decisions.iter().find(|d| &d.id == id).unwrap_or_else(|| panic!("answered {id} is not in the ledger"));
        assert!(d.tx_hash.is_some(), "{id} answered without its transaction");
    }
    // Restarted, the node settles them all: the payee got exactly one token per decision. The
    // restart unlocks two keystores (scrypt) and indexes every block of the load (with its call
    // traces and balance checks): on a busy 2-core machine that takes longer than 30 s.
    let (daemon, _) = org.start_daemon();
    spendguard_tests::wait_until("every spend to confirm", Duration::from_secs(120), async || {
        node.ledger().decisions(None).await.unwrap().iter().all(|d| d.status.as_str() == "confirmed")
    })
    .await;
    assert!(EvmOrg::stop_daemon(daemon));
    let confirmed = node.ledger().decisions(None).await.unwrap().len() as u128;
    assert!(confirmed >= answered.len() as u128);
    assert_eq!(org.token_balance(PAYEE).await - before, confirmed * 1_000_000);
}

const ROLES: &str = r#"
[[operator]]
id = "viewer@e2e.example"
roles = ["viewer"]

[[operator]]
id = "security@e2e.example"
roles = ["security"]

[roles]
unfreeze_reconciler = ["security"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_action_needs_its_role_and_lifting_a_reconciler_freeze_its_own() {
    use spendguard_evm::testing::send_native;
    let org = EvmOrg::start(&format!("{BUYER_TIERS}{ROLES}")).await;
    let config = org.config_path.clone();
    let (daemon, url) = org.start_daemon();
    let base = url.trim_end_matches("/mcp").to_string();
    let token = |op: &str| {
        let o = cli(&config, &["operator", "token", op]);
        assert!(o.status.success(), "{}", err(&o));
        out(&o).trim().to_string()
    };
    let (admin_token, viewer, security) =
        (token("ops@e2e.example"), token("viewer@e2e.example"), token("security@e2e.example"));
    let agent = McpAgent::connect_http(&url, &org.tokens["buyer"]).await;
    let queued = agent.call("spend", json!({ "wallet": "hot", "to": PAYEE, "amount": "500", "asset": "TUSD" })).await;
    assert_eq!(queued.data["status"], "queued", "{}", queued.text);
    let id = queued.data["decision_id"].as_str().unwrap().to_string();

    // A viewer reads, and may do nothing else: not freeze, unfreeze, cancel or decommission.
    assert_eq!(admin(&base, &viewer, "GET", "/approvals", None).await.0, 200);
    assert_eq!(admin(&base, &viewer, "GET", "/frozen", None).await.0, 200);
    let writes = [
        ("/freeze".to_string(), json!({"scope": "agent:buyer", "reason": "curious"})),
        ("/unfreeze".to_string(), json!({"scope": "agent:buyer", "ack": "curious"})),
        (format!("/delays/{id}/cancel"), json!({"reason": "curious"})),
        ("/agents/other/decommission".to_string(), json!({"reason": "curious"})),
    ];
    for (path, body) in writes {
        let (status, answer) = admin(&base, &viewer, "POST", &path, Some(body)).await;
        assert_eq!(status, 403, "{path}: {answer}");
        assert!(answer["error"].as_str().unwrap().contains("operator viewer@e2e.example may not"), "{answer}");
    }
    // The CLI refuses the same, and names what is missing.
    let o = cli(&config, &["freeze", "--agent", "buyer", "--reason", "curious", "--as", "viewer@e2e.example"]);
    assert!(
        !o.status.success() && err(&o).contains("may not freeze: that needs one of the roles \"admin\""),
        "{}",
        err(&o)
    );
    let o = cli(&config, &["delays", "cancel", &id, "--as", "viewer@e2e.example"]);
    assert!(!o.status.success() && err(&o).contains("may not cancel a queued spend"), "{}", err(&o));
    let o = cli(&config, &["freeze", "--agent", "buyer", "--reason", "x", "--as", "nobody@e2e.example"]);
    assert!(!o.status.success() && err(&o).contains("no operator \"nobody@e2e.example\" is configured"), "{}", err(&o));
    assert!(out(&cli(&config, &["frozen"])).contains("nothing is frozen"));

    // An admin freezes and lifts an operator's freeze.
    let (status, body) =
        admin(&base, &admin_token, "POST", "/freeze", Some(json!({"scope": "agent:buyer", "reason": "review"}))).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) =
        admin(&base, &admin_token, "POST", "/unfreeze", Some(json!({"scope": "agent:buyer", "ack": "reviewed"}))).await;
    assert_eq!((status, &body["unfrozen"]), (200, &json!(true)), "{body}");

    // Money leaves hot with no decision behind it: the daemon's reconciler freezes the wallet.
    send_native(&org.anvil.url, spendguard_tests::anvil::DEV_KEYS[1], PAYEE2, 1_000_000_000_000_000).await.unwrap();
    org.mine().await;
    wait_for("the reconciler to freeze hot", async || {
        out(&cli(&config, &["frozen"])).contains("wallet:hot\tby reconciler")
    })
    .await;
    // Lifting it takes the role [roles] unfreeze_reconciler names, which the admin lacks.
    let lift = json!({"scope": "wallet:hot", "ack": "key rotated"});
    let (status, body) = admin(&base, &admin_token, "POST", "/unfreeze", Some(lift.clone())).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("unfreeze what the reconciler froze"), "{body}");
    let o = cli(&config, &["unfreeze", "--wallet", "hot", "--ack", "key rotated", "--as", "ops@e2e.example"]);
    assert!(!o.status.success() && err(&o).contains("unfreeze_reconciler"), "{}", err(&o));
    let (status, body) = admin(&base, &security, "POST", "/unfreeze", Some(lift)).await;
    assert_eq!((status, &body["unfrozen"]), (200, &json!(true)), "{body}");
    assert!(EvmOrg::stop_daemon(daemon));
}
