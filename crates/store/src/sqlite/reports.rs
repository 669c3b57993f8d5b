//! [`ReportStore`] on SQLite: what a period's report reads, bounded by the period.

use super::rows::{query_decisions, query_events, query_inflows, query_outflows, to_us};
use super::SqlStore;
use crate::api::ReportStore;
use crate::error::StoreResult;
use crate::records::{DecisionRecord, Event, RecordedInflow, RecordedOutflow};
use crate::sql::params;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use spendguard_core::EventKind;

#[async_trait]
impl ReportStore for SqlStore {
    async fn decisions_between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> StoreResult<Vec<DecisionRecord>> {
        self.read(move |c| {
            query_decisions(
                c,
                "created_at_us >= ?1 AND created_at_us < ?2 ORDER BY seq",
                params![to_us(from), to_us(to)],
            )
        })
        .await
    }

    async fn inflows_between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> StoreResult<Vec<RecordedInflow>> {
        self.read(move |c| query_inflows(c, "seen_at_us >= ?1 AND seen_at_us < ?2", params![to_us(from), to_us(to)]))
            .await
    }

    async fn outflows_between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> StoreResult<Vec<RecordedOutflow>> {
        self.read(move |c| query_outflows(c, "seen_at_us >= ?1 AND seen_at_us < ?2", params![to_us(from), to_us(to)]))
            .await
    }

    async fn events_between(
        &self,
        kinds: &[EventKind],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> StoreResult<Vec<Event>> {
        let list = kinds.iter().map(|k| format!("'{}'", k.as_str())).collect::<Vec<_>>().join(", ");
        self.read(move |c| {
            query_events(
                c,
                &format!("kind IN ({list}) AND at_us >= ?1 AND at_us < ?2 ORDER BY id"),
                params![to_us(from), to_us(to)],
            )
        })
        .await
    }

    async fn decisions_by_id(&self, ids: &[String]) -> StoreResult<Vec<DecisionRecord>> {
        let ids = ids.to_vec();
        self.read(move |c| {
            let mut out = Vec::with_capacity(ids.len());
            for id in &ids {
                out.extend(query_decisions(c, "id = ?1", params![id])?);
            }
            Ok(out)
        })
        .await
    }
}
