//! The `spendguard mcp` binary driven over stdio with plain JSON-RPC lines, for tests that kill
//! or crash server processes.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};

/// One agent's MCP server process.
pub struct StdioAgent {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    next_id: u64,
}

impl StdioAgent {
    /// Starts `spendguard --config CONFIG mcp --agent AGENT` with `env` and completes the MCP
    /// handshake.
    pub fn spawn(binary: &Path, config: &Path, agent: &str, token: &str, env: &[(String, String)]) -> StdioAgent {
        let mut child = Command::new(binary)
            .arg("--config")
            .arg(config)
            .args(["mcp", "--agent", agent])
            .env("SPENDGUARD_TOKEN", token)
            .envs(env.iter().cloned())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start spendguard mcp");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut agent = StdioAgent { child, stdin: Some(stdin), stdout, next_id: 1 };
        let init = agent.request(
            "initialize",
            json!({ "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": { "name": "spendguard-tests", "version": "0" } }),
        );
        assert!(init.is_some_and(|r| r["result"]["serverInfo"]["name"] == "spendguard"), "MCP handshake failed");
        agent.send(&json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }));
        agent
    }

    fn send(&mut self, msg: &Value) -> bool {
        let Some(stdin) = self.stdin.as_mut() else { return false };
        writeln!(stdin, "{msg}").and_then(|()| stdin.flush()).is_ok()
    }

    /// Sends a request and waits for its response; `None` when the process went away.
    pub fn request(&mut self, method: &str, params: Value) -> Option<Value> {
        let id = self.next_id;
        self.next_id += 1;
        if !self.send(&json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params })) {
            return None;
        }
        self.answer_to(&json!(id))
    }

    /// Writes `line` (a message as an attacker or a broken client would frame it) and a newline.
    pub fn send_line(&mut self, line: &[u8]) -> bool {
        let Some(stdin) = self.stdin.as_mut() else { return false };
        stdin.write_all(line).and_then(|()| stdin.write_all(b"\n")).and_then(|()| stdin.flush()).is_ok()
    }

    /// Reads messages until the response with `id`; `None` when the process went away.
    pub fn answer_to(&mut self, id: &Value) -> Option<Value> {
        loop {
            let mut line = String::new();
            if self.stdout.read_line(&mut line).ok()? == 0 {
                return None;
            }
            let msg: Value = serde_json::from_str(&line).ok()?;
            if &msg["id"] == id {
                return Some(msg);
            }
        }
    }

    /// Calls a tool: `(isError, text, structuredContent)`, or `None` when the process died.
    pub fn call(&mut self, tool: &str, args: Value) -> Option<(bool, String, Value)> {
        let r = self.request("tools/call", json!({ "name": tool, "arguments": args }))?;
        let result = &r["result"];
        let text = result["content"][0]["text"].as_str().unwrap_or_default().to_string();
        Some((result["isError"] == true, text, result["structuredContent"].clone()))
    }

    /// Waits (at most a minute) for the process to exit, after a crash or after closing its
    /// input.
    pub fn wait(mut self) -> ExitStatus {
        self.stdin.take();
        crate::wait_exit(&mut self.child, "spendguard mcp", std::time::Duration::from_secs(60))
    }
}

impl Drop for StdioAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
