//! Hostile tool arguments over MCP, as an attacker or a confused model sends them: each is a
//! tool error naming the argument, nothing is reserved or sent, and the server keeps answering.

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use serde_json::{json, Map, Value};
use spendguard_core::SpendStatus;
use spendguard_tests::evm_org::*;
use spendguard_tests::mcp_client::{McpAgent, ToolReply};
use spendguard_tests::prelude::*;
use spendguard_tests::stdio_agent::StdioAgent;

/// A well-formed payment of 5 TUSD from `hot` to `PAYEE`; each case breaks one part of it.
fn payment() -> Map<String, Value> {
    let Value::Object(map) = json!({ "wallet": "hot", "to": PAYEE, "amount": "5", "asset": "TUSD" }) else {
        unreachable!()
    };
    map
}

/// PAYEE as EIP-55 writes it.
const PAYEE_CHECKSUMMED: &str = "0x23618e81E3f5cdF7f54C3d65f7FBc0aBf5B21E8f";

/// PAYEE with its EIP-55 checksum broken (one letter's case flipped).
fn bad_checksum() -> String {
    PAYEE_CHECKSUMMED.replacen('E', "e", 1)
}

/// One malformed argument: `(what it is, key, value or None to drop the key, what the answer
/// must name)`.
fn cases() -> Vec<(&'static str, &'static str, Option<Value>, &'static str)> {
    let big = "x".repeat(100 * 1024);
    vec![
        ("negative amount", "amount", Some(json!("-5")), "amount"),
        ("zero amount", "amount", Some(json!("0")), "amount"),
        ("exponent", "amount", Some(json!("1e-3")), "amount"),
        ("NaN", "amount", Some(json!("NaN")), "amount"),
        ("Infinity", "amount", Some(json!("Infinity")), "amount"),
        ("hex amount", "amount", Some(json!("0x10")), "amount"),
        ("comma decimal", "amount", Some(json!("1,5")), "amount"),
        ("non-ASCII digits", "amount", Some(json!("٥")), "amount"),
        ("empty amount", "amount", Some(json!("")), "amount"),
        ("fraction", "amount", Some(json!("1/2")), "amount"),
        ("more decimals than TUSD has", "amount", Some(json!("1.0000001")), "amount"),
        ("80-digit amount", "amount", Some(json!("9".repeat(80))), "amount"),
        ("leading space", "amount", Some(json!(" 5")), "amount"),
        ("trailing newline", "amount", Some(json!("5\n")), "amount"),
        ("JSON number", "amount", Some(json!(5)), "amount"),
        ("null amount", "amount", Some(Value::Null), "amount"),
        ("list amount", "amount", Some(json!(["5"])), "amount"),
        ("missing amount", "amount", None, "amount"),
        ("empty recipient", "to", Some(json!("")), "to"),
        ("short recipient", "to", Some(json!("0x1234")), "to"),
        ("non-hex recipient", "to", Some(json!(format!("0x{}", "zz".repeat(20)))), "to"),
        ("bad EIP-55 checksum", "to", Some(json!(bad_checksum())), "to"),
        ("a Solana address on an EVM wallet", "to", Some(json!("9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin")), "to"),
        ("recipient with a space", "to", Some(json!(format!(" {PAYEE}"))), "to"),
        ("zero address", "to", Some(json!(format!("0x{}", "0".repeat(40)))), "to"),
        ("the paying wallet itself", "to", Some(json!(HOT)), "to"),
        ("missing recipient", "to", None, "to"),
        ("unknown wallet", "wallet", Some(json!("nope")), "wallet"),
        ("path-like wallet", "wallet", Some(json!("../hot")), "wallet"),
        ("100 KB wallet", "wallet", Some(json!(big.clone())), "wallet"),
        ("100 KB recipient", "to", Some(json!(big.clone())), "to"),
        ("100 KB asset", "asset", Some(json!(big.clone())), "asset"),
        ("unknown asset", "asset", Some(json!("NOPE")), "asset"),
        ("100 KB operation", "operation", Some(json!(big)), "operation"),
        // 10^6 characters: within the 1 MiB message limit, so the tool itself refuses it.
        ("1 MB memo", "memo", Some(json!("m".repeat(1_000_000))), "memo"),
        ("idempotency key of 256 characters", "idempotency_key", Some(json!("k".repeat(256))), "idempotency_key"),
        ("an `agent` argument", "agent", Some(json!("saver")), "agent"),
    ]
}

