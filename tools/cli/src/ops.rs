//! Operator and auditor commands: approvals, delays, decommissioning, operator tokens, the
//! audit log, reports, status and exposures.

use crate::wiring;
use anyhow::{bail, Context as _, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Args, Subcommand};
use spendguard_config::Config;
use spendguard_service::report::{csv_field, render, ReportFormat};
use spendguard_service::{Guard, PendingItem};
use spendguard_store::audit::{Anchor, AuditFilter};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

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
        #[arg(long = "as")]
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
        #[arg(long = "as")]
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
        /// Operator cancelling.
        #[arg(long = "as")]
        operator: String,
        /// Why.
        #[arg(long, default_value = "cancelled by an operator")]
        reason: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum AuditCommand {
    /// Check the hash chain; names the first bad entry. Exit 3 when the log was tampered with.
    Verify {
        /// An entry recorded earlier, SEQ:HASH, the chain must still pass through.
        #[arg(long)]
        anchor: Option<String>,
    },
    /// Export entries as JSON lines or CSV.
    Export(ExportArgs),
}

#[derive(Args)]
pub(crate) struct ExportArgs {
    /// From (RFC 3339, inclusive).
    #[arg(long)]
    from: Option<String>,
    /// To (RFC 3339, exclusive).
    #[arg(long)]
    to: Option<String>,
    /// Only entries about this agent.
    #[arg(long)]
    agent: Option<String>,
    /// Only entries about this wallet.
    #[arg(long)]
    wallet: Option<String>,
    /// Only entries worth at least this many USD.
    #[arg(long)]
    min_usd: Option<String>,
    /// jsonl or csv.
    #[arg(long, default_value = "jsonl")]
    format: String,
    /// Write here instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct ReportArgs {
    /// Period start (RFC 3339 or YYYY-MM-DD, inclusive).
    #[arg(long)]
    from: String,
    /// Period end (RFC 3339 or YYYY-MM-DD, exclusive).
    #[arg(long)]
    to: String,
    /// json, csv, md or html.
    #[arg(long, default_value = "md")]
    format: String,
    /// Write here instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn parse_time(flag: &str, text: &str) -> Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(d.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    bail!("{flag} {text:?} is not a time: use RFC 3339 (2026-11-22T00:00:00Z) or a date (2026-11-22, UTC midnight)")
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn print_pending(items: &[PendingItem], json: bool, empty: &str) -> Result<()> {
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
            p.usd.as_deref().unwrap_or("?"),
            p.recipient
        );
    }
    Ok(())
}

/// A guard for reading chains (balances) without unlocking any key.
fn reader(config: &Config) -> Result<Arc<Guard>> {
    let config = Arc::new(config.clone());
    let ledger = Arc::new(wiring::open_ledger(&config)?);
    wiring::build_guard(config, ledger, wiring::Keys::Locked)
}

