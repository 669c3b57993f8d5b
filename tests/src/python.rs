//! The MCP Python SDK's interpreter for tests that use the independent client.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The venv `tools/dev/test.sh` creates (`pip install mcp==2.3.0`), or `$SPENDGUARD_PYTHON`.
/// Panics with the install hint when the SDK cannot be imported: these tests never skip.
pub fn python() -> PathBuf {
    let python = std::env::var_os("SPENDGUARD_PYTHON").map(PathBuf::from).unwrap_or_else(|| {
        let deps = std::env::var_os("SPENDGUARD_DEPS")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/spendguard-deps"));
        deps.join("venv/bin/python")
    });
    let ok = Command::new(&python).args(["-c", "import mcp"]).output().is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{} cannot import the MCP Python SDK. Install it with `tools/dev/test.sh`, or: python3 -m venv \
         ~/.cache/spendguard-deps/venv && ~/.cache/spendguard-deps/venv/bin/pip install mcp==2.3.0",
        python.display()
    );
    python
}

/// Starts `script` under [`python`] with `scenario` as JSON on its standard input; its standard
/// output and error are piped for the test to read.
pub fn start_script(script: &Path, scenario: &serde_json::Value) -> Child {
    let mut child = Command::new(python())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
    child.stdin.take().expect("stdin").write_all(scenario.to_string().as_bytes()).expect("scenario");
    child
}
