//! The tools, their schemas (doc comments become the descriptions the model reads) and how
//! the spending service's results become tool results.

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, CustomRequest, CustomResult, ErrorCode,
    Implementation, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{schemars, tool, tool_handler, tool_router, ErrorData as McpError, RoleServer, ServerHandler};
use serde::Deserialize;
use serde_json::{json, Value};
use spendguard_core::{Decision, Evaluation};
use spendguard_service::{
    AgentStatus, Credentials, EvaluateArgs, PayX402Args, ServiceError, SpendArgs, SpendOutcome, Spending, X402Outcome,
    X402Status,
};
use std::sync::Arc;

/// Who is calling.
#[derive(Clone)]
pub enum Identity {
    /// An agent and its token (stdio): the token is checked again on every call, so revoking
    /// it stops a running session too.
    Token {
        /// The agent.
        agent: String,
        /// Its bearer token.
        token: String,
    },
    /// Trusted without a token: in-process tests and embedding.
    Agent(String),
    /// Authenticated per HTTP request by the bearer-token middleware.
    PerRequest,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        match self {
            Identity::Token { agent, .. } => write!(f, "Token({agent})"),
            Identity::Agent(a) => write!(f, "Agent({a})"),
            Identity::PerRequest => f.write_str("PerRequest"),
        }
    }
}

/// Put into the HTTP request's extensions by the authentication middleware.
#[derive(Debug, Clone)]
pub(crate) struct AuthenticatedAgent(pub(crate) String);

/// The MCP server of one connection.
#[derive(Clone)]
pub struct SpendguardServer {
    spending: Arc<Spending>,
    credentials: Arc<Credentials>,
    identity: Identity,
    tool_router: ToolRouter<Self>,
}

/// Arguments of `evaluate`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EvaluateParams {
    /// Id of the wallet to pay from; it must be one assigned to you (`balance` lists them).
    pub(crate) wallet: String,
    /// Recipient address on the wallet's chain: `0x…` on EVM chains, base58 on Solana.
    pub(crate) to: String,
    /// Amount in asset units as a decimal string, for example "12.50". Never a JSON number.
    pub(crate) amount: String,
    /// Asset: a symbol on the wallet's chain such as "USDC", or "chain:SYMBOL". Defaults to the chain's native coin.
    pub(crate) asset: Option<String>,
    /// The operation this payment is for, when your policies have operation budgets (for example "refund").
    pub(crate) operation: Option<String>,
    /// What the payment is for, in a few words; recorded with the decision.
    pub(crate) memo: Option<String>,
}

/// Arguments of `spend`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SpendParams {
    /// Id of the wallet to pay from; it must be one assigned to you (`balance` lists them).
    pub(crate) wallet: String,
    /// Recipient address on the wallet's chain: `0x…` on EVM chains, base58 on Solana.
    pub(crate) to: String,
    /// Amount in asset units as a decimal string, for example "12.50". Never a JSON number.
    pub(crate) amount: String,
    /// Asset: a symbol on the wallet's chain such as "USDC", or "chain:SYMBOL". Defaults to the chain's native coin.
    pub(crate) asset: Option<String>,
    /// The operation this payment is for, when your policies have operation budgets (for example "refund").
    pub(crate) operation: Option<String>,
    /// What the payment is for, in a few words; recorded with the decision.
    pub(crate) memo: Option<String>,
    /// A unique key for this payment. Retrying with the same key and the same arguments returns the first result and never pays twice; the same key with different arguments is refused (IDEMPOTENCY_CONFLICT). Keys are kept at least 24 hours. Use one whenever a retry is possible.
    pub(crate) idempotency_key: Option<String>,
}

/// Arguments of `pay_x402`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PayX402Params {
    /// Id of the wallet to pay from (an EVM wallet spendguard holds); it must be one assigned to you.
    pub(crate) wallet: String,
    /// The server's HTTP 402 answer as a JSON object: x402 version 2 `{x402Version: 2, resource: {url, description, mimeType}, accepts: [{scheme, network, amount, asset, payTo, maxTimeoutSeconds, extra: {name, version}}]}` (the base64 `PAYMENT-REQUIRED` header, decoded) or version 1 `{x402Version: 1, accepts: [{scheme, network, maxAmountRequired, resource, payTo, asset, maxTimeoutSeconds, extra}]}` (the body).
    pub(crate) payment_required: serde_json::Map<String, Value>,
    /// What the payment is for, in a few words; recorded with the decision.
    pub(crate) memo: Option<String>,
    /// A unique key for this payment: retrying with the same key and challenge returns the same header and never pays twice.
    pub(crate) idempotency_key: Option<String>,
}

