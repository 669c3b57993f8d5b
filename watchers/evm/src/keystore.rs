//! Web3 Secret Storage (the geth/foundry keystore format, version 3).
//!
//! Reading uses alloy's decrypter, which accepts any scrypt or pbkdf2 parameters. Writing is
//! done here because the usual writer fixes scrypt at n = 2^13; spendguard writes n = 2^18,
//! r = 8, p = 1 (geth's "standard" strength): about a second and 256 MiB to unlock, once, at
//! start-up. Private keys and passwords live in zeroizing buffers.

use aes::cipher::{KeyIvInit, StreamCipher};
use alloy::primitives::{keccak256, Address};
use alloy::signers::local::PrivateKeySigner;
use serde::Serialize;
use std::path::Path;
use zeroize::Zeroizing;

/// scrypt cost: log2(n).
pub const SCRYPT_LOG_N: u8 = 18;
const SCRYPT_R: u32 = 8;
const SCRYPT_P: u32 = 1;

type Aes128Ctr = ctr::Ctr128BE<aes::Aes128>;

/// Keystore errors.
#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    /// The file could not be read or written.
    #[error("keystore {path}: {message}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        message: String,
    },
    /// Wrong password, or not a keystore.
    #[error("keystore {path}: cannot decrypt (wrong password or not a Web3 Secret Storage file): {message}")]
    Decrypt {
        /// File.
        path: String,
        /// Cause.
        message: String,
    },
    /// The key material is not a valid secp256k1 key.
    #[error("invalid private key: {0}")]
    InvalidKey(String),
    /// The system's random source failed.
    #[error("no randomness available: {0}")]
    Random(String),
}

#[derive(Serialize)]
struct KeystoreFile {
    address: String,
    crypto: Crypto,
    id: String,
    version: u8,
}

#[derive(Serialize)]
struct Crypto {
    cipher: &'static str,
    cipherparams: CipherParams,
    ciphertext: String,
    kdf: &'static str,
    kdfparams: KdfParams,
    mac: String,
}

#[derive(Serialize)]
struct CipherParams {
    iv: String,
}

#[derive(Serialize)]
struct KdfParams {
    dklen: u8,
    n: u32,
    p: u32,
    r: u32,
    salt: String,
}

fn random<const N: usize>() -> Result<[u8; N], KeystoreError> {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).map_err(|e| KeystoreError::Random(e.to_string()))?;
    Ok(b)
}

/// Encrypts `secret` (32 bytes) with `password` into a keystore file at `path`, created with
/// mode 0600 and never overwriting an existing file. Returns the key's address.
pub fn write_keystore(path: &Path, secret: &[u8; 32], password: &str) -> Result<Address, KeystoreError> {
    let io = |e: std::io::Error| KeystoreError::Io { path: path.display().to_string(), message: e.to_string() };
    let signer = PrivateKeySigner::from_slice(secret).map_err(|e| KeystoreError::InvalidKey(e.to_string()))?;
    let salt: [u8; 32] = random()?;
    let iv: [u8; 16] = random()?;
    let mut derived = Zeroizing::new([0u8; 32]);
    let params = scrypt::Params::new(SCRYPT_LOG_N, SCRYPT_R, SCRYPT_P)
        .map_err(|e| KeystoreError::InvalidKey(format!("scrypt parameters: {e}")))?;
    scrypt::scrypt(password.as_bytes(), &salt, &params, derived.as_mut())
        .map_err(|e| KeystoreError::InvalidKey(format!("scrypt: {e}")))?;
    let mut ciphertext = secret.to_vec();
    Aes128Ctr::new(derived[..16].into(), &iv.into()).apply_keystream(&mut ciphertext);
    let mac = keccak256([&derived[16..32], &ciphertext[..]].concat());
    let file = KeystoreFile {
        address: hex::encode(signer.address()),
        crypto: Crypto {
            cipher: "aes-128-ctr",
            cipherparams: CipherParams { iv: hex::encode(iv) },
            ciphertext: hex::encode(&ciphertext),
            kdf: "scrypt",
            kdfparams: KdfParams { dklen: 32, n: 1 << SCRYPT_LOG_N, p: SCRYPT_P, r: SCRYPT_R, salt: hex::encode(salt) },
            mac: hex::encode(mac),
        },
        id: uuid::Uuid::new_v4().to_string(),
        version: 3,
    };
    let json = serde_json::to_vec_pretty(&file).map_err(|e| KeystoreError::InvalidKey(e.to_string()))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut out = options.open(path).map_err(io)?;
    std::io::Write::write_all(&mut out, &json).map_err(io)?;
    out.sync_all().map_err(io)?;
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
