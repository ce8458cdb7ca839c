//! Webhooks: the endpoints an operator registers, and the events they are
//! sent. An event becomes one outbox row of kind `webhook` per endpoint that
//! wants it, so that its delivery is as durable as a notification's: retried
//! with backoff, failed for good after the outbox's lifetime, retryable.
//!
//! Events of the inbound path are not written by it (that path is the
//! hot one): [`Store::fan_out_events`] follows the inbound log, the
//! Dashboard's messages and the bounces by id, and turns what is new into
//! deliveries, moving its cursors in the same transaction. Events of rarer
//! paths (a thread closed or reopened, a delivery failed) are queued where
//! they happen ([`Store::queue_event`]).

use super::{
    Backend, Connection, NewOutbox, OutboxPolicy, Readers, Store, StoreError, StoreResult, now_ms, postgres_writes,
    sqlite_writes,
};
use serde::Serialize;

/// The outbox kind of a webhook delivery.
pub const WEBHOOK_KIND: &str = "webhook";

/// Every event a webhook can ask for.
pub const EVENTS: &[&str] = &[
    "message.created",
    "message.refused",
    "message.held",
    "bounce.recorded",
    "delivery.failed",
    "thread.closed",
    "thread.reopened",
    "thread.updated",
    "participant.added",
    "participant.pending",
    "participant.removed",
];

/// How many new rows of each source one fan-out reads.
const FAN_OUT_BATCH: i64 = 500;

/// A registered endpoint (its secret is shown once, at registration).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Webhook {
    /// Row id.
    pub id: i64,
    /// Where events are POSTed.
    pub url: String,
    /// The events it wants, comma separated, or `*`.
    pub events: String,
    /// Unix ms.
    #[serde(skip)]
    pub created_at: i64,
    /// The signing secret.
    #[serde(skip)]
    pub secret: String,
}

impl Webhook {
    /// Whether this endpoint wants `event`.
    pub fn wants(&self, event: &str) -> bool {
        self.events == "*" || self.events.split(',').any(|e| e.trim() == event)
    }
}

/// The fan-out's cursors: (setting, the table it follows by id).
const LOG_CURSOR: (&str, &str) = ("webhooks.cursor.log", "inbound_log");
const MESSAGE_CURSOR: (&str, &str) = ("webhooks.cursor.messages", "messages");
const BOUNCE_CURSOR: (&str, &str) = ("webhooks.cursor.bounces", "bounces");
const PARTICIPANT_CURSOR: (&str, &str) = ("webhooks.cursor.participants", "participants");

/// The newest id of a cursor's table (in a transaction `$tx`).
macro_rules! newest {
    ($tx:expr, $cursor:expr) => {
        sqlx::query_scalar::<_, i64>(&format!("SELECT COALESCE(MAX(id), 0) FROM {}", $cursor.1))
            .fetch_one(&mut *$tx)
            .await?
    };
}

/// Moves a cursor to `$at` (in a transaction `$tx`).
macro_rules! set_cursor {
    ($tx:expr, $cursor:expr, $at:expr) => {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind($cursor.0)
        .bind($at.to_string())
        .execute(&mut *$tx)
        .await?
    };
}

/// A cursor's position (in a transaction `$tx`); a cursor never set starts
/// at the table's newest row (a new installation, or an upgrade, sends
/// nothing from before).
macro_rules! cursor {
    ($tx:expr, $cursor:expr) => {{
        let stored: Option<String> = sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
            .bind($cursor.0)
            .fetch_optional(&mut *$tx)
            .await?;
        match stored.and_then(|v| v.parse::<i64>().ok()) {
            Some(at) => at,
            None => newest!($tx, $cursor),
        }
    }};
}

/// What the fan-out reads of an inbound log entry: id, received_at,
/// decision, reason, mail_from, smtp_reply, thread_id, stored_message.
type LogRow = (i64, i64, String, String, Option<String>, String, Option<i64>, Option<i64>);

/// One event, before it is addressed to the endpoints that want it.
#[derive(Debug, Clone)]
struct Event {
    name: &'static str,
    data: serde_json::Value,
}

