//! [`PriceBook`]: the latest reading of every live price feed, refreshed in the background so
//! that no decision waits on a price RPC, and judged by the core at each decision's instant.
//!
//! Each feed is read once per refresh however many assets use it. A feed that has never been
//! read (a process without the background loop, e.g. the CLI) is read on first need. When an
//! asset's price becomes unusable, `price_stale` is recorded once, until it is usable again.

use crate::chains::Chains;
use crate::clock::Clock;
use crate::error::ServiceResult;
use chrono::{DateTime, TimeDelta, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use spendguard_core::model::{Asset, Model};
use spendguard_core::price::{quote, PriceFeed, PriceProblem, PriceReading, Prices, Quote};
use spendguard_core::EventKind;
use spendguard_store::OutboxStore;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

/// One feed, with the assets priced by it.
struct Feed {
    spec: PriceFeed,
    refresh: TimeDelta,
    assets: Vec<String>,
}

/// An asset's price as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PriceState {
    /// `chain:SYMBOL`.
    pub asset: String,
    /// `static`, `chainlink:<feed>` or `pyth:<account>`.
    pub source: String,
    /// The latest price read (usable or not); `None` before the first successful read.
    pub price: Option<Decimal>,
    /// When that price was published.
    pub as_of: Option<DateTime<Utc>>,
    /// Seconds since then.
    pub age_seconds: Option<i64>,
    /// True when decisions may use it now.
    pub usable: bool,
    /// Why not, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// The latest price readings and the feeds behind them.
pub struct PriceBook {
    model: Arc<Model>,
    feeds: Vec<Feed>,
    readings: RwLock<Prices>,
    /// When each feed (by index) was last read.
    last_read: Mutex<HashMap<usize, DateTime<Utc>>>,
    /// Assets whose `price_stale` was recorded and that have not been usable since.
    alerted: Mutex<HashSet<String>>,
    chains: Chains,
    outbox: Arc<dyn OutboxStore>,
    clock: Arc<dyn Clock>,
}

impl PriceBook {
    pub(crate) fn new(model: Arc<Model>, chains: Chains, outbox: Arc<dyn OutboxStore>, clock: Arc<dyn Clock>) -> Self {
        let mut feeds: Vec<Feed> = vec![];
        for asset in &model.assets {
            let Some(spec) = asset.price.feed() else { continue };
            match feeds.iter_mut().find(|f| f.spec == *spec) {
                Some(f) => {
                    f.assets.push(asset.key());
                    f.refresh = f.refresh.min(asset.price.refresh);
                }
                None => {
                    feeds.push(Feed { spec: spec.clone(), refresh: asset.price.refresh, assets: vec![asset.key()] })
                }
            }
        }
        PriceBook {
            model,
            feeds,
            readings: RwLock::default(),
            last_read: Mutex::default(),
            alerted: Mutex::default(),
            chains,
            outbox,
            clock,
        }
    }

    /// True when some asset has a live feed (and the background refresh has work).
    pub fn has_feeds(&self) -> bool {
        !self.feeds.is_empty()
    }

    /// How often the background refresh looks for feeds due: half the shortest refresh, so
    /// that a feed is read at most one and a half refreshes apart.
    pub fn tick(&self) -> std::time::Duration {
        let shortest = self.feeds.iter().map(|f| f.refresh).min().unwrap_or(TimeDelta::seconds(10));
        (shortest / 2).to_std().unwrap_or(std::time::Duration::from_secs(1)).max(std::time::Duration::from_millis(100))
    }

    /// Reads the feeds never read yet (a process without the background refresh, such as the
    /// CLI's `status` or `report`), recording no event.
    pub(crate) async fn read_unread(&self) {
        let unread: Vec<usize> = {
            let last = self.last_read.lock().unwrap_or_else(PoisonError::into_inner);
            (0..self.feeds.len()).filter(|i| !last.contains_key(i)).collect()
        };
        futures::future::join_all(unread.iter().map(|&i| self.read_feed(i))).await;
    }

    /// The reading a decision about `asset` needs (none for static prices), reading the feed now
    /// if it was never read.
    pub(crate) async fn for_asset(&self, asset: Option<&str>) -> Prices {
        let Some(asset) = asset else { return Prices::default() };
        let Some(index) = self.feeds.iter().position(|f| f.assets.iter().any(|a| a == asset)) else {
            return Prices::default();
        };
        let found = self.read_lock().get(asset).cloned();
        let reading = match found {
            Some(r) => r,
            None => {
                self.read_feed(index).await;
                match self.read_lock().get(asset).cloned() {
                    Some(r) => r,
                    None => return Prices::default(),
                }
            }
        };
        Prices::from_iter([(asset.to_string(), reading)])
    }

    /// Reads every feed whose refresh is due, one read per feed, and records `price_stale` for
    /// assets whose price just became unusable.
    pub async fn refresh(&self) -> ServiceResult<()> {
        let now = self.clock.now();
        let due: Vec<usize> = {
            let last = self.last_read.lock().unwrap_or_else(PoisonError::into_inner);
            (0..self.feeds.len()).filter(|i| last.get(i).is_none_or(|t| now - *t >= self.feeds[*i].refresh)).collect()
        };
        futures::future::join_all(due.iter().map(|&i| self.read_feed(i))).await;
        self.alert_unusable().await
    }

    /// Reads every feed now, due or not (an operator's or a test's "now"), then alerts as
    /// [`PriceBook::refresh`] does.
    pub async fn refresh_now(&self) -> ServiceResult<()> {
        futures::future::join_all((0..self.feeds.len()).map(|i| self.read_feed(i))).await;
        self.alert_unusable().await
    }

    async fn read_feed(&self, index: usize) {
        let feed = &self.feeds[index];
        let result = match self.chains.get(&feed.spec.chain) {
            Ok(client) => client.read_price(&feed.spec.kind).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = &result {
            tracing::warn!(feed = %feed.spec.name(), error = %e, "price feed read failed");
        }
        let read_at = self.clock.now();
        self.last_read.lock().unwrap_or_else(PoisonError::into_inner).insert(index, read_at);
        let mut readings = self.readings.write().unwrap_or_else(PoisonError::into_inner);
        for asset in &feed.assets {
            readings.insert(asset.clone(), PriceReading { read_at, result: result.clone() });
        }
    }

    async fn alert_unusable(&self) -> ServiceResult<()> {
        let now = self.clock.now();
        for asset in self.model.assets.iter().filter(|a| a.price.feed().is_some()) {
            let key = asset.key();
            let problem = self.quote(asset, now).err();
            let newly = {
                let mut alerted = self.alerted.lock().unwrap_or_else(PoisonError::into_inner);
                match &problem {
                    None => {
                        alerted.remove(&key);
                        false
                    }
                    Some(_) => alerted.insert(key.clone()),
                }
            };
            if let (true, Some(problem)) = (newly, problem) {
                let detail = format!("price of {key} unusable: {problem}; spends that need its USD value are denied");
                if let Err(e) = self.outbox.record_event(EventKind::PriceStale, None, &detail, now).await {
                    // Recorded on the next refresh instead.
                    self.alerted.lock().unwrap_or_else(PoisonError::into_inner).remove(&key);
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }

    /// The price `asset` may be valued at `now`, or why there is none.
    pub fn quote(&self, asset: &Asset, now: DateTime<Utc>) -> Result<Quote, PriceProblem> {
        let readings = self.read_lock();
        quote(&asset.price, readings.get(&asset.key()), now)
    }

    /// Every asset's price as `status` shows it.
    pub fn states(&self, now: DateTime<Utc>) -> Vec<PriceState> {
        let readings = self.read_lock();
        self.model
            .assets
            .iter()
            .map(|asset| {
                let key = asset.key();
                let judged = quote(&asset.price, readings.get(&key), now);
                let seen = readings.get(&key).and_then(|r| r.result.as_ref().ok());
                let as_of = seen.map(|o| o.published_at);
                PriceState {
                    source: asset.price.source.name(),
                    price: match &judged {
                        Ok(q) => Some(q.price),
                        Err(_) => seen.map(|o| o.price),
                    },
                    as_of,
                    age_seconds: as_of.map(|t| (now - t).num_seconds()),
                    usable: judged.is_ok(),
                    problem: judged.err().map(|p| p.to_string()),
                    asset: key,
                }
            })
            .collect()
    }

    /// `spendguard_price_age_seconds{asset}` and `spendguard_price_usable{asset}` for the live
    /// prices, in the text exposition format.
    pub fn render_metrics(&self) -> String {
        let now = self.clock.now();
        let live: Vec<PriceState> = self.states(now).into_iter().filter(|s| s.source != "static").collect();
        let mut out = String::new();
        out.push_str("# HELP spendguard_price_age_seconds Seconds since the latest price read of each live-priced asset was published.\n# TYPE spendguard_price_age_seconds gauge\n");
        for s in &live {
            if let Some(age) = s.age_seconds {
                let _ = writeln!(
                    out,
                    "spendguard_price_age_seconds{{asset=\"{}\"}} {age}",
                    crate::metrics::label(&s.asset)
                );
            }
        }
        out.push_str("# HELP spendguard_price_usable Whether decisions may use each live price now (1) or deny PRICE_UNAVAILABLE (0).\n# TYPE spendguard_price_usable gauge\n");
        for s in &live {
            let _ = writeln!(
                out,
                "spendguard_price_usable{{asset=\"{}\"}} {}",
                crate::metrics::label(&s.asset),
                u8::from(s.usable)
            );
        }
        out
    }

    fn read_lock(&self) -> std::sync::RwLockReadGuard<'_, Prices> {
        self.readings.read().unwrap_or_else(PoisonError::into_inner)
    }
}
