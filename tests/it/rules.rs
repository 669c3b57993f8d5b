//! Every rule kind of the policy engine, with its edges: exactly at a limit, one unit over, a
//! window boundary, a DST change, a schedule crossing midnight, more decimals than the asset has.

use spendguard_core::model::Scope;
use spendguard_core::{Decision, Freeze, ReasonCode, Tier};
use spendguard_tests::*;

const MON: &str = "2026-11-23T12:00:00Z";

fn usdc(sb: &mut Sandbox, agent: &str, wallet: &str, amount: &str, when: &str) -> spendguard_core::Evaluation {
    sb.spend(&request(agent, wallet, PLAIN_EVM, amount, Some("USDC"), when))
}

#[test]
fn per_tx_cap_allows_exactly_the_cap_and_denies_one_unit_more() {
    let sb = Sandbox::new(
        r#"[[policy]]
id = "p"
scope = "agent:alice"
per_tx_usd = "100"
"#,
    );
    let at_cap = sb.evaluate(&request("alice", "eth-hot", PLAIN_EVM, "100", Some("USDC"), MON));
    assert_eq!(at_cap.decision, Decision::Allow);
    let over = sb.evaluate(&request("alice", "eth-hot", PLAIN_EVM, "100.000001", Some("USDC"), MON));
    assert_eq!(denials(&over), [ReasonCode::PerTxLimit]);
    assert_eq!(over.reasons[0].policy_id.as_deref(), Some("p"));
    assert_eq!(over.reasons[0].rule, "per_tx_usd");
    assert_eq!(over.reasons[0].detail, "100.000001 USD exceeds the per-transaction cap of 100.00 USD");
    // Valued at the configured price: 0.0333 ETH × 3000 = 99.90 USD passes; 0.034 ETH = 102 does not.
    assert!(sb.evaluate(&request("alice", "eth-hot", PLAIN_EVM, "0.0333", None, MON)).is_allowed());
    assert!(!sb.evaluate(&request("alice", "eth-hot", PLAIN_EVM, "0.034", None, MON)).is_allowed());
}

#[test]
fn rolling_window_counts_exactly_up_to_the_limit_and_forgets_at_its_boundary() {
    let mut sb = Sandbox::new(
        r#"[[policy]]
id = "p"
scope = "agent:alice"
limits = [ { window = "24h", max_usd = "1000" } ]
"#,
    );
    assert!(usdc(&mut sb, "alice", "eth-hot", "600", "2026-11-23T10:00:00Z").is_allowed());
    assert!(usdc(&mut sb, "alice", "eth-hot", "400", "2026-11-23T11:00:00Z").is_allowed(), "exactly at the limit");
    let over = usdc(&mut sb, "alice", "eth-hot", "0.000001", "2026-11-23T12:00:00Z");
    assert_eq!(denials(&over), [ReasonCode::WindowLimit]);
    assert_eq!(
        over.reasons[0].detail,
        "agent alice 24h spend 1000.00 + reserved 0.00 + 0.000001 = 1000.000001 USD exceeds 1000.00 USD"
    );
    // 24h after the first spend it leaves the window (half-open): 600 of room again.
    assert!(!usdc(&mut sb, "alice", "eth-hot", "600", "2026-11-24T09:59:59Z").is_allowed());
    assert!(usdc(&mut sb, "alice", "eth-hot", "600", "2026-11-24T10:00:00Z").is_allowed());
}

#[test]
fn calendar_day_resets_at_local_midnight() {
    let mut sb = Sandbox::new(
        r#"[[policy]]
id = "p"
scope = "agent:alice"
timezone = "Asia/Tokyo"
limits = [ { window = "day", max_usd = "100" } ]
"#,
    );
    // Tokyo is UTC+9: its day of 2026-11-24 starts at 2026-11-23T15:00Z.
    assert!(usdc(&mut sb, "alice", "eth-hot", "100", "2026-11-23T14:59:59Z").is_allowed());
    assert!(!usdc(&mut sb, "alice", "eth-hot", "1", "2026-11-23T14:59:59.5Z").is_allowed());
    assert!(usdc(&mut sb, "alice", "eth-hot", "100", "2026-11-23T15:00:00Z").is_allowed());
}

