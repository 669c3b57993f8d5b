//! Crashes for real: `spendguard serve` is SIGKILLed at random moments while eight agents
//! spend over HTTP, and a `spendguard watch` beside it is killed mid-pass; each is restarted.
//! Afterwards every decision is final, what left the wallets is exactly what the ledger says
//! was paid, nothing released or failed was sent, every outflow is indexed once and matched,
//! and the audit chain verifies.
//!
//! `SOAK_KILLS` sets the number of kills (default 50); `SOAK_SEED` replays a run.

use crate::operators::{cli, err, out};
use serde_json::json;
use spendguard_core::reconcile::OutflowKind;
use spendguard_evm::testing::rpc_call;
use spendguard_tests::evm_org::*;
use spendguard_tests::mcp_client::McpAgent;
use spendguard_tests::prelude::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const AGENTS: usize = 8;

/// A small xorshift generator: the run's randomness comes from one printed seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn agents_toml() -> String {
    (1..=AGENTS)
        .map(|i| format!("[[agent]]\nid = \"soak-{i}\"\ndepartment = \"ops\"\nwallets = [\"hot\", \"cold\"]\n"))
        .collect()
}

/// Eight agents paying PAYEE2 small amounts until `stop`, each through its own HTTP session.
fn spend_until(
    url: &str,
    tokens: &[String],
    stop: &Arc<AtomicBool>,
    seed: u64,
    sent: &Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<()>> {
    tokens
        .iter()
        .enumerate()
        .map(|(i, token)| {
            let (url, token, stop, sent) = (url.to_string(), token.clone(), Arc::clone(stop), Arc::clone(sent));
            tokio::spawn(async move {
                let mut rng = Rng(seed ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
                let Ok(agent) = McpAgent::try_connect_http(&url, &token).await else { return };
                while !stop.load(Ordering::SeqCst) {
                    let wallet = if rng.below(2) == 0 { "hot" } else { "cold" };
                    let amount = format!("0.{:02}", 1 + rng.below(99));
                    let mut args = json!({ "wallet": wallet, "to": PAYEE2, "amount": amount, "asset": "TUSD" });
                    if rng.below(2) == 0 {
                        args["idempotency_key"] = json!(format!("soak-{seed}-{i}-{}", rng.below(1 << 40)));
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                    if agent.try_call("spend", args).await.is_err() {
                        return; // the server is gone
                    }
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_daemons_and_watchers_lose_nothing_and_pay_nothing_twice() {
    let kills: u32 = std::env::var("SOAK_KILLS").ok().and_then(|k| k.parse().ok()).unwrap_or(50);
    let seed: u64 = std::env::var("SOAK_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) | 1
    });
    eprintln!("soak: {kills} kills, SOAK_SEED={seed}");
    let began = std::time::Instant::now();
    let mut rng = Rng(seed);
    // A block every second, so the watchers always have something to index when killed.
    let org = EvmOrg::start_on(spendguard_tests::anvil::Anvil::start(Some(1)), &agents_toml()).await;
    let names: Vec<String> = (1..=AGENTS).map(|i| format!("soak-{i}")).collect();
    let issued = issue_tokens(org.config(), &names.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let tokens: Vec<String> = names.iter().map(|n| issued[n].clone()).collect();
    let paid_before = org.token_balance(PAYEE2).await;
    let sent = Arc::new(AtomicU64::new(0));

    let spawn_watch = || {
        std::process::Command::new(EvmOrg::binary())
            .arg("--config")
            .arg(&org.config_path)
            .arg("watch")
            .env("SPENDGUARD_LOG", "error")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start spendguard watch")
    };
    let mut watch = spawn_watch();
    for kill in 0..kills {
        let (mut daemon, url) = org.start_daemon_for(&org.config_path, &[("SPENDGUARD_LOG", "error")]);
        let stop = Arc::new(AtomicBool::new(false));
        let spenders = spend_until(&url, &tokens, &stop, seed.wrapping_add(u64::from(kill)), &sent);
        // The chaos itself: a random moment to pull the plug, not a wait for a condition.
        tokio::time::sleep(Duration::from_millis(100 + rng.below(1400))).await;
        daemon.kill().expect("SIGKILL serve");
        daemon.wait().expect("reap serve");
        if rng.below(3) == 0 {
            watch.kill().expect("SIGKILL watch");
            watch.wait().expect("reap watch");
            watch = spawn_watch();
        }
        // Calls in flight when the server died may never be answered: drop them.
        stop.store(true, Ordering::SeqCst);
        for spender in spenders {
            spender.abort();
            let _ = spender.await;
        }
    }
    watch.kill().expect("SIGKILL watch");
    watch.wait().expect("reap watch");

    // A last daemon (in this process) finishes what the killed ones left: re-broadcasts what
    // was signed, follows receipts, indexes every block.
    let node = org.node().await;
    spendguard_tests::wait_until("every decision to be final", Duration::from_secs(120), async || {
        node.tick().await;
        let decisions = node.ledger().decisions(None).await.unwrap();
        decisions.iter().all(|d| {
            matches!(
                d.status,
                SpendStatus::Confirmed | SpendStatus::Failed | SpendStatus::Released | SpendStatus::Denied
            )
        })
    })
    .await;
    // The watcher indexes past the last block a spend landed in.
    let decisions = node.ledger().decisions(None).await.unwrap();
    let last = decisions.iter().filter_map(|d| d.block).max().unwrap_or(0);
    spendguard_tests::wait_until("the watcher to index every spend's block", Duration::from_secs(60), async || {
        node.watch_once("eth-local", 1000).await.is_ok_and(|p| p.next > last)
    })
    .await;

    let confirmed: Vec<_> = decisions.iter().filter(|d| d.status == SpendStatus::Confirmed).collect();
    eprintln!(
        "soak: {kills} kills survived in {:?}; {} spend calls, {} decisions, {} confirmed",
        began.elapsed(),
        sent.load(Ordering::Relaxed),
        decisions.len(),
        confirmed.len()
    );
    assert!(!confirmed.is_empty(), "nothing was paid: the soak proved nothing");

    // What left is exactly what the ledger says was paid.
    let paid: rust_decimal::Decimal = confirmed.iter().map(|d| d.amount).sum();
    let moved = org.token_balance(PAYEE2).await - paid_before;
    assert_eq!(rust_decimal::Decimal::from(moved) / rust_decimal::Decimal::from(1_000_000), paid, "tokens moved");
    // One transaction per confirmed spend from each wallet, nonces 0..n without a gap or a twin.
    for (wallet, address) in [("hot", HOT), ("cold", COLD)] {
        let mut nonces: Vec<u64> = confirmed
            .iter()
            .filter(|d| d.wallet == wallet)
            .map(|d| d.nonce.expect("a confirmed spend's nonce"))
            .collect();
        nonces.sort_unstable();
        let on_chain = org.nonce(address).await;
        assert_eq!(nonces, (0..on_chain).collect::<Vec<_>>(), "wallet {wallet}");
    }
    // Nothing released or failed was sent.
    for d in decisions.iter().filter(|d| matches!(d.status, SpendStatus::Released | SpendStatus::Failed)) {
        if let Some(hash) = &d.tx_hash {
            let receipt = rpc_call(&org.anvil.url, "eth_getTransactionReceipt", json!([hash])).await.unwrap();
            assert!(receipt.is_null(), "decision {} is {:?} but its transaction landed", d.id, d.status);
        }
    }
    // Every outflow indexed once and matched: no freeze, no unexplained outflow.
    assert!(node.ledger().freezes().await.unwrap().is_empty(), "{:?}", node.ledger().freezes().await.unwrap());
    let outflows = node.ledger().outflows(Some("eth-local")).await.unwrap();
    assert!(outflows.iter().all(|o| o.class == Class::Matched), "{outflows:#?}");
    let tokens = outflows.iter().filter(|o| o.kind == OutflowKind::Token).count();
    let fees = outflows.iter().filter(|o| o.kind == OutflowKind::Fee).count();
    assert_eq!((tokens, fees), (confirmed.len(), confirmed.len()), "one transfer and one fee per confirmed spend");
    let o = cli(&org.config_path, &["audit", "verify"]);
    assert!(o.status.success() && out(&o).starts_with("ok: "), "{}{}", out(&o), err(&o));
}
