//! The demo (`tools/dev/demo.sh`): an organisation on local chains — anvil, and surfpool for
//! Solana — with two departments, three agents and wallets on both chains, run through the MCP
//! tools of a real `spendguard serve` (ETH and SOL priced live by a Chainlink feed and a Pyth
//! account), with an operator approving, cancelling and watching the kill switch catch an
//! EIP-7702 delegation to a drainer and a rogue transfer, a stranger's money reported, and an
//! agent paying from its own (external) wallet after spendguard authorized it, and an x402
//! API paid through `pay_x402` (the official x402 Python SDK as server and facilitator). Ends
//! with the status and the reconciliation report; then the ledger moves to PostgreSQL
//! (`spendguard migrate`), two daemons share it, and the one watching the chain is killed.
#![allow(clippy::unwrap_used, clippy::print_stdout)] // a script: a panic is its failure report

use base64::Engine as _;
use serde_json::{json, Value};
use spendguard_tests::anvil::{Anvil, DEV_KEYS};
use spendguard_tests::evm_org::{keystores, Daemon, EvmOrg, PASSWORD_ENVS};
use spendguard_tests::mcp_client::McpAgent;
use spendguard_tests::surfnet::Surfnet;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

const GITHUB: &str = "0x23618e81e3f5cdf7f54c3d65f7fbc0abf5b21e8f";
const CLOUD: &str = "0xa0ee7a142d267c1f36714e4a8f75612f20a79720";
const ATTACKER: &str = "0x976ea74026e726554db657fa54763abd0c3a0aa9";
const SOL_VENDOR: &str = "4Nd1mBQtrMJVYVfKf2PJy9NZUZdTAsp7D4xWLs4gDB4T";
/// Where the weather API's x402 payments go.
const WEATHER_API: &str = "0x15d34aaf54267db7d7c367839aaf71a00a2c6a65";

fn step(text: &str) {
    println!("\n\x1b[1m== {text}\x1b[0m");
}

fn say(agent: &str, what: &str, r: &spendguard_tests::mcp_client::ToolReply) {
    let d = &r.data;
    if r.is_error {
        println!("  {agent}: {what} → refused: {}", r.text.lines().next().unwrap_or(""));
    } else {
        let extra = d["tx_hash"].as_str().map(|h| format!(" tx {}", &h[..18.min(h.len())])).unwrap_or_default();
        println!(
            "  {agent}: {what} → {} ({}){extra}",
            d["status"].as_str().unwrap_or("?"),
            d["tier"].as_str().unwrap_or("?")
        );
    }
}

/// The paid weather API of the x402 step: the official x402 Python SDK's FastAPI middleware
/// and facilitator (`tests/x402/paid_api.py`), 0.50 USDC a call; stopped when dropped.
struct PaidApi {
    child: std::process::Child,
    url: String,
}

impl PaidApi {
    fn start(rpc: &str, usdc: &str) -> PaidApi {
        let script = spendguard_tests::manifest_dir().join("x402/paid_api.py");
        let mut child = Command::new(spendguard_tests::python::python())
            .arg(script)
            .args([rpc, "31337", DEV_KEYS[5], usdc, WEATHER_API, "500000"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("paid API: {line}")).to_string();
        PaidApi { child, url: format!("http://127.0.0.1:{port}") }
    }
}

impl Drop for PaidApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `spendguard` binary beside this one.
fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("SPENDGUARD_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    exe.with_file_name("spendguard")
}

struct Demo {
    config: PathBuf,
    env: Vec<(String, String)>,
}

impl Demo {
    fn cli(&self, args: &[&str]) -> String {
        let o = Command::new(binary())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("SPENDGUARD_LOG", "error")
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(o.status.success(), "spendguard {args:?} failed: {}{out}", String::from_utf8_lossy(&o.stderr));
        out
    }

    fn show(&self, args: &[&str]) {
        println!("$ spendguard {}", args.join(" "));
        for line in self.cli(args).lines() {
            println!("  {line}");
        }
    }

