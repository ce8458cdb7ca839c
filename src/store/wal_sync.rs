//! SQLite's commits made durable off the writer's path.
//!
//! The writer connection runs with `synchronous=NORMAL`: a commit appends its
//! pages to the write-ahead log (`FILE-wal`) and returns without waiting for
//! the disk. Nothing is reported as stored until [`WalSync::synced`] returns
//! (or [`WalSync::then`] calls back), and that waits for an `fdatasync` of
//! the log that began after the call: every commit made before it is then on
//! disk, which is what
//! `synchronous=FULL` would have given (FULL is NORMAL plus a sync of the log
//! after each commit; checkpoints sync the log before copying it into the
//! database in both modes).
//!
//! What this buys is overlap: while the disk syncs one group commit's pages,
//! the writer already runs the next group's statements, and callers that ask
//! during one sync share the next. The log file is opened once and opened
//! again if SQLite has replaced it; the syncs run on a thread of their own.

use super::GroupCommitCounters;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;

/// What to do once a sync is over, given its outcome.
type AfterSync = Box<dyn FnOnce(Result<(), String>) + Send>;

/// Makes a SQLite database's committed transactions durable; see the module doc.
#[derive(Debug)]
pub(super) struct WalSync {
    requests: mpsc::Sender<AfterSync>,
}

impl WalSync {
    /// Starts a thread that syncs the log of the database file `database` on
    /// request (a thread of its own: no hand-off to a blocking pool).
    pub(super) fn start(database: PathBuf, counters: Arc<GroupCommitCounters>) -> std::io::Result<Self> {
        let mut log = database.into_os_string();
        log.push("-wal");
        let log = PathBuf::from(log);
        let (requests, waiting) = mpsc::channel();
        std::thread::Builder::new()
            .name("mailgate-log-sync".to_owned())
            .spawn(move || sync_on_request(&log, &counters, &waiting))?;
        Ok(Self { requests })
    }

    /// Calls `then` (on the syncing thread: it must not block) once
    /// everything committed before this call is on disk, or with the error
    /// that kept it from getting there.
    pub(super) fn then(&self, then: impl FnOnce(Result<(), sqlx::Error>) + Send + 'static) {
        let after: AfterSync = Box::new(move |outcome| then(outcome.map_err(log_error)));
        if let Err(mpsc::SendError(after)) = self.requests.send(after) {
            after(Err("the log's sync stopped".to_owned()));
        }
    }

    /// Returns once everything committed before the call is on disk.
    pub(super) async fn synced(&self) -> Result<(), sqlx::Error> {
        let (reply, outcome) = tokio::sync::oneshot::channel();
        self.then(move |synced| {
            let _ = reply.send(synced);
        });
        outcome.await.map_err(|_| log_error("the log's sync stopped".to_owned()))?
    }
}

/// A failed sync, as the store reports it.
fn log_error(error: String) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::other(format!("syncing the database's log: {error}")))
}

/// Runs requests with one `fdatasync` for all that arrived before it began,
/// until the store is gone.
fn sync_on_request(path: &std::path::Path, counters: &GroupCommitCounters, waiting: &mpsc::Receiver<AfterSync>) {
    let mut file: Option<std::fs::File> = None;
    while let Ok(first) = waiting.recv() {
        let mut callers = vec![first];
        callers.extend(waiting.try_iter());
        let started = std::time::Instant::now();
        let (kept, outcome) = sync_log(path, file.take());
        file = kept;
        counters.add_sync(started.elapsed());
        let outcome = outcome.map_err(|error| error.to_string());
        for caller in callers {
            caller(outcome.clone());
        }
    }
}

/// One `fdatasync` of the log at `path`, through `file` if that is still the
/// file at `path`; gives back the file to keep.
fn sync_log(path: &std::path::Path, file: Option<std::fs::File>) -> (Option<std::fs::File>, std::io::Result<()>) {
    let current = match std::fs::metadata(path) {
        Ok(current) => current,
        Err(error) => return (None, Err(error)),
    };
    let same = |kept: &std::fs::File| {
        kept.metadata().is_ok_and(|meta| meta.dev() == current.dev() && meta.ino() == current.ino())
    };
    let file = match file.filter(same) {
        Some(file) => file,
        None => match std::fs::File::open(path) {
            Ok(file) => file,
            Err(error) => return (None, Err(error)),
        },
    };
    let outcome = file.sync_data();
    (Some(file), outcome)
}
