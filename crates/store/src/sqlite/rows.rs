//! Reading rows back into typed records. A value that does not decode is an error naming its
//! table, row and column, never a default.

use crate::error::{StoreError, StoreResult};
use crate::records::{DecisionRecord, Event, RecordedInflow, RecordedOutflow, SignedRecord};
use crate::sql::{params, Connection, OptionalExtension, Row};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use spendguard_core::model::Scope;
use spendguard_core::reconcile::{Class, OutflowKind};
use spendguard_core::usage::{EntryState, LedgerEntry};
use spendguard_core::{Decision, EventKind, Freeze, SpendStatus, Tier};
use std::str::FromStr;

pub(crate) fn to_us(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// Money as stored: the decimal's own text, never rounded.
pub(crate) fn money(v: Decimal) -> String {
    v.normalize().to_string()
}

/// A column that did not decode: which one, and why.
fn bad(r: &Row<'_>, i: usize, why: String) -> crate::sql::Error {
    r.bad(i, why)
}

/// Reads column `i` as text and parses it.
fn parsed<T>(r: &Row<'_>, i: usize, parse: impl FnOnce(&str) -> Option<T>) -> crate::sql::Result<T> {
    let text: String = r.get(i)?;
    parse(&text).ok_or_else(|| bad(r, i, format!("unreadable value {text:?}")))
}

fn parsed_opt<T>(r: &Row<'_>, i: usize, parse: impl FnOnce(&str) -> Option<T>) -> crate::sql::Result<Option<T>> {
    match r.get::<_, Option<String>>(i)? {
        None => Ok(None),
        Some(text) => parse(&text).map(Some).ok_or_else(|| bad(r, i, format!("unreadable value {text:?}"))),
    }
}

fn decimal(text: &str) -> Option<Decimal> {
    Decimal::from_str(text).ok()
}

pub(crate) fn decimal_col(r: &Row<'_>, i: usize) -> crate::sql::Result<Decimal> {
    parsed(r, i, decimal)
}

pub(crate) fn decimal_col_opt(r: &Row<'_>, i: usize) -> crate::sql::Result<Option<Decimal>> {
    parsed_opt(r, i, decimal)
}

fn unsigned(r: &Row<'_>, i: usize) -> crate::sql::Result<u64> {
    let n: i64 = r.get(i)?;
    u64::try_from(n).map_err(|_| bad(r, i, format!("negative value {n}")))
}

fn unsigned_opt(r: &Row<'_>, i: usize) -> crate::sql::Result<Option<u64>> {
    match r.get::<_, Option<i64>>(i)? {
        None => Ok(None),
        Some(_) => unsigned(r, i).map(Some),
    }
}

pub(crate) fn time_col(r: &Row<'_>, i: usize) -> crate::sql::Result<DateTime<Utc>> {
    let us: i64 = r.get(i)?;
    DateTime::from_timestamp_micros(us).ok_or_else(|| bad(r, i, format!("timestamp {us} out of range")))
}

pub(crate) fn time_col_opt(r: &Row<'_>, i: usize) -> crate::sql::Result<Option<DateTime<Utc>>> {
    match r.get::<_, Option<i64>>(i)? {
        None => Ok(None),
        Some(_) => time_col(r, i).map(Some),
    }
}

fn json_col<T: serde::de::DeserializeOwned>(r: &Row<'_>, i: usize) -> crate::sql::Result<T> {
    let text: String = r.get(i)?;
    serde_json::from_str(&text).map_err(|e| bad(r, i, e.to_string()))
}

/// Turns a decoding failure of a row into [`StoreError::Corrupt`] naming the row; other
/// failures stay what they are.
pub(crate) fn corrupt(table: &'static str, row: impl Into<String>) -> impl FnOnce(crate::sql::Error) -> StoreError {
    use crate::sql::Error;
    let row = row.into();
    move |e| match e {
        Error::Conversion { column, why } => StoreError::Corrupt { table, row, detail: format!("{column}: {why}") },
        Error::Sqlite(rusqlite::Error::FromSqlConversionFailure(_, _, why)) => {
            StoreError::Corrupt { table, row, detail: why.to_string() }
        }
        Error::Sqlite(rusqlite::Error::InvalidColumnType(_, column, ty)) => {
            StoreError::Corrupt { table, row, detail: format!("{column}: unexpected {ty}") }
        }
        other => StoreError::Database(other),
    }
}

/// Runs `f` on each row, naming a row that does not decode by the value of its first column.
fn each_row<T>(
    table: &'static str,
    stmt: &mut crate::sql::Statement<'_>,
    args: crate::sql::Params<'_>,
    f: impl Fn(&Row<'_>) -> crate::sql::Result<T>,
) -> StoreResult<Vec<T>> {
    let mut out = vec![];
    for row in stmt.query_each(args, f)? {
        match row {
            Ok(v) => out.push(v),
            Err((key, e)) => return Err(corrupt(table, key)(e)),
        }
    }
    Ok(out)
}

/// The columns a usage-index entry is read from.
pub(crate) const ENTRY_COLUMNS: &str =
    "seq, created_at_us, agent, department, wallet, asset, operation, amount, usd, status";

pub(crate) fn entry_from_row(r: &Row<'_>) -> crate::sql::Result<(LedgerEntry, SpendStatus)> {
    let status = parsed(r, 9, SpendStatus::parse)?;
    let usd = decimal_col_opt(r, 8)?;
    let counts = status.counts_as();
    let usd = match (usd, counts) {
        (Some(u), _) => u,
        (None, None) => Decimal::ZERO,
        (None, Some(_)) => return Err(bad(r, 8, "a counting decision has no USD value".into())),
    };
    let entry = LedgerEntry {
        seq: r.get(0)?,
        at: time_col(r, 1)?,
        agent: r.get(2)?,
        department: r.get(3)?,
        wallet: r.get(4)?,
        asset: r.get::<_, Option<String>>(5)?.unwrap_or_default(),
        operation: r.get(6)?,
        amount: decimal_col(r, 7)?,
        usd,
        state: counts.unwrap_or(EntryState::Reserved),
    };
    Ok((entry, status))
}

pub(crate) fn load_entries(conn: &Connection, filter: &str, arg: i64) -> StoreResult<Vec<(LedgerEntry, SpendStatus)>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {ENTRY_COLUMNS} FROM decisions WHERE {filter}"))?;
    each_row("decision seq", &mut stmt, params![arg], entry_from_row)
}

pub(crate) fn load_freezes(conn: &Connection) -> StoreResult<Vec<Freeze>> {
    let mut stmt = conn.prepare_cached(
        "SELECT scope, frozen_by, reason, frozen_at_us, evidence FROM freezes ORDER BY frozen_at_us, scope",
    )?;
    each_row("freeze", &mut stmt, params![], |r| {
        Ok(Freeze {
            scope: parsed(r, 0, Scope::parse)?,
            frozen_by: r.get(1)?,
            reason: r.get(2)?,
            frozen_at: time_col(r, 3)?,
            evidence: r.get(4)?,
        })
    })
}

/// The columns a [`DecisionRecord`] is read from, in [`decision_from_row`]'s order.
pub(crate) const DECISION_COLUMNS: &str =
    "id, seq, created_at_us, updated_at_us, agent, wallet, department, chain, asset, recipient,
    amount, usd, price_usd, operation, memo, merchant, category, decision, tier, status, reasons, headroom,
    execute_after_us, approval_expires_us, approver_role, idempotency_key, nonce, tx_hash, fee_cap, fee_terms, block,
    fee_paid, failure, intent_hash, approved_by, approved_at_us, from_address, token, decimals, price_source,
    price_as_of_us, x402";

fn decision_from_row(r: &Row<'_>) -> crate::sql::Result<DecisionRecord> {
    Ok(DecisionRecord {
        id: r.get(0)?,
        seq: r.get(1)?,
        created_at: time_col(r, 2)?,
        updated_at: time_col(r, 3)?,
        agent: r.get(4)?,
        wallet: r.get(5)?,
        department: r.get(6)?,
        chain: r.get(7)?,
        asset: r.get(8)?,
        recipient: r.get(9)?,
        amount: decimal_col(r, 10)?,
        usd: decimal_col_opt(r, 11)?,
        price_usd: decimal_col_opt(r, 12)?,
        operation: r.get(13)?,
        memo: r.get(14)?,
        merchant: r.get(15)?,
        category: r.get(16)?,
        decision: parsed(r, 17, Decision::parse)?,
        tier: parsed(r, 18, Tier::parse)?,
        status: parsed(r, 19, SpendStatus::parse)?,
        reasons: json_col(r, 20)?,
        headroom: json_col(r, 21)?,
        execute_after: time_col_opt(r, 22)?,
        approval_expires_at: time_col_opt(r, 23)?,
        approver_role: r.get(24)?,
        idempotency_key: r.get(25)?,
        nonce: unsigned_opt(r, 26)?,
        tx_hash: r.get(27)?,
        fee_cap: decimal_col_opt(r, 28)?,
        fee_terms: r.get(29)?,
        block: unsigned_opt(r, 30)?,
        fee_paid: decimal_col_opt(r, 31)?,
        failure: r.get(32)?,
        intent_hash: r.get(33)?,
        approved_by: r.get(34)?,
        approved_at: time_col_opt(r, 35)?,
        from_address: r.get(36)?,
        token: r.get(37)?,
        decimals: r
            .get::<_, Option<i64>>(38)?
            .map(|d| u32::try_from(d).map_err(|_| bad(r, 38, format!("{d}"))))
            .transpose()?,
        price_source: r.get(39)?,
        price_as_of: time_col_opt(r, 40)?,
        x402: match r.get::<_, Option<String>>(41)? {
            Some(text) => Some(serde_json::from_str(&text).map_err(|e| bad(r, 41, e.to_string()))?),
            None => None,
        },
    })
}

/// Decisions matching a `WHERE` clause (`filter`, with `?1`… bound to `args`), in `order`.
pub(crate) fn query_decisions(
    conn: &Connection,
    filter: &str,
    args: crate::sql::Params<'_>,
) -> StoreResult<Vec<DecisionRecord>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {DECISION_COLUMNS} FROM decisions WHERE {filter}"))?;
    each_row("decision", &mut stmt, args, decision_from_row)
}

