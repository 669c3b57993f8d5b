//! The MCP Python SDK's interpreter for tests that use the independent client.

use std::path::PathBuf;
use std::process::Command;

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
