//! Reading a kept message again: `explain` (every step's verdict for one
//! message) and `replay` (today's reading and rules against what was
//! decided at receipt). Both read the original as it arrived and the
//! database as it is now, and write nothing. The sender checks (SPF, DKIM,
//! DMARC) are not run again: their results at receipt are used, so that a
//! replay changes only what the reading or the rules change.

use super::authenticate::AuthResults;
use super::authorize::{Authorization, authorize};
use super::extract::{self, Extraction};
use super::thread::{self, Signal, ThreadRef};
use super::{AttachmentInfo, DryRun, Envelope, Mode, Pipeline, recipient_tokens};
use crate::store::{InboundLogEntry, StoreError};
use serde::Serialize;

/// Every step's verdict for one kept message.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    /// What happened at receipt, as the inbound log recorded it.
    pub recorded: InboundLogEntry,
    /// Size of the message as it arrived, in bytes.
    pub size: usize,
    /// From address.
    pub from: Option<String>,
    /// Subject.
    pub subject: Option<String>,
    /// Message-ID.
    pub message_id: Option<String>,
    /// `human`, `auto_reply` or `bounce`, and the signal that decided it.
    pub classification: String,
    /// SPF, DKIM and DMARC as checked at receipt.
    pub authentication: String,
    /// Envelope recipients refused today, with why (an expired token, a thread gone).
    pub refused_recipients: Vec<String>,
    /// Each threading signal, in order of trust, with what it gave.
    pub threading: Vec<Signal>,
    /// Whether the sender may write in the conversation found.
    pub authorization: String,
    /// What extraction kept and cut, and why.
    pub extraction: Extraction,
    /// Attachments kept.
    pub attachments: Vec<AttachmentInfo>,
    /// The text stored at receipt, when it was stored.
    pub stored_text: Option<String>,
    /// The decision today: every rule considered, the answer the sender would get.
    pub now: DryRun,
}

/// One kept message read again, beside what was decided at receipt.
#[derive(Debug, Clone, Serialize)]
pub struct Replayed {
    /// Its inbound-log entry.
    pub log_id: i64,
    /// The message it became, if stored.
    pub stored_message: Option<i64>,
    /// From address.
    pub from: Option<String>,
    /// Subject.
    pub subject: Option<String>,
    /// At receipt.
    pub before: Outcome,
    /// Today.
    pub after: Outcome,
}

impl Replayed {
    /// Whether the decision (kind, conversation or rules) differs.
    pub fn decision_changed(&self) -> bool {
        (&self.before.decision, self.before.thread_id, &self.before.rules)
            != (&self.after.decision, self.after.thread_id, &self.after.rules)
    }

    /// Whether a stored message's text would differ.
    pub fn text_changed(&self) -> bool {
        matches!((&self.before.text, &self.after.text), (Some(before), Some(after)) if before != after)
    }
}

/// A decision and the text it posted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// `accepted`, `dropped`, `held`, `rejected`, ...
    pub decision: String,
    /// Why, in words.
    pub reason: String,
    /// The conversation.
    pub thread_id: Option<i64>,
    /// The routing rules that matched, comma separated.
    pub rules: String,
    /// What those rules do besides deciding (queue, priority, tags, paging);
    /// empty for a decision recorded at receipt.
    #[serde(default)]
    pub effects: String,
    /// The text posted (stored messages only).
    pub text: Option<String>,
}

impl Pipeline {
    /// Explains the reading of `raw`, received as `recorded` says; `stored`
    /// is the text stored from it, if any. `None` when it cannot be read.
    pub async fn explain(
        &self,
        recorded: InboundLogEntry,
        raw: &[u8],
        stored_text: Option<String>,
    ) -> Result<Option<Explanation>, StoreError> {
        let envelope = self.recorded_envelope(&recorded).await;
        let Some(analysis) = self.analyze(&envelope, raw) else { return Ok(None) };
        let tokens = recipient_tokens(&envelope);
        let threading = thread::signals(&tokens, &analysis.parsed, &self.signer, &self.domain);
        let authorization = self.authorization(&envelope, &analysis).await?;
        let mut extraction = extract::explain(&analysis.parsed);
        if let Some(removed) = &analysis.notification_removed {
            extraction = extraction.with_notification_removed(&analysis.reply_text, removed);
        }
        let auth = AuthResults::from_summary(&recorded.auth);
        Ok(Some(Explanation {
            size: raw.len(),
            from: analysis.from.clone(),
            subject: analysis.subject.clone(),
            message_id: analysis.message_id.clone(),
            classification: {
                let kind = serde_json::to_value(analysis.kind).ok();
                let kind = kind.as_ref().and_then(serde_json::Value::as_str).unwrap_or("human").to_owned();
                match analysis.kind_reason.as_str() {
                    "" => kind,
                    reason => format!("{kind}: {reason}"),
                }
            },
            authentication: match recorded.auth.as_str() {
                "" => "not checked at receipt".to_owned(),
                summary => {
                    format!("{summary}; judged for {}", super::relayed::ClientSource::describe(&via_of(summary)))
                }
            },
            refused_recipients: envelope.refused.iter().map(|(a, why)| format!("{a}: {why}")).collect(),
            threading,
            authorization,
            extraction,
            attachments: analysis.attachments.clone(),
            stored_text,
            now: self.dry_run_with(&envelope, Some(analysis), auth, Mode::Replay).await,
            recorded,
        }))
    }

