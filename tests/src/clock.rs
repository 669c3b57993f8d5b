//! A clock the test sets, for nodes whose services must see time pass without waiting.

use chrono::{DateTime, Utc};
use std::sync::Mutex;

/// A clock that reads what the test last set.
pub struct SteppedClock(Mutex<DateTime<Utc>>);

impl SteppedClock {
    /// Starting at `at`.
    pub fn new(at: DateTime<Utc>) -> SteppedClock {
        SteppedClock(Mutex::new(at))
    }

    /// From now on, it reads `at`.
    pub fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().unwrap() = at;
    }
}

impl spendguard_service::Clock for SteppedClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}
