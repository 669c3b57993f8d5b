//! [`SolanaClient`]: spendguard's view of one Solana cluster through solana-client.

use async_trait::async_trait;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use solana_client::client_error::{ClientError, ClientErrorKind};
use solana_client::nonblocking::rpc_client::RpcClient;
use solana_client::rpc_client::GetConfirmedSignaturesForAddress2Config;
use solana_client::rpc_config::RpcSendTransactionConfig;
use solana_client::rpc_request::RpcError;
use solana_client::rpc_request::RpcRequest;
use solana_commitment_config::CommitmentConfig;
use solana_keypair::Keypair;
use solana_message::Message;
use solana_pubkey::Pubkey;
use solana_signature::Signature;
use solana_signer::Signer as _;
use solana_transaction::Transaction;
use solana_transaction_status_client_types::TransactionConfirmationStatus;
use spendguard_chain::{
    with_failover, BlockOutflows, ChainClient, ChainError, ChainResult, FinalBalances, Indexing, Listing, Prepared,
    RetryPolicy, SignatureRef, SignedTx, Transfer, TxOutcome, TxOutflows,
};
use spendguard_core::model::{Asset, ChainKind};
use spendguard_core::price::{FeedKind, Observation};
use spendguard_core::reconcile::OutflowKind;
use std::collections::HashMap;
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// Size of an SPL Token account, whose rent-exempt minimum a new associated account costs.
const TOKEN_ACCOUNT_LEN: usize = 165;
/// Lamports per SOL.
pub(crate) const SOL_DECIMALS: u32 = 9;
/// Most signatures one `getSignaturesForAddress` page returns.
const SIGNATURES_PAGE: usize = 1000;

/// Connection settings of a Solana cluster (from the config's `[[chain]]`).
#[derive(Debug, Clone)]
pub struct SolanaSettings {
    /// Configured chain id, e.g. `sol-local`.
    pub id: String,
    /// RPC URLs, in failover order.
    pub rpc: Vec<String>,
    /// Read at `finalized` rather than `confirmed`.
    pub finalized: bool,
    /// How long one call to one URL may take before it counts as failed.
    pub rpc_timeout: Duration,
    /// How many more rounds over the URL list a retryable failure gets (with backoff).
    pub retries: u32,
}

/// One Solana cluster: balances, signing, broadcast and outcomes, with failover across URLs.
pub struct SolanaClient {
    settings: SolanaSettings,
    clients: Vec<Arc<RpcClient>>,
    keypairs: HashMap<Pubkey, Keypair>,
    pub(crate) commitment: CommitmentConfig,
}