/// Arguments of `balance`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BalanceParams {
    /// Id of one of your wallets; omit it to see all of them.
    pub(crate) wallet: Option<String>,
}

/// Arguments of `spend_status` and `cancel_spend`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DecisionParams {
    /// The decision_id returned by `spend`.
    pub(crate) decision_id: String,
}

fn evaluate_args(p: EvaluateParams) -> EvaluateArgs {
    EvaluateArgs { wallet: p.wallet, to: p.to, amount: p.amount, asset: p.asset, operation: p.operation, memo: p.memo }
}

/// A successful result: the JSON as text and as structured content.
fn ok(value: Value) -> CallToolResult {
    CallToolResult::structured(value)
}

/// A result the model must read as a refusal: text starting with the code, then the JSON.
fn refusal(code: &str, detail: &str, value: Value) -> CallToolResult {
    let mut r = CallToolResult::structured_error(value.clone());
    r.content = vec![ContentBlock::text(format!("{code}: {detail}\n{value}"))];
    r
}

/// Failures that are not denials: tool errors the model can read, with a code.
fn service_error(e: ServiceError) -> CallToolResult {
    let (code, detail) = match &e {
        ServiceError::UnknownDecision(_) => ("UNKNOWN_DECISION", e.to_string()),
        ServiceError::WalletNotAssigned { .. } => ("WALLET_NOT_ASSIGNED", e.to_string()),
        ServiceError::Forbidden(_) => ("FORBIDDEN", e.to_string()),
        ServiceError::Invalid(_) | ServiceError::Unconfigured(_) => ("INVALID_REQUEST", e.to_string()),
        ServiceError::Chain(c) if c.is_retryable() => {
            ("CHAIN_UNAVAILABLE", format!("{e}; nothing was spent, try again shortly"))
        }
        ServiceError::Chain(_) => ("CHAIN_ERROR", e.to_string()),
        _ => {
            tracing::error!(error = %e, "internal failure serving a tool call");
            ("INTERNAL_ERROR", "spendguard could not complete the request; nothing was spent; try again".to_string())
        }
    };
    refusal(code, &detail, json!({ "error": code, "detail": detail }))
}

/// A report as the tool result, or the service's failure as a readable tool error.
fn reply<T: serde::Serialize>(result: Result<T, ServiceError>) -> CallToolResult {
    match result {
        Ok(report) => ok(serde_json::to_value(report).unwrap_or(Value::Null)),
        Err(e) => service_error(e),
    }
}

fn evaluation_result(e: &Evaluation) -> CallToolResult {
    let value = serde_json::to_value(e).unwrap_or(Value::Null);
    // A dry run that says "deny" is an answer, not a failure: text leads with the first code.
    match e.reasons.iter().find(|r| r.code.denies()) {
        Some(first) if e.decision == Decision::Deny => {
            let mut r = ok(value.clone());
            r.content = vec![ContentBlock::text(format!("deny {}: {}\n{value}", first.code, first.detail))];
            r
        }
        _ => ok(value),
    }
}

fn x402_result(o: &X402Outcome) -> CallToolResult {
    let value = serde_json::to_value(o).unwrap_or(Value::Null);
    match (o.status, o.reasons.iter().find(|r| r.code.denies())) {
        (X402Status::Denied, Some(first)) => refusal(first.code.as_str(), &first.detail, value),
        (X402Status::Failed, _) => {
            refusal("SPEND_FAILED", o.failure.as_deref().unwrap_or("the authorization could not be signed"), value)
        }
        _ => ok(value),
    }
}

fn spend_result(o: &SpendOutcome) -> CallToolResult {
    let value = serde_json::to_value(o).unwrap_or(Value::Null);
    match (o.status, o.reasons.iter().find(|r| r.code.denies())) {
        (AgentStatus::Denied, Some(first)) => refusal(first.code.as_str(), &first.detail, value),
        (AgentStatus::Failed, _) => {
            refusal("SPEND_FAILED", o.failure.as_deref().unwrap_or("the chain refused the transaction"), value)
        }
        _ => ok(value),
    }
}

#[tool_router]
impl SpendguardServer {
    /// A server for one connection.
    pub fn new(spending: Arc<Spending>, credentials: Arc<Credentials>, identity: Identity) -> SpendguardServer {
        SpendguardServer { spending, credentials, identity, tool_router: Self::tool_router() }
    }

