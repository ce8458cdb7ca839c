//! Step 6: may this sender write in this thread?
//!
//! Allowed: the customer who opened the thread; for tickets any member of
//! the site's organization who may see tickets (not Unprivileged); anyone
//! added to it as a participant (and not since removed, declined or gone); and a
//! support agent the token was issued to (matched by the From address). A
//! token does not outlive its holder's standing: a member who became
//! Unprivileged or left the organization may not write with a token issued
//! before. A `[Ticket #N]` tag or a body marker only point at a thread; they
//! never let a stranger in. Pure: the caller loads the rows (as they are now).

use super::thread::ThreadRef;
use crate::domain::ThreadKind;
use crate::store::{Site, Thread, User};

/// The answer of [`authorize`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorization {
    /// The sender may write; the message is attributed to this user.
    Allowed {
        /// The author.
        author_id: i64,
    },
    /// The sender may not write here, with the reason in words.
    Denied(String),
}

/// Decides whether `sender` may post into `thread`, reached through `via`;
/// `listed`: the sender is an active participant of it (someone copied in
/// and added, see `pipeline::participants`).
pub fn authorize(
    thread: &Thread,
    site: &Site,
    reference: &ThreadRef,
    sender: Option<&User>,
    listed: bool,
) -> Authorization {
    let Some(sender) = sender else {
        return Authorization::Denied("the sender's address is not known to us".to_owned());
    };
    let token_holder = matches!(reference, ThreadRef::Token { recipient_id, .. } if *recipient_id == sender.id);
    if (token_holder && sender.is_agent()) || listed || is_participant(thread, site, sender) {
        return Authorization::Allowed { author_id: sender.id };
    }
    Authorization::Denied(format!("{} may not write in this conversation", sender.email))
}

/// Whether `user` belongs on the customer side of `thread`: its customer, or
/// for a ticket a member of the site's organization who may see tickets.
pub fn is_participant(thread: &Thread, site: &Site, user: &User) -> bool {
    user.id == thread.customer_id
        || thread.kind() == ThreadKind::Ticket
            && site.organization_id.is_some()
            && user.organization_id == site.organization_id
            && user.role().sees_org_tickets()
}
