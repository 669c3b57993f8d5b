//! Native value moved out of a watched wallet by code running as it — an internal call, as an
//! EIP-7702 delegate makes — which no transaction field and no log shows: read from the node's
//! call traces (`debug_traceBlockByHash` with the call tracer) where the node offers them.

use crate::client::EvmClient;
use crate::units::from_base_units;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use serde::Deserialize;
use spendguard_chain::{ChainError, ChainInflow, ChainOutflow, ChainResult};
use spendguard_core::model::Asset;
use spendguard_core::reconcile::OutflowKind;
use std::sync::atomic::Ordering;

/// One transaction's trace, as the call tracer answers it — or the node's reason it could
/// not trace that transaction (e.g. anvil's "Resource not found" for a block whose state it no
/// longer keeps).
#[derive(Debug, Deserialize)]
struct TxTrace {
    #[serde(rename = "txHash")]
    tx_hash: Option<B256>,
    result: Option<CallFrame>,
    error: Option<serde_json::Value>,
}

/// One call of a trace and the calls it made.
#[derive(Debug, Deserialize)]
struct CallFrame {
    #[serde(rename = "type")]
    kind: String,
    from: Address,
    to: Option<Address>,
    value: Option<U256>,
    /// Set when the call reverted: nothing it or its children sent moved.
    error: Option<String>,
    #[serde(default)]
    calls: Vec<CallFrame>,
}

impl EvmClient {
    /// Internal native transfers out of and into `watched` in the block `hash` whose
    /// transactions are `tx_hashes` (in order); `None` when the node offers no call traces
    /// (then only balance conservation catches them).
    pub(crate) async fn internal_transfers(
        &self,
        hash: B256,
        tx_hashes: &[B256],
        watched: &[Address],
        native: Option<&Asset>,
    ) -> ChainResult<Option<(Vec<ChainOutflow>, Vec<ChainInflow>)>> {
        if self.traces_unsupported.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let tracer = serde_json::json!({ "tracer": "callTracer" });
        let traces: Vec<TxTrace> = match self
            .rpc(|p| {
                let tracer = tracer.clone();
                async move { p.raw_request("debug_traceBlockByHash".into(), (hash, tracer)).await }
            })
            .await
        {
            Ok(traces) => traces,
            // The node refused the method (not offered, or disabled): say so once, and stop asking.
            Err(ChainError::Rejected { reason, .. }) => {
                self.traces_unsupported.store(true, Ordering::Relaxed);
                tracing::warn!(
                    chain = %self.settings.id,
                    %reason,
                    "the node offers no call traces: ether moved by internal calls (e.g. EIP-7702 delegated \
                     code) is caught only by balance conservation"
                );
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        // A node that cannot trace this block (its state is gone: a backfill on a non-archive
        // node) leaves the block to balance conservation, like a node without traces — but only
        // this block: later ones may be traceable. Never a block the watcher cannot pass.
        if let Some(why) = traces.iter().find_map(|t| t.result.is_none().then(|| t.error.clone())) {
            tracing::debug!(chain = %self.settings.id, block = %hash, reason = ?why, "block not traceable; internal calls left to conservation");
            return Ok(None);
        }
        if traces.len() != tx_hashes.len() {
            return Err(ChainError::Unavailable {
                chain: self.settings.id.clone(),
                message: format!("block {hash:#x} has {} transactions but {} traces", tx_hashes.len(), traces.len()),
            });
        }
        let (mut out, mut into) = (vec![], vec![]);
        for (trace, tx_hash) in traces.iter().zip(tx_hashes) {
            let tx_hash = format!("{:#x}", trace.tx_hash.unwrap_or(*tx_hash));
            let Some(root) = &trace.result else { continue };
            let mut index = 0;
            walk(root, 0, &mut |frame| {
                // The top-level call's value is the transaction's own, indexed from the block.
                index += 1;
                let value = frame.value.unwrap_or_default();
                if value.is_zero() {
                    return;
                }
                let amount = from_base_units(value, native.map_or(18, |a| a.decimals));
                if watched.contains(&frame.from) {
                    out.push(ChainOutflow {
                        tx_hash: tx_hash.clone(),
                        index,
                        kind: OutflowKind::Native,
                        from: format!("{:#x}", frame.from),
                        to: frame.to.map(|t| format!("{t:#x}")),
                        token: None,
                        asset: native.map(Asset::key),
                        amount,
                        authorization_nonce: None,
                    });
                }
                if let Some(to) = frame.to.filter(|t| watched.contains(t) && *t != frame.from) {
                    into.push(ChainInflow {
                        tx_hash: tx_hash.clone(),
                        index,
                        kind: OutflowKind::Native,
                        from: format!("{:#x}", frame.from),
                        to: format!("{to:#x}"),
                        token: None,
                        asset: native.map(Asset::key),
                        amount,
                        balance_before: None,
                        balance_after: None,
                    });
                }
            });
        }
        Ok(Some((out, into)))
    }
}

/// Calls `seen` for every call below the top level that moved value and did not revert, in
/// execution order. DELEGATECALL and STATICCALL move none; CALLCODE only to the caller itself.
fn walk(frame: &CallFrame, depth: usize, seen: &mut impl FnMut(&CallFrame)) {
    if frame.error.is_some() {
        return;
    }
    if depth > 0 && matches!(frame.kind.as_str(), "CALL" | "CREATE" | "CREATE2" | "SELFDESTRUCT") {
        seen(frame);
    }
    for call in &frame.calls {
        walk(call, depth + 1, seen);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_nested_value_moving_calls_that_did_not_revert_count() {
        let trace: CallFrame = serde_json::from_value(serde_json::json!({
            "type": "CALL", "from": "0x0000000000000000000000000000000000000001",
            "to": "0x0000000000000000000000000000000000000002", "value": "0x5",
            "calls": [
                { "type": "CALL", "from": "0x0000000000000000000000000000000000000002",
                  "to": "0x0000000000000000000000000000000000000003", "value": "0x7" },
                { "type": "DELEGATECALL", "from": "0x0000000000000000000000000000000000000002",
                  "to": "0x0000000000000000000000000000000000000004", "value": "0x7" },
                { "type": "CALL", "from": "0x0000000000000000000000000000000000000002",
                  "to": "0x0000000000000000000000000000000000000003", "value": "0x9", "error": "execution reverted",
                  "calls": [{ "type": "CALL", "from": "0x0000000000000000000000000000000000000003",
                              "to": "0x0000000000000000000000000000000000000002", "value": "0x1" }] }
            ]
        }))
        .unwrap();
        let mut values = vec![];
        walk(&trace, 0, &mut |f| values.push(f.value.unwrap_or_default().to::<u64>()));
        assert_eq!(values, [7]);
    }

    #[test]
    fn a_transaction_the_node_cannot_trace_reads_as_an_error_not_a_broken_answer() {
        // anvil, asked for a block whose state it no longer keeps.
        let traces: Vec<TxTrace> = serde_json::from_str(
            r#"[{"error":"Resource not found","txHash":"0x1d681ca09634f0f15cf825b0ffd35541b616f27685c786fad321c17252970b43"}]"#,
        )
        .unwrap();
        assert!(traces[0].result.is_none() && traces[0].error.is_some());
    }
}
