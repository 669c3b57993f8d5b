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
    DecimalText::usd(value).as_str().to_owned()
}

/// Formats an amount in asset units without trailing zeros.
pub fn fmt_units(value: Decimal) -> String {
    DecimalText::units(value).as_str().to_owned()
}

/// A decimal written out on the stack, as [`fmt_usd`] or [`fmt_units`] write it: serializing a
/// decision writes a handful of numbers per limit, and a `String` each (after `normalize`,
/// `rescale` and `Decimal`'s own formatter) was most of that cost.
pub struct DecimalText {
    bytes: [u8; 48],
    start: usize,
}

impl DecimalText {
    /// At least two decimals, trailing zeros beyond them dropped (`999.00`, `0.123`).
    pub fn usd(value: Decimal) -> Self {
        Self::write(value, 2)
    }

    /// Trailing zeros dropped (`0.5`, `12`).
    pub fn units(value: Decimal) -> Self {
        Self::write(value, 0)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits, `.` and `-` are ever written.
        std::str::from_utf8(&self.bytes[self.start..]).unwrap_or_default()
    }

    fn write(value: Decimal, min_scale: u32) -> Self {
        let mut mantissa = value.mantissa().unsigned_abs();
        let mut scale = value.scale();
        while scale > min_scale && mantissa.is_multiple_of(10) {
            mantissa /= 10;
            scale -= 1;
        }
        // As `Decimal::rescale` pads: only as far as a 96-bit mantissa holds.
        while scale < min_scale && mantissa * 10 < 1 << 96 {
            mantissa *= 10;
            scale += 1;
        }
        let negative = value.is_sign_negative() && mantissa != 0;
        // At most 29 digits (a 96-bit mantissa), a point, a leading zero and a sign.
        let mut bytes = [0u8; 48];
        let mut start = bytes.len();
        let mut put = |b: u8| {
            start -= 1;
            bytes[start] = b;
        };
        let mut written = 0;
        loop {
            if written == scale && scale > 0 {
                put(b'.');
            }
            // Money fits 64 bits almost always, where division by ten is a multiplication.
            let digit = match u64::try_from(mantissa) {
                Ok(small) => {
                    mantissa = u128::from(small / 10);
                    small % 10
                }
                Err(_) => {
                    let digit = (mantissa % 10) as u64;
                    mantissa /= 10;
                    digit
                }
            };
            put(b'0' + digit as u8);
            written += 1;
            if mantissa == 0 && written > scale {
                break;
            }
        }
        if negative {
            put(b'-');
        }
        Self { bytes, start }
    }
}

impl std::fmt::Display for DecimalText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Serialises a USD value as a decimal string ([`fmt_usd`]).
pub fn serialize_usd<S: serde::Serializer>(value: &Decimal, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(DecimalText::usd(*value).as_str())
}

/// Serialises an amount as a decimal string ([`fmt_units`]).
pub fn serialize_units<S: serde::Serializer>(value: &Decimal, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(DecimalText::units(*value).as_str())
}

/// Parses a decimal from trusted storage; the text was written by [`fmt_units`] or `Decimal`.
pub fn decimal_from_store(text: &str) -> Option<Decimal> {
    Decimal::from_str(text).ok()
}

/// 10^0 ..= 10^18: lining up two scales at most 18 apart.
const POW10: [u64; 19] = {
    let mut table = [1u64; 19];
    let mut i = 1;
    while i < 19 {
        table[i] = table[i - 1] * 10;
        i += 1;
    }
    table
};

/// A decimal's sign, scale and 96-bit magnitude, read from its 16 bytes in one go.
///
/// `Decimal::mantissa()` reads the magnitude's upper 8 bytes apart from the rest; a decimal
/// the caller has just copied (a limit, a window's sum) was written 16 bytes at a time, and this
/// CPU cannot forward such a write to a read of its upper half: the read waits for the write to
/// reach the cache. Under `perf` that wait was the costliest instruction of an evaluation.
struct Unpacked {
    negative: bool,
    scale: u32,
    magnitude: u128,
}

impl Unpacked {
    #[inline]
    fn of(d: Decimal) -> Unpacked {
        // Flags, then the magnitude's low, middle and high 32 bits, little-endian.
        let bits = u128::from_le_bytes(d.serialize());
        let flags = bits as u32;
        Unpacked { negative: flags >> 31 == 1, scale: (flags >> 16) & 0xFF, magnitude: bits >> 32 }
    }

