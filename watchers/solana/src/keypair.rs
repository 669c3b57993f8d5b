//! Solana CLI keypair files: a JSON array of the 64 bytes (secret then public key).

use solana_keypair::Keypair;
use std::path::Path;

/// Keypair file errors.
#[derive(Debug, thiserror::Error)]
pub enum KeypairError {
    /// The file could not be read or written.
    #[error("keypair {path}: {message}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        message: String,
    },
    /// The file is not a Solana CLI keypair.
    #[error("keypair {path}: not a Solana CLI keypair file (a JSON array of 64 numbers): {message}")]
    Invalid {
        /// File.
        path: String,
        /// What was wrong.
        message: String,
    },
}

/// Reads a Solana CLI keypair file.
pub fn read_keypair(path: &Path) -> Result<Keypair, KeypairError> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| KeypairError::Io { path: path.display().to_string(), message: e.to_string() })?,
    );
    solana_keypair::read_keypair(&mut text.as_bytes())
        .map_err(|e| KeypairError::Invalid { path: path.display().to_string(), message: e.to_string() })
}

/// Writes `keypair` as a Solana CLI keypair file readable by its owner only; never overwrites.
pub fn write_keypair(path: &Path, keypair: &Keypair) -> Result<(), KeypairError> {
    use std::io::Write as _;
    let io = |e: std::io::Error| KeypairError::Io { path: path.display().to_string(), message: e.to_string() };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(io)?;
    let bytes = zeroize::Zeroizing::new(keypair.to_bytes());
    let text =
        zeroize::Zeroizing::new(format!("[{}]", bytes.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(",")));
    file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use solana_signer::Signer as _;

    #[test]
    fn a_written_keypair_reads_back_and_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.json");
        let keypair = Keypair::new();
        write_keypair(&path, &keypair).unwrap();
        assert_eq!(read_keypair(&path).unwrap().pubkey(), keypair.pubkey());
        assert!(matches!(write_keypair(&path, &Keypair::new()), Err(KeypairError::Io { .. })));
        std::fs::write(dir.path().join("bad.json"), "[1,2,3]").unwrap();
        let err = read_keypair(&dir.path().join("bad.json")).unwrap_err().to_string();
        assert!(err.contains("not a Solana CLI keypair file"), "{err}");
    }
}
