//! Step 7, the decision: what one analysed message gets (posted, a new ticket,
//! held, dropped, refused), with the routing rules, authorization, the
//! loop breaker and the plan's promises; and how a bounce is tied to the
//! notification it reports on. Reads only; `ingest` stores the plan.

use super::{
    Analysis, Authorization, Bounce, DeferCause, Disposition, Envelope, LOOP_WINDOW_MS, MailKind, Mode, NewMessage,
    NewOutbox, NewThread, Pipeline, RecipientTarget, Refusal, Routing, Source, StoreError, Thread, ThreadRef,
    authorize, commands, dedup_id, extract, now_ms, recipient_tokens, rules, thread,
};

/// What `decide` concluded.
pub(super) enum Plan {
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
    /// Post nothing, answer 250, and tell the sender why by mail (an
    /// agent's unknown command).
    Answer {
        /// Why nothing was posted.
        reason: String,
        /// The thread it was for.
        thread_id: Option<i64>,
        /// The mail that tells the sender.
        notice: Box<NewOutbox>,
    },
}

impl Plan {
    /// A message that cannot be read as an email at all (no header section,
    /// or a structure no reader makes sense of): held for an admin with its
    /// bytes, never refused and never dropped.
    pub(super) fn unreadable() -> Self {
        Plan::Hold {
            code: "reading_failed",
            reason: "mailgate could not read this message as an email (no header section, or a broken MIME \
                     structure); it is kept as it arrived"
                .to_owned(),
            thread_id: None,
        }
    }
}

/// What `decide` found for a message that may be posted: the thread, its
/// site, the author allowed there, and whether the author's commands count.
pub(super) struct Found {
    thread: Option<Thread>,
    site: Option<crate::store::Site>,
    author: Option<crate::store::User>,
    /// An agent on their own reply address, their domain authenticated.
    may_command: bool,
    /// The author's domain is authenticated (DMARC pass, or an aligned SPF
    /// or DKIM pass without a DMARC record): what copying people in and
    /// sparing direct recipients a notification ask for.
    proved_author: bool,
}

