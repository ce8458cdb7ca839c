//! Storage: the only module with SQL in it.
//!
//! Two backends, chosen by the database URL, run the same SQL:
//!
//! - **SQLite** (`sqlite://FILE`, the embedded default): one file in WAL mode.
//!   Nothing is reported stored before the log holding it is synced to disk,
//!   so that it survives a power loss: that is what our SMTP `250` promises
//!   (the syncs run beside the writer, `wal_sync.rs`). Writes go through a
//!   pool of exactly one connection (SQLite has one writer anyway); reads use
//!   their own pool and never block on writers thanks to WAL.
//! - **PostgreSQL** (`postgres://...`): one shared database for several
//!   instances, `synchronous_commit=on`. The outbox is claimed with
//!   `FOR UPDATE SKIP LOCKED`, and the same mail delivered to two instances at
//!   once is stored once by a unique constraint.
//!
//! Every write that belongs together happens in one transaction: a message,
//! its attachments, the notifications it causes (outbox rows) and its inbound
//! log entry commit or vanish together. Messages arriving together share one
//! transaction (group commit, in `writes.rs`).

mod cache;
mod rows;
mod wal_sync;

pub use rows::{
    Attachment, BUSINESS_RANK, Bounce, HeldItem, InboundLogEntry, Inserted, KeptOriginal, NewAttachment, NewHeld,
    NewMessage, NewOutbox, NewThread, NotificationKind, Organization, OutboxItem, Plan, Routing, Site, StoredMessage,
    Suppression, Thread, User, rfc3339,
};

use crate::domain::Role;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool, SqliteConnection};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

/// The writes of a message, compiled for SQLite.
mod sqlite_writes {
    type Db = sqlx::Sqlite;
    type Connection = sqlx::SqliteConnection;
    /// The one writer connection, shared with the store's other writes.
    type Writer = super::SqliteWriter;

    async fn lock_writer(writer: &Writer) -> super::StoreResult<impl std::ops::DerefMut<Target = Connection> + '_> {
        writer.lock().await
    }

    /// Answers committed jobs once the log holding them is on disk; the
    /// writer goes on with the next batch meanwhile. If the sync fails, they
    /// are answered with its error (their senders try again, and the retry
    /// is a duplicate of a message already stored, if it was).
    fn when_durable(writer: &Writer, answers: Answers) {
        writer.log.then(move |synced| match synced {
            Ok(()) => answers.send(),
            Err(error) => {
                for (reply, _) in answers.replies {
                    let _ = reply.send(Err(super::StoreError::Batch(error.to_string())));
                }
            }
        });
    }

    include!("writes.rs");
}

/// The writes of a message, compiled for PostgreSQL.
mod postgres_writes {
    type Db = sqlx::Postgres;
    type Connection = sqlx::PgConnection;
    type Writer = sqlx::PgPool;

    async fn lock_writer(pool: &Writer) -> super::StoreResult<impl std::ops::DerefMut<Target = Connection>> {
        Ok(pool.acquire().await?)
    }

    /// Answers committed jobs: a commit returns once it is on disk.
    fn when_durable(_: &Writer, answers: Answers) {
        answers.send();
    }

    include!("writes.rs");
}

/// The database behind a [`Store`].
#[derive(Clone, Debug)]
enum Backend {
    /// One file: a single writer connection and a few readers, owned by the
    /// store rather than pooled.
    Sqlite { readers: Arc<Readers<SqliteConnection>>, writer: SqliteWriter },
    /// A shared server: readers owned by the store, a pool for writes.
    Postgres { readers: Arc<Readers<PgConnection>>, pool: PgPool },
}

/// Evaluates `$body` with `$db` bound to a connection (`&mut`) to read from,
/// whichever the backend (the body is compiled once per backend). The body
/// evaluates to a `Result<_, sqlx::Error>`; a connection that the error shows
/// lost is replaced on its next use.
macro_rules! reading {
    ($store:expr, |$db:ident| $body:expr) => {
        match &$store.backend {
            Backend::Sqlite { readers, .. } => {
                let mut slot = readers.get().await?;
                let result = match slot.as_mut() {
                    Some($db) => $body,
                    None => Err(sqlx::Error::PoolClosed),
                };
                Readers::keep_unless_lost(&mut slot, &result);
                result
            }
            Backend::Postgres { readers, .. } => {
                let mut slot = readers.get().await?;
                let result = match slot.as_mut() {
                    Some($db) => $body,
                    None => Err(sqlx::Error::PoolClosed),
                };
                Readers::keep_unless_lost(&mut slot, &result);
                result
            }
        }
    };
}

/// Evaluates `$body` with `$db` bound to a connection (`&mut`) to write with
/// and `$w` to the backend's write helpers (`insert_log`, `insert_outbox`, ...).
/// On SQLite the value is given only once what the body committed is on disk
/// (the enclosing function returns the sync's error otherwise).
macro_rules! writing {
    ($store:expr, |$db:ident| $body:expr) => {
        writing!($store, |$db, _w| $body)
    };
    ($store:expr, |$db:ident, $w:ident| $body:expr) => {
        match &$store.backend {
            Backend::Sqlite { writer, .. } => {
                #[allow(unused_imports)]
                use sqlite_writes as $w;
                let result = {
                    let mut connection = writer.lock().await?;
                    let $db = &mut *connection;
                    $body
                };
                // Durable before it is reported, whatever the body committed.
                writer.synced().await.map_err(StoreError::from)?;
                result
            }
            Backend::Postgres { pool, .. } => {
                #[allow(unused_imports)]
                use postgres_writes as $w;
                let mut connection = pool.acquire().await?;
                let $db = &mut *connection;
                $body
            }
        }
    };
}

mod held;
mod lookups;
mod originals;
mod pass_reads;
pub use held::HeldFilter;
pub use originals::{Original, OriginalsStats};
pub use pass_reads::{COALESCED_KINDS, PassReads};

/// Read connections the store owns outright: sqlx's pool pings a connection
/// (one more round trip to SQLite's worker thread, or to the PostgreSQL
/// server) every time it is given back. Each serves one query at a time; a
/// connection lost (the server restarted) is opened again on its next use.
struct Readers<C: Connection> {
    options: C::Options,
    slots: Vec<tokio::sync::Mutex<Option<C>>>,
    next: std::sync::atomic::AtomicUsize,
    closed: std::sync::atomic::AtomicBool,
}

impl<C: Connection> std::fmt::Debug for Readers<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readers").field("slots", &self.slots.len()).finish_non_exhaustive()
    }
}

impl<C: Connection> Readers<C> {
    /// `count` connections opened with `options`.
    async fn open(options: C::Options, count: usize) -> StoreResult<Self> {
        let mut slots = Vec::with_capacity(count);
        for _ in 0..count {
            slots.push(tokio::sync::Mutex::new(Some(C::connect_with(&options).await?)));
        }
        let (next, closed) = (std::sync::atomic::AtomicUsize::new(0), std::sync::atomic::AtomicBool::new(false));
        Ok(Self { options, slots, next, closed })
    }

