//! Streamable HTTP at `/mcp`, each request authenticated by its bearer token.

use crate::tools::{AuthenticatedAgent, Identity, SpendguardServer};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use spendguard_service::Guard;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

async fn authenticate(State(guard): State<Arc<Guard>>, mut request: Request, next: Next) -> Response {
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
    match guard.authenticate(&token).await {
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

/// The HTTP routes: `/mcp` (authenticated) and `/healthz`.
pub fn router(guard: Arc<Guard>) -> Router {
    let factory_guard = Arc::clone(&guard);
    let mcp = StreamableHttpService::new(
        move || Ok(SpendguardServer::new(Arc::clone(&factory_guard), Identity::PerRequest)),
        LocalSessionManager::default().into(),
        StreamableHttpServerConfig::default(),
    );
    Router::new()
        .nest_service("/mcp", mcp)
        .layer(middleware::from_fn_with_state(guard, authenticate))
        .route("/healthz", axum::routing::get(|| async { "ok" }))
}

/// Serves [`router`] on `listener` until `shutdown` completes.
pub async fn serve_http(
    guard: Arc<Guard>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(guard)).with_graceful_shutdown(shutdown).await
}
