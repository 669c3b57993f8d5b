//! [`Spending`]: what an agent asks for — evaluate, spend, balance, spend_status, cancel_spend.
//! A spend is evaluated and reserved in one ledger transaction, then (INSTANT and NOTIFY)
//! executed at once by the [`Executor`].

use crate::answers::{
    bounded, BalanceReport, EvaluateArgs, PayX402Args, SpendArgs, SpendOutcome, StatusReport, WalletBalances,
    X402Outcome, ID_MAX,
};
use crate::chains::Chains;
use crate::clock::Clock;
use crate::error::{ServiceError, ServiceResult};
use crate::execution::Executor;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::prices::PriceBook;
use rust_decimal::Decimal;
use spendguard_config::Config;
use spendguard_core::engine::requested_asset_key;
use spendguard_core::money::parse_decimal;
use spendguard_core::price::Prices;
use spendguard_core::{Balances, Decision, Evaluation, EventKind, Reason, ReasonCode, SpendRequest, SpendStatus, Tier};
use spendguard_store::{
    AuthorizationStore, DecisionStore, FreezeStore, OutboxStore, OutflowStore, Receipt, ReserveOutcome, ReserveRequest,
    StoreError,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The agents' side of spendguard.
pub struct Spending {
    pub(crate) config: Arc<Config>,
    pub(crate) decisions: Arc<dyn DecisionStore>,
    pub(crate) outflows: Arc<dyn OutflowStore>,
    pub(crate) outbox: Arc<dyn OutboxStore>,
    pub(crate) freezes: Arc<dyn FreezeStore>,
    pub(crate) authorizations: Arc<dyn AuthorizationStore>,
    pub(crate) chains: Chains,
    pub(crate) prices: Arc<PriceBook>,
    pub(crate) executor: Arc<Executor>,
    pub(crate) limits: Limits,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) clock: Arc<dyn Clock>,
    /// Spends being decided or executed for an agent right now.
    busy: Arc<AtomicUsize>,
}