impl Pipeline {
    /// The notice that tells a person why their mail was refused, when one
    /// should go: only to a sender we know (a user with that From address,
    /// who is also the envelope sender), only for a person's mail (auto-replies
    /// and bounces never reach here), at most once per address per hour.
    pub(super) async fn refusal_notice(
        &self,
        envelope: &Envelope,
        analysis: &Analysis,
        refusal: &Refusal,
    ) -> Option<NewOutbox> {
        let kind = match refusal {
            Refusal::NoNewChat { .. } => "refusal_no_new_chat",
            Refusal::NotAllowed(_) => "refusal_not_allowed",
            Refusal::ThreadClosed => "refusal_thread_closed",
            Refusal::DmarcFailed(_)
            | Refusal::TooComplex(_)
            | Refusal::AmbiguousAuthor(_)
            | Refusal::Unauthenticated(_) => return None,
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
        let emergency = match refusal {
            Refusal::NoNewChat { emergency: Some(address) } | Refusal::Rule { emergency: Some(address), .. } => {
                address.clone()
            }
            _ => String::new(),
        };
        Some(NewOutbox {
            kind: kind.to_owned(),
            thread_id: None,
            recipient_id: Some(user.id),
            to_address: user.email,
            context: serde_json::json!({
                "subject": analysis.subject.as_deref().unwrap_or(""),
                "reason": reason,
                "emergency": emergency,
            }),
        })
    }

    /// Ties a bounce to the notification it is about, and says whether it
    /// counts toward suppressing an address. It counts only when it arrived
    /// at that notification's own VERP address (`bounces+TOKEN@`, whose MAC
    /// verifies), names the address the notification went to, reports a
    /// permanent failure, and no other report about the same notification
    /// counts already. The returned copy's Message-ID may confirm the tie
    /// (a different one undoes it), never make it: anyone who saw a
    /// notification knows its Message-ID. Reports to any other address are
    /// recorded, tied when the Message-ID names a notification, uncounted.
    pub(super) async fn bounce_plan(&self, envelope: &Envelope, analysis: &Analysis) -> Result<Plan, StoreError> {
        let report = analysis.bounce.clone().unwrap_or_default();
        let from_verp = envelope.recipients.iter().find_map(|(_, t)| match t {
            RecipientTarget::Bounces { outbox_id } => *outbox_id,
            _ => None,
        });
        let returned_id = report.original_message_id.as_deref().map(|id| id.trim_matches(['<', '>']));
        let same_id = |item: &crate::store::OutboxItem| {
            item.rfc_message_id.as_deref().map(|sent| sent.trim_matches(['<', '>'])) == returned_id
        };
        let mut outbox = None;
        if let Some(id) = from_verp {
            outbox = self.store.outbox_item(id).await?;
        }
        let verp_tied = outbox.is_some();
        if outbox.is_none()
            && let Some(id) =
                returned_id.filter(|id| id.rsplit_once('@').is_some_and(|(_, d)| d.eq_ignore_ascii_case(&self.domain)))
        {
            outbox = self.store.notification_by_message_id(id).await?;
        }
        let names_the_address = match (&report.failed_recipient, &outbox) {
            (Some(address), Some(item)) => address.eq_ignore_ascii_case(&item.to_address),
            _ => false,
        };
        let hard = report.severity.as_deref() == Some("hard");
        let copy_differs = returned_id.is_some() && outbox.as_ref().is_some_and(|item| !same_id(item));
        let countable = verp_tied && names_the_address && hard && !copy_differs;
        let already = match (&outbox, countable) {
            (Some(item), true) => self.store.bounce_counted_for(item.id).await?,
            _ => false,
        };
        let counted = countable && !already;
        let standing = match &outbox {
            None => "; tied to no notification of ours, so it does not count",
            Some(_) if !verp_tied => "; not sent to that notification's own bounce address, so it does not count",
            Some(_) if copy_differs => "; the returned copy is of another message, so it does not count",
            Some(_) if !names_the_address => {
                "; does not name the address the notification went to, so it does not count"
            }
            Some(_) if !hard => "; not a permanent failure, so it does not count",
            Some(_) if already => "; that notification's failure already counts, so it does not count again",
            Some(_) => "; counts toward suppressing the address",
        };
        let recipient = match (&report.failed_recipient, &outbox) {
            (Some(address), _) => Some(address.clone()),
            (None, Some(item)) => Some(item.to_address.clone()),
            (None, None) => None,
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
        Ok(Plan::Bounce(Disposition::Dropped { reason }, Box::new(bounce)))
    }

    /// What a message that names a conversation (`reference`), or opens a
    /// ticket (`None`), gets when its author is not proven enough for that:
    /// `None` when it may go on.
    ///
    /// One author first: exactly one `From:` field with one mailbox, read
    /// the same by the sender checks (else `ambiguous_author`). Then proof:
    /// the author's own reply address suffices unless their domain's DMARC
    /// policy was not passed; every other way in (someone else's reply
    /// address, a Message-ID, the body marker, a subject tag, a new ticket)
    /// needs the author's domain authenticated (DMARC pass, or an aligned
    /// SPF or DKIM pass where the domain publishes no DMARC record), else
    /// `unauthenticated_fallback`. See docs/security.md.
    fn author_gate(
        &self,
        reference: Option<&ThreadRef>,
        analysis: &Analysis,
        auth: Option<&super::authenticate::AuthResults>,
        sender: Option<&crate::store::User>,
        thread_id: Option<i64>,
    ) -> Option<Plan> {
        let author = analysis.from.as_deref().unwrap_or("");
        let problem = match (&analysis.parsed.ambiguous_author, auth) {
            (Some(problem), _) => Some(problem.clone()),
            (None, Some(results)) if !results.is_about(author) => Some(format!(
                "the sender checks read {} as its author",
                if results.author.is_empty() { "no single address".to_owned() } else { results.author.clone() }
            )),
            _ => None,
        };
        if let Some(problem) = problem {
            let reason = format!("the message has no single author: {problem}");
            return Some(match (self.refuse_ambiguous_author, thread_id) {
                (false, Some(_)) => Plan::Hold { code: "ambiguous_author", reason, thread_id },
                _ => Plan::Log(Disposition::Rejected(Refusal::AmbiguousAuthor(problem)), thread_id),
            });
        }
        if auth.is_some_and(|results| results.authenticates(author)) {
            return None;
        }
        let own_reply_address = matches!(reference, Some(ThreadRef::Token { via: thread::Via::Recipient, recipient_id, .. })
            if sender.is_some_and(|user| user.id == *recipient_id));
        let dmarc = auth.map_or("", |results| results.dmarc.as_str());
        let accepting_failures =
            self.auth.as_ref().is_some_and(|a| a.on_fail == super::authenticate::OnDmarcFail::Accept);
        match (own_reply_address, dmarc) {
            // DNS did not answer: the sending server will try again.
            (true, "temperror") => {
                let reason = format!("the DMARC policy of {author}'s domain could not be read (DNS); try later");
                return Some(Plan::Log(Disposition::Deferred { reason, cause: DeferCause::Dns }, thread_id));
            }
            // No DMARC record (or no checks at all), or a desk that only records failures.
            (true, "none" | "") => return None,
            (true, "fail") if accepting_failures => return None,
            // A broken DMARC record proves nothing either way: an agent decides.
            _ => {}
        }
        let checked = auth.map_or_else(|| "not checked".to_owned(), super::authenticate::AuthResults::summary);
        let way = match reference {
            Some(reference) => format!("names its conversation only by {}", via_words(reference.via())),
            None => "would open a ticket".to_owned(),
        };
        match thread_id {
            Some(_) => Some(Plan::Hold {
                code: "unauthenticated_fallback",
                reason: format!("{author} is not authenticated ({checked}) and the message {way}"),
                thread_id,
            }),
            // DNS did not answer: a temporary failure, never a refusal.
            None if auth.is_some_and(|a| a.dmarc == "temperror" || (a.spf == "temperror" && a.dmarc != "fail")) => {
                let reason = format!("{author} could not be authenticated: DNS did not answer ({checked}); try later");
                Some(Plan::Log(Disposition::Deferred { reason, cause: DeferCause::Dns }, None))
            }
            None => Some(Plan::Log(Disposition::Rejected(Refusal::Unauthenticated(author.to_owned())), None)),
        }
    }

    /// The notification a message answers, found by its Message-ID in
    /// In-Reply-To or References (at most 20 looked up), as the thread and
    /// recipient it was sent about.
    pub(super) async fn answered_notification(&self, analysis: &Analysis) -> Result<Option<ThreadRef>, StoreError> {
        for (via, id) in thread::our_message_ids(&analysis.parsed, &self.domain, 20) {
            if let Some(item) = self.store.notification_by_message_id(id).await?
                && let (Some(thread_id), Some(recipient_id)) = (item.thread_id, item.recipient_id)
            {
                return Ok(Some(ThreadRef::Token { via, token: id.to_owned(), thread_id, recipient_id }));
            }
        }
        Ok(None)
    }

    /// Decides what to do with an analysed message (reads only), with the
    /// sender checks' results (`None` when not checked).
    pub(super) async fn decide(
        &self,
        envelope: &Envelope,
        analysis: &Analysis,
        auth: Option<&super::authenticate::AuthResults>,
        mode: Mode,
    ) -> Result<(Plan, rules::Decision), StoreError> {
        let explain = mode != Mode::Ingest;
        if analysis.kind == MailKind::Bounce {
            return Ok((self.bounce_plan(envelope, analysis).await?, rules::Decision::default()));
        }
        // RFC 5321: postmaster@ must take mail; it is recorded, not routed.
        if !envelope.recipients.is_empty() && envelope.recipients.iter().all(|(_, t)| *t == RecipientTarget::Postmaster)
        {
            let plan = Plan::Log(Disposition::Dropped { reason: "mail to postmaster, recorded".to_owned() }, None);
            return Ok((plan, rules::Decision::default()));
        }
        let mut reference =
            thread::find_thread(&recipient_tokens(envelope), &analysis.parsed, &self.signer, &self.domain);
        // A notification's Message-ID is random: one answered is looked up
        // (trusted after the reply address, before the body marker and tag).
        if !matches!(&reference, Some(ThreadRef::Token { via, .. }) if *via != thread::Via::BodyMarker)
            && let Some(found) = self.answered_notification(analysis).await?
        {
            reference = Some(found);
        }
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
        // The security gate comes first: no rule can let a stranger in. An
        // admin's release is the proof the gate asks for.
        if mode != Mode::Release
            && let (Some(reference), Some(thread)) = (&reference, &thread)
            && let Some(plan) = self.author_gate(Some(reference), analysis, auth, sender.as_ref(), Some(thread.id))
        {
            return Ok((plan, rules::Decision::default()));
        }
        let mut author = None;
        if let (Some(reference), Some(thread), Some(site)) = (&reference, &thread, &site) {
            let listed = self.listed(thread, site, sender.as_ref()).await?;
            match authorize::authorize(thread, site, reference, sender.as_ref(), listed) {
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
                        reason: format!("{reason} ({})", thread.label()),
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
                    emergency: None,
                }),
                thread_id,
            ),
            Some(rules::Outcome::Drop) => Plan::Log(Disposition::Dropped { reason: named("dropped") }, thread_id),
            Some(rules::Outcome::OpenTicket { ticket_type }) if thread.is_none() => {
                match self.author_gate(None, analysis, auth, sender.as_ref(), None).filter(|_| mode != Mode::Release) {
                    Some(refused) => refused,
                    None => {
                        self.open_ticket_plan(envelope, analysis, sender.as_ref(), ticket_type, &decision, &rules)
                            .await?
                    }
                }
            }
            outcome => {
                let accepted = matches!(outcome, Some(rules::Outcome::Accept));
                // An agent's commands count only on their own reply address,
                // with their domain authenticated (DMARC, or aligned DKIM).
                let own_address = matches!(&reference, Some(ThreadRef::Token { via: thread::Via::Recipient, recipient_id, .. })
                    if author.as_ref().is_some_and(|a| a.id == *recipient_id));
                let proved_agent = author.as_ref().is_some_and(crate::store::User::is_agent)
                    && analysis.from.as_deref().is_some_and(|from| auth.is_some_and(|a| a.proves_strongly(from)));
                let may_command = own_address && proved_agent && mode != Mode::Release;
                let proved_author =
                    analysis.from.as_deref().is_some_and(|from| auth.is_some_and(|a| a.authenticates(from)));
                let found = Found { thread, site, author, may_command, proved_author };
                self.default_plan(envelope, analysis, found, accepted, &decision, mode).await?
            }
        };
        // A customer whose plan pages on-call is told the emergency route
        // (only when the message is proved theirs: a forged From learns nothing).
        let proved = analysis.from.as_deref().is_some_and(|from| auth.is_some_and(|a| a.authenticates(from)));
        let route = || rules.ticket_addresses.first().map(|local| format!("{local}@{}", self.domain));
        let plan = match plan {
            Plan::Log(Disposition::Rejected(Refusal::NoNewChat { .. }), id) if input.has_on_call && proved => {
                Plan::Log(Disposition::Rejected(Refusal::NoNewChat { emergency: route() }), id)
            }
            Plan::Log(Disposition::Rejected(Refusal::Rule { code, status, text, notice, .. }), id)
                if notice.as_deref() == Some("refusal_no_new_chat") && input.has_on_call && proved =>
            {
                let refusal = Refusal::Rule { code, status, text, notice, emergency: route() };
                Plan::Log(Disposition::Rejected(refusal), id)
            }
            plan => plan,
        };
        Ok((plan, decision))
    }