/// The first line of a refusal (`CODE: …`, or `deny CODE: …` for a dry run, whose denial is
/// an answer rather than an error), or why `reply` is not one.
fn refusal_line(tool: &str, reply: &ToolReply) -> Result<String, String> {
    let first = reply.text.lines().next().unwrap_or_default();
    if !(reply.is_error || (tool == "evaluate" && first.starts_with("deny "))) {
        return Err(format!("not refused: {}", reply.text));
    }
    let code = first.trim_start_matches("deny ").split(':').next().unwrap_or_default();
    if code.is_empty() || !code.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
        return Err(format!("the answer does not start with a code: {first}"));
    }
    Ok(first.to_string())
}

/// An agent's connection over one of the three ways agents reach spendguard.
enum Connection {
    /// rmcp's client over an in-memory pipe to a node in this process.
    InProcess(McpAgent),
    /// rmcp's client over streamable HTTP to `spendguard serve`.
    Http(McpAgent),
    /// JSON-RPC lines to `spendguard mcp` over its stdin and stdout.
    Stdio(std::sync::Mutex<StdioAgent>),
}

impl Connection {
    fn name(&self) -> &'static str {
        match self {
            Connection::InProcess(_) => "in-process",
            Connection::Http(_) => "HTTP",
            Connection::Stdio(_) => "stdio",
        }
    }

    async fn call(&self, tool: &str, args: Value) -> ToolReply {
        match self {
            Connection::InProcess(agent) | Connection::Http(agent) => agent.call(tool, args).await,
            Connection::Stdio(agent) => {
                let mut agent = agent.lock().unwrap();
                let (is_error, text, data) = agent.call(tool, args).expect("spendguard mcp went away");
                ToolReply { is_error, text, data }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_malformed_argument_is_a_tool_error_naming_it_and_moves_nothing() {
    let org = EvmOrg::start("").await;
    let node = org.node().await;
    let (daemon, url) = org.start_daemon();
    let token = org.tokens["buyer"].clone();
    let stdio = StdioAgent::spawn(&EvmOrg::binary(), &org.config_path, "buyer", &token, &org.server_env());
    let connections = [
        Connection::InProcess(McpAgent::connect(&node.services, "buyer").await),
        Connection::Http(McpAgent::connect_http(&url, &token).await),
        Connection::Stdio(std::sync::Mutex::new(stdio)),
    ];
    let (tokens_before, nonce_before) = (org.token_balance(HOT).await, org.nonce(HOT).await);

    for ((what, key, value, names), agent) in
        cases().into_iter().flat_map(|c| connections.iter().map(move |a| (c.clone(), a)))
    {
        let mut args = payment();
        match value {
            Some(v) => args.insert(key.to_string(), v),
            None => args.remove(key),
        };
        let what = format!("{what} ({})", agent.name());
        for tool in ["spend", "evaluate"] {
            let reply = agent.call(tool, Value::Object(args.clone())).await;
            let first = refusal_line(tool, &reply).unwrap_or_else(|e| panic!("{tool} with {what}: {e}"));
            assert!(first.contains(names), "{tool} with {what}: the answer does not name `{names}`: {first}");
            assert!(first.len() < 2048, "{tool} with {what}: the answer echoes the input ({} bytes)", first.len());
        }
    }

    // Nothing was reserved or sent, and nothing large reached the ledger.
    let decisions = node.ledger().decisions(None).await.unwrap();
    assert!(decisions.iter().all(|d| d.status == SpendStatus::Denied), "{decisions:?}");
    assert!(decisions.iter().all(|d| d.memo.as_deref().unwrap_or_default().len() <= 1024));
    assert_eq!((org.token_balance(HOT).await, org.nonce(HOT).await), (tokens_before, nonce_before), "money moved");

    // The server still answers, and a well-formed payment (checksummed as EIP-55 says) pays.
    let mut good = payment();
    good.insert("to".into(), json!(PAYEE_CHECKSUMMED));
    for agent in &connections {
        let paid = agent.call("spend", Value::Object(good.clone())).await;
        assert_eq!(paid.data["status"], "executed", "{} {}", agent.name(), paid.text);
    }
    assert_eq!(tokens_before - org.token_balance(HOT).await, 3 * 5_000_000);
    assert!(EvmOrg::stop_daemon(daemon));
}

/// A JSON value that is not a string.
fn not_a_string() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        any::<bool>().prop_map(Value::from),
        Just(json!(["5"])),
        Just(json!({ "amount": "5" })),
    ]
}

/// Any text, ASCII junk, or unicode (which includes other scripts' digits and spaces).
fn junk() -> impl Strategy<Value = String> {
    prop_oneof!["[ -~]{0,80}", "\\PC{0,40}", "[0-9.,eE+\\-_ xX]{0,30}"]
}

/// One field of a call, valid or not.
fn field(valid: Vec<&'static str>) -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        4 => prop::sample::select(valid).prop_map(|v| Some(json!(v))),
        2 => junk().prop_map(|v| Some(json!(v))),
        1 => not_a_string().prop_map(Some),
        1 => Just(None),
    ]
}