#[test]
fn calendar_day_across_dst_changes_is_23_or_25_hours_long() {
    let mut sb = Sandbox::new(
        r#"[[policy]]
id = "p"
scope = "agent:alice"
timezone = "America/New_York"
limits = [ { window = "day", max_usd = "100" } ]
"#,
    );
    // Spring forward: 2026-03-08 in New York runs 05:00Z to 04:00Z next day (23 hours).
    assert!(usdc(&mut sb, "alice", "eth-hot", "100", "2026-03-08T05:00:00Z").is_allowed());
    assert!(!usdc(&mut sb, "alice", "eth-hot", "1", "2026-03-09T03:59:59Z").is_allowed(), "still March 8th");
    assert!(usdc(&mut sb, "alice", "eth-hot", "100", "2026-03-09T04:00:00Z").is_allowed(), "March 9th began");
    // Fall back: 2026-11-01 runs 04:00Z to 05:00Z next day (25 hours).
    assert!(usdc(&mut sb, "alice", "eth-hot", "100", "2026-11-01T04:00:00Z").is_allowed());
    assert!(!usdc(&mut sb, "alice", "eth-hot", "1", "2026-11-02T04:30:00Z").is_allowed(), "hour 25 of November 1st");
    assert!(usdc(&mut sb, "alice", "eth-hot", "100", "2026-11-02T05:00:00Z").is_allowed());
}

#[test]
fn week_and_month_windows() {
    let mut sb = Sandbox::new(
        r#"[[policy]]
id = "p"
scope = "agent:alice"
limits = [ { window = "week", max_usd = "100" }, { window = "month", max_usd = "150" } ]
"#,
    );
    assert!(usdc(&mut sb, "alice", "eth-hot", "100", "2026-11-22T23:00:00Z").is_allowed(), "Sunday");
    let e = usdc(&mut sb, "alice", "eth-hot", "60", "2026-11-23T00:00:00Z");
    assert_eq!(denials(&e), [ReasonCode::WindowLimit], "new week, but the month has 50 left");
    assert_eq!(e.reasons[0].rule, "limits[1]");
    assert!(usdc(&mut sb, "alice", "eth-hot", "50", "2026-11-23T00:00:00Z").is_allowed());
    assert!(usdc(&mut sb, "alice", "eth-hot", "100", "2026-12-01T00:00:00Z").is_allowed(), "new month, same week");
}

#[test]
fn velocity_denies_the_sixth_spend_in_an_hour() {
    let mut sb = Sandbox::new(
        r#"[[policy]]
id = "p"
scope = "agent:alice"
limits = [ { window = "1h", max_count = 5 } ]
"#,
    );
    for minute in 0..5 {
        assert!(usdc(&mut sb, "alice", "eth-hot", "1", &format!("2026-11-23T10:{minute:02}:00Z")).is_allowed());
    }
    let sixth = usdc(&mut sb, "alice", "eth-hot", "1", "2026-11-23T10:59:59Z");
    assert_eq!(denials(&sixth), [ReasonCode::VelocityLimit]);
    assert_eq!(sixth.reasons[0].detail, "agent alice 1h spend 5 + reserved 0 + 1 = 6 spends exceeds 5 spends");
    assert!(usdc(&mut sb, "alice", "eth-hot", "1", "2026-11-23T11:00:01Z").is_allowed(), "the first has left the hour");
}

#[test]
fn asset_unit_limit_counts_only_its_asset() {
    let mut sb = Sandbox::new(
        r#"[[policy]]
id = "p"
scope = "agent:alice"
limits = [ { window = "day", max_amount = "0.5", asset = "eth:ETH" } ]
"#,
    );
    assert!(sb.spend(&request("alice", "eth-hot", PLAIN_EVM, "0.3", None, MON)).is_allowed());
    assert!(usdc(&mut sb, "alice", "eth-hot", "5000", MON).is_allowed(), "USDC is not limited here");
    assert!(sb.spend(&request("alice", "eth-hot", PLAIN_EVM, "0.2", None, MON)).is_allowed(), "exactly 0.5");
    let over = sb.spend(&request("alice", "eth-hot", PLAIN_EVM, "0.000000000000000001", None, MON));
    assert_eq!(denials(&over), [ReasonCode::WindowLimit]);
    assert!(
        over.reasons[0].detail.ends_with("= 0.500000000000000001 eth:ETH exceeds 0.5 eth:ETH"),
        "{}",
        over.reasons[0].detail
    );
}

