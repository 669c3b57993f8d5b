//! [`Guard`]: the five agent operations and the background work behind them.

use chrono::{DateTime, TimeDelta, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use spendguard_chain::{ChainClient, ChainError, SignedTx, Transfer};
use spendguard_config::Config;
use spendguard_core::engine::requested_asset_key;
use spendguard_core::model::{Asset, Wallet};
use spendguard_core::money::parse_decimal;
use spendguard_core::{Balances, Decision, Evaluation, Headroom, Reason, ReasonCode, SpendRequest, SpendStatus, Tier};
use spendguard_store::{
    Account, DecisionRecord, Ledger, ReserveOutcome, ReserveRequest, Resigning, SignWith, SignedRecord, Signing,
    StoreError,
};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// The source of "now"; tests drive their own.
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// What can go wrong serving an agent (denials are not errors: they are outcomes).
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// The ledger failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A chain could not be reached or refused a read.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// No such decision (or not this agent's: the two are not told apart).
    #[error("no decision {0:?} of this agent")]
    UnknownDecision(String),
    /// A wallet the agent may not use, or that does not exist.
    #[error("{0}")]
    Forbidden(String),
    /// A malformed argument.
    #[error("{0}")]
    Invalid(String),
    /// Something that should not happen (a task panicked).
    #[error("internal error: {0}")]
    Internal(String),
}

/// Result alias of this crate.
pub type GuardResult<T> = Result<T, GuardError>;

/// The arguments of `evaluate` (and of `spend`, with an idempotency key).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EvaluateArgs {
    /// Wallet id.
    pub wallet: String,
    /// Recipient address.
    pub to: String,
    /// Decimal string in asset units.
    pub amount: String,
    /// `SYMBOL` or `chain:SYMBOL`.
    pub asset: Option<String>,
    /// Operation name.
    pub operation: Option<String>,
    /// Free text recorded with the decision.
    pub memo: Option<String>,
}

/// The arguments of `spend`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpendArgs {
    /// What to spend.
    pub request: EvaluateArgs,
    /// Stripe-style idempotency key.
    pub idempotency_key: Option<String>,
}

/// The result of `spend` as the agent sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpendOutcome {
    /// Decision id (absent when the request was too malformed to record).
    pub decision_id: Option<String>,
    /// `executed`, `queued`, `pending_approval`, `denied`, plus `processing` (allowed, not yet
    /// sent: the chain was unreachable; spendguard keeps trying) and `failed` (the chain refused
    /// it; the reservation is released).
    pub status: String,
    /// The verdict.
    pub decision: Decision,
    /// Tier.
    pub tier: Tier,
    /// Every reason.
    pub reasons: Vec<Reason>,
    /// Transaction hash once signed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tx_hash: Option<String>,
    /// When a DELAY spend executes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execute_after: Option<DateTime<Utc>>,
    /// When an APPROVAL request expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_expires_at: Option<DateTime<Utc>>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// True when this answers a repeated idempotency key.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
}

impl SpendOutcome {
    /// A refusal that is not (or not newly) a recorded decision.
    fn refused(decision_id: Option<String>, tier: Tier, reasons: Vec<Reason>) -> SpendOutcome {
        SpendOutcome {
            decision_id,
            status: "denied".into(),
            decision: Decision::Deny,
            tier,
            reasons,
            tx_hash: None,
            execute_after: None,
            approval_expires_at: None,
            failure: None,
            replayed: false,
        }
    }
}

/// The result of `spend_status` and `cancel_spend`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusReport {
    /// Decision id.
    pub decision_id: String,
    /// Agent-facing status (see [`SpendOutcome::status`], plus `released`, `confirmed`).
    pub status: String,
    /// The ledger's lifecycle status.
    pub lifecycle: SpendStatus,
    /// Verdict.
    pub decision: Decision,
    /// Tier.
    pub tier: Tier,
    /// Reasons given at decision time.
    pub reasons: Vec<Reason>,
    /// Wallet, asset, amount and recipient.
    pub wallet: String,
    /// Asset `chain:SYMBOL`.
    pub asset: Option<String>,
    /// Amount in asset units.
    pub amount: String,
    /// Recipient.
    pub to: String,
    /// Transaction hash.
    pub tx_hash: Option<String>,
    /// Blocks on top of (and including) the one it landed in.
    pub confirmations: Option<u64>,
    /// Fee paid in native units.
    pub fee_paid: Option<String>,
    /// Reconciliation class once the auditor has matched it (null until then).
    pub reconciliation: Option<String>,
    /// When a DELAY spend executes.
    pub execute_after: Option<DateTime<Utc>>,
    /// When an APPROVAL request expires.
    pub approval_expires_at: Option<DateTime<Utc>>,
    /// Why it failed or was released.
    pub failure: Option<String>,
}

