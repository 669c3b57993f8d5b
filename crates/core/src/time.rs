//! Time rules: durations, rolling and calendar windows (DST-correct), weekly schedules.
//!
//! Nothing here reads a clock: every function takes the instant it reasons about.

use chrono::{
    DateTime, Datelike, Days, LocalResult, Months, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, TimeZone, Utc,
    Weekday,
};
use chrono_tz::Tz;
use std::cell::RefCell;
use std::fmt;

/// Parses `"30s"`, `"5m"`, `"1h"`, `"24h"`, `"7d"`: a positive whole number and a unit.
pub fn parse_duration(text: &str) -> Option<TimeDelta> {
    let unit_at = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(unit_at);
    let n: i64 = number.parse().ok().filter(|&n| n > 0)?;
    let seconds = match unit {
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86_400)?,
        _ => return None,
    };
    // Cap at ten years: anything longer is a typo, and it keeps date arithmetic in range.
    (seconds <= 10 * 366 * 86_400).then(|| TimeDelta::seconds(seconds))
}

/// Formats a duration the way it is written in the config (`"90s"` → `"90s"`, `"3600s"` → `"1h"`).
pub fn fmt_duration(d: TimeDelta) -> String {
    let s = d.num_seconds();
    // "24h" reads better than "1d" and is how the spec writes a rolling day.
    if s % 86_400 == 0 && s > 86_400 {
        format!("{}d", s / 86_400)
    } else if s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else if s % 60 == 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// A calendar period, aligned to local midnight in a timezone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CalendarPeriod {
    /// Since local midnight.
    Day,
    /// Since Monday local midnight (ISO week).
    Week,
    /// Since the first of the month, local midnight.
    Month,
}

/// The time span a limit sums over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Window {
    /// The last `TimeDelta` up to the spend, e.g. `24h`.
    Rolling(TimeDelta),
    /// The current calendar period in the policy's timezone.
    Calendar(CalendarPeriod),
}

impl Window {
    /// Parses `day`, `week`, `month` or a duration such as `24h`.
    pub fn parse(text: &str) -> Option<Window> {
        match text {
            "day" => Some(Window::Calendar(CalendarPeriod::Day)),
            "week" => Some(Window::Calendar(CalendarPeriod::Week)),
            "month" => Some(Window::Calendar(CalendarPeriod::Month)),
            other => parse_duration(other).map(Window::Rolling),
        }
    }

    /// The earliest instant whose spend counts in this window at `at`.
    ///
    /// Rolling windows are half-open, `(at - d, at]`, so the returned bound is exclusive; calendar
    /// windows start inclusively at local midnight. [`Window::counts`] applies the right comparison.
    pub fn start(&self, at: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
        match self {
            Window::Rolling(d) => at - *d,
            Window::Calendar(period) => calendar_start(*period, at, tz),
        }
    }

    /// Whether this is a rolling window (its start does not depend on a timezone).
    pub fn is_rolling(&self) -> bool {
        matches!(self, Window::Rolling(_))
    }

    /// Does a spend made at `spent_at` count in this window evaluated at `at`?
    ///
    /// Spends later than `at` always count: with two processes and clocks a few microseconds
    /// apart, a spend recorded "in the future" is still money out of the budget.
    pub fn counts(&self, spent_at: DateTime<Utc>, window_start: DateTime<Utc>) -> bool {
        match self {
            Window::Rolling(_) => spent_at > window_start,
            Window::Calendar(_) => spent_at >= window_start,
        }
    }

    /// The longest span this window can cover.
    pub fn max_span(&self) -> TimeDelta {
        match self {
            Window::Rolling(d) => *d,
            // A month of 31 days plus a DST hour, and a day of margin for timezone offsets.
            Window::Calendar(CalendarPeriod::Day) => TimeDelta::hours(26),
            Window::Calendar(CalendarPeriod::Week) => TimeDelta::days(8),
            Window::Calendar(CalendarPeriod::Month) => TimeDelta::days(32),
        }
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Window::Rolling(d) => f.write_str(&fmt_duration(*d)),
            Window::Calendar(CalendarPeriod::Day) => f.write_str("day"),
            Window::Calendar(CalendarPeriod::Week) => f.write_str("week"),
            Window::Calendar(CalendarPeriod::Month) => f.write_str("month"),
        }
    }
}

