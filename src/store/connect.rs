//! Connections and backend setup: the read connections the store owns,
//! SQLite's one writer with its log sync, and opening either database with
//! its settings and schema brought up to date.

use super::{
    Arc, ConnectOptions, Connection, Duration, FromStr, GroupCommitCounters, PgConnectOptions, PgConnection, PgPool,
    PgPoolOptions, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous, StoreError,
    StoreResult, schema, wal_sync,
};

/// Read connections the store owns outright: sqlx's pool pings a connection
/// (one more round trip to SQLite's worker thread, or to the PostgreSQL
/// server) every time it is given back. Each serves one query at a time; a
/// connection lost (the server restarted) is opened again on its next use.
pub(super) struct Readers<C: Connection> {
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
    pub(super) async fn open(options: C::Options, count: usize) -> StoreResult<Self> {
        let mut slots = Vec::with_capacity(count);
        for _ in 0..count {
            slots.push(tokio::sync::Mutex::new(Some(C::connect_with(&options).await?)));
        }
        let (next, closed) = (std::sync::atomic::AtomicUsize::new(0), std::sync::atomic::AtomicBool::new(false));
        Ok(Self { options, slots, next, closed })
    }

    /// A free connection, or (all busy) the next one in turn once it is free;
    /// opened again first if it was lost.
    pub(super) async fn get(&self) -> StoreResult<tokio::sync::MutexGuard<'_, Option<C>>> {
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
    pub(super) fn keep_unless_lost<T>(slot: &mut Option<C>, result: &Result<T, sqlx::Error>) {
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

    pub(super) async fn close(&self) {
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
pub(super) struct SqliteWriter {
    pub(super) connection: Arc<tokio::sync::Mutex<Option<SqliteConnection>>>,
    pub(super) log: Arc<wal_sync::WalSync>,
}

impl SqliteWriter {
    /// The connection, once no other write holds it.
    pub(super) async fn lock(&self) -> StoreResult<tokio::sync::MappedMutexGuard<'_, SqliteConnection>> {
        tokio::sync::MutexGuard::try_map(self.connection.lock().await, Option::as_mut)
            .map_err(|_| StoreError::Batch("the store is closed".to_owned()))
    }

    /// Returns once everything committed before the call is on disk.
    pub(super) async fn synced(&self) -> Result<(), sqlx::Error> {
        self.log.synced().await
    }

    pub(super) async fn close(&self) {
        if let Some(connection) = self.connection.lock().await.take() {
            let _ = connection.close().await;
        }
    }
}

/// Opens a SQLite file: (readers, the one writer), schema up to date.
pub(super) async fn open_sqlite(
    url: &str,
    counters: Arc<GroupCommitCounters>,
    stall: Duration,
) -> StoreResult<(Readers<SqliteConnection>, SqliteWriter)> {
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // Commits do not wait for the disk; the log's sync does, before
        // anything is reported stored (`wal_sync.rs`).
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        // Another process holding the write lock (a `deliver`, a tool) is
        // waited for as long as a message may wait for its commit; then the
        // write fails as busy and the sender is told to come back.
        .busy_timeout(stall)
        .pragma("cache_size", "-4000")
        // Checkpoints every 8 MB of log rather than SQLite's 4 MB: the pages
        // every group commit changes (the newest rows' leaves, the indexes'
        // hot pages) are copied into the database once per checkpoint, so
        // fewer checkpoints copy fewer pages per message. Each checkpoint
        // holds up the group commit while it copies: at 16 MB p99 rose by a
        // third; at 8 MB it is back near 4375a43's at the same rate (issue
        // 36, docs/performance.md, ninth session).
        .pragma("wal_autocheckpoint", "2000")
        // Statement journals (a multi-row insert may need to undo itself) in
        // memory rather than in a temporary file.
        .pragma("temp_store", "memory")
        // The multi-row statements of group commit differ by batch size.
        .statement_cache_capacity(512);
    let mut writer = options.connect().await?;
    let applied = schema::applied_versions(&mut writer, schema::SQLITE_TABLES).await?;
    if schema::anything_pending(&schema::SQLITE, &applied)? {
        schema::SQLITE.run(&mut writer).await?;
    }
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
/// migrating (sqlx holds an advisory lock). A statement waits for another
/// session's lock at most `stall`, and a write for a free connection as
/// long: then it fails as busy (`StoreError::is_busy`) instead of waiting
/// without bound.
pub(super) async fn open_postgres(url: &str, stall: Duration) -> StoreResult<(Readers<PgConnection>, PgPool)> {
    // 250 means stored: a commit returns only once its WAL record is on disk.
    // Random page reads priced near sequential ones, as for an SSD or a
    // working set in memory (the threads, users and outbox rows mailgate
    // reads per message are): with PostgreSQL's default (4), a desk with a
    // few thousand threads got a sequential scan of every thread (and user)
    // for each batch of RCPT lookups, of thread updates and of notifications
    // queued, instead of one index probe per row (ARCHITECTURE.md, "Speed").
    // Backslashes in string literals are literal (the text filters' `LIKE
    // ... ESCAPE '\'` needs it), whatever the server's default.
    let options = PgConnectOptions::from_str(url)?
        .options([("synchronous_commit", "on"), ("random_page_cost", "1.1"), ("standard_conforming_strings", "on")])
        // The multi-row statements of group commit differ by batch size.
        .statement_cache_capacity(512);
    // One connection first, so that an unreachable server is named with the
    // reason (refused, no such host, wrong password) within seconds, not
    // after the pool's timeout as "pool timed out".
    let server = format!("{}:{}", options.get_host(), options.get_port());
    let mut first = match tokio::time::timeout(Duration::from_secs(5), PgConnection::connect_with(&options)).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(error)) => {
            return Err(StoreError::Unreachable(format!("cannot connect to PostgreSQL at {server}: {error}")));
        }
        Err(_) => {
            return Err(StoreError::Unreachable(format!(
                "cannot connect to PostgreSQL at {server}: no answer within 5 seconds"
            )));
        }
    };
    // Migrations on that connection, without the lock limit below: building
    // an index on a large table may wait for (and take) longer.
    let applied = schema::applied_versions(&mut first, schema::POSTGRES_TABLES).await?;
    if schema::anything_pending(&schema::POSTGRES, &applied)? {
        schema::POSTGRES.run(&mut first).await?;
    }
    let _ = first.close().await;
    let options = options.options([("lock_timeout", stall.as_millis().to_string())]);
    let pool = PgPoolOptions::new().max_connections(10).acquire_timeout(stall).connect_with(options.clone()).await?;
    Ok((Readers::open(options, POSTGRES_READERS).await?, pool))
}