pub(crate) fn load_decision(conn: &Connection, id: &str) -> StoreResult<Option<DecisionRecord>> {
    Ok(query_decisions(conn, "id = ?1", params![id])?.pop())
}

/// A decision that must exist.
pub(crate) fn decision_row(conn: &Connection, id: &str) -> StoreResult<DecisionRecord> {
    load_decision(conn, id)?.ok_or_else(|| StoreError::UnknownDecision(id.to_string()))
}

pub(crate) fn load_by_status(conn: &Connection, statuses: &[SpendStatus]) -> StoreResult<Vec<DecisionRecord>> {
    let list = statuses.iter().map(|s| format!("'{}'", s.as_str())).collect::<Vec<_>>().join(", ");
    query_decisions(conn, &format!("status IN ({list}) ORDER BY seq"), params![])
}

pub(crate) fn load_signed(conn: &Connection, id: &str) -> StoreResult<Option<SignedRecord>> {
    conn.prepare_cached(
        "SELECT tx_hash, raw_tx, nonce, fee_cap, fee_terms FROM decisions WHERE id = ?1 AND raw_tx IS NOT NULL",
    )?
    .query_row(params![id], |r| {
        Ok(SignedRecord {
            hash: r.get(0)?,
            raw: r.get(1)?,
            sequence: unsigned_opt(r, 2)?,
            fee_cap: decimal_col(r, 3)?,
            fee_terms: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
        })
    })
    .optional()
    .map_err(corrupt("decision", id))
}

