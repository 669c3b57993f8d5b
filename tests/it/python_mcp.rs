//! The official MCP Python SDK (an independent client) drives the real `spendguard` binary over
//! stdio and over streamable HTTP, on a real anvil. The scenario is tests/python/mcp_agents.py.

use serde_json::json;
use spendguard_tests::evm_org::*;
use spendguard_tests::prelude::*;

async fn run_scenario(org: &EvmOrg, transport: &str, url: Option<&str>) {
    let node = org.node().await;
    node.ledger().revoke_agent("retired", "test", chrono::Utc::now()).await.expect("revoke");
    drop(node);
    let env: serde_json::Map<String, serde_json::Value> =
        org.server_env().into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect();
    let scenario = json!({
        "transport": transport,
        "binary": EvmOrg::binary(),
        "config": org.config_path,
        "url": url,
        "tokens": org.tokens,
        "env": env,
        "payee": PAYEE,
        "revoked_agent": "retired",
        "revoked_token": org.tokens["retired"],
    });
    tokio::task::block_in_place(|| run_python("mcp_agents.py", &scenario));
}

/// Runs tests/python/`script` with `scenario` on its standard input; asserts that every check
/// passed and returns its standard output.
fn run_python(script: &str, scenario: &serde_json::Value) -> String {
    let script = spendguard_tests::manifest_dir().join("python").join(script);
    let child = spendguard_tests::python::start_script(&script, scenario);
    let out = spendguard_tests::finish(child, &script.display().to_string(), std::time::Duration::from_secs(600));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && stdout.contains(" passed, 0 failed"),
        "the Python client's checks failed ({}):\n{stdout}\n--- stderr ---\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    eprint!("{stdout}");
    stdout
}

/// Waits until every spend the scenario made is settled: none reserved, signed or broadcast.
/// With `settle`, this process runs the background passes itself (no server is left running).
async fn settled(org: &EvmOrg, settle: bool) {
    let node = org.node().await;
    spendguard_tests::wait_until("every spend to settle", std::time::Duration::from_secs(60), async || {
        if settle {
            node.tick().await;
        }
        let open = [SpendStatus::Reserved, SpendStatus::Signed, SpendStatus::Broadcast];
        node.ledger().decisions_in(&open).await.unwrap().is_empty()
    })
    .await;
    let delayed = node.ledger().decisions(Some("buyer")).await.unwrap();
    let delayed = delayed.iter().find(|d| d.amount == rust_decimal::Decimal::from(500)).expect("the DELAY spend");
    assert_eq!(delayed.status, SpendStatus::Confirmed, "the DELAY spend executed before the freeze: {delayed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_over_stdio() {
    let org = EvmOrg::start(BUYER_TIERS).await;
    let before = org.token_balance(PAYEE).await;
    run_scenario(&org, "stdio", None).await;
    // No server runs now: this process's background passes settle what the stdio servers left.
    settled(&org, true).await;
    // 5 + 50 + 3 (idempotent: once) + 60 TUSD, and the 500 TUSD DELAY spend.
    assert_eq!(org.token_balance(PAYEE).await - before, 618_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_over_streamable_http() {
    let org = EvmOrg::start(BUYER_TIERS).await;
    let before = org.token_balance(PAYEE).await;
    let (server, url) = org.start_daemon();
    run_scenario(&org, "http", Some(&url)).await;
    // The daemon settles everything, the DELAY spend included.
    settled(&org, false).await;
    let received = org.token_balance(PAYEE).await - before;
    assert!(EvmOrg::stop_daemon(server), "the daemon should stop cleanly on SIGTERM");
    assert_eq!(received, 618_000_000, "5 + 50 + 3 + 60, and the DELAY spend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_on_solana_and_evm_through_the_daemon() {
    use spendguard_tests::rpc_proxy::Faults;
    use spendguard_tests::solana_org::{SolanaOrg, SOL_PAYEE};
    let org = SolanaOrg::start("missing_after = \"1s\"").await;
    // The daemon unlocks sol-hot from an encrypted keypair file.
    let encrypted = org.evm.dir.path().join("sol-hot.encrypted.json");
    spendguard_solana::keypair::write_encrypted_keypair(&encrypted, &org.keypair, "sol secret").unwrap();
    let plain = org.evm.dir.path().join("sol-hot.json");
    let config = org.variant(
        "daemon",
        &[(
            &format!("keypair = \"{}\"", plain.display()),
            &format!("keypair = \"{}\"\npassword_env = \"SOL_PASSWORD\"", encrypted.display()),
        )],
    );
    let (server, url) = org.evm.start_daemon_for(&config.path, &[("SOL_PASSWORD", "sol secret")]);
    let scenario = |phase: &str, extra: serde_json::Value| {
        let mut s = json!({
            "phase": phase, "url": url, "tokens": org.tokens, "sol_payee": SOL_PAYEE, "evm_payee": PAYEE,
        });
        s.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        s
    };

    // Spends at every tier in SOL and USDS; budgets pooled across chains, both ways.
    tokio::task::block_in_place(|| run_python("solana_agents.py", &scenario("spend", json!({}))));

    // A node that drops the transaction: the daemon proves it dead once its blockhash expires,
    // re-signs it once and it lands once.
    org.proxy.set_faults(Faults { swallow_sends: true, ..Faults::default() });
    let out = tokio::task::block_in_place(|| run_python("solana_agents.py", &scenario("expire", json!({}))));
    org.proxy.set_faults(Faults::default());
    let line = out.lines().find_map(|l| l.strip_prefix("SPEND ")).expect("the SPEND line");
    let (decision_id, tx_hash) = line.split_once(' ').unwrap();
    let node = org.node().await;
    spendguard_tests::wait_until("the re-signed spend to confirm", std::time::Duration::from_secs(60), async || {
        node.ledger().decision(decision_id).await.unwrap().unwrap().status == SpendStatus::Confirmed
    })
    .await;
    assert_eq!(node.ledger().events(Some(EventKind::Resigned)).await.unwrap().len(), 1);

    // The wallet's key used behind spendguard's back: the daemon's watcher freezes the wallet.
    spendguard_solana::testing::send_sol(&org.surfnet.url, &org.keypair, SOL_PAYEE, 1_000_000).await.unwrap();
    spendguard_tests::wait_until(
        "the daemon's watcher to freeze sol-hot",
        std::time::Duration::from_secs(60),
        async || !node.ledger().freezes().await.unwrap().is_empty(),
    )
    .await;
    assert!(
        !node.ledger().events(Some(EventKind::KillSwitch)).await.unwrap().is_empty(),
        "the freeze is an alert event"
    );
    tokio::task::block_in_place(|| {
        run_python(
            "solana_agents.py",
            &scenario("frozen", json!({ "expired": { "decision_id": decision_id, "tx_hash": tx_hash } })),
        )
    });
    assert!(EvmOrg::stop_daemon(server), "the daemon should stop cleanly on SIGTERM");
    // Every Solana spend spendguard made reconciled; the only unexplained outflows are the rogue's.
    let outflows = node.ledger().outflows(Some("sol-local")).await.unwrap();
    let unexplained: Vec<_> = outflows.iter().filter(|o| o.class != Class::Matched).collect();
    assert_eq!(unexplained.len(), 2, "the rogue transfer and its fee: {unexplained:#?}");
}
