//! What happens to one inbound message, step by step:
//! parse → classify → thread → authorize → extract → store (and queue
//! notifications). The SMTP session calls [`Pipeline::add_recipient`] at
//! RCPT time and [`Pipeline::ingest`] at the end of DATA, and answers with
//! the [`Disposition`]. No sockets and no SMTP syntax here.
//!
//! Business outcomes (a refused sender, a dropped auto-reply) are
//! dispositions, not errors. Only a storage failure is an error, and it
//! becomes a temporary failure so that the sending server retries.

pub mod authenticate;
pub mod authorize;
pub mod bounce;
pub mod classify;
pub mod explain;
pub mod extract;
pub mod held;
pub mod parse;
pub mod thread;
pub mod tnef;

use crate::domain::{EmailAddress, ReplyToken, Source, TokenError, TokenSigner};
use crate::rules;
use crate::smtp::reply;
use crate::store::{
    Bounce, InboundLogEntry, Inserted, KeptOriginal, NewHeld, NewMessage, NewOutbox, NewThread, NotificationKind,
    Original, RecentEmail, Routing, Store, StoreError, Thread, now_ms,
};
use authorize::Authorization;
use classify::{Classification, MailKind};
use serde::Serialize;
use sha2::{Digest, Sha256};
use thread::{ThreadRef, Via};

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
    /// The database could not be asked; try later.
    Unavailable,
}

/// Why a message was refused after DATA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// It would start a new chat: chats start only in the Dashboard.
    NoNewChat,
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
    },
    /// Not an email at all.
    Unparseable,
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
    /// Not now: a loop breaker tripped; the sender should retry later.
    Deferred {
        /// Why.
        reason: String,
    },
    /// Could not be stored now; the sender should retry.
    TempFail {
        /// The error, for the log.
        reason: String,
    },
}

/// The loop breaker counts a sender's (and a thread's) emailed messages in
/// windows of this length (the store keeps the counts).
const LOOP_WINDOW_MS: i64 = crate::store::EMAIL_WINDOW_MS;

/// The SMTP envelope of one transaction.
#[derive(Debug, Clone, Default)]
pub struct Envelope {
    /// Client address.
    pub peer: String,
    /// HELO/EHLO name.
    pub helo: Option<String>,
    /// Client IP, for SPF.
    pub peer_ip: Option<std::net::IpAddr>,
    /// MAIL FROM address; empty for the null reverse path.
    pub mail_from: String,
    /// Accepted recipients, as given, with what they are.
    pub recipients: Vec<(String, RecipientTarget)>,
    /// Refused recipients, as given, with why.
    pub refused: Vec<(String, RcptRefusal)>,
    /// The threads that reply tokens among the recipients named, with the
    /// loop breaker's counts for the token's recipient, as read when those
    /// recipients were accepted (moments before the message): deciding uses
    /// them instead of reading them again.
    pub threads: Vec<(Thread, RecentEmail)>,
}

/// A token found in a message and where.
#[derive(Debug, Clone, Serialize)]
pub struct FoundToken {
    /// Where it was found.
    pub via: Via,
    /// The token text.
    pub token: String,
    /// Whether its signature was checked and holds (needs the server's secret).
    pub verified: bool,
}

/// What the pipeline reads in one message, before any decision.
#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    /// From address.
    pub from: Option<String>,
    /// To and Cc addresses.
    pub to: Vec<String>,
    /// Subject.
    pub subject: Option<String>,
    /// Message-ID.
    pub message_id: Option<String>,
    /// Human, auto-reply or bounce.
    pub kind: MailKind,
    /// The signal that decided `kind`.
    pub kind_reason: String,
    /// The reply token found, and where.
    pub thread_token: Option<FoundToken>,
    /// A `[Ticket #N]` tag in the subject.
    pub subject_ticket: Option<i64>,
    /// The new text.
    pub reply_text: String,
    /// Attachments that would be stored.
    pub attachments: Vec<AttachmentInfo>,
    /// Attachments too large to store (the message is held for an admin).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub oversized: Vec<AttachmentInfo>,
    /// For bounces: what failed, and for which of our messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bounce: Option<bounce::BounceReport>,
    #[serde(skip)]
    parsed: parse::ParsedMail,
    /// The attachments to store, chosen and named once.
    #[serde(skip)]
    kept_attachments: Vec<crate::store::NewAttachment>,
}

/// An attachment as `inspect` and the API list it.
#[derive(Debug, Clone, Serialize)]
pub struct AttachmentInfo {
    /// Sanitized name.
    pub filename: String,
    /// MIME type.
    pub content_type: String,
    /// Size in bytes.
    pub size: usize,
}

/// Reads a message without any secret or database: for `inspect`.
pub fn analyze(mail_from: &str, recipients: &[String], raw: &[u8]) -> Option<Analysis> {
    let parsed = parse::parse(raw)?;
    let thread_token = recipients
        .iter()
        .filter_map(|r| thread::token_from_local_part(r.rsplit_once('@')?.0))
        .map(|t| (Via::Recipient, t))
        .chain(thread::token_candidates(&parsed, None))
        .next()
        .map(|(via, token)| FoundToken { via, token: token.to_owned(), verified: false });
    Some(build_analysis(mail_from, parsed, thread_token))
}

fn build_analysis(mail_from: &str, mut parsed: parse::ParsedMail, thread_token: Option<FoundToken>) -> Analysis {
    let Classification { kind, reason } = classify::classify(mail_from, &parsed);
    let oversized = extract::oversized_attachments(&parsed)
        .map(|(i, a)| AttachmentInfo {
            filename: extract::sanitize_filename(a, i),
            content_type: a.content_type.clone(),
            size: a.content.len(),
        })
        .collect();
    let kept_attachments = extract::take_attachments(&mut parsed);
    Analysis {
        bounce: (kind == MailKind::Bounce).then(|| bounce::read(&parsed)),
        from: parsed.from.clone(),
        to: parsed.to.clone(),
        subject: parsed.subject.clone(),
        message_id: parsed.message_id.clone(),
        kind,
        kind_reason: reason,
        thread_token,
        subject_ticket: thread::subject_ticket_number(&parsed),
        reply_text: extract::reply_text(&parsed),
        attachments: kept_attachments
            .iter()
            .map(|a| AttachmentInfo {
                filename: a.filename.clone(),
                content_type: a.content_type.clone(),
                size: a.content.len(),
            })
            .collect(),
        oversized,
        parsed,
        kept_attachments,
    }
}

