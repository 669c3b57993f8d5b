//! Solana key files: the Solana CLI keypair file (a JSON array of the 64 bytes, secret then
//! public key), and an encrypted form for keys at rest — the keystore of
//! [`spendguard_chain::keystore`] (Web3 Secret Storage v3, scrypt n = 2^18, r = 8, p = 1,
//! AES-128-CTR, Keccak-256 MAC, as the EVM keystores) holding the 32-byte ed25519 seed.

use solana_keypair::Keypair;
use solana_signer::Signer as _;
use spendguard_chain::keystore;
use std::path::Path;
use zeroize::Zeroizing;

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
    /// The file is encrypted and no password was given.
    #[error("keypair {0} is encrypted: give the wallet a password_env")]
    NeedsPassword(String),
    /// Encrypting or decrypting failed (wrong password, damaged file).
    #[error(transparent)]
    Keystore(#[from] keystore::KeystoreError),
    /// Text that is neither a keypair's JSON array nor its base58 form.
    #[error("not a Solana keypair: expected a JSON array of 64 numbers or the 64 bytes in base58")]
    Unparsable,
}

/// Reads a key file: a Solana CLI keypair file, or an encrypted one (which needs `password`).
pub fn read_keypair(path: &Path, password: Option<&str>) -> Result<Keypair, KeypairError> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| KeypairError::Io { path: path.display().to_string(), message: e.to_string() })?,
    );
    if text.trim_start().starts_with('{') {
        let password = password.ok_or_else(|| KeypairError::NeedsPassword(path.display().to_string()))?;
        let seed = keystore::decrypt_file(path, password)?;
        let seed: [u8; 32] = seed.as_slice().try_into().map_err(|_| KeypairError::Invalid {
            path: path.display().to_string(),
            message: format!("the encrypted secret is {} bytes, not a 32-byte ed25519 seed", seed.len()),
        })?;
        return Ok(Keypair::new_from_array(seed));
    }
    solana_keypair::read_keypair(&mut text.as_bytes())
        .map_err(|e| KeypairError::Invalid { path: path.display().to_string(), message: e.to_string() })
}

/// Parses a keypair given as text: the CLI file's JSON array, or the 64 bytes in base58 (as
/// wallets export them).
pub fn parse_keypair(text: &str) -> Result<Keypair, KeypairError> {
    let text = text.trim();
    let bytes = Zeroizing::new(if text.starts_with('[') {
        serde_json::from_str::<Vec<u8>>(text).map_err(|_| KeypairError::Unparsable)?
    } else {
        bs58::decode(text).into_vec().map_err(|_| KeypairError::Unparsable)?
    });
    let keypair = Keypair::try_from(bytes.as_slice()).map_err(|_| KeypairError::Unparsable)?;
    // The public half must be the secret's: a mismatched pair would sign as someone else.
    if Keypair::new_from_array(*keypair.secret_bytes()).pubkey() != keypair.pubkey() {
        return Err(KeypairError::Unparsable);
    }
    Ok(keypair)
}

/// Writes `keypair` as a Solana CLI keypair file readable by its owner only; never overwrites.
pub fn write_keypair(path: &Path, keypair: &Keypair) -> Result<(), KeypairError> {
    let bytes = Zeroizing::new(keypair.to_bytes());
    let text = Zeroizing::new(format!("[{}]", bytes.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(",")));
    Ok(keystore::write_new(path, text.as_bytes())?)
}

/// Writes `keypair` encrypted with `password` (mode 0600, never overwriting).
pub fn write_encrypted_keypair(path: &Path, keypair: &Keypair, password: &str) -> Result<(), KeypairError> {
    let json = keystore::encrypt(keypair.secret_bytes(), password, &keypair.pubkey().to_string())?;
    Ok(keystore::write_new(path, &json)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_keypair_reads_back_and_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.json");
        let keypair = Keypair::new();
        write_keypair(&path, &keypair).unwrap();
        assert_eq!(read_keypair(&path, None).unwrap().pubkey(), keypair.pubkey());
        assert!(write_keypair(&path, &Keypair::new()).is_err(), "never overwrites");
        std::fs::write(dir.path().join("bad.json"), "[1,2,3]").unwrap();
        let err = read_keypair(&dir.path().join("bad.json"), None).unwrap_err().to_string();
        assert!(err.contains("not a Solana CLI keypair file"), "{err}");
    }

    #[test]
    fn an_encrypted_keypair_needs_its_password() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.json");
        let keypair = Keypair::new();
        write_encrypted_keypair(&path, &keypair, "correct horse").unwrap();
        assert!(!std::fs::read_to_string(&path).unwrap().contains(&keypair.to_base58_string()));
        assert_eq!(read_keypair(&path, Some("correct horse")).unwrap().pubkey(), keypair.pubkey());
        assert!(matches!(read_keypair(&path, None), Err(KeypairError::NeedsPassword(_))));
        let wrong = read_keypair(&path, Some("wrong")).unwrap_err().to_string();
        assert!(wrong.contains("cannot decrypt"), "{wrong}");
    }

    #[test]
    fn keypairs_parse_from_json_or_base58_and_mismatched_halves_are_refused() {
        let keypair = Keypair::new();
        assert_eq!(parse_keypair(&keypair.to_base58_string()).unwrap().pubkey(), keypair.pubkey());
        let json = format!("{:?}", keypair.to_bytes().to_vec());
        assert_eq!(parse_keypair(&json).unwrap().pubkey(), keypair.pubkey());
        let mut mixed = keypair.to_bytes();
        mixed[32..].copy_from_slice(&Keypair::new().pubkey().to_bytes());
        assert!(matches!(parse_keypair(&bs58::encode(mixed).into_string()), Err(KeypairError::Unparsable)));
        assert!(matches!(parse_keypair("not a key"), Err(KeypairError::Unparsable)));
    }
}
