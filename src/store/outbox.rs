//! The outbox: queueing, claiming with a lease, recording deliveries, retries, bounces and suppressions.

use super::{
    Backend, Connection, Delivery, InboundLogEntry, NewOutbox, OutboxItem, ROWS_PER_UPDATE, Readers, Store, StoreError,
    StoreResult, now_ms, postgres_writes, sqlite_writes,
};

/// The most the console's menu counts of anything ([`Store::waiting_for_an_admin`]);
/// more shows as `999+`.
pub const MENU_COUNT_CAP: i64 = 999;

impl Store {
    /// Claims up to `limit` due items for `lease_ms` (and up to `limit` more
    /// whose previous worker's lease ran out: it died).
    pub async fn claim_due(&self, limit: i64, lease_ms: i64, by: &str) -> StoreResult<Vec<OutboxItem>> {
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
                 UPDATE outbox SET status = 'sending', claimed_until = $1, claimed_by = $4 \
                 WHERE id IN (SELECT id FROM due UNION ALL SELECT id FROM expired) RETURNING *"
            )
        };
        let mut claimed: Vec<OutboxItem> = match &self.backend {
            Backend::Sqlite { writer, .. } => {
                let mut writer = writer.lock().await?;
                sqlx::query_as(&sql(""))
                    .bind(now + lease_ms)
                    .bind(now)
                    .bind(limit)
                    .bind(by)
                    .fetch_all(&mut *writer)
                    .await?
            }
            Backend::Postgres { pool, .. } => {
                sqlx::query_as(&sql("FOR UPDATE OF o SKIP LOCKED"))
                    .bind(now + lease_ms)
                    .bind(now)
                    .bind(limit)
                    .bind(by)
                    .fetch_all(pool)
                    .await?
            }
        };
        claimed.sort_by_key(|item| item.id);
        Ok(claimed)
    }

    /// Proof that no other live instance goes by `name` (PostgreSQL: a
    /// session advisory lock on the name, on a connection kept for the life
    /// of the guard); `None` when one does. SQLite needs none here: its
    /// instances are told apart by the lock on their data folder.
    pub async fn lock_instance_name(&self, name: &str) -> StoreResult<Option<InstanceNameLock>> {
        match &self.backend {
            Backend::Sqlite { .. } => Ok(Some(InstanceNameLock(None))),
            Backend::Postgres { pool, .. } => {
                let mut connection = pool.acquire().await?.detach();
                let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1))")
                    .bind(format!("mailgate instance {name}"))
                    .fetch_one(&mut connection)
                    .await?;
                Ok(locked.then_some(InstanceNameLock(Some(connection))))
            }
        }
    }

    /// Gives back the items instance `by` had claimed and not finished (it
    /// was killed): called at its start, so that they go out at once rather
    /// than after their lease. Returns how many.
    pub async fn release_claims_of(&self, by: &str) -> StoreResult<u64> {
        let released = writing!(self, |db| sqlx::query(
            "UPDATE outbox SET status = 'pending', claimed_until = NULL, claimed_by = NULL \
             WHERE status = 'sending' AND claimed_by = $1"
        )
        .bind(by)
        .execute(db)
        .await
        .map(|done| done.rows_affected()))?;
        if released > 0 {
            self.outbox_wakeup.queued_unknown();
        }
        Ok(released)
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
        let mut sent: Vec<(i64, &str, Option<&[u8]>)> = Vec::new();
        let mut merged: Vec<(i64, &str, String)> = Vec::new();
        for outcome in outcomes {
            if let Delivery::Sent { id, rfc_message_id, merged: carried, sent_text } = outcome {
                sent.push((*id, rfc_message_id, sent_text.as_deref()));
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
                    ", rfc_message_id = v.column2, sent_text = v.column3, attempts = attempts + 1, \
                     claimed_until = NULL, last_error = NULL FROM (",
                );
                update.push_values(chunk, |mut row, (id, rfc_message_id, text)| {
                    row.push_bind(*id).push_bind(*rfc_message_id).push_bind(*text);
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
                let log = InboundLogEntry { notice_id: Some(id), ..log.clone() };
                w::insert_log(&mut tx, &log, None).await?;
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

    /// Every opt-out, newest first, with the user's address: `(user id,
    /// address, kind, when in Unix ms)`; `address` filters by a part of it.
    pub async fn all_opt_outs(
        &self,
        address: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<(i64, String, String, i64)>> {
        Ok(reading!(self, |db| sqlx::query_as(
            "SELECT o.user_id, u.email, o.kind, o.created_at FROM notification_optouts o \
             JOIN users u ON u.id = o.user_id WHERE ($1 IS NULL OR LOWER(u.email) LIKE $1 ESCAPE '\\') \
             ORDER BY o.created_at DESC LIMIT $2"
        )
        .bind(super::lists::containing(address.map(str::to_owned).as_ref()))
        .bind(limit)
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

    /// What the console's menu counts: held mail waiting, failed outbox items
    /// (both read through an index), each up to [`MENU_COUNT_CAP`] + 1 only:
    /// every page shows them, and counting the failed mail of years (tens of
    /// thousands of rows) on each page made the console's pages the slowest
    /// reads at a million messages on PostgreSQL (issue 36).
    pub async fn waiting_for_an_admin(&self) -> StoreResult<(i64, i64)> {
        Ok(reading!(self, |db| sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM (SELECT 1 FROM held_messages WHERE status = 'held' LIMIT 1000) h), \
                    (SELECT COUNT(*) FROM (SELECT 1 FROM outbox WHERE status = 'failed' LIMIT 1000) f)"
        )
        .fetch_one(db)
        .await)?)
    }

    /// What the metrics read when scraped: held mail waiting, the outbox's
    /// items by status, when its oldest pending item was created (Unix ms),
    /// and how many bounces are recorded.
    pub async fn operator_gauges(&self) -> StoreResult<(i64, Vec<(String, i64)>, Option<i64>, i64)> {
        let held: i64 =
            reading!(self, |db| sqlx::query_scalar("SELECT COUNT(*) FROM held_messages WHERE status = 'held'")
                .fetch_one(db)
                .await)?;
        let by_status: Vec<(String, i64)> =
            reading!(self, |db| sqlx::query_as("SELECT status, COUNT(*) FROM outbox GROUP BY status")
                .fetch_all(db)
                .await)?;
        let oldest: Option<i64> =
            reading!(self, |db| sqlx::query_scalar("SELECT MIN(created_at) FROM outbox WHERE status = 'pending'")
                .fetch_one(db)
                .await)?;
        let bounces: i64 = reading!(self, |db| sqlx::query_scalar("SELECT COUNT(*) FROM bounces").fetch_one(db).await)?;
        Ok((held, by_status, oldest, bounces))
    }
}

/// Held while an instance runs under its name (see
/// [`Store::lock_instance_name`]); dropping it ends the lock.
#[derive(Debug)]
pub struct InstanceNameLock(#[allow(dead_code, reason = "held only for its lock")] Option<sqlx::PgConnection>);
