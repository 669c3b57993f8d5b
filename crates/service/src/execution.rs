//! [`Executor`]: carries out reserved decisions — builds the transfer from the decision and the
//! configuration, has the ledger allocate the nonce and store the signed transaction (checking
//! it pays exactly the decided intent) before anything is sent, broadcasts it, and fails what
//! the chain refuses. Its background pass ([`crate::followup`]) follows what was sent.

use crate::authority::{Authority, AuthorizationClaims};
use crate::chains::Chains;
use crate::clock::Clock;
use crate::error::{ServiceError, ServiceResult};
use spendguard_chain::{AuthorizationCancel, TransferAuthorization};
use spendguard_chain::{ChainClient, ChainError, SignedTx, Transfer};
use spendguard_config::Config;
use spendguard_core::model::{Asset, Custody, Wallet};
use spendguard_core::SpendStatus;
use spendguard_store::{
    Account, AuthorizationKind, AuthorizationRecord, AuthorizationRequest, AuthorizationStore, Authorizing,
    DecisionRecord, DecisionStore, Intent, IssueWith, Issued, OutboxStore, Resigning, SignWith, SignedRecord, Signing,
    SigningError, SigningStore, StoreError, X402Request,
};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// Signs, sends and follows spends.
pub struct Executor {
    pub(crate) config: Arc<Config>,
    pub(crate) decisions: Arc<dyn DecisionStore>,
    pub(crate) signing: Arc<dyn SigningStore>,
    pub(crate) outbox: Arc<dyn OutboxStore>,
    pub(crate) chains: Chains,
    pub(crate) clock: Arc<dyn Clock>,
    /// False in a process that holds no keys (status, reports): it never executes anything,
    /// leaving reserved spends to a process that can sign them.
    pub(crate) signs: bool,
    /// Prices, for valuing balances (`balance_low`).
    pub(crate) prices: Arc<crate::prices::PriceBook>,
    /// Wallets known to be below their `balance_low_usd`, so it is reported once per drop.
    pub(crate) low_wallets: Mutex<HashSet<String>>,
    /// External wallets' authorizations.
    pub(crate) authorizations: Arc<dyn AuthorizationStore>,
    /// The key authorizations are signed with; `None` in a process that signs nothing.
    pub(crate) authority: Option<Arc<Authority>>,
}

/// A transfer ready to sign: what the ledger checks against the decision's intent, the account
/// whose nonce it allocates, and the signing step.
struct Ready {
    intent: Intent,
    account: Option<Account>,
    sign: SignWith,
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

/// A chain client's signing step as the ledger runs it.
fn sign_with(sign: spendguard_chain::SignFn) -> SignWith {
    Box::new(move |seq| {
        sign(seq)
            .map(|s| SignedRecord {
                hash: s.hash,
                raw: s.raw,
                sequence: s.sequence,
                fee_cap: s.fee_cap,
                fee_terms: s.fee_terms,
            })
            .map_err(|e| SigningError { retryable: e.is_retryable(), source: Box::new(e) })
    })
}

/// Exactly what a decision's transfer puts on chain, for the ledger to hold against the intent
/// bound when the spend was decided.
fn intent_of(record: &DecisionRecord, wallet: &Wallet, asset: &Asset) -> Intent {
    Intent {
        agent: record.agent.clone(),
        wallet: wallet.id.clone(),
        from_address: wallet.address.clone(),
        chain: wallet.chain.clone(),
        asset: asset.key(),
        token: asset.token.clone(),
        decimals: asset.decimals,
        recipient: record.recipient.clone(),
        amount: record.amount,
        operation: record.operation.clone(),
        memo: record.memo.clone(),
    }
}

impl Executor {
    /// Does this process hold keys, and so execute spends?
    pub fn signs(&self) -> bool {
        self.signs
    }

    /// The authorization of decision `id`, if it has one.
    pub async fn authorization(&self, id: &str) -> ServiceResult<Option<AuthorizationRecord>> {
        Ok(self.authorizations.authorization(id).await?)
    }

    /// The key external wallets' authorizations are signed with, if this process holds it.
    pub fn authority(&self) -> Option<Arc<Authority>> {
        self.authority.clone()
    }

    pub(crate) async fn record(&self, id: &str) -> ServiceResult<DecisionRecord> {
        self.decisions.decision(id).await?.ok_or_else(|| ServiceError::UnknownDecision(id.to_string()))
    }

