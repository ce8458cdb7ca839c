//! Sessions of the admin console: one row per login, looked up by the
//! SHA-256 of the cookie's value (the value itself is kept nowhere).

use super::{Backend, Connection, Readers, Store, StoreError, StoreResult, now_ms, postgres_writes, sqlite_writes};

/// One console session as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ConsoleSession {
    /// The token every form of this session carries (CSRF).
    pub csrf: String,
    /// The admin token's hash (hex) at login.
    pub token_hash: String,
    /// Who logged in, as recorded with their actions.
    pub actor: String,
    /// When it ends (Unix ms).
    pub expires_at: i64,
}

impl Store {
    /// Records a login; removes sessions that have ended on the way.
    pub async fn start_console_session(
        &self,
        id_hash: &str,
        csrf: &str,
        token_hash: &str,
        actor: &str,
        expires_at: i64,
    ) -> StoreResult<()> {
        let now = now_ms();
        writing!(self, |db| {
            let mut tx = db.begin().await?;
            sqlx::query("DELETE FROM console_sessions WHERE expires_at < $1").bind(now).execute(&mut *tx).await?;
            sqlx::query(
                "INSERT INTO console_sessions (id_hash, csrf, token_hash, actor, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(id_hash)
            .bind(csrf)
            .bind(token_hash)
            .bind(actor)
            .bind(now)
            .bind(expires_at)
            .execute(&mut *tx)
            .await?;
            tx.commit().await
        })?;
        Ok(())
    }

    /// The session whose cookie hashes to `id_hash`, unless it has ended.
    pub async fn console_session(&self, id_hash: &str) -> StoreResult<Option<ConsoleSession>> {
        Ok(reading!(self, |db| sqlx::query_as(
            "SELECT csrf, token_hash, actor, expires_at FROM console_sessions WHERE id_hash = $1 AND expires_at >= $2"
        )
        .bind(id_hash)
        .bind(now_ms())
        .fetch_optional(db)
        .await)?)
    }

    /// Ends a session (logout).
    pub async fn end_console_session(&self, id_hash: &str) -> StoreResult<()> {
        writing!(self, |db| sqlx::query("DELETE FROM console_sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(db)
            .await
            .map(drop))?;
        Ok(())
    }
}