/// A value `key` can never accept: the generator breaks at least one field of every call.
fn broken(key: &'static str) -> BoxedStrategy<Value> {
    let text = match key {
        // No digit at all, or a letter in it: never an amount.
        "amount" => prop_oneof!["[^0-9]{0,20}", "[0-9]{1,5}[a-zA-Z ,_][0-9]{0,5}", Just("9".repeat(80))].boxed(),
        // Not 0x and 40 hex digits, or a checksum broken.
        "to" => {
            prop_oneof!["0x[0-9a-f]{0,39}", "0x[g-z]{40}", Just(bad_checksum()), Just(format!("0x{}", "0".repeat(40)))]
                .boxed()
        }
        "wallet" => prop_oneof!["w-[ -~]{0,20}", Just("../hot".to_string()), Just("x".repeat(100 * 1024))].boxed(),
        "idempotency_key" => "[a-z]{256,300}".boxed(),
        _ => "[a-z]{1,8}".boxed(),
    };
    // `null` is how JSON leaves an optional argument out: it breaks only a required one.
    let optional = key == "idempotency_key";
    let other = not_a_string().prop_filter("null leaves an optional argument out", move |v| !(optional && v.is_null()));
    prop_oneof![3 => text.prop_map(Value::from), 1 => other].boxed()
}

/// A tool call with arguments drawn from the tools' schema (and outside it), one field at
/// least broken for good.
fn hostile_call() -> impl Strategy<Value = (&'static str, Map<String, Value>)> {
    let tool = prop::sample::select(vec!["spend", "evaluate", "balance", "spend_status", "cancel_spend"]);
    let fields = (
        field(vec!["hot", "cold"]),
        field(vec![PAYEE, PAYEE_CHECKSUMMED, PAYEE2]),
        field(vec!["5", "0.5", "12.25"]),
        field(vec!["TUSD", "ETH", "eth-local:TUSD"]),
        field(vec!["lunch", ""]),
        field(vec!["key-1", "key-2"]),
        prop::option::of(("[a-z_]{1,12}", junk())),
    );
    let broken_key = prop::sample::select(vec!["wallet", "to", "amount", "idempotency_key", "decision_id", "agent"]);
    (tool, fields, broken_key).prop_flat_map(|(tool, (wallet, to, amount, asset, memo, key, extra), broken_key)| {
        let mut args = Map::new();
        let named = [("wallet", wallet), ("to", to), ("amount", amount), ("asset", asset), ("memo", memo)];
        for (name, value) in named.into_iter().chain([("idempotency_key", key)]) {
            if let Some(v) = value {
                args.insert(name.to_string(), v);
            }
        }
        if let Some((name, value)) = extra {
            args.insert(name, json!(value));
        }
        broken(broken_key).prop_map(move |value| {
            let mut args = args.clone();
            args.insert(broken_key.to_string(), value);
            (tool, args)
        })
    })
}

/// Thousands of generated calls (`PROPTEST_CASES`, default 2000): every one is refused with a
/// code, the server never panics or stops answering, and not one unit of money moves.
#[test]
fn generated_hostile_calls_never_move_money() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (org, node, agent) = runtime.block_on(async {
        let org = EvmOrg::start("").await;
        let node = org.node().await;
        let agent = McpAgent::connect(&node.services, "buyer").await;
        (org, node, agent)
    });
    let before = runtime.block_on(async {
        (org.token_balance(HOT).await, org.token_balance(COLD).await, org.nonce(HOT).await, org.nonce(COLD).await)
    });
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(2000);
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    });
    let tried = std::sync::atomic::AtomicU32::new(0);
    runner
        .run(&hostile_call(), |(tool, args)| {
            tried.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let reply = runtime
                .block_on(agent.try_call(tool, Value::Object(args.clone())))
                .map_err(|e| TestCaseError::fail(format!("{tool} {args:?}: the server stopped answering: {e}")))?;
            refusal_line(tool, &reply).map_err(|e| TestCaseError::fail(format!("{tool} {args:?}: {e}")))?;
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));

    let after = runtime.block_on(async {
        (org.token_balance(HOT).await, org.token_balance(COLD).await, org.nonce(HOT).await, org.nonce(COLD).await)
    });
    assert_eq!(after, before, "money moved");
    let decisions = runtime.block_on(node.ledger().decisions(None)).unwrap();
    assert!(decisions.iter().all(|d| d.status == SpendStatus::Denied));
    eprintln!(
        "{} generated hostile calls: all refused, {} denials recorded, 0 money moved",
        tried.into_inner(),
        decisions.len()
    );
}
