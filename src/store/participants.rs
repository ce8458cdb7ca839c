//! The people in a conversation besides its customer: colleagues copied on
//! a reply, outsiders an agent let in, and whom an agent declined or who
//! left. New rows come with a message (in its transaction, see
//! `writes.rs`) or from the API; the webhook fan-out announces new rows,
//! and the calls here that change a row's standing say so to the caller.

use super::{Backend, Connection, Readers, Store, StoreError, StoreResult, now_ms, postgres_writes, sqlite_writes};
use serde::Serialize;

/// One person's place in a conversation (a row of `participants`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct Participant {
    /// Row id.
    pub id: i64,
    /// The conversation.
    pub thread_id: i64,
    /// Their address, lower case.
    pub email: String,
    /// Their name as the mail that copied them gave it (or the address).
    pub name: String,
    /// Their user, once added (their reply address is bound to it).
    pub user_id: Option<i64>,
    /// The conversation's organization when they were copied.
    pub organization_id: Option<i64>,
    /// Whether they are not of the conversation's organization.
    pub outsider: bool,
    /// Where they stand.
    pub status: super::ParticipantStatus,
    /// Who copied them or let them in.
    pub added_by: Option<i64>,
    /// When they were first copied, Unix ms.
    #[serde(serialize_with = "super::rows::time_ms")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    /// When their standing last changed, Unix ms.
    #[serde(serialize_with = "super::rows::time_ms")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: i64,
}

/// A person to record with a message: added, or waiting for an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewParticipant {
    /// Their address, lower case.
    pub email: String,
    /// Their name.
    pub name: String,
    /// Their user when they have one already.
    pub user_id: Option<i64>,
    /// The conversation's organization.
    pub organization_id: Option<i64>,
    /// Not of the conversation's organization.
    pub outsider: bool,
    /// Added now (`false`: pending, an agent decides).
    pub active: bool,
}

/// The statuses in which a person counts toward a conversation's limit.
const COUNTED: &str = "('active', 'pending')";

impl Store {
    /// The participants of a conversation, in the order they came.
    pub async fn participants(&self, thread_id: i64) -> StoreResult<Vec<Participant>> {
        Ok(reading!(self, |db| sqlx::query_as("SELECT * FROM participants WHERE thread_id = $1 ORDER BY id")
            .bind(thread_id)
            .fetch_all(db)
            .await)?)
    }

    /// One participant row.
    pub async fn participant(&self, id: i64) -> StoreResult<Option<Participant>> {
        Ok(reading!(self, |db| sqlx::query_as("SELECT * FROM participants WHERE id = $1")
            .bind(id)
            .fetch_optional(db)
            .await)?)
    }

    /// Whether `user_id` is an active participant of the conversation.
    pub async fn is_active_participant(&self, thread_id: i64, user_id: i64) -> StoreResult<bool> {
        let found: Option<i64> = reading!(self, |db| sqlx::query_scalar(
            "SELECT id FROM participants WHERE user_id = $1 AND thread_id = $2 AND status = 'active'"
        )
        .bind(user_id)
        .bind(thread_id)
        .fetch_optional(db)
        .await)?;
        Ok(found.is_some())
    }

