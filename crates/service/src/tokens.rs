//! Agent bearer tokens: random, shown once, stored as SHA-256.

use sha2::{Digest, Sha256};

/// A new random token (`sgt_` and 64 hex digits).
pub fn new_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes)?;
    Ok(format!("sgt_{}", hex::encode(bytes)))
}

/// The stored form of a token.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}