#[test]
fn balance_fraction_compares_with_the_wallets_balance() {
    let mut sb = Sandbox::new(
        r#"[[policy]]
id = "p"
scope = "wallet:eth-hot"
limits = [ { window = "day", max_balance_fraction = "0.10" } ]
"#,
    );
    let unknown = sb.evaluate(&request("alice", "eth-hot", PLAIN_EVM, "0.1", None, MON));
    assert_eq!(denials(&unknown), [ReasonCode::BalanceFractionLimit], "fails closed without a balance");
    sb.balances.insert("eth:ETH".into(), dec("10"));
    assert!(sb.spend(&request("alice", "eth-hot", PLAIN_EVM, "0.6", None, MON)).is_allowed());
    // Bob spends from the same wallet: the fraction is the wallet's, whoever spends.
    assert!(sb.spend(&request("bob", "eth-hot", PLAIN_EVM, "0.4", None, MON)).is_allowed(), "exactly 10%");
    let over = sb.spend(&request("bob", "eth-hot", PLAIN_EVM, "0.000000000000000001", None, MON));
    assert_eq!(denials(&over), [ReasonCode::BalanceFractionLimit]);
    assert!(over.reasons[0].detail.contains("exceeds 0.1 × balance 10 = 1 eth:ETH"), "{}", over.reasons[0].detail);
}

#[test]
fn a_balance_fraction_bound_to_an_asset_counts_only_that_asset() {
    let mut sb = Sandbox::new(
        r#"[[policy]]
id = "p"
scope = "wallet:eth-hot"
limits = [ { window = "day", max_balance_fraction = "0.10", asset = "eth:USDC" }, { window = "day", max_usd = "1000000" } ]
"#,
    );
    sb.balances.insert("eth:USDC".into(), dec("100"));
    assert!(usdc(&mut sb, "alice", "eth-hot", "6", MON).is_allowed());
    assert!(sb.spend(&request("alice", "eth-hot", PLAIN_EVM, "0.5", None, MON)).is_allowed(), "ETH is not bound");
    assert!(usdc(&mut sb, "bob", "eth-hot", "4", MON).is_allowed(), "exactly 10%, whoever spends");
    let over = usdc(&mut sb, "alice", "eth-hot", "0.01", MON);
    assert_eq!(denials(&over), [ReasonCode::BalanceFractionLimit]);
    assert!(over.reasons[0].detail.contains("exceeds 0.1 × balance 100 = 10 eth:USDC"), "{}", over.reasons[0].detail);
}

#[test]
fn an_agent_limit_pools_all_its_wallets_and_chains() {
    let mut sb = Sandbox::new(
        r#"[[policy]]
id = "p"
scope = "agent:alice"
limits = [ { window = "day", max_usd = "1000" } ]
"#,
    );
    assert!(usdc(&mut sb, "alice", "eth-hot", "700", MON).is_allowed());
    let sol = sb.spend(&request("alice", "sol-hot", PLAIN_SOL, "2.5", Some("SOL"), MON)); // 375 USD
    assert_eq!(denials(&sol), [ReasonCode::WindowLimit]);
    assert!(sb.spend(&request("alice", "sol-hot", PLAIN_SOL, "2", Some("SOL"), MON)).is_allowed(), "300 USD fits");
    assert!(usdc(&mut sb, "bob", "eth-hot", "5000", MON).is_allowed(), "bob has no such limit");
}

#[test]
fn a_wallet_limit_pools_every_agent_using_it() {
    let mut sb = Sandbox::new(
        r#"[[policy]]
id = "p"
scope = "wallet:eth-hot"
limits = [ { window = "day", max_usd = "100" } ]
"#,
    );
    assert!(usdc(&mut sb, "alice", "eth-hot", "60", MON).is_allowed());
    assert_eq!(denials(&usdc(&mut sb, "bob", "eth-hot", "41", MON)), [ReasonCode::WindowLimit]);
    assert!(usdc(&mut sb, "bob", "eth-hot", "40", MON).is_allowed());
    assert!(sb.spend(&request("alice", "sol-hot", PLAIN_SOL, "100", Some("USDC"), MON)).is_allowed(), "other wallet");
}

