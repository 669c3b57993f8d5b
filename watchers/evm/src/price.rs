//! Chainlink price feeds: `latestRoundData` and `decimals` of an `AggregatorV3Interface`, and the
//! L2 sequencer-uptime feed of the same interface, read into a core [`Observation`].

use crate::client::EvmClient;
use alloy::primitives::{Address, Bytes, I256, U256};
use alloy::sol_types::SolCall;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use spendguard_chain::{ChainError, ChainResult};
use spendguard_core::price::{Observation, SequencerStatus};

alloy::sol! {
    /// The part of Chainlink's `AggregatorV3Interface` spendguard reads.
    interface AggregatorV3 {
        function decimals() external view returns (uint8);
        function latestRoundData() external view returns (
            uint80 roundId, int256 answer, uint256 startedAt, uint256 updatedAt, uint80 answeredInRound
        );
    }
}

/// One `latestRoundData` answer.
struct Round {
    round_id: u128,
    answer: I256,
    started_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    answered_in_round: u128,
}

impl EvmClient {
    /// Reads a Chainlink feed (and its sequencer feed): one `latestRoundData` per feed, and
    /// `decimals` once per feed for the life of the client.
    pub(crate) async fn read_chainlink(&self, feed: &str, sequencer: Option<&str>) -> ChainResult<Observation> {
        let address = self.address(feed)?;
        let decimals = self.feed_decimals(address).await?;
        let round = self.latest_round(address).await?;
        let price = scaled(round.answer, decimals).ok_or_else(|| {
            self.bad(format!(
                "feed {feed} answered {}, beyond what a decimal holds at {decimals} decimals",
                round.answer
            ))
        })?;
        let sequencer = match sequencer {
            Some(s) => {
                let status = self.latest_round(self.address(s)?).await?;
                Some(SequencerStatus { up: status.answer.is_zero(), since: status.started_at })
            }
            None => None,
        };
        Ok(Observation {
            price,
            confidence: None,
            published_at: round.updated_at,
            round_complete: round.answered_in_round >= round.round_id,
            sequencer,
        })
    }

    async fn feed_decimals(&self, feed: Address) -> ChainResult<u8> {
        if let Some(d) = self.feed_decimals.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&feed) {
            return Ok(*d);
        }
        let out = self.call(feed, AggregatorV3::decimalsCall {}.abi_encode()).await?;
        let decimals = AggregatorV3::decimalsCall::abi_decode_returns(&out)
            .map_err(|e| self.bad(format!("decimals() of feed {feed}: {e}")))?;
        self.feed_decimals.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(feed, decimals);
        Ok(decimals)
    }

    async fn latest_round(&self, feed: Address) -> ChainResult<Round> {
        let out = self.call(feed, AggregatorV3::latestRoundDataCall {}.abi_encode()).await?;
        let r = AggregatorV3::latestRoundDataCall::abi_decode_returns(&out)
            .map_err(|e| self.bad(format!("latestRoundData() of feed {feed}: {e}")))?;
        let time = |t: U256, what: &str| {
            i64::try_from(t)
                .ok()
                .and_then(|s| DateTime::from_timestamp(s, 0))
                .ok_or_else(|| self.bad(format!("feed {feed} answered {what} {t}, not a time")))
        };
        Ok(Round {
            round_id: r.roundId.to(),
            answer: r.answer,
            started_at: time(r.startedAt, "startedAt")?,
            updated_at: time(r.updatedAt, "updatedAt")?,
            answered_in_round: r.answeredInRound.to(),
        })
    }

    /// `eth_call` of `input` on `to` at the latest block.
    async fn call(&self, to: Address, input: Vec<u8>) -> ChainResult<Bytes> {
        let input = Bytes::from(input);
        self.rpc(|p| {
            let req = alloy::rpc::types::TransactionRequest::default().to(to).input(input.clone().into());
            async move { alloy::providers::Provider::call(&p, req).await }
        })
        .await
    }

    fn bad(&self, message: String) -> ChainError {
        ChainError::BadResponse { chain: self.settings.id.clone(), message }
    }
}

/// `answer / 10^decimals` exactly, or `None` beyond a decimal's 28 digits.
fn scaled(answer: I256, decimals: u8) -> Option<Decimal> {
    let mantissa = i128::try_from(answer).ok()?;
    Decimal::try_from_i128_with_scale(mantissa, u32::from(decimals)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_scale_exactly_or_not_at_all() {
        assert_eq!(scaled(I256::try_from(300_012_345_678i64).unwrap(), 8), Some("3000.12345678".parse().unwrap()));
        assert_eq!(scaled(I256::try_from(-5i64).unwrap(), 0), Some(Decimal::from(-5)));
        assert_eq!(scaled(I256::MAX, 8), None);
        assert_eq!(scaled(I256::ONE, 29), None);
    }
}
