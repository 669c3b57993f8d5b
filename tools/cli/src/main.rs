//! `spendguard`: the command line of treasury operators. Thin: it parses flags, loads the
//! configuration and calls the libraries.

use anyhow::{bail, Context as _, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Args, Parser, Subcommand};
use spendguard_config::Config;
use spendguard_core::engine::requested_asset_key;
use spendguard_core::model::Scope;
use spendguard_core::money::parse_decimal;
use spendguard_core::{Balances, Evaluation, Freeze, SpendRequest};
use spendguard_store::{FreezeOutcome, Ledger};
use std::path::{Path, PathBuf};

mod ops;
mod wiring;
use std::collections::HashSet;
use std::process::ExitCode;
use std::sync::Arc;

/// Governs what LLM agents may spend from crypto wallets.
#[derive(Parser)]
#[command(name = "spendguard", version, about)]
struct Cli {
    /// Configuration file.
    #[arg(long, short, global = true, env = "SPENDGUARD_CONFIG", default_value = "spendguard.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration and summarise agents, wallets and policies.
    Check,
    /// Dry-run a spend against the policies and the ledger; nothing is reserved.
    Evaluate(EvaluateArgs),
    /// Freeze a scope: every spend it covers is denied until unfrozen.
    Freeze {
        #[command(flatten)]
        scope: ScopeArgs,
        /// Why (recorded and shown to agents that are denied).
        #[arg(long)]
        reason: String,
        /// Operator doing it (default: cli:$USER).
        #[arg(long = "as")]
        operator: Option<String>,
    },
    /// Lift a freeze. Needs --ack saying why it is safe to spend again.
    Unfreeze {
        #[command(flatten)]
        scope: ScopeArgs,
        /// Acknowledgment: why it is safe to resume spending.
        #[arg(long)]
        ack: Option<String>,
        /// Operator doing it (default: cli:$USER).
        #[arg(long = "as")]
        operator: Option<String>,
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
    /// The auditor alone: index every registered wallet's outflows, reconcile them, and trip
    /// the kill switch on unexplained ones, until stopped (`serve` does this too).
    Watch,
    /// Agent credentials.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Create or import wallet keys (keystores are written with scrypt n = 2^18).
    #[command(subcommand)]
    Wallet(WalletCommand),
    /// Approval requests: list, show, approve, reject.
    #[command(subcommand)]
    Approvals(ops::ApprovalsCommand),
    /// Queued DELAY spends: list, cancel.
    #[command(subcommand)]
    Delays(ops::DelaysCommand),
    /// Operator credentials for the daemon's admin API.
    #[command(subcommand)]
    Operator(OperatorCommand),
    /// The hash-chained audit log: verify, export.
    #[command(subcommand)]
    Audit(ops::AuditCommand),
    /// The reconciliation report of a period.
    Report(ops::ReportArgs),
    /// Every wallet's balances, today's spend and limit utilisation; pending approvals, queued
    /// delays and freezes.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
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
enum OperatorCommand {
    /// Issue an admin API token for a configured operator; printed once, stored as a hash.
    Token {
        /// Operator id.
        operator: String,
    },
}

#[derive(Subcommand)]
enum AgentCommand {
    /// Issue a new token for an agent; it is printed once and stored only as a hash.
    Token {
        /// Agent id.
        agent: String,
    },
    /// Revoke every token of an agent: it can no longer authenticate at all.
    Revoke {
        /// Agent id.
        agent: String,
        /// Operator doing it (default: cli:$USER).
        #[arg(long = "as")]
        operator: Option<String>,
    },
    /// Revoke an agent, freeze it and every wallet only it uses (on every chain), and release
    /// its queued and pending spends, in one step.
    Decommission {
        /// Agent id.
        agent: String,
        /// Why.
        #[arg(long)]
        reason: String,
        /// Operator doing it (default: cli:$USER).
        #[arg(long = "as")]
        operator: Option<String>,
    },
}

#[derive(Subcommand)]
enum WalletCommand {
    /// Generate a new key into a key file and print its address: an encrypted EVM keystore, or
    /// with `--chain <solana chain>` a Solana keypair file (encrypted with `--password-env`).
    New(KeystoreArgs),
    /// Write an existing key, read from standard input, into a key file: EVM a hex private key;
    /// Solana a keypair as a JSON array of 64 numbers or base58.
    Import(KeystoreArgs),
}

#[derive(Args)]
struct KeystoreArgs {
    /// Chain the key is for (an id from the config): a Solana chain writes a keypair file;
    /// without it, an EVM keystore.
    #[arg(long)]
    chain: Option<String>,
    /// EVM keystore file to write (never overwritten).
    #[arg(long, required_unless_present = "keypair")]
    keystore: Option<PathBuf>,
    /// Solana keypair file to write (never overwritten).
    #[arg(long, conflicts_with = "keystore")]
    keypair: Option<PathBuf>,
    /// Environment variable holding the password: required for EVM keystores; for a Solana
    /// keypair it encrypts the file (recommended), without it the file is the Solana CLI's
    /// plain format.
    #[arg(long)]
    password_env: Option<String>,
}

#[derive(Args)]
struct EvaluateArgs {
    /// Agent making the spend.
    #[arg(long)]
    agent: String,
    /// Wallet to spend from.
    #[arg(long)]
    wallet: String,
    /// Recipient address.
    #[arg(long)]
    to: String,
    /// Amount in asset units, as a decimal (e.g. 12.50).
    #[arg(long)]
    amount: String,
    /// Asset symbol (on the wallet's chain) or chain:SYMBOL; default the native asset.
    #[arg(long)]
    asset: Option<String>,
    /// Operation, for policies with operation budgets.
    #[arg(long)]
    operation: Option<String>,
    /// Evaluate as of this instant (RFC 3339); default now.
    #[arg(long)]
    at: Option<String>,
    /// Wallet balance of the asset, for balance checks in a dry run without chain access.
    #[arg(long)]
    balance: Option<String>,
    /// Print the evaluate tool's JSON result object.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct ScopeArgs {
    /// An agent.
    #[arg(long)]
    agent: Option<String>,
    /// A wallet.
    #[arg(long)]
    wallet: Option<String>,
    /// A department.
    #[arg(long)]
    department: Option<String>,
    /// The whole organisation.
    #[arg(long)]
    org: bool,
}

impl ScopeArgs {
    fn scope(&self) -> Scope {
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
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn load(path: &Path) -> Result<Config> {
    // The config error already names the file, line and key.
    spendguard_config::load(path).map_err(|e| anyhow::anyhow!("{e}"))
}

fn open_ledger(config: &Config, now: DateTime<Utc>) -> Result<Ledger> {
    wiring::open_ledger_at(config, now)
}

fn operator_name(given: Option<String>) -> String {
    given.unwrap_or_else(|| format!("cli:{}", std::env::var("USER").unwrap_or_else(|_| "unknown".into())))
}

fn run(cli: Cli) -> Result<ExitCode> {
    if let Command::Wallet(cmd) = &cli.command {
        return wallet(cmd, &cli.config);
    }
    let config = load(&cli.config)?;
    match cli.command {
        Command::Check => {
            print!("{}", config.summary());
            Ok(ExitCode::SUCCESS)
        }
        Command::Evaluate(args) => evaluate(&config, args),
        Command::Freeze { scope, reason, operator } => {
            if reason.trim().is_empty() {
                bail!("--reason must say why the scope is frozen");
            }
            let now = Utc::now();
            let ledger = open_ledger(&config, now)?;
            let freeze = Freeze {
                scope: scope.scope(),
                frozen_by: operator_name(operator),
                reason,
                frozen_at: now,
                evidence: None,
            };
            match ledger.freeze(freeze)? {
                FreezeOutcome::Frozen(f) => println!("frozen: {}", f.describe()),
                FreezeOutcome::AlreadyFrozen(f) => println!("already frozen: {}", f.describe()),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Unfreeze { scope, ack, operator } => {
            let Some(ack) = ack.filter(|a| !a.trim().is_empty()) else {
                eprintln!("error: refusing to unfreeze without --ack TEXT saying why it is safe to resume spending");
                return Ok(ExitCode::from(2));
            };
            let now = Utc::now();
            let ledger = open_ledger(&config, now)?;
            let scope = scope.scope();
            if ledger.unfreeze(scope.clone(), &operator_name(operator), &ack, now)? {
                println!("unfrozen: {scope}");
            } else {
                println!("{scope} was not frozen");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Mcp { agent } => mcp(config, &agent),
        Command::Serve { listen } => serve(config, listen),
        Command::Watch => watch(config),
        Command::Agent(AgentCommand::Token { agent }) => {
            let ledger = open_ledger(&config, Utc::now())?;
            let token = spendguard_service::new_token().map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
            ledger.add_agent_token(&agent, &spendguard_service::hash_token(&token), Utc::now())?;
            eprintln!("token for {agent} (shown once; spendguard keeps only its hash):");
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Agent(AgentCommand::Revoke { agent, operator }) => {
            if config.model.agent(&agent).is_none() {
                bail!("no agent {agent:?} is configured");
            }
            let ledger = open_ledger(&config, Utc::now())?;
            let n = ledger.revoke_agent(&agent, &operator_name(operator), Utc::now())?;
            println!("revoked {n} token(s) of {agent}: it can no longer authenticate");
            Ok(ExitCode::SUCCESS)
        }
        Command::Agent(AgentCommand::Decommission { agent, reason, operator }) => {
            ops::decommission(&config, &agent, &operator_name(operator), &reason)
        }
        Command::Approvals(cmd) => ops::approvals(&config, cmd),
        Command::Delays(cmd) => ops::delays(&config, cmd),
        Command::Operator(OperatorCommand::Token { operator }) => ops::operator_token(&config, &operator),
        Command::Audit(cmd) => ops::audit(&config, cmd),
        Command::Report(args) => ops::report(&config, args),
        Command::Status { json } => ops::status(&config, json),
        Command::Exposures { horizon, json } => ops::exposures(&config, &horizon, json),
        Command::Wallet(_) => unreachable!("handled before the config is loaded"),
        Command::Frozen => {
            let ledger = open_ledger(&config, Utc::now())?;
            let freezes = ledger.freezes()?;
            if freezes.is_empty() {
                println!("nothing is frozen");
            }
            for f in freezes {
                println!(
                    "{}\tby {}\tsince {}\t{}",
                    f.scope,
                    f.frozen_by,
                    f.frozen_at.to_rfc3339_opts(SecondsFormat::Secs, true),
                    f.reason
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

/// Resolves when the process is asked to stop (SIGINT or SIGTERM).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}

const BACKGROUND_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

fn mcp(config: Config, agent: &str) -> Result<ExitCode> {
    let token = std::env::var("SPENDGUARD_TOKEN")
        .map_err(|_| anyhow::anyhow!("SPENDGUARD_TOKEN is not set: issue one with `spendguard agent token {agent}`"))?;
    let config = Arc::new(config);
    let ledger = Arc::new(wiring::open_ledger(&config)?);
    match ledger.agent_for_token(&spendguard_service::hash_token(token.trim()))? {
        Some(owner) if owner == agent => {}
        _ => bail!("SPENDGUARD_TOKEN is not a live token of agent {agent} (unknown, revoked, or another agent's)"),
    }
    let guard = wiring::build_guard(Arc::clone(&config), ledger, wiring::Keys::Unlocked)?;
    runtime()?.block_on(async move {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let background = tokio::spawn(Arc::clone(&guard).run(BACKGROUND_INTERVAL, async move {
            let _ = stopped.await;
        }));
        let served = spendguard_mcp::serve_stdio(guard, agent.to_string(), token.trim().to_string()).await;
        let _ = stop.send(());
        let _ = background.await;
        served
    })?;
    Ok(ExitCode::SUCCESS)
}

fn serve(config: Config, listen: Option<std::net::SocketAddr>) -> Result<ExitCode> {
    let addr = listen.unwrap_or(config.server.listen);
    let config = Arc::new(config);
    let ledger = Arc::new(wiring::open_ledger(&config)?);
    let guard = wiring::build_guard(Arc::clone(&config), ledger, wiring::Keys::Unlocked)?;
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("listening on {addr}"))?;
        let local = listener.local_addr()?;
        // The first line on stdout says where to connect (tests read it with port 0).
        println!("spendguard listening on http://{local}/mcp");
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        let (tx, rx) = tokio::sync::watch::channel(false);
        let mut rx2 = rx.clone();
        let background = tokio::spawn(Arc::clone(&guard).run(BACKGROUND_INTERVAL, async move {
            let _ = rx2.wait_for(|stop| *stop).await;
        }));
        let mut rx4 = rx.clone();
        let reports = tokio::spawn(Arc::clone(&guard).run_reports(async move {
            let _ = rx4.wait_for(|stop| *stop).await;
        }));
        let mut rx3 = rx.clone();
        let server = spendguard_mcp::serve_http(guard, listener, async move {
            let _ = rx3.wait_for(|stop| *stop).await;
        });
        let stopper = async move {
            shutdown_signal().await;
            tracing::info!("stopping");
            let _ = tx.send(true);
        };
        let (served, ()) = tokio::join!(server, stopper);
        // Whatever a background pass has started (a spend being signed and sent) finishes first.
        let _ = background.await;
        let _ = reports.await;
        drop(rx);
        served.context("serving HTTP")
    })?;
    Ok(ExitCode::SUCCESS)
}

fn watch(config: Config) -> Result<ExitCode> {
    let interval = config
        .chains
        .iter()
        .filter_map(|c| c.poll_interval.to_std().ok())
        .min()
        .unwrap_or(std::time::Duration::from_secs(1));
    let chains: Vec<String> = config
        .chains
        .iter()
        .filter(|c| c.kind == spendguard_core::model::ChainKind::Evm)
        .map(|c| c.id.clone())
        .collect();
    let config = Arc::new(config);
    let ledger = Arc::new(wiring::open_ledger(&config)?);
    let guard = wiring::build_guard(Arc::clone(&config), ledger, wiring::Keys::Unlocked)?;
    runtime()?.block_on(async move {
        let stop = shutdown_signal();
        tokio::pin!(stop);
        let mut caught_up: HashSet<String> = HashSet::new();
        loop {
            for chain in &chains {
                match guard.watch_once(chain, 500).await {
                    Ok(pass) => {
                        for f in &pass.findings {
                            println!(
                                "{} {}: {}",
                                f.class.as_str(),
                                f.outflow.wallet,
                                spendguard_core::reconcile::evidence(&f.outflow)
                            );
                        }
                        report_progress(&pass, &mut caught_up);
                    }
                    Err(e) => tracing::warn!(chain, error = %e, "watching failed; will retry"),
                }
            }
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    });
    Ok(ExitCode::SUCCESS)
}

/// Backfill progress on stderr: a line per pass while behind, one when caught up.
fn report_progress(pass: &spendguard_service::WatchPass, caught_up: &mut HashSet<String>) {
    use spendguard_chain::Indexing;
    let Some(target) = pass.target else { return };
    let unit = match pass.indexing {
        Indexing::Blocks => "block",
        Indexing::Signatures => "slot",
    };
    if pass.caught_up() {
        if caught_up.insert(pass.chain.clone()) {
            eprintln!("{}: caught up; indexed through {unit} {target}", pass.chain);
        }
    } else if pass.indexed > 0 {
        caught_up.remove(&pass.chain);
        match pass.indexing {
            Indexing::Blocks => eprintln!(
                "{}: indexed blocks {}..={} ({} blocks); {} to go to block {target}",
                pass.chain,
                pass.from,
                pass.next - 1,
                pass.indexed,
                target + 1 - pass.next
            ),
            Indexing::Signatures => eprintln!(
                "{}: indexed {} transactions through slot {}; {} more listed",
                pass.chain,
                pass.indexed,
                pass.next.saturating_sub(1),
                pass.pending
            ),
        }
    }
}

fn wallet(cmd: &WalletCommand, config_path: &Path) -> Result<ExitCode> {
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

fn evaluate(config: &Config, args: EvaluateArgs) -> Result<ExitCode> {
    let amount = parse_decimal(&args.amount).with_context(|| "--amount")?;
    let at = match &args.at {
        Some(text) => DateTime::parse_from_rfc3339(text)
            .with_context(|| format!("--at {text:?} is not an RFC 3339 time such as 2026-11-23T14:00:00Z"))?
            .with_timezone(&Utc),
        None => Utc::now(),
    };
    let mut balances = Balances::new();
    if let Some(text) = &args.balance {
        let balance = parse_decimal(text).with_context(|| "--balance")?;
        let wallet = config.model.wallet(&args.wallet);
        if let Some(key) = wallet.and_then(|w| requested_asset_key(&config.model, w, args.asset.as_deref())) {
            balances.insert(key, balance);
        }
    }
    let ledger = open_ledger(config, at)?;
    let request = SpendRequest {
        agent: args.agent,
        wallet: args.wallet,
        to: args.to,
        amount,
        asset: args.asset,
        operation: args.operation,
        at,
    };
    let evaluation = ledger.evaluate(request, balances)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&evaluation)?);
    } else {
        print!("{}", render(&evaluation));
    }
    Ok(ExitCode::SUCCESS)
}

fn render(e: &Evaluation) -> String {
    let mut out = format!("decision: {} (tier {})\n", e.decision.as_str(), e.tier.as_str());
    for r in &e.reasons {
        let policy = r.policy_id.as_deref().map(|p| format!("{p} ")).unwrap_or_default();
        out.push_str(&format!("  {} [{policy}{}] {}\n", r.code, r.rule, r.detail));
    }
    if !e.headroom.is_empty() {
        out.push_str("headroom:\n");
        for h in &e.headroom {
            out.push_str(&format!(
                "  {} {} {} {} {}: limit {}, used {}, reserved {}, remaining {}\n",
                h.labels.policy_id,
                h.labels.rule,
                h.labels.scope,
                h.labels.window,
                h.labels.unit,
                h.fmt(h.limit),
                h.fmt(h.used),
                h.fmt(h.reserved),
                h.fmt(h.remaining)
            ));
        }
    }
    out
}
