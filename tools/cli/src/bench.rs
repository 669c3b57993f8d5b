//! `spendguard bench`: a load generator that talks to a running daemon the way an agent host
//! does — N concurrent streamable-HTTP MCP sessions, each on its own keep-alive HTTP/1.1
//! connection, calling one tool over and over — and reports calls per second, latency
//! percentiles and failures. It sets nothing special on its sockets (no TCP_QUICKACK), so a
//! server that stalls on the client's delayed ACK shows it.

use anyhow::{bail, Context as _, Result};
use clap::Args;
use serde_json::{json, Value};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args)]
pub(crate) struct BenchArgs {
    /// The daemon's MCP endpoint, e.g. http://127.0.0.1:3100/mcp.
    #[arg(long)]
    url: String,
    /// Tool to call (evaluate, balance, spend, …).
    #[arg(long, required_unless_present = "get")]
    tool: Option<String>,
    /// The tool's arguments as a JSON object.
    #[arg(long, default_value = "{}")]
    args: String,
    /// Instead of a tool, GET this path on the daemon (e.g. /healthz), as a baseline.
    #[arg(long, conflicts_with = "tool")]
    get: Option<String>,
    /// Concurrent sessions, each one connection calling sequentially.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// How long to measure, e.g. 10s.
    #[arg(long, default_value = "10s")]
    duration: String,
    /// Calls made and not counted before measuring, per client.
    #[arg(long, default_value_t = 20)]
    warmup: usize,
    /// Stop after this many measured calls in all (before --duration ends).
    #[arg(long)]
    calls: Option<usize>,
    /// Environment variable holding the agent's bearer token (never a flag: argv is visible).
    #[arg(long, default_value = "SPENDGUARD_TOKEN")]
    token_env: String,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// What one client saw.
#[derive(Default)]
struct ClientRun {
    latencies: Vec<Duration>,
    failures: usize,
    first_failure: Option<String>,
}

/// One MCP session over one keep-alive connection.
struct Session {
    http: reqwest::Client,
    url: String,
    token: String,
    session_id: Option<String>,
    next_id: u64,
}

/// MCP protocol version the sessions negotiate.
const PROTOCOL_VERSION: &str = "2025-06-18";

impl Session {
    /// A keep-alive connection to `url`, not yet an MCP session (enough for `--get`).
    fn connection(url: &str, token: &str) -> Result<Session> {
        // One connection per session, kept alive; HTTP/1.1 as most agent hosts speak it.
        let http = reqwest::Client::builder()
            .http1_only()
            .pool_max_idle_per_host(1)
            .timeout(Duration::from_secs(60))
            .build()
            .context("building the HTTP client")?;
        Ok(Session { http, url: url.to_string(), token: token.to_string(), session_id: None, next_id: 0 })
    }

    /// An MCP session: `initialize`, then `notifications/initialized`.
    async fn open(url: &str, token: &str) -> Result<Session> {
        let mut session = Session::connection(url, token)?;
        let init = session
            .request(
                "initialize",
                json!({ "protocolVersion": PROTOCOL_VERSION, "capabilities": {},
                        "clientInfo": { "name": "spendguard-bench", "version": env!("CARGO_PKG_VERSION") } }),
            )
            .await
            .context("MCP initialize")?;
        if init.get("error").is_some() {
            bail!("MCP initialize was refused: {}", init["error"]);
        }
        session.notify("notifications/initialized").await.context("MCP notifications/initialized")?;
        Ok(session)
    }

    fn post(&self, body: &Value) -> reqwest::RequestBuilder {
        let mut request = self
            .http
            .post(&self.url)
            .bearer_auth(&self.token)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .header("mcp-protocol-version", PROTOCOL_VERSION)
            .body(body.to_string());
        if let Some(id) = &self.session_id {
            request = request.header("mcp-session-id", id);
        }
        request
    }

