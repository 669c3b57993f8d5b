//! What has already been spent or reserved, per scope and window.
//!
//! [`UsageIndex`] is the in-memory index the ledger keeps of every spend that still counts
//! against a limit; the engine reads it through [`UsageSource`].

use crate::model::Scope;
use crate::time::Window;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;
use std::cell::RefCell;
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

/// A question about usage: how much did `scope` spend in a window?
#[derive(Debug, Clone, Copy)]
pub struct UsageQuery<'a> {
    /// Whose spend.
    pub scope: &'a Scope,
    /// The window asked about; with `timezone`, it names the running sum kept for it.
    pub window: Window,
    /// Timezone of a calendar window.
    pub timezone: Tz,
    /// Window start at the evaluation instant (see [`Window::counts`]).
    pub since: DateTime<Utc>,
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

    fn sub(&mut self, e: &LedgerEntry) {
        match e.state {
            EntryState::Spent => {
                self.spent_usd = self.spent_usd.saturating_sub(e.usd);
                self.spent_amount = self.spent_amount.saturating_sub(e.amount);
                self.spent_count = self.spent_count.saturating_sub(1);
            }
            EntryState::Reserved => {
                self.reserved_usd = self.reserved_usd.saturating_sub(e.usd);
                self.reserved_amount = self.reserved_amount.saturating_sub(e.amount);
                self.reserved_count = self.reserved_count.saturating_sub(1);
            }
        }
    }
}

impl Usage {
    /// Adds another sum to this one.
    fn put(&mut self, o: &Usage) {
        self.spent_usd = self.spent_usd.saturating_add(o.spent_usd);
        self.reserved_usd = self.reserved_usd.saturating_add(o.reserved_usd);
        self.spent_amount = self.spent_amount.saturating_add(o.spent_amount);
        self.reserved_amount = self.reserved_amount.saturating_add(o.reserved_amount);
        self.spent_count += o.spent_count;
        self.reserved_count += o.reserved_count;
    }

    /// Takes another sum (a part of this one) away.
    fn take(&mut self, o: &Usage) {
        self.spent_usd = self.spent_usd.saturating_sub(o.spent_usd);
        self.reserved_usd = self.reserved_usd.saturating_sub(o.reserved_usd);
        self.spent_amount = self.spent_amount.saturating_sub(o.spent_amount);
        self.reserved_amount = self.reserved_amount.saturating_sub(o.reserved_amount);
        self.spent_count = self.spent_count.saturating_sub(o.spent_count);
        self.reserved_count = self.reserved_count.saturating_sub(o.reserved_count);
    }
}

/// Anything that can answer usage questions.
pub trait UsageSource {
    /// Sums the spend matching `query`.
    fn usage(&self, query: &UsageQuery<'_>) -> Usage;
}

type TimeKey = (DateTime<Utc>, i64);

/// FNV-1a: scope names are short and not attacker-chosen (they come from the config), so a
/// simple fast hash beats SipHash on the dozens of lookups one evaluation makes.
#[derive(Default)]
struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 { 0xcbf2_9ce4_8422_2325 } else { self.0 };
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<Fnv>>;

/// A running sum over one window of one scope, restricted to an asset and an operation, valid
/// for windows starting at `since`. Moving it to another start touches only the entries between.
#[derive(Debug, Clone)]
struct Cursor {
    window: Window,
    timezone: Tz,
    asset: Option<Box<str>>,
    operation: Option<Box<str>>,
    since: DateTime<Utc>,
    usage: Usage,
    /// The earliest entry of the scope (of any asset or operation) the window would drop first
    /// as its start moves forward — after `since` for a rolling window, at or after it for a
    /// calendar one; `DateTime::MAX_UTC` when there is none, `None` when not known. While the
    /// start stays before it, moving the window drops nothing and needs no search.
    next_leaving: Option<DateTime<Utc>>,
}

impl Cursor {
    /// Would an entry at `at` be the first to leave as the start moves forward?
    fn leaves_after_start(&self, at: DateTime<Utc>) -> bool {
        match self.window {
            Window::Rolling(_) => at > self.since,
            Window::Calendar(_) => at >= self.since,
        }
    }

    /// Does moving the start forward to `since` drop no entry at all?
    fn drops_nothing_until(&self, since: DateTime<Utc>) -> bool {
        self.next_leaving.is_some_and(|next| match self.window {
            Window::Rolling(_) => next > since,
            Window::Calendar(_) => next >= since,
        })
    }

