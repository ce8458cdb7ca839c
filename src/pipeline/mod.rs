//! What happens to one inbound message, step by step: read it in one pure
//! pass (parse → classify → extract), then authenticate the sender, then
//! decide (thread → authorize → rules → the pipeline's own verdicts), then
//! store (and queue notifications). The SMTP session calls [`Pipeline::add_recipient`] at
//! RCPT time and [`Pipeline::ingest`] at the end of DATA, and answers with
//! the [`Disposition`]. No sockets and no SMTP syntax here.
//!
//! Business outcomes (a refused sender, a dropped auto-reply) are
//! dispositions, not errors. Only a storage failure is an error, and it
//! becomes a temporary failure so that the sending server retries.

pub mod authenticate;
pub mod authorize;
pub mod bounce;
pub mod budget;
pub mod classify;
pub mod commands;
mod decide;
mod dry_run;
pub mod explain;
pub mod extract;
pub mod held;
pub mod parse;
pub mod participants;
pub mod relayed;
pub mod thread;
pub mod tnef;

pub use crate::domain::outcome::{DeferCause, Disposition, RcptRefusal, RecipientTarget, Refusal};
use crate::domain::reply;
use crate::domain::{EmailAddress, ReplyToken, Source, TokenSigner};
use crate::rules;
use crate::store::{
    Bounce, InboundLogEntry, Inserted, KeptOriginal, NewHeld, NewMessage, NewOutbox, NewThread, Original, RecentEmail,
    Routing, Store, StoreError, Thread, now_ms,
};
use authorize::Authorization;
use classify::{Classification, MailKind};
use decide::Plan;
pub use dry_run::{DryRun, PastedMessage};
use serde::Serialize;
use sha2::{Digest, Sha256};
use thread::{ThreadRef, Via};

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
    /// The last notification sent about each of those threads to the
    /// token's recipient, read with the thread: a reply that brings it back
    /// unquoted is matched against it.
    pub notifications: Vec<crate::store::SentNotification>,
    /// Whether a trusted relay handed the message on, and what it said of
    /// its own client (the sender checks judge that client).
    pub relay: relayed::Relay,
}

impl Envelope {
    /// One envelope per distinct recipient target, as LMTP delivers (each
    /// recipient has its own outcome), with the positions of its recipients
    /// in RCPT order: the same reply address given twice, or any number of
    /// `bounces+` addresses whose token does not verify, are one target and
    /// read once. Each envelope has the thread its reply address names; the
    /// first also carries the refused recipients, for the log.
    pub fn by_target(&self) -> Vec<(Vec<usize>, Envelope)> {
        let mut groups: Vec<(Vec<usize>, Envelope)> = Vec::new();
        for (position, (address, target)) in self.recipients.iter().enumerate() {
            if let Some((positions, _)) = groups.iter_mut().find(|(_, e)| e.recipients[0].1 == *target) {
                positions.push(position);
                continue;
            }
            let (thread_id, holder) = match target {
                RecipientTarget::Reply { parsed, .. } => (Some(parsed.thread_id), Some(parsed.recipient_id)),
                _ => (None, None),
            };
            let envelope = Envelope {
                recipients: vec![(address.clone(), target.clone())],
                refused: if groups.is_empty() { self.refused.clone() } else { Vec::new() },
                threads: self.threads.iter().filter(|(t, _)| Some(t.id) == thread_id).cloned().collect(),
                notifications: self
                    .notifications
                    .iter()
                    .filter(|n| Some(n.thread_id) == thread_id && Some(n.recipient_id) == holder)
                    .cloned()
                    .collect(),
                ..self.clone()
            };
            groups.push((vec![position], envelope));
        }
        groups
    }
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
    /// Our own notification's text, found unquoted in the reply and removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notification_removed: Option<NotificationRemoved>,
    /// For bounces: what failed, and for which of our messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bounce: Option<bounce::BounceReport>,
    #[serde(skip)]
    parsed: parse::ParsedMail,
    /// The attachments to store, chosen and named once.
    #[serde(skip)]
    kept_attachments: Vec<crate::store::NewAttachment>,
}

