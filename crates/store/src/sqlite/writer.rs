//! The writer thread: the write connection, the in-memory usage index and freezes, and the
//! group-commit loop that runs jobs in batches of one transaction each.

use super::Counters;
use crate::error::{StoreError, StoreResult};
use crate::records::LedgerOptions;
use crate::sql::{params, Connection};
use crate::sqlite::rows::{entry_from_row, load_entries, load_freezes, to_us, ENTRY_COLUMNS};
use chrono::{DateTime, TimeDelta, Utc};
use rusqlite::OpenFlags;
use spendguard_core::usage::{LedgerEntry, UsageIndex};
use spendguard_core::{Freeze, Model, SpendStatus};
use std::cell::Cell;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use tokio::sync::oneshot;

/// Idempotency keys are kept at least 24 hours (the contract); we keep them 48.
const IDEMPOTENCY_RETENTION: TimeDelta = TimeDelta::hours(48);
/// After this many batches, the next one that writes also prunes the index and the idempotency
/// table.
const PRUNE_EVERY: u64 = 1024;

/// Opens a connection the way every connection of a ledger is opened: WAL, `synchronous =
/// FULL`, foreign keys, and a busy handler that polls often.
pub(crate) fn connect(path: &Path, options: &LedgerOptions) -> StoreResult<rusqlite::Connection> {
    let open_err = |source| StoreError::Open { path: path.to_path_buf(), source };
    let conn = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(open_err)?;
    install_busy_handler(&conn, options.busy_timeout).map_err(open_err)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(open_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Unusable(format!("{} cannot use WAL journaling (got {mode})", path.display())));
    }
    // FULL: a committed decision survives power loss. This is money.
    conn.pragma_update(None, "synchronous", "FULL").map_err(open_err)?;
    conn.pragma_update(None, "foreign_keys", true).map_err(open_err)?;
    // The writer runs each job of a batch in a savepoint, which copies every page the job is
    // the first to change into a statement journal; in memory that is a copy, on disk (the
    // default) a write to a temporary file per page per job.
    conn.pragma_update(None, "temp_store", "MEMORY").map_err(open_err)?;
    // A decision touches about ten B-tree pages; 16 MiB keeps the hot ones cached instead of
    // read back.
    conn.pragma_update(None, "cache_size", -16384).map_err(open_err)?;
    // The commit that crosses this many WAL frames copies them back into the file (and fsyncs
    // it): rarer and larger copies share the pages each decision rewrites (its tables' last
    // leaves). Measured with `cargo bench -p spendguard-store --bench reserve` (BENCHMARKS.md).
    conn.pragma_update(None, "wal_autocheckpoint", 8000).map_err(open_err)?;
    // The writer keeps its statements prepared (rusqlite's cache holds 16 by default, fewer
    // than the writer's jobs use between them, so a mix of jobs would keep re-parsing them).
    conn.set_prepared_statement_cache_capacity(128);
    Ok(conn)
}

/// Connects to the PostgreSQL ledger at `url`.
pub(crate) fn connect_postgres(url: &str) -> StoreResult<postgres::Client> {
    postgres::Client::connect(url, postgres::NoTls)
        .map_err(|e| StoreError::Unusable(format!("cannot connect to the PostgreSQL ledger: {e}")))
}

/// How often a connection waiting for another process's write lock tries again. SQLite's own
/// handler backs off to 100 ms sleeps, so a process that commits back to back (our writer under
/// load) would starve the others; polling this often lets them in at the writer's pauses.
const BUSY_POLL: std::time::Duration = std::time::Duration::from_micros(250);
/// After writing back to back this long, the writer pauses for [`WRITER_PAUSE`].
const WRITER_TURN: std::time::Duration = std::time::Duration::from_millis(20);
/// Longer than [`BUSY_POLL`], so a waiting process is sure to try during it.
const WRITER_PAUSE: std::time::Duration = std::time::Duration::from_micros(400);

thread_local! {
    /// Retries before a waiting connection gives up: `busy_timeout / BUSY_POLL`. SQLite takes
    /// the handler as a plain function, so the limit lives here, per thread: each ledger's
    /// connections run on threads of their own, which set it from that ledger's options.
    static BUSY_RETRY_LIMIT: Cell<i32> = const { Cell::new(120_000) };
}

/// Makes connections used on this thread wait at most `timeout` for another's write lock.
pub(crate) fn set_busy_timeout(timeout: std::time::Duration) {
    let retries = (timeout.as_micros() / BUSY_POLL.as_micros()).clamp(1, i32::MAX as u128) as i32;
    BUSY_RETRY_LIMIT.with(|limit| limit.set(retries));
}

