//! The wallets' keys: unlocked from the keystores and keypair files the configuration names
//! (their passwords in the environment), given directly (tests), or none at all (a process
//! that only reads).

use crate::{NodeError, NodeResult};
use spendguard_config::Config;
use spendguard_core::model::ChainKind;
use spendguard_evm::EvmSigner;
use spendguard_solana::Keypair;
use std::collections::HashMap;
use zeroize::Zeroizing;

/// Where a node's signing keys come from.
pub enum Keys {
    /// None: the node reads chains and the ledger but never signs (status, reports, the
    /// auditor alone).
    Locked,
    /// Every key the configuration names, unlocked with the password in its `password_env`; a
    /// missing or wrong password, or a key that is not its wallet's, stops the build — better
    /// than finding out at the first spend.
    FromConfig,
    /// These keys, already unlocked.
    Given(KeyRing),
}

/// Unlocked keys, by chain.
#[derive(Default)]
pub struct KeyRing {
    evm: HashMap<String, Vec<EvmSigner>>,
    solana: HashMap<String, Vec<Keypair>>,
}

impl KeyRing {
    /// An EVM key for `chain`.
    pub fn add_evm(&mut self, chain: &str, signer: EvmSigner) {
        self.evm.entry(chain.to_string()).or_default().push(signer);
    }

    /// A Solana keypair for `chain`.
    pub fn add_solana(&mut self, chain: &str, keypair: Keypair) {
        self.solana.entry(chain.to_string()).or_default().push(keypair);
    }

    pub(crate) fn take_evm(&mut self, chain: &str) -> Vec<EvmSigner> {
        self.evm.remove(chain).unwrap_or_default()
    }

    pub(crate) fn take_solana(&mut self, chain: &str) -> Vec<Keypair> {
        self.solana.remove(chain).unwrap_or_default()
    }
}

/// Something wrong with a wallet's key file, found without unlocking it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyProblem {
    /// The wallet.
    pub wallet: String,
    /// What is wrong.
    pub message: String,
    /// True when starting with keys would fail (a missing or foreign file); false for what
    /// may differ where the daemon runs (a password variable not set in this shell).
    pub fatal: bool,
}

/// Checks every key file the configuration names — that it exists, reads as a key file, and
/// holds its wallet's address — without any password, for `spendguard check`.
pub fn inspect_keys(config: &Config) -> Vec<KeyProblem> {
    let mut problems = vec![];
    for wallet in &config.model.wallets {
        let Some(keys) = config.wallet_keys(&wallet.id) else { continue };
        let Some(kind) = config.model.chain(&wallet.chain).map(|c| c.kind) else { continue };
        let mut problem = |message: String, fatal: bool| {
            problems.push(KeyProblem { wallet: wallet.id.clone(), message, fatal });
        };
        let (path, what) = match (kind, &keys.keystore, &keys.keypair) {
            (ChainKind::Evm, Some(path), _) => (path, "keystore"),
            (ChainKind::Solana, _, Some(path)) => (path, "keypair"),
            _ => continue,
        };
        let encrypted =
            kind == ChainKind::Evm || std::fs::read(path).is_ok_and(|text| text.trim_ascii_start().starts_with(b"{"));
        let held = if encrypted {
            spendguard_chain::keystore::stated_address(path).map_err(|e| e.to_string())
        } else {
            spendguard_solana::keypair::read_keypair(path, None)
                .map(|k| spendguard_solana::keypair_address(&k))
                .map_err(|e| e.to_string())
        };
        // Web3 keystores write the address without its 0x.
        let held = held.map(|a| if kind == ChainKind::Evm && !a.starts_with("0x") { format!("0x{a}") } else { a });
        match held.map(|a| kind.normalize_address(&a)) {
            Err(e) => problem(e, true),
            Ok(Ok(address)) if address == wallet.address => {}
            Ok(Ok(address)) => problem(
                format!("the {what} {} holds the key of {address}, not {}", path.display(), wallet.address),
                true,
            ),
            Ok(Err(_)) => problem(format!("the {what} {} does not name a valid address", path.display()), true),
        }
        if let Some(env) = keys.password_env.as_ref().filter(|_| encrypted) {
            if std::env::var_os(env).is_none() {
                problem(format!("{env} (the {what}'s password) is not set here; the daemon needs it"), false);
            }
        }
    }
    problems
}

impl Keys {
    pub(crate) fn into_ring(self, config: &Config) -> NodeResult<KeyRing> {
        match self {
            Keys::Locked => Ok(KeyRing::default()),
            Keys::Given(ring) => Ok(ring),
            Keys::FromConfig => unlock(config),
        }
    }
}

fn password(wallet: &str, env: &str, what: &str) -> NodeResult<Zeroizing<String>> {
    std::env::var(env).map(Zeroizing::new).map_err(|_| NodeError::Key {
        wallet: wallet.to_string(),
        message: format!("the environment variable {env} (its {what} password) is not set"),
    })
}

/// Unlocks every key the configuration names.
fn unlock(config: &Config) -> NodeResult<KeyRing> {
    let mut ring = KeyRing::default();
    // An external wallet's key is the agent's: nothing to unlock.
    for wallet in config.model.wallets.iter().filter(|w| !w.is_external()) {
        let Some(keys) = config.wallet_keys(&wallet.id) else { continue };
        let Some(kind) = config.model.chain(&wallet.chain).map(|c| c.kind) else { continue };
        let key_error = |message: String| NodeError::Key { wallet: wallet.id.clone(), message };
        match kind {
            ChainKind::Evm => {
                let (Some(path), Some(env)) = (&keys.keystore, &keys.password_env) else {
                    tracing::warn!(wallet = %wallet.id, "no keystore configured: this wallet cannot spend");
                    continue;
                };
                let password = password(&wallet.id, env, "keystore")?;
                let signer = spendguard_evm::keystore::read_keystore(path, &password)
                    .map_err(|e| key_error(format!("{e:#}")))?;
                let address = spendguard_evm::signer_address(&signer);
                if address != wallet.address {
                    return Err(key_error(format!(
                        "the keystore {} holds the key of {address}, not {}",
                        path.display(),
                        wallet.address
                    )));
                }
                ring.add_evm(&wallet.chain, signer);
            }
            ChainKind::Solana => {
                let Some(path) = &keys.keypair else {
                    tracing::warn!(wallet = %wallet.id, "no keypair configured: this wallet cannot spend");
                    continue;
                };
                // An encrypted keypair file is unlocked with the password in password_env.
                let password = match &keys.password_env {
                    Some(env) => Some(password(&wallet.id, env, "keypair")?),
                    None => None,
                };
                let keypair = spendguard_solana::keypair::read_keypair(path, password.as_deref().map(String::as_str))
                    .map_err(|e| key_error(format!("{e:#}")))?;
                let address = spendguard_solana::keypair_address(&keypair);
                if address != wallet.address {
                    return Err(key_error(format!(
                        "the keypair {} holds the key of {address}, not {}",
                        path.display(),
                        wallet.address
                    )));
                }
                ring.add_solana(&wallet.chain, keypair);
            }
        }
    }
    Ok(ring)
}
