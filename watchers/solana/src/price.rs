//! Pyth pull-oracle prices: a `PriceUpdateV2` account of the Pyth Solana receiver program, read
//! and decoded (Anchor/Borsh layout) into a core [`Observation`].

use crate::client::SolanaClient;
use chrono::DateTime;
use rust_decimal::Decimal;
use solana_pubkey::Pubkey;
use spendguard_chain::ChainResult;
use spendguard_core::price::Observation;
use std::str::FromStr;

/// The Pyth Solana receiver program, which owns every `PriceUpdateV2` account.
pub const PYTH_RECEIVER: &str = "rec5EKMGg6MxZYaMdyBfgwp4d5rB9T1VQH5pJv5LtFJ";
/// Anchor's account discriminator: the first 8 bytes of sha256("account:PriceUpdateV2").
pub const PRICE_UPDATE_V2_DISCRIMINATOR: [u8; 8] = [34, 241, 35, 99, 157, 126, 244, 205];

/// The fields of a `PriceUpdateV2` account spendguard uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PriceUpdate {
    /// `Full`: the Wormhole guardians' signatures were all verified.
    pub fully_verified: bool,
    /// Price mantissa.
    pub price: i64,
    /// Confidence mantissa.
    pub conf: u64,
    /// Power of ten of both.
    pub exponent: i32,
    /// Unix seconds.
    pub publish_time: i64,
}

impl PriceUpdate {
    /// Encodes the account data (for tests that write the account through surfpool).
    pub fn encode(&self, feed_id: [u8; 32]) -> Vec<u8> {
        let mut data = PRICE_UPDATE_V2_DISCRIMINATOR.to_vec();
        data.extend([0u8; 32]); // write authority
        if self.fully_verified {
            data.push(1);
        } else {
            data.extend([0, 1]); // Partial { num_signatures: 1 }
        }
        data.extend(feed_id);
        data.extend(self.price.to_le_bytes());
        data.extend(self.conf.to_le_bytes());
        data.extend(self.exponent.to_le_bytes());
        data.extend(self.publish_time.to_le_bytes());
        data.extend(self.publish_time.to_le_bytes()); // prev_publish_time
        data.extend(self.price.to_le_bytes()); // ema_price
        data.extend(self.conf.to_le_bytes()); // ema_conf
        data.extend(0u64.to_le_bytes()); // posted_slot
        data
    }

    /// Decodes account data, or says what is wrong with it.
    pub fn decode(data: &[u8]) -> Result<PriceUpdate, String> {
        let rest = data
            .strip_prefix(&PRICE_UPDATE_V2_DISCRIMINATOR)
            .ok_or("not a PriceUpdateV2 account (discriminator differs)")?;
        let rest = rest.get(32..).ok_or("too short")?;
        let (fully_verified, rest) = match rest.first() {
            Some(0) => (false, rest.get(2..).ok_or("too short")?),
            Some(1) => (true, &rest[1..]),
            _ => return Err("unknown verification level".into()),
        };
        let msg = rest.get(32..32 + 8 + 8 + 4 + 8).ok_or("too short")?;
        let int = |range: std::ops::Range<usize>| -> [u8; 8] { msg[range].try_into().unwrap_or_default() };
        Ok(PriceUpdate {
            fully_verified,
            price: i64::from_le_bytes(int(0..8)),
            conf: u64::from_le_bytes(int(8..16)),
            exponent: i32::from_le_bytes(msg[16..20].try_into().unwrap_or_default()),
            publish_time: i64::from_le_bytes(int(20..28)),
        })
    }

    /// The price and confidence in USD, exactly.
    pub fn observation(&self) -> Result<Observation, String> {
        let scale = |mantissa: i128| -> Result<Decimal, String> {
            let value = if self.exponent <= 0 {
                Decimal::try_from_i128_with_scale(mantissa, self.exponent.unsigned_abs()).ok()
            } else {
                let factor = 10i64.checked_pow(self.exponent.unsigned_abs()).map(Decimal::from);
                Decimal::try_from_i128_with_scale(mantissa, 0).ok().zip(factor).and_then(|(m, f)| m.checked_mul(f))
            };
            value.ok_or_else(|| format!("{mantissa} × 10^{} is beyond what a decimal holds", self.exponent))
        };
        Ok(Observation {
            price: scale(i128::from(self.price))?,
            confidence: Some(scale(i128::from(self.conf))?),
            published_at: DateTime::from_timestamp(self.publish_time, 0)
                .ok_or_else(|| format!("publish_time {} is not a time", self.publish_time))?,
            round_complete: true,
            sequencer: None,
        })
    }
}

impl SolanaClient {
    /// Reads a `PriceUpdateV2` account: it must be owned by the Pyth receiver and fully verified.
    pub(crate) async fn read_pyth(&self, account: &str) -> ChainResult<Observation> {
        let key = self.pubkey(account)?;
        let commitment = self.commitment;
        let found = self
            .rpc(|c| async move { c.get_account_with_commitment(&key, commitment).await })
            .await?
            .value
            .ok_or_else(|| self.bad(format!("Pyth account {account} does not exist")))?;
        let receiver = Pubkey::from_str(PYTH_RECEIVER).map_err(|e| self.bad(e.to_string()))?;
        if found.owner != receiver {
            return Err(self
                .bad(format!("account {account} is owned by {}, not the Pyth receiver {PYTH_RECEIVER}", found.owner)));
        }
        let update = PriceUpdate::decode(&found.data).map_err(|e| self.bad(format!("Pyth account {account}: {e}")))?;
        if !update.fully_verified {
            return Err(self.bad(format!("Pyth account {account} is only partially verified")));
        }
        update.observation().map_err(|e| self.bad(format!("Pyth account {account}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_survives_encoding_and_scales_exactly() {
        let u = PriceUpdate {
            fully_verified: true,
            price: 15_012_345_678,
            conf: 7_500_000,
            exponent: -8,
            publish_time: 1_800_000_000,
        };
        assert_eq!(PriceUpdate::decode(&u.encode([7; 32])), Ok(u));
        let o = u.observation().unwrap();
        assert_eq!((o.price, o.confidence), ("150.12345678".parse().unwrap(), Some("0.075".parse().unwrap())));
        let partial = PriceUpdate { fully_verified: false, ..u };
        assert_eq!(PriceUpdate::decode(&partial.encode([7; 32])), Ok(partial));
        assert!(PriceUpdate::decode(&[0; 40]).unwrap_err().contains("discriminator"));
        assert!(PriceUpdate::decode(&PRICE_UPDATE_V2_DISCRIMINATOR).unwrap_err().contains("too short"));
    }
}
