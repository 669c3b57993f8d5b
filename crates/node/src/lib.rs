//! spendguard's node: everything a process needs, assembled the same way for the daemon
//! (`spendguard serve`), a stdio MCP server (`spendguard mcp`), the auditor alone (`spendguard
//! watch`), every CLI command, and the tests.
//!
//! # Layout
//! - [`build`]: opens the ledger (recording the configuration in its audit log when it
//!   changed), unlocks or is given the wallets' keys ([`Keys`], `keys.rs`) and the authority
//!   key external wallets' authorizations are signed with (`authority_key.rs`), connects a client
//!   to every chain, and wires the services over them — a [`Node`].
//! - [`Node::run`]: the background loops (execution, one watcher per chain, alert delivery,
//!   scheduled reports) and the servers the [`Listeners`] ask for, until shutdown; then the
//!   servers drain, the loops finish their pass, and it returns.

mod authority_key;
mod keys;
mod run;

pub use authority_key::{load_or_create_authority, read_authority};
pub use keys::{inspect_keys, KeyProblem, KeyRing, Keys};
pub use run::{Listeners, StdioAgent};

use sha2::{Digest, Sha256};
use spendguard_chain::{ChainClient, ChainError, RetryPolicy};
use spendguard_config::{Commitment, Config, Database};
use spendguard_core::model::ChainKind;
use spendguard_evm::{EvmClient, EvmSettings};
use spendguard_service::{AlertChannel, Chains, Services, SystemClock};
use spendguard_solana::{SolanaClient, SolanaSettings};
use spendguard_store::{AuditStore, LedgerOptions, SqlStore, StoreError};
use std::sync::Arc;

/// Why a node could not be built or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The ledger could not be opened.
    #[error("opening the ledger {path}: {source}")]
    Ledger {
        /// The database.
        path: String,
        /// Why.
        source: StoreError,
    },
    /// The ledger failed afterwards.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A wallet's key could not be unlocked, or is not the wallet's.
    #[error("wallet {wallet}: {message}")]
    Key {
        /// The wallet.
        wallet: String,
        /// What is wrong.
        message: String,
    },
    /// A chain client could not be made.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The configuration file could not be read (to record its hash).
    #[error("reading {path}: {source}")]
    Config {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The authority key (external wallets' authorizations) could not be read or created.
    #[error("authority key {path}: {message}")]
    Authority {
        /// The key file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A server failed.
    #[error("serving: {0}")]
    Serve(#[from] std::io::Error),
}

/// Result alias of this crate.
pub type NodeResult<T> = Result<T, NodeError>;

/// One process's spendguard: its configuration, ledger and services.
pub struct Node {
    /// The configuration.
    pub config: Arc<Config>,
    /// The ledger.
    pub store: Arc<SqlStore>,
    /// The services over it.
    pub services: Services,
    /// A client per configured chain.
    pub chains: Chains,
}

/// Opens the ledger `config` names: its SQLite file, or its PostgreSQL database.
pub fn open_ledger(config: &Config) -> NodeResult<SqlStore> {
    let (model, now, options) = (Arc::new(config.model.clone()), chrono::Utc::now(), LedgerOptions::default());
    let opened = match &config.server.database {
        Database::Sqlite(path) => SqlStore::open(path, model, now, options),
        Database::Postgres(url) => SqlStore::open_postgres(url, model, now, options),
    };
    opened.map_err(|source| NodeError::Ledger { path: config.server.database.describe(), source })
}

/// Builds the node of `config`: opens its ledger, takes the wallets' keys as `keys` says, and
/// connects a client to every configured chain. Nothing runs until [`Node::run`].
pub async fn build(config: Config, keys: Keys) -> NodeResult<Node> {
    let config = Arc::new(config);
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let store = open_ledger(&config)?;
    let store = Arc::new(store);
    record_config(&config, store.as_ref()).await?;
    let signs = !matches!(keys, Keys::Locked);
    // A process that executes spends issues authorizations for external wallets (creating the
    // key the first time); one that only reads verifies with it when it exists.
    let authority_path = &config.server.authority_key;
    let authority = match signs {
        true => Some(load_or_create_authority(authority_path)?),
        false => read_authority(authority_path)?,
    }
    .map(Arc::new);
    let mut ring = keys.into_ring(&config)?;
    let mut clients: Vec<Arc<dyn ChainClient>> = vec![];
    for settings in &config.chains {
        let timeout = settings.rpc_timeout.to_std().unwrap_or(std::time::Duration::from_secs(10));
        let client: Arc<dyn ChainClient> = match settings.kind {
            ChainKind::Evm => {
                let chain_id = settings.chain_id.ok_or_else(|| ChainError::BadResponse {
                    chain: settings.id.clone(),
                    message: "an EVM chain needs a chain_id".into(),
                })?;
                Arc::new(EvmClient::new(
                    EvmSettings {
                        id: settings.id.clone(),
                        chain_id,
                        rpc: settings.rpc.clone(),
                        max_fee_per_gas_gwei: settings.max_fee_per_gas_gwei,
                        rpc_timeout: timeout,
                        retries: RetryPolicy::DEFAULT_RETRIES,
                    },
                    ring.take_evm(&settings.id),
                )?)
            }
            ChainKind::Solana => Arc::new(SolanaClient::new(
                SolanaSettings {
                    id: settings.id.clone(),
                    rpc: settings.rpc.clone(),
                    finalized: settings.commitment == Commitment::Finalized,
                    rpc_timeout: timeout,
                    retries: RetryPolicy::DEFAULT_RETRIES,
                },
                ring.take_solana(&settings.id),
            )?),
        };
        clients.push(client);
    }
    let alerts = AlertChannel::from_config(&config);
    let chains = config.chains.iter().fold(Chains::new(clients), |chains, settings| {
        chains.keep_balances(&settings.id, settings.balance_max_age.to_std().unwrap_or_default())
    });
    let services = Services::new(
        Arc::clone(&config),
        store.clone(),
        chains.clone(),
        signs,
        authority,
        alerts,
        Arc::new(SystemClock),
    );
    Ok(Node { config, store, services, chains })
}

/// Records the configuration in use (the file's SHA-256 and a summary) in the audit log when it
/// differs from the last one recorded.
async fn record_config(config: &Config, store: &SqlStore) -> NodeResult<()> {
    let text = std::fs::read(&config.path)
        .map_err(|source| NodeError::Config { path: config.path.display().to_string(), source })?;
    let hash = hex::encode(Sha256::digest(&text));
    store.record_config(&hash, config.summary().trim_end(), chrono::Utc::now()).await?;
    Ok(())
}