    fn serve(&self) -> (Daemon, String) {
        let mut child = Command::new(binary())
            .arg("--config")
            .arg(&self.config)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("SPENDGUARD_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        (Daemon::from(child), line.trim().trim_start_matches("spendguard listening on ").to_string())
    }
}

/// Publishes `usd` on the demo's ETH/USD feed (8 decimals), updated `age` seconds ago.
async fn set_eth_price(rpc: &str, feed: &str, usd: i128, age: u64) {
    let now = chrono::Utc::now().timestamp() as u64;
    let round = spendguard_evm::testing::FeedRound {
        id: now,
        answer: usd * 100_000_000,
        started: now - age,
        updated: now - age,
        answered_in: now,
    };
    spendguard_evm::testing::set_feed_round(rpc, DEV_KEYS[0], feed, round).await.unwrap();
}

async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    for _ in 0..300 {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the demo timed out waiting for {what}");
}

#[allow(clippy::too_many_lines)]
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let out_dir = std::env::args().nth(1).map_or_else(|| std::env::temp_dir().join("spendguard-demo"), PathBuf::from);
    // Each run starts afresh, but only ever wipes a directory an earlier demo made.
    let marker = out_dir.join(".spendguard-demo");
    if out_dir.exists() && !marker.exists() && std::fs::read_dir(&out_dir).unwrap().next().is_some() {
        panic!("{} exists and is not the demo's: give the demo an empty or new directory", out_dir.display());
    }
    let _ = std::fs::remove_dir_all(&out_dir);
    std::fs::create_dir_all(&out_dir).unwrap();
    std::fs::write(&marker, "written by spendguard-demo; removed on its next run\n").unwrap();

    step("Local chains: anvil (EVM) and a surfpool surfnet (Solana)");
    let anvil = Anvil::start(None);
    let sol_key = spendguard_solana::Keypair::new();
    let treasury = spendguard_solana::Keypair::new();
    let sol_address = spendguard_solana::keypair_address(&sol_key);
    let surfnet = tokio::task::spawn_blocking({
        let funded = [sol_address.clone(), spendguard_solana::keypair_address(&treasury)];
        move || Surfnet::start(&funded, 100_000_000_000)
    })
    .await
    .unwrap();
    // USDC as Circle's contract behaves: EIP-3009 transfers by signed authorization (x402).
    let bytecode = spendguard_tests::TEST_EIP3009_TOKEN_BIN;
    let usdc =
        spendguard_evm::testing::deploy_eip3009_token(&anvil.url, DEV_KEYS[0], bytecode, 10u128.pow(13)).await.unwrap();
    let (eth_ops, eth_research, eth_own) = (
        spendguard_evm::testing::address_of(DEV_KEYS[1]).unwrap(),
        spendguard_evm::testing::address_of(DEV_KEYS[2]).unwrap(),
        spendguard_evm::testing::address_of(DEV_KEYS[3]).unwrap(),
    );
    for w in [&eth_ops, &eth_research, &eth_own] {
        spendguard_evm::testing::send_token(&anvil.url, DEV_KEYS[0], &usdc, w, 50_000 * 1_000_000).await.unwrap();
    }
    let sol_usdc = spendguard_solana::testing::create_mint(&surfnet.url, &treasury, 6).await.unwrap();
    spendguard_solana::testing::mint_to(&surfnet.url, &treasury, &sol_usdc, &sol_address, 50_000 * 1_000_000)
        .await
        .unwrap();
    println!("  anvil {}  USDC {usdc}\n  surfnet {}  USDC mint {sol_usdc}", anvil.url, surfnet.url);
    let feed_bin = spendguard_tests::TEST_PRICE_FEED_BIN;
    let eth_feed = spendguard_evm::testing::deploy_price_feed(&anvil.url, DEV_KEYS[0], feed_bin, 8).await.unwrap();
    set_eth_price(&anvil.url, &eth_feed, 3000, 0).await;
    let sol_pyth = spendguard_solana::keypair_address(&spendguard_solana::Keypair::new());
    let update = spendguard_solana::price::PriceUpdate {
        fully_verified: true,
        price: 150_00000000,
        conf: 7_500000,
        exponent: -8,
        publish_time: chrono::Utc::now().timestamp(),
    };
    let data: String = update.encode([1; 32]).iter().map(|b| format!("{b:02x}")).collect();
    let account = json!({ "lamports": 10_000_000u64, "data": data, "owner": spendguard_solana::price::PYTH_RECEIVER });
    spendguard_evm::testing::rpc_call(&surfnet.url, "surfnet_setAccount", json!([sol_pyth, account])).await.unwrap();
    println!("  ETH/USD Chainlink-interface feed {eth_feed}\n  SOL/USD Pyth account {sol_pyth}");

