//! The ledger's disk on a bad day, under a node serving agents: the disk full, the database
//! locked by another process past the busy timeout. Each spend
//! meanwhile is refused with a clear error and leaves nothing half-written; when the fault
//! clears, the same node spends again, and what left the wallet is what the ledger holds.

use serde_json::json;
use spendguard_store::{LedgerOptions, SqlStore};
use spendguard_tests::evm_org::*;
use spendguard_tests::mcp_client::McpAgent;
use spendguard_tests::prelude::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A small tmpfs mounted for one test (unmounted when dropped): a disk that fills up. Mounting needs root, as the suite runs in CI; without it the test fails
/// saying so rather than skipping.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        let mounted = o.as_ref().is_ok_and(|o| o.status.success());
        assert!(
            mounted,
            "cannot mount a {size} tmpfs for the disk-fault tests ({o:?}): run the suite as root (or with CAP_SYS_ADMIN), as CI does"
        );
        SmallDisk { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).output();
    }
}

/// A node whose ledger lives at `db`, and an agent of it.
async fn node_at(org: &EvmOrg, db: &Path) -> (std::sync::Arc<spendguard_tests::node::TestNode>, McpAgent) {
    let config =
        org.variant("on-small-disk", &[("database = \"spendguard.db\"", &format!("database = \"{}\"", db.display()))]);
    let node = org.node_for(config, vec![]).await;
    let agent = McpAgent::connect(&node.services, "buyer").await;
    (node, agent)
}

fn pay() -> serde_json::Value {
    json!({ "wallet": "hot", "to": PAYEE, "amount": "1", "asset": "TUSD" })
}

/// The ledger and the chain agree: one transaction per spend the ledger says was sent.
async fn ledger_matches_chain(org: &EvmOrg, node: &spendguard_tests::node::TestNode) {
    let sent = node
        .ledger()
        .decisions(Some("buyer"))
        .await
        .unwrap()
        .iter()
        .filter(|d| matches!(d.status, SpendStatus::Signed | SpendStatus::Broadcast | SpendStatus::Confirmed))
        .count();
    assert_eq!(org.nonce(HOT).await, sent as u64, "transactions on chain vs spends the ledger sent");
    let check = node.ledger().verify_audit(None).await.unwrap();
    assert!(check.first_bad.is_none(), "{check:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_spends_cleanly_and_the_node_recovers() {
    let org = EvmOrg::start("").await;
    let disk = SmallDisk::mount("4m");
    let (node, agent) = node_at(&org, &disk.path().join("ledger.db")).await;
    assert_eq!(agent.call("spend", pay()).await.data["status"], "executed");

    // Full: fill the disk, spend until the ledger cannot grow.
    let filler = disk.path().join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        while f.write_all(&[0u8; 16 * 1024]).and_then(|()| f.sync_all()).is_ok() {}
    }
    let mut refused = None;
    for _ in 0..200 {
        let r = agent.call("spend", pay()).await;
        if r.is_error {
            refused = Some(r.text);
            break;
        }
    }
    let refused = refused.expect("a full disk never refused a spend");
    assert!(refused.starts_with("INTERNAL_ERROR") && refused.contains("nothing was spent"), "{refused}");
    ledger_matches_chain(&org, &node).await;
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(agent.call("spend", pay()).await.data["status"], "executed", "recovered after the disk filled");
    ledger_matches_chain(&org, &node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_locked_past_the_busy_timeout_refuses_and_retries_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let db: PathBuf = dir.path().join("locked.db");
    let model = std::sync::Arc::new(spendguard_tests::model(""));
    let options = LedgerOptions { busy_timeout: std::time::Duration::from_millis(300), ..LedgerOptions::default() };
    let store = SqlStore::open(&db, model, chrono::Utc::now(), options).unwrap();
    let now = chrono::Utc::now();
    store.add_agent_token("alice", "hash-1", "ops", now).await.unwrap();

    // Another process holds the write lock for longer than the busy timeout.
    let other = rusqlite::Connection::open(&db).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let err = store.add_agent_token("alice", "hash-2", "ops", now).await.unwrap_err();
    assert!(err.is_retryable(), "a lock is worth retrying: {err}");
    assert!(err.to_string().contains("locked") || err.to_string().contains("busy"), "{err}");
    other.execute_batch("ROLLBACK").unwrap();

    // Nothing of the refused write was kept; the same write now goes through.
    assert_eq!(store.agent_for_token("hash-2").await.unwrap(), None);
    store.add_agent_token("alice", "hash-2", "ops", now).await.unwrap();
    assert_eq!(store.agent_for_token("hash-2").await.unwrap().as_deref(), Some("alice"));
}
