//! The console's pages about mail and the directory's plans: the inbound log
//! and one transaction explained, the held queue and its actions, the outbox
//! (each item on a page of its own) and retries, bounces and suppressions,
//! unsubscribes, and the plans an admin edits.

use super::{ConsoleError, CsrfForm, Page, Session};
use crate::http::{ApiError, HttpState};
use crate::store::{BounceFilter, HeldFilter, InboundLogEntry, LogFilter, OutboxFilter};
use crate::store::{HeldAction, HeldStatus, OutboxStatus};
use axum::Form;
use axum::extract::{Path, Query, State};
use minijinja::context;
use serde::Deserialize;
use std::sync::Arc;

type Shared = State<Arc<HttpState>>;

/// Rows per list page.
const PAGE_ROWS: i64 = 50;
/// How much of a message's source a page shows.
const RAW_SHOWN: usize = 256 * 1024;

/// The `before_id` of the next page: the last row's id when the page is full.
fn older(rows: usize, last_id: Option<i64>) -> Option<i64> {
    if rows == PAGE_ROWS as usize { last_id } else { None }
}

/// A filter field as a form sends it: empty means "any".
fn given(value: Option<&String>) -> Option<String> {
    value.map(|v| v.trim()).filter(|v| !v.is_empty()).map(str::to_owned)
}

/// A `datetime-local` field (`2026-12-04T10:30`, read as UTC) in Unix ms.
fn time_field(value: Option<&String>, name: &str) -> Result<Option<i64>, ConsoleError> {
    let Some(text) = given(value) else { return Ok(None) };
    let parsed = chrono::NaiveDateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M")
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M:%S"))
        .map_err(|_| ApiError::BadRequest(format!("{name}: {text:?} is not a time like 2026-12-04T10:30 (UTC)")))?;
    Ok(Some(parsed.and_utc().timestamp_millis()))
}

/// A state field: `all` (every state) or one state's name.
fn state_field<T: std::str::FromStr<Err = String>>(text: &str) -> Result<Option<T>, ConsoleError> {
    crate::store::states::state_filter(text).map_err(|why| ApiError::BadRequest(format!("status: {why}")).into())
}

/// A number field.
fn id_field(value: Option<&String>, name: &str) -> Result<Option<i64>, ConsoleError> {
    given(value)
        .map(|text| text.parse().map_err(|_| ApiError::BadRequest(format!("{name}: {text:?} is not a number")).into()))
        .transpose()
}

/// The query of a list page, every field optional text.
#[derive(Deserialize, Default)]
pub(crate) struct ListQuery {
    sender: Option<String>,
    recipient: Option<String>,
    decision: Option<String>,
    rule: Option<String>,
    since: Option<String>,
    until: Option<String>,
    before_id: Option<String>,
    status: Option<String>,
    reason: Option<String>,
    kind: Option<String>,
    to: Option<String>,
    address: Option<String>,
}

/// `GET /admin/log`: every SMTP transaction, newest first, filtered.
pub(crate) async fn log(State(state): Shared, session: Session, Query(q): Query<ListQuery>) -> Page {
    let filter = LogFilter {
        sender: given(q.sender.as_ref()),
        recipient: given(q.recipient.as_ref()),
        decision: given(q.decision.as_ref()),
        rule: given(q.rule.as_ref()),
        since: time_field(q.since.as_ref(), "since")?,
        until: time_field(q.until.as_ref(), "until")?,
        before_id: id_field(q.before_id.as_ref(), "before_id")?,
        limit: Some(PAGE_ROWS),
    };
    let entries = state.store.log_page(&filter).await?;
    let older = older(entries.len(), entries.last().map(|e| e.id));
    Ok(session.page(
        "log.html",
        context! { title => "Inbound log", entries, older, q => context! {
            sender => q.sender, recipient => q.recipient, decision => q.decision, rule => q.rule,
            since => q.since, until => q.until,
        } },
    ))
}

/// The source of a kept message as a page shows it, and a note when cut.
pub(crate) fn shown_source(raw: &[u8]) -> (String, Option<String>) {
    let text = String::from_utf8_lossy(&raw[..raw.len().min(RAW_SHOWN)]).into_owned();
    let note = (raw.len() > RAW_SHOWN).then(|| {
        format!("the first {} KiB of {} KiB are shown; download it for the rest", RAW_SHOWN / 1024, raw.len() / 1024)
    });
    (text, note)
}

