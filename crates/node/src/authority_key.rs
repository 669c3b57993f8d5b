//! The authority key file: the Ed25519 seed external wallets' authorizations are signed with,
//! as 64 hex digits. Created on first use by a process that issues authorizations, readable
//! and writable by its owner only; never rewritten.

use crate::{NodeError, NodeResult};
use spendguard_service::Authority;
use std::io::Write;
use std::path::Path;
use zeroize::Zeroizing;

fn problem(path: &Path, message: impl Into<String>) -> NodeError {
    NodeError::Authority { path: path.display().to_string(), message: message.into() }
}

/// Reads the authority key at `path`; `None` when there is no file.
pub fn read_authority(path: &Path) -> NodeResult<Option<Authority>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => Zeroizing::new(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(problem(path, e.to_string())),
    };
    let mut seed = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text.trim(), seed.as_mut())
        .map_err(|_| problem(path, "is not an authority key (64 hex digits)"))?;
    check_private(path)?;
    Ok(Some(Authority::from_seed(&seed)))
}

/// Reads the authority key at `path`, creating a new one when there is no file.
pub fn load_or_create_authority(path: &Path) -> NodeResult<Authority> {
    if let Some(authority) = read_authority(path)? {
        return Ok(authority);
    }
    let (authority, seed) = Authority::generate().map_err(|e| problem(path, format!("no randomness: {e}")))?;
    let mut options = std::fs::OpenOptions::new();
    // `create_new`: two processes starting at once never overwrite each other's key.
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = match options.open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return read_authority(path)?.ok_or_else(|| problem(path, "vanished while being created"))
        }
        Err(e) => return Err(problem(path, format!("creating it: {e}"))),
    };
    let text = Zeroizing::new(format!("{}\n", hex::encode(seed.as_ref())));
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| problem(path, format!("writing it: {e}")))?;
    tracing::info!(path = %path.display(), key_id = authority.key_id(), "created a new authority key");
    Ok(authority)
}

/// A key others can read is not a secret any more.
fn check_private(path: &Path) -> NodeResult<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).map_err(|e| problem(path, e.to_string()))?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(problem(path, format!("is readable by others (mode {:o}); chmod 600 it", mode & 0o777)));
        }
    }
    Ok(())
}