impl std::fmt::Debug for SolanaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys are never printed; only which addresses have one.
        f.debug_struct("SolanaClient")
            .field("settings", &self.settings)
            .field("keypairs", &self.keypairs.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl SolanaClient {
    /// A client for `settings` holding the given keys.
    pub fn new(settings: SolanaSettings, keypairs: Vec<Keypair>) -> ChainResult<SolanaClient> {
        if settings.rpc.is_empty() {
            return Err(ChainError::BadResponse {
                chain: settings.id.clone(),
                message: "no RPC URL configured".into(),
            });
        }
        let commitment = if settings.finalized { CommitmentConfig::finalized() } else { CommitmentConfig::confirmed() };
        let clients = settings
            .rpc
            .iter()
            .map(|url| {
                Arc::new(RpcClient::new_with_timeout_and_commitment(url.clone(), settings.rpc_timeout, commitment))
            })
            .collect();
        let keypairs = keypairs.into_iter().map(|k| (k.pubkey(), k)).collect();
        Ok(SolanaClient { settings, clients, keypairs, commitment })
    }

    fn chain(&self) -> String {
        self.settings.id.clone()
    }

    pub(crate) fn bad(&self, message: String) -> ChainError {
        ChainError::BadResponse { chain: self.chain(), message }
    }

    fn error(&self, e: ClientError) -> ChainError {
        match e.kind() {
            ClientErrorKind::Io(_) | ClientErrorKind::Reqwest(_) | ClientErrorKind::Middleware(_) => {
                ChainError::Unavailable { chain: self.chain(), message: e.to_string() }
            }
            // -32005: node unhealthy (behind); -32004/-32007..: slot/block not available yet.
            ClientErrorKind::RpcError(RpcError::RpcResponseError {
                code: -32005 | -32004 | -32014 | -32016,
                message,
                ..
            }) => ChainError::Unavailable { chain: self.chain(), message: message.clone() },
            ClientErrorKind::RpcError(RpcError::RpcResponseError { message, .. }) => {
                ChainError::Rejected { chain: self.chain(), reason: message.clone(), sequence_used: false }
            }
            ClientErrorKind::TransactionError(t) => {
                ChainError::Rejected { chain: self.chain(), reason: t.to_string(), sequence_used: false }
            }
            _ => self.bad(e.to_string()),
        }
    }

    /// Runs `call` with failover, timeout and backoff ([`spendguard_chain::with_failover`]).
    pub(crate) async fn rpc<T, F, Fut>(&self, call: F) -> ChainResult<T>
    where
        F: Fn(Arc<RpcClient>) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let policy = RetryPolicy { timeout: self.settings.rpc_timeout, retries: self.settings.retries };
        with_failover(&self.settings.id, &self.clients, policy, |c| {
            let answer = call(c);
            async move { answer.await.map_err(|e| self.error(e)) }
        })
        .await
    }

    pub(crate) fn pubkey(&self, text: &str) -> ChainResult<Pubkey> {
        Pubkey::from_str(text).map_err(|e| self.bad(format!("address {text}: {e}")))
    }

    /// Lamports (or token base units) of an account's SPL Token balance; 0 when it does not exist.
    async fn token_units(&self, account: Pubkey) -> ChainResult<u64> {
        let commitment = self.commitment;
        let found = self.rpc(|c| async move { c.get_account_with_commitment(&account, commitment).await }).await?.value;
        match found {
            None => Ok(0),
            Some(a) => self.token_account_units(&account, &a.data),
        }
    }

    /// The amount held by an SPL Token account, from its data.
    fn token_account_units(&self, account: &Pubkey, data: &[u8]) -> ChainResult<u64> {
        // SPL Token account layout: mint (32), owner (32), amount (u64 LE), ...
        data.get(64..72)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .ok_or_else(|| self.bad(format!("token account {account} is not an SPL Token account")))
    }

    /// `getTransaction` (jsonParsed, v0 transactions, at our commitment) as JSON; `None` when
    /// the node does not have it.
    async fn transaction_json(&self, signature: &str) -> ChainResult<Option<Value>> {
        Signature::from_str(signature).map_err(|e| self.bad(format!("signature {signature}: {e}")))?;
        let params = json!([signature, {
            "encoding": "jsonParsed",
            "commitment": self.commitment.commitment,
            "maxSupportedTransactionVersion": 0,
        }]);
        self.rpc(|c| {
            let params = params.clone();
            async move { c.send(RpcRequest::GetTransaction, params).await }
        })
        .await
    }

    fn token_program(&self, mint: &Pubkey, owner: &Pubkey) -> ChainResult<()> {
        if *owner == spl_token_interface::ID {
            Ok(())
        } else {
            Err(self.bad(format!(
                "mint {mint} belongs to program {owner}, not SPL Token (Token-2022 mints are not supported)"
            )))
        }
    }
}

/// `amount` in base units of an asset with `decimals`; it must be whole and fit in a u64.
fn base_units(amount: Decimal, decimals: u32) -> ChainResult<u64> {
    let scaled = Decimal::from(10u64.pow(decimals)).checked_mul(amount);
    match scaled {
        Some(s) if s.fract().is_zero() && s >= Decimal::ZERO => {
            u64::try_from(s).map_err(|_| ChainError::Amount(format!("{amount} is too large")))
        }
        Some(_) => Err(ChainError::Amount(format!("{amount} has more than {decimals} decimals"))),
        None => Err(ChainError::Amount(format!("{amount} is too large"))),
    }
}