#[test]
fn department_and_org_ceilings_pool_their_agents() {
    let mut sb = Sandbox::new(
        r#"[[policy]]
id = "eng"
scope = "department:eng"
limits = [ { window = "day", max_usd = "100" } ]

[[policy]]
id = "org"
scope = "org"
limits = [ { window = "day", max_usd = "150" } ]
"#,
    );
    assert!(usdc(&mut sb, "alice", "eth-hot", "70", MON).is_allowed());
    let bob = usdc(&mut sb, "bob", "eth-hot", "31", MON);
    assert_eq!(denials(&bob), [ReasonCode::WindowLimit]);
    assert_eq!(bob.reasons[0].policy_id.as_deref(), Some("eng"));
    assert!(usdc(&mut sb, "bob", "eth-hot", "30", MON).is_allowed());
    let carol = usdc(&mut sb, "carol", "eth-cold", "51", MON);
    assert_eq!(carol.reasons[0].policy_id.as_deref(), Some("org"), "carol is in ops; only the org ceiling binds");
    assert!(usdc(&mut sb, "carol", "eth-cold", "50", MON).is_allowed());
}

#[test]
fn allowed_chains_and_the_asset_allowlist() {
    let sb = Sandbox::new(
        r#"[[policy]]
id = "p"
scope = "agent:alice"
chains = ["eth"]
assets = ["eth:ETH"]
"#,
    );
    assert!(sb.evaluate(&request("alice", "eth-hot", PLAIN_EVM, "0.01", None, MON)).is_allowed());
    let usdc = sb.evaluate(&request("alice", "eth-hot", PLAIN_EVM, "1", Some("USDC"), MON));
    assert_eq!(denials(&usdc), [ReasonCode::AssetNotAllowed], "default deny once an allowlist exists");
    let sol = sb.evaluate(&request("alice", "sol-hot", PLAIN_SOL, "1", Some("SOL"), MON));
    assert_eq!(denials(&sol), [ReasonCode::ChainNotAllowed, ReasonCode::AssetNotAllowed]);
}

const RECIPIENTS: &str = r#"[[policy]]
id = "p"
scope = "agent:alice"
  [policy.tiers]
  instant_max_usd = "1000000"
  approver_role = "approver"
  [policy.recipients]
  default_action = "block"
  rules = [
    { category = "gambling", action = "block" },
    { address = "eth:0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC", action = "allow" },
    { merchant = "github", action = "allow", per_tx_cap_usd = "100" },
    { address = "sol:4Nd1mBQtrMJVYVfKf2PJy9NZUZdTAsp7D4xWLs4gDB4T", action = "require_approval" },
  ]
"#;

#[test]
fn recipient_rules_first_match_wins_and_the_merchant_comes_from_the_address() {
    let sb = Sandbox::new(RECIPIENTS);
    // The casino is blocked by category before the rule that allows its address could match.
    let casino = sb.evaluate(&request("alice", "eth-hot", &CASINO.to_lowercase(), "1", Some("USDC"), MON));
    assert_eq!(denials(&casino), [ReasonCode::RecipientBlocked]);
    assert_eq!(casino.reasons[0].rule, "recipients.rules[0]");
    assert!(casino.reasons[0].detail.contains("merchant casino, category gambling"));
    // GitHub is allowed up to its per-recipient cap.
    assert!(sb.evaluate(&request("alice", "eth-hot", GITHUB, "100", Some("USDC"), MON)).is_allowed());
    let big = sb.evaluate(&request("alice", "eth-hot", GITHUB, "100.01", Some("USDC"), MON));
    assert_eq!(denials(&big), [ReasonCode::PerTxLimit]);
    assert_eq!(big.reasons[0].rule, "recipients.rules[2].per_tx_cap_usd");
    // Anyone else: the default action.
    let other = sb.evaluate(&request("alice", "eth-hot", PLAIN_EVM, "1", Some("USDC"), MON));
    assert_eq!(denials(&other), [ReasonCode::RecipientNotAllowed]);
    // A require_approval rule raises the tier.
    let sol = sb.evaluate(&request("alice", "sol-hot", PLAIN_SOL, "1", Some("USDC"), MON));
    assert_eq!((sol.decision, sol.tier), (Decision::RequireApproval, Tier::Approval));
    assert_eq!(sol.reasons[0].code, ReasonCode::ApprovalRequired);
}