/// What the detail pages show about one kept message: its header fields,
/// its source, and every step's verdict.
async fn explained(
    state: &HttpState,
    entry: InboundLogEntry,
    raw: &[u8],
    stored_text: Option<String>,
    download: String,
) -> Result<minijinja::Value, ConsoleError> {
    let headers = crate::pipeline::parse::parse(raw).map(|p| p.headers).unwrap_or_default();
    let explanation = state.pipeline.explain(entry, raw, stored_text).await?;
    let (source, source_note) = shown_source(raw);
    Ok(context! { headers, explanation, source, source_note, download })
}

/// `GET /admin/log/{id}`: one transaction: envelope, answer, and for mail
/// that was kept its headers, sender checks, threading, authorization,
/// rules and extracted text beside the source.
pub(crate) async fn log_entry(State(state): Shared, session: Session, Path(id): Path<i64>) -> Page {
    let entry = state
        .store
        .inbound_entry(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("inbound-log entry {id} not found")))?;
    let raw = match &entry.original {
        Some(sha256) => state.store.original(sha256).await?,
        None => None,
    };
    let kept = match (&entry.original, &raw) {
        (None, _) => "Only mail answered 250 is kept; this transaction's mail was not.",
        (Some(_), None) => "The mail was removed after its retention (retention.raw_days).",
        (Some(_), Some(_)) => "",
    };
    let detail = match raw {
        Some(raw) => {
            let stored_text = match entry.stored_message {
                Some(message) if entry.decision == "accepted" => state.store.message(message).await?.map(|m| m.body),
                _ => None,
            };
            explained(&state, entry.clone(), &raw, stored_text, format!("/admin/log/{id}/raw")).await?
        }
        None => context! {},
    };
    let checked_for = crate::pipeline::authenticate::AuthResults::from_summary(&entry.auth).map(|auth| {
        crate::pipeline::relayed::ClientSource::describe(if auth.via.is_empty() { "connection" } else { &auth.via })
    });
    Ok(session.page(
        "log_entry.html",
        context! { title => format!("Inbound log entry {id}"), entry, kept, checked_for, ..detail },
    ))
}

/// `GET /admin/log/{id}/raw`: a transaction's mail as it arrived, to download.
pub(crate) async fn log_raw(state: Shared, _session: Session, id: Path<i64>) -> Page {
    Ok(crate::http::downloads::log_raw(&state, id.0).await?)
}

/// `GET /admin/held/{id}/raw`: a held item's mail as it arrived, to download.
pub(crate) async fn held_raw(state: Shared, _session: Session, id: Path<i64>) -> Page {
    Ok(crate::http::downloads::held_raw(&state, id.0).await?)
}

/// `GET /admin/held`: mail held for an admin.
pub(crate) async fn held(State(state): Shared, session: Session, Query(q): Query<ListQuery>) -> Page {
    let status = given(q.status.as_ref()).unwrap_or_else(|| HeldStatus::Held.to_string());
    let filter = HeldFilter {
        status: state_field::<HeldStatus>(&status)?,
        reason: given(q.reason.as_ref()),
        sender: given(q.sender.as_ref()),
        before_id: id_field(q.before_id.as_ref(), "before_id")?,
        limit: Some(PAGE_ROWS),
        ..HeldFilter::default()
    };
    let items = state.store.held_items(&filter).await?;
    let older = older(items.len(), items.last().map(|e| e.id));
    Ok(session.page(
        "held.html",
        context! { title => "Held mail", items, older, q => context! { status, reason => q.reason, sender => q.sender } },
    ))
}

/// `GET /admin/held/{id}`: one held item explained, with its actions.
pub(crate) async fn held_item(State(state): Shared, session: Session, Path(id): Path<i64>) -> Page {
    let item =
        state.store.held_item(id).await?.ok_or_else(|| ApiError::NotFound(format!("held item {id} not found")))?;
    let raw = state.store.held_raw(&item).await?;
    let detail = match &raw {
        Some(raw) => explained(&state, item.as_received(), raw, None, format!("/admin/held/{id}/raw")).await?,
        None => context! {},
    };
    let history: Vec<minijinja::Value> = state
        .store
        .held_log_entries(id)
        .await?
        .into_iter()
        .map(|(log_id, decision, at)| context! { log_id, decision, at => crate::store::rfc3339(at) })
        .collect();
    // Where a released item went, in the words the Dashboard uses.
    let released_into = match (item.status, item.thread_id) {
        (HeldStatus::Released, Some(thread)) => state.store.thread(thread).await?.map(|t| t.label()),
        _ => None,
    };
    Ok(session.page(
        "held_item.html",
        context! { title => format!("Held item {id}"), item, history, released_into, ..detail },
    ))
}

