//! Reconciliation: what left a wallet on chain, held against what spendguard approved.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// What kind of value left the wallet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutflowKind {
    /// The chain's native coin sent as value.
    Native,
    /// A token transfer (ERC-20 `Transfer` log, SPL transfer).
    Token,
    /// The fee of a transaction the wallet sent (paid even when it failed).
    Fee,
    /// An EIP-7702 authorization signed by the wallet's key, in any sender's type-4
    /// transaction: the wallet's code now runs the recipient's (the delegate). Nothing left
    /// yet (amount 0), but the delegate's code can move everything the wallet holds.
    Delegation,
}

impl OutflowKind {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            OutflowKind::Native => "native",
            OutflowKind::Token => "token",
            OutflowKind::Fee => "fee",
            OutflowKind::Delegation => "delegation",
        }
    }

    /// Parses [`OutflowKind::as_str`].
    pub fn parse(text: &str) -> Option<OutflowKind> {
        [OutflowKind::Native, OutflowKind::Token, OutflowKind::Fee, OutflowKind::Delegation]
            .into_iter()
            .find(|k| k.as_str() == text)
    }
}

impl std::fmt::Display for OutflowKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the watcher of a signature-indexed chain (Solana) stands for one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalletCursor {
    /// The newest transaction indexed for the account; `None` after a rollback unwound it,
    /// when every transaction above `slot` is listed again.
    pub signature: Option<String>,
    /// Its slot; after a rollback, the slot below the first one unwound.
    pub slot: u64,
}

/// One outflow seen on chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outflow {
    /// Chain id.
    pub chain: String,
    /// Block (slot) number.
    pub block: u64,
    /// Transaction hash (signature).
    pub tx_hash: String,
    /// Position within the transaction (log index for tokens; 0 for native and fee).
    pub index: u64,
    /// What left.
    pub kind: OutflowKind,
    /// Wallet id it left.
    pub wallet: String,
    /// Recipient (canonical), or the fee's payee (none) for fees.
    pub recipient: Option<String>,
    /// Asset key `chain:SYMBOL` when it is a configured asset.
    pub asset: Option<String>,
    /// Token contract or mint for tokens (configured or not).
    pub token: Option<String>,
    /// Amount in asset units (configured assets) or base units (unknown tokens).
    pub amount: Decimal,
    /// A token transfer made by an EIP-3009 authorization: the nonce of the
    /// `AuthorizationUsed(authorizer, nonce)` log paired with its `Transfer` (hex), which says
    /// which signed authorization (an x402 payment) moved it.
    pub authorization_nonce: Option<String>,
}

/// Money that came into a registered wallet: a treasury movement in the books.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inflow {
    /// Chain id.
    pub chain: String,
    /// Block (slot) number.
    pub block: u64,
    /// Transaction hash (signature).
    pub tx_hash: String,
    /// Position within the transaction (log index for tokens, call order for internal calls).
    pub index: u64,
    /// Native coin or token.
    pub kind: OutflowKind,
    /// Wallet id it came into.
    pub wallet: String,
    /// Who sent it (canonical).
    pub sender: String,
    /// Asset key `chain:SYMBOL` when it is a configured asset.
    pub asset: Option<String>,
    /// Token contract or mint for tokens (configured or not).
    pub token: Option<String>,
    /// Amount in asset units (configured assets) or base units (unknown tokens).
    pub amount: Decimal,
    /// The wallet's balance of the asset at the end of the block before.
    pub balance_before: Option<Decimal>,
    /// Its balance at the end of the block the inflow landed in.
    pub balance_after: Option<Decimal>,
}

/// Is an inflow from `sender` one the wallet expects? Only from its `refill_from` addresses:
/// money from anyone else is reported (`unexpected_inflow`), never frozen.
pub fn expected_inflow(sender: &str, refill_from: &[String]) -> bool {
    refill_from.iter().any(|r| r == sender)
}

