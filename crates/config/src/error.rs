//! Configuration errors that name the file, the line and the key.

use std::fmt;
use std::path::{Path, PathBuf};

/// One thing wrong with a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Line number (1-based), when the key could be located.
    pub line: Option<usize>,
    /// Dotted key path, e.g. `policy[2].limits[0].max_usd`; empty for the whole file.
    pub key: String,
    /// What is wrong and, where possible, how to fix it.
    pub message: String,
}

/// Why a configuration could not be loaded: the file and every issue found in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read the configuration: {message}", path.display())]
    Read {
        /// File.
        path: PathBuf,
        /// The I/O error.
        message: String,
    },
    /// The file was read but is not a valid configuration.
    #[error("{}", render_issues(path, issues))]
    Invalid {
        /// File.
        path: PathBuf,
        /// Every issue, in file order.
        issues: Vec<ConfigIssue>,
    },
}

/// Result alias of this crate.
pub type ConfigResult<T> = Result<T, ConfigError>;

fn render_issues(path: &Path, issues: &[ConfigIssue]) -> String {
    issues.iter().map(|i| render_issue(path, i)).collect::<Vec<_>>().join("\n")
}

fn render_issue(path: &Path, issue: &ConfigIssue) -> String {
    let mut out = path.display().to_string();
    if let Some(line) = issue.line {
        out.push_str(&format!(":{line}"));
    }
    if !issue.key.is_empty() {
        out.push_str(&format!(": {}", issue.key));
    }
    out.push_str(&format!(": {}", issue.message));
    out
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}: {}", self.key, self.message),
            None => write!(f, "{}: {}", self.key, self.message),
        }
    }
}
