//! spendguard on Solana, through solana-client (agave 3.1): keypair files (plain or encrypted),
//! SOL and SPL Token transfers signed locally (creating the recipient's associated token account
//! when needed), balances, outcomes, and the watcher's view: the transactions involving a
//! wallet, by signature, and what left it in each.
//!
//! # Layout
//! - [`client`]: [`SolanaClient`], the [`spendguard_chain::ChainClient`] for Solana chains.
//! - [`keypair`]: Solana CLI keypair files and their encrypted form.
//! - [`price`]: Pyth `PriceUpdateV2` accounts, decoded for [`SolanaClient`]'s `read_price`.
//! - `transactions`: what a `getTransaction` answer says left and came into the watched
//!   wallets (outflows, fees, inflows with balances).
//! - `testing` (feature `test-utils`): mints, minting and transfers outside spendguard, for tests.
//!
//! Nothing solana-typed leaves this crate: addresses and signatures cross as base58 strings,
//! amounts as decimals.

pub mod client;
pub mod keypair;
pub mod price;
#[cfg(feature = "test-utils")]
pub mod testing;
mod transactions;

pub use client::{SolanaClient, SolanaSettings};
pub use solana_keypair::Keypair;

/// The base58 address of a keypair.
pub fn keypair_address(keypair: &Keypair) -> String {
    use solana_signer::Signer as _;
    keypair.pubkey().to_string()
}
