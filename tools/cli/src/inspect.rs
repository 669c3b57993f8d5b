//! Reading commands: check, evaluate (a dry run), status, exposures, reports and the audit log.

use crate::operate::{print_pending, time};
use crate::{reader, EvaluateArgs};
use anyhow::{bail, Context as _, Result};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use spendguard_config::Config;
use spendguard_core::engine::requested_asset_key;
use spendguard_core::money::parse_decimal;
use spendguard_core::{Balances, Evaluation, SpendRequest};
use spendguard_service::report::{csv_field, render, ReportFormat};
use spendguard_store::audit::{Anchor, AuditFilter};
use std::path::PathBuf;
use std::process::ExitCode;

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

/// `check`: the summary, and what is valid but probably not meant.
pub(crate) fn check(config: &Config, skip_keys: bool) -> Result<ExitCode> {
    print!("{}", config.summary());
    for warning in config.warnings() {
        println!("warning: {warning}");
    }
    let problems = if skip_keys { vec![] } else { spendguard_node::inspect_keys(config) };
    for p in &problems {
        let level = if p.fatal { "error" } else { "warning" };
        println!("{level}: wallet {}: {}", p.wallet, p.message);
    }
    if problems.iter().any(|p| p.fatal) {
        eprintln!("spendguard: the configuration names key files that cannot serve their wallets");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn audit(config: Config, cmd: AuditCommand) -> Result<ExitCode> {
    let reports = reader(config).await?.services.reports;
    match cmd {
        AuditCommand::Verify { anchor } => {
            let anchor = match anchor {
                None => None,
                Some(text) => {
                    let (seq, hash) = text.split_once(':').context("--anchor must be SEQ:HASH")?;
                    Some(Anchor { seq: seq.parse().context("--anchor: SEQ must be a number")?, hash: hash.to_string() })
                }
            };
            let check = reports.verify_audit(anchor).await?;
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
            let entries = reports.audit_entries(filter).await?;
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
                            e.usd.map(|u| u.to_string()).unwrap_or_default(),
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

pub(crate) async fn report(config: Config, args: ReportArgs) -> Result<ExitCode> {
    let from = parse_time("--from", &args.from)?;
    let to = parse_time("--to", &args.to)?;
    if to <= from {
        bail!("--to must be after --from");
    }
    let format = ReportFormat::parse(&args.format)
        .with_context(|| format!("--format {:?}: use json, csv, md or html", args.format))?;
    let report = reader(config).await?.services.reports.report(from, to).await?;
    write_out(args.out.as_ref(), &render(&report, format))?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn status(config: Config, json: bool) -> Result<ExitCode> {
    let s = reader(config).await?.services.overview.status().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("status at {}", time(s.at));
    for w in &s.wallets {
        let frozen = if w.frozen { "  [FROZEN]" } else { "" };
        let custody = if w.custody == "external" { ", external: the agent pays" } else { "" };
        println!("\nwallet {} ({} {}{custody}){frozen}", w.wallet, w.chain, w.address);
        match &w.balance_error {
            Some(e) => println!("  balances: unavailable ({e})"),
            None => println!(
                "  balances: {}",
                w.balances.iter().map(|(a, v)| format!("{v} {a}")).collect::<Vec<_>>().join(", ")
            ),
        }
        println!("  spent today: ${}", w.spent_today_usd);
        if w.custody == "external" {
            println!("  open authorizations: ${}", w.authorized_usd);
        }
        for c in &w.conserved {
            println!("  balance checked: {} {} at block {}", c.balance.normalize(), c.asset, c.block);
        }
        for i in &w.recent_inflows {
            let what = i.asset.clone().or_else(|| i.token.clone()).unwrap_or_default();
            let flag = if i.expected { "" } else { "  [UNEXPECTED: sender not in refill_from]" };
            println!("  inflow: {} {what} from {} at block {}{flag}", i.amount.normalize(), i.sender, i.block);
        }
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
    println!("\nopen authorizations ({}):", s.open_authorizations.len());
    if s.open_authorizations.is_empty() {
        println!("  none");
    }
    for a in &s.open_authorizations {
        println!("  {}", crate::operate::authorization_line(a));
    }
    println!("\nfrozen ({}):", s.frozen.len());
    for f in &s.frozen {
        println!("  {}\tby {}\tsince {}\t{}", f.scope, f.frozen_by, time(f.since), f.reason);
    }
    println!("\nprices ({}):", s.prices.len());
    for p in &s.prices {
        let price = p.price.map_or_else(|| "-".to_string(), |v| format!("${}", v.normalize()));
        let age = p.age_seconds.map(|a| format!(", {a}s old")).unwrap_or_default();
        let state = match &p.problem {
            None => "ok".to_string(),
            Some(why) => format!("UNUSABLE: {why}"),
        };
        println!("  {}\t{price}\t{}{age}\t{state}", p.asset, p.source);
    }
    println!("\nwatchers ({}):", s.watchers.len());
    for w in &s.watchers {
        match (&w.holder, w.expires) {
            (Some(holder), Some(until)) if w.live => {
                println!("  {}\twatched by {holder}\tlease until {}", w.chain, time(until))
            }
            (Some(holder), Some(until)) => {
                println!("  {}\tUNWATCHED: the lease of {holder} ran out at {}", w.chain, time(until))
            }
            _ => println!("  {}\tnot watched yet", w.chain),
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn exposures(config: Config, horizon: &str, json: bool) -> Result<ExitCode> {
    let span = spendguard_core::time::parse_duration(horizon)
        .with_context(|| format!("--horizon {horizon:?} is not a duration such as 24h or 7d"))?;
    let e = reader(config).await?.services.overview.exposures(span).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&e)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("projected spend from {} to {}:", time(e.at), time(e.until));
    println!("  queued (DELAY, due in the horizon): ${}", e.queued_usd);
    println!("  pending approval:                  ${}", e.pending_usd);
    println!("  in flight:                         ${}", e.in_flight_usd);
    println!("  authorized (external, unpaid):     ${}", e.authorized_usd);
    println!("  total:                             ${}", e.total_usd);
    for (agent, usd) in &e.per_agent {
        println!("  agent {agent}: ${usd}");
    }
    for (wallet, usd) in &e.per_wallet {
        println!("  wallet {wallet}: ${usd}");
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn evaluate(config: Config, args: EvaluateArgs) -> Result<ExitCode> {
    let amount = parse_decimal(&args.amount).with_context(|| "--amount")?;
    let at = match &args.at {
        Some(text) => DateTime::parse_from_rfc3339(text)
            .with_context(|| format!("--at {text:?} is not an RFC 3339 time such as 2026-11-23T14:00:00Z"))?
            .with_timezone(&Utc),
        None => Utc::now(),
    };
    let mut balances = Balances::default();
    if let Some(text) = &args.balance {
        let balance = parse_decimal(text).with_context(|| "--balance")?;
        let wallet = config.model.wallet(&args.wallet);
        if let Some(key) = wallet.and_then(|w| requested_asset_key(&config.model, w, args.asset.as_deref())) {
            balances.insert(key, balance);
        }
    }
    let node = reader(config).await?;
    let request = SpendRequest {
        agent: args.agent,
        wallet: args.wallet,
        to: args.to,
        amount,
        asset: args.asset,
        operation: args.operation,
        at,
        domain: None,
    };
    let evaluation = node.services.spending.dry_run(request, balances).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&evaluation)?);
    } else {
        print!("{}", render_evaluation(&evaluation));
    }
    Ok(ExitCode::SUCCESS)
}

fn render_evaluation(e: &Evaluation) -> String {
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
                h.fmt(h.remaining())
            ));
        }
    }
    out
}