    /// An entry at `at` was added to the scope.
    fn entry_added(&mut self, at: DateTime<Utc>) {
        if self.next_leaving.is_some_and(|next| at < next) && self.leaves_after_start(at) {
            self.next_leaving = Some(at);
        }
    }

    fn matches(&self, e: &LedgerEntry) -> bool {
        self.asset.as_deref().is_none_or(|a| a == e.asset)
            && self.operation.as_deref().is_none_or(|o| Some(o) == e.operation.as_deref())
    }

    fn contains(&self, e: &LedgerEntry) -> bool {
        self.matches(e) && self.window.counts(e.at, self.since)
    }
}

#[derive(Debug, Default, Clone)]
struct ScopeData {
    entries: BTreeMap<TimeKey, Arc<LedgerEntry>>,
    cursors: RefCell<Vec<Cursor>>,
}

impl ScopeData {
    /// Sum of the matching entries that cross the window's start when it moves between `from`
    /// and `to` (`from < to`): `(from, to]` for a rolling window, whose start is exclusive, and
    /// `[from, to)` for a calendar window.
    /// Also returns the first entry beyond the crossing — the next to leave once the start is
    /// at `to` (see [`Cursor::next_leaving`]).
    fn crossing(&self, cursor: &Cursor, from: DateTime<Utc>, to: DateTime<Utc>) -> (Usage, DateTime<Utc>) {
        let rolling = matches!(cursor.window, Window::Rolling(_));
        let mut u = Usage::default();
        for ((at, _), e) in self.entries.range((from, i64::MIN)..) {
            let beyond = if rolling { *at > to } else { *at >= to };
            if beyond {
                return (u, *at);
            }
            let inside = if rolling { *at > from } else { true };
            if inside && cursor.matches(e) {
                u.add(e);
            }
        }
        (u, DateTime::<Utc>::MAX_UTC)
    }
}

/// In-memory index of counting spends, by scope and time, with running sums per window.
///
/// Each distinct (scope, window, asset, operation) asked about gets a cursor: its sum for the
/// window start last asked. As time moves on, only the entries that leave or enter the window
/// are visited, and inserts and releases adjust the cursors they fall into, so answering a query
/// costs O(1) amortised however long the history.
#[derive(Debug, Default, Clone)]
pub struct UsageIndex {
    entries: HashMap<i64, Arc<LedgerEntry>>,
    by_scope: FastMap<Scope, ScopeData>,
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
            let data = self.by_scope.entry(scope).or_default();
            for c in data.cursors.get_mut().iter_mut() {
                if c.contains(&entry) {
                    c.usage.add(&entry);
                }
                c.entry_added(entry.at);
            }
            data.entries.insert((entry.at, entry.seq), Arc::clone(&entry));
        }
        self.entries.insert(entry.seq, entry);
    }

    /// Removes an entry (released, denied, failed); unknown sequence numbers are ignored.
    pub fn remove(&mut self, seq: i64) {
        if let Some(old) = self.entries.remove(&seq) {
            for scope in Self::scopes_of(&old) {
                if let Some(data) = self.by_scope.get_mut(&scope) {
                    data.entries.remove(&(old.at, old.seq));
                    // A removed entry leaves `next_leaving` too early at worst: the next move
                    // then searches, as it would without it.
                    for c in data.cursors.get_mut().iter_mut().filter(|c| c.contains(&old)) {
                        c.usage.sub(&old);
                    }
                    if data.entries.is_empty() {
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
        // Cursors positioned before the cutoff would now be wrong; they are rebuilt on demand.
        for data in self.by_scope.values_mut() {
            data.cursors.get_mut().clear();
        }
    }

    /// The entry with this sequence number.
    pub fn get(&self, seq: i64) -> Option<&LedgerEntry> {
        self.entries.get(&seq).map(|e| e.as_ref())
    }
}

impl UsageSource for UsageIndex {
    fn usage(&self, q: &UsageQuery<'_>) -> Usage {
        let Some(data) = self.by_scope.get(q.scope) else {
            return Usage::default();
        };
        let mut cursors = data.cursors.borrow_mut();
        let found = cursors.iter().position(|c| {
            c.window == q.window
                && c.timezone == q.timezone
                && c.asset.as_deref() == q.asset
                && c.operation.as_deref() == q.operation
        });
        let cursor = match found {
            Some(i) => &mut cursors[i],
            None => {
                let mut fresh = Cursor {
                    window: q.window,
                    timezone: q.timezone,
                    asset: q.asset.map(Into::into),
                    operation: q.operation.map(Into::into),
                    since: q.since,
                    usage: Usage::default(),
                    next_leaving: None,
                };
                for e in data.entries.range((q.since, i64::MIN)..).map(|(_, e)| e) {
                    if fresh.contains(e) {
                        fresh.usage.add(e);
                    }
                }
                cursors.push(fresh);
                return cursors.last().map_or_else(Usage::default, |c| c.usage);
            }
        };
        if q.since > cursor.since {
            // The window moved forward: the entries between the old and the new start leave it
            // (none when the start stays before the next one to leave).
            if !cursor.drops_nothing_until(q.since) {
                let (leaving, next) = data.crossing(cursor, cursor.since, q.since);
                cursor.usage.take(&leaving);
                cursor.next_leaving = Some(next);
            }
        } else if q.since < cursor.since {
            let (entering, _) = data.crossing(cursor, q.since, cursor.since);
            cursor.usage.put(&entering);
            cursor.next_leaving = None;
        }
        cursor.since = q.since;
        cursor.usage
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
        let day = Window::Calendar(crate::time::CalendarPeriod::Day);
        let q = UsageQuery { scope: &scope, window: day, timezone: Tz::UTC, since: t0, asset: None, operation: None };
        let u = idx.usage(&q);
        assert_eq!((u.spent_usd, u.reserved_usd, u.spent_count, u.reserved_count), (10.into(), 5.into(), 1, 1));
        let hour = Window::Rolling(TimeDelta::hours(1));
        let u = idx.usage(&UsageQuery { window: hour, ..q });
        assert_eq!((u.spent_usd, u.reserved_usd), (0.into(), 5.into()), "a rolling window excludes its start");
        // A reservation that executes changes state, not the total.
        idx.upsert(entry(2, t0 + TimeDelta::seconds(1), 5, EntryState::Spent));
        assert_eq!(idx.usage(&q).spent_usd, Decimal::from(15));
        idx.remove(2);
        assert_eq!(idx.usage(&q).spent_usd, Decimal::from(10));
        assert_eq!(idx.usage(&UsageQuery { scope: &Scope::Wallet("x".into()), ..q }), Usage::default());
        idx.prune_before(t0 + TimeDelta::seconds(1));
        assert!(idx.is_empty());
    }

    #[test]
    fn cursors_move_across_entries_sitting_exactly_on_window_starts() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let ny: Tz = "America/New_York".parse().unwrap();
        let mut idx = UsageIndex::new();
        for (seq, at) in [(1, "2026-11-01T03:59:00Z"), (2, "2026-11-01T04:00:00Z"), (3, "2026-11-01T05:00:00Z")] {
            idx.upsert(entry(seq, t(at), 1, EntryState::Spent));
        }
        let scope = Scope::Agent("a".into());
        let ask = |idx: &UsageIndex, window: Window, at: &str| {
            let q = UsageQuery {
                scope: &scope,
                window,
                timezone: ny,
                since: window.start(t(at), ny),
                asset: None,
                operation: None,
            };
            idx.usage(&q).spent_count
        };
        // New York's November 1st begins at 04:00Z; a spend at exactly 04:00Z belongs to it.
        let day = Window::Calendar(crate::time::CalendarPeriod::Day);
        assert_eq!(ask(&idx, day, "2026-11-01T03:30:00Z"), 3);
        assert_eq!(ask(&idx, day, "2026-11-01T04:30:00Z"), 2);
        assert_eq!(ask(&idx, day, "2026-11-01T03:30:00Z"), 3);
        // A rolling hour at 05:00Z starts after 04:00Z exactly.
        let hour = Window::Rolling(TimeDelta::hours(1));
        assert_eq!(ask(&idx, hour, "2026-11-01T04:30:00Z"), 3);
        assert_eq!(ask(&idx, hour, "2026-11-01T05:00:00Z"), 1);
        assert_eq!(ask(&idx, hour, "2026-11-01T04:59:00Z"), 2, "03:59 sits on the start: out");
        assert_eq!(ask(&idx, hour, "2026-11-01T06:00:00Z"), 0);
        assert_eq!(ask(&idx, hour, "2026-11-01T05:00:00Z"), 1);
    }

    /// The cursors must always agree with summing the entries from scratch, whatever order
    /// inserts, releases, state changes and queries (forward and backward in time) come in.
    mod against_a_naive_sum {
        use super::*;
        use crate::time::CalendarPeriod;
        use chrono::TimeDelta;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Insert { minute: i64, agent: u8, asset: u8, cents: u32, spent: bool },
            Remove(usize),
            Execute(usize),
            Query { minute: i64, window: u8, agent: u8, asset: Option<u8> },
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                // Times on a five-minute grid, so entries often sit exactly on a window's start.
                (0i64..400, 0u8..2, 0u8..2, 1u32..10_000, any::<bool>()).prop_map(
                    |(slot, agent, asset, cents, spent)| Op::Insert { minute: slot * 5, agent, asset, cents, spent }
                ),
                (0usize..64).prop_map(Op::Remove),
                (0usize..64).prop_map(Op::Execute),
                (0i64..400, 0u8..4, 0u8..3, prop::option::of(0u8..2))
                    .prop_map(|(slot, window, agent, asset)| Op::Query { minute: slot * 5, window, agent, asset }),
            ]
        }

        fn naive(entries: &[LedgerEntry], q: &UsageQuery<'_>) -> Usage {
            let mut u = Usage::default();
            for e in entries {
                let in_scope = match q.scope {
                    Scope::Org => true,
                    Scope::Agent(a) => &e.agent == a,
                    _ => false,
                };
                if in_scope && q.window.counts(e.at, q.since) && q.asset.is_none_or(|a| a == e.asset) {
                    u.add(e);
                }
            }
            u
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
            #[test]
            fn cursors_match(ops in prop::collection::vec(op(), 1..120)) {
                check(ops, false)?;
            }

            /// As live traffic asks: each query a little later than the one before (a query's
            /// minute is its step forward), with spends recorded before and after it.
            #[test]
            fn cursors_match_moving_forward(ops in prop::collection::vec(op(), 1..160)) {
                check(ops, true)?;
            }
        }

        fn check(ops: Vec<Op>, forward: bool) -> Result<(), TestCaseError> {
            {
                let t0 = DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z").unwrap().with_timezone(&Utc);
                let ny: Tz = "America/New_York".parse().unwrap();
                let windows = [
                    Window::Rolling(TimeDelta::hours(1)),
                    Window::Rolling(TimeDelta::minutes(90)),
                    Window::Calendar(CalendarPeriod::Day),
                    Window::Calendar(CalendarPeriod::Week),
                ];
                let mut idx = UsageIndex::new();
                let mut live: Vec<LedgerEntry> = vec![];
                let mut seq = 0;
                let mut now = 0;
                for op in ops {
                    match op {
                        Op::Insert { minute, agent, asset, cents, spent } => {
                            seq += 1;
                            let e = LedgerEntry {
                                seq,
                                at: t0 + TimeDelta::minutes(minute),
                                agent: format!("a{agent}"),
                                department: None,
                                wallet: "w".into(),
                                asset: format!("c:T{asset}"),
                                operation: None,
                                amount: Decimal::new(i64::from(cents), 2),
                                usd: Decimal::new(i64::from(cents), 2),
                                state: if spent { EntryState::Spent } else { EntryState::Reserved },
                            };
                            idx.upsert(e.clone());
                            live.push(e);
                        }
                        Op::Remove(i) if !live.is_empty() => {
                            let e = live.remove(i % live.len());
                            idx.remove(e.seq);
                        }
                        Op::Execute(i) if !live.is_empty() => {
                            let n = live.len();
                            let e = &mut live[i % n];
                            e.state = EntryState::Spent;
                            idx.upsert(e.clone());
                        }
                        Op::Query { minute, window, agent, asset } => {
                            let minute = if forward {
                                now += minute % 12;
                                now
                            } else {
                                minute
                            };
                            let scope = if agent == 2 { Scope::Org } else { Scope::Agent(format!("a{agent}")) };
                            let asset = asset.map(|a| format!("c:T{a}"));
                            let w = windows[usize::from(window)];
                            let at = t0 + TimeDelta::minutes(minute);
                            let q = UsageQuery {
                                scope: &scope,
                                window: w,
                                timezone: ny,
                                since: w.start(at, ny),
                                asset: asset.as_deref(),
                                operation: None,
                            };
                            prop_assert_eq!(idx.usage(&q), naive(&live, &q));
                        }
                        _ => {}
                    }
                }
            }
            Ok(())
        }
    }
}
