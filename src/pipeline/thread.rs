//! Step 5: which chat or ticket does this message continue?
//!
//! Signals, in the order we trust them:
//! 1. a reply token in an envelope recipient (`reply+TOKEN@domain`), checked at RCPT;
//! 2. a token in one of our Message-IDs (`<TOKEN.N@domain>`) found in
//!    In-Reply-To, then References;
//! 3. the reference marker `[ref:TOKEN]` every notification carries in its
//!    body, for mail services that rewrite Reply-To and drop Message-IDs;
//! 4. a `[Ticket #N]` tag in the subject.
//!
//! Tokens are verified here; whether the sender may use what was found is
//! the next step's question (`authorize`). Pure apart from the signer.

use super::parse::ParsedMail;
use crate::domain::{ReplyToken, TokenSigner};
use regex::Regex;
use serde::Serialize;
use std::sync::LazyLock;

/// Where a thread reference was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// The envelope recipient's reply token.
    Recipient,
    /// A Message-ID of ours in In-Reply-To.
    InReplyTo,
    /// A Message-ID of ours in References.
    References,
    /// The `[ref:TOKEN]` marker in the body.
    BodyMarker,
    /// A `[Ticket #N]` tag in the subject.
    SubjectTag,
}

impl Via {
    /// Where it was found, in words (`explain`).
    pub fn label(self) -> &'static str {
        match self {
            Via::Recipient => "recipient",
            Via::InReplyTo => "In-Reply-To",
            Via::References => "References",
            Via::BodyMarker => "body marker",
            Via::SubjectTag => "subject tag",
        }
    }
}

/// A reference to a thread found in a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ThreadRef {
    /// A verified token: names a thread and the recipient it was issued to.
    Token {
        /// Where it was found.
        via: Via,
        /// The token text.
        token: String,
        /// The thread it names.
        thread_id: i64,
        /// The user it was issued to.
        recipient_id: i64,
    },
    /// A ticket number from the subject: names a ticket, proves nothing.
    TicketNumber {
        /// Always [`Via::SubjectTag`].
        via: Via,
        /// The N of `[Ticket #N]`.
        number: i64,
    },
}

impl ThreadRef {
    /// Where it was found.
    pub fn via(&self) -> Via {
        match self {
            ThreadRef::Token { via, .. } | ThreadRef::TicketNumber { via, .. } => *via,
        }
    }
}

static BODY_MARKER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\[ref:([A-Za-z2-7]{16,64})\]").expect("valid marker regex"));
static TICKET_TAG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\[ticket\s*#\s*(\d{1,12})\]").expect("valid ticket regex"));

/// The body marker text for a token, as notifications print it.
pub fn body_marker(token: &str) -> String {
    format!("[ref:{token}]")
}

/// A fresh Message-ID (without brackets) for a notification: random, so
/// that it tells a reader nothing (no reply token, no sequence number); a
/// reply's In-Reply-To or a bounce's returned copy is tied to the
/// notification by looking the ID up in the outbox.
pub fn notification_message_id(domain: &str) -> String {
    format!("m.{}@{domain}", crate::domain::token::random_hex(16))
}

/// Message-IDs at `domain` in In-Reply-To, then References (newest
/// first), at most `limit` of them: the notifications a reply may answer.
pub fn our_message_ids<'a>(mail: &'a ParsedMail, domain: &'a str, limit: usize) -> Vec<(Via, &'a str)> {
    mail.in_reply_to
        .iter()
        .rev()
        .map(|id| (Via::InReplyTo, id.as_str()))
        .chain(mail.references.iter().rev().map(|id| (Via::References, id.as_str())))
        .filter(|(_, id)| id.rsplit_once('@').is_some_and(|(_, d)| d.eq_ignore_ascii_case(domain)))
        .take(limit)
        .collect()
}

