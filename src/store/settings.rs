//! Settings: small named values the server keeps (token keys, token hashes, the served domain).

use super::{Backend, Readers, Store, StoreError, StoreResult, postgres_writes, sqlite_writes};

impl Store {
    /// The stored value of `key`, or `init()` stored now under it. The first
    /// writer wins, so concurrent starts agree on one value.
    pub async fn setting_or_init(&self, key: &str, init: impl FnOnce() -> String) -> StoreResult<String> {
        writing!(self, |db| sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING"
        )
        .bind(key)
        .bind(init())
        .execute(db)
        .await
        .map(drop))?;
        Ok(writing!(self, |db| sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_one(db)
            .await)?)
    }

    /// Stores `value` under `key`, replacing what was there.
    pub async fn put_setting(&self, key: &str, value: &str) -> StoreResult<()> {
        writing!(self, |db| sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        )
        .bind(key)
        .bind(value)
        .execute(db)
        .await
        .map(drop))?;
        Ok(())
    }

    /// Adds one to the count kept under `key` (for totals that commands
    /// running beside the server keep, such as `deliver`'s).
    pub async fn count_up(&self, key: &str) -> StoreResult<()> {
        writing!(self, |db| sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, '1') ON CONFLICT (key) DO UPDATE \
             SET value = CAST(CAST(settings.value AS BIGINT) + 1 AS TEXT)"
        )
        .bind(key)
        .execute(db)
        .await
        .map(drop))?;
        Ok(())
    }

    /// Deletes the setting `key`, if it exists.
    pub async fn delete_setting(&self, key: &str) -> StoreResult<()> {
        writing!(self, |db| sqlx::query("DELETE FROM settings WHERE key = $1").bind(key).execute(db).await.map(drop))?;
        Ok(())
    }

    /// Every setting whose key starts with `prefix`. Read on a reader, so
    /// that `/metrics` and the key refresh answer while the writer is busy
    /// (or stalled: see `Store::insert_message`).
    pub async fn settings_with_prefix(&self, prefix: &str) -> StoreResult<Vec<(String, String)>> {
        Ok(reading!(self, |db| sqlx::query_as(
            "SELECT key, value FROM settings WHERE key LIKE $1 || '%' ORDER BY key"
        )
        .bind(prefix)
        .fetch_all(db)
        .await)?)
    }

    /// The stored value of `key`, if any.
    pub async fn setting(&self, key: &str) -> StoreResult<Option<String>> {
        Ok(reading!(self, |db| sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(db)
            .await)?)
    }
}