#[test]
fn schedules_deny_outside_hours_and_days_in_their_timezone() {
    let sb = Sandbox::new(
        r#"[[policy]]
id = "p"
scope = "agent:alice"
schedule = { days = ["mon", "tue", "wed", "thu", "fri"], hours = "09:00-18:00", timezone = "America/New_York" }
"#,
    );
    let saturday = sb.evaluate(&request("alice", "eth-hot", PLAIN_EVM, "1", Some("USDC"), "2026-11-21T15:00:00Z"));
    assert_eq!(denials(&saturday), [ReasonCode::OutsideSchedule]);
    assert_eq!(
        saturday.reasons[0].detail,
        "Sat 2026-11-21 10:00 EST is outside the schedule mon,tue,wed,thu,fri 09:00-18:00 America/New_York"
    );
    assert!(sb
        .evaluate(&request("alice", "eth-hot", PLAIN_EVM, "1", Some("USDC"), "2026-11-20T14:00:00Z"))
        .is_allowed());
    assert!(!sb
        .evaluate(&request("alice", "eth-hot", PLAIN_EVM, "1", Some("USDC"), "2026-11-20T23:00:00Z"))
        .is_allowed());
}

#[test]
fn a_night_schedule_crossing_midnight() {
    let sb = Sandbox::new(
        r#"[[policy]]
id = "p"
scope = "agent:alice"
schedule = { days = ["fri"], hours = "22:00-06:00", timezone = "UTC" }
"#,
    );
    let ok = |when| sb.evaluate(&request("alice", "eth-hot", PLAIN_EVM, "1", Some("USDC"), when)).is_allowed();
    assert!(ok("2026-11-20T22:00:00Z"), "Friday 22:00");
    assert!(ok("2026-11-21T05:59:59Z"), "Saturday before 06:00 belongs to Friday's night");
    assert!(!ok("2026-11-21T06:00:00Z"));
    assert!(!ok("2026-11-21T23:00:00Z"), "Saturday night is not listed");
}

const OPERATIONS: &str = r#"[[policy]]
id = "refunds"
scope = "agent:carol"
per_tx_usd = "500"
limits = [ { window = "day", max_usd = "5000" } ]
  [[policy.operation]]
  name = "refund"
  per_tx_usd = "500"
  limits = [ { window = "day", max_usd = "1000" } ]
  [[policy.operation]]
  name = "payroll"
  per_tx_usd = "10000"
"#;

#[test]
fn operation_budgets() {
    let mut sb = Sandbox::new(OPERATIONS);
    let mut req = request("carol", "eth-cold", PLAIN_EVM, "100", Some("USDC"), MON);
    assert_eq!(denials(&sb.evaluate(&req)), [ReasonCode::OperationNotAllowed], "an operation must be named");
    req.operation = Some("bribe".into());
    let unknown = sb.evaluate(&req);
    assert_eq!(denials(&unknown), [ReasonCode::OperationNotAllowed]);
    assert_eq!(unknown.reasons[0].detail, "operation \"bribe\" is not one of refund, payroll");
    // refund: its own daily 1000, summing only refunds.
    req.operation = Some("refund".into());
    req.amount = dec("500");
    assert!(sb.spend(&req).is_allowed());
    assert!(sb.spend(&req).is_allowed());
    let third = sb.spend(&req);
    assert_eq!(denials(&third), [ReasonCode::WindowLimit]);
    assert_eq!(third.reasons[0].rule, "operation[refund].limits[0]");
    // payroll: its own per-tx cap replaces the policy's 500, and refunds do not count against it.
    req.operation = Some("payroll".into());
    req.amount = dec("4000");
    let payroll = sb.spend(&req);
    assert!(payroll.is_allowed(), "{:?}", payroll.reasons);
    req.amount = dec("10000.01");
    assert_eq!(denials(&sb.evaluate(&req)), [ReasonCode::PerTxLimit, ReasonCode::WindowLimit]);
}

