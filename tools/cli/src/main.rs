//! `spendguard`: the command line of treasury operators. Thin: it parses flags, loads the
//! configuration, builds the node (`spendguard-node`) and calls its services; what writes goes
//! through the same service path as the admin API and MCP.
//!
//! `operate.rs`: approvals, delays, freezes, agents and tokens; `inspect.rs`: check, evaluate,
//! status, exposures, reports, the audit log; `daemon.rs`: serve, mcp, watch; `keys.rs`:
//! wallet keys; `bench.rs`: the load generator.

use anyhow::{Context as _, Result};
use clap::{Args, Parser, Subcommand};
use spendguard_config::Config;
use spendguard_core::model::Scope;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod bench;
mod daemon;
mod inspect;
mod keys;
mod operate;

/// Governs what LLM agents may spend from crypto wallets.
#[derive(Parser)]
#[command(name = "spendguard", version, about)]
pub(crate) struct Cli {
    /// Configuration file.
    #[arg(long, short, global = true, env = "SPENDGUARD_CONFIG", default_value = "spendguard.toml")]
    pub(crate) config: PathBuf,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Validate the configuration and summarise agents, wallets and policies; check that each
    /// key file it names exists and holds its wallet's address.
    Check {
        /// Validate the configuration only, not its key files (where the keys are not deployed).
        #[arg(long)]
        skip_keys: bool,
    },
    /// Create a new, empty ledger at [server].database. A missing ledger is also created on
    /// first use; `init` is needed where an empty file is left (a truncated ledger is never
    /// re-created silently). It never overwrites a ledger.
    Init,
    /// Copy this configuration's SQLite ledger into an empty PostgreSQL database, every table
    /// in one transaction, and verify the audit chain on the copy. Then point `[server]
    /// database` of every daemon at it.
    Migrate {
        /// The PostgreSQL database: postgres://user:password@host:5432/spendguard
        #[arg(long)]
        to: String,
    },
    /// Dry-run a spend against the policies and the ledger; nothing is reserved.
    Evaluate(EvaluateArgs),
    /// Freeze a scope: every spend it covers is denied until unfrozen.
    Freeze {
        #[command(flatten)]
        scope: ScopeArgs,
        /// Why (recorded and shown to agents that are denied).
        #[arg(long)]
        reason: String,
        /// Operator doing it: a configured operator holding a role `[roles]` names for it.
        #[arg(long = "as", env = "SPENDGUARD_OPERATOR")]
        operator: String,
    },
    /// Lift a freeze. Needs --ack saying why it is safe to spend again; a freeze the reconciler
    /// set needs the role `[roles] unfreeze_reconciler` names.
    Unfreeze {
        #[command(flatten)]
        scope: ScopeArgs,
        /// Acknowledgment: why it is safe to resume spending.
        #[arg(long)]
        ack: Option<String>,
        /// Operator doing it: a configured operator holding a role `[roles]` names for it.
        #[arg(long = "as", env = "SPENDGUARD_OPERATOR")]
        operator: String,
    },
    /// List frozen scopes: by whom, why and since when.
    Frozen,
    /// Serve one agent over MCP on stdin/stdout (launched by the agent's MCP host). The agent's
    /// token comes from SPENDGUARD_TOKEN and must belong to it.
    Mcp {
        /// The agent this process serves.
        #[arg(long)]
        agent: String,
    },
    /// The daemon: MCP over streamable HTTP at /mcp on [server].listen, bearer tokens per agent,
    /// plus the delay executor, approval expiry and transaction follow-up.
    Serve {
        /// Listen here instead of [server].listen (e.g. 127.0.0.1:0 for a free port).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// The auditor alone: index every registered wallet's outflows on every chain (EVM and
    /// Solana), reconcile them, and trip the kill switch on unexplained ones, until stopped
    /// (`serve` does this too). Unlocks no key.
    Watch,
    /// Agent credentials.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Create or import wallet keys (keystores are written with scrypt n = 2^18).
    #[command(subcommand)]
    Wallet(WalletCommand),
    /// Approval requests: list, show, approve, reject.
    #[command(subcommand)]
    Approvals(operate::ApprovalsCommand),
    /// Queued DELAY spends: list, cancel.
    #[command(subcommand)]
    Delays(operate::DelaysCommand),
    /// Operator credentials for the daemon's admin API.
    #[command(subcommand)]
    Operator(OperatorCommand),
    /// The authority key that signs external wallets' authorizations.
    #[command(subcommand)]
    Authority(AuthorityCommand),
    /// Outstanding authorizations (external wallets' spends, x402 payments): list, cancel.
    #[command(subcommand)]
    Authorizations(operate::AuthorizationsCommand),
    /// The hash-chained audit log: verify, export.
    #[command(subcommand)]
    Audit(inspect::AuditCommand),
    /// The reconciliation report of a period.
    Report(inspect::ReportArgs),
    /// Every wallet's balances, today's spend and limit utilisation; pending approvals, queued
    /// delays and freezes.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Load a running daemon like agent hosts do: N concurrent MCP sessions over streamable
    /// HTTP calling one tool; prints calls per second, p50/p90/p99 latency and failures. The
    /// agent's token comes from SPENDGUARD_TOKEN (or --token-env). Needs no config file.
    Bench(bench::BenchArgs),
    /// What this binary was built from (for the test harness, which refuses a stale binary).
    #[command(hide = true)]
    BuildInfo,
    /// Projected spend from queued, pending and in-flight decisions over a horizon.
    Exposures {
        /// How far ahead, e.g. 24h or 7d.
        #[arg(long, default_value = "24h")]
        horizon: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum AuthorityCommand {
    /// Print the public key that verifies authorization tokens (EdDSA / Ed25519), as PEM or
    /// as a JWK, for wallet-side hooks. Creates the key at [server].authority_key the first
    /// time.
    Pubkey {
        /// Print a JWK (JSON) instead of PEM.
        #[arg(long)]
        jwk: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum OperatorCommand {
    /// Issue an admin API token for a configured operator; printed once, stored as a hash.
    Token {
        /// Operator id.
        operator: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum AgentCommand {
    /// Issue a new token for an agent; it is printed once and stored only as a hash.
    Token {
        /// Agent id.
        agent: String,
    },
    /// Revoke every token of an agent: it can no longer authenticate at all.
    Revoke {
        /// Agent id.
        agent: String,
        /// Operator doing it: a configured operator holding a role `[roles]` names for it.
        #[arg(long = "as", env = "SPENDGUARD_OPERATOR")]
        operator: String,
    },
    /// Revoke an agent, freeze it and every wallet only it uses (on every chain), and release
    /// its queued and pending spends, in one step.
    Decommission {
        /// Agent id.
        agent: String,
        /// Why.
        #[arg(long)]
        reason: String,
        /// Operator doing it: a configured operator holding a role `[roles]` names for it.
        #[arg(long = "as", env = "SPENDGUARD_OPERATOR")]
        operator: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum WalletCommand {
    /// Generate a new key into a key file and print its address: an encrypted EVM keystore, or
    /// with `--chain <solana chain>` a Solana keypair file (encrypted with `--password-env`).
    New(KeystoreArgs),
    /// Write an existing key, read from standard input, into a key file: EVM a hex private key;
    /// Solana a keypair as a JSON array of 64 numbers or base58.
    Import(KeystoreArgs),
}

#[derive(Args)]
pub(crate) struct KeystoreArgs {
    /// Chain the key is for (an id from the config): a Solana chain writes a keypair file;
    /// without it, an EVM keystore.
    #[arg(long)]
    pub(crate) chain: Option<String>,
    /// EVM keystore file to write (never overwritten).
    #[arg(long, required_unless_present = "keypair")]
    pub(crate) keystore: Option<PathBuf>,
    /// Solana keypair file to write (never overwritten).
    #[arg(long, conflicts_with = "keystore")]
    pub(crate) keypair: Option<PathBuf>,
    /// Environment variable holding the password: required for EVM keystores; for a Solana
    /// keypair it encrypts the file (recommended), without it the file is the Solana CLI's
    /// plain format.
    #[arg(long)]
    pub(crate) password_env: Option<String>,
}

#[derive(Args)]
pub(crate) struct EvaluateArgs {
    /// Agent making the spend.
    #[arg(long)]
    pub(crate) agent: String,
    /// Wallet to spend from.
    #[arg(long)]
    pub(crate) wallet: String,
    /// Recipient address.
    #[arg(long)]
    pub(crate) to: String,
    /// Amount in asset units, as a decimal (e.g. 12.50).
    #[arg(long)]
    pub(crate) amount: String,
    /// Asset symbol (on the wallet's chain) or chain:SYMBOL; default the native asset.
    #[arg(long)]
    pub(crate) asset: Option<String>,
    /// Operation, for policies with operation budgets.
    #[arg(long)]
    pub(crate) operation: Option<String>,
    /// Evaluate as of this instant (RFC 3339); default now.
    #[arg(long)]
    pub(crate) at: Option<String>,
    /// Wallet balance of the asset, for balance checks in a dry run without chain access.
    #[arg(long)]
    pub(crate) balance: Option<String>,
    /// Print the evaluate tool's JSON result object.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args)]
#[group(required = true, multiple = false)]
pub(crate) struct ScopeArgs {
    /// An agent.
    #[arg(long)]
    pub(crate) agent: Option<String>,
    /// A wallet.
    #[arg(long)]
    pub(crate) wallet: Option<String>,
    /// A department.
    #[arg(long)]
    pub(crate) department: Option<String>,
    /// The whole organisation.
    #[arg(long)]
    pub(crate) org: bool,
}

impl ScopeArgs {
    pub(crate) fn scope(&self) -> Scope {
        match (&self.agent, &self.wallet, &self.department) {
            (Some(a), _, _) => Scope::Agent(a.clone()),
            (_, Some(w), _) => Scope::Wallet(w.clone()),
            (_, _, Some(d)) => Scope::Department(d.clone()),
            _ => Scope::Org,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs go to stderr: on `mcp`, stdout belongs to the protocol.
    let default_level = if matches!(cli.command, Command::Serve { .. }) { "info,rmcp=warn" } else { "warn" };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SPENDGUARD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .init();
    let ran = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .and_then(|runtime| runtime.block_on(run(cli)));
    match ran {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", render(&e));
            ExitCode::from(1)
        }
    }
}

/// An error and its causes on one line, leaving out a cause whose words are already there
/// (SQLite's errors repeat themselves at each level).
fn render(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.to_lowercase().contains(&text.to_lowercase()) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

fn load(path: &Path) -> Result<Config> {
    // The config error already names the file, line and key.
    spendguard_config::load(path).map_err(|e| anyhow::anyhow!("{e}"))
}

async fn run(cli: Cli) -> Result<ExitCode> {
    if let Command::Wallet(cmd) = &cli.command {
        return keys::wallet(cmd, &cli.config);
    }
    if let Command::Bench(args) = cli.command {
        return bench::bench(args).await;
    }
    if let Command::BuildInfo = &cli.command {
        println!("sources {}", env!("SPENDGUARD_SOURCES"));
        println!("fail-points {}", if spendguard_service::FAIL_POINTS { "yes" } else { "no" });
        return Ok(ExitCode::SUCCESS);
    }
    let config = load(&cli.config)?;
    match cli.command {
        Command::Check { skip_keys } => inspect::check(&config, skip_keys),
        Command::Init => operate::init(&config),
        Command::Migrate { to } => operate::migrate(&config, &to).await,
        Command::Evaluate(args) => inspect::evaluate(config, args).await,
        Command::Freeze { scope, reason, operator } => operate::freeze(config, scope.scope(), &reason, &operator).await,
        Command::Unfreeze { scope, ack, operator } => operate::unfreeze(config, scope.scope(), ack, &operator).await,
        Command::Frozen => operate::frozen(config).await,
        Command::Mcp { agent } => daemon::mcp(config, &agent).await,
        Command::Serve { listen } => daemon::serve(config, listen).await,
        Command::Watch => daemon::watch(config).await,
        Command::Agent(cmd) => operate::agent(config, cmd).await,
        Command::Approvals(cmd) => operate::approvals(config, cmd).await,
        Command::Delays(cmd) => operate::delays(config, cmd).await,
        Command::Operator(OperatorCommand::Token { operator }) => operate::operator_token(config, &operator).await,
        Command::Authority(AuthorityCommand::Pubkey { jwk }) => operate::authority_pubkey(&config, jwk),
        Command::Authorizations(cmd) => operate::authorizations(config, cmd).await,
        Command::Audit(cmd) => inspect::audit(config, cmd).await,
        Command::Report(args) => inspect::report(config, args).await,
        Command::Status { json } => inspect::status(config, json).await,
        Command::Exposures { horizon, json } => inspect::exposures(config, &horizon, json).await,
        Command::Wallet(_) | Command::BuildInfo | Command::Bench(_) => {
            unreachable!("handled before the config is loaded")
        }
    }
}

/// A node that reads chains and the ledger but holds no key.
pub(crate) async fn reader(config: Config) -> Result<spendguard_node::Node> {
    Ok(spendguard_node::build(config, spendguard_node::Keys::Locked).await?)
}
