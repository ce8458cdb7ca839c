//! Row types: what the store reads and writes.

use crate::domain::{Role, Source, ThreadKind};
use serde::Serialize;

/// What a support plan includes (a row of `plans`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct Plan {
    /// Short id, e.g. `elite`.
    pub id: String,
    /// Display name, e.g. `Elite`.
    pub name: String,
    /// `site`, `organization` or `account`: what the plan is bought for.
    pub scope: String,
    /// Orders site plans; tickets "for sites on Business and above" compare it.
    pub rank: i64,
    /// Chat support (every plan).
    pub chat: bool,
    /// `none`, `all`, or `business_and_above` (sites whose plan ranks at least Business).
    pub tickets: String,
    /// `none`, `scheduled`, `direct` or `premium`.
    pub phone: String,
    /// Whether emergencies page the on-call engineers.
    pub on_call: bool,
    /// Promised first response to a ticket, in minutes (support hours).
    pub ticket_response_minutes: Option<i64>,
    /// Promised response to an on-call emergency, in minutes (24/7).
    pub on_call_response_minutes: Option<i64>,
    /// When the ticket response time applies, e.g. `Mon-Fri 09:00-17:00 America/Los_Angeles`.
    pub support_hours: Option<String>,
}

/// Rank of the Business site plan.
pub const BUSINESS_RANK: i64 = 3;

/// A customer organization.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct Organization {
    /// Row id.
    pub id: i64,
    /// Display name.
    pub name: String,
    /// The organization's own plan (Agencies, Enterprise, ...), if any.
    pub plan_id: Option<String>,
    /// Creation time, Unix ms.
    #[serde(serialize_with = "time_ms")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    /// Its mail domains, sorted, each belonging to this organization alone.
    #[sqlx(skip)]
    pub domains: Vec<String>,
    /// The language of its members' mail when they chose none (BCP 47);
    /// `None`: the desk's.
    #[sqlx(default)]
    pub locale: Option<String>,
}

/// A customer's site.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct Site {
    /// Row id.
    pub id: i64,
    /// Display name.
    pub name: String,
    /// The site's plan.
    pub plan_id: String,
    /// The organization the site belongs to, if any.
    pub organization_id: Option<i64>,
    /// Creation time, Unix ms.
    #[serde(serialize_with = "time_ms")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
}

/// A person: a customer (with an organization role) or a support agent.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct User {
    /// Row id.
    pub id: i64,
    /// Lower-case email address.
    pub email: String,
    /// Display name.
    pub name: String,
    /// Role name; see [`Role`].
    pub role: String,
    /// Organization the user belongs to, if any.
    pub organization_id: Option<i64>,
    /// Creation time, Unix ms.
    #[serde(serialize_with = "time_ms")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    /// The IANA time zone notifications show this user's times in; `None`:
    /// the desk's zone.
    #[sqlx(default)]
    pub time_zone: Option<String>,
    /// When the user was erased (Unix ms); an erased user has no personal
    /// data left and the tokens issued to them no longer work.
    #[sqlx(default)]
    #[serde(serialize_with = "opt_time_ms")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub erased_at: Option<i64>,
    /// The language of their mail (BCP 47: `de`, `pt-BR`); `None`: their
    /// organization's, then the desk's.
    #[sqlx(default)]
    pub locale: Option<String>,
}

impl User {
    /// The user's role; an unknown stored role counts as Unprivileged.
    pub fn role(&self) -> Role {
        Role::parse(&self.role).unwrap_or(Role::Unprivileged)
    }

    /// Whether this user is one of our support agents.
    pub fn is_agent(&self) -> bool {
        self.role() == Role::Agent
    }
}

