//! The decision: what one analysed message gets (posted, a new ticket,
//! held, dropped, refused), with the routing rules, authorization, the
//! loop breaker and the plan's promises; and how a bounce is tied to the
//! notification it reports on. Reads only; `ingest` stores the plan.

use super::{
    Analysis, Authorization, Bounce, Disposition, Envelope, LOOP_WINDOW_MS, MailKind, Mode, NewMessage, NewOutbox,
    NewThread, NotificationKind, Pipeline, RecipientTarget, Refusal, Routing, Source, StoreError, Thread, ThreadRef,
    authorize, dedup_id, extract, now_ms, recipient_tokens, rules, thread, thread_label,
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
    pub(super) async fn bounce_plan(&self, envelope: &Envelope, analysis: &Analysis) -> Plan {
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
    pub(super) async fn decide(
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
