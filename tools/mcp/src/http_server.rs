//! Streamable HTTP at `/mcp`, each request authenticated by its bearer token.

use crate::tools::{AuthenticatedAgent, Identity, SpendguardServer};
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt as _;
use axum::Router;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use spendguard_service::{Credentials, Services};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Who may use `/mcp`: the agents' tokens, and which agent opened each MCP session.
#[derive(Clone)]
struct McpGate {
    credentials: Arc<Credentials>,
    owners: Arc<SessionOwners>,
}

/// The agent that opened each live MCP session: a session is one agent's, and another agent's
/// token must not read its event stream or close it.
struct SessionOwners {
    by_session: Mutex<HashMap<String, String>>,
    /// rmcp's sessions, to forget owners of sessions it has closed (idle ones expire).
    manager: Arc<LocalSessionManager>,
}

impl SessionOwners {
    fn owner(&self, session: &str) -> Option<String> {
        self.by_session.lock().unwrap_or_else(PoisonError::into_inner).get(session).cloned()
    }

    async fn opened(&self, session: String, agent: String) {
        let known = self.by_session.lock().unwrap_or_else(PoisonError::into_inner).len();
        // Now and then, forget the sessions rmcp no longer holds.
        if known >= 64 && known.is_power_of_two() {
            let live = self.manager.sessions.read().await;
            self.by_session.lock().unwrap_or_else(PoisonError::into_inner).retain(|s, _| live.contains_key(s.as_str()));
        }
        self.by_session.lock().unwrap_or_else(PoisonError::into_inner).insert(session, agent);
    }

    fn closed(&self, session: &str) {
        self.by_session.lock().unwrap_or_else(PoisonError::into_inner).remove(session);
    }
}

/// rmcp's header naming the MCP session of a request.
const SESSION_HEADER: &str = "mcp-session-id";

async fn authenticate(State(gate): State<McpGate>, mut request: Request, next: Next) -> Response {
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
    let agent = match gate.credentials.agent(&token).await {
        Ok(Some(agent)) => agent,
        Ok(None) => return refuse("unknown or revoked token"),
        Err(e) => {
            tracing::error!(error = %e, "token check failed");
            return (StatusCode::SERVICE_UNAVAILABLE, "cannot check tokens now").into_response();
        }
    };
    let session = request.headers().get(SESSION_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string);
    if let Some(session) = &session {
        // Another agent's session is answered as an unknown one: its existence is not told.
        if gate.owners.owner(session).as_deref() != Some(agent.as_str()) {
            return (StatusCode::NOT_FOUND, "no such MCP session for this agent").into_response();
        }
    }
    let closing = request.method() == Method::DELETE;
    request.extensions_mut().insert(AuthenticatedAgent(agent.clone()));
    let response = next.run(request).await;
    match (&session, response.headers().get(SESSION_HEADER).and_then(|v| v.to_str().ok())) {
        (Some(session), _) if closing && response.status().is_success() => gate.owners.closed(session),
        (None, Some(opened)) => gate.owners.opened(opened.to_string(), agent).await,
        _ => {}
    }
    response
}

/// An allowed `Host`: the lower-case host, and the port when the entry names one.
type AllowedHost = (String, Option<String>);

/// What the HTTP routes accept from whom: the `Host` names and browser origins of the config,
/// and the bound address.
struct Admission {
    hosts: Vec<AllowedHost>,
    origins: Vec<String>,
}

impl Admission {
    fn new(config: &spendguard_config::Config, bound: SocketAddr) -> Admission {
        let mut hosts = config.server.allowed_hosts.clone();
        let ip = bound.ip().to_string();
        if !bound.ip().is_unspecified() && !hosts.contains(&ip) {
            hosts.push(ip);
        }
        // Parsed once here, not on every request.
        let hosts = hosts
            .iter()
            .map(|entry| {
                let (host, port) = host_and_port(entry);
                (host, port.map(str::to_string))
            })
            .collect();
        Admission { hosts, origins: config.server.allowed_origins.clone() }
    }
}

