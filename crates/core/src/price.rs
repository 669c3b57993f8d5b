//! USD prices: where each asset's price comes from, and whether a reading of a live feed may be
//! used at a given instant.
//!
//! The chain crates read feeds (Chainlink on EVM, Pyth on Solana) and convert what they read into
//! an [`Observation`]; the service keeps the latest [`PriceReading`] of every feed. Judging a
//! reading happens here, at the instant of the request, so that a cached reading can never
//! outlive its freshness: [`quote`] either gives the price a decision may use or says exactly
//! why there is none ([`PriceProblem`]). There is no fallback: no old number, no zero.

use crate::fast_map::FastMap;
use crate::money::{fmt_units, fmt_usd};
use crate::time::fmt_duration;
use chrono::{DateTime, TimeDelta, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// How an asset is priced in USD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetPrice {
    /// Where the price comes from.
    pub source: PriceSource,
    /// For stablecoins: the price the asset must hold, within a tolerance.
    pub peg: Option<Peg>,
    /// How often a live feed is read; a reading older than three refreshes is not used.
    pub refresh: TimeDelta,
}

impl AssetPrice {
    /// A fixed price from the config.
    pub fn fixed(usd: Decimal) -> AssetPrice {
        AssetPrice { source: PriceSource::Static(usd), peg: None, refresh: TimeDelta::seconds(10) }
    }

    /// The feed to read, for live sources.
    pub fn feed(&self) -> Option<&PriceFeed> {
        match &self.source {
            PriceSource::Static(_) => None,
            PriceSource::Live(feed) => Some(feed),
        }
    }
}

/// Where a price comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PriceSource {
    /// A number in the config (`price_usd`).
    Static(Decimal),
    /// An on-chain feed read in the background.
    Live(PriceFeed),
}

impl PriceSource {
    /// `static`, `chainlink:<feed>` or `pyth:<account>`, as shown in valuations.
    pub fn name(&self) -> String {
        match self {
            PriceSource::Static(_) => "static".into(),
            PriceSource::Live(feed) => feed.name(),
        }
    }
}

/// An on-chain price feed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PriceFeed {
    /// Chain the feed lives on (may differ from the asset's chain).
    pub chain: String,
    /// Which kind of feed, with its address.
    pub kind: FeedKind,
    /// Oldest publish time still accepted.
    pub max_age: TimeDelta,
}

impl PriceFeed {
    /// `chainlink:<feed>` or `pyth:<account>`.
    pub fn name(&self) -> String {
        match &self.kind {
            FeedKind::Chainlink { feed, .. } => format!("chainlink:{feed}"),
            FeedKind::Pyth { account, .. } => format!("pyth:{account}"),
        }
    }
}

/// The two feed interfaces spendguard reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FeedKind {
    /// A Chainlink `AggregatorV3Interface` contract on an EVM chain.
    Chainlink {
        /// Aggregator address, canonical (lower case).
        feed: String,
        /// L2 sequencer-uptime feed and the grace period after it comes back up.
        sequencer: Option<(String, TimeDelta)>,
    },
    /// A Pyth `PriceUpdateV2` account on Solana.
    Pyth {
        /// Account address (base58).
        account: String,
        /// Widest confidence interval accepted, as a fraction of the price (0.005 = 0.5 %).
        max_confidence: Option<Decimal>,
    },
}

/// A stablecoin's peg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peg {
    /// The USD price the asset is meant to hold.
    pub usd: Decimal,
    /// Largest accepted deviation from it, as a fraction (0.02 = 2 %).
    pub max_deviation: Decimal,
}

/// One read of a feed, converted to plain values at the chain edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// The price in USD (Chainlink: answer / 10^decimals; Pyth: price × 10^exponent).
    pub price: Decimal,
    /// Pyth's confidence interval, in USD.
    pub confidence: Option<Decimal>,
    /// When the feed says the price was published (`updatedAt`, `publish_time`).
    pub published_at: DateTime<Utc>,
    /// Chainlink: the answer belongs to the latest round (`answeredInRound >= roundId`).
    pub round_complete: bool,
    /// The L2 sequencer's state, when the feed has a sequencer-uptime feed.
    pub sequencer: Option<SequencerStatus>,
}

/// What a sequencer-uptime feed says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequencerStatus {
    /// Answer 0: the sequencer is up.
    pub up: bool,
    /// When it entered that state (`startedAt`).
    pub since: DateTime<Utc>,
}