    async fn notify(&mut self, method: &str) -> Result<()> {
        let response = self.post(&json!({ "jsonrpc": "2.0", "method": method })).send().await?;
        if !response.status().is_success() {
            bail!("HTTP {}", response.status());
        }
        response.bytes().await?;
        Ok(())
    }

    /// Sends one JSON-RPC request and returns its answer, read from a JSON body or from the
    /// event stream the server answers on.
    async fn request(&mut self, method: &str, params: Value) -> Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let response =
            self.post(&json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params })).send().await?;
        let status = response.status();
        if let Some(session) = response.headers().get("mcp-session-id") {
            self.session_id = Some(session.to_str().context("mcp-session-id header")?.to_string());
        }
        let body = response.text().await?;
        if !status.is_success() {
            bail!("HTTP {status}: {}", body.trim());
        }
        answer_in(&body, id).with_context(|| format!("no JSON-RPC answer with id {id} in: {}", clip(&body)))
    }
}

/// The JSON-RPC message with `id` in a body that is either one JSON object or an SSE stream.
fn answer_in(body: &str, id: u64) -> Option<Value> {
    let is_answer = |v: &Value| v.get("id").and_then(Value::as_u64) == Some(id);
    if let Ok(value) = serde_json::from_str::<Value>(body) {
        return is_answer(&value).then_some(value);
    }
    body.lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .filter_map(|data| serde_json::from_str::<Value>(data.trim()).ok())
        .find(is_answer)
}

fn clip(text: &str) -> String {
    text.chars().take(300).collect()
}

/// One call: `Ok` when the tool answered without `isError` (or the GET gave 2xx).
async fn call_once(session: &mut Session, args: &BenchArgs, arguments: &Value) -> Result<()> {
    if let Some(path) = &args.get {
        let base = session.url.trim_end_matches("/mcp");
        let response = session.http.get(format!("{base}{path}")).send().await?;
        let status = response.status();
        response.bytes().await?;
        if !status.is_success() {
            bail!("HTTP {status}");
        }
        return Ok(());
    }
    let tool = args.tool.as_deref().unwrap_or_default();
    let answer = session.request("tools/call", json!({ "name": tool, "arguments": arguments })).await?;
    if let Some(error) = answer.get("error") {
        bail!("JSON-RPC error {error}");
    }
    if answer["result"]["isError"] == json!(true) {
        let text = answer["result"]["content"][0]["text"].as_str().unwrap_or_default();
        bail!("tool error: {}", clip(text));
    }
    Ok(())
}