    /// How many participants (active or pending) the conversation has.
    pub async fn counted_participants(&self, thread_id: i64) -> StoreResult<i64> {
        Ok(reading!(self, |db| sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM participants WHERE thread_id = $1 AND status IN {COUNTED}"
        ))
        .bind(thread_id)
        .fetch_one(db)
        .await)?)
    }

    /// Outsiders copied into the conversations of `organization_id` since
    /// `since` (Unix ms); without an organization, into those of `site_id`.
    pub async fn outsiders_copied_since(
        &self,
        organization_id: Option<i64>,
        site_id: i64,
        since: i64,
    ) -> StoreResult<i64> {
        Ok(reading!(self, |db| match organization_id {
            Some(org) => {
                sqlx::query_scalar(
                    "SELECT COUNT(*) FROM participants WHERE organization_id = $1 AND outsider = $2 AND created_at >= $3",
                )
                .bind(org)
                .bind(true)
                .bind(since)
                .fetch_one(db)
                .await
            }
            None => {
                sqlx::query_scalar(
                    "SELECT COUNT(*) FROM participants p JOIN threads t ON t.id = p.thread_id \
                     WHERE t.site_id = $1 AND p.organization_id IS NULL AND p.outsider = $2 AND p.created_at >= $3",
                )
                .bind(site_id)
                .bind(true)
                .bind(since)
                .fetch_one(db)
                .await
            }
        })?)
    }

    /// When mailgate last wrote a note of its own into the conversation.
    pub async fn last_system_note_at(&self, thread_id: i64) -> StoreResult<Option<i64>> {
        Ok(reading!(self, |db| sqlx::query_scalar(
            "SELECT MAX(created_at) FROM messages WHERE thread_id = $1 AND kind = 'system'"
        )
        .bind(thread_id)
        .fetch_one(db)
        .await)?)
    }

    /// Pending participants of every conversation, oldest first, a page at
    /// a time (`after_id`).
    pub async fn pending_participants(&self, after_id: i64, limit: i64) -> StoreResult<Vec<Participant>> {
        Ok(reading!(self, |db| sqlx::query_as(
            "SELECT * FROM participants WHERE status = 'pending' AND id > $1 ORDER BY id LIMIT $2"
        )
        .bind(after_id)
        .bind(limit.clamp(1, 500))
        .fetch_all(db)
        .await)?)
    }

    /// Adds `email` to the conversation (by an agent, or a pending one let
    /// in): a row made or made active, with a user for their reply address.
    /// Returns the row and whether it is new.
    pub async fn add_participant(
        &self,
        thread_id: i64,
        person: &NewParticipant,
        added_by: Option<i64>,
    ) -> StoreResult<(Participant, bool)> {
        let existed = reading!(self, |db| sqlx::query_scalar::<_, i64>(
            "SELECT id FROM participants WHERE thread_id = $1 AND email = $2"
        )
        .bind(thread_id)
        .bind(&person.email)
        .fetch_optional(db)
        .await)?
        .is_some();
        let person = NewParticipant { active: true, ..person.clone() };
        let id: i64 = writing!(self, |db, w| {
            let mut tx = db.begin().await?;
            w::insert_participants(&mut tx, thread_id, added_by, std::slice::from_ref(&person)).await?;
            let user_id = w::participant_user(&mut tx, &person.email, &person.name).await?;
            let id: i64 = sqlx::query_scalar(
                "UPDATE participants SET status = 'active', user_id = $1, added_by = COALESCE($2, added_by), \
                 updated_at = $3 WHERE thread_id = $4 AND email = $5 RETURNING id",
            )
            .bind(user_id)
            .bind(added_by)
            .bind(now_ms())
            .bind(thread_id)
            .bind(&person.email)
            .fetch_one(&mut *tx)
            .await?;
            w::count_participants(&mut tx, thread_id).await?;
            tx.commit().await?;
            Ok::<_, StoreError>(id)
        })?;
        let row = self.participant(id).await?.ok_or(StoreError::NotFound("participant"))?;
        Ok((row, !existed))
    }

    /// Sets a participant's standing (`declined`, `left`, `removed`);
    /// `None` when there is no such row or it has that standing already.
    pub async fn set_participant_status(
        &self,
        id: i64,
        status: super::ParticipantStatus,
    ) -> StoreResult<Option<Participant>> {
        let changed: Option<(i64, i64)> = writing!(self, |db, w| {
            let mut tx = db.begin().await?;
            let changed: Option<(i64, i64)> = sqlx::query_as(
                "UPDATE participants SET status = $1, updated_at = $2 WHERE id = $3 AND status <> $1 \
                 RETURNING id, thread_id",
            )
            .bind(status)
            .bind(now_ms())
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((_, thread_id)) = changed {
                w::count_participants(&mut tx, thread_id).await?;
                // Whoever is out gets nothing more, not even mail queued for them.
                if status != super::ParticipantStatus::Active {
                    sqlx::query(
                        "UPDATE outbox SET status = 'skipped', last_error = 'skipped: they are no longer in the \
                         conversation' WHERE thread_id = $1 AND status = 'pending' AND recipient_id = \
                         (SELECT user_id FROM participants WHERE id = $2)",
                    )
                    .bind(thread_id)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            tx.commit().await?;
            Ok::<_, StoreError>(changed)
        })?;
        match changed {
            Some((id, _)) => self.participant(id).await,
            None => Ok(None),
        }
    }

    /// The active participants of a conversation: (user id, name).
    pub async fn active_participants(&self, thread_id: i64) -> StoreResult<Vec<(i64, String)>> {
        Ok(reading!(self, |db| sqlx::query_as(
            "SELECT user_id, name FROM participants WHERE thread_id = $1 AND status = 'active' \
             AND user_id IS NOT NULL ORDER BY id"
        )
        .bind(thread_id)
        .fetch_all(db)
        .await)?)
    }

    /// The active participant row of `user_id` in a conversation.
    pub async fn participant_of(&self, thread_id: i64, user_id: i64) -> StoreResult<Option<Participant>> {
        Ok(reading!(self, |db| sqlx::query_as(
            "SELECT * FROM participants WHERE user_id = $1 AND thread_id = $2 AND status = 'active'"
        )
        .bind(user_id)
        .bind(thread_id)
        .fetch_optional(db)
        .await)?)
    }
}