/// The latest refresh of a feed: what was read, or why nothing could be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceReading {
    /// When the read finished.
    pub read_at: DateTime<Utc>,
    /// The observation, or the read's error in words.
    pub result: Result<Observation, String>,
}

/// Latest readings by asset key (`chain:SYMBOL`); only live-priced assets have one.
pub type Prices = FastMap<String, PriceReading>;

/// A usable price, as recorded with a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    /// USD per asset unit.
    pub price: Decimal,
    /// [`PriceSource::name`] (`static` needs no allocation: every evaluation makes a quote).
    pub source: Cow<'static, str>,
    /// When the price was published; `None` for a static price.
    pub as_of: Option<DateTime<Utc>>,
}

/// What a decision valued its amount at: the `valuation` object of tool results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Valuation {
    /// The amount's USD value.
    #[serde(serialize_with = "crate::money::serialize_usd")]
    pub usd: Decimal,
    /// USD per asset unit.
    #[serde(serialize_with = "crate::money::serialize_units")]
    pub price: Decimal,
    /// `static`, `chainlink:<feed>` or `pyth:<account>`.
    pub source: Cow<'static, str>,
    /// When the price was published; `null` for a static price.
    pub as_of: Option<DateTime<Utc>>,
}

/// Why an asset has no usable price.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceProblem {
    /// The feed has not been read since spendguard started.
    #[error("{feed} has not been read yet")]
    NotRead {
        /// Feed name.
        feed: String,
    },
    /// The latest read failed.
    #[error("{feed} is unreachable ({detail}, at {at})")]
    Unreachable {
        /// Feed name.
        feed: String,
        /// The read's error.
        detail: String,
        /// When the read failed.
        at: DateTime<Utc>,
    },
    /// Reads stopped: the latest one is older than three refresh periods.
    #[error("{feed} was last read at {read_at}, longer ago than three refreshes")]
    NotReadSince {
        /// Feed name.
        feed: String,
        /// The latest read.
        read_at: DateTime<Utc>,
    },
    /// The price is older than `max_age`.
    #[error("{feed} is stale since {stale_since}: published {published_at}, max_age {}", fmt_duration(*.max_age))]
    Stale {
        /// Feed name.
        feed: String,
        /// When the price was published.
        published_at: DateTime<Utc>,
        /// When it became too old.
        stale_since: DateTime<Utc>,
        /// The configured limit.
        max_age: TimeDelta,
    },
    /// A publish time ahead of the clock by more than a minute.
    #[error("{feed} claims a price published in the future ({published_at})")]
    FromFuture {
        /// Feed name.
        feed: String,
        /// The claimed publish time.
        published_at: DateTime<Utc>,
    },
    /// The feed answered zero.
    #[error("{feed} answered zero")]
    Zero {
        /// Feed name.
        feed: String,
    },
    /// The feed answered a negative price.
    #[error("{feed} answered a negative price ({})", fmt_units(*.price))]
    Negative {
        /// Feed name.
        feed: String,
        /// The answer.
        price: Decimal,
    },
    /// Chainlink: the answer was carried over from an earlier round.
    #[error("{feed} answered from an earlier round than its latest")]
    RoundIncomplete {
        /// Feed name.
        feed: String,
    },
    /// Pyth: the confidence interval is wider than `max_confidence`.
    #[error("{feed}: confidence ±{} on {} is {} of the price, wider than max_confidence {}",
        fmt_units(*.confidence), fmt_units(*.price), percent(*.share), percent(*.max))]
    ConfidenceTooWide {
        /// Feed name.
        feed: String,
        /// The price.
        price: Decimal,
        /// The interval.
        confidence: Decimal,
        /// `confidence / price`.
        share: Decimal,
        /// The configured limit.
        max: Decimal,
    },
    /// The L2 sequencer is down.
    #[error("{feed}: the L2 sequencer is down since {since}")]
    SequencerDown {
        /// Feed name.
        feed: String,
        /// Since when.
        since: DateTime<Utc>,
    },
    /// The L2 sequencer came back less than the grace period ago.
    #[error("{feed}: the L2 sequencer is up only since {since}, within its grace period of {}", fmt_duration(*.grace))]
    SequencerGrace {
        /// Feed name.
        feed: String,
        /// Since when it is up.
        since: DateTime<Utc>,
        /// The configured grace.
        grace: TimeDelta,
    },
    /// A stablecoin off its peg.
    #[error("{feed}: price {} USD is {} away from its peg of {} USD, more than max_peg_deviation {}",
        fmt_usd(*.price), percent(*.deviation), fmt_usd(*.peg), percent(*.max))]
    Depegged {
        /// Feed name.
        feed: String,
        /// The price.
        price: Decimal,
        /// The peg.
        peg: Decimal,
        /// `|price - peg| / peg`.
        deviation: Decimal,
        /// The configured limit.
        max: Decimal,
    },
}

