//! Outbound notifications: the worker drains the outbox, renders each
//! notification and hands it to the mail sink. On the embedded default the
//! sink is a folder of `.eml` files.
//!
//! Exactly once: the file is named by the outbox row id and written
//! atomically (temporary file, fsync, rename) before the row is marked sent.
//! If the process dies in between, the row is sent again and the same file
//! is replaced, not duplicated.

use crate::domain::{ReplyToken, TokenSigner};
use crate::notify::render::Renderer;
use crate::pipeline::extract::REPLY_ABOVE_MARKER;
use crate::pipeline::thread::{body_marker, notification_message_id};
use crate::pipeline::thread_label;
use crate::store::{OutboxItem, Store, now_ms};
use anyhow::{Context, anyhow};
use lettre::Message;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, header::ContentType};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Attempts before a notification is given up as failed.
const MAX_ATTEMPTS: i64 = 8;

/// Everything the worker needs.
#[derive(Debug)]
pub struct Outbound {
    /// Where the outbox lives.
    pub store: Store,
    /// Signs the reply tokens of each notification.
    pub signer: TokenSigner,
    /// The templates.
    pub renderer: Arc<Renderer>,
    /// Folder the `.eml` files go to.
    pub outbox_dir: PathBuf,
    /// Our mail domain.
    pub domain: String,
    /// Dashboard base URL for links.
    pub dashboard_url: String,
    /// Poked after a commit that queued notifications.
    pub wake: Arc<Notify>,
}

#[derive(Serialize)]
struct TemplateContext<'a> {
    recipient: Person<'a>,
    thread: ThreadContext,
    site: SiteContext<'a>,
    message: MessageContext<'a>,
    history: Vec<MessageContext<'a>>,
    reply_marker: &'a str,
    ref_marker: String,
}

#[derive(Serialize)]
struct Person<'a> {
    name: &'a str,
    email: &'a str,
}

#[derive(Serialize)]
struct ThreadContext {
    id: i64,
    kind: String,
    label: String,
    subject: String,
    ticket_number: Option<i64>,
    ticket_type: Option<String>,
    url: String,
}

#[derive(Serialize)]
struct SiteContext<'a> {
    name: &'a str,
    plan: &'a str,
}

#[derive(Serialize)]
struct MessageContext<'a> {
    author_name: &'a str,
    author_email: &'a str,
    body: &'a str,
    source: &'a str,
    attachments: Vec<AttachmentContext<'a>>,
}

#[derive(Serialize)]
struct AttachmentContext<'a> {
    filename: &'a str,
    content_type: &'a str,
    size: i64,
}

