//! Step 7b: who else joins the conversation. When a message is accepted from
//! someone in it, the people it copies (`To`, `Cc`) may join: a person of the
//! conversation's organization is added; an outsider waits for an agent
//! (`[participants] outsiders`); the desk's own addresses, agents, role and
//! null addresses and the blocklist never join. Limits per conversation and
//! per organization and day keep a reply-all to a mailing list from filling
//! a conversation: over one, nobody is added and one note (an hour) says so.
//!
//! [`screen`] is pure: it says what each address is before anything is
//! looked up, so that the usual reply (copying only our own addresses)
//! costs no read at all.

use crate::domain::{Role, ThreadKind};
use crate::store::{
    NewParticipant, Participant, ParticipantStatus, Site, Store, StoreError, StoreResult, Thread, User,
};

/// What becomes of an outsider copied on a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outsiders {
    /// An agent lets them in or declines (the default).
    #[default]
    Ask,
    /// They are ignored.
    Never,
    /// They are added.
    Add,
}

/// The desk's rules for people copied on a message (`[participants]`).
#[derive(Debug, Clone)]
pub struct ParticipantPolicy {
    /// What becomes of outsiders.
    pub outsiders: Outsiders,
    /// Addresses (`name@domain`) and domains (`@domain`) never added, lower case.
    pub blocklist: Vec<String>,
    /// Most people in one conversation, its customer included.
    pub max_per_conversation: i64,
    /// Most outsiders copied into one organization's conversations in a day.
    pub max_new_outsiders_per_org_per_day: i64,
}

impl Default for ParticipantPolicy {
    fn default() -> Self {
        Self {
            outsiders: Outsiders::Ask,
            blocklist: Vec::new(),
            max_per_conversation: 20,
            max_new_outsiders_per_org_per_day: 50,
        }
    }
}

impl ParticipantPolicy {
    /// Whether `address` is on the blocklist: itself, or without its `+tag`,
    /// or its domain or a domain above it.
    fn blocks(&self, address: &str) -> bool {
        let address = address.to_ascii_lowercase();
        let plain = without_tag(&address);
        let domain = address.rsplit_once('@').map_or("", |(_, d)| d);
        self.blocklist.iter().any(|entry| match entry.strip_prefix('@') {
            Some(blocked) => domain == blocked || domain.ends_with(&format!(".{blocked}")),
            None => *entry == address || *entry == plain,
        })
    }
}

/// Local parts of role and null addresses: nobody reads them as a person.
const ROLE_LOCAL_PARTS: &[&str] = &[
    "postmaster",
    "mailer-daemon",
    "noreply",
    "no-reply",
    "no_reply",
    "donotreply",
    "do-not-reply",
    "do_not_reply",
    "abuse",
    "hostmaster",
];

/// How many copied addresses one message is looked at for: a message that
/// copies more is a list, not a conversation (the limit stops it anyway).
const MAX_COPIED: usize = 100;

/// An address without the `+tag` of its local part (`bob+x@a` → `bob@a`).
fn without_tag(address: &str) -> String {
    match address.rsplit_once('@') {
        Some((local, domain)) => format!("{}@{domain}", local.split('+').next().unwrap_or(local)),
        None => address.to_owned(),
    }
}

/// The addresses of a message's `To` and `Cc` that might join, with their
/// names: each once, none of the desk's domain, no role or null address,
/// none on the blocklist, nobody in `skip` (the author, the customer).
pub fn screen<'a>(
    copied: &'a [(String, String)],
    desk_domain: &str,
    policy: &ParticipantPolicy,
    skip: &[&str],
) -> Vec<&'a (String, String)> {
    let mut seen: Vec<&str> = Vec::new();
    let mut candidates = Vec::new();
    for person in copied.iter().take(MAX_COPIED) {
        let address = person.0.as_str();
        let Some((local, domain)) = address.rsplit_once('@') else { continue };
        let local = local.split('+').next().unwrap_or(local);
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let desk = desk_domain.trim_end_matches('.').to_ascii_lowercase();
        let ours = domain == desk || domain.ends_with(&format!(".{desk}")) || domain.starts_with('[');
        if ours
            || local.is_empty()
            || ROLE_LOCAL_PARTS.contains(&local.to_ascii_lowercase().as_str())
            || policy.blocks(address)
            || skip.contains(&address)
            || seen.contains(&address)
        {
            continue;
        }
        seen.push(address);
        candidates.push(person);
    }
    candidates
}

/// What copying people into a conversation comes to: whom to add or leave
/// pending, and the note to write when a limit stopped it.
#[derive(Debug, Clone, Default)]
pub struct Copying {
    /// People to record with the message.
    pub participants: Vec<NewParticipant>,
    /// A note for the agents, when a limit stopped the copying.
    pub note: Option<String>,
    /// The limits, checked again where the people are written (two messages
    /// copying people at once must not pass a limit together).
    pub limits: Option<crate::store::ParticipantLimits>,
}