/// The inbound pipeline of one mailgate instance; cheap to clone.
#[derive(Clone, Debug)]
pub struct Pipeline {
    store: Store,
    signer: TokenSigner,
    domain: String,
    /// The routing rules in force (swapped on reload).
    rules: std::sync::Arc<rules::LiveRules>,
    /// Where on-call pages go.
    on_call_address: String,
    /// SPF, DKIM and DMARC checks; `None` when turned off.
    auth: Option<std::sync::Arc<authenticate::SenderAuth>>,
    /// How complex a message may be.
    mime_limits: MimeLimits,
    /// Loop breaker: emailed messages per sender, and per thread, per hour.
    loop_limit: i64,
    /// Keep mail from senders who may not write in the thread for an agent
    /// (250) instead of refusing it.
    hold_not_allowed: bool,
}

/// How complex a message may be before it is refused.
#[derive(Debug, Clone, Copy)]
pub struct MimeLimits {
    /// MIME parts in one message.
    pub max_parts: usize,
    /// Nesting depth of multiparts.
    pub max_depth: usize,
    /// Header fields at the top level.
    pub max_headers: usize,
    /// Bytes of the top-level header section.
    pub max_header_bytes: usize,
}

impl Default for MimeLimits {
    fn default() -> Self {
        Self { max_parts: 500, max_depth: 20, max_headers: 500, max_header_bytes: 256 * 1024 }
    }
}

impl MimeLimits {
    /// Why `mail` is too complex, if it is.
    fn check(&self, mail: &parse::ParsedMail) -> Option<String> {
        if mail.part_count > self.max_parts {
            return Some(format!("{} MIME parts (the limit is {})", mail.part_count, self.max_parts));
        }
        if mail.depth > self.max_depth {
            return Some(format!("multiparts nested {} deep (the limit is {})", mail.depth, self.max_depth));
        }
        if mail.headers.len() > self.max_headers {
            return Some(format!("{} header fields (the limit is {})", mail.headers.len(), self.max_headers));
        }
        if mail.header_bytes > self.max_header_bytes {
            return Some(format!(
                "a header section of {} bytes (the limit is {})",
                mail.header_bytes, self.max_header_bytes
            ));
        }
        None
    }
}

impl Pipeline {
    /// A pipeline storing into `store`, verifying tokens with `signer`, for
    /// mail to `domain`, routed by `rules`.
    pub fn new(
        store: Store,
        signer: TokenSigner,
        domain: String,
        rules: std::sync::Arc<rules::LiveRules>,
        on_call_address: String,
    ) -> Self {
        Self {
            store,
            signer,
            domain,
            rules,
            on_call_address,
            auth: None,
            mime_limits: MimeLimits::default(),
            loop_limit: 120,
            hold_not_allowed: false,
        }
    }

    /// The same pipeline, holding mail from senders who may not write in the
    /// thread for an agent instead of refusing it.
    pub fn with_hold_not_allowed(mut self, hold: bool) -> Self {
        self.hold_not_allowed = hold;
        self
    }

    /// The same pipeline with another loop breaker: at most `per_hour`
    /// emailed messages per sender, and per thread, in an hour.
    pub fn with_loop_limit(mut self, per_hour: u32) -> Self {
        self.loop_limit = i64::from(per_hour);
        self
    }

    /// The same pipeline with other complexity limits.
    pub fn with_mime_limits(mut self, limits: MimeLimits) -> Self {
        self.mime_limits = limits;
        self
    }

    /// The same pipeline, checking senders with `auth`.
    pub fn with_auth(mut self, auth: Option<std::sync::Arc<authenticate::SenderAuth>>) -> Self {
        self.auth = auth;
        self
    }

    /// What a DMARC failure leads to, by configuration; `None` when the
    /// message passes (or checks are off, or the policy is to accept).
    fn dmarc_verdict(&self, auth: Option<&authenticate::AuthResults>) -> Option<Plan> {
        let (results, checker) = (auth?, self.auth.as_ref()?);
        if !results.dmarc_failed() {
            return None;
        }
        match checker.on_fail {
            authenticate::OnDmarcFail::Refuse => {
                Some(Plan::Log(Disposition::Rejected(Refusal::DmarcFailed(results.from_domain.clone())), None))
            }
            authenticate::OnDmarcFail::Hold => Some(Plan::Hold {
                code: "dmarc_fail",
                reason: format!("{} failed DMARC ({})", results.from_domain, results.summary()),
                thread_id: None,
            }),
            authenticate::OnDmarcFail::Accept => None,
        }
    }

    /// Runs SPF, DKIM and DMARC for a message that is not a bounce.
    async fn authenticate(&self, envelope: &Envelope, kind: MailKind, raw: &[u8]) -> Option<authenticate::AuthResults> {
        let (auth, ip) = (self.auth.as_ref()?, envelope.peer_ip?);
        if kind == MailKind::Bounce {
            return None;
        }
        Some(auth.check(ip, envelope.helo.as_deref().unwrap_or(""), &envelope.mail_from, raw).await)
    }

    /// The rules in force.
    pub fn rules(&self) -> std::sync::Arc<rules::RuleSet> {
        self.rules.current()
    }

    /// Decides at RCPT time whether we take mail for `address`, and adds it
    /// to the envelope's accepted recipients (with the thread its token names)
    /// or to its refused ones.
    pub async fn add_recipient(&self, envelope: &mut Envelope, address: String) -> Result<(), RcptRefusal> {
        match self.resolve_recipient(&address).await {
            Ok((target, thread)) => {
                envelope.recipients.push((address, target));
                envelope.threads.extend(thread);
                Ok(())
            }
            Err(refusal) => {
                envelope.refused.push((address, refusal.clone()));
                Err(refusal)
            }
        }
    }

