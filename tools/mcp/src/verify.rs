//! `POST /v1/authorizations/verify`: what an external wallet's authorization token is worth now
//! (`valid`, `consumed`, `expired`, `revoked`, `invalid`), for a wallet-side hook deciding
//! whether to send the payment. The caller authenticates with a bearer token: the agent the
//! token was issued to, or an operator with the `view` role. Body `{"token": "…"}`; answer
//! the JSON of [`spendguard_service::Verification`], or `{"error": "…"}` with 400, 401, 403
//! or 503.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use spendguard_service::{Caller, ServiceError, Services};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyBody {
    token: String,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

/// The caller of a bearer token: an agent's token first, else an operator's.
async fn caller(s: &Services, headers: &HeaderMap) -> Result<Caller, Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| error(StatusCode::UNAUTHORIZED, "missing bearer token (an agent's or an operator's)"))?;
    let unavailable = |e: ServiceError| {
        tracing::error!(error = %e, "token check failed");
        error(StatusCode::SERVICE_UNAVAILABLE, "cannot check tokens now")
    };
    if let Some(agent) = s.credentials.agent(token).await.map_err(unavailable)? {
        return Ok(Caller::Agent(agent));
    }
    match s.credentials.operator(token).await.map_err(unavailable)? {
        Some(op) => Ok(Caller::Operator(op)),
        None => Err(error(StatusCode::UNAUTHORIZED, "unknown or revoked token")),
    }
}

async fn verify(State(s): State<Services>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let caller = match caller(&s, &headers).await {
        Ok(c) => c,
        Err(refused) => return refused,
    };
    let body: VerifyBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("the body must be {{\"token\": \"…\"}}: {e}")),
    };
    match s.authorizations.verify(&caller, &body.token).await {
        Ok(v) => Json(v).into_response(),
        Err(ServiceError::Forbidden(why)) => error(StatusCode::FORBIDDEN, why),
        Err(ServiceError::Invalid(why)) => error(StatusCode::BAD_REQUEST, why),
        Err(e) => {
            tracing::error!(error = %e, "verifying an authorization failed");
            error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
    }
}

/// The `/v1` routes.
pub(crate) fn router(services: Services) -> Router {
    Router::new().route("/authorizations/verify", post(verify)).with_state(services)
}
