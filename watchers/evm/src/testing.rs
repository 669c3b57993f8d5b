//! Test helpers (feature `test-utils`): deploy a contract and move funds with a key directly,
//! bypassing spendguard, on a local node such as anvil.

use alloy::network::{EthereumWallet, TransactionBuilder};
use alloy::primitives::{Address, Bytes, U256};
use alloy::providers::{Provider, ProviderBuilder};
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{SolCall, SolValue};
use std::str::FromStr;

type TestResult<T> = Result<T, String>;

fn signer(secret_hex: &str) -> TestResult<PrivateKeySigner> {
    PrivateKeySigner::from_str(secret_hex.trim_start_matches("0x")).map_err(|e| e.to_string())
}

async fn send(rpc: &str, secret_hex: &str, tx: TransactionRequest) -> TestResult<(String, Option<String>)> {
    let url = rpc.parse().map_err(|e| format!("{e}"))?;
    let provider = ProviderBuilder::new().wallet(EthereumWallet::from(signer(secret_hex)?)).connect_http(url);
    let receipt = provider
        .send_transaction(tx)
        .await
        .map_err(|e| e.to_string())?
        .get_receipt()
        .await
        .map_err(|e| e.to_string())?;
    if !receipt.status() {
        return Err(format!("transaction {:#x} reverted", receipt.transaction_hash));
    }
    Ok((format!("{:#x}", receipt.transaction_hash), receipt.contract_address.map(|a| format!("{a:#x}"))))
}

/// Deploys `TestToken(name, symbol, supply)` from `creation_hex` (fixtures/evm/TestToken.bin)
/// and returns the contract address.
pub async fn deploy_token(
    rpc: &str,
    deployer_hex: &str,
    creation_hex: &str,
    name: &str,
    symbol: &str,
    supply: u128,
) -> TestResult<String> {
    let mut code = hex::decode(creation_hex.trim().trim_start_matches("0x")).map_err(|e| e.to_string())?;
    code.extend((name.to_string(), symbol.to_string(), U256::from(supply)).abi_encode_params());
    let tx = TransactionRequest::default().with_deploy_code(Bytes::from(code));
    let (_, address) = send(rpc, deployer_hex, tx).await?;
    address.ok_or_else(|| "no contract address in the receipt".to_string())
}

/// Sends `wei` of the native coin from the key's address to `to`; returns the tx hash.
pub async fn send_native(rpc: &str, from_hex: &str, to: &str, wei: u128) -> TestResult<String> {
    let to = Address::from_str(to).map_err(|e| e.to_string())?;
    Ok(send(rpc, from_hex, TransactionRequest::default().with_to(to).with_value(U256::from(wei))).await?.0)
}

/// Transfers `units` base units of an ERC-20 from the key's address to `to`; returns the tx hash.
pub async fn send_token(rpc: &str, from_hex: &str, token: &str, to: &str, units: u128) -> TestResult<String> {
    let token = Address::from_str(token).map_err(|e| e.to_string())?;
    let to = Address::from_str(to).map_err(|e| e.to_string())?;
    let input = crate::client::IERC20::transferCall { to, amount: U256::from(units) }.abi_encode();
    Ok(send(rpc, from_hex, TransactionRequest::default().with_to(token).with_input(Bytes::from(input))).await?.0)
}

/// The address of a private key.
pub fn address_of(secret_hex: &str) -> TestResult<String> {
    Ok(format!("{:#x}", signer(secret_hex)?.address()))
}

/// Raw JSON-RPC call (for anvil cheat codes such as `evm_mine` or `anvil_reorg`).
pub async fn rpc_call(rpc: &str, method: &str, params: serde_json::Value) -> TestResult<serde_json::Value> {
    let url = rpc.parse().map_err(|e| format!("{e}"))?;
    let provider = alloy::providers::RootProvider::<alloy::network::Ethereum>::new_http(url);
    provider.raw_request::<_, serde_json::Value>(method.to_string().into(), params).await.map_err(|e| e.to_string())
}

alloy::sol! {
    /// The test feed's setter (fixtures/evm/TestPriceFeed.sol).
    interface ITestPriceFeed {
        function setRound(uint80 id, int256 value, uint256 started, uint256 updated, uint80 answeredIn) external;
    }
}

