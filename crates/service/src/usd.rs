//! [`Usd`]: a USD amount as people read it in status, exposures and reports — a `Decimal`,
//! written with at least two decimals and never rounded.

use rust_decimal::Decimal;
use serde::{Serialize, Serializer};
use std::fmt;

/// A USD amount.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Usd(pub Decimal);

impl fmt::Display for Usd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&spendguard_core::money::fmt_usd(self.0))
    }
}

impl Serialize for Usd {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl std::ops::AddAssign<Decimal> for Usd {
    fn add_assign(&mut self, v: Decimal) {
        self.0 += v;
    }
}
