//! Kill-switch state: which scopes are frozen, by whom, when and why.

use crate::model::Scope;
use chrono::{DateTime, SecondsFormat, Utc};

/// A frozen scope. Every spend it covers is denied with `KILL_SWITCH`; reads still work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freeze {
    /// What is frozen.
    pub scope: Scope,
    /// Operator, or `reconciler` when the chain watcher tripped it.
    pub frozen_by: String,
    /// Why.
    pub reason: String,
    /// When.
    pub frozen_at: DateTime<Utc>,
    /// Evidence (for automatic freezes: tx hash, block, amount, recipient).
    pub evidence: Option<String>,
}

impl Freeze {
    /// One sentence for a `KILL_SWITCH` reason.
    pub fn describe(&self) -> String {
        let what = match &self.scope {
            Scope::Org => "the organisation is".to_string(),
            other => format!("{} {} is", other.kind(), other.id()),
        };
        let mut text = format!(
            "{what} frozen by {} since {}: {}",
            self.frozen_by,
            self.frozen_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            self.reason
        );
        if let Some(evidence) = &self.evidence {
            text.push_str(&format!(" (evidence: {evidence})"));
        }
        text
    }
}
