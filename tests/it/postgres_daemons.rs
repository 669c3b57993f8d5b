//! Several daemons on one PostgreSQL ledger, as an operator would run them behind a load
//! balancer: 32 MCP clients (the official Python SDK) spread over three `spendguard serve`
//! processes spend from one wallet against one budget; the daemon watching the chain is
//! SIGKILLed mid-run, another takes its watcher lease over, and a rogue transfer sent after
//! that still freezes the wallet. And `spendguard migrate` carries an SQLite ledger over with
//! its audit chain intact.

use crate::operators::{cli, err, out};
use crate::race::{hex_u128, start_race};
use serde_json::{json, Value};
use spendguard_evm::testing::{self, rpc_call};
use spendguard_tests::anvil::DEV_KEYS;
use spendguard_tests::evm_org::*;
use spendguard_tests::mcp_client::McpAgent;
use spendguard_tests::postgres::Postgres;
use spendguard_tests::prelude::*;
use std::collections::HashSet;
use std::time::Duration;

const BUDGET: &str = r#"
[[policy]]
id = "racer"
scope = "agent:buyer"
limits = [ { window = "24h", max_amount = "0.1", asset = "eth-local:ETH" } ]
"#;

/// `spendguard status --json` on `config`.
fn status(config: &std::path::Path) -> Value {
    let o = cli(config, &["status", "--json"]);
    assert!(o.status.success(), "{}{}", out(&o), err(&o));
    serde_json::from_str(&out(&o)).expect("status JSON")
}

/// Who holds the chain's watcher lease, as `status` shows it, while the lease runs.
fn live_watcher(config: &std::path::Path) -> Option<String> {
    let s = status(config);
    let w = s["watchers"].as_array()?.iter().find(|w| w["chain"] == "eth-local")?.clone();
    (w["live"] == true).then(|| w["holder"].as_str().unwrap_or_default().to_string())
}

