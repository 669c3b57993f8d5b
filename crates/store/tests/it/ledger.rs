use crate::*;
use spendguard_core::model::Scope;
use spendguard_core::{EventKind, Freeze, ReasonCode, SpendStatus};
use spendguard_store::{
    DecisionStore, FreezeOutcome, FreezeStore, Intent, OutboxStore, SigningStore, SqlStore, StoreError,
};

/// What a decision pays, as the ledger bound it.
async fn intent_of(ledger: &SqlStore, id: &str) -> Intent {
    ledger.decision(id).await.unwrap().unwrap().intent().expect("an allowed decision is bound to its intent")
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not.db");
    std::fs::write(&path, b"this is not sqlite, just text long enough to have a header......").unwrap();
    let err = SqlStore::open(&path, model(), at(NOON), Default::default()).err().expect("must fail");
    assert!(err.to_string().contains("not.db"), "{err}");
}

#[tokio::test]
async fn a_database_from_a_newer_spendguard_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.db");
    drop(open(&path));
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
    }
    let err = SqlStore::open(&path, model(), at(NOON), Default::default()).err().expect("must fail");
    assert!(matches!(err, StoreError::SchemaTooNew { found: 99, .. }), "{err}");
}

#[tokio::test]
async fn a_dry_run_reads_the_ledger_but_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(&dir.path().join("l.db"));
    decided(ledger.reserve(usdc("bot", "999")).await.unwrap());
    let e = ledger.evaluate(usdc("bot", "2").request, Default::default(), Default::default()).await.unwrap();
    assert_eq!(e.reasons[0].code, ReasonCode::WindowLimit);
    assert_eq!(ledger.decisions(None).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_share_durable_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = std::sync::Arc::new(open(&dir.path().join("l.db")));
    assert_eq!(ledger.synchronous().await.unwrap(), 2, "synchronous must be FULL: a decision is money");
    let before = ledger.stats();
    let callers: Vec<_> = (0..64)
        .map(|_| {
            let ledger = std::sync::Arc::clone(&ledger);
            tokio::spawn(async move {
                for _ in 0..10 {
                    decided(ledger.reserve(usdc("other", "0.01")).await.unwrap());
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.unwrap();
    }
    let after = ledger.stats();
    let (transactions, jobs) = (after.transactions - before.transactions, after.jobs - before.jobs);
    assert_eq!(jobs, 640);
    assert!(transactions < jobs / 2, "group commit should batch: {jobs} jobs took {transactions} transactions");
}

#[tokio::test]
async fn a_row_edited_by_hand_is_reported_not_panicked_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.db");
    let ledger = open(&path);
    let r = decided(ledger.reserve(usdc("bot", "5")).await.unwrap());
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute("UPDATE decisions SET status = 'teleported' WHERE id = ?1", [&r.decision_id]).unwrap();
    }
    let err = ledger.decision(&r.decision_id).await.unwrap_err().to_string();
    assert!(err.contains("status") && err.contains("teleported"), "{err}");
    drop(ledger);
    let err = SqlStore::open(&path, model(), at(NOON), Default::default()).err().expect("must refuse").to_string();
    assert!(err.contains("teleported"), "{err}");
}

#[tokio::test]
async fn a_dry_run_writes_nothing_and_a_failed_job_does_not_disturb_the_change_counter() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.db");
    let a = open(&path);
    let b = open(&path);
    decided(a.reserve(usdc("bot", "10")).await.unwrap());
    let counter = || {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.query_row("SELECT value FROM meta WHERE key = 'change_seq'", [], |r| r.get::<_, i64>(0)).unwrap()
    };
    let before = counter();
    a.evaluate(usdc("bot", "1").request, Default::default(), Default::default()).await.unwrap();
    assert_eq!(counter(), before, "a dry run bumps nothing");
    // A job that fails after writing (an illegal transition) leaves the counter where it was…
    let r = decided(a.reserve(usdc("bot", "1")).await.unwrap());
    a.set_status(&r.decision_id, SpendStatus::Released, at(NOON)).await.unwrap();
    let after_release = counter();
    assert!(a.set_status(&r.decision_id, SpendStatus::Signed, at(NOON)).await.is_err());
    assert_eq!(counter(), after_release);
    // …so the other handle still sees every later change.
    decided(a.reserve(usdc("bot", "900")).await.unwrap());
    let denied = decided(b.reserve(usdc("bot", "100")).await.unwrap());
    assert_eq!(denied.reasons[0].code, ReasonCode::WindowLimit, "b sees a's 910 USD");
}

#[tokio::test]
async fn a_dead_transaction_is_replaced_once_and_only_the_one_proven_dead() {
    use spendguard_store::{Resigning, SignWith, SignedRecord};
    let signing = |hash: &str| -> SignWith {
        let hash = hash.to_string();
        Box::new(move |_| {
            Ok(SignedRecord {
                hash,
                raw: vec![1, 2, 3],
                sequence: None,
                fee_cap: "0.000005".parse().unwrap(),
                fee_terms: "fee 5000 lamports".into(),
            })
        })
    };
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(&dir.path().join("l.db"));
    let r = decided(ledger.reserve(usdc("bot", "1")).await.unwrap());
    let id = r.decision_id.as_str();
    assert!(matches!(
        ledger.sign(id, intent_of(&ledger, id).await, None, signing("sig-1"), at(NOON)).await.unwrap(),
        spendguard_store::Signing::Signed(_)
    ));
    // Not broadcast yet: nothing to replace.
    assert_eq!(
        ledger.resign(id, "sig-1", intent_of(&ledger, id).await, signing("sig-2"), at(NOON)).await.unwrap(),
        Resigning::Stale
    );
    ledger.mark_broadcast(id, at(NOON)).await.unwrap();
    // Another transaction than the one proven dead: left alone.
    assert_eq!(
        ledger.resign(id, "sig-0", intent_of(&ledger, id).await, signing("sig-2"), at(NOON)).await.unwrap(),
        Resigning::Stale
    );
    let Resigning::Resigned(new) =
        ledger.resign(id, "sig-1", intent_of(&ledger, id).await, signing("sig-2"), at(NOON)).await.unwrap()
    else {
        panic!()
    };
    assert_eq!(new.hash, "sig-2");
    let record = ledger.decision(id).await.unwrap().unwrap();
    assert_eq!((record.status, record.tx_hash.as_deref()), (SpendStatus::Signed, Some("sig-2")));
    assert_eq!(ledger.signed_tx(id).await.unwrap().unwrap().hash, "sig-2", "stored before it is sent");
    // The second death is final: the caller fails the decision instead.
    ledger.mark_broadcast(id, at(NOON)).await.unwrap();
    assert_eq!(
        ledger.resign(id, "sig-2", intent_of(&ledger, id).await, signing("sig-3"), at(NOON)).await.unwrap(),
        Resigning::Exhausted
    );
    assert_eq!(ledger.events(Some(EventKind::Resigned)).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_freeze_after_the_reservation_stops_the_signing_and_releases_it() {
    use spendguard_store::{SignedRecord, Signing};
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(&dir.path().join("l.db"));
    let r = decided(ledger.reserve(usdc("bot", "5")).await.unwrap());
    assert_eq!(r.status, SpendStatus::Reserved);
    let freeze = Freeze {
        scope: Scope::Agent("bot".into()),
        frozen_by: "ops".into(),
        reason: "incident".into(),
        frozen_at: at(NOON),
        evidence: None,
    };
    assert!(matches!(ledger.freeze(freeze).await.unwrap(), FreezeOutcome::Frozen(_)));
    let never = Box::new(|_| -> Result<SignedRecord, spendguard_store::SigningError> {
        panic!("a frozen spend must not be signed")
    });
    let intent = intent_of(&ledger, &r.decision_id).await;
    let outcome = ledger.sign(&r.decision_id, intent, None, never, at(NOON)).await.unwrap();
    assert_eq!(outcome, Signing::NotExecutable(SpendStatus::Released));
    let d = ledger.decision(&r.decision_id).await.unwrap().unwrap();
    assert!(d.failure.unwrap().starts_with("not executed: agent bot is frozen by ops"));
}

#[tokio::test]
async fn signing_refuses_an_intent_other_than_the_one_bound_or_none_at_all() {
    use spendguard_store::{SignedRecord, SigningError};
    let never = || -> spendguard_store::SignWith {
        Box::new(|_| -> Result<SignedRecord, SigningError> { panic!("nothing may be signed") })
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.db");
    let ledger = open(&path);
    let r = decided(ledger.reserve(usdc("bot", "5")).await.unwrap());
    let bound = intent_of(&ledger, &r.decision_id).await;
    assert_eq!(bound.token.as_deref(), Some("0x5fbdb2315678afecb367f032d93f642f64180aa3"));
    assert_eq!((bound.from_address.as_str(), bound.decimals), ("0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266", 6));
    // Every field that reaches the chain is bound: another token contract (the config changed
    // under the decision), another recipient, another amount, another sender.
    let others = [
        Intent { token: Some("0x0000000000000000000000000000000000000001".into()), ..bound.clone() },
        Intent { recipient: "0x0000000000000000000000000000000000000002".into(), ..bound.clone() },
        Intent { amount: "5.000001".parse().unwrap(), ..bound.clone() },
        Intent { from_address: "0x0000000000000000000000000000000000000003".into(), ..bound.clone() },
        Intent { decimals: 18, ..bound.clone() },
    ];
    for other in others {
        let err = ledger.sign(&r.decision_id, other.clone(), None, never(), at(NOON)).await.unwrap_err();
        assert!(matches!(err, StoreError::IntentChanged(_)), "{other:?}: {err}");
    }
    assert_eq!(ledger.decision(&r.decision_id).await.unwrap().unwrap().status, SpendStatus::Reserved);
    // A decision without a bound intent (cleared by hand, or from before intents were bound)
    // is never signed.
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute("UPDATE decisions SET intent_hash = NULL WHERE id = ?1", [&r.decision_id]).unwrap();
    }
    let err = ledger.sign(&r.decision_id, bound, None, never(), at(NOON)).await.unwrap_err();
    assert!(matches!(err, StoreError::IntentMissing(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_neither_waits_for_nor_blocks_another_processs_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    // A short busy timeout: a dry run that wanted the write lock would fail quickly.
    let options = LedgerOptions { busy_timeout: std::time::Duration::from_millis(200), ..LedgerOptions::default() };
    let ledger = SqlStore::open(&path, model(), at(NOON), options).unwrap();
    decided(ledger.reserve(usdc("bot", "1.00")).await.unwrap());
    // Another process holds the write lock, mid-transaction.
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE; UPDATE meta SET value = value WHERE key = 'change_seq';").unwrap();
    let dry = ledger
        .evaluate(usdc("bot", "2.00").request, Balances::default(), Default::default())
        .await
        .expect("dry run while locked");
    assert!(dry.is_allowed(), "{:?}", dry.reasons);
    other.execute_batch("COMMIT").unwrap();
}