/// Does one held-queue action; what happened, in words.
async fn held_action(state: &HttpState, session: &Session, id: i64, action: &str) -> Result<String, ConsoleError> {
    let by = session.actor.as_str();
    let action: HeldAction = action.parse().map_err(|why| ApiError::NotFound(format!("no held action: {why}")))?;
    let done = state.pipeline.act_on_held(action, id, by).await.map(|_| match action {
        HeldAction::Release => "released into its conversation",
        HeldAction::Discard => "discarded; its page can put it back in the queue until its retention ends",
        HeldAction::Restore => "put back in the queue",
        HeldAction::Notice => "answered: the sender gets the refusal notice",
    });
    Ok(match done {
        Ok(what) => format!("Held item {id} {what}."),
        Err(error) => format!("Held item {id} was not changed: {}", ApiError::from(error)),
    })
}

/// `POST /admin/held/{id}/{release|discard|notice|restore}`
pub(crate) async fn act_on_held(
    State(state): Shared,
    session: Session,
    Path((id, action)): Path<(i64, String)>,
    Form(form): Form<CsrfForm>,
) -> Page {
    session.check(&form.csrf)?;
    let message = held_action(&state, &session, id, &action).await?;
    Ok(session.done(&format!("/admin/held/{id}"), &message))
}

/// `POST /admin/held/bulk` `csrf, action, id=1&id=2...`: each chosen item
/// acted on alone.
pub(crate) async fn act_on_held_items(
    State(state): Shared,
    session: Session,
    Form(fields): Form<Vec<(String, String)>>,
) -> Page {
    let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).unwrap_or_default();
    session.check(field("csrf"))?;
    let ids = chosen_ids(&fields);
    if ids.is_empty() {
        return Ok(session.done("/admin/held", "Nothing was changed: no item was chosen."));
    }
    let mut said = Vec::with_capacity(ids.len());
    for id in ids {
        said.push(held_action(&state, &session, id, field("action")).await?);
    }
    Ok(session.done("/admin/held", &said.join(" ")))
}

/// The ids a list form's checkboxes chose (`id=...`, repeated).
fn chosen_ids(fields: &[(String, String)]) -> Vec<i64> {
    fields.iter().filter(|(k, _)| k == "id").filter_map(|(_, v)| v.parse().ok()).collect()
}

/// `GET /admin/outbox`: outgoing mail and webhook deliveries.
pub(crate) async fn outbox(State(state): Shared, session: Session, Query(q): Query<ListQuery>) -> Page {
    let status = given(q.status.as_ref());
    let filter = OutboxFilter {
        status: state_field::<OutboxStatus>(status.as_deref().unwrap_or("all"))?,
        kind: given(q.kind.as_ref()),
        to: given(q.to.as_ref()),
        before_id: id_field(q.before_id.as_ref(), "before_id")?,
        limit: Some(PAGE_ROWS),
    };
    let items = state.store.outbox_page(&filter).await?;
    let older = older(items.len(), items.last().map(|e| e.id));
    Ok(session.page(
        "outbox.html",
        context! { title => "Outbox", items, older, q => context! { status, kind => q.kind, to => q.to } },
    ))
}

/// `GET /admin/outbox/{id}`: one outgoing mail or webhook delivery.
pub(crate) async fn outbox_item(State(state): Shared, session: Session, Path(id): Path<i64>) -> Page {
    let mut item =
        state.store.outbox_item(id).await?.ok_or_else(|| ApiError::NotFound(format!("outbox item {id} not found")))?;
    if let Some(thread) = item.thread_id {
        item.subject = state.store.thread(thread).await?.map(|t| t.subject);
    }
    let item = item.with_subject();
    Ok(session.page("outbox_item.html", context! { title => format!("Outbox item {id}"), item }))
}

/// `POST /admin/outbox/retry` `csrf, id=1&id=2...`: sends each item now
/// (failed, skipped, or pending and waiting out its backoff).
pub(crate) async fn retry_outbox(
    State(state): Shared,
    session: Session,
    Form(fields): Form<Vec<(String, String)>>,
) -> Page {
    let csrf = fields.iter().find(|(k, _)| k == "csrf").map(|(_, v)| v.as_str()).unwrap_or_default();
    session.check(csrf)?;
    let ids = chosen_ids(&fields);
    if ids.is_empty() {
        return Ok(session.done("/admin/outbox", "Nothing was retried: no item was chosen."));
    }
    let (mut retried, mut refused) = (Vec::new(), Vec::new());
    for id in ids {
        match state.store.retry(id).await {
            Ok(_) => retried.push(id.to_string()),
            Err(error) => refused.push(ApiError::from(error).to_string()),
        }
    }
    let mut message = match retried.len() {
        0 => String::new(),
        1 => format!("Item {} is queued to be sent now.", retried[0]),
        n => format!("{n} items are queued to be sent now ({}).", retried.join(", ")),
    };
    if !refused.is_empty() {
        message.push_str(&format!(" Not retried: {}.", refused.join("; ")));
    }
    Ok(session.done("/admin/outbox", message.trim()))
}