/// Counts one agent request as being worked on until dropped (also when its future is
/// cancelled).
struct Busy(Arc<AtomicUsize>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Spending {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        config: Arc<Config>,
        decisions: Arc<dyn DecisionStore>,
        outflows: Arc<dyn OutflowStore>,
        outbox: Arc<dyn OutboxStore>,
        freezes: Arc<dyn FreezeStore>,
        authorizations: Arc<dyn AuthorizationStore>,
        chains: Chains,
        prices: Arc<PriceBook>,
        executor: Arc<Executor>,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
    ) -> Spending {
        let limits =
            Limits { decisions: Arc::clone(&decisions), prices: Arc::clone(&prices), clock: Arc::clone(&clock) };
        Spending {
            config,
            decisions,
            outflows,
            outbox,
            freezes,
            authorizations,
            chains,
            prices,
            executor,
            limits,
            metrics,
            clock,
            busy: Default::default(),
        }
    }

    /// How many spends are being decided or executed for agents right now: a shutdown waits for
    /// them to finish before it ends the agents' sessions.
    pub fn busy(&self) -> usize {
        self.busy.load(Ordering::SeqCst)
    }

    fn start_work(&self) -> Busy {
        self.busy.fetch_add(1, Ordering::SeqCst);
        Busy(Arc::clone(&self.busy))
    }

    /// Turns tool arguments into a request, or the `INVALID_AMOUNT` reason when the amount is
    /// not a decimal string. Nothing is trimmed: `" 5"` is not an amount and `"0xab… "` not an
    /// address, so neither is guessed at.
    fn request(&self, agent: &str, args: &EvaluateArgs, domain: Option<String>) -> Result<SpendRequest, Reason> {
        let amount = parse_decimal(&args.amount).map_err(|e| Reason {
            code: ReasonCode::InvalidAmount,
            policy_id: None,
            rule: "amount".into(),
            detail: format!("{e}; amounts are decimal strings in asset units"),
        })?;
        Ok(SpendRequest {
            agent: agent.to_string(),
            wallet: args.wallet.clone(),
            to: args.to.clone(),
            amount,
            asset: args.asset.clone().filter(|a| !a.is_empty()),
            operation: args.operation.clone().filter(|o| !o.is_empty()),
            at: self.clock.now(),
            domain,
        })
    }

    /// A dry run of `request` as given (its time, and `balances` instead of live ones), for an
    /// operator's `spendguard evaluate`; nothing is recorded.
    pub async fn dry_run(&self, request: SpendRequest, balances: Balances) -> ServiceResult<Evaluation> {
        let prices = self.prices_for(&request).await;
        Ok(self.decisions.evaluate(request, balances, prices).await?)
    }

    /// The latest reading of the price feed of the asset `req` spends (none for a static price):
    /// taken from the background refresh, never read per request once read.
    async fn prices_for(&self, req: &SpendRequest) -> Prices {
        let model = &self.config.model;
        let asset = model.wallet(&req.wallet).and_then(|w| requested_asset_key(model, w, req.asset.as_deref()));
        self.prices.for_asset(asset.as_deref()).await
    }

    /// `evaluate`: a dry run; nothing is reserved. The balance may be one read moments ago
    /// (the chain's `balance_max_age`); unreadable balances are left unknown.
    pub async fn evaluate(&self, agent: &str, args: EvaluateArgs) -> ServiceResult<Evaluation> {
        args.check_sizes()?;
        let req = match self.request(agent, &args, None) {
            Ok(r) => r,
            Err(reason) => {
                return Ok(Evaluation {
                    decision: Decision::Deny,
                    tier: Tier::Instant,
                    reasons: vec![reason],
                    headroom: vec![],
                    valuation: None,
                    spend: None,
                })
            }
        };
        let balances = self.chains.recent_request_balance(&self.config.model, &req).await.unwrap_or_default();
        let prices = self.prices_for(&req).await;
        Ok(self.decisions.evaluate(req, balances, prices).await?)
    }

    /// Is a spend by `agent` from `wallet` frozen (any scope covering it)?
    async fn frozen(&self, agent: &str, wallet: &str) -> ServiceResult<bool> {
        let model = &self.config.model;
        let (Some(agent), Some(wallet)) = (model.agent(agent), model.wallet(wallet)) else { return Ok(false) };
        Ok(spendguard_core::freeze::covering(&self.freezes.freezes().await?, agent, wallet).is_some())
    }

    /// `spend`: evaluate, reserve, and execute at once when the tier allows.
    pub async fn spend(&self, agent: &str, args: SpendArgs) -> ServiceResult<SpendOutcome> {
        let _busy = self.start_work();
        args.check_sizes()?;
        self.decide(agent, args, None).await
    }

    /// `pay_x402`: the first requirement of the server's challenge the wallet can pay, decided
    /// as a spend of its amount to its payee (the resource's host usable in recipient rules)
    /// and, when allowed, signed as an EIP-3009 authorization (at once for INSTANT and NOTIFY;
    /// when due or approved otherwise).
    pub async fn pay_x402(&self, agent: &str, args: PayX402Args) -> ServiceResult<X402Outcome> {
        let _busy = self.start_work();
        args.check_sizes()?;
        let model = &self.config.model;
        let assigned = model.agent(agent).is_some_and(|a| a.wallets.contains(&args.wallet));
        let wallet = match model.wallet(&args.wallet) {
            Some(w) if assigned => w,
            _ => {
                // Not a wallet of this agent: the engine says which way, as for `spend`.
                let spend = SpendArgs {
                    request: EvaluateArgs {
                        wallet: args.wallet,
                        to: String::new(),
                        amount: "0".into(),
                        ..Default::default()
                    },
                    idempotency_key: None,
                };
                let refused = self.decide(agent, spend, None).await?;
                return Ok(X402Outcome::of(refused, None));
            }
        };
        let payable = match crate::x402::choose(&self.config, wallet, &args.payment_required) {
            Ok(p) => p,
            Err(why) => {
                let reason = Reason {
                    code: ReasonCode::X402Unpayable,
                    policy_id: None,
                    rule: "payment_required".into(),
                    detail: format!("no requirement can be paid from wallet {}: {why}", wallet.id),
                };
                return Ok(X402Outcome::of(SpendOutcome::refused(None, vec![reason]), None));
            }
        };
        let spend = SpendArgs {
            request: EvaluateArgs {
                wallet: args.wallet,
                to: payable.pay_to.clone(),
                amount: payable.amount.to_string(),
                asset: Some(payable.asset.symbol.clone()),
                operation: None,
                memo: args.memo,
            },
            idempotency_key: args.idempotency_key,
        };
        // The requirement is part of the idempotency key's arguments: a replay paid this one.
        let accepted = payable.request.accepted.clone();
        let outcome = self.decide(agent, spend, Some(payable)).await?;
        Ok(X402Outcome::of(outcome, Some(accepted)))
    }

    /// Evaluates, reserves and (when the tier allows) executes a spend — a transfer, or with
    /// `x402` an x402 payment.
    async fn decide(
        &self,
        agent: &str,
        args: SpendArgs,
        x402: Option<crate::x402::Payable>,
    ) -> ServiceResult<SpendOutcome> {
        let domain = x402.as_ref().and_then(|p| p.domain.clone());
        let resource = x402.as_ref().and_then(|p| p.request.url().map(str::to_string));
        let req = match self.request(agent, &args.request, domain) {
            Ok(r) => r,
            Err(reason) => return Ok(SpendOutcome::refused(None, vec![reason])),
        };
        // A wallet the agent may use must have a readable balance before anything is reserved,
        // unless a freeze denies the spend anyway: the agent then hears KILL_SWITCH, not why
        // the chain could not be read (a frozen chain is often one that is in trouble).
        let assigned = self.config.model.agent(agent).is_some_and(|a| a.wallets.contains(&req.wallet));
        let balances = match assigned {
            false => Balances::default(),
            true => match self.chains.request_balance(&self.config.model, &req).await {
                Ok(balances) => balances,
                Err(e) if self.frozen(agent, &req.wallet).await? => {
                    tracing::debug!(error = %e, "balance unreadable; the spend is frozen anyway");
                    Balances::default()
                }
                Err(e) => return Err(e.into()),
            },
        };
        let prices = self.prices_for(&req).await;
        let reserve = ReserveRequest {
            request: req,
            balances,
            prices,
            idempotency_key: args.idempotency_key.filter(|k| !k.is_empty()),
            memo: args.request.memo,
            x402: x402.map(|p| p.request),
        };
        let started = std::time::Instant::now();
        let outcome = self.decisions.reserve(reserve).await?;
        self.metrics.reservation(started.elapsed());
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
                return Ok(SpendOutcome::refused(Some(original_decision_id), vec![reason]));
            }
            ReserveOutcome::Decided { receipt, replayed } => (receipt, replayed),
        };
        // From here the decision is recorded and its budget held: whatever fails now, the
        // background passes finish it, so the agent is told where it stands — never that
        // nothing was spent, which would invite a second payment.
        let id = receipt.decision_id.clone();
        if !replayed {
            self.metrics.decision(receipt.decision);
            if let Err(e) = self.after_decision(agent, &receipt, resource.as_deref()).await {
                tracing::error!(decision = %id, error = %e, "completing the spend failed; the background passes finish it");
            }
        }
        match self.decisions.decision(&id).await {
            Ok(Some(record)) => {
                let authorization = self.authorization_of(&record).await?;
                Ok(SpendOutcome::of(record, replayed).with_authorization(authorization))
            }
            Ok(None) => Err(ServiceError::UnknownDecision(id)),
            Err(e) => {
                tracing::error!(decision = %id, error = %e, "reading the decision back failed");
                Ok(SpendOutcome::recorded(receipt))
            }
        }
    }

    /// What follows a new decision: warnings and notifications recorded (naming the resource of
    /// an x402 payment), an allowed spend executed.
    async fn after_decision(&self, agent: &str, receipt: &Receipt, resource: Option<&str>) -> ServiceResult<()> {
        let id = receipt.decision_id.as_str();
        if receipt.decision == Decision::Allow {
            // A warning that cannot be recorded must not stop the spend it warns about.
            if let Err(e) = self.record_limit_warnings(agent, receipt).await {
                tracing::warn!(decision = id, error = %e, "recording limit_80_percent failed");
            }
        }
        let what = format!("{} {}", receipt.amount, receipt.asset.as_deref().unwrap_or_default());
        // An x402 payment says what it buys, for the approver.
        let what = match resource {
            Some(url) => format!("{what} (x402 payment for {url})"),
            None => what,
        };
        match receipt.status {
            SpendStatus::Reserved => {
                if receipt.tier == Tier::Notify {
                    let detail = format!("{what} to be executed at NOTIFY tier");
                    self.outbox.record_event(EventKind::NotifyTier, Some(id), &detail, self.clock.now()).await?;
                }
                self.executor.execute(id).await?;
            }
            SpendStatus::PendingApproval => {
                let detail = format!("{what} awaits approval");
                self.outbox.record_event(EventKind::ApprovalRequested, Some(id), &detail, self.clock.now()).await?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Records `limit_80_percent` for each limit this spend takes to 80 % of its size or more.
    async fn record_limit_warnings(&self, agent: &str, receipt: &Receipt) -> ServiceResult<()> {
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
            let at = self.clock.now();
            self.outbox.record_event(EventKind::Limit80Percent, Some(&receipt.decision_id), &detail, at).await?;
        }
        Ok(())
    }

    /// `spend_status`: the agent's own decision, with confirmations and how the auditor
    /// reconciled it.
    pub async fn spend_status(&self, agent: &str, id: &str) -> ServiceResult<StatusReport> {
        bounded("decision_id", id, ID_MAX)?;
        let record = self.decisions.decision(id).await?.filter(|d| d.agent == agent);
        let record = record.ok_or_else(|| ServiceError::UnknownDecision(id.to_string()))?;
        let confirmations = match (record.block, record.chain.as_deref().and_then(|c| self.chains.get(c).ok())) {
            (Some(block), Some(client)) => client.head().await.ok().map(|head| head.saturating_sub(block) + 1),
            _ => None,
        };
        let reconciliation = self.outflows.reconciliation(id).await?;
        let authorization = self.authorization_of(&record).await?;
        Ok(StatusReport::of(record, confirmations, reconciliation).with_authorization(authorization))
    }

    /// The authorization of an external wallet's decision; `None` for custodial wallets
    /// (without a read) and for decisions not authorized (yet).
    async fn authorization_of(
        &self,
        record: &spendguard_store::DecisionRecord,
    ) -> ServiceResult<Option<spendguard_store::AuthorizationRecord>> {
        match self.config.model.wallet(&record.wallet) {
            Some(w) if w.is_external() || record.x402.is_some() => {
                Ok(self.authorizations.authorization(&record.id).await?)
            }
            _ => Ok(None),
        }
    }

    /// `cancel_spend`: the agent's own queued or pending-approval spend.
    pub async fn cancel_spend(&self, agent: &str, id: &str) -> ServiceResult<StatusReport> {
        bounded("decision_id", id, ID_MAX)?;
        match self.decisions.cancel(agent, id, "cancelled by the agent", self.clock.now()).await {
            Ok(record) => {
                let authorization = self.authorization_of(&record).await?;
                Ok(StatusReport::of(record, None, None).with_authorization(authorization))
            }
            Err(StoreError::NotYours(_) | StoreError::UnknownDecision(_)) => {
                Err(ServiceError::UnknownDecision(id.to_string()))
            }
            Err(e @ StoreError::WrongStatus { .. }) => Err(ServiceError::Invalid(e.to_string())),
            Err(e) => Err(e.into()),
        }
    }

    /// `balance`: live balances of the agent's wallets (or one of them) and every limit's room.
    pub async fn balance(&self, agent: &str, wallet: Option<&str>) -> ServiceResult<BalanceReport> {
        bounded("wallet", wallet.unwrap_or_default(), ID_MAX)?;
        let model = &self.config.model;
        let not_assigned =
            |w: &str| ServiceError::WalletNotAssigned { agent: agent.to_string(), wallet: w.to_string() };
        // Agents are authenticated: one missing here was removed from the config since.
        let a =
            model.agent(agent).ok_or_else(|| ServiceError::Forbidden(format!("agent {agent} is not configured")))?;
        let wallets: Vec<&str> = match wallet {
            Some(w) if a.wallets.iter().any(|x| x == w) => vec![w],
            Some(w) => return Err(not_assigned(w)),
            None => a.wallets.iter().map(String::as_str).collect(),
        };
        let mut out = vec![];
        for w in wallets {
            let Some(wallet) = model.wallet(w) else { continue };
            let read = self.chains.read_wallet(model, wallet).await;
            let limits = self.limits.headroom(model, agent, wallet, &read.known).await?;
            out.push(WalletBalances {
                wallet: wallet.id.clone(),
                chain: wallet.chain.clone(),
                address: wallet.address.clone(),
                balances: read.listed,
                balance_error: read.error,
                limits,
            });
        }
        Ok(BalanceReport { wallets: out })
    }
}
