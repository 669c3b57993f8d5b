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
    with_failover, BlockOutflows, ChainClient, ChainError, ChainInflow, ChainOutflow, ChainResult, Indexing, Prepared,
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
const SOL_DECIMALS: u32 = 9;
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
            // SPL Token account layout: mint (32), owner (32), amount (u64 LE), ...
            Some(a) => a
                .data
                .get(64..72)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
                .ok_or_else(|| self.bad(format!("token account {account} is not an SPL Token account"))),
        }
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

fn units(base: u64, decimals: u32) -> Decimal {
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
        let fee = outflows_of(&json, &[payer], &[])
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

    async fn signatures_since(
        &self,
        address: &str,
        until: Option<&str>,
        min_slot: u64,
    ) -> ChainResult<Vec<SignatureRef>> {
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
        Ok(newest_first.into_iter().rev().take_while(|(_, ok)| *ok).map(|(s, _)| s).collect())
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
        outflows_of(&tx, watched, assets).map(Some).map_err(|e| self.bad(format!("transaction {signature}: {e}")))
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

/// A transaction's token balances before and after it (`preTokenBalances`,
/// `postTokenBalances`), and the account keys they index.
struct TokenBalances<'a> {
    keys: &'a [&'a str],
    pre: Vec<&'a Value>,
    post: Vec<&'a Value>,
}

