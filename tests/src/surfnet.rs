//! A real Solana JSON-RPC server in this process: surfpool-core's "surfnet" (an SVM with the
//! SPL programs), offline, producing a slot every 50 ms, on 127.0.0.1 with free ports.

use surfpool_core::runloops::start_local_surfnet_runloop;
use surfpool_core::surfnet::locker::SurfnetSvmLocker;
use surfpool_core::surfnet::svm::{SurfnetSvm, SurfnetSvmConfig};
use surfpool_types::types::{BlockProductionMode, RpcConfig, SimnetConfig};
use surfpool_types::{SimnetEvent, SurfpoolConfig};

/// Milliseconds per slot.
pub const SLOT_MS: u64 = 50;

/// A running surfnet; it lives until the test process ends (its run loop owns a thread).
pub struct Surfnet {
    /// JSON-RPC URL.
    pub url: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

impl Surfnet {
    /// Starts a surfnet that gives each of `airdrop` (base58 addresses) `lamports`.
    pub fn start(airdrop: &[String], lamports: u64) -> Surfnet {
        let airdrop_addresses = airdrop.iter().map(|a| a.parse().expect("base58 address")).collect();
        let (bind_port, ws_port) = (free_port(), free_port());
        let config = SurfpoolConfig {
            simnets: vec![SimnetConfig {
                // Never reach out to mainnet: everything here is local.
                offline_mode: true,
                remote_rpc_url: None,
                slot_time: SLOT_MS,
                block_production_mode: BlockProductionMode::Clock,
                airdrop_addresses,
                airdrop_token_amount: lamports,
                instruction_profiling_enabled: false,
                ..SimnetConfig::default()
            }],
            rpc: RpcConfig { bind_host: "127.0.0.1".into(), bind_port, ws_port, ..RpcConfig::default() },
            ..SurfpoolConfig::default()
        };
        let (svm, events, geyser) =
            SurfnetSvm::new(SurfnetSvmConfig { slot_time: SLOT_MS, ..SurfnetSvmConfig::default() })
                .expect("surfnet SVM");
        let (commands_tx, commands_rx) = crossbeam_channel::unbounded();
        std::thread::Builder::new()
            .name("surfnet".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("surfnet runtime");
                let run =
                    start_local_surfnet_runloop(SurfnetSvmLocker::new(svm), config, commands_tx, commands_rx, geyser);
                if let Err(e) = runtime.block_on(run) {
                    eprintln!("surfnet stopped: {e}");
                }
            })
            .expect("surfnet thread");
        // Offline, it never reports `Connected` (that is about the remote cluster): `Ready`,
        // then the RPC port accepting connections.
        loop {
            match events.recv_timeout(std::time::Duration::from_secs(30)) {
                Ok(SimnetEvent::Ready(_)) => break,
                Ok(SimnetEvent::Aborted(why)) => panic!("surfnet aborted: {why}"),
                Ok(_) => {}
                Err(e) => panic!("surfnet did not start within 30 s: {e}"),
            }
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", bind_port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "surfnet's RPC port {bind_port} did not open within 30 s");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // Keep draining events so the run loop never blocks on a full channel.
        std::thread::spawn(move || while events.recv().is_ok() {});
        Surfnet { url: format!("http://127.0.0.1:{bind_port}") }
    }
}
