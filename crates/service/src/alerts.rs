//! Alert delivery: events recorded in the ledger are posted to each `[[alert]]` channel that
//! subscribes to their kind, as Slack incoming-webhook JSON or spendguard's own webhook JSON.
//! Failed deliveries are retried with exponential backoff and jitter; every attempt is recorded.

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;
use spendguard_config::AlertKind;
use spendguard_store::Event;

/// A channel ready to deliver: its config and the URL its `url_env` named.
#[derive(Debug, Clone)]
pub struct AlertChannel {
    /// Channel id.
    pub id: String,
    /// Payload format.
    pub kind: AlertKind,
    /// Where to POST; `None` when the environment variable was not set (each delivery then
    /// fails with that reason, recorded, so the gap shows).
    pub url: Option<String>,
    /// Subscribed event kinds.
    pub events: Vec<String>,
}

/// Attempts before a delivery is given up (and stays recorded as failed).
pub(crate) const MAX_ATTEMPTS: u32 = 8;

/// When to try again after `attempts` failures: 2^attempts seconds (at most 10 minutes), plus up
/// to a quarter more of jitter so that many failures do not retry in step.
pub(crate) fn next_attempt(now: DateTime<Utc>, attempts: u32, jitter_seed: u64) -> DateTime<Utc> {
    let base = 2i64.saturating_pow(attempts.min(10)).min(600);
    let jitter_ms = (jitter_seed % 1000) as i64 * base / 4;
    now + TimeDelta::seconds(base) + TimeDelta::milliseconds(jitter_ms)
}

/// The JSON a channel receives for an event.
pub(crate) fn payload(channel: &AlertChannel, org: &str, e: &Event) -> serde_json::Value {
    match channel.kind {
        AlertKind::Slack => json!({
            "text": format!(":rotating_light: spendguard [{org}] {}: {}", e.kind, e.detail),
        }),
        AlertKind::Webhook => json!({
            "source": "spendguard",
            "org": org,
            "event": e.kind,
            "event_id": e.id,
            "at": e.at,
            "decision_id": e.decision_id,
            "detail": e.detail,
        }),
    }
}

/// POSTs one payload; any non-2xx answer is a failure.
pub(crate) async fn post(client: &reqwest::Client, url: &str, body: &serde_json::Value) -> Result<(), String> {
    let response = client.post(url).json(body).send().await.map_err(|e| e.to_string())?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {}", response.status()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let now = Utc::now();
        let gaps: Vec<i64> = [0, 1, 5, 20].iter().map(|&a| (next_attempt(now, a, 0) - now).num_seconds()).collect();
        assert_eq!(gaps, [1, 2, 32, 600]);
        assert!(next_attempt(now, 3, 999) - now < TimeDelta::seconds(11));
    }
}