    /// Whether `sender` writes in `thread` as a participant copied in and
    /// added (read only for someone who is not its customer side or an agent).
    pub(super) async fn listed(
        &self,
        thread: &Thread,
        site: &crate::store::Site,
        sender: Option<&crate::store::User>,
    ) -> Result<bool, StoreError> {
        match sender {
            Some(user) if !user.is_agent() && !authorize::is_participant(thread, site, user) => {
                self.store.is_active_participant(thread.id, user.id).await
            }
            _ => Ok(false),
        }
    }

    /// What the rules see of a message.
    pub(super) async fn rule_input(
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
    pub(super) async fn org_features(&self, org: i64) -> Result<(bool, bool), StoreError> {
        let mut features = (false, false);
        for site in self.store.sites_of_organization(org).await? {
            let (tickets, on_call) = self.store.site_features(site.id).await?;
            features = (features.0 || tickets, features.1 || on_call);
        }
        Ok(features)
    }

    /// The pipeline's own decision, with the rules' routing actions applied,
    /// for a message to `found` (thread, site, and the author allowed there).
    pub(super) async fn default_plan(
        &self,
        envelope: &Envelope,
        analysis: &Analysis,
        found: Found,
        accepted_by_rule: bool,
        decision: &rules::Decision,
        mode: Mode,
    ) -> Result<Plan, StoreError> {
        let (may_command, proved_author) = (found.may_command, found.proved_author);
        let (Some(thread), Some(site), Some(author)) = (found.thread, found.site, found.author) else {
            let to_support = envelope.recipients.iter().any(|(_, t)| *t == RecipientTarget::Support);
            if !to_support && envelope.recipients.iter().all(|(_, t)| *t == RecipientTarget::Postmaster) {
                return Ok(Plan::Log(Disposition::Dropped { reason: "mail to postmaster, recorded".to_owned() }, None));
            }
            if analysis.kind == MailKind::AutoReply {
                let reason = format!("auto-reply: {}", analysis.kind_reason);
                return Ok(Plan::Log(Disposition::Dropped { reason }, None));
            }
            let refusal = if to_support { Refusal::NoNewChat { emergency: None } } else { Refusal::UnknownThread };
            return Ok(Plan::Log(Disposition::Rejected(refusal), None));
        };
        if analysis.kind == MailKind::AutoReply && !accepted_by_rule {
            let reason = format!("auto-reply: {}", analysis.kind_reason);
            return Ok(Plan::Log(Disposition::Dropped { reason }, Some(thread.id)));
        }
        // An agent's lines that look like commands never reach the customer
        // unless they count: held for an admin (released, they are a note).
        let unproven = author.is_agent() && !may_command && commands::looks_like_commands(&analysis.reply_text);
        if unproven && mode != Mode::Release {
            let reason = format!(
                "{} wrote command lines (#...), which count only on the agent's own reply address with their domain \
                 proved (DMARC pass or aligned DKIM); held so that nothing meant for agents reaches the customer",
                author.email
            );
            return Ok(Plan::Hold { code: "unproven_command", reason, thread_id: Some(thread.id) });
        }
        let given = match may_command {
            true => commands::read(&analysis.reply_text),
            false => commands::Commands::None,
        };
        let (given, lines, text) = match given {
            commands::Commands::None => (Vec::new(), Vec::new(), None),
            commands::Commands::Unknown { line } => return Ok(self.unknown_command(analysis, &author, &thread, &line)),
            commands::Commands::Given { commands, lines, rest } => (commands, lines, Some(rest)),
        };
        if thread.status == crate::store::ThreadStatus::Closed && !given.contains(&commands::Command::Reopen) {
            return Ok(Plan::Log(Disposition::Rejected(Refusal::ThreadClosed), Some(thread.id)));
        }
        let attachments = analysis.kept_attachments.clone();
        let mut body = text.unwrap_or_else(|| analysis.reply_text.clone());
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
        if body.trim().is_empty() && attachments.is_empty() && given.is_empty() {
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
                thread.label(),
                self.loop_limit
            );
            return Ok(Plan::Log(Disposition::Deferred { reason, cause: DeferCause::LoopBreaker }, Some(thread.id)));
        }
        // People copied join only through mail that was proved its author's
        // and not let in by an admin's release (a release admits the sender
        // once, not whom they copied).
        let copying = match mode {
            Mode::Release => super::participants::Copying::default(),
            _ => self.copying(&analysis.parsed.copied, &thread, &site, &author, proved_author).await?,
        };
        let mut routing = self.routing(&thread, decision).await?;
        let mut extras = crate::store::MessageExtras {
            participants: copying.participants,
            system_notes: copying.note.into_iter().collect(),
            participant_limits: copying.limits,
            ..Default::default()
        };
        let direct: &[String] = if proved_author { &analysis.to } else { &[] };
        let notify = if unproven {
            // Released by an admin: kept for agents, never mailed to the customer.
            extras.kind = crate::store::MessageKind::Note;
            crate::notify::note_recipients(&self.store, &thread, &author).await?
        } else if given.is_empty() {
            crate::notify::recipients(&self.store, &thread, &site, &author, direct).await?
        } else {
            let record = format!("{} by email: {}", author.name, lines.join(", "));
            if let Err(line) = self.apply_commands(&given, &thread, &author, &mut routing, &mut extras).await? {
                return Ok(self.unknown_command(analysis, &author, &thread, &line));
            }
            extras.commands = Some((author.email.clone(), lines));
            if body.trim().is_empty() && attachments.is_empty() {
                // Commands alone: the message is their record, for agents.
                extras.kind = crate::store::MessageKind::System;
                body = record;
                Vec::new()
            } else if given.contains(&commands::Command::Note) {
                extras.kind = crate::store::MessageKind::Note;
                if given.len() > 1 {
                    extras.system_notes.push(record);
                }
                crate::notify::note_recipients(&self.store, &thread, &author).await?
            } else {
                extras.system_notes.push(record);
                crate::notify::recipients(&self.store, &thread, &site, &author, direct).await?
            }
        };
        let plain = extras.participants.is_empty()
            && extras.system_notes.is_empty()
            && extras.commands.is_none()
            && extras.kind == crate::store::MessageKind::Message;
        let extras = (!plain).then(|| Box::new(extras));
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
            extras,
        };
        Ok(Plan::Store { message: Box::new(message), thread })
    }

    /// What an agent's commands change: the status (in `extras`), and the
    /// assignment, priority and tags (in `routing`, over what the rules
    /// set). `Err(line)`: a command names an agent there is not.
    async fn apply_commands(
        &self,
        given: &[commands::Command],
        thread: &Thread,
        author: &crate::store::User,
        routing: &mut Option<Routing>,
        extras: &mut crate::store::MessageExtras,
    ) -> Result<Result<(), String>, StoreError> {
        use commands::Command;
        let routing = routing.get_or_insert_with(|| Routing {
            queue: None,
            priority: None,
            tags: serde_json::from_str(&thread.tags).unwrap_or_default(),
            assign: None,
        });
        for command in given {
            match command {
                Command::Close => extras.status = Some(crate::store::ThreadStatus::Closed),
                Command::Reopen => extras.status = Some(crate::store::ThreadStatus::Open),
                Command::Priority(level) => routing.priority = Some(level.clone()),
                Command::Tag(tag) => {
                    if !routing.tags.contains(tag) {
                        routing.tags.push(tag.clone());
                    }
                }
                Command::Assign(who) => match self.agent_named(who, author).await? {
                    Some(agent) => routing.assign = Some(agent),
                    None => return Ok(Err(format!("#assign {who}"))),
                },
                Command::Note => {}
            }
        }
        Ok(Ok(()))
    }

    /// The agent `who` names: `me` (the writer), an address, or a name.
    async fn agent_named(&self, who: &str, writer: &crate::store::User) -> Result<Option<i64>, StoreError> {
        if who.eq_ignore_ascii_case("me") {
            return Ok(Some(writer.id));
        }
        if who.contains('@') {
            let found = self.store.user_by_email(&who.to_lowercase()).await?;
            return Ok(found.filter(crate::store::User::is_agent).map(|u| u.id));
        }
        let agents = self.store.agents().await?;
        let named: Vec<i64> = agents.iter().filter(|a| a.name.eq_ignore_ascii_case(who.trim())).map(|a| a.id).collect();
        Ok(if named.len() == 1 { named.first().copied() } else { None })
    }

    /// Nothing is posted: an agent's message starts with a line that is no
    /// command. The agent is told once, naming the line and the commands.
    fn unknown_command(&self, analysis: &Analysis, author: &crate::store::User, thread: &Thread, line: &str) -> Plan {
        let reason = format!("not posted: the line {line:?} at the top is not a command ({})", commands::LIST);
        let notice = NewOutbox {
            kind: "refusal_unknown_command".to_owned(),
            thread_id: None,
            recipient_id: Some(author.id),
            to_address: author.email.clone(),
            context: serde_json::json!({
                "subject": analysis.subject.as_deref().unwrap_or(""),
                "reason": line,
                "emergency": "",
            }),
        };
        Plan::Answer { reason, thread_id: Some(thread.id), notice: Box::new(notice) }
    }

    /// The on-call page the rules asked for, if any.
    pub(super) fn pages(&self, decision: &rules::Decision) -> Vec<NewOutbox> {
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
    pub(super) async fn routing(
        &self,
        thread: &Thread,
        decision: &rules::Decision,
    ) -> Result<Option<Routing>, StoreError> {
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
    pub(super) async fn open_ticket_plan(
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
                    emergency: None,
                }),
                None,
            )
        };
        let (true, Some(customer)) = (to_ticket_address && !rules.ticket_addresses.is_empty(), sender) else {
            return Ok(Plan::Log(Disposition::Rejected(Refusal::NoNewChat { emergency: None }), None));
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
        let notify =
            crate::notify::new_thread_recipients(&self.store, crate::domain::ThreadKind::Ticket, customer.id).await?;
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
            extras: None,
        };
        Ok(Plan::OpenTicket { thread: new_thread, first: Box::new(first) })
    }
}

/// How a threading signal is named in a held item's reason.
fn via_words(via: thread::Via) -> &'static str {
    match via {
        thread::Via::Recipient => "someone else's reply address",
        thread::Via::InReplyTo => "a Message-ID in In-Reply-To",
        thread::Via::References => "a Message-ID in References",
        thread::Via::BodyMarker => "the reference marker in its text",
        thread::Via::SubjectTag => "a ticket tag in its subject",
    }
}
