//! [`OutflowStore`] on SQLite: blocks and transactions the auditor indexed, each outflow
//! stored once and classified against the decision its transaction belongs to, the kill switch
//! applied as core's rules say, and reorgs rewound.

use super::rows::{decimal_col, decimal_col_opt, money, query_inflows, query_outflows, to_us};
use super::{SqlStore, Writer};
use crate::api::OutflowStore;
use crate::audit::AuditInput;
use crate::error::StoreResult;
use crate::records::{
    BalanceCheckpoint, BalanceDifference, BalanceReading, BlockRecorded, IndexedBlock, IndexedTransaction,
    RecordedInflow, RecordedOutflow,
};
use crate::sql::{params, Connection, OptionalExtension};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use spendguard_core::freeze::{scopes_for_chain_reset, scopes_for_outflow};
use spendguard_core::model::Scope;
use spendguard_core::reconcile::{
    classify, classify_delegation, describe_amount, evidence, expected_inflow, match_authorization, Approved,
    BalanceCheck, Class, Finding, Inflow, Outflow, OutflowKind, WalletCursor,
};
use spendguard_core::{EventKind, Freeze, SpendStatus};

/// Balance checkpoints kept per wallet and asset.
const CHECKPOINTS_KEPT: i64 = 64;

#[async_trait]
impl OutflowStore for SqlStore {
    async fn record_block(&self, block: IndexedBlock, at: DateTime<Utc>) -> StoreResult<BlockRecorded> {
        self.write(move |w| w.record_block(block, at)).await
    }

    async fn record_transaction(&self, tx: IndexedTransaction, at: DateTime<Utc>) -> StoreResult<Vec<Finding>> {
        self.write(move |w| w.record_transaction(tx, at)).await
    }

    async fn rewind(&self, chain: &str, from: u64, at: DateTime<Utc>) -> StoreResult<Vec<String>> {
        let chain = chain.to_string();
        self.write(move |w| w.rewind(&chain, from, at)).await
    }

    async fn chain_genesis(&self, chain: &str, seen: &str, at: DateTime<Utc>) -> StoreResult<String> {
        let (chain, seen) = (chain.to_string(), seen.to_string());
        self.write(move |w| w.chain_genesis(&chain, &seen, at)).await
    }

    async fn chain_reset(&self, chain: &str, detail: &str, at: DateTime<Utc>) -> StoreResult<Vec<Scope>> {
        let (chain, detail) = (chain.to_string(), detail.to_string());
        self.write(move |w| w.chain_reset(&chain, &detail, at)).await
    }

