//! Who is told about a new message: turns a stored event into outbox rows
//! (data), never sends anything itself. Rendering lives in [`render`].
//!
//! - An agent wrote: the customer side hears of it. For a chat, the customer;
//!   for a ticket, every member of the site's organization who may see
//!   tickets (never Unprivileged users), or the customer when the site has no
//!   organization.
//! - A customer wrote: the assigned agent, or every agent while nobody is assigned.
//!
//! - People copied into the conversation and added (participants) hear of
//!   everything others write in it; when one of them writes, so does its customer.
//! - An agent's internal note: the agents alone.
//!
//! Nobody hears of a message that was sent to them directly (they were in
//! its `To` or `Cc`). The author is never notified of their own message. An agent who opted
//! out of a kind gets no item; a customer who unsubscribed gets one that
//! the outbound worker marks `skipped (unsubscribed)`, so that agents see
//! why nothing was sent.

pub mod locale;
pub mod render;

use crate::domain::ThreadKind;
use crate::store::{NotificationKind, Site, Store, StoreResult, Thread, User};

/// The notifications a message by `author` in `thread` causes; `direct`:
/// the addresses the message itself went to (its `To` and `Cc`, given only
/// for mail proved its author's), whose owners on the customer side have it
/// already and get no notification of it.
pub async fn recipients(
    store: &Store,
    thread: &Thread,
    site: &Site,
    author: &User,
    direct: &[String],
) -> StoreResult<Vec<(NotificationKind, i64)>> {
    let kind = if author.is_agent() { NotificationKind::AgentReplied } else { NotificationKind::CustomerReplied };
    // One query per message: agents' opt-outs are filtered where they are read.
    let mut ids = match (author.is_agent(), thread.kind(), site.organization_id, thread.assigned_agent_id) {
        (true, ThreadKind::Ticket, Some(org), _) => store.ticket_viewers(org).await?,
        (true, ..) => vec![thread.customer_id],
        (false, .., Some(agent)) => unless_opted_out(store, agent, kind).await?,
        (false, .., None) => store.subscribed_agents(kind.as_str()).await?,
    };
    let mut notify: Vec<(NotificationKind, i64)> = ids.drain(..).map(|id| (kind, id)).collect();
    // People copied in and added hear of everything anyone else writes
    // (and the customer of what they write); read only when there are some.
    if thread.participants > 0 {
        let side = NotificationKind::AgentReplied;
        if !author.is_agent() && !notify.iter().any(|&(_, id)| id == thread.customer_id) {
            notify.push((side, thread.customer_id));
        }
        for (id, _) in store.active_participants(thread.id).await? {
            if !notify.iter().any(|&(_, known)| known == id) {
                notify.push((side, id));
            }
        }
    }
    notify.retain(|&(_, id)| id != author.id);
    if !direct.is_empty() && notify.iter().any(|&(kind, _)| kind == NotificationKind::AgentReplied) {
        let mut kept = Vec::with_capacity(notify.len());
        for (kind, id) in notify {
            // Only the customer side is spared: agents always hear of it.
            let copied = match (kind, store.user(id).await?) {
                (NotificationKind::AgentReplied, Some(user)) => {
                    direct.iter().any(|address| address.eq_ignore_ascii_case(&user.email))
                }
                _ => false,
            };
            if !copied {
                kept.push((kind, id));
            }
        }
        notify = kept;
    }
    Ok(notify)
}

/// The notifications an agent's internal note causes: the assigned agent,
/// or every agent while nobody is assigned (never the customer side).
pub async fn note_recipients(
    store: &Store,
    thread: &Thread,
    author: &User,
) -> StoreResult<Vec<(NotificationKind, i64)>> {
    let kind = NotificationKind::CustomerReplied;
    let mut ids = match thread.assigned_agent_id {
        Some(agent) => unless_opted_out(store, agent, kind).await?,
        None => store.subscribed_agents(kind.as_str()).await?,
    };
    ids.retain(|&id| id != author.id);
    Ok(ids.into_iter().map(|id| (kind, id)).collect())
}

/// The notifications a new thread causes, wherever it was opened (the
/// Dashboard's API or an email to a ticket address): nobody is assigned
/// yet, so every agent hears of it (of a chat as of a customer's message);
/// a ticket's customer also gets the receipt with the response time the
/// plan promises.
pub async fn new_thread_recipients(
    store: &Store,
    kind: ThreadKind,
    customer_id: i64,
) -> StoreResult<Vec<(NotificationKind, i64)>> {
    let agent_kind = match kind {
        ThreadKind::Ticket => NotificationKind::TicketOpened,
        ThreadKind::Chat => NotificationKind::CustomerReplied,
    };
    let mut notify: Vec<(NotificationKind, i64)> = store.agents().await?.iter().map(|a| (agent_kind, a.id)).collect();
    if kind == ThreadKind::Ticket {
        notify.push((NotificationKind::TicketReceived, customer_id));
    }
    Ok(notify)
}

/// `user_id` alone, unless they opted out of `kind`.
async fn unless_opted_out(store: &Store, user_id: i64, kind: NotificationKind) -> StoreResult<Vec<i64>> {
    Ok(if store.is_opted_out(user_id, kind.as_str()).await? { Vec::new() } else { vec![user_id] })
}

/// Notifications a recipient may opt out of (List-Unsubscribe). Receipts,
/// refusal notices, pages and transcripts are not among them. The position
/// in this list is the number carried by unsubscribe tokens.
pub const OPTIONAL_KINDS: &[&str] = &["agent_replied", "customer_replied", "ticket_opened"];

/// Whether `site` may open tickets: its own plan includes them, or its
/// organization's plan does (for some plans only for sites on Business and above).
pub async fn site_has_tickets(store: &Store, site: &Site) -> StoreResult<bool> {
    Ok(store.site_features(site.id).await?.0)
}

/// Whether emergencies on `site` page the on-call engineers: its plan, or
/// its organization's plan, includes on-call.
pub async fn site_has_on_call(store: &Store, site: &Site) -> StoreResult<bool> {
    Ok(store.site_features(site.id).await?.1)
}
