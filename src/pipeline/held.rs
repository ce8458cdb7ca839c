//! What an admin does with held mail: release it into its thread, discard
//! it, or answer the sender with the refusal notice. Each action happens
//! once (the store changes an item's state only from `held`) and is
//! recorded with who did it, on the item and in the inbound log.

use super::{Analysis, Mode, Pipeline, Plan, classify::MailKind};
use crate::domain::Role;
use crate::store::HeldStatus;
use crate::store::{HeldItem, InboundLogEntry, KeptOriginal, NewOutbox, StoreError, now_ms};

/// The outcome of releasing a held item.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Released {
    /// The held item.
    pub held_id: i64,
    /// The thread it went to.
    pub thread_id: i64,
    /// "chat #N" or "ticket #N".
    pub thread_label: String,
    /// The message it became.
    pub message_id: i64,
}

/// What an admin's action on a held item did.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(untagged)]
pub enum HeldOutcome {
    /// Released into its conversation.
    Released(Released),
    /// Discarded, restored or answered: the item as it is now.
    Changed(Box<HeldItem>),
}

impl Pipeline {
    /// Does `action` on held item `id`, recording `by`: the one door the
    /// console and the admin API's bulk action go through.
    pub async fn act_on_held(
        &self,
        action: crate::store::HeldAction,
        id: i64,
        by: &str,
    ) -> Result<HeldOutcome, StoreError> {
        use crate::store::HeldAction;
        Ok(match action {
            HeldAction::Release => HeldOutcome::Released(self.release(id, by).await?),
            HeldAction::Discard => HeldOutcome::Changed(Box::new(self.discard(id, by).await?)),
            HeldAction::Restore => HeldOutcome::Changed(Box::new(self.restore(id, by).await?)),
            HeldAction::Notice => HeldOutcome::Changed(Box::new(self.notice(id, by).await?)),
        })
    }

    /// Releases held item `id` into the thread it points at, attributed to
    /// its sender (a sender the directory does not know becomes a user with
    /// the Unprivileged role and no organization), recording `by`. Refused,
    /// with a sentence saying why, when the item was acted on already, its
    /// message cannot be read, or it points at no open thread.
    pub async fn release(&self, id: i64, by: &str) -> Result<Released, StoreError> {
        let (item, envelope, analysis) = self.load_held(id).await?;
        // It has no single author: there is nobody to post it as.
        if let Some(problem) = &analysis.parsed.ambiguous_author {
            return Err(StoreError::Conflict(format!(
                "held item {id} cannot be released: {problem}, so there is no single author to post it as; \
                 discard it or send its sender the notice"
            )));
        }
        if let Some(from) = analysis.from.as_deref()
            && self.store.user_by_email(from).await?.is_none()
        {
            let name = analysis.parsed.from_name.clone().unwrap_or_else(|| from.to_owned());
            match self.store.create_user(from, &name, Role::Unprivileged, None).await {
                Ok(_) | Err(StoreError::Conflict(_)) => {}
                Err(error) => return Err(error),
            }
        }
        let (plan, _) = self.decide(&envelope, &analysis, None, Mode::Release).await?;
        let (mut message, thread) = match plan {
            Plan::Store { message, thread } => (message, thread),
            Plan::Log(disposition, _) => {
                let reply = crate::domain::reply::for_disposition(&disposition);
                return Err(StoreError::Conflict(format!("held item {id} cannot be released: {}", reply.text)));
            }
            _ => {
                return Err(StoreError::Conflict(format!(
                    "held item {id} cannot be released: it does not continue a conversation"
                )));
            }
        };
        message.original = item.original.clone().map(KeptOriginal::Stored);
        let label = thread.label();
        let mut log = action_log(&item, "released", format!("held item {id} released into {label} by {by}"));
        log.thread_id = Some(thread.id);
        let inserted = self.store.release_held(id, by, &message, &log).await?;
        Ok(Released { held_id: id, thread_id: thread.id, thread_label: label, message_id: inserted.id() })
    }

    /// Discards held item `id`, recording `by`. Its message is deleted at
    /// the purge after `retention.held_days`.
    pub async fn discard(&self, id: i64, by: &str) -> Result<HeldItem, StoreError> {
        let item = self.store.held_item(id).await?.ok_or(StoreError::NotFound("held item"))?;
        let log = action_log(&item, "discarded", format!("held item {id} discarded by {by}"));
        self.store.discard_held(id, by, &log).await
    }

