//! Test helpers (feature `test-utils`): create SPL mints, mint tokens and move funds with a key
//! directly, bypassing spendguard, on a local cluster such as surfpool.

use solana_client::nonblocking::rpc_client::RpcClient;
use solana_commitment_config::CommitmentConfig;
use solana_instruction::Instruction;
use solana_keypair::Keypair;
use solana_pubkey::Pubkey;
use solana_signer::Signer as _;
use solana_transaction::Transaction;
use std::str::FromStr;

type TestResult<T> = Result<T, String>;

/// Size of an SPL Token mint account.
const MINT_LEN: u64 = 82;

fn pubkey(text: &str) -> TestResult<Pubkey> {
    Pubkey::from_str(text).map_err(|e| format!("address {text}: {e}"))
}

/// Sends `instructions` paid and signed by `payer` (plus `extra` signers) and waits until they
/// are confirmed; returns the signature.
async fn send(rpc: &str, payer: &Keypair, extra: &[&Keypair], instructions: &[Instruction]) -> TestResult<String> {
    let client = RpcClient::new_with_commitment(rpc.to_string(), CommitmentConfig::confirmed());
    let blockhash = client.get_latest_blockhash().await.map_err(|e| e.to_string())?;
    let mut signers = vec![payer];
    signers.extend_from_slice(extra);
    let tx = Transaction::new_signed_with_payer(instructions, Some(&payer.pubkey()), &signers, blockhash);
    let signature = client.send_and_confirm_transaction(&tx).await.map_err(|e| e.to_string())?;
    Ok(signature.to_string())
}

/// Creates a new SPL Token mint with `decimals`, `payer` its mint authority; returns its address.
pub async fn create_mint(rpc: &str, payer: &Keypair, decimals: u8) -> TestResult<String> {
    let client = RpcClient::new_with_commitment(rpc.to_string(), CommitmentConfig::confirmed());
    let mint = Keypair::new();
    let rent = client.get_minimum_balance_for_rent_exemption(MINT_LEN as usize).await.map_err(|e| e.to_string())?;
    let instructions = [
        solana_system_interface::instruction::create_account(
            &payer.pubkey(),
            &mint.pubkey(),
            rent,
            MINT_LEN,
            &spl_token_interface::ID,
        ),
        spl_token_interface::instruction::initialize_mint2(
            &spl_token_interface::ID,
            &mint.pubkey(),
            &payer.pubkey(),
            None,
            decimals,
        )
        .map_err(|e| e.to_string())?,
    ];
    send(rpc, payer, &[&mint], &instructions).await?;
    Ok(mint.pubkey().to_string())
}

/// Mints `base_units` of `mint` (whose authority is `payer`) to `owner`'s associated token
/// account, creating it if needed.
pub async fn mint_to(rpc: &str, payer: &Keypair, mint: &str, owner: &str, base_units: u64) -> TestResult<String> {
    use spl_associated_token_account_interface::{address, instruction};
    let (mint, owner) = (pubkey(mint)?, pubkey(owner)?);
    let account = address::get_associated_token_address(&owner, &mint);
    let instructions = [
        instruction::create_associated_token_account_idempotent(
            &payer.pubkey(),
            &owner,
            &mint,
            &spl_token_interface::ID,
        ),
        spl_token_interface::instruction::mint_to(
            &spl_token_interface::ID,
            &mint,
            &account,
            &payer.pubkey(),
            &[],
            base_units,
        )
        .map_err(|e| e.to_string())?,
    ];
    send(rpc, payer, &[], &instructions).await
}

/// A transfer of `amount` from `from` to `to`: lamports (`mint` `None`), or base units of `mint`
/// between their associated token accounts (which must exist).
fn transfer(from: &Keypair, mint: Option<&Pubkey>, to: &Pubkey, amount: u64) -> TestResult<Instruction> {
    use spl_associated_token_account_interface::address::get_associated_token_address;
    match mint {
        None => Ok(solana_system_interface::instruction::transfer(&from.pubkey(), to, amount)),
        Some(mint) => spl_token_interface::instruction::transfer(
            &spl_token_interface::ID,
            &get_associated_token_address(&from.pubkey(), mint),
            &get_associated_token_address(to, mint),
            &from.pubkey(),
            &[],
            amount,
        )
        .map_err(|e| e.to_string()),
    }
}

/// Sends `lamports` from `from` to `to` with the key directly (a rogue transfer, as far as
/// spendguard knows); returns the signature.
pub async fn send_sol(rpc: &str, from: &Keypair, to: &str, lamports: u64) -> TestResult<String> {
    send(rpc, from, &[], &[transfer(from, None, &pubkey(to)?, lamports)?]).await
}

/// Sends `base_units` of `mint` from `from`'s associated token account to `to`'s (which must
/// exist) with the key directly; returns the signature.
pub async fn send_token(rpc: &str, from: &Keypair, mint: &str, to: &str, base_units: u64) -> TestResult<String> {
    send(rpc, from, &[], &[transfer(from, Some(&pubkey(mint)?), &pubkey(to)?, base_units)?]).await
}

/// Sends `count` transfers from `from` to `to` without waiting for each: SOL (`mint` `None`,
/// `first + i` lamports each) or `first + i` base units of `mint`. Returns once all are
/// confirmed, with their signatures. For generating traffic fast.
pub async fn send_many(
    rpc: &str,
    from: &Keypair,
    mint: Option<&str>,
    to: &str,
    count: u64,
    first: u64,
) -> TestResult<Vec<String>> {
    let client = RpcClient::new_with_commitment(rpc.to_string(), CommitmentConfig::confirmed());
    let to = pubkey(to)?;
    let mint = mint.map(pubkey).transpose()?;
    let mut signatures = vec![];
    let mut blockhash = client.get_latest_blockhash().await.map_err(|e| e.to_string())?;
    for i in 0..count {
        if i % 50 == 0 {
            blockhash = client.get_latest_blockhash().await.map_err(|e| e.to_string())?;
        }
        let instruction = transfer(from, mint.as_ref(), &to, first + i)?;
        let tx = Transaction::new_signed_with_payer(&[instruction], Some(&from.pubkey()), &[from], blockhash);
        signatures.push(client.send_transaction(&tx).await.map_err(|e| e.to_string())?);
    }
    for chunk in signatures.chunks(256) {
        for _ in 0..600 {
            let statuses = client.get_signature_statuses(chunk).await.map_err(|e| e.to_string())?.value;
            let confirmed = statuses
                .iter()
                .all(|s| s.as_ref().is_some_and(|s| s.satisfies_commitment(CommitmentConfig::confirmed())));
            if confirmed {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    Ok(signatures.iter().map(ToString::to_string).collect())
}

/// The signature of a transaction in `sendTransaction`'s wire form (base64 of its bincode), as a
/// node that accepts it would answer.
pub fn wire_signature(base64_tx: &str) -> TestResult<String> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD.decode(base64_tx).map_err(|e| e.to_string())?;
    let tx: Transaction = bincode::deserialize(&bytes).map_err(|e| e.to_string())?;
    tx.signatures.first().map(ToString::to_string).ok_or_else(|| "an unsigned transaction".to_string())
}
