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
    Attachment, AuditEntry, BUSINESS_RANK, Bounce, HeldItem, InboundLogEntry, Inserted, KeptOriginal, MessageExtras,
    NewAttachment, NewHeld, NewMessage, NewOutbox, NewThread, NotificationKind, Organization, OutboxItem,
    ParticipantLimits, Plan, Routing, Site, StoredMessage, Suppression, Thread, User, rfc3339,
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
                    // Never longer than the stall limit behind the group
                    // commit's writer (itself waiting for another process's
                    // lock, perhaps).
                    let mut connection = match tokio::time::timeout($store.stall, writer.lock()).await {
                        Ok(connection) => connection?,
                        Err(_) => return Err($store.writer_busy().into()),
                    };
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

/// The select list of a [`StoredMessage`].
macro_rules! message_fields {
    () => {
        "m.id, m.thread_id, m.author_id, u.name AS author_name, u.email AS author_email, \
         u.role AS author_role, m.body, m.source, m.rfc_message_id, m.created_at, m.original, m.kind"
    };
}

/// The columns of a [`StoredMessage`], for queries that add their own `WHERE`.
const MESSAGE_COLUMNS: &str =
    concat!("SELECT ", message_fields!(), " FROM messages m JOIN users u ON u.id = m.author_id");

/// The select list of [`MESSAGE_COLUMNS`] (`m` a message, `u` its author),
/// for queries that bring their own `FROM`.
const MESSAGE_FIELDS: &str = message_fields!();

mod connect;
mod console_sessions;
mod directory;
mod held;
mod inbound_log;
mod lists;
mod lookups;
mod originals;
mod outbox;
mod participants;
mod pass_reads;
pub mod schema;
mod settings;
pub mod states;
mod threads;
mod webhooks;
use connect::{Readers, SqliteWriter, open_postgres, open_sqlite};
pub use console_sessions::ConsoleSession;
pub use directory::{ErasedMessages, Erasure, OrganizationChanges, SiteChanges, UserChanges};
pub use held::HeldFilter;
pub use lists::{BounceFilter, LogFilter, OutboxFilter, ThreadFilter, UserFilter};
pub use originals::{Original, OriginalsStats};
pub use outbox::{InstanceNameLock, MENU_COUNT_CAP};
pub use participants::{NewParticipant, Participant};
pub use pass_reads::{COALESCED_KINDS, PassReads};
pub use states::{HeldAction, HeldStatus, MessageKind, OutboxStatus, ParticipantStatus, ThreadStatus};
pub use webhooks::{EVENTS, WEBHOOK_KIND, Webhook};

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
    /// A newer mailgate has migrated the database past what this build knows.
    #[error(
        "this database was upgraded by a newer mailgate (schema version {found}; this mailgate knows up to {known}): \
         run that newer version, or restore the backup made before the upgrade"
    )]
    NewerSchema {
        /// The newest migration the database has.
        found: i64,
        /// The newest migration this build has.
        known: i64,
    },
    /// A row that must exist does not.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The request contradicts what is stored (e.g. a duplicate email).
    #[error("{0}")]
    Conflict(String),
    /// The database URL names no backend we have.
    #[error("{0}")]
    Unsupported(String),
    /// The database server could not be reached (at start).
    #[error("{0}")]
    Unreachable(String),
    /// The group commit failed or stopped; the message was not stored.
    #[error("storing failed: {0}")]
    Batch(String),
    /// The database has fallen behind (its writer stalled, or too much
    /// waits for it): the message was not taken; the sender tries later.
    #[error("{0}")]
    Busy(String),
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

    /// Whether the database turned this away for being behind: the store's
    /// own push-back, or a wait for a lock or a connection that ran out
    /// (SQLite's busy timeout, PostgreSQL's `lock_timeout`, the pool's).
    /// The sender is told `451 4.3.2` and comes back later.
    pub fn is_busy(&self) -> bool {
        match self {
            StoreError::Busy(_) => true,
            StoreError::Database(sqlx::Error::PoolTimedOut) => true,
            StoreError::Database(sqlx::Error::Database(e)) => match e.code().as_deref() {
                // lock_not_available, as lock_timeout ends a wait.
                Some("55P03") => true,
                // SQLITE_BUSY and SQLITE_LOCKED with their extended codes.
                Some(code) => {
                    e.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some()
                        && code.parse::<i32>().is_ok_and(|code| matches!(code & 0xff, 5 | 6))
                }
                None => false,
            },
            _ => false,
        }
    }

    /// Whether the same operation may succeed later (busy database, I/O).
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Batch(_) | StoreError::Busy(_))
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
    /// How long a message may wait for its commit (`[limits] store_stall_secs`).
    stall: Duration,
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
    /// Messages turned away (`451 4.3.2`) because the database had fallen
    /// behind: a commit slower than `[limits] store_stall_secs`, or more
    /// than [`HIGH_WATER`] messages waiting.
    pub pushed_back: u64,
}

/// How long a write may wait for the database unless told otherwise
/// (`[limits] store_stall_secs`).
pub const DEFAULT_STALL: Duration = Duration::from_secs(30);

/// Messages waiting for the group-commit writer above which new ones are
/// turned away rather than queued (the queue holds 1,024).
pub const HIGH_WATER: usize = 512;

