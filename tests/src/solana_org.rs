//! The EVM organisation plus a Solana cluster (surfpool in-process, behind an [`RpcProxy`] that
//! injects faults on demand), with a wallet holding SOL, a configured SPL token and one spendguard
//! does not know.

use crate::evm_org::{EvmOrg, BUYER_TIERS};
use crate::rpc_proxy::{Faults, RpcProxy};
use crate::surfnet::Surfnet;
use spendguard_solana::testing;
use spendguard_solana::Keypair;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// A Solana address with no account yet.
pub const SOL_PAYEE: &str = "4Nd1mBQtrMJVYVfKf2PJy9NZUZdTAsp7D4xWLs4gDB4T";
/// Lamports each funded keypair starts with (100 SOL).
pub const START_LAMPORTS: u64 = 100_000_000_000;
/// USDS base units `sol-hot` starts with (10,000 USDS, 6 decimals).
pub const START_USDS: u64 = 10_000_000_000;

/// `pooler`'s 100 USD a day across both chains.
const POOLER_DAILY: &str = r#"
[[policy]]
id = "pooler-daily"
scope = "agent:pooler"
limits = [ { window = "24h", max_usd = "100" } ]
"#;

/// The two-chain organisation.
pub struct SolanaOrg {
    /// The EVM half (anvil, TUSD, wallets `hot` and `cold`).
    pub evm: EvmOrg,
    /// The Solana node.
    pub surfnet: Surfnet,
    /// What the config's `sol-local` RPC URL points at: a proxy to the surfnet.
    pub proxy: RpcProxy,
    /// `sol-hot`'s key (also in `sol-hot.json`).
    pub keypair: Keypair,
    /// `sol-hot`'s address.
    pub address: String,
    /// Pays for and owns the mints; registered nowhere.
    pub treasury: Keypair,
    /// Mint of USDS, configured as `sol-local:USDS` (6 decimals, 1 USD).
    pub usds: String,
    /// A mint `sol-hot` holds that no `[[asset]]` names.
    pub junk: String,
    /// The two-chain config file.
    pub config_path: PathBuf,
    /// MCP bearer token of each agent (the EVM org's plus `sol-buyer` and `pooler`).
    pub tokens: HashMap<String, String>,
}

impl SolanaOrg {
    /// Starts anvil and a surfnet; funds `sol-hot` with 100 SOL, 10,000 USDS and 1,000 JUNK;
    /// writes the config with `chain_extra` added to the `sol-local` chain table (e.g.
    /// `missing_after = "1s"`).
    pub async fn start(chain_extra: &str) -> SolanaOrg {
        let mut evm = EvmOrg::start("").await;
        let keypair = Keypair::new();
        let treasury = Keypair::new();
        let address = spendguard_solana::keypair_address(&keypair);
        let keypair_path = evm.dir.path().join("sol-hot.json");
        spendguard_solana::keypair::write_keypair(&keypair_path, &keypair).expect("write keypair");
        let surfnet = tokio::task::spawn_blocking({
            let funded = [address.clone(), spendguard_solana::keypair_address(&treasury)];
            move || Surfnet::start(&funded, START_LAMPORTS)
        })
        .await
        .expect("surfnet");
        let usds = testing::create_mint(&surfnet.url, &treasury, 6).await.expect("create USDS");
        let junk = testing::create_mint(&surfnet.url, &treasury, 0).await.expect("create JUNK");
        testing::mint_to(&surfnet.url, &treasury, &usds, &address, START_USDS).await.expect("mint USDS");
        testing::mint_to(&surfnet.url, &treasury, &junk, &address, 1_000).await.expect("mint JUNK");
        let proxy = RpcProxy::start(&surfnet.url, Faults::default()).await;
        // `sol-buyer` gets `buyer`'s tiers: INSTANT ≤ 10, NOTIFY ≤ 100, DELAY ≤ 1000 after 2 s,
        // APPROVAL above.
        let sol_buyer_tiers =
            BUYER_TIERS.replace("\"buyer\"", "\"sol-buyer\"").replace("agent:buyer", "agent:sol-buyer");
        let solana = format!(
            r#"[[chain]]
id = "sol-local"
kind = "solana"
rpc = ["{url}"]
commitment = "confirmed"
{chain_extra}

[[asset]]
chain = "sol-local"
symbol = "SOL"
decimals = 9
price_usd = "100"

[[asset]]
chain = "sol-local"
symbol = "USDS"
mint = "{usds}"
decimals = 6
price_usd = "1"

[[wallet]]
id = "sol-hot"
chain = "sol-local"
address = "{address}"
keypair = "{keypair}"

[[agent]]
id = "sol-buyer"
department = "ops"
wallets = ["sol-hot"]

[[agent]]
id = "pooler"
department = "ops"
wallets = ["hot", "cold", "sol-hot"]

{sol_buyer_tiers}
{POOLER_DAILY}

[[department]]"#,
            url = proxy.url,
            keypair = keypair_path.display()
        );
        let config = evm.variant(
            "two-chains",
            &[
                ("[[department]]", &solana),
                (
                    "id = \"saver\"\ndepartment = \"ops\"\nwallets = [\"hot\", \"cold\"]",
                    "id = \"saver\"\ndepartment = \"ops\"\nwallets = [\"hot\", \"cold\", \"sol-hot\"]",
                ),
            ],
        );
        let config_path = config.path.clone();
        evm.tokens.extend(crate::evm_org::issue_tokens(config, &["sol-buyer", "pooler"]).await);
        let tokens = evm.tokens.clone();
        SolanaOrg { evm, surfnet, proxy, keypair, address, treasury, usds, junk, config_path, tokens }
    }

    /// The loaded two-chain config.
    pub fn config(&self) -> spendguard_config::Config {
        spendguard_config::load(&self.config_path).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Another config beside the two-chain one, written as `name.toml` with each `(from, to)`
    /// edit applied to its text (e.g. another database or RPC URL).
    pub fn variant(&self, name: &str, edits: &[(&str, &str)]) -> spendguard_config::Config {
        crate::evm_org::write_variant(&self.config_path, name, edits)
    }

    /// A node in this process on the two-chain config (a new one is a restart).
    pub async fn node(&self) -> Arc<crate::node::TestNode> {
        self.evm.node_for(self.config(), vec![]).await
    }

    /// A node delivering alerts to `alerts`.
    pub async fn node_with_alerts(&self, alerts: Vec<spendguard_service::AlertChannel>) -> Arc<crate::node::TestNode> {
        self.evm.node_for(self.config(), alerts).await
    }

    /// SOL lamports of `address`, read from the node directly.
    pub async fn lamports(&self, address: &str) -> u64 {
        let answer = spendguard_evm::testing::rpc_call(&self.surfnet.url, "getBalance", serde_json::json!([address]))
            .await
            .expect("getBalance");
        answer["value"].as_u64().expect("lamports")
    }
}
