//! Decimal money: strict parsing of decimal strings and display rules.

use rust_decimal::Decimal;
use std::str::FromStr;

/// Why a decimal string is not an acceptable amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    /// Not of the form `123` or `123.45`.
    #[error("{0:?} is not a decimal string such as \"12.50\"")]
    NotDecimal(String),
    /// More than 28 significant digits.
    #[error("{0:?} has more digits than spendguard can represent exactly")]
    TooLarge(String),
}

/// Parses a plain decimal string (`"12"`, `"0.5"`, `"-3.25"`): digits, an optional sign and one
/// optional point. Exponents, blanks, `+` signs, `NaN` and thousands separators are refused so
/// that nothing is ever guessed.
pub fn parse_decimal(text: &str) -> Result<Decimal, AmountError> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (int_part, frac_part) = match digits.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (digits, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(int_part) || frac_part.is_some_and(|f| !all_digits(f)) {
        return Err(AmountError::NotDecimal(text.to_string()));
    }
    Decimal::from_str_exact(text).map_err(|_| AmountError::TooLarge(text.to_string()))
}

/// Number of decimal places actually used by `amount` (trailing zeros do not count).
pub fn decimal_places(amount: Decimal) -> u32 {
    amount.normalize().scale()
}

/// Formats a USD value with at least two decimals and never drops a significant digit.
pub fn fmt_usd(value: Decimal) -> String {
    let n = value.normalize();
    if n.scale() < 2 {
        let mut v = n;
        v.rescale(2);
        v.to_string()
    } else {
        n.to_string()
    }
}

/// Formats an amount in asset units without trailing zeros.
pub fn fmt_units(value: Decimal) -> String {
    value.normalize().to_string()
}

/// Serialises a USD value as a decimal string ([`fmt_usd`]).
pub fn serialize_usd<S: serde::Serializer>(value: &Decimal, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&fmt_usd(*value))
}

/// Serialises an amount as a decimal string ([`fmt_units`]).
pub fn serialize_units<S: serde::Serializer>(value: &Decimal, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&fmt_units(*value))
}

/// Parses a decimal from trusted storage; the text was written by [`fmt_units`] or `Decimal`.
pub fn decimal_from_store(text: &str) -> Option<Decimal> {
    Decimal::from_str(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_decimals_only() {
        assert_eq!(parse_decimal("12.50").unwrap().to_string(), "12.50");
        assert_eq!(parse_decimal("0").unwrap(), Decimal::ZERO);
        assert_eq!(parse_decimal("-1.5").unwrap().to_string(), "-1.5");
        for bad in ["", "1e3", "+1", " 1", "1.", ".5", "1,000", "NaN", "0x10", "1.2.3", "--1"] {
            assert!(parse_decimal(bad).is_err(), "{bad:?} accepted");
        }
        assert!(matches!(parse_decimal("123456789012345678901234567890"), Err(AmountError::TooLarge(_))));
    }

    #[test]
    fn formats_usd_with_two_decimals() {
        assert_eq!(fmt_usd(Decimal::from(999)), "999.00");
        assert_eq!(fmt_usd(parse_decimal("0.123").unwrap()), "0.123");
        assert_eq!(fmt_usd(parse_decimal("1.50000").unwrap()), "1.50");
        assert_eq!(fmt_units(parse_decimal("0.5000").unwrap()), "0.5");
    }

    #[test]
    fn counts_places() {
        assert_eq!(decimal_places(parse_decimal("1.2300").unwrap()), 2);
        assert_eq!(decimal_places(parse_decimal("7").unwrap()), 0);
    }
}
