//! What has already been spent or reserved, per scope and window.
//!
//! [`UsageIndex`] is the in-memory index the ledger keeps of every spend that still counts
//! against a limit; the engine reads it through [`UsageSource`].

use crate::fast_map::FastMap;
use crate::model::Scope;
use crate::time::Window;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, PoisonError, RwLock};

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

/// A question about one scope's usage: how much did it spend in a window?
#[derive(Debug, Clone, Copy)]
pub struct UsageQuery {
    /// What is summed.
    pub spec: UsageKey,
    /// Window start at the evaluation instant (see [`Window::counts`]).
    pub since: DateTime<Utc>,
}

/// What a usage query sums: a window (calendar windows in a timezone), restricted to an asset
/// and an operation. Each distinct description is made once per process and numbered
/// ([`UsageSpec::of`]), so an index finds the running sum kept for it by that number rather
/// than by comparing descriptions: the engine asks about thirty of them per evaluation.
#[derive(Debug)]
pub struct UsageSpec {
    /// The window.
    pub window: Window,
    /// Timezone of a calendar window (a rolling window's start does not depend on it).
    pub timezone: Tz,
    /// Only this asset (`chain:SYMBOL`).
    pub asset: Option<String>,
    /// Only this operation.
    pub operation: Option<String>,
    /// Distinct per description, from 0 up, for the life of the process.
    number: usize,
}

impl UsageSpec {
    /// The one spec of this description. Models make theirs once; like headroom labels, specs
    /// live as long as the process (a handful per distinct limit ever configured).
    pub fn of(window: Window, timezone: Tz, asset: Option<&str>, operation: Option<&str>) -> UsageKey {
        type Description = (Window, Tz, Option<String>, Option<String>);
        static SPECS: LazyLock<RwLock<HashMap<Description, &'static UsageSpec>>> = LazyLock::new(Default::default);
        // A rolling window's start is the same in every timezone: one spec for all of them.
        let timezone = if window.is_rolling() { Tz::UTC } else { timezone };
        let description = (window, timezone, asset.map(str::to_string), operation.map(str::to_string));
        if let Some(spec) = SPECS.read().unwrap_or_else(PoisonError::into_inner).get(&description) {
            return UsageKey { number: spec.number, spec };
        }
        let mut specs = SPECS.write().unwrap_or_else(PoisonError::into_inner);
        let number = specs.len();
        let spec = specs.entry(description).or_insert_with_key(|(window, timezone, asset, operation)| {
            Box::leak(Box::new(UsageSpec {
                window: *window,
                timezone: *timezone,
                asset: asset.clone(),
                operation: operation.clone(),
                number,
            }))
        });
        UsageKey { number: spec.number, spec }
    }

    fn matches(&self, e: &LedgerEntry) -> bool {
        self.asset.as_deref().is_none_or(|a| a == e.asset)
            && self.operation.as_deref().is_none_or(|o| Some(o) == e.operation.as_deref())
    }
}

/// A [`UsageSpec`] with its number beside it: an index finds the spec's running sum by the
/// number without reading the spec itself, one dependent memory read less per limit.
#[derive(Debug, Clone, Copy)]
pub struct UsageKey {
    number: usize,
    spec: &'static UsageSpec,
}

impl std::ops::Deref for UsageKey {
    type Target = UsageSpec;

    fn deref(&self) -> &UsageSpec {
        self.spec
    }
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

/// Anything that can answer usage questions.
pub trait UsageSource {
    /// What one scope has spent, or `None` when nothing it spent still counts. The engine asks
    /// once per policy, then once per limit of it.
    fn of_scope(&self, scope: &Scope) -> Option<&dyn ScopeUsage>;

