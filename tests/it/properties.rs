//! Property: for any sequence of requests, the allowed spend in any window never exceeds the
//! window's limit — rolling, calendar (in a DST timezone) and count limits, pooled across
//! wallets, chains and agents.

use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;
use rust_decimal::Decimal;
use spendguard_core::time::{CalendarPeriod, Window};
use spendguard_core::SpendRequest;
use spendguard_tests::*;

const POLICIES: &str = r#"[[policy]]
id = "alice"
scope = "agent:alice"
timezone = "America/New_York"
limits = [
  { window = "1h", max_usd = "100" },
  { window = "day", max_usd = "300" },
  { window = "10m", max_count = 3 },
]

[[policy]]
id = "hot-wallet"
scope = "wallet:eth-hot"
limits = [ { window = "30m", max_usd = "80" } ]
"#;

#[derive(Debug, Clone)]
struct Step {
    gap_seconds: i64,
    agent: usize,
    wallet: usize,
    cents: u32,
}

fn step() -> impl Strategy<Value = Step> {
    (0i64..1800, 0usize..2, 0usize..2, 1u32..6000).prop_map(|(gap_seconds, agent, wallet, cents)| Step {
        gap_seconds,
        agent,
        wallet,
        cents,
    })
}

struct Allowed {
    at: DateTime<Utc>,
    agent: &'static str,
    wallet: &'static str,
    usd: Decimal,
}

fn sum_in(allowed: &[Allowed], pick: impl Fn(&Allowed) -> bool) -> (Decimal, usize) {
    let picked: Vec<&Allowed> = allowed.iter().filter(|a| pick(a)).collect();
    (picked.iter().map(|a| a.usd).sum(), picked.len())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn allowed_spend_never_exceeds_any_window(steps in prop::collection::vec(step(), 1..80), reserve in any::<bool>()) {
        let mut sb = Sandbox::new(POLICIES);
        let ny: chrono_tz::Tz = "America/New_York".parse().unwrap();
        // Start the night before New York's fall-back change so days of 25 hours occur.
        let mut now = at("2026-10-31T20:00:00Z");
        let mut allowed = vec![];
        for s in &steps {
            now += TimeDelta::seconds(s.gap_seconds);
            let agent = ["alice", "bob"][s.agent];
            // alice pays from either of her wallets, on two chains; bob only from eth-hot.
            let (wallet, to, asset) = match (agent, s.wallet) {
                ("alice", 1) => ("sol-hot", PLAIN_SOL, "USDC"),
                _ => ("eth-hot", PLAIN_EVM, "USDC"),
            };
            let usd = Decimal::new(i64::from(s.cents), 2);
            let req = SpendRequest { agent: agent.into(), wallet: wallet.into(), to: to.into(), amount: usd, asset: Some(asset.into()), operation: None, at: now, domain: None };
            let e = if reserve { sb.reserve(&req) } else { sb.spend(&req) };
            if e.is_allowed() {
                allowed.push(Allowed { at: now, agent, wallet, usd });
            }
        }
        let day = Window::Calendar(CalendarPeriod::Day);
        for a in &allowed {
            let t = a.at;
            let (hour, _) = sum_in(&allowed, |x| x.agent == "alice" && x.at > t - TimeDelta::hours(1) && x.at <= t);
            prop_assert!(hour <= Decimal::from(100), "alice 1h {hour} at {t}");
            let start = day.start(t, ny);
            let (today, _) = sum_in(&allowed, |x| x.agent == "alice" && x.at >= start && x.at <= t);
            prop_assert!(today <= Decimal::from(300), "alice day {today} at {t}");
            let (_, count) = sum_in(&allowed, |x| x.agent == "alice" && x.at > t - TimeDelta::minutes(10) && x.at <= t);
            prop_assert!(count <= 3, "alice 10m count {count} at {t}");
            let (wallet, _) = sum_in(&allowed, |x| x.wallet == "eth-hot" && x.at > t - TimeDelta::minutes(30) && x.at <= t);
            prop_assert!(wallet <= Decimal::from(80), "eth-hot 30m {wallet} at {t}");
        }
    }
}