/// One asset balance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AssetBalance {
    /// `chain:SYMBOL`.
    pub asset: String,
    /// Amount in asset units.
    pub amount: String,
}

/// Balances and limit headroom of one wallet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WalletBalances {
    /// Wallet id.
    pub wallet: String,
    /// Chain id.
    pub chain: String,
    /// Address.
    pub address: String,
    /// Live on-chain balances of every configured asset.
    pub balances: Vec<AssetBalance>,
    /// Set when the chain could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balance_error: Option<String>,
    /// Every limit that applies to spends from this wallet.
    pub limits: Vec<Headroom>,
}

/// The result of `balance`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BalanceReport {
    /// One entry per wallet asked about.
    pub wallets: Vec<WalletBalances>,
}

/// The guard: ledger, chains and clock.
pub struct Guard {
    pub(crate) config: Arc<Config>,
    ledger: Arc<Ledger>,
    chains: HashMap<String, Arc<dyn ChainClient>>,
    pub(crate) clock: Arc<dyn Clock>,
    alerts: Vec<crate::alerts::AlertChannel>,
    http: reqwest::Client,
    pub(crate) watchers: std::sync::Mutex<HashMap<String, crate::watch::WatcherState>>,
    pub(crate) low_wallets: std::sync::Mutex<std::collections::HashSet<String>>,
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
    /// Spends being decided or executed for an agent right now.
    busy: Arc<std::sync::atomic::AtomicUsize>,
}