/// Balance conservation for one wallet and asset over a range of indexed blocks: the balance
/// read at the range's end must be the balance at the previous checkpoint minus the outflows
/// (fees included) plus the inflows recorded in between. Anything else moved money no
/// transaction field, log or trace showed (a fee-on-transfer token, a rebasing one, code
/// running as the wallet on a node without traces…).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceCheck {
    /// Chain id.
    pub chain: String,
    /// Wallet id.
    pub wallet: String,
    /// Asset key.
    pub asset: String,
    /// The checkpoint's block.
    pub from_block: u64,
    /// The block the balance was read at.
    pub to_block: u64,
    /// Balance at the checkpoint.
    pub checkpoint: Decimal,
    /// Outflows recorded in `(from_block, to_block]`.
    pub outflows: Decimal,
    /// Inflows recorded in `(from_block, to_block]`.
    pub inflows: Decimal,
    /// Balance read at `to_block`.
    pub actual: Decimal,
}

impl BalanceCheck {
    /// What the balance should be.
    pub fn expected(&self) -> Decimal {
        self.checkpoint - self.outflows + self.inflows
    }

    /// Does the balance add up?
    pub fn holds(&self) -> bool {
        self.actual == self.expected()
    }

    /// Words for the alert and the freeze's evidence: both balances and the range.
    pub fn evidence(&self) -> String {
        format!(
            "{} balance of wallet {} at block {} is {}, expected {} (balance {} at block {}, minus outflows {},              plus inflows {}); difference {} on {}",
            self.asset,
            self.wallet,
            self.to_block,
            self.actual.normalize(),
            self.expected().normalize(),
            self.checkpoint.normalize(),
            self.from_block,
            self.outflows.normalize(),
            self.inflows.normalize(),
            (self.actual - self.expected()).normalize(),
            self.chain
        )
    }
}

/// What a decision approved, as the reconciler compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approved {
    /// Decision id.
    pub decision_id: String,
    /// Asset key.
    pub asset: String,
    /// Canonical recipient.
    pub recipient: String,
    /// Amount in asset units.
    pub amount: Decimal,
    /// Most the fee may cost, in native units.
    pub fee_cap: Option<Decimal>,
}

/// Reconciliation classes (shared/ARCHITECTURE.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// Matches its decision exactly.
    Matched,
    /// Matches, but the fee was above the recorded cap.
    FeeOverCap,
    /// The transaction belongs to a decision, but what landed differs.
    Mismatch,
    /// No decision behind it.
    Unexplained,
}

impl Class {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Matched => "matched",
            Class::FeeOverCap => "fee_over_cap",
            Class::Mismatch => "mismatch",
            Class::Unexplained => "unexplained",
        }
    }

    /// Parses [`Class::as_str`].
    pub fn parse(text: &str) -> Option<Class> {
        [Class::Matched, Class::FeeOverCap, Class::Mismatch, Class::Unexplained]
            .into_iter()
            .find(|c| c.as_str() == text)
    }

    /// Does this class trip the kill switch?
    pub fn trips_kill_switch(self) -> bool {
        matches!(self, Class::Mismatch | Class::Unexplained)
    }
}

impl std::fmt::Display for Class {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one outflow reconciled, and what the kill switch did about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The outflow.
    pub outflow: Outflow,
    /// Its class.
    pub class: Class,
    /// The decision its transaction belongs to.
    pub decision_id: Option<String>,
    /// Scopes frozen because of it.
    pub frozen: Vec<crate::model::Scope>,
}

/// Classifies an outflow against the decision its transaction belongs to, if any. A delegation
/// is never a decision's: see [`classify_delegation`].
pub fn classify(outflow: &Outflow, approved: Option<&Approved>) -> Class {
    let Some(a) = approved else { return Class::Unexplained };
    match outflow.kind {
        OutflowKind::Delegation => Class::Unexplained,
        OutflowKind::Fee => match a.fee_cap {
            Some(cap) if outflow.amount > cap => Class::FeeOverCap,
            _ => Class::Matched,
        },
        OutflowKind::Native | OutflowKind::Token => {
            let same = outflow.asset.as_deref() == Some(a.asset.as_str())
                && outflow.recipient.as_deref() == Some(a.recipient.as_str())
                && outflow.amount == a.amount;
            if same {
                Class::Matched
            } else {
                Class::Mismatch
            }
        }
    }
}