/// A chat or a ticket.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct Thread {
    /// Row id; chats are known by it.
    pub id: i64,
    /// `chat` or `ticket`.
    pub kind: String,
    /// The site the conversation is about.
    pub site_id: i64,
    /// The customer who started it.
    pub customer_id: i64,
    /// Tickets only: the number shown as `[Ticket #N]`.
    pub ticket_number: Option<i64>,
    /// Tickets only: the type chosen when opening it.
    pub ticket_type: Option<String>,
    /// Subject line (for chats, a summary of the first message).
    pub subject: String,
    /// Open or closed.
    pub status: crate::store::ThreadStatus,
    /// The agent handling it; set when an agent first writes, or by a rule.
    pub assigned_agent_id: Option<i64>,
    /// The queue a routing rule put it in.
    pub queue: Option<String>,
    /// `low`, `normal`, `high` or `urgent`.
    pub priority: String,
    /// Tags added by routing rules (stored as a JSON array, shown as a list).
    #[serde(serialize_with = "json_list")]
    #[schema(value_type = Vec<String>)]
    pub tags: String,
    /// Creation time, Unix ms.
    #[serde(serialize_with = "time_ms")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    /// Time of the last message, Unix ms.
    #[serde(serialize_with = "time_ms")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: i64,
    /// How many people copied in are active participants (besides its
    /// customer); their list is at `.../participants`.
    #[sqlx(default)]
    pub participants: i64,
}

impl Thread {
    /// Chat or ticket.
    pub fn kind(&self) -> ThreadKind {
        ThreadKind::parse(&self.kind).unwrap_or(ThreadKind::Chat)
    }

    /// "chat #N" or "ticket #N", as replies and pages name it.
    pub fn label(&self) -> String {
        match self.ticket_number {
            Some(number) => format!("ticket #{number}"),
            None => format!("chat #{}", self.id),
        }
    }
}

/// What opening a thread needs besides its first message.
#[derive(Debug, Clone)]
pub struct NewThread {
    /// Chat or ticket.
    pub kind: ThreadKind,
    /// The site it is about.
    pub site_id: i64,
    /// The customer opening it.
    pub customer_id: i64,
    /// Tickets: the ticket type.
    pub ticket_type: Option<String>,
    /// Subject line.
    pub subject: String,
}

/// Which notification about a message an outbox row asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    /// To the customer side: an agent wrote.
    AgentReplied,
    /// To the agents: a customer wrote.
    CustomerReplied,
    /// To the agents: a customer opened a ticket.
    TicketOpened,
    /// To the customer: your ticket was received, with the promised response time.
    TicketReceived,
}

impl NotificationKind {
    /// Stored name, also the template's base name.
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationKind::AgentReplied => "agent_replied",
            NotificationKind::CustomerReplied => "customer_replied",
            NotificationKind::TicketOpened => "ticket_opened",
            NotificationKind::TicketReceived => "ticket_received",
        }
    }

    /// Replies in quick succession are folded into one notification; the
    /// opening of a ticket is told at once.
    pub fn coalesces(self) -> bool {
        matches!(self, NotificationKind::AgentReplied | NotificationKind::CustomerReplied)
    }
}

/// A mail to queue that is not about one new message (a refusal notice, a
/// page, a transcript).
#[derive(Debug, Clone)]
pub struct NewOutbox {
    /// The template.
    pub kind: String,
    /// The thread it is about, if any.
    pub thread_id: Option<i64>,
    /// The user it goes to, if a user.
    pub recipient_id: Option<i64>,
    /// The address it goes to.
    pub to_address: String,
    /// Extra template data.
    pub context: serde_json::Value,
}

/// A message to store.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// The thread it belongs to.
    pub thread_id: i64,
    /// Who wrote it.
    pub author_id: i64,
    /// Whether the author is an agent (assigns an unassigned thread to them).
    pub author_is_agent: bool,
    /// The text as it appears in the history.
    pub body: String,
    /// Dashboard or email.
    pub source: Source,
    /// For mail: its Message-ID, which makes a second delivery a duplicate.
    pub rfc_message_id: Option<String>,
    /// Files that came with it.
    pub attachments: Vec<NewAttachment>,
    /// Notifications to queue, one per recipient.
    pub notify: Vec<(NotificationKind, i64)>,
    /// What the routing rules set on the thread.
    pub routing: Option<Routing>,
    /// Further mail about the thread (an on-call page).
    pub extra_mail: Vec<NewOutbox>,
    /// For mail: the message as it arrived.
    pub original: Option<KeptOriginal>,
    /// What comes with it besides the usual (rare: a message with any is
    /// never on the group commit's multi-row path).
    pub extras: Option<Box<MessageExtras>>,
}