/// The time between two of mailgate's notes in one conversation.
const NOTE_EVERY_MS: i64 = 3_600_000;

impl super::Pipeline {
    /// What the people copied on a message by `author` into `thread` come
    /// to (reads the directory and the conversation's participants only
    /// when someone outside the desk is copied).
    pub(super) async fn copying(
        &self,
        copied: &[(String, String)],
        thread: &Thread,
        site: &Site,
        author: &User,
        proved: bool,
    ) -> StoreResult<Copying> {
        let (store, policy) = (&self.store, &self.participants);
        let candidates = screen(copied, &self.domain, policy, &[author.email.as_str()]);
        if candidates.is_empty() {
            return Ok(Copying::default());
        }
        copying(store, policy, candidates, thread, site, proved).await
    }
}

/// An agent's decisions about people in a conversation, for the API and the
/// console alike; each change is announced to webhooks.
impl super::Pipeline {
    /// Lets a pending (or declined, or gone) person in; `Conflict` when the
    /// conversation is full.
    pub async fn admit_participant(&self, id: i64) -> StoreResult<Participant> {
        let row = self.participant_row(id).await?;
        let max = self.participants.max_per_conversation;
        let counted = 1 + self.store.counted_participants(row.thread_id).await?;
        let already = matches!(row.status, ParticipantStatus::Active | ParticipantStatus::Pending);
        if counted + i64::from(!already) > max {
            return Err(StoreError::Conflict(format!(
                "the conversation has {counted} participants, its customer included: the limit is {max}"
            )));
        }
        let person = NewParticipant {
            email: row.email.clone(),
            name: row.name.clone(),
            user_id: row.user_id,
            organization_id: row.organization_id,
            outsider: row.outsider,
            active: true,
        };
        let (added, _) = self.store.add_participant(row.thread_id, &person, row.added_by).await?;
        if row.status != ParticipantStatus::Active {
            self.announce_participant("participant.added", &added).await;
        }
        Ok(added)
    }

    /// Declines a pending person (a later copy does not bring them back).
    pub async fn decline_participant(&self, id: i64) -> StoreResult<Participant> {
        let row = self.participant_row(id).await?;
        if row.status != ParticipantStatus::Pending {
            return Err(StoreError::Conflict(format!("participant {id} is {}, not pending", row.status)));
        }
        Ok(self.store.set_participant_status(id, ParticipantStatus::Declined).await?.unwrap_or(row))
    }

    /// Takes a person out of their conversation: `Removed` by an agent, or
    /// `Left` by their own link. Only an active one's going is announced.
    pub async fn remove_participant(&self, id: i64, status: ParticipantStatus) -> StoreResult<Participant> {
        let row = self.participant_row(id).await?;
        match self.store.set_participant_status(id, status).await? {
            Some(gone) => {
                if row.status == ParticipantStatus::Active {
                    self.announce_participant("participant.removed", &gone).await;
                }
                Ok(gone)
            }
            None => Ok(row),
        }
    }

    /// Queues a participant's webhook event.
    pub async fn announce_participant(&self, event: &'static str, participant: &Participant) {
        let data = serde_json::to_value(participant).unwrap_or_default();
        if let Err(error) = self.store.queue_event(event, data).await {
            tracing::warn!(%error, event, "queueing a participant event failed");
        }
    }

    async fn participant_row(&self, id: i64) -> StoreResult<Participant> {
        self.store.participant(id).await?.ok_or(StoreError::NotFound("participant"))
    }
}

