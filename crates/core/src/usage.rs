//! What has already been spent or reserved, per scope and window.
//!
//! [`UsageIndex`] is the in-memory index the ledger keeps of every spend that still counts
//! against a limit; the engine reads it through [`UsageSource`].

use crate::model::Scope;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// How a ledger entry counts against limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryState {
    /// Held for a decision not yet executed (reserved, queued, pending approval).
    Reserved,
    /// Executed: signed, broadcast or confirmed.
    Spent,
}

/// One spend that counts against limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    /// Ledger sequence number; unique and stable.
    pub seq: i64,
    /// When the decision was made.
    pub at: DateTime<Utc>,
    /// Spending agent.
    pub agent: String,
    /// Agent's department, if any.
    pub department: Option<String>,
    /// Wallet the money leaves.
    pub wallet: String,
    /// Asset, `chain:SYMBOL`.
    pub asset: String,
    /// Operation named by the agent.
    pub operation: Option<String>,
    /// Amount in asset units.
    pub amount: Decimal,
    /// USD value at decision time.
    pub usd: Decimal,
    /// Reserved or spent.
    pub state: EntryState,
}

/// A question about usage: how much did `scope` spend since a window start?
#[derive(Debug, Clone, Copy)]
pub struct UsageQuery<'a> {
    /// Whose spend.
    pub scope: &'a Scope,
    /// Window start (see [`crate::time::Window::counts`] for the comparison).
    pub since: DateTime<Utc>,
    /// True for half-open rolling windows (`at > since`), false for calendar windows (`at >= since`).
    pub exclusive_start: bool,
    /// Only this asset (`chain:SYMBOL`).
    pub asset: Option<&'a str>,
    /// Only this operation.
    pub operation: Option<&'a str>,
}

/// Sums of spent and reserved value in a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// USD executed.
    pub spent_usd: Decimal,
    /// USD held by open reservations.
    pub reserved_usd: Decimal,
    /// Units executed (meaningful with an asset filter).
    pub spent_amount: Decimal,
    /// Units held by open reservations (meaningful with an asset filter).
    pub reserved_amount: Decimal,
    /// Number of executed spends.
    pub spent_count: u64,
    /// Number of open reservations.
    pub reserved_count: u64,
}

impl Usage {
    fn add(&mut self, e: &LedgerEntry) {
        match e.state {
            EntryState::Spent => {
                self.spent_usd = self.spent_usd.saturating_add(e.usd);
                self.spent_amount = self.spent_amount.saturating_add(e.amount);
                self.spent_count += 1;
            }
            EntryState::Reserved => {
                self.reserved_usd = self.reserved_usd.saturating_add(e.usd);
                self.reserved_amount = self.reserved_amount.saturating_add(e.amount);
                self.reserved_count += 1;
            }
        }
    }
}

/// Anything that can answer usage questions.
pub trait UsageSource {
    /// Sums the spend matching `query`.
    fn usage(&self, query: &UsageQuery<'_>) -> Usage;
}

type TimeKey = (DateTime<Utc>, i64);

/// In-memory index of counting spends, by scope and time.
#[derive(Debug, Default, Clone)]
pub struct UsageIndex {
    entries: HashMap<i64, Arc<LedgerEntry>>,
    by_scope: HashMap<Scope, BTreeMap<TimeKey, Arc<LedgerEntry>>>,
}

impl UsageIndex {
    /// An empty index.
    pub fn new() -> UsageIndex {
        UsageIndex::default()
    }

    /// Number of entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn scopes_of(e: &LedgerEntry) -> impl Iterator<Item = Scope> + '_ {
        [
            Some(Scope::Org),
            e.department.as_ref().map(|d| Scope::Department(d.clone())),
            Some(Scope::Agent(e.agent.clone())),
            Some(Scope::Wallet(e.wallet.clone())),
        ]
        .into_iter()
        .flatten()
    }

