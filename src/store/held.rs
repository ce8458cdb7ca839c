//! The held queue: mail kept for an admin instead of being posted or
//! refused (a DMARC failure or a stranger on a token with `hold`, a message
//! mailgate could not read). An item is `held` until an admin releases it
//! into its thread, discards it, or answers the sender with the refusal
//! notice; each of those happens once (the state changes only from `held`,
//! in the transaction that does the rest), and records who acted and when.

use super::HeldStatus;
#[allow(unused_imports, reason = "the reading!/writing! macros name these")]
use super::{
    Backend, HeldItem, InboundLogEntry, Inserted, NewHeld, NewMessage, NewOutbox, Original, Readers, Store, StoreError,
    StoreResult, now_ms, postgres_writes, sqlite_writes,
};
use sqlx::Connection;

/// Which held items to list.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct HeldFilter {
    /// Only items in this state (none, or `all`: every state).
    #[serde(default, deserialize_with = "crate::store::states::any_or")]
    pub status: Option<crate::store::HeldStatus>,
    /// Only items held for this reason code.
    pub reason: Option<String>,
    /// Only items whose envelope sender or From address contains this.
    pub sender: Option<String>,
    /// Only items received at or after this time (Unix ms).
    pub since: Option<i64>,
    /// Only items with an id below this one (the cursor of the next page).
    pub before_id: Option<i64>,
    /// How many, newest first.
    pub limit: Option<i64>,
}

/// The columns of a [`HeldItem`]; the raw bytes are read only when asked for.
const HELD_COLUMNS: &str = "SELECT h.id, h.received_at, h.peer, h.helo, h.mail_from, h.rcpt_to, h.from_address, \
     h.subject, h.message_id, h.reason_code, h.reason, h.auth, h.thread_id, h.status, h.acted_by, h.acted_at, \
     h.released_message, CAST(COALESCE(o.size, LENGTH(h.raw)) AS BIGINT) AS size, h.original \
     FROM held_messages h LEFT JOIN originals o ON o.original_key = h.original";

