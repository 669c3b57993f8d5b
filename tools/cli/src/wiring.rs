//! Builds a [`Guard`] from a configuration: opens the ledger, unlocks the wallets' keys, and
//! connects a client to every chain spendguard can talk to.

use anyhow::{bail, Context as _, Result};
use spendguard_chain::ChainClient;
use spendguard_config::Config;
use spendguard_core::model::ChainKind;
use spendguard_evm::{keystore, EvmClient, EvmSettings};
use spendguard_service::{Guard, SystemClock};
use spendguard_solana::{SolanaClient, SolanaSettings};
use spendguard_store::{Ledger, LedgerOptions};
use std::sync::Arc;
use zeroize::Zeroizing;

/// Opens the ledger of `config`, recording the configuration in the audit log when it changed
/// since the last process recorded it.
pub(crate) fn open_ledger(config: &Config) -> Result<Ledger> {
    open_ledger_at(config, chrono::Utc::now())
}

/// [`open_ledger`] with its usage index loaded as of `now` (a dry run in the past or future).
pub(crate) fn open_ledger_at(config: &Config, now: chrono::DateTime<chrono::Utc>) -> Result<Ledger> {
    let ledger = Ledger::open(&config.server.database, Arc::new(config.model.clone()), now, LedgerOptions::default())
        .with_context(|| format!("opening the ledger {}", config.server.database.display()))?;
    let text = std::fs::read(&config.path).with_context(|| format!("reading {}", config.path.display()))?;
    let hash = spendguard_service::hash_token(&String::from_utf8_lossy(&text));
    ledger.record_config(&hash, config.summary().trim_end(), chrono::Utc::now())?;
    Ok(ledger)
}

/// Whether a guard unlocks the wallets' keys (to sign) or only reads chains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keys {
    /// Unlock every configured key; a missing password stops start-up.
    Unlocked,
    /// Unlock nothing: balances, status and reports only.
    Locked,
}

/// The guard for `config`. With [`Keys::Unlocked`], every configured key is unlocked, and a
/// wallet whose password is missing or wrong stops start-up: better than discovering it at the
/// first spend.
pub(crate) fn build_guard(config: Arc<Config>, ledger: Arc<Ledger>, keys: Keys) -> Result<Arc<Guard>> {
    let mut chains: Vec<Arc<dyn ChainClient>> = vec![];
    for settings in &config.chains {
        match settings.kind {
            ChainKind::Evm => {
                let mut signers = vec![];
                for wallet in config.model.wallets.iter().filter(|w| w.chain == settings.id && keys == Keys::Unlocked) {
                    let Some(keys) = config.wallet_keys(&wallet.id) else { continue };
                    let (Some(path), Some(env)) = (&keys.keystore, &keys.password_env) else {
                        tracing::warn!(wallet = %wallet.id, "no keystore configured: this wallet cannot spend");
                        continue;
                    };
                    let password = Zeroizing::new(std::env::var(env).map_err(|_| {
                        anyhow::anyhow!(
                            "wallet {}: the environment variable {env} (its keystore password) is not set",
                            wallet.id
                        )
                    })?);
                    let signer =
                        keystore::read_keystore(path, &password).with_context(|| format!("wallet {}", wallet.id))?;
                    let address = spendguard_evm::signer_address(&signer);
                    if address != wallet.address {
                        bail!(
                            "wallet {}: the keystore {} holds the key of {address}, not {}",
                            wallet.id,
                            path.display(),
                            wallet.address
                        );
                    }
                    signers.push(signer);
                }
                let chain_id = settings.chain_id.with_context(|| format!("chain {} has no chain_id", settings.id))?;
                let client = EvmClient::new(
                    EvmSettings {
                        id: settings.id.clone(),
                        chain_id,
                        rpc: settings.rpc.clone(),
                        max_fee_per_gas_gwei: settings.max_fee_per_gas_gwei,
                        rpc_timeout: settings.rpc_timeout.to_std().unwrap_or(std::time::Duration::from_secs(10)),
                        retries: spendguard_chain::RetryPolicy::DEFAULT_RETRIES,
                    },
                    signers,
                )?;
                chains.push(Arc::new(client));
            }
            ChainKind::Solana => {
                let mut keypairs = vec![];
                for wallet in config.model.wallets.iter().filter(|w| w.chain == settings.id && keys == Keys::Unlocked) {
                    let Some(keys) = config.wallet_keys(&wallet.id) else { continue };
                    let Some(path) = keys.keypair.clone() else {
                        tracing::warn!(wallet = %wallet.id, "no keypair configured: this wallet cannot spend");
                        continue;
                    };
                    // An encrypted keypair file is unlocked with the password in password_env.
                    let password = match &keys.password_env {
                        Some(env) => Some(Zeroizing::new(std::env::var(env).map_err(|_| {
                            anyhow::anyhow!(
                                "wallet {}: the environment variable {env} (its keypair password) is not set",
                                wallet.id
                            )
                        })?)),
                        None => None,
                    };
                    let keypair =
                        spendguard_solana::keypair::read_keypair(&path, password.as_deref().map(String::as_str))
                            .with_context(|| format!("wallet {}", wallet.id))?;
                    let address = spendguard_solana::keypair_address(&keypair);
                    if address != wallet.address {
                        bail!(
                            "wallet {}: the keypair {} holds the key of {address}, not {}",
                            wallet.id,
                            path.display(),
                            wallet.address
                        );
                    }
                    keypairs.push(keypair);
                }
                let client = SolanaClient::new(
                    SolanaSettings {
                        id: settings.id.clone(),
                        rpc: settings.rpc.clone(),
                        finalized: settings.commitment == spendguard_config::Commitment::Finalized,
                        rpc_timeout: settings.rpc_timeout.to_std().unwrap_or(std::time::Duration::from_secs(10)),
                        retries: spendguard_chain::RetryPolicy::DEFAULT_RETRIES,
                    },
                    keypairs,
                )?;
                chains.push(Arc::new(client));
            }
        }
    }
    let alerts = config
        .alerts
        .iter()
        .map(|a| spendguard_service::AlertChannel {
            id: a.id.clone(),
            kind: a.kind,
            url: std::env::var(&a.url_env).ok().filter(|u| !u.is_empty()),
            events: a.events.clone(),
        })
        .collect::<Vec<_>>();
    for a in alerts.iter().filter(|a| a.url.is_none()) {
        tracing::warn!(channel = %a.id, "alert channel has no URL (its url_env is not set): deliveries will fail and be recorded");
    }
    Ok(Arc::new(Guard::new(config, ledger, chains, Arc::new(SystemClock)).with_alerts(alerts)))
}
