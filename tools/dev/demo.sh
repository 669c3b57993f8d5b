#!/usr/bin/env bash
# The demo: an organisation with two departments, three agents and wallets on both chains, on
# local chains (anvil, and an in-process surfpool for Solana), run through the MCP tools of a
# real `spendguard serve`: every tier, live prices (a stale feed refused), an approval granted, a
# delay cancelled, a cross-chain aggregate denial, a stranger's money reported, an EIP-7702
# delegation to a drainer and a rogue transfer caught and frozen; then the status and the report.
# Installs what it needs first. Output: $SPENDGUARD_DEMO_DIR (default ~/.cache/spendguard-demo).
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/spendguard-target}"
command -v cargo >/dev/null || { echo "cargo is missing: install Rust 1.95 (rustup)" >&2; exit 1; }
source tools/dev/deps.sh
# Two builds, so that the spendguard binary is built as a user's is: without the crash fail
# points the test harness (the demo's own crate) compiles into the libraries it links.
cargo build --locked --quiet -p spendguard
cargo build --locked --quiet -p spendguard-tests --bin spendguard-demo
export SPENDGUARD_BIN="$CARGO_TARGET_DIR/debug/spendguard"
exec "$CARGO_TARGET_DIR/debug/spendguard-demo" "${SPENDGUARD_DEMO_DIR:-$HOME/.cache/spendguard-demo}"