    step("The organisation: two departments, three agents, wallets on both chains");
    for name in ["hot.json", "cold.json"] {
        std::fs::copy(keystores().join(name), out_dir.join(name)).unwrap();
    }
    let sol_keypair = out_dir.join("sol-ops.json");
    spendguard_solana::keypair::write_keypair(&sol_keypair, &sol_key).unwrap();
    let config = out_dir.join("spendguard.toml");
    let toml = include_str!("org.toml")
        .replace("{ANVIL}", &anvil.url)
        .replace("{SURFNET}", &surfnet.url)
        .replace("{USDC}", &usdc)
        .replace("{SOL_USDC}", &sol_usdc)
        .replace("{ETH_OPS}", &eth_ops)
        .replace("{ETH_RESEARCH}", &eth_research)
        .replace("{ETH_OWN}", &eth_own)
        .replace("{SOL_OPS}", &sol_address)
        .replace("{ETH_FEED}", &eth_feed)
        .replace("{TREASURY}", &spendguard_evm::testing::address_of(DEV_KEYS[0]).unwrap())
        .replace("{SOL_PYTH}", &sol_pyth)
        .replace("{DIR}", &out_dir.display().to_string());
    std::fs::write(&config, toml).unwrap();
    let env = PASSWORD_ENVS.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let demo = Demo { config, env };
    demo.show(&["check"]);

    step("Tokens: one per agent, one for the treasurer's admin API");
    let mut tokens = std::collections::HashMap::new();
    for agent in ["procurement-bot", "research-bot", "refund-bot"] {
        tokens.insert(agent, demo.cli(&["agent", "token", agent]).trim().to_string());
    }
    let operator_token = demo.cli(&["operator", "token", "treasurer@acme.example"]).trim().to_string();
    let (daemon, url) = demo.serve();
    let base = url.trim_end_matches("/mcp").to_string();
    println!("  spendguard serve: MCP at {url}, admin at {base}/admin");
    let procurement = McpAgent::connect_http(&url, &tokens["procurement-bot"]).await;
    let research = McpAgent::connect_http(&url, &tokens["research-bot"]).await;
    let refunds = McpAgent::connect_http(&url, &tokens["refund-bot"]).await;
    let pay =
        |wallet: &str, to: &str, amount: &str| json!({"wallet": wallet, "to": to, "amount": amount, "asset": "USDC"});

    step("procurement-bot pays at every tier, on both chains, through the MCP tools");
    let r = procurement.call("spend", pay("eth-ops", GITHUB, "8")).await;
    say("procurement-bot", "8 USDC to GitHub on Ethereum", &r);
    let r = procurement.call("spend", pay("sol-ops", SOL_VENDOR, "60")).await;
    say("procurement-bot", "60 USDC to a vendor on Solana", &r);
    let delayed = procurement.call("spend", pay("eth-ops", CLOUD, "300")).await;
    say("procurement-bot", "300 USDC to the cloud provider", &delayed);
    let cancelled = procurement.call("spend", pay("eth-ops", CLOUD, "250")).await;
    say("procurement-bot", "250 USDC to the cloud provider (a duplicate)", &cancelled);
    let approval = procurement.call("spend", pay("eth-ops", CLOUD, "900")).await;
    say("procurement-bot", "900 USDC annual plan", &approval);
    let r = refunds.call("spend", json!({"wallet": "eth-ops", "to": GITHUB, "amount": "20", "asset": "USDC"})).await;
    say("refund-bot", "20 USDC without naming an operation", &r);
    // GitHub's address as EIP-55 writes it, with one letter's case mistyped.
    let typo = "0x23618e81e3f5cdF7f54C3d65f7FBc0aBf5B21E8f";
    let r = procurement.call("spend", pay("eth-ops", typo, "8")).await;
    say("procurement-bot", "8 USDC to a mistyped address", &r);
    let mut long_memo = pay("eth-ops", GITHUB, "8");
    long_memo["memo"] = json!("x".repeat(100_000));
    let r = procurement.call("spend", long_memo).await;
    say("procurement-bot", "8 USDC with a 100 KB memo", &r);

