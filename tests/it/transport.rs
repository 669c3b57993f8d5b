//! What the transports refuse before a tool sees it: requests addressed to another host
//! (DNS rebinding), browser origins, another agent's MCP session, bodies and stdio messages
//! too large to read — each with an answer, never a silent drop.

use serde_json::{json, Value};
use spendguard_tests::evm_org::*;
use spendguard_tests::mcp_client::McpAgent;
use spendguard_tests::stdio_agent::StdioAgent;
use std::time::Duration;

/// An MCP `initialize` as a client POSTs it.
fn initialize() -> Value {
    json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": { "name": "t", "version": "0" } } })
}

/// A POST to `/mcp` with `token`, extra headers and `body`.
async fn post_mcp(url: &str, token: &str, headers: &[(&str, &str)], body: String) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("POST /mcp")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_refuses_other_hosts_origins_sessions_and_oversized_bodies() {
    let org = EvmOrg::start("").await;
    let (daemon, url) = org.start_daemon();
    let base = url.trim_end_matches("/mcp").to_string();
    let (buyer, other) = (&org.tokens["buyer"], &org.tokens["other"]);
    let http = reqwest::Client::new();

    // DNS rebinding: a page on evil.example whose name now points here reaches no route.
    for path in ["/healthz", "/metrics", "/admin/approvals", "/mcp"] {
        let r = http.get(format!("{base}{path}")).header("host", "evil.example").send().await.unwrap();
        assert_eq!(r.status(), 403, "{path}");
        assert!(r.text().await.unwrap().contains("allowed_hosts"), "{path}");
    }
    assert_eq!(http.get(format!("{base}/healthz")).send().await.unwrap().status(), 200);
    let port = url.split(':').nth(2).unwrap().split('/').next().unwrap();
    let r = http.get(format!("{base}/healthz")).header("host", format!("localhost:{port}")).send().await.unwrap();
    assert_eq!(r.status(), 200, "localhost is a loopback name");

    // A browser origin is refused (agents are not browsers and send none).
    let r = post_mcp(&url, buyer, &[("origin", "http://evil.example")], initialize().to_string()).await;
    assert_eq!(r.status(), 403);

    // A session is its agent's: another agent's token can neither close nor read it.
    let r = post_mcp(&url, buyer, &[], initialize().to_string()).await;
    assert_eq!(r.status(), 200);
    let session = r.headers()["mcp-session-id"].to_str().unwrap().to_string();
    let delete = |token: &str| http.delete(&url).bearer_auth(token).header("mcp-session-id", &session).send();
    assert_eq!(delete(other).await.unwrap().status(), 404, "another agent closed buyer's session");
    let stream = http.get(&url).bearer_auth(other).header("mcp-session-id", &session);
    let r = stream.header("accept", "text/event-stream").send().await.unwrap();
    assert_eq!(r.status(), 404, "another agent opened buyer's event stream");
    let initialized = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }).to_string();
    let r = post_mcp(&url, buyer, &[("mcp-session-id", &session)], initialized).await;
    assert!(r.status().is_success(), "buyer's session survived: {}", r.status());
    assert!(delete(buyer).await.unwrap().status().is_success(), "its own agent closes it");

    // A body over 1 MiB is refused with 413; a 1 MB memo fits and is a tool error naming it.
    let huge = json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": { "name": "spend", "arguments": { "memo": "m".repeat(2 << 20) } } });
    assert_eq!(post_mcp(&url, buyer, &[], huge.to_string()).await.status(), 413);
    let agent = McpAgent::connect_http(&url, buyer).await;
    let args = json!({ "wallet": "hot", "to": PAYEE, "amount": "5", "asset": "TUSD", "memo": "m".repeat(1_000_000) });
    let r = agent.call("spend", args).await;
    assert!(r.is_error && r.text.starts_with("INVALID_REQUEST: memo is 1000000 characters long"), "{}", r.text);
    assert!(EvmOrg::stop_daemon(daemon));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_stdio_message_is_answered_and_the_session_goes_on() {
    let org = EvmOrg::start("").await;
    let (bin, config, token, env) =
        (EvmOrg::binary(), org.config_path.clone(), org.tokens["buyer"].clone(), org.server_env());
    // The exchange runs on a thread so that a server that never answers fails the test at the
    // deadline instead of hanging it.
    let (done, answers) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut agent = StdioAgent::spawn(&bin, &config, "buyer", &token, &env);
        // 17 MB: over rmcp's own 16 MiB limit, which drops such a line without an answer.
        let memo = "m".repeat(17 << 20);
        let call = json!({ "jsonrpc": "2.0", "id": "big-1", "method": "tools/call",
            "params": { "name": "spend", "arguments": { "wallet": "hot", "memo": memo } } });
        agent.send_line(call.to_string().as_bytes());
        let oversized = agent.answer_to(&json!("big-1"));
        let next = agent.call("balance", json!({ "wallet": "hot" }));
        let _ = done.send((oversized, next));
    });
    let (oversized, next) = answers.recv_timeout(Duration::from_secs(120)).expect("no answer to the oversized message");
    let error = &oversized.expect("the server went away")["error"];
    assert_eq!(error["code"], -32600, "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("at most 1048576 bytes") && message.contains("did nothing"), "{message}");
    let (is_error, text, _) = next.expect("the server went away after the oversized message");
    assert!(!is_error, "{text}");
}
