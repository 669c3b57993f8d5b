//! The writer thread's state: the write connection, the in-memory usage index and freezes, and
//! the group-commit loop.

use crate::audit::AuditInput;
use crate::error::{StoreError, StoreResult};
use crate::ledger::{
    Account, Counters, DecisionRecord, Deliver, FreezeOutcome, Job, LedgerOptions, Receipt, ReserveOutcome,
    ReserveRequest, Resigning, Settlement, SignWith, SignedRecord, Signing,
};
use crate::schema;
use chrono::{DateTime, TimeDelta, Utc};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row};
use sha2::{Digest, Sha256};
use spendguard_core::model::Scope;
use spendguard_core::money::{decimal_from_store, fmt_units};
use spendguard_core::usage::{LedgerEntry, UsageIndex};
use spendguard_core::{evaluate, Context, Decision, Evaluation, Freeze, Model, SpendStatus, Tier};
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

/// Idempotency keys are kept at least 24 hours (the contract); we keep them 48.
const IDEMPOTENCY_RETENTION: TimeDelta = TimeDelta::hours(48);
/// Every this many batches the index and idempotency table are pruned.
const PRUNE_EVERY: u64 = 1024;

mod operations;
pub(crate) use operations::operator_for_token;

pub(crate) fn connect(path: &Path, options: &LedgerOptions) -> StoreResult<Connection> {
    let open_err = |source| StoreError::Open { path: path.to_path_buf(), source };
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(open_err)?;
    install_busy_handler(&conn, options.busy_timeout).map_err(open_err)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(open_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Corrupt(format!("{} cannot use WAL journaling (got {mode})", path.display())));
    }
    // FULL: a committed decision survives power loss. This is money.
    conn.pragma_update(None, "synchronous", "FULL").map_err(open_err)?;
    conn.pragma_update(None, "foreign_keys", true).map_err(open_err)?;
    Ok(conn)
}

/// How often a connection waiting for another process's write lock tries again. SQLite's own
/// handler backs off to 100 ms sleeps, so a process that commits back to back (our writer under
/// load) would starve the others; polling this often lets them in at the writer's pauses.
const BUSY_POLL: std::time::Duration = std::time::Duration::from_micros(250);
/// After writing back to back this long, the writer pauses for [`WRITER_PAUSE`].
const WRITER_TURN: std::time::Duration = std::time::Duration::from_millis(20);
/// Longer than [`BUSY_POLL`], so a waiting process is sure to try during it.
const WRITER_PAUSE: std::time::Duration = std::time::Duration::from_micros(400);

/// Retries before a waiting connection gives up: `busy_timeout / BUSY_POLL`. SQLite takes the
/// handler as a plain function, so the limit lives here; the most recently opened ledger sets it.
static BUSY_RETRY_LIMIT: AtomicI32 = AtomicI32::new(120_000);

fn install_busy_handler(conn: &Connection, timeout: std::time::Duration) -> rusqlite::Result<()> {
    let retries = (timeout.as_micros() / BUSY_POLL.as_micros()).clamp(1, i32::MAX as u128) as i32;
    BUSY_RETRY_LIMIT.store(retries, Ordering::Relaxed);
    conn.busy_handler(Some(|retries_so_far| {
        if retries_so_far >= BUSY_RETRY_LIMIT.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep(BUSY_POLL);
        true
    }))
}

