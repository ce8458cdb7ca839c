//! The thread reads of RCPT time, grouped. Every reply's RCPT asks for the
//! thread its token names and the loop breaker's two counts. Asked one by
//! one, each is a hand-off to a SQLite reader thread and back (or a round
//! trip to PostgreSQL); here, while one query runs, the lookups that arrive
//! wait, and then go to the database together in one query, as the group
//! commit does for writes. One connection's lookup is answered as soon as it
//! is asked.

use super::{Backend, Readers, RecentEmail, SentNotification, StoreError, StoreResult, Thread, padded, push_wanted};
use tokio::sync::{mpsc, oneshot};

/// Most lookups answered by one query.
const LOOKUPS_PER_QUERY: usize = 64;

/// What one RCPT's question is answered with: the thread, the loop
/// breaker's counts, and the last notification about the thread sent to
/// the token's recipient.
pub(super) type ThreadSeen = (Thread, RecentEmail, Option<SentNotification>);

/// One RCPT's question: a thread, with the emailed messages since `since`
/// by `author_id` and in the thread, each counted up to `cap`, and the last
/// notification sent to `author_id` about it.
#[derive(Debug)]
pub(super) struct ThreadLookup {
    pub(super) thread_id: i64,
    pub(super) author_id: i64,
    pub(super) since: i64,
    pub(super) cap: i64,
    pub(super) reply: oneshot::Sender<StoreResult<Option<ThreadSeen>>>,
}

/// A thread row with the counts for one of the authors asked about.
#[derive(sqlx::FromRow)]
struct Found {
    #[sqlx(flatten)]
    thread: Thread,
    wanted_author: i64,
    recent_by_author: i64,
    recent_in_thread: i64,
    notification_id: Option<i64>,
    notification_text: Option<Vec<u8>>,
}

/// What [`reading!`] needs: the backend's readers.
struct Lookups {
    backend: Backend,
}

/// Answers lookups, as many per query as are waiting, until every sender
/// (every clone of the store) is gone.
pub(super) async fn answer_lookups(backend: Backend, mut lookups: mpsc::Receiver<ThreadLookup>) {
    let reader = Lookups { backend };
    while let Some(first) = lookups.recv().await {
        let batch = super::with_waiting(first, &mut lookups, LOOKUPS_PER_QUERY);
        match reader.read(&batch).await {
            Ok(found) => {
                for lookup in batch {
                    let row =
                        found.iter().find(|f| f.thread.id == lookup.thread_id && f.wanted_author == lookup.author_id);
                    let answer = row.map(|f| {
                        let recent = RecentEmail {
                            author_id: lookup.author_id,
                            since: lookup.since,
                            by_author: f.recent_by_author.min(lookup.cap),
                            in_thread: f.recent_in_thread.min(lookup.cap),
                        };
                        let notification = match (f.notification_id, &f.notification_text) {
                            (Some(outbox_id), Some(text)) => Some(SentNotification {
                                outbox_id,
                                thread_id: lookup.thread_id,
                                recipient_id: lookup.author_id,
                                compressed: text.as_slice().into(),
                            }),
                            _ => None,
                        };
                        (f.thread.clone(), recent, notification)
                    });
                    let _ = lookup.reply.send(Ok(answer));
                }
            }
            Err(error) => {
                let text = error.to_string();
                for lookup in batch {
                    let _ = lookup.reply.send(Err(StoreError::Batch(text.clone())));
                }
            }
        }
    }
}

impl Lookups {
    /// One query for the whole batch, which also brings the last
    /// notification text sent to each token's recipient about its thread
    /// (for matching it in the reply: no read of its own). A count is read when its window
    /// started at or after the earliest `since` asked (a lookup that waited
    /// accepts a window a few milliseconds older, never a younger one); each
    /// answer is capped at its own cap.
    async fn read(&self, batch: &[ThreadLookup]) -> StoreResult<Vec<Found>> {
        let since = batch.iter().map(|l| l.since).min().unwrap_or(0);
        // Padded to a power of two with the last pair again, so that each
        // connection prepares a handful of statements, not one per size.
        let pairs: Vec<(i64, i64)> = batch.iter().map(|l| (l.thread_id, l.author_id)).collect();
        let last = pairs.last().copied().unwrap_or_default();
        let pairs = padded(pairs, last);
        Ok(reading!(self, |db| {
            let mut query = sqlx::QueryBuilder::new("");
            push_wanted(&mut query, "author_id", "BIGINT", &pairs);
            query.push(
                " SELECT t.*, w.author_id AS wanted_author, \
                   COALESCE((SELECT CASE WHEN s.window_start >= ",
            );
            query.push_bind(since).push(
                " THEN s.emails ELSE 0 END FROM sender_email_windows s WHERE s.author_id = w.author_id), 0) \
                   AS recent_by_author, CASE WHEN t.email_window_start >= ",
            );
            query.push_bind(since).push(
                " THEN t.emails_in_window ELSE 0 END AS recent_in_thread, \
                   n.id AS notification_id, n.sent_text AS notification_text \
                 FROM wanted w JOIN threads t ON t.id = w.thread_id \
                 LEFT JOIN outbox n ON n.id = (SELECT MAX(o.id) FROM outbox o WHERE o.thread_id = w.thread_id \
                   AND o.recipient_id = w.author_id AND o.sent_text IS NOT NULL)",
            );
            query.build_query_as::<Found>().fetch_all(db).await
        })?)
    }
}
