//! Policy evaluation of one request against 50 applicable rules, with the usage index holding
//! a realistic history. Run: `cargo bench -p spendguard-tests --bench engine`.
#![allow(clippy::unwrap_used, missing_docs)] // bench code: a panic is the failure report; criterion macros make undocumented fns

use chrono::TimeDelta;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use spendguard_core::SpendRequest;
use spendguard_tests::*;
use std::hint::black_box;

/// Four policies covering alice's spend from eth-hot (org, department, agent, wallet) with 50
/// rules between them: 38 limits of every kind, 4 per-tx caps, chain and asset lists, a
/// schedule, recipient rules and tiers.
fn fifty_rules() -> String {
    let mut out = String::new();
    let windows = ["1h", "24h", "day", "week", "month", "7d", "30m", "12h", "30d", "10m"];
    for (n, scope) in ["org", "department:eng", "agent:alice", "wallet:eth-hot"].iter().enumerate() {
        let mut limits = vec![];
        for (i, w) in windows.iter().enumerate().take(if n == 3 { 8 } else { 10 }) {
            let limit = match i % 4 {
                0 => format!("{{ window = \"{w}\", max_usd = \"{}\" }}", 1_000_000 + i),
                1 => format!("{{ window = \"{w}\", max_count = {} }}", 100_000 + i),
                2 => format!("{{ window = \"{w}\", max_amount = \"{}\", asset = \"eth:USDC\" }}", 1_000_000 + i),
                _ => format!("{{ window = \"{w}\", max_usd = \"{}\", asset = \"eth:USDC\" }}", 1_000_000 + i),
            };
            limits.push(limit);
        }
        out.push_str(&format!(
            "[[policy]]\nid = \"p{n}\"\nscope = \"{scope}\"\nper_tx_usd = \"100000\"\nlimits = [ {} ]\n",
            limits.join(", ")
        ));
        if n == 2 {
            out.push_str(
                r#"chains = ["eth", "sol"]
assets = ["eth:ETH", "eth:USDC", "sol:USDC"]
schedule = { hours = "00:00-24:00", timezone = "America/New_York" }
  [policy.tiers]
  instant_max_usd = "1000"
  notify_max_usd = "5000"
  approver_role = "approver"
  [policy.recipients]
  default_action = "allow"
  rules = [ { category = "gambling", action = "block" }, { merchant = "github", action = "allow", per_tx_cap_usd = "500" } ]
"#,
            );
        }
        out.push('\n');
    }
    out
}

fn bench(c: &mut Criterion) {
    let policies = fifty_rules();
    let mut group = c.benchmark_group("evaluate_50_rules");
    for history in [0usize, 100, 1_000, 10_000] {
        let mut sb = Sandbox::new(&policies);
        let start = at("2026-11-02T00:00:00Z");
        // Past spends spread over three weeks by alice and bob, on both chains.
        for i in 0..history {
            let when = start + TimeDelta::seconds(i as i64 * (21 * 86_400 / history.max(1)) as i64);
            let (agent, wallet, to, asset) = if i % 3 == 0 {
                ("alice", "sol-hot", PLAIN_SOL, "USDC")
            } else {
                (["alice", "bob"][i % 2], "eth-hot", PLAIN_EVM, "USDC")
            };
            let req = SpendRequest {
                agent: agent.into(),
                wallet: wallet.into(),
                to: to.into(),
                amount: dec("1.5"),
                asset: Some(asset.into()),
                operation: None,
                at: when,
                domain: None,
            };
            assert!(sb.spend(&req).is_allowed(), "history must be allowed");
        }
        let req = request("alice", "eth-hot", GITHUB, "12.5", Some("USDC"), "2026-11-23T15:00:00Z");
        let e = sb.evaluate(&req);
        assert!(e.is_allowed(), "{:?}", e.reasons);
        assert_eq!(e.headroom.len(), 38);
        group.bench_with_input(BenchmarkId::new("history", history), &req, |b, req| {
            b.iter(|| black_box(sb.evaluate(black_box(req))))
        });
        // The same evaluation over 256 different requests: amounts, recipients, assets, and
        // instants moving forward as live traffic does (so window edges move), cycled so that
        // no cache or branch predictor sees one request over and over.
        let varied = varied_requests(256);
        let mut next = 0usize;
        group.bench_function(BenchmarkId::new("varied_history", history), |b| {
            b.iter(|| {
                next = (next + 1) % varied.len();
                black_box(sb.evaluate(black_box(&varied[next])))
            })
        });
    }
    group.finish();
}

/// `n` requests by alice from eth-hot, each different in amount, recipient, asset and instant.
fn varied_requests(n: usize) -> Vec<SpendRequest> {
    let start = at("2026-11-23T00:00:00Z");
    (0..n)
        .map(|i| {
            let to = [GITHUB, PLAIN_EVM][i % 2];
            let asset = ["USDC", "ETH"][(i / 2) % 2];
            let amount =
                if asset == "ETH" { format!("0.{:04}", 1 + i) } else { format!("{}.{:02}", 1 + i % 400, i % 100) };
            // Forward in uneven steps of 1 s to 2 min: about four hours in all.
            let when = start + TimeDelta::seconds((0..i as i64).map(|k| 1 + (k * 7_919) % 120).sum::<i64>());
            SpendRequest {
                agent: "alice".into(),
                wallet: "eth-hot".into(),
                to: to.into(),
                amount: dec(&amount),
                asset: Some(asset.into()),
                operation: None,
                at: when,
                domain: None,
            }
        })
        .collect()
}

/// The same varied evaluation with eth:ETH and eth:USDC priced statically and by live feeds
/// whose latest reading is cached (what the daemon does between refreshes): the price's only
/// cost on the request path is judging that reading.
fn price_sources(c: &mut Criterion) {
    use spendguard_core::price::{AssetPrice, FeedKind, Observation, PriceFeed, PriceReading, PriceSource};
    let policies = fifty_rules();
    let varied = varied_requests(256);
    let mut group = c.benchmark_group("evaluate_price_source");
    for live in [false, true] {
        let mut sb = Sandbox::new(&policies);
        if live {
            let read_at = varied[0].at;
            for asset in sb.model.assets.iter_mut().filter(|a| a.chain == "eth") {
                let feed = format!("0x{:040x}", asset.decimals);
                let price = asset.price.clone();
                let PriceSource::Static(usd) = price.source else { unreachable!("the base org prices statically") };
                asset.price = AssetPrice {
                    source: PriceSource::Live(PriceFeed {
                        chain: "eth".into(),
                        kind: FeedKind::Chainlink { feed, sequencer: None },
                        max_age: TimeDelta::hours(24),
                    }),
                    peg: None,
                    refresh: TimeDelta::hours(24),
                };
                let seen = Observation {
                    price: usd,
                    confidence: None,
                    published_at: read_at,
                    round_complete: true,
                    sequencer: None,
                };
                sb.prices.insert(asset.key(), PriceReading { read_at, result: Ok(seen) });
            }
        }
        assert!(varied.iter().all(|r| sb.evaluate(r).is_allowed()));
        let mut next = 0usize;
        group.bench_function(if live { "live_feed_cached" } else { "static" }, |b| {
            b.iter(|| {
                next = (next + 1) % varied.len();
                black_box(sb.evaluate(black_box(&varied[next])))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench, price_sources);
criterion_main!(benches);
