//! Chats and tickets: open one, list and read them with their messages,
//! post in them, close and reopen them, mail a chat's transcript, download
//! an attachment.

use super::input::{body, required};
use super::{ApiError, HttpState};
use crate::domain::{Source, ThreadKind};
use crate::pipeline::authorize::is_participant;
use crate::store::{NewMessage, NewThread, Site, StoredMessage, Thread, ThreadFilter, ThreadStatus, User, rfc3339};
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

type Shared = State<Arc<HttpState>>;
type ApiResult<T> = Result<T, ApiError>;

#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct NewChat {
    site_id: i64,
    customer_id: i64,
    message: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct NewTicket {
    site_id: i64,
    customer_id: i64,
    #[serde(rename = "type")]
    ticket_type: String,
    subject: String,
    description: String,
}

/// A chat or ticket as the API shows it.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct ThreadView {
    #[serde(flatten)]
    thread: Thread,
    messages: Vec<MessageView>,
}

/// A message written in the Dashboard by `author` into thread `thread_id`
/// (0: the thread being opened with it), notifying `notify`.
fn dashboard_message(
    thread_id: i64,
    author: &User,
    text: String,
    notify: Vec<(crate::store::NotificationKind, i64)>,
) -> NewMessage {
    NewMessage {
        thread_id,
        author_id: author.id,
        author_is_agent: author.is_agent(),
        body: text,
        source: Source::Dashboard,
        rfc_message_id: None,
        attachments: Vec::new(),
        notify,
        routing: None,
        extra_mail: Vec::new(),
        original: None,
        extras: None,
    }
}

async fn load_customer_and_site(state: &HttpState, site_id: i64, customer_id: i64) -> ApiResult<(Site, User)> {
    let site =
        state.store.site(site_id).await?.ok_or_else(|| ApiError::BadRequest(format!("site {site_id} not found")))?;
    let customer = state
        .store
        .user(customer_id)
        .await?
        .ok_or_else(|| ApiError::BadRequest(format!("user {customer_id} not found")))?;
    if customer.is_agent() {
        return Err(ApiError::BadRequest("an agent can not open a conversation as a customer".to_owned()));
    }
    if site.organization_id.is_some() && customer.organization_id != site.organization_id {
        return Err(ApiError::Forbidden(format!(
            "user {customer_id} is not a member of site {site_id}'s organization"
        )));
    }
    Ok((site, customer))
}

/// `POST /chats`: a customer opens a chat on a site (every plan has chat).
pub(super) async fn open_chat(
    State(state): Shared,
    json: Result<Json<NewChat>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<ThreadView>)> {
    let new = body(json)?;
    let text = required(&new.message, "message")?;
    let (site, customer) = load_customer_and_site(&state, new.site_id, new.customer_id).await?;
    let subject = crate::notify::render::header_safe(&text.chars().take(80).collect::<String>());
    let thread =
        NewThread { kind: ThreadKind::Chat, site_id: site.id, customer_id: customer.id, ticket_type: None, subject };
    open_thread(&state, thread, &customer, text, false).await
}

/// `POST /tickets`: a customer opens a ticket, if the site's plan includes tickets.
pub(super) async fn open_ticket(
    State(state): Shared,
    json: Result<Json<NewTicket>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<ThreadView>)> {
    let new = body(json)?;
    let subject = crate::notify::render::header_safe(&required(&new.subject, "subject")?);
    let description = required(&new.description, "description")?;
    let ticket_type = required(&new.ticket_type, "type")?;
    let (site, customer) = load_customer_and_site(&state, new.site_id, new.customer_id).await?;
    if !crate::notify::site_has_tickets(&state.store, &site).await? {
        return Err(ApiError::Forbidden(format!(
            "tickets are not part of site {}'s plan ({}); use chat instead",
            site.id, site.plan_id
        )));
    }
    if site.organization_id.is_some() && !customer.role().sees_org_tickets() {
        return Err(ApiError::Forbidden("Unprivileged users can not see the organization's tickets".to_owned()));
    }
    // Emergencies on plans with on-call page the on-call engineers at once.
    let emergency = ["emergency", "downtime", "down"].iter().any(|w| ticket_type.to_lowercase().contains(w));
    let page_on_call = emergency && crate::notify::site_has_on_call(&state.store, &site).await?;
    let thread = NewThread {
        kind: ThreadKind::Ticket,
        site_id: site.id,
        customer_id: customer.id,
        ticket_type: Some(ticket_type),
        subject,
    };
    open_thread(&state, thread, &customer, description, page_on_call).await
}

