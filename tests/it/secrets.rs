//! Keys and passwords. A wrong password or a missing variable stops the daemon naming the
//! wallet; and nothing spendguard writes — its log at trace level, errors, tool answers,
//! `/metrics`, status, reports and the audit export — holds a key or a password.

use crate::operators::{cli, err, out};
use serde_json::json;
use spendguard_tests::anvil::DEV_KEYS;
use spendguard_tests::evm_org::*;
use spendguard_tests::mcp_client::McpAgent;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

/// What must never be written: the wallets' private keys (with and without 0x, any case) and
/// their keystore passwords.
fn secrets() -> Vec<String> {
    let keys = [DEV_KEYS[1], DEV_KEYS[2]];
    let mut all: Vec<String> = keys.iter().map(|k| k.trim_start_matches("0x").to_lowercase()).collect();
    all.extend(PASSWORD_ENVS.iter().map(|(_, password)| password.to_lowercase()));
    all
}

fn assert_no_secret(what: &str, text: &str) {
    let lower = text.to_lowercase();
    for secret in secrets() {
        assert!(!lower.contains(&secret), "{what} contains a secret ({} bytes searched)", text.len());
    }
}

/// `spendguard serve` with `env` (passwords replaced or removed), expected to stop at start.
fn serve_fails(org: &EvmOrg, env: &[(&str, Option<&str>)]) -> String {
    let mut command = Command::new(EvmOrg::binary());
    command.arg("--config").arg(&org.config_path).args(["serve", "--listen", "127.0.0.1:0"]);
    command.envs(org.server_env()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (name, value) in env {
        match value {
            Some(v) => command.env(name, v),
            None => command.env_remove(name),
        };
    }
    let o = spendguard_tests::finish(
        command.spawn().unwrap(),
        "spendguard serve with a bad password",
        Duration::from_secs(120),
    );
    assert!(!o.status.success(), "serve started: {}", String::from_utf8_lossy(&o.stdout));
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_missing_password_stops_the_daemon_naming_the_wallet() {
    let org = EvmOrg::start("").await;
    let wrong = serve_fails(&org, &[("HOT_PASSWORD", Some("not the password"))]);
    assert!(wrong.contains("wallet hot") && wrong.contains("cannot decrypt"), "{wrong}");
    assert!(!wrong.contains("not the password"), "the password given is not echoed: {wrong}");
    assert_no_secret("the error", &wrong);
    let missing = serve_fails(&org, &[("COLD_PASSWORD", None)]);
    assert!(missing.contains("wallet cold") && missing.contains("COLD_PASSWORD"), "{missing}");
    assert_no_secret("the error", &missing);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_output_of_a_working_day_holds_a_key_or_a_password() {
    let org = EvmOrg::start(BUYER_TIERS).await;
    let log_path = org.dir.path().join("serve.log");
    let (daemon, url) = org.start_daemon_logging_to(&log_path, "trace");
    let agent = McpAgent::connect_http(&url, &org.tokens["buyer"]).await;
    let mut answers = String::new();
    for amount in ["5", "50", "5000", "999999999"] {
        let r = agent.call("spend", json!({ "wallet": "hot", "to": PAYEE, "amount": amount, "asset": "TUSD" })).await;
        answers.push_str(&format!("{}\n{}\n", r.text, r.data));
    }
    for tool in ["balance", "evaluate"] {
        let r = agent.call(tool, json!({ "wallet": "cold", "to": PAYEE, "amount": "1" })).await;
        answers.push_str(&r.text);
    }
    let base = url.trim_end_matches("/mcp");
    let metrics = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("spendguard_decisions_total"), "{metrics}");
    assert!(EvmOrg::stop_daemon(daemon));

    let mut log = String::new();
    std::fs::File::open(&log_path).unwrap().read_to_string(&mut log).unwrap();
    assert!(log.contains("TRACE") || log.contains("DEBUG"), "the log is verbose: {} bytes", log.len());
    assert_no_secret("the trace log", &log);
    assert_no_secret("tool answers", &answers);
    assert_no_secret("/metrics", &metrics);
    let range = ["--from", "2020-01-01", "--to", "2100-01-01"];
    let mut commands: Vec<Vec<&str>> = vec![vec!["status", "--json"], vec!["approvals", "list"], vec!["frozen"]];
    for format in ["json", "csv", "md", "html"] {
        commands.push([&["report"][..], &range, &["--format", format]].concat());
    }
    for format in ["jsonl", "csv"] {
        commands.push(vec!["audit", "export", "--format", format]);
    }
    for command in commands {
        let o = cli(&org.config_path, &command);
        assert!(o.status.success(), "{command:?}: {}", err(&o));
        assert_no_secret(&format!("{command:?}"), &format!("{}{}", out(&o), err(&o)));
    }
}
