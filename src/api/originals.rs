//! Messages as they arrived: a stored message with the text extraction
//! removed (`quoted`), and the raw mail of a message or an inbound-log entry
//! as a `message/rfc822` download.

use super::threads::{MessageView, message_view};
use super::{ApiError, HttpState};
use crate::pipeline::extract::{Cut, Extraction};
use axum::Json;
use axum::extract::{Path, State};
use axum::response::Response;
use serde::Serialize;
use std::sync::Arc;

type Shared = State<Arc<HttpState>>;

/// One message, with what extraction removed from the mail it was read from.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct MessageDetail {
    #[serde(flatten)]
    message: MessageView,
    /// The thread it belongs to.
    thread_id: i64,
    /// What extraction removed (quoted history, signature), for "show quoted
    /// text"; `null` for Dashboard messages and once the original is purged.
    quoted: Option<String>,
    /// Each piece removed, with why.
    #[schema(value_type = Vec<Object>)]
    cuts: Vec<Cut>,
    /// `kept`, `purged` (past `retention.raw_days`) or `none` (written in the Dashboard).
    #[schema(value_type = String)]
    original: &'static str,
}

/// `GET /messages/{id}`: a message with `text` (what was posted) and
/// `quoted` (what the extraction removed).
pub(super) async fn get_message(State(state): Shared, Path(id): Path<i64>) -> Result<Json<MessageDetail>, ApiError> {
    let message =
        state.store.message(id).await?.ok_or_else(|| ApiError::NotFound(format!("message {id} not found")))?;
    let raw = match &message.original {
        Some(sha256) => state.store.original(sha256).await?,
        None => None,
    };
    let original = match (&message.original, &raw) {
        (None, _) => "none",
        (Some(_), None) => "purged",
        (Some(_), Some(_)) => "kept",
    };
    let extraction =
        raw.as_deref().and_then(crate::pipeline::parse::parse).map(|mail| crate::pipeline::extract::explain(&mail));
    let (quoted, cuts) = match extraction {
        Some(Extraction { quoted, cuts, .. }) => (Some(quoted), cuts),
        None => (None, Vec::new()),
    };
    let thread_id = message.thread_id;
    Ok(Json(MessageDetail { message: message_view(message), thread_id, quoted, cuts, original }))
}

/// `GET /messages/{id}/raw`: the mail a message was read from, byte for byte.
pub(super) async fn message_raw(State(state): Shared, Path(id): Path<i64>) -> Result<Response, ApiError> {
    let message =
        state.store.message(id).await?.ok_or_else(|| ApiError::NotFound(format!("message {id} not found")))?;
    let sha256 = message
        .original
        .ok_or_else(|| ApiError::NotFound(format!("message {id} was written in the Dashboard: it has no mail")))?;
    crate::http::downloads::raw_download(&state, &sha256, &format!("message-{id}.eml")).await
}

/// `GET /inbound-log/{id}/raw`: a transaction's mail as it arrived.
pub(super) async fn log_raw(State(state): Shared, Path(id): Path<i64>) -> Result<Response, ApiError> {
    crate::http::downloads::log_raw(&state, id).await
}