fn install_busy_handler(conn: &rusqlite::Connection, timeout: std::time::Duration) -> rusqlite::Result<()> {
    set_busy_timeout(timeout);
    conn.busy_handler(Some(|retries_so_far| {
        if retries_so_far >= BUSY_RETRY_LIMIT.with(Cell::get) {
            return false;
        }
        std::thread::sleep(BUSY_POLL);
        true
    }))
}

/// What a job hands back once its batch committed (`None`) or rolled back (`Some(why)`).
type Deliver = Box<dyn FnOnce(Option<&str>) + Send>;

/// A job's work inside the batch: whether it succeeded, and how to answer once the batch ends.
type Run = Box<dyn FnOnce(&mut Writer) -> (bool, Deliver) + Send>;

/// One request for the writer: work to run inside a batch, and where to send its answer.
pub(crate) struct Job {
    /// Whether the work may write; a batch of jobs that only read takes no write lock.
    writes: bool,
    /// Runs the work.
    run: Run,
    /// Answers without running (the batch could not even start).
    fail: Box<dyn FnOnce(&str) + Send>,
}

impl Job {
    /// A job running `work`, answered on `reply` after the commit.
    pub(crate) fn new<T: Send + 'static>(
        work: impl FnOnce(&mut Writer) -> StoreResult<T> + Send + 'static,
        reply: oneshot::Sender<StoreResult<T>>,
    ) -> Job {
        Job::with_access(true, work, reply)
    }

    /// A job whose `work` only reads the database (a dry run against the usage index); answered
    /// on `reply` once its batch ends.
    pub(crate) fn reading<T: Send + 'static>(
        work: impl FnOnce(&mut Writer) -> StoreResult<T> + Send + 'static,
        reply: oneshot::Sender<StoreResult<T>>,
    ) -> Job {
        Job::with_access(false, work, reply)
    }

    fn with_access<T: Send + 'static>(
        writes: bool,
        work: impl FnOnce(&mut Writer) -> StoreResult<T> + Send + 'static,
        reply: oneshot::Sender<StoreResult<T>>,
    ) -> Job {
        // Exactly one of `run` and `fail` is called; both need the sender.
        let reply = Arc::new(std::sync::Mutex::new(Some(reply)));
        let on_fail = Arc::clone(&reply);
        let send = |slot: &std::sync::Mutex<Option<oneshot::Sender<StoreResult<T>>>>, result| {
            if let Some(tx) = slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
                // A caller that stopped waiting is no concern of ours.
                let _ = tx.send(result);
            }
        };
        Job {
            writes,
            run: Box::new(move |writer| {
                let result = work(writer);
                let ok = result.is_ok();
                let deliver: Deliver = Box::new(move |rolled_back| {
                    let result = match (result, rolled_back) {
                        (Ok(_), Some(why)) => Err(StoreError::NotCommitted(why.to_string())),
                        (r, _) => r,
                    };
                    send(&reply, result);
                });
                (ok, deliver)
            }),
            fail: Box::new(move |why| send(&on_fail, Err(StoreError::NotCommitted(why.to_string())))),
        }
    }
}

