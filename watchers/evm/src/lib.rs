//! spendguard on EVM chains, through alloy: Web3 Secret Storage keystores, EIP-1559 native and
//! ERC-20 transfers signed locally under a fee cap, balances and receipts.
//!
//! # Layout
//! - [`keystore`]: read and write keystores (scrypt n = 2^18).
//! - [`client`]: [`EvmClient`], the [`spendguard_chain::ChainClient`] for EVM chains.
//! - [`units`]: exact decimal ↔ base-unit conversion.
//! - `traces`: ether moved out of a watched wallet by code running as it (internal calls, e.g.
//!   EIP-7702 delegated code), from `debug_traceBlockByHash` call traces where the node offers
//!   them.
//! - `price`: Chainlink `AggregatorV3Interface` feeds, read for [`EvmClient`]'s
//!   `read_price`.
//!
//! Nothing alloy-typed leaves this crate: addresses, hashes and amounts cross as strings and
//! decimals.

pub mod client;
pub mod keystore;
mod price;
mod traces;
pub mod units;

#[cfg(feature = "test-utils")]
pub mod testing;

pub use client::{EvmClient, EvmSettings};

/// Re-exported so callers can hold keys without naming alloy.
pub type EvmSigner = alloy::signers::local::PrivateKeySigner;

/// The canonical (lower-case, `0x`) address of a key.
pub fn signer_address(signer: &EvmSigner) -> String {
    format!("{:#x}", signer.address())
}