/// What a message may bring besides itself: its being an internal note,
/// people copied into the conversation, a note of mailgate's own, and the
/// changes an agent's commands make.
#[derive(Debug, Clone, Default)]
pub struct MessageExtras {
    /// What the message is: a message, an agent's internal note, or (an
    /// agent's commands with no text) a note of mailgate's own recording them.
    pub kind: super::MessageKind,
    /// People to add to the conversation, or to leave pending.
    pub participants: Vec<super::NewParticipant>,
    /// Notes of mailgate's own to write into the conversation (for agents).
    pub system_notes: Vec<String>,
    /// Close (`Closed`) or reopen (`Open`) the conversation.
    pub status: Option<super::ThreadStatus>,
    /// An agent's commands, for the audit log: (who, the lines as written).
    pub commands: Option<(String, Vec<String>)>,
    /// The limits `participants` were judged against, checked again in the
    /// transaction that writes them.
    pub participant_limits: Option<ParticipantLimits>,
}

/// The desk's limits on people copied into conversations, as the writing
/// transaction checks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParticipantLimits {
    /// Most people in one conversation, its customer included.
    pub per_conversation: i64,
    /// Most outsiders copied into one organization's conversations since `since`.
    pub outsiders_per_day: i64,
    /// The conversation's site (outsiders are counted per site without an organization).
    pub site_id: i64,
    /// The start of the day counted (Unix ms).
    pub since: i64,
}

/// The original a message was read from: to store with it, or stored
/// already (a held message released into its thread).
#[derive(Debug, Clone)]
pub enum KeptOriginal {
    /// Store these bytes with the message.
    New(std::sync::Arc<super::Original>),
    /// Already stored under this key.
    Stored(String),
}

impl KeptOriginal {
    /// The key of the original the message refers to.
    pub fn key(&self) -> &str {
        match self {
            KeptOriginal::New(original) => &original.key,
            KeptOriginal::Stored(key) => key,
        }
    }

    /// The bytes still to store, if any.
    pub fn to_store(&self) -> Option<&super::Original> {
        match self {
            KeptOriginal::New(original) => Some(original),
            KeptOriginal::Stored(_) => None,
        }
    }
}

/// What routing rules set on a thread.
#[derive(Debug, Clone, Default)]
pub struct Routing {
    /// Queue, when set.
    pub queue: Option<String>,
    /// Priority, when set.
    pub priority: Option<String>,
    /// The thread's tags after the rules (replaces the stored list).
    pub tags: Vec<String>,
    /// Agent to assign, when set.
    pub assign: Option<i64>,
}

/// An attachment to store.
#[derive(Debug, Clone)]
pub struct NewAttachment {
    /// Sanitized file name.
    pub filename: String,
    /// MIME type, e.g. `image/png`.
    pub content_type: String,
    /// The decoded bytes (shared: a message's copies for deciding and for
    /// storing are one).
    pub content: std::sync::Arc<Vec<u8>>,
    /// SHA-256 of `content`, lower-case hex: where the bytes are stored.
    pub sha256: String,
    /// Where its base64 body lies in the message as it arrived (start, end),
    /// for a top-level base64 part: the kept original can then leave these
    /// bytes out and rebuild them from the stored content.
    pub base64_body: Option<(usize, usize)>,
}

impl NewAttachment {
    /// An attachment of `content`, hashed.
    pub fn new(filename: String, content_type: String, content: Vec<u8>) -> Self {
        use sha2::Digest;
        let sha256 = super::hex(&sha2::Sha256::digest(&content));
        Self { filename, content_type, content: std::sync::Arc::new(content), sha256, base64_body: None }
    }
}

