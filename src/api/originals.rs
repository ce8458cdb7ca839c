//! Messages as they arrived: a stored message with the text extraction
//! removed (`quoted`), and the raw mail of a message or an inbound-log entry
//! as a `message/rfc822` download.

use super::handlers::{MessageView, message_view};
use super::{ApiError, ApiState};
use crate::pipeline::extract::{Cut, Extraction};
use crate::store::InboundLogEntry;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::sync::Arc;

type Shared = State<Arc<ApiState>>;

/// One message, with what extraction removed from the mail it was read from.
#[derive(Serialize)]
pub(super) struct MessageDetail {
    #[serde(flatten)]
    message: MessageView,
    /// The thread it belongs to.
    thread_id: i64,
    /// What extraction removed (quoted history, signature), for "show quoted
    /// text"; `null` for Dashboard messages and once the original is purged.
    quoted: Option<String>,
    /// Each piece removed, with why.
    cuts: Vec<Cut>,
    /// `kept`, `purged` (past `retention.raw_days`) or `none` (written in the Dashboard).
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
    raw_download(&state, &sha256, &format!("message-{id}.eml")).await
}

/// `GET /inbound-log/{id}/raw`: the mail an inbound-log entry received,
/// when it was kept (mail answered 250).
pub(crate) async fn log_raw(State(state): Shared, Path(id): Path<i64>) -> Result<Response, ApiError> {
    let (_, raw) = logged_mail(&state, id).await?;
    Ok(rfc822(raw, &format!("inbound-{id}.eml")))
}

/// An inbound-log entry and the mail it kept, as it arrived.
pub(crate) async fn logged_mail(state: &ApiState, id: i64) -> Result<(InboundLogEntry, Vec<u8>), ApiError> {
    let entry = state
        .store
        .inbound_entry(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("inbound-log entry {id} not found")))?;
    let sha256 = entry.original.as_deref().ok_or_else(|| {
        ApiError::NotFound(format!("inbound-log entry {id} kept no mail (only mail answered 250 is kept)"))
    })?;
    let raw = kept_original(state, sha256).await?;
    Ok((entry, raw))
}

/// The original with this SHA-256 as a download named `filename`.
pub(super) async fn raw_download(state: &ApiState, sha256: &str, filename: &str) -> Result<Response, ApiError> {
    Ok(rfc822(kept_original(state, sha256).await?, filename))
}

/// The original with this SHA-256, unless its retention removed it.
async fn kept_original(state: &ApiState, sha256: &str) -> Result<Vec<u8>, ApiError> {
    state
        .store
        .original(sha256)
        .await?
        .ok_or_else(|| ApiError::Gone("the original was removed after its retention (retention.raw_days)".to_owned()))
}

/// `raw` as a `message/rfc822` download named `filename`.
pub(super) fn rfc822(raw: Vec<u8>, filename: &str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "message/rfc822".to_owned()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{filename}\"")),
        ],
        raw,
    )
        .into_response()
}