impl Store {
    /// Registers an endpoint for `events` (`*`: all) with `secret`. The
    /// first endpoint sets the event cursors to the newest rows: events from
    /// before it are not sent, every event after it is.
    pub async fn create_webhook(&self, url: &str, events: &str, secret: &str) -> StoreResult<Webhook> {
        Ok(writing!(self, |db| {
            let mut tx = db.begin().await?;
            let active: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM webhooks WHERE deleted_at IS NULL")
                .fetch_one(&mut *tx)
                .await?;
            if active == 0 {
                // Events from now on: the cursors start at the newest rows.
                for cursor in [LOG_CURSOR, MESSAGE_CURSOR, BOUNCE_CURSOR, PARTICIPANT_CURSOR] {
                    let at = newest!(tx, cursor);
                    set_cursor!(tx, cursor, at);
                }
            }
            let hook = sqlx::query_as(
                "INSERT INTO webhooks (url, secret, events, created_at) VALUES ($1, $2, $3, $4) \
                 RETURNING id, url, events, created_at, secret",
            )
            .bind(url)
            .bind(secret)
            .bind(events)
            .bind(now_ms())
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            hook
        }))
    }

    /// The endpoints in force.
    pub async fn webhooks(&self) -> StoreResult<Vec<Webhook>> {
        Ok(reading!(self, |db| sqlx::query_as(
            "SELECT id, url, events, created_at, secret FROM webhooks WHERE deleted_at IS NULL ORDER BY id"
        )
        .fetch_all(db)
        .await)?)
    }

    /// One endpoint, unless it was removed.
    pub async fn webhook(&self, id: i64) -> StoreResult<Option<Webhook>> {
        Ok(reading!(self, |db| sqlx::query_as(
            "SELECT id, url, events, created_at, secret FROM webhooks WHERE id = $1 AND deleted_at IS NULL"
        )
        .bind(id)
        .fetch_optional(db)
        .await)?)
    }

    /// Removes an endpoint (deliveries still waiting fail as "removed");
    /// whether it existed.
    pub async fn delete_webhook(&self, id: i64) -> StoreResult<bool> {
        let removed = writing!(self, |db| sqlx::query(
            "UPDATE webhooks SET deleted_at = $1 WHERE id = $2 AND deleted_at IS NULL"
        )
        .bind(now_ms())
        .bind(id)
        .execute(db)
        .await
        .map(|done| done.rows_affected()))?;
        Ok(removed > 0)
    }

    /// Queues `event` with `data` to every endpoint that wants it.
    pub async fn queue_event(&self, event: &'static str, data: serde_json::Value) -> StoreResult<()> {
        let hooks = self.webhooks().await?;
        if !hooks.iter().any(|h| h.wants(event)) {
            return Ok(());
        }
        let events = [Event { name: event, data }];
        writing!(self, |db, w| {
            let mut tx = db.begin().await?;
            for (hook, event) in addressed(&hooks, &events) {
                w::insert_outbox(&mut tx, self.policy, &delivery(hook, event)).await?;
            }
            tx.commit().await?;
        });
        self.outbox_wakeup.queued_unknown();
        Ok(())
    }