    /// Adds an entry, replacing any entry with the same sequence number.
    pub fn upsert(&mut self, entry: LedgerEntry) {
        self.remove(entry.seq);
        let entry = Arc::new(entry);
        for scope in Self::scopes_of(&entry) {
            self.by_scope.entry(scope).or_default().insert((entry.at, entry.seq), Arc::clone(&entry));
        }
        self.entries.insert(entry.seq, entry);
    }

    /// Removes an entry (released, denied, failed); unknown sequence numbers are ignored.
    pub fn remove(&mut self, seq: i64) {
        if let Some(old) = self.entries.remove(&seq) {
            for scope in Self::scopes_of(&old) {
                if let Some(map) = self.by_scope.get_mut(&scope) {
                    map.remove(&(old.at, old.seq));
                    if map.is_empty() {
                        self.by_scope.remove(&scope);
                    }
                }
            }
        }
    }

    /// Drops every entry made before `cutoff`: no window reaches back that far any more.
    pub fn prune_before(&mut self, cutoff: DateTime<Utc>) {
        let old: Vec<i64> = self.entries.values().filter(|e| e.at < cutoff).map(|e| e.seq).collect();
        for seq in old {
            self.remove(seq);
        }
    }

    /// The entry with this sequence number.
    pub fn get(&self, seq: i64) -> Option<&LedgerEntry> {
        self.entries.get(&seq).map(|e| e.as_ref())
    }
}

impl UsageSource for UsageIndex {
    fn usage(&self, q: &UsageQuery<'_>) -> Usage {
        let mut usage = Usage::default();
        let Some(map) = self.by_scope.get(q.scope) else {
            return usage;
        };
        for ((at, _), e) in map.range((q.since, i64::MIN)..) {
            if q.exclusive_start && *at == q.since {
                continue;
            }
            if q.asset.is_some_and(|a| a != e.asset) || q.operation.is_some_and(|o| Some(o) != e.operation.as_deref()) {
                continue;
            }
            usage.add(e);
        }
        usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn entry(seq: i64, at: DateTime<Utc>, usd: i64, state: EntryState) -> LedgerEntry {
        LedgerEntry {
            seq,
            at,
            agent: "a".into(),
            department: Some("d".into()),
            wallet: "w".into(),
            asset: "c:ETH".into(),
            operation: None,
            amount: Decimal::from(usd),
            usd: Decimal::from(usd),
            state,
        }
    }

    #[test]
    fn sums_by_scope_window_and_state() {
        let t0 = DateTime::parse_from_rfc3339("2026-11-22T10:00:00Z").unwrap().with_timezone(&Utc);
        let mut idx = UsageIndex::new();
        idx.upsert(entry(1, t0, 10, EntryState::Spent));
        idx.upsert(entry(2, t0 + TimeDelta::seconds(1), 5, EntryState::Reserved));
        let scope = Scope::Agent("a".into());
        let q = UsageQuery { scope: &scope, since: t0, exclusive_start: false, asset: None, operation: None };
        let u = idx.usage(&q);
        assert_eq!((u.spent_usd, u.reserved_usd, u.spent_count, u.reserved_count), (10.into(), 5.into(), 1, 1));
        let u = idx.usage(&UsageQuery { exclusive_start: true, ..q });
        assert_eq!((u.spent_usd, u.reserved_usd), (0.into(), 5.into()));
        // A reservation that executes changes state, not the total.
        idx.upsert(entry(2, t0 + TimeDelta::seconds(1), 5, EntryState::Spent));
        assert_eq!(idx.usage(&q).spent_usd, Decimal::from(15));
        idx.remove(2);
        assert_eq!(idx.usage(&q).spent_usd, Decimal::from(10));
        assert_eq!(idx.usage(&UsageQuery { scope: &Scope::Wallet("x".into()), ..q }), Usage::default());
        idx.prune_before(t0 + TimeDelta::seconds(1));
        assert!(idx.is_empty());
    }
}
