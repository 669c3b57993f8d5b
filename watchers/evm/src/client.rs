//! [`EvmClient`]: spendguard's view of one EVM chain through alloy.

use crate::units::{from_base_units, to_base_units};
use alloy::consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy::eips::{BlockId, BlockNumberOrTag, Encodable2718};
use alloy::network::TxSignerSync;
use alloy::primitives::{Address, Bytes, TxKind, B256, U256};
use alloy::providers::{Provider, RootProvider};
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use alloy::transports::{RpcError, TransportErrorKind};
use async_trait::async_trait;
use rust_decimal::Decimal;
use spendguard_chain::{
    with_failover, AuthorizationCancel, BlockOutflows, ChainClient, ChainError, ChainInflow, ChainOutflow, ChainResult,
    Prepared, RetryPolicy, SignedTx, Transfer, TransferAuthorization, TxOutcome,
};
use spendguard_core::model::{Asset, ChainKind};
use spendguard_core::price::{FeedKind, Observation};
use spendguard_core::reconcile::OutflowKind;
use std::collections::HashMap;
use std::future::{Future, IntoFuture};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;

alloy::sol! {
    /// The part of ERC-20 spendguard uses.
    interface IERC20 {
        function balanceOf(address account) external view returns (uint256);
        function transfer(address to, uint256 amount) external returns (bool);
    }

    /// EIP-3009's cancellation of an unused authorization, signed by its authorizer.
    struct CancelAuthorization {
        address authorizer;
        bytes32 nonce;
    }

    /// The part of EIP-3009 that cancels an authorization.
    interface IEip3009Cancel {
        function cancelAuthorization(address authorizer, bytes32 nonce, uint8 v, bytes32 r, bytes32 s) external;
    }

    /// EIP-3009's typed message (USDC's `transferWithAuthorization`), signed for x402 payments.
    struct TransferWithAuthorization {
        address from;
        address to;
        uint256 value;
        uint256 validAfter;
        uint256 validBefore;
        bytes32 nonce;
    }
}

/// The EIP-712 signature (65 bytes: r, s, v) of an EIP-3009 `TransferWithAuthorization` by
/// `signer`, under the token's domain on chain `chain_id`.
pub fn eip3009_signature(
    signer: &PrivateKeySigner,
    chain_id: u64,
    a: &TransferAuthorization,
) -> Result<[u8; 65], String> {
    use alloy::signers::SignerSync as _;
    use alloy::sol_types::SolStruct as _;
    let address = |text: &str| Address::from_str(text).map_err(|e| format!("{text:?}: {e}"));
    let domain = alloy::sol_types::Eip712Domain::new(
        Some(a.domain_name.clone().into()),
        Some(a.domain_version.clone().into()),
        Some(U256::from(chain_id)),
        Some(address(&a.token)?),
        None,
    );
    let message = TransferWithAuthorization {
        from: address(&a.from)?,
        to: address(&a.to)?,
        value: U256::from(a.value),
        validAfter: U256::from(a.valid_after),
        validBefore: U256::from(a.valid_before),
        nonce: B256::from(a.nonce),
    };
    let signature =
        signer.sign_hash_sync(&message.eip712_signing_hash(&domain)).map_err(|e| format!("signing: {e}"))?;
    Ok(signature.as_bytes())
}

/// Connection settings of an EVM chain (from the config's `[[chain]]`).
#[derive(Debug, Clone)]
pub struct EvmSettings {
    /// Configured chain id, e.g. `eth-local`.
    pub id: String,
    /// EIP-155 chain id.
    pub chain_id: u64,
    /// RPC URLs, in failover order.
    pub rpc: Vec<String>,
    /// Most spendguard pays per gas, in gwei.
    pub max_fee_per_gas_gwei: Option<Decimal>,
    /// How long one call to one URL may take before it counts as failed.
    pub rpc_timeout: Duration,
    /// How many more rounds over the URL list a retryable failure gets (with backoff);
    /// usually [`RetryPolicy::DEFAULT_RETRIES`].
    pub retries: u32,
}

/// One RPC URL, checked to serve the configured chain before its first use.
#[derive(Clone)]
struct Endpoint {
    provider: RootProvider,
    /// Scheme and host, for errors.
    name: String,
    /// Set once the endpoint has answered the configured chain id.
    verified: Arc<OnceCell<()>>,
}

/// A transaction receipt with the fields alloy's Ethereum type does not know (an OP-stack
/// chain's `l1Fee`).
type Receipt = alloy::serde::WithOtherFields<alloy::rpc::types::TransactionReceipt>;