async fn run_client(
    args: Arc<BenchArgs>,
    arguments: Arc<Value>,
    token: Arc<String>,
    start: Arc<tokio::sync::Barrier>,
    duration: Duration,
    budget: Arc<std::sync::atomic::AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> Result<ClientRun> {
    let mut session = match args.get {
        Some(_) => Session::connection(&args.url, &token)?,
        None => Session::open(&args.url, &token).await?,
    };
    for _ in 0..args.warmup {
        call_once(&mut session, &args, &arguments).await.context("a warm-up call failed")?;
    }
    start.wait().await;
    // Every client passes the barrier at the same moment, the measurement's start.
    let deadline = Instant::now() + duration;
    let mut run = ClientRun::default();
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        if budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| left.checked_sub(1)).is_err() {
            break;
        }
        let began = Instant::now();
        match call_once(&mut session, &args, &arguments).await {
            Ok(()) => run.latencies.push(began.elapsed()),
            Err(e) => {
                run.failures += 1;
                run.first_failure.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    Ok(run)
}

/// The latency at quantile `q` of sorted `latencies`, in milliseconds.
fn quantile_ms(latencies: &[Duration], q: f64) -> f64 {
    if latencies.is_empty() {
        return 0.0;
    }
    let rank = ((latencies.len() as f64 - 1.0) * q).round() as usize;
    latencies[rank.min(latencies.len() - 1)].as_secs_f64() * 1e3
}

pub(crate) async fn bench(args: BenchArgs) -> Result<ExitCode> {
    let duration = spendguard_core::time::parse_duration(&args.duration)
        .and_then(|d| d.to_std().ok())
        .filter(|d| !d.is_zero())
        .with_context(|| format!("--duration {:?} is not a positive duration such as 10s or 1m", args.duration))?;
    if args.clients == 0 {
        bail!("--clients must be at least 1");
    }
    let arguments: Value =
        serde_json::from_str(&args.args).with_context(|| format!("--args is not JSON: {}", clip(&args.args)))?;
    if !arguments.is_object() {
        bail!("--args must be a JSON object, like {{\"wallet\": \"hot\"}}");
    }
    let token = match std::env::var(&args.token_env) {
        Ok(token) => token.trim().to_string(),
        Err(_) if args.get.is_some() => String::new(),
        Err(_) => bail!("{} is not set: it must hold the agent's bearer token", args.token_env),
    };
    let clients = args.clients;
    let args = Arc::new(args);
    let (arguments, token) = (Arc::new(arguments), Arc::new(token));
    let start = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let budget = Arc::new(std::sync::atomic::AtomicUsize::new(args.calls.unwrap_or(usize::MAX)));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (args, arguments, token) = (Arc::clone(&args), Arc::clone(&arguments), Arc::clone(&token));
        let (start, budget, stop) = (Arc::clone(&start), Arc::clone(&budget), Arc::clone(&stop));
        tasks.spawn(run_client(args, arguments, token, start, duration, budget, stop));
    }
    // A client that fails to set up never reaches the barrier: stop waiting for the others then.
    let began = tokio::select! {
        _ = start.wait() => Instant::now(),
        Some(first) = tasks.join_next() => {
            stop.store(true, Ordering::Relaxed);
            let failed = match first {
                Ok(Err(e)) => format!("{e:#}"),
                Ok(Ok(_)) => "a client finished before the measurement began".to_string(),
                Err(e) => format!("a client task died: {e}"),
            };
            bail!("setting up a session failed: {failed}");
        }
    };
    let mut latencies = vec![];
    let (mut failures, mut first_failure) = (0usize, None);
    while let Some(joined) = tasks.join_next().await {
        let run = joined.context("a client task died")??;
        latencies.extend(run.latencies);
        failures += run.failures;
        if first_failure.is_none() {
            first_failure = run.first_failure;
        }
    }
    let elapsed = began.elapsed();
    latencies.sort_unstable();
    let ok = latencies.len();
    let per_second = (ok + failures) as f64 / elapsed.as_secs_f64().max(1e-9);
    let what = match (&args.tool, &args.get) {
        (Some(tool), _) => tool.clone(),
        (None, Some(path)) => format!("GET {path}"),
        (None, None) => unreachable!("clap requires --tool or --get"),
    };
    let (p50, p90, p99) = (quantile_ms(&latencies, 0.5), quantile_ms(&latencies, 0.9), quantile_ms(&latencies, 0.99));
    let max = latencies.last().map(|d| d.as_secs_f64() * 1e3).unwrap_or(0.0);
    if args.json {
        let result = json!({
            "call": what, "clients": clients, "seconds": elapsed.as_secs_f64(), "ok": ok, "failures": failures,
            "calls_per_second": per_second, "p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "max_ms": max,
            "first_failure": first_failure,
        });
        println!("{result}");
    } else {
        println!(
            "{what}: {clients} client(s), {:.1} s: {ok} ok, {failures} failed, {per_second:.0} calls/s; \
             p50 {p50:.3} ms, p90 {p90:.3} ms, p99 {p99:.3} ms, max {max:.3} ms",
            elapsed.as_secs_f64()
        );
        if let Some(failure) = &first_failure {
            println!("first failure: {failure}");
        }
    }
    Ok(if failures == 0 { ExitCode::SUCCESS } else { ExitCode::from(2) })
}