/// Our notification's text that a reply brought back, and was removed.
#[derive(Debug, Clone, Serialize)]
pub struct NotificationRemoved {
    /// The outbox item of the notification it matched.
    pub outbox_id: i64,
    /// How many lines were removed.
    pub lines: usize,
    /// The text removed.
    pub text: String,
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
        notification_removed: None,
        parsed,
        kept_attachments,
    }
}

impl Analysis {
    /// A message that is only parsed, not read (over the complexity limits).
    fn unread(envelope: &Envelope, parsed: parse::ParsedMail) -> Self {
        let Classification { kind, reason } = classify::classify(&envelope.mail_from, &parsed);
        Analysis {
            from: parsed.from.clone(),
            to: parsed.to.clone(),
            subject: parsed.subject.clone(),
            message_id: parsed.message_id.clone(),
            kind,
            kind_reason: reason,
            thread_token: None,
            subject_ticket: None,
            reply_text: String::new(),
            attachments: Vec::new(),
            oversized: Vec::new(),
            notification_removed: None,
            bounce: None,
            parsed,
            kept_attachments: Vec::new(),
        }
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
    /// Refuse mail with no single author that names a conversation,
    /// instead of holding it.
    refuse_ambiguous_author: bool,
    /// Who of the people copied on a message joins its conversation.
    participants: participants::ParticipantPolicy,
}

/// DKIM signatures a message may carry: each one verified costs a DNS
/// lookup, and no real path signs a message more than a few times.
const MAX_DKIM_SIGNATURES: usize = 10;

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
    /// How long reading one message may take; a message that takes longer
    /// is held (`reading_failed`), kept as it arrived.
    pub reading_budget: std::time::Duration,
}

impl Default for MimeLimits {
    fn default() -> Self {
        Self {
            max_parts: 500,
            max_depth: 20,
            max_headers: 500,
            max_header_bytes: 256 * 1024,
            reading_budget: std::time::Duration::from_secs(10),
        }
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
        let signatures = mail.headers.iter().filter(|(name, _)| name == "dkim-signature").count();
        if signatures > MAX_DKIM_SIGNATURES {
            return Some(format!("{signatures} DKIM signatures (the limit is {MAX_DKIM_SIGNATURES})"));
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
            refuse_ambiguous_author: false,
            participants: participants::ParticipantPolicy::default(),
        }
    }

    /// The same pipeline routed by other rules (the rules playground's dry runs).
    pub fn with_rules(&self, rules: std::sync::Arc<rules::LiveRules>) -> Self {
        Self { rules, ..self.clone() }
    }

    /// The same pipeline, holding mail from senders who may not write in the
    /// thread for an agent instead of refusing it.
    pub fn with_hold_not_allowed(mut self, hold: bool) -> Self {
        self.hold_not_allowed = hold;
        self
    }

    /// The same pipeline with the configuration's policies for senders who
    /// may not write, and for mail with no single author.
    pub fn with_auth_policy(mut self, auth: &crate::config::AuthConfig) -> Self {
        self.hold_not_allowed = auth.hold_not_allowed;
        self.refuse_ambiguous_author = auth.refuse_ambiguous_author;
        self
    }

    /// The same pipeline with other rules for people copied on a message.
    pub fn with_participants(mut self, policy: participants::ParticipantPolicy) -> Self {
        self.participants = policy;
        self
    }