    /// Sums the spend of `scope` matching `query`.
    fn usage(&self, scope: &Scope, query: &UsageQuery) -> Usage {
        self.of_scope(scope).map_or_else(Usage::default, |s| s.usage(query))
    }
}

/// The spend of one scope, per window.
pub trait ScopeUsage {
    /// Sums the spend matching `query`.
    fn usage(&self, query: &UsageQuery) -> Usage;
}

/// A running sum over one window of one scope, restricted to an asset and an operation, valid
/// for windows starting at `since`. Moving it to another start touches only the entries between.
#[derive(Debug, Clone)]
struct Cursor {
    spec: &'static UsageSpec,
    since: DateTime<Utc>,
    usage: Usage,
    /// Where the window begins in the scope's entries: the index of the first one it holds at
    /// `since` (every entry before it is older). Valid while `layout` is the scope's.
    first: usize,
    /// The time of the entry at `first`, or [`DateTime::<Utc>::MAX_UTC`] when `first` is the
    /// end. Kept here because a window mostly moves forward past no entry at all: the cursor
    /// alone then answers, without reading the entry (a cache miss per limit otherwise).
    first_at: DateTime<Utc>,
    layout: u64,
}

impl Cursor {
    fn contains(&self, e: &LedgerEntry) -> bool {
        self.spec.matches(e) && self.spec.window.counts(e.at, self.since)
    }
}

/// The cursors asked of one scope, and which one holds each spec's sum.
#[derive(Debug, Default, Clone)]
struct Cursors {
    list: Vec<Cursor>,
    /// By spec number ([`UsageKey`]): the spec's place in `list` plus one, or 0 when the scope
    /// has none yet. Numbers are global, so a scope holds a place for every spec up to the
    /// highest it was asked about: four bytes each rather than a whole cursor.
    place: Vec<u32>,
}

impl Cursors {
    fn iter_mut(&mut self) -> impl Iterator<Item = &mut Cursor> {
        self.list.iter_mut()
    }

    fn clear(&mut self) {
        self.list.clear();
        self.place.clear();
    }
}

/// One scope's entries and the cursors asked of them.
#[derive(Debug, Default, Clone)]
struct ScopeData {
    /// Every entry of the scope, in (time, sequence number) order, with its time beside it so
    /// that searches stay in this vector.
    entries: Vec<(DateTime<Utc>, Arc<LedgerEntry>)>,
    /// Changes whenever an entry is inserted before the end or removed: the positions cursors
    /// hold from before are then searched again.
    layout: u64,
    cursors: RefCell<Cursors>,
}

impl ScopeData {
    /// Where a window starting at `since` begins: the first entry it holds.
    fn first_inside(&self, window: Window, since: DateTime<Utc>) -> usize {
        self.entries.partition_point(|(at, _)| !window.counts(*at, since))
    }

    /// The time of the entry at `i`, or [`DateTime::<Utc>::MAX_UTC`] past the end (inside every
    /// window: see [`Cursor::first_at`]).
    fn time_at(&self, i: usize) -> DateTime<Utc> {
        self.entries.get(i).map_or(DateTime::<Utc>::MAX_UTC, |(at, _)| *at)
    }

    /// The index of the entry with this time and sequence number.
    fn find(&self, at: DateTime<Utc>, seq: i64) -> Result<usize, usize> {
        self.entries.binary_search_by(|(a, e)| (*a, e.seq).cmp(&(at, seq)))
    }

    /// Adds an entry: at the end when it is the latest (cursor positions stay), else in its
    /// place (cursors search again).
    fn insert(&mut self, entry: &Arc<LedgerEntry>) {
        let end = self.entries.len();
        let latest = self.entries.last().is_none_or(|(at, e)| (*at, e.seq) < (entry.at, entry.seq));
        for c in self.cursors.get_mut().iter_mut() {
            if c.contains(entry) {
                c.usage.add(entry);
            }
            // Appended behind a window that holds none of the entries: it begins after the
            // new one unless it holds it.
            if latest && c.layout == self.layout && c.first == end {
                if c.spec.window.counts(entry.at, c.since) {
                    c.first_at = entry.at;
                } else {
                    c.first += 1;
                }
            }
        }
        if latest {
            self.entries.push((entry.at, Arc::clone(entry)));
        } else {
            let at = self.find(entry.at, entry.seq).unwrap_or_else(|free| free);
            self.entries.insert(at, (entry.at, Arc::clone(entry)));
            self.layout += 1;
        }
    }

    /// Removes an entry, if held.
    fn remove(&mut self, entry: &LedgerEntry) {
        if let Ok(i) = self.find(entry.at, entry.seq) {
            self.entries.remove(i);
            self.layout += 1;
            for c in self.cursors.get_mut().iter_mut().filter(|c| c.contains(entry)) {
                c.usage.sub(entry);
            }
        }
    }