    async fn agent(&self, ctx: &RequestContext<RoleServer>) -> Result<String, McpError> {
        match &self.identity {
            Identity::Agent(a) => Ok(a.clone()),
            Identity::Token { agent, token } => match self.credentials.agent(token).await {
                Ok(Some(owner)) if &owner == agent => Ok(agent.clone()),
                Ok(_) => Err(McpError::invalid_request("the agent's token was revoked", None)),
                Err(e) => Err(McpError::internal_error(format!("cannot check the token: {e}"), None)),
            },
            Identity::PerRequest => ctx
                .extensions
                .get::<http::request::Parts>()
                .and_then(|p| p.extensions.get::<AuthenticatedAgent>())
                .map(|a| a.0.clone())
                .ok_or_else(|| McpError::invalid_request("not authenticated", None)),
        }
    }

    #[tool(
        description = "Check whether a payment would be allowed, without paying or reserving anything. Returns the decision (allow, notify, delay, require_approval or deny), the tier, every reason with its code and numbers, and the remaining headroom of each limit that applies. Use it before `spend` when unsure.",
        annotations(
            title = "Evaluate a payment (dry run)",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = true
        )
    )]
    async fn evaluate(
        &self,
        Parameters(p): Parameters<EvaluateParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let agent = self.agent(&ctx).await?;
        Ok(match self.spending.evaluate(&agent, evaluate_args(p)).await {
            Ok(e) => evaluation_result(&e),
            Err(e) => service_error(e),
        })
    }

    #[tool(
        description = "Pay from one of your wallets. spendguard checks the payment against your organisation's policies and, if allowed, signs and broadcasts it itself. Small payments execute at once (status executed, with tx_hash); larger ones may be queued for a delay (status queued, execute_after; cancellable) or need a human approval (status pending_approval, approval_expires_at). A refusal is an error result whose text starts with the reason code (for example WINDOW_LIMIT, RECIPIENT_BLOCKED, KILL_SWITCH) and explains the numbers; do not retry a refusal unchanged. Pass an idempotency_key so a retry never pays twice. From a wallet spendguard does not hold (custody external), an allowed payment is not sent: status authorized, with an `authorization` (to, asset, exact amount, expires_at and a signed token); pay exactly that from your own wallet before it expires — anything else leaving the wallet freezes it.",
        annotations(
            title = "Pay (moves money)",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = true
        )
    )]
    async fn spend(
        &self,
        Parameters(p): Parameters<SpendParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let agent = self.agent(&ctx).await?;
        let args = SpendArgs {
            request: EvaluateArgs {
                wallet: p.wallet,
                to: p.to,
                amount: p.amount,
                asset: p.asset,
                operation: p.operation,
                memo: p.memo,
            },
            idempotency_key: p.idempotency_key,
        };
        Ok(match self.spending.spend(&agent, args).await {
            Ok(o) => spend_result(&o),
            Err(e) => service_error(e),
        })
    }

    #[tool(
        description = "Pay an x402 (HTTP 402 Payment Required) API from one of your wallets. Pass the server's 402 challenge as payment_required; spendguard picks the first requirement it can pay (scheme exact, on a configured chain, in a configured token), checks it against your organisation's policies like a spend of that amount to the server's payTo (the resource's host counts as its domain), and, if allowed, signs an EIP-3009 authorization for exactly that amount. Retry your HTTP request with the header PAYMENT-SIGNATURE (x402 version 1: X-PAYMENT) set to payment_signature. Status signed means send it now; queued or pending_approval means spend_status will carry payment_signature once it is signed. A refusal is an error result whose text starts with the reason code (X402_UNPAYABLE when no requirement can be paid, or a policy code). Pass an idempotency_key so a retry returns the same header.",
        annotations(
            title = "Pay an x402 API (moves money)",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = true
        )
    )]
    async fn pay_x402(
        &self,
        Parameters(p): Parameters<PayX402Params>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let agent = self.agent(&ctx).await?;
        let args = PayX402Args {
            wallet: p.wallet,
            payment_required: Value::Object(p.payment_required),
            memo: p.memo,
            idempotency_key: p.idempotency_key,
        };
        Ok(match self.spending.pay_x402(&agent, args).await {
            Ok(o) => x402_result(&o),
            Err(e) => service_error(e),
        })
    }

    #[tool(
        description = "Show your wallets' live on-chain balances (every configured asset) and, for every limit that applies to you, its window, how much is used, reserved by pending payments, and remaining.",
        annotations(
            title = "Balances and remaining limits",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = true
        )
    )]
    async fn balance(
        &self,
        Parameters(p): Parameters<BalanceParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let agent = self.agent(&ctx).await?;
        Ok(reply(self.spending.balance(&agent, p.wallet.as_deref()).await))
    }

    #[tool(
        description = "Follow one of your payments by its decision_id: status (executed, queued, pending_approval, denied, processing, authorized, confirmed, released, failed), tier, reasons, tx_hash, confirmations, reconciliation class and, for a wallet you pay from yourself, the authorization and its state (open, consumed, expired, revoked).",
        annotations(
            title = "Payment status",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = true
        )
    )]
    async fn spend_status(
        &self,
        Parameters(p): Parameters<DecisionParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let agent = self.agent(&ctx).await?;
        Ok(reply(self.spending.spend_status(&agent, &p.decision_id).await))
    }

    #[tool(
        description = "Cancel one of your payments that is still queued (DELAY tier), waiting for approval, or authorized but not yet paid from your own wallet (the authorization is revoked: do not pay it afterwards); its reserved budget is released. Executed payments cannot be cancelled.",
        annotations(
            title = "Cancel a queued payment",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn cancel_spend(
        &self,
        Parameters(p): Parameters<DecisionParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let agent = self.agent(&ctx).await?;
        Ok(reply(self.spending.cancel_spend(&agent, &p.decision_id).await))
    }
}

