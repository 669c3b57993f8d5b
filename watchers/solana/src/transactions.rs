//! Reading a `getTransaction` answer (`jsonParsed`): what left the watched wallets in it and
//! what came into them, from the transaction's own balances before and after. Pure: the client
//! (`client.rs`) fetches, this reads.

use crate::client::{units, SOL_DECIMALS};
use rust_decimal::Decimal;
use serde_json::Value;
use spendguard_chain::{ChainInflow, ChainOutflow, TxOutflows};
use spendguard_core::model::Asset;
use spendguard_core::reconcile::OutflowKind;

/// A transaction's token balances before and after it (`preTokenBalances`,
/// `postTokenBalances`), and the account keys they index.
struct TokenBalances<'a> {
    keys: &'a [&'a str],
    pre: Vec<&'a Value>,
    post: Vec<&'a Value>,
}

impl<'a> TokenBalances<'a> {
    fn of(meta: &'a Value, keys: &'a [&'a str]) -> TokenBalances<'a> {
        let list = |field: &str| -> Vec<&'a Value> { meta[field].as_array().into_iter().flatten().collect() };
        TokenBalances { keys, pre: list("preTokenBalances"), post: list("postTokenBalances") }
    }

    /// The owner of token account `account`.
    fn owner_of(&self, account: &str) -> Option<String> {
        let index = self.keys.iter().position(|k| *k == account)?;
        self.post.iter().chain(&self.pre).find(|b| b["accountIndex"] == index)?["owner"].as_str().map(str::to_string)
    }
}

/// The system transfers (`transfer`, `transferWithSeed`) among `instructions`: position,
/// source, destination and lamports.
fn system_transfers<'a>(instructions: &[&'a Value]) -> Result<Vec<(usize, &'a str, &'a str, u64)>, String> {
    let mut transfers = vec![];
    for (n, ins) in instructions.iter().enumerate() {
        let is_transfer = ins["program"] == "system"
            && matches!(ins["parsed"]["type"].as_str(), Some("transfer" | "transferWithSeed"));
        let info = &ins["parsed"]["info"];
        let (Some(source), Some(destination)) = (info["source"].as_str(), info["destination"].as_str()) else {
            continue;
        };
        if is_transfer {
            let lamports = info["lamports"].as_u64().ok_or("a system transfer without lamports")?;
            transfers.push((n, source, destination, lamports));
        }
    }
    Ok(transfers)
}

/// How the lamports of account `i` (`key`) changed beyond what the transaction's system
/// transfers explain — those it sent at the top level (its outflows) and those it received at
/// any level (its inflows): negative for what it paid besides them (the fee, rent of accounts
/// it created, lamports a program moved for it), positive for what it gained by other means
/// (rent back from a closed account).
fn lamports_unexplained(
    meta: &Value,
    i: usize,
    key: &str,
    top_level: &[&Value],
    inner: &[&Value],
    failed: bool,
) -> Result<i128, String> {
    let all: Vec<&Value> = top_level.iter().chain(inner).copied().collect();
    let (top, every) = (system_transfers(top_level)?, system_transfers(&all)?);
    let balance =
        |field: &str| meta[field][i].as_u64().ok_or_else(|| format!("{field}[{i}] is missing or not a number"));
    let (pre, post) = (balance("preBalances")?, balance("postBalances")?);
    // A failed transaction moved nothing but its fee.
    let (sent, received) = if failed {
        (0, 0)
    } else {
        let sum = |transfers: &[(usize, &str, &str, u64)], pick: &dyn Fn(&str, &str) -> bool| -> i128 {
            transfers.iter().filter(|(_, s, d, _)| s != d && pick(s, d)).map(|t| i128::from(t.3)).sum()
        };
        (sum(&top, &|s, _| s == key), sum(&every, &|_, d| d == key))
    };
    Ok(i128::from(post) - i128::from(pre) - received + sent)
}

/// The inner instructions (programs' calls) of a transaction, in order.
fn inner_instructions(meta: &Value) -> impl Iterator<Item = &Value> {
    meta["innerInstructions"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|set| set["instructions"].as_array().into_iter().flatten())
}