pub(crate) fn units(base: u64, decimals: u32) -> Decimal {
    (Decimal::from(base) / Decimal::from(10u64.pow(decimals))).normalize()
}

#[async_trait]
impl ChainClient for SolanaClient {
    fn chain_id(&self) -> &str {
        &self.settings.id
    }

    fn kind(&self) -> ChainKind {
        ChainKind::Solana
    }

    async fn read_price(&self, feed: &FeedKind) -> ChainResult<Observation> {
        match feed {
            FeedKind::Pyth { account, .. } => self.read_pyth(account).await,
            FeedKind::Chainlink { .. } => Err(self.bad("a Chainlink feed is read on an EVM chain".into())),
        }
    }

    async fn balances(&self, address: &str, assets: &[Asset]) -> ChainResult<Vec<Decimal>> {
        let owner = self.pubkey(address)?;
        let commitment = self.commitment;
        let mut out = Vec::with_capacity(assets.len());
        for asset in assets {
            let base = match &asset.token {
                None => {
                    self.rpc(|c| async move { c.get_balance_with_commitment(&owner, commitment).await }).await?.value
                }
                Some(mint) => {
                    let mint = self.pubkey(mint)?;
                    self.token_units(spl_associated_token_account_interface::address::get_associated_token_address(
                        &owner, &mint,
                    ))
                    .await?
                }
            };
            out.push(units(base, asset.decimals));
        }
        Ok(out)
    }

    async fn prepare(&self, transfer: &Transfer) -> ChainResult<Prepared> {
        let payer = self.pubkey(&transfer.from)?;
        let keypair = self
            .keypairs
            .get(&payer)
            .map(Keypair::insecure_clone)
            .ok_or_else(|| ChainError::NoKey { chain: self.chain(), address: transfer.from.clone() })?;
        let recipient = self.pubkey(&transfer.to)?;
        let amount = base_units(transfer.amount, transfer.asset.decimals)?;
        let commitment = self.commitment;
        let mut instructions = vec![];
        let mut rent = 0;
        match &transfer.asset.token {
            None => instructions.push(solana_system_interface::instruction::transfer(&payer, &recipient, amount)),
            Some(mint) => {
                use spl_associated_token_account_interface::address::get_associated_token_address;
                let mint = self.pubkey(mint)?;
                let mint_account = self
                    .rpc(|c| async move { c.get_account_with_commitment(&mint, commitment).await })
                    .await?
                    .value
                    .ok_or_else(|| self.bad(format!("mint {mint} does not exist")))?;
                self.token_program(&mint, &mint_account.owner)?;
                let source = get_associated_token_address(&payer, &mint);
                let destination = get_associated_token_address(&recipient, &mint);
                let exists = self
                    .rpc(|c| async move { c.get_account_with_commitment(&destination, commitment).await })
                    .await?
                    .value
                    .is_some();
                if !exists {
                    // The recipient has no account for this token yet: create it, paying its rent.
                    instructions.push(
                        spl_associated_token_account_interface::instruction::create_associated_token_account_idempotent(
                            &payer,
                            &recipient,
                            &mint,
                            &spl_token_interface::ID,
                        ),
                    );
                    rent = self
                        .rpc(|c| async move { c.get_minimum_balance_for_rent_exemption(TOKEN_ACCOUNT_LEN).await })
                        .await?;
                }
                let decimals = u8::try_from(transfer.asset.decimals)
                    .map_err(|_| ChainError::Amount(format!("{} decimals", transfer.asset.decimals)))?;
                instructions.push(
                    spl_token_interface::instruction::transfer_checked(
                        &spl_token_interface::ID,
                        &source,
                        &mint,
                        &destination,
                        &payer,
                        &[],
                        amount,
                        decimals,
                    )
                    .map_err(|e| self.bad(format!("transfer_checked: {e}")))?,
                );
            }
        }
        let (blockhash, last_valid) =
            self.rpc(|c| async move { c.get_latest_blockhash_with_commitment(commitment).await }).await?;
        let message = Message::new_with_blockhash(&instructions, Some(&payer), &blockhash);
        let fee = {
            let message = message.clone();
            self.rpc(|c| {
                let message = message.clone();
                async move { c.get_fee_for_message(&message).await }
            })
            .await?
        };
        let fee_cap = units(fee + rent, SOL_DECIMALS);
        let fee_terms = if rent > 0 {
            format!("fee {fee} lamports + {rent} lamports rent for the recipient's token account; blockhash {blockhash} valid to block height {last_valid}")
        } else {
            format!("fee {fee} lamports; blockhash {blockhash} valid to block height {last_valid}")
        };
        let chain = self.chain();
        let sign = Box::new(move |_sequence: Option<u64>| -> ChainResult<SignedTx> {
            let mut tx = Transaction::new_unsigned(message);
            tx.try_sign(&[&keypair], blockhash)
                .map_err(|e| ChainError::BadResponse { chain: chain.clone(), message: format!("signing: {e}") })?;
            let raw = bincode::serialize(&tx)
                .map_err(|e| ChainError::BadResponse { chain: chain.clone(), message: format!("encoding: {e}") })?;
            Ok(SignedTx { hash: tx.signatures[0].to_string(), raw, sequence: None, fee_cap, fee_terms })
        });
        Ok(Prepared { sequence_floor: None, sign })
    }

