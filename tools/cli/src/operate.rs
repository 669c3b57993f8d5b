//! Operators' commands: approvals, delays, freezes, agents and tokens. Each write goes through
//! the operators' service, which checks the operator's roles as the admin API does.

use crate::{reader, AgentCommand};
use anyhow::{bail, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use clap::Subcommand;
use spendguard_config::{Config, Database};
use spendguard_core::model::Scope;
use spendguard_service::PendingItem;
use spendguard_store::{AuditStore, FreezeOutcome, LedgerOptions, SqlStore};
use std::process::ExitCode;

/// `init`: a new ledger where there is none, or only an empty file.
pub(crate) fn init(config: &Config) -> Result<ExitCode> {
    match &config.server.database {
        Database::Sqlite(path) => {
            SqlStore::init(path, &LedgerOptions::default())?;
            println!("created a new, empty ledger at {}", path.display());
        }
        // A server's database: opening it creates the ledger's tables in it (once, whichever
        // daemon comes first).
        Database::Postgres(_) => {
            drop(spendguard_node::open_ledger(config)?);
            println!("the ledger's tables are ready in {}", config.server.database.describe());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `migrate --to postgres://…`: the SQLite ledger copied into PostgreSQL, its audit chain
/// verified there.
pub(crate) async fn migrate(config: &Config, to: &str) -> Result<ExitCode> {
    let Database::Sqlite(path) = &config.server.database else {
        bail!(
            "[server] database is already PostgreSQL ({}): migrate copies an SQLite ledger into PostgreSQL",
            config.server.database.describe()
        );
    };
    let target = Database::Postgres(to.to_string());
    if !(to.starts_with("postgres://") || to.starts_with("postgresql://")) {
        bail!("--to {}: must be a PostgreSQL URL, postgres://user@host:5432/spendguard", target.describe());
    }
    let (from, url) = (path.clone(), to.to_string());
    let copied = tokio::task::spawn_blocking(move || spendguard_store::copy_to_postgres(&from, &url)).await??;
    println!("copied {} into {}:", path.display(), target.describe());
    for table in &copied {
        println!("  {:<22} {:>9} rows", table.table, table.rows);
    }
    let copy =
        SqlStore::open_postgres(to, std::sync::Arc::new(config.model.clone()), Utc::now(), LedgerOptions::default())?;
    let check = copy.verify_audit(None).await?;
    match (&check.first_bad, &check.head) {
        (Some(bad), _) => {
            println!("TAMPERED: the copy's audit chain breaks at entry {}: {}", bad.seq, bad.why);
            return Ok(ExitCode::from(3));
        }
        (None, Some((seq, hash))) => {
            println!("audit chain verified on the copy: {} entries; head {seq}:{hash}", check.entries)
        }
        (None, None) => println!("the audit log is empty"),
    }
    println!("to use it, set [server] database = \"{}\" in every daemon's configuration", target.describe());
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand)]
pub(crate) enum ApprovalsCommand {
    /// Pending approval requests, oldest first.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One decision in full, with the intent hash an approval binds to.
    Show {
        /// Decision id.
        id: String,
    },
    /// Approve a request; it is executed exactly as requested (by the daemon, or here when the
    /// wallet's key can be unlocked).
    Approve {
        /// Decision id.
        id: String,
        /// Operator approving (must hold the policy's approver_role).
        #[arg(long = "as", env = "SPENDGUARD_OPERATOR")]
        operator: String,
        /// The intent hash shown by `approvals show`; refuses if the request differs.
        #[arg(long)]
        intent_hash: Option<String>,
    },
    /// Reject a request; its reservation is released.
    Reject {
        /// Decision id.
        id: String,
        /// Operator rejecting (must hold the policy's approver_role).
        #[arg(long = "as", env = "SPENDGUARD_OPERATOR")]
        operator: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum DelaysCommand {
    /// Queued DELAY spends, oldest first.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a queued spend; its reservation is released.
    Cancel {
        /// Decision id.
        id: String,
        /// Operator cancelling (a role `[roles] cancel_delay` names).
        #[arg(long = "as", env = "SPENDGUARD_OPERATOR")]
        operator: String,
        /// Why.
        #[arg(long, default_value = "cancelled by an operator")]
        reason: String,
    },
}

pub(crate) fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub(crate) fn print_pending(items: &[PendingItem], json: bool, empty: &str) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(items)?);
        return Ok(());
    }
    if items.is_empty() {
        println!("{empty}");
    }
    for p in items {
        let when = match (p.execute_after, p.approval_expires_at) {
            (Some(t), _) => format!("executes {}", time(t)),
            (_, Some(t)) => format!("expires {}", time(t)),
            _ => String::new(),
        };
        println!(
            "{}\t{}\t{}\t{} {} (${})\tto {}\t{when}",
            p.decision_id,
            p.agent,
            p.wallet,
            p.amount,
            p.asset.as_deref().unwrap_or("?"),
            p.usd.map_or_else(|| "?".to_string(), |u| spendguard_service::Usd(u).to_string()),
            p.recipient
        );
        if let Some(url) = &p.resource {
            let about = p.resource_description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default();
            println!("\tx402 payment for {url}{about}");
        }
    }
    Ok(())
}

pub(crate) async fn approvals(config: Config, cmd: ApprovalsCommand) -> Result<ExitCode> {
    match cmd {
        ApprovalsCommand::List { json } => {
            let node = reader(config).await?;
            let items: Vec<PendingItem> =
                node.services.operators.pending_approvals().await?.iter().map(PendingItem::of).collect();
            print_pending(&items, json, "no approval requests are pending")?;
        }
        ApprovalsCommand::Show { id } => {
            let node = reader(config).await?;
            let Some(d) = node.services.operators.decision(&id).await? else { bail!("no decision {id:?}") };
            let mut shown = serde_json::to_value(PendingItem::of(&d))?;
            shown["approved_by"] = serde_json::json!(d.approved_by);
            shown["failure"] = serde_json::json!(d.failure);
            shown["tx_hash"] = serde_json::json!(d.tx_hash);
            shown["memo"] = serde_json::json!(d.memo);
            shown["operation"] = serde_json::json!(d.operation);
            println!("{}", serde_json::to_string_pretty(&shown)?);
        }
        ApprovalsCommand::Approve { id, operator, intent_hash } => {
            // Executed here when this process can unlock the wallet's key; otherwise the
            // daemon's next pass executes it.
            let (node, why_not) = match spendguard_node::build(config.clone(), spendguard_node::Keys::FromConfig).await
            {
                Ok(node) => (node, None),
                Err(e) => (reader(config).await?, Some(e)),
            };
            let d = node.services.operators.approve(&id, &operator, intent_hash.as_deref()).await?;
            let asset = d.asset.as_deref().unwrap_or("?");
            println!("approved {} by {operator}: {} {asset} to {}", d.id, d.amount, d.recipient);
            match why_not {
                Some(e) => println!("not executed here ({e}); a running `spendguard serve` executes it"),
                None => {
                    println!("{}: {}{}", d.id, d.status, d.tx_hash.map(|h| format!(" {h}")).unwrap_or_default())
                }
            }
        }
        ApprovalsCommand::Reject { id, operator, reason } => {
            let node = reader(config).await?;
            let d = node.services.operators.reject(&id, &operator, &reason).await?;
            println!("rejected {} by {operator}; its reservation is released", d.id);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn delays(config: Config, cmd: DelaysCommand) -> Result<ExitCode> {
    let node = reader(config).await?;
    match cmd {
        DelaysCommand::List { json } => {
            let items: Vec<PendingItem> =
                node.services.operators.queued_delays().await?.iter().map(PendingItem::of).collect();
            print_pending(&items, json, "no spends are queued")?;
        }
        DelaysCommand::Cancel { id, operator, reason } => {
            let d = node.services.operators.cancel_delay(&id, &operator, &reason).await?;
            println!("cancelled {} by {operator}; its reservation is released", d.id);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn freeze(config: Config, scope: Scope, reason: &str, operator: &str) -> Result<ExitCode> {
    if reason.trim().is_empty() {
        bail!("--reason must say why the scope is frozen");
    }
    let node = reader(config).await?;
    match node.services.operators.freeze(scope, operator, reason).await? {
        FreezeOutcome::Frozen(f) => println!("frozen: {}", f.describe()),
        FreezeOutcome::AlreadyFrozen(f) => println!("already frozen: {}", f.describe()),
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn unfreeze(config: Config, scope: Scope, ack: Option<String>, operator: &str) -> Result<ExitCode> {
    let Some(ack) = ack.filter(|a| !a.trim().is_empty()) else {
        eprintln!("error: refusing to unfreeze without --ack TEXT saying why it is safe to resume spending");
        return Ok(ExitCode::from(2));
    };
    let node = reader(config).await?;
    if node.services.operators.unfreeze(scope.clone(), operator, &ack).await? {
        println!("unfrozen: {scope}");
    } else {
        println!("{scope} was not frozen");
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn frozen(config: Config) -> Result<ExitCode> {
    let node = reader(config).await?;
    let freezes = node.services.operators.frozen().await?;
    if freezes.is_empty() {
        println!("nothing is frozen");
    }
    for f in freezes {
        println!("{}\tby {}\tsince {}\t{}", f.scope, f.frozen_by, time(f.since), f.reason);
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn agent(config: Config, cmd: AgentCommand) -> Result<ExitCode> {
    let node = reader(config).await?;
    match cmd {
        AgentCommand::Token { agent } => {
            let by = format!("cli:{}", std::env::var("USER").unwrap_or_else(|_| "unknown".into()));
            let token = node.services.credentials.issue_agent_token(&agent, &by).await?;
            eprintln!("token for {agent} (shown once; spendguard keeps only its hash):");
            println!("{token}");
        }
        AgentCommand::Revoke { agent, operator } => {
            let n = node.services.operators.revoke_agent(&agent, &operator).await?;
            println!("revoked {n} token(s) of {agent}: it can no longer authenticate");
        }
        AgentCommand::Decommission { agent, reason, operator } => {
            if reason.trim().is_empty() {
                bail!("--reason must say why the agent is decommissioned");
            }
            let d = node.services.operators.decommission(&agent, &operator, &reason).await?;
            println!("decommissioned {agent}: {} token(s) revoked", d.tokens_revoked);
            for scope in &d.frozen {
                println!("frozen: {scope}");
            }
            for id in &d.released {
                println!("released: {id}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn operator_token(config: Config, operator: &str) -> Result<ExitCode> {
    let node = reader(config).await?;
    let token = node.services.credentials.issue_operator_token(operator).await?;
    eprintln!("admin API token for operator {operator} (shown once; spendguard keeps only its hash):");
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}

/// `spendguard authority pubkey`: the key that verifies authorization tokens.
pub(crate) fn authority_pubkey(config: &Config, jwk: bool) -> Result<ExitCode> {
    let authority = spendguard_node::load_or_create_authority(&config.server.authority_key)?;
    if jwk {
        println!("{}", authority.public_jwk());
    } else {
        print!("{}", authority.public_key_pem());
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand)]
pub(crate) enum AuthorizationsCommand {
    /// Open authorizations: what agents may still pay (external wallets) or servers may still
    /// settle (x402), until when.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Cancel an open authorization: an x402 payment's on chain (the wallet sends
    /// `cancelAuthorization` with its key, and this waits for the chain's answer), an external
    /// wallet's in the ledger. Its budget is released.
    Cancel {
        /// The decision id.
        id: String,
        /// Why (recorded).
        #[arg(long)]
        reason: String,
        /// Operator doing it: a configured operator holding a role `[roles]` names for it.
        #[arg(long = "as", env = "SPENDGUARD_OPERATOR")]
        operator: String,
    },
}

/// One open authorization on a line: decision, kind, agent, wallet, amount, payee, expiry and,
/// for x402, the resource (`authorizations list`, `status`).
pub(crate) fn authorization_line(a: &spendguard_service::AuthorizationItem) -> String {
    let usd = a.usd.map(|u| format!(" (${})", spendguard_core::money::fmt_usd(u))).unwrap_or_default();
    let what = a.resource.as_deref().map(|r| format!("\tx402 for {r}")).unwrap_or_default();
    format!(
        "{}\t{}\t{}\t{}\t{} {}{usd}\tto {}\tuntil {}{what}",
        a.decision_id,
        a.kind.as_str(),
        a.agent,
        a.wallet,
        a.amount.normalize(),
        a.asset,
        a.recipient,
        time(a.expires_at)
    )
}

pub(crate) async fn authorizations(config: Config, cmd: AuthorizationsCommand) -> Result<ExitCode> {
    match cmd {
        AuthorizationsCommand::List { json } => {
            let items = reader(config).await?.services.overview.open_authorizations().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&items)?);
                return Ok(ExitCode::SUCCESS);
            }
            if items.is_empty() {
                println!("no open authorizations");
            }
            for a in &items {
                println!("{}", authorization_line(a));
            }
            Ok(ExitCode::SUCCESS)
        }
        AuthorizationsCommand::Cancel { id, reason, operator } => {
            let node = spendguard_node::build(config, spendguard_node::Keys::FromConfig).await?;
            let a = node.services.operators.cancel_authorization(&id, &operator, &reason).await?;
            println!(
                "{}: {} ({})",
                a.decision_id,
                a.state,
                a.ended_by.as_deref().unwrap_or("still open: the server settled it first")
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
