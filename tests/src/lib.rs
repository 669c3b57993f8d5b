//! Shared harness of spendguard's end-to-end tests: an organisation built from TOML, an
//! in-memory ledger for engine tests, organisations on real chains ([`evm_org`],
//! [`solana_org`]), nodes built as the daemon builds them ([`node`]), the checked `spendguard`
//! binary ([`binary`]), MCP clients, and helpers for times, amounts and waiting.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

pub mod alert_receiver;
pub mod anvil;
pub mod binary;
pub mod clock;
pub mod evm_org;
pub mod mcp_client;
pub mod node;
pub mod postgres;
pub mod python;
pub mod rpc_proxy;
pub mod solana_org;
pub mod stdio_agent;
pub mod surfnet;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use spendguard_core::usage::{EntryState, LedgerEntry, UsageIndex};
use spendguard_core::{evaluate, Balances, Context, Evaluation, Freeze, Model, ReasonCode, SpendRequest};
use std::path::{Path, PathBuf};

/// This crate's directory, as `cargo test` says at run time: a test binary reused from a shared
/// target dir may have been built by a checkout elsewhere, whose path `env!` would keep.
pub fn manifest_dir() -> PathBuf {
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()))
}

/// What end-to-end tests use all the time: the ledger's traits (to read it), event kinds,
/// statuses and classes.
pub mod prelude {
    pub use spendguard_core::reconcile::Class;
    pub use spendguard_core::{EventKind, SpendStatus};
    pub use spendguard_store::{
        AuditStore, CredentialStore, DecisionStore, FreezeStore, OutboxStore, OutflowStore, ReportStore, SigningStore,
    };
}

/// Waits until `done` holds, checking every 100 ms; fails the test naming `what` after
/// `deadline`.
pub async fn wait_until(what: &str, deadline: std::time::Duration, mut done: impl AsyncFnMut() -> bool) {
    let give_up = std::time::Instant::now() + deadline;
    loop {
        if done().await {
            return;
        }
        assert!(std::time::Instant::now() < give_up, "timed out after {deadline:?} waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A running `spendguard serve` or `watch`, killed when dropped: a test that fails mid-way must not leave
/// a daemon behind (it would hold the test run's output open and keep spending).
pub struct Daemon(Option<std::process::Child>);

impl From<std::process::Child> for Daemon {
    fn from(child: std::process::Child) -> Daemon {
        Daemon(Some(child))
    }
}

impl std::ops::Deref for Daemon {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        self.0.as_ref().expect("the daemon was stopped")
    }
}

impl std::ops::DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        self.0.as_mut().expect("the daemon was stopped")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A running `spendguard watch`: the lines it prints (findings) and the chains it has reported
/// caught up.
pub struct Watching {
    /// The process.
    pub child: Daemon,
    /// Its standard output, a line at a time.
    pub lines: std::sync::mpsc::Receiver<String>,
    caught_up: std::sync::mpsc::Receiver<String>,
}

impl Watching {
    /// Starts `spendguard watch` on `config`.
    pub fn start(config: &Path) -> Watching {
        use std::io::BufRead;
        let mut child = std::process::Command::new(binary::spendguard())
            .arg("--config")
            .arg(config)
            .arg("watch")
            .env("SPENDGUARD_LOG", "error")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start spendguard watch");
        let (line_tx, lines) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = line_tx.send(line);
            }
        });
        let (up_tx, caught_up) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some((chain, _)) = line.split_once(": caught up") {
                    let _ = up_tx.send(chain.to_string());
                }
            }
        });
        Watching { child: Daemon::from(child), lines, caught_up }
    }

    /// Waits (at most a minute) until the watcher reports `chain` caught up with its final head:
    /// it is running, and what happens next is new to it.
    pub fn caught_up(&self, chain: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.caught_up.recv_timeout(left) {
                Ok(c) if c == chain => return,
                Ok(_) => {}
                Err(_) => panic!("spendguard watch never reported {chain} caught up"),
            }
        }
    }

    /// The first line printed that contains `needle`, waiting at most `deadline`.
    pub fn line_with(&self, needle: &str, deadline: std::time::Duration) -> String {
        let give_up = std::time::Instant::now() + deadline;
        loop {
            let left = give_up.saturating_duration_since(std::time::Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("spendguard watch printed no line with {needle}"));
            if line.contains(needle) {
                return line;
            }
        }
    }
}

