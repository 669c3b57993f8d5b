//! A real anvil node on 127.0.0.1, started per test and killed when dropped.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// anvil's well-known dev keys (never fund these anywhere real), by account index.
pub const DEV_KEYS: [&str; 10] = [
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
    "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
    "0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e",
    "0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356",
    "0xdbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97",
    "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6",
];

/// A running anvil.
pub struct Anvil {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The flags it was started with, besides host and port.
    args: Vec<String>,
}

impl Anvil {
    /// Starts anvil on a free port (`--block-time` seconds per block, or mine on demand).
    /// Panics with an install hint when anvil is missing: these tests never skip.
    pub fn start(block_time: Option<u32>) -> Anvil {
        let args = block_time.map(|t| vec!["--block-time".to_string(), t.to_string()]).unwrap_or_default();
        Anvil::start_with(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// Starts anvil on a free port with more flags (e.g. `--timestamp`, which makes its genesis
    /// block the same on every start).
    pub fn start_with(args: &[&str]) -> Anvil {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let (child, url) = spawn(0, &args);
        Anvil { child, url, args }
    }

    /// Kills this anvil and starts a new, empty one with `args` on the same port: the node
    /// "restarted as a new chain" (a new `--timestamp` gives it another genesis block; the
    /// same one, the same).
    pub fn restart_empty(&mut self, args: &[&str]) {
        self.args = args.iter().map(|a| a.to_string()).collect();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let port: u16 = self.url.rsplit(':').next().and_then(|p| p.parse().ok()).expect("anvil port");
        let (child, url) = spawn(port, &self.args);
        assert_eq!(url, self.url, "anvil came back on another address");
        self.child = child;
    }
}

/// Starts anvil on 127.0.0.1:`port` (0: a free one); returns it and its URL.
fn spawn(port: u16, args: &[String]) -> (Child, String) {
    let bin = anvil_binary();
    let mut cmd = Command::new(&bin);
    cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap_or_else(|e| {
        panic!(
            "cannot start anvil ({}): {e}. Install it with `tools/dev/test.sh` (npm install @foundry-rs/anvil@1.7.1 \
             into ~/.cache/spendguard-deps/node) or set SPENDGUARD_ANVIL to its path",
            bin.display()
        )
    });
    let stdout = child.stdout.take().expect("anvil stdout");
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(addr) = line.trim().strip_prefix("Listening on ") {
                    break format!("http://{}", addr.trim());
                }
            }
            _ => panic!("anvil exited before listening"),
        }
    };
    // Keep draining its output so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, url)
}

/// Where anvil is: `$SPENDGUARD_ANVIL`, the platform binary in the dependency cache
/// `tools/dev/test.sh` installs into, or `anvil` on the PATH. (Not `node_modules/.bin/anvil`:
/// that is a Node wrapper, and killing it would leave the real node running.)
fn anvil_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("SPENDGUARD_ANVIL") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("SPENDGUARD_DEPS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/spendguard-deps")));
    let platform_binary = cache.and_then(|c| {
        std::fs::read_dir(c.join("node/node_modules/@foundry-rs")).ok()?.flatten().find_map(|e| {
            let bin = e.path().join("bin/anvil");
            (e.file_name().to_string_lossy().starts_with("anvil-") && bin.exists()).then_some(bin)
        })
    });
    platform_binary.unwrap_or_else(|| PathBuf::from("anvil"))
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