/// What a transaction cost its sender, in wei: gas used × effective gas price, plus on OP-stack
/// chains (Optimism, Base…) the L1 data fee their receipts carry as `l1Fee`, charged beside it.
fn fee_of(receipt: &Receipt) -> Result<U256, String> {
    let execution = U256::from(receipt.gas_used) * U256::from(receipt.effective_gas_price);
    // Absent on L1s, null on an OP-stack deposit transaction: nothing to add.
    let l1 = match receipt.other.get_deserialized::<Option<U256>>("l1Fee") {
        None | Some(Ok(None)) => U256::ZERO,
        Some(Ok(Some(fee))) => fee,
        Some(Err(e)) => return Err(format!("l1Fee: {e}")),
    };
    Ok(execution + l1)
}

/// One EVM chain: balances, signing, broadcast and receipts, with failover across RPC URLs.
pub struct EvmClient {
    pub(crate) settings: EvmSettings,
    endpoints: Vec<Endpoint>,
    signers: HashMap<Address, PrivateKeySigner>,
    max_fee_wei: Option<u128>,
    /// `decimals()` of each price feed read, which never changes.
    pub(crate) feed_decimals: std::sync::Mutex<HashMap<Address, u8>>,
    /// Set once the node refused `debug_traceBlockByHash`: it is not asked again.
    pub(crate) traces_unsupported: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for EvmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys are never printed; only which addresses have one.
        f.debug_struct("EvmClient")
            .field("settings", &self.settings)
            .field("signers", &self.signers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl EvmClient {
    /// Fetches what signing a call from `from` needs — gas (a fifth more than estimated for
    /// contract calls, which can cost a little more when mined), fees under the cap, the
    /// account's nonce floor — and returns the signing step.
    async fn prepare_call(
        &self,
        from: Address,
        signer: PrivateKeySigner,
        to: Address,
        value: U256,
        input: Bytes,
    ) -> ChainResult<Prepared> {
        let request = TransactionRequest::default().from(from).to(to).value(value).input(input.clone().into());
        let estimated = self.rpc(|p| p.estimate_gas(request.clone()).into_future()).await?;
        let gas_limit = if input.is_empty() { estimated } else { estimated + estimated / 5 };
        let block =
            self.rpc(|p| async move { p.get_block_by_number(BlockNumberOrTag::Latest).await }).await?.ok_or_else(
                || ChainError::BadResponse { chain: self.settings.id.clone(), message: "no latest block".into() },
            )?;
        let base_fee = u128::from(block.header.base_fee_per_gas.unwrap_or(0));
        let tip = self.rpc(|p| p.get_max_priority_fee_per_gas().into_future()).await?;
        let mut max_fee = base_fee.saturating_mul(2).saturating_add(tip);
        let mut priority = tip;
        if let Some(cap) = self.max_fee_wei {
            if base_fee > cap {
                return Err(ChainError::FeeAboveCap {
                    chain: self.settings.id.clone(),
                    needed: format!("{} gwei base fee", from_base_units(U256::from(base_fee), 9)),
                    cap: format!("{} gwei", from_base_units(U256::from(cap), 9)),
                });
            }
            max_fee = max_fee.min(cap);
            priority = priority.min(max_fee);
        }
        let floor =
            self.rpc(|p| async move { p.get_transaction_count(from).block_id(BlockId::latest()).await }).await?;
        let fee_cap = from_base_units(U256::from(gas_limit) * U256::from(max_fee), 18);
        let fee_terms = format!(
            "gas {gas_limit} × max {} gwei (tip {} gwei)",
            from_base_units(U256::from(max_fee), 9),
            from_base_units(U256::from(priority), 9)
        );
        let chain = self.settings.id.clone();
        let chain_id = self.settings.chain_id;
        let sign = Box::new(move |sequence: Option<u64>| -> ChainResult<SignedTx> {
            let nonce = sequence.ok_or_else(|| ChainError::BadResponse {
                chain: chain.clone(),
                message: "EVM signing needs a nonce".into(),
            })?;
            let mut tx = TxEip1559 {
                chain_id,
                nonce,
                gas_limit,
                max_fee_per_gas: max_fee,
                max_priority_fee_per_gas: priority,
                to: TxKind::Call(to),
                value,
                access_list: Default::default(),
                input,
            };
            let signature = signer
                .sign_transaction_sync(&mut tx)
                .map_err(|e| ChainError::BadResponse { chain: chain.clone(), message: format!("signing: {e}") })?;
            let envelope = TxEnvelope::from(tx.into_signed(signature));
            let hash: B256 = *envelope.tx_hash();
            Ok(SignedTx {
                hash: format!("{hash:#x}"),
                raw: envelope.encoded_2718(),
                sequence: Some(nonce),
                fee_cap,
                fee_terms,
            })
        });
        Ok(Prepared { sequence_floor: Some(floor), sign })
    }

    /// A client for `settings` holding the given keys.
    pub fn new(settings: EvmSettings, signers: Vec<PrivateKeySigner>) -> ChainResult<EvmClient> {
        let bad = |message: String| ChainError::BadResponse { chain: settings.id.clone(), message };
        let endpoints = settings
            .rpc
            .iter()
            .map(|url| {
                let name = spendguard_chain::endpoint_name(url);
                let provider =
                    url.parse().map(RootProvider::new_http).map_err(|e| bad(format!("RPC URL {name}: {e}")))?;
                Ok(Endpoint { provider, name, verified: Arc::default() })
            })
            .collect::<ChainResult<Vec<_>>>()?;
        if endpoints.is_empty() {
            return Err(bad("no RPC URL configured".into()));
        }
        let max_fee_wei = match settings.max_fee_per_gas_gwei {
            Some(gwei) => Some(
                to_base_units(gwei, 9)
                    .ok()
                    .and_then(|w| u128::try_from(w).ok())
                    .ok_or_else(|| bad(format!("max_fee_per_gas_gwei {gwei} is not a whole number of wei")))?,
            ),
            None => None,
        };
        let signers = signers.into_iter().map(|s| (s.address(), s)).collect();
        Ok(EvmClient {
            settings,
            endpoints,
            signers,
            max_fee_wei,
            feed_decimals: Default::default(),
            traces_unsupported: Default::default(),
        })
    }

    fn error(&self, e: RpcError<TransportErrorKind>) -> ChainError {
        let chain = self.settings.id.clone();
        match e.as_error_resp() {
            // EIP-1474's transient codes: internal error, resource unavailable, limit exceeded.
            // The node could not answer now; it did not refuse anything.
            Some(payload) if matches!(payload.code, -32603 | -32002 | -32005) => ChainError::Unavailable {
                chain,
                message: format!("JSON-RPC error {}: {}", payload.code, payload.message),
            },
            Some(payload) => ChainError::Rejected {
                chain,
                reason: payload.message.to_string(),
                sequence_used: payload.message.to_lowercase().contains("nonce too low"),
            },
            None => ChainError::Unavailable { chain, message: e.to_string() },
        }
    }

    /// Runs `call` with failover, timeout and backoff ([`spendguard_chain::with_failover`]).
    pub(crate) async fn rpc<T, F, Fut>(&self, call: F) -> ChainResult<T>
    where
        F: Fn(RootProvider) -> Fut,
        Fut: Future<Output = Result<T, RpcError<TransportErrorKind>>>,
    {
        let policy = RetryPolicy { timeout: self.settings.rpc_timeout, retries: self.settings.retries };
        let call = &call;
        with_failover(&self.settings.id, &self.endpoints, policy, |endpoint| async move {
            self.verify(&endpoint).await?;
            call(endpoint.provider).await.map_err(|e| self.error(e))
        })
        .await
    }

    /// Checks, once per endpoint, that it serves the configured chain: a transaction signed
    /// for one chain must never be sent to, nor outflows read from, another.
    async fn verify(&self, endpoint: &Endpoint) -> ChainResult<()> {
        let expected = self.settings.chain_id;
        let check = || async {
            let found = endpoint.provider.get_chain_id().await.map_err(|e| self.error(e))?;
            if found == expected {
                return Ok(());
            }
            let wrong = ChainError::WrongChain {
                chain: self.settings.id.clone(),
                endpoint: endpoint.name.clone(),
                expected,
                found,
            };
            tracing::error!(error = %wrong, "RPC endpoint skipped");
            Err(wrong)
        };
        endpoint.verified.get_or_try_init(check).await.map(|_| ())
    }

    /// `owner`'s balance of `asset` at the end of block `number`.
    async fn balance_at(&self, owner: Address, asset: &Asset, number: u64) -> ChainResult<Decimal> {
        let at = BlockId::number(number);
        let raw = match &asset.token {
            None => self.rpc(|p| async move { p.get_balance(owner).block_id(at).await }).await?,
            Some(contract) => {
                let contract = self.address(contract)?;
                let input = Bytes::from(IERC20::balanceOfCall { account: owner }.abi_encode());
                let out = self
                    .rpc(|p| {
                        let req = TransactionRequest::default().to(contract).input(input.clone().into());
                        async move { p.call(req).block(at).await }
                    })
                    .await?;
                IERC20::balanceOfCall::abi_decode_returns(&out).map_err(|e| ChainError::BadResponse {
                    chain: self.settings.id.clone(),
                    message: format!("balanceOf of {contract} at block {number}: {e}"),
                })?
            }
        };
        Ok(from_base_units(raw, asset.decimals))
    }

    pub(crate) fn address(&self, text: &str) -> ChainResult<Address> {
        Address::from_str(text).map_err(|e| ChainError::BadResponse {
            chain: self.settings.id.clone(),
            message: format!("address {text}: {e}"),
        })
    }
}

#[async_trait]
impl ChainClient for EvmClient {
    fn chain_id(&self) -> &str {
        &self.settings.id
    }

    fn kind(&self) -> ChainKind {
        ChainKind::Evm
    }

    async fn balances(&self, address: &str, assets: &[Asset]) -> ChainResult<Vec<Decimal>> {
        let owner = self.address(address)?;
        let mut out = Vec::with_capacity(assets.len());
        for asset in assets {
            let raw = match &asset.token {
                None => self.rpc(|p| async move { p.get_balance(owner).block_id(BlockId::latest()).await }).await?,
                Some(contract) => {
                    let contract = self.address(contract)?;
                    let input = Bytes::from(IERC20::balanceOfCall { account: owner }.abi_encode());
                    let out = self
                        .rpc(|p| {
                            let req = TransactionRequest::default().to(contract).input(input.clone().into());
                            async move { p.call(req).await }
                        })
                        .await?;
                    IERC20::balanceOfCall::abi_decode_returns(&out).map_err(|e| ChainError::BadResponse {
                        chain: self.settings.id.clone(),
                        message: format!("balanceOf of {contract}: {e}"),
                    })?
                }
            };
            out.push(from_base_units(raw, asset.decimals));
        }
        Ok(out)
    }

    async fn balances_at(&self, address: &str, assets: &[Asset], number: u64) -> ChainResult<Vec<Decimal>> {
        let owner = self.address(address)?;
        let mut out = Vec::with_capacity(assets.len());
        for asset in assets {
            out.push(self.balance_at(owner, asset, number).await?);
        }
        Ok(out)
    }

    async fn read_price(&self, feed: &FeedKind) -> ChainResult<Observation> {
        match feed {
            FeedKind::Chainlink { feed, sequencer } => {
                self.read_chainlink(feed, sequencer.as_ref().map(|(s, _)| s.as_str())).await
            }
            FeedKind::Pyth { .. } => Err(ChainError::BadResponse {
                chain: self.settings.id.clone(),
                message: "a Pyth account is read on a Solana chain".into(),
            }),
        }
    }

    fn sign_transfer_authorization(&self, a: &TransferAuthorization) -> ChainResult<String> {
        let chain = || self.settings.id.clone();
        let signer = self
            .signers
            .get(&self.address(&a.from)?)
            .ok_or_else(|| ChainError::NoKey { chain: chain(), address: a.from.clone() })?;
        let signature = eip3009_signature(signer, self.settings.chain_id, a)
            .map_err(|message| ChainError::BadResponse { chain: chain(), message })?;
        Ok(format!("0x{}", hex::encode(signature)))
    }

    async fn prepare(&self, transfer: &Transfer) -> ChainResult<Prepared> {
        let from = self.address(&transfer.from)?;
        let signer = self
            .signers
            .get(&from)
            .cloned()
            .ok_or_else(|| ChainError::NoKey { chain: self.settings.id.clone(), address: transfer.from.clone() })?;
        let recipient = self.address(&transfer.to)?;
        let units = to_base_units(transfer.amount, transfer.asset.decimals)?;
        let (to, value, input) = match &transfer.asset.token {
            None => (recipient, units, Bytes::new()),
            Some(contract) => (
                self.address(contract)?,
                U256::ZERO,
                Bytes::from(IERC20::transferCall { to: recipient, amount: units }.abi_encode()),
            ),
        };
        self.prepare_call(from, signer, to, value, input).await
    }

    async fn prepare_cancel_authorization(&self, c: &AuthorizationCancel) -> ChainResult<Prepared> {
        use alloy::signers::SignerSync as _;
        use alloy::sol_types::SolStruct as _;
        let from = self.address(&c.from)?;
        let signer = self
            .signers
            .get(&from)
            .cloned()
            .ok_or_else(|| ChainError::NoKey { chain: self.settings.id.clone(), address: c.from.clone() })?;
        let token = self.address(&c.token)?;
        let domain = alloy::sol_types::Eip712Domain::new(
            Some(c.domain_name.clone().into()),
            Some(c.domain_version.clone().into()),
            Some(U256::from(self.settings.chain_id)),
            Some(token),
            None,
        );
        let message = CancelAuthorization { authorizer: from, nonce: B256::from(c.nonce) };
        let signature = signer.sign_hash_sync(&message.eip712_signing_hash(&domain)).map_err(|e| {
            ChainError::BadResponse { chain: self.settings.id.clone(), message: format!("signing: {e}") }
        })?;
        let bytes = signature.as_bytes();
        let input = IEip3009Cancel::cancelAuthorizationCall {
            authorizer: from,
            nonce: B256::from(c.nonce),
            v: bytes[64],
            r: B256::from_slice(&bytes[..32]),
            s: B256::from_slice(&bytes[32..64]),
        }
        .abi_encode();
        self.prepare_call(from, signer, token, U256::ZERO, Bytes::from(input)).await
    }

    async fn broadcast(&self, signed: &SignedTx) -> ChainResult<()> {
        let raw = signed.raw.clone();
        match self
            .rpc(|p| {
                let raw = raw.clone();
                async move { p.send_raw_transaction(&raw).await.map(|_| ()) }
            })
            .await
        {
            Ok(()) => Ok(()),
            // A node that already has it (a re-broadcast after a restart) is success.
            Err(ChainError::Rejected { reason, .. })
                if ["already known", "known transaction", "already imported", "already exists"]
                    .iter()
                    .any(|m| reason.to_lowercase().contains(m)) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn outcome(&self, hash: &str) -> ChainResult<Option<TxOutcome>> {
        let hash = B256::from_str(hash).map_err(|e| ChainError::BadResponse {
            chain: self.settings.id.clone(),
            message: format!("tx hash {hash}: {e}"),
        })?;
        let receipt: Option<Receipt> =
            self.rpc(|p| async move { p.raw_request("eth_getTransactionReceipt".into(), (hash,)).await }).await?;
        let Some(r) = receipt else { return Ok(None) };
        let Some(block) = r.block_number else { return Ok(None) };
        let fee = fee_of(&r).map_err(|message| ChainError::BadResponse { chain: self.settings.id.clone(), message })?;
        Ok(Some(TxOutcome { success: r.status(), block, fee: from_base_units(fee, 18) }))
    }

    async fn cannot_land(&self, tx: &SignedTx, from: &str, final_block: u64) -> ChainResult<bool> {
        let Some(nonce) = tx.sequence else { return Ok(false) };
        let from = self.address(from)?;
        let final_count = self
            .rpc(|p| async move { p.get_transaction_count(from).block_id(BlockId::number(final_block)).await })
            .await?;
        if final_count <= nonce {
            return Ok(false);
        }
        // The nonce is used at a final block: by this transaction, or by another one.
        Ok(self.outcome(&tx.hash).await?.is_none())
    }

    async fn head(&self) -> ChainResult<u64> {
        self.rpc(|p| p.get_block_number().into_future()).await
    }

    async fn genesis(&self) -> ChainResult<String> {
        self.block_hash(0).await?.ok_or_else(|| ChainError::BadResponse {
            chain: self.settings.id.clone(),
            message: "the node has no block 0".into(),
        })
    }

    async fn check_endpoints(&self) -> ChainResult<()> {
        for endpoint in &self.endpoints {
            match tokio::time::timeout(self.settings.rpc_timeout, self.verify(endpoint)).await {
                Ok(Err(wrong @ ChainError::WrongChain { .. })) => return Err(wrong),
                Ok(Err(e)) => {
                    tracing::warn!(chain = %self.settings.id, endpoint = %endpoint.name, error = %e, "cannot ask the endpoint its chain id now")
                }
                Err(_) => {
                    tracing::warn!(chain = %self.settings.id, endpoint = %endpoint.name, "the endpoint did not answer its chain id in time")
                }
                Ok(Ok(())) => {}
            }
        }
        Ok(())
    }

    async fn sent_count(&self, address: &str, block: u64) -> ChainResult<Option<u64>> {
        let address = self.address(address)?;
        let count = self
            .rpc(|p| async move { p.get_transaction_count(address).block_id(BlockId::number(block)).await })
            .await?;
        Ok(Some(count))
    }

    async fn wallet_marks(&self, addresses: &[String], number: u64) -> ChainResult<Vec<String>> {
        let at = BlockId::number(number);
        let mut marks = Vec::with_capacity(addresses.len());
        for address in addresses {
            let a = self.address(address)?;
            let nonce = self.rpc(|p| async move { p.get_transaction_count(a).block_id(at).await }).await?;
            let balance = self.rpc(|p| async move { p.get_balance(a).block_id(at).await }).await?;
            let code = self.rpc(|p| async move { p.get_code_at(a).block_id(at).await }).await?;
            marks.push(format!("nonce {nonce}, balance {balance}, code {}", alloy::primitives::keccak256(&code)));
        }
        Ok(marks)
    }

    async fn logged_blocks(&self, addresses: &[String], from: u64, to: u64) -> ChainResult<Vec<u64>> {
        let watched: Vec<B256> =
            addresses.iter().map(|a| self.address(a).map(|a| a.into_word())).collect::<ChainResult<_>>()?;
        let transfer = alloy::primitives::keccak256("Transfer(address,address,uint256)");
        let range = alloy::rpc::types::Filter::new().from_block(from).to_block(to).event_signature(transfer);
        let mut blocks = vec![];
        // Sent by the wallets (topic 1), and received (topic 2).
        for filter in [range.clone().topic1(watched.clone()), range.topic2(watched)] {
            let logs = self
                .rpc(|p| {
                    let filter = filter.clone();
                    async move { p.get_logs(&filter).await }
                })
                .await?;
            for log in logs {
                let number = log.block_number.ok_or_else(|| ChainError::BadResponse {
                    chain: self.settings.id.clone(),
                    message: "eth_getLogs answered a log without its block number".into(),
                })?;
                blocks.push(number);
            }
        }
        blocks.sort_unstable();
        blocks.dedup();
        Ok(blocks)
    }

    async fn block_hash(&self, number: u64) -> ChainResult<Option<String>> {
        let block = self.rpc(|p| async move { p.get_block_by_number(BlockNumberOrTag::Number(number)).await }).await?;
        Ok(block.map(|b| format!("{:#x}", b.header.hash)))
    }

    async fn block_outflows(
        &self,
        number: u64,
        watched: &[String],
        assets: &[Asset],
    ) -> ChainResult<Option<BlockOutflows>> {
        use alloy::consensus::Transaction as _;
        use alloy::network::TransactionResponse as _;
        let bad = |message: String| ChainError::BadResponse { chain: self.settings.id.clone(), message };
        // The watcher asks only for blocks at or below the head: a null is a node that lags
        // behind the one that reported the head, so it is retried on the other URLs.
        let block = self
            .rpc(|p| async move {
                p.get_block_by_number(BlockNumberOrTag::Number(number)).full().await?.ok_or(RpcError::NullResp)
            })
            .await?;
        let block_id = BlockId::hash(block.header.hash);
        // By hash, so a node that reorganised in between cannot hand us another block's receipts.
        // A node that has not caught up with the block answers null: that is retried (on the next
        // URL too), never taken as "no receipts".
        let receipts: Vec<Receipt> = self
            .rpc(|p| async move {
                let receipts: Option<Vec<Receipt>> = p.raw_request("eth_getBlockReceipts".into(), (block_id,)).await?;
                receipts.ok_or(RpcError::NullResp)
            })
            .await?;
        if receipts.len() != block.transactions.len() {
            return Err(ChainError::Unavailable {
                chain: self.settings.id.clone(),
                message: format!(
                    "block {number} has {} transactions but the node returned {} receipts",
                    block.transactions.len(),
                    receipts.len()
                ),
            });
        }
        let watched: Vec<Address> = watched.iter().filter_map(|a| Address::from_str(a).ok()).collect();
        let native = assets.iter().find(|a| a.token.is_none());
        let token_asset = |contract: Address| {
            assets.iter().find(|a| a.token.as_deref().and_then(|t| Address::from_str(t).ok()) == Some(contract))
        };
        let mut outflows = vec![];
        let mut inflows = vec![];
        for (position, tx) in block.transactions.txns().enumerate() {
            let hash = format!("{:#x}", tx.tx_hash());
            // Receipts come in transaction order (their count was checked above).
            let receipt = receipts
                .get(position)
                .filter(|r| r.transaction_hash == tx.tx_hash())
                .ok_or_else(|| bad(format!("no receipt for {hash} in block {number}")))?;
            // A reverted transaction moved no value (its fee is still paid).
            let moved = if receipt.status() { tx.value() } else { U256::ZERO };
            // EIP-7702: an authorization signed by a watched wallet's key delegates its code,
            // whoever sends the transaction carrying it.
            for (i, auth) in tx.authorization_list().unwrap_or_default().iter().enumerate() {
                // A bad signature, or one for another chain, is not applied here.
                let Ok(authority) = auth.recover_authority() else { continue };
                let chain_id = auth.chain_id();
                if !watched.contains(&authority)
                    || !(chain_id.is_zero() || *chain_id == U256::from(self.settings.chain_id))
                {
                    continue;
                }
                outflows.push(ChainOutflow {
                    tx_hash: hash.clone(),
                    index: i as u64,
                    kind: OutflowKind::Delegation,
                    from: format!("{authority:#x}"),
                    to: Some(format!("{:#x}", auth.address())),
                    token: None,
                    asset: None,
                    amount: Decimal::ZERO,
                    authorization_nonce: None,
                });
            }
            let from = tx.from();
            if let Some(to) = tx.to().filter(|t| watched.contains(t) && *t != from && moved > U256::ZERO) {
                inflows.push(ChainInflow {
                    tx_hash: hash.clone(),
                    index: 0,
                    kind: OutflowKind::Native,
                    from: format!("{from:#x}"),
                    to: format!("{to:#x}"),
                    token: None,
                    asset: native.map(Asset::key),
                    amount: from_base_units(moved, native.map_or(18, |a| a.decimals)),
                    balance_before: None,
                    balance_after: None,
                });
            }
            if !watched.contains(&from) {
                continue;
            }
            if moved > U256::ZERO {
                outflows.push(ChainOutflow {
                    tx_hash: hash.clone(),
                    index: 0,
                    kind: OutflowKind::Native,
                    from: format!("{from:#x}"),
                    to: tx.to().map(|t| format!("{t:#x}")),
                    token: None,
                    asset: native.map(Asset::key),
                    amount: from_base_units(moved, native.map_or(18, |a| a.decimals)),
                    authorization_nonce: None,
                });
            }
            let fee = fee_of(receipt).map_err(|e| bad(format!("receipt of {hash}: {e}")))?;
            outflows.push(ChainOutflow {
                tx_hash: hash,
                index: 0,
                kind: OutflowKind::Fee,
                from: format!("{from:#x}"),
                to: None,
                token: None,
                asset: native.map(Asset::key),
                amount: from_base_units(fee, native.map_or(18, |a| a.decimals)),
                authorization_nonce: None,
            });
        }
        // ERC-20 Transfer(address indexed from, address indexed to, uint256 value) from a watched
        // address, whoever sent the transaction (an approved spender moves tokens too).
        let transfer_topic = alloy::primitives::keccak256("Transfer(address,address,uint256)");
        // EIP-3009 (x402 payments): `AuthorizationUsed(authorizer, nonce)` precedes the
        // `Transfer` it allowed, from the same token; a facilitator's transaction may settle
        // several, so each Transfer takes the nearest unpaired one before it.
        let used_topic = alloy::primitives::keccak256("AuthorizationUsed(address,bytes32)");
        for receipt in &receipts {
            let mut used: Vec<(Address, Address, B256)> = vec![];
            for log in receipt.inner.logs() {
                let topics = log.topics();
                if topics.len() == 3 && topics[0] == used_topic {
                    used.push((log.address(), Address::from_word(topics[1]), topics[2]));
                    continue;
                }
                if topics.len() != 3 || topics[0] != transfer_topic || log.data().data.len() != 32 {
                    continue;
                }
                let from = Address::from_word(topics[1]);
                let to = Address::from_word(topics[2]);
                let value = U256::from_be_slice(&log.data().data);
                let contract = log.address();
                let asset = token_asset(contract);
                if watched.contains(&to) && to != from {
                    inflows.push(ChainInflow {
                        tx_hash: format!("{:#x}", receipt.transaction_hash),
                        index: log.log_index.unwrap_or(0),
                        kind: OutflowKind::Token,
                        from: format!("{from:#x}"),
                        to: format!("{to:#x}"),
                        token: Some(format!("{contract:#x}")),
                        asset: asset.map(Asset::key),
                        amount: from_base_units(value, asset.map_or(0, |a| a.decimals)),
                        balance_before: None,
                        balance_after: None,
                    });
                }
                if !watched.contains(&from) {
                    continue;
                }
                let authorization_nonce = used
                    .iter()
                    .rposition(|(token, authorizer, _)| *token == contract && *authorizer == from)
                    .map(|i| format!("{:#x}", used.remove(i).2));
                outflows.push(ChainOutflow {
                    tx_hash: format!("{:#x}", receipt.transaction_hash),
                    index: log.log_index.unwrap_or(0),
                    kind: OutflowKind::Token,
                    from: format!("{from:#x}"),
                    to: Some(format!("{:#x}", Address::from_word(topics[2]))),
                    token: Some(format!("{contract:#x}")),
                    asset: asset.map(Asset::key),
                    amount: from_base_units(value, asset.map_or(0, |a| a.decimals)),
                    authorization_nonce,
                });
            }
        }
        // Ether sent by code running as a watched wallet (an internal call): from call traces.
        let tx_hashes: Vec<B256> = block.transactions.txns().map(|tx| tx.tx_hash()).collect();
        if let Some((out, into)) = self.internal_transfers(block.header.hash, &tx_hashes, &watched, native).await? {
            outflows.extend(out);
            inflows.extend(into);
        }
        // Validator withdrawals (consensus layer) credited to a watched address: no transaction
        // carries them, and balance conservation would otherwise take them for a leak.
        for w in block.withdrawals.iter().flatten() {
            if watched.contains(&w.address) && w.amount > 0 {
                inflows.push(ChainInflow {
                    tx_hash: format!("withdrawal:{}", w.index),
                    index: w.index,
                    kind: OutflowKind::Native,
                    from: format!("{:#x}", Address::ZERO),
                    to: format!("{:#x}", w.address),
                    token: None,
                    asset: native.map(Asset::key),
                    // Withdrawals are in gwei.
                    amount: from_base_units(
                        U256::from(w.amount) * U256::from(1_000_000_000u64),
                        native.map_or(18, |a| a.decimals),
                    ),
                    balance_before: None,
                    balance_after: None,
                });
            }
        }
        // Each receiving wallet's balance of each asset it received, before and after the block.
        // For the books only: a node without that block's state any more (not an archive node,
        // backfilling old blocks) leaves them unknown rather than stopping the index.
        let mut read: HashMap<(String, String), Option<(Decimal, Decimal)>> = HashMap::new();
        for inflow in &mut inflows {
            let Some(asset) = inflow.asset.as_ref().and_then(|k| assets.iter().find(|a| a.key() == *k)) else {
                continue;
            };
            let key = (inflow.to.clone(), asset.key());
            let pair = match read.get(&key) {
                Some(pair) => *pair,
                None => {
                    let owner = self.address(&inflow.to)?;
                    let before = self.balance_at(owner, asset, number.saturating_sub(1)).await;
                    let after = self.balance_at(owner, asset, number).await;
                    let pair = match (before, after) {
                        (Ok(b), Ok(a)) => Some((b, a)),
                        (Err(e), _) | (_, Err(e)) => {
                            tracing::debug!(block = number, error = %e, "balances around an inflow unreadable");
                            None
                        }
                    };
                    read.insert(key, pair);
                    pair
                }
            };
            (inflow.balance_before, inflow.balance_after) = (pair.map(|p| p.0), pair.map(|p| p.1));
        }
        Ok(Some(BlockOutflows {
            number,
            hash: format!("{:#x}", block.header.hash),
            parent_hash: format!("{:#x}", block.header.parent_hash),
            outflows,
            inflows,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An anvil receipt of a plain transfer (21,000 gas at 2 gwei), with `extra` fields added.
    fn receipt(extra: serde_json::Value) -> Receipt {
        let mut r = serde_json::json!({
            "type": "0x2", "status": "0x1", "cumulativeGasUsed": "0x5208", "logs": [],
            "logsBloom": format!("0x{}", "0".repeat(512)),
            "transactionHash": format!("0x{}", "11".repeat(32)), "transactionIndex": "0x0",
            "blockHash": format!("0x{}", "22".repeat(32)), "blockNumber": "0x1",
            "gasUsed": "0x5208", "effectiveGasPrice": "0x77359400",
            "from": "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266", "to": "0x70997970c51812dc3a010c7d01b50e0d17dc79c8",
            "contractAddress": null,
        });
        r.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        serde_json::from_value(r).unwrap()
    }

    #[test]
    fn an_op_stack_receipt_adds_its_l1_data_fee_to_what_the_transaction_cost() {
        let execution = U256::from(21_000u64 * 2_000_000_000);
        assert_eq!(fee_of(&receipt(serde_json::json!({}))), Ok(execution));
        assert_eq!(fee_of(&receipt(serde_json::json!({ "l1Fee": "0x3e8" }))), Ok(execution + U256::from(1000)));
        // A deposit transaction's receipt: null.
        assert_eq!(fee_of(&receipt(serde_json::json!({ "l1Fee": null }))), Ok(execution));
        let bad = fee_of(&receipt(serde_json::json!({ "l1Fee": "lots" }))).unwrap_err();
        assert!(bad.starts_with("l1Fee: "), "{bad}");
    }
}