    /// Replaces an entry by a new version of it at the same time (a reservation executed):
    /// positions stay, the sums move from the old version to the new.
    fn replace(&mut self, old: &LedgerEntry, new: &Arc<LedgerEntry>) {
        if let Ok(i) = self.find(old.at, old.seq) {
            self.entries[i].1 = Arc::clone(new);
            for c in self.cursors.get_mut().iter_mut() {
                if c.contains(old) {
                    c.usage.sub(old);
                }
                if c.contains(new) {
                    c.usage.add(new);
                }
            }
        }
    }
}

impl ScopeUsage for ScopeData {
    fn usage(&self, q: &UsageQuery) -> Usage {
        let mut cursors = self.cursors.borrow_mut();
        let UsageKey { number, spec } = q.spec;
        let Some(place) = cursors.place.get(number).and_then(|p| p.checked_sub(1)) else {
            let first = self.first_inside(spec.window, q.since);
            let mut fresh = Cursor {
                spec,
                since: q.since,
                usage: Usage::default(),
                first,
                first_at: self.time_at(first),
                layout: self.layout,
            };
            for (_, e) in &self.entries[first..] {
                if spec.matches(e) {
                    fresh.usage.add(e);
                }
            }
            let usage = fresh.usage;
            cursors.list.push(fresh);
            let place = u32::try_from(cursors.list.len()).unwrap_or(u32::MAX);
            if cursors.place.len() <= number {
                cursors.place.resize(number + 1, 0);
            }
            cursors.place[number] = place;
            return usage;
        };
        let cursor = &mut cursors.list[place as usize];
        if q.since == cursor.since {
            return cursor.usage;
        }
        let window = spec.window;
        let placed = cursor.layout == self.layout;
        if placed && q.since > cursor.since && window.counts(cursor.first_at, q.since) {
            // Forward, and the oldest entry held is still inside: nothing leaves.
            cursor.since = q.since;
            return cursor.usage;
        }
        let mut i = if placed { cursor.first } else { self.first_inside(window, cursor.since) };
        if q.since > cursor.since {
            // The window's start moved forward: the entries it passed leave.
            while let Some((at, e)) = self.entries.get(i).filter(|(at, _)| !window.counts(*at, q.since)) {
                debug_assert!(window.counts(*at, cursor.since));
                if spec.matches(e) {
                    cursor.usage.sub(e);
                }
                i += 1;
            }
        } else {
            // Back: the entries between the new start and the old enter.
            while let Some((_, e)) =
                i.checked_sub(1).and_then(|p| self.entries.get(p)).filter(|(at, _)| window.counts(*at, q.since))
            {
                if spec.matches(e) {
                    cursor.usage.add(e);
                }
                i -= 1;
            }
        }
        cursor.first = i;
        cursor.first_at = self.time_at(i);
        cursor.layout = self.layout;
        cursor.since = q.since;
        cursor.usage
    }
}

/// In-memory index of counting spends, by scope and time, with running sums per window.
///
/// Each distinct (scope, window, asset, operation) asked about gets a cursor: its sum for the
/// window start last asked, and where that start falls among the scope's entries. As time
/// moves on, only the entries that leave or enter the window are visited, and inserts and
/// releases adjust the cursors they fall into, so answering a query costs O(1) amortised
/// however long the history.
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
        let entry = Arc::new(entry);
        if let Some(old) = self.entries.get(&entry.seq).cloned() {
            let same_place = old.at == entry.at
                && old.agent == entry.agent
                && old.department == entry.department
                && old.wallet == entry.wallet;
            if same_place {
                for scope in Self::scopes_of(&entry) {
                    if let Some(data) = self.by_scope.get_mut(&scope) {
                        data.replace(&old, &entry);
                    }
                }
                self.entries.insert(entry.seq, entry);
                return;
            }
            self.remove(entry.seq);
        }
        for scope in Self::scopes_of(&entry) {
            self.by_scope.entry(scope).or_default().insert(&entry);
        }
        self.entries.insert(entry.seq, entry);
    }

    /// Adds many entries at once (loading a ledger): each scope is sorted once, not kept
    /// sorted entry by entry.
    pub fn upsert_all(&mut self, entries: impl IntoIterator<Item = LedgerEntry>) {
        let mut again = vec![];
        for entry in entries {
            if self.entries.contains_key(&entry.seq) {
                again.push(entry);
                continue;
            }
            let entry = Arc::new(entry);
            for scope in Self::scopes_of(&entry) {
                let data = self.by_scope.entry(scope).or_default();
                for c in data.cursors.get_mut().iter_mut().filter(|c| c.contains(&entry)) {
                    c.usage.add(&entry);
                }
                data.entries.push((entry.at, Arc::clone(&entry)));
            }
            self.entries.insert(entry.seq, entry);
        }
        // Scopes left as they were are already in order; every cursor finds its place again.
        for data in self.by_scope.values_mut() {
            if !data.entries.is_sorted_by_key(|(at, e)| (*at, e.seq)) {
                data.entries.sort_unstable_by_key(|(at, e)| (*at, e.seq));
            }
            data.layout += 1;
        }
        for entry in again {
            self.upsert(entry);
        }
    }

    /// Removes an entry (released, denied, failed); unknown sequence numbers are ignored.
    pub fn remove(&mut self, seq: i64) {
        if let Some(old) = self.entries.remove(&seq) {
            for scope in Self::scopes_of(&old) {
                if let Some(data) = self.by_scope.get_mut(&scope) {
                    data.remove(&old);
                    if data.entries.is_empty() {
                        self.by_scope.remove(&scope);
                    }
                }
            }
        }
    }

    /// Drops every entry made before `cutoff`: no window reaches back that far any more.
    pub fn prune_before(&mut self, cutoff: DateTime<Utc>) {
        self.entries.retain(|_, e| e.at >= cutoff);
        self.by_scope.retain(|_, data| {
            let old = data.entries.partition_point(|(at, _)| *at < cutoff);
            data.entries.drain(..old);
            // Cursors positioned before the cutoff would now be wrong; they are rebuilt on demand.
            data.cursors.get_mut().clear();
            !data.entries.is_empty()
        });
    }

    /// The entry with this sequence number.
    pub fn get(&self, seq: i64) -> Option<&LedgerEntry> {
        self.entries.get(&seq).map(|e| e.as_ref())
    }
}