    /// What `address` is, and for a reply token the thread it names.
    async fn resolve_recipient(
        &self,
        address: &str,
    ) -> Result<(RecipientTarget, Option<(Thread, RecentEmail)>), RcptRefusal> {
        let address = EmailAddress::parse(address).ok_or(RcptRefusal::UnknownMailbox)?;
        if address.domain() != self.domain {
            return Err(RcptRefusal::RelayDenied);
        }
        let local = address.local_part();
        if let Some(token) = thread::token_from_local_part(local) {
            let parsed = self.signer.verify(token).map_err(RcptRefusal::BadToken)?;
            let since = now_ms() - LOOP_WINDOW_MS;
            return match self
                .store
                .thread_with_recent(parsed.thread_id, parsed.recipient_id, since, self.loop_limit)
                .await
            {
                Ok(Some(seen)) => Ok((RecipientTarget::Reply { token: token.to_owned(), parsed }, Some(seen))),
                Ok(None) => Err(RcptRefusal::UnknownThread),
                Err(_) => Err(RcptRefusal::Unavailable),
            };
        }
        if let Some(token) = local.strip_prefix("unsubscribe+") {
            let (user_id, kind) = self.signer.verify_unsubscribe(token).map_err(RcptRefusal::BadToken)?;
            let kind = usize::try_from(kind).ok().and_then(|k| crate::notify::OPTIONAL_KINDS.get(k));
            return Ok((
                RecipientTarget::Unsubscribe { user_id, kind: kind.ok_or(RcptRefusal::UnknownMailbox)? },
                None,
            ));
        }
        if let Some(rest) = local.strip_prefix("bounces") {
            let outbox_id = match rest {
                "" => None,
                _ => {
                    let token = rest.strip_prefix('+').ok_or(RcptRefusal::UnknownMailbox)?;
                    self.signer.verify_bounce(token).ok()
                }
            };
            return Ok((RecipientTarget::Bounces { outbox_id }, None));
        }
        if self.rules.current().ticket_addresses.iter().any(|a| a == local) {
            return Ok((RecipientTarget::TicketAddress(local.to_owned()), None));
        }
        match local {
            "support" => Ok((RecipientTarget::Support, None)),
            "postmaster" | "abuse" => Ok((RecipientTarget::Postmaster, None)),
            _ => Err(RcptRefusal::UnknownMailbox),
        }
    }

    /// Records a transaction that ended without a message being received
    /// (all recipients refused, or the message was too large).
    pub async fn log_unreceived(&self, envelope: &Envelope, smtp_reply: &str, reason: &str) {
        let refused: Vec<String> = envelope.refused.iter().map(|(a, r)| format!("{a}: {r:?}")).collect();
        let entry = InboundLogEntry {
            received_at: now_ms(),
            peer: envelope.peer.clone(),
            helo: envelope.helo.clone(),
            mail_from: Some(envelope.mail_from.clone()),
            rcpt_to: all_recipients(envelope),
            decision: "rejected".to_owned(),
            reason: if refused.is_empty() { reason.to_owned() } else { format!("{reason}: {}", refused.join("; ")) },
            smtp_reply: smtp_reply.to_owned(),
            ..InboundLogEntry::default()
        };
        if let Err(error) = self.store.log_inbound(&entry).await {
            tracing::warn!(error = %error, "could not record a refused transaction");
        }
    }

    /// An envelope as the SMTP session would build it: each recipient
    /// checked as at RCPT time. For dry runs and tools.
    pub async fn envelope(&self, peer: &str, mail_from: String, recipients: &[String]) -> Envelope {
        let mut envelope = Envelope { peer: peer.to_owned(), mail_from, ..Envelope::default() };
        for address in recipients {
            let _ = self.add_recipient(&mut envelope, address.clone()).await;
        }
        envelope
    }

    /// Reads a message with the server's secret: tokens verified.
    pub fn analyze(&self, envelope: &Envelope, raw: &[u8]) -> Option<Analysis> {
        let parsed = parse::parse(raw)?;
        let found = thread::find_thread(&recipient_tokens(envelope), &parsed, &self.signer, &self.domain);
        let thread_token = match &found {
            Some(ThreadRef::Token { via, token, .. }) => {
                Some(FoundToken { via: *via, token: token.clone(), verified: true })
            }
            _ => None,
        };
        Some(build_analysis(&envelope.mail_from, parsed, thread_token))
    }

    /// Runs the whole pipeline on one message and stores it (with its
    /// notifications and log entry) when it is accepted. Every message
    /// answered 250 is kept as it arrived, in the same transaction.
    pub async fn ingest(&self, envelope: &Envelope, raw: &[u8]) -> Disposition {
        // Reading is pure code on hostile input: should any of it panic, the
        // message is held for an admin with its bytes, never lost.
        let Some(analysis) = guarded(|| self.analyze(envelope, raw)) else {
            tracing::error!(bytes = raw.len(), "reading a message panicked; holding it for an admin");
            let plan = Plan::Hold {
                code: "reading_failed",
                reason: "mailgate could not read this message (an internal error); it is kept as it arrived".to_owned(),
                thread_id: None,
            };
            return self.store_plan(envelope, raw, None, None, Ok((plan, rules::Decision::default()))).await;
        };
        let unsubscribes: Vec<(i64, &str)> = envelope
            .recipients
            .iter()
            .filter_map(|(_, t)| match t {
                RecipientTarget::Unsubscribe { user_id, kind } => Some((*user_id, *kind)),
                _ => None,
            })
            .collect();
        for (user_id, kind) in &unsubscribes {
            if let Err(error) = self.store.opt_out(*user_id, kind).await {
                return Disposition::TempFail { reason: error.to_string() };
            }
        }
        let no_rules = rules::Decision::default;
        let auth = match &analysis {
            Some(analysis) => self.authenticate(envelope, analysis.kind, raw).await,
            None => None,
        };
        let dmarc_verdict = self.dmarc_verdict(auth.as_ref());
        let outcome = match (&analysis, unsubscribes.first(), dmarc_verdict) {
            (_, Some((_, kind)), _) if unsubscribes.len() == envelope.recipients.len() => Ok((
                Plan::Log(Disposition::Dropped { reason: format!("unsubscribed from {kind} notifications") }, None),
                no_rules(),
            )),
            (None, _, _) => Ok((Plan::Log(Disposition::Rejected(Refusal::Unparseable), None), no_rules())),
            (Some(analysis), _, _) if self.mime_limits.check(&analysis.parsed).is_some() => {
                let why = self.mime_limits.check(&analysis.parsed).unwrap_or_default();
                Ok((Plan::Log(Disposition::Rejected(Refusal::TooComplex(why)), None), no_rules()))
            }
            (Some(_), _, Some(verdict)) => Ok((verdict, no_rules())),
            (Some(analysis), _, None) => self.decide(envelope, analysis, Mode::Ingest).await,
        };
        self.store_plan(envelope, raw, analysis.as_ref(), auth.as_ref(), outcome).await
    }