pub(crate) fn to_us(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub(crate) fn from_us(us: i64) -> StoreResult<DateTime<Utc>> {
    DateTime::from_timestamp_micros(us).ok_or_else(|| StoreError::Corrupt(format!("timestamp {us} out of range")))
}

fn truncate_to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

pub(crate) struct Writer {
    conn: Connection,
    model: Arc<Model>,
    index: UsageIndex,
    freezes: Vec<Freeze>,
    /// Highest change_seq applied to the index.
    last_change_seq: i64,
    /// `PRAGMA data_version` after our last look: it changes only when another connection commits.
    data_version: i64,
    /// The index holds every counting decision made at or after this instant.
    loaded_from: DateTime<Utc>,
    /// The longest span any window reaches back.
    horizon: TimeDelta,
    latest_request: DateTime<Utc>,
    /// The index may not match the database (a commit failed); reload it fully.
    dirty: bool,
    /// Change sequence of the current batch, once a job wrote.
    batch_seq: Option<i64>,
    /// Set when a job left the transaction in an unknown state: the batch must roll back.
    abort: Option<String>,
    batches: u64,
    counters: Arc<Counters>,
}

fn horizon_of(model: &Model) -> TimeDelta {
    let longest = model
        .policies
        .iter()
        .flat_map(|p| p.limits.iter().chain(p.operations.iter().flat_map(|o| o.limits.iter())))
        .map(|l| l.window.max_span())
        .max()
        .unwrap_or(TimeDelta::zero());
    longest + TimeDelta::days(1)
}

impl Writer {
    pub(crate) fn open(
        path: &Path,
        model: Arc<Model>,
        now: DateTime<Utc>,
        options: &LedgerOptions,
        counters: Arc<Counters>,
    ) -> StoreResult<Writer> {
        let mut conn = connect(path, options)?;
        schema::migrate(&mut conn)?;
        let horizon = horizon_of(&model);
        let mut w = Writer {
            conn,
            model,
            index: UsageIndex::new(),
            freezes: vec![],
            last_change_seq: 0,
            data_version: 0,
            loaded_from: now - horizon,
            horizon,
            latest_request: now,
            dirty: true,
            abort: None,
            batch_seq: None,
            batches: 0,
            counters,
        };
        w.conn.execute_batch("BEGIN")?;
        let loaded = w.refresh();
        w.conn.execute_batch(if loaded.is_ok() { "COMMIT" } else { "ROLLBACK" })?;
        loaded?;
        Ok(w)
    }

    pub(crate) fn run(mut self, jobs: mpsc::Receiver<Job>, max_batch: usize) {
        let mut busy_since: Option<std::time::Instant> = None;
        loop {
            let first = match jobs.try_recv() {
                Ok(job) => job,
                Err(mpsc::TryRecvError::Disconnected) => return,
                Err(mpsc::TryRecvError::Empty) => {
                    busy_since = None;
                    match jobs.recv() {
                        Ok(job) => job,
                        Err(_) => return,
                    }
                }
            };
            // Under sustained load, step aside briefly now and then so that another process
            // waiting for the write lock gets its turn.
            let started = *busy_since.get_or_insert_with(std::time::Instant::now);
            if started.elapsed() > WRITER_TURN {
                std::thread::sleep(WRITER_PAUSE);
                busy_since = Some(std::time::Instant::now());
            }
            let mut batch = vec![first];
            while batch.len() < max_batch {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            self.process(batch);
        }
    }

    fn process(&mut self, batch: Vec<Job>) {
        self.counters.transactions.fetch_add(1, Ordering::Relaxed);
        self.counters.jobs.fetch_add(batch.len() as u64, Ordering::Relaxed);
        let fail_all = |batch: Vec<Job>, msg: &str| batch.into_iter().for_each(|job| (job.fail)(msg));
        if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
            return fail_all(batch, &e.to_string());
        }
        if let Err(e) = self.refresh() {
            let _ = self.conn.execute_batch("ROLLBACK");
            self.dirty = true;
            return fail_all(batch, &e.to_string());
        }
        self.batch_seq = None;
        let mut done = Vec::with_capacity(batch.len());
        for job in batch {
            done.push(self.run_job(job));
        }
        self.batches += 1;
        if self.batches.is_multiple_of(PRUNE_EVERY) {
            // Pruning is housekeeping: a failure leaves extra rows, never wrong answers.
            let _ = self.prune();
        }
        let committed = match self.abort.take() {
            Some(msg) => Err(msg),
            None => self.conn.execute_batch("COMMIT").map_err(|e| e.to_string()),
        };
        match committed {
            Ok(()) => {
                if let Some(cs) = self.batch_seq.take() {
                    self.last_change_seq = cs;
                }
                done.into_iter().for_each(|deliver| deliver(None));
            }
            Err(msg) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                self.dirty = true;
                self.batch_seq = None;
                done.into_iter().for_each(|deliver| deliver(Some(&msg)));
            }
        }
    }

    /// Runs one job inside its own savepoint, so a failing job leaves the others intact.
    fn run_job(&mut self, job: Job) -> Deliver {
        if let Err(e) = self.conn.execute_batch("SAVEPOINT job") {
            let msg = e.to_string();
            return Box::new(move |_| (job.fail)(&msg));
        }
        let seq_before = self.batch_seq;
        let (ok, deliver) = (job.run)(self);
        if !ok {
            // The savepoint takes back the counter bump too, if this job made it.
            self.batch_seq = seq_before;
        }
        let end = if ok { "RELEASE job" } else { "ROLLBACK TO job; RELEASE job" };
        if let Err(e) = self.conn.execute_batch(end) {
            // The transaction is in an unknown state: roll the whole batch back.
            self.abort = Some(e.to_string());
        }
        deliver
    }

    /// The change sequence of this batch, taken on the first write: batches that only read
    /// (dry runs) write nothing and so cost no fsync.
    fn change_seq(&mut self) -> StoreResult<i64> {
        if let Some(cs) = self.batch_seq {
            return Ok(cs);
        }
        let cs: i64 = self.conn.query_row(
            "UPDATE meta SET value = value + 1 WHERE key = 'change_seq' RETURNING value",
            [],
            |r| r.get(0),
        )?;
        self.batch_seq = Some(cs);
        Ok(cs)
    }

    /// Brings the index and freezes up to date with the database, if anyone else wrote to it.
    fn refresh(&mut self) -> StoreResult<()> {
        let version: i64 = self.conn.query_row("PRAGMA data_version", [], |r| r.get(0))?;
        if version == self.data_version && !self.dirty {
            return Ok(());
        }
        if self.dirty {
            self.index = UsageIndex::new();
            let rows = load_entries(&self.conn, "created_at_us >= ?1", to_us(self.loaded_from))?;
            for (entry, status) in rows {
                if status.counts_as().is_some() {
                    self.index.upsert(entry);
                }
            }
        } else {
            let rows = load_entries(&self.conn, "change_seq > ?1", self.last_change_seq)?;
            for (entry, status) in rows {
                if entry.at >= self.loaded_from && status.counts_as().is_some() {
                    self.index.upsert(entry);
                } else {
                    self.index.remove(entry.seq);
                }
            }
        }
        self.freezes = load_freezes(&self.conn)?;
        self.last_change_seq =
            self.conn.query_row("SELECT value FROM meta WHERE key = 'change_seq'", [], |r| r.get(0))?;
        self.data_version = version;
        self.dirty = false;
        Ok(())
    }

    /// Makes sure the index reaches back far enough for a request at `at`.
    fn ensure_loaded(&mut self, at: DateTime<Utc>) -> StoreResult<()> {
        if at > self.latest_request {
            self.latest_request = at;
        }
        let needed = at - self.horizon;
        if needed >= self.loaded_from {
            return Ok(());
        }
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {ENTRY_COLUMNS} FROM decisions WHERE created_at_us >= ?1 AND created_at_us < ?2"
        ))?;
        let rows = stmt
            .query_map(params![to_us(needed), to_us(self.loaded_from)], entry_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        drop(stmt);
        for (entry, status) in rows {
            if status.counts_as().is_some() {
                self.index.upsert(entry);
            }
        }
        self.loaded_from = needed;
        Ok(())
    }

    fn prune(&mut self) -> StoreResult<()> {
        let cutoff = self.latest_request - self.horizon;
        if cutoff > self.loaded_from {
            self.index.prune_before(cutoff);
            self.loaded_from = cutoff;
        }
        self.conn.execute(
            "DELETE FROM idempotency WHERE created_at_us < ?1",
            params![to_us(self.latest_request - IDEMPOTENCY_RETENTION)],
        )?;
        Ok(())
    }

    pub(crate) fn dry_run(
        &mut self,
        mut request: spendguard_core::SpendRequest,
        balances: spendguard_core::Balances,
    ) -> StoreResult<Evaluation> {
        request.at = truncate_to_micros(request.at);
        self.ensure_loaded(request.at)?;
        let ctx = Context { usage: &self.index, freezes: &self.freezes, balances: &balances };
        Ok(evaluate(&self.model, &request, &ctx))
    }

    pub(crate) fn reserve(&mut self, req: ReserveRequest) -> StoreResult<ReserveOutcome> {
        let ReserveRequest { mut request, balances, idempotency_key, memo } = req;
        request.at = truncate_to_micros(request.at);
        self.ensure_loaded(request.at)?;
        let hash = request_hash(&request, memo.as_deref());
        if let Some(key) = &idempotency_key {
            let prior: Option<(String, String, String)> = self
                .conn
                .prepare_cached(
                    "SELECT request_hash, decision_id, response FROM idempotency WHERE agent = ?1 AND key = ?2",
                )?
                .query_row(params![request.agent, key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?;
            if let Some((prior_hash, decision_id, response)) = prior {
                if prior_hash != hash {
                    return Ok(ReserveOutcome::IdempotencyConflict { original_decision_id: decision_id });
                }
                let receipt: Receipt = serde_json::from_str(&response)
                    .map_err(|e| StoreError::Corrupt(format!("idempotency response of {decision_id}: {e}")))?;
                return Ok(ReserveOutcome::Decided { receipt, replayed: true });
            }
        }

        let ctx = Context { usage: &self.index, freezes: &self.freezes, balances: &balances };
        let eval = evaluate(&self.model, &request, &ctx);
        let status = match eval.decision {
            Decision::Deny => SpendStatus::Denied,
            Decision::Allow | Decision::Notify => SpendStatus::Reserved,
            Decision::Delay => SpendStatus::Queued,
            Decision::RequireApproval => SpendStatus::PendingApproval,
        };
        let spend = eval.spend.as_ref();
        let execute_after =
            (status == SpendStatus::Queued).then(|| request.at + spend.and_then(|s| s.delay).unwrap_or_default());
        let approval_expires_at = (status == SpendStatus::PendingApproval)
            .then(|| request.at + spend.and_then(|s| s.approval_ttl).unwrap_or(TimeDelta::hours(24)));
        let id = format!("dec_{}", uuid::Uuid::new_v4().simple());
        let amount = fmt_units(request.amount);
        let reasons = serde_json::to_string(&eval.reasons).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let headroom = serde_json::to_string(&eval.headroom).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let at_us = to_us(request.at);
        let recipient = spend.map_or_else(|| request.to.clone(), |s| s.recipient.clone());
        let intent = intent_hash(&Intent {
            id: &id,
            agent: &request.agent,
            wallet: &request.wallet,
            chain: spend.map(|s| s.chain.as_str()),
            asset: spend.map(|s| s.asset.as_str()),
            recipient: &recipient,
            amount: &amount,
            operation: request.operation.as_deref(),
            memo: memo.as_deref(),
        });
        let change_seq = self.change_seq()?;
        let seq: i64 = self
            .conn
            .prepare_cached(
                "INSERT INTO decisions (id, created_at_us, updated_at_us, agent, wallet, department, chain, asset,
                    recipient, amount, usd, price_usd, operation, memo, merchant, category, decision, tier, status,
                    reasons, headroom, execute_after_us, approval_expires_us, approver_role, request_hash,
                    idempotency_key, change_seq, intent_hash)
                 VALUES (?1, ?2, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19,
                    ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27)
                 RETURNING seq",
            )?
            .query_row(
                params![
                    id,
                    at_us,
                    request.agent,
                    request.wallet,
                    self.model.agent(&request.agent).and_then(|a| a.department.clone()),
                    spend.map(|s| s.chain.clone()),
                    spend.map(|s| s.asset.clone()),
                    recipient,
                    amount,
                    spend.map(|s| s.usd.normalize().to_string()),
                    spend.map(|s| s.price_usd.normalize().to_string()),
                    request.operation,
                    memo,
                    spend.and_then(|s| s.merchant.clone()),
                    spend.and_then(|s| s.category.clone()),
                    eval.decision.as_str(),
                    eval.tier.as_str(),
                    status.as_str(),
                    reasons,
                    headroom,
                    execute_after.map(to_us),
                    approval_expires_at.map(to_us),
                    spend.and_then(|s| s.approver_role.clone()),
                    hash,
                    idempotency_key,
                    change_seq,
                    intent,
                ],
                |r| r.get(0),
            )?;
        let codes: Vec<&str> = eval.reasons.iter().map(|r| r.code.as_str()).collect();
        self.audit(
            AuditInput {
                kind: "decision",
                actor: &request.agent,
                decision_id: Some(&id),
                agent: Some(&request.agent),
                wallet: Some(&request.wallet),
                usd: spend.map(|s| s.usd.normalize().to_string()).as_deref(),
                detail: serde_json::json!({
                    "decision": eval.decision.as_str(),
                    "tier": eval.tier.as_str(),
                    "status": status.as_str(),
                    "chain": spend.map(|s| s.chain.as_str()),
                    "asset": spend.map(|s| s.asset.as_str()),
                    "amount": amount,
                    "recipient": recipient,
                    "operation": request.operation,
                    "reasons": codes,
                    "intent_hash": intent,
                    "execute_after": execute_after.map(|t| t.to_rfc3339()),
                    "approval_expires_at": approval_expires_at.map(|t| t.to_rfc3339()),
                }),
            },
            request.at,
        )?;
        let receipt = Receipt {
            decision_id: id.clone(),
            status,
            decision: eval.decision,
            tier: eval.tier,
            reasons: eval.reasons.clone(),
            headroom: eval.headroom.clone(),
            execute_after,
            approval_expires_at,
            amount: amount.clone(),
            asset: spend.map(|s| s.asset.clone()),
            usd: spend.map(|s| s.usd.normalize().to_string()),
            price_usd: spend.map(|s| s.price_usd.normalize().to_string()),
        };
        if let Some(key) = &idempotency_key {
            let response = serde_json::to_string(&receipt).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            self.conn
                .prepare_cached(
                    "INSERT INTO idempotency (agent, key, request_hash, decision_id, response, created_at_us)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![request.agent, key, hash, id, response, at_us])?;
        }
        if let (Some(state), Some(spend)) = (status.counts_as(), spend) {
            self.index.upsert(LedgerEntry {
                seq,
                at: request.at,
                agent: request.agent.clone(),
                department: spend.department.clone(),
                wallet: request.wallet.clone(),
                asset: spend.asset.clone(),
                operation: request.operation.clone(),
                amount: request.amount,
                usd: spend.usd,
                state,
            });
        }
        Ok(ReserveOutcome::Decided { receipt, replayed: false })
    }

    pub(crate) fn freeze(&mut self, freeze: Freeze) -> StoreResult<FreezeOutcome> {
        if !self.model.scope_exists(&freeze.scope) {
            return Err(StoreError::UnknownScope { kind: freeze.scope.kind(), id: freeze.scope.id().to_string() });
        }
        if let Some(existing) = self.freezes.iter().find(|f| f.scope == freeze.scope) {
            return Ok(FreezeOutcome::AlreadyFrozen(existing.clone()));
        }
        let scope = freeze.scope.to_string();
        let at = to_us(freeze.frozen_at);
        self.conn.execute(
            "INSERT INTO freezes (scope, frozen_by, reason, frozen_at_us, evidence) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![scope, freeze.frozen_by, freeze.reason, at, freeze.evidence],
        )?;
        self.conn.execute(
            "INSERT INTO freeze_log (scope, action, actor, text, at_us) VALUES (?1, 'freeze', ?2, ?3, ?4)",
            params![scope, freeze.frozen_by, freeze.reason, at],
        )?;
        self.freezes.push(freeze.clone());
        self.audit(
            AuditInput {
                kind: "freeze",
                actor: &freeze.frozen_by,
                agent: scope_agent(&freeze.scope),
                wallet: scope_wallet(&freeze.scope),
                detail: serde_json::json!({"scope": scope, "reason": freeze.reason, "evidence": freeze.evidence}),
                ..AuditInput::default()
            },
            freeze.frozen_at,
        )?;
        self.record_event("kill_switch", None, &freeze.describe(), freeze.frozen_at)?;
        Ok(FreezeOutcome::Frozen(freeze))
    }

    pub(crate) fn unfreeze(&mut self, scope: Scope, by: &str, ack: &str, at: DateTime<Utc>) -> StoreResult<bool> {
        if ack.trim().is_empty() {
            return Err(StoreError::AckRequired);
        }
        if !self.model.scope_exists(&scope) {
            return Err(StoreError::UnknownScope { kind: scope.kind(), id: scope.id().to_string() });
        }
        let key = scope.to_string();
        let removed = self.conn.execute("DELETE FROM freezes WHERE scope = ?1", params![key])?;
        if removed == 0 {
            return Ok(false);
        }
        self.conn.execute(
            "INSERT INTO freeze_log (scope, action, actor, text, at_us) VALUES (?1, 'unfreeze', ?2, ?3, ?4)",
            params![key, by, ack, to_us(at)],
        )?;
        self.freezes.retain(|f| f.scope != scope);
        self.audit(
            AuditInput {
                kind: "unfreeze",
                actor: by,
                agent: scope_agent(&scope),
                wallet: scope_wallet(&scope),
                detail: serde_json::json!({"scope": key, "ack": ack}),
                ..AuditInput::default()
            },
            at,
        )?;
        Ok(true)
    }

    pub(crate) fn set_status(
        &mut self,
        id: &str,
        next: SpendStatus,
        at: DateTime<Utc>,
        failure: Option<&str>,
    ) -> StoreResult<DecisionRecord> {
        let current = load_decision(&self.conn, id)?.ok_or_else(|| StoreError::UnknownDecision(id.to_string()))?;
        if !current.status.can_become(next) {
            return Err(StoreError::IllegalTransition {
                id: id.to_string(),
                from: current.status.to_string(),
                to: next.to_string(),
            });
        }
        let change_seq = self.change_seq()?;
        self.conn.execute(
            "UPDATE decisions SET status = ?1, updated_at_us = ?2, change_seq = ?3, failure = coalesce(?5, failure)
             WHERE id = ?4",
            params![next.as_str(), to_us(at), change_seq, id, failure],
        )?;
        self.reindex(id)?;
        let record = load_decision(&self.conn, id)?.ok_or_else(|| StoreError::UnknownDecision(id.to_string()))?;
        self.audit_decision(
            "status",
            "spendguard",
            &record,
            serde_json::json!({
                "from": current.status.as_str(),
                "to": next.as_str(),
                "failure": failure,
                "tx_hash": record.tx_hash,
                "block": record.block,
                "fee_paid": record.fee_paid,
            }),
            at,
        )?;
        Ok(record)
    }

    pub(crate) fn sign(
        &mut self,
        id: &str,
        account: Option<Account>,
        sign: SignWith,
        at: DateTime<Utc>,
    ) -> StoreResult<Signing> {
        if let Some(signed) = load_signed(&self.conn, id)? {
            return Ok(Signing::AlreadySigned(signed));
        }
        let current = load_decision(&self.conn, id)?.ok_or_else(|| StoreError::UnknownDecision(id.to_string()))?;
        if current.status != SpendStatus::Reserved {
            return Ok(Signing::NotExecutable(current.status));
        }
        // A freeze that landed after the reservation (or the approval) still stops it: nothing
        // is signed for a frozen agent or wallet.
        if let Some(frozen) = self.freeze_covering(&current) {
            let released = self.set_status(id, SpendStatus::Released, at, Some(&format!("not executed: {frozen}")))?;
            return Ok(Signing::NotExecutable(released.status));
        }
        self.check_intent(&current)?;
        let sequence = match &account {
            Some(a) => Some(self.allocate_nonce(a)?),
            None => None,
        };
        // An error here rolls the job's savepoint back, nonce allocation included.
        let signed = sign(sequence).map_err(StoreError::SigningFailed)?;
        let change_seq = self.change_seq()?;
        self.conn.execute(
            "UPDATE decisions SET status = 'signed', nonce = ?1, tx_hash = ?2, raw_tx = ?3, fee_cap = ?4, fee_terms = ?5,
                updated_at_us = ?6, change_seq = ?7 WHERE id = ?8",
            params![
                signed.sequence.map(|n| n as i64),
                signed.hash,
                signed.raw,
                signed.fee_cap.normalize().to_string(),
                signed.fee_terms,
                to_us(at),
                change_seq,
                id
            ],
        )?;
        self.reindex(id)?;
        self.audit_decision(
            "signed",
            "spendguard",
            &current,
            serde_json::json!({
                "from": current.status.as_str(),
                "to": "signed",
                "tx_hash": signed.hash,
                "nonce": signed.sequence,
                "fee_cap": signed.fee_cap.normalize().to_string(),
                "fee_terms": signed.fee_terms,
            }),
            at,
        )?;
        Ok(Signing::Signed(signed))
    }

    /// Replaces the transaction of a broadcast decision that was proven dead (Solana: its
    /// blockhash expired unlanded) with a new signing, once per decision. Returns `None` when it
    /// was re-signed before.
    pub(crate) fn resign(
        &mut self,
        id: &str,
        dead_hash: &str,
        sign: SignWith,
        at: DateTime<Utc>,
    ) -> StoreResult<Resigning> {
        let current = load_decision(&self.conn, id)?.ok_or_else(|| StoreError::UnknownDecision(id.to_string()))?;
        // Only the transaction the caller proved dead is replaced: a concurrent pass that already
        // re-signed (or a status change) leaves nothing to do.
        if current.status != SpendStatus::Broadcast || current.tx_hash.as_deref() != Some(dead_hash) {
            return Ok(Resigning::Stale);
        }
        let resigned: i64 =
            self.conn.query_row("SELECT resigned FROM decisions WHERE id = ?1", params![id], |r| r.get(0))?;
        if resigned > 0 {
            return Ok(Resigning::Exhausted);
        }
        let signed = sign(None).map_err(StoreError::SigningFailed)?;
        self.set_status(id, SpendStatus::Signed, at, None)?;
        self.conn.execute(
            "UPDATE decisions SET tx_hash = ?1, raw_tx = ?2, fee_cap = ?3, fee_terms = ?4, resigned = resigned + 1,
                broadcast_at_us = NULL WHERE id = ?5",
            params![signed.hash, signed.raw, signed.fee_cap.normalize().to_string(), signed.fee_terms, id],
        )?;
        self.record_event(
            "resigned",
            Some(id),
            &format!("decision {id}: transaction {dead_hash} expired without landing; re-signed as {}", signed.hash),
            at,
        )?;
        Ok(Resigning::Resigned(signed))
    }

    /// The next nonce of an account: the lowest hole a refused transaction left (at or above
    /// the chain's floor), else the allocator's next, never below the floor.
    fn allocate_nonce(&mut self, a: &Account) -> StoreResult<u64> {
        let floor = a.floor as i64;
        self.conn.execute(
            "DELETE FROM nonce_holes WHERE chain = ?1 AND address = ?2 AND nonce < ?3",
            params![a.chain, a.address, floor],
        )?;
        let hole: Option<i64> = self.conn.query_row(
            "SELECT min(nonce) FROM nonce_holes WHERE chain = ?1 AND address = ?2",
            params![a.chain, a.address],
            |r| r.get(0),
        )?;
        if let Some(n) = hole {
            self.conn.execute(
                "DELETE FROM nonce_holes WHERE chain = ?1 AND address = ?2 AND nonce = ?3",
                params![a.chain, a.address, n],
            )?;
            return Ok(n as u64);
        }
        let next: Option<i64> = self
            .conn
            .query_row("SELECT next FROM nonces WHERE chain = ?1 AND address = ?2", params![a.chain, a.address], |r| {
                r.get(0)
            })
            .optional()?;
        let n = next.unwrap_or(0).max(floor);
        self.conn.execute(
            "INSERT INTO nonces (chain, address, next) VALUES (?1, ?2, ?3)
             ON CONFLICT (chain, address) DO UPDATE SET next = excluded.next",
            params![a.chain, a.address, n + 1],
        )?;
        Ok(n as u64)
    }

    /// Brings the usage index in line with a decision's stored status.
    fn reindex(&mut self, id: &str) -> StoreResult<()> {
        let (entry, status) = self
            .conn
            .prepare_cached(&format!("SELECT {ENTRY_COLUMNS} FROM decisions WHERE id = ?1"))?
            .query_row(params![id], entry_from_row)?;
        match status.counts_as() {
            Some(_) if entry.at >= self.loaded_from => self.index.upsert(entry),
            _ => self.index.remove(entry.seq),
        }
        Ok(())
    }

    pub(crate) fn mark_broadcast(&mut self, id: &str, at: DateTime<Utc>) -> StoreResult<DecisionRecord> {
        let current = load_decision(&self.conn, id)?.ok_or_else(|| StoreError::UnknownDecision(id.to_string()))?;
        if current.status == SpendStatus::Broadcast {
            return Ok(current);
        }
        let record = self.set_status(id, SpendStatus::Broadcast, at, None)?;
        self.conn.execute("UPDATE decisions SET broadcast_at_us = ?1 WHERE id = ?2", params![to_us(at), id])?;
        Ok(record)
    }

    pub(crate) fn missing(
        &mut self,
        chain: &str,
        deadline: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<DecisionRecord>> {
        let overdue: Vec<(String, bool)> = {
            let mut stmt = self.conn.prepare_cached(
                "SELECT d.id, EXISTS (SELECT 1 FROM events e WHERE e.kind = 'missing_outflow' AND e.decision_id = d.id
                    AND e.at_us >= d.broadcast_at_us)
                 FROM decisions d
                 WHERE d.chain = ?1 AND d.status = 'broadcast' AND d.broadcast_at_us <= ?2 ORDER BY d.seq",
            )?;
            let rows = stmt.query_map(params![chain, to_us(deadline)], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut out = vec![];
        for (id, reported) in overdue {
            let d = load_decision(&self.conn, &id)?.ok_or_else(|| StoreError::UnknownDecision(id.clone()))?;
            if !reported {
                let detail = format!(
                    "decision {id}: {} {} from wallet {} to {} was broadcast as {} but is not on chain {chain}",
                    d.amount,
                    d.asset.as_deref().unwrap_or("?"),
                    d.wallet,
                    d.recipient,
                    d.tx_hash.as_deref().unwrap_or("?"),
                );
                self.record_event("missing_outflow", Some(&id), &detail, at)?;
            }
            out.push(d);
        }
        Ok(out)
    }

    pub(crate) fn settle(&mut self, id: &str, s: Settlement, at: DateTime<Utc>) -> StoreResult<DecisionRecord> {
        let next = if s.success { SpendStatus::Confirmed } else { SpendStatus::Failed };
        let why = (!s.success).then_some("the transaction reverted on chain");
        let current = load_decision(&self.conn, id)?.ok_or_else(|| StoreError::UnknownDecision(id.to_string()))?;
        if current.status == next {
            return Ok(current);
        }
        self.conn.execute(
            "UPDATE decisions SET block = ?1, fee_paid = ?2 WHERE id = ?3",
            params![s.block as i64, s.fee.normalize().to_string(), id],
        )?;
        self.set_status(id, next, at, why)
    }

    pub(crate) fn fail(
        &mut self,
        id: &str,
        reason: &str,
        sequence_used: bool,
        at: DateTime<Utc>,
    ) -> StoreResult<DecisionRecord> {
        let record = self.set_status(id, SpendStatus::Failed, at, Some(reason))?;
        if let (false, Some(nonce), Some(chain)) = (sequence_used, record.nonce, record.chain.as_deref()) {
            let address = self.model.wallet(&record.wallet).map(|w| w.address.clone()).unwrap_or_default();
            self.conn.execute(
                "INSERT OR IGNORE INTO nonce_holes (chain, address, nonce) VALUES (?1, ?2, ?3)",
                params![chain, address, nonce as i64],
            )?;
        }
        Ok(record)
    }

    pub(crate) fn cancel(
        &mut self,
        agent: &str,
        id: &str,
        why: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<DecisionRecord> {
        let current = load_decision(&self.conn, id)?.ok_or_else(|| StoreError::UnknownDecision(id.to_string()))?;
        if current.agent != agent {
            return Err(StoreError::NotYours(id.to_string()));
        }
        if !matches!(current.status, SpendStatus::Queued | SpendStatus::PendingApproval) {
            return Err(StoreError::IllegalTransition {
                id: id.to_string(),
                from: current.status.to_string(),
                to: "cancelled (only queued or pending-approval spends can be)".into(),
            });
        }
        self.set_status(id, SpendStatus::Released, at, Some(why))
    }

    pub(crate) fn expire_approvals(&mut self, now: DateTime<Utc>) -> StoreResult<Vec<DecisionRecord>> {
        let pending = load_by_status(&self.conn, &[SpendStatus::PendingApproval])?;
        let mut out = vec![];
        for d in pending.into_iter().filter(|d| d.approval_expires_at.is_some_and(|t| t <= now)) {
            out.push(self.set_status(&d.id, SpendStatus::Released, now, Some("approval request expired"))?);
        }
        Ok(out)
    }

    pub(crate) fn record_block(
        &mut self,
        chain: &str,
        number: u64,
        hash: &str,
        parent: &str,
        outflows: Vec<spendguard_core::reconcile::Outflow>,
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<crate::ledger::Finding>> {
        let below: Option<String> = self
            .conn
            .query_row(
                "SELECT hash FROM chain_blocks WHERE chain = ?1 AND number = ?2",
                params![chain, number as i64 - 1],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(stored) = below.filter(|s| s != parent) {
            return Err(StoreError::Reorg { chain: chain.into(), number, parent: parent.into(), stored });
        }
        self.conn.execute(
            "INSERT OR REPLACE INTO chain_blocks (chain, number, hash) VALUES (?1, ?2, ?3)",
            params![chain, number as i64, hash],
        )?;
        self.reconcile(outflows, at)
    }

    /// Records a transaction of a signature-indexed chain and moves `address`'s cursor to it,
    /// in one transaction: a watcher killed at any point resumes with no gap and no duplicate.
    pub(crate) fn record_transaction(
        &mut self,
        chain: &str,
        address: &str,
        signature: &str,
        slot: u64,
        outflows: Vec<spendguard_core::reconcile::Outflow>,
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<crate::ledger::Finding>> {
        self.conn.execute(
            "INSERT INTO wallet_cursors (chain, address, signature, slot) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (chain, address) DO UPDATE SET signature = excluded.signature, slot = excluded.slot",
            params![chain, address, signature, slot as i64],
        )?;
        self.reconcile(outflows, at)
    }

    /// Stores outflows (once: one seen before is ignored), each classified against the decision
    /// its transaction belongs to; unexplained and mismatched ones trip the configured freeze.
    fn reconcile(
        &mut self,
        outflows: Vec<spendguard_core::reconcile::Outflow>,
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<crate::ledger::Finding>> {
        use spendguard_core::model::OutflowAction;
        use spendguard_core::reconcile::{classify, evidence, Approved};
        let mut findings = vec![];
        for o in outflows {
            let approved = self
                .conn
                .prepare_cached("SELECT id, asset, recipient, amount, fee_cap FROM decisions WHERE tx_hash = ?1")?
                .query_row(params![o.tx_hash], |r| {
                    Ok(Approved {
                        decision_id: r.get(0)?,
                        asset: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                        recipient: r.get(2)?,
                        amount: parsed(r, 3, decimal_from_store)?,
                        fee_cap: parsed_opt(r, 4, decimal_from_store)?,
                    })
                })
                .optional()?;
            let class = classify(&o, approved.as_ref());
            let inserted = self.conn.execute(
                "INSERT OR IGNORE INTO outflows (chain, block, tx_hash, idx, kind, wallet, recipient, asset, token, amount,
                    class, decision_id, seen_at_us) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
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
                    o.amount.normalize().to_string(),
                    class.as_str(),
                    approved.as_ref().map(|a| a.decision_id.clone()),
                    to_us(at),
                ],
            )?;
            if inserted == 1 {
                self.audit(
                    AuditInput {
                        kind: "outflow",
                        actor: "reconciler",
                        decision_id: approved.as_ref().map(|a| a.decision_id.as_str()),
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
                            "amount": o.amount.normalize().to_string(),
                        }),
                        ..AuditInput::default()
                    },
                    at,
                )?;
            }
            let mut frozen = vec![];
            // Seen before (a re-index): its consequences were applied then.
            if inserted == 1 && class.trips_kill_switch() {
                let scopes: Vec<Scope> = match self.model.on_unexplained_outflow {
                    OutflowAction::AlertOnly => vec![],
                    OutflowAction::FreezeOrg => vec![Scope::Org],
                    OutflowAction::FreezeWallet => vec![Scope::Wallet(o.wallet.clone())],
                    OutflowAction::FreezeWalletAgents => std::iter::once(Scope::Wallet(o.wallet.clone()))
                        .chain(self.model.agents_of_wallet(&o.wallet).map(|a| Scope::Agent(a.id.clone())))
                        .collect(),
                };
                let reason = format!("{} outflow from wallet {}", class.as_str(), o.wallet);
                // The finding first, then the freezes it causes (each records a kill_switch event).
                self.record_event(
                    "unexplained_outflow",
                    approved.as_ref().map(|a| a.decision_id.as_str()),
                    &format!("{reason}: {}", evidence(&o)),
                    at,
                )?;
                for scope in scopes {
                    let freeze = Freeze {
                        scope: scope.clone(),
                        frozen_by: "reconciler".into(),
                        reason: reason.clone(),
                        frozen_at: at,
                        evidence: Some(evidence(&o)),
                    };
                    if matches!(self.freeze(freeze)?, FreezeOutcome::Frozen(_)) {
                        frozen.push(scope);
                    }
                }
            }
            findings.push(crate::ledger::Finding {
                outflow: o,
                class,
                decision_id: approved.map(|a| a.decision_id),
                frozen,
            });
        }
        Ok(findings)
    }

    pub(crate) fn rewind(&mut self, chain: &str, from: u64, at: DateTime<Utc>) -> StoreResult<Vec<String>> {
        let reopened: Vec<String> = {
            let mut stmt = self.conn.prepare_cached(
                "SELECT id FROM decisions WHERE chain = ?1 AND status = 'confirmed' AND block >= ?2 ORDER BY seq",
            )?;
            let rows = stmt.query_map(params![chain, from as i64], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        for id in &reopened {
            self.set_status(id, SpendStatus::Broadcast, at, None)?;
            // Re-send at once: the orphaned block may have taken the transaction with it.
            self.conn.execute(
                "UPDATE decisions SET block = NULL, updated_at_us = 0, broadcast_at_us = ?2 WHERE id = ?1",
                params![id, to_us(at)],
            )?;
        }
        self.conn.execute("DELETE FROM outflows WHERE chain = ?1 AND block >= ?2", params![chain, from as i64])?;
        self.conn.execute("DELETE FROM chain_blocks WHERE chain = ?1 AND number >= ?2", params![chain, from as i64])?;
        self.record_event(
            "reorg",
            None,
            &format!(
                "chain {chain}: blocks from {from} left the canonical chain; {} decision(s) reopened",
                reopened.len()
            ),
            at,
        )?;
        Ok(reopened)
    }

    pub(crate) fn record_event(
        &mut self,
        kind: &str,
        id: Option<&str>,
        detail: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.conn.execute(
            "INSERT INTO events (at_us, kind, decision_id, detail) VALUES (?1, ?2, ?3, ?4)",
            params![to_us(at), kind, id, detail],
        )?;
        let event_id = self.conn.last_insert_rowid();
        self.audit(
            AuditInput {
                kind: "event",
                actor: "spendguard",
                decision_id: id,
                detail: serde_json::json!({"event_id": event_id, "event": kind, "detail": detail}),
                ..AuditInput::default()
            },
            at,
        )?;
        Ok(())
    }

    pub(crate) fn claim_delivery(
        &mut self,
        event_id: i64,
        channel: &str,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let changed = self.conn.execute(
            "INSERT INTO alert_deliveries (event_id, channel, attempts, next_attempt_us) VALUES (?1, ?2, 0, ?3)
             ON CONFLICT (event_id, channel) DO UPDATE SET next_attempt_us = excluded.next_attempt_us
             WHERE delivered_at_us IS NULL AND next_attempt_us <= ?4",
            params![event_id, channel, to_us(lease_until), to_us(now)],
        )?;
        Ok(changed == 1)
    }

    pub(crate) fn record_delivery(
        &mut self,
        event_id: i64,
        channel: &str,
        outcome: Result<(), String>,
        next_attempt: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let (delivered, error) = match outcome {
            Ok(()) => (Some(to_us(at)), None),
            Err(e) => (None, Some(e)),
        };
        self.conn.execute(
            "INSERT INTO alert_deliveries (event_id, channel, attempts, delivered_at_us, last_error, next_attempt_us)
             VALUES (?1, ?2, 1, ?3, ?4, ?5)
             ON CONFLICT (event_id, channel) DO UPDATE SET attempts = attempts + 1,
                delivered_at_us = excluded.delivered_at_us, last_error = excluded.last_error,
                next_attempt_us = excluded.next_attempt_us",
            params![event_id, channel, delivered, error, to_us(next_attempt)],
        )?;
        self.audit(
            AuditInput {
                kind: "alert_delivery",
                actor: "spendguard",
                detail: serde_json::json!({"event_id": event_id, "channel": channel, "delivered": delivered.is_some(), "error": error}),
                ..AuditInput::default()
            },
            at,
        )?;
        Ok(())
    }

    pub(crate) fn add_agent_token(&mut self, agent: &str, hash: &str, at: DateTime<Utc>) -> StoreResult<()> {
        if self.model.agent(agent).is_none() {
            return Err(StoreError::UnknownScope { kind: "agent", id: agent.to_string() });
        }
        self.conn.execute(
            "INSERT INTO agent_tokens (token_hash, agent, created_at_us) VALUES (?1, ?2, ?3)",
            params![hash, agent, to_us(at)],
        )?;
        self.audit(
            AuditInput {
                kind: "agent_token",
                actor: "cli",
                agent: Some(agent),
                detail: serde_json::json!({"token_hash_prefix": &hash[..hash.len().min(12)]}),
                ..AuditInput::default()
            },
            at,
        )?;
        Ok(())
    }

    pub(crate) fn revoke_agent(&mut self, agent: &str, by: &str, at: DateTime<Utc>) -> StoreResult<usize> {
        let revoked = self.conn.execute(
            "UPDATE agent_tokens SET revoked_at_us = ?1 WHERE agent = ?2 AND revoked_at_us IS NULL",
            params![to_us(at), agent],
        )?;
        self.audit(
            AuditInput {
                kind: "agent_revoked",
                actor: by,
                agent: Some(agent),
                detail: serde_json::json!({"tokens_revoked": revoked}),
                ..AuditInput::default()
            },
            at,
        )?;
        Ok(revoked)
    }

    /// Appends to the audit log, in this job's transaction.
    pub(crate) fn audit(&mut self, entry: AuditInput<'_>, at: DateTime<Utc>) -> StoreResult<()> {
        crate::audit::append(&self.conn, entry, at).map(|_| ())
    }

    /// Appends an entry about a decision, naming its agent, wallet and USD value.
    fn audit_decision(
        &mut self,
        kind: &str,
        actor: &str,
        d: &DecisionRecord,
        detail: serde_json::Value,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.audit(
            AuditInput {
                kind,
                actor,
                decision_id: Some(&d.id),
                agent: Some(&d.agent),
                wallet: Some(&d.wallet),
                usd: d.usd.as_deref(),
                detail,
            },
            at,
        )
    }

    /// Refuses a decision whose stored intent no longer hashes to what was bound when it was
    /// made: someone changed what would be paid after it was decided (or approved).
    pub(crate) fn check_intent(&self, d: &DecisionRecord) -> StoreResult<()> {
        let bound: Option<String> =
            self.conn.query_row("SELECT intent_hash FROM decisions WHERE id = ?1", params![d.id], |r| r.get(0))?;
        // Decisions made before intent hashes existed have none to check.
        match bound {
            Some(bound) if bound != intent_hash_of(d) => Err(StoreError::IntentChanged(d.id.clone())),
            _ => Ok(()),
        }
    }
}

/// The agent a scope names, for the audit log.
fn scope_agent(scope: &Scope) -> Option<&str> {
    match scope {
        Scope::Agent(a) => Some(a),
        _ => None,
    }
}

/// The wallet a scope names, for the audit log.
fn scope_wallet(scope: &Scope) -> Option<&str> {
    match scope {
        Scope::Wallet(w) => Some(w),
        _ => None,
    }
}

/// What a decision pays, as bound by its intent hash.
pub(crate) struct Intent<'a> {
    pub(crate) id: &'a str,
    pub(crate) agent: &'a str,
    pub(crate) wallet: &'a str,
    pub(crate) chain: Option<&'a str>,
    pub(crate) asset: Option<&'a str>,
    pub(crate) recipient: &'a str,
    pub(crate) amount: &'a str,
    pub(crate) operation: Option<&'a str>,
    pub(crate) memo: Option<&'a str>,
}

/// SHA-256 over every field of an intent, each length-prefixed so no two intents collide.
pub(crate) fn intent_hash(i: &Intent<'_>) -> String {
    let mut h = Sha256::new();
    for part in [
        i.id,
        i.agent,
        i.wallet,
        i.chain.unwrap_or(""),
        i.asset.unwrap_or(""),
        i.recipient,
        i.amount,
        i.operation.unwrap_or(""),
        i.memo.unwrap_or(""),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The intent hash of a stored decision, from its fields as they are now.
pub fn intent_hash_of(d: &DecisionRecord) -> String {
    intent_hash(&Intent {
        id: &d.id,
        agent: &d.agent,
        wallet: &d.wallet,
        chain: d.chain.as_deref(),
        asset: d.asset.as_deref(),
        recipient: &d.recipient,
        amount: &d.amount,
        operation: d.operation.as_deref(),
        memo: d.memo.as_deref(),
    })
}

/// Hash of everything that makes two requests "the same" for idempotency (not the time).
fn request_hash(r: &spendguard_core::SpendRequest, memo: Option<&str>) -> String {
    let mut h = Sha256::new();
    for part in [
        r.wallet.as_str(),
        r.to.as_str(),
        &fmt_units(r.amount),
        r.asset.as_deref().unwrap_or(""),
        r.operation.as_deref().unwrap_or(""),
        memo.unwrap_or(""),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

const ENTRY_COLUMNS: &str = "seq, created_at_us, agent, department, wallet, asset, operation, amount, usd, status";

/// Reads column `i` as text and parses it; a value that does not parse is reported as a
/// conversion failure naming the column, as SQLite type errors are.
fn parsed<T>(r: &Row<'_>, i: usize, parse: impl FnOnce(&str) -> Option<T>) -> rusqlite::Result<T> {
    let text: String = r.get(i)?;
    parse(&text).ok_or_else(|| conversion_error(r, i, format!("unreadable value {text:?}")))
}

fn parsed_opt<T>(r: &Row<'_>, i: usize, parse: impl FnOnce(&str) -> Option<T>) -> rusqlite::Result<Option<T>> {
    match r.get::<_, Option<String>>(i)? {
        None => Ok(None),
        Some(text) => {
            parse(&text).map(Some).ok_or_else(|| conversion_error(r, i, format!("unreadable value {text:?}")))
        }
    }
}

fn time_col(r: &Row<'_>, i: usize) -> rusqlite::Result<DateTime<Utc>> {
    let us: i64 = r.get(i)?;
    DateTime::from_timestamp_micros(us).ok_or_else(|| conversion_error(r, i, format!("timestamp {us} out of range")))
}

fn time_col_opt(r: &Row<'_>, i: usize) -> rusqlite::Result<Option<DateTime<Utc>>> {
    match r.get::<_, Option<i64>>(i)? {
        None => Ok(None),
        Some(_) => time_col(r, i).map(Some),
    }
}

fn json_col<T: serde::de::DeserializeOwned>(r: &Row<'_>, i: usize) -> rusqlite::Result<T> {
    let text: String = r.get(i)?;
    serde_json::from_str(&text).map_err(|e| conversion_error(r, i, e.to_string()))
}

fn conversion_error(r: &Row<'_>, i: usize, why: String) -> rusqlite::Error {
    let column = r.as_ref().column_name(i).map_or_else(|_| format!("column {i}"), str::to_string);
    rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, format!("{column}: {why}").into())
}

fn entry_from_row(r: &Row<'_>) -> rusqlite::Result<(LedgerEntry, SpendStatus)> {
    let status = parsed(r, 9, SpendStatus::parse)?;
    let usd = parsed_opt(r, 8, decimal_from_store)?;
    if usd.is_none() && status.counts_as().is_some() {
        return Err(conversion_error(r, 8, "a counting decision has no USD value".into()));
    }
    let entry = LedgerEntry {
        seq: r.get(0)?,
        at: time_col(r, 1)?,
        agent: r.get(2)?,
        department: r.get(3)?,
        wallet: r.get(4)?,
        asset: r.get::<_, Option<String>>(5)?.unwrap_or_default(),
        operation: r.get(6)?,
        amount: parsed(r, 7, decimal_from_store)?,
        usd: usd.unwrap_or_default(),
        state: status.counts_as().unwrap_or(spendguard_core::usage::EntryState::Reserved),
    };
    Ok((entry, status))
}

fn load_entries(conn: &Connection, filter: &str, arg: i64) -> StoreResult<Vec<(LedgerEntry, SpendStatus)>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {ENTRY_COLUMNS} FROM decisions WHERE {filter}"))?;
    let rows = stmt.query_map(params![arg], entry_from_row)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

pub(crate) fn load_freezes(conn: &Connection) -> StoreResult<Vec<Freeze>> {
    let mut stmt = conn.prepare_cached(
        "SELECT scope, frozen_by, reason, frozen_at_us, evidence FROM freezes ORDER BY frozen_at_us, scope",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, Option<String>>(4)?,
        ))
    })?;
    let mut out = vec![];
    for row in rows {
        let (scope, frozen_by, reason, at, evidence) = row?;
        let scope = Scope::parse(&scope).ok_or_else(|| StoreError::Corrupt(format!("frozen scope {scope:?}")))?;
        out.push(Freeze { scope, frozen_by, reason, frozen_at: from_us(at)?, evidence });
    }
    Ok(out)
}

const DECISION_COLUMNS: &str =
    "id, seq, created_at_us, updated_at_us, agent, wallet, department, chain, asset, recipient,
    amount, usd, price_usd, operation, memo, merchant, category, decision, tier, status, reasons, headroom,
    execute_after_us, approval_expires_us, approver_role, idempotency_key, nonce, tx_hash, fee_cap, fee_terms, block,
    fee_paid, failure, intent_hash, approved_by, approved_at_us";

fn decision_from_row(r: &Row<'_>) -> rusqlite::Result<DecisionRecord> {
    Ok(DecisionRecord {
        id: r.get(0)?,
        seq: r.get(1)?,
        created_at: time_col(r, 2)?,
        updated_at: time_col(r, 3)?,
        agent: r.get(4)?,
        wallet: r.get(5)?,
        department: r.get(6)?,
        chain: r.get(7)?,
        asset: r.get(8)?,
        recipient: r.get(9)?,
        amount: r.get(10)?,
        usd: r.get(11)?,
        price_usd: r.get(12)?,
        operation: r.get(13)?,
        memo: r.get(14)?,
        merchant: r.get(15)?,
        category: r.get(16)?,
        decision: parsed(r, 17, Decision::parse)?,
        tier: parsed(r, 18, Tier::parse)?,
        status: parsed(r, 19, SpendStatus::parse)?,
        reasons: json_col(r, 20)?,
        headroom: json_col(r, 21)?,
        execute_after: time_col_opt(r, 22)?,
        approval_expires_at: time_col_opt(r, 23)?,
        approver_role: r.get(24)?,
        idempotency_key: r.get(25)?,
        nonce: r.get::<_, Option<i64>>(26)?.map(|n| n as u64),
        tx_hash: r.get(27)?,
        fee_cap: r.get(28)?,
        fee_terms: r.get(29)?,
        block: r.get::<_, Option<i64>>(30)?.map(|n| n as u64),
        fee_paid: r.get(31)?,
        failure: r.get(32)?,
        intent_hash: r.get(33)?,
        approved_by: r.get(34)?,
        approved_at: time_col_opt(r, 35)?,
    })
}

pub(crate) fn load_decision(conn: &Connection, id: &str) -> StoreResult<Option<DecisionRecord>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {DECISION_COLUMNS} FROM decisions WHERE id = ?1"))?;
    Ok(stmt.query_row(params![id], decision_from_row).optional()?)
}

pub(crate) fn load_decisions(conn: &Connection, agent: Option<&str>) -> StoreResult<Vec<DecisionRecord>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {DECISION_COLUMNS} FROM decisions WHERE ?1 IS NULL OR agent = ?1 ORDER BY seq"
    ))?;
    let rows = stmt.query_map(params![agent], decision_from_row)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

pub(crate) fn load_by_status(conn: &Connection, statuses: &[SpendStatus]) -> StoreResult<Vec<DecisionRecord>> {
    let list = statuses.iter().map(|s| format!("'{}'", s.as_str())).collect::<Vec<_>>().join(", ");
    let mut stmt = conn
        .prepare_cached(&format!("SELECT {DECISION_COLUMNS} FROM decisions WHERE status IN ({list}) ORDER BY seq"))?;
    let rows = stmt.query_map([], decision_from_row)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

pub(crate) fn load_signed(conn: &Connection, id: &str) -> StoreResult<Option<SignedRecord>> {
    let row = conn
        .prepare_cached(
            "SELECT tx_hash, raw_tx, nonce, fee_cap, fee_terms FROM decisions WHERE id = ?1 AND raw_tx IS NOT NULL",
        )?
        .query_row(params![id], |r| {
            Ok(SignedRecord {
                hash: r.get(0)?,
                raw: r.get(1)?,
                sequence: r.get::<_, Option<i64>>(2)?.map(|n| n as u64),
                fee_cap: parsed(r, 3, decimal_from_store)?,
                fee_terms: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
            })
        })
        .optional()?;
    Ok(row)
}

pub(crate) fn agent_for_token(conn: &Connection, hash: &str) -> StoreResult<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT agent FROM agent_tokens WHERE token_hash = ?1 AND revoked_at_us IS NULL")?
        .query_row(params![hash], |r| r.get(0))
        .optional()?)
}

fn event_from_row(r: &Row<'_>) -> rusqlite::Result<crate::ledger::Event> {
    Ok(crate::ledger::Event {
        id: r.get(0)?,
        kind: r.get(1)?,
        at: time_col(r, 2)?,
        decision_id: r.get(3)?,
        detail: r.get(4)?,
    })
}

pub(crate) fn load_all_events(conn: &Connection) -> StoreResult<Vec<crate::ledger::Event>> {
    let mut stmt = conn.prepare_cached("SELECT id, kind, at_us, decision_id, detail FROM events ORDER BY id")?;
    let rows = stmt.query_map([], event_from_row)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

pub(crate) fn load_events(conn: &Connection, kind: &str) -> StoreResult<Vec<crate::ledger::Event>> {
    let mut stmt =
        conn.prepare_cached("SELECT id, kind, at_us, decision_id, detail FROM events WHERE kind = ?1 ORDER BY id")?;
    let rows = stmt.query_map(params![kind], event_from_row)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

pub(crate) fn chain_cursor(conn: &Connection, chain: &str) -> StoreResult<Option<u64>> {
    let top: Option<i64> =
        conn.query_row("SELECT max(number) FROM chain_blocks WHERE chain = ?1", params![chain], |r| r.get(0))?;
    Ok(top.map(|n| n as u64 + 1))
}

pub(crate) fn wallet_cursor(conn: &Connection, chain: &str, address: &str) -> StoreResult<Option<(String, u64)>> {
    Ok(conn
        .query_row(
            "SELECT signature, slot FROM wallet_cursors WHERE chain = ?1 AND address = ?2",
            params![chain, address],
            |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)),
        )
        .optional()?)
}

pub(crate) fn stored_block_hash(conn: &Connection, chain: &str, number: u64) -> StoreResult<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT hash FROM chain_blocks WHERE chain = ?1 AND number = ?2",
            params![chain, number as i64],
            |r| r.get(0),
        )
        .optional()?)
}