/// Waits for `child` to exit, collecting what it wrote to its piped stdout and stderr; a child
/// still running after `deadline` is killed and the test fails naming `what`.
pub fn finish(mut child: std::process::Child, what: &str, deadline: std::time::Duration) -> std::process::Output {
    use std::io::Read;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = vec![];
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let status = wait_exit(&mut child, what, deadline);
    std::process::Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// Waits for `child` to exit; kills it and fails the test naming `what` after `deadline`.
pub fn wait_exit(
    child: &mut std::process::Child,
    what: &str,
    deadline: std::time::Duration,
) -> std::process::ExitStatus {
    let give_up = std::time::Instant::now() + deadline;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status,
            Ok(None) if std::time::Instant::now() < give_up => std::thread::sleep(std::time::Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what} (pid {}) did not finish within {deadline:?}", child.id());
            }
        }
    }
}

/// Outflows without the moment each was recorded, to compare what two watchers indexed.
pub fn timeless(outflows: Vec<spendguard_store::RecordedOutflow>) -> Vec<spendguard_store::RecordedOutflow> {
    outflows.into_iter().map(|o| spendguard_store::RecordedOutflow { seen_at: None, ..o }).collect()
}

/// The test ERC-20's compiled bytecode (fixtures/evm), built into the binary.
pub const TEST_TOKEN_BIN: &str = include_str!("../../fixtures/evm/TestToken.bin");
/// Creation bytecode of `fixtures/evm/TestFeeToken.sol` (a token taking an unlogged 1 % fee);
/// its constructor takes `(uint256 supply)`.
pub const TEST_FEE_TOKEN_BIN: &str = include_str!("../../fixtures/evm/TestFeeToken.bin");
/// Creation bytecode of `fixtures/evm/TestDrainer.sol` (what an EIP-7702 phishing kit delegates to).
pub const TEST_DRAINER_BIN: &str = include_str!("../../fixtures/evm/TestDrainer.bin");
/// Creation bytecode of `fixtures/evm/TestEip3009Token.sol` (USDC-like: EIP-3009 under the
/// domain "USD Coin" / "2"); constructor `(uint256 supply)`.
pub const TEST_EIP3009_TOKEN_BIN: &str = include_str!("../../fixtures/evm/TestEip3009Token.bin");
/// Creation bytecode of `fixtures/evm/TestBatchSettler.sol` (settles several EIP-3009
/// authorizations in one transaction); no constructor arguments.
pub const TEST_BATCH_SETTLER_BIN: &str = include_str!("../../fixtures/evm/TestBatchSettler.bin");
/// Creation bytecode of `fixtures/evm/TestPriceFeed.sol` (a Chainlink-interface feed a test sets).
pub const TEST_PRICE_FEED_BIN: &str = include_str!("../../fixtures/evm/TestPriceFeed.bin");

/// The organisation every engine test starts from: two chains, four assets, three agents in two
/// departments, three wallets, two merchants. Tests append their `[[policy]]` tables.
pub const BASE_ORG: &str = r#"
[server]
database = "test.db"
timezone = "UTC"

[org]
id = "acme"

[[chain]]
id = "eth"
kind = "evm"
chain_id = 31337
rpc = ["http://127.0.0.1:8545"]

[[chain]]
id = "sol"
kind = "solana"
rpc = ["http://127.0.0.1:8899"]

[[asset]]
chain = "eth"
symbol = "ETH"
decimals = 18
price_usd = "3000"

[[asset]]
chain = "eth"
symbol = "USDC"
contract = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
decimals = 6
price_usd = "1"

[[asset]]
chain = "sol"
symbol = "SOL"
decimals = 9
price_usd = "150"

[[asset]]
chain = "sol"
symbol = "USDC"
mint = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"
decimals = 6
price_usd = "1"

[[department]]
id = "eng"

[[department]]
id = "ops"

[[wallet]]
id = "eth-hot"
chain = "eth"
address = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"

[[wallet]]
id = "eth-cold"
chain = "eth"
address = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"

[[wallet]]
id = "sol-hot"
chain = "sol"
address = "9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM"

[[agent]]
id = "alice"
department = "eng"
wallets = ["eth-hot", "sol-hot"]

[[agent]]
id = "bob"
department = "eng"
wallets = ["eth-hot"]

[[agent]]
id = "carol"
department = "ops"
wallets = ["eth-cold"]

[[merchant]]
id = "github"
category = "saas"
addresses = ["eth:0x70997970C51812dc3A010C7d01b50e0d17dc79C8"]

[[merchant]]
id = "casino"
category = "gambling"
addresses = ["eth:0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"]

[[operator]]
id = "ops@acme.example"
roles = ["approver"]