pub(crate) const EVENT_COLUMNS: &str = "id, kind, at_us, decision_id, detail";

pub(crate) fn event_from_row(r: &Row<'_>) -> crate::sql::Result<Event> {
    Ok(Event {
        id: r.get(0)?,
        kind: parsed(r, 1, EventKind::parse)?,
        at: time_col(r, 2)?,
        decision_id: r.get(3)?,
        detail: r.get(4)?,
    })
}

pub(crate) fn query_events(conn: &Connection, filter: &str, args: crate::sql::Params<'_>) -> StoreResult<Vec<Event>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE {filter}"))?;
    each_row("event", &mut stmt, args, event_from_row)
}

pub(crate) const OUTFLOW_COLUMNS: &str =
    "id, block, tx_hash, idx, kind, wallet, recipient, asset, token, amount, class, decision_id, chain, seen_at_us";

/// Inflows matching a `WHERE` clause, in chain, block and transaction order.
pub(crate) fn query_inflows(
    conn: &Connection,
    filter: &str,
    args: crate::sql::Params<'_>,
) -> StoreResult<Vec<RecordedInflow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT chain, block, tx_hash, idx, kind, wallet, sender, asset, token, amount, balance_before, balance_after,
            expected, seen_at_us FROM inflows WHERE {filter} ORDER BY chain, block, tx_hash, kind, idx"
    ))?;
    each_row("inflow", &mut stmt, args, |r| {
        Ok(RecordedInflow {
            chain: r.get(0)?,
            block: unsigned(r, 1)?,
            tx_hash: r.get(2)?,
            index: unsigned(r, 3)?,
            kind: parsed(r, 4, OutflowKind::parse)?,
            wallet: r.get(5)?,
            sender: r.get(6)?,
            asset: r.get(7)?,
            token: r.get(8)?,
            amount: decimal_col(r, 9)?,
            balance_before: decimal_col_opt(r, 10)?,
            balance_after: decimal_col_opt(r, 11)?,
            expected: r.get(12)?,
            seen_at: time_col(r, 13)?,
        })
    })
}

pub(crate) fn query_outflows(
    conn: &Connection,
    filter: &str,
    args: crate::sql::Params<'_>,
) -> StoreResult<Vec<RecordedOutflow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {OUTFLOW_COLUMNS} FROM outflows WHERE {filter} ORDER BY chain, block, tx_hash, kind, idx"
    ))?;
    each_row("outflow", &mut stmt, args, |r| {
        Ok(RecordedOutflow {
            block: unsigned(r, 1)?,
            tx_hash: r.get(2)?,
            index: unsigned(r, 3)?,
            kind: parsed(r, 4, OutflowKind::parse)?,
            wallet: r.get(5)?,
            recipient: r.get(6)?,
            asset: r.get(7)?,
            token: r.get(8)?,
            amount: decimal_col(r, 9)?,
            class: parsed(r, 10, Class::parse)?,
            decision_id: r.get(11)?,
            chain: r.get(12)?,
            seen_at: time_col_opt(r, 13)?,
        })
    })
}
