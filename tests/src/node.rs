//! A node built the way the daemon builds it (`spendguard_node::build`), with its keys given
//! and its background passes run when a test says so instead of on a timer.

use spendguard_node::{KeyRing, Keys, Node};
use spendguard_service::AlertChannel;
use std::sync::Arc;

/// A node in this process.
pub struct TestNode {
    node: Node,
}

impl std::ops::Deref for TestNode {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.node
    }
}

impl TestNode {
    /// Builds the node of `config` holding `keys`, delivering alerts to `alerts`.
    pub async fn build(config: spendguard_config::Config, keys: KeyRing, alerts: Vec<AlertChannel>) -> Arc<TestNode> {
        let node = spendguard_node::build(config, Keys::Given(keys)).await.unwrap_or_else(|e| panic!("node: {e}"));
        let node = Node { services: node.services.clone().with_alert_channels(alerts), ..node };
        Arc::new(TestNode { node })
    }

    /// [`TestNode::build`] whose services read the time from `clock` (a test steps it).
    pub async fn build_with_clock(
        config: spendguard_config::Config,
        keys: KeyRing,
        clock: Arc<dyn spendguard_service::Clock>,
    ) -> Arc<TestNode> {
        let node = spendguard_node::build(config, Keys::Given(keys)).await.unwrap_or_else(|e| panic!("node: {e}"));
        let services = spendguard_service::Services::new(
            Arc::clone(&node.config),
            node.store.clone(),
            node.chains.clone(),
            true,
            node.services.executor.authority(),
            vec![],
            clock,
        );
        Arc::new(TestNode { node: Node { services, ..node } })
    }

    /// The ledger.
    pub fn ledger(&self) -> &spendguard_store::SqlStore {
        &self.node.store
    }

    /// One pass of every background job, in the daemon's order of concerns: every price feed
    /// read, execution and its follow-up, each chain's watcher (at most 500 blocks), alert delivery. A watcher that
    /// cannot read its chain is logged, as in the daemon; the ledger failing fails the test.
    pub async fn tick(&self) {
        let s = &self.node.services;
        s.prices.refresh_now().await.unwrap_or_else(|e| panic!("price refresh: {e}"));
        s.executor.pass().await.unwrap_or_else(|e| panic!("execution pass: {e}"));
        let chains: Vec<String> = s.auditor.chains().map(str::to_string).collect();
        for chain in chains {
            if let Err(e) = s.auditor.watch_once(&chain, spendguard_service::BLOCKS_PER_PASS).await {
                eprintln!("watching {chain} failed: {e}");
            }
        }
        s.alerts.pass().await.unwrap_or_else(|e| panic!("alert pass: {e}"));
    }

    /// One pass of `chain`'s watcher, at most `max` blocks.
    pub async fn watch_once(
        &self,
        chain: &str,
        max: u64,
    ) -> Result<spendguard_chain::watch::WatchPass, spendguard_chain::watch::WatchError> {
        self.node.services.auditor.watch_once(chain, max).await
    }
}
