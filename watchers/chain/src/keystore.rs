//! Encrypted key files, shared by every chain: the Web3 Secret Storage v3 layout (the
//! geth/foundry keystore) with scrypt n = 2^18, r = 8, p = 1 (geth's "standard" strength, about
//! a second and 256 MiB to unlock, once, at start-up), AES-128-CTR and a Keccak-256 MAC. EVM
//! keystores hold the 32-byte secp256k1 key; Solana ones the 32-byte ed25519 seed.

use aes::cipher::{KeyIvInit, StreamCipher};
use serde::{Deserialize, Serialize};
use sha3::{Digest, Keccak256};
use std::path::Path;
use zeroize::Zeroizing;

/// scrypt cost: log2(n).
pub const SCRYPT_LOG_N: u8 = 18;
const SCRYPT_R: u32 = 8;
const SCRYPT_P: u32 = 1;

type Aes128Ctr = ctr::Ctr128BE<aes::Aes128>;

/// What can go wrong with a key file.
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
    /// The key material is not a valid key.
    #[error("invalid private key: {0}")]
    InvalidKey(String),
    /// The system's random source failed.
    #[error("no randomness available: {0}")]
    Random(String),
}

#[derive(Serialize, Deserialize)]
struct KeystoreFile {
    address: String,
    crypto: Crypto,
    id: String,
    version: u8,
}

#[derive(Serialize, Deserialize)]
struct Crypto {
    cipher: String,
    cipherparams: CipherParams,
    ciphertext: String,
    kdf: String,
    kdfparams: KdfParams,
    mac: String,
}

#[derive(Serialize, Deserialize)]
struct CipherParams {
    iv: String,
}

#[derive(Serialize, Deserialize)]
struct KdfParams {
    dklen: u8,
    n: u32,
    p: u32,
    r: u32,
    salt: String,
}

/// `N` random bytes from the system.
pub fn random<const N: usize>() -> Result<[u8; N], KeystoreError> {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).map_err(|e| KeystoreError::Random(e.to_string()))?;
    Ok(b)
}

fn derive(password: &str, salt: &[u8], log_n: u8, r: u32, p: u32) -> Result<Zeroizing<[u8; 32]>, String> {
    let mut derived = Zeroizing::new([0u8; 32]);
    let params = scrypt::Params::new(log_n, r, p).map_err(|e| format!("scrypt parameters: {e}"))?;
    scrypt::scrypt(password.as_bytes(), salt, &params, derived.as_mut()).map_err(|e| format!("scrypt: {e}"))?;
    Ok(derived)
}

fn mac(derived: &[u8; 32], ciphertext: &[u8]) -> [u8; 32] {
    Keccak256::new().chain_update(&derived[16..32]).chain_update(ciphertext).finalize().into()
}

/// Encrypts `secret` with `password` into keystore JSON naming `address` (as the chain writes it).
pub fn encrypt(secret: &[u8], password: &str, address: &str) -> Result<Vec<u8>, KeystoreError> {
    let salt: [u8; 32] = random()?;
    let iv: [u8; 16] = random()?;
    let derived = derive(password, &salt, SCRYPT_LOG_N, SCRYPT_R, SCRYPT_P).map_err(KeystoreError::InvalidKey)?;
    let mut ciphertext = secret.to_vec();
    Aes128Ctr::new(derived[..16].into(), &iv.into()).apply_keystream(&mut ciphertext);
    let file = KeystoreFile {
        address: address.to_string(),
        crypto: Crypto {
            cipher: "aes-128-ctr".into(),
            cipherparams: CipherParams { iv: hex::encode(iv) },
            ciphertext: hex::encode(&ciphertext),
            kdf: "scrypt".into(),
            kdfparams: KdfParams { dklen: 32, n: 1 << SCRYPT_LOG_N, p: SCRYPT_P, r: SCRYPT_R, salt: hex::encode(salt) },
            mac: hex::encode(mac(&derived, &ciphertext)),
        },
        id: uuid::Uuid::new_v4().to_string(),
        version: 3,
    };
    serde_json::to_vec_pretty(&file).map_err(|e| KeystoreError::InvalidKey(e.to_string()))
}

