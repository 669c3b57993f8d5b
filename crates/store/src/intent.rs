//! The intent hash: what a decision pays, bound when it is decided. Approval checks the stored
//! decision still hashes to it; signing checks that what is about to reach the chain does.

use rust_decimal::Decimal;
use sha2::{Digest, Sha256};

/// Everything about a spend that reaches the chain (sender, chain, token, decimals, recipient,
/// amount), plus who asked and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    /// Agent.
    pub agent: String,
    /// Wallet id.
    pub wallet: String,
    /// The wallet's address: the sender on chain.
    pub from_address: String,
    /// Chain id.
    pub chain: String,
    /// Asset `chain:SYMBOL`.
    pub asset: String,
    /// Token contract or mint; `None` for the native coin.
    pub token: Option<String>,
    /// The asset's decimals: with the amount, the base units sent.
    pub decimals: u32,
    /// Canonical recipient.
    pub recipient: String,
    /// Amount in asset units.
    pub amount: Decimal,
    /// Operation.
    pub operation: Option<String>,
    /// Memo.
    pub memo: Option<String>,
}

/// Tells this hash apart from the first version, which bound fewer fields.
const VERSION: &str = "spendguard-intent-v2";

impl Intent {
    /// SHA-256 over the decision id and every field, each length-prefixed so that no two
    /// intents share an encoding; hex.
    pub fn hash(&self, decision_id: &str) -> String {
        let decimals = self.decimals.to_string();
        let amount = self.amount.normalize().to_string();
        let mut h = Sha256::new();
        for part in [
            VERSION,
            decision_id,
            &self.agent,
            &self.wallet,
            &self.from_address,
            &self.chain,
            &self.asset,
            self.token.as_deref().unwrap_or(""),
            &decimals,
            &self.recipient,
            &amount,
            self.operation.as_deref().unwrap_or(""),
            self.memo.as_deref().unwrap_or(""),
        ] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        hex::encode(h.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent() -> Intent {
        Intent {
            agent: "bot".into(),
            wallet: "hot".into(),
            from_address: "0xf39f".into(),
            chain: "eth".into(),
            asset: "eth:USDC".into(),
            token: Some("0x5fbd".into()),
            decimals: 6,
            recipient: "0xa0ee".into(),
            amount: Decimal::new(125, 2),
            operation: None,
            memo: None,
        }
    }

    #[test]
    fn every_field_that_reaches_the_chain_changes_the_hash() {
        let base = intent().hash("dec_1");
        assert_eq!(base.len(), 64);
        assert_eq!(Intent { amount: Decimal::new(1250, 3), ..intent() }.hash("dec_1"), base, "1.25 = 1.250");
        let changed = [
            Intent { from_address: "0x0000".into(), ..intent() },
            Intent { token: Some("0xevil".into()), ..intent() },
            Intent { token: None, ..intent() },
            Intent { decimals: 18, ..intent() },
            Intent { recipient: "0xevil".into(), ..intent() },
            Intent { amount: Decimal::new(126, 2), ..intent() },
            Intent { chain: "base".into(), ..intent() },
            Intent { memo: Some("x".into()), ..intent() },
        ];
        for other in changed {
            assert_ne!(other.hash("dec_1"), base, "{other:?}");
        }
        assert_ne!(intent().hash("dec_2"), base);
    }
}
