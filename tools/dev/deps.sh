# Sourced by test.sh and demo.sh: installs what spendguard's tests and demo run against, into a
# cache outside the clone ($SPENDGUARD_DEPS, default ~/.cache/spendguard-deps), once:
# - anvil (a real EVM node) from the npm registry, pinned to an exact version by package.json;
# - the official MCP Python SDK in a venv, pinned by requirements.txt here;
# - Debian's PostgreSQL server binaries (the tests and the demo start servers of their own).
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export SPENDGUARD_DEPS="${SPENDGUARD_DEPS:-$HOME/.cache/spendguard-deps}"

if ! "$SPENDGUARD_DEPS/node/node_modules/.bin/anvil" --version >/dev/null 2>&1 ||
    ! cmp -s "$here/package.json" "$SPENDGUARD_DEPS/node/installed.json"; then
    command -v npm >/dev/null || { echo "npm is missing: install Node.js 20+ (it carries npm)" >&2; exit 1; }
    echo "== installing anvil into $SPENDGUARD_DEPS/node"
    mkdir -p "$SPENDGUARD_DEPS/node"
    cp "$here/package.json" "$SPENDGUARD_DEPS/node/package.json"
    # The package carries the binary in a per-platform optional dependency; no install script runs.
    (cd "$SPENDGUARD_DEPS/node" && npm install --no-audit --no-fund --ignore-scripts --loglevel=error)
    cp "$here/package.json" "$SPENDGUARD_DEPS/node/installed.json"
fi
# The platform package's binary itself: node_modules/.bin/anvil is a Node wrapper whose child
# would outlive a test that kills the wrapper.
SPENDGUARD_ANVIL=$(ls "$SPENDGUARD_DEPS"/node/node_modules/@foundry-rs/anvil-*/bin/anvil 2>/dev/null | head -n 1 || true)
[ -x "$SPENDGUARD_ANVIL" ] || { echo "anvil's platform binary is missing under $SPENDGUARD_DEPS/node" >&2; exit 1; }
export SPENDGUARD_ANVIL

if ! "$SPENDGUARD_DEPS/venv/bin/python" -c 'import mcp' >/dev/null 2>&1 ||
    ! cmp -s "$here/requirements.txt" "$SPENDGUARD_DEPS/venv/requirements.txt"; then
    command -v python3 >/dev/null || { echo "python3 is missing: install Python 3.10+" >&2; exit 1; }
    echo "== installing the MCP Python SDK into $SPENDGUARD_DEPS/venv"
    python3 -m venv "$SPENDGUARD_DEPS/venv"
    "$SPENDGUARD_DEPS/venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
    cp "$here/requirements.txt" "$SPENDGUARD_DEPS/venv/requirements.txt"
fi
export SPENDGUARD_PYTHON="$SPENDGUARD_DEPS/venv/bin/python"

# The PostgreSQL ledger runs against a real server that the tests and the demo start from
# Debian's binaries.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    command -v apt-get >/dev/null || { echo "PostgreSQL's server binaries are missing: install postgresql" >&2; exit 1; }
    echo "== installing postgresql (Debian) for the PostgreSQL ledger"
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
fi
