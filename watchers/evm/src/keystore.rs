//! Web3 Secret Storage (the geth/foundry keystore format, version 3).
//!
//! Reading uses alloy's decrypter, which accepts any scrypt or pbkdf2 parameters. Writing goes
//! through [`spendguard_chain::keystore`] because the usual writer fixes scrypt at n = 2^13;
//! spendguard writes n = 2^18, r = 8, p = 1 (geth's "standard" strength): about a second and
//! 256 MiB to unlock, once, at start-up. Private keys and passwords live in zeroizing buffers.

use alloy::primitives::Address;
use alloy::signers::local::PrivateKeySigner;
use spendguard_chain::keystore::{encrypt, random, write_new};
pub use spendguard_chain::keystore::{KeystoreError, SCRYPT_LOG_N};
use std::path::Path;
use zeroize::Zeroizing;

/// Encrypts `secret` (32 bytes) with `password` into a keystore file at `path`, created with
/// mode 0600 and never overwriting an existing file. Returns the key's address.
pub fn write_keystore(path: &Path, secret: &[u8; 32], password: &str) -> Result<Address, KeystoreError> {
    let signer = PrivateKeySigner::from_slice(secret).map_err(|e| KeystoreError::InvalidKey(e.to_string()))?;
    write_new(path, &encrypt(secret, password, &hex::encode(signer.address()))?)?;
    Ok(signer.address())
}

/// Decrypts a keystore file.
pub fn read_keystore(path: &Path, password: &str) -> Result<PrivateKeySigner, KeystoreError> {
    if !path.exists() {
        return Err(KeystoreError::Io { path: path.display().to_string(), message: "no such file".into() });
    }
    PrivateKeySigner::decrypt_keystore(path, password)
        .map_err(|e| KeystoreError::Decrypt { path: path.display().to_string(), message: e.to_string() })
}

/// A fresh random private key, in a zeroizing buffer.
pub fn random_secret() -> Result<Zeroizing<[u8; 32]>, KeystoreError> {
    loop {
        let candidate = Zeroizing::new(random::<32>()?);
        // Almost every 32-byte string is a valid key; retry the rare one that is not.
        if PrivateKeySigner::from_slice(candidate.as_ref()).is_ok() {
            return Ok(candidate);
        }
    }
}

/// Parses a hex private key (with or without `0x`).
pub fn parse_secret(hex_key: &str) -> Result<Zeroizing<[u8; 32]>, KeystoreError> {
    let text = hex_key.trim().trim_start_matches("0x");
    let mut out = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text, out.as_mut()).map_err(|_| KeystoreError::InvalidKey("expected 64 hex digits".into()))?;
    PrivateKeySigner::from_slice(out.as_ref()).map_err(|e| KeystoreError::InvalidKey(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_keystore_decrypts_to_the_same_key_with_n_2_18() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.json");
        // anvil's first dev account; well known, never funded anywhere real.
        let secret = parse_secret("0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80").unwrap();
        let address = write_keystore(&path, &secret, "correct horse").unwrap();
        assert_eq!(format!("{address:?}").to_lowercase(), "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266");
        let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(json["crypto"]["kdfparams"]["n"], 262_144);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let signer = read_keystore(&path, "correct horse").unwrap();
        assert_eq!(signer.address(), address);
        assert!(matches!(read_keystore(&path, "wrong"), Err(KeystoreError::Decrypt { .. })));
        assert!(write_keystore(&path, &secret, "x").is_err(), "never overwrites");
    }
}