    /// The magnitude and scale of money: a negative value (not zero) has its magnitude's high
    /// bits set, so that it takes the general path wherever only non-negative values are lined
    /// up.
    #[inline]
    fn money(self) -> (u128, u32) {
        let negative = u128::from(self.negative && self.magnitude != 0);
        (self.magnitude | (negative << 127), self.scale)
    }
}

/// `value > max`. Per-transaction caps and tier thresholds compare the spend's USD value with
/// a configured number several times per evaluation, and `Decimal`'s comparison rescales one
/// side through 96-bit arithmetic when the scales differ (they almost always do: a product of
/// amount and price against a round cap). Non-negative values with mantissas under 64 bits are
/// compared as integers at the larger scale; anything else goes through `Decimal`.
pub fn exceeds(value: Decimal, max: Decimal) -> bool {
    let ((v, vs), (m, ms)) = (Unpacked::of(value).money(), Unpacked::of(max).money());
    match ((v | m) >> 64, vs.abs_diff(ms)) {
        // Below 2^64 × 10^18 < 2^124 each.
        (0, apart @ 0..=18) if vs >= ms => v > m * u128::from(POW10[apart as usize]),
        (0, apart @ 0..=18) => v * u128::from(POW10[apart as usize]) > m,
        _ => value > max,
    }
}

/// Whether `parts` add up to more than `max`, as saturating `Decimal` additions would say.
///
/// Every limit of every evaluation asks this. Adding `Decimal`s of different scales rescales
/// through 96-bit arithmetic with branches on each value; money here is almost always
/// non-negative with a mantissa under 64 bits, so those values are lined up as integers at the
/// largest scale among them, without branches. Anything else (or a sum where `Decimal` itself
/// would have to round or saturate) takes the `Decimal` path.
#[inline]
pub fn sum_exceeds(parts: [Decimal; 3], max: Decimal) -> bool {
    lined_up_sum_exceeds(parts, max)
        .unwrap_or_else(|| parts.iter().fold(Decimal::ZERO, |sum, p| sum.saturating_add(*p)) > max)
}