pub(crate) fn undelivered(
    conn: &Connection,
    channel: &str,
    kinds: &[String],
    now: DateTime<Utc>,
    max_attempts: u32,
) -> StoreResult<Vec<crate::ledger::Event>> {
    let mut stmt = conn.prepare_cached(
        "SELECT e.id, e.kind, e.at_us, e.decision_id, e.detail FROM events e
         LEFT JOIN alert_deliveries d ON d.event_id = e.id AND d.channel = ?1
         WHERE d.delivered_at_us IS NULL AND (d.event_id IS NULL OR (d.next_attempt_us <= ?2 AND d.attempts < ?3))
         ORDER BY e.id",
    )?;
    let rows = stmt.query_map(params![channel, to_us(now), max_attempts], event_from_row)?;
    let all: Vec<crate::ledger::Event> = rows.collect::<Result<_, _>>()?;
    Ok(all.into_iter().filter(|e| kinds.contains(&e.kind)).collect())
}

pub(crate) fn delivery(
    conn: &Connection,
    event_id: i64,
    channel: &str,
) -> StoreResult<Option<(u32, bool, Option<String>)>> {
    Ok(conn
        .query_row(
            "SELECT attempts, delivered_at_us IS NOT NULL, last_error FROM alert_deliveries WHERE event_id = ?1 AND channel = ?2",
            params![event_id, channel],
            |r| Ok((r.get::<_, i64>(0)? as u32, r.get(1)?, r.get(2)?)),
        )
        .optional()?)
}