/// [`super::Pipeline::copying`] once there are candidates.
async fn copying(
    store: &Store,
    policy: &ParticipantPolicy,
    candidates: Vec<&(String, String)>,
    thread: &Thread,
    site: &Site,
    proved: bool,
) -> StoreResult<Copying> {
    let known: Vec<String> = store.participants(thread.id).await?.into_iter().map(|p| p.email).collect();
    let org = site.organization_id;
    let ticket = thread.kind() == ThreadKind::Ticket;
    let mut participants = Vec::new();
    // At most twice the limit looked up: more than that is over it anyway.
    let mut looked_up = 0;
    for (address, name) in candidates {
        if known.contains(address) {
            continue; // there, pending, declined or left: a copy changes nothing
        }
        looked_up += 1;
        if looked_up > 2 * policy.max_per_conversation {
            participants.push(NewParticipant {
                email: address.clone(),
                name: address.clone(),
                user_id: None,
                organization_id: org,
                outsider: true,
                active: false,
            });
            continue;
        }
        let plain = without_tag(address);
        let untagged = match plain != *address {
            true => store.user_by_email(&plain).await?,
            false => None,
        };
        if untagged.as_ref().is_some_and(|u| u.is_agent() || u.id == thread.customer_id) {
            continue; // an agent's, or the customer's, own address with a tag
        }
        let user = store.user_by_email(address).await?;
        let known_user = user.is_some();
        let same_org = match &user {
            Some(user) if user.id == thread.customer_id => continue,
            Some(user) if user.is_agent() || user.erased_at.is_some() => continue,
            Some(user) if org.is_some() && user.organization_id == org => {
                let role = user.role();
                // On a ticket, members who see tickets are in it already, and
                // an Unprivileged member may not be.
                if thread.kind() == ThreadKind::Ticket && (role.sees_org_tickets() || role == Role::Unprivileged) {
                    continue;
                }
                true
            }
            _ => match (org, address.rsplit_once('@')) {
                (Some(org), Some((_, domain))) => store.organization_of_domain(domain).await? == Some(org),
                _ => false,
            },
        };
        // Who joins at once: someone of the organization, on mail proved
        // its author's; on a ticket, only a member the directory knows (an
        // unknown address at the organization's domain might be anyone's
        // alias). Everyone else waits for an agent, or is ignored.
        let active = match (same_org, policy.outsiders) {
            (false, Outsiders::Never) => continue,
            (true, _) => proved && (known_user || !ticket),
            (false, Outsiders::Add) => proved,
            (false, Outsiders::Ask) => false,
        };
        let name = crate::notify::render::header_safe(&name.chars().take(100).collect::<String>());
        let name = match (name.is_empty(), &user) {
            (false, _) => name,
            (true, Some(user)) => user.name.clone(),
            (true, None) => address.clone(),
        };
        participants.push(NewParticipant {
            email: address.clone(),
            name,
            user_id: user.as_ref().map(|u| u.id),
            organization_id: org,
            outsider: !same_org,
            active,
        });
    }
    if participants.is_empty() {
        return Ok(Copying::default());
    }
    let names = || participants.iter().map(|p| p.email.as_str()).collect::<Vec<_>>().join(", ");
    let counted = 1 + store.counted_participants(thread.id).await?;
    let over = if counted + participants.len() as i64 > policy.max_per_conversation {
        Some(format!(
            "Not added to this conversation: {} (it may have at most {} participants, its customer included, and \
             has {counted})",
            names(),
            policy.max_per_conversation
        ))
    } else {
        let outsiders = participants.iter().filter(|p| p.outsider).count() as i64;
        let day_ago = crate::store::now_ms() - 24 * NOTE_EVERY_MS;
        let today = match outsiders {
            0 => 0,
            _ => store.outsiders_copied_since(org, site.id, day_ago).await?,
        };
        (outsiders > 0 && today + outsiders > policy.max_new_outsiders_per_org_per_day).then(|| {
            format!(
                "Not added to this conversation: {} (at most {} people from outside the organization may be \
                 copied into its conversations a day, and {today} were)",
                names(),
                policy.max_new_outsiders_per_org_per_day
            )
        })
    };
    let limits = crate::store::ParticipantLimits {
        per_conversation: policy.max_per_conversation,
        outsiders_per_day: policy.max_new_outsiders_per_org_per_day,
        site_id: site.id,
        since: crate::store::now_ms() - 24 * NOTE_EVERY_MS,
    };
    let Some(why) = over else { return Ok(Copying { participants, note: None, limits: Some(limits) }) };
    let noted_lately =
        store.last_system_note_at(thread.id).await?.is_some_and(|at| at > crate::store::now_ms() - NOTE_EVERY_MS);
    Ok(Copying { participants: Vec::new(), note: (!noted_lately).then_some(why), limits: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn people(addresses: &[&str]) -> Vec<(String, String)> {
        addresses.iter().map(|a| ((*a).to_owned(), String::new())).collect()
    }

    #[test]
    fn the_desk_role_addresses_the_blocklist_and_repeats_are_never_candidates() {
        let policy = ParticipantPolicy {
            blocklist: vec!["boss@acme.example".to_owned(), "@lists.example".to_owned()],
            ..ParticipantPolicy::default()
        };
        let copied = people(&[
            "reply+abc@support.example",
            "support@support.example",
            "tickets@mail.support.example",
            "postmaster@acme.example",
            "MAILER-DAEMON@acme.example",
            "no-reply@acme.example",
            "noreply+x@acme.example",
            "boss@acme.example",
            "all@lists.example",
            "me@acme.example",
            "bob@acme.example",
            "bob@acme.example",
            "carla@partner.example",
        ]);
        let kept: Vec<&str> =
            screen(&copied, "support.example", &policy, &["me@acme.example"]).iter().map(|p| p.0.as_str()).collect();
        assert_eq!(kept, ["bob@acme.example", "carla@partner.example"]);
    }
}