    async fn broadcast(&self, signed: &SignedTx) -> ChainResult<()> {
        let tx: Transaction =
            bincode::deserialize(&signed.raw).map_err(|e| self.bad(format!("stored transaction: {e}")))?;
        let config = RpcSendTransactionConfig {
            preflight_commitment: Some(self.commitment.commitment),
            ..RpcSendTransactionConfig::default()
        };
        let tx = &tx;
        match self.rpc(|c| async move { c.send_transaction_with_config(tx, config).await.map(|_| ()) }).await {
            Ok(()) => Ok(()),
            // Sent before (a re-broadcast after a restart) and already in the ledger: success.
            Err(ChainError::Rejected { reason, .. }) if reason.contains("already been processed") => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn outcome(&self, hash: &str) -> ChainResult<Option<TxOutcome>> {
        let signature = Signature::from_str(hash).map_err(|e| self.bad(format!("signature {hash}: {e}")))?;
        let signatures = [signature];
        let status = self.rpc(|c| async move { c.get_signature_statuses(&signatures).await }).await?.value;
        let Some(Some(status)) = status.into_iter().next() else { return Ok(None) };
        if !status.satisfies_commitment(self.commitment) {
            return Ok(None);
        }
        // A status without the transaction behind it: a node still catching up; ask again later.
        let Some(json) = self.transaction_json(hash).await? else { return Ok(None) };
        // The fee payer's fee outflow: the fee plus the rent of accounts it created for others.
        let payer = json["transaction"]["message"]["accountKeys"][0]["pubkey"].as_str().unwrap_or_default().to_string();
        let fee = crate::transactions::outflows_of(&json, &[payer], &[])
            .map_err(|e| self.bad(format!("transaction {hash}: {e}")))?
            .outflows
            .iter()
            .filter(|o| o.kind == OutflowKind::Fee)
            .map(|o| o.amount)
            .sum();
        Ok(Some(TxOutcome { success: status.err.is_none(), block: status.slot, fee }))
    }

    async fn cannot_land(&self, tx: &SignedTx, _from: &str, _final_block: u64) -> ChainResult<bool> {
        let decoded: Transaction =
            bincode::deserialize(&tx.raw).map_err(|e| self.bad(format!("stored transaction: {e}")))?;
        let blockhash = decoded.message.recent_blockhash;
        let commitment = self.commitment;
        if self.rpc(|c| async move { c.is_blockhash_valid(&blockhash, commitment).await }).await? {
            return Ok(false);
        }
        // The blockhash has expired at our commitment: the transaction can only be in the chain
        // already, or never.
        Ok(self.outcome(&tx.hash).await?.is_none())
    }

    fn indexing(&self) -> Indexing {
        Indexing::Signatures
    }

    async fn final_balances(&self, address: &str, assets: &[Asset]) -> ChainResult<FinalBalances> {
        let owner = self.pubkey(address)?;
        // The wallet and its associated token accounts in one `getMultipleAccounts`: one slot for all.
        let mut accounts = vec![owner];
        for asset in assets {
            if let Some(mint) = &asset.token {
                let mint = self.pubkey(mint)?;
                accounts
                    .push(spl_associated_token_account_interface::address::get_associated_token_address(&owner, &mint));
            }
        }
        let finalized = CommitmentConfig::finalized();
        let read = self
            .rpc(|c| {
                let accounts = accounts.clone();
                async move { c.get_multiple_accounts_with_commitment(&accounts, finalized).await }
            })
            .await?;
        if read.value.len() != accounts.len() {
            return Err(self.bad(format!(
                "getMultipleAccounts answered {} accounts for {} asked",
                read.value.len(),
                accounts.len()
            )));
        }
        let mut found = accounts.iter().zip(read.value);
        let lamports = found.next().and_then(|(_, a)| a).map_or(0, |a| a.lamports);
        let mut balances = Vec::with_capacity(assets.len());
        for asset in assets {
            let base = match &asset.token {
                None => lamports,
                Some(_) => match found.next() {
                    Some((account, Some(a))) => self.token_account_units(account, &a.data)?,
                    // A token account that does not exist holds nothing.
                    _ => 0,
                },
            };
            balances.push(units(base, asset.decimals));
        }
        Ok(FinalBalances { slot: read.context.slot, balances })
    }

    async fn finalized_slot(&self) -> ChainResult<u64> {
        let finalized = CommitmentConfig::finalized();
        self.rpc(|c| async move { c.get_slot_with_commitment(finalized).await }).await
    }

    async fn signature_slots(&self, signatures: &[String]) -> ChainResult<Vec<Option<u64>>> {
        let parsed: Vec<Signature> = signatures
            .iter()
            .map(|s| Signature::from_str(s).map_err(|e| self.bad(format!("recorded signature {s}: {e}"))))
            .collect::<Result<_, _>>()?;
        let mut slots = Vec::with_capacity(parsed.len());
        // `getSignatureStatuses` takes at most 256 signatures a call.
        for chunk in parsed.chunks(256) {
            let statuses = self
                .rpc(|c| {
                    let chunk = chunk.to_vec();
                    async move { c.get_signature_statuses_with_history(&chunk).await }
                })
                .await?
                .value;
            if statuses.len() != chunk.len() {
                return Err(self.bad(format!(
                    "getSignatureStatuses answered {} statuses for {} signatures",
                    statuses.len(),
                    chunk.len()
                )));
            }
            slots.extend(statuses.into_iter().map(|s| s.map(|s| s.slot)));
        }
        Ok(slots)
    }

    async fn signatures_since(&self, address: &str, until: Option<&str>, min_slot: u64) -> ChainResult<Listing> {
        let address = self.pubkey(address)?;
        let until = until
            .map(|s| Signature::from_str(s).map_err(|e| self.bad(format!("stored cursor {s}: {e}"))))
            .transpose()?;
        let commitment = self.commitment;
        let mut newest_first = vec![];
        let mut before = None;
        // Pages run newest to oldest; stop at the cursor, below `min_slot`, or at the end.
        loop {
            let config = || GetConfirmedSignaturesForAddress2Config {
                before,
                until,
                limit: Some(SIGNATURES_PAGE),
                commitment: Some(commitment),
            };
            let page = self
                .rpc(|c| {
                    let config = config();
                    async move { c.get_signatures_for_address_with_config(&address, config).await }
                })
                .await?;
            let full = page.len() == SIGNATURES_PAGE;
            let mut below_start = false;
            for s in page {
                if s.slot < min_slot {
                    below_start = true;
                    break;
                }
                // A node may list what is not yet final at our commitment (surfpool ignores the
                // parameter): those are the newest, left for a later pass.
                let final_enough = match (&s.confirmation_status, self.settings.finalized) {
                    (None | Some(TransactionConfirmationStatus::Finalized), _) => true,
                    (Some(TransactionConfirmationStatus::Confirmed), finalized) => !finalized,
                    (Some(TransactionConfirmationStatus::Processed), _) => false,
                };
                let signature = Signature::from_str(&s.signature)
                    .map_err(|e| self.bad(format!("getSignaturesForAddress listed {:?}: {e}", s.signature)))?;
                before = Some(signature);
                newest_first.push((SignatureRef { signature: s.signature, slot: s.slot }, final_enough));
            }
            if !full || below_start {
                break;
            }
        }
        // Oldest first, up to the first one not final yet: the cursor never skips past a gap.
        let listed = newest_first.len();
        let ready: Vec<SignatureRef> =
            newest_first.into_iter().rev().take_while(|(_, ok)| *ok).map(|(s, _)| s).collect();
        Ok(Listing { not_final: (listed - ready.len()) as u64, ready })
    }

    fn listed_accounts(&self, address: &str, assets: &[Asset]) -> Vec<String> {
        use spl_associated_token_account_interface::address::get_associated_token_address;
        let mut accounts = vec![address.to_string()];
        let Ok(owner) = Pubkey::from_str(address) else { return accounts };
        // Classic SPL token accounts: a Token-2022 mint's accounts are not listed yet.
        for mint in assets.iter().filter_map(|a| a.token.as_deref()).filter_map(|m| Pubkey::from_str(m).ok()) {
            accounts.push(get_associated_token_address(&owner, &mint).to_string());
        }
        accounts
    }

    async fn transaction_outflows(
        &self,
        signature: &str,
        watched: &[String],
        assets: &[Asset],
    ) -> ChainResult<Option<TxOutflows>> {
        let Some(tx) = self.transaction_json(signature).await? else { return Ok(None) };
        crate::transactions::outflows_of(&tx, watched, assets)
            .map(Some)
            .map_err(|e| self.bad(format!("transaction {signature}: {e}")))
    }

    async fn head(&self) -> ChainResult<u64> {
        let commitment = self.commitment;
        self.rpc(|c| async move { c.get_slot_with_commitment(commitment).await }).await
    }

    async fn genesis(&self) -> ChainResult<String> {
        self.rpc(|c| async move { c.get_genesis_hash().await }).await.map(|hash| hash.to_string())
    }

    async fn block_hash(&self, _number: u64) -> ChainResult<Option<String>> {
        Err(self.bad("Solana outflows are indexed by signature, not by block".into()))
    }

    async fn block_outflows(
        &self,
        _number: u64,
        _watched: &[String],
        _assets: &[Asset],
    ) -> ChainResult<Option<BlockOutflows>> {
        Err(self.bad("Solana outflows are indexed by signature, not by block".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_convert_exactly_or_not_at_all() {
        assert_eq!(base_units("1.5".parse().unwrap(), 9).unwrap(), 1_500_000_000);
        assert_eq!(base_units("0.000001".parse().unwrap(), 6).unwrap(), 1);
        assert!(matches!(base_units("0.0000001".parse().unwrap(), 6), Err(ChainError::Amount(_))));
        assert!(matches!(base_units("100000000000000".parse().unwrap(), 9), Err(ChainError::Amount(_))));
        assert_eq!(units(2_039_280, 9), "0.00203928".parse().unwrap());
    }
}
