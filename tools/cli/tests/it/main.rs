//! The `spendguard` binary as operators use it: check, evaluate, freeze, unfreeze, frozen, and the
//! audit log (verify against every kind of tampering, export).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    // At run time: a test binary built in a shared target dir by another checkout keeps that
    // checkout's path in env!.
    std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../../fixtures/config")
}

/// A scratch copy of a fixture config, so its database lands in a temporary directory.
fn scratch(fixture: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spendguard.toml");
    std::fs::copy(fixtures().join(fixture), &path).unwrap();
    (dir, path)
}

fn spendguard(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spendguard"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("USER", "tester")
        .output()
        .expect("run spendguard")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn check_summarises_a_valid_config() {
    // The example names keystores that are not in the repository: check says so, and fails.
    let o = spendguard(&fixtures().join("example.toml"), &["check"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("error: wallet trading-hot: keystore "), "{}", stdout(&o));
    let o = spendguard(&fixtures().join("example.toml"), &["check", "--skip-keys"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for expected in [
        "example.toml: valid",
        "agents (2):",
        "procurement-bot (engineering) wallets trading-hot, ops-sol",
        "procurement on agent:procurement-bot: per-tx 200 USD, 3 limits, schedule, tiers, 3 recipient rules",
        "refunds on agent:refund-bot: per-tx 500 USD, 1 limits, 2 operations",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in\n{out}");
    }
}

#[test]
fn check_reports_a_broken_config_with_file_line_and_key() {
    let config = fixtures().join("broken/float-money.toml");
    let o = spendguard(&config, &["check"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("float-money.toml:43: policy[0].per_tx_usd: money must be a quoted decimal string"), "{err}");
}

#[test]
fn evaluate_prints_the_tool_result_as_json() {
    let (_dir, config) = scratch("example.toml");
    // Friday 10:00 in New York, 50 USDC to GitHub, the wallet holding 10,000 USDC.
    let o = spendguard(
        &config,
        &[
            "evaluate",
            "--agent",
            "procurement-bot",
            "--wallet",
            "trading-hot",
            "--to",
            "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
            "--amount",
            "50",
            "--asset",
            "USDC",
            "--at",
            "2026-11-20T15:00:00Z",
            "--balance",
            "10000",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("JSON");
    assert_eq!(v["decision"], "notify");
    assert_eq!(v["tier"], "NOTIFY");
    assert_eq!(v["reasons"].as_array().unwrap().len(), 0);
    let headroom = v["headroom"].as_array().unwrap();
    assert!(headroom
        .iter()
        .any(|h| h["policy_id"] == "procurement" && h["window"] == "24h" && h["remaining"] == "800.00"));
    assert!(headroom.iter().any(|h| h["policy_id"] == "trading-hot-wallet" && h["limit"] == "1000"));
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["decision", "headroom", "reasons", "tier", "valuation"]);
    assert_eq!(v["valuation"]["source"], "static", "{}", v["valuation"]);
    assert!(v["valuation"]["as_of"].is_null(), "a static price has no publish time: {}", v["valuation"]);
}

#[test]
fn evaluate_explains_a_denial_in_words() {
    let (_dir, config) = scratch("example.toml");
    // Saturday, to the casino: outside the schedule and a blocked category.
    let o = spendguard(
        &config,
        &[
            "evaluate",
            "--agent",
            "procurement-bot",
            "--wallet",
            "trading-hot",
            "--to",
            "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
            "--amount",
            "0.001",
            "--at",
            "2026-11-21T15:00:00Z",
            "--balance",
            "10",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with("decision: deny"), "{out}");
    assert!(out.contains("OUTSIDE_SCHEDULE [procurement schedule] Sat 2026-11-21 10:00 EST"), "{out}");
    assert!(out.contains("RECIPIENT_BLOCKED [procurement recipients.rules[0]]"), "{out}");
}

#[test]
fn evaluate_rejects_bad_flags_with_a_clear_message() {
    let (_dir, config) = scratch("example.toml");
    let base = [
        "evaluate",
        "--agent",
        "procurement-bot",
        "--wallet",
        "trading-hot",
        "--to",
        "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
    ];
    let run = |extra: &[&str]| {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        spendguard(&config, &args)
    };
    let o = run(&["--amount", "1e3"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--amount: \"1e3\" is not a decimal string"), "{}", stderr(&o));
    let o = run(&["--amount", "1", "--at", "tomorrow"]);
    assert!(stderr(&o).contains("--at \"tomorrow\" is not an RFC 3339 time"), "{}", stderr(&o));
    let o = run(&[]);
    assert_eq!(o.status.code(), Some(2), "clap usage error");
    assert!(stderr(&o).contains("--amount <AMOUNT>"));
}

#[test]
fn freeze_denies_spends_until_an_acknowledged_unfreeze() {
    let (_dir, config) = scratch("example.toml");
    let eval = || {
        let o = spendguard(
            &config,
            &[
                "evaluate",
                "--agent",
                "refund-bot",
                "--wallet",
                "trading-hot",
                "--operation",
                "refund",
                "--to",
                "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
                "--amount",
                "0.01",
                "--balance",
                "10",
                "--json",
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_str::<serde_json::Value>(&stdout(&o)).unwrap()
    };
    assert_eq!(eval()["decision"], "allow");

    let o = spendguard(
        &config,
        &["freeze", "--agent", "refund-bot", "--reason", "odd refunds", "--as", "ops@acme.example"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("frozen: agent refund-bot is frozen by ops@acme.example since "), "{}", stdout(&o));
    let denied = eval();
    assert_eq!(denied["decision"], "deny");
    assert_eq!(denied["reasons"][0]["code"], "KILL_SWITCH");
    assert!(denied["reasons"][0]["detail"].as_str().unwrap().ends_with(": odd refunds"));

    let o = spendguard(&config, &["frozen"]);
    assert!(stdout(&o).starts_with("agent:refund-bot\tby ops@acme.example\tsince "), "{}", stdout(&o));

    let o = spendguard(&config, &["unfreeze", "--agent", "refund-bot", "--as", "ops@acme.example"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("refusing to unfreeze without --ack"), "{}", stderr(&o));
    assert_eq!(eval()["decision"], "deny", "still frozen");

    let o = spendguard(
        &config,
        &["unfreeze", "--agent", "refund-bot", "--ack", "refunds reviewed", "--as", "ops@acme.example"],
    );
    assert!(o.status.success());
    assert_eq!(stdout(&o), "unfrozen: agent:refund-bot\n");
    assert_eq!(eval()["decision"], "allow");
}

#[test]
fn freeze_scopes_are_checked() {
    let (_dir, config) = scratch("example.toml");
    let o = spendguard(&config, &["freeze", "--wallet", "nope", "--reason", "x", "--as", "ops@acme.example"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no wallet \"nope\" is configured"), "{}", stderr(&o));
    let o = spendguard(&config, &["freeze", "--org", "--agent", "x", "--reason", "x"]);
    assert_eq!(o.status.code(), Some(2));
    // Only a configured operator holding the role may freeze.
    let o = spendguard(&config, &["freeze", "--org", "--reason", "incident 7", "--as", "ops"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no operator \"ops\" is configured"), "{}", stderr(&o));
    let o = spendguard(&config, &["freeze", "--org", "--reason", "incident 7"]);
    assert_eq!(o.status.code(), Some(2), "--as is required: {}", stderr(&o));
    let o = spendguard(&config, &["freeze", "--org", "--reason", "incident 7", "--as", "ops@acme.example"]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("the organisation is frozen by ops@acme.example"));
    let o = spendguard(&config, &["freeze", "--org", "--reason", "again", "--as", "ops@acme.example"]);
    assert!(stdout(&o).starts_with("already frozen:"), "{}", stdout(&o));
}

fn spendguard_with(config: Option<&Path>, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
    use std::io::Write as _;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_spendguard"));
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let mut child = cmd
        .args(args)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

#[test]
fn wallet_new_and_import_write_keystores_that_are_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let ks = dir.path().join("keys/new.json");
    let ks_arg = ks.to_str().unwrap();
    let env = [("KS_PASSWORD", "a long passphrase")];
    let o =
        spendguard_with(None, &["wallet", "new", "--keystore", ks_arg, "--password-env", "KS_PASSWORD"], &env, None);
    assert!(o.status.success(), "{}", stderr(&o));
    let address = stdout(&o).trim().to_string();
    assert!(address.starts_with("0x") && address.len() == 42, "{address}");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&ks).unwrap()).unwrap();
    assert_eq!(json["address"], address.trim_start_matches("0x"));
    assert_eq!(json["crypto"]["kdfparams"]["n"], 262_144);
    let again =
        spendguard_with(None, &["wallet", "new", "--keystore", ks_arg, "--password-env", "KS_PASSWORD"], &env, None);
    assert_eq!(again.status.code(), Some(1), "an existing keystore is never overwritten");

    // Import reads the key from standard input (never from the command line).
    let imported = dir.path().join("imported.json");
    let o = spendguard_with(
        None,
        &["wallet", "import", "--keystore", imported.to_str().unwrap(), "--password-env", "KS_PASSWORD"],
        &env,
        Some("0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80\n"),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266");
    let bad = spendguard_with(
        None,
        &[
            "wallet",
            "import",
            "--keystore",
            dir.path().join("x.json").to_str().unwrap(),
            "--password-env",
            "KS_PASSWORD",
        ],
        &env,
        Some("not a key\n"),
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("expected 64 hex digits"), "{}", stderr(&bad));
    let no_password = spendguard_with(
        None,
        &["wallet", "new", "--keystore", dir.path().join("y.json").to_str().unwrap(), "--password-env", "UNSET_VAR"],
        &[],
        None,
    );
    assert!(stderr(&no_password).contains("UNSET_VAR is not set"), "{}", stderr(&no_password));
}

#[test]
fn agent_tokens_authenticate_only_their_agent_until_revoked() {
    let (_dir, config) = scratch("example.toml");
    let o = spendguard(&config, &["agent", "token", "procurement-bot"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let token = stdout(&o).trim().to_string();
    assert!(token.starts_with("sgt_") && token.len() == 68, "{token}");
    let mcp = |agent: &str, token: &str| {
        spendguard_with(Some(&config), &["mcp", "--agent", agent], &[("SPENDGUARD_TOKEN", token)], Some(""))
    };
    let wrong_agent = mcp("refund-bot", &token);
    assert_eq!(wrong_agent.status.code(), Some(1));
    assert!(stderr(&wrong_agent).contains("not a live token of agent refund-bot"), "{}", stderr(&wrong_agent));
    // The right agent gets past authentication (and then needs its wallets' keystores).
    let right = mcp("procurement-bot", &token);
    assert!(stderr(&right).contains("TRADING_HOT_PASSWORD"), "{}", stderr(&right));
    let o = spendguard(&config, &["agent", "revoke", "procurement-bot", "--as", "ops@acme.example"]);
    assert_eq!(stdout(&o), "revoked 1 token(s) of procurement-bot: it can no longer authenticate\n");
    let revoked = mcp("procurement-bot", &token);
    assert!(stderr(&revoked).contains("not a live token of agent procurement-bot"), "{}", stderr(&revoked));
    let o = spendguard(&config, &["agent", "token", "nobody"]);
    assert!(stderr(&o).contains("no agent \"nobody\" is configured"), "{}", stderr(&o));
}

#[test]
fn wallet_new_and_import_write_solana_keypairs_plain_or_encrypted() {
    let (dir, config) = scratch("example.toml");
    let env = [("KS_PASSWORD", "a long passphrase")];
    let plain = dir.path().join("plain.json");
    let o = spendguard_with(
        Some(&config),
        &["wallet", "new", "--chain", "sol-local", "--keypair", plain.to_str().unwrap()],
        &[],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let address = stdout(&o).trim().to_string();
    assert!((32..=44).contains(&address.len()), "a base58 address: {address}");
    assert!(stderr(&o).contains("UNENCRYPTED"), "{}", stderr(&o));
    let cli_format = std::fs::read_to_string(&plain).unwrap();
    assert_eq!(serde_json::from_str::<Vec<u8>>(&cli_format).unwrap().len(), 64, "the Solana CLI's format");

    // The same key imported into the encrypted form: same address, no key material in the file.
    let encrypted = dir.path().join("encrypted.json");
    let o = spendguard_with(
        Some(&config),
        &[
            "wallet",
            "import",
            "--chain",
            "sol-local",
            "--keypair",
            encrypted.to_str().unwrap(),
            "--password-env",
            "KS_PASSWORD",
        ],
        &env,
        Some(&cli_format),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), address);
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&encrypted).unwrap()).unwrap();
    assert_eq!(
        (json["address"].as_str(), &json["crypto"]["kdfparams"]["n"]),
        (Some(address.as_str()), &serde_json::json!(262_144))
    );
    assert!(!std::fs::read_to_string(&encrypted).unwrap().contains(cli_format.trim()));
    let again = spendguard_with(
        Some(&config),
        &["wallet", "new", "--chain", "sol-local", "--keypair", encrypted.to_str().unwrap()],
        &[],
        None,
    );
    assert_eq!(again.status.code(), Some(1), "never overwritten");

    // Mistakes are named.
    let unknown =
        spendguard_with(Some(&config), &["wallet", "new", "--chain", "sol-devnet", "--keypair", "x.json"], &[], None);
    assert!(
        stderr(&unknown).contains("--chain sol-devnet: no such chain") && stderr(&unknown).contains("sol-local"),
        "{}",
        stderr(&unknown)
    );
    let garbage = spendguard_with(
        Some(&config),
        &["wallet", "import", "--chain", "sol-local", "--keypair", dir.path().join("g.json").to_str().unwrap()],
        &[],
        Some("not a key"),
    );
    assert!(stderr(&garbage).contains("not a Solana keypair"), "{}", stderr(&garbage));
    let evm_flags = spendguard_with(
        Some(&config),
        &["wallet", "new", "--chain", "sol-local", "--keystore", dir.path().join("k.json").to_str().unwrap()],
        &[],
        None,
    );
    assert!(stderr(&evm_flags).contains("a Solana key needs --keypair FILE"), "{}", stderr(&evm_flags));
}

/// An audit log of a dozen entries, written through the CLI.
fn audited() -> (tempfile::TempDir, PathBuf) {
    let (dir, config) = scratch("example.toml");
    for _ in 0..3 {
        for (cmd, text) in [("freeze", "--reason"), ("unfreeze", "--ack")] {
            let o = spendguard(&config, &[cmd, "--agent", "refund-bot", text, "checking", "--as", "ops@acme.example"]);
            assert!(o.status.success(), "{}", stderr(&o));
        }
    }
    let o = spendguard(&config, &["audit", "verify"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("ok: 10 entries, chain intact; head 10:"), "{}", stdout(&o));
    (dir, config)
}

#[test]
fn audit_verify_names_the_first_edited_deleted_inserted_or_reordered_entry() {
    let tamperings: [(&str, &str, &str); 5] = [
        (
            "edit",
            "UPDATE audit_log SET actor = 'mallory' WHERE seq = 4",
            "first bad entry is 4: its contents do not match",
        ),
        ("delete", "DELETE FROM audit_log WHERE seq = 3", "first bad entry is 3: entry 3 is missing"),
        (
            "insert",
            "UPDATE audit_log SET seq = seq + 1000 WHERE seq >= 5;
             UPDATE audit_log SET seq = seq - 999 WHERE seq >= 1005;
             INSERT INTO audit_log (seq, at_us, kind, actor, decision_id, agent, wallet, usd, detail, prev_hash, hash)
                SELECT 5, at_us, kind, 'mallory', decision_id, agent, wallet, usd, detail, hash, hash
                FROM audit_log WHERE seq = 4;",
            "first bad entry is 5: its contents do not match",
        ),
        (
            "reorder",
            "UPDATE audit_log SET seq = -1 WHERE seq = 6; UPDATE audit_log SET seq = 6 WHERE seq = 7;
             UPDATE audit_log SET seq = 7 WHERE seq = -1;",
            "first bad entry is 6: its previous-hash does not match",
        ),
        ("edit the first", "UPDATE audit_log SET at_us = at_us + 1 WHERE seq = 1", "first bad entry is 1"),
    ];
    for (what, sql, expected) in tamperings {
        let (dir, config) = audited();
        let db = rusqlite::Connection::open(dir.path().join("spendguard.db")).unwrap();
        db.execute_batch(sql).unwrap();
        drop(db);
        let o = spendguard(&config, &["audit", "verify"]);
        assert_eq!(o.status.code(), Some(3), "{what}: {}{}", stdout(&o), stderr(&o));
        assert!(stdout(&o).contains(expected), "{what}: {}", stdout(&o));
    }
}

#[test]
fn audit_verify_with_an_anchor_catches_a_cut_tail() {
    let (dir, config) = audited();
    let o = spendguard(&config, &["audit", "verify"]);
    let head = stdout(&o).trim().rsplit(' ').next().unwrap().to_string();
    assert!(spendguard(&config, &["audit", "verify", "--anchor", &head]).status.success());
    let db = rusqlite::Connection::open(dir.path().join("spendguard.db")).unwrap();
    db.execute("DELETE FROM audit_log WHERE seq >= 9", []).unwrap();
    drop(db);
    // Without the anchor, a cut tail looks like a shorter log; the anchor shows what is gone.
    assert!(spendguard(&config, &["audit", "verify"]).status.success());
    let o = spendguard(&config, &["audit", "verify", "--anchor", &head]);
    assert_eq!(o.status.code(), Some(3));
    assert!(stdout(&o).contains("first bad entry is 10: the anchored entry 10 is gone"), "{}", stdout(&o));
    let o = spendguard(&config, &["audit", "verify", "--anchor", "ten"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--anchor must be SEQ:HASH"), "{}", stderr(&o));
}

#[test]
fn audit_export_filters_and_writes_jsonl_or_csv() {
    let (_dir, config) = audited();
    let o = spendguard(&config, &["audit", "export", "--agent", "refund-bot", "--format", "jsonl"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 6, "3 freezes and 3 unfreezes name the agent");
    assert!(lines.iter().all(|l| l["agent"] == "refund-bot" && l["hash"].as_str().unwrap().len() == 64));
    assert_eq!(lines[0]["detail"]["scope"], "agent:refund-bot");
    let o = spendguard(&config, &["audit", "export", "--format", "csv", "--from", "2000-01-01", "--to", "2000-01-02"]);
    assert_eq!(stdout(&o), "seq,at,kind,actor,decision_id,agent,wallet,usd,detail,prev_hash,hash\n");
    let o = spendguard(&config, &["audit", "export", "--format", "xml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--format \"xml\": use jsonl or csv"), "{}", stderr(&o));
    // Only entries with a USD value pass a --min-usd filter.
    let o = spendguard(&config, &["audit", "export", "--min-usd", "1"]);
    assert_eq!(stdout(&o), "");
}

/// An agent (and wallet) no policy with a limit bounds: `check` says so, and its spends are
/// denied `NO_POLICY` however large, while the covered agent's pass.
#[test]
fn an_agent_no_limit_bounds_is_warned_about_and_denied() {
    let (_dir, config) = scratch("minimal.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[[agent]]\nid = \"stray\"\nwallets = [\"hot\"]\n");
    std::fs::write(&config, text).unwrap();
    let o = spendguard(&config, &["check"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("warning: agent stray spending from wallet hot: no policy with a limit"),
        "{}",
        stdout(&o)
    );
    let evaluate = |agent: &str, amount: &str| {
        let o = spendguard(
            &config,
            &[
                "evaluate",
                "--agent",
                agent,
                "--wallet",
                "hot",
                "--to",
                "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
                "--amount",
                amount,
                "--balance",
                "100000",
                "--json",
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_str::<serde_json::Value>(&stdout(&o)).unwrap()
    };
    // 9,000 ETH is 27 million USD: nothing bounds it, so it is refused.
    let stray = evaluate("stray", "9000");
    assert_eq!(stray["decision"], "deny", "{stray}");
    assert_eq!(stray["reasons"][0]["code"], "NO_POLICY", "{stray}");
    assert!(stray["reasons"][0]["detail"].as_str().unwrap().contains("agent stray spending from wallet hot"));
    assert_eq!(evaluate("bot", "0.01")["decision"], "allow");
}
