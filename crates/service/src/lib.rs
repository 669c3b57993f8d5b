//! spendguard's imperative shell: the services agents and operators talk to, each holding only
//! the ledger concerns, chain clients and clock it needs.
//!
//! # Layout
//! - [`Spending`] (`spending.rs`, its answers in `answers.rs`): `evaluate`, `spend`, `pay_x402`,
//!   `balance`, `spend_status`, `cancel_spend` — evaluate-and-reserve in one ledger transaction,
//!   then an allowed spend executed at once; [`x402`] reads x402 challenges and writes the
//!   payment header.
//! - [`Executor`] (`execution.rs`): signs (nonce allocated and transaction stored before it is
//!   sent, checked against the decision's intent hash) and broadcasts — or, for an external
//!   wallet, issues the authorization the agent pays with ([`Authority`], `authority.rs`); its background pass
//!   (`followup.rs`) follows receipts, re-sends, runs due delays, expires approvals, re-signs or
//!   releases spends the chain proves dead, and notices wallets running low.
//! - [`Auditor`] (`auditor.rs`): the reconciler behind `spendguard_chain::watch`'s poll loop,
//!   and stall alerts.
//! - [`Operators`] (`operators.rs`): approvals, rejections, delays, freezes, decommissioning,
//!   revocation — each checked against the operator's roles; [`Credentials`]
//!   (`credentials.rs`): tokens.
//! - [`Overview`] (`overview.rs`): status and exposures; [`Reports`] (`report/`): the
//!   reconciliation report, its renderings and its schedule, and the audit log's reads.
//! - [`Authorizations`] (`authorizations.rs`): what an external wallet's authorization token
//!   is worth now (valid, consumed, expired, revoked), for wallet-side hooks.
//! - [`AlertDelivery`] (`alerts.rs`), [`Metrics`] (`metrics.rs`).
//! - [`PriceBook`] (`prices.rs`): the latest reading of every live price feed, refreshed in
//!   the background; decisions, status, metrics and reports take their prices from it.
//! - Shared: [`Chains`] (`chains.rs`, clients and balance reads), limits' headroom
//!   (`limits.rs`), [`Usd`] (`usd.rs`), [`Clock`] (`clock.rs`), errors (`error.rs`), crash fail
//!   points for tests (`failpoint.rs`, feature `fail-points`).
//!
//! [`Services::new`] wires them over one ledger engine ([`spendguard_store::Store`]); it does no
//! I/O. Assembling a node (opening the ledger, unlocking keys, connecting chains, running the
//! loops and servers) is `spendguard-node`'s.

mod alerts;
mod answers;
mod auditor;
mod authority;
mod authorizations;
mod chains;
mod clock;
mod credentials;
mod error;
mod execution;
mod failpoint;
mod followup;
mod limits;
mod metrics;
mod operators;
mod overview;
mod prices;
pub mod report;
mod spending;
mod usd;
pub mod x402;

pub use alerts::{AlertChannel, AlertDelivery};
pub use answers::{
    AgentStatus, BalanceReport, EvaluateArgs, PayX402Args, SpendArgs, SpendOutcome, StatusReport, WalletBalances,
    X402Outcome, X402Status, IDEMPOTENCY_KEY_MAX, MEMO_MAX,
};
pub use auditor::{Auditor, BLOCKS_PER_PASS};
pub use authority::{Authority, AuthorizationClaims, TokenError};
pub use authorizations::{Authorizations, Caller, TokenStatus, Verification, TOKEN_MAX};
pub use chains::{AssetBalance, Chains};
pub use clock::{Clock, SystemClock};
pub use credentials::{hash_token, Credentials};
pub use error::{ServiceError, ServiceResult};
pub use execution::Executor;
pub use metrics::Metrics;
pub use operators::{FrozenScope, Operators};
pub use overview::{AuthorizationItem, Exposures, LimitUse, Overview, PendingItem, Status, WalletStatus, WatcherLease};
pub use prices::{PriceBook, PriceState};
pub use report::Reports;
pub use spending::Spending;
pub use usd::Usd;

use spendguard_config::Config;
use spendguard_store::Store;

/// True when this build has the crash fail points (feature `fail-points`, tests only).
pub const FAIL_POINTS: bool = cfg!(feature = "fail-points");
use std::sync::Arc;