/// Deploys `TestPriceFeed(decimals)` from `creation_hex` (fixtures/evm/TestPriceFeed.bin) and
/// returns its address.
pub async fn deploy_price_feed(rpc: &str, deployer_hex: &str, creation_hex: &str, decimals: u8) -> TestResult<String> {
    let mut code = hex::decode(creation_hex.trim().trim_start_matches("0x")).map_err(|e| e.to_string())?;
    code.extend(U256::from(decimals).abi_encode());
    let tx = TransactionRequest::default().with_deploy_code(Bytes::from(code));
    let (_, address) = send(rpc, deployer_hex, tx).await?;
    address.ok_or_else(|| "no contract address in the receipt".to_string())
}

/// One round of a test feed, as `latestRoundData` will answer it.
#[derive(Debug, Clone, Copy)]
pub struct FeedRound {
    /// Round id.
    pub id: u64,
    /// Answer, in the feed's decimals (may be zero or negative).
    pub answer: i128,
    /// `startedAt`, unix seconds.
    pub started: u64,
    /// `updatedAt`, unix seconds.
    pub updated: u64,
    /// `answeredInRound`.
    pub answered_in: u64,
}

/// Sets the latest round of a test feed (from its deployer).
pub async fn set_feed_round(rpc: &str, deployer_hex: &str, feed: &str, round: FeedRound) -> TestResult<()> {
    let feed = Address::from_str(feed).map_err(|e| e.to_string())?;
    let input = ITestPriceFeed::setRoundCall {
        id: alloy::primitives::Uint::from(round.id),
        value: alloy::primitives::I256::try_from(round.answer).map_err(|e| e.to_string())?,
        started: U256::from(round.started),
        updated: U256::from(round.updated),
        answeredIn: alloy::primitives::Uint::from(round.answered_in),
    }
    .abi_encode();
    send(rpc, deployer_hex, TransactionRequest::default().with_to(feed).with_input(Bytes::from(input))).await?;
    Ok(())
}

/// Sends an EIP-7702 (type 4) transaction from `sender_hex` carrying an authorization signed by
/// `wallet_hex` that delegates the wallet's code to `delegate`; returns the tx hash.
pub async fn delegate_code(rpc: &str, sender_hex: &str, wallet_hex: &str, delegate: &str) -> TestResult<String> {
    use alloy::eips::eip7702::Authorization;
    use alloy::network::TransactionBuilder7702;
    use alloy::signers::SignerSync;
    let wallet = signer(wallet_hex)?;
    let url = rpc.parse().map_err(|e| format!("{e}"))?;
    let provider = alloy::providers::RootProvider::<alloy::network::Ethereum>::new_http(url);
    let chain_id = provider.get_chain_id().await.map_err(|e| e.to_string())?;
    let nonce = provider.get_transaction_count(wallet.address()).await.map_err(|e| e.to_string())?;
    let auth = Authorization {
        chain_id: U256::from(chain_id),
        address: Address::from_str(delegate).map_err(|e| e.to_string())?,
        nonce,
    };
    let signature = wallet.sign_hash_sync(&auth.signature_hash()).map_err(|e| e.to_string())?;
    let tx = TransactionRequest::default()
        .with_to(wallet.address())
        .with_authorization_list(vec![auth.into_signed(signature)]);
    Ok(send(rpc, sender_hex, tx).await?.0)
}

alloy::sol! {
    /// The test drainer (fixtures/evm/TestDrainer.sol), called on a wallet delegated to it.
    interface ITestDrainer {
        function drain(address token, address to) external;
    }
}

/// Deploys a contract whose constructor takes no arguments; returns its address.
pub async fn deploy(rpc: &str, deployer_hex: &str, creation_hex: &str) -> TestResult<String> {
    let code = hex::decode(creation_hex.trim().trim_start_matches("0x")).map_err(|e| e.to_string())?;
    let tx = TransactionRequest::default().with_deploy_code(Bytes::from(code));
    let (_, address) = send(rpc, deployer_hex, tx).await?;
    address.ok_or_else(|| "no contract address in the receipt".to_string())
}

/// Calls `drain(token, to)` on `wallet` (delegated to the test drainer) from `sender_hex`;
/// returns the tx hash.
pub async fn drain(rpc: &str, sender_hex: &str, wallet: &str, token: &str, to: &str) -> TestResult<String> {
    let parse = |a: &str| Address::from_str(a).map_err(|e| e.to_string());
    let input = ITestDrainer::drainCall { token: parse(token)?, to: parse(to)? }.abi_encode();
    let tx =
        TransactionRequest::default().with_to(parse(wallet)?).with_input(Bytes::from(input)).with_gas_limit(300_000);
    Ok(send(rpc, sender_hex, tx).await?.0)
}

