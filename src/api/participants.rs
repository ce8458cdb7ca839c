//! The people in a conversation besides its customer: list them, add one,
//! let a pending one in or decline them, remove one; and every pending
//! person of every conversation, for the agent who decides. Each change is
//! announced to webhooks (`participant.added`, `.pending`, `.removed`).

use super::input::{body, required};
use super::threads::find_thread;
use super::{ApiError, HttpState};
use crate::domain::ThreadKind;
use crate::store::{NewParticipant, Participant, ParticipantStatus, Thread};
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use std::sync::Arc;

type Shared = State<Arc<HttpState>>;
type ApiResult<T> = Result<T, ApiError>;

/// Someone to add to a conversation.
#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct NewPerson {
    /// Their address.
    email: String,
    /// Their name (default: their directory name, or the address).
    name: Option<String>,
    /// The agent who adds them.
    added_by: Option<i64>,
}

/// `GET /participants/pending?after_id=&limit=`: a page of people waiting.
#[derive(Deserialize, utoipa::IntoParams)]
pub(super) struct PendingPage {
    after_id: Option<i64>,
    limit: Option<i64>,
}

/// `GET /participants/pending`: people copied into conversations who wait
/// for an agent, oldest first.
pub(super) async fn pending(
    State(state): Shared,
    Query(page): Query<PendingPage>,
) -> ApiResult<Json<Vec<Participant>>> {
    Ok(Json(state.store.pending_participants(page.after_id.unwrap_or(0), page.limit.unwrap_or(50)).await?))
}

/// `GET /chats/{id}/participants`
pub(super) async fn list_of_chat(State(state): Shared, Path(id): Path<i64>) -> ApiResult<Json<Vec<Participant>>> {
    list(&state, ThreadKind::Chat, id).await
}

/// `GET /tickets/{number}/participants`
pub(super) async fn list_of_ticket(State(state): Shared, Path(id): Path<i64>) -> ApiResult<Json<Vec<Participant>>> {
    list(&state, ThreadKind::Ticket, id).await
}

/// `POST /chats/{id}/participants`
pub(super) async fn add_to_chat(
    State(state): Shared,
    Path(id): Path<i64>,
    json: Result<Json<NewPerson>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Participant>)> {
    add(&state, ThreadKind::Chat, id, body(json)?).await
}

/// `POST /tickets/{number}/participants`
pub(super) async fn add_to_ticket(
    State(state): Shared,
    Path(id): Path<i64>,
    json: Result<Json<NewPerson>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Participant>)> {
    add(&state, ThreadKind::Ticket, id, body(json)?).await
}

/// `POST /participants/{id}/admit`: a pending (or declined) person is let in.
pub(super) async fn admit(State(state): Shared, Path(id): Path<i64>) -> ApiResult<Json<Participant>> {
    Ok(Json(state.pipeline.admit_participant(id).await?))
}

/// `POST /participants/{id}/decline`: a pending person is not let in (a
/// later copy does not bring them back; an agent may still add them).
pub(super) async fn decline(State(state): Shared, Path(id): Path<i64>) -> ApiResult<Json<Participant>> {
    Ok(Json(state.pipeline.decline_participant(id).await?))
}

/// `DELETE /participants/{id}`: takes a person out of the conversation.
pub(super) async fn remove(State(state): Shared, Path(id): Path<i64>) -> ApiResult<Json<Participant>> {
    Ok(Json(state.pipeline.remove_participant(id, ParticipantStatus::Removed).await?))
}

async fn list(state: &HttpState, kind: ThreadKind, id: i64) -> ApiResult<Json<Vec<Participant>>> {
    let thread = find_thread(state, kind, id).await?;
    Ok(Json(state.store.participants(thread.id).await?))
}

/// Refuses a person who would make the conversation larger than the
/// desk allows (`[participants] max_per_conversation`).
async fn within_limit(state: &HttpState, thread: &Thread, row: &Participant) -> ApiResult<()> {
    let max = state.pipeline.participant_policy().max_per_conversation;
    let counted = 1 + state.store.counted_participants(thread.id).await?;
    let already = matches!(row.status, ParticipantStatus::Active | ParticipantStatus::Pending);
    if counted + i64::from(!already) > max {
        return Err(ApiError::Conflict(format!(
            "{} has {counted} participants, its customer included: the limit is {max}",
            thread.label()
        )));
    }
    Ok(())
}

async fn add(
    state: &HttpState,
    kind: ThreadKind,
    id: i64,
    person: NewPerson,
) -> ApiResult<(StatusCode, Json<Participant>)> {
    let thread = find_thread(state, kind, id).await?;
    let email = required(&person.email, "email")?.trim().to_lowercase();
    let address = crate::domain::EmailAddress::parse(&email)
        .ok_or_else(|| ApiError::BadRequest(format!("email: {email:?} is not an address")))?;
    let policy = state.pipeline.participant_policy();
    let copied = [(email.clone(), String::new())];
    if crate::pipeline::participants::screen(&copied, &state.domain, policy, &[]).is_empty() {
        return Err(ApiError::BadRequest(format!(
            "{email} may not join a conversation: it is one of the desk's own addresses, a role or null address \
             (postmaster@, noreply@, ...), or on [participants] blocklist"
        )));
    }
    let user = state.store.user_by_email(&email).await?;
    if user.as_ref().is_some_and(|u| u.erased_at.is_some()) {
        return Err(ApiError::BadRequest(format!("{email} belongs to an erased user")));
    }
    if let Some(by) = person.added_by
        && !state.store.user(by).await?.is_some_and(|u| u.is_agent())
    {
        return Err(ApiError::BadRequest(format!("added_by: user {by} is not an agent")));
    }
    if user.as_ref().is_some_and(crate::store::User::is_agent) {
        return Err(ApiError::BadRequest(format!("{email} is an agent: agents are in every conversation already")));
    }
    if user.as_ref().is_some_and(|u| u.id == thread.customer_id) {
        return Err(ApiError::Conflict(format!("{email} is the customer of {}", thread.label())));
    }
    let site =
        state.store.site(thread.site_id).await?.ok_or_else(|| ApiError::NotFound("site not found".to_owned()))?;
    let org = site.organization_id;
    let same_org = match (&user, org) {
        (Some(user), Some(org)) if user.organization_id == Some(org) => true,
        (_, Some(org)) => state.store.organization_of_domain(address.domain()).await? == Some(org),
        _ => false,
    };
    let existing = state.store.participants(thread.id).await?.into_iter().find(|p| p.email == email);
    let probe = existing.clone().unwrap_or_else(|| Participant {
        id: 0,
        thread_id: thread.id,
        email: email.clone(),
        name: String::new(),
        user_id: None,
        organization_id: org,
        outsider: !same_org,
        status: ParticipantStatus::Removed,
        added_by: None,
        created_at: 0,
        updated_at: 0,
    });
    within_limit(state, &thread, &probe).await?;
    let name = person
        .name
        .filter(|n| !n.trim().is_empty())
        .or_else(|| user.as_ref().map(|u| u.name.clone()))
        .unwrap_or_else(|| email.clone());
    let new = NewParticipant {
        email,
        name: crate::notify::render::header_safe(&name),
        user_id: user.map(|u| u.id),
        organization_id: org,
        outsider: !same_org,
        active: true,
    };
    let (added, created) = state.store.add_participant(thread.id, &new, person.added_by).await?;
    // A new row is announced by the webhook fan-out; a changed one here.
    if !created && existing.is_some_and(|e| e.status != ParticipantStatus::Active) {
        state.pipeline.announce_participant("participant.added", &added).await;
    }
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(added)))
}
