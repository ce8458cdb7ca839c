//! Threads and their messages: lookups, the writes of a message (through the group writer), closing and reopening.

use super::{
    Attachment, BUSINESS_RANK, Backend, Connection, InboundLogEntry, Inserted, MESSAGE_COLUMNS, NewMessage, NewOutbox,
    NewThread, PlanFeatures, Readers, RecentEmail, Store, StoreError, StoreResult, StoredMessage, Thread, WriteJob,
    lookups, now_ms, postgres_writes, sqlite_writes,
};

impl Store {
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
            // The log records the answer the client gets, which names the
            // ticket only now that it has a number.
            let log = log.map(|log| InboundLogEntry {
                thread_id: Some(thread.id),
                smtp_reply: crate::domain::reply::for_disposition(&crate::domain::outcome::Disposition::Accepted {
                    thread_id: thread.id,
                    thread_label: thread.label(),
                    message_id: 0,
                    duplicate: false,
                })
                .to_string(),
                ..log.clone()
            });
            let inserted = w::insert_message(&mut tx, self.policy, &first, log.as_ref()).await?;
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
    pub async fn set_thread_status(&self, id: i64, status: super::ThreadStatus) -> StoreResult<()> {
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
        let generation = self.directory.generation();
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
        if self.directory.generation() == generation {
            self.directory.keep_features(site_id, features);
        }
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
    /// thread since `since` (each counted up to `cap`), and the last
    /// notification about it sent to `author_id`: what the RCPT of a reply
    /// token reads, so that reading and deciding need none of it again.
    /// Lookups made at the same time share one query (`lookups.rs`).
    pub async fn thread_with_recent(
        &self,
        id: i64,
        author_id: i64,
        since: i64,
        cap: i64,
    ) -> StoreResult<Option<(Thread, RecentEmail, Option<super::SentNotification>)>> {
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
    ///
    /// Pushes back instead of waiting without bound: when the database has
    /// fallen behind (a transaction written for longer than the stall limit,
    /// or too many messages waiting), or this message's commit does not come
    /// within the limit, the answer is [`StoreError::Busy`]. A message given
    /// up on that way may still be committed later, whole; its sender's
    /// retry is then a duplicate, stored once.
    pub async fn insert_message(&self, message: NewMessage, log: Option<InboundLogEntry>) -> StoreResult<Inserted> {
        use std::sync::atomic::Ordering;
        let busy = |why: String| {
            self.group_counters.pushed_back.fetch_add(1, Ordering::Relaxed);
            StoreError::Busy(why)
        };
        if let Some(why) = self.falling_behind() {
            return Err(busy(why));
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        let queued = match self.group.try_send(WriteJob { message, log, reply }) {
            Ok(()) => Ok(()),
            Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                Err(busy("the database's queue is full".to_owned()))
            }
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {
                Err(StoreError::Batch("the store is closed".to_owned()))
            }
        };
        queued?;
        match tokio::time::timeout(self.stall, answer).await {
            Ok(answer) => answer.map_err(|_| StoreError::Batch("the group commit writer stopped".to_owned()))?,
            Err(_) => Err(busy(format!("the database did not commit within {} s", self.stall.as_secs()))),
        }
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
    pub(super) async fn with_attachments(
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
}
