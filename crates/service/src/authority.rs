//! [`Authority`]: spendguard's signing key for authorizations of external wallets' spends.
//! A token is a JWS in compact form (RFC 7515) with `alg: EdDSA` (RFC 8037, Ed25519) over JWT
//! claims (RFC 7519): the decision (`jti`), the agent (`sub`), the expiry (`exp`), the intent
//! hash the decision bound, and the transfer it allows — so any JOSE library verifies it
//! offline with the public key `spendguard authority pubkey` prints.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// What an authorization token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationClaims {
    /// Issuer: `spendguard:<org>`.
    pub iss: String,
    /// The agent it was issued to.
    pub sub: String,
    /// The decision it carries out.
    pub jti: String,
    /// Issued at (seconds since the Unix epoch).
    pub iat: i64,
    /// Expires at (seconds since the Unix epoch).
    pub exp: i64,
    /// The decision's intent hash (SHA-256, hex) over everything the transfer puts on chain.
    pub intent_hash: String,
    /// Chain id in the configuration.
    pub chain: String,
    /// The wallet's address: who pays.
    pub from: String,
    /// Recipient.
    pub to: String,
    /// Asset `chain:SYMBOL`.
    pub asset: String,
    /// Token contract or mint; absent for the native coin.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub token: Option<String>,
    /// Amount in asset units, a decimal string.
    pub amount: String,
}

/// Why a token is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts, or not JSON where JSON belongs.
    #[error("not a spendguard authorization token: {0}")]
    Malformed(String),
    /// Another algorithm or key.
    #[error("signed with another key or algorithm ({0})")]
    ForeignKey(String),
    /// The signature does not verify.
    #[error("the signature does not verify")]
    BadSignature,
}

/// The authorization signing key.
pub struct Authority {
    key: SigningKey,
    key_id: String,
}

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): what precedes the 32 key bytes.
const SPKI_ED25519_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

impl Authority {
    /// The authority of a 32-byte Ed25519 seed.
    pub fn from_seed(seed: &[u8; 32]) -> Authority {
        let key = SigningKey::from_bytes(seed);
        let digest = Sha256::digest(key.verifying_key().as_bytes());
        let key_id = format!("sg-{}", hex::encode(&digest[..8]));
        Authority { key, key_id }
    }

    /// A new random authority key; its seed is what the key file keeps.
    pub fn generate() -> Result<(Authority, Zeroizing<[u8; 32]>), getrandom::Error> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::getrandom(seed.as_mut())?;
        Ok((Authority::from_seed(&seed), seed))
    }

    /// Names the key in the tokens' header (`kid`): the first 8 bytes of the public key's
    /// SHA-256.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// The public key as a PEM SubjectPublicKeyInfo (`-----BEGIN PUBLIC KEY-----`).
    pub fn public_key_pem(&self) -> String {
        use base64::engine::general_purpose::STANDARD;
        let mut der = SPKI_ED25519_PREFIX.to_vec();
        der.extend_from_slice(self.verifying_key().as_bytes());
        format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", STANDARD.encode(der))
    }

    /// The public key as a JWK (RFC 8037).
    pub fn public_jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(self.verifying_key().as_bytes()),
            "kid": self.key_id,
            "alg": "EdDSA",
            "use": "sig",
        })
    }

    fn header(&self) -> serde_json::Value {
        serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": self.key_id})
    }

    /// Signs `claims`: a JWS compact token.
    pub fn issue(&self, claims: &AuthorizationClaims) -> String {
        // Serialising these types cannot fail: plain strings and integers.
        let header = URL_SAFE_NO_PAD.encode(self.header().to_string());
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        let signing_input = format!("{header}.{payload}");
        let signature = self.key.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }

    /// Checks that `token` was signed by this key and reads its claims. Expiry is not judged
    /// here: whoever asks decides what an expired authorization means.
    pub fn verify(&self, token: &str) -> Result<AuthorizationClaims, TokenError> {
        let malformed = |why: &str| TokenError::Malformed(why.to_string());
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed("a JWS compact token has three dot-separated parts"));
        };
        let decode = |part: &str, what: &str| {
            URL_SAFE_NO_PAD.decode(part).map_err(|_| TokenError::Malformed(format!("its {what} is not base64url")))
        };
        let header: serde_json::Value =
            serde_json::from_slice(&decode(header, "header")?).map_err(|_| malformed("its header is not JSON"))?;
        if header["alg"] != "EdDSA" || header["kid"] != self.key_id.as_str() {
            return Err(TokenError::ForeignKey(format!("alg {}, kid {}", header["alg"], header["kid"])));
        }
        let signature = Signature::from_slice(&decode(signature, "signature")?)
            .map_err(|_| malformed("its signature is not 64 bytes"))?;
        let signing_input = &token[..token.rfind('.').unwrap_or(0)];
        self.verifying_key().verify(signing_input.as_bytes(), &signature).map_err(|_| TokenError::BadSignature)?;
        serde_json::from_slice(&decode(payload, "payload")?)
            .map_err(|e| TokenError::Malformed(format!("its claims are not an authorization: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> AuthorizationClaims {
        AuthorizationClaims {
            iss: "spendguard:acme".into(),
            sub: "bot".into(),
            jti: "dec_1".into(),
            iat: 1_700_000_000,
            exp: 1_700_000_900,
            intent_hash: "ab".repeat(32),
            chain: "eth".into(),
            from: "0xf39f".into(),
            to: "0xa0ee".into(),
            asset: "eth:ETH".into(),
            token: None,
            amount: "0.5".into(),
        }
    }

    #[test]
    fn a_token_verifies_with_its_key_only_and_any_change_breaks_it() {
        let a = Authority::from_seed(&[7; 32]);
        let token = a.issue(&claims());
        assert_eq!(a.verify(&token), Ok(claims()));
        assert!(matches!(Authority::from_seed(&[8; 32]).verify(&token), Err(TokenError::ForeignKey(_))));
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        let mut forged = claims();
        forged.amount = "5".into();
        parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        assert_eq!(a.verify(&parts.join(".")), Err(TokenError::BadSignature));
        assert!(matches!(a.verify("abc"), Err(TokenError::Malformed(_))));
        assert!(matches!(a.verify("a.b.c"), Err(TokenError::Malformed(_))));
        assert!(a.public_key_pem().starts_with("-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA"));
    }
}