/// Counts one agent request as being worked on until dropped (also when its future is
/// cancelled).
struct Busy(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// How long a reserved-but-unsigned decision waits before background work takes it over
/// (normally the request that reserved it signs it within milliseconds).
const ORPHAN_AFTER: TimeDelta = TimeDelta::seconds(5);
/// Most blocks one background pass indexes per chain (a backfill continues on the next pass).
const WATCH_BLOCKS_PER_PASS: u64 = 500;
/// How often a broadcast transaction without a receipt is sent again.
const REBROADCAST_AFTER: TimeDelta = TimeDelta::seconds(15);

impl Guard {
    /// A guard over `ledger` for `config`, with one client per configured chain it can reach.
    pub fn new(
        config: Arc<Config>,
        ledger: Arc<Ledger>,
        chains: Vec<Arc<dyn ChainClient>>,
        clock: Arc<dyn Clock>,
    ) -> Guard {
        let chains = chains.into_iter().map(|c| (c.chain_id().to_string(), c)).collect();
        let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap_or_default();
        Guard {
            config,
            ledger,
            chains,
            clock,
            alerts: vec![],
            http,
            watchers: Default::default(),
            low_wallets: Default::default(),
            metrics: Default::default(),
            busy: Default::default(),
        }
    }

    /// Delivers alerts to these channels (their URLs resolved from the environment by the caller).
    pub fn with_alerts(mut self, alerts: Vec<crate::alerts::AlertChannel>) -> Guard {
        self.alerts = alerts;
        self
    }

    /// Posts every due, undelivered event to each channel subscribed to its kind, recording
    /// each attempt; a failure is retried later with backoff.
    pub async fn deliver_alerts(&self) -> GuardResult<()> {
        let now = self.clock.now();
        for channel in &self.alerts {
            let (id, kinds) = (channel.id.clone(), channel.events.clone());
            let due = self.blocking(move |l| l.undelivered(&id, &kinds, now, crate::alerts::MAX_ATTEMPTS)).await?;
            for event in due {
                // Several processes run this pass; only the one that claims the attempt posts.
                let (id, event_id, lease) = (channel.id.clone(), event.id, now + TimeDelta::seconds(30));
                if !self.blocking(move |l| l.claim_delivery(event_id, &id, lease, now)).await? {
                    continue;
                }
                let outcome = match &channel.url {
                    Some(url) => {
                        crate::alerts::post(
                            &self.http,
                            url,
                            &crate::alerts::payload(channel, &self.config.model.org_id, &event),
                        )
                        .await
                    }
                    None => Err(format!("channel {}: its url_env is not set", channel.id)),
                };
                let (id, event_id) = (channel.id.clone(), event.id);
                let attempts = self.blocking(move |l| l.delivery(event_id, &id)).await?.map_or(0, |d| d.0);
                if let Err(e) = &outcome {
                    tracing::warn!(channel = %channel.id, event = event.id, error = %e, "alert delivery failed; will retry");
                }
                self.metrics.alert(&channel.id, outcome.is_ok());
                let retry = crate::alerts::next_attempt(now, attempts, event.id as u64 * 7919);
                let id = channel.id.clone();
                self.blocking(move |l| l.record_delivery(event_id, &id, outcome, retry, now)).await?;
            }
        }
        Ok(())
    }

    /// How many spends are being decided or executed for agents right now: a shutdown waits for
    /// them to finish before it ends the agents' sessions.
    pub fn busy(&self) -> usize {
        self.busy.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn start_work(&self) -> Busy {
        self.busy.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Busy(Arc::clone(&self.busy))
    }

    /// The metrics of this guard (the daemon serves them at /metrics).
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// The configuration, shared.
    pub fn config_arc(&self) -> Arc<Config> {
        Arc::clone(&self.config)
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The ledger.
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Ledger) -> Result<T, StoreError> + Send + 'static,
    ) -> GuardResult<T> {
        let ledger = Arc::clone(&self.ledger);
        tokio::task::spawn_blocking(move || f(&ledger))
            .await
            .map_err(|e| GuardError::Internal(e.to_string()))?
            .map_err(GuardError::from)
    }

    /// The agent a bearer token belongs to, if it is live.
    pub async fn authenticate(&self, token: &str) -> GuardResult<Option<String>> {
        let hash = crate::tokens::hash_token(token);
        self.blocking(move |l| l.agent_for_token(&hash)).await
    }

    pub(crate) fn chain(&self, id: &str) -> GuardResult<&Arc<dyn ChainClient>> {
        self.chains.get(id).ok_or_else(|| GuardError::Invalid(format!("chain {id} has no client configured")))
    }

    /// Turns tool arguments into a request, or the `INVALID_AMOUNT` reason when the amount is
    /// not a decimal string.
    fn request(&self, agent: &str, args: &EvaluateArgs) -> Result<SpendRequest, Reason> {
        let amount = parse_decimal(args.amount.trim()).map_err(|e| Reason {
            code: ReasonCode::InvalidAmount,
            policy_id: None,
            rule: "amount".into(),
            detail: format!("{e}; amounts are decimal strings in asset units"),
        })?;
        Ok(SpendRequest {
            agent: agent.to_string(),
            wallet: args.wallet.clone(),
            to: args.to.trim().to_string(),
            amount,
            asset: args.asset.clone().filter(|a| !a.is_empty()),
            operation: args.operation.clone().filter(|o| !o.is_empty()),
            at: self.clock.now(),
        })
    }

    /// Live balance of the asset a request names, when its wallet and asset are known.
    async fn request_balances(&self, req: &SpendRequest) -> Result<Balances, ChainError> {
        let mut balances = Balances::new();
        let model = &self.config.model;
        let Some(wallet) = model.wallet(&req.wallet) else { return Ok(balances) };
        let Some(key) = requested_asset_key(model, wallet, req.asset.as_deref()) else { return Ok(balances) };
        let Some(asset) = model.assets.iter().find(|a| a.key() == key) else { return Ok(balances) };
        let Some(client) = self.chains.get(&wallet.chain) else { return Ok(balances) };
        let amounts = client.balances(&wallet.address, std::slice::from_ref(asset)).await?;
        if let Some(a) = amounts.first() {
            balances.insert(key, *a);
        }
        Ok(balances)
    }

    /// `evaluate`: a dry run; nothing is reserved. Unreadable balances are left unknown.
    pub async fn evaluate(&self, agent: &str, args: EvaluateArgs) -> GuardResult<Evaluation> {
        let req = match self.request(agent, &args) {
            Ok(r) => r,
            Err(reason) => {
                return Ok(Evaluation {
                    decision: Decision::Deny,
                    tier: Tier::Instant,
                    reasons: vec![reason],
                    headroom: vec![],
                    spend: None,
                })
            }
        };
        let balances = self.request_balances(&req).await.unwrap_or_default();
        self.blocking(move |l| l.evaluate(req, balances)).await
    }

    /// `spend`: evaluate, reserve, and execute at once when the tier allows.
    pub async fn spend(&self, agent: &str, args: SpendArgs) -> GuardResult<SpendOutcome> {
        let _busy = self.start_work();
        let req = match self.request(agent, &args.request) {
            Ok(r) => r,
            Err(reason) => return Ok(SpendOutcome::refused(None, Tier::Instant, vec![reason])),
        };
        // A wallet the agent may use must have a readable balance before anything is reserved.
        let assigned = self.config.model.agent(agent).is_some_and(|a| a.wallets.contains(&req.wallet));
        let balances = if assigned { self.request_balances(&req).await? } else { Balances::new() };
        let reserve = ReserveRequest {
            request: req,
            balances,
            idempotency_key: args.idempotency_key.filter(|k| !k.is_empty()),
            memo: args.request.memo,
        };
        let started = std::time::Instant::now();
        let outcome = self.blocking(move |l| l.reserve(reserve)).await?;
        self.metrics.reservation(started.elapsed());
        if let ReserveOutcome::Decided { receipt, replayed: false } = &outcome {
            self.metrics.decision(receipt.decision.as_str());
        }
        let (receipt, replayed) = match outcome {
            ReserveOutcome::IdempotencyConflict { original_decision_id } => {
                let reason = Reason {
                    code: ReasonCode::IdempotencyConflict,
                    policy_id: None,
                    rule: "idempotency_key".into(),
                    detail: format!(
                        "this idempotency key was used for decision {original_decision_id} with different arguments"
                    ),
                };
                return Ok(SpendOutcome::refused(Some(original_decision_id), Tier::Instant, vec![reason]));
            }
            ReserveOutcome::Decided { receipt, replayed } => (receipt, replayed),
        };
        let id = receipt.decision_id.clone();
        if !replayed && receipt.decision == Decision::Allow {
            // A warning that cannot be recorded must not stop the spend it warns about.
            if let Err(e) = self.record_limit_warnings(agent, &receipt).await {
                tracing::warn!(decision = %receipt.decision_id, error = %e, "recording limit_80_percent failed");
            }
        }
        if !replayed {
            match receipt.status {
                SpendStatus::Reserved => {
                    if receipt.tier == Tier::Notify {
                        let detail = format!(
                            "{} {} to be executed at NOTIFY tier",
                            receipt.amount,
                            receipt.asset.clone().unwrap_or_default()
                        );
                        let (id2, at) = (id.clone(), self.clock.now());
                        self.blocking(move |l| l.record_event("notify_tier", Some(&id2), &detail, at)).await?;
                    }
                    self.execute(&id).await?;
                }
                SpendStatus::PendingApproval => {
                    let detail =
                        format!("{} {} awaits approval", receipt.amount, receipt.asset.clone().unwrap_or_default());
                    let (id2, at) = (id.clone(), self.clock.now());
                    self.blocking(move |l| l.record_event("approval_requested", Some(&id2), &detail, at)).await?;
                }
                _ => {}
            }
        }
        let record = self.record(&id).await?;
        Ok(SpendOutcome {
            decision_id: Some(id),
            status: agent_status(record.status).into(),
            decision: record.decision,
            tier: record.tier,
            reasons: record.reasons,
            tx_hash: record.tx_hash,
            execute_after: record.execute_after,
            approval_expires_at: record.approval_expires_at,
            failure: record.failure,
            replayed,
        })
    }

    /// Records `limit_80_percent` for each limit this spend takes to 80 % of its size or more.
    async fn record_limit_warnings(&self, agent: &str, receipt: &spendguard_store::Receipt) -> GuardResult<()> {
        let threshold = Decimal::new(8, 1);
        for h in receipt.headroom.iter().filter(|h| h.crosses(threshold)) {
            let after = h.used + h.reserved + h.requested;
            let amount = |v: Decimal| match h.labels.unit.as_str() {
                "USD" => format!("${}", h.fmt(v)),
                unit => format!("{} {unit}", h.fmt(v)),
            };
            let detail = format!(
                "agent {agent}: {} of the {} limit {} ({} window, policy {}) used after decision {}: {}%",
                amount(after),
                h.labels.scope,
                amount(h.limit),
                h.labels.window,
                h.labels.policy_id,
                receipt.decision_id,
                (after * Decimal::ONE_HUNDRED / h.limit).round_dp(0)
            );
            let (id, at) = (receipt.decision_id.clone(), self.clock.now());
            self.blocking(move |l| l.record_event("limit_80_percent", Some(&id), &detail, at)).await?;
        }
        Ok(())
    }

    async fn record(&self, id: &str) -> GuardResult<DecisionRecord> {
        let id2 = id.to_string();
        self.blocking(move |l| l.decision(&id2)).await?.ok_or_else(|| GuardError::UnknownDecision(id.to_string()))
    }

    fn wallet_and_asset(&self, record: &DecisionRecord) -> GuardResult<(&Wallet, &Asset)> {
        let model = &self.config.model;
        let wallet = model
            .wallet(&record.wallet)
            .ok_or_else(|| GuardError::Invalid(format!("wallet {} is gone from the config", record.wallet)))?;
        let key = record.asset.as_deref().unwrap_or_default();
        let asset = model
            .assets
            .iter()
            .find(|a| a.key() == key)
            .ok_or_else(|| GuardError::Invalid(format!("asset {key} is gone from the config")))?;
        Ok((wallet, asset))
    }

    /// Signs and broadcasts a reserved decision; returns where it stands afterwards. A chain
    /// that cannot be reached leaves it for the background loop; a refusal fails it.
    pub async fn execute(&self, id: &str) -> GuardResult<DecisionRecord> {
        let record = self.record(id).await?;
        if record.status != SpendStatus::Reserved && record.status != SpendStatus::Signed {
            return Ok(record);
        }
        let (wallet, _) = self.wallet_and_asset(&record)?;
        let client = Arc::clone(self.chain(&wallet.chain)?);
        let signed = match self
            .blocking({
                let id = id.to_string();
                move |l| l.signed_tx(&id)
            })
            .await?
        {
            Some(signed) => signed,
            None => {
                let (account, sign) = match self.prepare(&record, client.as_ref()).await? {
                    Ok(Some(prepared)) => prepared,
                    Ok(None) => return Ok(record),
                    Err(e) => return self.fail(id, &e.to_string(), true).await,
                };
                let at = self.clock.now();
                let id2 = id.to_string();
                match self.blocking(move |l| l.sign(&id2, account, sign, at)).await {
                    Ok(Signing::Signed(s) | Signing::AlreadySigned(s)) => s,
                    Ok(Signing::NotExecutable(_)) => return self.record(id).await,
                    Err(GuardError::Store(StoreError::SigningFailed(msg))) => return self.fail(id, &msg, false).await,
                    Err(e) => return Err(e),
                }
            }
        };
        self.broadcast(id, client.as_ref(), &signed).await
    }

    /// Fetches what signing `record`'s transfer needs: the account whose nonce the ledger
    /// allocates and the signing step. `Ok(Ok(None))` when the chain is unreachable (try later);
    /// `Ok(Err)` when the chain refuses; `Err` when the decision no longer fits the config.
    async fn prepare(
        &self,
        record: &DecisionRecord,
        client: &dyn ChainClient,
    ) -> GuardResult<Result<Option<(Option<Account>, SignWith)>, ChainError>> {
        let (wallet, asset) = self.wallet_and_asset(record)?;
        let amount = parse_decimal(&record.amount).map_err(|e| GuardError::Invalid(e.to_string()))?;
        let transfer =
            Transfer { from: wallet.address.clone(), to: record.recipient.clone(), asset: asset.clone(), amount };
        let prepared = match client.prepare(&transfer).await {
            Ok(p) => p,
            Err(e) if e.is_retryable() => {
                tracing::warn!(decision = %record.id, error = %e, "chain unavailable; will retry");
                return Ok(Ok(None));
            }
            Err(e) => return Ok(Err(e)),
        };
        let account = prepared.sequence_floor.map(|floor| Account {
            chain: wallet.chain.clone(),
            address: wallet.address.clone(),
            floor,
        });
        let sign = prepared.sign;
        let sign: SignWith = Box::new(move |seq| {
            sign(seq)
                .map(|s| SignedRecord {
                    hash: s.hash,
                    raw: s.raw,
                    sequence: s.sequence,
                    fee_cap: s.fee_cap,
                    fee_terms: s.fee_terms,
                })
                .map_err(|e| e.to_string())
        });
        Ok(Ok(Some((account, sign))))
    }

    /// A broadcast decision whose transaction `dead` the chain proved can never land: a
    /// transaction without an account sequence (Solana) is re-signed once, with fresh chain
    /// state, and sent; otherwise, or the second time, the decision fails and is released.
    pub(crate) async fn replace_dead(
        &self,
        record: &DecisionRecord,
        client: &dyn ChainClient,
        dead: &SignedRecord,
        why: &str,
    ) -> GuardResult<DecisionRecord> {
        let id = record.id.as_str();
        if dead.sequence.is_some() {
            return self.fail(id, why, true).await;
        }
        let (_, sign) = match self.prepare(record, client).await? {
            Ok(Some(prepared)) => prepared,
            Ok(None) => return Ok(record.clone()),
            Err(e) => return self.fail(id, &format!("{why}; re-signing it failed: {e}"), true).await,
        };
        let (id2, dead_hash, at) = (id.to_string(), dead.hash.clone(), self.clock.now());
        match self.blocking(move |l| l.resign(&id2, &dead_hash, sign, at)).await {
            Ok(Resigning::Resigned(signed)) => {
                tracing::warn!(decision = id, dead = %dead.hash, new = %signed.hash, "expired transaction re-signed");
                self.broadcast(id, client, &signed).await
            }
            Ok(Resigning::Exhausted) => {
                self.fail(id, &format!("{why} (it had been re-signed once already)"), true).await
            }
            Ok(Resigning::Stale) => self.record(id).await,
            Err(GuardError::Store(StoreError::SigningFailed(msg))) => self.fail(id, &msg, true).await,
            Err(e) => Err(e),
        }
    }

    async fn broadcast(&self, id: &str, client: &dyn ChainClient, s: &SignedRecord) -> GuardResult<DecisionRecord> {
        if crate::guard::fail_point("after_sign") {
            std::process::exit(86);
        }
        match client.broadcast(&chain_tx(s)).await {
            Ok(()) => {}
            Err(e) if e.is_retryable() => {
                tracing::warn!(decision = id, error = %e, "broadcast failed; will retry");
                return self.record(id).await;
            }
            Err(ChainError::Rejected { reason, sequence_used, .. }) => {
                // "Nonce too low" (EVM) or "blockhash not found" (Solana) for our own transaction
                // may mean it already landed (we were stopped between sending it and recording
                // that): that is success.
                if matches!(client.outcome(&s.hash).await, Ok(Some(_))) {
                    tracing::info!(decision = id, "transaction already on chain");
                } else {
                    return self.fail(id, &format!("the node refused the transaction: {reason}"), sequence_used).await;
                }
            }
            Err(e) => return self.fail(id, &e.to_string(), false).await,
        }
        if crate::guard::fail_point("after_broadcast") {
            std::process::exit(87);
        }
        let (id2, at) = (id.to_string(), self.clock.now());
        self.blocking(move |l| l.mark_broadcast(&id2, at)).await
    }

    pub(crate) async fn fail(&self, id: &str, reason: &str, sequence_used: bool) -> GuardResult<DecisionRecord> {
        tracing::warn!(decision = id, reason, "spend failed");
        let (id2, reason, at) = (id.to_string(), reason.to_string(), self.clock.now());
        self.blocking(move |l| l.fail(&id2, &reason, sequence_used, at)).await
    }

    /// `spend_status`.
    pub async fn spend_status(&self, agent: &str, id: &str) -> GuardResult<StatusReport> {
        let record = self.record(id).await?;
        if record.agent != agent {
            return Err(GuardError::UnknownDecision(id.to_string()));
        }
        let confirmations = match (record.block, record.chain.as_deref().and_then(|c| self.chains.get(c))) {
            (Some(block), Some(client)) => client.head().await.ok().map(|head| head.saturating_sub(block) + 1),
            _ => None,
        };
        Ok(status_report(record, confirmations))
    }

    /// `cancel_spend`: the agent's own queued or pending-approval spend.
    pub async fn cancel_spend(&self, agent: &str, id: &str) -> GuardResult<StatusReport> {
        let (agent2, id2, at) = (agent.to_string(), id.to_string(), self.clock.now());
        let record = match self.blocking(move |l| l.cancel(&agent2, &id2, "cancelled by the agent", at)).await {
            Ok(r) => r,
            Err(GuardError::Store(StoreError::NotYours(_) | StoreError::UnknownDecision(_))) => {
                return Err(GuardError::UnknownDecision(id.to_string()))
            }
            Err(GuardError::Store(StoreError::IllegalTransition { from, .. })) => {
                return Err(GuardError::Invalid(format!(
                    "decision {id} is {from}; only queued or pending-approval spends can be cancelled"
                )))
            }
            Err(e) => return Err(e),
        };
        Ok(status_report(record, None))
    }

    /// `balance`: live balances of the agent's wallets (or one of them) and every limit's room.
    pub async fn balance(&self, agent: &str, wallet: Option<&str>) -> GuardResult<BalanceReport> {
        let model = &self.config.model;
        let a = model.agent(agent).ok_or_else(|| GuardError::Forbidden(format!("agent {agent} is not configured")))?;
        let wallets: Vec<&str> = match wallet {
            Some(w) if a.wallets.iter().any(|x| x == w) => vec![w],
            Some(w) => {
                return Err(GuardError::Forbidden(format!(
                    "WALLET_NOT_ASSIGNED: wallet {w} is not assigned to agent {agent}"
                )))
            }
            None => a.wallets.iter().map(String::as_str).collect(),
        };
        let mut out = vec![];
        for w in wallets {
            let Some(wallet) = model.wallet(w) else { continue };
            let (known, balances, balance_error) = self.read_balances(wallet).await;
            let limits = self.limit_headroom(agent, wallet, known).await?;
            out.push(WalletBalances {
                wallet: wallet.id.clone(),
                chain: wallet.chain.clone(),
                address: wallet.address.clone(),
                balances,
                balance_error,
                limits,
            });
        }
        Ok(BalanceReport { wallets: out })
    }

    /// Live balances of every configured asset of `wallet`'s chain: as numbers, as listed to
    /// agents and operators, and why they could not be read.
    pub(crate) async fn read_balances(
        &self,
        wallet: &spendguard_core::model::Wallet,
    ) -> (Balances, Vec<AssetBalance>, Option<String>) {
        let assets: Vec<Asset> = self.config.model.assets_on(&wallet.chain).cloned().collect();
        let read = match self.chains.get(&wallet.chain) {
            Some(c) => c.balances(&wallet.address, &assets).await.map_err(|e| e.to_string()),
            None => Err(format!("chain {} has no client configured", wallet.chain)),
        };
        match read {
            Ok(amounts) => {
                let known: Balances = assets.iter().zip(&amounts).map(|(a, v)| (a.key(), *v)).collect();
                let listed = assets
                    .iter()
                    .zip(amounts)
                    .map(|(a, v)| AssetBalance { asset: a.key(), amount: v.normalize().to_string() })
                    .collect();
                (known, listed, None)
            }
            Err(e) => (Balances::new(), vec![], Some(e)),
        }
    }

    /// The room under every limit that applies to `agent` spending from `wallet`, asset by
    /// asset: a dry run of the smallest amount to the wallet itself, merged by rule. `balances`
    /// are the wallet's known balances (a balance-fraction limit without one fails closed).
    pub(crate) async fn limit_headroom(
        &self,
        agent: &str,
        wallet: &spendguard_core::model::Wallet,
        balances: Balances,
    ) -> GuardResult<Vec<Headroom>> {
        let mut limits: Vec<Headroom> = vec![];
        for asset in self.config.model.assets_on(&wallet.chain) {
            let req = SpendRequest {
                agent: agent.to_string(),
                wallet: wallet.id.clone(),
                to: wallet.address.clone(),
                amount: Decimal::new(1, asset.decimals.min(28)),
                asset: Some(asset.key()),
                operation: None,
                at: self.clock.now(),
            };
            let known: Balances =
                balances.iter().filter(|(k, _)| **k == asset.key()).map(|(k, v)| (k.clone(), *v)).collect();
            let eval = self.blocking(move |l| l.evaluate(req, known)).await?;
            for mut h in eval.headroom {
                h.requested = Decimal::ZERO;
                if !limits.iter().any(|x| x.labels == h.labels) {
                    limits.push(h);
                }
            }
        }
        Ok(limits)
    }

    /// One pass of background work: broadcast what was signed, settle what landed, execute due
    /// delays (unless frozen), expire approvals, and pick up reservations a crash left unsigned.
    pub async fn tick(&self) -> GuardResult<()> {
        let now = self.clock.now();
        let in_flight = self.blocking(|l| l.in_flight()).await?;
        for d in in_flight {
            let Some(client) = d.chain.as_deref().and_then(|c| self.chains.get(c)).cloned() else { continue };
            match d.status {
                SpendStatus::Signed => {
                    if let Err(e) = self.execute(&d.id).await {
                        tracing::warn!(decision = %d.id, error = %e, "re-broadcast failed; will retry");
                    }
                }
                SpendStatus::Broadcast => {
                    let Some(hash) = d.tx_hash.clone() else { continue };
                    match client.outcome(&hash).await {
                        Ok(Some(o)) => {
                            let settlement =
                                spendguard_store::Settlement { success: o.success, block: o.block, fee: o.fee };
                            let id = d.id.clone();
                            match self.blocking(move |l| l.settle(&id, settlement, now)).await {
                                Err(e) => {
                                    tracing::warn!(decision = %d.id, error = %e, "recording the receipt failed; will retry");
                                }
                                Ok(_) => {
                                    if let Err(e) = self.check_balance_low(&d.wallet).await {
                                        tracing::warn!(wallet = %d.wallet, error = %e, "balance check failed");
                                    }
                                }
                            }
                        }
                        Ok(None) if now - d.updated_at > REBROADCAST_AFTER => {
                            let id = d.id.clone();
                            if let Some(s) = self.blocking(move |l| l.signed_tx(&id)).await? {
                                if let Err(e) = client.broadcast(&chain_tx(&s)).await {
                                    tracing::warn!(decision = %d.id, error = %e, "re-broadcast failed");
                                }
                            }
                        }
                        Ok(None) => {}
                        Err(e) => tracing::warn!(decision = %d.id, error = %e, "receipt lookup failed"),
                    }
                }
                _ => {}
            }
        }
        let orphans = self.blocking(|l| l.unsigned_reserved()).await?;
        // An approved spend is executed at once (the approver may have used the CLI); others
        // only once the process that reserved them had time to sign them itself.
        for d in orphans.into_iter().filter(|d| d.approved_by.is_some() || now - d.updated_at > ORPHAN_AFTER) {
            if let Err(e) = self.execute(&d.id).await {
                tracing::warn!(decision = %d.id, error = %e, "executing a reserved spend failed; will retry");
            }
        }
        let due = self.blocking(move |l| l.due_delays(now)).await?;
        for d in due {
            // Whether a freeze covers it is decided in the same transaction that starts it.
            let id = d.id.clone();
            match self.blocking(move |l| l.start_due(&id, now)).await {
                Ok(Some(started)) if started.status == SpendStatus::Reserved => {
                    if let Err(e) = self.execute(&d.id).await {
                        tracing::warn!(decision = %d.id, error = %e, "executing a due spend failed; will retry");
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(decision = %d.id, error = %e, "starting a due spend failed; will retry"),
            }
        }
        self.blocking(move |l| l.expire_approvals(now)).await?;
        for (chain, client) in &self.chains {
            if let Err(e) = self.watch_once(chain, WATCH_BLOCKS_PER_PASS).await {
                tracing::warn!(chain, error = %e, "watching the chain failed; will retry");
            }
            if let Err(e) = self.check_missing(chain, client.as_ref()).await {
                tracing::warn!(chain, error = %e, "checking for missing spends failed; will retry");
            }
        }
        if let Err(e) = self.deliver_alerts().await {
            tracing::warn!(error = %e, "delivering alerts failed; will retry");
        }
        Ok(())
    }

    /// Runs [`Guard::tick`] every `interval` until `shutdown` completes. Errors are logged and
    /// retried on the next tick.
    pub async fn run(self: Arc<Self>, interval: Duration, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            if let Err(e) = self.tick().await {
                tracing::error!(error = %e, "background pass failed");
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }
}

/// A stored signed transaction as the chain client sends it.
pub(crate) fn chain_tx(s: &SignedRecord) -> SignedTx {
    SignedTx {
        hash: s.hash.clone(),
        raw: s.raw.clone(),
        sequence: s.sequence,
        fee_cap: s.fee_cap,
        fee_terms: s.fee_terms.clone(),
    }
}

/// The status an agent sees for a lifecycle status.
fn agent_status(s: SpendStatus) -> &'static str {
    match s {
        SpendStatus::Denied => "denied",
        SpendStatus::Reserved => "processing",
        SpendStatus::Queued => "queued",
        SpendStatus::PendingApproval => "pending_approval",
        SpendStatus::Released => "released",
        SpendStatus::Signed | SpendStatus::Broadcast => "executed",
        SpendStatus::Confirmed => "confirmed",
        SpendStatus::Failed => "failed",
    }
}

fn status_report(r: DecisionRecord, confirmations: Option<u64>) -> StatusReport {
    StatusReport {
        status: agent_status(r.status).into(),
        lifecycle: r.status,
        decision: r.decision,
        tier: r.tier,
        reasons: r.reasons,
        wallet: r.wallet,
        asset: r.asset,
        amount: r.amount,
        to: r.recipient,
        tx_hash: r.tx_hash,
        confirmations,
        fee_paid: r.fee_paid,
        reconciliation: None,
        execute_after: r.execute_after,
        approval_expires_at: r.approval_expires_at,
        failure: r.failure,
        decision_id: r.id,
    }
}

/// Crash-test fail points: `SPENDGUARD_FAILPOINT=after_sign` (or `after_broadcast`) makes the
/// process exit at that point, the way a crash would.
pub(crate) fn fail_point(name: &str) -> bool {
    std::env::var("SPENDGUARD_FAILPOINT").is_ok_and(|v| v == name)
}
