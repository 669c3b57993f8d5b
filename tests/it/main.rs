//! spendguard end-to-end tests: the policy engine rule by rule, and scenarios from the field on
//! a real SQLite ledger.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod auditor;
mod chain_identity;
mod clock;
mod config_check;
mod conservation;
mod crash;
mod delegation;
mod demo;
mod evaluate_balances;
mod external;
mod external_solana;
mod hostile;
mod inflows;
mod ledger_conformance;
mod ledger_faults;
mod ledger_file;
mod load_generator;
mod mcp_evm;
mod operators;
mod postgres_daemons;
mod postgres_node;
mod postgres_schema;
mod prices_evm;
mod prices_solana;
mod properties;
mod python_mcp;
mod race;
mod ranges;
mod report_html;
mod revoke;
mod rules;
mod scenarios;
mod secrets;
mod soak;
mod solana;
mod solana_audit;
mod spend_faults;
mod transport;
mod watcher_faults;
mod x402;
