#!/usr/bin/env bash
# The demo: the spec's example organisation, its policies and the ledger, driven through the CLI.
# Chains, MCP and the auditor join as their issues land; this shows what works today.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/spendguard-target}"
cargo build --locked --quiet --bin spendguard
sg="$CARGO_TARGET_DIR/debug/spendguard"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp fixtures/config/example.toml "$work/spendguard.toml"
cfg=(--config "$work/spendguard.toml")
github=0x70997970C51812dc3A010C7d01b50e0d17dc79C8
casino=0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC
friday=2026-11-20T15:00:00Z   # 10:00 in New York, inside procurement-bot's schedule
saturday=2026-11-21T15:00:00Z

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "The configuration"
"$sg" "${cfg[@]}" check

step "procurement-bot pays GitHub 8 USDC on a Friday (INSTANT)"
"$sg" "${cfg[@]}" evaluate --agent procurement-bot --wallet trading-hot --to $github --amount 8 --asset USDC --at $friday --balance 10000

step "... 50 USDC (NOTIFY), as the JSON an agent receives"
"$sg" "${cfg[@]}" evaluate --agent procurement-bot --wallet trading-hot --to $github --amount 50 --asset USDC --at $friday --balance 10000 --json

step "... 120 USDC: above GitHub's 100 USD per-recipient cap"
"$sg" "${cfg[@]}" evaluate --agent procurement-bot --wallet trading-hot --to $github --amount 120 --asset USDC --at $friday --balance 10000

step "... the casino on a Saturday: outside the schedule, and gambling is blocked"
"$sg" "${cfg[@]}" evaluate --agent procurement-bot --wallet trading-hot --to $casino --amount 0.001 --at $saturday --balance 10

step "refund-bot must name an operation"
"$sg" "${cfg[@]}" evaluate --agent refund-bot --wallet trading-hot --to $github --amount 0.01 --balance 10

step "An operator freezes refund-bot; its next spend is denied with the kill switch"
"$sg" "${cfg[@]}" freeze --agent refund-bot --reason "refunds look wrong" --as ops@acme.example
"$sg" "${cfg[@]}" evaluate --agent refund-bot --wallet trading-hot --operation refund --to $github --amount 0.01 --balance 10
"$sg" "${cfg[@]}" frozen

step "Unfreezing needs an acknowledgment"
"$sg" "${cfg[@]}" unfreeze --agent refund-bot || true
"$sg" "${cfg[@]}" unfreeze --agent refund-bot --ack "refund batch reviewed" --as ops@acme.example
"$sg" "${cfg[@]}" evaluate --agent refund-bot --wallet trading-hot --operation refund --to $github --amount 0.01 --balance 10
