//! spendguard end-to-end tests: the policy engine rule by rule, and scenarios from the field on
//! a real SQLite ledger.

mod rules;
mod properties;
mod scenarios;
