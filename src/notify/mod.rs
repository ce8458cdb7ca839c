//! Who is told about a new message: turns a stored event into outbox rows
//! (data), never sends anything itself. Rendering lives in [`render`].
//!
//! - An agent wrote: the customer side hears of it. For a chat, the customer;
//!   for a ticket, every member of the site's organization who may see
//!   tickets (never Unprivileged users), or the customer when the site has no
//!   organization.
//! - A customer wrote: the assigned agent, or every agent while nobody is assigned.
//!
//! The author is never notified of their own message.

pub mod render;

use crate::domain::ThreadKind;
use crate::store::{NotificationKind, Site, Store, StoreResult, Thread, User};

/// The notifications a message by `author` in `thread` causes.
pub async fn recipients(
    store: &Store,
    thread: &Thread,
    site: &Site,
    author: &User,
) -> StoreResult<Vec<(NotificationKind, i64)>> {
    let mut ids: Vec<i64> = Vec::new();
    let kind = if author.is_agent() {
        match (thread.kind(), site.organization_id) {
            (ThreadKind::Ticket, Some(org)) => {
                ids.extend(store.ticket_viewers(org).await?.iter().map(|u| u.id));
            }
            _ => ids.push(thread.customer_id),
        }
        NotificationKind::AgentReplied
    } else {
        match thread.assigned_agent_id {
            Some(agent) => ids.push(agent),
            None => ids.extend(store.agents().await?.iter().map(|u| u.id)),
        }
        NotificationKind::CustomerReplied
    };
    ids.sort_unstable();
    ids.dedup();
    ids.retain(|&id| id != author.id);
    let opted_out = store.opted_out(kind.as_str()).await?;
    ids.retain(|id| !opted_out.contains(id));
    Ok(ids.into_iter().map(|id| (kind, id)).collect())
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
