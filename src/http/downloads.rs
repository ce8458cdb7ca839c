//! Mail as it arrived, as `message/rfc822` downloads: a transaction's, a
//! held item's, a stored message's. The API and the console serve the same.

use super::{ApiError, HttpState};
use crate::store::InboundLogEntry;
use axum::http::header;
use axum::response::{IntoResponse, Response};

/// `GET /inbound-log/{id}/raw`: the mail an inbound-log entry received,
/// when it was kept (mail answered 250).
pub async fn log_raw(state: &HttpState, id: i64) -> Result<Response, ApiError> {
    let (_, raw) = logged_mail(state, id).await?;
    Ok(rfc822(raw, &format!("inbound-{id}.eml")))
}

/// An inbound-log entry and the mail it kept, as it arrived.
pub async fn logged_mail(state: &HttpState, id: i64) -> Result<(InboundLogEntry, Vec<u8>), ApiError> {
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
pub async fn raw_download(state: &HttpState, sha256: &str, filename: &str) -> Result<Response, ApiError> {
    Ok(rfc822(kept_original(state, sha256).await?, filename))
}

/// The original with this SHA-256, unless its retention removed it.
async fn kept_original(state: &HttpState, sha256: &str) -> Result<Vec<u8>, ApiError> {
    state
        .store
        .original(sha256)
        .await?
        .ok_or_else(|| ApiError::Gone("the original was removed after its retention (retention.raw_days)".to_owned()))
}

/// `raw` as a `message/rfc822` download named `filename`.
pub fn rfc822(raw: Vec<u8>, filename: &str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "message/rfc822".to_owned()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{filename}\"")),
        ],
        raw,
    )
        .into_response()
}

/// A held item's mail as it arrived, to download.
pub async fn held_raw(state: &HttpState, id: i64) -> Result<Response, ApiError> {
    let item =
        state.store.held_item(id).await?.ok_or_else(|| ApiError::NotFound(format!("held item {id} not found")))?;
    let raw =
        state.store.held_raw(&item).await?.ok_or_else(|| ApiError::Gone(format!("held item {id}'s mail is gone")))?;
    Ok(rfc822(raw, &format!("held-{id}.eml")))
}