    /// A free connection, or (all busy) the next one in turn once it is free;
    /// opened again first if it was lost.
    async fn get(&self) -> StoreResult<tokio::sync::MutexGuard<'_, Option<C>>> {
        let start = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let count = self.slots.len();
        let free = (0..count).find_map(|i| self.slots[(start + i) % count].try_lock().ok());
        let mut slot = match free {
            Some(slot) => slot,
            None => self.slots[start % count].lock().await,
        };
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(StoreError::Batch("the store is closed".to_owned()));
        }
        if slot.is_none() {
            *slot = Some(C::connect_with(&self.options).await?);
        }
        Ok(slot)
    }

    /// Drops the connection in `slot` when `result` says it was lost.
    fn keep_unless_lost<T>(slot: &mut Option<C>, result: &Result<T, sqlx::Error>) {
        let lost = match result {
            Err(sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::Tls(_) | sqlx::Error::WorkerCrashed) => {
                true
            }
            // PostgreSQL ending the session (57P: shutdown, terminated by an
            // administrator) or a connection failure (08).
            Err(sqlx::Error::Database(e)) => {
                e.code().is_some_and(|code| code.starts_with("57P") || code.starts_with("08"))
            }
            _ => false,
        };
        if lost {
            *slot = None;
        }
    }

    async fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::Release);
        for slot in &self.slots {
            if let Some(connection) = slot.lock().await.take() {
                let _ = connection.close().await;
            }
        }
    }
}

/// SQLite's one writer connection, shared by the group-commit writer and the
/// store's other writes, and the sync of its log: its commits are durable
/// only once [`SqliteWriter::synced`] returns (`wal_sync.rs`).
#[derive(Clone, Debug)]
struct SqliteWriter {
    connection: Arc<tokio::sync::Mutex<Option<SqliteConnection>>>,
    log: Arc<wal_sync::WalSync>,
}

impl SqliteWriter {
    /// The connection, once no other write holds it.
    async fn lock(&self) -> StoreResult<tokio::sync::MappedMutexGuard<'_, SqliteConnection>> {
        tokio::sync::MutexGuard::try_map(self.connection.lock().await, Option::as_mut)
            .map_err(|_| StoreError::Batch("the store is closed".to_owned()))
    }

    /// Returns once everything committed before the call is on disk.
    async fn synced(&self) -> Result<(), sqlx::Error> {
        self.log.synced().await
    }

    async fn close(&self) {
        if let Some(connection) = self.connection.lock().await.take() {
            let _ = connection.close().await;
        }
    }
}

/// A storage failure. Callers ask [`StoreError::is_transient`] whether trying
/// again later may help (SMTP answers `451` then, instead of a `5xx`).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed a statement.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The schema could not be brought up to date.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A row that must exist does not.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The request contradicts what is stored (e.g. a duplicate email).
    #[error("{0}")]
    Conflict(String),
    /// The database URL names no backend we have.
    #[error("{0}")]
    Unsupported(String),
    /// The group commit failed or stopped; the message was not stored.
    #[error("storing failed: {0}")]
    Batch(String),
    /// Stored data that cannot be read back (a damaged original).
    #[error("{0}")]
    Corrupt(String),
}

impl StoreError {
    /// Whether the database gave up on this transaction because of another
    /// one (PostgreSQL's deadlock or serialization failure): trying again
    /// at once is the remedy.
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Database(sqlx::Error::Database(e))
            if matches!(e.code().as_deref(), Some("40P01" | "40001")))
    }

    /// Whether the same operation may succeed later (busy database, I/O).
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Batch(_))
            || matches!(self, StoreError::Database(e) if !matches!(e, sqlx::Error::RowNotFound | sqlx::Error::ColumnDecode { .. }))
    }
}

/// Result of a storage operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// Milliseconds since the Unix epoch: how every time is stored.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// How the store tells the outbound worker that mail was queued, and when
/// the earliest of it is due: the worker then need not ask the database
/// after every commit (with a coalescing window, nothing is due yet).
#[derive(Debug)]
pub struct OutboxSignal {
    notify: Notify,
    /// The earliest due time told since the worker last looked (Unix ms);
    /// `i64::MAX` for none, `i64::MIN` for "read the outbox".
    earliest: std::sync::atomic::AtomicI64,
}

impl Default for OutboxSignal {
    fn default() -> Self {
        Self { notify: Notify::new(), earliest: std::sync::atomic::AtomicI64::new(i64::MAX) }
    }
}

/// What the outbound worker has been told since it last looked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    /// Nothing.
    Nothing,
    /// Mail due at this time (Unix ms), at the earliest.
    DueAt(i64),
    /// Mail whose due time was not told: read the outbox.
    Unknown,
}

impl OutboxSignal {
    /// Mail due at `due` (Unix ms) was committed.
    pub fn queued(&self, due: i64) {
        self.earliest.fetch_min(due.max(i64::MIN + 1), std::sync::atomic::Ordering::AcqRel);
        self.notify.notify_one();
    }

    /// Mail was committed; the worker should read when it is due.
    pub fn queued_unknown(&self) {
        self.earliest.store(i64::MIN, std::sync::atomic::Ordering::Release);
        self.notify.notify_one();
    }

    /// What was told since the last call.
    pub fn take(&self) -> Queued {
        match self.earliest.swap(i64::MAX, std::sync::atomic::Ordering::AcqRel) {
            i64::MAX => Queued::Nothing,
            i64::MIN => Queued::Unknown,
            at => Queued::DueAt(at),
        }
    }

    /// Waits until something is told (at once if it was since the last wait).
    pub async fn notified(&self) {
        self.notify.notified().await;
    }
}

/// Handle to the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    backend: Backend,
    /// Told after a commit that queued mail, so the outbound worker does not
    /// wait for its next poll.
    outbox_wakeup: Arc<OutboxSignal>,
    /// When queued mail is due and how long it is retried.
    policy: OutboxPolicy,
    /// The same timing, as the group-commit writer sees it.
    shared_policy: Arc<std::sync::RwLock<OutboxPolicy>>,
    /// Messages to store, for the group-commit writer.
    group: tokio::sync::mpsc::Sender<WriteJob>,
    /// What the group-commit writer has done.
    group_counters: Arc<GroupCommitCounters>,
    /// RCPT-time thread reads, answered together (`lookups.rs`).
    lookups: tokio::sync::mpsc::Sender<lookups::ThreadLookup>,
    /// Sites, plan features and users already read (they never change).
    directory: Arc<cache::Directory>,
    /// Which agents to notify of each kind, as read at most a second ago.
    subscribed_agents: Arc<cache::Recent<Vec<i64>>>,
}

/// One message waiting for the group-commit writer.
struct WriteJob {
    message: NewMessage,
    log: Option<InboundLogEntry>,
    reply: tokio::sync::oneshot::Sender<StoreResult<Inserted>>,
}

impl std::fmt::Debug for WriteJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteJob").field("thread_id", &self.message.thread_id).finish_non_exhaustive()
    }
}

/// `WITH wanted (thread_id, {column}) AS (VALUES ...)` over `pairs`, as bound
/// parameters, the second value cast to `sql_type`: how the grouped reads
/// hand the database a list of keys (`lookups.rs`, `pass_reads.rs`). The
/// casts give PostgreSQL the parameters' types.
fn push_wanted<'a, DB, T>(query: &mut sqlx::QueryBuilder<'a, DB>, column: &str, sql_type: &str, pairs: &'a [(i64, T)])
where
    DB: sqlx::Database,
    i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    T: 'a + sqlx::Encode<'a, DB> + sqlx::Type<DB> + Send + Sync,
{
    query.push(format!("WITH wanted (thread_id, {column}) AS ("));
    query.push_values(pairs, |mut row, (thread_id, value)| {
        row.push("CAST(")
            .push_bind_unseparated(*thread_id)
            .push_unseparated(" AS BIGINT)")
            .push("CAST(")
            .push_bind_unseparated(value)
            .push_unseparated(format!(" AS {sql_type})"));
    });
    query.push(")");
}

/// `values` padded to the next power of two with `filler`: key lists of a
/// few sizes only, so that each connection prepares a handful of
/// statements, not one per size (`lookups.rs`, `pass_reads.rs`).
fn padded<T: Clone>(mut values: Vec<T>, filler: T) -> Vec<T> {
    values.resize(values.len().max(1).next_power_of_two(), filler);
    values
}

