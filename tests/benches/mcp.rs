//! Round trips through MCP against a real anvil: an `evaluate` call over stdio and over
//! streamable HTTP, and `spend` (an INSTANT spend signed and broadcast) over HTTP.
//! Run: `cargo build --release --bin spendguard && cargo bench -p spendguard-tests --bench mcp`.
#![allow(clippy::unwrap_used, missing_docs)] // bench code: a panic is the failure report; criterion macros make undocumented fns

use criterion::{criterion_group, criterion_main, Criterion};
use rmcp::model::CallToolRequestParams;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::ServiceExt;
use serde_json::json;
use spendguard_tests::evm_org::*;
use spendguard_tests::stdio_agent::StdioAgent;
use std::time::Duration;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let org = rt.block_on(EvmOrg::start(BUYER_TIERS));
    let token = org.tokens["buyer"].clone();
    let args = json!({ "wallet": "hot", "to": PAYEE, "amount": "1", "asset": "TUSD" });
    let mut group = c.benchmark_group("mcp_round_trip");
    group.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));

    let mut stdio = StdioAgent::spawn(&EvmOrg::binary(), &org.config_path, "buyer", &token, &org.server_env());
    group.bench_function("evaluate_stdio", |b| b.iter(|| stdio.call("evaluate", args.clone()).unwrap()));
    drop(stdio);

    let (daemon, url) = org.start_daemon();
    // The HTTP transport spawns its worker on the ambient runtime.
    let _entered = rt.enter();
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(url).auth_header(token),
    );
    let client = rt.block_on(().serve(transport)).unwrap();
    let Some(map) = args.as_object().cloned() else { unreachable!() };
    let evaluate = CallToolRequestParams::new("evaluate").with_arguments(map.clone());
    group.bench_function("evaluate_http", |b| b.iter(|| rt.block_on(client.call_tool(evaluate.clone())).unwrap()));
    let spend = CallToolRequestParams::new("spend").with_arguments(map);
    group.bench_function("spend_http", |b| {
        b.iter(|| {
            let r = rt.block_on(client.call_tool(spend.clone())).unwrap();
            assert_ne!(r.is_error, Some(true), "{:?}", r.content);
        })
    });
    group.finish();
    drop(client);
    EvmOrg::stop_daemon(daemon);
}

criterion_group!(benches, bench);
criterion_main!(benches);
