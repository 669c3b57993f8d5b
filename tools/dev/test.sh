#!/usr/bin/env bash
# The whole test suite, from a clean checkout. Installs what it needs first.
#
# Build output goes to $CARGO_TARGET_DIR (default ~/.cache/spendguard-target) so that runs from
# fresh clones reuse one cache; it also works from nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/spendguard-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

command -v cargo >/dev/null || { echo "cargo is missing: install Rust 1.95 (rustup)" >&2; exit 1; }
source tools/dev/deps.sh
# The HTML report is checked in a real browser: Debian's chromium.
if [ -z "${SPENDGUARD_CHROMIUM:-}" ] && ! command -v chromium >/dev/null; then
    command -v apt-get >/dev/null || { echo "chromium is missing: install it, or set SPENDGUARD_CHROMIUM" >&2; exit 1; }
    echo "== installing chromium (Debian) for the HTML report test"
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi

echo "== formatting"
cargo fmt --all --check

log=$(mktemp)
trap 'rm -f "$log"' EXIT

echo "== build and test (all crates, benches compiled and run once as tests)"
# The end-to-end tests start this binary as agents' MCP hosts and operators would; the crash
# tests need its fail points (a test feature, never in a release build). The tests check that
# it was built from these sources.
cargo build --locked -p spendguard --features spendguard-node/fail-points
cargo test --workspace --locked --all-targets 2>&1 | tee "$log"
cargo test --workspace --locked --doc 2>&1 | tee -a "$log"
# The service alone, built as a release is: without the crash fail points (it checks so).
cargo test --locked -p spendguard-service --lib 2>&1 | tee -a "$log"

# One closing line for the whole suite, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