    /// Carries out what was decided about a message: stores it with its log
    /// entry (and, for anything answered 250, the message as it arrived).
    async fn store_plan(
        &self,
        envelope: &Envelope,
        raw: &[u8],
        analysis: Option<&Analysis>,
        auth: Option<&authenticate::AuthResults>,
        outcome: Result<(Plan, rules::Decision), StoreError>,
    ) -> Disposition {
        let (outcome, rule_names) = match outcome {
            Ok((plan, decision)) => (Ok(plan), decision.rules.join(",")),
            Err(e) => (Err(e), String::new()),
        };
        let mut log = InboundLogEntry {
            received_at: now_ms(),
            peer: envelope.peer.clone(),
            helo: envelope.helo.clone(),
            mail_from: Some(envelope.mail_from.clone()),
            rcpt_to: all_recipients(envelope),
            message_id: analysis.and_then(|a| a.message_id.clone()),
            rules: rule_names,
            auth: auth.map(authenticate::AuthResults::summary).unwrap_or_default(),
            ..InboundLogEntry::default()
        };
        // Originals are hashed and compressed here, on the session's task,
        // not on the writer's.
        let result = match outcome {
            Ok(Plan::Hold { code, reason, thread_id }) => {
                let disposition = Disposition::Held { reason: reason.clone() };
                fill_log(&mut log, &disposition, thread_id);
                let original = Original::of(raw);
                log.original = Some(original.sha256.clone());
                let held = NewHeld {
                    reason_code: code.to_owned(),
                    reason,
                    thread_id,
                    from_address: analysis.and_then(|a| a.from.clone()),
                    subject: analysis.and_then(|a| a.subject.clone()),
                };
                self.store.hold(&held, &log, &original).await.map(|_| disposition)
            }
            Ok(Plan::OpenTicket { thread, mut first }) => {
                fill_log(&mut log, &Disposition::Dropped { reason: String::new() }, None);
                log.decision = "accepted".to_owned();
                log.reason = "opened a ticket from email".to_owned();
                log.smtp_reply = "250 2.0.0 Ticket opened".to_owned();
                let original = Original::of_message(raw, &first.attachments);
                log.original = Some(original.sha256.clone());
                first.original = Some(KeptOriginal::New(std::sync::Arc::new(original)));
                match self.store.create_thread(thread, *first, &[], Some(&log)).await {
                    Ok((thread, message_id)) => Ok(Disposition::Accepted {
                        thread_id: thread.id,
                        thread_label: thread_label(&thread),
                        message_id,
                        duplicate: false,
                    }),
                    Err(e) => Err(e),
                }
            }
            Ok(Plan::Log(disposition, thread_id)) => {
                fill_log(&mut log, &disposition, thread_id);
                let notice = match (&disposition, analysis) {
                    (Disposition::Rejected(refusal), Some(analysis)) => {
                        self.refusal_notice(envelope, analysis, refusal).await
                    }
                    _ => None,
                };
                match (notice, &disposition) {
                    (Some(notice), _) => self.store.enqueue(&notice, Some(&log)).await.map(|_| disposition),
                    // Answered 250 and not posted: kept as it arrived.
                    (None, Disposition::Dropped { .. }) => {
                        let original = Original::of(raw);
                        log.original = Some(original.sha256.clone());
                        self.store.log_inbound_with_original(&log, &original).await.map(|()| disposition)
                    }
                    (None, _) => self.store.log_inbound(&log).await.map(|()| disposition),
                }
            }
            Ok(Plan::Bounce(disposition, bounce)) => {
                fill_log(&mut log, &disposition, None);
                let original = Original::of(raw);
                log.original = Some(original.sha256.clone());
                self.store.record_bounce(&log, &bounce, Some(&original)).await.map(|()| disposition)
            }
            Ok(Plan::Store { mut message, thread }) => {
                let label = thread_label(&thread);
                let accepted = Disposition::Accepted {
                    thread_id: thread.id,
                    thread_label: label.clone(),
                    message_id: 0,
                    duplicate: false,
                };
                fill_log(&mut log, &accepted, Some(thread.id));
                log.reason = format!("reply from {} stored in {label}", log.mail_from.as_deref().unwrap_or(""));
                // Its attachments are stored anyway: their base64 is left out.
                let original = Original::of_message(raw, &message.attachments);
                log.original = Some(original.sha256.clone());
                message.original = Some(KeptOriginal::New(std::sync::Arc::new(original)));
                match self.store.insert_message(*message, Some(log)).await {
                    Ok(Inserted::New(id)) => Ok(Disposition::Accepted {
                        thread_id: thread.id,
                        thread_label: label,
                        message_id: id,
                        duplicate: false,
                    }),
                    Ok(Inserted::Duplicate(id)) => Ok(Disposition::Accepted {
                        thread_id: thread.id,
                        thread_label: label,
                        message_id: id,
                        duplicate: true,
                    }),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(disposition) => disposition,
            Err(error) => {
                tracing::error!(error = %error, "storing an inbound message failed; answering 451");
                Disposition::TempFail { reason: error.to_string() }
            }
        }
    }

    /// What [`Pipeline::ingest`] would do with a message, without storing
    /// anything: the decision, the SMTP answer, and every rule considered.
    pub async fn dry_run(&self, envelope: &Envelope, raw: &[u8]) -> DryRun {
        let analysis = self.analyze(envelope, raw);
        let auth = match &analysis {
            Some(analysis) => self.authenticate(envelope, analysis.kind, raw).await,
            None => None,
        };
        self.dry_run_with(envelope, analysis, auth, Mode::DryRun).await
    }

    /// A dry run with the sender checks' results given (as recorded at
    /// receipt, for `explain` and `replay`), in `mode`.
    async fn dry_run_with(
        &self,
        envelope: &Envelope,
        analysis: Option<Analysis>,
        auth: Option<authenticate::AuthResults>,
        mode: Mode,
    ) -> DryRun {
        let decided = match (analysis, self.dmarc_verdict(auth.as_ref())) {
            (None, _) => Ok((Plan::Log(Disposition::Rejected(Refusal::Unparseable), None), rules::Decision::default())),
            (Some(_), Some(verdict)) => Ok((verdict, rules::Decision::default())),
            (Some(analysis), None) => self.decide(envelope, &analysis, mode).await,
        };
        let (plan, routing) = match decided {
            Ok((plan, decision)) => (Ok(plan), decision),
            Err(e) => (Err(e), rules::Decision::default()),
        };
        let (disposition, thread) = match plan {
            Ok(Plan::Log(disposition, thread_id)) => (disposition, thread_id),
            Ok(Plan::Bounce(disposition, _)) => (disposition, None),
            Ok(Plan::Hold { reason, thread_id, .. }) => (Disposition::Held { reason }, thread_id),
            Ok(Plan::OpenTicket { .. }) => (
                Disposition::Accepted {
                    thread_id: 0,
                    thread_label: "a new ticket".to_owned(),
                    message_id: 0,
                    duplicate: false,
                },
                None,
            ),
            Ok(Plan::Store { thread, .. }) => (
                Disposition::Accepted {
                    thread_id: thread.id,
                    thread_label: thread_label(&thread),
                    message_id: 0,
                    duplicate: false,
                },
                Some(thread.id),
            ),
            Err(error) => (Disposition::TempFail { reason: error.to_string() }, None),
        };
        let mut log = InboundLogEntry::default();
        fill_log(&mut log, &disposition, thread);
        DryRun {
            decision: log.decision,
            reason: log.reason,
            thread_id: thread,
            smtp_reply: log.smtp_reply,
            routing,
            auth,
        }
    }

    /// The notice that tells a person why their mail was refused, when one
    /// should go: only to a sender we know (a user with that From address,
    /// who is also the envelope sender), only for a person's mail (auto-replies
    /// and bounces never reach here), at most once per address per hour.
    async fn refusal_notice(&self, envelope: &Envelope, analysis: &Analysis, refusal: &Refusal) -> Option<NewOutbox> {
        let kind = match refusal {
            Refusal::NoNewChat => "refusal_no_new_chat",
            Refusal::NotAllowed(_) => "refusal_not_allowed",
            Refusal::ThreadClosed => "refusal_thread_closed",
            Refusal::DmarcFailed(_) | Refusal::TooComplex(_) => return None,
            Refusal::Rule { notice: Some(notice), .. } => notice.as_str(),
            Refusal::Rule { notice: None, .. } => return None,
            Refusal::UnknownThread | Refusal::EmptyReply | Refusal::Unparseable => return None,
        };
        let from = analysis.from.as_deref()?;
        if analysis.kind != MailKind::Human || !from.eq_ignore_ascii_case(&envelope.mail_from) {
            return None;
        }
        let user = self.store.user_by_email(from).await.ok()??;
        let hour_ago = now_ms() - 3600 * 1000;
        if self.store.notice_sent_since(&user.email, hour_ago).await.unwrap_or(true) {
            return None;
        }
        let reason = match refusal {
            Refusal::NotAllowed(reason) => reason.clone(),
            _ => String::new(),
        };
        Some(NewOutbox {
            kind: kind.to_owned(),
            thread_id: None,
            recipient_id: Some(user.id),
            to_address: user.email,
            context: serde_json::json!({ "subject": analysis.subject.as_deref().unwrap_or(""), "reason": reason }),
        })
    }

    /// Ties a bounce to the notification it is about: the verified VERP
    /// recipient (`bounces+TOKEN@`), else our own Message-ID in the returned
    /// copy (it must be the one we recorded for that notification). A hard
    /// bounce counts toward suppressing an address only when it is tied so
    /// and names the very address that notification went to: a forged report
    /// can neither guess a notification nor name someone else.
    async fn bounce_plan(&self, envelope: &Envelope, analysis: &Analysis) -> Plan {
        let report = analysis.bounce.clone().unwrap_or_default();
        let from_verp = envelope.recipients.iter().find_map(|(_, t)| match t {
            RecipientTarget::Bounces { outbox_id } => *outbox_id,
            _ => None,
        });
        let returned_id = report.original_message_id.as_deref();
        let from_message_id = returned_id.and_then(|id| {
            let (local, domain) = id.rsplit_once('@')?;
            let (token, outbox_id) = local.split_once('.')?;
            (domain.eq_ignore_ascii_case(&self.domain) && self.signer.verify(token).is_ok())
                .then(|| outbox_id.parse::<i64>().ok())?
        });
        let mut outbox = None;
        if let Some(id) = from_verp {
            outbox = self.store.outbox_item(id).await.ok().flatten();
        }
        if outbox.is_none()
            && let Some(id) = from_message_id
            && let Ok(Some(item)) = self.store.outbox_item(id).await
            && item.rfc_message_id.as_deref().is_some_and(|sent| Some(sent.trim_matches(['<', '>'])) == returned_id)
        {
            outbox = Some(item);
        }
        let names_the_address = match (&report.failed_recipient, &outbox) {
            (Some(address), Some(item)) => address.eq_ignore_ascii_case(&item.to_address),
            _ => false,
        };
        let counted = names_the_address && report.severity.as_deref() == Some("hard");
        let recipient = match (&report.failed_recipient, &outbox) {
            (Some(address), _) => Some(address.clone()),
            (None, Some(item)) => Some(item.to_address.clone()),
            (None, None) => None,
        };
        let standing = match (&outbox, counted, report.severity.as_deref()) {
            (_, true, _) => "; counts toward suppressing the address",
            (None, _, _) => "; tied to no notification of ours, so it does not count",
            (Some(_), _, Some("hard")) => "; does not name the address the notification went to, so it does not count",
            (Some(_), _, _) => "; not a permanent failure, so it does not count",
        };
        let reason = format!(
            "bounce ({}): {} failed{}{}{standing}",
            analysis.kind_reason,
            recipient.as_deref().unwrap_or("an unknown recipient"),
            report.status.as_deref().map(|s| format!(" with {s}")).unwrap_or_default(),
            outbox.as_ref().map(|o| format!(", notification {}", o.id)).unwrap_or_default(),
        );
        let bounce = Bounce {
            received_at: now_ms(),
            outbox_id: outbox.as_ref().map(|o| o.id),
            recipient,
            status: report.status,
            severity: report.severity,
            diagnostic: report.diagnostic,
            original_message_id: report.original_message_id,
            counted,
            ..Bounce::default()
        };
        Plan::Bounce(Disposition::Dropped { reason }, Box::new(bounce))
    }

    /// Decides what to do with an analysed message (reads only).
    async fn decide(
        &self,
        envelope: &Envelope,
        analysis: &Analysis,
        mode: Mode,
    ) -> Result<(Plan, rules::Decision), StoreError> {
        let explain = mode != Mode::Ingest;
        if analysis.kind == MailKind::Bounce {
            return Ok((self.bounce_plan(envelope, analysis).await, rules::Decision::default()));
        }
        // RFC 5321: postmaster@ must take mail; it is recorded, not routed.
        if !envelope.recipients.is_empty() && envelope.recipients.iter().all(|(_, t)| *t == RecipientTarget::Postmaster)
        {
            let plan = Plan::Log(Disposition::Dropped { reason: "mail to postmaster, recorded".to_owned() }, None);
            return Ok((plan, rules::Decision::default()));
        }
        let reference = thread::find_thread(&recipient_tokens(envelope), &analysis.parsed, &self.signer, &self.domain);
        let thread = match &reference {
            Some(ThreadRef::Token { thread_id, .. }) => match envelope.threads.iter().find(|(t, _)| t.id == *thread_id)
            {
                Some((thread, _)) => Some(thread.clone()),
                None => self.store.thread(*thread_id).await?,
            },
            Some(ThreadRef::TicketNumber { number, .. }) => self.store.ticket_by_number(*number).await?,
            None => None,
        };
        let sender = match &analysis.from {
            Some(from) => self.store.user_by_email(from).await?,
            None => None,
        };
        let site = match &thread {
            Some(thread) => self.store.site(thread.site_id).await?,
            None => None,
        };
        // The security gate comes first: no rule can let a stranger in.
        let mut author = None;
        if let (Some(reference), Some(thread), Some(site)) = (&reference, &thread, &site) {
            match authorize::authorize(thread, site, reference, sender.as_ref()) {
                Authorization::Allowed { .. } => author = sender.clone(),
                // An admin released it: the sender writes there this once.
                Authorization::Denied(_) if mode == Mode::Release && sender.is_some() => author = sender.clone(),
                Authorization::Denied(_) if analysis.kind == MailKind::AutoReply => {
                    let reason = format!("auto-reply from outside the conversation: {}", analysis.kind_reason);
                    return Ok((
                        Plan::Log(Disposition::Dropped { reason }, Some(thread.id)),
                        rules::Decision::default(),
                    ));
                }
                Authorization::Denied(reason) if self.hold_not_allowed => {
                    let plan = Plan::Hold {
                        code: "not_allowed",
                        reason: format!("{reason} ({})", thread_label(thread)),
                        thread_id: Some(thread.id),
                    };
                    return Ok((plan, rules::Decision::default()));
                }
                Authorization::Denied(reason) => {
                    let plan = Plan::Log(Disposition::Rejected(Refusal::NotAllowed(reason)), Some(thread.id));
                    return Ok((plan, rules::Decision::default()));
                }
            }
        }
        let thread = thread.filter(|_| author.is_some());
        let input = self.rule_input(envelope, analysis, thread.as_ref(), site.as_ref(), sender.as_ref()).await?;
        let rules = self.rules.current();
        let decision = rules.evaluate(&input, explain);
        let thread_id = thread.as_ref().map(|t| t.id);
        let named = |what: &str| match decision.rules.last() {
            Some(rule) => format!("{what} by rule {rule}"),
            None => what.to_owned(),
        };
        let plan = match &decision.actions.outcome {
            Some(rules::Outcome::Reject { code, status, text, notice }) => Plan::Log(
                Disposition::Rejected(Refusal::Rule {
                    code: *code,
                    status: status.clone(),
                    text: text.clone(),
                    notice: notice.clone(),
                }),
                thread_id,
            ),
            Some(rules::Outcome::Drop) => Plan::Log(Disposition::Dropped { reason: named("dropped") }, thread_id),
            Some(rules::Outcome::OpenTicket { ticket_type }) if thread.is_none() => {
                self.open_ticket_plan(envelope, analysis, sender.as_ref(), ticket_type, &decision, &rules).await?
            }
            outcome => {
                let accepted = matches!(outcome, Some(rules::Outcome::Accept));
                self.default_plan(envelope, analysis, (thread, site, author), accepted, &decision, mode).await?
            }
        };
        Ok((plan, decision))
    }

    /// What the rules see of a message.
    async fn rule_input(
        &self,
        envelope: &Envelope,
        analysis: &Analysis,
        thread: Option<&Thread>,
        site: Option<&crate::store::Site>,
        sender: Option<&crate::store::User>,
    ) -> Result<rules::RuleInput, StoreError> {
        let (has_tickets, has_on_call) = match site {
            Some(site) => self.store.site_features(site.id).await?,
            None => match sender.and_then(|u| u.organization_id) {
                Some(org) => self.org_features(org).await?,
                None => (false, false),
            },
        };
        Ok(rules::RuleInput {
            sender: envelope.mail_from.clone(),
            recipients: envelope.recipients.iter().map(|(a, _)| a.to_lowercase()).collect(),
            from: analysis.from.clone().unwrap_or_default(),
            to: analysis.to.clone(),
            subject: analysis.subject.clone().unwrap_or_default(),
            headers: analysis.parsed.headers.clone(),
            text: analysis.reply_text.clone(),
            kind: Some(analysis.kind),
            thread: thread.map_or_else(|| "none".to_owned(), |t| t.kind.clone()),
            plan: site.map(|s| s.plan_id.clone()),
            has_tickets,
            has_on_call,
            role: sender.map(crate::store::User::role),
            now: chrono::Utc::now(),
        })
    }

    /// Features of the best site of an organization (for mail that names no thread).
    async fn org_features(&self, org: i64) -> Result<(bool, bool), StoreError> {
        let mut features = (false, false);
        for site in self.store.sites_of_organization(org).await? {
            let (tickets, on_call) = self.store.site_features(site.id).await?;
            features = (features.0 || tickets, features.1 || on_call);
        }
        Ok(features)
    }

    /// The pipeline's own decision, with the rules' routing actions applied,
    /// for a message to `found` (thread, site, and the author allowed there).
    async fn default_plan(
        &self,
        envelope: &Envelope,
        analysis: &Analysis,
        found: (Option<Thread>, Option<crate::store::Site>, Option<crate::store::User>),
        accepted_by_rule: bool,
        decision: &rules::Decision,
        mode: Mode,
    ) -> Result<Plan, StoreError> {
        let (Some(thread), Some(site), Some(author)) = found else {
            let to_support = envelope.recipients.iter().any(|(_, t)| *t == RecipientTarget::Support);
            if !to_support && envelope.recipients.iter().all(|(_, t)| *t == RecipientTarget::Postmaster) {
                return Ok(Plan::Log(Disposition::Dropped { reason: "mail to postmaster, recorded".to_owned() }, None));
            }
            if analysis.kind == MailKind::AutoReply {
                let reason = format!("auto-reply: {}", analysis.kind_reason);
                return Ok(Plan::Log(Disposition::Dropped { reason }, None));
            }
            let refusal = if to_support { Refusal::NoNewChat } else { Refusal::UnknownThread };
            return Ok(Plan::Log(Disposition::Rejected(refusal), None));
        };
        if analysis.kind == MailKind::AutoReply && !accepted_by_rule {
            let reason = format!("auto-reply: {}", analysis.kind_reason);
            return Ok(Plan::Log(Disposition::Dropped { reason }, Some(thread.id)));
        }
        if thread.status == "closed" {
            return Ok(Plan::Log(Disposition::Rejected(Refusal::ThreadClosed), Some(thread.id)));
        }
        let attachments = analysis.kept_attachments.clone();
        let mut body = analysis.reply_text.clone();
        if let Some(too_large) = analysis.oversized.first() {
            if mode != Mode::Release {
                let reason = format!(
                    "the attachment {:?} ({} bytes) is larger than mailgate stores ({} bytes)",
                    too_large.filename,
                    too_large.size,
                    extract::MAX_ATTACHMENT_SIZE
                );
                return Ok(Plan::Hold { code: "attachment_too_large", reason, thread_id: Some(thread.id) });
            }
            for file in &analysis.oversized {
                body.push_str(&format!(
                    "\n\n[The attachment {} ({} bytes) was too large to keep; it is in the original message.]",
                    file.filename, file.size
                ));
            }
        }
        if body.trim().is_empty() && attachments.is_empty() {
            return Ok(Plan::Log(Disposition::Rejected(Refusal::EmptyReply), Some(thread.id)));
        }
        // Counted at RCPT time when the token was the author's own (as it is
        // for a customer replying); otherwise now. A dry run of an old
        // message, or an admin's release, is not a loop: nothing to count.
        let counted = envelope.threads.iter().find(|(t, recent)| t.id == thread.id && recent.author_id == author.id);
        let (by_sender, in_thread) = match (counted, mode) {
            (_, Mode::Replay | Mode::Release) => (0, 0),
            (Some((_, recent)), _) => (recent.by_author, recent.in_thread),
            (None, _) => {
                self.store.recent_email(author.id, thread.id, now_ms() - LOOP_WINDOW_MS, self.loop_limit).await?
            }
        };
        if by_sender >= self.loop_limit || in_thread >= self.loop_limit {
            let reason = format!(
                "loop breaker: {by_sender} messages from {} and {in_thread} in {} in the last hour (limit {})",
                author.email,
                thread_label(&thread),
                self.loop_limit
            );
            return Ok(Plan::Log(Disposition::Deferred { reason }, Some(thread.id)));
        }
        let notify = crate::notify::recipients(&self.store, &thread, &site, &author).await?;
        let routing = self.routing(&thread, decision).await?;
        let message = NewMessage {
            thread_id: thread.id,
            author_id: author.id,
            author_is_agent: author.is_agent(),
            body,
            source: Source::Email,
            rfc_message_id: Some(dedup_id(analysis)),
            attachments,
            notify,
            routing,
            extra_mail: self.pages(decision),
            original: None,
        };
        Ok(Plan::Store { message: Box::new(message), thread })
    }

    /// The on-call page the rules asked for, if any.
    fn pages(&self, decision: &rules::Decision) -> Vec<NewOutbox> {
        match decision.actions.page_on_call {
            true => vec![NewOutbox {
                kind: "on_call_page".to_owned(),
                thread_id: None,
                recipient_id: None,
                to_address: self.on_call_address.clone(),
                context: serde_json::json!({}),
            }],
            false => Vec::new(),
        }
    }

    /// The rules' queue, priority, tags and assignment, applied to `thread`.
    async fn routing(&self, thread: &Thread, decision: &rules::Decision) -> Result<Option<Routing>, StoreError> {
        let actions = &decision.actions;
        if actions.queue.is_none() && actions.priority.is_none() && actions.tags.is_empty() && actions.assign.is_none()
        {
            return Ok(None);
        }
        let assign = match &actions.assign {
            Some(email) => match self.store.user_by_email(email).await? {
                Some(agent) if agent.is_agent() => Some(agent.id),
                _ => {
                    tracing::warn!(agent = %email, "rule assigns to an unknown agent; ignored");
                    None
                }
            },
            None => None,
        };
        let mut tags: Vec<String> = serde_json::from_str(&thread.tags).unwrap_or_default();
        for tag in &actions.tags {
            if !tags.contains(tag) {
                tags.push(tag.clone());
            }
        }
        Ok(Some(Routing { queue: actions.queue.clone(), priority: actions.priority.clone(), tags, assign }))
    }

    /// Opens a ticket from an email to a ticket address, when the sender's
    /// organization has a site whose plan includes tickets.
    async fn open_ticket_plan(
        &self,
        envelope: &Envelope,
        analysis: &Analysis,
        sender: Option<&crate::store::User>,
        ticket_type: &str,
        decision: &rules::Decision,
        rules: &rules::RuleSet,
    ) -> Result<Plan, StoreError> {
        let to_ticket_address = envelope.recipients.iter().any(|(_, t)| matches!(t, RecipientTarget::TicketAddress(_)));
        let not_in_plan = || {
            Plan::Log(
                Disposition::Rejected(Refusal::Rule {
                    code: 550,
                    status: "5.7.1".to_owned(),
                    text: "Tickets are not part of your site's plan, so no ticket was opened. Please start a chat \
                           from your Dashboard (Support > Launch Chat)"
                        .to_owned(),
                    notice: Some("refusal_tickets_not_in_plan".to_owned()),
                }),
                None,
            )
        };
        let (true, Some(customer)) = (to_ticket_address && !rules.ticket_addresses.is_empty(), sender) else {
            return Ok(Plan::Log(Disposition::Rejected(Refusal::NoNewChat), None));
        };
        let Some(org) = customer.organization_id.filter(|_| customer.role().sees_org_tickets()) else {
            return Ok(not_in_plan());
        };
        let mut chosen = None;
        for site in self.store.sites_of_organization(org).await? {
            if crate::notify::site_has_tickets(&self.store, &site).await? {
                chosen = Some(site);
                break;
            }
        }
        let Some(site) = chosen else { return Ok(not_in_plan()) };
        let attachments = analysis.kept_attachments.clone();
        let subject = crate::notify::render::header_safe(analysis.subject.as_deref().unwrap_or("(no subject)"));
        let mut notify: Vec<(NotificationKind, i64)> =
            self.store.agents().await?.iter().map(|a| (NotificationKind::TicketOpened, a.id)).collect();
        notify.push((NotificationKind::TicketReceived, customer.id));
        let new_thread = NewThread {
            kind: crate::domain::ThreadKind::Ticket,
            site_id: site.id,
            customer_id: customer.id,
            ticket_type: Some(ticket_type.to_owned()),
            subject: if subject.is_empty() { "(no subject)".to_owned() } else { subject },
        };
        let first = NewMessage {
            thread_id: 0,
            author_id: customer.id,
            author_is_agent: false,
            body: if analysis.reply_text.trim().is_empty() {
                "(no text)".to_owned()
            } else {
                analysis.reply_text.clone()
            },
            source: Source::Email,
            rfc_message_id: Some(dedup_id(analysis)),
            attachments,
            notify,
            routing: None,
            extra_mail: self.pages(decision),
            original: None,
        };
        Ok(Plan::OpenTicket { thread: new_thread, first: Box::new(first) })
    }
}

/// What a message would get, for `inspect` and dry runs.
#[derive(Debug, Clone, Serialize)]
pub struct DryRun {
    /// `accepted`, `dropped`, `rejected` or `tempfail`.
    pub decision: String,
    /// Why, in words.
    pub reason: String,
    /// The thread it would go to.
    pub thread_id: Option<i64>,
    /// The SMTP answer the sender would get.
    pub smtp_reply: String,
    /// The rules that matched, their actions, and every rule considered.
    pub routing: rules::Decision,
    /// SPF, DKIM and DMARC results, when checked.
    pub auth: Option<authenticate::AuthResults>,
}

/// Why a message is being decided on: the checks differ a little.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// It is being received.
    Ingest,
    /// `inspect` or `rules test`: as if received now, explained.
    DryRun,
    /// `replay` or `explain` of a stored original: the loop breaker does not
    /// count (the message itself is among the counts by now).
    Replay,
    /// An admin releases it from the held queue: the sender may write in the
    /// thread this once, and the loop breaker does not count.
    Release,
}

/// What `decide` concluded.
enum Plan {
    /// Nothing to store but the log entry.
    Log(Disposition, Option<i64>),
    /// A bounce to record with the log entry.
    Bounce(Disposition, Box<Bounce>),
    /// Open a ticket from this mail.
    OpenTicket { thread: NewThread, first: Box<NewMessage> },
    /// Keep the raw mail for an admin; answer 250.
    Hold {
        /// The reason code (`dmarc_fail`, `not_allowed`, ...).
        code: &'static str,
        /// The reason in words.
        reason: String,
        /// The thread it pointed at, if known.
        thread_id: Option<i64>,
    },
    /// Store this message in this thread.
    Store { message: Box<NewMessage>, thread: Thread },
}

fn recipient_tokens(envelope: &Envelope) -> Vec<(String, ReplyToken)> {
    envelope
        .recipients
        .iter()
        .filter_map(|(_, target)| match target {
            RecipientTarget::Reply { token, parsed } => Some((token.clone(), *parsed)),
            _ => None,
        })
        .collect()
}

fn all_recipients(envelope: &Envelope) -> String {
    envelope
        .recipients
        .iter()
        .map(|(a, _)| a.as_str())
        .chain(envelope.refused.iter().map(|(a, _)| a.as_str()))
        .collect::<Vec<_>>()
        .join(",")
}

fn fill_log(log: &mut InboundLogEntry, disposition: &Disposition, thread_id: Option<i64>) {
    let (decision, reason) = match disposition {
        Disposition::Accepted { .. } => ("accepted", String::new()),
        Disposition::Dropped { reason } => ("dropped", reason.clone()),
        Disposition::Held { reason } => ("held", reason.clone()),
        Disposition::Rejected(_) => ("rejected", reply::for_disposition(disposition).text),
        Disposition::TempFail { reason } => ("tempfail", reason.clone()),
        Disposition::Deferred { reason } => ("deferred", reason.clone()),
    };
    log.decision = decision.to_owned();
    log.reason = reason;
    log.smtp_reply = reply::for_disposition(disposition).to_string();
    log.thread_id = thread_id;
}

/// `read()`, or `None` when it panics: reading is pure code on hostile
/// input, and a panic in it must hold the message, not take down the
/// session (which would answer nothing after the sender sent it all).
fn guarded<T>(read: impl FnOnce() -> T) -> Option<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(read)).ok()
}

