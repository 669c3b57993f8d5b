//! [`AlertDelivery`]: events recorded in the ledger are posted to each `[[alert]]` channel that
//! subscribes to their kind, as Slack incoming-webhook JSON or spendguard's own webhook JSON.
//! Each attempt is claimed in the ledger first (so several processes never post one twice) and
//! recorded after; failures are retried with exponential backoff and jitter.

use crate::clock::Clock;
use crate::error::ServiceResult;
use crate::metrics::Metrics;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;
use spendguard_config::AlertKind;
use spendguard_core::EventKind;
use spendguard_store::{Event, OutboxStore};
use std::sync::Arc;
use std::time::Duration;

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
    pub events: Vec<EventKind>,
}

impl AlertChannel {
    /// The channels `[[alert]]` configures, their URLs read from the environment variables
    /// they name.
    pub fn from_config(config: &spendguard_config::Config) -> Vec<AlertChannel> {
        config
            .alerts
            .iter()
            .map(|a| AlertChannel {
                id: a.id.clone(),
                kind: a.kind,
                url: std::env::var(&a.url_env).ok().filter(|u| !u.is_empty()),
                events: a.events.clone(),
            })
            .collect()
    }
}

/// How long a claimed delivery attempt is held before another process may try it.
const CLAIM_LEASE: TimeDelta = TimeDelta::seconds(30);

/// Delivers events to the alert channels.
pub struct AlertDelivery {
    pub(crate) org: String,
    pub(crate) channels: Vec<AlertChannel>,
    pub(crate) outbox: Arc<dyn OutboxStore>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) http: reqwest::Client,
}

impl AlertDelivery {
    pub(crate) fn new(
        org: String,
        channels: Vec<AlertChannel>,
        outbox: Arc<dyn OutboxStore>,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
    ) -> AlertDelivery {
        for c in channels.iter().filter(|c| c.url.is_none()) {
            tracing::warn!(channel = %c.id, "alert channel has no URL (its url_env is not set): deliveries will fail and be recorded");
        }
        let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap_or_default();
        AlertDelivery { org, channels, outbox, metrics, clock, http }
    }

    /// Posts every due, undelivered event to each channel subscribed to its kind, recording
    /// each attempt; a failure is retried later with backoff.
    pub async fn pass(&self) -> ServiceResult<()> {
        let now = self.clock.now();
        for channel in &self.channels {
            for event in self.outbox.undelivered(&channel.id, &channel.events, now, MAX_ATTEMPTS).await? {
                // Several processes run this pass; only the one that claims the attempt posts.
                if !self.outbox.claim_delivery(event.id, &channel.id, now + CLAIM_LEASE, now).await? {
                    continue;
                }
                let outcome = match &channel.url {
                    Some(url) => post(&self.http, url, &payload(channel, &self.org, &event)).await,
                    None => Err(format!("channel {}: its url_env is not set", channel.id)),
                };
                let attempts = self.outbox.delivery(event.id, &channel.id).await?.map_or(0, |d| d.attempts);
                if let Err(e) = &outcome {
                    tracing::warn!(channel = %channel.id, event = event.id, error = %e, "alert delivery failed; will retry");
                }
                self.metrics.alert(&channel.id, outcome.is_ok());
                let retry = next_attempt(now, attempts, event.id as u64 * 7919);
                self.outbox.record_delivery(event.id, &channel.id, outcome, retry, now).await?;
            }
        }
        Ok(())
    }
}

/// Attempts before a delivery is given up (and stays recorded as failed).
const MAX_ATTEMPTS: u32 = 8;

/// When to try again after `attempts` failures: 2^attempts seconds (at most 10 minutes), plus up
/// to a quarter more of jitter so that many failures do not retry in step.
fn next_attempt(now: DateTime<Utc>, attempts: u32, jitter_seed: u64) -> DateTime<Utc> {
    let base = 2i64.saturating_pow(attempts.min(10)).min(600);
    let jitter_ms = (jitter_seed % 1000) as i64 * base / 4;
    now + TimeDelta::seconds(base) + TimeDelta::milliseconds(jitter_ms)
}

/// The JSON a channel receives for an event.
fn payload(channel: &AlertChannel, org: &str, e: &Event) -> serde_json::Value {
    match channel.kind {
        AlertKind::Slack => json!({
            "text": format!(":rotating_light: spendguard [{org}] {}: {}", e.kind.as_str(), e.detail),
        }),
        AlertKind::Webhook => json!({
            "source": "spendguard",
            "org": org,
            "event": e.kind.as_str(),
            "event_id": e.id,
            "at": e.at,
            "decision_id": e.decision_id,
            "detail": e.detail,
        }),
    }
}

/// POSTs one payload; any non-2xx answer is a failure.
async fn post(client: &reqwest::Client, url: &str, body: &serde_json::Value) -> Result<(), String> {
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
