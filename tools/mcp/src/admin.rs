//! The daemon's admin API under `/admin`, for operators: approvals, delays, freezes,
//! decommissioning, status, exposures and reports. Every request carries an operator token
//! (`Authorization: Bearer sgo_…`, issued by `spendguard operator token ID`); what it does is
//! done as that operator, through the same operators' service as the CLI, which checks the
//! operator's roles for every action (reads need `[roles] view`). Answers are JSON; errors are
//! `{"error": "…"}` with 400 (bad input), 401, 403 (not permitted), 404 or 409 (wrong state).

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::json;
use spendguard_config::AdminAction;
use spendguard_core::model::Scope;
use spendguard_service::report::{render, ReportFormat};
use spendguard_service::{FrozenScope, PendingItem, ServiceError, Services};

/// The operator a request authenticated as.
#[derive(Clone)]
struct Operator(String);

type Shared = State<Services>;

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

fn service_error(e: ServiceError) -> Response {
    match e {
        ServiceError::Forbidden(why) => error(StatusCode::FORBIDDEN, why),
        ServiceError::Invalid(why) => error(StatusCode::BAD_REQUEST, why),
        ServiceError::UnknownDecision(id) => error(StatusCode::NOT_FOUND, format!("no decision {id:?}")),
        ServiceError::Unconfigured(why) => error(StatusCode::CONFLICT, why),
        ServiceError::Store(e @ spendguard_store::StoreError::IllegalTransition { .. }) => {
            error(StatusCode::CONFLICT, e.to_string())
        }
        other => {
            tracing::error!(error = %other, "admin request failed");
            error(StatusCode::SERVICE_UNAVAILABLE, other.to_string())
        }
    }
}

/// Reads need the `view` role: the refusal to answer instead, if the operator lacks it.
fn may_view(s: &Services, op: &str) -> Option<Response> {
    s.operators.permit(op, AdminAction::View).err().map(service_error)
}

async fn authenticate(State(services): Shared, mut request: Request, next: Next) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string());
    let Some(token) = token else {
        return error(StatusCode::UNAUTHORIZED, "missing bearer token (an operator token)");
    };
    match services.credentials.operator(&token).await {
        Ok(Some(op)) => {
            request.extensions_mut().insert(Operator(op));
            next.run(request).await
        }
        Ok(None) => error(StatusCode::UNAUTHORIZED, "unknown or revoked operator token"),
        Err(e) => service_error(e),
    }
}

fn parse_scope(text: &str) -> Result<Scope, String> {
    Scope::parse(text).ok_or_else(|| format!("scope {text:?} is not org, department:ID, agent:ID or wallet:ID"))
}

async fn approvals(State(s): Shared, Extension(Operator(op)): Extension<Operator>) -> Response {
    if let Some(refused) = may_view(&s, &op) {
        return refused;
    }
    match s.operators.pending_approvals().await {
        Ok(list) => Json(list.iter().map(PendingItem::of).collect::<Vec<_>>()).into_response(),
        Err(e) => service_error(e),
    }
}

