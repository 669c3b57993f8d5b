//! A JSON-RPC proxy in front of a real node that injects the faults clients meet in
//! production — HTTP 429, 5xx, answers slower than the client's timeout, a node that is down,
//! garbage, JSON-RPC errors, another chain's id, a lagging node that answers null for blocks
//! it has not seen, one that drops the transactions sent to it, and one whose answer to a
//! broadcast is lost — and counts calls by method.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Which faults to inject; every "every" counts requests to this proxy, from 1.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Answer every n-th request with HTTP 429.
    pub too_many_every: Option<u64>,
    /// Answer every n-th request with HTTP 502.
    pub bad_gateway_every: Option<u64>,
    /// Hold every n-th request this long before forwarding it.
    pub slow_every: Option<(u64, Duration)>,
    /// Answer every request with HTTP 503.
    pub down: bool,
    /// Behave like a node this many blocks behind that still reports the real head: null for
    /// the newest blocks by number.
    pub lag: Option<u64>,
    /// Answer every n-th `eth_getBlockReceipts` with null (a node that has the header only).
    pub null_receipts_every: Option<u64>,
    /// Accept Solana `sendTransaction`s (answering their signature) without passing them on: a
    /// node that drops transactions under load.
    pub swallow_sends: bool,
    /// Answer every n-th request with HTTP 200 and a body that is not JSON.
    pub garbage_every: Option<u64>,
    /// Answer every n-th request with a JSON-RPC error (-32603, internal error).
    pub rpc_error_every: Option<u64>,
    /// Answer `eth_chainId` with this chain id: a URL that serves another chain.
    pub chain_id: Option<u64>,
    /// Pass `eth_sendRawTransaction` on, then answer HTTP 502: a broadcast whose answer was
    /// lost on the way back.
    pub lose_send_answers: bool,
    /// Refuse `debug_trace*` methods (JSON-RPC -32601): a node that offers no call traces.
    pub no_traces: bool,
    /// EVM: add `l1Fee` (wei) to every receipt, as an OP-stack chain's receipts carry their L1
    /// data fee (anvil's `--network optimism` charges none).
    pub l1_fee: Option<u128>,
    /// Solana: these transactions' slots were rolled back (surfpool has no cheatcode for it):
    /// gone from `getSignaturesForAddress`, `getSignatureStatuses` and `getTransaction`.
    pub rolled_back: Vec<String>,
    /// Solana: answer `getSlot` at `finalized` with at most this slot — a cluster whose
    /// newer slots, on the fork being abandoned, never became final.
    pub finalized_at_most: Option<u64>,
}

/// Counts of what the proxy did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Requests forwarded (answered by the node), by JSON-RPC method.
    pub forwarded: BTreeMap<String, u64>,
    /// Faults injected, by kind.
    pub injected: BTreeMap<&'static str, u64>,
}

struct Shared {
    upstream: String,
    http: reqwest::Client,
    faults: Mutex<Faults>,
    stats: Mutex<ProxyStats>,
    requests: AtomicU64,
    receipts: AtomicU64,
}

/// A running proxy; it stops when the test's runtime ends.
pub struct RpcProxy {
    /// The proxy's URL, to put in a config's `rpc` list.
    pub url: String,
    shared: Arc<Shared>,
}