alloy::sol! {
    /// `fixtures/evm/TestBatchSettler.sol`.
    interface ITestBatchSettler {
        struct Authorization {
            address from;
            address to;
            uint256 value;
            uint256 validAfter;
            uint256 validBefore;
            bytes32 nonce;
            uint8 v;
            bytes32 r;
            bytes32 s;
        }
        function settle(address token, Authorization[] authorizations) external;
    }
}

/// Settles each `(authorization, signature)` through the batch settler at `settler`, in one
/// transaction sent by `submitter_hex`; returns the tx hash.
pub async fn settle_batch(
    rpc: &str,
    submitter_hex: &str,
    settler: &str,
    token: &str,
    signed: &[(spendguard_chain::TransferAuthorization, [u8; 65])],
) -> TestResult<String> {
    let parse = |a: &str| Address::from_str(a).map_err(|e| e.to_string());
    let mut authorizations = vec![];
    for (a, signature) in signed {
        authorizations.push(ITestBatchSettler::Authorization {
            from: parse(&a.from)?,
            to: parse(&a.to)?,
            value: U256::from(a.value),
            validAfter: U256::from(a.valid_after),
            validBefore: U256::from(a.valid_before),
            nonce: alloy::primitives::B256::from(a.nonce),
            v: signature[64],
            r: alloy::primitives::B256::from_slice(&signature[..32]),
            s: alloy::primitives::B256::from_slice(&signature[32..64]),
        });
    }
    let input = ITestBatchSettler::settleCall { token: parse(token)?, authorizations }.abi_encode();
    let tx =
        TransactionRequest::default().with_to(parse(settler)?).with_input(Bytes::from(input)).with_gas_limit(500_000);
    Ok(send(rpc, submitter_hex, tx).await?.0)
}

alloy::sol! {
    /// EIP-3009 as `fixtures/evm/TestEip3009Token.sol` (and USDC) implement it.
    interface IEip3009 {
        function transferWithAuthorization(
            address from, address to, uint256 value, uint256 validAfter, uint256 validBefore, bytes32 nonce,
            uint8 v, bytes32 r, bytes32 s
        ) external;
        function authorizationState(address authorizer, bytes32 nonce) external view returns (bool);
    }
}

/// Deploys `fixtures/evm/TestEip3009Token.sol` (`creation_hex`) with `supply` base units minted
/// to the deployer; returns its address.
pub async fn deploy_eip3009_token(
    rpc: &str,
    deployer_hex: &str,
    creation_hex: &str,
    supply: u128,
) -> TestResult<String> {
    let mut code = hex::decode(creation_hex.trim().trim_start_matches("0x")).map_err(|e| e.to_string())?;
    code.extend(U256::from(supply).abi_encode());
    let tx = TransactionRequest::default().with_deploy_code(Bytes::from(code));
    let (_, address) = send(rpc, deployer_hex, tx).await?;
    address.ok_or_else(|| "no contract address in the receipt".to_string())
}

/// Signs `authorization` with `authorizer_hex` (what a leaked key could do outside spendguard)
/// and has `submitter_hex` settle it with `transferWithAuthorization`, as a facilitator does;
/// returns the tx hash.
pub async fn settle_authorization(
    rpc: &str,
    submitter_hex: &str,
    authorizer_hex: &str,
    chain_id: u64,
    authorization: &spendguard_chain::TransferAuthorization,
) -> TestResult<String> {
    let signature = crate::client::eip3009_signature(&signer(authorizer_hex)?, chain_id, authorization)?;
    let parse = |a: &str| Address::from_str(a).map_err(|e| e.to_string());
    let input = IEip3009::transferWithAuthorizationCall {
        from: parse(&authorization.from)?,
        to: parse(&authorization.to)?,
        value: U256::from(authorization.value),
        validAfter: U256::from(authorization.valid_after),
        validBefore: U256::from(authorization.valid_before),
        nonce: alloy::primitives::B256::from(authorization.nonce),
        v: signature[64],
        r: alloy::primitives::B256::from_slice(&signature[..32]),
        s: alloy::primitives::B256::from_slice(&signature[32..64]),
    }
    .abi_encode();
    let tx = TransactionRequest::default()
        .with_to(parse(&authorization.token)?)
        .with_input(Bytes::from(input))
        .with_gas_limit(200_000);
    Ok(send(rpc, submitter_hex, tx).await?.0)
}