/// Token-shaped strings in a message, most trusted first: our Message-IDs
/// in In-Reply-To, then References (newest first), then body markers. With a
/// `domain`, only Message-IDs of that domain count. Nothing is verified here.
pub fn token_candidates<'a>(
    mail: &'a ParsedMail,
    domain: Option<&'a str>,
) -> impl Iterator<Item = (Via, &'a str)> + 'a {
    let ids = mail
        .in_reply_to
        .iter()
        .rev()
        .map(|id| (Via::InReplyTo, id))
        .chain(mail.references.iter().rev().map(|id| (Via::References, id)))
        .filter_map(move |(via, id)| {
            let (local, id_domain) = id.rsplit_once('@')?;
            if domain.is_some_and(|d| !id_domain.eq_ignore_ascii_case(d)) {
                return None;
            }
            let token = local.split('.').next()?;
            (token.len() >= 16 && token.bytes().all(|b| b.is_ascii_alphanumeric())).then_some((via, token))
        });
    let markers = [mail.text_body.as_deref(), mail.html_body.as_deref()].into_iter().flatten().flat_map(|body| {
        BODY_MARKER.captures_iter(body).filter_map(|c| c.get(1)).map(|m| (Via::BodyMarker, m.as_str()))
    });
    ids.chain(markers)
}

/// The `[Ticket #N]` number in a subject, if any.
pub fn subject_ticket_number(mail: &ParsedMail) -> Option<i64> {
    TICKET_TAG.captures(mail.subject.as_deref()?)?[1].parse().ok()
}

/// Finds the most trusted verified thread reference in a message, given the
/// tokens already verified from the envelope recipients.
pub fn find_thread(
    recipient_tokens: &[(String, ReplyToken)],
    mail: &ParsedMail,
    signer: &TokenSigner,
    domain: &str,
) -> Option<ThreadRef> {
    let from_token = |via, token: &str, parsed: ReplyToken| ThreadRef::Token {
        via,
        token: token.to_owned(),
        thread_id: parsed.thread_id,
        recipient_id: parsed.recipient_id,
    };
    if let Some((token, parsed)) = recipient_tokens.first() {
        return Some(from_token(Via::Recipient, token, *parsed));
    }
    for (via, token) in token_candidates(mail, Some(domain)) {
        if let Ok(parsed) = signer.verify(token) {
            return Some(from_token(via, token, parsed));
        }
    }
    let number = subject_ticket_number(mail)?;
    Some(ThreadRef::TicketNumber { via: Via::SubjectTag, number })
}

/// One threading signal looked at, and what it gave (for `explain`).
#[derive(Debug, Clone, Serialize)]
pub struct Signal {
    /// Where it was found.
    pub via: Via,
    /// The token or tag found.
    pub value: String,
    /// What it gave: the thread and the user a token names, or why it gave nothing.
    pub verdict: String,
}

/// Every threading signal in a message, in the order of trust, each with
/// what it gave; the first one that names a thread is the one used.
pub fn signals(
    recipient_tokens: &[(String, ReplyToken)],
    mail: &ParsedMail,
    signer: &TokenSigner,
    domain: &str,
) -> Vec<Signal> {
    let names =
        |parsed: ReplyToken| format!("verified: thread {}, issued to user {}", parsed.thread_id, parsed.recipient_id);
    let mut found: Vec<Signal> = recipient_tokens
        .iter()
        .map(|(token, parsed)| Signal { via: Via::Recipient, value: token.clone(), verdict: names(*parsed) })
        .collect();
    for (via, token) in token_candidates(mail, Some(domain)) {
        let verdict = match signer.verify(token) {
            Ok(parsed) => names(parsed),
            Err(error) => error.to_string(),
        };
        found.push(Signal { via, value: token.to_owned(), verdict });
    }
    if let Some(number) = subject_ticket_number(mail) {
        let verdict = format!("ticket #{number} (points at a ticket; lets nobody in by itself)");
        found.push(Signal { via: Via::SubjectTag, value: format!("[Ticket #{number}]"), verdict });
    }
    found
}

/// Extracts the token from a reply address local part (`reply+TOKEN`).
pub fn token_from_local_part(local: &str) -> Option<&str> {
    let (prefix, token) = local.split_once('+')?;
    prefix.eq_ignore_ascii_case("reply").then_some(token)
}