/// Splits a `Host` value (or an allowed entry) into its lower-case host and optional port:
/// `example.com:8080`, `[::1]:3100`, `::1`.
fn host_and_port(authority: &str) -> (String, Option<&str>) {
    let (host, port) = match authority.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((host, tail)) => (host, tail.strip_prefix(':')),
            None => (rest, None),
        },
        // More than one colon without brackets: a bare IPv6 address.
        None if authority.matches(':').count() > 1 => (authority, None),
        None => match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    (host.to_ascii_lowercase(), port)
}

/// Refuses a request whose `Host` is not one spendguard answers to: a page on another site
/// whose name was rebound to this address must not reach `/admin`, `/mcp` or `/metrics`.
async fn check_host(State(allowed): State<Arc<Vec<AllowedHost>>>, request: Request, next: Next) -> Response {
    let authority = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    let admitted = authority.is_some_and(|authority| {
        let (host, port) = host_and_port(authority);
        allowed.iter().any(|(allowed_host, allowed_port)| {
            *allowed_host == host && allowed_port.as_deref().is_none_or(|p| Some(p) == port)
        })
    });
    if admitted {
        next.run(request).await
    } else {
        let shown = authority.unwrap_or("(none)").chars().take(256).collect::<String>();
        let why = format!("Host {shown:?} is not one this spendguard answers to (see [server] allowed_hosts)\n");
        (StatusCode::FORBIDDEN, why).into_response()
    }
}

fn routes(services: Services, sessions: CancellationToken, admission: Admission) -> Router {
    let (spending, credentials) = (Arc::clone(&services.spending), Arc::clone(&services.credentials));
    let manager = Arc::new(LocalSessionManager::default());
    let mcp = StreamableHttpService::new(
        move || Ok(SpendguardServer::new(Arc::clone(&spending), Arc::clone(&credentials), Identity::PerRequest)),
        Arc::clone(&manager),
        StreamableHttpServerConfig::default()
            .with_cancellation_token(sessions)
            .with_max_request_body_bytes(crate::stdio::MAX_MESSAGE)
            // The Host is checked for every route below, by one rule.
            .disable_allowed_hosts()
            // The MCP transport requires Origin to be checked; none is allowed unless configured.
            .with_allowed_origins(admission.origins)
            .enforce_origin_validation(),
    );
    let gate = McpGate {
        credentials: Arc::clone(&services.credentials),
        owners: Arc::new(SessionOwners { by_session: Mutex::default(), manager }),
    };
    let agents = Router::new().nest_service("/mcp", mcp).layer(middleware::from_fn_with_state(gate, authenticate));
    let health = Arc::clone(&services.operators);
    let metrics = Arc::clone(&services.metrics);
    let prices = Arc::clone(&services.prices);
    agents
        .nest("/admin", crate::admin::router(services.clone()))
        .nest("/v1", crate::verify::router(services))
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
                let text = metrics.render() + &prices.render_metrics();
                ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
            }),
        )
        .layer(middleware::from_fn_with_state(Arc::new(admission.hosts), check_host))
}

/// `listener`, its accepted connections with `TCP_NODELAY` set. An answer goes out as several
/// writes (headers, then the event stream's events); with Nagle's algorithm on, each later
/// write waits for the client's delayed ACK — about 40 ms per tool call on Linux.
fn without_nagle(listener: TcpListener) -> impl axum::serve::Listener<Io = tokio::net::TcpStream, Addr = SocketAddr> {
    listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "could not set TCP_NODELAY on a connection");
        }
    })
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
    let admission = Admission::new(&services.config, listener.local_addr()?);
    let served = axum::serve(without_nagle(listener), routes(services, sessions, admission))
        .with_graceful_shutdown(graceful)
        .await;
    drain.abort();
    served
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::serve::Listener as _;

    #[tokio::test]
    async fn accepted_connections_do_not_wait_for_acks() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let mut listener = without_nagle(listener);
        let client = tokio::net::TcpStream::connect(addr);
        let (accepted, client) = tokio::join!(listener.accept(), client);
        client.expect("connect");
        let (stream, _) = accepted;
        assert!(stream.nodelay().expect("TCP_NODELAY"), "an accepted connection still runs Nagle's algorithm");
    }
}