async fn open_thread(
    state: &HttpState,
    thread: NewThread,
    customer: &User,
    text: String,
    page_on_call: bool,
) -> ApiResult<(StatusCode, Json<ThreadView>)> {
    let notify = crate::notify::new_thread_recipients(&state.store, thread.kind, customer.id).await?;
    let first = dashboard_message(0, customer, text, notify);
    let also = match page_on_call {
        true => vec![crate::store::NewOutbox {
            kind: "on_call_page".to_owned(),
            thread_id: None,
            recipient_id: None,
            to_address: state.on_call_address.clone(),
            context: serde_json::json!({}),
        }],
        false => Vec::new(),
    };
    let (thread, _) = state.store.create_thread(thread, first, &also, None).await?;
    let messages = message_views(state, thread.id).await?;
    Ok((StatusCode::CREATED, Json(ThreadView { thread, messages })))
}

pub(super) async fn find_thread(state: &HttpState, kind: ThreadKind, id: i64) -> ApiResult<Thread> {
    let thread = match kind {
        ThreadKind::Chat => state.store.thread(id).await?.filter(|t| t.kind() == ThreadKind::Chat),
        ThreadKind::Ticket => state.store.ticket_by_number(id).await?,
    };
    thread.ok_or_else(|| ApiError::NotFound(format!("{} {id} not found", kind.as_str())))
}

/// `GET /chats?site_id=&organization_id=&customer_id=&status=&updated_since=&before_id=&limit=`
pub(super) async fn list_chats(
    State(state): Shared,
    Query(filter): Query<ThreadFilter>,
) -> ApiResult<Json<Vec<Thread>>> {
    Ok(Json(state.store.threads_page("chat", &filter).await?))
}

/// `GET /tickets?...`: as `GET /chats`, for tickets.
pub(super) async fn list_tickets(
    State(state): Shared,
    Query(filter): Query<ThreadFilter>,
) -> ApiResult<Json<Vec<Thread>>> {
    Ok(Json(state.store.threads_page("ticket", &filter).await?))
}

/// `GET /chats/{id}`
pub(super) async fn get_chat(State(state): Shared, Path(id): Path<i64>) -> ApiResult<Json<ThreadView>> {
    let thread = find_thread(&state, ThreadKind::Chat, id).await?;
    let messages = message_views(&state, thread.id).await?;
    Ok(Json(ThreadView { thread, messages }))
}

/// `GET /tickets/{number}`
pub(super) async fn get_ticket(State(state): Shared, Path(number): Path<i64>) -> ApiResult<Json<ThreadView>> {
    let thread = find_thread(&state, ThreadKind::Ticket, number).await?;
    let messages = message_views(&state, thread.id).await?;
    Ok(Json(ThreadView { thread, messages }))
}