/// The base units of one token balance entry.
fn token_amount(entry: &Value) -> Result<u64, String> {
    let text = entry["uiTokenAmount"]["amount"].as_str().ok_or("a token balance without amount")?;
    text.parse().map_err(|e| format!("token amount {text:?}: {e}"))
}

/// The outflows of the `watched` addresses in a `getTransaction` answer (`jsonParsed`), from its
/// balances before and after:
/// - SOL: each top-level system transfer from a watched address is a native outflow to its
///   destination; whatever else its balance dropped by (the fee, rent of accounts it created for
///   others) is one fee outflow. A failed transaction moved nothing but still paid its fee.
/// - SPL: each token account a watched address owns that lost tokens is a token outflow, to the
///   owner of the account(s) its transfers went to (`None` when they went to several owners);
///   an unconfigured mint keeps its base units and no asset, which reconciliation flags.
pub(crate) fn outflows_of(tx: &Value, watched: &[String], assets: &[Asset]) -> Result<TxOutflows, String> {
    let slot = tx["slot"].as_u64().ok_or("no slot")?;
    let meta = tx.get("meta").filter(|m| !m.is_null()).ok_or("no status metadata (meta)")?;
    let message = &tx["transaction"]["message"];
    let signature = tx["transaction"]["signatures"][0].as_str().ok_or("no signature")?.to_string();
    let keys: Vec<&str> = message["accountKeys"]
        .as_array()
        .ok_or("no accountKeys (not jsonParsed?)")?
        .iter()
        .map(|k| k["pubkey"].as_str().or(k.as_str()).ok_or("an account key is not a string"))
        .collect::<Result<_, _>>()?;
    let failed = !meta["err"].is_null();
    let top_level: Vec<&Value> = message["instructions"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
    let inner: Vec<&Value> = inner_instructions(meta).collect();
    let native = assets.iter().find(|a| a.token.is_none());
    // Top-level transfers only: lamports a program moves for the wallet (rent of an account it
    // creates for a recipient) are part of what the transaction cost it, booked as its fee.
    let transfers = system_transfers(&top_level)?;
    let mut outflows = vec![];
    let mut fees = vec![];
    for (i, &key) in keys.iter().enumerate().filter(|(_, k)| watched.iter().any(|w| w == *k)) {
        if !failed {
            for &(n, _, destination, lamports) in transfers.iter().filter(|(_, s, d, _)| *s == key && s != d) {
                outflows.push(ChainOutflow {
                    tx_hash: signature.clone(),
                    index: n as u64,
                    kind: OutflowKind::Native,
                    from: key.to_string(),
                    to: Some(destination.to_string()),
                    token: None,
                    asset: native.map(Asset::key),
                    amount: units(lamports, SOL_DECIMALS),
                    authorization_nonce: None,
                });
            }
        }
        let paid = lamports_unexplained(meta, i, key, &top_level, &inner, failed)?;
        if paid < 0 {
            fees.push(ChainOutflow {
                tx_hash: signature.clone(),
                index: 0,
                kind: OutflowKind::Fee,
                from: key.to_string(),
                to: None,
                token: None,
                asset: native.map(Asset::key),
                amount: units(u64::try_from(-paid).map_err(|_| "a fee beyond u64 lamports")?, SOL_DECIMALS),
                authorization_nonce: None,
            });
        }
    }
    let tokens = TokenBalances::of(meta, &keys);
    let (pre_tokens, post_tokens) = (&tokens.pre, &tokens.post);
    let amount_of = token_amount;
    let owner_of = |account: &str| tokens.owner_of(account);
    for entry in pre_tokens {
        let Some(owner) = entry["owner"].as_str().filter(|o| watched.iter().any(|w| w == o)) else { continue };
        let index = entry["accountIndex"].as_u64().ok_or("a token balance without accountIndex")?;
        let mint = entry["mint"].as_str().ok_or("a token balance without mint")?;
        let before = amount_of(entry)?;
        // No balance after: the account was closed, its tokens gone with it.
        let after = match post_tokens.iter().find(|b| b["accountIndex"] == index) {
            Some(b) => amount_of(b)?,
            None => 0,
        };
        let Some(lost) = before.checked_sub(after).filter(|l| *l > 0) else { continue };
        let account = keys.get(index as usize).copied().ok_or_else(|| format!("accountIndex {index} out of range"))?;
        let mut recipients: Vec<String> = top_level
            .iter()
            .chain(&inner)
            .filter(|ins| ins["program"] == "spl-token")
            .filter(|ins| matches!(ins["parsed"]["type"].as_str(), Some("transfer" | "transferChecked")))
            .filter(|ins| ins["parsed"]["info"]["source"] == account)
            .filter_map(|ins| ins["parsed"]["info"]["destination"].as_str())
            .map(|destination| owner_of(destination).unwrap_or_else(|| destination.to_string()))
            .collect();
        recipients.sort();
        recipients.dedup();
        let asset = assets.iter().find(|a| a.token.as_deref() == Some(mint));
        outflows.push(ChainOutflow {
            tx_hash: signature.clone(),
            index,
            kind: OutflowKind::Token,
            from: owner.to_string(),
            to: (recipients.len() == 1).then(|| recipients.remove(0)),
            token: Some(mint.to_string()),
            asset: asset.map(Asset::key),
            amount: match asset {
                Some(a) => units(lost, a.decimals),
                None => Decimal::from(lost),
            },
            authorization_nonce: None,
        });
    }
    outflows.extend(fees);
    let inflows =
        if failed { vec![] } else { inflows_of(&signature, &keys, &top_level, &inner, meta, watched, assets)? };
    Ok(TxOutflows { slot, outflows, inflows })
}

/// The money that came into the `watched` addresses in a transaction, with each account's
/// balance before and after it (the transaction's own pre/post balances):
/// - SOL: each system transfer (top-level or inner) to a watched address from another one, from
///   its source;
/// - SPL: each token account a watched address owns that gained tokens, from the owner of the
///   account its transfer came from (the fee payer when no transfer shows one, e.g. a mint).
///
/// A token transfer into a wallet's existing token account does not name the wallet: the
/// watcher lists the token accounts' histories too ([`spendguard_chain::ChainClient::listed_accounts`]).
fn inflows_of(
    signature: &str,
    keys: &[&str],
    top_level: &[&Value],
    inner: &[&Value],
    meta: &Value,
    watched: &[String],
    assets: &[Asset],
) -> Result<Vec<ChainInflow>, String> {
    let is_watched = |k: &str| watched.iter().any(|w| w == k);
    let native = assets.iter().find(|a| a.token.is_none());
    let lamports_of = |field: &str, i: usize| meta[field][i].as_u64().map(|l| units(l, SOL_DECIMALS));
    let mut inflows = vec![];
    let instructions: Vec<&Value> = top_level.iter().chain(inner).copied().collect();
    let transfers = system_transfers(&instructions)?;
    for &(n, source, destination, lamports) in &transfers {
        if !is_watched(destination) || source == destination {
            continue;
        }
        let i = keys.iter().position(|k| *k == destination);
        inflows.push(ChainInflow {
            tx_hash: signature.to_string(),
            index: n as u64,
            kind: OutflowKind::Native,
            from: source.to_string(),
            to: destination.to_string(),
            token: None,
            asset: native.map(Asset::key),
            amount: units(lamports, SOL_DECIMALS),
            balance_before: i.and_then(|i| lamports_of("preBalances", i)),
            balance_after: i.and_then(|i| lamports_of("postBalances", i)),
        });
    }
    // Lamports gained by other means than a system transfer — rent back from an account the
    // transaction closed, a program paying out — from the account that closed, else the fee payer.
    for (i, &key) in keys.iter().enumerate().filter(|(_, k)| is_watched(k)) {
        let gained = lamports_unexplained(meta, i, key, top_level, inner, false)?;
        if gained <= 0 {
            continue;
        }
        let closed = instructions
            .iter()
            .filter(|ins| ins["parsed"]["type"] == "closeAccount" && ins["parsed"]["info"]["destination"] == key)
            .find_map(|ins| ins["parsed"]["info"]["account"].as_str());
        inflows.push(ChainInflow {
            tx_hash: signature.to_string(),
            index: keys.len() as u64 + i as u64,
            kind: OutflowKind::Native,
            from: closed.or(keys.first().copied()).unwrap_or_default().to_string(),
            to: key.to_string(),
            token: None,
            asset: native.map(Asset::key),
            amount: units(u64::try_from(gained).map_err(|_| "a gain beyond u64 lamports")?, SOL_DECIMALS),
            balance_before: lamports_of("preBalances", i),
            balance_after: lamports_of("postBalances", i),
        });
    }
    let tokens = TokenBalances::of(meta, keys);
    let (pre_tokens, post_tokens) = (&tokens.pre, &tokens.post);
    let amount_of = token_amount;
    let owner_of = |account: &str| tokens.owner_of(account);
    for entry in post_tokens {
        let Some(owner) = entry["owner"].as_str().filter(|o| is_watched(o)) else { continue };
        let index = entry["accountIndex"].as_u64().ok_or("a token balance without accountIndex")?;
        let mint = entry["mint"].as_str().ok_or("a token balance without mint")?;
        let after = amount_of(entry)?;
        // No balance before: the account was created in this transaction.
        let before = match pre_tokens.iter().find(|b| b["accountIndex"] == index) {
            Some(b) => amount_of(b)?,
            None => 0,
        };
        let Some(gained) = after.checked_sub(before).filter(|g| *g > 0) else { continue };
        let account = keys.get(index as usize).copied().ok_or_else(|| format!("accountIndex {index} out of range"))?;
        let sender = instructions
            .iter()
            .filter(|ins| ins["program"] == "spl-token")
            .filter(|ins| matches!(ins["parsed"]["type"].as_str(), Some("transfer" | "transferChecked")))
            .filter(|ins| ins["parsed"]["info"]["destination"] == account)
            .find_map(|ins| ins["parsed"]["info"]["source"].as_str())
            .map(|source| owner_of(source).unwrap_or_else(|| source.to_string()))
            .or_else(|| keys.first().map(|k| k.to_string()))
            .unwrap_or_default();
        if sender == owner {
            continue;
        }
        let asset = assets.iter().find(|a| a.token.as_deref() == Some(mint));
        let value = |base: u64| match asset {
            Some(a) => units(base, a.decimals),
            None => Decimal::from(base),
        };
        inflows.push(ChainInflow {
            tx_hash: signature.to_string(),
            index,
            kind: OutflowKind::Token,
            from: sender,
            to: owner.to_string(),
            token: Some(mint.to_string()),
            asset: asset.map(Asset::key),
            amount: value(gained),
            balance_before: Some(value(before)),
            balance_after: Some(value(after)),
        });
    }
    Ok(inflows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sol() -> Asset {
        Asset {
            chain: "sol".into(),
            symbol: "SOL".into(),
            token: None,
            decimals: 9,
            price: spendguard_core::price::AssetPrice::fixed(Decimal::ONE),
        }
    }

    /// A `getTransaction` answer (jsonParsed) in which `payer` sends 0.5 SOL to `to`.
    fn transfer_tx(err: Value, post_payer: u64) -> Value {
        let post_to = if err.is_null() { 500_000_000u64 } else { 0 };
        json!({
            "slot": 42,
            "transaction": {
                "signatures": ["sig"],
                "message": {
                    "accountKeys": [{ "pubkey": "payer" }, { "pubkey": "to" }, { "pubkey": "11111111111111111111111111111111" }],
                    "instructions": [{ "program": "system", "parsed": { "type": "transfer",
                        "info": { "source": "payer", "destination": "to", "lamports": 500_000_000u64 } } }],
                },
            },
            "meta": { "err": err, "fee": 5000, "preBalances": [1_000_000_000u64, 0, 1], "postBalances": [post_payer, post_to, 1] },
        })
    }

    #[test]
    fn money_into_a_watched_wallet_is_an_inflow_with_its_sender_and_balances() {
        // `payer` sends 0.5 SOL to the watched `to`.
        let sol_in = outflows_of(&transfer_tx(Value::Null, 499_995_000), &["to".to_string()], &[sol()]).unwrap();
        assert!(sol_in.outflows.is_empty());
        let got: Vec<_> =
            sol_in.inflows.iter().map(|i| (i.from.as_str(), i.to.as_str(), i.amount.to_string())).collect();
        assert_eq!(got, [("payer", "to", "0.5".to_string())]);
        assert_eq!(sol_in.inflows[0].balance_before, Some(Decimal::ZERO));
        // A failed transfer brought nothing.
        let failed = outflows_of(
            &transfer_tx(json!({ "InstructionError": [0, "Custom"] }), 999_995_000),
            &["to".to_string()],
            &[sol()],
        )
        .unwrap();
        assert!(failed.inflows.is_empty());
        // `payer`'s token account (index 1) sends 7 base units to `wallet`'s (index 2).
        let tx = json!({
            "slot": 9,
            "transaction": { "signatures": ["sig"], "message": {
                "accountKeys": [{ "pubkey": "payer" }, { "pubkey": "payer-ata" }, { "pubkey": "wallet-ata" }],
                "instructions": [{ "program": "spl-token", "parsed": { "type": "transferChecked",
                    "info": { "source": "payer-ata", "destination": "wallet-ata", "mint": "MINT" } } }] } },
            "meta": { "err": null, "fee": 5000, "preBalances": [1, 1, 1], "postBalances": [1, 1, 1],
                "preTokenBalances": [
                    { "accountIndex": 1, "mint": "MINT", "owner": "payer", "uiTokenAmount": { "amount": "10" } },
                    { "accountIndex": 2, "mint": "MINT", "owner": "wallet", "uiTokenAmount": { "amount": "3" } }],
                "postTokenBalances": [
                    { "accountIndex": 1, "mint": "MINT", "owner": "payer", "uiTokenAmount": { "amount": "3" } },
                    { "accountIndex": 2, "mint": "MINT", "owner": "wallet", "uiTokenAmount": { "amount": "10" } }] },
        });
        let tokens = outflows_of(&tx, &["wallet".to_string()], &[sol()]).unwrap();
        let got: Vec<_> = tokens
            .inflows
            .iter()
            .map(|i| {
                (
                    i.from.as_str(),
                    i.amount.to_string(),
                    i.balance_before.unwrap().to_string(),
                    i.balance_after.unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(got, [("payer", "7".to_string(), "3".to_string(), "10".to_string())], "unknown mint: base units");
    }

    #[test]
    fn a_transfer_yields_its_value_and_its_fee_and_a_failed_one_only_its_fee() {
        let watched = ["payer".to_string()];
        let ok = outflows_of(&transfer_tx(Value::Null, 499_995_000), &watched, &[sol()]).unwrap();
        let got: Vec<_> = ok.outflows.iter().map(|o| (o.kind, o.to.as_deref(), o.amount.to_string())).collect();
        assert_eq!(got, [(OutflowKind::Native, Some("to"), "0.5".into()), (OutflowKind::Fee, None, "0.000005".into())]);
        assert_eq!(ok.slot, 42);
        let failed =
            outflows_of(&transfer_tx(json!({ "InstructionError": [0, "Custom"] }), 999_995_000), &watched, &[sol()])
                .unwrap();
        let got: Vec<_> = failed.outflows.iter().map(|o| (o.kind, o.amount.to_string())).collect();
        assert_eq!(got, [(OutflowKind::Fee, "0.000005".into())]);
        // Not watched: nothing.
        assert!(outflows_of(&transfer_tx(Value::Null, 499_995_000), &["to".into()], &[sol()])
            .unwrap()
            .outflows
            .is_empty());
        // Not jsonParsed, or no status: a clear error rather than a guess.
        assert!(outflows_of(&json!({ "slot": 1, "transaction": {}, "meta": null }), &watched, &[]).is_err());
    }
}
