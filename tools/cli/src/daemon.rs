//! The long-running commands: `serve` (the daemon), `mcp` (one agent over stdio) and `watch`
//! (the auditor alone), each the same node run with different listeners.

use anyhow::{bail, Context as _, Result};
use spendguard_config::Config;
use spendguard_node::{Keys, Listeners, StdioAgent};
use std::collections::HashSet;
use std::process::ExitCode;

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

/// `mcp --agent ID`: one agent served over stdin/stdout; its token (`SPENDGUARD_TOKEN`) must be
/// a live token of that agent. The process also runs the background work.
pub(crate) async fn mcp(config: Config, agent: &str) -> Result<ExitCode> {
    let token = std::env::var("SPENDGUARD_TOKEN")
        .map_err(|_| anyhow::anyhow!("SPENDGUARD_TOKEN is not set: issue one with `spendguard agent token {agent}`"))?;
    let token = token.trim().to_string();
    // Checked before the keys are unlocked: a wrong token learns nothing about them.
    let checker = crate::reader(config.clone()).await?;
    match checker.services.credentials.agent(&token).await? {
        Some(owner) if owner == agent => {}
        _ => bail!("SPENDGUARD_TOKEN is not a live token of agent {agent} (unknown, revoked, or another agent's)"),
    }
    drop(checker);
    let node = spendguard_node::build(config, Keys::FromConfig).await?;
    let listeners = Listeners { stdio: Some(StdioAgent { agent: agent.to_string(), token }), ..Listeners::default() };
    node.run(listeners, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// `serve`: the daemon.
pub(crate) async fn serve(config: Config, listen: Option<std::net::SocketAddr>) -> Result<ExitCode> {
    let addr = listen.unwrap_or(config.server.listen);
    let node = spendguard_node::build(config, Keys::FromConfig).await?;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("listening on {addr}"))?;
    let local = listener.local_addr()?;
    // The first line on stdout says where to connect (tests read it with port 0).
    println!("spendguard listening on http://{local}/mcp");
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    node.run(Listeners { http: Some(listener), ..Listeners::default() }, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// `watch`: the auditor alone, on every chain, printing each finding and the backfill's
/// progress.
pub(crate) async fn watch(config: Config) -> Result<ExitCode> {
    let node = spendguard_node::build(config, Keys::Locked).await?;
    let mut passes = node.services.auditor.subscribe();
    let printer = tokio::spawn(async move {
        let mut caught_up: HashSet<String> = HashSet::new();
        loop {
            match passes.recv().await {
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
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    eprintln!("(missed {n} passes' progress; findings are in the ledger)");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    node.run(Listeners::default(), shutdown_signal()).await?;
    drop(node);
    let _ = printer.await;
    Ok(ExitCode::SUCCESS)
}

/// Backfill progress on stderr: a line per pass while behind, one when caught up.
fn report_progress(pass: &spendguard_chain::watch::WatchPass, caught_up: &mut HashSet<String>) {
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