    /// Reads `raw` (received as `recorded` says) again with today's reading
    /// and this pipeline's rules; `stored_text` is what was posted from it.
    pub async fn replay(&self, recorded: &InboundLogEntry, raw: &[u8], stored_text: Option<String>) -> Replayed {
        let envelope = self.recorded_envelope(recorded).await;
        let analysis = self.analyze(&envelope, raw);
        let (from, subject) = match &analysis {
            Some(analysis) => (analysis.from.clone(), analysis.subject.clone()),
            None => (None, None),
        };
        let text = analysis.as_ref().map(|a| a.reply_text.clone());
        let auth = AuthResults::from_summary(&recorded.auth);
        let now = self.dry_run_with(&envelope, analysis, auth, Mode::Replay).await;
        let after_text = match (&stored_text, now.decision.as_str()) {
            (Some(_), "accepted") => text,
            _ => None,
        };
        Replayed {
            log_id: recorded.id,
            stored_message: recorded.stored_message,
            from,
            subject,
            before: Outcome {
                decision: recorded.decision.clone(),
                reason: recorded.reason.clone(),
                thread_id: recorded.thread_id,
                rules: recorded.rules.clone(),
                effects: String::new(),
                text: stored_text,
            },
            after: Outcome {
                decision: now.decision,
                reason: now.reason,
                thread_id: now.thread_id,
                rules: now.routing.rules.join(","),
                effects: now.routing.actions.describe(),
                text: after_text,
            },
        }
    }

    /// The envelope a recorded message came with, its recipients checked
    /// again as at RCPT time.
    pub(super) async fn recorded_envelope(&self, recorded: &InboundLogEntry) -> Envelope {
        let recipients: Vec<String> =
            recorded.rcpt_to.split(',').filter(|r| !r.is_empty()).map(str::to_owned).collect();
        let mail_from = recorded.mail_from.clone().unwrap_or_default();
        let mut envelope = self.envelope(&recorded.peer, mail_from, &recipients).await;
        envelope.helo.clone_from(&recorded.helo);
        envelope
    }

    /// Whether the sender may write in the conversation the message points
    /// at, in words.
    async fn authorization(&self, envelope: &Envelope, analysis: &super::Analysis) -> Result<String, StoreError> {
        let tokens = recipient_tokens(envelope);
        let reference = thread::find_thread(&tokens, &analysis.parsed, &self.signer, &self.domain);
        let thread = match &reference {
            Some(ThreadRef::Token { thread_id, .. }) => self.store.thread(*thread_id).await?,
            Some(ThreadRef::TicketNumber { number, .. }) => self.store.ticket_by_number(*number).await?,
            None => return Ok("no conversation found: nothing to authorize".to_owned()),
        };
        let Some(thread) = thread else { return Ok("the conversation named does not exist".to_owned()) };
        let Some(site) = self.store.site(thread.site_id).await? else {
            return Ok("the conversation's site does not exist".to_owned());
        };
        let sender = match &analysis.from {
            Some(from) => self.store.user_by_email(from).await?,
            None => None,
        };
        let (Some(reference), label) = (reference, thread.label()) else {
            return Ok(String::new());
        };
        let listed = self.listed(&thread, &site, sender.as_ref()).await?;
        Ok(match authorize(&thread, &site, &reference, sender.as_ref(), listed) {
            Authorization::Allowed { author_id } => format!("allowed: user {author_id} may write in {label}"),
            Authorization::Denied(reason) => format!("denied: {reason} ({label})"),
        })
    }
}

/// Where recorded checks' client came from (`connection` when not said).
fn via_of(summary: &str) -> String {
    AuthResults::from_summary(summary)
        .map(|a| a.via)
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "connection".to_owned())
}