/// The writer thread's state.
pub(crate) struct Writer {
    pub(crate) conn: Connection,
    pub(crate) model: Arc<Model>,
    pub(crate) index: UsageIndex,
    pub(crate) freezes: Vec<Freeze>,
    /// Highest change_seq applied to the index.
    last_change_seq: i64,
    /// `PRAGMA data_version` after our last look: it changes only when another connection
    /// commits. On PostgreSQL the change counter, as last read or set by our own commit.
    data_version: i64,
    /// The index holds every counting decision made at or after this instant.
    pub(crate) loaded_from: DateTime<Utc>,
    /// The longest span any window reaches back.
    horizon: TimeDelta,
    latest_request: DateTime<Utc>,
    /// The index may not match the database (a commit failed); reload it fully.
    dirty: bool,
    /// Change sequence of the current batch, once a job wrote.
    batch_seq: Option<i64>,
    /// Set when a job left the transaction in an unknown state: the batch must roll back.
    abort: Option<String>,
    /// Batches since the last pruning.
    batches: u64,
    /// Bumped whenever the index or the freezes change in memory: a job that fails after
    /// changing them leaves memory ahead of the rolled-back database.
    pub(crate) memory_writes: u64,
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

/// Decisions are recorded to the microsecond; requests are evaluated at that precision too, so
/// an evaluation and its stored decision agree on every window edge.
pub(crate) fn truncate_to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// How long the writer watches its queue before it sleeps on it: a caller that gets its answer
/// usually asks again within this, and a thread put to sleep costs both sides a futex call and
/// a context switch (tens of microseconds on a virtual machine) to wake.
const WATCH_BEFORE_SLEEP: std::time::Duration = std::time::Duration::from_micros(60);

/// The next job, watching the queue for [`WATCH_BEFORE_SLEEP`] before sleeping on it; `None`
/// once every sender is gone.
fn next_job(jobs: &mpsc::Receiver<Job>) -> Option<Job> {
    let watching = std::time::Instant::now();
    while watching.elapsed() < WATCH_BEFORE_SLEEP {
        match jobs.try_recv() {
            Ok(job) => return Some(job),
            Err(mpsc::TryRecvError::Disconnected) => return None,
            // Yielding, not spinning: on a small machine the thread that will ask again, or
            // the kernel writing back the pages just committed, may need this core.
            Err(mpsc::TryRecvError::Empty) => std::thread::yield_now(),
        }
    }
    jobs.recv().ok()
}

impl Writer {
    pub(crate) fn open(
        path: &Path,
        model: Arc<Model>,
        now: DateTime<Utc>,
        options: &LedgerOptions,
        counters: Arc<Counters>,
    ) -> StoreResult<Writer> {
        super::file::prepare(path, options, super::file::Creation::IfMissing)?;
        let mut conn = connect(path, options)?;
        if conn.is_readonly(rusqlite::DatabaseName::Main)? {
            return Err(StoreError::ReadOnly(path.to_path_buf()));
        }
        super::schema::migrate(&mut conn)?;
        Writer::start(Connection::sqlite(conn), model, now, counters)
    }

    /// The writer of a PostgreSQL ledger at `url`, migrating it first.
    pub(crate) fn open_postgres(
        url: &str,
        model: Arc<Model>,
        now: DateTime<Utc>,
        counters: Arc<Counters>,
    ) -> StoreResult<Writer> {
        let mut client = connect_postgres(url)?;
        crate::postgres::schema::migrate(&mut client)?;
        Writer::start(Connection::postgres(client), model, now, counters)
    }