# Every spend must be bounded by some limit (else it is denied NO_POLICY): a per-transaction
# ceiling over the whole organisation, far above anything the tests spend, bounds them all
# without adding a headroom entry of its own.
[[policy]]
id = "ceiling"
scope = "org"
per_tx_usd = "1000000000"
"#;

/// An EVM recipient that is no known merchant.
pub const PLAIN_EVM: &str = "0xa0Ee7A142d267C1f36714E4a8F75612F20a79720";
/// GitHub's address (merchant `github`, category `saas`).
pub const GITHUB: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
/// The casino's address (merchant `casino`, category `gambling`).
pub const CASINO: &str = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC";
/// A Solana recipient that is no known merchant.
pub const PLAIN_SOL: &str = "4Nd1mBQtrMJVYVfKf2PJy9NZUZdTAsp7D4xWLs4gDB4T";

/// Builds the model of [`BASE_ORG`] plus `extra` TOML; panics with the config error if invalid.
pub fn model(extra: &str) -> Model {
    config(extra).model
}

/// Builds the whole config of [`BASE_ORG`] plus `extra`.
pub fn config(extra: &str) -> spendguard_config::Config {
    let text = format!("{BASE_ORG}\n{extra}");
    spendguard_config::parse(&text, Path::new("test.toml")).unwrap_or_else(|e| panic!("test config invalid:\n{e}"))
}

/// Writes [`BASE_ORG`] plus `extra` into `dir/spendguard.toml` and returns the path.
pub fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("spendguard.toml");
    std::fs::write(&path, format!("{BASE_ORG}\n{extra}")).expect("write config");
    path
}

/// Parses an RFC 3339 instant.
pub fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).expect("RFC 3339").with_timezone(&Utc)
}

/// Parses a decimal.
pub fn dec(text: &str) -> Decimal {
    spendguard_core::money::parse_decimal(text).expect("decimal")
}

/// A request builder with defaults: agent alice, wallet eth-hot, a plain recipient, USDC.
pub fn request(agent: &str, wallet: &str, to: &str, amount: &str, asset: Option<&str>, when: &str) -> SpendRequest {
    SpendRequest {
        agent: agent.into(),
        wallet: wallet.into(),
        to: to.into(),
        amount: dec(amount),
        asset: asset.map(str::to_string),
        operation: None,
        at: at(when),
        domain: None,
    }
}

/// The engine over an in-memory ledger: what the store does, minus SQLite.
pub struct Sandbox {
    /// The organisation.
    pub model: Model,
    /// Spend so far.
    pub index: UsageIndex,
    /// Frozen scopes.
    pub freezes: Vec<Freeze>,
    /// Balances handed to the engine.
    pub balances: Balances,
    /// Price readings handed to the engine (live-priced assets only).
    pub prices: spendguard_core::price::Prices,
    next_seq: i64,
}

impl Sandbox {
    /// A sandbox over [`BASE_ORG`] plus `extra`.
    pub fn new(extra: &str) -> Sandbox {
        Sandbox {
            model: model(extra),
            index: UsageIndex::new(),
            freezes: vec![],
            balances: Balances::default(),
            prices: Default::default(),
            next_seq: 1,
        }
    }

    /// Evaluates without recording.
    pub fn evaluate(&self, req: &SpendRequest) -> Evaluation {
        let ctx =
            Context { usage: &self.index, freezes: &self.freezes, balances: &self.balances, prices: &self.prices };
        evaluate(&self.model, req, &ctx)
    }

    /// Evaluates and, when allowed, records the spend as executed.
    pub fn spend(&mut self, req: &SpendRequest) -> Evaluation {
        self.record(req, EntryState::Spent)
    }

    /// Evaluates and, when allowed, records the spend as a reservation.
    pub fn reserve(&mut self, req: &SpendRequest) -> Evaluation {
        self.record(req, EntryState::Reserved)
    }

    fn record(&mut self, req: &SpendRequest, state: EntryState) -> Evaluation {
        let e = self.evaluate(req);
        if let (true, Some(spend)) = (e.is_allowed(), &e.spend) {
            self.index.upsert(LedgerEntry {
                seq: self.next_seq,
                at: req.at,
                agent: req.agent.clone(),
                department: spend.department.clone(),
                wallet: req.wallet.clone(),
                asset: spend.asset.clone(),
                operation: req.operation.clone(),
                amount: req.amount,
                usd: spend.usd().unwrap_or_default(),
                state,
            });
            self.next_seq += 1;
        }
        e
    }
}

/// The denial codes of an evaluation, in order.
pub fn denials(e: &Evaluation) -> Vec<ReasonCode> {
    e.reasons.iter().map(|r| r.code).filter(|c| c.denies()).collect()
}