impl Store {
    /// Keeps a message for an admin, with its log entry and the message as
    /// it arrived, in one transaction. Returns the held item's id.
    ///
    /// The same bytes from the same envelope while an earlier copy still
    /// waits (a sender's retry after a lost answer, or a pipe command run
    /// again) are that item: nothing is added.
    pub async fn hold(&self, held: &NewHeld, log: &InboundLogEntry, original: &Original) -> StoreResult<i64> {
        let id = writing!(self, |db, w| {
            let mut tx = db.begin().await?;
            // The same bytes: the keys' SHA-256 (each copy has its own key).
            let waiting: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM held_messages WHERE status = $2 AND mail_from = $3 AND rcpt_to = $4 \
                 AND SUBSTR(original, LENGTH(original) - 63) = $1 ORDER BY id LIMIT 1",
            )
            .bind(original.sha256())
            .bind(super::HeldStatus::Held)
            .bind(log.mail_from.as_deref().unwrap_or(""))
            .bind(&log.rcpt_to)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(id) = waiting {
                tx.commit().await?;
                return Ok(id);
            }
            w::insert_originals(&mut tx, &[original], now_ms()).await?;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO held_messages (received_at, mail_from, rcpt_to, reason, raw, reason_code, original, \
                 peer, helo, from_address, subject, message_id, auth, thread_id) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING id",
            )
            .bind(log.received_at)
            .bind(log.mail_from.as_deref().unwrap_or(""))
            .bind(&log.rcpt_to)
            .bind(&held.reason)
            .bind(&b""[..])
            .bind(&held.reason_code)
            .bind(&original.key)
            .bind(&log.peer)
            .bind(&log.helo)
            .bind(&held.from_address)
            .bind(&held.subject)
            .bind(&log.message_id)
            .bind(&log.auth)
            .bind(held.thread_id)
            .fetch_one(&mut *tx)
            .await?;
            let log = InboundLogEntry { held_id: Some(id), ..log.clone() };
            w::insert_log(&mut tx, &log, None).await?;
            tx.commit().await?;
            id
        });
        Ok(id)
    }

    /// The inbound-log entries about held item `id`: its arrival, then
    /// every admin's action on it, oldest first.
    pub async fn held_log_entries(&self, id: i64) -> StoreResult<Vec<(i64, String, i64)>> {
        Ok(reading!(self, |db| sqlx::query_as(
            "SELECT id, decision, received_at FROM inbound_log WHERE held_id = $1 ORDER BY id"
        )
        .bind(id)
        .fetch_all(db)
        .await)?)
    }

    /// Held items, newest first, filtered.
    pub async fn held_items(&self, filter: &HeldFilter) -> StoreResult<Vec<HeldItem>> {
        let sender = super::lists::containing(filter.sender.as_ref());
        Ok(reading!(self, |db| {
            sqlx::query_as(&format!(
            "{HELD_COLUMNS} WHERE ($1 IS NULL OR h.status = $1) AND ($2 IS NULL OR h.reason_code = $2) \
             AND ($3 IS NULL OR LOWER(h.mail_from) LIKE $3 ESCAPE '\\' OR LOWER(COALESCE(h.from_address, '')) LIKE $3 ESCAPE '\\') \
             AND ($4 IS NULL OR h.received_at >= $4) AND ($5 IS NULL OR h.id < $5) ORDER BY h.id DESC LIMIT $6"
        ))
        .bind(filter.status)
        .bind(&filter.reason)
        .bind(&sender)
        .bind(filter.since)
        .bind(filter.before_id)
        .bind(super::lists::page(filter.limit))
        .fetch_all(db)
        .await
        })?)
    }

    /// One held item.
    pub async fn held_item(&self, id: i64) -> StoreResult<Option<HeldItem>> {
        Ok(reading!(self, |db| sqlx::query_as(&format!("{HELD_COLUMNS} WHERE h.id = $1"))
            .bind(id)
            .fetch_optional(db)
            .await)?)
    }

    /// A held item's message as it arrived; `None` when its bytes are gone
    /// (purged with a discarded item).
    pub async fn held_raw(&self, item: &HeldItem) -> StoreResult<Option<Vec<u8>>> {
        if let Some(sha256) = &item.original {
            return self.original(sha256).await;
        }
        Ok(reading!(self, |db| sqlx::query_scalar("SELECT raw FROM held_messages WHERE id = $1")
            .bind(item.id)
            .fetch_optional(db)
            .await)?)
    }

    /// Releases a held item into its thread as `message`, recording `by`;
    /// in one transaction, and only if it is still held (two admins, or two
    /// instances, releasing it at once store it once: the second is told
    /// it was released already).
    pub async fn release_held(
        &self,
        id: i64,
        by: &str,
        message: &NewMessage,
        log: &InboundLogEntry,
    ) -> StoreResult<Inserted> {
        let inserted = writing!(self, |db, w| {
            let mut tx = db.begin().await?;
            if !w::claim_held(&mut tx, id, HeldStatus::Released, by).await? {
                tx.rollback().await?;
                return Err(self.not_held(id).await);
            }
            let inserted = w::insert_message(&mut tx, self.policy, message, Some(log)).await?;
            sqlx::query("UPDATE held_messages SET released_message = $1, thread_id = $2 WHERE id = $3")
                .bind(inserted.id())
                .bind(message.thread_id)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            inserted
        });
        self.outbox_wakeup.queued_unknown();
        Ok(inserted)
    }

    /// Discards a held item (its bytes go at the next purge after
    /// `retention.held_days`), recording `by`.
    pub async fn discard_held(&self, id: i64, by: &str, log: &InboundLogEntry) -> StoreResult<HeldItem> {
        self.close_held(id, HeldStatus::Discarded, by, None, log).await
    }

    /// Answers a held item's sender with `notice` (the refusal notice) and
    /// closes the item, recording `by`.
    pub async fn notice_held(
        &self,
        id: i64,
        by: &str,
        notice: &NewOutbox,
        log: &InboundLogEntry,
    ) -> StoreResult<HeldItem> {
        self.close_held(id, HeldStatus::Noticed, by, Some(notice), log).await
    }

    /// Puts discarded item `id` back in the queue, recording the action in
    /// `log`; refused when it was not discarded (or its message is gone).
    pub async fn restore_held(&self, id: i64, log: &InboundLogEntry) -> StoreResult<()> {
        writing!(self, |db, w| {
            let mut tx = db.begin().await?;
            // Only while its message is kept, checked in the same statement:
            // a purge between a check and this update would leave an item
            // held for ever with nothing to release.
            let restored: Option<i64> = sqlx::query_scalar(
                "UPDATE held_messages SET status = 'held', acted_by = NULL, acted_at = NULL \
                 WHERE id = $1 AND status = 'discarded' \
                 AND (LENGTH(raw) > 0 OR EXISTS (SELECT 1 FROM originals o WHERE o.original_key = held_messages.original)) \
                 RETURNING id",
            )
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            if restored.is_none() {
                tx.rollback().await?;
                return Err(self.not_held(id).await);
            }
            let log = InboundLogEntry { held_id: Some(id), ..log.clone() };
            w::insert_log(&mut tx, &log, None).await?;
            tx.commit().await?;
        });
        Ok(())
    }

    async fn close_held(
        &self,
        id: i64,
        status: HeldStatus,
        by: &str,
        notice: Option<&NewOutbox>,
        log: &InboundLogEntry,
    ) -> StoreResult<HeldItem> {
        writing!(self, |db, w| {
            let mut tx = db.begin().await?;
            if !w::claim_held(&mut tx, id, status, by).await? {
                tx.rollback().await?;
                return Err(self.not_held(id).await);
            }
            let notice_id = match notice {
                Some(notice) => Some(w::insert_outbox(&mut tx, self.policy, notice).await?),
                None => None,
            };
            let log = InboundLogEntry { held_id: Some(id), notice_id, ..log.clone() };
            w::insert_log(&mut tx, &log, None).await?;
            tx.commit().await?;
        });
        if notice.is_some() {
            self.outbox_wakeup.queued_unknown();
        }
        self.held_item(id).await?.ok_or(StoreError::NotFound("held item"))
    }

    /// Why item `id` could not be acted on: it does not exist, or an admin
    /// acted on it already.
    async fn not_held(&self, id: i64) -> StoreError {
        match self.held_item(id).await {
            Ok(Some(item)) => StoreError::Conflict(format!(
                "held item {id} was {} already{}",
                item.status,
                item.acted_by.map(|by| format!(" by {by}")).unwrap_or_default()
            )),
            Ok(None) => StoreError::NotFound("held item"),
            Err(error) => error,
        }
    }
}
