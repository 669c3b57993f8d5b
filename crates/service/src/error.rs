//! Errors of the services. Denials are not errors: they are outcomes.

use spendguard_chain::ChainError;
use spendguard_store::StoreError;

/// What can go wrong serving an agent or an operator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The ledger failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A chain could not be reached or refused.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// No such decision (or not the caller's: the two are not told apart).
    #[error("no decision {0:?} of this agent")]
    UnknownDecision(String),
    /// The agent may not use the wallet, or the wallet does not exist.
    #[error("wallet {wallet} is not assigned to agent {agent}")]
    WalletNotAssigned {
        /// The agent.
        agent: String,
        /// The wallet asked for.
        wallet: String,
    },
    /// The caller may not do this: an operator without the role, or a request the decision's
    /// state refuses (expired, frozen, approved already, intent changed).
    #[error("{0}")]
    Forbidden(String),
    /// A malformed argument.
    #[error("{0}")]
    Invalid(String),
    /// The decision no longer fits the configuration (its wallet or asset is gone).
    #[error("{0}")]
    Unconfigured(String),
}

impl ServiceError {
    /// Can the same request succeed if tried again later (a chain or the ledger was busy)?
    pub fn is_retryable(&self) -> bool {
        match self {
            ServiceError::Store(e) => e.is_retryable(),
            ServiceError::Chain(e) => e.is_retryable(),
            _ => false,
        }
    }

    /// An operator's request the decision's state or the config refuses, told as such (403,
    /// 400, 404) rather than as a ledger failure.
    pub(crate) fn refusal(e: StoreError) -> ServiceError {
        match e {
            StoreError::UnknownDecision(id) => ServiceError::UnknownDecision(id),
            StoreError::UnknownScope { kind, id } => ServiceError::Invalid(format!("no {kind} {id:?} is configured")),
            e @ (StoreError::WrongStatus { .. }
            | StoreError::Expired(_)
            | StoreError::Frozen { .. }
            | StoreError::IntentChanged(_)
            | StoreError::IntentMissing(_)
            | StoreError::IntentNotShown { .. }
            | StoreError::NotYours(_)) => ServiceError::Forbidden(e.to_string()),
            other => ServiceError::Store(other),
        }
    }
}

/// Result alias of this crate.
pub type ServiceResult<T> = Result<T, ServiceError>;
