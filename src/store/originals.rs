//! Messages kept exactly as they arrived.
//!
//! Every message mailgate answers `250` (stored in a thread, held for an
//! admin, or recorded and dropped) keeps its raw bytes in `originals`: once
//! per content (the SHA-256 of the raw bytes), compressed with lz4 by
//! mailgate (PostgreSQL is told not to compress it again), written in the
//! same transaction as the message or log entry that refers to it. The
//! message, its inbound-log entry and a held item refer to it by that hash.
//!
//! Retention deletes rows older than `retention.raw_days`, a few hundred at
//! a time in short transactions, so that a purge never holds the writer for
//! long; the originals of held items still waiting for an admin are never
//! purged.

#[allow(unused_imports, reason = "the reading!/writing! macros name these")]
use super::{
    Backend, InboundLogEntry, MESSAGE_COLUMNS, Readers, Store, StoreError, StoreResult, StoredMessage, hex,
    postgres_writes, sqlite_writes,
};
use sha2::{Digest, Sha256};
use sqlx::Connection;

/// A received message's raw bytes, ready to store.
#[derive(Debug, Clone)]
pub struct Original {
    /// SHA-256 of the raw bytes, lower-case hex: how everything refers to it.
    pub sha256: String,
    /// Size of the raw bytes.
    pub size: i64,
    /// `lz4`, or `none` when compressing would not make it smaller.
    pub compression: &'static str,
    /// The bytes as stored.
    pub content: Vec<u8>,
}

impl Original {
    /// The raw bytes of a message, hashed and compressed.
    pub fn of(raw: &[u8]) -> Self {
        let sha256 = hex(&Sha256::digest(raw));
        let size = i64::try_from(raw.len()).unwrap_or(i64::MAX);
        let compressed = lz4_flex::block::compress_prepend_size(raw);
        if compressed.len() < raw.len() {
            Self { sha256, size, compression: "lz4", content: compressed }
        } else {
            Self { sha256, size, compression: "none", content: raw.to_vec() }
        }
    }

    /// The raw bytes again.
    pub fn raw(&self) -> StoreResult<Vec<u8>> {
        decompress(self.compression, &self.content)
    }
}

/// The raw bytes of a stored original.
fn decompress(compression: &str, content: &[u8]) -> StoreResult<Vec<u8>> {
    match compression {
        "none" => Ok(content.to_vec()),
        "lz4" => lz4_flex::block::decompress_size_prepended(content)
            .map_err(|error| StoreError::Corrupt(format!("a stored original does not decompress: {error}"))),
        other => Err(StoreError::Corrupt(format!("a stored original uses an unknown compression {other:?}"))),
    }
}

/// How much the kept originals take.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct OriginalsStats {
    /// Originals kept.
    pub count: i64,
    /// Their raw size, in bytes.
    pub raw_bytes: i64,
    /// What they take in the database (after compression), in bytes.
    pub stored_bytes: i64,
}

/// Most originals one purge transaction deletes.
const PURGE_BATCH: i64 = 200;

impl Store {
    /// The raw bytes of the original with this SHA-256; `None` when there is
    /// none (never kept, or purged after its retention).
    pub async fn original(&self, sha256: &str) -> StoreResult<Option<Vec<u8>>> {
        let row: Option<(String, Vec<u8>)> =
            reading!(self, |db| sqlx::query_as("SELECT compression, content FROM originals WHERE sha256 = $1")
                .bind(sha256)
                .fetch_optional(db)
                .await)?;
        row.map(|(compression, content)| decompress(&compression, &content)).transpose()
    }

    /// How many originals are kept and what they take.
    pub async fn originals_stats(&self) -> StoreResult<OriginalsStats> {
        Ok(reading!(self, |db| sqlx::query_as(
            "SELECT CAST(COUNT(*) AS BIGINT) AS count, CAST(COALESCE(SUM(size), 0) AS BIGINT) AS raw_bytes, \
             CAST(COALESCE(SUM(LENGTH(content)), 0) AS BIGINT) AS stored_bytes FROM originals"
        )
        .fetch_one(db)
        .await)?)
    }