    step("Live prices: ETH from its Chainlink feed; a stale feed refuses rather than guesses");
    let eth = json!({"wallet": "eth-ops", "to": GITHUB, "amount": "0.003"});
    let valued = |r: &spendguard_tests::mcp_client::ToolReply| {
        let v = |key: &str| r.data["valuation"][key].as_str().unwrap_or("?").to_string();
        format!("{} USD at {} from {} (published {})", v("usd"), v("price"), v("source"), v("as_of"))
    };
    let r = procurement.call("evaluate", eth.clone()).await;
    println!("  procurement-bot: evaluate 0.003 ETH → {} ({})", r.data["decision"].as_str().unwrap_or("?"), valued(&r));
    set_eth_price(&anvil.url, &eth_feed, 3000, 7200).await;
    println!("  the feed's last update is now two hours old (max_age 1h)");
    until("the stale price to be refused", async || {
        procurement.call("evaluate", eth.clone()).await.text.contains("PRICE_UNAVAILABLE")
    })
    .await;
    let r = procurement.call("spend", eth.clone()).await;
    say("procurement-bot", "0.003 ETH to GitHub", &r);
    set_eth_price(&anvil.url, &eth_feed, 3100, 0).await;
    println!("  the feed publishes 3100 USD");
    until("the fresh price to be used", async || {
        procurement.call("evaluate", eth.clone()).await.data["decision"] == "allow"
    })
    .await;
    let r = procurement.call("spend", eth.clone()).await;
    say("procurement-bot", "0.003 ETH to GitHub", &r);
    println!("    valued {}", valued(&r));
    let metrics = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    println!("  GET /metrics:");
    for line in metrics.lines().filter(|l| l.starts_with("spendguard_price_")) {
        println!("    {line}");
    }