impl UsageSource for UsageIndex {
    fn of_scope(&self, scope: &Scope) -> Option<&dyn ScopeUsage> {
        self.by_scope.get(scope).map(|d| d as &dyn ScopeUsage)
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
        let q = UsageQuery { spec: UsageSpec::of(day, Tz::UTC, None, None), since: t0 };
        let u = idx.usage(&scope, &q);
        assert_eq!((u.spent_usd, u.reserved_usd, u.spent_count, u.reserved_count), (10.into(), 5.into(), 1, 1));
        let hour = Window::Rolling(TimeDelta::hours(1));
        let u = idx.usage(&scope, &UsageQuery { spec: UsageSpec::of(hour, Tz::UTC, None, None), since: t0 });
        assert_eq!((u.spent_usd, u.reserved_usd), (0.into(), 5.into()), "a rolling window excludes its start");
        // A reservation that executes changes state, not the total.
        idx.upsert(entry(2, t0 + TimeDelta::seconds(1), 5, EntryState::Spent));
        assert_eq!(idx.usage(&scope, &q).spent_usd, Decimal::from(15));
        idx.remove(2);
        assert_eq!(idx.usage(&scope, &q).spent_usd, Decimal::from(10));
        assert_eq!(idx.usage(&Scope::Wallet("x".into()), &q), Usage::default());
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
            let q = UsageQuery { spec: UsageSpec::of(window, ny, None, None), since: window.start(t(at), ny) };
            idx.usage(&scope, &q).spent_count
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

    #[test]
    fn a_spend_booked_behind_a_window_that_holds_nothing_stays_out_of_it() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let hour = Window::Rolling(TimeDelta::hours(1));
        let scope = Scope::Agent("a".into());
        let ask = |idx: &UsageIndex, at: &str| {
            let q = UsageQuery { spec: UsageSpec::of(hour, Tz::UTC, None, None), since: hour.start(t(at), Tz::UTC) };
            idx.usage(&scope, &q).spent_usd
        };
        let mut idx = UsageIndex::new();
        idx.upsert(entry(1, t("2026-11-01T08:00:00Z"), 1, EntryState::Spent));
        assert_eq!(ask(&idx, "2026-11-01T12:00:00Z"), Decimal::ZERO);
        // The latest of the scope, yet before the window's start: appended, not held.
        idx.upsert(entry(2, t("2026-11-01T10:00:00Z"), 10, EntryState::Spent));
        idx.upsert(entry(3, t("2026-11-01T11:30:00Z"), 100, EntryState::Spent));
        assert_eq!(ask(&idx, "2026-11-01T12:00:00Z"), Decimal::from(100));
        assert_eq!(ask(&idx, "2026-11-01T12:10:00Z"), Decimal::from(100), "nothing left the window");
        assert_eq!(ask(&idx, "2026-11-01T12:45:00Z"), Decimal::ZERO, "the appended spend, first held, left");
        assert_eq!(ask(&idx, "2026-11-01T10:30:00Z"), Decimal::from(110), "back: the 10:00 spend enters");
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
            Insert {
                minute: i64,
                agent: u8,
                asset: u8,
                cents: u32,
                spent: bool,
            },
            /// Several entries loaded at once, with an existing one executed among them.
            Load(Vec<(i64, u8, u8, u32, bool)>, usize),
            Remove(usize),
            Execute(usize),
            /// An entry booked again at another time.
            Move(usize, i64),
            Prune(i64),
            Query {
                minute: i64,
                window: u8,
                agent: u8,
                asset: Option<u8>,
            },
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                // Times on a five-minute grid, so entries often sit exactly on a window's start.
                (0i64..400, 0u8..2, 0u8..2, 1u32..10_000, any::<bool>()).prop_map(
                    |(slot, agent, asset, cents, spent)| Op::Insert { minute: slot * 5, agent, asset, cents, spent }
                ),
                (prop::collection::vec((0i64..400, 0u8..2, 0u8..2, 1u32..10_000, any::<bool>()), 0..12), 0usize..64)
                    .prop_map(|(rows, executed)| Op::Load(
                        rows.into_iter().map(|(slot, a, s, c, spent)| (slot * 5, a, s, c, spent)).collect(),
                        executed
                    )),
                (0usize..64).prop_map(Op::Remove),
                (0usize..64).prop_map(Op::Execute),
                (0usize..64, 0i64..400).prop_map(|(i, slot)| Op::Move(i, slot * 5)),
                (0i64..400).prop_map(|slot| Op::Prune(slot * 5)),
                (0i64..400, 0u8..4, 0u8..3, prop::option::of(0u8..2))
                    .prop_map(|(slot, window, agent, asset)| Op::Query { minute: slot * 5, window, agent, asset }),
            ]
        }

        fn naive(entries: &[LedgerEntry], scope: &Scope, q: &UsageQuery) -> Usage {
            let mut u = Usage::default();
            for e in entries {
                let in_scope = match scope {
                    Scope::Org => true,
                    Scope::Agent(a) => &e.agent == a,
                    _ => false,
                };
                if in_scope
                    && q.spec.window.counts(e.at, q.since)
                    && q.spec.asset.as_deref().is_none_or(|a| a == e.asset)
                {
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
                let make = |seq, minute, agent, asset, cents, spent| LedgerEntry {
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
                for op in ops {
                    match op {
                        Op::Insert { minute, agent, asset, cents, spent } => {
                            seq += 1;
                            // Moving forward, spends are booked around the present: mostly the
                            // latest of their scope, some older than a window's start.
                            let minute = if forward { (now + 10 - minute % 120).max(0) } else { minute };
                            let e = make(seq, minute, agent, asset, cents, spent);
                            idx.upsert(e.clone());
                            live.push(e);
                        }
                        Op::Load(rows, executed) => {
                            let mut batch = vec![];
                            for (minute, agent, asset, cents, spent) in rows {
                                seq += 1;
                                batch.push(make(seq, minute, agent, asset, cents, spent));
                            }
                            live.extend(batch.iter().cloned());
                            if !live.is_empty() {
                                let n = live.len();
                                let e = &mut live[executed % n];
                                e.state = EntryState::Spent;
                                batch.push(e.clone());
                            }
                            idx.upsert_all(batch);
                        }
                        Op::Move(i, minute) if !live.is_empty() => {
                            let n = live.len();
                            let e = &mut live[i % n];
                            e.at = t0 + TimeDelta::minutes(minute);
                            idx.upsert(e.clone());
                        }
                        Op::Prune(minute) => {
                            let cutoff = t0 + TimeDelta::minutes(minute);
                            live.retain(|e| e.at >= cutoff);
                            idx.prune_before(cutoff);
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
                                spec: UsageSpec::of(w, ny, asset.as_deref(), None),
                                since: w.start(at, ny),
                            };
                            prop_assert_eq!(idx.usage(&scope, &q), naive(&live, &scope, &q));
                        }
                        _ => {}
                    }
                }
            }
            Ok(())
        }
    }
}