/// Outcome of storing a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// Stored now, with this id.
    New(i64),
    /// Already stored under this id (same Message-ID, same thread).
    Duplicate(i64),
}

impl Inserted {
    /// The message's id either way.
    pub fn id(self) -> i64 {
        match self {
            Inserted::New(id) | Inserted::Duplicate(id) => id,
        }
    }
}

/// A stored message with its author and attachments.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct StoredMessage {
    /// Row id.
    pub id: i64,
    /// Its thread.
    pub thread_id: i64,
    /// Its author's user id.
    pub author_id: i64,
    /// Its author's name.
    pub author_name: String,
    /// Its author's email.
    pub author_email: String,
    /// Its author's role.
    pub author_role: String,
    /// The text.
    pub body: String,
    /// `dashboard` or `email`.
    pub source: String,
    /// Message-ID of emailed messages.
    pub rfc_message_id: Option<String>,
    /// Unix ms.
    #[serde(serialize_with = "time_ms")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    /// SHA-256 of the mail it was read from, for emailed messages.
    #[serde(skip)]
    pub original: Option<String>,
    /// Attachments, filled in after the query.
    #[sqlx(skip)]
    pub attachments: Vec<Attachment>,
    /// A message, an agent's internal note, or a note of mailgate's own.
    pub kind: super::MessageKind,
}

impl StoredMessage {
    /// Whether the customer side may see it (internal and system notes are for agents).
    pub fn is_public(&self) -> bool {
        self.kind == super::MessageKind::Message
    }
}

/// A stored attachment's metadata.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct Attachment {
    /// Row id; the download path is `/api/v1/attachments/{id}`.
    pub id: i64,
    /// The message it came with.
    pub message_id: i64,
    /// Sanitized file name.
    pub filename: String,
    /// MIME type.
    pub content_type: String,
    /// Size in bytes.
    pub size: i64,
    /// SHA-256 of the content: where the bytes are stored.
    pub sha256: String,
}

/// One SMTP transaction's outcome (a row of `inbound_log`).
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct InboundLogEntry {
    /// Filled in by the database.
    #[sqlx(default)]
    pub id: i64,
    /// Unix ms.
    #[serde(serialize_with = "time_ms")]
    #[schema(value_type = String, format = DateTime)]
    pub received_at: i64,
    /// Client IP and port.
    pub peer: String,
    /// What the client said in HELO/EHLO.
    pub helo: Option<String>,
    /// Envelope sender; empty for bounces.
    pub mail_from: Option<String>,
    /// Envelope recipients, comma separated.
    pub rcpt_to: String,
    /// The message's Message-ID, if DATA got that far.
    pub message_id: Option<String>,
    /// `accepted`, `duplicate`, `dropped` or `rejected`.
    pub decision: String,
    /// Why, in words.
    pub reason: String,
    /// The SMTP reply the client got.
    pub smtp_reply: String,
    /// The thread the message went to, if any.
    pub thread_id: Option<i64>,
    /// The stored message, if any.
    pub stored_message: Option<i64>,
    /// The routing rules that matched, comma separated.
    pub rules: String,
    /// SPF, DKIM and DMARC results.
    pub auth: String,
    /// SHA-256 of the message as it arrived, when it was kept
    /// (`GET /api/v1/inbound-log/{id}/raw`).
    pub original: Option<String>,
    /// The message's Subject, when DATA got that far.
    #[sqlx(default)]
    pub subject: Option<String>,
    /// The held item this entry is about: the mail held, or an admin's
    /// action on it.
    #[sqlx(default)]
    pub held_id: Option<i64>,
    /// The outbox item of the refusal notice sent to the sender, if one was.
    #[sqlx(default)]
    pub notice_id: Option<i64>,
    /// The header fields of refused mail (not its body), so that an admin
    /// can tell a sender why; at most 16 KiB.
    #[sqlx(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<String>,
}