/// Every service of one node, wired over one ledger. Cheap to clone: each field is shared.
#[derive(Clone)]
pub struct Services {
    /// The configuration they serve.
    pub config: Arc<Config>,
    /// Agents' spending.
    pub spending: Arc<Spending>,
    /// Execution and its follow-up.
    pub executor: Arc<Executor>,
    /// The reconciler behind the watchers.
    pub auditor: Arc<Auditor>,
    /// Operators' actions.
    pub operators: Arc<Operators>,
    /// Tokens.
    pub credentials: Arc<Credentials>,
    /// Status and exposures.
    pub overview: Arc<Overview>,
    /// Reports and the audit log.
    pub reports: Arc<Reports>,
    /// Alert delivery.
    pub alerts: Arc<AlertDelivery>,
    /// Counters of what this process did.
    pub metrics: Arc<Metrics>,
    /// Live prices, refreshed in the background.
    pub prices: Arc<PriceBook>,
    /// External wallets' authorization tokens: verification and the public key.
    pub authorizations: Arc<Authorizations>,
}

impl Services {
    /// The services over `store`, for `config`, talking to `chains`. `signs` says whether this
    /// process holds the wallets' keys: one that does not never executes a spend (it leaves
    /// them to one that does); `authority` is the key external wallets' authorizations are
    /// signed with.
    pub fn new(
        config: Arc<Config>,
        store: Arc<dyn Store>,
        chains: Chains,
        signs: bool,
        authority: Option<Arc<Authority>>,
        alerts: Vec<AlertChannel>,
        clock: Arc<dyn Clock>,
    ) -> Services {
        let metrics = Arc::new(Metrics::default());
        let prices =
            Arc::new(PriceBook::new(Arc::new(config.model.clone()), chains.clone(), store.clone(), Arc::clone(&clock)));
        let limits =
            limits::Limits { decisions: store.clone(), prices: Arc::clone(&prices), clock: Arc::clone(&clock) };
        let executor = Arc::new(Executor {
            config: Arc::clone(&config),
            decisions: store.clone(),
            signing: store.clone(),
            outbox: store.clone(),
            chains: chains.clone(),
            clock: Arc::clone(&clock),
            signs,
            prices: Arc::clone(&prices),
            low_wallets: Default::default(),
            authorizations: store.clone(),
            authority: authority.clone(),
        });
        let spending = Arc::new(Spending::new(
            Arc::clone(&config),
            store.clone(),
            store.clone(),
            store.clone(),
            store.clone(),
            store.clone(),
            chains.clone(),
            Arc::clone(&prices),
            Arc::clone(&executor),
            Arc::clone(&metrics),
            Arc::clone(&clock),
        ));
        let auditor = Arc::new(Auditor::new(
            Arc::clone(&config),
            store.clone(),
            store.clone(),
            store.clone(),
            &chains,
            Arc::clone(&clock),
            Arc::clone(&metrics),
        ));
        let operators = Arc::new(Operators {
            config: Arc::clone(&config),
            decisions: store.clone(),
            freezes: store.clone(),
            credentials: store.clone(),
            executor: Arc::clone(&executor),
            clock: Arc::clone(&clock),
        });
        let authorizations = Arc::new(Authorizations {
            store: store.clone(),
            operators: Arc::clone(&operators),
            authority,
            clock: Arc::clone(&clock),
        });
        let credentials = Arc::new(Credentials { store: store.clone(), clock: Arc::clone(&clock) });
        let overview = Arc::new(Overview {
            config: Arc::clone(&config),
            decisions: store.clone(),
            freezes: store.clone(),
            inflows: store.clone(),
            authorizations: store.clone(),
            leases: store.clone(),
            chains,
            limits: limits.clone(),
            prices: Arc::clone(&prices),
            clock: Arc::clone(&clock),
        });
        let reports = Arc::new(Reports {
            config: Arc::clone(&config),
            store: store.clone(),
            audit: store.clone(),
            authorizations: store.clone(),
            prices: Arc::clone(&prices),
            limits,
            clock: Arc::clone(&clock),
        });
        let alerts =
            Arc::new(AlertDelivery::new(config.model.org_id.clone(), alerts, store, Arc::clone(&metrics), clock));
        Services {
            config,
            spending,
            executor,
            auditor,
            operators,
            credentials,
            overview,
            reports,
            alerts,
            metrics,
            prices,
            authorizations,
        }
    }

    /// The same services delivering alerts to `channels` instead of the configured ones (their
    /// URLs given directly, not read from the environment).
    pub fn with_alert_channels(mut self, channels: Vec<AlertChannel>) -> Services {
        let d = &self.alerts;
        self.alerts = Arc::new(AlertDelivery::new(
            d.org.clone(),
            channels,
            Arc::clone(&d.outbox),
            Arc::clone(&d.metrics),
            Arc::clone(&d.clock),
        ));
        self
    }
}
