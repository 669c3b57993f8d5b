//! `spendguard bench`, the load generator operators point at a daemon: it opens real MCP
//! sessions, counts what the tools answered, and says what is wrong with its flags.

use serde_json::{json, Value};
use spendguard_tests::evm_org::*;

/// Runs `spendguard bench` with `args` and `token`; returns its exit code, stdout and stderr.
fn bench(args: &[&str], token: Option<&str>) -> (i32, String, String) {
    let mut command = std::process::Command::new(EvmOrg::binary());
    command.arg("bench").args(args).env_remove("SPENDGUARD_TOKEN");
    if let Some(token) = token {
        command.env("SPENDGUARD_TOKEN", token);
    }
    let out = command.output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_drives_concurrent_sessions_and_counts_tool_errors_as_failures() {
    let org = EvmOrg::start(BUYER_TIERS).await;
    let (daemon, url) = org.start_daemon();
    let token = org.tokens["buyer"].as_str();
    let transfer = json!({ "wallet": "hot", "to": PAYEE, "amount": "1", "asset": "TUSD" }).to_string();

    let common = ["--url", url.as_str(), "--duration", "5m", "--json"];
    let (code, out, err) = bench(
        &[
            &common[..],
            &["--tool", "evaluate", "--args", &transfer, "--clients", "4", "--calls", "40", "--warmup", "2"],
        ]
        .concat(),
        Some(token),
    );
    assert_eq!(code, 0, "{out}{err}");
    let result: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!((result["ok"].as_u64(), result["failures"].as_u64()), (Some(40), Some(0)), "{result}");
    assert_eq!(result["clients"], 4);
    assert!(result["p50_ms"].as_f64().unwrap() > 0.0 && result["p99_ms"].as_f64() >= result["p50_ms"].as_f64());

    // A tool that answers with an error is a failed call, shown, and the exit code says so.
    let wrong = json!({ "wallet": "nope", "to": PAYEE, "amount": "1" }).to_string();
    let (code, out, err) = bench(
        &[&common[..], &["--tool", "spend", "--args", &wrong, "--calls", "3", "--warmup", "0"]].concat(),
        Some(token),
    );
    let result: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    assert_eq!((code, result["ok"].as_u64(), result["failures"].as_u64()), (2, Some(0), Some(3)), "{result}");
    assert!(result["first_failure"].as_str().unwrap().contains("tool error"), "{result}");

    // A plain GET needs no token and opens no MCP session.
    let (code, out, err) =
        bench(&[&common[..], &["--get", "/healthz", "--calls", "5", "--warmup", "1"]].concat(), None);
    assert_eq!(code, 0, "{out}{err}");
    let result: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!((result["call"].as_str(), result["ok"].as_u64()), (Some("GET /healthz"), Some(5)), "{result}");

    // A token the daemon does not know: the session cannot even open.
    let (code, _, err) = bench(&[&common[..], &["--tool", "evaluate", "--calls", "1"]].concat(), Some("sg_wrong"));
    assert_eq!(code, 1);
    assert!(err.contains("setting up a session failed") && err.contains("401"), "{err}");
    assert!(EvmOrg::stop_daemon(daemon));
}

#[test]
fn bench_names_what_is_wrong_with_its_flags() {
    let url = ["--url", "http://127.0.0.1:9/mcp"];
    for (args, token, expected) in [
        (vec!["--tool", "evaluate"], None, "SPENDGUARD_TOKEN is not set"),
        (vec!["--tool", "evaluate", "--args", "{nope"], Some("t"), "--args is not JSON"),
        (vec!["--tool", "evaluate", "--args", "[1]"], Some("t"), "--args must be a JSON object"),
        (vec!["--tool", "evaluate", "--duration", "soon"], Some("t"), "--duration \"soon\" is not a positive duration"),
        (vec!["--tool", "evaluate", "--clients", "0"], Some("t"), "--clients must be at least 1"),
        (vec![], Some("t"), "--tool"),
    ] {
        let (code, out, err) = bench(&[&url[..], &args[..]].concat(), token);
        assert_ne!(code, 0, "{args:?}: {out}");
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}