    fn wallet_and_asset(&self, record: &DecisionRecord) -> ServiceResult<(&Wallet, &Asset)> {
        let model = &self.config.model;
        let wallet = model
            .wallet(&record.wallet)
            .ok_or_else(|| ServiceError::Unconfigured(format!("wallet {} is gone from the config", record.wallet)))?;
        let key = record.asset.as_deref().unwrap_or_default();
        let asset = model
            .assets
            .iter()
            .find(|a| a.key() == key)
            .ok_or_else(|| ServiceError::Unconfigured(format!("asset {key} is gone from the config")))?;
        Ok((wallet, asset))
    }

    /// Signs and broadcasts a reserved decision; returns where it stands afterwards. A chain
    /// that cannot be reached leaves it for the background pass; a refusal fails it. A process
    /// without keys leaves it alone.
    pub async fn execute(&self, id: &str) -> ServiceResult<DecisionRecord> {
        let record = self.record(id).await?;
        if !self.signs || !matches!(record.status, SpendStatus::Reserved | SpendStatus::Signed) {
            return Ok(record);
        }
        let (wallet, asset) = self.wallet_and_asset(&record)?;
        if let Custody::External { authorization_ttl } = wallet.custody {
            return self.authorize(&record, wallet, asset, authorization_ttl).await;
        }
        if let Some(x402) = &record.x402 {
            return self.sign_x402(&record, wallet, asset, x402).await;
        }
        let client = Arc::clone(self.chains.get(&wallet.chain)?);
        let signed = match self.signing.signed_tx(id).await? {
            Some(signed) => signed,
            None => {
                let ready = match self.prepare(&record, client.as_ref()).await? {
                    Ok(Some(ready)) => ready,
                    Ok(None) => return Ok(record),
                    Err(e) => return self.fail(id, &e.to_string(), true).await,
                };
                let at = self.clock.now();
                match self.signing.sign(id, ready.intent, ready.account, ready.sign, at).await {
                    Ok(Signing::Signed(s) | Signing::AlreadySigned(s)) => s,
                    Ok(Signing::NotExecutable(_)) => return self.record(id).await,
                    Err(StoreError::Signing(e)) if e.retryable => {
                        tracing::warn!(decision = id, error = %e, "signing failed; will retry");
                        return Ok(record);
                    }
                    Err(StoreError::Signing(e)) => return self.fail(id, &e.to_string(), false).await,
                    // What would reach the chain is not what was decided (the config changed
                    // the wallet's address or the token since): never sent, and released.
                    Err(e @ (StoreError::IntentChanged(_) | StoreError::IntentMissing(_))) => {
                        return self.fail(id, &e.to_string(), false).await
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };
        let broadcast = self.broadcast(id, client.as_ref(), &signed).await;
        // Whatever the answer, the transaction may be on its way: balances read before are old.
        self.chains.forget_balances(&wallet.id);
        broadcast
    }

    /// Fetches what signing `record`'s transfer needs: the intent it pays, the account whose
    /// nonce the ledger allocates and the signing step. `Ok(Ok(None))` when the chain is
    /// unreachable (try later); `Ok(Err)` when the chain refuses; `Err` when the decision no
    /// longer fits the config.
    async fn prepare(
        &self,
        record: &DecisionRecord,
        client: &dyn ChainClient,
    ) -> ServiceResult<Result<Option<Ready>, ChainError>> {
        let (wallet, asset) = self.wallet_and_asset(record)?;
        let transfer = Transfer {
            from: wallet.address.clone(),
            to: record.recipient.clone(),
            asset: asset.clone(),
            amount: record.amount,
        };
        let intent = intent_of(record, wallet, asset);
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
        Ok(Ok(Some(Ready { intent, account, sign: sign_with(prepared.sign) })))
    }

    /// Authorizes a reserved decision of an external wallet: the agent pays it from its own
    /// wallet before `now + ttl`. The token is signed over the intent hash bound when the spend
    /// was decided, inside the ledger transaction that stores it; a freeze since the
    /// reservation releases the decision instead.
    async fn authorize(
        &self,
        record: &DecisionRecord,
        wallet: &Wallet,
        asset: &Asset,
        ttl: chrono::TimeDelta,
    ) -> ServiceResult<DecisionRecord> {
        let id = record.id.as_str();
        let Some(authority) = self.authority.clone() else {
            tracing::warn!(
                decision = id,
                "no authority key in this process: the authorization is left to one that has it"
            );
            return Ok(record.clone());
        };
        let now = self.clock.now();
        let expires_at = now + ttl;
        let fee_cap = self.config.chain_settings(&wallet.chain).and_then(|c| c.external_fee_cap());
        let mut claims = AuthorizationClaims {
            iss: format!("spendguard:{}", self.config.model.org_id),
            sub: record.agent.clone(),
            jti: record.id.clone(),
            iat: now.timestamp(),
            exp: expires_at.timestamp(),
            intent_hash: String::new(),
            chain: wallet.chain.clone(),
            from: wallet.address.clone(),
            to: record.recipient.clone(),
            asset: asset.key(),
            token: asset.token.clone(),
            amount: record.amount.normalize().to_string(),
        };
        let issue: IssueWith = Box::new(move |intent_hash: &str| {
            claims.intent_hash = intent_hash.to_string();
            Ok(Issued { token: authority.issue(&claims), nonce: None })
        });
        self.store_authorization(
            record,
            AuthorizationKind::External,
            intent_of(record, wallet, asset),
            expires_at,
            fee_cap,
            issue,
        )
        .await
    }

    /// Signs an x402 payment: an EIP-3009 `TransferWithAuthorization` of exactly the decided
    /// amount, payee and token, valid until now plus the lesser of the server's
    /// `maxTimeoutSeconds` and `[x402] max_timeout`, with a random nonce — signed inside the
    /// ledger transaction that stores it, so one decision never has two live authorizations.
    async fn sign_x402(
        &self,
        record: &DecisionRecord,
        wallet: &Wallet,
        asset: &Asset,
        x402: &X402Request,
    ) -> ServiceResult<DecisionRecord> {
        let client = Arc::clone(self.chains.get(&wallet.chain)?);
        let now = self.clock.now();
        let timeout = chrono::TimeDelta::seconds(i64::try_from(x402.max_timeout_seconds).unwrap_or(i64::MAX))
            .min(self.config.x402.max_timeout);
        let valid_before = now + timeout;
        let token = asset.token.clone().ok_or_else(|| {
            ServiceError::Unconfigured(format!("asset {} has no token contract to authorize", asset.key()))
        })?;
        let value = crate::x402::base_units(record.amount, asset.decimals).ok_or_else(|| {
            ServiceError::Invalid(format!(
                "amount {} is not a whole number of {}'s base units",
                record.amount,
                asset.key()
            ))
        })?;
        let mut nonce = [0u8; 32];
        getrandom::getrandom(&mut nonce).map_err(|e| ServiceError::Unconfigured(format!("no randomness: {e}")))?;
        let authorization = TransferAuthorization {
            from: wallet.address.clone(),
            to: record.recipient.clone(),
            token,
            domain_name: x402.domain_name.clone(),
            domain_version: x402.domain_version.clone(),
            value,
            valid_after: 0,
            valid_before: u64::try_from(valid_before.timestamp()).unwrap_or(0),
            nonce,
        };
        let request = x402.clone();
        let issue: IssueWith = Box::new(move |_intent_hash: &str| {
            let signature = client
                .sign_transfer_authorization(&authorization)
                .map_err(|e| SigningError { retryable: e.is_retryable(), source: Box::new(e) })?;
            let nonce = format!("0x{}", hex::encode(authorization.nonce));
            // Addresses as EIP-55 writes them: facilitators (web3.py) refuse lower-case ones.
            let signed = crate::x402::PaymentAuthorization {
                from: spendguard_core::model::eip55_address(&authorization.from),
                to: spendguard_core::model::eip55_address(&authorization.to),
                value: authorization.value.to_string(),
                valid_after: authorization.valid_after.to_string(),
                valid_before: authorization.valid_before.to_string(),
                nonce: nonce.clone(),
            };
            Ok(Issued { token: crate::x402::payment_header(&request, &signed, &signature), nonce: Some(nonce) })
        });
        let expires_at = chrono::DateTime::from_timestamp(valid_before.timestamp(), 0).unwrap_or(valid_before);
        self.store_authorization(
            record,
            AuthorizationKind::X402,
            intent_of(record, wallet, asset),
            expires_at,
            None,
            issue,
        )
        .await
    }

    /// Cancels open x402 authorization `id` on chain: the wallet sends `cancelAuthorization`
    /// with its EIP-712 signature (its nonce allocated by the ledger, the transaction stored
    /// before it is sent), then waits up to a minute for the chain's answer. Executed, the
    /// authorization is revoked and its budget released; reverted (the server settled it
    /// first), it stays, and the settlement is reconciled as usual.
    pub async fn cancel_x402(&self, id: &str) -> ServiceResult<AuthorizationRecord> {
        let record = self.record(id).await?;
        let (wallet, asset) = self.wallet_and_asset(&record)?;
        let a = self
            .authorizations
            .authorization(id)
            .await?
            .ok_or_else(|| ServiceError::Invalid(format!("decision {id} has no authorization to cancel")))?;
        let (Some(x402), Some(nonce), Some(token)) = (&record.x402, a.nonce.as_deref(), asset.token.clone()) else {
            return Err(ServiceError::Invalid(format!("decision {id} is not an x402 payment")));
        };
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(nonce.trim_start_matches("0x"), &mut bytes).map_err(|_| {
            ServiceError::Invalid(format!("decision {id}'s authorization nonce {nonce} is not 32 bytes"))
        })?;
        let client = Arc::clone(self.chains.get(&wallet.chain)?);
        let cancel = AuthorizationCancel {
            from: wallet.address.clone(),
            token,
            domain_name: x402.domain_name.clone(),
            domain_version: x402.domain_version.clone(),
            nonce: bytes,
        };
        let prepared = client.prepare_cancel_authorization(&cancel).await?;
        let floor = prepared
            .sequence_floor
            .ok_or_else(|| ServiceError::Unconfigured(format!("chain {} allocates no account nonce", wallet.chain)))?;
        let account = Account { chain: wallet.chain.clone(), address: wallet.address.clone(), floor };
        let signed = self
            .authorizations
            .sign_cancellation(id, account, sign_with(prepared.sign), self.clock.now())
            .await
            .map_err(ServiceError::refusal)?;
        client.broadcast(&chain_tx(&signed)).await?;
        self.chains.forget_balances(&wallet.id);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Some(outcome) = client.outcome(&signed.hash).await? {
                return Ok(self.authorizations.cancellation_landed(id, outcome.success, self.clock.now()).await?);
            }
            if std::time::Instant::now() > deadline {
                return Err(ServiceError::Invalid(format!(
                    "the cancellation {} was sent but is not mined yet; run the command again to follow it",
                    signed.hash
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }

    /// Has the ledger store an authorization `issue` signs, in the transaction that checks the
    /// decision is still reserved, unfrozen and what was decided.
    async fn store_authorization(
        &self,
        record: &DecisionRecord,
        kind: AuthorizationKind,
        intent: Intent,
        expires_at: chrono::DateTime<chrono::Utc>,
        fee_cap: Option<rust_decimal::Decimal>,
        issue: IssueWith,
    ) -> ServiceResult<DecisionRecord> {
        let id = record.id.as_str();
        let now = self.clock.now();
        let request = AuthorizationRequest { kind, intent, expires_at, fee_cap, issue };
        match self.authorizations.authorize(id, request, now).await {
            Ok(Authorizing::Authorized(_) | Authorizing::NotExecutable(_)) => self.record(id).await,
            Err(e @ (StoreError::IntentChanged(_) | StoreError::IntentMissing(_))) => {
                self.fail(id, &e.to_string(), false).await
            }
            Err(StoreError::Signing(e)) if e.retryable => Ok(record.clone()),
            Err(StoreError::Signing(e)) => self.fail(id, &e.to_string(), false).await,
            Err(e) => Err(e.into()),
        }
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
    ) -> ServiceResult<DecisionRecord> {
        let id = record.id.as_str();
        if dead.sequence.is_some() {
            return self.fail(id, why, true).await;
        }
        let ready = match self.prepare(record, client).await? {
            Ok(Some(ready)) => ready,
            Ok(None) => return Ok(record.clone()),
            Err(e) => return self.fail(id, &format!("{why}; re-signing it failed: {e}"), true).await,
        };
        match self.signing.resign(id, &dead.hash, ready.intent, ready.sign, self.clock.now()).await {
            Ok(Resigning::Resigned(signed)) => {
                tracing::warn!(decision = id, dead = %dead.hash, new = %signed.hash, "expired transaction re-signed");
                let broadcast = self.broadcast(id, client, &signed).await;
                self.chains.forget_balances(&record.wallet);
                broadcast
            }
            Ok(Resigning::Exhausted) => {
                self.fail(id, &format!("{why} (it had been re-signed once already)"), true).await
            }
            Ok(Resigning::Stale) => self.record(id).await,
            Err(StoreError::Signing(e)) if e.retryable => Ok(record.clone()),
            Err(StoreError::Signing(e)) => self.fail(id, &e.to_string(), true).await,
            Err(e @ (StoreError::IntentChanged(_) | StoreError::IntentMissing(_))) => {
                self.fail(id, &e.to_string(), true).await
            }
            Err(e) => Err(e.into()),
        }
    }

    pub(crate) async fn broadcast(
        &self,
        id: &str,
        client: &dyn ChainClient,
        s: &SignedRecord,
    ) -> ServiceResult<DecisionRecord> {
        crate::failpoint::hit("after_sign", 86);
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
        crate::failpoint::hit("after_broadcast", 87);
        Ok(self.signing.mark_broadcast(id, self.clock.now()).await?)
    }

    pub(crate) async fn fail(&self, id: &str, reason: &str, sequence_used: bool) -> ServiceResult<DecisionRecord> {
        tracing::warn!(decision = id, reason, "spend failed");
        Ok(self.signing.fail(id, reason, sequence_used, self.clock.now()).await?)
    }
}