const TIERS: &str = r#"[[policy]]
id = "tiers"
scope = "agent:alice"
  [policy.tiers]
  instant_max_usd = "10"
  notify_max_usd = "100"
  delay_max_usd = "1000"
  delay = "5m"
  approver_role = "approver"
  approval_ttl = "1h"
"#;

#[test]
fn the_four_tiers_and_their_boundaries() {
    let sb = Sandbox::new(TIERS);
    let tier = |amount: &str| {
        let e = sb.evaluate(&request("alice", "eth-hot", PLAIN_EVM, amount, Some("USDC"), MON));
        (e.decision, e.tier)
    };
    assert_eq!(tier("5"), (Decision::Allow, Tier::Instant));
    assert_eq!(tier("10"), (Decision::Allow, Tier::Instant), "a threshold is inclusive");
    assert_eq!(tier("10.000001"), (Decision::Notify, Tier::Notify));
    assert_eq!(tier("50"), (Decision::Notify, Tier::Notify));
    assert_eq!(tier("500"), (Decision::Delay, Tier::Delay));
    assert_eq!(tier("5000"), (Decision::RequireApproval, Tier::Approval));
    let delayed = sb.evaluate(&request("alice", "eth-hot", PLAIN_EVM, "500", Some("USDC"), MON));
    assert_eq!(delayed.reasons[0].code, ReasonCode::Delayed);
    assert_eq!(delayed.spend.as_ref().unwrap().delay, Some(chrono::TimeDelta::minutes(5)));
    let approval = sb.evaluate(&request("alice", "eth-hot", PLAIN_EVM, "5000", Some("USDC"), MON));
    assert_eq!(
        approval.reasons[0].detail,
        "5000.00 USD is above tiers.delay_max_usd 1000.00 USD; requires approval by role approver within 1h"
    );
    assert_eq!(approval.spend.as_ref().unwrap().approver_role.as_deref(), Some("approver"));
}

#[test]
fn the_strictest_tier_of_all_policies_wins() {
    let sb = Sandbox::new(&format!(
        "{TIERS}\n{}",
        r#"[[policy]]
id = "org-tiers"
scope = "org"
  [policy.tiers]
  instant_max_usd = "1"
  notify_max_usd = "2"
  approver_role = "approver"
"#
    ));
    let e = sb.evaluate(&request("alice", "eth-hot", PLAIN_EVM, "5", Some("USDC"), MON));
    assert_eq!(e.tier, Tier::Approval, "the org policy asks for approval above 2 USD");
    assert_eq!(e.reasons[0].policy_id.as_deref(), Some("org-tiers"));
}

#[test]
fn every_failing_rule_is_reported_with_all_policies_checked() {
    let sb = Sandbox::new(
        r#"[[policy]]
id = "a"
scope = "agent:alice"
per_tx_usd = "10"
assets = ["eth:ETH"]

[[policy]]
id = "w"
scope = "wallet:eth-hot"
limits = [ { window = "1h", max_usd = "5" } ]
"#,
    );
    let e = sb.evaluate(&request("alice", "eth-hot", PLAIN_EVM, "20", Some("USDC"), MON));
    assert_eq!(denials(&e), [ReasonCode::AssetNotAllowed, ReasonCode::PerTxLimit, ReasonCode::WindowLimit]);
    assert_eq!(e.headroom.len(), 1);
    let h = &e.headroom[0];
    assert_eq!((h.fmt(h.limit), h.fmt(h.remaining())), ("5.00".to_string(), "5.00".to_string()));
}

