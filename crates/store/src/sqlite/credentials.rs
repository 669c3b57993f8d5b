//! [`CredentialStore`] on SQLite: agents' and operators' bearer tokens, stored as SHA-256
//! hashes; revoking stops authentication at once.

use super::rows::to_us;
use super::{SqlStore, Writer};
use crate::api::CredentialStore;
use crate::audit::AuditInput;
use crate::error::{StoreError, StoreResult};
use crate::sql::{params, OptionalExtension};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

#[async_trait]
impl CredentialStore for SqlStore {
    async fn add_agent_token(&self, agent: &str, token_hash: &str, by: &str, at: DateTime<Utc>) -> StoreResult<()> {
        let (agent, hash, by) = (agent.to_string(), token_hash.to_string(), by.to_string());
        self.write(move |w| {
            if w.model.agent(&agent).is_none() {
                return Err(StoreError::UnknownScope { kind: "agent", id: agent });
            }
            w.conn.execute(
                "INSERT INTO agent_tokens (token_hash, agent, created_at_us) VALUES (?1, ?2, ?3)",
                params![hash, agent, to_us(at)],
            )?;
            w.audit(
                AuditInput {
                    kind: "agent_token",
                    actor: &by,
                    agent: Some(&agent),
                    detail: serde_json::json!({"token_hash_prefix": &hash[..hash.len().min(12)]}),
                    ..AuditInput::default()
                },
                at,
            )
        })
        .await
    }

    async fn revoke_agent(&self, agent: &str, by: &str, at: DateTime<Utc>) -> StoreResult<usize> {
        let (agent, by) = (agent.to_string(), by.to_string());
        self.write(move |w| w.revoke_agent(&agent, &by, at)).await
    }

    async fn agent_for_token(&self, token_hash: &str) -> StoreResult<Option<String>> {
        let hash = token_hash.to_string();
        self.read(move |c| {
            Ok(c.prepare_cached("SELECT agent FROM agent_tokens WHERE token_hash = ?1 AND revoked_at_us IS NULL")?
                .query_row(params![hash], |r| r.get(0))
                .optional()?)
        })
        .await
    }

    async fn add_operator_token(&self, operator: &str, token_hash: &str, at: DateTime<Utc>) -> StoreResult<()> {
        let (operator, hash) = (operator.to_string(), token_hash.to_string());
        self.write(move |w| {
            if w.model.operator(&operator).is_none() {
                return Err(StoreError::UnknownScope { kind: "operator", id: operator });
            }
            w.conn.execute(
                "INSERT INTO operator_tokens (token_hash, operator, created_at_us) VALUES (?1, ?2, ?3)",
                params![hash, operator, to_us(at)],
            )?;
            w.audit(
                AuditInput {
                    kind: "operator_token",
                    actor: &operator,
                    detail: serde_json::json!({"token_hash_prefix": &hash[..hash.len().min(12)]}),
                    ..AuditInput::default()
                },
                at,
            )
        })
        .await
    }

    async fn operator_for_token(&self, token_hash: &str) -> StoreResult<Option<String>> {
        let hash = token_hash.to_string();
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT operator FROM operator_tokens WHERE token_hash = ?1 AND revoked_at_us IS NULL",
            )?
            .query_row(params![hash], |r| r.get(0))
            .optional()?)
        })
        .await
    }
}

impl Writer {
    pub(crate) fn revoke_agent(&mut self, agent: &str, by: &str, at: DateTime<Utc>) -> StoreResult<usize> {
        let revoked = self.conn.execute(
            "UPDATE agent_tokens SET revoked_at_us = ?1 WHERE agent = ?2 AND revoked_at_us IS NULL",
            params![to_us(at), agent],
        )?;
        self.audit(
            AuditInput {
                kind: "agent_revoked",
                actor: by,
                agent: Some(agent),
                detail: serde_json::json!({"tokens_revoked": revoked}),
                ..AuditInput::default()
            },
            at,
        )?;
        Ok(revoked)
    }
}