/// An authorization of an external wallet's spend, still waiting for the agent's payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenAuthorization {
    /// Decision id.
    pub decision_id: String,
    /// Asset key.
    pub asset: String,
    /// Canonical recipient.
    pub recipient: String,
    /// Amount in asset units.
    pub amount: Decimal,
}

/// Holds a transfer out of an external wallet against the wallet's open authorizations,
/// oldest first (`open` in that order): the first one of the same asset, recipient and exact
/// amount is matched; otherwise the first one of the same asset and recipient, or else of the
/// same asset and amount, is what the agent got wrong (a mismatch); with none of those the
/// transfer is unexplained. Returns the class and the index of the authorization it consumes.
/// Fees are not held here: a fee belongs to whatever its transaction's transfer matched.
pub fn match_authorization(outflow: &Outflow, open: &[OpenAuthorization]) -> (Class, Option<usize>) {
    let Some(asset) = outflow.asset.as_deref() else { return (Class::Unexplained, None) };
    let recipient = outflow.recipient.as_deref();
    let first = |pred: &dyn Fn(&OpenAuthorization) -> bool| open.iter().position(|a| a.asset == asset && pred(a));
    let to_recipient = |a: &OpenAuthorization| Some(a.recipient.as_str()) == recipient;
    if let Some(i) = first(&|a| to_recipient(a) && a.amount == outflow.amount) {
        return (Class::Matched, Some(i));
    }
    if let Some(i) = first(&to_recipient).or_else(|| first(&|a| a.amount == outflow.amount)) {
        return (Class::Mismatch, Some(i));
    }
    (Class::Unexplained, None)
}

/// Classifies an EIP-7702 delegation of a wallet's code: to one of the wallet's allowed
/// `delegates`, or back to no code at all (the zero address), it is matched; to anything else
/// it is unexplained — the drain of phishing kits starts with exactly this signature.
pub fn classify_delegation(delegate: Option<&str>, allowed: &[String]) -> Class {
    match delegate {
        Some(d) if d == "0x0000000000000000000000000000000000000000" || allowed.iter().any(|a| a == d) => {
            Class::Matched
        }
        _ => Class::Unexplained,
    }
}

/// An amount as people read it: `250 eth-local:USDC`, or the base units of an unknown token.
pub fn describe_amount(amount: Decimal, asset: Option<&str>, token: Option<&str>) -> String {
    match (asset, token) {
        (Some(asset), _) => format!("{} {asset}", amount.normalize()),
        (None, Some(token)) => format!("{} base units of unknown token {token}", amount.normalize()),
        (None, None) => amount.normalize().to_string(),
    }
}