    /// Deletes originals stored before `before` (Unix ms), except those of
    /// held items still waiting for an admin, and held items that were acted
    /// on before `held_before`; in short transactions of a few hundred rows,
    /// so that ingest never waits long behind a purge. Returns how many
    /// originals and held items went.
    pub async fn purge(&self, before: Option<i64>, held_before: Option<i64>) -> StoreResult<(u64, u64)> {
        let mut originals = 0;
        if let Some(before) = before {
            loop {
                let deleted = writing!(self, |db| sqlx::query(
                    "DELETE FROM originals WHERE id IN (SELECT o.id FROM originals o WHERE o.stored_at < $1 \
                     AND NOT EXISTS (SELECT 1 FROM held_messages h WHERE h.original = o.sha256 AND h.status = 'held') \
                     ORDER BY o.stored_at LIMIT $2)",
                )
                .bind(before)
                .bind(PURGE_BATCH)
                .execute(db)
                .await
                .map(|done| done.rows_affected()))?;
                originals += deleted;
                if deleted < PURGE_BATCH as u64 {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
        let mut held = 0;
        if let Some(before) = held_before {
            loop {
                let deleted = writing!(self, |db| {
                    let mut tx = db.begin().await?;
                    let gone: Vec<(Option<String>, String)> = sqlx::query_as(
                        "DELETE FROM held_messages WHERE id IN (SELECT id FROM held_messages \
                         WHERE status <> 'held' AND acted_at < $1 ORDER BY id LIMIT $2) RETURNING original, status",
                    )
                    .bind(before)
                    .bind(PURGE_BATCH)
                    .fetch_all(&mut *tx)
                    .await?;
                    // A released item's original now belongs to its message;
                    // a discarded or answered one's goes with the item.
                    for (original, _) in gone.iter().filter(|(o, status)| o.is_some() && status != "released") {
                        sqlx::query(
                            "DELETE FROM originals WHERE sha256 = $1 AND NOT EXISTS \
                             (SELECT 1 FROM held_messages h WHERE h.original = $1)",
                        )
                        .bind(original)
                        .execute(&mut *tx)
                        .await?;
                    }
                    tx.commit().await?;
                    Ok::<_, sqlx::Error>(gone.len() as u64)
                })?;
                held += deleted;
                if deleted < PURGE_BATCH as u64 {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
        Ok((originals, held))
    }
}

/// The columns of an [`InboundLogEntry`].
const LOG_COLUMNS: &str = "SELECT id, received_at, peer, helo, mail_from, rcpt_to, message_id, decision, reason, \
     smtp_reply, thread_id, stored_message, rules, auth, original FROM inbound_log";

impl Store {
    /// One inbound-log entry.
    pub async fn inbound_entry(&self, id: i64) -> StoreResult<Option<InboundLogEntry>> {
        Ok(reading!(self, |db| sqlx::query_as(&format!("{LOG_COLUMNS} WHERE id = $1"))
            .bind(id)
            .fetch_optional(db)
            .await)?)
    }

    /// The inbound-log entry that stored message `id` (created at
    /// `created_at`): looked for among the entries of the minutes around
    /// it, through the log's time index.
    pub async fn inbound_entry_of_message(&self, id: i64, created_at: i64) -> StoreResult<Option<InboundLogEntry>> {
        const AROUND_MS: i64 = 10 * 60 * 1000;
        Ok(reading!(self, |db| sqlx::query_as(&format!(
            "{LOG_COLUMNS} WHERE received_at BETWEEN $1 AND $2 AND stored_message = $3 \
             AND decision IN ('accepted', 'released') ORDER BY id LIMIT 1"
        ))
        .bind(created_at - AROUND_MS)
        .bind(created_at + AROUND_MS)
        .bind(id)
        .fetch_optional(db)
        .await)?)
    }

    /// One stored message with its attachments.
    pub async fn message(&self, id: i64) -> StoreResult<Option<StoredMessage>> {
        let message: Option<StoredMessage> =
            reading!(self, |db| sqlx::query_as(&format!("{MESSAGE_COLUMNS} WHERE m.id = $1"))
                .bind(id)
                .fetch_optional(db)
                .await)?;
        let Some(message) = message else { return Ok(None) };
        Ok(self.with_attachments(message.thread_id, vec![message]).await?.pop())
    }

    /// Inbound-log entries received from `since` on (Unix ms) whose message
    /// was kept, oldest first, after entry `after_id`, at most `limit`: what
    /// `replay` reads again. Admins' actions on held mail are left out.
    pub async fn replayable(&self, since: i64, after_id: i64, limit: i64) -> StoreResult<Vec<InboundLogEntry>> {
        Ok(reading!(self, |db| sqlx::query_as(&format!(
            "{LOG_COLUMNS} WHERE received_at >= $1 AND id > $2 AND original IS NOT NULL \
             AND decision IN ('accepted', 'dropped', 'held') ORDER BY id LIMIT $3"
        ))
        .bind(since)
        .bind(after_id)
        .bind(limit)
        .fetch_all(db)
        .await)?)
    }
}