/// The port a daemon's `/mcp` URL names.
fn port_of(url: &str) -> String {
    url.trim_start_matches("http://").split('/').next().unwrap().rsplit(':').next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_on_postgres_share_one_budget_and_survive_a_killed_watcher() {
    let server = Postgres::start();
    let url = server.database();
    let org = EvmOrg::start(BUDGET).await;
    // The org's config has watcher_lease = "3s".
    let config = org.variant("postgres", &[("database = \"spendguard.db\"", &format!("database = \"{url}\""))]);
    let config_path = org.dir.path().join("postgres.toml");
    let token = issue_tokens(config, &["buyer"]).await["buyer"].clone();
    let mut daemons: Vec<(Option<spendguard_tests::Daemon>, String)> =
        (0..3).map(|_| org.start_daemon_for(&config_path, &[])).map(|(d, u)| (Some(d), u)).collect();

    // One of them watches the chain.
    let mut holder = None;
    spendguard_tests::wait_until("a daemon to take the watcher lease", Duration::from_secs(30), async || {
        holder = live_watcher(&config_path);
        holder.is_some()
    })
    .await;
    let holder = holder.unwrap();
    let watching = daemons
        .iter()
        .position(|(_, u)| holder.ends_with(&format!(":{}", port_of(u))))
        .unwrap_or_else(|| panic!("the lease holder {holder} is none of the daemons"));

    let urls: Vec<&String> = daemons.iter().map(|(_, u)| u).collect();
    let race = start_race(&json!({ "urls": urls, "token": token, "payee": PAYEE2, "clients": 32, "spends": 6,
                                   "tolerate_loss": true }));

    // Mid-run (some spends decided), the watching daemon dies without a word.
    let ledger = spendguard_node::open_ledger(&spendguard_config::load(&config_path).unwrap()).unwrap();
    spendguard_tests::wait_until("the clients to have spent a little", Duration::from_secs(120), async || {
        ledger.decisions(Some("buyer")).await.unwrap().len() >= 12
    })
    .await;
    let (killed, killed_url) = &mut daemons[watching];
    let mut child = killed.take().unwrap();
    child.kill().expect("SIGKILL the watching daemon");
    child.wait().expect("reap it");
    let killed_port = port_of(killed_url);

    // Another daemon takes the lease over once it runs out.
    let mut successor = None;
    spendguard_tests::wait_until(
        "another daemon to take the watcher lease over",
        Duration::from_secs(60),
        async || {
            successor = live_watcher(&config_path).filter(|h| !h.ends_with(&format!(":{killed_port}")));
            successor.is_some()
        },
    )
    .await;

    let out_race = tokio::task::block_in_place(|| spendguard_tests::finish(race, "race.py", Duration::from_secs(600)));
    assert!(out_race.status.success(), "race.py failed:\n{}", String::from_utf8_lossy(&out_race.stderr));
    let outcomes: Vec<Value> = serde_json::from_slice(&out_race.stdout).expect("outcomes JSON");

    // The survivors finish what the dead one left (its signed spends re-broadcast, receipts
    // followed): nothing stays open.
    spendguard_tests::wait_until("the surviving daemons to settle every spend", Duration::from_secs(240), async || {
        org.mine().await;
        let open = [SpendStatus::Reserved, SpendStatus::Signed, SpendStatus::Broadcast];
        ledger.decisions_in(&open).await.unwrap().is_empty()
    })
    .await;

    let admitted: Vec<&Value> = outcomes.iter().filter(|o| o["status"] == "executed").collect();
    let lost = outcomes.iter().filter(|o| o["status"] == "lost").count();
    assert!(outcomes.iter().all(|o| ["executed", "denied", "lost"].contains(&o["status"].as_str().unwrap_or(""))));
    assert!(outcomes.iter().filter(|o| o["status"] == "denied").all(|o| o["code"] == "WINDOW_LIMIT"), "{outcomes:?}");
    // Exactly one transaction per confirmed spend, consecutive nonces, and every spend a client
    // was told was executed among them.
    let confirmed: Vec<_> = ledger
        .decisions(Some("buyer"))
        .await
        .unwrap()
        .into_iter()
        .filter(|d| d.status == SpendStatus::Confirmed)
        .collect();
    let hashes: HashSet<String> = confirmed.iter().map(|d| d.tx_hash.clone().expect("tx hash")).collect();
    assert_eq!(hashes.len(), confirmed.len(), "no transaction shared by two spends");
    for o in &admitted {
        assert!(hashes.contains(o["tx_hash"].as_str().unwrap()), "admitted spend {o} did not land");
    }
    let sent = hex_u128(&rpc_call(&org.anvil.url, "eth_getTransactionCount", json!([HOT, "latest"])).await.unwrap());
    assert_eq!(sent as usize, confirmed.len(), "the wallet sent exactly the confirmed spends");
    let mut nonces = vec![];
    let mut wei_sent: u128 = 0;
    for h in &hashes {
        let tx = rpc_call(&org.anvil.url, "eth_getTransactionByHash", json!([h])).await.unwrap();
        nonces.push(hex_u128(&tx["nonce"]));
        wei_sent += hex_u128(&tx["value"]);
    }
    nonces.sort_unstable();
    assert_eq!(nonces, (0..confirmed.len() as u128).collect::<Vec<_>>(), "consecutive nonces");
    // Within the budget, and using it: less than the largest spend (0.003 ETH) left over.
    let limit = 100_000_000_000_000_000u128;
    assert!(wei_sent <= limit, "ETH sent {wei_sent} wei exceeds the 0.1 ETH limit");
    assert!(wei_sent > limit - 3_000_000_000_000_000, "the budget was not used up: {wei_sent} wei");

    // A transfer nobody approved, after the takeover: the new watcher freezes the wallet.
    let rogue = testing::send_native(&org.anvil.url, DEV_KEYS[1], PAYEE, 1_000_000_000_000_000).await.unwrap();
    let survivor = &daemons.iter().find(|(d, _)| d.is_some()).unwrap().1;
    let agent = McpAgent::connect_http(survivor, &token).await;
    let mut refused = String::new();
    spendguard_tests::wait_until("the rogue transfer to freeze the wallet", Duration::from_secs(60), async || {
        org.mine().await;
        let r = agent.call("spend", json!({ "wallet": "hot", "to": PAYEE, "amount": "0.0001" })).await;
        refused = r.text;
        refused.starts_with("KILL_SWITCH: wallet hot is frozen")
    })
    .await;
    let outflows = ledger.outflows(Some("eth-local")).await.unwrap();
    assert!(outflows.iter().any(|o| o.tx_hash == rogue && o.class == Class::Unexplained), "{outflows:#?}");

    // The takeover is on the record, and the audit chain that three daemons appended to is whole.
    let taken = cli(&config_path, &["audit", "export", "--format", "jsonl"]);
    let lines = out(&taken);
    assert!(
        lines.lines().any(|l| l.contains("lease_taken") && l.contains(&format!(":{killed_port}"))),
        "no lease_taken entry naming the killed daemon as previous holder:\n{lines}"
    );
    let verify = cli(&config_path, &["audit", "verify"]);
    assert!(verify.status.success() && out(&verify).starts_with("ok: "), "{}{}", out(&verify), err(&verify));
    eprintln!(
        "{} spends admitted ({} confirmed, {lost} calls lost with the killed daemon), {wei_sent} wei sent; \
         lease {holder} -> {}",
        admitted.len(),
        confirmed.len(),
        successor.unwrap()
    );
    for (daemon, _) in daemons.iter_mut() {
        if let Some(d) = daemon.take() {
            assert!(EvmOrg::stop_daemon(d), "daemons stop cleanly on SIGTERM");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_copies_an_sqlite_ledger_into_postgres_with_its_audit_chain() {
    let server = Postgres::start();
    let url = server.database();
    let org = EvmOrg::start("").await;
    // Some history on SQLite: spends, an unexplained transfer and the freeze it caused.
    let node = org.node().await;
    let agent = McpAgent::connect(&node.services, "buyer").await;
    for amount in ["3", "4"] {
        let r = agent.call("spend", json!({ "wallet": "hot", "to": PAYEE, "amount": amount, "asset": "TUSD" })).await;
        assert_eq!(r.data["status"], "executed", "{}", r.text);
    }
    testing::send_token(&org.anvil.url, DEV_KEYS[1], &org.token, PAYEE, 1_000_000).await.unwrap();
    spendguard_tests::wait_until("the rogue transfer to freeze the wallet", Duration::from_secs(60), async || {
        org.mine().await;
        node.tick().await;
        !node.ledger().freezes().await.unwrap().is_empty()
    })
    .await;
    drop(agent);
    drop(node);
    let sqlite_verify = cli(&org.config_path, &["audit", "verify"]);
    assert!(sqlite_verify.status.success(), "{}", err(&sqlite_verify));
    let head = out(&sqlite_verify).trim().rsplit(' ').next().unwrap().to_string();

    // A URL that is not PostgreSQL's is refused, naming the flag.
    let o = cli(&org.config_path, &["migrate", "--to", "mysql://x/y"]);
    assert!(!o.status.success() && err(&o).contains("--to"), "{}", err(&o));

    let o = cli(&org.config_path, &["migrate", "--to", &url]);
    assert!(o.status.success(), "{}{}", out(&o), err(&o));
    let text = out(&o);
    assert!(text.contains("audit chain verified on the copy"), "{text}");
    assert!(text.contains(&head), "the copy's head is the file's ({head}):\n{text}");
    assert!(!text.contains("password"), "{text}");

    // The daemons' view on the copy: the same decisions, the freeze, the chain verified.
    let config = org.variant("migrated", &[("database = \"spendguard.db\"", &format!("database = \"{url}\""))]);
    let migrated = org.dir.path().join("migrated.toml");
    // (It records its configuration, which names another database, first: one entry more.)
    let verify = cli(&migrated, &["audit", "verify"]);
    assert!(verify.status.success() && out(&verify).starts_with("ok: "), "{}{}", out(&verify), err(&verify));
    let frozen = cli(&migrated, &["frozen"]);
    assert!(out(&frozen).contains("wallet:hot"), "{}", out(&frozen));
    let s = status(&migrated);
    let hot = s["wallets"].as_array().unwrap().iter().find(|w| w["wallet"] == "hot").unwrap();
    assert_eq!(hot["frozen"], true, "{hot}");
    // The copy takes new decisions where the file left off (its counters continued).
    let node = org.node_for(config, vec![]).await;
    let agent = McpAgent::connect(&node.services, "buyer").await;
    let r = agent.call("evaluate", json!({ "wallet": "cold", "to": PAYEE, "amount": "1", "asset": "TUSD" })).await;
    assert!(!r.is_error, "{}", r.text);

    // Into a database that already holds a ledger: refused, nothing written.
    let o = cli(&org.config_path, &["migrate", "--to", &url]);
    assert!(!o.status.success() && err(&o).contains("already holds a ledger"), "{}", err(&o));
}