/// The group-commit writer's running totals.
#[derive(Debug, Default)]
struct GroupCommitCounters {
    /// When the transaction being written began (Unix ms; 0: none is).
    writing_since_ms: std::sync::atomic::AtomicI64,
    /// Messages turned away because the database had fallen behind.
    pushed_back: AtomicU64,
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
            pushed_back: self.pushed_back.load(Ordering::Relaxed),
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
        /// Its plain text, lz4-compressed, when it carried a reply address:
        /// a reply that brings it back unquoted is matched against it.
        sent_text: Option<Vec<u8>>,
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

/// The last notification sent to one person about one thread (the one
/// their reply address came with), as [`Store::thread_with_recent`] read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentNotification {
    /// The outbox item.
    pub outbox_id: i64,
    /// The thread it was about.
    pub thread_id: i64,
    /// The person it went to.
    pub recipient_id: i64,
    /// Its plain text as sent, lz4-compressed (read with [`Self::text`]
    /// only when a person's reply is matched against it).
    pub compressed: std::sync::Arc<[u8]>,
}

impl SentNotification {
    /// Its plain text as sent.
    pub fn text(&self) -> String {
        Self::decompress(&self.compressed)
    }

    /// Compresses a notification's text for [`Delivery::Sent`].
    pub fn compress(text: &str) -> Vec<u8> {
        lz4_flex::block::compress_prepend_size(text.as_bytes())
    }

    /// The text of a compressed notification (damaged bytes read as empty).
    pub fn decompress(bytes: &[u8]) -> String {
        let bytes = lz4_flex::block::decompress_size_prepended(bytes).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }
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
    /// `postgres://...`) and brings its schema up to date, with the default
    /// stall limit ([`DEFAULT_STALL`]).
    pub async fn open(url: &str) -> StoreResult<Self> {
        Self::open_with_stall(url, DEFAULT_STALL).await
    }

    /// [`Store::open`], turning writes away as busy once they would wait
    /// longer than `stall` (`[limits] store_stall_secs`): a message for its
    /// commit, any write for the writer or for another session's lock.
    pub async fn open_with_stall(url: &str, stall: Duration) -> StoreResult<Self> {
        let outbox_wakeup = Arc::new(OutboxSignal::default());
        let shared_policy = Arc::new(std::sync::RwLock::new(OutboxPolicy::default()));
        let (group, jobs) = tokio::sync::mpsc::channel(1024);
        let (policy, wake) = (Arc::clone(&shared_policy), Arc::clone(&outbox_wakeup));
        let group_counters = Arc::new(GroupCommitCounters::default());
        let counters = Arc::clone(&group_counters);
        let backend = if url.starts_with("sqlite:") {
            let (readers, writer) = open_sqlite(url, Arc::clone(&counters), stall).await?;
            on_own_thread(
                "mailgate-writer",
                sqlite_writes::group_writer(writer.clone(), policy, wake, counters, jobs),
            )?;
            Backend::Sqlite { readers: Arc::new(readers), writer }
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let (readers, pool) = open_postgres(url, stall).await?;
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
        if let Backend::Postgres { pool, .. } = &backend {
            tokio::spawn(directory::follow_changes(
                pool.clone(),
                Arc::clone(&directory),
                Arc::clone(&subscribed_agents),
            ));
        }
        Ok(Self {
            backend,
            outbox_wakeup,
            policy: OutboxPolicy::default(),
            shared_policy,
            group,
            group_counters,
            stall,
            lookups,
            directory,
            subscribed_agents,
        })
    }

    /// The answer to a write that waited the whole stall limit for the
    /// writer connection (SQLite), counted as pushed back.
    fn writer_busy(&self) -> StoreError {
        self.group_counters.pushed_back.fetch_add(1, Ordering::Relaxed);
        StoreError::Busy(format!("the database's writer has been busy for {} s", self.stall.as_secs()))
    }

    /// Why the database cannot take a message now, if it cannot: its
    /// writer has been in one transaction for longer than the stall limit,
    /// or too many messages already wait.
    fn falling_behind(&self) -> Option<String> {
        let since = self.group_counters.writing_since_ms.load(Ordering::Acquire);
        let stalled_ms = if since == 0 { 0 } else { now_ms() - since };
        if stalled_ms > self.stall.as_millis() as i64 {
            return Some(format!("the database has been writing one transaction for {} s", stalled_ms / 1000));
        }
        let waiting = self.group.max_capacity() - self.group.capacity();
        (waiting >= HIGH_WATER).then(|| format!("{waiting} messages wait for the database"))
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
}

/// A row kept in the directory, or else read with `read` and kept (a row
/// that does not exist is not remembered: another instance may create it;
/// a row read while the directory changed is returned but not kept).
async fn through_directory<T>(
    directory: &cache::Directory,
    kept: Option<T>,
    read: impl std::future::Future<Output = StoreResult<Option<T>>>,
    keep: impl FnOnce(&T),
) -> StoreResult<Option<T>> {
    if kept.is_some() {
        return Ok(kept);
    }
    let generation = directory.generation();
    let row = read.await?;
    if let Some(row) = &row
        && directory.generation() == generation
    {
        keep(row);
    }
    Ok(row)
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}
