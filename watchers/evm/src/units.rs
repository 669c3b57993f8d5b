//! Decimal asset units ↔ integer base units (wei, token units), exactly or not at all.

use alloy::primitives::U256;
use rust_decimal::Decimal;
use spendguard_chain::ChainError;

/// `amount` in base units; an error (never rounding) when it has more decimals than `decimals`
/// or is negative.
pub fn to_base_units(amount: Decimal, decimals: u32) -> Result<U256, ChainError> {
    let n = amount.normalize();
    if n.is_sign_negative() {
        return Err(ChainError::Amount(format!("{n} is negative")));
    }
    if n.scale() > decimals {
        return Err(ChainError::Amount(format!("{n} has {} decimals; the asset has {decimals}", n.scale())));
    }
    let mantissa = U256::from(n.mantissa().unsigned_abs());
    let factor = U256::from(10u8).checked_pow(U256::from(decimals - n.scale()));
    factor
        .and_then(|f| mantissa.checked_mul(f))
        .ok_or_else(|| ChainError::Amount(format!("{n} is too large for the chain")))
}

/// Base units as a decimal in asset units. Values beyond what a decimal holds exactly (about
/// 7.9e28 base units) lose their smallest digits, rounding down — never up.
pub fn from_base_units(value: U256, decimals: u32) -> Decimal {
    let mut v = value;
    let mut scale = decimals;
    let max = U256::from(u128::MAX >> 32); // 96-bit mantissa
    while v > max {
        v /= U256::from(10u8);
        if scale == 0 {
            return Decimal::MAX;
        }
        scale -= 1;
    }
    let mantissa: u128 = v.to::<u128>();
    Decimal::try_from_i128_with_scale(mantissa as i128, scale.min(28)).unwrap_or(Decimal::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn converts_exactly_or_refuses() {
        let d = |s| Decimal::from_str(s).unwrap();
        assert_eq!(to_base_units(d("1.5"), 18).unwrap(), U256::from(1_500_000_000_000_000_000u128));
        assert_eq!(to_base_units(d("0.000001"), 6).unwrap(), U256::from(1u8));
        assert_eq!(to_base_units(d("2.50000"), 2).unwrap(), U256::from(250u16), "trailing zeros are fine");
        assert!(to_base_units(d("0.0000001"), 6).is_err());
        assert!(to_base_units(d("-1"), 6).is_err());
        assert_eq!(from_base_units(U256::from(1_500_000_000_000_000_000u128), 18), d("1.5"));
        assert_eq!(from_base_units(U256::from(1u8), 6), d("0.000001"));
        // 10^30 base units at 18 decimals (10^12 tokens) does not fit exactly: digits are dropped.
        let huge = U256::from(10u8).pow(U256::from(30u8)) + U256::from(1u8);
        assert_eq!(from_base_units(huge, 18), d("1000000000000"));
    }
}