/// `GET /admin/bounces`: suppressed addresses and the latest bounces.
pub(crate) async fn bounces(State(state): Shared, session: Session, Query(q): Query<ListQuery>) -> Page {
    let suppressions = state.store.suppressions(state.max_hard_bounces, state.suppression_days).await?;
    let filter = BounceFilter {
        recipient: given(q.address.as_ref()),
        before_id: id_field(q.before_id.as_ref(), "before_id")?,
        limit: Some(PAGE_ROWS),
        ..BounceFilter::default()
    };
    let bounces = state.store.bounces_page(&filter).await?;
    let older = older(bounces.len(), bounces.last().map(|e| e.id));
    Ok(session.page(
        "bounces.html",
        context! {
            title => "Bounces", suppressions, bounces, older, address => q.address,
            max_hard_bounces => state.max_hard_bounces, suppression_days => state.suppression_days,
        },
    ))
}

/// The lift form.
#[derive(Deserialize)]
pub(crate) struct LiftForm {
    csrf: String,
    address: String,
}

/// `POST /admin/bounces/lift` `csrf, address`
pub(crate) async fn lift_suppression(State(state): Shared, session: Session, Form(form): Form<LiftForm>) -> Page {
    session.check(&form.csrf)?;
    let lifted = state.store.lift_suppression(&form.address, &session.actor).await?;
    let message = match lifted {
        0 => format!("{} was not suppressed.", form.address),
        n => format!("Mail goes to {} again ({n} bounce(s) no longer count).", form.address),
    };
    Ok(session.done("/admin/bounces", &message))
}

/// `GET /admin/unsubscribes?address=`: who opted out of what.
pub(crate) async fn unsubscribes(State(state): Shared, session: Session, Query(q): Query<ListQuery>) -> Page {
    let address = given(q.address.as_ref());
    let rows = state.store.all_opt_outs(address.as_deref(), 500).await?;
    let rows: Vec<minijinja::Value> = rows
        .into_iter()
        .map(|(user_id, email, kind, at)| context! { user_id, email, kind, at => crate::store::rfc3339(at) })
        .collect();
    Ok(session.page("unsubscribes.html", context! { title => "Unsubscribes", rows, address }))
}

/// The undo form.
#[derive(Deserialize)]
pub(crate) struct UndoForm {
    csrf: String,
    user_id: i64,
    kind: String,
}

/// `POST /admin/unsubscribes/undo` `csrf, user_id, kind`
pub(crate) async fn undo_unsubscribe(State(state): Shared, session: Session, Form(form): Form<UndoForm>) -> Page {
    session.check(&form.csrf)?;
    let message = if state.store.opt_in(form.user_id, &form.kind).await? {
        format!("User {} gets {} notifications again.", form.user_id, form.kind.replace('_', " "))
    } else {
        format!("User {} was not unsubscribed from {}.", form.user_id, form.kind.replace('_', " "))
    };
    Ok(session.done("/admin/unsubscribes", &message))
}

/// A page of people waiting to join.
#[derive(Deserialize, Default)]
pub(crate) struct AfterQuery {
    after_id: Option<i64>,
}

/// People on one page of `/admin/participants`.
const PARTICIPANTS_PAGE: i64 = 50;

/// `GET /admin/participants?after_id=`: outsiders copied into conversations,
/// waiting for an agent, oldest first.
pub(crate) async fn participants(State(state): Shared, session: Session, Query(q): Query<AfterQuery>) -> Page {
    let pending = state.store.pending_participants(q.after_id.unwrap_or(0), PARTICIPANTS_PAGE).await?;
    let next = (pending.len() as i64 == PARTICIPANTS_PAGE).then(|| pending.last().map(|p| p.id)).flatten();
    let mut rows = Vec::with_capacity(pending.len());
    for p in pending {
        let label =
            state.store.thread(p.thread_id).await?.map_or_else(|| format!("thread {}", p.thread_id), |t| t.label());
        let copied_by = match p.added_by {
            Some(id) => state.store.user(id).await?.map_or_else(|| format!("user {id}"), |u| u.email),
            None => String::new(),
        };
        rows.push(context! {
            id => p.id, label, name => p.name, email => p.email, copied_by, at => crate::store::rfc3339(p.created_at),
        });
    }
    Ok(session.page("participants.html", context! { title => "Waiting to join", rows, next }))
}

