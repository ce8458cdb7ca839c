//! SQLite's commits made durable off the writer's path.
//!
//! The writer connection runs with `synchronous=NORMAL`: a commit appends its
//! pages to the write-ahead log (`FILE-wal`) and returns without waiting for
//! the disk. Nothing is reported as stored until [`WalSync::synced`] returns,
//! and that waits for an `fdatasync` of the log that began after the call:
//! every commit made before it is then on disk, which is what
//! `synchronous=FULL` would have given (FULL is NORMAL plus a sync of the log
//! after each commit; checkpoints sync the log before copying it into the
//! database in both modes).
//!
//! What this buys is overlap: while the disk syncs one group commit's pages,
//! the writer already runs the next group's statements, and callers that ask
//! during one sync share the next. The log file is opened once and opened
//! again if SQLite has replaced it.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use super::GroupCommitCounters;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Makes a SQLite database's committed transactions durable; see the module doc.
#[derive(Debug)]
pub(super) struct WalSync {
    requests: mpsc::UnboundedSender<oneshot::Sender<Result<(), String>>>,
}

impl WalSync {
    /// Starts syncing the log of the database file `database` on request.
    pub(super) fn start(database: PathBuf, counters: Arc<GroupCommitCounters>) -> Self {
        let mut log = database.into_os_string();
        log.push("-wal");
        let (requests, waiting) = mpsc::unbounded_channel();
        tokio::spawn(sync_on_request(PathBuf::from(log), counters, waiting));
        Self { requests }
    }

    /// Returns once everything committed before the call is on disk.
    pub(super) async fn synced(&self) -> Result<(), sqlx::Error> {
        let (reply, outcome) = oneshot::channel();
        let stopped = || sqlx::Error::Io(std::io::Error::other("the log's sync stopped"));
        self.requests.send(reply).map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?.map_err(|error| sqlx::Error::Io(std::io::Error::other(error)))
    }
}

/// Answers requests with one `fdatasync` for all that arrived before it began.
async fn sync_on_request(
    path: PathBuf,
    counters: Arc<GroupCommitCounters>,
    mut waiting: mpsc::UnboundedReceiver<oneshot::Sender<Result<(), String>>>,
) {
    let mut file: Option<std::fs::File> = None;
    while let Some(first) = waiting.recv().await {
        let mut callers = vec![first];
        while let Ok(next) = waiting.try_recv() {
            callers.push(next);
        }
        let started = std::time::Instant::now();
        let path = path.clone();
        let (kept, outcome) = match tokio::task::spawn_blocking(move || sync_log(&path, file)).await {
            Ok((kept, outcome)) => (kept, outcome.map_err(|error| format!("syncing the database's log: {error}"))),
            Err(_) => (None, Err("syncing the database's log failed".to_owned())),
        };
        file = kept;
        counters.add_sync(started.elapsed());
        for caller in callers {
            let _ = caller.send(outcome.clone());
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
