//! [`OutboxStore`] on SQLite: events for operators and their delivery to each alert channel,
//! claimed before posting so several processes never post one twice.

use super::rows::{query_events, to_us};
use super::{SqlStore, Writer};
use crate::api::OutboxStore;
use crate::audit::AuditInput;
use crate::error::StoreResult;
use crate::records::{Delivery, Event};
use crate::sql::{params, OptionalExtension};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use spendguard_core::EventKind;

#[async_trait]
impl OutboxStore for SqlStore {
    async fn record_event(
        &self,
        kind: EventKind,
        decision_id: Option<&str>,
        detail: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let (id, detail) = (decision_id.map(str::to_string), detail.to_string());
        self.write(move |w| w.record_event(kind, id.as_deref(), &detail, at)).await
    }

    async fn undelivered(
        &self,
        channel: &str,
        kinds: &[EventKind],
        now: DateTime<Utc>,
        max_attempts: u32,
    ) -> StoreResult<Vec<Event>> {
        let (channel, kinds) = (channel.to_string(), kinds.to_vec());
        let list = kinds.iter().map(|k| format!("'{}'", k.as_str())).collect::<Vec<_>>().join(", ");
        self.read(move |c| {
            query_events(
                c,
                &format!(
                    "kind IN ({list}) AND NOT EXISTS (SELECT 1 FROM alert_deliveries d WHERE d.event_id = events.id
                        AND d.channel = ?1 AND (d.delivered_at_us IS NOT NULL OR d.next_attempt_us > ?2 OR d.attempts >= ?3))
                     ORDER BY id"
                ),
                params![channel, to_us(now), max_attempts],
            )
        })
        .await
    }

    async fn claim_delivery(
        &self,
        event_id: i64,
        channel: &str,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let channel = channel.to_string();
        self.write(move |w| {
            let changed = w.conn.execute(
                "INSERT INTO alert_deliveries (event_id, channel, attempts, next_attempt_us) VALUES (?1, ?2, 0, ?3)
                 ON CONFLICT (event_id, channel) DO UPDATE SET next_attempt_us = excluded.next_attempt_us
                 WHERE alert_deliveries.delivered_at_us IS NULL AND alert_deliveries.next_attempt_us <= ?4",
                params![event_id, channel, to_us(lease_until), to_us(now)],
            )?;
            Ok(changed == 1)
        })
        .await
    }

    async fn record_delivery(
        &self,
        event_id: i64,
        channel: &str,
        outcome: Result<(), String>,
        next_attempt: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let channel = channel.to_string();
        self.write(move |w| w.record_delivery(event_id, &channel, outcome, next_attempt, at)).await
    }

    async fn delivery(&self, event_id: i64, channel: &str) -> StoreResult<Option<Delivery>> {
        let channel = channel.to_string();
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT attempts, delivered_at_us IS NOT NULL, last_error FROM alert_deliveries
                 WHERE event_id = ?1 AND channel = ?2",
                params![event_id, channel],
                |r| Ok(Delivery { attempts: r.get::<_, i64>(0)? as u32, delivered: r.get(1)?, last_error: r.get(2)? }),
            )
            .optional()?)
        })
        .await
    }

    async fn events(&self, kind: Option<EventKind>) -> StoreResult<Vec<Event>> {
        let kind = kind.map(EventKind::as_str);
        self.read(move |c| query_events(c, "CAST(?1 AS TEXT) IS NULL OR kind = ?1 ORDER BY id", params![kind])).await
    }
}

impl Writer {
    /// Records an event (and its audit entry) in the current transaction.
    pub(crate) fn record_event(
        &mut self,
        kind: EventKind,
        id: Option<&str>,
        detail: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let event_id: i64 = self.conn.query_row(
            "INSERT INTO events (at_us, kind, decision_id, detail) VALUES (?1, ?2, ?3, ?4) RETURNING id",
            params![to_us(at), kind.as_str(), id, detail],
            |r| r.get(0),
        )?;
        self.audit(
            AuditInput {
                kind: "event",
                actor: "spendguard",
                decision_id: id,
                detail: serde_json::json!({"event_id": event_id, "event": kind.as_str(), "detail": detail}),
                ..AuditInput::default()
            },
            at,
        )
    }

    fn record_delivery(
        &mut self,
        event_id: i64,
        channel: &str,
        outcome: Result<(), String>,
        next_attempt: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let (delivered, error) = match outcome {
            Ok(()) => (Some(to_us(at)), None),
            Err(e) => (None, Some(e)),
        };
        self.conn.execute(
            "INSERT INTO alert_deliveries (event_id, channel, attempts, delivered_at_us, last_error, next_attempt_us)
             VALUES (?1, ?2, 1, ?3, ?4, ?5)
             ON CONFLICT (event_id, channel) DO UPDATE SET attempts = attempts + 1,
                delivered_at_us = excluded.delivered_at_us, last_error = excluded.last_error,
                next_attempt_us = excluded.next_attempt_us",
            params![event_id, channel, delivered, error, to_us(next_attempt)],
        )?;
        self.audit(
            AuditInput {
                kind: "alert_delivery",
                actor: "spendguard",
                detail: serde_json::json!({"event_id": event_id, "channel": channel, "delivered": delivered.is_some(), "error": error}),
                ..AuditInput::default()
            },
            at,
        )
    }
}
