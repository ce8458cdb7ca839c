//! Lists with filters, newest first, a page at a time: threads, users, the
//! inbound log, the outbox and bounces. A page ends at `limit` rows (100 by
//! default, at most 1,000); the next page is asked for with `before_id` set
//! to the last row's id, which stays right while new rows arrive (they get
//! higher ids). Every filter is optional; text filters match case-insensitively.

use super::originals::LOG_LIST_COLUMNS;
use super::{Backend, Bounce, InboundLogEntry, OutboxItem, Readers, Store, StoreResult, Thread, User};
use serde::Deserialize;

/// The size of a page: `limit`, 100 by default, between 1 and 1,000.
pub(super) fn page(limit: Option<i64>) -> i64 {
    limit.unwrap_or(100).clamp(1, 1000)
}

/// `%text%` in lower case, for a `LIKE ... ESCAPE '\'`: the text's own `%`,
/// `_` and `\` match themselves, not any text.
pub(super) fn containing(text: Option<&String>) -> Option<String> {
    text.filter(|t| !t.is_empty()).map(|t| format!("%{}%", like_literal(&t.to_lowercase())))
}

/// `text` with the characters `LIKE` gives a meaning to escaped by `\`.
pub(super) fn like_literal(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// An outbox row as a list reads it, with its thread's subject.
#[derive(sqlx::FromRow)]
struct ListedOutboxItem {
    #[sqlx(flatten)]
    item: OutboxItem,
    thread_subject: Option<String>,
}

/// Which chats or tickets.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThreadFilter {
    /// Only threads of this site.
    pub site_id: Option<i64>,
    /// Only threads of this organization's sites.
    pub organization_id: Option<i64>,
    /// Only threads of this customer.
    pub customer_id: Option<i64>,
    /// Only open or only closed ones (none, or `all`: both).
    #[serde(default, deserialize_with = "crate::store::states::any_or")]
    pub status: Option<crate::store::ThreadStatus>,
    /// Only threads changed at or after this time (Unix ms).
    pub updated_since: Option<i64>,
    /// The cursor: only threads with a lower id.
    pub before_id: Option<i64>,
    /// Page size.
    pub limit: Option<i64>,
}

/// Which users.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserFilter {
    /// Exactly this address (any case).
    pub email: Option<String>,
    /// Only members of this organization.
    pub organization_id: Option<i64>,
    /// Only this role.
    pub role: Option<String>,
    /// The cursor.
    pub before_id: Option<i64>,
    /// Page size.
    pub limit: Option<i64>,
}

/// Which inbound log entries.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogFilter {
    /// The envelope sender contains this.
    pub sender: Option<String>,
    /// A recipient contains this.
    pub recipient: Option<String>,
    /// `accepted`, `duplicate`, `dropped`, `rejected`, `deferred`, `held`, ...
    pub decision: Option<String>,
    /// A routing rule of this name decided or acted on it.
    pub rule: Option<String>,
    /// Received at or after this time (Unix ms).
    pub since: Option<i64>,
    /// Received before this time (Unix ms).
    pub until: Option<i64>,
    /// The cursor.
    pub before_id: Option<i64>,
    /// Page size.
    pub limit: Option<i64>,
}

/// Which outbox items.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxFilter {
    /// Only items in this state (none, or `all`: every state).
    #[serde(default, deserialize_with = "crate::store::states::any_or")]
    pub status: Option<crate::store::OutboxStatus>,
    /// The notification kind, e.g. `agent_replied`.
    pub kind: Option<String>,
    /// The recipient's address contains this.
    pub to: Option<String>,
    /// The cursor.
    pub before_id: Option<i64>,
    /// Page size.
    pub limit: Option<i64>,
}

/// Which bounces.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BounceFilter {
    /// The failed address contains this.
    pub recipient: Option<String>,
    /// Only those that count (or do not) toward suppression.
    pub counted: Option<bool>,
    /// The cursor.
    pub before_id: Option<i64>,
    /// Page size.
    pub limit: Option<i64>,
}

/// Adds `condition` (ending in an operator) and `value` to a list's
/// statement when the filter was given: a statement carries only the filters
/// given, so that the planner can use their indexes.
fn and_if<'a, DB, T>(query: &mut sqlx::QueryBuilder<'a, DB>, condition: &str, value: Option<T>)
where
    DB: sqlx::Database,
    T: 'a + sqlx::Encode<'a, DB> + sqlx::Type<DB> + Send,
{
    if let Some(value) = value {
        query.push(condition).push_bind(value);
    }
}

