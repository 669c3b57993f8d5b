//! Running a node: its background loops, and the servers its listeners ask for, until shutdown.

use crate::{Node, NodeResult};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How often the executor and the alert delivery run their passes.
const BACKGROUND_INTERVAL: Duration = Duration::from_millis(500);

/// One agent served over stdin/stdout, authenticated by its token at every call.
pub struct StdioAgent {
    /// The agent.
    pub agent: String,
    /// Its token.
    pub token: String,
}

/// What a node serves besides its background work.
#[derive(Default)]
pub struct Listeners {
    /// The daemon's HTTP: MCP at `/mcp`, `/admin`, `/healthz`, `/metrics`. With it, scheduled
    /// reports run too.
    pub http: Option<TcpListener>,
    /// One agent over stdin/stdout; the node stops when the client goes away.
    pub stdio: Option<StdioAgent>,
}

/// Runs `pass` every [`BACKGROUND_INTERVAL`] until `stop` is cancelled; a failed pass is logged
/// and the next one tries again.
fn every_pass<F, Fut>(stop: &CancellationToken, what: &'static str, pass: F) -> tokio::task::JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = spendguard_service::ServiceResult<()>> + Send + 'static,
{
    tokio::spawn(spendguard_chain::watch::poll(BACKGROUND_INTERVAL, stop.clone().cancelled_owned(), move || {
        let pass = pass();
        async move {
            if let Err(e) = pass.await {
                tracing::warn!(error = %e, "{what} pass failed; will retry");
            }
        }
    }))
}

impl Node {
    /// Runs the background loops — execution (when this node holds keys), a watcher per chain,
    /// price refresh, alert delivery, and with an HTTP listener the report schedule — and
    /// serves `listeners`,
    /// until `shutdown` completes (or the stdio client leaves). Then no new connection is
    /// accepted, spends being worked on finish, each loop finishes its pass, and it returns.
    pub async fn run(
        &self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> NodeResult<()> {
        // An RPC URL serving another chain than configured would be sent transactions signed
        // for this one and read as this one's outflows: refuse to start. One that does not
        // answer now is checked before its first use.
        for client in self.chains.all() {
            client.check_endpoints().await?;
        }
        let stop = CancellationToken::new();
        let services = &self.services;
        if let Some(address) = listeners.http.as_ref().and_then(|l| l.local_addr().ok()) {
            services.auditor.listening_on(address);
        }
        let mut loops = vec![];
        if services.executor.signs() {
            let executor = Arc::clone(&services.executor);
            loops.push(every_pass(&stop, "execution", move || {
                let executor = Arc::clone(&executor);
                async move { executor.pass().await }
            }));
        }
        loops.push(tokio::spawn(Arc::clone(&services.auditor).run(stop.clone())));
        if services.prices.has_feeds() {
            let prices = Arc::clone(&services.prices);
            let tick = prices.tick();
            loops.push(tokio::spawn(spendguard_chain::watch::poll(tick, stop.clone().cancelled_owned(), move || {
                let prices = Arc::clone(&prices);
                async move {
                    if let Err(e) = prices.refresh().await {
                        tracing::warn!(error = %e, "price refresh failed; will retry");
                    }
                }
            })));
        }
        let alerts = Arc::clone(&services.alerts);
        loops.push(every_pass(&stop, "alert delivery", move || {
            let alerts = Arc::clone(&alerts);
            async move { alerts.pass().await }
        }));
        if listeners.http.is_some() {
            loops.push(tokio::spawn(Arc::clone(&services.reports).run_schedule(stop.clone())));
        }

        let served = match listeners {
            Listeners { http: Some(listener), .. } => {
                let stopping = stop.clone();
                let shutdown = async move {
                    shutdown.await;
                    tracing::info!("stopping");
                    stopping.cancel();
                };
                spendguard_mcp::serve_http(services.clone(), listener, shutdown).await
            }
            Listeners { stdio: Some(StdioAgent { agent, token }), .. } => {
                let served = tokio::select! {
                    served = spendguard_mcp::serve_stdio(services, agent, token) => served,
                    () = shutdown => Ok(()),
                };
                stop.cancel();
                served
            }
            Listeners { .. } => {
                shutdown.await;
                stop.cancel();
                Ok(())
            }
        };
        // Whatever a loop has started (a spend being signed and sent) finishes first.
        stop.cancel();
        for task in loops {
            let _ = task.await;
        }
        Ok(served?)
    }
}