/// [`sum_exceeds`] for non-negative values with mantissas under 64 bits and scales at most 18
/// apart, in `u128` at their largest scale; `None` for anything else, and when the sum does not
/// fit a `Decimal`'s 96-bit mantissa at that scale (where `Decimal` addition stops being exact).
#[inline]
fn lined_up_sum_exceeds(parts: [Decimal; 3], max: Decimal) -> Option<bool> {
    const MANTISSA_MAX: u128 = (1 << 96) - 1;
    let values = [parts[0], parts[1], parts[2], max].map(|d| Unpacked::of(d).money());
    let mantissas = values.map(|(m, _)| m);
    let general = mantissas.iter().fold(0, |any, m| any | (m >> 64));
    let scales = values.map(|(_, s)| s);
    let (lowest, scale) = scales.iter().fold((u32::MAX, 0), |(lo, hi), s| (lo.min(*s), hi.max(*s)));
    if general != 0 || scale - lowest >= 19 {
        return None;
    }
    // Below 2^64 × 10^18 < 2^124 each, so three add up without overflow.
    let lined_up = |i: usize| mantissas[i] * u128::from(POW10[(scale - scales[i]) as usize]);
    let sum = lined_up(0) + lined_up(1) + lined_up(2);
    (sum <= MANTISSA_MAX).then(|| sum > lined_up(3))
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

    /// Mostly the sizes money has, sometimes any.
    fn mantissa() -> impl proptest::strategy::Strategy<Value = i64> {
        proptest::prop_oneof![0i64..100_000_000, proptest::num::i64::ANY]
    }

    proptest::proptest! {
        /// The text is what `Decimal`'s own formatting gives after normalizing (and, for USD,
        /// rescaling to two decimals), for any sign, scale and size.
        #[test]
        fn decimal_text_matches_decimal_formatting(
            low in proptest::num::u32::ANY,
            mid in proptest::num::u32::ANY,
            high in proptest::prop_oneof![proptest::strategy::Just(0u32), proptest::num::u32::ANY],
            negative in proptest::bool::ANY,
            scale in 0u32..=28,
        ) {
            let value = Decimal::from_parts(low, mid, high, negative, scale);
            let normalized = value.normalize();
            let usd = if normalized.scale() < 2 {
                let mut v = normalized;
                v.rescale(2);
                v.to_string()
            } else {
                normalized.to_string()
            };
            proptest::prop_assert_eq!(fmt_units(value), normalized.to_string());
            proptest::prop_assert_eq!(fmt_usd(value), usd);
        }

        /// The integer path agrees with adding `Decimal`s, across scales, signs and sizes
        /// (including sums that need the fallback).
        #[test]
        fn sum_exceeds_agrees_with_decimal_arithmetic(
            parts in proptest::array::uniform3((mantissa(), 0u32..=28, proptest::bool::weighted(0.1))),
            max in (mantissa(), 0u32..=28, proptest::bool::weighted(0.1)),
        ) {
            let d = |(m, scale, huge): (i64, u32, bool)| {
                let d = Decimal::new(m, scale);
                if huge { d.saturating_mul(Decimal::from(i64::MAX)).saturating_mul(Decimal::from(1000)) } else { d }
            };
            let parts = parts.map(d);
            let max = d(max);
            let direct = parts.iter().fold(Decimal::ZERO, |sum, p| sum.saturating_add(*p)) > max;
            proptest::prop_assert_eq!(sum_exceeds(parts, max), direct);
        }

        /// The integer path agrees with `Decimal`'s comparison, across scales, signs and sizes.
        #[test]
        fn exceeds_agrees_with_decimal_comparison(
            value in (mantissa(), 0u32..=28, proptest::bool::weighted(0.1)),
            max in (mantissa(), 0u32..=28, proptest::bool::weighted(0.1)),
            same in proptest::bool::weighted(0.2),
        ) {
            let d = |(m, scale, huge): (i64, u32, bool)| {
                let d = Decimal::new(m, scale);
                if huge { d.saturating_mul(Decimal::from(i64::MAX)).saturating_mul(Decimal::from(1000)) } else { d }
            };
            let value = d(value);
            // Equal values written at different scales are where a wrong line-up shows.
            let max = if same { let mut m = value; m.rescale(value.scale().saturating_add(3).min(28)); m } else { d(max) };
            proptest::prop_assert_eq!(exceeds(value, max), value > max);
            proptest::prop_assert_eq!(exceeds(max, value), max > value);
        }
    }

    #[test]
    fn a_sum_equal_to_the_limit_does_not_exceed_it_whatever_the_scales() {
        let d = |s: &str| parse_decimal(s).unwrap();
        assert!(!sum_exceeds([d("1.5"), d("0.25"), Decimal::ZERO], d("1.75000")));
        assert!(sum_exceeds([d("1.5"), d("0.25"), d("0.0000001")], d("1.75000")));
        assert!(sum_exceeds([d("1.5"), d("0.25"), Decimal::ZERO], d("1.7499")));
    }

    #[test]
    fn sums_beyond_a_decimal_fall_back() {
        let big = Decimal::MAX;
        assert!(lined_up_sum_exceeds([big, Decimal::ONE, Decimal::ZERO], big).is_none());
        // 2^64 - 1 lined up at 18 places is past 96 bits.
        assert!(lined_up_sum_exceeds([Decimal::from(u64::MAX), Decimal::new(1, 18), Decimal::ZERO], big).is_none());
        assert!(lined_up_sum_exceeds([Decimal::ONE, Decimal::NEGATIVE_ONE, Decimal::ZERO], big).is_none());
        assert!(sum_exceeds([big, Decimal::ONE, Decimal::ZERO], Decimal::ONE));
        assert!(!sum_exceeds([big, Decimal::ONE, Decimal::ZERO], big), "saturates at the largest decimal");
        let tiny = Decimal::new(1, 28);
        assert!(sum_exceeds([Decimal::from(5), tiny, Decimal::ZERO], Decimal::from(5)));
    }

    #[test]
    fn counts_places() {
        assert_eq!(decimal_places(parse_decimal("1.2300").unwrap()), 2);
        assert_eq!(decimal_places(parse_decimal("7").unwrap()), 0);
    }
}