impl<'a> TokenBalances<'a> {
    fn of(meta: &'a Value, keys: &'a [&'a str]) -> TokenBalances<'a> {
        let list = |field: &str| -> Vec<&'a Value> { meta[field].as_array().into_iter().flatten().collect() };
        TokenBalances { keys, pre: list("preTokenBalances"), post: list("postTokenBalances") }
    }

    /// The owner of token account `account`.
    fn owner_of(&self, account: &str) -> Option<String> {
        let index = self.keys.iter().position(|k| *k == account)?;
        self.post.iter().chain(&self.pre).find(|b| b["accountIndex"] == index)?["owner"].as_str().map(str::to_string)
    }
}

/// The base units of one token balance entry.
fn token_amount(entry: &Value) -> Result<u64, String> {
    let text = entry["uiTokenAmount"]["amount"].as_str().ok_or("a token balance without amount")?;
    text.parse().map_err(|e| format!("token amount {text:?}: {e}"))
}

/// The outflows of the `watched` addresses in a `getTransaction` answer (`jsonParsed`), from its
/// balances before and after:
/// - SOL: each top-level system transfer from a watched address is a native outflow to its
///   destination; whatever else its balance dropped by (the fee, rent of accounts it created for
///   others) is one fee outflow. A failed transaction moved nothing but still paid its fee.
/// - SPL: each token account a watched address owns that lost tokens is a token outflow, to the
///   owner of the account(s) its transfers went to (`None` when they went to several owners);
///   an unconfigured mint keeps its base units and no asset, which reconciliation flags.
fn outflows_of(tx: &Value, watched: &[String], assets: &[Asset]) -> Result<TxOutflows, String> {
    let slot = tx["slot"].as_u64().ok_or("no slot")?;
    let meta = tx.get("meta").filter(|m| !m.is_null()).ok_or("no status metadata (meta)")?;
    let message = &tx["transaction"]["message"];
    let signature = tx["transaction"]["signatures"][0].as_str().ok_or("no signature")?.to_string();
    let keys: Vec<&str> = message["accountKeys"]
        .as_array()
        .ok_or("no accountKeys (not jsonParsed?)")?
        .iter()
        .map(|k| k["pubkey"].as_str().or(k.as_str()).ok_or("an account key is not a string"))
        .collect::<Result<_, _>>()?;
    let failed = !meta["err"].is_null();
    let top_level: Vec<&Value> = message["instructions"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
    let inner: Vec<&Value> = meta["innerInstructions"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|set| set["instructions"].as_array().into_iter().flatten())
        .collect();
    let native = assets.iter().find(|a| a.token.is_none());
    let mut outflows = vec![];
    let mut fees = vec![];
    for (i, &key) in keys.iter().enumerate().filter(|(_, k)| watched.iter().any(|w| w == *k)) {
        let balance =
            |field: &str| meta[field][i].as_u64().ok_or_else(|| format!("{field}[{i}] is missing or not a number"));
        let dropped = balance("preBalances")?.saturating_sub(balance("postBalances")?);
        let mut sent = 0u64;
        if !failed {
            for (n, ins) in top_level.iter().enumerate() {
                let is_transfer = ins["program"] == "system"
                    && matches!(ins["parsed"]["type"].as_str(), Some("transfer" | "transferWithSeed"));
                if !is_transfer || ins["parsed"]["info"]["source"] != key {
                    continue;
                }
                let info = &ins["parsed"]["info"];
                let lamports = info["lamports"].as_u64().ok_or("a system transfer without lamports")?;
                sent = sent.saturating_add(lamports);
                outflows.push(ChainOutflow {
                    tx_hash: signature.clone(),
                    index: n as u64,
                    kind: OutflowKind::Native,
                    from: key.to_string(),
                    to: info["destination"].as_str().map(str::to_string),
                    token: None,
                    asset: native.map(Asset::key),
                    amount: units(lamports, SOL_DECIMALS),
                    authorization_nonce: None,
                });
            }
        }
        let rest = dropped.saturating_sub(sent);
        if rest > 0 {
            fees.push(ChainOutflow {
                tx_hash: signature.clone(),
                index: 0,
                kind: OutflowKind::Fee,
                from: key.to_string(),
                to: None,
                token: None,
                asset: native.map(Asset::key),
                amount: units(rest, SOL_DECIMALS),
                authorization_nonce: None,
            });
        }
    }
    let tokens = TokenBalances::of(meta, &keys);
    let (pre_tokens, post_tokens) = (&tokens.pre, &tokens.post);
    let amount_of = token_amount;
    let owner_of = |account: &str| tokens.owner_of(account);
    for entry in pre_tokens {
        let Some(owner) = entry["owner"].as_str().filter(|o| watched.iter().any(|w| w == o)) else { continue };
        let index = entry["accountIndex"].as_u64().ok_or("a token balance without accountIndex")?;
        let mint = entry["mint"].as_str().ok_or("a token balance without mint")?;
        let before = amount_of(entry)?;
        // No balance after: the account was closed, its tokens gone with it.
        let after = match post_tokens.iter().find(|b| b["accountIndex"] == index) {
            Some(b) => amount_of(b)?,
            None => 0,
        };
        let Some(lost) = before.checked_sub(after).filter(|l| *l > 0) else { continue };
        let account = keys.get(index as usize).copied().ok_or_else(|| format!("accountIndex {index} out of range"))?;
        let mut recipients: Vec<String> = top_level
            .iter()
            .chain(&inner)
            .filter(|ins| ins["program"] == "spl-token")
            .filter(|ins| matches!(ins["parsed"]["type"].as_str(), Some("transfer" | "transferChecked")))
            .filter(|ins| ins["parsed"]["info"]["source"] == account)
            .filter_map(|ins| ins["parsed"]["info"]["destination"].as_str())
            .map(|destination| owner_of(destination).unwrap_or_else(|| destination.to_string()))
            .collect();
        recipients.sort();
        recipients.dedup();
        let asset = assets.iter().find(|a| a.token.as_deref() == Some(mint));
        outflows.push(ChainOutflow {
            tx_hash: signature.clone(),
            index,
            kind: OutflowKind::Token,
            from: owner.to_string(),
            to: (recipients.len() == 1).then(|| recipients.remove(0)),
            token: Some(mint.to_string()),
            asset: asset.map(Asset::key),
            amount: match asset {
                Some(a) => units(lost, a.decimals),
                None => Decimal::from(lost),
            },
            authorization_nonce: None,
        });
    }
    outflows.extend(fees);
    let inflows =
        if failed { vec![] } else { inflows_of(&signature, &keys, &top_level, &inner, meta, watched, assets)? };
    Ok(TxOutflows { slot, outflows, inflows })
}

/// The money that came into the `watched` addresses in a transaction, with each account's
/// balance before and after it (the transaction's own pre/post balances):
/// - SOL: each system transfer (top-level or inner) to a watched address from another one, from
///   its source;
/// - SPL: each token account a watched address owns that gained tokens, from the owner of the
///   account its transfer came from (the fee payer when no transfer shows one, e.g. a mint).
///
/// A token transfer into a wallet's existing token account does not name the wallet: the
/// watcher lists the token accounts' histories too ([`ChainClient::listed_accounts`]).
fn inflows_of(
    signature: &str,
    keys: &[&str],
    top_level: &[&Value],
    inner: &[&Value],
    meta: &Value,
    watched: &[String],
    assets: &[Asset],
) -> Result<Vec<ChainInflow>, String> {
    let is_watched = |k: &str| watched.iter().any(|w| w == k);
    let native = assets.iter().find(|a| a.token.is_none());
    let lamports_of = |field: &str, i: usize| meta[field][i].as_u64().map(|l| units(l, SOL_DECIMALS));
    let mut inflows = vec![];
    let instructions: Vec<&Value> = top_level.iter().chain(inner).copied().collect();
    for (n, ins) in instructions.iter().enumerate() {
        let is_transfer = ins["program"] == "system"
            && matches!(ins["parsed"]["type"].as_str(), Some("transfer" | "transferWithSeed"));
        let info = &ins["parsed"]["info"];
        let (Some(source), Some(destination)) = (info["source"].as_str(), info["destination"].as_str()) else {
            continue;
        };
        if !is_transfer || !is_watched(destination) || source == destination {
            continue;
        }
        let lamports = info["lamports"].as_u64().ok_or("a system transfer without lamports")?;
        let i = keys.iter().position(|k| *k == destination);
        inflows.push(ChainInflow {
            tx_hash: signature.to_string(),
            index: n as u64,
            kind: OutflowKind::Native,
            from: source.to_string(),
            to: destination.to_string(),
            token: None,
            asset: native.map(Asset::key),
            amount: units(lamports, SOL_DECIMALS),
            balance_before: i.and_then(|i| lamports_of("preBalances", i)),
            balance_after: i.and_then(|i| lamports_of("postBalances", i)),
        });
    }
    let tokens = TokenBalances::of(meta, keys);
    let (pre_tokens, post_tokens) = (&tokens.pre, &tokens.post);
    let amount_of = token_amount;
    let owner_of = |account: &str| tokens.owner_of(account);
    for entry in post_tokens {
        let Some(owner) = entry["owner"].as_str().filter(|o| is_watched(o)) else { continue };
        let index = entry["accountIndex"].as_u64().ok_or("a token balance without accountIndex")?;
        let mint = entry["mint"].as_str().ok_or("a token balance without mint")?;
        let after = amount_of(entry)?;
        // No balance before: the account was created in this transaction.
        let before = match pre_tokens.iter().find(|b| b["accountIndex"] == index) {
            Some(b) => amount_of(b)?,
            None => 0,
        };
        let Some(gained) = after.checked_sub(before).filter(|g| *g > 0) else { continue };
        let account = keys.get(index as usize).copied().ok_or_else(|| format!("accountIndex {index} out of range"))?;
        let sender = instructions
            .iter()
            .filter(|ins| ins["program"] == "spl-token")
            .filter(|ins| matches!(ins["parsed"]["type"].as_str(), Some("transfer" | "transferChecked")))
            .filter(|ins| ins["parsed"]["info"]["destination"] == account)
            .find_map(|ins| ins["parsed"]["info"]["source"].as_str())
            .map(|source| owner_of(source).unwrap_or_else(|| source.to_string()))
            .or_else(|| keys.first().map(|k| k.to_string()))
            .unwrap_or_default();
        if sender == owner {
            continue;
        }
        let asset = assets.iter().find(|a| a.token.as_deref() == Some(mint));
        let value = |base: u64| match asset {
            Some(a) => units(base, a.decimals),
            None => Decimal::from(base),
        };
        inflows.push(ChainInflow {
            tx_hash: signature.to_string(),
            index,
            kind: OutflowKind::Token,
            from: sender,
            to: owner.to_string(),
            token: Some(mint.to_string()),
            asset: asset.map(Asset::key),
            amount: value(gained),
            balance_before: Some(value(before)),
            balance_after: Some(value(after)),
        });
    }
    Ok(inflows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sol() -> Asset {
        Asset {
            chain: "sol".into(),
            symbol: "SOL".into(),
            token: None,
            decimals: 9,
            price: spendguard_core::price::AssetPrice::fixed(Decimal::ONE),
        }
    }

    /// A `getTransaction` answer (jsonParsed) in which `payer` sends 0.5 SOL to `to`.
    fn transfer_tx(err: Value, post_payer: u64) -> Value {
        json!({
            "slot": 42,
            "transaction": {
                "signatures": ["sig"],
                "message": {
                    "accountKeys": [{ "pubkey": "payer" }, { "pubkey": "to" }, { "pubkey": "11111111111111111111111111111111" }],
                    "instructions": [{ "program": "system", "parsed": { "type": "transfer",
                        "info": { "source": "payer", "destination": "to", "lamports": 500_000_000u64 } } }],
                },
            },
            "meta": { "err": err, "fee": 5000, "preBalances": [1_000_000_000u64, 0, 1], "postBalances": [post_payer, 0, 1] },
        })
    }

    #[test]
    fn money_into_a_watched_wallet_is_an_inflow_with_its_sender_and_balances() {
        // `payer` sends 0.5 SOL to the watched `to`.
        let sol_in = outflows_of(&transfer_tx(Value::Null, 499_995_000), &["to".to_string()], &[sol()]).unwrap();
        assert!(sol_in.outflows.is_empty());
        let got: Vec<_> =
            sol_in.inflows.iter().map(|i| (i.from.as_str(), i.to.as_str(), i.amount.to_string())).collect();
        assert_eq!(got, [("payer", "to", "0.5".to_string())]);
        assert_eq!(sol_in.inflows[0].balance_before, Some(Decimal::ZERO));
        // A failed transfer brought nothing.
        let failed = outflows_of(
            &transfer_tx(json!({ "InstructionError": [0, "Custom"] }), 999_995_000),
            &["to".to_string()],
            &[sol()],
        )
        .unwrap();
        assert!(failed.inflows.is_empty());
        // `payer`'s token account (index 1) sends 7 base units to `wallet`'s (index 2).
        let tx = json!({
            "slot": 9,
            "transaction": { "signatures": ["sig"], "message": {
                "accountKeys": [{ "pubkey": "payer" }, { "pubkey": "payer-ata" }, { "pubkey": "wallet-ata" }],
                "instructions": [{ "program": "spl-token", "parsed": { "type": "transferChecked",
                    "info": { "source": "payer-ata", "destination": "wallet-ata", "mint": "MINT" } } }] } },
            "meta": { "err": null, "fee": 5000, "preBalances": [1, 1, 1], "postBalances": [1, 1, 1],
                "preTokenBalances": [
                    { "accountIndex": 1, "mint": "MINT", "owner": "payer", "uiTokenAmount": { "amount": "10" } },
                    { "accountIndex": 2, "mint": "MINT", "owner": "wallet", "uiTokenAmount": { "amount": "3" } }],
                "postTokenBalances": [
                    { "accountIndex": 1, "mint": "MINT", "owner": "payer", "uiTokenAmount": { "amount": "3" } },
                    { "accountIndex": 2, "mint": "MINT", "owner": "wallet", "uiTokenAmount": { "amount": "10" } }] },
        });
        let tokens = outflows_of(&tx, &["wallet".to_string()], &[sol()]).unwrap();
        let got: Vec<_> = tokens
            .inflows
            .iter()
            .map(|i| {
                (
                    i.from.as_str(),
                    i.amount.to_string(),
                    i.balance_before.unwrap().to_string(),
                    i.balance_after.unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(got, [("payer", "7".to_string(), "3".to_string(), "10".to_string())], "unknown mint: base units");
    }

    #[test]
    fn a_transfer_yields_its_value_and_its_fee_and_a_failed_one_only_its_fee() {
        let watched = ["payer".to_string()];
        let ok = outflows_of(&transfer_tx(Value::Null, 499_995_000), &watched, &[sol()]).unwrap();
        let got: Vec<_> = ok.outflows.iter().map(|o| (o.kind, o.to.as_deref(), o.amount.to_string())).collect();
        assert_eq!(got, [(OutflowKind::Native, Some("to"), "0.5".into()), (OutflowKind::Fee, None, "0.000005".into())]);
        assert_eq!(ok.slot, 42);
        let failed =
            outflows_of(&transfer_tx(json!({ "InstructionError": [0, "Custom"] }), 999_995_000), &watched, &[sol()])
                .unwrap();
        let got: Vec<_> = failed.outflows.iter().map(|o| (o.kind, o.amount.to_string())).collect();
        assert_eq!(got, [(OutflowKind::Fee, "0.000005".into())]);
        // Not watched: nothing.
        assert!(outflows_of(&transfer_tx(Value::Null, 499_995_000), &["to".into()], &[sol()])
            .unwrap()
            .outflows
            .is_empty());
        // Not jsonParsed, or no status: a clear error rather than a guess.
        assert!(outflows_of(&json!({ "slot": 1, "transaction": {}, "meta": null }), &watched, &[]).is_err());
    }

    #[test]
    fn amounts_convert_exactly_or_not_at_all() {
        assert_eq!(base_units("1.5".parse().unwrap(), 9).unwrap(), 1_500_000_000);
        assert_eq!(base_units("0.000001".parse().unwrap(), 6).unwrap(), 1);
        assert!(matches!(base_units("0.0000001".parse().unwrap(), 6), Err(ChainError::Amount(_))));
        assert!(matches!(base_units("100000000000000".parse().unwrap(), 9), Err(ChainError::Amount(_))));
        assert_eq!(units(2_039_280, 9), "0.00203928".parse().unwrap());
    }
}
