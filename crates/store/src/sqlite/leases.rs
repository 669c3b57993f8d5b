//! [`LeaseStore`] on SQLite and PostgreSQL: a named piece of work held by one process until its
//! lease runs out. Taking or renewing one is a write like any other, so daemons sharing a
//! database decide it one at a time; a change of holder is recorded in the audit log.

use super::rows::{time_col, to_us};
use super::SqlStore;
use crate::api::LeaseStore;
use crate::audit::AuditInput;
use crate::error::StoreResult;
use crate::records::Lease;
use crate::sql::{params, OptionalExtension};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

#[async_trait]
impl LeaseStore for SqlStore {
    async fn hold_lease(
        &self,
        name: &str,
        holder: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<Lease> {
        let (name, holder) = (name.to_string(), holder.to_string());
        self.write(move |w| {
            let current: Option<Lease> = w
                .conn
                .query_row("SELECT holder, expires_at_us FROM leases WHERE name = ?1", params![name], |r| {
                    Ok(Lease { holder: r.get(0)?, expires: time_col(r, 1)? })
                })
                .optional()?;
            if let Some(other) = current.as_ref().filter(|l| l.holder != holder && l.expires > now) {
                return Ok(other.clone());
            }
            w.conn.execute(
                "INSERT INTO leases (name, holder, expires_at_us) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at_us = excluded.expires_at_us",
                params![name, holder, to_us(until)],
            )?;
            let previous = current.as_ref().map(|l| l.holder.as_str());
            if previous != Some(holder.as_str()) {
                w.audit(
                    AuditInput {
                        kind: "lease_taken",
                        actor: &holder,
                        detail: serde_json::json!({ "lease": name, "previous_holder": previous }),
                        ..AuditInput::default()
                    },
                    now,
                )?;
            }
            Ok(Lease { holder, expires: until })
        })
        .await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> StoreResult<()> {
        let (name, holder) = (name.to_string(), holder.to_string());
        self.write(move |w| {
            w.conn.execute("DELETE FROM leases WHERE name = ?1 AND holder = ?2", params![name, holder])?;
            Ok(())
        })
        .await
    }

    async fn lease(&self, name: &str) -> StoreResult<Option<Lease>> {
        let name = name.to_string();
        self.read(move |c| {
            Ok(c.query_row("SELECT holder, expires_at_us FROM leases WHERE name = ?1", params![name], |r| {
                Ok(Lease { holder: r.get(0)?, expires: time_col(r, 1)? })
            })
            .optional()?)
        })
        .await
    }
}
