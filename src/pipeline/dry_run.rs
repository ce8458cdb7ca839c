//! Dry runs: what a message would get, with every step explained, storing
//! nothing (`inspect`, `rules test`, the admin API's rule tests).

use super::{
    Analysis, Disposition, Envelope, InboundLogEntry, Mode, Pipeline, Plan, Serialize, authenticate, fill_log, rules,
};

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

/// A message pasted as text for a dry run, with the envelope it is read with.
#[derive(Debug, Clone)]
pub struct PastedMessage {
    /// The text with CRLF line ends, as SMTP would carry it.
    pub raw: Vec<u8>,
    /// The envelope sender: as given, else the From address.
    pub mail_from: String,
    /// The envelope recipients: as given, else `support@DOMAIN`.
    pub rcpt: Vec<String>,
}

impl PastedMessage {
    /// Reads `text` as a message sent by `mail_from` (else its From) to
    /// `rcpt` (else the support address of `domain`).
    pub fn new(text: &str, mail_from: Option<&str>, rcpt: Vec<String>, domain: &str) -> Self {
        let raw = text.replace("\r\n", "\n").replace('\n', "\r\n").into_bytes();
        let mail_from = match mail_from {
            Some(given) => given.to_owned(),
            None => super::analyze("", &[], &raw).and_then(|a| a.from).unwrap_or_default(),
        };
        let rcpt = if rcpt.is_empty() { vec![format!("support@{domain}")] } else { rcpt };
        Self { raw, mail_from, rcpt }
    }
}

impl Pipeline {
    /// What [`Pipeline::ingest`] would do with a message, without storing
    /// anything: the decision, the SMTP answer, and every rule considered.
    pub async fn dry_run(&self, envelope: &Envelope, raw: &[u8]) -> DryRun {
        let analysis = self.analyze(envelope, raw);
        let auth = match &analysis {
            // A pasted message came over no connection: the sender checks
            // cannot run, and the dry run shows what the rules do with an
            // author whose domain passed them (said so in its results).
            Some(analysis) if envelope.peer_ip.is_none() => {
                analysis.from.as_deref().map(authenticate::AuthResults::assumed_for)
            }
            Some(analysis) => self.authenticate(envelope, analysis, raw).await,
            None => None,
        };
        self.dry_run_with(envelope, analysis, auth, Mode::DryRun).await
    }

    /// A dry run with the sender checks' results given (as recorded at
    /// receipt, for `explain` and `replay`), in `mode`.
    pub(super) async fn dry_run_with(
        &self,
        envelope: &Envelope,
        analysis: Option<Analysis>,
        auth: Option<authenticate::AuthResults>,
        mode: Mode,
    ) -> DryRun {
        let decided = match (analysis, self.dmarc_verdict(auth.as_ref())) {
            (None, _) => Ok((Plan::unreadable(), rules::Decision::default())),
            (Some(_), Some(verdict)) => Ok((verdict, rules::Decision::default())),
            (Some(analysis), None) => self.decide(envelope, &analysis, auth.as_ref(), mode).await,
        };
        let (plan, routing) = match decided {
            Ok((plan, decision)) => (Ok(plan), decision),
            Err(e) => (Err(e), rules::Decision::default()),
        };
        let (disposition, thread) = match plan {
            Ok(Plan::Log(disposition, thread_id)) => (disposition, thread_id),
            Ok(Plan::Bounce(disposition, _)) => (disposition, None),
            Ok(Plan::Answer { reason, thread_id, .. }) => (Disposition::Dropped { reason }, thread_id),
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
                    thread_label: thread.label(),
                    message_id: 0,
                    duplicate: false,
                },
                Some(thread.id),
            ),
            Err(error) => (Disposition::TempFail { busy: error.is_busy(), reason: error.to_string() }, None),
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
}
