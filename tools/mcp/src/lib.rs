//! spendguard's MCP server: the tools of shared/spec/MCP_TOOLS.md (the first wave's five and
//! `pay_x402`), served over stdio (one process per agent) and streamable HTTP (bearer tokens);
//! and the daemon's other HTTP routes:
//! the operators' admin API under `/admin` (operator tokens), authorization verification under
//! `/v1`, `/healthz` and Prometheus `/metrics`.
//!
//! The calling agent is whoever authenticated — the token checked at launch on stdio, the
//! bearer token of each HTTP request — never a tool argument. Denials are tool results with
//! `isError: true` whose text starts with the reason code; protocol errors are kept for
//! malformed requests.
//!
//! # Layout
//! - `tools.rs`: [`SpendguardServer`], the tools and their schemas over the spending service.
//! - `http_server.rs`: [`serve_http`], its routes and their gates (the `Host` of every request,
//!   the `Origin`, bearer token and session owner on `/mcp`); it drains spends being worked on
//!   before closing sessions.
//! - `stdio.rs`: the guard that answers an oversized stdio message instead of dropping it.
//! - `admin.rs`: `/admin`, over the operators', overview and reports services; every route
//!   checks the operator's role.
//! - `verify.rs`: `POST /v1/authorizations/verify`, what an external wallet's authorization
//!   token is worth now, for the agent it was issued to or an operator.

mod admin;
mod http_server;
mod stdio;
mod tools;
mod verify;

pub use http_server::serve_http;
pub use tools::{Identity, SpendguardServer};

use std::sync::Arc;

/// Serves one agent over stdin/stdout until the client disconnects; its token is checked on
/// every call.
pub async fn serve_stdio(services: &spendguard_service::Services, agent: String, token: String) -> std::io::Result<()> {
    use rmcp::ServiceExt;
    let server = SpendguardServer::new(
        Arc::clone(&services.spending),
        Arc::clone(&services.credentials),
        Identity::Token { agent, token },
    );
    let (stdin, stdout) = rmcp::transport::stdio();
    let stdin = stdio::LineGuard::new(stdin, stdio::MAX_MESSAGE);
    let running = server.serve((stdin, stdout)).await.map_err(std::io::Error::other)?;
    running.waiting().await.map_err(std::io::Error::other)?;
    Ok(())
}
