//! What happened to a recipient or a message: the pipeline's outcomes, as
//! plain values. The pipeline produces them; the SMTP session and the
//! inbound log turn them into answers (`domain::reply`), so that neither
//! depends on the other.

use super::{ReplyToken, TokenError};

/// What an envelope recipient turned out to be at RCPT time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientTarget {
    /// `reply+TOKEN@domain` with a verified token of an existing thread.
    Reply {
        /// The token text.
        token: String,
        /// What it names.
        parsed: ReplyToken,
    },
    /// `support@domain`: mail that continues nothing here would start a chat.
    Support,
    /// `postmaster@` or `abuse@`: accepted and recorded, as RFC 5321 asks.
    Postmaster,
    /// One of the rules file's `ticket_addresses` (e.g. `downtime@`): mail
    /// that a rule may turn into a ticket.
    TicketAddress(String),
    /// `unsubscribe+TOKEN@`: a List-Unsubscribe mailto link was used.
    Unsubscribe {
        /// Who opts out.
        user_id: i64,
        /// Of which notification kind.
        kind: &'static str,
    },
    /// `bounces@` or `bounces+TOKEN@`: where delivery reports about our
    /// notifications come back (TOKEN names the outbox row under a MAC).
    Bounces {
        /// The outbox id the address names, when its token verifies; `None`
        /// for `bounces@` and for a token that does not (an address from
        /// before tokens, or a forged one: such a report is recorded but
        /// never counts against an address).
        outbox_id: Option<i64>,
    },
}

/// Why a recipient was refused at RCPT time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptRefusal {
    /// Not one of our domains.
    RelayDenied,
    /// Our domain, but no such address.
    UnknownMailbox,
    /// A reply address whose token does not verify.
    BadToken(TokenError),
    /// A valid token of a thread that does not exist (any more).
    UnknownThread,
    /// A valid token issued to a person who was erased since.
    Revoked,
    /// The database could not be asked; try later.
    Unavailable,
}

impl RcptRefusal {
    /// The refusal's name, for metrics: `relay_denied`, `unknown_mailbox`,
    /// `expired_token`, `retired_key`, `bad_token`, `unknown_thread`, `revoked`, `unavailable`.
    pub fn label(&self) -> &'static str {
        match self {
            RcptRefusal::RelayDenied => "relay_denied",
            RcptRefusal::UnknownMailbox => "unknown_mailbox",
            RcptRefusal::BadToken(TokenError::Expired) => "expired_token",
            RcptRefusal::BadToken(TokenError::Retired) => "retired_key",
            RcptRefusal::BadToken(_) => "bad_token",
            RcptRefusal::UnknownThread => "unknown_thread",
            RcptRefusal::Revoked => "revoked",
            RcptRefusal::Unavailable => "unavailable",
        }
    }
}

impl std::fmt::Display for RcptRefusal {
    /// The refusal in an admin's words (the inbound log, `explain`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RcptRefusal::RelayDenied => "not an address of this desk's domain (relaying is refused)",
            RcptRefusal::UnknownMailbox => "no such mailbox",
            RcptRefusal::BadToken(TokenError::Expired) => "a reply address that has expired",
            RcptRefusal::BadToken(TokenError::Malformed) => "a reply address whose token is damaged",
            RcptRefusal::BadToken(TokenError::UnknownKey) => {
                "a reply address signed with a key this desk does not hold (forged, or from another desk)"
            }
            RcptRefusal::BadToken(TokenError::Retired) => {
                "a reply address signed with a key the desk has retired (`mailgate keys retire`)"
            }
            RcptRefusal::BadToken(TokenError::BadSignature) => {
                "a reply address whose signature does not verify (forged or altered)"
            }
            RcptRefusal::UnknownThread => "a reply address of a conversation that no longer exists",
            RcptRefusal::Revoked => "a reply address issued to someone erased from the directory",
            RcptRefusal::Unavailable => "the database could not be asked (answered with a temporary failure)",
        })
    }
}