/// Words for an alert and for the freeze's evidence.
pub fn evidence(o: &Outflow) -> String {
    if o.kind == OutflowKind::Delegation {
        let to = o.recipient.as_deref().unwrap_or("?");
        return format!(
            "EIP-7702 delegation of wallet {}'s code to {to} in tx {} at block {} on {}",
            o.wallet, o.tx_hash, o.block, o.chain
        );
    }
    let what = describe_amount(o.amount, o.asset.as_deref(), o.token.as_deref());
    let to = o.recipient.as_deref().map(|r| format!(" to {r}")).unwrap_or_default();
    format!("{} {what}{to} in tx {} at block {} on {}", o.kind.as_str(), o.tx_hash, o.block, o.chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outflow(kind: OutflowKind, amount: i64) -> Outflow {
        Outflow {
            chain: "eth".into(),
            block: 7,
            tx_hash: "0xabc".into(),
            index: 0,
            kind,
            wallet: "hot".into(),
            recipient: (kind != OutflowKind::Fee).then(|| "0xr".to_string()),
            asset: Some("eth:ETH".into()),
            token: None,
            amount: Decimal::from(amount),
            authorization_nonce: None,
        }
    }

    #[test]
    fn a_delegation_is_matched_only_to_an_allowed_delegate_or_to_no_code() {
        let allowed = vec!["0x1111111111111111111111111111111111111111".to_string()];
        assert_eq!(classify_delegation(Some(&allowed[0]), &allowed), Class::Matched);
        assert_eq!(classify_delegation(Some("0x0000000000000000000000000000000000000000"), &[]), Class::Matched);
        assert_eq!(
            classify_delegation(Some("0x2222222222222222222222222222222222222222"), &allowed),
            Class::Unexplained
        );
        assert_eq!(classify_delegation(None, &allowed), Class::Unexplained);
        let mut d = outflow(OutflowKind::Delegation, 0);
        assert_eq!(classify(&d, None), Class::Unexplained, "no decision ever approves a delegation");
        d.recipient = Some("0xdrainer".into());
        assert!(evidence(&d).starts_with("EIP-7702 delegation of wallet hot's code to 0xdrainer in tx 0xabc"));
    }

    #[test]
    fn an_external_transfer_consumes_the_oldest_exact_authorization_else_is_a_mismatch_or_unexplained() {
        let auth = |id: &str, asset: &str, to: &str, amount: i64| OpenAuthorization {
            decision_id: id.into(),
            asset: asset.into(),
            recipient: to.into(),
            amount: Decimal::from(amount),
        };
        let open = vec![
            auth("usdc", "eth:USDC", "0xr", 5),
            auth("old", "eth:ETH", "0xr", 5),
            auth("new", "eth:ETH", "0xr", 5),
            auth("other", "eth:ETH", "0xq", 7),
        ];
        assert_eq!(match_authorization(&outflow(OutflowKind::Native, 5), &open), (Class::Matched, Some(1)));
        assert_eq!(match_authorization(&outflow(OutflowKind::Native, 6), &open), (Class::Mismatch, Some(1)));
        let mut elsewhere = outflow(OutflowKind::Native, 7);
        elsewhere.recipient = Some("0xevil".into());
        assert_eq!(match_authorization(&elsewhere, &open), (Class::Mismatch, Some(3)), "same amount, other payee");
        elsewhere.amount = Decimal::from(9);
        assert_eq!(match_authorization(&elsewhere, &open), (Class::Unexplained, None));
        assert_eq!(match_authorization(&outflow(OutflowKind::Native, 5), &[]), (Class::Unexplained, None));
        let mut unknown_token = outflow(OutflowKind::Token, 5);
        unknown_token.asset = None;
        assert_eq!(match_authorization(&unknown_token, &open), (Class::Unexplained, None));
    }

    #[test]
    fn classes() {
        let a = Approved {
            decision_id: "d".into(),
            asset: "eth:ETH".into(),
            recipient: "0xr".into(),
            amount: Decimal::from(5),
            fee_cap: Some(Decimal::from(1)),
        };
        assert_eq!(classify(&outflow(OutflowKind::Native, 5), Some(&a)), Class::Matched);
        assert_eq!(classify(&outflow(OutflowKind::Native, 6), Some(&a)), Class::Mismatch);
        assert_eq!(classify(&outflow(OutflowKind::Native, 5), None), Class::Unexplained);
        assert_eq!(classify(&outflow(OutflowKind::Fee, 1), Some(&a)), Class::Matched);
        assert_eq!(classify(&outflow(OutflowKind::Fee, 2), Some(&a)), Class::FeeOverCap);
        assert_eq!(classify(&outflow(OutflowKind::Fee, 2), None), Class::Unexplained);
        let mut other_recipient = outflow(OutflowKind::Native, 5);
        other_recipient.recipient = Some("0xevil".into());
        assert_eq!(classify(&other_recipient, Some(&a)), Class::Mismatch);
        assert!(Class::Unexplained.trips_kill_switch() && !Class::FeeOverCap.trips_kill_switch());
        assert_eq!(evidence(&outflow(OutflowKind::Native, 5)), "native 5 eth:ETH to 0xr in tx 0xabc at block 7 on eth");
    }
}
