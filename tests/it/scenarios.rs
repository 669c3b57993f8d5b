//! Scenarios from the field, run on a real SQLite ledger file.

use chrono::TimeDelta;
use spendguard_core::{Balances, Decision, ReasonCode, SpendRequest, SpendStatus, Tier};
use spendguard_store::{DecisionStore, LedgerOptions, Receipt, ReserveOutcome, ReserveRequest, SqlStore};
use spendguard_tests::*;
use std::sync::Arc;

struct Field {
    _dir: tempfile::TempDir,
    ledger: SqlStore,
}

fn field(policies: &str) -> Field {
    let dir = tempfile::tempdir().unwrap();
    let model = Arc::new(model(policies));
    let ledger =
        SqlStore::open(&dir.path().join("ledger.db"), model, at("2026-11-23T00:00:00Z"), LedgerOptions::default())
            .unwrap();
    Field { _dir: dir, ledger }
}

impl Field {
    async fn spend(&self, request: SpendRequest) -> Receipt {
        match self
            .ledger
            .reserve(ReserveRequest {
                request,
                balances: Balances::default(),
                prices: Default::default(),
                idempotency_key: None,
                memo: None,
                x402: None,
            })
            .await
            .unwrap()
        {
            ReserveOutcome::Decided { receipt, .. } => receipt,
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn codes(r: &Receipt) -> Vec<ReasonCode> {
    r.reasons.iter().map(|r| r.code).filter(|c| c.denies()).collect()
}

#[tokio::test]
async fn a_budget_spent_on_one_chain_denies_the_next_spend_on_another() {
    let f = field(
        r#"[[policy]]
id = "alice-daily"
scope = "agent:alice"
limits = [ { window = "24h", max_usd = "1000" } ]
"#,
    );
    let first = f.spend(request("alice", "eth-hot", PLAIN_EVM, "999", Some("USDC"), "2026-11-23T10:00:00Z")).await;
    assert_eq!(first.status, SpendStatus::Reserved);
    // It executes: from now on it is spend, not a reservation.
    f.ledger.set_status(&first.decision_id, SpendStatus::Signed, at("2026-11-23T10:00:01Z")).await.unwrap();
    let second = f.spend(request("alice", "sol-hot", PLAIN_SOL, "499", Some("USDC"), "2026-11-23T11:00:00Z")).await;
    assert_eq!(second.decision, Decision::Deny);
    assert_eq!(codes(&second), [ReasonCode::WindowLimit]);
    assert_eq!(
        second.reasons[0].detail,
        "agent alice 24h spend 999.00 + reserved 0.00 + 499.00 = 1498.00 USD exceeds 1000.00 USD"
    );
    assert_eq!(second.status, SpendStatus::Denied);
    let recorded = f.ledger.decision(&second.decision_id).await.unwrap().unwrap();
    assert_eq!((recorded.status, recorded.chain.as_deref()), (SpendStatus::Denied, Some("sol")));
}

#[tokio::test]
async fn four_tiers_at_5_50_500_and_5000_usd() {
    let f = field(
        r#"[[policy]]
id = "tiers"
scope = "agent:alice"
  [policy.tiers]
  instant_max_usd = "10"
  notify_max_usd = "100"
  delay_max_usd = "1000"
  delay = "5m"
  approver_role = "approver"
  approval_ttl = "1h"
"#,
    );
    let when = "2026-11-23T10:00:00Z";
    let mut got: Vec<(Decision, Tier, SpendStatus)> = vec![];
    for a in ["5", "50", "500", "5000"] {
        let r = f.spend(request("alice", "eth-hot", PLAIN_EVM, a, Some("USDC"), when)).await;
        got.push((r.decision, r.tier, r.status));
    }
    assert_eq!(
        got,
        [
            (Decision::Allow, Tier::Instant, SpendStatus::Reserved),
            (Decision::Notify, Tier::Notify, SpendStatus::Reserved),
            (Decision::Delay, Tier::Delay, SpendStatus::Queued),
            (Decision::RequireApproval, Tier::Approval, SpendStatus::PendingApproval),
        ]
    );
    let delayed = f.spend(request("alice", "eth-hot", PLAIN_EVM, "500", Some("USDC"), when)).await;
    assert_eq!(delayed.execute_after, Some(at(when) + TimeDelta::minutes(5)));
    let approval = f.spend(request("alice", "eth-hot", PLAIN_EVM, "5000", Some("USDC"), when)).await;
    assert_eq!(approval.approval_expires_at, Some(at(when) + TimeDelta::hours(1)));
    assert_eq!(
        f.ledger.decision(&approval.decision_id).await.unwrap().unwrap().approver_role.as_deref(),
        Some("approver")
    );
}

#[tokio::test]
async fn the_sixth_spend_inside_an_hour_is_denied() {
    let f = field(
        r#"[[policy]]
id = "velocity"
scope = "agent:alice"
limits = [ { window = "1h", max_count = 5 } ]
"#,
    );
    for minute in [0, 10, 20, 30, 40] {
        let r = f
            .spend(request("alice", "eth-hot", PLAIN_EVM, "1", Some("USDC"), &format!("2026-11-23T10:{minute:02}:00Z")))
            .await;
        assert_eq!(r.status, SpendStatus::Reserved);
    }
    let sixth = f.spend(request("alice", "eth-hot", PLAIN_EVM, "1", Some("USDC"), "2026-11-23T10:50:00Z")).await;
    assert_eq!(codes(&sixth), [ReasonCode::VelocityLimit]);
    // Denials do not count: an hour after the first, one slot opens again.
    let later = f.spend(request("alice", "eth-hot", PLAIN_EVM, "1", Some("USDC"), "2026-11-23T11:00:01Z")).await;
    assert_eq!(later.status, SpendStatus::Reserved);
}

#[tokio::test]
async fn a_saturday_spend_against_a_weekday_schedule() {
    let f = field(
        r#"[[policy]]
id = "office-hours"
scope = "agent:alice"
schedule = { days = ["mon", "tue", "wed", "thu", "fri"], hours = "09:00-18:00", timezone = "America/New_York" }
"#,
    );
    let saturday = f.spend(request("alice", "eth-hot", PLAIN_EVM, "1", Some("USDC"), "2026-11-21T16:00:00Z")).await;
    assert_eq!(codes(&saturday), [ReasonCode::OutsideSchedule]);
    let monday = f.spend(request("alice", "eth-hot", PLAIN_EVM, "1", Some("USDC"), "2026-11-23T16:00:00Z")).await;
    assert_eq!(monday.status, SpendStatus::Reserved);
}

#[tokio::test]
async fn a_gambling_merchant_is_blocked_before_an_allow_rule_that_would_match() {
    let f = field(
        r#"[[policy]]
id = "recipients"
scope = "agent:alice"
  [policy.recipients]
  default_action = "allow"
  rules = [
    { category = "gambling", action = "block" },
    { merchant = "casino", action = "allow" },
  ]
"#,
    );
    let r = f.spend(request("alice", "eth-hot", CASINO, "1", Some("USDC"), "2026-11-23T10:00:00Z")).await;
    assert_eq!(codes(&r), [ReasonCode::RecipientBlocked]);
    assert_eq!(r.reasons[0].rule, "recipients.rules[0]");
}

#[tokio::test]
async fn a_released_reservation_gives_its_budget_back() {
    let f = field(
        r#"[[policy]]
id = "p"
scope = "agent:alice"
limits = [ { window = "day", max_usd = "100" } ]
"#,
    );
    let held = f.spend(request("alice", "eth-hot", PLAIN_EVM, "100", Some("USDC"), "2026-11-23T10:00:00Z")).await;
    let blocked = f.spend(request("alice", "eth-hot", PLAIN_EVM, "1", Some("USDC"), "2026-11-23T10:01:00Z")).await;
    assert_eq!(codes(&blocked), [ReasonCode::WindowLimit]);
    assert!(blocked.reasons[0].detail.contains("spend 0.00 + reserved 100.00 + 1.00"), "{}", blocked.reasons[0].detail);
    f.ledger.set_status(&held.decision_id, SpendStatus::Released, at("2026-11-23T10:02:00Z")).await.unwrap();
    let again = f.spend(request("alice", "eth-hot", PLAIN_EVM, "100", Some("USDC"), "2026-11-23T10:03:00Z")).await;
    assert_eq!(again.status, SpendStatus::Reserved);
}
