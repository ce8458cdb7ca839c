//! The links in a notification, each with its token as the credential: the
//! one-click ones (RFC 8058), to unsubscribe from a kind of notification or
//! (a participant copied into a conversation) to leave that conversation,
//! each with the page a person opens and the POST a mail client sends; and
//! an agent's link to download a customer's file that was too large to attach.

use super::{ApiError, HttpState};
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

type Shared = State<Arc<HttpState>>;
type ApiResult<T> = Result<T, ApiError>;

fn unsubscribe_target(state: &HttpState, token: &str) -> ApiResult<(i64, &'static str)> {
    let (user_id, kind) = state
        .signer
        .verify_unsubscribe(token)
        .map_err(|_| ApiError::NotFound("this unsubscribe link is not valid".to_owned()))?;
    let kind = usize::try_from(kind).ok().and_then(|k| crate::notify::OPTIONAL_KINDS.get(k).copied());
    Ok((user_id, kind.ok_or_else(|| ApiError::NotFound("this unsubscribe link is not valid".to_owned()))?))
}

/// `GET /unsubscribe/{token}`: a page with a button (a GET must not change
/// anything: mail scanners follow links).
pub(super) async fn unsubscribe_page(State(state): Shared, Path(token): Path<String>) -> ApiResult<Response> {
    let (_, kind) = unsubscribe_target(&state, &token)?;
    let what = kind.replace('_', " ");
    let page = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Unsubscribe</title></head><body>\
         <p>Stop receiving \u{201c}{what}\u{201d} notifications by email? You can still follow your conversations in the Dashboard.</p>\
         <form method=\"post\"><button type=\"submit\">Unsubscribe</button></form></body></html>"
    );
    Ok(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response())
}

/// `POST /unsubscribe/{token}`: one-click unsubscribe (RFC 8058).
pub(super) async fn unsubscribe(State(state): Shared, Path(token): Path<String>) -> ApiResult<Response> {
    let (user_id, kind) = unsubscribe_target(&state, &token)?;
    state.store.opt_out(user_id, kind).await?;
    let what = kind.replace('_', " ");
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("Unsubscribed from {what} notifications.\n"))
        .into_response())
}

/// The participant row a leave link names, while they are in the conversation.
async fn leave_target(state: &HttpState, token: &str) -> ApiResult<crate::store::Participant> {
    let invalid = || ApiError::NotFound("this link is not valid, or you have left the conversation already".to_owned());
    let (thread_id, user_id) = state.signer.verify_leave(token).map_err(|_| invalid())?;
    state.store.participant_of(thread_id, user_id).await?.ok_or_else(invalid)
}

/// `GET /leave/{token}`: a page with a button (a GET changes nothing).
pub(super) async fn leave_page(State(state): Shared, Path(token): Path<String>) -> ApiResult<Response> {
    leave_target(&state, &token).await?;
    let page = "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Leave the conversation</title></head><body>\
         <p>Leave this conversation? You will get no more mail about it; the others in it stay.</p>\
         <form method=\"post\"><button type=\"submit\">Leave</button></form></body></html>";
    Ok(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response())
}

/// `POST /leave/{token}`: the participant leaves the conversation (only
/// them); the webhook event `participant.removed` says so.
pub(super) async fn leave(State(state): Shared, Path(token): Path<String>) -> ApiResult<Response> {
    let participant = leave_target(&state, &token).await?;
    state.pipeline.remove_participant(participant.id, crate::store::ParticipantStatus::Left).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "You have left the conversation.\n").into_response())
}

/// `GET /download/{token}`: a file a notification listed instead of
/// attaching it, while its link lasts (`[notify] download_link_days`).
pub(super) async fn download(State(state): Shared, Path(token): Path<String>) -> ApiResult<Response> {
    let id = match state.signer.verify_download(&token) {
        Ok(id) => id,
        Err(crate::domain::TokenError::Expired) => {
            return Err(ApiError::Gone(
                "this download link has expired; open the conversation in the Dashboard to get the file".to_owned(),
            ));
        }
        Err(_) => return Err(ApiError::NotFound("this download link is not valid".to_owned())),
    };
    let (attachment, content) = state
        .store
        .attachment(id)
        .await?
        .ok_or_else(|| ApiError::NotFound("this file is no longer stored".to_owned()))?;
    let content_type = if attachment.content_type.bytes().all(|b| b.is_ascii_graphic()) {
        attachment.content_type
    } else {
        "application/octet-stream".to_owned()
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_DISPOSITION, super::threads::content_disposition(&attachment.filename)),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
            (header::CACHE_CONTROL, "private, no-store".to_owned()),
        ],
        content,
    )
        .into_response())
}