/// `first` and whatever else is already waiting in `queue`, up to `limit`:
/// one batch for the group commit or the grouped lookups.
fn with_waiting<T>(first: T, queue: &mut tokio::sync::mpsc::Receiver<T>, limit: usize) -> Vec<T> {
    let mut batch = vec![first];
    while batch.len() < limit {
        match queue.try_recv() {
            Ok(next) => batch.push(next),
            Err(_) => break,
        }
    }
    batch
}

/// Most rows one multi-row UPDATE of the outbox carries (three values each;
/// SQLite allows 32,766 per statement).
const ROWS_PER_UPDATE: usize = 1_000;

/// How long the loop breaker's count windows last: a sender's (and a
/// thread's) emailed messages are counted from the first one after the
/// previous window ended, for this long.
pub const EMAIL_WINDOW_MS: i64 = 3600 * 1000;

/// Most messages committed in one transaction.
const GROUP_LIMIT: usize = 64;

/// Runs `task` on a thread of its own (with a runtime of its own), so that
/// it is polled as soon as it is woken instead of queueing behind the
/// sessions' tasks.
fn on_own_thread(name: &str, task: impl std::future::Future<Output = ()> + Send + 'static) -> StoreResult<()> {
    let failed = |error: std::io::Error| StoreError::Batch(format!("starting {name}: {error}"));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(failed)?;
    std::thread::Builder::new().name(name.to_owned()).spawn(move || runtime.block_on(task)).map_err(failed)?;
    Ok(())
}

/// What the group-commit writer has done since the store opened: how many
/// messages share a transaction, and where a transaction's time goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct GroupCommitStats {
    /// Transactions committed.
    pub transactions: u64,
    /// Messages they carried (duplicates included).
    pub messages: u64,
    /// Time spent running their statements, in microseconds.
    pub statements_us: u64,
    /// Time spent committing them, in microseconds (on PostgreSQL that
    /// includes waiting for the disk; on SQLite, writing the log).
    pub commit_us: u64,
    /// SQLite only: syncs of the log that made commits durable (each covers
    /// every commit made before it began, of any write).
    pub syncs: u64,
    /// Time those syncs took, in microseconds.
    pub sync_us: u64,
}

/// The group-commit writer's running totals.
#[derive(Debug, Default)]
struct GroupCommitCounters {
    transactions: AtomicU64,
    messages: AtomicU64,
    statements_us: AtomicU64,
    commit_us: AtomicU64,
    syncs: AtomicU64,
    sync_us: AtomicU64,
}

impl GroupCommitCounters {
    /// Counts one committed transaction.
    fn add(&self, messages: usize, statements: Duration, commit: Duration) {
        self.transactions.fetch_add(1, Ordering::Relaxed);
        self.messages.fetch_add(messages as u64, Ordering::Relaxed);
        self.statements_us.fetch_add(micros(statements), Ordering::Relaxed);
        self.commit_us.fetch_add(micros(commit), Ordering::Relaxed);
    }

    /// Counts one sync of SQLite's log.
    fn add_sync(&self, took: Duration) {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.sync_us.fetch_add(micros(took), Ordering::Relaxed);
    }

    fn snapshot(&self) -> GroupCommitStats {
        GroupCommitStats {
            transactions: self.transactions.load(Ordering::Relaxed),
            messages: self.messages.load(Ordering::Relaxed),
            statements_us: self.statements_us.load(Ordering::Relaxed),
            commit_us: self.commit_us.load(Ordering::Relaxed),
            syncs: self.syncs.load(Ordering::Relaxed),
            sync_us: self.sync_us.load(Ordering::Relaxed),
        }
    }
}

/// A duration in whole microseconds, for the counters.
fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// A site's plan (tickets, rank, on-call) and its organization's plan
/// (tickets, on-call), as `site_features` reads them.
type PlanFeatures = (String, i64, bool, Option<String>, Option<bool>);

/// What became of one claimed outbox item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Accepted by the relay (or written to the folder) under this Message-ID;
    /// `merged` are pending items it carried.
    Sent {
        /// The outbox item.
        id: i64,
        /// The Message-ID it went out with.
        rfc_message_id: String,
        /// Pending items about the same thread and person that it carried.
        merged: Vec<i64>,
    },
    /// Not delivered: tried again at `retry_at`, or failed for good when `None`.
    Failed {
        /// The outbox item.
        id: i64,
        /// What went wrong.
        error: String,
        /// When to try again, if ever.
        retry_at: Option<i64>,
    },
    /// Not sent on purpose (the recipient opted out).
    Skipped {
        /// The outbox item.
        id: i64,
        /// Why.
        why: String,
    },
}

/// Emailed messages counted for the loop breaker, as [`Store::thread_with_recent`] read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecentEmail {
    /// Whose messages `by_author` counts.
    pub author_id: i64,
    /// Counted from this time on (Unix ms).
    pub since: i64,
    /// Emailed messages by the author since then (up to the cap).
    pub by_author: i64,
    /// Emailed messages in the thread since then (up to the cap).
    pub in_thread: i64,
}

/// Timing of queued mail.
#[derive(Debug, Clone, Copy)]
pub struct OutboxPolicy {
    /// Replies are held this long so that several become one notification.
    pub coalesce_ms: i64,
    /// Delivery is retried until this long after queueing.
    pub lifetime_ms: i64,
}

impl Default for OutboxPolicy {
    fn default() -> Self {
        Self { coalesce_ms: 0, lifetime_ms: 2 * 24 * 3600 * 1000 }
    }
}

impl Store {
    /// Opens the database at `url` (`sqlite://FILE`, created if needed, or
    /// `postgres://...`) and brings its schema up to date.
    pub async fn open(url: &str) -> StoreResult<Self> {
        let outbox_wakeup = Arc::new(OutboxSignal::default());
        let shared_policy = Arc::new(std::sync::RwLock::new(OutboxPolicy::default()));
        let (group, jobs) = tokio::sync::mpsc::channel(1024);
        let (policy, wake) = (Arc::clone(&shared_policy), Arc::clone(&outbox_wakeup));
        let group_counters = Arc::new(GroupCommitCounters::default());
        let counters = Arc::clone(&group_counters);
        let backend = if url.starts_with("sqlite:") {
            let (readers, writer) = open_sqlite(url, Arc::clone(&counters)).await?;
            on_own_thread(
                "mailgate-writer",
                sqlite_writes::group_writer(writer.clone(), policy, wake, counters, jobs),
            )?;
            Backend::Sqlite { readers: Arc::new(readers), writer }
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let (readers, pool) = open_postgres(url).await?;
            tokio::spawn(postgres_writes::group_writer(pool.clone(), policy, wake, counters, jobs));
            Backend::Postgres { readers: Arc::new(readers), pool }
        } else {
            // The URL is not repeated: it may hold a password.
            return Err(StoreError::Unsupported(
                "unsupported database URL: use sqlite://FILE or postgres://USER:PASSWORD@HOST/DATABASE".to_owned(),
            ));
        };
        let (lookups, questions) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(lookups::answer_lookups(backend.clone(), questions));
        let directory = Arc::new(cache::Directory::new());
        let subscribed_agents = Arc::new(cache::Recent::new(Duration::from_secs(1)));
        Ok(Self {
            backend,
            outbox_wakeup,
            policy: OutboxPolicy::default(),
            shared_policy,
            group,
            group_counters,
            lookups,
            directory,
            subscribed_agents,
        })
    }

    /// The same store with another outbox timing.
    pub fn with_outbox_policy(mut self, policy: OutboxPolicy) -> Self {
        self.policy = policy;
        *self.shared_policy.write().unwrap_or_else(std::sync::PoisonError::into_inner) = policy;
        self
    }

