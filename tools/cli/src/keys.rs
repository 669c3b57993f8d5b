//! `wallet new|import`: EVM keystores and Solana keypair files (plain or encrypted).

use crate::{load, WalletCommand};
use anyhow::{bail, Context as _, Result};
use std::path::Path;
use std::process::ExitCode;

pub(crate) fn wallet(cmd: &WalletCommand, config_path: &Path) -> Result<ExitCode> {
    let (WalletCommand::New(args) | WalletCommand::Import(args)) = cmd;
    let import = matches!(cmd, WalletCommand::Import(_));
    let kind = match &args.chain {
        None => spendguard_core::model::ChainKind::Evm,
        Some(id) => {
            let config = load(config_path)?;
            let known: Vec<&str> = config.chains.iter().map(|c| c.id.as_str()).collect();
            config.chains.iter().find(|c| &c.id == id).map(|c| c.kind).ok_or_else(|| {
                anyhow::anyhow!(
                    "--chain {id}: no such chain in {} (chains: {})",
                    config_path.display(),
                    known.join(", ")
                )
            })?
        }
    };
    let password = match &args.password_env {
        None => None,
        Some(env) => {
            let password = zeroize::Zeroizing::new(
                std::env::var(env).map_err(|_| anyhow::anyhow!("the environment variable {env} is not set"))?,
            );
            if password.is_empty() {
                bail!("the password in {env} is empty");
            }
            Some(password)
        }
    };
    match kind {
        spendguard_core::model::ChainKind::Evm => {
            let (Some(path), Some(password)) = (&args.keystore, &password) else {
                bail!("an EVM key needs --keystore FILE and --password-env VAR");
            };
            let secret = if import {
                let mut line = zeroize::Zeroizing::new(String::new());
                std::io::stdin().read_line(&mut line).context("reading the private key from standard input")?;
                spendguard_evm::keystore::parse_secret(&line).context("the private key on standard input")?
            } else {
                spendguard_evm::keystore::random_secret()?
            };
            let address = spendguard_evm::keystore::write_keystore(path, &secret, password)?;
            println!("{address:#x}");
            eprintln!("wrote {} (scrypt n=2^{})", path.display(), spendguard_chain::keystore::SCRYPT_LOG_N);
        }
        spendguard_core::model::ChainKind::Solana => {
            use spendguard_solana::keypair;
            let Some(path) = &args.keypair else { bail!("a Solana key needs --keypair FILE (not --keystore)") };
            let key = if import {
                let mut text = zeroize::Zeroizing::new(String::new());
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                    .context("reading the keypair from standard input")?;
                keypair::parse_keypair(&text).context("the keypair on standard input")?
            } else {
                spendguard_solana::Keypair::new()
            };
            match &password {
                Some(password) => {
                    keypair::write_encrypted_keypair(path, &key, password)?;
                    eprintln!(
                        "wrote {} encrypted (scrypt n=2^{})",
                        path.display(),
                        spendguard_chain::keystore::SCRYPT_LOG_N
                    );
                }
                None => {
                    keypair::write_keypair(path, &key)?;
                    eprintln!(
                        "wrote {} UNENCRYPTED (Solana CLI format); use --password-env to encrypt it",
                        path.display()
                    );
                }
            }
            println!("{}", spendguard_solana::keypair_address(&key));
        }
    }
    Ok(ExitCode::SUCCESS)
}