#[test]
fn headroom_reports_used_reserved_and_remaining() {
    let mut sb = Sandbox::new(
        r#"[[policy]]
id = "p"
scope = "agent:alice"
limits = [ { window = "day", max_usd = "100" } ]
"#,
    );
    usdc(&mut sb, "alice", "eth-hot", "30", MON);
    sb.reserve(&request("alice", "eth-hot", PLAIN_EVM, "20", Some("USDC"), MON));
    let e = sb.evaluate(&request("alice", "eth-hot", PLAIN_EVM, "10", Some("USDC"), MON));
    let h = &e.headroom[0];
    assert_eq!(
        (h.labels.scope.as_str(), h.labels.window.as_str(), h.labels.unit.as_str()),
        ("agent:alice", "day", "USD")
    );
    assert_eq!((h.used, h.reserved, h.requested, h.remaining()), (dec("30"), dec("20"), dec("10"), dec("50")));
    let json = serde_json::to_value(h).unwrap();
    assert_eq!((&json["used"], &json["remaining"]), (&serde_json::json!("30.00"), &serde_json::json!("50.00")));
    let over = sb.evaluate(&request("alice", "eth-hot", PLAIN_EVM, "51", Some("USDC"), MON));
    assert_eq!(
        over.reasons[0].detail,
        "agent alice day spend 30.00 + reserved 20.00 + 51.00 = 101.00 USD exceeds 100.00 USD"
    );
}

#[test]
fn a_frozen_scope_denies_first_and_says_who_when_and_why() {
    let mut sb = Sandbox::new(TIERS);
    let req = request("bob", "eth-hot", PLAIN_EVM, "1", Some("USDC"), MON);
    for scope in
        [Scope::Org, Scope::Department("eng".into()), Scope::Agent("bob".into()), Scope::Wallet("eth-hot".into())]
    {
        sb.freezes = vec![Freeze {
            scope: scope.clone(),
            frozen_by: "ops@acme.example".into(),
            reason: "suspicious outflow".into(),
            frozen_at: at("2026-11-23T09:00:00Z"),
            evidence: None,
        }];
        let e = sb.evaluate(&req);
        assert_eq!(denials(&e), [ReasonCode::KillSwitch], "{scope}");
        assert!(e.reasons[0]
            .detail
            .contains("frozen by ops@acme.example since 2026-11-23T09:00:00Z: suspicious outflow"));
    }
    sb.freezes[0].scope = Scope::Agent("alice".into());
    assert!(sb.evaluate(&req).is_allowed(), "a freeze of another agent does not touch bob");
}

#[test]
fn malformed_requests_are_denied_with_a_clear_code() {
    let sb = Sandbox::new("");
    let code = |agent: &str, wallet: &str, to: &str, amount: &str, asset: Option<&str>| {
        denials(&sb.evaluate(&request(agent, wallet, to, amount, asset, MON)))
    };
    assert_eq!(code("alice", "nope", PLAIN_EVM, "1", None), [ReasonCode::UnknownWallet]);
    assert_eq!(code("carol", "eth-hot", PLAIN_EVM, "1", None), [ReasonCode::WalletNotAssigned]);
    assert_eq!(code("alice", "eth-hot", PLAIN_EVM, "0", None), [ReasonCode::InvalidAmount]);
    assert_eq!(code("alice", "eth-hot", PLAIN_EVM, "-1", None), [ReasonCode::InvalidAmount]);
    assert_eq!(code("alice", "eth-hot", PLAIN_EVM, "1.0000001", Some("USDC")), [ReasonCode::InvalidAmount]);
    assert_eq!(code("alice", "eth-hot", PLAIN_EVM, "1.0000000", Some("USDC")), [], "trailing zeros are not decimals");
    assert_eq!(code("alice", "eth-hot", PLAIN_EVM, "1", Some("DOGE")), [ReasonCode::AssetNotAllowed]);
    assert_eq!(code("alice", "eth-hot", PLAIN_EVM, "1", Some("sol:USDC")), [ReasonCode::AssetNotAllowed]);
    assert_eq!(code("alice", "eth-hot", PLAIN_SOL, "1", None), [ReasonCode::InvalidRecipient]);
    assert_eq!(code("alice", "sol-hot", PLAIN_EVM, "1", None), [ReasonCode::InvalidRecipient]);
    let e = sb.evaluate(&request("alice", "eth-hot", PLAIN_EVM, "1.0000001", Some("USDC"), MON));
    assert_eq!(e.reasons[0].detail, "amount 1.0000001 has 7 decimals; eth:USDC allows 6");
}