/// Why `arguments` do not fit tool `T`'s schema, naming the argument (a JSON number for
/// `amount`, a missing `to`, an unknown `agent` field), or `None` when they fit.
fn misfit<T: serde::de::DeserializeOwned>(arguments: &Value) -> Option<String> {
    match serde_path_to_error::deserialize::<_, T>(arguments) {
        Ok(_) => None,
        // Missing and unknown fields are reported at the root and name the field themselves.
        Err(e) => match e.path().to_string() {
            root if root == "." => Some(e.into_inner().to_string()),
            path => Some(format!("argument `{path}`: {}", e.into_inner())),
        },
    }
}

/// The arguments of call `request` checked against its tool's schema before rmcp reads them, so
/// that a misfit is refused like every other bad argument (`INVALID_REQUEST: …` naming it, with
/// structured content) instead of rmcp's generic text.
fn check_arguments(request: &mut CallToolRequestParams) -> Option<CallToolResult> {
    let arguments = Value::Object(request.arguments.take().unwrap_or_default());
    let problem = match request.name.as_ref() {
        "evaluate" => misfit::<EvaluateParams>(&arguments),
        "spend" => misfit::<SpendParams>(&arguments),
        "pay_x402" => misfit::<PayX402Params>(&arguments),
        "balance" => misfit::<BalanceParams>(&arguments),
        "spend_status" | "cancel_spend" => misfit::<DecisionParams>(&arguments),
        _ => None,
    };
    if let Value::Object(map) = arguments {
        request.arguments = Some(map);
    }
    let detail = format!("the arguments do not fit the tool's schema: {}", problem?);
    Some(refusal("INVALID_REQUEST", &detail, json!({ "error": "INVALID_REQUEST", "detail": detail })))
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for SpendguardServer {
    async fn call_tool(
        &self,
        mut request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        if let Some(refused) = check_arguments(&mut request) {
            return Ok(refused.into());
        }
        self.tool_router.call(ToolCallContext::new(self, request, context)).await
    }

    /// The stand-in for a stdio message too large to read (see `stdio.rs`): its caller gets a
    /// JSON-RPC error saying so instead of waiting forever.
    async fn on_custom_request(
        &self,
        request: CustomRequest,
        _context: RequestContext<RoleServer>,
    ) -> Result<CustomResult, McpError> {
        if request.method != crate::stdio::OVERSIZED_METHOD {
            return Err(McpError::new(ErrorCode::METHOD_NOT_FOUND, request.method, None));
        }
        let params = request.params.unwrap_or_default();
        Err(McpError::invalid_request(
            format!(
                "the message is {} bytes; spendguard reads messages of at most {} bytes, and did nothing with it",
                params["bytes"], params["max"]
            ),
            None,
        ))
    }

    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("spendguard", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "spendguard pays from your organisation's crypto wallets under its spending policies. \
                 Amounts are decimal strings in asset units. Call `balance` to see your wallets and limits, \
                 `evaluate` to check a payment, `spend` to pay (with an idempotency_key), `pay_x402` to pay an \
                 API that answered HTTP 402, `spend_status` to follow a payment, and `cancel_spend` to cancel a \
                 queued one.",
            )
    }
}