    /// The desk's rules for people copied on a message.
    pub fn participant_policy(&self) -> &participants::ParticipantPolicy {
        &self.participants
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

    /// Runs SPF, DKIM and DMARC for a message that is not a bounce, for
    /// the client the connection or a trusted relay names (`relayed`).
    async fn authenticate(
        &self,
        envelope: &Envelope,
        analysis: &Analysis,
        raw: &[u8],
    ) -> Option<authenticate::AuthResults> {
        let auth = self.auth.as_ref()?;
        if analysis.kind == MailKind::Bounce {
            return None;
        }
        let client = relayed::checked_client(
            &envelope.relay,
            envelope.peer_ip,
            envelope.helo.as_deref(),
            &analysis.parsed.headers,
            &auth.trusted_authserv_ids,
        )?;
        Some(auth.check(&client, &envelope.mail_from, raw).await)
    }

    /// The store it writes to.
    pub fn store(&self) -> &Store {
        &self.store
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
            Ok((target, seen)) => {
                envelope.recipients.push((address, target));
                if let Some((thread, recent, sent)) = seen {
                    envelope.threads.push((thread, recent));
                    envelope.notifications.extend(sent);
                }
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
    ) -> Result<(RecipientTarget, Option<(Thread, RecentEmail, Option<crate::store::SentNotification>)>), RcptRefusal>
    {
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
                Ok(Some(seen)) => match self.store.user(parsed.recipient_id).await {
                    Ok(Some(holder)) if holder.erased_at.is_some() => Err(RcptRefusal::Revoked),
                    Ok(_) => Ok((RecipientTarget::Reply { token: token.to_owned(), parsed }, Some(seen))),
                    Err(_) => Err(RcptRefusal::Unavailable),
                },
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
        let refused: Vec<String> = envelope.refused.iter().map(|(a, r)| format!("{a}: {r}")).collect();
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

    /// Reads a message with the server's secret: tokens verified. A message
    /// over the complexity limits is only parsed (it is refused anyway).
    pub fn analyze(&self, envelope: &Envelope, raw: &[u8]) -> Option<Analysis> {
        let parsed = parse::parse(raw)?;
        if self.mime_limits.check(&parsed).is_some() {
            return Some(Analysis::unread(envelope, parsed));
        }
        let found = thread::find_thread(&recipient_tokens(envelope), &parsed, &self.signer, &self.domain);
        let thread_token = match &found {
            Some(ThreadRef::Token { via, token, .. }) => {
                Some(FoundToken { via: *via, token: token.clone(), verified: true })
            }
            _ => None,
        };
        let mut analysis = build_analysis(&envelope.mail_from, parsed, thread_token);
        // The notification the reply address came with, read with the thread at RCPT.
        let sent = match &found {
            Some(ThreadRef::Token { thread_id, recipient_id, .. }) => {
                envelope.notifications.iter().find(|n| n.thread_id == *thread_id && n.recipient_id == *recipient_id)
            }
            _ => None,
        };
        if let Some(sent) = sent.filter(|_| analysis.kind == MailKind::Human)
            && let Some(removed) = extract::echo::remove(&analysis.reply_text, &sent.text())
        {
            analysis.reply_text = removed.text;
            analysis.notification_removed =
                Some(NotificationRemoved { outbox_id: sent.outbox_id, lines: removed.lines, text: removed.removed });
        }
        Some(analysis)
    }

    /// Reads a message within the reading budget, catching panics: its
    /// analysis (`None`: not an email at all), or why reading failed. A large
    /// message is read where the runtime lets a worker block, so that other
    /// sessions go on meanwhile.
    fn read_within_budget(&self, envelope: &Envelope, raw: &[u8]) -> Result<Option<Analysis>, String> {
        let budget = self.mime_limits.reading_budget;
        let read = || budget::within(budget, || guarded(|| self.analyze(envelope, raw)));
        let may_block = raw.len() >= 256 * 1024
            && tokio::runtime::Handle::try_current()
                .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let result = if may_block { tokio::task::block_in_place(read) } else { read() };
        match result {
            Ok(Some(analysis)) => Ok(analysis),
            Ok(None) => Err("an internal error".to_owned()),
            Err(budget::Overrun) => Err(format!("reading it took longer than its budget of {} s", budget.as_secs())),
        }
    }

    /// Runs the whole pipeline on one message and stores it (with its
    /// notifications and log entry) when it is accepted. Every message
    /// answered 250 is kept as it arrived, in the same transaction.
    pub async fn ingest(&self, envelope: &Envelope, raw: &[u8]) -> Disposition {
        // Reading is pure code on hostile input: should any of it panic, or
        // run over its budget, the message is held for an admin with its
        // bytes, never lost.
        let analysis = match self.read_within_budget(envelope, raw) {
            Ok(analysis) => analysis,
            Err(why) => {
                tracing::error!(bytes = raw.len(), why, "reading a message failed; holding it for an admin");
                let plan = Plan::Hold {
                    code: "reading_failed",
                    reason: format!("mailgate could not read this message ({why}); it is kept as it arrived"),
                    thread_id: None,
                };
                return self.store_plan(envelope, raw, None, None, Ok((plan, rules::Decision::default()))).await;
            }
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
                return Disposition::TempFail { busy: error.is_busy(), reason: error.to_string() };
            }
        }
        let no_rules = rules::Decision::default;
        // Judged once; the sender checks cost DNS lookups: not for a message refused anyway.
        let too_complex = analysis.as_ref().and_then(|a| self.mime_limits.check(&a.parsed));
        let auth = match &analysis {
            Some(analysis) if too_complex.is_none() => self.authenticate(envelope, analysis, raw).await,
            _ => None,
        };
        let dmarc_verdict = self.dmarc_verdict(auth.as_ref());
        let outcome = match (&analysis, unsubscribes.first(), dmarc_verdict) {
            (_, Some((_, kind)), _) if unsubscribes.len() == envelope.recipients.len() => Ok((
                Plan::Log(Disposition::Dropped { reason: format!("unsubscribed from {kind} notifications") }, None),
                no_rules(),
            )),
            (None, _, _) => Ok((Plan::unreadable(), no_rules())),
            (Some(_), _, _) if let Some(why) = too_complex => {
                Ok((Plan::Log(Disposition::Rejected(Refusal::TooComplex(why)), None), no_rules()))
            }
            (Some(_), _, Some(verdict)) => Ok((verdict, no_rules())),
            (Some(analysis), _, None) => self.decide(envelope, analysis, auth.as_ref(), Mode::Ingest).await,
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
        let log = InboundLogEntry {
            received_at: now_ms(),
            peer: envelope.peer.clone(),
            helo: envelope.helo.clone(),
            mail_from: Some(envelope.mail_from.clone()),
            rcpt_to: all_recipients(envelope),
            message_id: analysis.and_then(|a| a.message_id.clone()),
            subject: analysis.and_then(|a| a.subject.as_deref()).map(logged_subject),
            rules: rule_names,
            auth: auth.map(authenticate::AuthResults::summary).unwrap_or_default(),
            ..InboundLogEntry::default()
        };
        // Originals are hashed and compressed here, on the session's task,
        // not on the writer's.
        let result = match outcome {
            Ok(Plan::Hold { code, reason, thread_id }) => {
                let held = NewHeld {
                    reason_code: code.to_owned(),
                    reason,
                    thread_id,
                    from_address: analysis.and_then(|a| a.from.clone()),
                    subject: analysis.and_then(|a| a.subject.clone()),
                };
                self.store_held(log, raw, held).await
            }
            Ok(Plan::OpenTicket { thread, first }) => self.store_new_ticket(log, raw, thread, *first).await,
            Ok(Plan::Log(disposition, thread_id)) => {
                self.store_unposted(log, envelope, raw, analysis, disposition, thread_id).await
            }
            Ok(Plan::Bounce(disposition, bounce)) => self.store_bounce(log, raw, disposition, &bounce).await,
            Ok(Plan::Store { message, thread }) => self.store_reply(log, raw, *message, &thread).await,
            Ok(Plan::Answer { reason, thread_id, notice }) => {
                let (mut log, disposition) = (log, Disposition::Dropped { reason });
                fill_log(&mut log, &disposition, thread_id);
                self.store.enqueue(&notice, Some(&log)).await.map(|_| disposition)
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(disposition) => disposition,
            Err(error) => {
                tracing::error!(error = %error, "storing an inbound message failed; answering 451");
                Disposition::TempFail { busy: error.is_busy(), reason: error.to_string() }
            }
        }
    }
}

impl Pipeline {
    /// Keeps a message for an admin, with its original and log entry.
    async fn store_held(&self, mut log: InboundLogEntry, raw: &[u8], held: NewHeld) -> Result<Disposition, StoreError> {
        let disposition = Disposition::Held { reason: held.reason.clone() };
        fill_log(&mut log, &disposition, held.thread_id);
        let original = Original::of(raw);
        log.original = Some(original.key.clone());
        self.store.hold(&held, &log, &original).await.map(|_| disposition)
    }

    /// Opens a ticket from an email, its first message kept as it arrived.
    async fn store_new_ticket(
        &self,
        mut log: InboundLogEntry,
        raw: &[u8],
        thread: crate::store::NewThread,
        mut first: crate::store::NewMessage,
    ) -> Result<Disposition, StoreError> {
        fill_log(&mut log, &Disposition::Dropped { reason: String::new() }, None);
        log.decision = "accepted".to_owned();
        log.reason = "opened a ticket from email".to_owned();
        let original = Original::of_message(raw, &first.attachments);
        log.original = Some(original.key.clone());
        first.original = Some(KeptOriginal::New(std::sync::Arc::new(original)));
        let (thread, message_id) = self.store.create_thread(thread, first, &[], Some(&log)).await?;
        Ok(Disposition::Accepted { thread_id: thread.id, thread_label: thread.label(), message_id, duplicate: false })
    }

    /// Records a message that is not posted: refused (with its header
    /// fields, and the refusal notice when its sender gets one), or dropped
    /// (answered 250, kept as it arrived).
    async fn store_unposted(
        &self,
        mut log: InboundLogEntry,
        envelope: &Envelope,
        raw: &[u8],
        analysis: Option<&Analysis>,
        disposition: Disposition,
        thread_id: Option<i64>,
    ) -> Result<Disposition, StoreError> {
        fill_log(&mut log, &disposition, thread_id);
        if matches!(disposition, Disposition::Rejected(_)) {
            log.headers = Some(header_block(raw));
        }
        let notice = match (&disposition, analysis) {
            (Disposition::Rejected(refusal), Some(analysis)) => self.refusal_notice(envelope, analysis, refusal).await,
            _ => None,
        };
        match (notice, &disposition) {
            (Some(notice), _) => self.store.enqueue(&notice, Some(&log)).await.map(|_| disposition),
            (None, Disposition::Dropped { .. }) => {
                let original = Original::of(raw);
                log.original = Some(original.key.clone());
                self.store.log_inbound_with_original(&log, &original).await.map(|()| disposition)
            }
            (None, _) => self.store.log_inbound(&log).await.map(|()| disposition),
        }
    }

    /// Records a delivery report, kept as it arrived, with what it says.
    async fn store_bounce(
        &self,
        mut log: InboundLogEntry,
        raw: &[u8],
        disposition: Disposition,
        bounce: &crate::store::Bounce,
    ) -> Result<Disposition, StoreError> {
        fill_log(&mut log, &disposition, None);
        let original = Original::of(raw);
        log.original = Some(original.key.clone());
        self.store.record_bounce(&log, bounce, Some(&original)).await.map(|()| disposition)
    }

    /// Posts a reply into its thread, kept as it arrived (its attachments
    /// are stored anyway: their base64 is left out of the original).
    async fn store_reply(
        &self,
        mut log: InboundLogEntry,
        raw: &[u8],
        mut message: crate::store::NewMessage,
        thread: &Thread,
    ) -> Result<Disposition, StoreError> {
        let label = thread.label();
        let accepted = Disposition::Accepted {
            thread_id: thread.id,
            thread_label: label.clone(),
            message_id: 0,
            duplicate: false,
        };
        fill_log(&mut log, &accepted, Some(thread.id));
        log.reason = format!("reply from {} stored in {label}", log.mail_from.as_deref().unwrap_or(""));
        let original = Original::of_message(raw, &message.attachments);
        log.original = Some(original.key.clone());
        message.original = Some(KeptOriginal::New(std::sync::Arc::new(original)));
        let commands = message.extras.as_ref().and_then(|extras| extras.commands.clone());
        let status = message.extras.as_ref().and_then(|extras| extras.status);
        let (message_id, duplicate) = match self.store.insert_message(message, Some(log)).await? {
            Inserted::New(id) => (id, false),
            Inserted::Duplicate(id) => (id, true),
        };
        if let (Some((by, lines)), false) = (commands, duplicate) {
            // An agent's commands changed the conversation: webhooks hear of it.
            let data = serde_json::json!({
                "thread_id": thread.id, "kind": thread.kind, "ticket_number": thread.ticket_number,
                "by": by, "commands": lines, "status": status, "message_id": message_id,
            });
            if let Err(error) = self.store.queue_event("thread.updated", data.clone()).await {
                tracing::warn!(%error, thread_id = thread.id, "queueing the thread.updated event failed");
            }
            // Closing or reopening by email is announced as it is from the API.
            let event = match status {
                Some(crate::store::ThreadStatus::Closed) => Some("thread.closed"),
                Some(crate::store::ThreadStatus::Open) => Some("thread.reopened"),
                None => None,
            };
            if let Some(event) = event
                && let Err(error) = self.store.queue_event(event, data).await
            {
                tracing::warn!(%error, thread_id = thread.id, event, "queueing the event failed");
            }
        }
        Ok(Disposition::Accepted { thread_id: thread.id, thread_label: label, message_id, duplicate })
    }
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
    log.decision = disposition.label().to_owned();
    log.reason = match disposition {
        Disposition::Accepted { .. } => String::new(),
        Disposition::Rejected(_) => reply::for_disposition(disposition).text,
        other => other.reason().unwrap_or_default().to_owned(),
    };
    log.smtp_reply = reply::for_disposition(disposition).to_string();
    log.thread_id = thread_id;
}

/// How much of a refused message's header block its log entry keeps.
const REFUSED_HEADERS_KEPT: usize = 4 * 1024;

/// The header fields of a message as it arrived (up to the first empty
/// line, at most [`REFUSED_HEADERS_KEPT`] bytes), as text: what the log keeps
/// of refused mail, whose body is not kept.
fn header_block(raw: &[u8]) -> String {
    let shown = &raw[..raw.len().min(REFUSED_HEADERS_KEPT)];
    // The header section ends at the first empty line, however its line
    // ends are written (LF LF, CRLF CRLF, or a mix: LF CRLF).
    let end = shown
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .find(|(i, _)| matches!(&shown[i + 1..], [b'\n', ..] | [b'\r', b'\n', ..]))
        .map(|(i, _)| i + 1);
    String::from_utf8_lossy(&shown[..end.unwrap_or(shown.len())]).trim_end().to_owned()
}

/// The longest Subject the inbound log keeps, in characters (the message as
/// it arrived keeps all of it).
const LOGGED_SUBJECT_CHARS: usize = 200;

/// A Subject as the inbound log keeps it: at most
/// [`LOGGED_SUBJECT_CHARS`], cut with an ellipsis.
fn logged_subject(subject: &str) -> String {
    match subject.char_indices().nth(LOGGED_SUBJECT_CHARS) {
        Some((cut, _)) => format!("{}…", &subject[..cut]),
        None => subject.to_owned(),
    }
}

/// `read()`, or `None` when it panics: reading is pure code on hostile
/// input, and a panic in it must hold the message, not take down the
/// session (which would answer nothing after the sender sent it all).
fn guarded<T>(read: impl FnOnce() -> T) -> Option<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(read)).ok()
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

#[cfg(test)]
mod header_tests {
    #[test]
    fn the_kept_header_fields_end_at_the_first_empty_line_however_lines_end() {
        assert_eq!(super::header_block(b"Subject: a\r\nFrom: b\r\n\r\nbody"), "Subject: a\r\nFrom: b");
        assert_eq!(super::header_block(b"Subject: a\nFrom: b\n\nbody"), "Subject: a\nFrom: b");
        assert_eq!(super::header_block(b"Subject: a\n\r\nsecret body"), "Subject: a");
        assert_eq!(super::logged_subject(&"é".repeat(300)).chars().count(), 201);
    }
}
