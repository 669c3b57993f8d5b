//! The daemon's Prometheus metrics: decisions by outcome, reservation latency, watcher lag per
//! chain, alert deliveries by channel. Written in the text exposition format by hand: four
//! metric families do not justify a metrics framework.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the reservation latency histogram.
const LATENCY_BUCKETS: [f64; 13] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

#[derive(Default)]
struct Values {
    decisions: BTreeMap<String, u64>,
    latency_buckets: [u64; LATENCY_BUCKETS.len()],
    latency_sum: f64,
    latency_count: u64,
    watcher_lag: BTreeMap<String, u64>,
    watcher_errors: BTreeMap<String, u64>,
    alerts: BTreeMap<(String, &'static str), u64>,
}

/// Counters shared by everything a daemon runs.
#[derive(Default)]
pub struct Metrics {
    values: Mutex<Values>,
}

impl Metrics {
    fn with<T>(&self, f: impl FnOnce(&mut Values) -> T) -> T {
        f(&mut self.values.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// A decision was made.
    pub fn decision(&self, outcome: spendguard_core::Decision) {
        self.with(|v| *v.decisions.entry(outcome.as_str().to_string()).or_default() += 1);
    }

    /// A reservation (evaluate-and-reserve, durable) took `took`.
    pub fn reservation(&self, took: Duration) {
        let secs = took.as_secs_f64();
        self.with(|v| {
            for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
                if secs <= *bound {
                    v.latency_buckets[i] += 1;
                }
            }
            v.latency_sum += secs;
            v.latency_count += 1;
        });
    }

    /// After a watcher pass: how many blocks (or listed transactions) `chain` is behind.
    pub fn watcher_lag(&self, chain: &str, behind: u64) {
        self.with(|v| {
            v.watcher_lag.insert(chain.to_string(), behind);
        });
    }

    /// A watcher pass on `chain` failed.
    pub fn watcher_error(&self, chain: &str) {
        self.with(|v| *v.watcher_errors.entry(chain.to_string()).or_default() += 1);
    }

    /// An alert delivery attempt on `channel`.
    pub fn alert(&self, channel: &str, delivered: bool) {
        let result = if delivered { "delivered" } else { "failed" };
        self.with(|v| *v.alerts.entry((channel.to_string(), result)).or_default() += 1);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        self.with(|v| {
            let mut out = String::new();
            out.push_str("# HELP spendguard_decisions_total Spend decisions made, by outcome.\n# TYPE spendguard_decisions_total counter\n");
            for outcome in ["allow", "notify", "delay", "require_approval", "deny"] {
                let n = v.decisions.get(outcome).copied().unwrap_or(0);
                let _ = writeln!(out, "spendguard_decisions_total{{outcome=\"{outcome}\"}} {n}");
            }
            out.push_str("# HELP spendguard_reservation_seconds Time to evaluate and durably reserve a spend.\n# TYPE spendguard_reservation_seconds histogram\n");
            for (bound, n) in LATENCY_BUCKETS.iter().zip(&v.latency_buckets) {
                let _ = writeln!(out, "spendguard_reservation_seconds_bucket{{le=\"{bound}\"}} {n}");
            }
            let _ = writeln!(out, "spendguard_reservation_seconds_bucket{{le=\"+Inf\"}} {}", v.latency_count);
            let _ = writeln!(out, "spendguard_reservation_seconds_sum {}", v.latency_sum);
            let _ = writeln!(out, "spendguard_reservation_seconds_count {}", v.latency_count);
            out.push_str("# HELP spendguard_watcher_lag Blocks (EVM) or listed transactions (Solana) the watcher is behind the final head.\n# TYPE spendguard_watcher_lag gauge\n");
            for (chain, lag) in &v.watcher_lag {
                let _ = writeln!(out, "spendguard_watcher_lag{{chain=\"{}\"}} {lag}", label(chain));
            }
            out.push_str("# HELP spendguard_watcher_errors_total Watcher passes that failed.\n# TYPE spendguard_watcher_errors_total counter\n");
            for (chain, n) in &v.watcher_errors {
                let _ = writeln!(out, "spendguard_watcher_errors_total{{chain=\"{}\"}} {n}", label(chain));
            }
            out.push_str("# HELP spendguard_alerts_total Alert delivery attempts, by channel and result.\n# TYPE spendguard_alerts_total counter\n");
            for ((channel, result), n) in &v.alerts {
                let _ = writeln!(out, "spendguard_alerts_total{{channel=\"{}\",result=\"{result}\"}} {n}", label(channel));
            }
            out
        })
    }
}

/// A label value, escaped as the exposition format requires.
pub(crate) fn label(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
