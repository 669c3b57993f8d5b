//! The ledger file itself: created whole or not at all, and never re-created over one that
//! existed.
//!
//! A new ledger is built under a temporary name beside the real one and linked into place only
//! once its schema is complete, so no process ever sees a half-made ledger. A file at the
//! ledger's path that is empty, or whose write-ahead log outlived it, is what is left of a
//! ledger that held limits, tokens, nonces and idempotency keys: it is refused, and only
//! `spendguard init` (after the operator has looked) makes a new one there.

use super::writer::connect;
use crate::error::{StoreError, StoreResult};
use crate::records::LedgerOptions;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// What [`prepare`] may do with the file at the ledger's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Creation {
    /// Create a ledger where there is no file (the first start); refuse an empty one.
    IfMissing,
    /// `spendguard init`: create a ledger where there is none or an empty file; refuse a ledger.
    Initialise,
}

fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

/// A write-ahead log with content: committed transactions not yet copied into the main file.
fn wal_with_content(path: &Path) -> Option<PathBuf> {
    let wal = sidecar(path, "-wal");
    std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0).then_some(wal)
}

/// Makes sure a ledger file is at `path`, creating one as `creation` allows.
pub(crate) fn prepare(path: &Path, options: &LedgerOptions, creation: Creation) -> StoreResult<()> {
    let io = |e: std::io::Error| StoreError::Unusable(format!("cannot read {}: {e}", path.display()));
    match std::fs::metadata(path) {
        Ok(m) if m.len() > 0 => {
            if creation == Creation::Initialise {
                return Err(StoreError::NotEmpty(path.to_path_buf()));
            }
            return Ok(());
        }
        Ok(_) if creation == Creation::IfMissing => return Err(StoreError::EmptyLedger(path.to_path_buf())),
        Ok(_) | Err(_) if wal_with_content(path).is_some() => {
            return Err(StoreError::OrphanedLog { path: path.to_path_buf(), wal: sidecar(path, "-wal") })
        }
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    create(path, options, creation)
}

/// Distinguishes the temporary files of ledgers being built by threads of one process.
static BUILDS: AtomicU64 = AtomicU64::new(0);

/// Builds a complete ledger under a temporary name and moves it to `path`. Two processes
/// creating the same ledger at once both succeed, and one ledger results; `init` replaces an
/// empty file.
fn create(path: &Path, options: &LedgerOptions, creation: Creation) -> StoreResult<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let build = BUILDS.fetch_add(1, Ordering::Relaxed);
    let building = path.with_file_name(format!(".{name}.new-{}-{build}", std::process::id()));
    let fail = |what: &str, e: std::io::Error| {
        StoreError::Unusable(format!("cannot {what} the new ledger {}: {e}", path.display()))
    };
    let result = (|| {
        // Closing the only connection copies the log into the file and removes it.
        let mut conn = connect(&building, options)?;
        super::schema::migrate(&mut conn)?;
        conn.close().map_err(|(_, e)| StoreError::from(e))?;
        let empty = std::fs::metadata(path).is_ok_and(|m| m.len() == 0);
        if creation == Creation::Initialise && empty {
            return std::fs::rename(&building, path).map_err(|e| fail("move", e));
        }
        // Linking never replaces: a ledger another process made meanwhile is kept.
        match std::fs::hard_link(&building, path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::AlreadyExists && creation == Creation::IfMissing => Ok(()),
            Err(e) => Err(fail("place", e)),
        }
    })();
    for leftover in [building.clone(), sidecar(&building, "-wal"), sidecar(&building, "-shm")] {
        let _ = std::fs::remove_file(leftover);
    }
    result
}