/// A message as the API shows it.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct MessageView {
    id: i64,
    /// `message`, `note` (an agent's internal note) or `system` (mailgate's own note).
    kind: crate::store::MessageKind,
    author: AuthorView,
    text: String,
    source: String,
    time: String,
    message_id: Option<String>,
    attachments: Vec<AttachmentView>,
    /// Where the mail it was read from can be downloaded (emailed messages).
    #[serde(skip_serializing_if = "Option::is_none")]
    raw: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct AuthorView {
    id: i64,
    name: String,
    email: String,
    role: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct AttachmentView {
    id: i64,
    filename: String,
    content_type: String,
    size: i64,
    download: String,
}

pub(super) fn message_view(m: StoredMessage) -> MessageView {
    MessageView {
        raw: m.original.as_ref().map(|_| format!("/api/v1/messages/{}/raw", m.id)),
        id: m.id,
        kind: m.kind,
        author: AuthorView { id: m.author_id, name: m.author_name, email: m.author_email, role: m.author_role },
        text: m.body,
        source: m.source,
        time: rfc3339(m.created_at),
        message_id: m.rfc_message_id,
        attachments: m
            .attachments
            .into_iter()
            .map(|a| AttachmentView {
                download: format!("/api/v1/attachments/{}", a.id),
                id: a.id,
                filename: a.filename,
                content_type: a.content_type,
                size: a.size,
            })
            .collect(),
    }
}

async fn message_views(state: &HttpState, thread_id: i64) -> ApiResult<Vec<MessageView>> {
    Ok(state.store.messages(thread_id).await?.into_iter().map(message_view).collect())
}

/// `GET /chats/{id}/messages`
pub(super) async fn list_chat_messages(State(state): Shared, Path(id): Path<i64>) -> ApiResult<Json<Vec<MessageView>>> {
    let thread = find_thread(&state, ThreadKind::Chat, id).await?;
    Ok(Json(message_views(&state, thread.id).await?))
}

/// `GET /tickets/{number}/messages`
pub(super) async fn list_ticket_messages(
    State(state): Shared,
    Path(number): Path<i64>,
) -> ApiResult<Json<Vec<MessageView>>> {
    let thread = find_thread(&state, ThreadKind::Ticket, number).await?;
    Ok(Json(message_views(&state, thread.id).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct PostMessage {
    author_id: i64,
    text: String,
    /// An agent's internal note: seen by agents, never mailed to the customer side.
    #[serde(default)]
    internal: bool,
}

/// `POST /chats/{id}/messages`
pub(super) async fn post_chat_message(
    State(state): Shared,
    Path(id): Path<i64>,
    json: Result<Json<PostMessage>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<MessageView>)> {
    post_message(&state, ThreadKind::Chat, id, body(json)?).await
}

/// `POST /tickets/{number}/messages`
pub(super) async fn post_ticket_message(
    State(state): Shared,
    Path(number): Path<i64>,
    json: Result<Json<PostMessage>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<MessageView>)> {
    post_message(&state, ThreadKind::Ticket, number, body(json)?).await
}

async fn post_message(
    state: &HttpState,
    kind: ThreadKind,
    id: i64,
    post: PostMessage,
) -> ApiResult<(StatusCode, Json<MessageView>)> {
    let thread = find_thread(state, kind, id).await?;
    let text = required(&post.text, "text")?;
    let author = state
        .store
        .user(post.author_id)
        .await?
        .ok_or_else(|| ApiError::BadRequest(format!("user {} not found", post.author_id)))?;
    let site =
        state.store.site(thread.site_id).await?.ok_or_else(|| ApiError::NotFound("site not found".to_owned()))?;
    if !author.is_agent() && !in_conversation(state, &thread, &site, &author).await? {
        return Err(ApiError::Forbidden(format!("user {} may not write in this conversation", author.id)));
    }
    if post.internal && !author.is_agent() {
        return Err(ApiError::BadRequest("only agents write internal notes".to_owned()));
    }
    let notify = match post.internal {
        true => crate::notify::note_recipients(&state.store, &thread, &author).await?,
        false => crate::notify::recipients(&state.store, &thread, &site, &author, &[]).await?,
    };
    let mut message = dashboard_message(thread.id, &author, text, notify);
    if post.internal {
        message.extras =
            Some(Box::new(crate::store::MessageExtras { kind: crate::store::MessageKind::Note, ..Default::default() }));
    }
    let id = state.store.insert_message(message, None).await?.id();
    let stored = state.store.messages(thread.id).await?.into_iter().find(|m| m.id == id);
    let stored = stored.ok_or_else(|| ApiError::NotFound("message not found".to_owned()))?;
    Ok((StatusCode::CREATED, Json(message_view(stored))))
}

/// Whether `user` is on the customer side of `thread`: its customer, an
/// organization member who sees its tickets, or a participant added to it.
pub(super) async fn in_conversation(state: &HttpState, thread: &Thread, site: &Site, user: &User) -> ApiResult<bool> {
    Ok(is_participant(thread, site, user) || state.store.is_active_participant(thread.id, user.id).await?)
}

/// `Content-Disposition` for downloading `name` (RFC 6266): an ASCII
/// `filename` for old clients and the real name, UTF-8 percent-encoded, in
/// `filename*` (RFC 8187), which browsers prefer.
pub(super) fn content_disposition(name: &str) -> String {
    let fallback: String = name
        .chars()
        .map(|c| if (c.is_ascii_graphic() || c == ' ') && c != '"' && c != '\\' { c } else { '_' })
        .collect();
    let mut encoded = String::with_capacity(name.len() * 3);
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

/// `GET /attachments/{id}`: the file, offered for download.
pub(super) async fn download_attachment(State(state): Shared, Path(id): Path<i64>) -> ApiResult<Response> {
    let (attachment, content) =
        state.store.attachment(id).await?.ok_or_else(|| ApiError::NotFound(format!("attachment {id} not found")))?;
    let disposition = content_disposition(&attachment.filename);
    let content_type = if attachment.content_type.bytes().all(|b| b.is_ascii_graphic()) {
        attachment.content_type
    } else {
        "application/octet-stream".to_owned()
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_DISPOSITION, disposition),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
        ],
        content,
    )
        .into_response())
}

/// `POST /chats/{id}/transcript` `{recipient_id?}`: mails the chat's transcript
/// (to its customer by default).
pub(super) async fn send_transcript(
    State(state): Shared,
    Path(id): Path<i64>,
    json: Option<Json<TranscriptRequest>>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let thread = find_thread(&state, ThreadKind::Chat, id).await?;
    let recipient_id = json.and_then(|Json(r)| r.recipient_id).unwrap_or(thread.customer_id);
    let recipient = state
        .store
        .user(recipient_id)
        .await?
        .ok_or_else(|| ApiError::BadRequest(format!("user {recipient_id} not found")))?;
    let site =
        state.store.site(thread.site_id).await?.ok_or_else(|| ApiError::NotFound("site not found".to_owned()))?;
    if !recipient.is_agent() && !in_conversation(&state, &thread, &site, &recipient).await? {
        return Err(ApiError::Forbidden(format!("user {recipient_id} may not see this chat")));
    }
    let new = crate::store::NewOutbox {
        kind: "chat_transcript".to_owned(),
        thread_id: Some(thread.id),
        recipient_id: Some(recipient.id),
        to_address: recipient.email.clone(),
        context: serde_json::json!({}),
    };
    let outbox_id = state.store.enqueue(&new, None).await?;
    Ok((StatusCode::ACCEPTED, Json(serde_json::json!({ "outbox_id": outbox_id, "to": recipient.email }))))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct TranscriptRequest {
    recipient_id: Option<i64>,
}

async fn set_status(state: &HttpState, kind: ThreadKind, id: i64, status: ThreadStatus) -> ApiResult<Json<Thread>> {
    let thread = find_thread(state, kind, id).await?;
    state.store.set_thread_status(thread.id, status).await?;
    let thread =
        state.store.thread(thread.id).await?.ok_or_else(|| ApiError::NotFound("thread vanished".to_owned()))?;
    let event = match status {
        ThreadStatus::Closed => "thread.closed",
        ThreadStatus::Open => "thread.reopened",
    };
    let data =
        serde_json::json!({ "thread_id": thread.id, "kind": thread.kind, "ticket_number": thread.ticket_number });
    state.store.queue_event(event, data).await?;
    Ok(Json(thread))
}

/// `POST /chats/{id}/close`: emailed replies are refused from now on.
pub(super) async fn close_chat(State(state): Shared, Path(id): Path<i64>) -> ApiResult<Json<Thread>> {
    set_status(&state, ThreadKind::Chat, id, ThreadStatus::Closed).await
}

/// `POST /tickets/{number}/close`
pub(super) async fn close_ticket(State(state): Shared, Path(number): Path<i64>) -> ApiResult<Json<Thread>> {
    set_status(&state, ThreadKind::Ticket, number, ThreadStatus::Closed).await
}

/// `POST /chats/{id}/reopen`
pub(super) async fn reopen_chat(State(state): Shared, Path(id): Path<i64>) -> ApiResult<Json<Thread>> {
    set_status(&state, ThreadKind::Chat, id, ThreadStatus::Open).await
}

/// `POST /tickets/{number}/reopen`
pub(super) async fn reopen_ticket(State(state): Shared, Path(number): Path<i64>) -> ApiResult<Json<Thread>> {
    set_status(&state, ThreadKind::Ticket, number, ThreadStatus::Open).await
}