/// The address a keystore file at `path` says it holds (its `address` field), read without
/// the password: enough to catch a keystore configured for the wrong wallet. Only decrypting
/// proves it.
pub fn stated_address(path: &Path) -> Result<String, KeystoreError> {
    let text = std::fs::read(path)
        .map_err(|e| KeystoreError::Io { path: path.display().to_string(), message: e.to_string() })?;
    let file: KeystoreFile = serde_json::from_slice(&text)
        .map_err(|e| KeystoreError::Decrypt { path: path.display().to_string(), message: e.to_string() })?;
    Ok(file.address)
}

/// Decrypts the keystore file at `path` (scrypt, AES-128-CTR) to its secret, checking the MAC.
pub fn decrypt_file(path: &Path, password: &str) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
    let bad = |message: String| KeystoreError::Decrypt { path: path.display().to_string(), message };
    let text = std::fs::read(path)
        .map_err(|e| KeystoreError::Io { path: path.display().to_string(), message: e.to_string() })?;
    let file: KeystoreFile = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    let c = &file.crypto;
    if file.version != 3 || c.kdf != "scrypt" || c.cipher != "aes-128-ctr" || c.kdfparams.dklen != 32 {
        return Err(bad(format!("unsupported: version {}, kdf {}, cipher {}", file.version, c.kdf, c.cipher)));
    }
    let n = c.kdfparams.n;
    if !n.is_power_of_two() || n < 2 {
        return Err(bad(format!("scrypt n = {n} is not a power of two")));
    }
    let hex_field = |name: &str, value: &str| hex::decode(value).map_err(|e| bad(format!("{name}: {e}")));
    let (salt, iv, mut secret) = (
        hex_field("salt", &c.kdfparams.salt)?,
        hex_field("iv", &c.cipherparams.iv)?,
        hex_field("ciphertext", &c.ciphertext)?,
    );
    let iv: [u8; 16] = iv.try_into().map_err(|_| bad("iv is not 16 bytes".into()))?;
    let derived = derive(password, &salt, n.trailing_zeros() as u8, c.kdfparams.r, c.kdfparams.p).map_err(bad)?;
    if hex::encode(mac(&derived, &secret)) != c.mac.to_lowercase() {
        return Err(bad("MAC mismatch".into()));
    }
    Aes128Ctr::new(derived[..16].into(), &iv.into()).apply_keystream(&mut secret);
    Ok(Zeroizing::new(secret))
}

/// Writes `bytes` to a new file at `path` with mode 0600, never overwriting one, and syncs it.
pub fn write_new(path: &Path, bytes: &[u8]) -> Result<(), KeystoreError> {
    let io = |e: std::io::Error| KeystoreError::Io { path: path.display().to_string(), message: e.to_string() };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut out = options.open(path).map_err(io)?;
    std::io::Write::write_all(&mut out, bytes).map_err(io)?;
    out.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_round_trips_and_a_wrong_password_or_tampering_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.json");
        let json = encrypt(&[7u8; 32], "correct horse", "addr").unwrap();
        write_new(&path, &json).unwrap();
        assert!(write_new(&path, &json).is_err(), "never overwrites");
        assert_eq!(decrypt_file(&path, "correct horse").unwrap().as_slice(), &[7u8; 32]);
        assert!(matches!(decrypt_file(&path, "wrong"), Err(KeystoreError::Decrypt { .. })));
        let text = String::from_utf8(json).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["crypto"]["kdfparams"]["n"], 262_144);
        let ciphertext = value["crypto"]["ciphertext"].as_str().unwrap();
        let flipped = format!("{}{}", if ciphertext.starts_with('0') { "1" } else { "0" }, &ciphertext[1..]);
        let tampered = dir.path().join("t.json");
        write_new(&tampered, text.replace(ciphertext, &flipped).as_bytes()).unwrap();
        let err = decrypt_file(&tampered, "correct horse").unwrap_err().to_string();
        assert!(err.contains("MAC mismatch"), "{err}");
    }
}
