//! Streamable HTTP at `/mcp`, each request authenticated by its bearer token.

use crate::tools::{AuthenticatedAgent, Identity, SpendguardServer};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use spendguard_service::Services;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

async fn authenticate(State(services): State<Services>, mut request: Request, next: Next) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .map(str::to_string);
    let refuse = |why: &'static str| {
        (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer realm=\"spendguard\"")], why).into_response()
    };
    let Some(token) = token else { return refuse("missing bearer token") };
    match services.credentials.agent(&token).await {
        Ok(Some(agent)) => {
            request.extensions_mut().insert(AuthenticatedAgent(agent));
            next.run(request).await
        }
        Ok(None) => refuse("unknown or revoked token"),
        Err(e) => {
            tracing::error!(error = %e, "token check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "cannot check tokens now").into_response()
        }
    }
}

/// The HTTP routes: `/mcp` (agent tokens), `/admin` (operator tokens), `/healthz` and
/// `/metrics`.
pub fn router(services: Services) -> Router {
    routes(services, CancellationToken::new())
}

fn routes(services: Services, sessions: CancellationToken) -> Router {
    let (spending, credentials) = (Arc::clone(&services.spending), Arc::clone(&services.credentials));
    let mcp = StreamableHttpService::new(
        move || Ok(SpendguardServer::new(Arc::clone(&spending), Arc::clone(&credentials), Identity::PerRequest)),
        LocalSessionManager::default().into(),
        StreamableHttpServerConfig::default().with_cancellation_token(sessions),
    );
    let agents =
        Router::new().nest_service("/mcp", mcp).layer(middleware::from_fn_with_state(services.clone(), authenticate));
    let health = Arc::clone(&services.operators);
    let metrics = Arc::clone(&services.metrics);
    agents
        .nest("/admin", crate::admin::router(services))
        .route(
            "/healthz",
            axum::routing::get(move || async move {
                // Healthy means the ledger answers; chains are watched and reported in /metrics.
                match health.frozen().await {
                    Ok(_) => (StatusCode::OK, "ok\n").into_response(),
                    Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("ledger unavailable: {e}\n")).into_response(),
                }
            }),
        )
        .route(
            "/metrics",
            axum::routing::get(move || async move {
                ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], metrics.render())
            }),
        )
}

/// Most time a shutdown waits for spends being worked on.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves [`router`] on `listener` until `shutdown` completes. Then no new connection is
/// accepted, spends being decided or executed finish (up to 30 s), and only then are the
/// agents' sessions (their open event streams, which also carry tool answers) closed.
pub async fn serve_http(
    services: Services,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let sessions = CancellationToken::new();
    let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
    let drain = {
        let (sessions, spending) = (sessions.clone(), Arc::clone(&services.spending));
        tokio::spawn(async move {
            if stopped.await.is_err() {
                return;
            }
            let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
            while spending.busy() > 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // A moment for the last answers to be written to their streams.
            tokio::time::sleep(Duration::from_millis(200)).await;
            sessions.cancel();
        })
    };
    let graceful = async move {
        shutdown.await;
        let _ = stopping.send(());
    };
    let served = axum::serve(listener, routes(services, sessions)).with_graceful_shutdown(graceful).await;
    drain.abort();
    served
}
