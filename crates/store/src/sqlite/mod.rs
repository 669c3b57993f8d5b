//! The ledger on an SQL database ([`SqlStore`]): an SQLite file in WAL mode with `synchronous =
//! FULL`, safe for several processes — the embedded default — or a PostgreSQL database several
//! daemons share. The logic is the same for both (through `crate::sql`); what differs is how a
//! connection opens and migrates, how a writing batch takes the write lock (`BEGIN IMMEDIATE`,
//! or the change counter's row lock on PostgreSQL) and how another process's commits are noticed
//! (`PRAGMA data_version`, or the change counter).
//!
//! Every write goes through one queue to the writer thread ([`writer`]), which owns the write
//! connection and an in-memory usage index, takes whatever is waiting (up to `max_batch` jobs)
//! into one `BEGIN IMMEDIATE` transaction, runs each job in turn (each sees the ones before
//! it) and commits once: one fsync for the whole group. Callers hear back on a oneshot channel
//! only after that commit is durable. Reads run on a small pool of reader threads with
//! connections of their own.
//!
//! One file per concern implements that concern's trait: [`decisions`], [`signing`],
//! [`authorizations`],
//! [`outflows`], [`outbox`], [`credentials`], [`freezes`], [`audit`], [`reports`], [`leases`]; [`rows`]
//! decodes rows, [`schema`] migrates, [`file`] creates the file whole and refuses to re-create
//! one that existed.

mod audit;
mod authorizations;
mod credentials;
mod decisions;
pub(crate) mod file;
mod freezes;
mod leases;
mod outbox;
mod outflows;
mod reports;
mod rows;
pub(crate) mod schema;
mod signing;
pub(crate) mod writer;

use crate::error::{StoreError, StoreResult};
use crate::records::{LedgerOptions, LedgerStats};
use crate::sql::{params, Connection};
use chrono::{DateTime, Utc};
use spendguard_core::Model;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use tokio::sync::oneshot;
pub(crate) use writer::Writer;

/// Reader threads: enough that a slow report does not hold up a token check.
const READERS: usize = 2;

/// Counts of the writer's work.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) transactions: AtomicU64,
    pub(crate) jobs: AtomicU64,
}

type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

/// The ledger on SQLite or PostgreSQL. Cheap to share behind an `Arc`; dropping the last handle
/// lets the writer finish what it holds and stop.
pub struct SqlStore {
    jobs: Option<mpsc::Sender<writer::Job>>,
    writer: Option<JoinHandle<()>>,
    reads: Option<mpsc::Sender<ReadJob>>,
    readers: Vec<JoinHandle<()>>,
    engine: &'static str,
    counters: Arc<Counters>,
}

impl SqlStore {
    /// `spendguard init`: creates a new, empty ledger at `path` where there is no file or an
    /// empty one (what a truncated ledger leaves); refuses a ledger, and an empty file whose
    /// write-ahead log still holds transactions.
    pub fn init(path: &Path, options: &LedgerOptions) -> StoreResult<()> {
        file::prepare(path, options, file::Creation::Initialise)
    }

    /// Opens the ledger at `path` for `model`, migrating it, or creating it when no file is
    /// there (the first start). An empty file is refused ([`StoreError::EmptyLedger`]): a
    /// ledger that existed is never re-created without `spendguard init`. `now` decides how far
    /// back the usage index is loaded.
    pub fn open(path: &Path, model: Arc<Model>, now: DateTime<Utc>, options: LedgerOptions) -> StoreResult<SqlStore> {
        let file = path.to_path_buf();
        let reader_options = options.clone();
        let connect = move || Ok(Connection::sqlite(writer::connect(&file, &reader_options)?));
        let file = path.to_path_buf();
        let writer_options = options.clone();
        SqlStore::start(
            "sqlite",
            move |counters| Writer::open(&file, model, now, &writer_options, counters),
            connect,
            options,
        )
    }

    /// Opens the PostgreSQL ledger at `url` (`postgres://…`) for `model`, migrating it first;
    /// several daemons may share it.
    pub fn open_postgres(
        url: &str,
        model: Arc<Model>,
        now: DateTime<Utc>,
        options: LedgerOptions,
    ) -> StoreResult<SqlStore> {
        let (writer_url, reader_url) = (url.to_string(), url.to_string());
        SqlStore::start(
            "postgres",
            move |counters| Writer::open_postgres(&writer_url, model, now, counters),
            move || Ok(Connection::postgres(writer::connect_postgres(&reader_url)?)),
            options,
        )
    }