    fn start(conn: Connection, model: Arc<Model>, now: DateTime<Utc>, counters: Arc<Counters>) -> StoreResult<Writer> {
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
            memory_writes: 0,
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
                    match next_job(&jobs) {
                        Some(job) => job,
                        None => return,
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
        // Dry runs alone read a snapshot: they neither wait for nor hold up another process's
        // writer (nor, writing nothing, cost an fsync).
        let writes = batch.iter().any(|job| job.writes);
        let begin = match (self.conn.is_postgres(), writes) {
            (false, true) => "BEGIN IMMEDIATE",
            (false, false) => "BEGIN DEFERRED",
            // Every daemon's writer takes this one row lock first: one writes at a time, and it
            // sees every transaction committed before it (READ COMMITTED reads the latest).
            (true, true) => "BEGIN; SELECT value FROM meta WHERE key = 'change_seq' FOR UPDATE",
            (true, false) => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        };
        if let Err(e) = self.conn.run(begin) {
            return fail_all(batch, &e.to_string());
        }
        if let Err(e) = self.refresh() {
            let _ = self.conn.execute_batch("ROLLBACK");
            self.dirty = true;
            return fail_all(batch, &e.to_string());
        }
        self.batch_seq = None;
        let mut done = Vec::with_capacity(batch.len());
        // A job alone needs no savepoint (two statements, on PostgreSQL two round trips): if it
        // fails, the whole transaction is rolled back instead.
        let mut failed_alone = false;
        match <[Job; 1]>::try_from(batch) {
            Ok([job]) => {
                let (ok, deliver) = self.run_unguarded(job);
                failed_alone = !ok;
                done.push(deliver);
            }
            Err(batch) => {
                for job in batch {
                    done.push(self.run_job(job));
                }
            }
        }
        self.batches += 1;
        // Only a batch holding the write lock prunes: a read-only one must not start writing.
        if writes && self.batches >= PRUNE_EVERY {
            self.batches = 0;
            // Pruning is housekeeping: a failure leaves extra rows, never wrong answers.
            let _ = self.prune();
        }
        if failed_alone && self.abort.is_none() {
            // Nothing of it stands; the job's own error is what its caller hears.
            if self.conn.execute_batch("ROLLBACK").is_err() {
                self.dirty = true;
            }
            self.batch_seq = None;
            return done.into_iter().for_each(|deliver| deliver(None));
        }
        let committed = match self.abort.take() {
            Some(msg) => Err(msg),
            None => self.conn.run("COMMIT").map_err(|e| e.to_string()),
        };
        match committed {
            Ok(()) => {
                if let Some(cs) = self.batch_seq.take() {
                    self.last_change_seq = cs;
                    // On PostgreSQL the counter is how others' commits are noticed, and this
                    // batch moved it itself while holding its row lock: no one else's write
                    // is behind the new value, so the next batch need not reload anything.
                    if self.conn.is_postgres() {
                        self.data_version = cs;
                    }
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

    /// Runs a job that is alone in its transaction: no savepoint; the caller rolls the
    /// transaction back when it fails.
    fn run_unguarded(&mut self, job: Job) -> (bool, Deliver) {
        let memory_before = self.memory_writes;
        let (ok, deliver) = (job.run)(self);
        if !ok && self.memory_writes != memory_before {
            self.dirty = true;
        }
        (ok, deliver)
    }

    /// Runs one job inside its own savepoint, so a failing job leaves the others intact.
    fn run_job(&mut self, job: Job) -> Deliver {
        if let Err(e) = self.conn.run("SAVEPOINT job") {
            let msg = e.to_string();
            return Box::new(move |_| (job.fail)(&msg));
        }
        let seq_before = self.batch_seq;
        let memory_before = self.memory_writes;
        let (ok, deliver) = (job.run)(self);
        if !ok {
            // The savepoint takes back the counter bump too, if this job made it; what the job
            // changed in memory is reloaded from the database before the next batch.
            self.batch_seq = seq_before;
            if self.memory_writes != memory_before {
                self.dirty = true;
            }
        }
        let ended =
            if ok { self.conn.run("RELEASE job") } else { self.conn.execute_batch("ROLLBACK TO job; RELEASE job") };
        if let Err(e) = ended {
            // The transaction is in an unknown state: roll the whole batch back.
            self.abort = Some(e.to_string());
        }
        deliver
    }

    /// The change sequence of this batch, taken on the first write: batches that only read
    /// (dry runs) write nothing and so cost no fsync.
    pub(crate) fn change_seq(&mut self) -> StoreResult<i64> {
        if let Some(cs) = self.batch_seq {
            return Ok(cs);
        }
        let cs: i64 = self.conn.query_row(
            "UPDATE meta SET value = value + 1 WHERE key = 'change_seq' RETURNING value",
            params![],
            |r| r.get(0),
        )?;
        self.batch_seq = Some(cs);
        Ok(cs)
    }

    /// Brings the index and freezes up to date with the database, if anyone else wrote to it.
    fn refresh(&mut self) -> StoreResult<()> {
        // What changes when another connection commits: SQLite's data version; on PostgreSQL
        // the change counter, which every write to what is held here (decisions, freezes) bumps.
        let version: i64 = if self.conn.is_postgres() {
            self.conn.query_row("SELECT value FROM meta WHERE key = 'change_seq'", params![], |r| r.get(0))?
        } else {
            self.conn.query_row("PRAGMA data_version", params![], |r| r.get(0))?
        };
        if version == self.data_version && !self.dirty {
            return Ok(());
        }
        if self.dirty {
            self.index = UsageIndex::new();
            let rows = load_entries(&self.conn, "created_at_us >= ?1", to_us(self.loaded_from))?;
            self.index.upsert_all(counting(rows));
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
            self.conn.query_row("SELECT value FROM meta WHERE key = 'change_seq'", params![], |r| r.get(0))?;
        self.data_version = version;
        self.dirty = false;
        Ok(())
    }

    /// Makes sure the index reaches back far enough for a request at `at`.
    pub(crate) fn ensure_loaded(&mut self, at: DateTime<Utc>) -> StoreResult<()> {
        if at > self.latest_request {
            self.latest_request = at;
        }
        let needed = at - self.horizon;
        if needed >= self.loaded_from {
            return Ok(());
        }
        let rows = {
            let mut stmt = self.conn.prepare_cached(&format!(
                "SELECT {ENTRY_COLUMNS} FROM decisions WHERE created_at_us >= ?1 AND created_at_us < ?2"
            ))?;
            let rows = stmt.query_map(params![to_us(needed), to_us(self.loaded_from)], entry_from_row)?;
            rows.collect::<Result<Vec<_>, _>>()?
        };
        // Older than everything held: loaded in one go, each scope sorted once.
        self.index.upsert_all(counting(rows));
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
}

/// The entries of loaded rows whose status still counts against limits.
fn counting(rows: Vec<(LedgerEntry, SpendStatus)>) -> impl Iterator<Item = LedgerEntry> {
    rows.into_iter().filter(|(_, status)| status.counts_as().is_some()).map(|(entry, _)| entry)
}
