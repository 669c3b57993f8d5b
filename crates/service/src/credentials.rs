//! [`Credentials`]: bearer tokens of agents (`sgt_…`) and operators (`sgo_…`) — random, shown
//! once, stored as SHA-256 — and who a token belongs to.

use crate::clock::Clock;
use crate::error::{ServiceError, ServiceResult};
use sha2::{Digest, Sha256};
use spendguard_store::CredentialStore;
use std::sync::Arc;

/// The stored form of a token.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn random_token(prefix: &str) -> ServiceResult<String> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(|e| ServiceError::Invalid(format!("no randomness for a token: {e}")))?;
    Ok(format!("{prefix}{}", hex::encode(bytes)))
}

/// Issues tokens and tells whose a token is.
pub struct Credentials {
    pub(crate) store: Arc<dyn CredentialStore>,
    pub(crate) clock: Arc<dyn Clock>,
}

impl Credentials {
    /// The agent a bearer token belongs to, if it is live.
    pub async fn agent(&self, token: &str) -> ServiceResult<Option<String>> {
        Ok(self.store.agent_for_token(&hash_token(token)).await?)
    }

    /// The operator an operator token belongs to, if it is live.
    pub async fn operator(&self, token: &str) -> ServiceResult<Option<String>> {
        Ok(self.store.operator_for_token(&hash_token(token)).await?)
    }

    /// A new token for a configured agent (`sgt_` and 64 hex digits), issued by `by`; only its
    /// hash is kept.
    pub async fn issue_agent_token(&self, agent: &str, by: &str) -> ServiceResult<String> {
        let token = random_token("sgt_")?;
        self.store
            .add_agent_token(agent, &hash_token(&token), by, self.clock.now())
            .await
            .map_err(ServiceError::refusal)?;
        Ok(token)
    }

    /// A new admin API token for a configured operator (`sgo_` and 64 hex digits); only its
    /// hash is kept.
    pub async fn issue_operator_token(&self, operator: &str) -> ServiceResult<String> {
        let token = random_token("sgo_")?;
        self.store
            .add_operator_token(operator, &hash_token(&token), self.clock.now())
            .await
            .map_err(ServiceError::refusal)?;
        Ok(token)
    }
}