/// The start of the calendar `period` holding `at` in `tz`. Each thread remembers the last
/// period worked out for every (period, timezone) with its end, so the timezone arithmetic runs
/// once a period rather than once a request (it was a twentieth of an evaluation).
fn calendar_start(period: CalendarPeriod, at: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
    type Known = (CalendarPeriod, Tz, DateTime<Utc>, DateTime<Utc>);
    thread_local! {
        static KNOWN: RefCell<Vec<Known>> = const { RefCell::new(Vec::new()) };
    }
    let known = KNOWN
        .with_borrow(|known| known.iter().find(|k| k.0 == period && k.1 == tz && k.2 <= at && at < k.3).map(|k| k.2));
    if let Some(start) = known {
        return start;
    }
    let (start, end) = calendar_bounds(period, at, tz);
    // At the end of chrono's range there is no next period: nothing to remember.
    if let Some(end) = end.filter(|end| start <= at && at < *end) {
        KNOWN.with_borrow_mut(|known| match known.iter().position(|k| k.0 == period && k.1 == tz) {
            Some(i) => known[i] = (period, tz, start, end),
            // Distinct (period, timezone) pairs come from the configuration: a handful.
            None if known.len() < 64 => known.push((period, tz, start, end)),
            None => {}
        });
    }
    start
}

/// The start of the calendar `period` holding `at` in `tz`, and the next period's start (none at
/// the end of chrono's range).
fn calendar_bounds(period: CalendarPeriod, at: DateTime<Utc>, tz: Tz) -> (DateTime<Utc>, Option<DateTime<Utc>>) {
    let local = at.with_timezone(&tz).date_naive();
    let first_day = match period {
        CalendarPeriod::Day => local,
        CalendarPeriod::Week => local - TimeDelta::days(i64::from(local.weekday().num_days_from_monday())),
        CalendarPeriod::Month => local.with_day(1).unwrap_or(local),
    };
    let next_day = match period {
        CalendarPeriod::Day => first_day.succ_opt(),
        CalendarPeriod::Week => first_day.checked_add_days(Days::new(7)),
        CalendarPeriod::Month => first_day.checked_add_months(Months::new(1)),
    };
    (local_midnight(first_day, tz), next_day.map(|d| local_midnight(d, tz)))
}

/// The instant a local date begins in `tz`. Where midnight falls in a DST gap, the day begins at
/// the first local time that exists.
fn local_midnight(date: NaiveDate, tz: Tz) -> DateTime<Utc> {
    let mut naive: NaiveDateTime = date.and_time(NaiveTime::MIN);
    // DST gaps are at most a few hours; step forward in quarter hours until the time exists.
    for _ in 0..16 {
        match tz.from_local_datetime(&naive) {
            LocalResult::Single(t) => return t.with_timezone(&Utc),
            LocalResult::Ambiguous(earliest, _) => return earliest.with_timezone(&Utc),
            LocalResult::None => naive += TimeDelta::minutes(15),
        }
    }
    Utc.from_utc_datetime(&date.and_time(NaiveTime::MIN))
}

/// A daily time range in minutes after local midnight; `end` may be before `start` (crossing
/// midnight) and may be 1440 (`24:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoursRange {
    /// Minute of the day the range opens (inclusive).
    pub start: u32,
    /// Minute of the day the range closes (exclusive).
    pub end: u32,
}

impl HoursRange {
    /// Parses `"09:00-18:00"` or `"22:00-06:00"`.
    pub fn parse(text: &str) -> Option<HoursRange> {
        let (a, b) = text.split_once('-')?;
        let minute = |s: &str, allow_24: bool| -> Option<u32> {
            let (h, m) = s.split_once(':')?;
            if h.len() != 2 || m.len() != 2 {
                return None;
            }
            let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
            let ok = (h < 24 && m < 60) || (allow_24 && h == 24 && m == 0);
            ok.then_some(h * 60 + m)
        };
        let range = HoursRange { start: minute(a, false)?, end: minute(b, true)? };
        (range.start != range.end).then_some(range)
    }

    fn crosses_midnight(&self) -> bool {
        self.end < self.start
    }
}

impl fmt::Display for HoursRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}-{:02}:{:02}", self.start / 60, self.start % 60, self.end / 60, self.end % 60)
    }
}

/// Parses a three-letter English weekday, as written in schedules.
pub fn parse_weekday(text: &str) -> Option<Weekday> {
    Some(match text {
        "mon" => Weekday::Mon,
        "tue" => Weekday::Tue,
        "wed" => Weekday::Wed,
        "thu" => Weekday::Thu,
        "fri" => Weekday::Fri,
        "sat" => Weekday::Sat,
        "sun" => Weekday::Sun,
        _ => return None,
    })
}

