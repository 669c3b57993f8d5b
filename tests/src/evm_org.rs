//! An organisation on a real anvil: a deployed ERC-20, two funded wallets with keystores, agents
//! with MCP tokens, and a config file — the fixture of every EVM end-to-end test.

use crate::anvil::{Anvil, DEV_KEYS};
use crate::node::TestNode;
pub use crate::Daemon;
use spendguard_evm::testing;
use spendguard_node::KeyRing;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Keystore passwords, passed to servers through these environment variables.
pub const PASSWORD_ENVS: [(&str, &str); 2] = [("HOT_PASSWORD", "hot secret"), ("COLD_PASSWORD", "cold secret")];

/// Wallet `hot` (anvil account 1) and `cold` (account 2).
pub const HOT: &str = "0x70997970c51812dc3a010c7d01b50e0d17dc79c8";
/// Wallet `cold`.
pub const COLD: &str = "0x3c44cdddb6a900fa2b585dd299e03d12fa4293bc";
/// Recipients with no merchant (anvil accounts 8 and 9).
pub const PAYEE: &str = "0x23618e81e3f5cdf7f54c3d65f7fbc0abf5b21e8f";
/// A second payee.
pub const PAYEE2: &str = "0xa0ee7a142d267c1f36714e4a8f75612f20a79720";

/// Issues a token for each of `agents` through the credentials service of a node without keys;
/// returns them by agent.
pub async fn issue_tokens(config: spendguard_config::Config, agents: &[&str]) -> HashMap<String, String> {
    let node = spendguard_node::build(config, spendguard_node::Keys::Locked).await.expect("node");
    let mut tokens = HashMap::new();
    for agent in agents {
        let token = node.services.credentials.issue_agent_token(agent, "test").await.expect("token");
        tokens.insert(agent.to_string(), token);
    }
    tokens
}

/// Writing a keystore at n = 2^18 takes a second, so the two are written once into a shared
/// directory and reused (each written under a private name, then renamed into place).
pub fn keystores() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join("spendguard-test-keystores-v1");
        std::fs::create_dir_all(&dir).expect("keystore dir");
        for (name, key, (_, password)) in
            [("hot", DEV_KEYS[1], PASSWORD_ENVS[0]), ("cold", DEV_KEYS[2], PASSWORD_ENVS[1])]
        {
            let path = dir.join(format!("{name}.json"));
            if !path.exists() {
                let private = dir.join(format!("{name}.{}.json", std::process::id()));
                let _ = std::fs::remove_file(&private);
                let secret = spendguard_evm::keystore::parse_secret(key).expect("dev key");
                spendguard_evm::keystore::write_keystore(&private, &secret, password).expect("write keystore");
                std::fs::rename(&private, &path).expect("move keystore into place");
            }
        }
        dir
    })
}

