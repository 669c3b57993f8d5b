//! Chain addresses: each chain family's format, its canonical form, and its burn address.
//!
//! [`ChainKind::normalize_address`] is what every recipient goes through before any rule sees
//! it: EVM addresses are lower-cased (a mixed-case one must carry a valid EIP-55 checksum),
//! Solana addresses must be base58 for 32 bytes.

use crate::model::ChainKind;

impl ChainKind {
    /// Checks an address's format and returns its canonical form (EVM: lower-case hex). An EVM
    /// address in mixed case must carry a valid EIP-55 checksum: a typo in one character would
    /// otherwise send money to an address nobody holds. All lower or all upper case carries no
    /// checksum and is taken as written.
    pub fn normalize_address(self, address: &str) -> Result<String, AddressError> {
        match self {
            ChainKind::Evm => {
                let hex = address.strip_prefix("0x").ok_or_else(|| AddressError::Evm(address.to_string()))?;
                // One pass over the bytes: all hex digits, and which letter cases occur.
                let (mut upper, mut lower) = (false, false);
                let hex_digits = hex.bytes().all(|b| {
                    upper |= b.is_ascii_uppercase();
                    lower |= b.is_ascii_lowercase();
                    b.is_ascii_hexdigit()
                });
                if hex.len() != 40 || !hex_digits {
                    return Err(AddressError::Evm(address.to_string()));
                }
                let canonical = address.to_ascii_lowercase();
                if upper && lower && !checksum_holds(hex, &canonical[2..]) {
                    return Err(AddressError::Checksum {
                        given: address.to_string(),
                        expected: format!("0x{}", eip55(&canonical[2..])),
                    });
                }
                Ok(canonical)
            }
            ChainKind::Solana => match base58_decoded_len(address) {
                Some(32) => Ok(address.to_string()),
                _ => Err(AddressError::Solana(address.to_string())),
            },
        }
    }
}

impl ChainKind {
    /// Is `canonical` (an address as [`ChainKind::normalize_address`] returns it) the chain's
    /// all-zero address, to which money is burnt?
    pub fn is_zero_address(self, canonical: &str) -> bool {
        match self {
            ChainKind::Evm => canonical == "0x0000000000000000000000000000000000000000",
            ChainKind::Solana => canonical == "11111111111111111111111111111111",
        }
    }
}

/// An EVM address (`0x` and 40 hex digits, any case) in its EIP-55 checksummed form, as
/// wallets and libraries such as web3.py insist on; anything else is returned as given.
pub fn eip55_address(address: &str) -> String {
    match address.strip_prefix("0x") {
        Some(hex) if hex.len() == 40 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            format!("0x{}", eip55(&hex.to_ascii_lowercase()))
        }
        _ => address.to_string(),
    }
}

/// Whether mixed-case `hex` is the EIP-55 form of `lower`. Agents pay the same few recipients
/// again and again, and the Keccak behind the check was a tenth of an evaluation: the answers
/// for recently seen addresses are remembered (per thread, a bounded set; pure memoisation).
fn checksum_holds(hex: &str, lower: &str) -> bool {
    use std::cell::RefCell;
    use std::collections::HashSet;
    const REMEMBERED: usize = 4096;
    thread_local! {
        static VALID: RefCell<HashSet<Box<str>>> = RefCell::new(HashSet::new());
    }
    if VALID.with_borrow(|valid| valid.contains(hex)) {
        return true;
    }
    let holds = eip55(lower) == hex;
    if holds {
        VALID.with_borrow_mut(|valid| {
            if valid.len() >= REMEMBERED {
                valid.clear();
            }
            valid.insert(hex.into());
        });
    }
    holds
}

/// The EIP-55 checksummed form of 40 lower-case hex digits: each letter upper-cased where the
/// matching nibble of the Keccak-256 of the lower-case text is 8 or more.
fn eip55(lower: &str) -> String {
    use sha3::{Digest, Keccak256};
    let hash = Keccak256::digest(lower.as_bytes());
    lower
        .chars()
        .enumerate()
        .map(|(i, c)| {
            let nibble = (hash[i / 2] >> (if i % 2 == 0 { 4 } else { 0 })) & 0x0f;
            if c.is_ascii_alphabetic() && nibble >= 8 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

/// An address that does not fit its chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Not `0x` followed by 40 hex digits.
    #[error("{0:?} is not an EVM address (0x followed by 40 hex digits)")]
    Evm(String),
    /// Mixed case whose EIP-55 checksum is wrong: probably a typo.
    #[error("{given:?} has a bad EIP-55 checksum (a mistyped character?): the checksummed form of that address is {expected}; write it so, or all in lower case")]
    Checksum {
        /// The address as given.
        given: String,
        /// The same hex digits, checksummed.
        expected: String,
    },
    /// Not a base58 string encoding 32 bytes.
    #[error("{0:?} is not a Solana address (base58 encoding of 32 bytes)")]
    Solana(String),
}

/// Length in bytes of a base58 (Bitcoin alphabet) string's decoding, or `None` if it is not base58.
fn base58_decoded_len(text: &str) -> Option<usize> {
    const ALPHABET: &[u8; 58] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    if text.is_empty() || text.len() > 64 {
        return None;
    }
    let mut bytes: Vec<u8> = Vec::with_capacity(48);
    for c in text.bytes() {
        let mut carry = ALPHABET.iter().position(|&a| a == c)? as u32;
        for b in bytes.iter_mut().rev() {
            carry += u32::from(*b) * 58;
            *b = (carry & 0xff) as u8;
            carry >>= 8;
        }
        while carry > 0 {
            bytes.insert(0, (carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    let leading_zeros = text.bytes().take_while(|&c| c == b'1').count();
    Some(leading_zeros + bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evm_addresses_are_canonicalised() {
        let a = ChainKind::Evm.normalize_address("0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266").unwrap();
        assert_eq!(a, "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266");
        // All lower or all upper case carries no checksum.
        assert!(ChainKind::Evm.normalize_address("0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266").is_ok());
        assert!(ChainKind::Evm.normalize_address("0xF39FD6E51AAD88F6F4CE6AB8827279CFFFB92266").is_ok());
        // One letter's case flipped: a bad checksum, refused with the right form.
        let err = ChainKind::Evm.normalize_address("0xF39Fd6e51aad88F6F4ce6aB8827279cffFb92266").unwrap_err();
        assert_eq!(
            err,
            AddressError::Checksum {
                given: "0xF39Fd6e51aad88F6F4ce6aB8827279cffFb92266".into(),
                expected: "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266".into()
            }
        );
        // EIP-55's own examples.
        for ok in [
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
            "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
            "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
        ] {
            assert!(ChainKind::Evm.normalize_address(ok).is_ok(), "{ok}");
        }
        assert!(ChainKind::Evm.normalize_address("0X5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed").is_err(), "0X");
        assert!(ChainKind::Evm.normalize_address("0x123").is_err());
        assert!(ChainKind::Evm.normalize_address("f39Fd6e51aad88F6F4ce6aB8827279cffFb92266").is_err());
        assert!(ChainKind::Evm.normalize_address("0xg39Fd6e51aad88F6F4ce6aB8827279cffFb92266").is_err());
    }

    #[test]
    fn solana_addresses_must_be_32_bytes_of_base58() {
        for ok in [
            "9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM",
            "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v",
            "11111111111111111111111111111111",
        ] {
            assert!(ChainKind::Solana.normalize_address(ok).is_ok(), "{ok}");
        }
        for bad in ["", "0OIl", "9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYt", "abc"] {
            assert!(ChainKind::Solana.normalize_address(bad).is_err(), "{bad}");
        }
    }
}