/// A fraction as a percentage with up to two decimals: `0.0123` → `1.23%`.
pub fn percent(fraction: Decimal) -> String {
    format!("{}%", fmt_units((fraction * Decimal::ONE_HUNDRED).round_dp(2)))
}

/// The price `asset` may be valued at `now`, judged from the feed's latest reading.
pub fn quote(price: &AssetPrice, reading: Option<&PriceReading>, now: DateTime<Utc>) -> Result<Quote, PriceProblem> {
    let feed = match &price.source {
        PriceSource::Static(usd) => return Ok(Quote { price: *usd, source: Cow::Borrowed("static"), as_of: None }),
        PriceSource::Live(feed) => feed,
    };
    let name = feed.name();
    let Some(reading) = reading else { return Err(PriceProblem::NotRead { feed: name }) };
    let seen = match &reading.result {
        Ok(seen) => seen,
        Err(detail) => {
            return Err(PriceProblem::Unreachable { feed: name, detail: detail.clone(), at: reading.read_at })
        }
    };
    if now - reading.read_at > price.refresh * 3 {
        return Err(PriceProblem::NotReadSince { feed: name, read_at: reading.read_at });
    }
    if seen.price.is_zero() {
        return Err(PriceProblem::Zero { feed: name });
    }
    if seen.price.is_sign_negative() {
        return Err(PriceProblem::Negative { feed: name, price: seen.price });
    }
    if seen.published_at - now > TimeDelta::minutes(1) {
        return Err(PriceProblem::FromFuture { feed: name, published_at: seen.published_at });
    }
    if now - seen.published_at > feed.max_age {
        let stale_since = seen.published_at + feed.max_age;
        return Err(PriceProblem::Stale {
            feed: name,
            published_at: seen.published_at,
            stale_since,
            max_age: feed.max_age,
        });
    }
    if !seen.round_complete {
        return Err(PriceProblem::RoundIncomplete { feed: name });
    }
    match &feed.kind {
        FeedKind::Chainlink { sequencer: Some((_, grace)), .. } => match seen.sequencer {
            Some(SequencerStatus { up: false, since }) => {
                return Err(PriceProblem::SequencerDown { feed: name, since })
            }
            Some(SequencerStatus { up: true, since }) if now - since < *grace => {
                return Err(PriceProblem::SequencerGrace { feed: name, since, grace: *grace })
            }
            Some(_) => {}
            None => {
                return Err(PriceProblem::Unreachable {
                    feed: name,
                    detail: "the sequencer-uptime feed was not read".into(),
                    at: reading.read_at,
                })
            }
        },
        FeedKind::Pyth { max_confidence: Some(max), .. } => {
            let confidence = seen.confidence.unwrap_or_default();
            let share = confidence / seen.price;
            if share > *max {
                return Err(PriceProblem::ConfidenceTooWide {
                    feed: name,
                    price: seen.price,
                    confidence,
                    share,
                    max: *max,
                });
            }
        }
        _ => {}
    }
    if let Some(peg) = &price.peg {
        let deviation = (seen.price - peg.usd).abs() / peg.usd;
        if deviation > peg.max_deviation {
            return Err(PriceProblem::Depegged {
                feed: name,
                price: seen.price,
                peg: peg.usd,
                deviation,
                max: peg.max_deviation,
            });
        }
    }
    Ok(Quote { price: seen.price, source: Cow::Owned(name), as_of: Some(seen.published_at) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    fn chainlink(sequencer: Option<(String, TimeDelta)>) -> AssetPrice {
        AssetPrice {
            source: PriceSource::Live(PriceFeed {
                chain: "eth".into(),
                kind: FeedKind::Chainlink { feed: "0xFeed".into(), sequencer },
                max_age: TimeDelta::hours(1),
            }),
            peg: None,
            refresh: TimeDelta::seconds(10),
        }
    }

    fn pyth(max_confidence: &str) -> AssetPrice {
        AssetPrice {
            source: PriceSource::Live(PriceFeed {
                chain: "sol".into(),
                kind: FeedKind::Pyth { account: "Acc".into(), max_confidence: Some(max_confidence.parse().unwrap()) },
                max_age: TimeDelta::seconds(60),
            }),
            peg: None,
            refresh: TimeDelta::seconds(10),
        }
    }

    fn reading(price: &str, published: i64, read: i64) -> PriceReading {
        PriceReading {
            read_at: at(read),
            result: Ok(Observation {
                price: price.parse().unwrap(),
                confidence: None,
                published_at: at(published),
                round_complete: true,
                sequencer: None,
            }),
        }
    }

    #[test]
    fn a_fresh_price_is_quoted_with_its_source_and_time() {
        let q = quote(&chainlink(None), Some(&reading("3000", 0, 5)), at(10)).unwrap();
        assert_eq!((q.price, &*q.source, q.as_of), ("3000".parse().unwrap(), "chainlink:0xFeed", Some(at(0))));
        let s = quote(&AssetPrice::fixed(Decimal::ONE), None, at(0)).unwrap();
        assert_eq!((&*s.source, s.as_of), ("static", None));
    }

    #[test]
    fn every_unusable_reading_names_why() {
        let p = chainlink(None);
        let problem = |r: Option<&PriceReading>, now| quote(&p, r, now).unwrap_err();
        assert!(matches!(problem(None, at(0)), PriceProblem::NotRead { .. }));
        let stale = problem(Some(&reading("3000", 0, 3600)), at(3601));
        assert!(matches!(stale, PriceProblem::Stale { stale_since, .. } if stale_since == at(3600)), "{stale}");
        assert!(stale.to_string().contains("stale since"), "{stale}");
        assert!(matches!(problem(Some(&reading("0", 0, 0)), at(1)), PriceProblem::Zero { .. }));
        assert!(matches!(problem(Some(&reading("-5", 0, 0)), at(1)), PriceProblem::Negative { .. }));
        assert!(matches!(problem(Some(&reading("3000", 120, 0)), at(0)), PriceProblem::FromFuture { .. }));
        assert!(matches!(problem(Some(&reading("3000", 0, 0)), at(31)), PriceProblem::NotReadSince { .. }));
        let failed = PriceReading { read_at: at(0), result: Err("connection refused".into()) };
        let down = problem(Some(&failed), at(1));
        assert!(down.to_string().contains("unreachable (connection refused"), "{down}");
        let mut behind = reading("3000", 0, 0);
        behind.result.as_mut().unwrap().round_complete = false;
        assert!(matches!(problem(Some(&behind), at(1)), PriceProblem::RoundIncomplete { .. }));
    }

    #[test]
    fn the_sequencer_must_be_up_for_longer_than_the_grace() {
        let p = chainlink(Some(("0xSeq".into(), TimeDelta::hours(1))));
        let with = |up, since| {
            let mut r = reading("3000", 7200, 7200);
            r.result.as_mut().unwrap().sequencer = Some(SequencerStatus { up, since: at(since) });
            quote(&p, Some(&r), at(7201))
        };
        assert!(matches!(with(false, 0), Err(PriceProblem::SequencerDown { .. })));
        assert!(matches!(with(true, 7000), Err(PriceProblem::SequencerGrace { .. })));
        assert!(with(true, 0).is_ok());
        assert!(matches!(
            quote(&p, Some(&reading("3000", 7200, 7200)), at(7201)),
            Err(PriceProblem::Unreachable { .. })
        ));
    }

    #[test]
    fn confidence_and_peg_bound_the_price() {
        let p = pyth("0.005");
        let with_conf = |conf: &str| {
            let mut r = reading("150", 0, 0);
            r.result.as_mut().unwrap().confidence = Some(conf.parse().unwrap());
            quote(&p, Some(&r), at(1))
        };
        assert!(with_conf("0.75").is_ok());
        let wide = with_conf("0.76").unwrap_err();
        assert!(wide.to_string().contains("0.51% of the price, wider than max_confidence 0.5%"), "{wide}");
        let mut usdc = chainlink(None);
        usdc.peg = Some(Peg { usd: Decimal::ONE, max_deviation: "0.02".parse().unwrap() });
        assert!(quote(&usdc, Some(&reading("0.98", 0, 0)), at(1)).is_ok());
        let off = quote(&usdc, Some(&reading("0.97", 0, 0)), at(1)).unwrap_err();
        assert!(off.to_string().contains("3% away from its peg of 1.00 USD"), "{off}");
    }
}