    /// Puts discarded item `id` back in the queue, as it was before, while
    /// its message is kept (until `retention.held_days` after the discard,
    /// or `retention.raw_days` after it arrived, whichever comes first).
    pub async fn restore(&self, id: i64, by: &str) -> Result<HeldItem, StoreError> {
        let item = self.store.held_item(id).await?.ok_or(StoreError::NotFound("held item"))?;
        if item.status != HeldStatus::Discarded {
            return Err(StoreError::Conflict(format!(
                "held item {id} was not discarded (it is {}); only a discarded item can be restored",
                item.status
            )));
        }
        if self.store.held_raw(&item).await?.is_none() {
            return Err(StoreError::Conflict(format!(
                "held item {id} cannot be restored: its message was deleted after its retention"
            )));
        }
        let log = action_log(&item, "restored", format!("held item {id} put back in the queue by {by}"));
        self.store.restore_held(id, &log).await?;
        self.store.held_item(id).await?.ok_or(StoreError::NotFound("held item"))
    }

    /// Answers held item `id`'s sender (its From address) with the refusal
    /// notice and closes the item, recording `by`. Refused for mail that is
    /// not a person's (an auto-reply or a bounce is never answered).
    pub async fn notice(&self, id: i64, by: &str) -> Result<HeldItem, StoreError> {
        let (item, _, analysis) = self.load_held(id).await?;
        if analysis.kind != MailKind::Human {
            return Err(StoreError::Conflict(format!(
                "held item {id} is an automatic message ({}); it is never answered",
                analysis.kind_reason
            )));
        }
        let to = analysis
            .from
            .clone()
            .ok_or_else(|| StoreError::Conflict(format!("held item {id} has no From address to answer")))?;
        let user = self.store.user_by_email(&to).await?;
        let notice = NewOutbox {
            kind: "refusal_not_allowed".to_owned(),
            thread_id: None,
            recipient_id: user.map(|u| u.id),
            to_address: to.clone(),
            context: serde_json::json!({
                "subject": analysis.subject.as_deref().unwrap_or(""),
                "reason": "this address may not write in that conversation",
            }),
        };
        let log = action_log(&item, "noticed", format!("held item {id}: refusal notice sent to {to} by {by}"));
        self.store.notice_held(id, by, &notice, &log).await
    }

    /// A held item, the envelope it came with (recipients checked again)
    /// and the reading of its message.
    async fn load_held(&self, id: i64) -> Result<(HeldItem, super::Envelope, Analysis), StoreError> {
        let item = self.store.held_item(id).await?.ok_or(StoreError::NotFound("held item"))?;
        if item.status != HeldStatus::Held {
            return Err(StoreError::Conflict(format!(
                "held item {id} was {} already{}",
                item.status,
                item.acted_by.as_deref().map(|by| format!(" by {by}")).unwrap_or_default()
            )));
        }
        let raw =
            self.store.held_raw(&item).await?.ok_or_else(|| {
                StoreError::Conflict(format!("held item {id} has no message any more (it was purged)"))
            })?;
        let envelope = self.recorded_envelope(&item.as_received()).await;
        let analysis = super::guarded(|| self.analyze(&envelope, &raw))
            .flatten()
            .ok_or_else(|| StoreError::Conflict(format!("held item {id} cannot be read by mailgate")))?;
        Ok((item, envelope, analysis))
    }
}

/// The inbound-log entry of an admin's action on a held item.
fn action_log(item: &HeldItem, decision: &str, reason: String) -> InboundLogEntry {
    InboundLogEntry {
        received_at: now_ms(),
        peer: "admin".to_owned(),
        mail_from: Some(item.mail_from.clone()),
        rcpt_to: item.rcpt_to.clone(),
        message_id: item.message_id.clone(),
        decision: decision.to_owned(),
        reason,
        thread_id: item.thread_id,
        auth: item.auth.clone(),
        original: item.original.clone(),
        subject: item.subject.as_deref().map(|s| s.chars().take(200).collect()),
        held_id: Some(item.id),
        ..InboundLogEntry::default()
    }
}
