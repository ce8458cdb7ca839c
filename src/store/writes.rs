// The statements that write a message and what belongs with it, and the
// group-commit writer that runs them. This file is compiled once per backend
// (see `sqlite_writes` and `postgres_writes` in mod.rs), each time with its
// own `Db`, `Connection` and `Writer` types and `lock_writer` function: the
// SQL is the same on both.

use super::{EMAIL_WINDOW_MS, GROUP_LIMIT, now_ms};
use super::{
    GroupCommitCounters, InboundLogEntry, Inserted, NewMessage, NewOutbox, OutboxPolicy, OutboxSignal, StoreError,
    StoreResult, WriteJob,
};
use crate::domain::Source;
use std::sync::Arc;

/// Stores queued messages, as many per transaction as are waiting.
pub(super) async fn group_writer(
    write: Writer,
    policy: Arc<std::sync::RwLock<OutboxPolicy>>,
    wake: Arc<OutboxSignal>,
    counters: Arc<GroupCommitCounters>,
    mut jobs: tokio::sync::mpsc::Receiver<WriteJob>,
) {
    while let Some(first) = jobs.recv().await {
        let mut batch = super::with_waiting(first, &mut jobs, GROUP_LIMIT);
        let policy = *policy.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        // While this batch is written, how long it takes says whether the
        // database has fallen behind (`Store::falling_behind`).
        let _writing = Writing::since_now(&counters);
        // The common case: every message goes in, and the batch needs no
        // savepoints (two statements fewer per message). If anything fails,
        // the transaction is rolled back and the batch written again below
        // with a savepoint per message, so that a bad message fails alone.
        if let Ok(results) = write_batch(&write, policy, &counters, &batch, false).await {
            when_durable(&write, Answers::of(batch.into_iter().zip(results), policy, &wake));
            continue;
        }
        // Another instance writing the same threads at the same moment can
        // make the database pick us as a deadlock victim: those messages are
        // tried again in a fresh transaction rather than refused.
        for attempt in 1..=CONFLICT_ATTEMPTS {
            let last = attempt == CONFLICT_ATTEMPTS;
            match write_batch(&write, policy, &counters, &batch, true).await {
                Ok(results) => {
                    let mut again = Vec::new();
                    let mut done = Vec::new();
                    for (job, result) in batch.into_iter().zip(results) {
                        match result {
                            Err(error) if error.is_conflict() && !last => again.push(job),
                            result => done.push((job, result)),
                        }
                    }
                    when_durable(&write, Answers::of(done, policy, &wake));
                    batch = again;
                }
                Err(error) if error.is_conflict() && !last => {}
                Err(error) => {
                    let text = error.to_string();
                    for job in batch.drain(..) {
                        let _ = job.reply.send(Err(StoreError::Batch(text.clone())));
                    }
                }
            }
            if batch.is_empty() {
                break;
            }
        }
    }
}

/// Marks the group-commit writer as inside a batch, until dropped.
struct Writing<'c>(&'c GroupCommitCounters);

impl<'c> Writing<'c> {
    fn since_now(counters: &'c GroupCommitCounters) -> Self {
        counters.writing_since_ms.store(super::now_ms(), std::sync::atomic::Ordering::Release);
        Self(counters)
    }
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.0.writing_since_ms.store(0, std::sync::atomic::Ordering::Release);
    }
}

/// What committed jobs' callers are to be told once the commit is on disk,
/// without the messages themselves (a batch of replies with attachments
/// need not stay in memory while the disk syncs).
struct Answers {
    replies: Vec<(tokio::sync::oneshot::Sender<StoreResult<Inserted>>, StoreResult<Inserted>)>,
    /// How long after the commit the earliest mail they queued is due.
    due_in: Option<i64>,
    /// Whom to tell that.
    wake: Arc<OutboxSignal>,
}

impl Answers {
    /// The answers to jobs and their outcomes.
    fn of(
        done: impl IntoIterator<Item = (WriteJob, StoreResult<Inserted>)>,
        policy: OutboxPolicy,
        wake: &Arc<OutboxSignal>,
    ) -> Self {
        let mut due_in: Option<i64> = None;
        let replies = done
            .into_iter()
            .map(|(job, result)| {
                if matches!(result, Ok(Inserted::New(_))) {
                    due_in = earliest(due_in, queued_after(&job.message, policy));
                }
                (job.reply, result)
            })
            .collect();
        Self { replies, due_in, wake: Arc::clone(wake) }
    }

