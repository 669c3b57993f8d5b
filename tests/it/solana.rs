//! Guarded spending on a real Solana JSON-RPC (surfpool, in-process) beside a real anvil: SOL
//! spends signed and sent by spendguard, and an agent's limit pooled across both chains.

use serde_json::json;
use spendguard_core::SpendStatus;
use spendguard_tests::evm_org::*;
use spendguard_tests::mcp_client::McpAgent;
use spendguard_tests::surfnet::Surfnet;

/// A recipient with no account yet.
const SOL_PAYEE: &str = "4Nd1mBQtrMJVYVfKf2PJy9NZUZdTAsp7D4xWLs4gDB4T";

/// The EVM org plus a Solana cluster with the wallet `sol-hot` (100 SOL, priced at $100), which
/// `saver` (100 USD a day across all its wallets) may use.
async fn two_chain_org() -> (EvmOrg, Surfnet, spendguard_config::Config) {
    let org = EvmOrg::start("").await;
    let keypair = spendguard_solana::Keypair::new();
    let address = spendguard_solana::keypair_address(&keypair);
    let keypair_path = org.dir.path().join("sol-hot.json");
    spendguard_solana::keypair::write_keypair(&keypair_path, &keypair).unwrap();
    let surfnet = tokio::task::spawn_blocking({
        let address = address.clone();
        move || Surfnet::start(&[address], 100_000_000_000)
    })
    .await
    .unwrap();
    let solana = format!(
        r#"[[chain]]
id = "sol-local"
kind = "solana"
rpc = ["{url}"]
commitment = "confirmed"

[[asset]]
chain = "sol-local"
symbol = "SOL"
decimals = 9
price_usd = "100"

[[wallet]]
id = "sol-hot"
chain = "sol-local"
address = "{address}"
keypair = "{keypair}"

[[department]]"#,
        url = surfnet.url,
        keypair = keypair_path.display()
    );
    let config = org.variant(
        "two-chains",
        &[
            ("[[department]]", &solana),
            (
                "id = \"saver\"\ndepartment = \"ops\"\nwallets = [\"hot\", \"cold\"]",
                "id = \"saver\"\ndepartment = \"ops\"\nwallets = [\"hot\", \"cold\", \"sol-hot\"]",
            ),
        ],
    );
    (org, surfnet, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sol_spends_land_once_and_limits_pool_across_evm_and_solana() {
    let (org, _surfnet, config) = two_chain_org().await;
    let guard = org.guard_for(config, vec![]);
    let agent = McpAgent::connect(guard.clone(), "saver").await;

    // $20 of SOL: signed and sent by spendguard, confirmed with its fee.
    let paid =
        agent.call("spend", json!({ "wallet": "sol-hot", "to": SOL_PAYEE, "amount": "0.2", "asset": "SOL" })).await;
    assert_eq!(paid.data["status"], "executed", "{}", paid.text);
    let id = paid.data["decision_id"].as_str().unwrap().to_string();
    let mut record = guard.ledger().decision(&id).unwrap().unwrap();
    for _ in 0..100 {
        guard.tick().await.unwrap();
        record = guard.ledger().decision(&id).unwrap().unwrap();
        if record.status == SpendStatus::Confirmed {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(record.status, SpendStatus::Confirmed, "{record:?}");
    assert_eq!(record.fee_paid, Some("0.000005".parse().unwrap()), "{record:?}");
    let balance = agent.call("balance", json!({ "wallet": "sol-hot" })).await;
    let sol = &balance.data["wallets"][0]["balances"];
    assert_eq!(sol[0]["amount"], "99.799995", "{}", balance.text);

    // $70 of TUSD on EVM: the day's budget is now $90 of $100, pooled across both chains.
    let evm = agent.call("spend", json!({ "wallet": "cold", "to": PAYEE, "amount": "70", "asset": "TUSD" })).await;
    assert_eq!(evm.data["status"], "executed", "{}", evm.text);
    let denied =
        agent.call("spend", json!({ "wallet": "sol-hot", "to": SOL_PAYEE, "amount": "0.2", "asset": "SOL" })).await;
    assert!(denied.is_error && denied.text.starts_with("WINDOW_LIMIT"), "{}", denied.text);
    let fits =
        agent.call("spend", json!({ "wallet": "sol-hot", "to": SOL_PAYEE, "amount": "0.1", "asset": "SOL" })).await;
    assert_eq!(fits.data["status"], "executed", "{}", fits.text);
}