/// When spending is allowed: on some weekdays, within some hours, in a timezone. A range that
/// crosses midnight belongs to the day it opens on (`fri 22:00-06:00` allows Saturday 03:00).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// Allowed weekdays; empty means every day.
    pub days: Vec<Weekday>,
    /// Allowed hours; `None` means all day.
    pub hours: Option<HoursRange>,
    /// Timezone the days and hours are read in.
    pub timezone: Tz,
}

impl Schedule {
    /// Is `at` inside the schedule?
    pub fn allows(&self, at: DateTime<Utc>) -> bool {
        let local = at.with_timezone(&self.timezone);
        let today = local.weekday();
        let day_ok = |d: Weekday| self.days.is_empty() || self.days.contains(&d);
        let Some(hours) = self.hours else {
            return day_ok(today);
        };
        let minute = local.hour_minute();
        if hours.crosses_midnight() {
            (minute >= hours.start && day_ok(today)) || (minute < hours.end && day_ok(today.pred()))
        } else {
            minute >= hours.start && minute < hours.end && day_ok(today)
        }
    }

    /// A short description for reasons, e.g. `mon,tue 09:00-18:00 America/New_York`.
    pub fn describe(&self) -> String {
        let days = if self.days.is_empty() {
            "every day".to_string()
        } else {
            self.days.iter().map(|d| d.to_string().to_ascii_lowercase()).collect::<Vec<_>>().join(",")
        };
        match self.hours {
            Some(h) => format!("{days} {h} {}", self.timezone),
            None => format!("{days} {}", self.timezone),
        }
    }
}

trait HourMinute {
    fn hour_minute(&self) -> u32;
}

impl<T: chrono::Timelike> HourMinute for T {
    fn hour_minute(&self) -> u32 {
        self.hour() * 60 + self.minute()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Some(TimeDelta::seconds(30)));
        assert_eq!(parse_duration("24h"), Some(TimeDelta::hours(24)));
        assert_eq!(parse_duration("30d"), Some(TimeDelta::days(30)));
        for bad in ["", "h", "0h", "-1h", "1.5h", "1w", "1 h", "99999999999999d"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
        assert_eq!(fmt_duration(TimeDelta::hours(24)), "24h");
        assert_eq!(fmt_duration(TimeDelta::days(7)), "7d");
        assert_eq!(fmt_duration(TimeDelta::minutes(90)), "90m");
    }

    proptest::proptest! {
        /// The remembered periods answer exactly what working each one out would, whatever the
        /// order of the instants asked about (backwards, across DST changes, midnight gaps).
        #[test]
        fn remembered_calendar_starts_match_working_them_out(
            offsets in proptest::collection::vec(0i64..2 * 366 * 86_400, 1..64),
            zone in 0usize..4,
        ) {
            let tz = [Tz::UTC, Tz::America__New_York, Tz::America__Santiago, Tz::Australia__Lord_Howe][zone];
            let base = DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z").unwrap().with_timezone(&Utc);
            for offset in offsets {
                let at = base + TimeDelta::seconds(offset);
                for period in [CalendarPeriod::Day, CalendarPeriod::Week, CalendarPeriod::Month] {
                    proptest::prop_assert_eq!(calendar_start(period, at, tz), calendar_bounds(period, at, tz).0);
                }
            }
        }
    }

    #[test]
    fn calendar_day_follows_the_timezone_across_dst() {
        let ny: Tz = "America/New_York".parse().unwrap();
        let day = Window::Calendar(CalendarPeriod::Day);
        // 2026-03-08 is the spring-forward day in New York: midnight is still EST (UTC-5).
        assert_eq!(day.start(utc("2026-03-08T20:00:00Z"), ny), utc("2026-03-08T05:00:00Z"));
        // The next day starts at midnight EDT (UTC-4): a 23-hour day.
        assert_eq!(day.start(utc("2026-03-09T12:00:00Z"), ny), utc("2026-03-09T04:00:00Z"));
        // 2026-11-01 falls back: midnight EDT, and the following midnight is EST: a 25-hour day.
        assert_eq!(day.start(utc("2026-11-01T23:00:00Z"), ny), utc("2026-11-01T04:00:00Z"));
        assert_eq!(day.start(utc("2026-11-02T06:00:00Z"), ny), utc("2026-11-02T05:00:00Z"));
    }

