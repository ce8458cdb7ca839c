//! What the gateway recorded, read-only for the Dashboard: the inbound log,
//! the outbox (with retry), bounces, the held queue, and running totals.

use super::{ApiError, HttpState};
use crate::store::{Bounce, BounceFilter, InboundLogEntry, LogFilter, OutboxFilter, OutboxItem};
use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use std::sync::Arc;

type Shared = State<Arc<HttpState>>;
type ApiResult<T> = Result<T, ApiError>;

/// `GET /inbound-log?sender=&recipient=&decision=&rule=&since=&until=&before_id=&limit=`:
/// SMTP transactions and their outcome, newest first, a page at a time.
pub(super) async fn inbound_log(
    State(state): Shared,
    Query(filter): Query<LogFilter>,
) -> ApiResult<Json<Vec<InboundLogEntry>>> {
    Ok(Json(state.store.log_page(&filter).await?))
}

/// `GET /outbox?status=&kind=&to=&before_id=&limit=`: outgoing mail and its
/// delivery state, newest first (`status=all` or none: every state).
pub(super) async fn outbox(
    State(state): Shared,
    Query(filter): Query<OutboxFilter>,
) -> ApiResult<Json<Vec<OutboxItem>>> {
    Ok(Json(state.store.outbox_page(&filter).await?))
}

/// `POST /outbox/{id}/retry`: puts a failed item back in the queue.
pub(super) async fn retry_outbox(State(state): Shared, Path(id): Path<i64>) -> ApiResult<Json<OutboxItem>> {
    Ok(Json(state.store.retry(id).await?))
}

/// `GET /bounces?limit=N`: delivery failure reports about our notifications.
pub(super) async fn bounces(State(state): Shared, Query(filter): Query<BounceFilter>) -> ApiResult<Json<Vec<Bounce>>> {
    Ok(Json(state.store.bounces_page(&filter).await?))
}

/// `GET /admin/stats`: what the gateway has done since it started (the
/// group-commit writer: transactions, messages, time in statements and
/// commits; the outbound worker: passes, mails, time per step).
pub(super) async fn stats(State(state): Shared, Query(q): Query<StatsQuery>) -> ApiResult<Json<serde_json::Value>> {
    let mut stats = serde_json::json!({
        "group_commit": state.store.group_commit_stats(),
        "outbound": state.outbound.snapshot(),
    });
    if q.storage {
        stats["originals"] = serde_json::to_value(state.store.originals_stats().await?).unwrap_or_default();
    }
    Ok(Json(stats))
}

/// `GET /api/v1/admin/doctor`: the report `mailgate doctor --json` prints
/// (every lookup made now, through the configured resolver).
pub(super) async fn doctor(State(state): Shared) -> ApiResult<Json<serde_json::Value>> {
    let setup =
        state.doctor.as_ref().map_err(|why| ApiError::Unavailable(format!("the DNS checks cannot run: {why}")))?;
    let report = setup.run().await;
    Ok(Json(serde_json::json!({ "failed": report.failed(), "checks": report.checks })))
}

#[derive(Deserialize)]
pub(super) struct StatsQuery {
    /// Also count what the kept originals take (reads the whole table).
    #[serde(default)]
    storage: bool,
}

/// `GET /held?status=&reason=&sender=&limit=`: mail held for an admin.
pub(super) async fn held(
    State(state): Shared,
    Query(filter): Query<crate::store::HeldFilter>,
) -> ApiResult<Json<Vec<crate::store::HeldItem>>> {
    Ok(Json(state.store.held_items(&filter).await?))
}