/// Why a message was refused after DATA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// It would start a new chat: chats start only in the Dashboard. For a
    /// customer whose plan pages on-call, the address that opens an
    /// emergency ticket (`downtime@DOMAIN`), named in the answer and notice.
    NoNewChat {
        /// The emergency route, for customers with on-call only.
        emergency: Option<String>,
    },
    /// The sender may not write in the thread it points to.
    NotAllowed(String),
    /// It points at a thread that does not exist.
    UnknownThread,
    /// A reply with no new text and no attachment.
    EmptyReply,
    /// The thread is closed.
    ThreadClosed,
    /// The From domain failed DMARC.
    DmarcFailed(String),
    /// It names a conversation but has no single author (several `From:`
    /// fields or mailboxes, a group, none): why.
    AmbiguousAuthor(String),
    /// It names a conversation only by a signal that anyone could copy (a
    /// subject tag, a Message-ID), or opens a ticket, and its author's
    /// domain is not authenticated: the author.
    Unauthenticated(String),
    /// More MIME parts, nesting or header fields than the limits allow.
    TooComplex(String),
    /// A routing rule refused it with this answer.
    Rule {
        /// 4xx or 5xx.
        code: u16,
        /// Enhanced status code.
        status: String,
        /// The answer's text.
        text: String,
        /// The refusal notice to send, if any.
        notice: Option<String>,
        /// For a new chat refused by a rule, to a customer whose plan pages
        /// on-call: the address that opens an emergency ticket.
        emergency: Option<String>,
    },
    /// Not an email at all.
    Unparseable,
}

/// Why a message was deferred (451): the answer tells the sender which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeferCause {
    /// The loop breaker: too many messages from one sender or in one thread
    /// within the hour.
    LoopBreaker,
    /// The author's domain could not be checked: DNS did not answer for
    /// its DMARC (or SPF) record.
    Dns,
}

/// The outcome of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Stored (or found already stored) in a thread.
    Accepted {
        /// The thread.
        thread_id: i64,
        /// "chat #N" or "ticket #N", for the reply text.
        thread_label: String,
        /// The stored message.
        message_id: i64,
        /// It had been stored before (same Message-ID).
        duplicate: bool,
    },
    /// Recorded and not posted (auto-reply, bounce, postmaster mail).
    Dropped {
        /// Why.
        reason: String,
    },
    /// Kept for an admin to release, discard or answer (250). The SMTP
    /// answer says nothing about why or about the thread: the sender may be
    /// a stranger.
    Held {
        /// Why, for the log and the held queue (never for the sender).
        reason: String,
    },
    /// Refused with a permanent error.
    Rejected(Refusal),
    /// Not now: the sender should retry later.
    Deferred {
        /// Why, for the log.
        reason: String,
        /// What tripped, for the answer.
        cause: DeferCause,
    },
    /// Could not be stored now; the sender should retry.
    TempFail {
        /// The error, for the log.
        reason: String,
        /// The database had fallen behind (`451 4.3.2`), rather than failed.
        busy: bool,
    },
}

impl Disposition {
    /// The decision's name, as the inbound log, the metrics and the API
    /// write it: `accepted`, `duplicate`, `dropped`, `held`, `rejected`,
    /// `deferred` or `tempfail`.
    pub fn label(&self) -> &'static str {
        match self {
            Disposition::Accepted { duplicate: true, .. } => "duplicate",
            Disposition::Accepted { .. } => "accepted",
            Disposition::Dropped { .. } => "dropped",
            Disposition::Held { .. } => "held",
            Disposition::Rejected(_) => "rejected",
            Disposition::Deferred { .. } => "deferred",
            Disposition::TempFail { busy: true, .. } => "busy",
            Disposition::TempFail { .. } => "tempfail",
        }
    }

    /// Why, in words, when the decision was not to post it.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Disposition::Dropped { reason }
            | Disposition::Held { reason }
            | Disposition::Deferred { reason, .. }
            | Disposition::TempFail { reason, .. } => Some(reason),
            Disposition::Accepted { .. } | Disposition::Rejected(_) => None,
        }
    }
}