/// Writes `name.toml` beside `base` with each `(from, to)` edit applied once to its text, and
/// loads it.
pub fn write_variant(base: &Path, name: &str, edits: &[(&str, &str)]) -> spendguard_config::Config {
    let mut text = std::fs::read_to_string(base).expect("config");
    for (from, to) in edits {
        assert!(text.contains(from), "{from:?} not in the config");
        text = text.replacen(from, to, 1);
    }
    let path = base.with_file_name(format!("{name}.toml"));
    std::fs::write(&path, text).expect("write config");
    spendguard_config::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

/// The organisation: its node, token, config file and agent tokens.
pub struct EvmOrg {
    /// Holds the config, database and keystore copies.
    pub dir: tempfile::TempDir,
    /// The node.
    pub anvil: Anvil,
    /// The config file.
    pub config_path: PathBuf,
    /// Address of the TUSD token (6 decimals, 1 USD).
    pub token: String,
    /// MCP bearer token of each agent.
    pub tokens: HashMap<String, String>,
}

/// Agents `buyer` (wallets hot and cold), `saver` (hot and cold, 100 USD a day), `other` and
/// `retired` (cold only), and the policies given.
pub fn org_toml(rpc: &str, token: &str, dir: &Path, policies: &str) -> String {
    format!(
        r#"
[server]
database = "spendguard.db"
listen = "127.0.0.1:0"
# A daemon killed by a test hands its chain over to another process within 3 s.
watcher_lease = "3s"

[org]
id = "e2e"

[[chain]]
id = "eth-local"
kind = "evm"
chain_id = 31337
rpc = ["{rpc}"]
confirmations = 1
max_fee_per_gas_gwei = "100"

[[asset]]
chain = "eth-local"
symbol = "ETH"
decimals = 18
price_usd = "3000"

[[asset]]
chain = "eth-local"
symbol = "TUSD"
contract = "{token}"
decimals = 6
price_usd = "1"

[[department]]
id = "ops"

[[wallet]]
id = "hot"
chain = "eth-local"
address = "{HOT}"
keystore = "{hot}"
password_env = "HOT_PASSWORD"

[[wallet]]
id = "cold"
chain = "eth-local"
address = "{COLD}"
keystore = "{cold}"
password_env = "COLD_PASSWORD"

[[agent]]
id = "buyer"
department = "ops"
wallets = ["hot", "cold"]

[[agent]]
id = "saver"
department = "ops"
wallets = ["hot", "cold"]

[[agent]]
id = "other"
department = "ops"
wallets = ["cold"]

[[agent]]
id = "retired"
department = "ops"
wallets = ["cold"]

[[operator]]
id = "ops@e2e.example"
roles = ["approver", "admin"]

[[policy]]
id = "saver-daily"
scope = "agent:saver"
limits = [ {{ window = "24h", max_usd = "100" }} ]

# Every agent is bounded by some limit (spendguard denies what no limit covers: NO_POLICY).
[[policy]]
id = "e2e-ceiling"
scope = "org"
limits = [ {{ window = "day", max_usd = "100000000" }} ]

{policies}
"#,
        hot = dir.join("hot.json").display(),
        cold = dir.join("cold.json").display(),
    )
}

/// The tiers used by most tests: INSTANT ≤ 10, NOTIFY ≤ 100, DELAY ≤ 1000 (2 s), APPROVAL above.
pub const BUYER_TIERS: &str = r#"
[[policy]]
id = "buyer"
scope = "agent:buyer"
limits = [ { window = "24h", max_usd = "100000" } ]
  [policy.tiers]
  instant_max_usd = "10"
  notify_max_usd = "100"
  delay_max_usd = "1000"
  delay = "2s"
  approver_role = "approver"
  approval_ttl = "1h"
"#;

impl EvmOrg {
    /// Starts anvil, deploys TUSD, funds both wallets with 100,000 TUSD, writes the config with
    /// `policies` and issues a token per agent.
    pub async fn start(policies: &str) -> EvmOrg {
        EvmOrg::start_on(Anvil::start(None), policies).await
    }

    /// [`EvmOrg::start`] on a given anvil.
    pub async fn start_on(anvil: Anvil, policies: &str) -> EvmOrg {
        let bytecode = crate::TEST_TOKEN_BIN;
        let token =
            testing::deploy_token(&anvil.url, DEV_KEYS[0], bytecode, "Test USD", "TUSD", 10_000_000 * 1_000_000)
                .await
                .expect("deploy TUSD");
        for wallet in [HOT, COLD] {
            testing::send_token(&anvil.url, DEV_KEYS[0], &token, wallet, 100_000 * 1_000_000).await.expect("fund TUSD");
        }
        let dir = tempfile::tempdir().expect("temp dir");
        for name in ["hot.json", "cold.json"] {
            std::fs::copy(keystores().join(name), dir.path().join(name)).expect("copy keystore");
        }
        let config_path = dir.path().join("spendguard.toml");
        std::fs::write(&config_path, org_toml(&anvil.url, &token, dir.path(), policies)).expect("write config");
        let config = spendguard_config::load(&config_path).unwrap_or_else(|e| panic!("{e}"));
        let tokens = issue_tokens(config, &["buyer", "saver", "other", "retired"]).await;
        EvmOrg { dir, anvil, config_path, token, tokens }
    }

    /// Rewrites part of the config file (e.g. the fee cap) before servers are started.
    pub fn edit_config(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(&self.config_path).expect("config");
        assert!(text.contains(from), "{from:?} not in the config");
        std::fs::write(&self.config_path, text.replace(from, to)).expect("write config");
    }

    /// The loaded config.
    pub fn config(&self) -> spendguard_config::Config {
        spendguard_config::load(&self.config_path).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A node in this process, with the wallets' keys given (no keystore to unlock).
    pub async fn node(&self) -> Arc<TestNode> {
        self.node_with_alerts(vec![]).await
    }

    /// [`EvmOrg::node`], delivering alerts to `alerts`.
    pub async fn node_with_alerts(&self, alerts: Vec<spendguard_service::AlertChannel>) -> Arc<TestNode> {
        self.node_for(self.config(), alerts).await
    }

    /// A second config beside the first, written as `name.toml` with each `(from, to)` edit
    /// applied to the first's text (e.g. another database or RPC list).
    pub fn variant(&self, name: &str, edits: &[(&str, &str)]) -> spendguard_config::Config {
        write_variant(&self.config_path, name, edits)
    }

    /// A [`EvmOrg::variant`] whose chain is reached through `urls` (proxies, in failover order)
    /// instead of anvil directly, with `chain_lines` (e.g. `rpc_timeout = "1s"`) added to the
    /// chain's table.
    pub fn via_rpc(&self, name: &str, urls: &[&str], chain_lines: &str) -> spendguard_config::Config {
        let rpc = format!("rpc = [\"{}\"]", self.anvil.url);
        let list = urls.iter().map(|u| format!("\"{u}\"")).collect::<Vec<_>>().join(", ");
        self.variant(name, &[(&rpc, &format!("rpc = [{list}]\n{chain_lines}"))])
    }

    /// A node in this process for `config` (this org's, or a [`EvmOrg::variant`]): the keys of
    /// `hot` and `cold`, and of every plain Solana keypair file the config names.
    pub async fn node_for(
        &self,
        config: spendguard_config::Config,
        alerts: Vec<spendguard_service::AlertChannel>,
    ) -> Arc<TestNode> {
        let keys = EvmOrg::keys_for(&config);
        TestNode::build(config, keys, alerts).await
    }

    /// A node in this process for this org's config whose services read the time from `clock`.
    pub async fn node_with_clock(&self, clock: Arc<dyn spendguard_service::Clock>) -> Arc<TestNode> {
        self.node_for_with_clock(self.config(), clock).await
    }

    /// [`EvmOrg::node_for`] whose services read the time from `clock`, without alert channels.
    pub async fn node_for_with_clock(
        &self,
        config: spendguard_config::Config,
        clock: Arc<dyn spendguard_service::Clock>,
    ) -> Arc<TestNode> {
        let keys = EvmOrg::keys_for(&config);
        TestNode::build_with_clock(config, keys, clock).await
    }

    /// The keys of `hot` and `cold`, and of every plain Solana keypair file `config` names.
    fn keys_for(config: &spendguard_config::Config) -> KeyRing {
        let mut keys = KeyRing::default();
        for key in [DEV_KEYS[1], DEV_KEYS[2]] {
            keys.add_evm("eth-local", key.trim_start_matches("0x").parse().expect("dev key"));
        }
        for wallet in &config.model.wallets {
            if let Some(path) = config.wallet_keys(&wallet.id).and_then(|k| k.keypair.clone()) {
                let keypair = spendguard_solana::keypair::read_keypair(&path, None).expect("keypair");
                keys.add_solana(&wallet.chain, keypair);
            }
        }
        keys
    }

    /// The `spendguard` binary built next to this test binary, from these sources.
    pub fn binary() -> PathBuf {
        crate::binary::spendguard()
    }

    /// Starts `spendguard serve` on a free port; returns the process and its `/mcp` URL.
    pub fn start_daemon(&self) -> (Daemon, String) {
        self.start_daemon_for(&self.config_path, &[])
    }

    /// [`EvmOrg::start_daemon`] on another config (e.g. a variant), with `extra_env` beside the
    /// keystore passwords.
    pub fn start_daemon_for(&self, config: &Path, extra_env: &[(&str, &str)]) -> (Daemon, String) {
        self.spawn_daemon(config, extra_env, std::process::Stdio::inherit())
    }

    /// [`EvmOrg::start_daemon`], its log (at `level`, as `SPENDGUARD_LOG` takes it) written to
    /// the file `log`.
    pub fn start_daemon_logging_to(&self, log: &Path, level: &str) -> (Daemon, String) {
        let file = std::fs::File::create(log).expect("log file");
        self.spawn_daemon(&self.config_path, &[("SPENDGUARD_LOG", level)], file.into())
    }

    fn spawn_daemon(&self, config: &Path, extra_env: &[(&str, &str)], stderr: std::process::Stdio) -> (Daemon, String) {
        use std::io::BufRead;
        let mut child = std::process::Command::new(EvmOrg::binary())
            .arg("--config")
            .arg(config)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .envs(self.server_env())
            .envs(extra_env.iter().copied())
            .stdout(std::process::Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start spendguard serve");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("listening line");
        let url = line
            .trim()
            .strip_prefix("spendguard listening on ")
            .unwrap_or_else(|| panic!("unexpected: {line}"))
            .to_string();
        (Daemon(Some(child)), url)
    }

    /// Stops a daemon with SIGTERM; true when it exited cleanly. One still running a minute
    /// later is killed, and the test fails.
    pub fn stop_daemon(mut daemon: Daemon) -> bool {
        let Some(mut child) = daemon.0.take() else { return false };
        let _ = std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        crate::wait_exit(&mut child, "spendguard after SIGTERM", Duration::from_secs(60)).success()
    }

    /// Mines one block on the node.
    pub async fn mine(&self) {
        testing::rpc_call(&self.anvil.url, "evm_mine", serde_json::json!([])).await.expect("evm_mine");
    }

    /// How many transactions `address` has sent: its nonce at the latest block.
    pub async fn nonce(&self, address: &str) -> u64 {
        let n = testing::rpc_call(&self.anvil.url, "eth_getTransactionCount", serde_json::json!([address, "latest"]))
            .await
            .expect("eth_getTransactionCount");
        u64::from_str_radix(n.as_str().expect("hex").trim_start_matches("0x"), 16).expect("number")
    }

    /// TUSD base units held by `owner`, read from the chain.
    pub async fn token_balance(&self, owner: &str) -> u128 {
        self.token_balance_of(&self.token, owner).await
    }

    /// `owner`'s balance of the ERC-20 at `token`, in base units.
    pub async fn token_balance_of(&self, token: &str, owner: &str) -> u128 {
        let out = testing::rpc_call(
            &self.anvil.url,
            "eth_call",
            serde_json::json!([{ "to": token, "data": format!("0x70a08231000000000000000000000000{}", &owner[2..]) }, "latest"]),
        )
        .await
        .expect("balanceOf");
        u128::from_str_radix(out.as_str().expect("hex").trim_start_matches("0x"), 16).expect("number")
    }

    /// Environment for a server process: keystore passwords.
    pub fn server_env(&self) -> Vec<(String, String)> {
        PASSWORD_ENVS.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }
}