/// A message held for an admin (a row of `held_messages`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct HeldItem {
    /// Row id.
    pub id: i64,
    /// Unix ms.
    #[serde(serialize_with = "time_ms")]
    #[schema(value_type = String, format = DateTime)]
    pub received_at: i64,
    /// Client IP and port.
    pub peer: String,
    /// What the client said in HELO/EHLO.
    pub helo: Option<String>,
    /// Envelope sender.
    pub mail_from: String,
    /// Envelope recipients, comma separated.
    pub rcpt_to: String,
    /// The From address.
    pub from_address: Option<String>,
    /// The Subject.
    pub subject: Option<String>,
    /// The Message-ID.
    pub message_id: Option<String>,
    /// Why it is held, as a code: `dmarc_fail`, `not_allowed`,
    /// `reading_failed`, `attachment_too_large`.
    pub reason_code: String,
    /// Why it is held, in words.
    pub reason: String,
    /// SPF, DKIM and DMARC results at receipt.
    pub auth: String,
    /// The thread it pointed at, when one was found.
    pub thread_id: Option<i64>,
    /// Held, released, discarded or noticed (the sender was sent the refusal notice).
    pub status: crate::store::HeldStatus,
    /// Who acted on it.
    pub acted_by: Option<String>,
    /// When, Unix ms.
    #[serde(serialize_with = "opt_time_ms")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub acted_at: Option<i64>,
    /// The message it became when released.
    pub released_message: Option<i64>,
    /// Size of the message as it arrived, in bytes.
    pub size: i64,
    /// SHA-256 of the original (older items keep their bytes in the row).
    #[serde(skip)]
    pub original: Option<String>,
}

impl HeldItem {
    /// The item as the inbound log recorded its receipt (for `explain`).
    pub fn as_received(&self) -> InboundLogEntry {
        InboundLogEntry {
            received_at: self.received_at,
            peer: self.peer.clone(),
            helo: self.helo.clone(),
            mail_from: Some(self.mail_from.clone()),
            rcpt_to: self.rcpt_to.clone(),
            message_id: self.message_id.clone(),
            decision: "held".to_owned(),
            reason: self.reason.clone(),
            thread_id: self.thread_id,
            auth: self.auth.clone(),
            original: self.original.clone(),
            ..InboundLogEntry::default()
        }
    }
}

/// What to record about a message being held.
#[derive(Debug, Clone, Default)]
pub struct NewHeld {
    /// Reason code (see [`HeldItem::reason_code`]).
    pub reason_code: String,
    /// Reason in words.
    pub reason: String,
    /// The thread it pointed at.
    pub thread_id: Option<i64>,
    /// The From address.
    pub from_address: Option<String>,
    /// The Subject.
    pub subject: Option<String>,
}

/// A mail in the outbox.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct OutboxItem {
    /// Row id; also names the `.eml` file and the VERP address.
    pub id: i64,
    /// The template.
    pub kind: String,
    /// The thread it is about.
    pub thread_id: Option<i64>,
    /// The message that caused it.
    pub message_id: Option<i64>,
    /// The user it goes to.
    pub recipient_id: Option<i64>,
    /// The address it goes to.
    pub to_address: String,
    /// Extra template data (JSON).
    pub context: String,
    /// Where its delivery stands.
    pub status: crate::store::OutboxStatus,
    /// Attempts made so far.
    pub attempts: i64,
    /// When it is due, Unix ms.
    #[serde(serialize_with = "time_ms")]
    #[schema(value_type = String, format = DateTime)]
    pub next_attempt_at: i64,
    /// A worker's lease while sending, Unix ms.
    pub claimed_until: Option<i64>,
    /// Retries stop after this, Unix ms.
    #[serde(serialize_with = "time_ms")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: i64,
    /// The last failure, in words.
    pub last_error: Option<String>,
    /// The Message-ID it was sent with.
    pub rfc_message_id: Option<String>,
    /// Unix ms.
    #[serde(serialize_with = "time_ms")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    /// Unix ms.
    #[serde(serialize_with = "opt_time_ms")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub sent_at: Option<i64>,
    /// What it is about: its thread's subject, or the subject of the mail a
    /// notice answers (filled in lists; never read from the row, so that the
    /// outbound worker's reads stay as they were).
    #[sqlx(skip)]
    pub subject: Option<String>,
}