impl Store {
    /// Chats (`kind` = `chat`) or tickets, newest first. Only the filters
    /// given are in the statement, so that a customer's or a site's threads
    /// are found through their index, not by walking every thread.
    pub async fn threads_page(&self, kind: &str, filter: &ThreadFilter) -> StoreResult<Vec<Thread>> {
        Ok(reading!(self, |db| {
            let mut query = sqlx::QueryBuilder::new("SELECT * FROM threads WHERE kind = ");
            query.push_bind(kind);
            and_if(&mut query, " AND site_id = ", filter.site_id);
            if let Some(organization) = filter.organization_id {
                query.push(" AND site_id IN (SELECT id FROM sites WHERE organization_id = ").push_bind(organization);
                query.push(")");
            }
            and_if(&mut query, " AND customer_id = ", filter.customer_id);
            and_if(&mut query, " AND status = ", filter.status);
            and_if(&mut query, " AND updated_at >= ", filter.updated_since);
            and_if(&mut query, " AND id < ", filter.before_id);
            query.push(" ORDER BY id DESC LIMIT ").push_bind(page(filter.limit));
            query.build_query_as().fetch_all(db).await
        })?)
    }

    /// Users, newest first; only the filters given are in the statement.
    pub async fn users_page(&self, filter: &UserFilter) -> StoreResult<Vec<User>> {
        let email = filter.email.as_ref().map(|e| e.trim().to_lowercase());
        Ok(reading!(self, |db| {
            let mut query = sqlx::QueryBuilder::new("SELECT * FROM users WHERE TRUE");
            and_if(&mut query, " AND email = ", email.as_ref());
            and_if(&mut query, " AND organization_id = ", filter.organization_id);
            and_if(&mut query, " AND role = ", filter.role.as_ref());
            and_if(&mut query, " AND id < ", filter.before_id);
            query.push(" ORDER BY id DESC LIMIT ").push_bind(page(filter.limit));
            query.build_query_as().fetch_all(db).await
        })?)
    }

    /// Inbound log entries, newest first.
    pub async fn log_page(&self, filter: &LogFilter) -> StoreResult<Vec<InboundLogEntry>> {
        let (sender, recipient) = (containing(filter.sender.as_ref()), containing(filter.recipient.as_ref()));
        let rule = filter.rule.as_ref().filter(|r| !r.is_empty()).map(|r| like_literal(r));
        Ok(reading!(self, |db| sqlx::query_as(&format!(
            "{LOG_LIST_COLUMNS} WHERE ($1 IS NULL OR LOWER(COALESCE(mail_from, '')) LIKE $1 ESCAPE '\\') \
             AND ($2 IS NULL OR LOWER(rcpt_to) LIKE $2 ESCAPE '\\') AND ($3 IS NULL OR decision = $3) \
             AND ($4 IS NULL OR ',' || rules || ',' LIKE '%,' || $4 || ',%' ESCAPE '\\') \
             AND ($5 IS NULL OR received_at >= $5) AND ($6 IS NULL OR received_at < $6) \
             AND ($7 IS NULL OR id < $7) ORDER BY id DESC LIMIT $8"
        ))
        .bind(&sender)
        .bind(&recipient)
        .bind(&filter.decision)
        .bind(rule)
        .bind(filter.since)
        .bind(filter.until)
        .bind(filter.before_id)
        .bind(page(filter.limit))
        .fetch_all(db)
        .await)?)
    }

    /// Outbox items, newest first.
    pub async fn outbox_page(&self, filter: &OutboxFilter) -> StoreResult<Vec<OutboxItem>> {
        let to = containing(filter.to.as_ref());
        let items: Vec<ListedOutboxItem> = reading!(self, |db| sqlx::query_as(
            "SELECT o.*, t.subject AS thread_subject FROM outbox o LEFT JOIN threads t ON t.id = o.thread_id \
             WHERE ($1 IS NULL OR o.status = $1) AND ($2 IS NULL OR o.kind = $2) \
             AND ($3 IS NULL OR LOWER(o.to_address) LIKE $3 ESCAPE '\\') AND ($4 IS NULL OR o.id < $4) \
             ORDER BY o.id DESC LIMIT $5"
        )
        .bind(filter.status)
        .bind(&filter.kind)
        .bind(&to)
        .bind(filter.before_id)
        .bind(page(filter.limit))
        .fetch_all(db)
        .await)?;
        Ok(items
            .into_iter()
            .map(|listed| OutboxItem { subject: listed.thread_subject, ..listed.item }.with_subject())
            .collect())
    }

    /// Bounces, newest first.
    pub async fn bounces_page(&self, filter: &BounceFilter) -> StoreResult<Vec<Bounce>> {
        let recipient = containing(filter.recipient.as_ref());
        Ok(reading!(self, |db| sqlx::query_as(
            "SELECT * FROM bounces WHERE ($1 IS NULL OR LOWER(COALESCE(recipient, '')) LIKE $1 ESCAPE '\\') \
             AND ($2 IS NULL OR counted = $2) AND ($3 IS NULL OR id < $3) ORDER BY id DESC LIMIT $4"
        )
        .bind(&recipient)
        .bind(filter.counted)
        .bind(filter.before_id)
        .bind(page(filter.limit))
        .fetch_all(db)
        .await)?)
    }
}