async fn show(State(s): Shared, Extension(Operator(op)): Extension<Operator>, Path(id): Path<String>) -> Response {
    if let Some(refused) = may_view(&s, &op) {
        return refused;
    }
    match s.operators.decision(&id).await {
        Ok(Some(d)) => Json(PendingItem::of(&d)).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no decision {id:?}")),
        Err(e) => service_error(e),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ApproveBody {
    /// The intent hash the operator was shown; approval is refused if it differs.
    intent_hash: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    reason: String,
}

async fn approve(
    State(s): Shared,
    Extension(Operator(op)): Extension<Operator>,
    Path(id): Path<String>,
    body: Option<Json<ApproveBody>>,
) -> Response {
    let body = body.map(|Json(b)| b).unwrap_or_default();
    match s.operators.approve(&id, &op, body.intent_hash.as_deref()).await {
        Ok(d) => {
            Json(json!({"decision_id": d.id, "status": d.status.as_str(), "approved_by": op, "tx_hash": d.tx_hash}))
                .into_response()
        }
        Err(e) => service_error(e),
    }
}

async fn reject(
    State(s): Shared,
    Extension(Operator(op)): Extension<Operator>,
    Path(id): Path<String>,
    Json(body): Json<ReasonBody>,
) -> Response {
    match s.operators.reject(&id, &op, &body.reason).await {
        Ok(d) => Json(json!({"decision_id": d.id, "status": d.status.as_str(), "rejected_by": op})).into_response(),
        Err(e) => service_error(e),
    }
}

async fn delays(State(s): Shared, Extension(Operator(op)): Extension<Operator>) -> Response {
    if let Some(refused) = may_view(&s, &op) {
        return refused;
    }
    match s.operators.queued_delays().await {
        Ok(list) => Json(list.iter().map(PendingItem::of).collect::<Vec<_>>()).into_response(),
        Err(e) => service_error(e),
    }
}

async fn cancel_delay(
    State(s): Shared,
    Extension(Operator(op)): Extension<Operator>,
    Path(id): Path<String>,
    Json(body): Json<ReasonBody>,
) -> Response {
    match s.operators.cancel_delay(&id, &op, &body.reason).await {
        Ok(d) => Json(json!({"decision_id": d.id, "status": d.status.as_str(), "cancelled_by": op})).into_response(),
        Err(e) => service_error(e),
    }
}

async fn frozen(State(s): Shared, Extension(Operator(op)): Extension<Operator>) -> Response {
    if let Some(refused) = may_view(&s, &op) {
        return refused;
    }
    match s.operators.frozen().await {
        Ok(f) => Json(f).into_response(),
        Err(e) => service_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FreezeBody {
    scope: String,
    reason: String,
}

async fn freeze(
    State(s): Shared,
    Extension(Operator(op)): Extension<Operator>,
    Json(body): Json<FreezeBody>,
) -> Response {
    let scope = match parse_scope(&body.scope) {
        Ok(s) => s,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    match s.operators.freeze(scope, &op, &body.reason).await {
        Ok(spendguard_store::FreezeOutcome::Frozen(f)) => Json(json!({"frozen": FrozenScope::of(&f)})).into_response(),
        Ok(spendguard_store::FreezeOutcome::AlreadyFrozen(f)) => {
            Json(json!({"already_frozen": FrozenScope::of(&f)})).into_response()
        }
        Err(e) => service_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnfreezeBody {
    scope: String,
    ack: String,
}

async fn unfreeze(
    State(s): Shared,
    Extension(Operator(op)): Extension<Operator>,
    Json(body): Json<UnfreezeBody>,
) -> Response {
    let scope = match parse_scope(&body.scope) {
        Ok(s) => s,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    match s.operators.unfreeze(scope, &op, &body.ack).await {
        Ok(was) => Json(json!({"scope": body.scope, "unfrozen": was})).into_response(),
        Err(e) => service_error(e),
    }
}

async fn decommission(
    State(s): Shared,
    Extension(Operator(op)): Extension<Operator>,
    Path(agent): Path<String>,
    Json(body): Json<ReasonBody>,
) -> Response {
    match s.operators.decommission(&agent, &op, &body.reason).await {
        Ok(d) => Json(json!({
            "agent": agent,
            "tokens_revoked": d.tokens_revoked,
            "frozen": d.frozen.iter().map(Scope::to_string).collect::<Vec<_>>(),
            "released": d.released,
        }))
        .into_response(),
        Err(e) => service_error(e),
    }
}

async fn status(State(s): Shared, Extension(Operator(op)): Extension<Operator>) -> Response {
    if let Some(refused) = may_view(&s, &op) {
        return refused;
    }
    match s.overview.status().await {
        Ok(status) => Json(status).into_response(),
        Err(e) => service_error(e),
    }
}

#[derive(Deserialize)]
struct HorizonQuery {
    horizon: Option<String>,
}

async fn exposures(
    State(s): Shared,
    Extension(Operator(op)): Extension<Operator>,
    Query(q): Query<HorizonQuery>,
) -> Response {
    if let Some(refused) = may_view(&s, &op) {
        return refused;
    }
    let text = q.horizon.unwrap_or_else(|| "24h".into());
    let Some(horizon) = spendguard_core::time::parse_duration(&text) else {
        return error(StatusCode::BAD_REQUEST, format!("horizon {text:?} is not a duration such as 24h or 7d"));
    };
    match s.overview.exposures(horizon).await {
        Ok(e) => Json(e).into_response(),
        Err(e) => service_error(e),
    }
}

#[derive(Deserialize)]
struct ReportQuery {
    from: String,
    to: String,
    format: Option<String>,
}

async fn report(
    State(s): Shared,
    Extension(Operator(op)): Extension<Operator>,
    Query(q): Query<ReportQuery>,
) -> Response {
    if let Some(refused) = may_view(&s, &op) {
        return refused;
    }
    let parse = |name: &str, text: &str| {
        chrono::DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&chrono::Utc))
            .map_err(|_| format!("{name} {text:?} is not an RFC 3339 time"))
    };
    let (from, to) = match (parse("from", &q.from), parse("to", &q.to)) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(why), _) | (_, Err(why)) => return error(StatusCode::BAD_REQUEST, why),
    };
    let format_text = q.format.unwrap_or_else(|| "json".into());
    let Some(format) = ReportFormat::parse(&format_text) else {
        return error(StatusCode::BAD_REQUEST, format!("format {format_text:?} is not json, csv, md or html"));
    };
    let content_type = match format {
        ReportFormat::Json => "application/json",
        ReportFormat::Csv => "text/csv; charset=utf-8",
        ReportFormat::Markdown => "text/markdown; charset=utf-8",
        ReportFormat::Html => "text/html; charset=utf-8",
    };
    match s.reports.report(from, to).await {
        Ok(r) => ([(header::CONTENT_TYPE, content_type)], render(&r, format)).into_response(),
        Err(e) => service_error(e),
    }
}

/// The `/admin` routes, behind operator-token authentication.
pub(crate) fn router(services: Services) -> Router {
    Router::new()
        .route("/approvals", get(approvals))
        .route("/approvals/{id}", get(show))
        .route("/approvals/{id}/approve", post(approve))
        .route("/approvals/{id}/reject", post(reject))
        .route("/delays", get(delays))
        .route("/delays/{id}/cancel", post(cancel_delay))
        .route("/frozen", get(frozen))
        .route("/freeze", post(freeze))
        .route("/unfreeze", post(unfreeze))
        .route("/agents/{id}/decommission", post(decommission))
        .route("/status", get(status))
        .route("/exposures", get(exposures))
        .route("/report", get(report))
        .layer(middleware::from_fn_with_state(services.clone(), authenticate))
        .with_state(services)
}