impl OutboxItem {
    /// Fills [`OutboxItem::subject`] from the context when the thread gave none.
    pub(crate) fn with_subject(mut self) -> Self {
        if self.subject.is_none() {
            self.subject = serde_json::from_str::<serde_json::Value>(&self.context)
                .ok()
                .and_then(|c| c.get("subject").and_then(|s| s.as_str()).map(str::to_owned))
                .filter(|s| !s.is_empty());
        }
        self
    }
}

/// Serializes Unix milliseconds as an RFC 3339 time.
pub(super) fn time_ms<S: serde::Serializer>(ms: &i64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&rfc3339(*ms))
}

fn opt_time_ms<S: serde::Serializer>(ms: &Option<i64>, serializer: S) -> Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => serializer.serialize_str(&rfc3339(*ms)),
        None => serializer.serialize_none(),
    }
}

/// Unix milliseconds as an RFC 3339 UTC time with milliseconds.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A delivery failure report about mail we sent (a row of `bounces`).
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct Bounce {
    /// Filled in by the database.
    #[sqlx(default)]
    pub id: i64,
    /// Unix ms.
    #[serde(serialize_with = "time_ms")]
    #[schema(value_type = String, format = DateTime)]
    pub received_at: i64,
    /// The notification that bounced, when the bounce says which.
    pub outbox_id: Option<i64>,
    /// The address that failed.
    pub recipient: Option<String>,
    /// Enhanced status code.
    pub status: Option<String>,
    /// `hard` or `soft`.
    pub severity: Option<String>,
    /// The remote server's words.
    pub diagnostic: Option<String>,
    /// Message-ID of the returned message.
    pub original_message_id: Option<String>,
    /// Whether it counts toward suppressing its address: a hard bounce tied
    /// to a notification we sent to that address, naming it.
    pub counted: bool,
    /// Unix ms when an operator lifted the suppression it was part of.
    #[serde(serialize_with = "opt_time_ms")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub lifted_at: Option<i64>,
    /// Who lifted it.
    pub lifted_by: Option<String>,
}

/// An address mail has stopped to: its counted hard bounces in the window.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Suppression {
    /// The suppressed address.
    pub address: String,
    /// Counted hard bounces within the window.
    pub bounces: i64,
    /// Unix ms of the first and the last of them.
    #[serde(serialize_with = "time_ms")]
    #[schema(value_type = String, format = DateTime)]
    pub first_at: i64,
    /// Unix ms of the last one.
    #[serde(serialize_with = "time_ms")]
    #[schema(value_type = String, format = DateTime)]
    pub last_at: i64,
    /// When the suppression ends by itself (Unix ms; `None`: never).
    #[serde(serialize_with = "opt_time_ms")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<i64>,
}

/// Serializes a stored JSON array as the array itself.
fn json_list<S: serde::Serializer>(json: &str, serializer: S) -> Result<S::Ok, S::Error> {
    let list: Vec<String> = serde_json::from_str(json).unwrap_or_default();
    serde::Serialize::serialize(&list, serializer)
}

/// One entry of the audit log: a change to the directory that must stay on
/// record (an erasure), with who made it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct AuditEntry {
    /// Row id.
    pub id: i64,
    /// Unix ms.
    #[serde(serialize_with = "time_ms")]
    #[schema(value_type = String, format = DateTime)]
    pub at: i64,
    /// Who: the `by` of the request, or `api`.
    pub actor: String,
    /// What, e.g. `user.erased`.
    pub action: String,
    /// On what, e.g. `user 7`.
    pub subject: String,
    /// Details, JSON.
    pub detail: String,
}