/// The admit and decline forms.
#[derive(Deserialize)]
pub(crate) struct ParticipantForm {
    csrf: String,
    id: i64,
}

/// `POST /admin/participants/{admit|decline}` `csrf, id`
pub(crate) async fn decide_participant(
    State(state): Shared,
    session: Session,
    Path(action): Path<String>,
    Form(form): Form<ParticipantForm>,
) -> Page {
    session.check(&form.csrf)?;
    let decided = match action.as_str() {
        "admit" => state.pipeline.admit_participant(form.id).await,
        "decline" => state.pipeline.decline_participant(form.id).await,
        _ => return Err(ApiError::NotFound(format!("no action {action:?}")).into()),
    };
    let message = match decided {
        Ok(p) if action == "admit" => format!("{} joined the conversation.", p.email),
        Ok(p) => format!("{} was declined.", p.email),
        Err(crate::store::StoreError::Conflict(why)) => why,
        Err(error) => return Err(error.into()),
    };
    Ok(session.done("/admin/participants", &message))
}

/// The page's query: a plan to edit.
#[derive(Deserialize, Default)]
pub(crate) struct PlanQuery {
    edit: Option<String>,
}

/// `GET /admin/plans[?edit=ID]`: the plans, and a form to add or change one.
pub(crate) async fn plans(State(state): Shared, session: Session, Query(q): Query<PlanQuery>) -> Page {
    let plans = state.store.plans().await?;
    let edit = q.edit.and_then(|id| plans.iter().find(|p| p.id == id).cloned());
    Ok(session.page("plans.html", context! { title => "Plans", plans, edit }))
}

/// `GET /admin/doctor`: the DNS checks of `mailgate doctor`, run now.
pub(crate) async fn doctor(State(state): Shared, session: Session) -> Page {
    let (checks, doctor_failed, unavailable) = match &state.doctor {
        Ok(setup) => {
            let report = setup.run().await;
            (report.checks.clone(), report.failed(), None)
        }
        Err(why) => (Vec::new(), false, Some(why.clone())),
    };
    Ok(session.page("doctor.html", context! { title => "DNS checks", checks, doctor_failed, unavailable }))
}

/// The plan form (checkboxes are sent only when ticked; numbers as text).
#[derive(Deserialize)]
pub(crate) struct PlanForm {
    csrf: String,
    id: String,
    name: String,
    scope: String,
    #[serde(default)]
    rank: String,
    tickets: String,
    phone: String,
    on_call: Option<String>,
    /// `false` keeps a plan without chat as it is (the form has no box for it).
    #[serde(default)]
    chat: String,
    #[serde(default)]
    ticket_response_minutes: String,
    #[serde(default)]
    on_call_response_minutes: String,
    #[serde(default)]
    support_hours: String,
}

/// `POST /admin/plans`: adds a plan or changes one.
pub(crate) async fn save_plan(State(state): Shared, session: Session, Form(form): Form<PlanForm>) -> Page {
    session.check(&form.csrf)?;
    let number =
        |text: &str, name: &str| -> Result<Option<i64>, ConsoleError> { id_field(Some(&text.to_owned()), name) };
    let body = crate::http::plans::PlanBody {
        name: form.name,
        scope: form.scope,
        rank: number(&form.rank, "rank")?.unwrap_or(0),
        chat: form.chat != "false",
        tickets: form.tickets,
        phone: form.phone,
        on_call: form.on_call.is_some(),
        ticket_response_minutes: number(&form.ticket_response_minutes, "ticket response")?,
        on_call_response_minutes: number(&form.on_call_response_minutes, "on-call response")?,
        support_hours: Some(form.support_hours),
    };
    let id = form.id.trim().to_owned();
    let message = match body.validated(&id) {
        Ok(plan) => match crate::http::plans::save(&state, &plan).await {
            Ok(saved) => format!("Plan {} ({}) saved; it is in force now.", saved.id, saved.name),
            Err(error) => format!("Plan {id} was not saved: {error}"),
        },
        Err(error) => format!("Plan {id} was not saved: {error}"),
    };
    Ok(session.done("/admin/plans", &message))
}