#[test]
fn insufficient_balance_is_decided_before_anything_is_signed() {
    let mut sb = Sandbox::new("");
    sb.balances.insert("eth:USDC".into(), dec("5"));
    assert!(sb.evaluate(&request("alice", "eth-hot", PLAIN_EVM, "5", Some("USDC"), MON)).is_allowed());
    let e = sb.evaluate(&request("alice", "eth-hot", PLAIN_EVM, "5.000001", Some("USDC"), MON));
    assert_eq!(denials(&e), [ReasonCode::InsufficientBalance]);
}

#[test]
fn a_policy_with_only_an_approval_threshold_explains_itself() {
    let sb = Sandbox::new(
        r#"[[policy]]
id = "p"
scope = "agent:alice"
  [policy.tiers]
  delay_max_usd = "100"
  delay = "10m"
  approver_role = "approver"
"#,
    );
    let e = sb.evaluate(&request("alice", "eth-hot", PLAIN_EVM, "5", Some("USDC"), MON));
    assert_eq!(e.tier, Tier::Delay, "without instant or notify thresholds the first tier is DELAY");
    assert_eq!(e.reasons[0].detail, "executes after 10m unless cancelled");
}

/// Fail closed: a spend that no policy with a limit covers is denied, however large or small,
/// with every other reason still reported; tiers, schedules and allowlists alone bound nothing.
#[test]
fn a_spend_no_limit_bounds_is_denied_no_policy() {
    let unbounded = BASE_ORG.replace("[[policy]]\nid = \"ceiling\"\nscope = \"org\"\nper_tx_usd = \"1000000000\"", "");
    assert_ne!(unbounded, BASE_ORG, "the harness's ceiling is gone");
    let extra = r#"[[policy]]
id = "alice-tiers"
scope = "agent:alice"
  [policy.tiers]
  instant_max_usd = "10"
  approver_role = "approver"

[[policy]]
id = "bob-daily"
scope = "agent:bob"
limits = [ { window = "day", max_usd = "100" } ]
"#;
    let model =
        spendguard_config::parse(&format!("{unbounded}\n{extra}"), std::path::Path::new("t.toml")).unwrap().model;
    let mut sb = Sandbox::new("");
    sb.model = model;
    // 9,000 ETH is 27 million USD; alice has tiers but no limit.
    let whale = sb.evaluate(&request("alice", "eth-hot", PLAIN_EVM, "9000", None, MON));
    assert_eq!(whale.decision, Decision::Deny);
    assert_eq!(denials(&whale), [ReasonCode::NoPolicy]);
    assert!(whale.reasons[0].detail.contains("covers agent alice spending from wallet eth-hot"), "{whale:?}");
    let tiny = sb.evaluate(&request("alice", "eth-hot", PLAIN_EVM, "0.01", Some("USDC"), MON));
    assert_eq!(denials(&tiny), [ReasonCode::NoPolicy], "small or large: nothing bounds it");
    // carol has no policy at all; bob's own limit bounds him.
    assert_eq!(
        denials(&sb.evaluate(&request("carol", "eth-cold", PLAIN_EVM, "1", Some("USDC"), MON))),
        [ReasonCode::NoPolicy]
    );
    assert!(sb.evaluate(&request("bob", "eth-hot", PLAIN_EVM, "1", Some("USDC"), MON)).is_allowed());
    // A limit over the wallet bounds every agent using it.
    let wallet =
        format!("{unbounded}\n{extra}\n[[policy]]\nid = \"hot\"\nscope = \"wallet:eth-hot\"\nper_tx_usd = \"50\"\n");
    let model = spendguard_config::parse(&wallet, std::path::Path::new("t.toml")).unwrap().model;
    let mut sb = Sandbox::new("");
    sb.model = model;
    assert!(sb.evaluate(&request("alice", "eth-hot", PLAIN_EVM, "5", Some("USDC"), MON)).is_allowed());
    assert_eq!(
        denials(&sb.evaluate(&request("alice", "sol-hot", PLAIN_SOL, "5", Some("USDC"), MON))),
        [ReasonCode::NoPolicy]
    );
}