impl Outbound {
    /// Sends due notifications until `shutdown`, waking on `wake` or every second.
    pub async fn run(self, shutdown: CancellationToken) {
        std::fs::create_dir_all(&self.outbox_dir).ok();
        loop {
            if let Err(error) = self.deliver_due().await {
                tracing::warn!(error = %format!("{error:#}"), "outbox pass failed");
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// One pass over the due notifications.
    pub async fn deliver_due(&self) -> anyhow::Result<usize> {
        let items = self.store.due_outbox(100).await?;
        let count = items.len();
        for item in items {
            match self.deliver(&item).await {
                Ok(message_id) => {
                    self.store.mark_sent(item.id, &message_id).await?;
                    tracing::info!(
                        outbox_id = item.id,
                        thread_id = item.thread_id,
                        "notification sent"
                    );
                }
                Err(error) => {
                    let attempts = item.attempts + 1;
                    let retry_at = (attempts < MAX_ATTEMPTS)
                        .then(|| now_ms() + 1000 * (1i64 << attempts.min(12)));
                    tracing::warn!(outbox_id = item.id, attempts, error = %format!("{error:#}"), "notification failed");
                    self.store
                        .mark_attempt_failed(item.id, &format!("{error:#}"), retry_at)
                        .await?;
                }
            }
        }
        Ok(count)
    }

    async fn deliver(&self, item: &OutboxItem) -> anyhow::Result<String> {
        let thread = self
            .store
            .thread(item.thread_id)
            .await?
            .context("thread vanished")?;
        let recipient = self
            .store
            .user(item.recipient_id)
            .await?
            .context("recipient vanished")?;
        let site = self
            .store
            .site(thread.site_id)
            .await?
            .context("site vanished")?;
        let messages = self.store.messages(thread.id).await?;
        let position = messages
            .iter()
            .position(|m| m.id == item.message_id)
            .context("message vanished")?;
        let token = self.signer.sign(ReplyToken {
            thread_id: thread.id,
            recipient_id: recipient.id,
        });
        let path = if thread.kind() == crate::domain::ThreadKind::Ticket {
            format!("tickets/{}", thread.ticket_number.unwrap_or(thread.id))
        } else {
            format!("chats/{}", thread.id)
        };
        let context = TemplateContext {
            recipient: Person {
                name: &recipient.name,
                email: &recipient.email,
            },
            thread: ThreadContext {
                id: thread.id,
                kind: thread.kind.clone(),
                label: thread_label(&thread),
                subject: thread.subject.clone(),
                ticket_number: thread.ticket_number,
                ticket_type: thread.ticket_type.clone(),
                url: format!("{}/{path}", self.dashboard_url),
            },
            site: SiteContext {
                name: &site.name,
                plan: &site.plan_id,
            },
            message: message_context(&messages[position]),
            history: messages[position.saturating_sub(5)..position]
                .iter()
                .rev()
                .map(message_context)
                .collect(),
            reply_marker: REPLY_ABOVE_MARKER,
            ref_marker: body_marker(&token),
        };
        let rendered = self.renderer.render(&item.kind, &context)?;
        let message_id = notification_message_id(&token, item.id, &self.domain);
        let earlier = self
            .store
            .sent_notification_ids(thread.id, recipient.id)
            .await?;
        let support: Mailbox = format!("Support <support@{}>", self.domain)
            .parse()
            .context("support address")?;
        let reply_to = Mailbox::new(
            Some("Support".to_owned()),
            format!("reply+{token}@{}", self.domain).parse()?,
        );
        let to = Mailbox::new(
            Some(recipient.name.clone()),
            recipient
                .email
                .parse()
                .map_err(|e| anyhow!("recipient {}: {e}", recipient.email))?,
        );
        let mut builder = Message::builder()
            .from(support)
            .reply_to(reply_to)
            .to(to)
            .subject(rendered.subject)
            .message_id(Some(format!("<{message_id}>")))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("Auto-Submitted"),
                "auto-generated".to_owned(),
            ))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("X-Mailgate-Thread"),
                thread_label(&thread),
            ));
        if let Some(last) = earlier.last() {
            builder = builder.in_reply_to(format!("<{last}>")).references(
                earlier
                    .iter()
                    .rev()
                    .take(20)
                    .rev()
                    .map(|id| format!("<{id}>"))
                    .collect::<Vec<_>>()
                    .join(" "),
            );
        }
        let email = builder
            .header(ContentType::TEXT_PLAIN)
            .body(rendered.text)?;
        self.write_file(item.id, &email.formatted()).await?;
        Ok(message_id)
    }

    async fn write_file(&self, id: i64, bytes: &[u8]) -> anyhow::Result<()> {
        let dir = self.outbox_dir.clone();
        let bytes = bytes.to_vec();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            use std::io::Write;
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let tmp = dir.join(format!(".{id}.eml.tmp"));
            let mut file = std::fs::File::create(&tmp)
                .with_context(|| format!("creating {}", tmp.display()))?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&tmp, dir.join(format!("{id}.eml")))?;
            std::fs::File::open(&dir)?.sync_all()?;
            Ok(())
        })
        .await?
    }
}

fn message_context(m: &crate::store::StoredMessage) -> MessageContext<'_> {
    MessageContext {
        author_name: &m.author_name,
        author_email: &m.author_email,
        body: &m.body,
        source: &m.source,
        attachments: m
            .attachments
            .iter()
            .map(|a| AttachmentContext {
                filename: &a.filename,
                content_type: &a.content_type,
                size: a.size,
            })
            .collect(),
    }
}