    /// Starts the writer and reader threads; each opens its own connection on its own thread
    /// (the PostgreSQL client drives its own runtime, which must not run inside the caller's).
    fn start(
        engine: &'static str,
        open_writer: impl FnOnce(Arc<Counters>) -> StoreResult<Writer> + Send + 'static,
        connect: impl Fn() -> StoreResult<Connection> + Send + Sync + 'static,
        options: LedgerOptions,
    ) -> StoreResult<SqlStore> {
        let counters = Arc::new(Counters::default());
        let (tx, rx) = mpsc::channel();
        let max_batch = options.max_batch.max(1);
        let spawn_error = |e: std::io::Error| StoreError::Unusable(format!("cannot start a ledger thread: {e}"));
        let busy_timeout = options.busy_timeout;
        let (opened, ready) = mpsc::channel::<StoreResult<()>>();
        let writer_counters = Arc::clone(&counters);
        let writer_opened = opened.clone();
        let handle = std::thread::Builder::new()
            .name("spendguard-ledger".into())
            .spawn(move || {
                writer::set_busy_timeout(busy_timeout);
                let writer = match open_writer(writer_counters) {
                    Ok(w) => w,
                    Err(e) => {
                        let _ = writer_opened.send(Err(e));
                        return;
                    }
                };
                let _ = writer_opened.send(Ok(()));
                writer.run(rx, max_batch)
            })
            .map_err(spawn_error)?;
        // The writer migrates: readers connect once it has.
        ready.recv().map_err(|_| StoreError::Stopped)??;
        let (reads, queue) = mpsc::channel::<ReadJob>();
        let queue = Arc::new(Mutex::new(queue));
        let connect = Arc::new(connect);
        let mut readers = vec![];
        for i in 0..READERS {
            let queue = Arc::clone(&queue);
            let (connect, opened) = (Arc::clone(&connect), opened.clone());
            let reader = std::thread::Builder::new()
                .name(format!("spendguard-ledger-read-{i}"))
                .spawn(move || {
                    writer::set_busy_timeout(busy_timeout);
                    let conn = match connect() {
                        Ok(c) => c,
                        Err(e) => {
                            let _ = opened.send(Err(e));
                            return;
                        }
                    };
                    let _ = opened.send(Ok(()));
                    loop {
                        let job = queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).recv();
                        match job {
                            Ok(job) => job(&conn),
                            Err(_) => return,
                        }
                    }
                })
                .map_err(spawn_error)?;
            readers.push(reader);
        }
        let store = SqlStore { jobs: Some(tx), writer: Some(handle), reads: Some(reads), readers, engine, counters };
        for _ in 0..READERS {
            // Dropping `store` on an error stops the threads already running.
            ready.recv().map_err(|_| StoreError::Stopped)??;
        }
        Ok(store)
    }

    /// How many transactions the writer ran and how many jobs they held.
    pub fn stats(&self) -> LedgerStats {
        LedgerStats {
            transactions: self.counters.transactions.load(Ordering::Relaxed),
            jobs: self.counters.jobs.load(Ordering::Relaxed),
        }
    }

    /// SQLite's `synchronous` setting of this ledger's connections (2 = FULL).
    pub async fn synchronous(&self) -> StoreResult<i64> {
        self.read(|c| Ok(c.query_row("PRAGMA synchronous", params![], |r| r.get(0))?)).await
    }

    /// Runs `work` on the writer thread inside the next batch transaction; answers once the
    /// commit is durable (or with [`StoreError::NotCommitted`] when the batch rolled back).
    pub(crate) async fn write<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Writer) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let (reply, answer) = oneshot::channel();
        self.submit(writer::Job::new(work, reply), answer).await
    }

    /// Runs `work` on the writer thread in a batch of its own kind: it reads the database and the
    /// usage index but writes nothing, so a batch of such jobs takes no write lock.
    pub(crate) async fn dry<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Writer) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let (reply, answer) = oneshot::channel();
        self.submit(writer::Job::reading(work, reply), answer).await
    }

    /// Queues `job` for the writer thread and waits for its answer.
    async fn submit<T>(&self, job: writer::Job, answer: oneshot::Receiver<StoreResult<T>>) -> StoreResult<T> {
        self.jobs.as_ref().ok_or(StoreError::Stopped)?.send(job).map_err(|_| StoreError::Stopped)?;
        answer.await.map_err(|_| StoreError::Stopped)?
    }

    /// Runs `query` on a reader connection.
    pub(crate) async fn read<T: Send + 'static>(
        &self,
        query: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let (reply, answer) = oneshot::channel();
        let job: ReadJob = Box::new(move |conn| {
            // A caller that stopped waiting is no concern of ours.
            let _ = reply.send(query(conn));
        });
        self.reads.as_ref().ok_or(StoreError::Stopped)?.send(job).map_err(|_| StoreError::Stopped)?;
        answer.await.map_err(|_| StoreError::Stopped)?
    }
}

impl Drop for SqlStore {
    fn drop(&mut self) {
        // Closing the queues lets the threads finish what they hold and stop.
        self.jobs.take();
        self.reads.take();
        if let Some(handle) = self.writer.take() {
            let _ = handle.join();
        }
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

impl crate::api::Store for SqlStore {
    fn engine(&self) -> &'static str {
        self.engine
    }
}
