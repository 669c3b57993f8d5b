//! [`Authorizations`]: what a wallet-side hook (or an operator) asks about an external
//! wallet's authorization token — is it ours, and is it still good to pay with — and the
//! public key that verifies tokens offline.

use crate::authority::Authority;
use crate::clock::Clock;
use crate::error::{ServiceError, ServiceResult};
use crate::operators::Operators;
use crate::overview::AuthorizationItem;
use serde::Serialize;
use spendguard_config::AdminAction;
use spendguard_store::{AuthorizationState, AuthorizationStore};
use std::sync::Arc;

/// Who asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// An agent: only about tokens issued to it.
    Agent(String),
    /// An operator with the `view` role: about any token.
    Operator(String),
}

/// What a token is worth now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenStatus {
    /// Signed by spendguard, open and not expired: the payment it describes may be sent.
    Valid,
    /// A payment on chain already used it.
    Consumed,
    /// Its expiry passed unpaid.
    Expired,
    /// A freeze, a decommission or the agent revoked it.
    Revoked,
    /// Not a token spendguard issued (bad signature, another key, unknown decision, altered).
    Invalid,
}

/// The answer of `POST /v1/authorizations/verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    /// What the token is worth now.
    pub status: TokenStatus,
    /// Why, in words.
    pub detail: String,
    /// The authorization it is (absent for an invalid token): decision, agent, wallet, asset,
    /// amount, recipient, expiry, state and what ended it.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<AuthorizationItem>,
}

impl Verification {
    fn invalid(detail: String) -> Verification {
        Verification { status: TokenStatus::Invalid, detail, authorization: None }
    }
}

/// Most bytes of a token accepted for verification: ours are well under 2 KiB.
pub const TOKEN_MAX: usize = 8 * 1024;

/// Verification of authorization tokens.
pub struct Authorizations {
    pub(crate) store: Arc<dyn AuthorizationStore>,
    pub(crate) operators: Arc<Operators>,
    pub(crate) authority: Option<Arc<Authority>>,
    pub(crate) clock: Arc<dyn Clock>,
}

impl Authorizations {
    /// The key that verifies tokens, or why this process has none.
    pub fn authority(&self) -> ServiceResult<&Authority> {
        self.authority
            .as_deref()
            .ok_or_else(|| ServiceError::Unconfigured("this process holds no authority key".into()))
    }

    /// What `token` is worth now, for `caller`: an agent learns only about its own tokens (any
    /// other answers `invalid`, so that tokens cannot be probed); an operator needs `view`.
    pub async fn verify(&self, caller: &Caller, token: &str) -> ServiceResult<Verification> {
        if let Caller::Operator(op) = caller {
            self.operators.permit(op, AdminAction::View)?;
        }
        if token.len() > TOKEN_MAX {
            return Err(ServiceError::Invalid(format!("token is longer than {TOKEN_MAX} bytes")));
        }
        let claims = match self.authority()?.verify(token) {
            Ok(c) => c,
            Err(e) => return Ok(Verification::invalid(e.to_string())),
        };
        if matches!(caller, Caller::Agent(agent) if *agent != claims.sub) {
            return Ok(Verification::invalid("not a token issued to this agent".into()));
        }
        let Some(a) = self.store.authorization(&claims.jti).await? else {
            return Ok(Verification::invalid(format!("no authorization of decision {} is recorded", claims.jti)));
        };
        // A signature of ours over claims the ledger never stored (a key leak) is not an
        // authorization.
        if a.token != token {
            return Ok(Verification::invalid(format!("decision {} was authorized with another token", a.decision_id)));
        }
        let now = self.clock.now();
        let (status, detail) = match a.state {
            AuthorizationState::Open if now <= a.expires_at => {
                (TokenStatus::Valid, format!("open until {}", a.expires_at.to_rfc3339()))
            }
            AuthorizationState::Open => {
                (TokenStatus::Expired, format!("expired at {} (not yet released)", a.expires_at.to_rfc3339()))
            }
            AuthorizationState::Consumed => {
                (TokenStatus::Consumed, format!("paid by transaction {}", a.ended_by.as_deref().unwrap_or("?")))
            }
            AuthorizationState::Expired => (TokenStatus::Expired, a.ended_by.clone().unwrap_or_default()),
            AuthorizationState::Revoked => (TokenStatus::Revoked, a.ended_by.clone().unwrap_or_default()),
        };
        Ok(Verification { status, detail, authorization: Some(AuthorizationItem::of(a)) })
    }
}