    step("The treasurer cancels the duplicate and approves the annual plan");
    let cancelled_id = cancelled.data["decision_id"].as_str().unwrap();
    let approval_id = approval.data["decision_id"].as_str().unwrap();
    demo.show(&["delays", "list"]);
    demo.show(&["delays", "cancel", cancelled_id, "--as", "treasurer@acme.example", "--reason", "duplicate order"]);
    demo.show(&["approvals", "list"]);
    let shown: Value = serde_json::from_str(&demo.cli(&["approvals", "show", approval_id])).unwrap();
    let intent = shown["intent_hash"].as_str().unwrap().to_string();
    println!("  intent hash bound at request time: {intent}");
    let approved: Value = reqwest::Client::new()
        .post(format!("{base}/admin/approvals/{approval_id}/approve"))
        .bearer_auth(&operator_token)
        .json(&json!({"intent_hash": intent}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    println!("  POST /admin/approvals/{approval_id}/approve → {approved}");

    step("research-bot's 100 USD a day is pooled across chains");
    let r = research.call("spend", pay("eth-research", CLOUD, "70")).await;
    say("research-bot", "70 USDC on Ethereum", &r);
    let r = research.call("spend", pay("sol-ops", SOL_VENDOR, "40")).await;
    say("research-bot", "40 USDC on Solana", &r);

    step("research-bot's own MetaMask wallet: spendguard authorizes, the bot pays, the auditor matches");
    println!("  the key wallet-side hooks verify authorizations with (spendguard authority pubkey):");
    for line in demo.cli(&["authority", "pubkey"]).lines() {
        println!("    {line}");
    }
    let own = research.call("spend", pay("research-metamask", CLOUD, "10")).await;
    say("research-bot", "10 USDC from its own wallet (counted in the same 100 USD a day)", &own);
    let auth = &own.data["authorization"];
    let token = auth["token"].as_str().unwrap_or_default().to_string();
    println!(
        "    authorization: pay exactly {} {} to {} before {}\n    token {}…",
        auth["amount"].as_str().unwrap_or("?"),
        auth["asset"].as_str().unwrap_or("?"),
        auth["to"].as_str().unwrap_or("?"),
        auth["expires_at"].as_str().unwrap_or("?"),
        &token[..48.min(token.len())]
    );
    let verify = async |token: &str| -> Value {
        reqwest::Client::new()
            .post(format!("{base}/v1/authorizations/verify"))
            .bearer_auth(&tokens["research-bot"])
            .json(&json!({ "token": token }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    };
    println!("  POST /v1/authorizations/verify → {}", verify(&token).await["status"]);
    let paid =
        spendguard_evm::testing::send_token(&anvil.url, DEV_KEYS[3], &usdc, CLOUD, 10 * 1_000_000).await.unwrap();
    println!("  research-bot sends it from MetaMask itself: tx {}", &paid[..18]);
    let own_id = own.data["decision_id"].as_str().unwrap_or_default().to_string();
    until("the payment to be matched", async || {
        research.call("spend_status", json!({"decision_id": own_id})).await.data["reconciliation"] == "matched"
    })
    .await;
    let r = research.call("spend_status", json!({"decision_id": own_id})).await;
    println!(
        "  spend_status {own_id}: {}, reconciliation {}, authorization {}",
        r.data["status"], r.data["reconciliation"], r.data["authorization"]["state"]
    );
    println!("  POST /v1/authorizations/verify → {}", verify(&token).await["status"]);

    step("research-bot pays an x402 API: HTTP 402, pay_x402, the retry served, the settlement matched");
    let api = PaidApi::start(&anvil.url, &usdc);
    let http = reqwest::Client::new();
    let mut first = None;
    until("the paid API to answer", async || {
        first = http.get(format!("{}/weather", api.url)).send().await.ok();
        first.is_some()
    })
    .await;
    let first = first.unwrap();
    let b64 = |text: &str| base64::engine::general_purpose::STANDARD.decode(text).unwrap();
    let challenge: Value = serde_json::from_slice(&b64(first.headers()["payment-required"].to_str().unwrap())).unwrap();
    println!(
        "  GET {}/weather → {} (PAYMENT-REQUIRED: {} base units of USDC to {})",
        api.url,
        first.status(),
        challenge["accepts"][0]["amount"].as_str().unwrap_or("?"),
        challenge["accepts"][0]["payTo"].as_str().unwrap_or("?")
    );
    let paid = research
        .call(
            "pay_x402",
            json!({"wallet": "eth-research", "payment_required": challenge, "idempotency_key": "weather-today"}),
        )
        .await;
    println!(
        "  research-bot: pay_x402 → {} ({}), validBefore {}",
        paid.data["status"].as_str().unwrap_or("?"),
        paid.data["tier"].as_str().unwrap_or("?"),
        paid.data["authorization"]["validBefore"].as_str().unwrap_or("?")
    );
    let header = paid.data["payment_signature"].as_str().unwrap_or_default().to_string();
    let served = http.get(format!("{}/weather", api.url)).header("PAYMENT-SIGNATURE", &header).send().await.unwrap();
    println!("  GET /weather with PAYMENT-SIGNATURE → {} {}", served.status(), served.text().await.unwrap_or_default());
    let paid_id = paid.data["decision_id"].as_str().unwrap_or_default().to_string();
    until("the x402 settlement to be matched", async || {
        research.call("spend_status", json!({"decision_id": paid_id})).await.data["reconciliation"] == "matched"
    })
    .await;
    let r = research.call("spend_status", json!({"decision_id": paid_id})).await;
    println!(
        "  spend_status {paid_id}: {}, settled by the facilitator in {}, reconciliation {}",
        r.data["status"],
        r.data["tx_hash"].as_str().map(|h| &h[..18.min(h.len())]).unwrap_or("?"),
        r.data["reconciliation"]
    );
    drop(api);

    step("16 agent sessions at once: research-bot's dry runs for two seconds (spendguard bench)");
    let bench = Command::new(binary())
        .args(["bench", "--url", &url, "--tool", "evaluate", "--clients", "16", "--duration", "2s"])
        .args(["--args", &pay("eth-research", CLOUD, "1").to_string()])
        .env("SPENDGUARD_TOKEN", &tokens["research-bot"])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&bench.stdout);
    assert!(bench.status.success(), "spendguard bench failed: {report}{}", String::from_utf8_lossy(&bench.stderr));
    println!("  {}", report.trim());

    step("The queued 300 USDC executes when due; everything lands");
    let ledger_db = out_dir.join("spendguard.db");
    let status_of = |id: String| {
        let db = ledger_db.clone();
        async move {
            let c = rusqlite::Connection::open(&db).unwrap();
            c.query_row("SELECT status FROM decisions WHERE id = ?1", [&id], |r| r.get::<_, String>(0)).unwrap()
        }
    };
    let delayed_id = delayed.data["decision_id"].as_str().unwrap().to_string();
    until("the delayed spend to confirm", async || status_of(delayed_id.clone()).await == "confirmed").await;
    until("the approved spend to confirm", async || status_of(approval_id.to_string()).await == "confirmed").await;
    let r = procurement.call("spend_status", json!({"decision_id": delayed_id})).await;
    println!("  spend_status {delayed_id}: {} tx {}", r.data["status"], r.data["tx_hash"]);

    step("Money in: a stranger sends eth-research 0.5 ETH (reported, never frozen)");
    let stranger = spendguard_evm::testing::address_of(DEV_KEYS[6]).unwrap();
    spendguard_evm::testing::send_native(&anvil.url, DEV_KEYS[6], &eth_research, 5 * 10u128.pow(17)).await.unwrap();
    println!("  from {stranger}: not in eth-research's refill_from");
    until("the inflow to be booked", async || {
        demo.cli(&["status"]).contains(&format!("inflow: 0.5 eth-local:ETH from {stranger}"))
    })
    .await;

    step("A phishing kit: eth-research's key signs an EIP-7702 delegation of its code to a drainer");
    let drainer =
        spendguard_evm::testing::deploy(&anvil.url, DEV_KEYS[0], spendguard_tests::TEST_DRAINER_BIN).await.unwrap();
    let delegation =
        spendguard_evm::testing::delegate_code(&anvil.url, DEV_KEYS[7], DEV_KEYS[2], &drainer).await.unwrap();
    println!("  type-4 transaction {delegation}, sent by someone else; nothing has left the wallet yet");
    until("the auditor to freeze eth-research", async || demo.cli(&["frozen"]).contains("wallet:eth-research")).await;
    demo.show(&["frozen"]);
    let r = research.call("spend", pay("eth-research", CLOUD, "1")).await;
    say("research-bot", "1 USDC from eth-research after the delegation", &r);

    step("A leaked key: someone moves 1,000 USDC out of eth-ops without asking spendguard");
    let rogue =
        spendguard_evm::testing::send_token(&anvil.url, DEV_KEYS[1], &usdc, ATTACKER, 1_000 * 1_000_000).await.unwrap();
    println!("  rogue transaction {rogue}");
    until("the auditor to freeze eth-ops", async || demo.cli(&["frozen"]).contains("wallet:eth-ops")).await;
    demo.show(&["frozen"]);
    let r = procurement.call("spend", pay("eth-ops", GITHUB, "5")).await;
    say("procurement-bot", "5 USDC from eth-ops after the freeze", &r);

    step("Status");
    demo.show(&["status"]);
    demo.show(&["exposures", "--horizon", "24h"]);

    step("The reconciliation report and the audit chain");
    let now = chrono::Utc::now();
    let from = (now - chrono::TimeDelta::days(1)).to_rfc3339();
    let to = (now + chrono::TimeDelta::hours(1)).to_rfc3339();
    let reports = out_dir.join("reports");
    std::fs::create_dir_all(&reports).unwrap();
    for format in ["md", "html", "json", "csv"] {
        let path = reports.join(format!("reconciliation.{format}"));
        demo.cli(&["report", "--from", &from, "--to", &to, "--format", format, "--out", &path.display().to_string()]);
    }
    let md = std::fs::read_to_string(reports.join("reconciliation.md")).unwrap();
    for line in
        md.lines().skip_while(|l| !l.starts_with("## Reconciliation")).take_while(|l| !l.starts_with("## Spend per"))
    {
        println!("  {line}");
    }
    demo.show(&["audit", "verify"]);
    println!("\nreports written to {}", reports.display());
    assert!(EvmOrg::stop_daemon(daemon), "the daemon stops cleanly");

    step("Several daemons: the ledger moves to PostgreSQL, two daemons share it, one dies");
    let postgres = spendguard_tests::postgres::Postgres::start();
    let database = postgres.database();
    demo.show(&["migrate", "--to", &database]);
    let shared = Demo { config: out_dir.join("spendguard-postgres.toml"), env: demo.env.clone() };
    let text = std::fs::read_to_string(&demo.config).unwrap().replacen(
        "database = \"spendguard.db\"",
        &format!("database = \"{database}\"\nwatcher_lease = \"5s\""),
        1,
    );
    std::fs::write(&shared.config, text).unwrap();
    let (first, first_url) = shared.serve();
    let (second, second_url) = shared.serve();
    println!("  two daemons on one PostgreSQL ledger: {first_url} and {second_url}");
    let watcher =
        |d: &Demo| d.cli(&["status"]).lines().find(|l| l.contains("eth-local\twatched by")).map(str::to_string);
    until("a daemon to watch eth-local", async || watcher(&shared).is_some()).await;
    println!("  {}", watcher(&shared).unwrap().trim());
    // The budget is one: research-bot's headroom reads the same through either daemon.
    for url in [&first_url, &second_url] {
        let bot = McpAgent::connect_http(url, &tokens["research-bot"]).await;
        let r = bot.call("evaluate", pay("sol-ops", SOL_VENDOR, "5")).await;
        // Its own 100 USD in 24 h, pooled over its wallets: what either daemon counts as taken.
        let own = r.data["headroom"].as_array().and_then(|h| h.iter().find(|h| h["window"] == "24h")).cloned();
        let used = own
            .map(|h| {
                format!(
                    "{} of {} {} left in 24h",
                    h["remaining"].as_str().unwrap_or("?"),
                    h["limit"].as_str().unwrap_or("?"),
                    h["unit"].as_str().unwrap_or("")
                )
            })
            .unwrap_or_default();
        println!(
            "  research-bot: evaluate 5 USDC from sol-ops through {url} → {} ({used})",
            r.data["decision"].as_str().unwrap_or("?")
        );
    }
    let holder = watcher(&shared).unwrap();
    let first_address = first_url.trim_start_matches("http://").trim_end_matches("/mcp").to_string();
    let (mut dying, survivor) = if holder.contains(&first_address) { (first, second) } else { (second, first) };
    dying.kill().unwrap();
    dying.wait().unwrap();
    println!("  SIGKILL the watching daemon; its lease runs out and the other takes over:");
    until("the other daemon to take over eth-local", async || watcher(&shared).is_some_and(|w| w != holder)).await;
    println!("  {}", watcher(&shared).unwrap().trim());
    shared.show(&["audit", "verify"]);
    println!("(the organisation's config, database and keys are in {})", out_dir.display());
    assert!(EvmOrg::stop_daemon(survivor), "the daemon stops cleanly");
}