    /// Tells each caller its outcome, and the outbound worker when the
    /// earliest mail is due.
    fn send(self) {
        for (reply, result) in self.replies {
            let _ = reply.send(result);
        }
        if let Some(after) = self.due_in {
            self.wake.queued(now_ms() + after);
        }
    }
}

/// The smaller of two optional delays.
fn earliest(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// How long after its commit the earliest mail a stored message queued is
/// due, if it queued any.
fn queued_after(message: &NewMessage, policy: OutboxPolicy) -> Option<i64> {
    let notifications = message.notify.iter().map(|(kind, _)| if kind.coalesces() { policy.coalesce_ms } else { 0 });
    notifications.chain(message.extra_mail.iter().map(|_| 0)).min()
}

/// How often a message that lost a deadlock is tried.
const CONFLICT_ATTEMPTS: u32 = 4;

/// One transaction for the whole batch; with `isolate`, a savepoint per
/// message, so that a failing message is rolled back alone (without, the
/// first failure fails the batch). Messages are written in (thread,
/// Message-ID) order, so that two instances writing the same threads take
/// their locks in the same order; the results come back in the batch's order.
async fn write_batch(
    write: &Writer,
    policy: OutboxPolicy,
    counters: &GroupCommitCounters,
    batch: &[WriteJob],
    isolate: bool,
) -> StoreResult<Vec<StoreResult<Inserted>>> {
    let mut order: Vec<usize> = (0..batch.len()).collect();
    order.sort_by(|&a, &b| {
        let key = |job: &WriteJob| (job.message.thread_id, job.message.rfc_message_id.clone());
        key(&batch[a]).cmp(&key(&batch[b]))
    });
    let mut connection = lock_writer(write).await?;
    let started = std::time::Instant::now();
    let mut tx = sqlx::Connection::begin(&mut *connection).await?;
    let mut results: Vec<Option<StoreResult<Inserted>>> = batch.iter().map(|_| None).collect();
    if !isolate {
        // Plain replies together in a few multi-row statements; the rest one by one.
        let (plain, other): (Vec<usize>, Vec<usize>) = order.into_iter().partition(|&i| is_plain(&batch[i].message));
        let jobs: Vec<&WriteJob> = plain.iter().map(|&i| &batch[i]).collect();
        for (index, inserted) in plain.into_iter().zip(insert_plain_messages(&mut tx, policy, &jobs).await?) {
            results[index] = Some(Ok(inserted));
        }
        for index in other {
            let job = &batch[index];
            results[index] = Some(Ok(insert_message(&mut tx, policy, &job.message, job.log.as_ref()).await?));
        }
        commit(tx, counters, batch.len(), started).await?;
        return Ok(results
            .into_iter()
            .map(|r| r.unwrap_or(Err(StoreError::Batch("not written".to_owned()))))
            .collect());
    }
    for index in order {
        let job = &batch[index];
        let mut savepoint = sqlx::Acquire::begin(&mut tx).await?;
        match insert_message(&mut savepoint, policy, &job.message, job.log.as_ref()).await {
            Ok(inserted) => {
                savepoint.commit().await?;
                results[index] = Some(Ok(inserted));
            }
            Err(error) => {
                savepoint.rollback().await?;
                results[index] = Some(Err(error));
            }
        }
    }
    commit(tx, counters, batch.len(), started).await?;
    Ok(results.into_iter().map(|result| result.unwrap_or(Err(StoreError::Batch("not written".to_owned())))).collect())
}

/// Commits a batch's transaction, counting its statements' time (since
/// `started`) and the commit's.
async fn commit(
    tx: sqlx::Transaction<'_, Db>,
    counters: &GroupCommitCounters,
    messages: usize,
    started: std::time::Instant,
) -> StoreResult<()> {
    let statements = started.elapsed();
    tx.commit().await?;
    counters.add(messages, statements, started.elapsed() - statements);
    Ok(())
}

/// Most rows one multi-row statement carries (at most 13 values each).
const ROWS_PER_STATEMENT: usize = 1_000;

/// Whether a message is a plain reply: written by a customer, with a
/// Message-ID, no routing and no extra mail (attachments are fine). Those go
/// in together ([`insert_plain_messages`]).
fn is_plain(message: &NewMessage) -> bool {
    !message.author_is_agent
        && message.extras.is_none()
        && message.routing.is_none()
        && message.extra_mail.is_empty()
        && message.rfc_message_id.is_some()
}

/// Stores plain replies ([`is_plain`]) with their attachments,
/// notifications and log entries in four to six multi-row statements,
/// however many there are, instead of four to six statements each: what
/// makes a batch cheap when many replies arrive at once. Same outcome as
/// [`insert_message`] on each, in order.
async fn insert_plain_messages(
    conn: &mut Connection,
    policy: OutboxPolicy,
    jobs: &[&WriteJob],
) -> StoreResult<Vec<Inserted>> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let now = now_ms();
    let mut insert = sqlx::QueryBuilder::<Db>::new(
        "INSERT INTO messages (thread_id, author_id, body, source, rfc_message_id, created_at, original) ",
    );
    insert.push_values(jobs, |mut row, job| {
        let message = &job.message;
        row.push_bind(message.thread_id)
            .push_bind(message.author_id)
            .push_bind(&message.body)
            .push_bind(message.source.as_str())
            .push_bind(&message.rfc_message_id)
            .push_bind(now)
            .push_bind(message.original.as_ref().map(super::KeptOriginal::key));
    });
    insert.push(" ON CONFLICT (thread_id, rfc_message_id) DO NOTHING RETURNING id, thread_id, rfc_message_id");
    let stored: Vec<(i64, i64, Option<String>)> = insert.build_query_as().fetch_all(&mut *conn).await?;
    let mut new_ids: std::collections::HashMap<(i64, String), i64> =
        stored.into_iter().filter_map(|(id, thread, message_id)| Some(((thread, message_id?), id))).collect();
    // In order: the first job with a key stored now is new; any other is a
    // duplicate (of that one, or of a message stored earlier).
    let mut outcomes = Vec::with_capacity(jobs.len());
    let mut seen: std::collections::HashMap<(i64, String), i64> = std::collections::HashMap::new();
    for job in jobs {
        let key = (job.message.thread_id, job.message.rfc_message_id.clone().unwrap_or_default());
        if let Some(id) = new_ids.remove(&key) {
            seen.insert(key, id);
            outcomes.push(Inserted::New(id));
        } else if let Some(&id) = seen.get(&key) {
            outcomes.push(Inserted::Duplicate(id));
        } else {
            let existing: i64 =
                sqlx::query_scalar("SELECT id FROM messages WHERE thread_id = $1 AND rfc_message_id = $2")
                    .bind(key.0)
                    .bind(&key.1)
                    .fetch_one(&mut *conn)
                    .await?;
            seen.insert(key, existing);
            outcomes.push(Inserted::Duplicate(existing));
        }
    }
    // Only messages stored now get attachments and notifications.
    let stored: Vec<(&WriteJob, i64)> = jobs
        .iter()
        .zip(&outcomes)
        .filter_map(|(job, outcome)| match outcome {
            Inserted::New(id) => Some((*job, *id)),
            Inserted::Duplicate(_) => None,
        })
        .collect();
    let originals: Vec<&super::Original> =
        stored.iter().filter_map(|(job, _)| job.message.original.as_ref()?.to_store()).collect();
    insert_originals(conn, &originals, now).await?;
    let attached: Vec<(i64, &super::NewAttachment)> =
        stored.iter().flat_map(|&(job, id)| job.message.attachments.iter().map(move |a| (id, a))).collect();
    // Each content stored once (in SHA-256 order, so that two instances
    // take the rows' locks in the same order), then one row per attachment.
    let mut contents: Vec<(&str, &[u8])> = attached.iter().map(|(_, a)| (a.sha256.as_str(), &a.content[..])).collect();
    contents.sort_unstable_by_key(|(sha, _)| *sha);
    contents.dedup_by_key(|(sha, _)| *sha);
    for chunk in contents.chunks(ROWS_PER_STATEMENT) {
        let mut blobs = sqlx::QueryBuilder::<Db>::new("INSERT INTO blobs (sha256, content) ");
        blobs.push_values(chunk, |mut row, (sha, content)| {
            row.push_bind(*sha).push_bind(*content);
        });
        blobs.push(" ON CONFLICT (sha256) DO NOTHING");
        blobs.build().execute(&mut *conn).await?;
    }
    for chunk in attached.chunks(ROWS_PER_STATEMENT) {
        let mut rows =
            sqlx::QueryBuilder::<Db>::new("INSERT INTO attachments (message_id, filename, content_type, size, sha256) ");
        rows.push_values(chunk, |mut row, (id, attachment)| {
            row.push_bind(*id)
                .push_bind(&attachment.filename)
                .push_bind(&attachment.content_type)
                .push_bind(attachment.content.len() as i64)
                .push_bind(&attachment.sha256);
        });
        rows.build().execute(&mut *conn).await?;
    }
    // Their notifications, addressed from the users table as one message's are.
    let notify: Vec<(&str, i64, i64, i64, i64)> = stored
        .iter()
        .flat_map(|&(job, id)| {
            job.message.notify.iter().map(move |(kind, recipient)| {
                let due = if kind.coalesces() { now + policy.coalesce_ms } else { now };
                (kind.as_str(), job.message.thread_id, id, *recipient, due)
            })
        })
        .collect();
    // In chunks: a desk with many agents must stay under the databases'
    // limits on bound values per statement (32,766 for SQLite).
    for chunk in notify.chunks(ROWS_PER_STATEMENT) {
        let mut outbox = sqlx::QueryBuilder::<Db>::new(
            "INSERT INTO outbox (kind, thread_id, message_id, recipient_id, to_address, status, next_attempt_at, \
             expires_at, created_at) SELECT v.column1, v.column2, v.column3, u.id, u.email, 'pending', v.column5, ",
        );
        outbox.push_bind(now + policy.lifetime_ms).push(", ").push_bind(now).push(" FROM (");
        outbox.push_values(chunk, |mut row, (kind, thread, message, recipient, due)| {
            row.push_bind(*kind).push_bind(*thread).push_bind(*message).push_bind(*recipient).push_bind(*due);
        });
        outbox.push(") AS v JOIN users u ON u.id = v.column4 ORDER BY v.column3, u.id");
        outbox.build().execute(&mut *conn).await?;
    }
    // The threads' last activity, and the loop breaker's counts.
    let threads: Vec<i64> = jobs.iter().map(|job| job.message.thread_id).collect();
    let emailed: Vec<(i64, i64)> = stored
        .iter()
        .filter(|(job, _)| job.message.source == Source::Email)
        .map(|(job, _)| (job.message.thread_id, job.message.author_id))
        .collect();
    touch_threads(conn, now, &threads, &emailed).await?;
    // Their inbound-log entries as the sessions made them; a duplicate's
    // says so (the only ones copied).
    let logs: Vec<(std::borrow::Cow<'_, InboundLogEntry>, i64)> = jobs
        .iter()
        .zip(&outcomes)
        .filter_map(|(job, outcome)| {
            let log = job.log.as_ref()?;
            Some(match outcome {
                Inserted::New(id) => (std::borrow::Cow::Borrowed(log), *id),
                Inserted::Duplicate(id) => (std::borrow::Cow::Owned(as_duplicate(log, *id)), *id),
            })
        })
        .collect();
    let rows: Vec<(&InboundLogEntry, Option<i64>)> = logs.iter().map(|(entry, id)| (&**entry, Some(*id))).collect();
    insert_logs(conn, &rows).await?;
    Ok(outcomes)
}

/// A session's inbound-log entry for a message that turned out to be
/// stored already, as message `existing`.
fn as_duplicate(log: &InboundLogEntry, existing: i64) -> InboundLogEntry {
    InboundLogEntry {
        decision: "duplicate".to_owned(),
        reason: format!("already stored as message {existing}; delivered again"),
        // A repeated delivery's bytes are not kept: the first one's are.
        original: None,
        ..log.clone()
    }
}

/// Stores originals (see `originals.rs`), each key once, in key order (the
/// order they were kept, and the same order on two instances); a key stored
/// already (the same bytes kept in the same millisecond) has its
/// `stored_at` renewed.
pub(super) async fn insert_originals(
    conn: &mut Connection,
    originals: &[&super::Original],
    now: i64,
) -> StoreResult<()> {
    let mut sorted: Vec<&super::Original> = originals.to_vec();
    sorted.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    sorted.dedup_by(|a, b| a.key == b.key);
    for chunk in sorted.chunks(ROWS_PER_STATEMENT) {
        let mut insert =
            sqlx::QueryBuilder::<Db>::new("INSERT INTO originals (original_key, size, compression, content, holes, stored_at) ");
        insert.push_values(chunk, |mut row, original| {
            row.push_bind(original.key.as_str())
                .push_bind(original.size)
                .push_bind(original.compression)
                .push_bind(&original.content[..])
                .push_bind(original.holes.as_deref())
                .push_bind(now);
        });
        insert.push(" ON CONFLICT (original_key) DO UPDATE SET stored_at = excluded.stored_at");
        insert.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// Moves held item `id` from `held` to `status`, recording who and when;
/// `false` when it is not held (any more): then nothing changed.
pub(super) async fn claim_held(
    conn: &mut Connection,
    id: i64,
    status: super::HeldStatus,
    by: &str,
) -> StoreResult<bool> {
    let claimed: Option<i64> = sqlx::query_scalar(
        "UPDATE held_messages SET status = $1, acted_by = $2, acted_at = $3 \
         WHERE id = $4 AND status = 'held' RETURNING id",
    )
    .bind(status)
    .bind(by)
    .bind(now_ms())
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(claimed.is_some())
}

/// Queues one mail (not about a new message).
pub(super) async fn insert_outbox(conn: &mut Connection, policy: OutboxPolicy, new: &NewOutbox) -> StoreResult<i64> {
    let now = now_ms();
    Ok(sqlx::query_scalar(
        "INSERT INTO outbox (kind, thread_id, recipient_id, to_address, context, status, next_attempt_at, expires_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, $6) RETURNING id",
    )
    .bind(&new.kind)
    .bind(new.thread_id)
    .bind(new.recipient_id)
    .bind(&new.to_address)
    .bind(new.context.to_string())
    .bind(now)
    .bind(now + policy.lifetime_ms)
    .fetch_one(&mut *conn)
    .await?)
}

/// Stores one message with everything that belongs to it; see [`super::Store::insert_message`].
pub(super) async fn insert_message(
    conn: &mut Connection,
    policy: OutboxPolicy,
    message: &NewMessage,
    log: Option<&InboundLogEntry>,
) -> StoreResult<Inserted> {
    let now = now_ms();
    let extras = message.extras.as_deref();
    let kind = extras.map(|extras| extras.kind).unwrap_or_default();
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO messages (thread_id, author_id, body, source, rfc_message_id, created_at, original, kind) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (thread_id, rfc_message_id) DO NOTHING RETURNING id",
    )
    .bind(message.thread_id)
    .bind(message.author_id)
    .bind(&message.body)
    .bind(message.source.as_str())
    .bind(&message.rfc_message_id)
    .bind(now)
    .bind(message.original.as_ref().map(super::KeptOriginal::key))
    .bind(kind)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(id) = id else {
        let existing: i64 = sqlx::query_scalar("SELECT id FROM messages WHERE thread_id = $1 AND rfc_message_id = $2")
            .bind(message.thread_id)
            .bind(&message.rfc_message_id)
            .fetch_one(&mut *conn)
            .await?;
        if let Some(log) = log {
            insert_log(conn, &as_duplicate(log, existing), Some(existing)).await?;
        }
        return Ok(Inserted::Duplicate(existing));
    };
    if let Some(original) = message.original.as_ref().and_then(super::KeptOriginal::to_store) {
        insert_originals(conn, &[original], now).await?;
    }
    for attachment in &message.attachments {
        let sha256 = &attachment.sha256;
        sqlx::query("INSERT INTO blobs (sha256, content) VALUES ($1, $2) ON CONFLICT (sha256) DO NOTHING")
            .bind(sha256)
            .bind(&attachment.content[..])
            .execute(&mut *conn)
            .await?;
        sqlx::query(
            "INSERT INTO attachments (message_id, filename, content_type, size, sha256) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(&attachment.filename)
        .bind(&attachment.content_type)
        .bind(attachment.content.len() as i64)
        .bind(sha256)
        .execute(&mut *conn)
        .await?;
    }
    for (kind, recipient_id) in &message.notify {
        let due = if kind.coalesces() { now + policy.coalesce_ms } else { now };
        sqlx::query(
            "INSERT INTO outbox (kind, thread_id, message_id, recipient_id, to_address, status, next_attempt_at, expires_at, created_at) \
             SELECT $1, $2, $3, u.id, u.email, 'pending', $4, $5, $6 FROM users u WHERE u.id = $7",
        )
        .bind(kind.as_str())
        .bind(message.thread_id)
        .bind(id)
        .bind(due)
        .bind(now + policy.lifetime_ms)
        .bind(now)
        .bind(recipient_id)
        .execute(&mut *conn)
        .await?;
    }
    // The thread's last activity and the loop breaker's counts, in the
    // statement the group commit uses; an agent's first answer also takes
    // an unassigned thread.
    let emailed = [(message.thread_id, message.author_id)];
    let emailed: &[(i64, i64)] = if message.source == Source::Email { &emailed } else { &[] };
    touch_threads(conn, now, &[message.thread_id], emailed).await?;
    if message.author_is_agent {
        sqlx::query("UPDATE threads SET assigned_agent_id = $1 WHERE id = $2 AND assigned_agent_id IS NULL")
            .bind(message.author_id)
            .bind(message.thread_id)
            .execute(&mut *conn)
            .await?;
    }
    if let Some(routing) = &message.routing {
        sqlx::query(
            "UPDATE threads SET queue = COALESCE($1, queue), priority = COALESCE($2, priority), tags = $3, \
             assigned_agent_id = COALESCE($4, assigned_agent_id) WHERE id = $5",
        )
        .bind(&routing.queue)
        .bind(&routing.priority)
        .bind(serde_json::to_string(&routing.tags).unwrap_or_else(|_| "[]".to_owned()))
        .bind(routing.assign)
        .bind(message.thread_id)
        .execute(&mut *conn)
        .await?;
    }
    for mail in &message.extra_mail {
        insert_outbox(conn, policy, &NewOutbox { thread_id: Some(message.thread_id), ..mail.clone() }).await?;
    }
    if let Some(extras) = extras {
        insert_extras(conn, message, extras, now).await?;
    }
    if let Some(log) = log {
        insert_log(conn, log, Some(id)).await?;
    }
    Ok(Inserted::New(id))
}

/// What a message brings besides itself ([`super::MessageExtras`]): people
/// copied in, mailgate's own notes, a status an agent's command set.
async fn insert_extras(
    conn: &mut Connection,
    message: &NewMessage,
    extras: &super::MessageExtras,
    now: i64,
) -> StoreResult<()> {
    let people = match &extras.participant_limits {
        Some(limits) if !extras.participants.is_empty() => {
            within_limits(conn, message, &extras.participants, limits, now).await?
        }
        _ => extras.participants.clone(),
    };
    insert_participants(conn, message.thread_id, Some(message.author_id), &people).await?;
    for note in &extras.system_notes {
        sqlx::query(
            "INSERT INTO messages (thread_id, author_id, body, source, created_at, kind) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(message.thread_id)
        .bind(message.author_id)
        .bind(note)
        .bind(message.source.as_str())
        .bind(now)
        .bind(super::MessageKind::System)
        .execute(&mut *conn)
        .await?;
    }
    if let Some((actor, lines)) = &extras.commands {
        sqlx::query(
            "INSERT INTO audit_log (at, actor, action, subject, detail) VALUES ($1, $2, 'thread.commands', $3, $4)",
        )
        .bind(now)
        .bind(actor)
        .bind(format!("thread {}", message.thread_id))
        .bind(serde_json::json!({ "commands": lines, "source": message.source.as_str() }).to_string())
        .execute(&mut *conn)
        .await?;
    }
    if let Some(status) = extras.status {
        sqlx::query("UPDATE threads SET status = $1, updated_at = $2 WHERE id = $3")
            .bind(status)
            .bind(now)
            .bind(message.thread_id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// The people of `people` to write, checked again against `limits` in the
/// writing transaction, the thread's row locked first (so that messages
/// copying people into one conversation are counted one after another):
/// all of them, or (over a limit) none, with a note for the agents.
async fn within_limits(
    conn: &mut Connection,
    message: &NewMessage,
    people: &[super::NewParticipant],
    limits: &super::ParticipantLimits,
    now: i64,
) -> StoreResult<Vec<super::NewParticipant>> {
    let thread_id = message.thread_id;
    sqlx::query("UPDATE threads SET participants = participants WHERE id = $1").bind(thread_id).execute(&mut *conn).await?;
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT email, status FROM participants WHERE thread_id = $1")
        .bind(thread_id)
        .fetch_all(&mut *conn)
        .await?;
    let counted = rows.iter().filter(|(_, status)| status == "active" || status == "pending").count() as i64;
    let fresh: Vec<&super::NewParticipant> =
        people.iter().filter(|p| !rows.iter().any(|(email, _)| *email == p.email)).collect();
    let outsiders = fresh.iter().filter(|p| p.outsider).count() as i64;
    let mut over = 1 + counted + fresh.len() as i64 > limits.per_conversation;
    if !over && outsiders > 0 {
        let organization = fresh.iter().find_map(|p| p.organization_id);
        let today: i64 = match organization {
            Some(org) => {
                sqlx::query_scalar(
                    "SELECT COUNT(*) FROM participants WHERE organization_id = $1 AND outsider = $2 AND created_at >= $3",
                )
                .bind(org)
                .bind(true)
                .bind(limits.since)
                .fetch_one(&mut *conn)
                .await?
            }
            None => {
                sqlx::query_scalar(
                    "SELECT COUNT(*) FROM participants p JOIN threads t ON t.id = p.thread_id \
                     WHERE t.site_id = $1 AND p.organization_id IS NULL AND p.outsider = $2 AND p.created_at >= $3",
                )
                .bind(limits.site_id)
                .bind(true)
                .bind(limits.since)
                .fetch_one(&mut *conn)
                .await?
            }
        };
        over = today + outsiders > limits.outsiders_per_day;
    }
    if !over {
        return Ok(people.to_vec());
    }
    let noted: Option<i64> =
        sqlx::query_scalar("SELECT MAX(created_at) FROM messages WHERE thread_id = $1 AND kind = 'system'")
            .bind(thread_id)
            .fetch_one(&mut *conn)
            .await?;
    if noted.is_none_or(|at| at <= now - 3_600_000) {
        let names: Vec<&str> = fresh.iter().map(|p| p.email.as_str()).collect();
        sqlx::query(
            "INSERT INTO messages (thread_id, author_id, body, source, created_at, kind) VALUES ($1, $2, $3, 'email', $4, $5)",
        )
        .bind(thread_id)
        .bind(message.author_id)
        .bind(format!(
            "Not added to this conversation: {} (messages copying people arrived together, and together they would \
             pass the limits of {} participants a conversation or {} outsiders a day)",
            names.join(", "),
            limits.per_conversation,
            limits.outsiders_per_day
        ))
        .bind(now)
        .bind(super::MessageKind::System)
        .execute(&mut *conn)
        .await?;
    }
    Ok(Vec::new())
}

/// Records people copied into a conversation: each added one gets a user
/// (their reply address is bound to it); a person with a row already
/// (declined, left, or there) keeps it.
pub(super) async fn insert_participants(
    conn: &mut Connection,
    thread_id: i64,
    added_by: Option<i64>,
    people: &[super::NewParticipant],
) -> StoreResult<()> {
    let now = now_ms();
    for person in people {
        let user_id = match (person.active, person.user_id) {
            (true, None) => Some(participant_user(conn, &person.email, &person.name).await?),
            (_, known) => known,
        };
        let status =
            if person.active { super::ParticipantStatus::Active } else { super::ParticipantStatus::Pending };
        sqlx::query(
            "INSERT INTO participants (thread_id, email, name, user_id, organization_id, outsider, status, added_by, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) \
             ON CONFLICT (thread_id, email) DO NOTHING",
        )
        .bind(thread_id)
        .bind(&person.email)
        .bind(&person.name)
        .bind(user_id)
        .bind(person.organization_id)
        .bind(person.outsider)
        .bind(status)
        .bind(added_by)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    if people.iter().any(|p| p.active) {
        count_participants(conn, thread_id).await?;
    }
    Ok(())
}

/// Sets a thread's count of active participants from their rows.
pub(super) async fn count_participants(conn: &mut Connection, thread_id: i64) -> StoreResult<()> {
    sqlx::query(
        "UPDATE threads SET participants = (SELECT COUNT(*) FROM participants \
         WHERE thread_id = $1 AND status = 'active') WHERE id = $1",
    )
    .bind(thread_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The user of a participant's address: theirs when they have one, else a
/// new one of no organization (the conversation is all they may write in).
pub(super) async fn participant_user(conn: &mut Connection, email: &str, name: &str) -> StoreResult<i64> {
    sqlx::query(
        "INSERT INTO users (email, name, role, organization_id, created_at) VALUES ($1, $2, 'member', NULL, $3) \
         ON CONFLICT (email) DO NOTHING",
    )
    .bind(email)
    .bind(if name.trim().is_empty() { email } else { name })
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(sqlx::query_scalar("SELECT id FROM users WHERE email = $1").bind(email).fetch_one(&mut *conn).await?)
}

/// Sets the last activity of `threads` and of the threads of `emailed` to
/// `now`, and adds the emailed messages (one (thread, author) pair each) to
/// the loop breaker's counts: on the threads' rows and per sender. A window
/// older than [`EMAIL_WINDOW_MS`] starts again at `now`.
async fn touch_threads(conn: &mut Connection, now: i64, threads: &[i64], emailed: &[(i64, i64)]) -> StoreResult<()> {
    let since = now - EMAIL_WINDOW_MS;
    // Each row once per statement, in id order (two instances take the
    // rows' locks in the same order).
    let mut per_thread: std::collections::BTreeMap<i64, i64> = threads.iter().map(|&thread| (thread, 0)).collect();
    let mut per_sender = std::collections::BTreeMap::<i64, i64>::new();
    for &(thread, author) in emailed {
        *per_thread.entry(thread).or_default() += 1;
        *per_sender.entry(author).or_default() += 1;
    }
    let per_thread: Vec<(i64, i64)> = per_thread.into_iter().collect();
    for chunk in per_thread.chunks(ROWS_PER_STATEMENT) {
        let mut update = sqlx::QueryBuilder::<Db>::new("UPDATE threads SET updated_at = ");
        update.push_bind(now).push(", email_window_start = CASE WHEN email_window_start >= ").push_bind(since);
        update.push(" THEN email_window_start ELSE ").push_bind(now);
        update.push(" END, emails_in_window = CASE WHEN email_window_start >= ").push_bind(since);
        update.push(" THEN emails_in_window + v.column2 ELSE v.column2 END FROM (");
        update.push_values(chunk, |mut row, (thread, emails)| {
            row.push_bind(*thread).push_bind(*emails);
        });
        update.push(") AS v WHERE threads.id = v.column1");
        update.build().execute(&mut *conn).await?;
    }
    let per_sender: Vec<(i64, i64)> = per_sender.into_iter().collect();
    for chunk in per_sender.chunks(ROWS_PER_STATEMENT) {
        let mut upsert = sqlx::QueryBuilder::<Db>::new("INSERT INTO sender_email_windows (author_id, window_start, emails) ");
        upsert.push_values(chunk, |mut row, (author, emails)| {
            row.push_bind(*author).push_bind(now).push_bind(*emails);
        });
        upsert.push(" ON CONFLICT (author_id) DO UPDATE SET window_start = CASE WHEN sender_email_windows.window_start >= ");
        upsert.push_bind(since).push(" THEN sender_email_windows.window_start ELSE excluded.window_start END, ");
        upsert.push("emails = CASE WHEN sender_email_windows.window_start >= ").push_bind(since);
        upsert.push(" THEN sender_email_windows.emails + excluded.emails ELSE excluded.emails END");
        upsert.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// Writes one inbound log entry (`stored`: the message it stored, if not
/// already in the entry).
pub(super) async fn insert_log(conn: &mut Connection, entry: &InboundLogEntry, stored: Option<i64>) -> StoreResult<()> {
    insert_logs(conn, &[(entry, stored)]).await
}

/// Writes inbound log entries, each with the message it stored (or the
/// entry's own `stored_message`), in one statement.
async fn insert_logs(conn: &mut Connection, entries: &[(&InboundLogEntry, Option<i64>)]) -> StoreResult<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut log = sqlx::QueryBuilder::<Db>::new(
        "INSERT INTO inbound_log (received_at, peer, helo, mail_from, rcpt_to, message_id, decision, reason, \
         smtp_reply, thread_id, stored_message, rules, auth, original, subject, held_id, notice_id, headers) ",
    );
    log.push_values(entries, |mut row, (entry, stored)| {
        row.push_bind(entry.received_at)
            .push_bind(&entry.peer)
            .push_bind(&entry.helo)
            .push_bind(&entry.mail_from)
            .push_bind(&entry.rcpt_to)
            .push_bind(&entry.message_id)
            .push_bind(&entry.decision)
            .push_bind(&entry.reason)
            .push_bind(&entry.smtp_reply)
            .push_bind(entry.thread_id)
            .push_bind(stored.or(entry.stored_message))
            .push_bind(&entry.rules)
            .push_bind(&entry.auth)
            .push_bind(&entry.original)
            .push_bind(&entry.subject)
            .push_bind(entry.held_id)
            .push_bind(entry.notice_id)
            .push_bind(&entry.headers);
    });
    log.build().execute(&mut *conn).await?;
    Ok(())
}

/// Gives `domains` to organization `id`: the sentence naming the first one
/// another organization has, if any (the caller rolls back).
pub(super) async fn claim_domains(
    tx: &mut sqlx::Transaction<'_, Db>,
    id: i64,
    domains: &[String],
) -> StoreResult<Option<String>> {
    for domain in domains {
        let owner: Option<i64> = sqlx::query_scalar("SELECT organization_id FROM organization_domains WHERE domain = $1")
            .bind(domain)
            .fetch_optional(&mut **tx)
            .await?;
        match owner {
            Some(owner) if owner != id => {
                return Ok(Some(format!("the domain {domain} belongs to organization {owner}")));
            }
            Some(_) => {}
            None => {
                sqlx::query("INSERT INTO organization_domains (domain, organization_id, created_at) VALUES ($1, $2, $3)")
                    .bind(domain)
                    .bind(id)
                    .bind(now_ms())
                    .execute(&mut **tx)
                    .await?;
            }
        }
    }
    Ok(None)
}