pub(crate) fn approvals(config: &Config, cmd: ApprovalsCommand) -> Result<ExitCode> {
    let guard = reader(config)?;
    let rt = crate::runtime()?;
    match cmd {
        ApprovalsCommand::List { json } => {
            let items: Vec<PendingItem> = rt.block_on(guard.pending_approvals())?.iter().map(PendingItem::of).collect();
            print_pending(&items, json, "no approval requests are pending")?;
        }
        ApprovalsCommand::Show { id } => {
            let d = rt.block_on(guard.decision(&id))?.with_context(|| format!("no decision {id:?}"))?;
            let mut shown = serde_json::to_value(PendingItem::of(&d))?;
            shown["approved_by"] = serde_json::json!(d.approved_by);
            shown["failure"] = serde_json::json!(d.failure);
            shown["tx_hash"] = serde_json::json!(d.tx_hash);
            shown["memo"] = serde_json::json!(d.memo);
            shown["operation"] = serde_json::json!(d.operation);
            println!("{}", serde_json::to_string_pretty(&shown)?);
        }
        ApprovalsCommand::Approve { id, operator, intent_hash } => {
            let d = rt.block_on(guard.record_approval(&id, &operator, intent_hash.as_deref()))?;
            println!(
                "approved {} by {operator}: {} {} to {}",
                d.id,
                d.amount,
                d.asset.as_deref().unwrap_or("?"),
                d.recipient
            );
            // Execute here if this process can unlock the wallet's key; otherwise the daemon does.
            match wiring::build_guard(guard.config_arc(), Arc::clone(guard.ledger()), wiring::Keys::Unlocked) {
                Ok(signer) => {
                    let d = rt.block_on(signer.execute(&id))?;
                    println!("{}: {}{}", d.id, d.status, d.tx_hash.map(|h| format!(" {h}")).unwrap_or_default());
                }
                Err(e) => println!("not executed here ({e:#}); a running `spendguard serve` executes it"),
            }
        }
        ApprovalsCommand::Reject { id, operator, reason } => {
            let d = rt.block_on(guard.reject(&id, &operator, &reason))?;
            println!("rejected {} by {operator}; its reservation is released", d.id);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn delays(config: &Config, cmd: DelaysCommand) -> Result<ExitCode> {
    let ledger = wiring::open_ledger(config)?;
    match cmd {
        DelaysCommand::List { json } => {
            let items: Vec<PendingItem> =
                ledger.decisions_in(&[spendguard_core::SpendStatus::Queued])?.iter().map(PendingItem::of).collect();
            print_pending(&items, json, "no spends are queued")?;
        }
        DelaysCommand::Cancel { id, operator, reason } => {
            let d = ledger.cancel_delay(&id, &operator, &reason, Utc::now()).map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("cancelled {} by {operator}; its reservation is released", d.id);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn decommission(config: &Config, agent: &str, operator: &str, reason: &str) -> Result<ExitCode> {
    if reason.trim().is_empty() {
        bail!("--reason must say why the agent is decommissioned");
    }
    let ledger = wiring::open_ledger(config)?;
    let d = ledger.decommission(agent, operator, reason, Utc::now()).map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("decommissioned {agent}: {} token(s) revoked", d.tokens_revoked);
    for scope in &d.frozen {
        println!("frozen: {scope}");
    }
    for id in &d.released {
        println!("released: {id}");
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn operator_token(config: &Config, operator: &str) -> Result<ExitCode> {
    let ledger = wiring::open_ledger(config)?;
    let token = spendguard_service::new_operator_token().map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    ledger
        .add_operator_token(operator, &spendguard_service::hash_token(&token), Utc::now())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    eprintln!("admin API token for operator {operator} (shown once; spendguard keeps only its hash):");
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn audit(config: &Config, cmd: AuditCommand) -> Result<ExitCode> {
    let ledger = wiring::open_ledger(config)?;
    match cmd {
        AuditCommand::Verify { anchor } => {
            let anchor = match anchor {
                None => None,
                Some(text) => {
                    let (seq, hash) = text.split_once(':').context("--anchor must be SEQ:HASH")?;
                    Some(Anchor { seq: seq.parse().context("--anchor: SEQ must be a number")?, hash: hash.to_string() })
                }
            };
            let check = ledger.verify_audit(anchor.as_ref())?;
            match (&check.first_bad, &check.head) {
                (Some(bad), _) => {
                    println!("TAMPERED: first bad entry is {}: {}", bad.seq, bad.why);
                    return Ok(ExitCode::from(3));
                }
                (None, Some((seq, hash))) => println!("ok: {} entries, chain intact; head {seq}:{hash}", check.entries),
                (None, None) => println!("ok: the audit log is empty"),
            }
        }
        AuditCommand::Export(args) => {
            let filter = AuditFilter {
                from: args.from.as_deref().map(|t| parse_time("--from", t)).transpose()?,
                to: args.to.as_deref().map(|t| parse_time("--to", t)).transpose()?,
                agent: args.agent,
                wallet: args.wallet,
                min_usd: args
                    .min_usd
                    .as_deref()
                    .map(|m| spendguard_core::money::parse_decimal(m).with_context(|| format!("--min-usd {m:?}")))
                    .transpose()?,
            };
            let entries = ledger.audit_entries(&filter)?;
            let mut out = String::new();
            match args.format.as_str() {
                "jsonl" => {
                    for e in &entries {
                        out.push_str(&serde_json::to_string(e)?);
                        out.push('\n');
                    }
                }
                "csv" => {
                    out.push_str("seq,at,kind,actor,decision_id,agent,wallet,usd,detail,prev_hash,hash\n");
                    for e in &entries {
                        let cols = [
                            e.seq.to_string(),
                            time(e.at),
                            e.kind.clone(),
                            e.actor.clone(),
                            e.decision_id.clone().unwrap_or_default(),
                            e.agent.clone().unwrap_or_default(),
                            e.wallet.clone().unwrap_or_default(),
                            e.usd.clone().unwrap_or_default(),
                            e.detail.to_string(),
                            e.prev_hash.clone(),
                            e.hash.clone(),
                        ];
                        out.push_str(&cols.iter().map(|c| csv_field(c)).collect::<Vec<_>>().join(","));
                        out.push('\n');
                    }
                }
                other => bail!("--format {other:?}: use jsonl or csv"),
            }
            write_out(args.out.as_ref(), &out)?;
            eprintln!("{} entries", entries.len());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn write_out(path: Option<&PathBuf>, text: &str) -> Result<()> {
    match path {
        Some(p) => {
            let tmp = p.with_extension("tmp");
            std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, p).with_context(|| format!("writing {}", p.display()))?;
        }
        None => print!("{text}"),
    }
    Ok(())
}

pub(crate) fn report(config: &Config, args: ReportArgs) -> Result<ExitCode> {
    let from = parse_time("--from", &args.from)?;
    let to = parse_time("--to", &args.to)?;
    if to <= from {
        bail!("--to must be after --from");
    }
    let format = ReportFormat::parse(&args.format)
        .with_context(|| format!("--format {:?}: use json, csv, md or html", args.format))?;
    let guard = reader(config)?;
    let report = crate::runtime()?.block_on(guard.report(from, to))?;
    write_out(args.out.as_ref(), &render(&report, format))?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn status(config: &Config, json: bool) -> Result<ExitCode> {
    let guard = reader(config)?;
    let s = crate::runtime()?.block_on(guard.status())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("status at {}", time(s.at));
    for w in &s.wallets {
        let frozen = if w.frozen { "  [FROZEN]" } else { "" };
        println!("\nwallet {} ({} {}){frozen}", w.wallet, w.chain, w.address);
        match &w.balance_error {
            Some(e) => println!("  balances: unavailable ({e})"),
            None => println!(
                "  balances: {}",
                w.balances.iter().map(|(a, v)| format!("{v} {a}")).collect::<Vec<_>>().join(", ")
            ),
        }
        println!("  spent today: ${}", w.spent_today_usd);
        for (agent, limits) in &w.agents {
            println!("  agent {agent}:");
            for l in limits {
                println!(
                    "    {:>6}%  {} {} {} {}: {} of {} {}",
                    l.percent, l.policy, l.rule, l.scope, l.window, l.used, l.limit, l.unit
                );
            }
        }
    }
    println!("\npending approvals ({}):", s.pending_approvals.len());
    print_pending(&s.pending_approvals, false, "  none")?;
    println!("\nqueued delays ({}):", s.queued_delays.len());
    print_pending(&s.queued_delays, false, "  none")?;
    println!("\nfrozen ({}):", s.frozen.len());
    for f in &s.frozen {
        println!("  {}\tby {}\tsince {}\t{}", f.scope, f.frozen_by, time(f.since), f.reason);
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn exposures(config: &Config, horizon: &str, json: bool) -> Result<ExitCode> {
    let span = spendguard_core::time::parse_duration(horizon)
        .with_context(|| format!("--horizon {horizon:?} is not a duration such as 24h or 7d"))?;
    let guard = reader(config)?;
    let e = crate::runtime()?.block_on(guard.exposures(span))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&e)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("projected spend from {} to {}:", time(e.at), time(e.until));
    println!("  queued (DELAY, due in the horizon): ${}", e.queued_usd);
    println!("  pending approval:                  ${}", e.pending_usd);
    println!("  in flight:                         ${}", e.in_flight_usd);
    println!("  total:                             ${}", e.total_usd);
    for (agent, usd) in &e.per_agent {
        println!("  agent {agent}: ${usd}");
    }
    for (wallet, usd) in &e.per_wallet {
        println!("  wallet {wallet}: ${usd}");
    }
    Ok(ExitCode::SUCCESS)
}