    async fn highest_confirmed_nonce(&self, wallet: &str) -> StoreResult<Option<(u64, u64)>> {
        let wallet = wallet.to_string();
        self.read(move |c| {
            let top: Option<(i64, i64)> = c
                .query_row(
                    "SELECT nonce, block FROM decisions WHERE wallet = ?1 AND status = 'confirmed' \
                     AND nonce IS NOT NULL AND block IS NOT NULL ORDER BY nonce DESC LIMIT 1",
                    params![wallet],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            Ok(top.map(|(nonce, block)| (nonce as u64, block as u64)))
        })
        .await
    }

    async fn block_hash(&self, chain: &str, number: u64) -> StoreResult<Option<String>> {
        let chain = chain.to_string();
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT hash FROM chain_blocks WHERE chain = ?1 AND number = ?2",
                params![chain, number as i64],
                |r| r.get(0),
            )
            .optional()?)
        })
        .await
    }

    async fn chain_cursor(&self, chain: &str) -> StoreResult<Option<u64>> {
        let chain = chain.to_string();
        self.read(move |c| {
            let top: Option<i64> =
                c.query_row("SELECT max(number) FROM chain_blocks WHERE chain = ?1", params![chain], |r| r.get(0))?;
            Ok(top.map(|n| n as u64 + 1))
        })
        .await
    }

    async fn record_range(&self, chain: &str, last: u64, hash: &str) -> StoreResult<()> {
        let (chain, hash) = (chain.to_string(), hash.to_string());
        self.write(move |w| {
            w.conn.execute(
                "INSERT INTO chain_blocks (chain, number, hash) VALUES (?1, ?2, ?3)
                 ON CONFLICT (chain, number) DO UPDATE SET hash = excluded.hash",
                params![chain, last as i64, hash],
            )?;
            Ok(())
        })
        .await
    }

    async fn recorded_below(&self, chain: &str, number: u64) -> StoreResult<Option<u64>> {
        let chain = chain.to_string();
        self.read(move |c| {
            let below: Option<i64> = c.query_row(
                "SELECT max(number) FROM chain_blocks WHERE chain = ?1 AND number < ?2",
                params![chain, number as i64],
                |r| r.get(0),
            )?;
            Ok(below.map(|n| n as u64))
        })
        .await
    }

    async fn wallet_cursor(&self, chain: &str, address: &str) -> StoreResult<Option<WalletCursor>> {
        let (chain, address) = (chain.to_string(), address.to_string());
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT signature, slot FROM wallet_cursors WHERE chain = ?1 AND address = ?2",
                params![chain, address],
                |r| Ok(WalletCursor { signature: r.get(0)?, slot: r.get::<_, i64>(1)? as u64 }),
            )
            .optional()?)
        })
        .await
    }

    async fn recorded_transactions(&self, chain: &str, above: u64) -> StoreResult<Vec<(String, u64)>> {
        let chain = chain.to_string();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT tx_hash, block FROM outflows WHERE chain = ?1 AND block > ?2
                 UNION SELECT tx_hash, block FROM inflows WHERE chain = ?1 AND block > ?2
                 UNION SELECT signature, slot FROM wallet_cursors
                       WHERE chain = ?1 AND slot > ?2 AND signature IS NOT NULL
                 ORDER BY 2, 1",
            )?;
            let rows = stmt.query_map(params![chain, above as i64], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn check_balances(
        &self,
        chain: &str,
        block: u64,
        readings: Vec<BalanceReading>,
        quiet: u64,
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<BalanceDifference>> {
        let chain = chain.to_string();
        self.write(move |w| w.check_balances(&chain, block, readings, quiet, at)).await
    }

    async fn balance_checkpoints(&self, wallet: &str) -> StoreResult<Vec<BalanceCheckpoint>> {
        let wallet = wallet.to_string();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT c.asset, c.block, c.balance FROM balance_checkpoints c WHERE c.wallet = ?1
                 AND c.block = (SELECT max(d.block) FROM balance_checkpoints d
                                WHERE d.chain = c.chain AND d.wallet = c.wallet AND d.asset = c.asset)
                 ORDER BY c.asset",
            )?;
            let rows = stmt.query_map(params![wallet], |r| {
                Ok(BalanceCheckpoint {
                    asset: r.get(0)?,
                    block: r.get::<_, i64>(1)? as u64,
                    balance: decimal_col(r, 2)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn recent_inflows(&self, wallet: &str, limit: usize) -> StoreResult<Vec<RecordedInflow>> {
        let wallet = wallet.to_string();
        // `query_inflows` orders them by block: oldest first.
        self.read(move |c| {
            let newest = "wallet = ?1 AND id IN (SELECT id FROM inflows WHERE wallet = ?1 ORDER BY id DESC LIMIT ?2)";
            query_inflows(c, newest, params![wallet, limit as i64])
        })
        .await
    }

    async fn inflows(&self, chain: Option<&str>) -> StoreResult<Vec<RecordedInflow>> {
        let chain = chain.map(str::to_string);
        self.read(move |c| query_inflows(c, "CAST(?1 AS TEXT) IS NULL OR chain = ?1", params![chain])).await
    }

    async fn outflows(&self, chain: Option<&str>) -> StoreResult<Vec<RecordedOutflow>> {
        let chain = chain.map(str::to_string);
        self.read(move |c| query_outflows(c, "CAST(?1 AS TEXT) IS NULL OR chain = ?1", params![chain])).await
    }

    async fn reconciliation(&self, decision_id: &str) -> StoreResult<Option<Class>> {
        let id = decision_id.to_string();
        let outflows = self.read(move |c| query_outflows(c, "decision_id = ?1", params![id])).await?;
        // The worst class among its transaction's outflows speaks for the decision.
        let severity = |c: Class| match c {
            Class::Matched => 0,
            Class::FeeOverCap => 1,
            Class::Unexplained => 2,
            Class::Mismatch => 3,
        };
        Ok(outflows.into_iter().map(|o| o.class).max_by_key(|c| severity(*c)))
    }
}

impl Writer {
    fn record_block(&mut self, block: IndexedBlock, at: DateTime<Utc>) -> StoreResult<BlockRecorded> {
        let IndexedBlock { chain, number, hash, parent_hash, outflows, inflows } = block;
        let below: Option<String> = self
            .conn
            .query_row(
                "SELECT hash FROM chain_blocks WHERE chain = ?1 AND number = ?2",
                params![chain, number as i64 - 1],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(stored_parent) = below.filter(|s| *s != parent_hash) {
            return Ok(BlockRecorded::Reorg { stored_parent });
        }
        self.conn.execute(
            "INSERT INTO chain_blocks (chain, number, hash) VALUES (?1, ?2, ?3)
             ON CONFLICT (chain, number) DO UPDATE SET hash = excluded.hash",
            params![chain, number as i64, hash],
        )?;
        self.record_inflows(inflows, at)?;
        self.reconcile(outflows, at).map(BlockRecorded::Recorded)
    }

    /// Applies `on_unexplained_outflow` for a finding of `class` on `wallet`: freezes the scopes
    /// the core's rules name, each with the reason and evidence; returns those newly frozen.
    fn freeze_for(
        &mut self,
        class: Class,
        wallet: &str,
        reason: &str,
        evidence: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<Scope>> {
        let mut frozen = vec![];
        for scope in scopes_for_outflow(&self.model, class, wallet) {
            let freeze = Freeze {
                scope: scope.clone(),
                frozen_by: "reconciler".into(),
                reason: reason.to_string(),
                frozen_at: at,
                evidence: Some(evidence.to_string()),
            };
            if matches!(self.freeze(freeze)?, crate::records::FreezeOutcome::Frozen(_)) {
                frozen.push(scope);
            }
        }
        Ok(frozen)
    }

    /// Whether `reading`'s wallet and asset have an outflow or inflow recorded in blocks `from`
    /// to `through`.
    fn moved_between(&self, chain: &str, reading: &BalanceReading, from: u64, through: u64) -> StoreResult<bool> {
        for table in ["outflows", "inflows"] {
            let found = self
                .conn
                .prepare_cached(&format!(
                    "SELECT 1 FROM {table} WHERE chain = ?1 AND wallet = ?2 AND asset = ?3
                     AND block >= ?4 AND block <= ?5 LIMIT 1"
                ))?
                .query_row(
                    params![chain, reading.wallet, reading.asset, from as i64, through.min(i64::MAX as u64) as i64],
                    |_| Ok(()),
                )
                .optional()?;
            if found.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn check_balances(
        &mut self,
        chain: &str,
        block: u64,
        readings: Vec<BalanceReading>,
        quiet: u64,
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<BalanceDifference>> {
        let mut differences = vec![];
        for r in readings {
            if quiet > 0 && self.moved_between(chain, &r, block.saturating_sub(quiet), block.saturating_add(quiet))? {
                continue;
            }
            let last: Option<(i64, Decimal)> = self
                .conn
                .prepare_cached(
                    "SELECT block, balance FROM balance_checkpoints WHERE chain = ?1 AND wallet = ?2 AND asset = ?3
                     ORDER BY block DESC LIMIT 1",
                )?
                .query_row(params![chain, r.wallet, r.asset], |row| Ok((row.get(0)?, decimal_col(row, 1)?)))
                .optional()?;
            if last.as_ref().is_some_and(|(b, _)| *b as u64 >= block) {
                continue;
            }
            if let Some((from, checkpoint)) = last {
                let sum = |conn: &Connection, table: &str| -> StoreResult<Decimal> {
                    let mut stmt = conn.prepare_cached(&format!(
                        "SELECT amount FROM {table} WHERE chain = ?1 AND wallet = ?2 AND asset = ?3
                         AND block > ?4 AND block <= ?5"
                    ))?;
                    let rows = stmt
                        .query_map(params![chain, r.wallet, r.asset, from, block as i64], |row| decimal_col(row, 0))?;
                    let mut total = Decimal::ZERO;
                    for amount in rows {
                        total += amount?;
                    }
                    Ok(total)
                };
                let check = BalanceCheck {
                    chain: chain.to_string(),
                    wallet: r.wallet.clone(),
                    asset: r.asset.clone(),
                    from_block: from as u64,
                    to_block: block,
                    checkpoint,
                    outflows: sum(&self.conn, "outflows")?,
                    inflows: sum(&self.conn, "inflows")?,
                    actual: r.balance,
                };
                if !check.holds() {
                    let evidence = check.evidence();
                    self.audit(
                        AuditInput {
                            kind: "unexplained_balance_change",
                            actor: "reconciler",
                            wallet: Some(&r.wallet),
                            detail: serde_json::json!({
                                "chain": chain, "asset": r.asset, "from_block": from, "to_block": block,
                                "checkpoint": money(checkpoint), "outflows": money(check.outflows),
                                "inflows": money(check.inflows), "expected": money(check.expected()),
                                "actual": money(r.balance),
                            }),
                            ..AuditInput::default()
                        },
                        at,
                    )?;
                    let reason = format!("unexplained balance change of wallet {}", r.wallet);
                    self.record_event(EventKind::UnexplainedBalanceChange, None, &format!("{reason}: {evidence}"), at)?;
                    let frozen = self.freeze_for(Class::Unexplained, &r.wallet, &reason, &evidence, at)?;
                    differences.push(BalanceDifference { check, frozen });
                }
            }
            self.conn.execute(
                "INSERT INTO balance_checkpoints (chain, wallet, asset, block, balance) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (chain, wallet, asset, block) DO UPDATE SET balance = excluded.balance",
                params![chain, r.wallet, r.asset, block as i64, money(r.balance)],
            )?;
            // A checkpoint is taken every pass; the newest few are enough for a reorg or a
            // rollback to fall back on (one deeper than that checks from the next checkpoint on).
            self.conn
                .prepare_cached(
                    "DELETE FROM balance_checkpoints WHERE chain = ?1 AND wallet = ?2 AND asset = ?3 AND block <
                     (SELECT block FROM balance_checkpoints WHERE chain = ?1 AND wallet = ?2 AND asset = ?3
                      ORDER BY block DESC LIMIT 1 OFFSET ?4)",
                )?
                .execute(params![chain, r.wallet, r.asset, CHECKPOINTS_KEPT - 1])?;
        }
        Ok(differences)
    }

    /// Books money that came into registered wallets (once: one seen before is ignored); one
    /// from an address outside the wallet's `refill_from` records `unexpected_inflow`.
    fn record_inflows(&mut self, inflows: Vec<Inflow>, at: DateTime<Utc>) -> StoreResult<()> {
        for i in inflows {
            let refill_from = self.model.wallet(&i.wallet).map(|w| w.refill_from.as_slice()).unwrap_or_default();
            let expected = expected_inflow(&i.sender, refill_from);
            let inserted = self.conn.execute(
                "INSERT INTO inflows (chain, block, tx_hash, idx, kind, wallet, sender, asset, token, amount,
                    balance_before, balance_after, expected, seen_at_us)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) ON CONFLICT DO NOTHING",
                params![
                    i.chain,
                    i.block as i64,
                    i.tx_hash,
                    i.index as i64,
                    i.kind.as_str(),
                    i.wallet,
                    i.sender,
                    i.asset,
                    i.token,
                    money(i.amount),
                    i.balance_before.map(money),
                    i.balance_after.map(money),
                    expected,
                    to_us(at),
                ],
            )? == 1;
            if !inserted {
                continue;
            }
            self.audit(
                AuditInput {
                    kind: "inflow",
                    actor: "reconciler",
                    wallet: Some(&i.wallet),
                    detail: serde_json::json!({
                        "chain": i.chain,
                        "block": i.block,
                        "tx_hash": i.tx_hash,
                        "index": i.index,
                        "kind": i.kind.as_str(),
                        "sender": i.sender,
                        "asset": i.asset,
                        "token": i.token,
                        "amount": money(i.amount),
                        "balance_before": i.balance_before.map(money),
                        "balance_after": i.balance_after.map(money),
                        "expected": expected,
                    }),
                    ..AuditInput::default()
                },
                at,
            )?;
            if !expected {
                let what = describe_amount(i.amount, i.asset.as_deref(), i.token.as_deref());
                let balances = match (i.balance_before, i.balance_after) {
                    (Some(b), Some(a)) => format!(" (balance {} → {})", b.normalize(), a.normalize()),
                    _ => String::new(),
                };
                let detail = format!(
                    "{what} came into wallet {} from {}, not in its refill_from{balances}, in tx {} at block {} on {}",
                    i.wallet, i.sender, i.tx_hash, i.block, i.chain
                );
                self.record_event(EventKind::UnexpectedInflow, None, &detail, at)?;
            }
        }
        Ok(())
    }

    /// Records a transaction of a signature-indexed chain and moves `address`'s cursor to it,
    /// in one transaction: a watcher killed at any point resumes with no gap and no duplicate.
    fn record_transaction(&mut self, tx: IndexedTransaction, at: DateTime<Utc>) -> StoreResult<Vec<Finding>> {
        let IndexedTransaction { chain, address, signature, slot, outflows, inflows } = tx;
        self.conn.execute(
            "INSERT INTO wallet_cursors (chain, address, signature, slot) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (chain, address) DO UPDATE SET signature = excluded.signature, slot = excluded.slot",
            params![chain, address, signature, slot as i64],
        )?;
        let findings = self.reconcile(outflows, at)?;
        self.record_inflows(inflows, at)?;
        Ok(findings)
    }

    /// Stores outflows (once: one seen before is ignored), each classified against the decision
    /// its transaction belongs to; unexplained and mismatched ones trip the freeze core's rules
    /// name for the organisation's `on_unexplained_outflow`.
    fn reconcile(&mut self, mut outflows: Vec<Outflow>, at: DateTime<Utc>) -> StoreResult<Vec<Finding>> {
        let mut findings = vec![];
        // Fees last: an external wallet's fee belongs to the authorization its transaction's
        // transfer consumed, which is only known once that transfer is held.
        outflows.sort_by_key(|o| o.kind == OutflowKind::Fee);
        for o in outflows {
            let external = self.model.wallet(&o.wallet).is_some_and(|w| w.is_external());
            let (class, decision_id) = match o.kind {
                // An external wallet's agent may pay an x402 server itself: that is held against
                // its authorizations like any payment it makes.
                OutflowKind::Token if o.authorization_nonce.is_some() && !external => self.hold_x402(&o, at)?,
                OutflowKind::Native | OutflowKind::Token if external => self.hold_external(&o, at)?,
                OutflowKind::Delegation => {
                    let allowed = self.model.wallet(&o.wallet).map(|w| w.delegates.as_slice()).unwrap_or_default();
                    (classify_delegation(o.recipient.as_deref(), allowed), None)
                }
                _ => {
                    let approved = self.approved_by_tx(&o.tx_hash)?;
                    (classify(&o, approved.as_ref()), approved.map(|a| a.decision_id))
                }
            };
            let inserted = self.conn.execute(
                "INSERT INTO outflows (chain, block, tx_hash, idx, kind, wallet, recipient, asset, token, amount,
                    class, decision_id, seen_at_us) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                 ON CONFLICT DO NOTHING",
                params![
                    o.chain,
                    o.block as i64,
                    o.tx_hash,
                    o.index as i64,
                    o.kind.as_str(),
                    o.wallet,
                    o.recipient,
                    o.asset,
                    o.token,
                    money(o.amount),
                    class.as_str(),
                    decision_id,
                    to_us(at),
                ],
            )? == 1;
            let mut frozen = vec![];
            // An external wallet's own transaction: its fee is what the decision's payment cost
            // (spendguard's own transactions get theirs from the receipt).
            if inserted && external && o.kind == OutflowKind::Fee {
                if let Some(id) = &decision_id {
                    self.conn.execute(
                        "UPDATE decisions SET fee_paid = ?1 WHERE id = ?2 AND fee_paid IS NULL",
                        params![money(o.amount), id],
                    )?;
                }
            }
            // Seen before (a re-index): its consequences were applied then.
            if inserted {
                self.audit(
                    AuditInput {
                        kind: "outflow",
                        actor: "reconciler",
                        decision_id: decision_id.as_deref(),
                        wallet: Some(&o.wallet),
                        detail: serde_json::json!({
                            "class": class.as_str(),
                            "chain": o.chain,
                            "block": o.block,
                            "tx_hash": o.tx_hash,
                            "index": o.index,
                            "kind": o.kind.as_str(),
                            "recipient": o.recipient,
                            "asset": o.asset,
                            "token": o.token,
                            "amount": money(o.amount),
                        }),
                        ..AuditInput::default()
                    },
                    at,
                )?;
                if class.trips_kill_switch() {
                    let (kind, reason) = match o.kind {
                        OutflowKind::Delegation => (
                            EventKind::DelegationChanged,
                            format!("wallet {}'s code delegated to an address not in its delegates", o.wallet),
                        ),
                        _ => (
                            EventKind::UnexplainedOutflow,
                            format!("{} outflow from wallet {}", class.as_str(), o.wallet),
                        ),
                    };
                    // The finding first, then the freezes it causes (each records a kill_switch event).
                    self.record_event(kind, decision_id.as_deref(), &format!("{reason}: {}", evidence(&o)), at)?;
                    frozen = self.freeze_for(class, &o.wallet, &reason, &evidence(&o), at)?;
                }
            }
            findings.push(Finding { outflow: o, class, decision_id, frozen });
        }
        Ok(findings)
    }

    /// What the decision whose transaction `tx_hash` is approved, if any.
    fn approved_by_tx(&self, tx_hash: &str) -> StoreResult<Option<Approved>> {
        let decision = self
            .conn
            .prepare_cached("SELECT id, asset, recipient, amount, fee_cap FROM decisions WHERE tx_hash = ?1")?
            .query_row(params![tx_hash], |r| {
                Ok(Approved {
                    decision_id: r.get(0)?,
                    asset: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                    recipient: r.get(2)?,
                    amount: decimal_col(r, 3)?,
                    fee_cap: decimal_col_opt(r, 4)?,
                })
            })
            .optional()
            .map_err(super::rows::corrupt("decision with tx_hash", tx_hash.to_string()))?;
        if decision.is_some() {
            return Ok(decision);
        }
        // A wallet's cancellation of an x402 authorization belongs to that payment's decision:
        // it moves nothing, and its fee is booked there.
        let cancelling: Option<String> = self
            .conn
            .prepare_cached("SELECT decision_id FROM authorizations WHERE cancel_tx = ?1")?
            .query_row(params![tx_hash], |r| r.get(0))
            .optional()?;
        Ok(cancelling.map(|decision_id| Approved {
            decision_id,
            asset: String::new(),
            recipient: String::new(),
            amount: Decimal::ZERO,
            fee_cap: None,
        }))
    }

    /// A transfer out of an external wallet, held against the wallet's open authorizations
    /// (core's `match_authorization`); the one it matches (or got wrong) is consumed. Seen
    /// before (a re-index), it keeps the class and decision it was given then.
    fn hold_external(&mut self, o: &Outflow, at: DateTime<Utc>) -> StoreResult<(Class, Option<String>)> {
        if let Some(seen) = self.stored_finding(o)? {
            return Ok(seen);
        }
        let open = self.open_authorizations_of(&o.wallet)?;
        let (class, consumed) = match_authorization(o, &open);
        let decision_id = consumed.map(|i| open[i].decision_id.clone());
        if let Some(id) = &decision_id {
            self.consume_authorization(id, &o.tx_hash, o.block, true, at)?;
        }
        Ok((class, decision_id))
    }

    /// The class and decision an outflow was given when it was first recorded (a re-index
    /// must not consume a second authorization).
    fn stored_finding(&self, o: &Outflow) -> StoreResult<Option<(Class, Option<String>)>> {
        let stored = self
            .conn
            .prepare_cached(
                "SELECT class, decision_id FROM outflows WHERE chain = ?1 AND tx_hash = ?2 AND idx = ?3 AND kind = ?4",
            )?
            .query_row(params![o.chain, o.tx_hash, o.index as i64, o.kind.as_str()], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
            })
            .optional()?;
        Ok(stored.map(|(class, decision_id)| (Class::parse(&class).unwrap_or(Class::Unexplained), decision_id)))
    }

    /// A token transfer made by an EIP-3009 authorization (an x402 payment a facilitator
    /// settled, in a transaction the wallet did not send): held against the authorization
    /// spendguard signed with that nonce — payee and amount must be its decision's, else a
    /// mismatch; no such authorization (the wallet's key signed one outside spendguard) is
    /// unexplained. An open one is consumed, its decision confirmed in this transaction.
    fn hold_x402(&mut self, o: &Outflow, at: DateTime<Utc>) -> StoreResult<(Class, Option<String>)> {
        if let Some(seen) = self.stored_finding(o)? {
            return Ok(seen);
        }
        let nonce = o.authorization_nonce.as_deref().unwrap_or_default();
        let Some(a) = self.x402_authorization(&o.wallet, nonce)? else { return Ok((Class::Unexplained, None)) };
        let approved = Approved {
            decision_id: a.decision_id.clone(),
            asset: a.asset,
            recipient: a.recipient,
            amount: a.amount,
            fee_cap: None,
        };
        let class = classify(o, Some(&approved));
        // One that already ended (its validBefore passed by the ledger's clock, but a block
        // stamped earlier settled it) keeps its decision as it is; the outflow names it.
        if a.state == crate::records::AuthorizationState::Open {
            self.consume_authorization(&a.decision_id, &o.tx_hash, o.block, false, at)?;
        }
        Ok((class, Some(a.decision_id)))
    }

    fn chain_genesis(&mut self, chain: &str, seen: &str, at: DateTime<Utc>) -> StoreResult<String> {
        let recorded: Option<String> = self
            .conn
            .query_row("SELECT genesis FROM chain_identity WHERE chain = ?1", params![chain], |r| r.get(0))
            .optional()?;
        if let Some(recorded) = recorded {
            return Ok(recorded);
        }
        self.conn.execute(
            "INSERT INTO chain_identity (chain, genesis, first_seen_us) VALUES (?1, ?2, ?3)",
            params![chain, seen, to_us(at)],
        )?;
        self.audit(
            AuditInput {
                kind: "chain_identity",
                actor: "auditor",
                detail: serde_json::json!({ "chain": chain, "genesis": seen }),
                ..AuditInput::default()
            },
            at,
        )?;
        Ok(seen.to_string())
    }

    fn chain_reset(&mut self, chain: &str, detail: &str, at: DateTime<Utc>) -> StoreResult<Vec<Scope>> {
        self.record_event(EventKind::ChainReset, None, detail, at)?;
        let mut frozen = vec![];
        for scope in scopes_for_chain_reset(&self.model, chain) {
            let freeze = Freeze {
                scope: scope.clone(),
                frozen_by: "reconciler".into(),
                reason: format!("chain {chain} was reset or replaced"),
                frozen_at: at,
                evidence: Some(detail.to_string()),
            };
            if matches!(self.freeze(freeze)?, crate::records::FreezeOutcome::Frozen(_)) {
                frozen.push(scope);
            }
        }
        Ok(frozen)
    }

    fn rewind(&mut self, chain: &str, from: u64, at: DateTime<Utc>) -> StoreResult<Vec<String>> {
        let reopened: Vec<String> = {
            let mut stmt = self.conn.prepare_cached(
                "SELECT id FROM decisions WHERE chain = ?1 AND status = 'confirmed' AND block >= ?2 ORDER BY seq",
            )?;
            let rows = stmt.query_map(params![chain, from as i64], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        for id in &reopened {
            // An external wallet's payment: its authorization is open again, for the agent's
            // transaction to land again in the new chain (or expire).
            if self.reopen_authorization(id, at)? {
                continue;
            }
            self.set_status(id, SpendStatus::Broadcast, at, None)?;
            // Re-send at once: the orphaned block may have taken the transaction with it.
            self.conn.execute(
                "UPDATE decisions SET block = NULL, updated_at_us = 0, broadcast_at_us = ?2 WHERE id = ?1",
                params![id, to_us(at)],
            )?;
        }
        self.conn.execute("DELETE FROM outflows WHERE chain = ?1 AND block >= ?2", params![chain, from as i64])?;
        self.conn.execute("DELETE FROM inflows WHERE chain = ?1 AND block >= ?2", params![chain, from as i64])?;
        self.conn
            .execute("DELETE FROM balance_checkpoints WHERE chain = ?1 AND block >= ?2", params![chain, from as i64])?;
        self.conn.execute("DELETE FROM chain_blocks WHERE chain = ?1 AND number >= ?2", params![chain, from as i64])?;
        // Signature-indexed chains: each account's history from `from` on is listed again.
        self.conn.execute(
            "UPDATE wallet_cursors SET signature = NULL, slot = ?2 - 1 WHERE chain = ?1 AND slot >= ?2",
            params![chain, from as i64],
        )?;
        let solana = self.model.chain(chain).is_some_and(|c| c.kind == spendguard_core::model::ChainKind::Solana);
        let what = if solana {
            format!("slots from {from} were rolled back")
        } else {
            format!("blocks from {from} left the canonical chain")
        };
        self.record_event(
            EventKind::Reorg,
            None,
            &format!("chain {chain}: {what}; {} decision(s) reopened", reopened.len()),
            at,
        )?;
        Ok(reopened)
    }
}