pub(crate) fn load_outflows(conn: &Connection, chain: &str) -> StoreResult<Vec<crate::ledger::RecordedOutflow>> {
    query_outflows(conn, Some(chain))
}

pub(crate) fn load_all_outflows(conn: &Connection) -> StoreResult<Vec<crate::ledger::RecordedOutflow>> {
    query_outflows(conn, None)
}

fn query_outflows(conn: &Connection, chain: Option<&str>) -> StoreResult<Vec<crate::ledger::RecordedOutflow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT block, tx_hash, idx, kind, wallet, recipient, asset, token, amount, class, decision_id, chain, seen_at_us
         FROM outflows WHERE ?1 IS NULL OR chain = ?1 ORDER BY chain, block, tx_hash, kind, idx",
    )?;
    let rows = stmt.query_map(params![chain], |r| {
        Ok(crate::ledger::RecordedOutflow {
            block: r.get::<_, i64>(0)? as u64,
            tx_hash: r.get(1)?,
            index: r.get::<_, i64>(2)? as u64,
            kind: r.get(3)?,
            wallet: r.get(4)?,
            recipient: r.get(5)?,
            asset: r.get(6)?,
            token: r.get(7)?,
            amount: parsed(r, 8, decimal_from_store)?,
            class: r.get(9)?,
            decision_id: r.get(10)?,
            chain: r.get(11)?,
            seen_at: time_col_opt(r, 12)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