impl RpcProxy {
    /// Starts a proxy to `upstream` on a free port with these faults.
    pub async fn start(upstream: &str, faults: Faults) -> RpcProxy {
        let shared = Arc::new(Shared {
            upstream: upstream.to_string(),
            http: reqwest::Client::new(),
            faults: Mutex::new(faults),
            stats: Mutex::new(ProxyStats::default()),
            requests: AtomicU64::new(0),
            receipts: AtomicU64::new(0),
        });
        let app = axum::Router::new().route("/", axum::routing::post(handle)).with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let url = format!("http://{}", listener.local_addr().expect("proxy address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        RpcProxy { url, shared }
    }

    /// Replaces the faults.
    pub fn set_faults(&self, faults: Faults) {
        *self.shared.faults.lock().unwrap() = faults;
    }

    /// What it did so far.
    pub fn stats(&self) -> ProxyStats {
        self.shared.stats.lock().unwrap().clone()
    }

    /// Forgets the counts.
    pub fn reset_stats(&self) {
        *self.shared.stats.lock().unwrap() = ProxyStats::default();
    }
}

fn every(n: Option<u64>, count: u64) -> bool {
    n.is_some_and(|n| n > 0 && count.is_multiple_of(n))
}

async fn handle(State(shared): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let count = shared.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let faults = shared.faults.lock().unwrap().clone();
    let inject = |kind: &'static str| *shared.stats.lock().unwrap().injected.entry(kind).or_default() += 1;
    if faults.down {
        inject("down");
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    if every(faults.too_many_every, count) {
        inject("429");
        return (StatusCode::TOO_MANY_REQUESTS, "rate limited").into_response();
    }
    if every(faults.bad_gateway_every, count) {
        inject("502");
        return (StatusCode::BAD_GATEWAY, "upstream unavailable").into_response();
    }
    if let Some((n, delay)) = faults.slow_every {
        if every(Some(n), count) {
            inject("slow");
            tokio::time::sleep(delay).await;
        }
    }
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("proxy: not JSON: {e}")).into_response(),
    };
    let method = request["method"].as_str().unwrap_or("batch").to_string();
    if every(faults.garbage_every, count) {
        inject("garbage");
        return (StatusCode::OK, [("content-type", "application/json")], "<html>oops</html>").into_response();
    }
    if every(faults.rpc_error_every, count) {
        inject("JSON-RPC error");
        let error = json!({ "code": -32603, "message": "internal error" });
        return axum::Json(json!({ "jsonrpc": "2.0", "id": request["id"], "error": error })).into_response();
    }
    if faults.no_traces && method.starts_with("debug_trace") {
        inject("no traces");
        let error = json!({ "code": -32601, "message": "the method does not exist/is not available" });
        return axum::Json(json!({ "jsonrpc": "2.0", "id": request["id"], "error": error })).into_response();
    }
    if let (Some(id), "eth_chainId") = (faults.chain_id, method.as_str()) {
        inject("wrong chain id");
        return axum::Json(json!({ "jsonrpc": "2.0", "id": request["id"], "result": format!("{id:#x}") }))
            .into_response();
    }
    if method == "eth_getBlockReceipts" {
        let n = shared.receipts.fetch_add(1, Ordering::SeqCst) + 1;
        if every(faults.null_receipts_every, n) {
            inject("null receipts");
            return null_answer(&request);
        }
    }
    if faults.swallow_sends && method == "sendTransaction" {
        if let Some(Ok(signature)) = request["params"][0].as_str().map(spendguard_solana::testing::wire_signature) {
            inject("swallowed send");
            return axum::Json(json!({ "jsonrpc": "2.0", "id": request["id"], "result": signature })).into_response();
        }
    }
    if let (Some(lag), "eth_getBlockByNumber") = (faults.lag, method.as_str()) {
        let asked =
            request["params"][0].as_str().and_then(|h| u64::from_str_radix(h.trim_start_matches("0x"), 16).ok());
        if let (Some(asked), Some(head)) = (asked, upstream_head(&shared).await) {
            if asked + lag > head {
                inject("lagging null block");
                return null_answer(&request);
            }
        }
    }
    if let (Some(most), "getSlot") = (faults.finalized_at_most, method.as_str()) {
        if request["params"][0]["commitment"] == "finalized" {
            inject("finalized slot held back");
            let slot = upstream_value(&shared, &request).await.and_then(|v| v.as_u64()).map_or(most, |s| s.min(most));
            return axum::Json(json!({ "jsonrpc": "2.0", "id": request["id"], "result": slot })).into_response();
        }
    }
    if let (Some(fee), "eth_getTransactionReceipt" | "eth_getBlockReceipts") = (faults.l1_fee, method.as_str()) {
        let mut receipts = upstream_value(&shared, &request).await.unwrap_or(Value::Null);
        let add = |r: &mut Value| {
            if let Some(r) = r.as_object_mut() {
                r.insert("l1Fee".into(), json!(format!("{fee:#x}")));
            }
        };
        match receipts.as_array_mut() {
            Some(list) => list.iter_mut().for_each(add),
            None => add(&mut receipts),
        }
        inject("l1 fee");
        return axum::Json(json!({ "jsonrpc": "2.0", "id": request["id"], "result": receipts })).into_response();
    }
    if !faults.rolled_back.is_empty() {
        if let Some(answer) = roll_back(&shared, &request, &method, &faults.rolled_back).await {
            inject("rolled back");
            return axum::Json(answer).into_response();
        }
    }
    let answer =
        match shared.http.post(&shared.upstream).body(body).header("content-type", "application/json").send().await {
            Ok(r) => r,
            Err(e) => return (StatusCode::BAD_GATEWAY, format!("proxy: upstream: {e}")).into_response(),
        };
    let status = answer.status();
    let bytes = answer.bytes().await.unwrap_or_default();
    if faults.lose_send_answers && method == "eth_sendRawTransaction" {
        inject("lost send answer");
        *shared.stats.lock().unwrap().forwarded.entry(method).or_default() += 1;
        return (StatusCode::BAD_GATEWAY, "connection reset").into_response();
    }
    *shared.stats.lock().unwrap().forwarded.entry(method).or_default() += 1;
    (
        StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY),
        [("content-type", "application/json")],
        bytes,
    )
        .into_response()
}

fn null_answer(request: &Value) -> Response {
    axum::Json(json!({ "jsonrpc": "2.0", "id": request["id"], "result": null })).into_response()
}

async fn upstream_head(shared: &Shared) -> Option<u64> {
    let answer: Value = shared
        .http
        .post(&shared.upstream)
        .json(&json!({ "jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": [] }))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    u64::from_str_radix(answer["result"].as_str()?.trim_start_matches("0x"), 16).ok()
}

/// The upstream's `result` for `request`.
async fn upstream_value(shared: &Shared, request: &Value) -> Option<Value> {
    let answer: Value = shared.http.post(&shared.upstream).json(request).send().await.ok()?.json().await.ok()?;
    answer.get("result").cloned()
}

/// The answer to a Solana read as if the transactions `gone` had never landed, for the three
/// methods that would show them; `None` for any other request (passed on as it is).
async fn roll_back(shared: &Shared, request: &Value, method: &str, gone: &[String]) -> Option<Value> {
    let is_gone = |s: &Value| s.as_str().is_some_and(|s| gone.iter().any(|g| g == s));
    let result = match method {
        "getTransaction" if is_gone(&request["params"][0]) => Value::Null,
        "getSignaturesForAddress" => {
            let mut listed = upstream_value(shared, request).await?;
            listed.as_array_mut()?.retain(|entry| !is_gone(&entry["signature"]));
            listed
        }
        "getSignatureStatuses" => {
            let mut statuses = upstream_value(shared, request).await?;
            let asked = request["params"][0].as_array()?;
            for (status, signature) in statuses["value"].as_array_mut()?.iter_mut().zip(asked) {
                if is_gone(signature) {
                    *status = Value::Null;
                }
            }
            statuses
        }
        _ => return None,
    };
    Some(json!({ "jsonrpc": "2.0", "id": request["id"], "result": result }))
}