    /// Turns what is new in the inbound log (mail stored, refused or held),
    /// the Dashboard's messages and the bounces into deliveries, and moves
    /// the cursors past it, in one transaction. With no endpoint registered
    /// it does nothing (the first registration starts the cursors afresh).
    /// Returns how many deliveries were queued.
    pub async fn fan_out_events(&self) -> StoreResult<usize> {
        let hooks = self.webhooks().await?;
        if hooks.is_empty() {
            return Ok(0); // the cursors start afresh with the first endpoint
        }
        let policy: OutboxPolicy = self.policy;
        let queued = writing!(self, |db, w| {
            let mut tx = db.begin().await?;
            let mut events = Vec::new();
            let log_from = cursor!(tx, LOG_CURSOR);
            let rows: Vec<LogRow> = sqlx::query_as(
                "SELECT id, received_at, decision, reason, mail_from, smtp_reply, thread_id, stored_message \
                     FROM inbound_log WHERE id > $1 ORDER BY id LIMIT $2",
            )
            .bind(log_from)
            .bind(FAN_OUT_BATCH)
            .fetch_all(&mut *tx)
            .await?;
            let mut log_to = log_from;
            for (id, at, decision, reason, sender, smtp_reply, thread_id, message_id) in rows {
                log_to = id;
                let name = match decision.as_str() {
                    "accepted" if message_id.is_some() => "message.created",
                    "rejected" => "message.refused",
                    "held" => "message.held",
                    _ => continue,
                };
                let data = serde_json::json!({
                    "source": "email", "log_id": id, "received_at": super::rfc3339(at), "sender": sender,
                    "thread_id": thread_id, "message_id": message_id, "reason": reason, "smtp_reply": smtp_reply,
                });
                events.push(Event { name, data });
            }
            let message_from = cursor!(tx, MESSAGE_CURSOR);
            let rows: Vec<(i64, i64, i64, i64)> = sqlx::query_as(
                "SELECT id, thread_id, author_id, created_at FROM messages WHERE id > $1 AND source = 'dashboard' \
                 ORDER BY id LIMIT $2",
            )
            .bind(message_from)
            .bind(FAN_OUT_BATCH)
            .fetch_all(&mut *tx)
            .await?;
            // The cursor passes emailed messages too (their event comes from the log).
            let message_to: i64 = match rows.len() as i64 {
                n if n == FAN_OUT_BATCH => rows.last().map_or(message_from, |r| r.0),
                _ => newest!(tx, MESSAGE_CURSOR),
            };
            for (id, thread_id, author_id, at) in rows {
                let data = serde_json::json!({
                    "source": "dashboard", "message_id": id, "thread_id": thread_id, "author_id": author_id,
                    "created_at": super::rfc3339(at),
                });
                events.push(Event { name: "message.created", data });
            }
            let bounce_from = cursor!(tx, BOUNCE_CURSOR);
            let bounces: Vec<super::Bounce> =
                sqlx::query_as("SELECT * FROM bounces WHERE id > $1 ORDER BY id LIMIT $2")
                    .bind(bounce_from)
                    .bind(FAN_OUT_BATCH)
                    .fetch_all(&mut *tx)
                    .await?;
            let bounce_to = bounces.last().map_or(bounce_from, |b| b.id);
            for bounce in &bounces {
                let data = serde_json::to_value(bounce).unwrap_or_default();
                events.push(Event { name: "bounce.recorded", data });
            }
            // People copied in by mail or added through the API: a new row
            // is announced here, a later change where it is made.
            let participant_from = cursor!(tx, PARTICIPANT_CURSOR);
            let participants: Vec<super::Participant> =
                sqlx::query_as("SELECT * FROM participants WHERE id > $1 ORDER BY id LIMIT $2")
                    .bind(participant_from)
                    .bind(FAN_OUT_BATCH)
                    .fetch_all(&mut *tx)
                    .await?;
            let participant_to = participants.last().map_or(participant_from, |p| p.id);
            for participant in &participants {
                let name = match participant.status {
                    super::ParticipantStatus::Active => "participant.added",
                    super::ParticipantStatus::Pending => "participant.pending",
                    _ => continue,
                };
                events.push(Event { name, data: serde_json::to_value(participant).unwrap_or_default() });
            }
            let mut queued = 0;
            for (hook, event) in addressed(&hooks, &events) {
                w::insert_outbox(&mut tx, policy, &delivery(hook, event)).await?;
                queued += 1;
            }
            for (cursor, at) in [
                (LOG_CURSOR, log_to),
                (MESSAGE_CURSOR, message_to),
                (BOUNCE_CURSOR, bounce_to),
                (PARTICIPANT_CURSOR, participant_to),
            ] {
                set_cursor!(tx, cursor, at);
            }
            tx.commit().await?;
            queued
        });
        if queued > 0 {
            self.outbox_wakeup.queued_unknown();
        }
        Ok(queued)
    }
}

/// Each (endpoint, event) pair where the endpoint wants the event.
fn addressed<'a>(hooks: &'a [Webhook], events: &'a [Event]) -> impl Iterator<Item = (&'a Webhook, &'a Event)> {
    events.iter().flat_map(move |event| hooks.iter().filter(|h| h.wants(event.name)).map(move |h| (h, event)))
}

/// The outbox row that delivers `event` to `hook`.
fn delivery(hook: &Webhook, event: &Event) -> NewOutbox {
    NewOutbox {
        kind: WEBHOOK_KIND.to_owned(),
        thread_id: None,
        recipient_id: None,
        to_address: hook.url.clone(),
        context: serde_json::json!({ "webhook_id": hook.id, "event": event.name, "data": event.data }),
    }
}