    #[test]
    fn calendar_day_in_a_zone_whose_dst_gap_is_at_midnight() {
        // Chile springs forward at 24:00 → 01:00: 2026-09-06 00:00 does not exist in Santiago.
        let cl: Tz = "America/Santiago".parse().unwrap();
        let start = Window::Calendar(CalendarPeriod::Day).start(utc("2026-09-06T12:00:00Z"), cl);
        assert_eq!(start, utc("2026-09-06T04:00:00Z"));
    }

    #[test]
    fn week_and_month_boundaries() {
        let utc_tz: Tz = "UTC".parse().unwrap();
        // 2026-11-22 is a Sunday; the ISO week began Monday 2026-11-16.
        let at = utc("2026-11-22T10:00:00Z");
        assert_eq!(Window::Calendar(CalendarPeriod::Week).start(at, utc_tz), utc("2026-11-16T00:00:00Z"));
        assert_eq!(Window::Calendar(CalendarPeriod::Month).start(at, utc_tz), utc("2026-11-01T00:00:00Z"));
        let tokyo: Tz = "Asia/Tokyo".parse().unwrap();
        // 2026-11-30T20:00Z is already December 1st in Tokyo.
        assert_eq!(
            Window::Calendar(CalendarPeriod::Month).start(utc("2026-11-30T20:00:00Z"), tokyo),
            utc("2026-11-30T15:00:00Z")
        );
    }

    #[test]
    fn rolling_window_is_half_open() {
        let w = Window::Rolling(TimeDelta::hours(1));
        let at = utc("2026-11-22T10:00:00Z");
        let start = w.start(at, Tz::UTC);
        assert!(!w.counts(utc("2026-11-22T09:00:00Z"), start));
        assert!(w.counts(utc("2026-11-22T09:00:00.000001Z"), start));
        let day = Window::Calendar(CalendarPeriod::Day);
        let dstart = day.start(at, Tz::UTC);
        assert!(day.counts(utc("2026-11-22T00:00:00Z"), dstart));
        assert!(!day.counts(utc("2026-11-21T23:59:59.999999Z"), dstart));
    }

    #[test]
    fn schedule_hours_and_days() {
        let ny: Tz = "America/New_York".parse().unwrap();
        let weekdays = Schedule {
            days: ["mon", "tue", "wed", "thu", "fri"].iter().map(|d| parse_weekday(d).unwrap()).collect(),
            hours: HoursRange::parse("09:00-18:00"),
            timezone: ny,
        };
        // Friday 2026-11-20 17:59 New York (EST, UTC-5) is inside; 18:00 is not.
        assert!(weekdays.allows(utc("2026-11-20T22:59:00Z")));
        assert!(!weekdays.allows(utc("2026-11-20T23:00:00Z")));
        assert!(weekdays.allows(utc("2026-11-20T14:00:00Z")));
        assert!(!weekdays.allows(utc("2026-11-20T13:59:00Z")));
        // Saturday noon New York.
        assert!(!weekdays.allows(utc("2026-11-21T17:00:00Z")));
        // 2026-11-21T02:00Z is still Friday 21:00 in New York but outside hours.
        assert!(!weekdays.allows(utc("2026-11-21T02:00:00Z")));
    }

    #[test]
    fn schedule_crossing_midnight_belongs_to_its_opening_day() {
        let night = Schedule { days: vec![Weekday::Fri], hours: HoursRange::parse("22:00-06:00"), timezone: Tz::UTC };
        assert!(night.allows(utc("2026-11-20T22:00:00Z"))); // Fri 22:00
        assert!(night.allows(utc("2026-11-21T05:59:00Z"))); // Sat 05:59, opened Friday
        assert!(!night.allows(utc("2026-11-21T06:00:00Z"))); // Sat 06:00
        assert!(!night.allows(utc("2026-11-21T22:30:00Z"))); // Sat 22:30: Saturday not listed
        assert!(!night.allows(utc("2026-11-20T03:00:00Z"))); // Fri 03:00 opened Thursday
    }

    #[test]
    fn hours_ranges_parse() {
        assert_eq!(HoursRange::parse("00:00-24:00"), Some(HoursRange { start: 0, end: 1440 }));
        for bad in ["9:00-18:00", "09:00", "25:00-26:00", "09:60-10:00", "10:00-10:00", "24:00-01:00"] {
            assert_eq!(HoursRange::parse(bad), None, "{bad}");
        }
    }
}