/// "chat #N" or "ticket #N".
pub fn thread_label(thread: &Thread) -> String {
    match thread.ticket_number {
        Some(number) => format!("ticket #{number}"),
        None => format!("chat #{}", thread.id),
    }
}

/// The key that makes a second delivery of the same mail a duplicate: its
/// Message-ID, or for mail without one a hash of what identifies it (not of
/// the raw bytes, which differ in their Received lines between deliveries).
fn dedup_id(analysis: &Analysis) -> String {
    if let Some(id) = &analysis.message_id {
        return id.clone();
    }
    let mut hash = Sha256::new();
    for part in [
        analysis.from.as_deref(),
        analysis.subject.as_deref(),
        analysis.parsed.header("date"),
        Some(&analysis.parsed.readable_text),
    ] {
        hash.update(part.unwrap_or("").as_bytes());
        hash.update([0]);
    }
    format!("{}@no-message-id.invalid", crate::store::hex(&hash.finalize()[..16]))
}

#[cfg(test)]
mod tests {
    use super::guarded;

    #[test]
    fn a_panic_while_reading_becomes_none_not_a_lost_session() {
        assert_eq!(guarded(|| 7), Some(7));
        let panicked: Option<i32> = guarded(|| panic!("a parser bug"));
        assert_eq!(panicked, None);
    }
}
