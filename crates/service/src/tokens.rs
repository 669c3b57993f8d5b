//! Bearer tokens of agents (`sgt_…`) and operators (`sgo_…`): random, shown once, stored as
//! SHA-256.

use sha2::{Digest, Sha256};

/// A new random agent token (`sgt_` and 64 hex digits).
pub fn new_token() -> Result<String, getrandom::Error> {
    random_token("sgt_")
}

/// A new random operator token (`sgo_` and 64 hex digits), for the admin API.
pub fn new_operator_token() -> Result<String, getrandom::Error> {
    random_token("sgo_")
}

fn random_token(prefix: &str) -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes)?;
    Ok(format!("{prefix}{}", hex::encode(bytes)))
}

/// The stored form of a token.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}