    /// What the group-commit writer has done since the store opened.
    pub fn group_commit_stats(&self) -> GroupCommitStats {
        self.group_counters.snapshot()
    }

    /// Told whenever a commit queued mail.
    pub fn outbox_wakeup(&self) -> Arc<OutboxSignal> {
        Arc::clone(&self.outbox_wakeup)
    }

    /// Closes the pools, waiting for connections in use.
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite { readers, writer } => {
                writer.close().await;
                readers.close().await;
            }
            Backend::Postgres { readers, pool } => {
                readers.close().await;
                pool.close().await;
            }
        }
    }

    // ----- settings -----

    /// The stored value of `key`, or `init()` stored now under it. The first
    /// writer wins, so concurrent starts agree on one value.
    pub async fn setting_or_init(&self, key: &str, init: impl FnOnce() -> String) -> StoreResult<String> {
        writing!(self, |db| sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING"
        )
        .bind(key)
        .bind(init())
        .execute(db)
        .await
        .map(drop))?;
        Ok(writing!(self, |db| sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_one(db)
            .await)?)
    }

    /// Stores `value` under `key`, replacing what was there.
    pub async fn put_setting(&self, key: &str, value: &str) -> StoreResult<()> {
        writing!(self, |db| sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        )
        .bind(key)
        .bind(value)
        .execute(db)
        .await
        .map(drop))?;
        Ok(())
    }

    /// Deletes the setting `key`, if it exists.
    pub async fn delete_setting(&self, key: &str) -> StoreResult<()> {
        writing!(self, |db| sqlx::query("DELETE FROM settings WHERE key = $1").bind(key).execute(db).await.map(drop))?;
        Ok(())
    }

    /// Every setting whose key starts with `prefix`.
    pub async fn settings_with_prefix(&self, prefix: &str) -> StoreResult<Vec<(String, String)>> {
        Ok(writing!(self, |db| sqlx::query_as(
            "SELECT key, value FROM settings WHERE key LIKE $1 || '%' ORDER BY key"
        )
        .bind(prefix)
        .fetch_all(db)
        .await)?)
    }

    /// The stored value of `key`, if any.
    pub async fn setting(&self, key: &str) -> StoreResult<Option<String>> {
        Ok(reading!(self, |db| sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(db)
            .await)?)
    }

    // ----- plans, organizations, sites, users -----

    /// Every plan, site plans first.
    pub async fn plans(&self) -> StoreResult<Vec<Plan>> {
        Ok(reading!(self, |db| sqlx::query_as("SELECT * FROM plans ORDER BY scope DESC, rank, id")
            .fetch_all(db)
            .await)?)
    }

    /// One plan.
    pub async fn plan(&self, id: &str) -> StoreResult<Option<Plan>> {
        let read = async {
            Ok(reading!(self, |db| sqlx::query_as("SELECT * FROM plans WHERE id = $1")
                .bind(id)
                .fetch_optional(db)
                .await)?)
        };
        through_directory(self.directory.plan(id), read, |plan| self.directory.keep_plan(plan)).await
    }

    /// Creates an organization.
    pub async fn create_organization(&self, name: &str, plan_id: Option<&str>) -> StoreResult<Organization> {
        Ok(writing!(self, |db| sqlx::query_as(
            "INSERT INTO organizations (name, plan_id, created_at) VALUES ($1, $2, $3) RETURNING *"
        )
        .bind(name)
        .bind(plan_id)
        .bind(now_ms())
        .fetch_one(db)
        .await)?)
    }

    /// One organization.
    pub async fn organization(&self, id: i64) -> StoreResult<Option<Organization>> {
        let read = async {
            Ok(reading!(self, |db| sqlx::query_as("SELECT * FROM organizations WHERE id = $1")
                .bind(id)
                .fetch_optional(db)
                .await)?)
        };
        through_directory(self.directory.organization(id), read, |org| self.directory.keep_organization(org)).await
    }

    /// Creates a site.
    pub async fn create_site(&self, name: &str, plan_id: &str, organization_id: Option<i64>) -> StoreResult<Site> {
        Ok(writing!(self, |db| sqlx::query_as(
            "INSERT INTO sites (name, plan_id, organization_id, created_at) VALUES ($1, $2, $3, $4) RETURNING *",
        )
        .bind(name)
        .bind(plan_id)
        .bind(organization_id)
        .bind(now_ms())
        .fetch_one(db)
        .await)?)
    }

    /// One site.
    pub async fn site(&self, id: i64) -> StoreResult<Option<Site>> {
        let read = async {
            Ok(reading!(self, |db| sqlx::query_as("SELECT * FROM sites WHERE id = $1")
                .bind(id)
                .fetch_optional(db)
                .await)?)
        };
        through_directory(self.directory.site(id), read, |site| self.directory.keep_site(site)).await
    }

    /// The sites of an organization, best plan first.
    pub async fn sites_of_organization(&self, organization_id: i64) -> StoreResult<Vec<Site>> {
        Ok(reading!(self, |db| {
            sqlx::query_as(
            "SELECT s.* FROM sites s JOIN plans p ON p.id = s.plan_id WHERE s.organization_id = $1 ORDER BY p.rank DESC, s.id",
        )
        .bind(organization_id)
        .fetch_all(db)
        .await
        })?)
    }

    /// Creates a user; the email must not be taken.
    pub async fn create_user(
        &self,
        email: &str,
        name: &str,
        role: Role,
        organization_id: Option<i64>,
    ) -> StoreResult<User> {
        self.create_user_in_zone(email, name, role, organization_id, None).await
    }

    /// [`Store::create_user`], with the IANA time zone the user reads times in.
    pub async fn create_user_in_zone(
        &self,
        email: &str,
        name: &str,
        role: Role,
        organization_id: Option<i64>,
        time_zone: Option<&str>,
    ) -> StoreResult<User> {
        let result = writing!(self, |db| {
            sqlx::query_as(
                "INSERT INTO users (email, name, role, organization_id, created_at, time_zone) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
            )
            .bind(email)
            .bind(name)
            .bind(role.as_str())
            .bind(organization_id)
            .bind(now_ms())
            .bind(time_zone)
            .fetch_one(db)
            .await
        });
        self.subscribed_agents.clear();
        match result {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::Conflict(format!("a user with email {email} already exists")))
            }
            other => Ok(other?),
        }
    }

    /// One user.
    pub async fn user(&self, id: i64) -> StoreResult<Option<User>> {
        let read = async {
            Ok(reading!(self, |db| sqlx::query_as("SELECT * FROM users WHERE id = $1")
                .bind(id)
                .fetch_optional(db)
                .await)?)
        };
        through_directory(self.directory.user_by_id(id), read, |user| self.directory.keep_user(&user.email, user)).await
    }

    /// The user with this (lower-case) email.
    pub async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        let read = async {
            Ok(reading!(self, |db| sqlx::query_as("SELECT * FROM users WHERE email = $1")
                .bind(email)
                .fetch_optional(db)
                .await)?)
        };
        through_directory(self.directory.user(email), read, |user| self.directory.keep_user(email, user)).await
    }

    /// Members of an organization who may see its tickets (not Unprivileged).
    pub async fn ticket_viewers(&self, organization_id: i64) -> StoreResult<Vec<i64>> {
        Ok(reading!(self, |db| sqlx::query_scalar(
            "SELECT id FROM users WHERE organization_id = $1 AND role IN ('owner', 'admin', 'member') ORDER BY id",
        )
        .bind(organization_id)
        .fetch_all(db)
        .await)?)
    }

    /// Support agents who have not opted out of notifications of `kind`, in
    /// one query, at most a second old (every reply asks; see [`cache::Recent`]).
    pub async fn subscribed_agents(&self, kind: &str) -> StoreResult<Vec<i64>> {
        if let Some(agents) = self.subscribed_agents.get(kind) {
            return Ok(agents);
        }
        let agents: Vec<i64> = reading!(self, |db| sqlx::query_scalar(
            "SELECT id FROM users u WHERE role = 'agent' \
             AND NOT EXISTS (SELECT 1 FROM notification_optouts o WHERE o.user_id = u.id AND o.kind = $1) ORDER BY id",
        )
        .bind(kind)
        .fetch_all(db)
        .await)?;
        self.subscribed_agents.put(kind, agents.clone());
        Ok(agents)
    }

    /// Every support agent.
    pub async fn agents(&self) -> StoreResult<Vec<User>> {
        Ok(reading!(self, |db| sqlx::query_as("SELECT * FROM users WHERE role = 'agent' ORDER BY id")
            .fetch_all(db)
            .await)?)
    }

    // ----- threads and messages -----

    /// Opens a chat or ticket with its first message and the notifications
    /// that message causes, in one transaction. `also` are further mails about
    /// the new thread (an on-call page); `log` the inbound log entry of the
    /// email that opened it.
    pub async fn create_thread(
        &self,
        new: NewThread,
        first: NewMessage,
        also: &[NewOutbox],
        log: Option<&InboundLogEntry>,
    ) -> StoreResult<(Thread, i64)> {
        // Ticket numbers are the highest so far plus one: two instances
        // opening tickets at once may pick the same one, and the loser tries
        // again (the unique constraint decides, not a race).
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.try_create_thread(&new, &first, also, log).await {
                Err(StoreError::Database(sqlx::Error::Database(e))) if e.is_unique_violation() && attempt < 10 => {}
                other => return other,
            }
        }
    }

    async fn try_create_thread(
        &self,
        new: &NewThread,
        first: &NewMessage,
        also: &[NewOutbox],
        log: Option<&InboundLogEntry>,
    ) -> StoreResult<(Thread, i64)> {
        let (thread, inserted) = writing!(self, |db, w| {
            let mut tx = db.begin().await?;
            let now = now_ms();
            let ticket_number: Option<i64> = if new.kind == crate::domain::ThreadKind::Ticket {
                Some(
                    sqlx::query_scalar("SELECT COALESCE(MAX(ticket_number), 0) + 1 FROM threads")
                        .fetch_one(&mut *tx)
                        .await?,
                )
            } else {
                None
            };
            let thread: Thread = sqlx::query_as(
                "INSERT INTO threads (kind, site_id, customer_id, ticket_number, ticket_type, subject, status, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, 'open', $7, $7) RETURNING *",
            )
            .bind(new.kind.as_str())
            .bind(new.site_id)
            .bind(new.customer_id)
            .bind(ticket_number)
            .bind(&new.ticket_type)
            .bind(&new.subject)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            let first = NewMessage { thread_id: thread.id, ..first.clone() };
            let inserted = w::insert_message(&mut tx, self.policy, &first, log).await?;
            for mail in also {
                let mail = NewOutbox { thread_id: Some(thread.id), ..mail.clone() };
                w::insert_outbox(&mut tx, self.policy, &mail).await?;
            }
            tx.commit().await?;
            (thread, inserted)
        });
        self.outbox_wakeup.queued_unknown();
        Ok((thread, inserted.id()))
    }

    /// Opens or closes a thread.
    pub async fn set_thread_status(&self, id: i64, status: &str) -> StoreResult<()> {
        writing!(self, |db| sqlx::query("UPDATE threads SET status = $1, updated_at = $2 WHERE id = $3")
            .bind(status)
            .bind(now_ms())
            .bind(id)
            .execute(db)
            .await
            .map(drop))?;
        Ok(())
    }

    /// Emailed messages stored by `author_id`, and in `thread_id`, in their
    /// current hour windows ([`EMAIL_WINDOW_MS`]), each counted when its
    /// window started at or after `since` (Unix ms) and capped at `cap`.
    pub async fn recent_email(&self, author_id: i64, thread_id: i64, since: i64, cap: i64) -> StoreResult<(i64, i64)> {
        let (by_author, in_thread): (i64, i64) = reading!(self, |db| sqlx::query_as(
            "SELECT COALESCE((SELECT CASE WHEN window_start >= $3 THEN emails ELSE 0 END \
                              FROM sender_email_windows WHERE author_id = $1), 0), \
                    COALESCE((SELECT CASE WHEN email_window_start >= $3 THEN emails_in_window ELSE 0 END \
                              FROM threads WHERE id = $2), 0)",
        )
        .bind(author_id)
        .bind(thread_id)
        .bind(since)
        .fetch_one(db)
        .await)?;
        Ok((by_author.min(cap), in_thread.min(cap)))
    }

    /// Whether a site may open tickets and page on-call, in one query: its own
    /// plan, or its organization's (tickets there may need a Business site).
    pub async fn site_features(&self, site_id: i64) -> StoreResult<(bool, bool)> {
        if let Some(features) = self.directory.features(site_id) {
            return Ok(features);
        }
        let row: Option<PlanFeatures> = reading!(self, |db| sqlx::query_as(
            "SELECT sp.tickets, sp.rank, sp.on_call, op.tickets, op.on_call FROM sites s \
             JOIN plans sp ON sp.id = s.plan_id \
             LEFT JOIN organizations o ON o.id = s.organization_id \
             LEFT JOIN plans op ON op.id = o.plan_id WHERE s.id = $1",
        )
        .bind(site_id)
        .fetch_optional(db)
        .await)?;
        let Some((site_tickets, rank, site_on_call, org_tickets, org_on_call)) = row else { return Ok((false, false)) };
        let tickets = site_tickets == "all"
            || match org_tickets.as_deref() {
                Some("all") => true,
                Some("business_and_above") => rank >= BUSINESS_RANK,
                _ => false,
            };
        let features = (tickets, site_on_call || org_on_call.unwrap_or(false));
        self.directory.keep_features(site_id, features);
        Ok(features)
    }

    /// One thread.
    pub async fn thread(&self, id: i64) -> StoreResult<Option<Thread>> {
        Ok(reading!(self, |db| sqlx::query_as("SELECT * FROM threads WHERE id = $1")
            .bind(id)
            .fetch_optional(db)
            .await)?)
    }

    /// A thread with its recent emailed messages by `author_id` and in the
    /// thread since `since` (each counted up to `cap`): what the RCPT of a
    /// reply token reads, so that deciding needs neither again. Lookups
    /// made at the same time share one query (`lookups.rs`).
    pub async fn thread_with_recent(
        &self,
        id: i64,
        author_id: i64,
        since: i64,
        cap: i64,
    ) -> StoreResult<Option<(Thread, RecentEmail)>> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let lookup = lookups::ThreadLookup { thread_id: id, author_id, since, cap, reply };
        self.lookups.send(lookup).await.map_err(|_| StoreError::Batch("the store is closed".to_owned()))?;
        answer.await.map_err(|_| StoreError::Batch("the thread reader stopped".to_owned()))?
    }

    /// The ticket with this number.
    pub async fn ticket_by_number(&self, number: i64) -> StoreResult<Option<Thread>> {
        Ok(reading!(self, |db| sqlx::query_as("SELECT * FROM threads WHERE kind = 'ticket' AND ticket_number = $1")
            .bind(number)
            .fetch_optional(db)
            .await)?)
    }

    /// Stores a message with its attachments, notifications and (for mail)
    /// its inbound log entry, in one transaction. A message whose Message-ID
    /// is already in the thread is not stored again: the result says
    /// [`Inserted::Duplicate`], and only the log entry is written.
    ///
    /// Concurrent calls are committed together (group commit): while one
    /// transaction waits for its fsync, the next ones queue, and then share
    /// one transaction and one fsync. If anything in it fails, the batch is
    /// written again with a savepoint per message, so that one failure does
    /// not undo the others. Every caller still returns only
    /// after the commit that holds its message.
    pub async fn insert_message(&self, message: NewMessage, log: Option<InboundLogEntry>) -> StoreResult<Inserted> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.group
            .send(WriteJob { message, log, reply })
            .await
            .map_err(|_| StoreError::Batch("the store is closed".to_owned()))?;
        answer.await.map_err(|_| StoreError::Batch("the group commit writer stopped".to_owned()))?
    }

    /// A thread's messages, oldest first, with their attachments.
    pub async fn messages(&self, thread_id: i64) -> StoreResult<Vec<StoredMessage>> {
        self.messages_from(thread_id, 0).await
    }

    /// A thread's messages with ids from `from` on, oldest first, with their attachments.
    async fn messages_from(&self, thread_id: i64, from: i64) -> StoreResult<Vec<StoredMessage>> {
        let messages: Vec<StoredMessage> = reading!(self, |db| sqlx::query_as(&format!(
            "{MESSAGE_COLUMNS} WHERE m.thread_id = $1 AND m.id >= $2 ORDER BY m.id"
        ))
        .bind(thread_id)
        .bind(from)
        .fetch_all(db)
        .await)?;
        self.with_attachments(thread_id, messages).await
    }

    /// `messages` (of one thread, oldest first) with their attachments filled in.
    async fn with_attachments(
        &self,
        thread_id: i64,
        mut messages: Vec<StoredMessage>,
    ) -> StoreResult<Vec<StoredMessage>> {
        let Some(first) = messages.first().map(|m| m.id) else { return Ok(messages) };
        let attachments: Vec<Attachment> = reading!(self, |db| sqlx::query_as(
            "SELECT a.* FROM attachments a JOIN messages m ON m.id = a.message_id \
             WHERE m.thread_id = $1 AND m.id >= $2 ORDER BY a.id",
        )
        .bind(thread_id)
        .bind(first)
        .fetch_all(db)
        .await)?;
        for attachment in attachments {
            if let Some(message) = messages.iter_mut().find(|m| m.id == attachment.message_id) {
                message.attachments.push(attachment);
            }
        }
        Ok(messages)
    }

    /// One attachment's metadata and bytes.
    pub async fn attachment(&self, id: i64) -> StoreResult<Option<(Attachment, Vec<u8>)>> {
        let Some(attachment): Option<Attachment> =
            reading!(self, |db| sqlx::query_as("SELECT * FROM attachments WHERE id = $1")
                .bind(id)
                .fetch_optional(db)
                .await)?
        else {
            return Ok(None);
        };
        let content: Vec<u8> = reading!(self, |db| sqlx::query_scalar("SELECT content FROM blobs WHERE sha256 = $1")
            .bind(&attachment.sha256)
            .fetch_one(db)
            .await)?;
        Ok(Some((attachment, content)))
    }

    // ----- inbound log -----

    /// Records the outcome of an SMTP transaction that stored nothing.
    pub async fn log_inbound(&self, entry: &InboundLogEntry) -> StoreResult<()> {
        writing!(self, |db, w| w::insert_log(db, entry, None).await)
    }

    /// Records the outcome of an SMTP transaction with the message as it
    /// arrived (mail answered 250 and not posted: an auto-reply, mail to
    /// postmaster), in one transaction.
    pub async fn log_inbound_with_original(&self, entry: &InboundLogEntry, original: &Original) -> StoreResult<()> {
        writing!(self, |db, w| {
            let mut tx = db.begin().await?;
            w::insert_originals(&mut tx, &[original], now_ms()).await?;
            w::insert_log(&mut tx, entry, None).await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Records a bounce together with its inbound log entry and the report
    /// as it arrived.
    pub async fn record_bounce(
        &self,
        log: &InboundLogEntry,
        bounce: &Bounce,
        original: Option<&Original>,
    ) -> StoreResult<()> {
        writing!(self, |db, w| {
            let mut tx = db.begin().await?;
            if let Some(original) = original {
                w::insert_originals(&mut tx, &[original], now_ms()).await?;
            }
            sqlx::query(
                "INSERT INTO bounces (received_at, outbox_id, recipient, status, severity, diagnostic, \
                 original_message_id, counted) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(bounce.received_at)
            .bind(bounce.outbox_id)
            .bind(&bounce.recipient)
            .bind(&bounce.status)
            .bind(&bounce.severity)
            .bind(&bounce.diagnostic)
            .bind(&bounce.original_message_id)
            .bind(bounce.counted)
            .execute(&mut *tx)
            .await?;
            w::insert_log(&mut tx, log, None).await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// The most recent bounces, newest first.
    pub async fn bounces(&self, limit: i64) -> StoreResult<Vec<Bounce>> {
        Ok(reading!(self, |db| sqlx::query_as("SELECT * FROM bounces ORDER BY id DESC LIMIT $1")
            .bind(limit)
            .fetch_all(db)
            .await)?)
    }

    /// Addresses mail has stopped to: at least `threshold` counted, unlifted
    /// hard bounces within the last `window_days` days (0: ever), latest
    /// first, each with when it ends by itself.
    pub async fn suppressions(&self, threshold: u32, window_days: u32) -> StoreResult<Vec<Suppression>> {
        let window_ms = i64::from(window_days) * 86_400_000;
        let since = if window_days == 0 { i64::MIN } else { now_ms() - window_ms };
        let rows: Vec<(String, i64)> = reading!(self, |db| sqlx::query_as(
            "SELECT recipient, received_at FROM bounces \
             WHERE counted = TRUE AND lifted_at IS NULL AND recipient IS NOT NULL AND received_at >= $1 \
             ORDER BY recipient, received_at"
        )
        .bind(since)
        .fetch_all(db)
        .await)?;
        let mut by_address: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
        for (address, at) in rows {
            by_address.entry(address).or_default().push(at);
        }
        let threshold = threshold.max(1) as usize;
        let mut found: Vec<Suppression> = by_address
            .into_iter()
            .filter(|(_, times)| times.len() >= threshold)
            .map(|(address, times)| Suppression {
                bounces: times.len() as i64,
                first_at: times[0],
                last_at: times[times.len() - 1],
                // It ends when the oldest bounce that keeps the count at the
                // threshold leaves the window.
                expires_at: (window_days > 0).then(|| times[times.len() - threshold] + window_ms),
                address,
            })
            .collect();
        found.sort_by_key(|s| std::cmp::Reverse(s.last_at));
        Ok(found)
    }

    /// Lifts the suppression of `address`: its counted bounces stop counting
    /// (they stay recorded, with who lifted them and when). Returns how many
    /// bounces were lifted; 0 when the address was not suppressed.
    pub async fn lift_suppression(&self, address: &str, by: &str) -> StoreResult<u64> {
        let address = address.trim().to_lowercase();
        Ok(writing!(self, |db, _w| sqlx::query(
            "UPDATE bounces SET lifted_at = $1, lifted_by = $2 \
             WHERE recipient = $3 AND counted = TRUE AND lifted_at IS NULL"
        )
        .bind(now_ms())
        .bind(by)
        .bind(&address)
        .execute(db)
        .await
        .map(|done| done.rows_affected()))?)
    }

    /// One outbox item.
    pub async fn outbox_item(&self, id: i64) -> StoreResult<Option<OutboxItem>> {
        Ok(reading!(self, |db| sqlx::query_as("SELECT * FROM outbox WHERE id = $1").bind(id).fetch_optional(db).await)?)
    }

    /// The most recent inbound log entries, newest first; with `rule`, only
    /// those that rule decided or acted on.
    pub async fn inbound_log(&self, rule: Option<&str>, limit: i64) -> StoreResult<Vec<InboundLogEntry>> {
        Ok(reading!(self, |db| sqlx::query_as(
            "SELECT * FROM inbound_log WHERE ($1 IS NULL OR ',' || rules || ',' LIKE '%,' || $1 || ',%') \
             ORDER BY id DESC LIMIT $2",
        )
        .bind(rule)
        .bind(limit)
        .fetch_all(db)
        .await)?)
    }

    // ----- outbox -----

    /// Claims up to `limit` due items for `lease_ms` (and up to `limit` more
    /// whose previous worker's lease ran out: it died).
    pub async fn claim_due(&self, limit: i64, lease_ms: i64) -> StoreResult<Vec<OutboxItem>> {
        let now = now_ms();
        // Of several reply notifications to one person about one thread, only
        // the oldest is claimed: it carries the others when it goes out. Due
        // items are read in the order they fell due (the outbox_due index),
        // so a backlog of thousands costs a claim only the items it looks at
        // before it has `limit`, each checked against outbox_thread (on
        // PostgreSQL too: an `OR` of two `IN` lists there scanned the whole
        // outbox, hence the two lists are joined with `UNION ALL`). On
        // PostgreSQL, rows another instance is claiming right now are skipped
        // rather than waited for (or claimed twice).
        let sql = |lock: &str| {
            format!(
                "WITH due AS ( \
                   SELECT o.id FROM outbox o WHERE o.status = 'pending' AND o.next_attempt_at <= $2 \
                     AND NOT (o.kind IN ('agent_replied', 'customer_replied') AND EXISTS ( \
                       SELECT 1 FROM outbox e WHERE e.thread_id = o.thread_id AND e.to_address = o.to_address \
                         AND e.status IN ('pending', 'sending') AND e.id < o.id \
                         AND e.kind IN ('agent_replied', 'customer_replied'))) \
                   ORDER BY o.next_attempt_at LIMIT $3 {lock}), \
                 expired AS ( \
                   SELECT o.id FROM outbox o WHERE o.status = 'sending' AND o.claimed_until < $2 LIMIT $3 {lock}) \
                 UPDATE outbox SET status = 'sending', claimed_until = $1 \
                 WHERE id IN (SELECT id FROM due UNION ALL SELECT id FROM expired) RETURNING *"
            )
        };
        let mut claimed: Vec<OutboxItem> = match &self.backend {
            Backend::Sqlite { writer, .. } => {
                let mut writer = writer.lock().await?;
                sqlx::query_as(&sql("")).bind(now + lease_ms).bind(now).bind(limit).fetch_all(&mut *writer).await?
            }
            Backend::Postgres { pool, .. } => {
                sqlx::query_as(&sql("FOR UPDATE OF o SKIP LOCKED"))
                    .bind(now + lease_ms)
                    .bind(now)
                    .bind(limit)
                    .fetch_all(pool)
                    .await?
            }
        };
        claimed.sort_by_key(|item| item.id);
        Ok(claimed)
    }

    /// When the next pending item is due, if any.
    pub async fn next_due(&self) -> StoreResult<Option<i64>> {
        Ok(reading!(self, |db| sqlx::query_scalar("SELECT MIN(next_attempt_at) FROM outbox WHERE status = 'pending'")
            .fetch_one(db)
            .await)?)
    }

    /// Outbox items, newest first; only failed ones when `failed_only`.
    pub async fn outbox(&self, failed_only: bool, limit: i64) -> StoreResult<Vec<OutboxItem>> {
        Ok(reading!(self, |db| sqlx::query_as(
            "SELECT * FROM outbox WHERE ($1 = 0 OR status = 'failed') ORDER BY id DESC LIMIT $2"
        )
        .bind(i64::from(failed_only))
        .bind(limit)
        .fetch_all(db)
        .await)?)
    }

    /// Records what became of claimed items, all in one transaction (one
    /// commit for a whole pass of the outbound worker, not one per mail).
    /// The sent items and the ones they carried are each updated by a few
    /// multi-row statements, however many there are.
    pub async fn record_deliveries(&self, outcomes: &[Delivery]) -> StoreResult<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let mut sent: Vec<(i64, &str)> = Vec::new();
        let mut merged: Vec<(i64, &str, String)> = Vec::new();
        for outcome in outcomes {
            if let Delivery::Sent { id, rfc_message_id, merged: carried } = outcome {
                sent.push((*id, rfc_message_id));
                let why = format!("sent together with notification {id}");
                merged.extend(carried.iter().map(|other| (*other, rfc_message_id.as_str(), why.clone())));
            }
        }
        writing!(self, |db| {
            let mut tx = db.begin().await?;
            let now = now_ms();
            for chunk in sent.chunks(ROWS_PER_UPDATE) {
                let mut update = sqlx::QueryBuilder::new("UPDATE outbox SET status = 'sent', sent_at = ");
                update.push_bind(now).push(
                    ", rfc_message_id = v.column2, attempts = attempts + 1, claimed_until = NULL, \
                     last_error = NULL FROM (",
                );
                update.push_values(chunk, |mut row, (id, rfc_message_id)| {
                    row.push_bind(*id).push_bind(*rfc_message_id);
                });
                update.push(") AS v WHERE outbox.id = v.column1");
                update.build().execute(&mut *tx).await?;
            }
            for chunk in merged.chunks(ROWS_PER_UPDATE) {
                let mut update = sqlx::QueryBuilder::new("UPDATE outbox SET status = 'merged', sent_at = ");
                update.push_bind(now).push(", rfc_message_id = v.column2, last_error = v.column3 FROM (");
                update.push_values(chunk, |mut row, (id, rfc_message_id, why)| {
                    row.push_bind(*id).push_bind(*rfc_message_id).push_bind(why);
                });
                update.push(") AS v WHERE outbox.id = v.column1 AND outbox.status = 'pending'");
                update.build().execute(&mut *tx).await?;
            }
            for outcome in outcomes {
                match outcome {
                    Delivery::Sent { .. } => {}
                    Delivery::Failed { id, error, retry_at } => {
                        sqlx::query(
                            "UPDATE outbox SET attempts = attempts + 1, last_error = $1, claimed_until = NULL, \
                             status = CASE WHEN $2 IS NULL THEN 'failed' ELSE 'pending' END, \
                             next_attempt_at = COALESCE($2, next_attempt_at) WHERE id = $3",
                        )
                        .bind(error)
                        .bind(retry_at)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    }
                    Delivery::Skipped { id, why } => {
                        sqlx::query(
                            "UPDATE outbox SET status = 'skipped', last_error = $1, claimed_until = NULL WHERE id = $2",
                        )
                        .bind(why)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Puts a failed item back in the queue, or a pending one waiting out its
    /// backoff (a relay was fixed), due now, with a fresh lifetime.
    pub async fn retry(&self, id: i64) -> StoreResult<OutboxItem> {
        let now = now_ms();
        let item: Option<OutboxItem> = writing!(self, |db| sqlx::query_as(
            "UPDATE outbox SET status = 'pending', next_attempt_at = $1, expires_at = $2, claimed_until = NULL \
             WHERE id = $3 AND status IN ('failed', 'pending', 'skipped') RETURNING *",
        )
        .bind(now)
        .bind(now + self.policy.lifetime_ms)
        .bind(id)
        .fetch_optional(db)
        .await)?;
        match item {
            Some(item) => {
                self.outbox_wakeup.queued(now);
                Ok(item)
            }
            None => match self.outbox_item(id).await? {
                Some(other) => Err(StoreError::Conflict(format!(
                    "outbox item {id} is {}; only failed, skipped and pending items can be retried",
                    other.status
                ))),
                None => Err(StoreError::NotFound("outbox item")),
            },
        }
    }

    /// Queues a mail that is not about one new message, together with the
    /// inbound log entry that caused it (if any), in one transaction.
    pub async fn enqueue(&self, new: &NewOutbox, log: Option<&InboundLogEntry>) -> StoreResult<i64> {
        let id = writing!(self, |db, w| {
            let mut tx = db.begin().await?;
            let now = now_ms();
            let id = w::insert_outbox(&mut tx, self.policy, new).await?;
            if new.kind.starts_with("refusal_") {
                sqlx::query("INSERT INTO notices_sent (address, kind, sent_at) VALUES ($1, $2, $3)")
                    .bind(&new.to_address)
                    .bind(&new.kind)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
            if let Some(log) = log {
                w::insert_log(&mut tx, log, None).await?;
            }
            tx.commit().await?;
            id
        });
        self.outbox_wakeup.queued_unknown();
        Ok(id)
    }

    /// Whether a refusal notice went to `address` since `since` (Unix ms).
    pub async fn notice_sent_since(&self, address: &str, since: i64) -> StoreResult<bool> {
        let count: i64 = reading!(self, |db| sqlx::query_scalar(
            "SELECT COUNT(*) FROM notices_sent WHERE address = $1 AND sent_at >= $2"
        )
        .bind(address)
        .bind(since)
        .fetch_one(db)
        .await)?;
        Ok(count > 0)
    }

    /// Records that a user does not want notifications of `kind` any more.
    pub async fn opt_out(&self, user_id: i64, kind: &str) -> StoreResult<()> {
        writing!(self, |db| sqlx::query(
            "INSERT INTO notification_optouts (user_id, kind, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id, kind) DO NOTHING",
        )
        .bind(user_id)
        .bind(kind)
        .bind(now_ms())
        .execute(db)
        .await
        .map(drop))?;
        self.subscribed_agents.clear();
        Ok(())
    }

    /// Undoes an opt-out; whether there was one.
    pub async fn opt_in(&self, user_id: i64, kind: &str) -> StoreResult<bool> {
        let removed =
            writing!(self, |db| sqlx::query("DELETE FROM notification_optouts WHERE user_id = $1 AND kind = $2")
                .bind(user_id)
                .bind(kind)
                .execute(db)
                .await
                .map(|done| done.rows_affected()))?;
        self.subscribed_agents.clear();
        Ok(removed > 0)
    }

    /// The notification kinds `user_id` opted out of, with when (Unix ms).
    pub async fn opt_outs(&self, user_id: i64) -> StoreResult<Vec<(String, i64)>> {
        Ok(reading!(self, |db| sqlx::query_as(
            "SELECT kind, created_at FROM notification_optouts WHERE user_id = $1 ORDER BY kind"
        )
        .bind(user_id)
        .fetch_all(db)
        .await)?)
    }

    /// Whether `user_id` opted out of notifications of `kind`.
    pub async fn is_opted_out(&self, user_id: i64, kind: &str) -> StoreResult<bool> {
        Ok(reading!(self, |db| sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM notification_optouts WHERE user_id = $1 AND kind = $2)"
        )
        .bind(user_id)
        .bind(kind)
        .fetch_one(db)
        .await)?)
    }
}

/// The select list of a [`StoredMessage`].
macro_rules! message_fields {
    () => {
        "m.id, m.thread_id, m.author_id, u.name AS author_name, u.email AS author_email, \
         u.role AS author_role, m.body, m.source, m.rfc_message_id, m.created_at, m.original"
    };
}

/// The columns of a [`StoredMessage`], for queries that add their own `WHERE`.
const MESSAGE_COLUMNS: &str =
    concat!("SELECT ", message_fields!(), " FROM messages m JOIN users u ON u.id = m.author_id");

/// The select list of [`MESSAGE_COLUMNS`] (`m` a message, `u` its author),
/// for queries that bring their own `FROM`.
const MESSAGE_FIELDS: &str = message_fields!();

/// A row kept in the directory, or else read with `read` and kept (a row
/// that does not exist is not remembered: another instance may create it).
async fn through_directory<T>(
    kept: Option<T>,
    read: impl std::future::Future<Output = StoreResult<Option<T>>>,
    keep: impl FnOnce(&T),
) -> StoreResult<Option<T>> {
    if kept.is_some() {
        return Ok(kept);
    }
    let row = read.await?;
    if let Some(row) = &row {
        keep(row);
    }
    Ok(row)
}

/// Opens a SQLite file: (readers, the one writer), schema up to date.
async fn open_sqlite(
    url: &str,
    counters: Arc<GroupCommitCounters>,
) -> StoreResult<(Readers<SqliteConnection>, SqliteWriter)> {
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // Commits do not wait for the disk; the log's sync does, before
        // anything is reported stored (`wal_sync.rs`).
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10))
        .pragma("cache_size", "-4000")
        // Statement journals (a multi-row insert may need to undo itself) in
        // memory rather than in a temporary file.
        .pragma("temp_store", "memory")
        // The multi-row statements of group commit differ by batch size.
        .statement_cache_capacity(512);
    let mut writer = options.connect().await?;
    sqlx::migrate!("migrations/sqlite").run(&mut writer).await?;
    let log = wal_sync::WalSync::start(options.get_filename().to_path_buf(), counters)
        .map_err(|error| StoreError::Batch(format!("starting the log's sync: {error}")))?;
    let writer = SqliteWriter { connection: Arc::new(tokio::sync::Mutex::new(Some(writer))), log: Arc::new(log) };
    writer.synced().await?;
    // Readers keep 2 MB each: they read a few hot pages (threads, users,
    // the newest messages), and four of them at 4 MB took peak memory past
    // its budget once a busy desk's database had grown.
    let readers = Readers::open(options.pragma("cache_size", "-2000").read_only(true), READERS).await?;
    Ok((readers, writer))
}

/// Read connections (SQLite's WAL lets them read while the writer writes).
const READERS: usize = 4;

/// Read connections to PostgreSQL: each waits a network round trip per
/// query, so more of them keep replies' reads from queueing behind the
/// outbound worker's.
const POSTGRES_READERS: usize = 8;

/// Connects to PostgreSQL with durable commits, schema up to date: (readers,
/// a pool for writes). Several instances starting at once take turns
/// migrating (sqlx holds an advisory lock).
async fn open_postgres(url: &str) -> StoreResult<(Readers<PgConnection>, PgPool)> {
    // 250 means stored: a commit returns only once its WAL record is on disk.
    // Random page reads priced near sequential ones, as for an SSD or a
    // working set in memory (the threads, users and outbox rows mailgate
    // reads per message are): with PostgreSQL's default (4), a desk with a
    // few thousand threads got a sequential scan of every thread (and user)
    // for each batch of RCPT lookups, of thread updates and of notifications
    // queued, instead of one index probe per row (ARCHITECTURE.md, "Speed").
    let options = PgConnectOptions::from_str(url)?
        .options([("synchronous_commit", "on"), ("random_page_cost", "1.1")])
        // The multi-row statements of group commit differ by batch size.
        .statement_cache_capacity(512);
    let pool = PgPoolOptions::new()
        .max_connections(10)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options.clone())
        .await?;
    sqlx::migrate!("migrations/postgres").run(&pool).await?;
    Ok((Readers::open(options, POSTGRES_READERS).await?, pool))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}
