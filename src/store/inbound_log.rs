//! The inbound log: every SMTP transaction and its outcome, and bounces recorded with it.

use super::{
    Backend, Bounce, Connection, InboundLogEntry, Original, OutboxItem, Readers, Store, StoreError, StoreResult,
    Suppression, now_ms, postgres_writes, sqlite_writes,
};

impl Store {
    /// Records the outcome of an SMTP transaction that stored nothing.
    pub async fn log_inbound(&self, entry: &InboundLogEntry) -> StoreResult<()> {
        writing!(self, |db, w| w::insert_log(db, entry, None).await)
    }

    /// Records the outcome of an SMTP transaction with the message as it
    /// arrived (mail answered 250 and not posted: an auto-reply, mail to
    /// postmaster), in one transaction.
    pub async fn log_inbound_with_original(&self, entry: &InboundLogEntry, original: &Original) -> StoreResult<()> {
        writing!(self, |db, w| {
            let mut tx = db.begin().await?;
            w::insert_originals(&mut tx, &[original], now_ms()).await?;
            w::insert_log(&mut tx, entry, None).await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Records a bounce together with its inbound log entry and the report
    /// as it arrived.
    pub async fn record_bounce(
        &self,
        log: &InboundLogEntry,
        bounce: &Bounce,
        original: Option<&Original>,
    ) -> StoreResult<()> {
        writing!(self, |db, w| {
            let mut tx = db.begin().await?;
            if let Some(original) = original {
                w::insert_originals(&mut tx, &[original], now_ms()).await?;
            }
            sqlx::query(
                "INSERT INTO bounces (received_at, outbox_id, recipient, status, severity, diagnostic, \
                 original_message_id, counted) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(bounce.received_at)
            .bind(bounce.outbox_id)
            .bind(&bounce.recipient)
            .bind(&bounce.status)
            .bind(&bounce.severity)
            .bind(&bounce.diagnostic)
            .bind(&bounce.original_message_id)
            .bind(bounce.counted)
            .execute(&mut *tx)
            .await?;
            w::insert_log(&mut tx, log, None).await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// The most recent bounces, newest first.
    pub async fn bounces(&self, limit: i64) -> StoreResult<Vec<Bounce>> {
        Ok(reading!(self, |db| sqlx::query_as("SELECT * FROM bounces ORDER BY id DESC LIMIT $1")
            .bind(limit)
            .fetch_all(db)
            .await)?)
    }

    /// Addresses mail has stopped to: at least `threshold` counted, unlifted
    /// hard bounces within the last `window_days` days (0: ever), latest
    /// first, each with when it ends by itself.
    pub async fn suppressions(&self, threshold: u32, window_days: u32) -> StoreResult<Vec<Suppression>> {
        let window_ms = i64::from(window_days) * 86_400_000;
        let since = if window_days == 0 { i64::MIN } else { now_ms() - window_ms };
        let rows: Vec<(String, i64, Option<i64>)> = reading!(self, |db| sqlx::query_as(
            "SELECT recipient, received_at, outbox_id FROM bounces \
             WHERE counted = TRUE AND lifted_at IS NULL AND recipient IS NOT NULL AND received_at >= $1 \
             ORDER BY recipient, received_at"
        )
        .bind(since)
        .fetch_all(db)
        .await)?;
        // One notification counts once: its earliest report.
        let mut by_address: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
        let mut seen = std::collections::HashSet::new();
        for (address, at, outbox_id) in rows {
            if outbox_id.is_none_or(|id| seen.insert(id)) {
                by_address.entry(address).or_default().push(at);
            }
        }
        let threshold = threshold.max(1) as usize;
        let mut found: Vec<Suppression> = by_address
            .into_iter()
            .filter(|(_, times)| times.len() >= threshold)
            .map(|(address, times)| Suppression {
                bounces: times.len() as i64,
                first_at: times[0],
                last_at: times[times.len() - 1],
                // It ends when the oldest bounce that keeps the count at the
                // threshold leaves the window.
                expires_at: (window_days > 0).then(|| times[times.len() - threshold] + window_ms),
                address,
            })
            .collect();
        found.sort_by_key(|s| std::cmp::Reverse(s.last_at));
        Ok(found)
    }

    /// Lifts the suppression of `address`: its counted bounces stop counting
    /// (they stay recorded, with who lifted them and when). Returns how many
    /// bounces were lifted; 0 when the address was not suppressed.
    pub async fn lift_suppression(&self, address: &str, by: &str) -> StoreResult<u64> {
        let address = address.trim().to_lowercase();
        Ok(writing!(self, |db, _w| sqlx::query(
            "UPDATE bounces SET lifted_at = $1, lifted_by = $2 \
             WHERE recipient = $3 AND counted = TRUE AND lifted_at IS NULL"
        )
        .bind(now_ms())
        .bind(by)
        .bind(&address)
        .execute(db)
        .await
        .map(|done| done.rows_affected()))?)
    }

    /// One outbox item.
    pub async fn outbox_item(&self, id: i64) -> StoreResult<Option<OutboxItem>> {
        Ok(reading!(self, |db| sqlx::query_as("SELECT * FROM outbox WHERE id = $1").bind(id).fetch_optional(db).await)?)
    }

    /// The notification that went out with Message-ID `message_id`
    /// (without angle brackets), if any: the first of the items it carried.
    pub async fn notification_by_message_id(&self, message_id: &str) -> StoreResult<Option<OutboxItem>> {
        Ok(reading!(self, |db| sqlx::query_as(
            "SELECT * FROM outbox WHERE rfc_message_id = $1 OR rfc_message_id = $2 ORDER BY id LIMIT 1"
        )
        .bind(message_id)
        .bind(format!("<{message_id}>"))
        .fetch_optional(db)
        .await)?)
    }

    /// Whether a report about notification `outbox_id` already counts
    /// toward suppressing its address (and is not lifted): one notification
    /// counts once.
    pub async fn bounce_counted_for(&self, outbox_id: i64) -> StoreResult<bool> {
        let found: Option<(i64,)> = reading!(self, |db| sqlx::query_as(
            "SELECT id FROM bounces WHERE outbox_id = $1 AND counted = TRUE AND lifted_at IS NULL LIMIT 1"
        )
        .bind(outbox_id)
        .fetch_optional(db)
        .await)?;
        Ok(found.is_some())
    }

    /// The most recent inbound log entries, newest first; with `rule`, only
    /// those that rule decided or acted on.
    pub async fn inbound_log(&self, rule: Option<&str>, limit: i64) -> StoreResult<Vec<InboundLogEntry>> {
        Ok(reading!(self, |db| sqlx::query_as(
            "SELECT * FROM inbound_log WHERE ($1 IS NULL OR ',' || rules || ',' LIKE '%,' || $1 || ',%' ESCAPE '\\') \
             ORDER BY id DESC LIMIT $2",
        )
        .bind(rule.map(super::lists::like_literal))
        .bind(limit)
        .fetch_all(db)
        .await)?)
    }
}
