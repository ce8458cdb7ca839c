//! Outbound mail: the worker claims due outbox items, renders each one,
//! builds the message (lettre) with its threading headers, signs it (DKIM,
//! when configured) and hands it to the [`mailer::Mailer`]: a folder of
//! `.eml` files by default, an SMTP relay when one is configured.
//!
//! - **Durable**: items live in the database until sent. A claim is a lease;
//!   an item whose worker died is claimed again when the lease runs out.
//! - **Retries**: a 4xx answer or a network failure is retried with
//!   exponential backoff and jitter until the item's lifetime ends; a 5xx
//!   answer fails the item at once. Failed items stay visible and can be
//!   retried by hand.
//! - **Coalescing**: a reply notification waits for the coalescing window;
//!   when it goes out it carries every reply queued for the same person in
//!   the same thread since, and those items are marked `merged`.
//! - **Bounces**: after the configured number of hard bounces to an address,
//!   mail to it is not attempted and the item fails saying why.

pub mod mailer;
pub mod webhook;

use crate::config::DeliveryConfig;
use crate::domain::REPLY_ABOVE_MARKER;
use crate::domain::{ReplyToken, ThreadKind, TokenSigner};
use crate::notify::locale;
use crate::notify::render::{
    AttachmentContext, MessageContext, NotificationContext, PersonContext, PlanContext, RefusalContext, Renderer,
    SiteContext, ThreadContext,
};
use crate::pipeline::thread::{body_marker, notification_message_id};
use crate::store::{
    COALESCED_KINDS, Delivery, OutboxItem, OutboxSignal, PassReads, Plan, Queued, Site, Store, StoredMessage, Thread,
    now_ms,
};
use anyhow::Context;
use lettre::Message;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};
use mailer::{DeliveryError, Mailer};
use rand::Rng;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long a claim lasts before another pass may take the item again.
const LEASE_MS: i64 = 5 * 60 * 1000;

/// Items a pass claims per delivery slot: with the relay's 60 s timeout, the
/// last of them still goes out (4 minutes at worst) before its lease ends.
const ITEMS_PER_SLOT: usize = 4;

/// A notification built and ready to send.
struct Built {
    /// Its Message-ID.
    message_id: String,
    /// Its envelope.
    envelope: lettre::address::Envelope,
    /// The mail as it goes out.
    bytes: Vec<u8>,
    /// Its plain text, compressed, when it carries a reply address.
    sent_text: Option<Vec<u8>>,
}

/// Everything the worker needs.
pub struct Outbound {
    /// Where the outbox lives.
    pub store: Store,
    /// Signs the reply tokens of each notification.
    pub signer: TokenSigner,
    /// The templates.
    pub renderer: Arc<Renderer>,
    /// Folder or relay.
    pub mailer: Mailer,
    /// Our mail domain.
    pub domain: String,
    /// The Dashboard's base URL or link template (`{kind}`, `{id}`); `None`: no links.
    pub dashboard_url: Option<String>,
    /// This server's public URL, for one-click unsubscribe links.
    pub public_url: Option<String>,
    /// Retries, concurrency, bounces, DKIM.
    pub delivery: DeliveryConfig,
    /// The desk's time zone: times are shown in it to recipients with none of their own.
    pub time_zone: chrono_tz::Tz,
    /// The DKIM signer, loaded from `delivery.dkim`.
    pub dkim: Option<DkimSigning>,
    /// Told after a commit that queued mail, and when it is due.
    pub wake: Arc<OutboxSignal>,
    /// What the worker has done since start (`GET /api/v1/admin/stats`).
    pub counters: Arc<OutboundCounters>,
    /// Sends webhook deliveries (outbox rows of kind `webhook`).
    pub webhooks: webhook::WebhookClient,
    /// This instance's name on the leases it takes ([`crate::config::Config::instance_name`]).
    pub instance: String,
}

/// What the outbound worker has done since it started, as the admin API
/// shows it. Times are summed over items: with several delivery slots the
/// per-item times add up to more than the wall time they took.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct OutboundStats {
    /// Passes over the outbox that claimed at least one item.
    pub passes: u64,
    /// Mails handed to the relay or written to the folder.
    pub sent: u64,
    /// Pending items a sent mail carried (coalesced replies).
    pub merged: u64,
    /// Attempts that failed (retried later or failed for good) or were skipped.
    pub not_sent: u64,
    /// Claiming the passes' items, in microseconds.
    pub claim_us: u64,
    /// Preparing the items: the reads, rendering and building each mail.
    pub prepare_us: u64,
    /// Handing the mails over (relay conversation or file write).
    pub send_us: u64,
    /// Making the outgoing-mail folder durable, once per pass.
    pub sync_us: u64,
    /// Recording the passes' outcomes.
    pub record_us: u64,
}

/// The running totals behind [`OutboundStats`].
#[derive(Debug, Default)]
pub struct OutboundCounters {
    passes: AtomicU64,
    sent: AtomicU64,
    merged: AtomicU64,
    not_sent: AtomicU64,
    claim_us: AtomicU64,
    prepare_us: AtomicU64,
    send_us: AtomicU64,
    sync_us: AtomicU64,
    record_us: AtomicU64,
}

impl OutboundCounters {
    /// The totals so far.
    pub fn snapshot(&self) -> OutboundStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        OutboundStats {
            passes: load(&self.passes),
            sent: load(&self.sent),
            merged: load(&self.merged),
            not_sent: load(&self.not_sent),
            claim_us: load(&self.claim_us),
            prepare_us: load(&self.prepare_us),
            send_us: load(&self.send_us),
            sync_us: load(&self.sync_us),
            record_us: load(&self.record_us),
        }
    }

    fn add_time(counter: &AtomicU64, since: Instant) {
        counter.fetch_add(u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn count(&self, outcomes: &[Delivery]) {
        for outcome in outcomes {
            match outcome {
                Delivery::Sent { merged, .. } => {
                    self.sent.fetch_add(1, Ordering::Relaxed);
                    self.merged.fetch_add(merged.len() as u64, Ordering::Relaxed);
                }
                _ => {
                    self.not_sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("mailer", &self.mailer)
            .field("dkim", &self.dkim.is_some())
            .finish_non_exhaustive()
    }
}

/// A DKIM signer (mail-auth), RSA-SHA256 or Ed25519, relaxed/relaxed.
pub enum DkimSigning {
    /// RSA with SHA-256.
    Rsa(DkimSigner<RsaKey<Sha256>, Done>),
    /// Ed25519 with SHA-256.
    Ed25519(DkimSigner<Ed25519Key, Done>),
}

/// Headers covered by our signature.
const SIGNED_HEADERS: [&str; 9] =
    ["From", "To", "Subject", "Date", "Message-ID", "Reply-To", "In-Reply-To", "References", "Content-Type"];

impl DkimSigning {
    /// The `DKIM-Signature:` header line(s) for a formatted message.
    pub fn header_for(&self, message: &[u8]) -> anyhow::Result<String> {
        let signature = match self {
            DkimSigning::Rsa(signer) => signer.sign(message),
            DkimSigning::Ed25519(signer) => signer.sign(message),
        };
        Ok(signature.map_err(|e| anyhow::anyhow!("DKIM signing failed: {e}"))?.to_header())
    }
}

/// Loads the DKIM signer from its settings.
pub fn load_dkim(settings: &crate::config::DkimSettings) -> anyhow::Result<DkimSigning> {
    let pem = std::fs::read(&settings.private_key)
        .with_context(|| format!("dkim.private_key: reading {}", settings.private_key.display()))?;
    let bad_key =
        |e: &dyn std::fmt::Display| anyhow::anyhow!("dkim.private_key {}: {e}", settings.private_key.display());
    let der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| bad_key(&e))?;
    macro_rules! configure {
        ($key:expr) => {
            DkimSigner::from_key($key)
                .domain(settings.domain.clone())
                .selector(settings.selector.clone())
                .headers(SIGNED_HEADERS)
                .header_canonicalization(Canonicalization::Relaxed)
                .body_canonicalization(Canonicalization::Relaxed)
        };
    }
    Ok(match settings.algorithm.as_str() {
        "rsa" => DkimSigning::Rsa(configure!(RsaKey::<Sha256>::from_key_der(der).map_err(|e| bad_key(&e))?)),
        "ed25519" => {
            let key = Ed25519Key::from_pkcs8_maybe_unchecked_der(der.secret_der()).map_err(|e| bad_key(&e))?;
            DkimSigning::Ed25519(configure!(key))
        }
        other => anyhow::bail!("dkim.algorithm: {other:?} is not rsa or ed25519"),
    })
}

/// How many earlier messages a notification quotes below the new ones.
const HISTORY: i64 = 5;

/// Outlook's `Thread-Index` (MS-OXOMSG, PidTagConversationIndex) for the
/// notifications of `thread` to `to`: a 22-byte header block that is the same
/// for all of them (a reserved byte, the thread's creation time, and a
/// conversation id hashed from the thread and the recipient), then one
/// 5-byte child block per notification sent before this one, in base64.
fn thread_index(thread: &Thread, to: &str, domain: &str, earlier: usize) -> String {
    use sha2::Digest;
    // FILETIME: 100 ns units since 1601; the header keeps bits 16 to 55.
    let filetime = (thread.created_at.max(0) as u64 + 11_644_473_600_000) * 10_000;
    let mut index = vec![0x01];
    index.extend_from_slice(&(filetime >> 16).to_be_bytes()[3..8]);
    let id = sha2::Sha256::digest(format!("mailgate thread-index {domain} {} {}", thread.id, to.to_lowercase()));
    index.extend_from_slice(&id[..16]);
    for n in 0..earlier.min(200) {
        // A child block: a time delta (here, its place in the conversation) and a sequence nibble.
        let delta = u32::try_from(n + 1).unwrap_or(u32::MAX) << 8;
        index.extend_from_slice(&delta.to_be_bytes());
        index.push((n % 16) as u8);
    }
    data_encoding::BASE64.encode(&index)
}

/// How many earlier notifications about a thread a mail's References name.
const REFERENCES: i64 = 20;

/// The longest the worker goes without a pass over the outbox.
const PASS_EVERY: Duration = Duration::from_secs(1);

impl Outbound {
    /// Sends due mail until `shutdown`. A pass runs when an item is due (a
    /// coalescing window ends, a retry comes up) and at least every second
    /// (to take over items whose worker died); newly queued mail wakes the
    /// loop to look, but a pass is not run for mail that is not due yet (with
    /// a coalescing window, that would be a write per message received).
    /// On shutdown, deliveries in progress finish; nothing new is claimed.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut last_pass: Option<tokio::time::Instant> = None;
        // When the outbox is next due: read after every pass, and otherwise
        // moved earlier by what the store tells of mail it queued (no read
        // per commit).
        let mut next_due: Option<i64> = None;
        let mut read_due = true;
        loop {
            match self.wake.take() {
                Queued::Nothing => {}
                Queued::DueAt(at) => next_due = Some(next_due.map_or(at, |due| due.min(at))),
                Queued::Unknown => read_due = true,
            }
            if read_due {
                read_due = false;
                next_due = self.store.next_due().await.unwrap_or_else(|error| {
                    tracing::warn!(error = %error, "reading when the outbox is next due failed");
                    None
                });
            }
            let since_pass = last_pass.map_or(PASS_EVERY, |at| at.elapsed());
            if next_due.is_some_and(|at| at <= now_ms()) || since_pass >= PASS_EVERY {
                last_pass = Some(tokio::time::Instant::now());
                read_due = true;
                match Arc::clone(&self).deliver_due().await {
                    // A full pass: more may be due right away.
                    Ok(count) if count >= self.pass_size() => continue,
                    Ok(_) => {}
                    Err(error) => tracing::warn!(error = %format!("{error:#}"), "outbox pass failed"),
                }
            }
            let until_pass = PASS_EVERY.saturating_sub(last_pass.map_or(Duration::ZERO, |at| at.elapsed()));
            let until_due = next_due.map_or(until_pass, |at| Duration::from_millis((at - now_ms()).max(0) as u64));
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(until_due.min(until_pass).max(Duration::from_millis(10))) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// Most items one pass claims: this many per delivery slot.
    fn pass_size(&self) -> usize {
        self.delivery.concurrency as usize * ITEMS_PER_SLOT
    }

    /// One pass: claims up to [`ITEMS_PER_SLOT`] due items per delivery slot,
    /// reads what they need from the database together
    /// ([`Store::read_for_pass`]), delivers them `concurrency` at a time,
    /// makes the written files durable (folder mode), and records every
    /// outcome in one transaction: two commits per pass, however many mails
    /// it sends.
    pub async fn deliver_due(self: Arc<Self>) -> anyhow::Result<usize> {
        let started = Instant::now();
        let items = self.store.claim_due(self.pass_size() as i64, LEASE_MS, &self.instance).await?;
        OutboundCounters::add_time(&self.counters.claim_us, started);
        let count = items.len();
        if count == 0 {
            return Ok(0);
        }
        self.counters.passes.fetch_add(1, Ordering::Relaxed);
        let preparing = Instant::now();
        let reads = Arc::new(
            self.store.read_for_pass(&items, HISTORY, REFERENCES, self.delivery.bounces_count_since(now_ms())).await?,
        );
        OutboundCounters::add_time(&self.counters.prepare_us, preparing);
        let slots = Arc::new(tokio::sync::Semaphore::new(self.delivery.concurrency as usize));
        let mut running = JoinSet::new();
        for item in items {
            let (this, slots, reads) = (Arc::clone(&self), Arc::clone(&slots), Arc::clone(&reads));
            running.spawn(async move {
                let _slot = slots.acquire_owned().await;
                this.deliver_one(item, &reads).await
            });
        }
        let mut outcomes = Vec::with_capacity(count);
        while let Some(result) = running.join_next().await {
            match result.map_err(anyhow::Error::from).and_then(|r| r) {
                Ok(outcome) => outcomes.push(outcome),
                // Left claimed: the lease runs out and a later pass tries again.
                Err(error) => tracing::warn!(error = %format!("{error:#}"), "preparing a delivery failed"),
            }
        }
        // Until the folder's entries are durable, nothing is recorded as
        // sent: the items stay claimed, and once their lease runs out a later
        // pass writes the same files again.
        let syncing = Instant::now();
        self.mailer.sync().await.context("making the outgoing-mail folder durable")?;
        OutboundCounters::add_time(&self.counters.sync_us, syncing);
        let recording = Instant::now();
        self.store.record_deliveries(&outcomes).await?;
        OutboundCounters::add_time(&self.counters.record_us, recording);
        self.counters.count(&outcomes);
        Ok(count)
    }

    /// Delivers one item (or decides not to) and says what became of it.
    async fn deliver_one(&self, item: OutboxItem, reads: &PassReads) -> anyhow::Result<Delivery> {
        if item.kind == webhook::KIND {
            let sending = Instant::now();
            let result = self.webhooks.deliver(&self.store, &item).await;
            OutboundCounters::add_time(&self.counters.send_us, sending);
            return Ok(self.settle(&item, result.map(|id| (id, None)), &[]).await);
        }
        let preparing = Instant::now();
        let (bounces, opted_out) = reads.standing(&item);
        if bounces >= i64::from(self.delivery.max_hard_bounces) {
            let why = format!(
                "suppressed: {} hard-bounced {bounces} times; mail to it has stopped (lift it with \
                 `mailgate suppressions lift {}`)",
                item.to_address, item.to_address
            );
            tracing::warn!(outbox_id = item.id, "{why}");
            self.announce_failure(&item, &why).await;
            return Ok(Delivery::Failed { id: item.id, error: why, retry_at: None });
        }
        if opted_out && crate::notify::OPTIONAL_KINDS.contains(&item.kind.as_str()) {
            let why = format!(
                "skipped (unsubscribed): {} unsubscribed from {} notifications; undo with \
                 DELETE /api/v1/users/{}/unsubscribes/{}, then retry this item",
                item.to_address,
                item.kind,
                item.recipient_id.unwrap_or_default(),
                item.kind
            );
            return Ok(Delivery::Skipped { id: item.id, why });
        }
        let merged = if COALESCED_KINDS.contains(&item.kind.as_str()) { reads.coalescible(&item) } else { Vec::new() };
        let built = self.build(&item, &merged, reads).await;
        OutboundCounters::add_time(&self.counters.prepare_us, preparing);
        let result = match built {
            Ok(Built { message_id, envelope, bytes, sent_text }) => {
                let sending = Instant::now();
                let sent = self.mailer.send(item.id, &envelope, &bytes).await.map(|()| (message_id, sent_text));
                OutboundCounters::add_time(&self.counters.send_us, sending);
                sent
            }
            Err(error) => Err(DeliveryError { permanent: false, message: format!("{error:#}") }),
        };
        Ok(self.settle(&item, result, &merged).await)
    }

    /// What became of `item` given the result of sending it: sent, retried
    /// later with backoff, or failed for good (announced as the webhook
    /// event `delivery.failed`, unless the item is itself a webhook delivery).
    async fn settle(
        &self,
        item: &OutboxItem,
        result: Result<(String, Option<Vec<u8>>), DeliveryError>,
        merged: &[OutboxItem],
    ) -> Delivery {
        match result {
            Ok((rfc_message_id, sent_text)) => {
                let merged: Vec<i64> = merged.iter().map(|m| m.id).collect();
                if item.kind == webhook::KIND {
                    tracing::info!(outbox_id = item.id, to = %item.to_address, "webhook delivered");
                } else {
                    let via = self.mailer.describe();
                    tracing::info!(outbox_id = item.id, kind = %item.kind, merged = merged.len(), %via, "mail sent");
                }
                Delivery::Sent { id: item.id, rfc_message_id, merged, sent_text }
            }
            Err(error) => {
                let attempts = item.attempts + 1;
                let retry_at = (!error.permanent).then(|| now_ms() + self.backoff_ms(attempts));
                let retry_at = retry_at.filter(|at| *at <= item.expires_at);
                let why = match (error.permanent, retry_at) {
                    (true, _) => format!("permanent failure: {}", error.message),
                    (false, None) => format!("gave up after {attempts} attempts: {}", error.message),
                    (false, Some(_)) => error.message.clone(),
                };
                tracing::warn!(outbox_id = item.id, attempts, permanent = error.permanent, error = %why, "delivery failed");
                if retry_at.is_none() && item.kind != webhook::KIND {
                    self.announce_failure(item, &why).await;
                }
                Delivery::Failed { id: item.id, error: why, retry_at }
            }
        }
    }

    /// Queues the webhook event `delivery.failed` for an item failed for good.
    async fn announce_failure(&self, item: &OutboxItem, why: &str) {
        let data = serde_json::json!({
            "outbox_id": item.id, "kind": item.kind, "to": item.to_address, "thread_id": item.thread_id, "error": why,
        });
        if let Err(error) = self.store.queue_event("delivery.failed", data).await {
            tracing::warn!(%error, outbox_id = item.id, "queueing the delivery.failed event failed");
        }
    }

    /// Exponential backoff with ±25 % jitter, capped.
    fn backoff_ms(&self, attempts: i64) -> i64 {
        let base = self.delivery.retry_base.as_millis() as f64;
        let cap = self.delivery.retry_max.as_millis() as f64;
        let exponential = (base * 2f64.powi(attempts.clamp(0, 30) as i32 - 1)).min(cap);
        let jitter: f64 = rand::rng().random_range(0.75..1.25);
        (exponential * jitter).max(1.0) as i64
    }

    /// Renders and builds the mail of `item`.
    async fn build(&self, item: &OutboxItem, merged: &[OutboxItem], reads: &PassReads) -> anyhow::Result<Built> {
        let recipient = match item.recipient_id {
            Some(id) => self.store.user(id).await?,
            None => None,
        };
        let thread = item.thread_id.and_then(|id| reads.thread(id));
        let token = match (thread, &recipient) {
            (Some(thread), Some(user)) => {
                Some(self.signer.sign(ReplyToken { thread_id: thread.id, recipient_id: user.id }))
            }
            _ => None,
        };
        let context = self.context(item, merged, reads, recipient.as_ref(), thread, token.as_deref()).await?;
        let files = self.attached_files(&context).await?;
        // The files come on top of the size limit (attach_max_bytes bounds them).
        let files_bytes: usize = files.iter().map(|f| f.content.len() * 4 / 3 + f.content.len() / 38 + 1024).sum();
        let to = Addressed { recipient: recipient.as_ref(), thread, token: token.as_deref(), files: &files };
        // Texts get a twelfth of the size limit (each appears in the text
        // and the HTML part, escaped and encoded); should the mail still be
        // larger than the limit, they get a quarter as much, and so on.
        let mut budget = self.delivery.max_message_bytes / 12;
        loop {
            let mut fitted = context.clone();
            fitted.fit(budget, item.kind == "chat_transcript");
            let built = self.build_rendered(item, &fitted, &to, reads)?;
            if built.bytes.len() <= self.delivery.max_message_bytes + files_bytes || budget <= 1024 {
                return Ok(built);
            }
            tracing::info!(
                outbox_id = item.id,
                bytes = built.bytes.len(),
                "a notification over its size limit: cut shorter"
            );
            budget /= 4;
        }
    }

    /// The files a notification carries: the attachments its context marks
    /// `attached`, read from the store.
    async fn attached_files(&self, context: &NotificationContext) -> anyhow::Result<Vec<AttachedFile>> {
        let mut files = Vec::new();
        for attachment in context.messages.iter().flat_map(|m| &m.attachments).filter(|a| a.attached) {
            if let Some((stored, content)) = self.store.attachment(attachment.id).await? {
                files.push(AttachedFile { filename: stored.filename, content_type: stored.content_type, content });
            }
        }
        Ok(files)
    }

    /// Builds the mail of `item` from its context.
    fn build_rendered(
        &self,
        item: &OutboxItem,
        context: &NotificationContext,
        to: &Addressed<'_>,
        reads: &PassReads,
    ) -> anyhow::Result<Built> {
        let Addressed { recipient, thread, token, files } = *to;
        let rendered = self.renderer.render_in(&item.kind, context, &context.languages)?;
        let message_id = notification_message_id(&self.domain);
        // The From shows who wrote: "Anna Schmidt (Acme Support)" for an
        // agent's message, the desk's name for automatic mail. Names go
        // through lettre's encoder, never into the header as they are.
        let desk = &self.delivery.from_name;
        let from_name = match context.messages.last() {
            Some(message) if message.from_agent && !message.author_name.trim().is_empty() => {
                format!("{} ({desk})", message.author_name.trim())
            }
            _ => desk.clone(),
        };
        let from_address = match &self.delivery.from_address {
            Some(address) => address.parse().context("notify.from_address")?,
            None => format!("support@{}", self.domain).parse().context("support address")?,
        };
        let support = Mailbox::new(Some(from_name), from_address);
        let to_name = recipient.map(|u| u.name.clone());
        let to =
            Mailbox::new(to_name, item.to_address.parse().map_err(|e| anyhow::anyhow!("{}: {e}", item.to_address))?);
        let mut builder = Message::builder()
            .from(support)
            .to(to)
            .subject(rendered.subject)
            .message_id(Some(format!("<{message_id}>")))
            .raw_header(HeaderValue::new(HeaderName::new_from_ascii_str("Content-Language"), rendered.language.clone()))
            .raw_header(HeaderValue::new(HeaderName::new_from_ascii_str("Auto-Submitted"), "auto-generated".to_owned()))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("X-Auto-Response-Suppress"),
                "OOF, AutoReply".to_owned(),
            ));
        let optional = crate::notify::OPTIONAL_KINDS.iter().position(|k| *k == item.kind);
        if !context.leave_url.is_empty() {
            // A participant's own way out: it takes them out of this conversation alone.
            builder = builder
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe"),
                    format!("<{}>", context.leave_url),
                ))
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                    "List-Unsubscribe=One-Click".to_owned(),
                ));
        } else if let (Some(kind), Some(user)) = (optional, recipient) {
            let token = self.signer.sign_unsubscribe(user.id, kind as i64);
            let mut links = format!("<mailto:unsubscribe+{token}@{}>", self.domain);
            if let Some(base) = &self.public_url {
                links = format!("<{base}/unsubscribe/{token}>, {links}");
                builder = builder.raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                    "List-Unsubscribe=One-Click".to_owned(),
                ));
            }
            builder = builder.raw_header(HeaderValue::new(HeaderName::new_from_ascii_str("List-Unsubscribe"), links));
        }
        if let Some(token) = token {
            let reply_to = format!("reply+{token}@{}", self.domain).parse()?;
            builder = builder.reply_to(Mailbox::new(Some(desk.clone()), reply_to));
        }
        if let Some(thread) = thread {
            builder = builder
                .raw_header(HeaderValue::new(HeaderName::new_from_ascii_str("X-Mailgate-Thread"), thread.label()));
            let earlier = reads.sent_ids(thread.id, &item.to_address);
            if let Some(last) = earlier.last() {
                let references: Vec<String> = earlier.iter().map(|id| format!("<{id}>")).collect();
                builder = builder.in_reply_to(format!("<{last}>")).references(references.join(" "));
            }
            // Outlook groups a conversation by these, not by References.
            builder = builder
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("Thread-Topic"),
                    crate::notify::render::header_safe(&thread.subject),
                ))
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("Thread-Index"),
                    thread_index(thread, &item.to_address, &self.domain, earlier.len()),
                ));
        }
        // The envelope sender names this notification under a MAC: a report
        // sent back to it is known to be about this mail and no other.
        let verp = format!("bounces+{}@{}", self.signer.sign_bounce(item.id), self.domain).parse()?;
        let envelope = lettre::address::Envelope::new(Some(verp), vec![item.to_address.parse()?])?;
        // Kept (compressed) when it carries a reply address: a reply may bring it back unquoted.
        let sent_text = token.map(|_| crate::store::SentNotification::compress(&rendered.text));
        let bodies = MultiPart::alternative_plain_html(rendered.text, rendered.html);
        let email = match files {
            [] => builder.envelope(envelope.clone()).multipart(bodies)?,
            files => {
                let mut mixed = MultiPart::mixed().multipart(bodies);
                for file in files {
                    let content_type = lettre::message::header::ContentType::parse(&file.content_type)
                        .unwrap_or(lettre::message::header::ContentType::parse("application/octet-stream")?);
                    mixed = mixed.singlepart(
                        lettre::message::Attachment::new(file.filename.clone())
                            .body(file.content.clone(), content_type),
                    );
                }
                builder.envelope(envelope.clone()).multipart(mixed)?
            }
        };
        let mut bytes = email.formatted();
        if let Some(dkim) = &self.dkim {
            let mut signed = dkim.header_for(&bytes)?.into_bytes();
            signed.append(&mut bytes);
            bytes = signed;
        }
        Ok(Built { message_id, envelope, bytes, sent_text })
    }

    async fn context(
        &self,
        item: &OutboxItem,
        merged: &[OutboxItem],
        reads: &PassReads,
        recipient: Option<&crate::store::User>,
        thread: Option<&Thread>,
        token: Option<&str>,
    ) -> anyhow::Result<NotificationContext> {
        let extra: serde_json::Value = serde_json::from_str(&item.context).unwrap_or_default();
        let languages = self.languages(recipient).await?;
        let language = self.renderer.language_for(&item.kind, &languages);
        let mut context = NotificationContext {
            recipient: PersonContext {
                name: recipient.map_or_else(|| item.to_address.clone(), |u| u.name.clone()),
                email: item.to_address.clone(),
            },
            support_address: format!("support@{}", self.domain),
            dashboard_url: self.dashboard_url.as_deref().map(dashboard_home).unwrap_or_default(),
            thread: None,
            site: None,
            plan: None,
            messages: Vec::new(),
            history: Vec::new(),
            reply_marker: if token.is_some() { REPLY_ABOVE_MARKER.to_owned() } else { String::new() },
            ref_marker: token.map(body_marker).unwrap_or_default(),
            refusal: item.kind.starts_with("refusal_").then(|| RefusalContext {
                subject: extra["subject"].as_str().unwrap_or("(no subject)").to_owned(),
                reason: extra["reason"].as_str().unwrap_or("").to_owned(),
                emergency_address: extra["emergency"].as_str().unwrap_or("").to_owned(),
            }),
            also: Vec::new(),
            leave_url: String::new(),
            languages,
        };
        let Some(thread) = thread else { return Ok(context) };
        let zone = recipient.and_then(|u| u.time_zone.as_deref()?.parse().ok()).unwrap_or(self.time_zone);
        let message_context = |m: &StoredMessage| message_context(m, zone, &language);
        let site = self.store.site(thread.site_id).await?.context("site vanished")?;
        context.plan = self.effective_plan(&site).await?.map(|plan| PlanContext {
            name: plan.name.clone(),
            ticket_response: plan.ticket_response_minutes.map(|m| locale::duration(m, &language)),
            on_call_response: plan.on_call_response_minutes.map(|m| locale::duration(m, &language)),
            support_hours: plan.support_hours.clone(),
        });
        let plan_name = self.store.plan(&site.plan_id).await?.map_or_else(|| site.plan_id.clone(), |p| p.name);
        context.site = Some(SiteContext { name: site.name.clone(), plan: site.plan_id.clone(), plan_name });
        let (kind, id) = match (thread.kind(), thread.ticket_number) {
            (ThreadKind::Ticket, Some(number)) => ("ticket", number),
            _ => ("chat", thread.id),
        };
        let label = thread.label();
        context.thread = Some(ThreadContext {
            id: thread.id,
            kind: thread.kind.clone(),
            label_tag: format!("[{}]", capitalize(&label)),
            name: locale::thread_name(thread.kind() == ThreadKind::Ticket, id, &language),
            label,
            subject: thread.subject.clone(),
            ticket_number: thread.ticket_number,
            ticket_type: thread.ticket_type.clone(),
            url: self.dashboard_url.as_deref().map(|url| dashboard_link(url, kind, id)).unwrap_or_default(),
        });
        if thread.participants > 0 {
            self.add_participants(&mut context, thread, recipient).await?;
        }
        let public = recipient.is_none_or(|user| !user.is_agent());
        if item.kind == "chat_transcript" {
            let messages = self.store.messages(thread.id).await?;
            context.messages = messages.iter().filter(|m| !public || m.is_public()).map(message_context).collect();
            return Ok(context);
        }
        let new_ids: std::collections::HashSet<i64> =
            item.message_id.into_iter().chain(merged.iter().filter_map(|m| m.message_id)).collect();
        // The new messages and the few before them, however long the thread
        // (the pass read each thread from a few before its earliest new one).
        // Internal notes are for agents: never shown to the customer side,
        // new or in the history.
        let all: Vec<&StoredMessage> = reads.messages(thread.id).iter().filter(|m| !public || m.is_public()).collect();
        let first_new = all.iter().position(|m| new_ids.contains(&m.id)).unwrap_or(all.len());
        context.messages = all.iter().filter(|m| new_ids.contains(&m.id)).map(|m| message_context(m)).collect();
        if recipient.is_some_and(crate::store::User::is_agent) {
            self.offer_files(&mut context);
        }
        context.history = all[first_new.saturating_sub(HISTORY as usize)..first_new]
            .iter()
            .rev()
            .map(|m| message_context(m))
            .collect();
        Ok(context)
    }

    /// What an agent gets of the files the new messages brought: attached,
    /// when together they are at most `attach_max_bytes`; else each with a
    /// signed download link that expires (with a public URL to serve it).
    fn offer_files(&self, context: &mut NotificationContext) {
        let files = || context.messages.iter().flat_map(|m| &m.attachments);
        let total: i64 = files().map(|a| a.size).sum();
        if files().next().is_none() {
            return;
        }
        let attach = usize::try_from(total).is_ok_and(|total| total <= self.delivery.attach_max_bytes);
        for attachment in context.messages.iter_mut().flat_map(|m| &mut m.attachments) {
            if attach {
                attachment.attached = true;
            } else if let Some(base) = &self.public_url {
                let token = self.signer.sign_download(attachment.id, self.delivery.download_link_days);
                attachment.url = format!("{base}/download/{token}");
            }
        }
    }

    /// Names the others in a conversation people were copied into, and
    /// gives a participant the link that takes them out of it.
    async fn add_participants(
        &self,
        context: &mut NotificationContext,
        thread: &Thread,
        recipient: Option<&crate::store::User>,
    ) -> anyhow::Result<()> {
        let recipient_id = recipient.map(|u| u.id);
        let listed = self.store.active_participants(thread.id).await?;
        if recipient_id != Some(thread.customer_id)
            && let Some(customer) = self.store.user(thread.customer_id).await?
        {
            context.also.push(customer.name);
        }
        context.also.extend(listed.iter().filter(|(id, _)| Some(*id) != recipient_id).map(|(_, name)| name.clone()));
        if let (Some(id), Some(base)) = (recipient_id, &self.public_url)
            && listed.iter().any(|(listed, _)| *listed == id)
        {
            context.leave_url = format!("{base}/leave/{}", self.signer.sign_leave(thread.id, id));
        }
        Ok(())
    }

    /// The languages to write to `recipient` in, in order: theirs, their
    /// organization's, the desk's (`[notify] locale`), English.
    async fn languages(&self, recipient: Option<&crate::store::User>) -> anyhow::Result<Vec<String>> {
        let organization = match recipient.and_then(|u| u.organization_id) {
            Some(id) => self.store.organization(id).await?.and_then(|o| o.locale),
            None => None,
        };
        let own = recipient.and_then(|u| u.locale.as_deref());
        Ok(locale::chain(&[own, organization.as_deref(), Some(self.delivery.locale.as_str())]))
    }

    /// The plan whose promises apply to a site: its organization's plan when
    /// that one promises a ticket response time, else the site's own plan.
    async fn effective_plan(&self, site: &Site) -> anyhow::Result<Option<Plan>> {
        let site_plan = self.store.plan(&site.plan_id).await?;
        let org_plan = match site.organization_id {
            Some(org) => match self.store.organization(org).await?.and_then(|o| o.plan_id) {
                Some(plan) => self.store.plan(&plan).await?,
                None => None,
            },
            None => None,
        };
        Ok(match (site_plan, org_plan) {
            (Some(site), _) if site.ticket_response_minutes.is_some() => Some(site),
            (_, Some(org)) if org.ticket_response_minutes.is_some() => Some(org),
            (site, _) => site,
        })
    }
}

/// Whom one notification goes to and what it carries besides its texts.
#[derive(Clone, Copy)]
struct Addressed<'a> {
    /// The user it goes to, if a user.
    recipient: Option<&'a crate::store::User>,
    /// The conversation it is about.
    thread: Option<&'a Thread>,
    /// The recipient's reply token for that conversation.
    token: Option<&'a str>,
    /// Files attached to it.
    files: &'a [AttachedFile],
}

/// A file attached to a notification.
struct AttachedFile {
    filename: String,
    content_type: String,
    content: Vec<u8>,
}

/// The link to a chat or ticket: the template with `{kind}` and `{id}`
/// filled in, or for a base URL `BASE/chats/N` or `BASE/tickets/N`.
pub fn dashboard_link(url: &str, kind: &str, id: i64) -> String {
    if url.contains("{kind}") || url.contains("{id}") {
        url.replace("{kind}", kind).replace("{id}", &id.to_string())
    } else {
        format!("{url}/{kind}s/{id}")
    }
}

/// The Dashboard's home: a base URL as given, or a link template's origin
/// (`https://dash.example.com/support/{kind}s/{id}` -> `https://dash.example.com`).
pub fn dashboard_home(url: &str) -> String {
    if !(url.contains("{kind}") || url.contains("{id}")) {
        return url.to_owned();
    }
    let after_scheme = url.find("://").map_or(0, |at| at + 3);
    match url[after_scheme..].find('/') {
        Some(slash) => url[..after_scheme + slash].to_owned(),
        None => url.to_owned(),
    }
}

fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// A message as the templates show it, its time in `zone` written the way
/// `language` writes times, the zone named (`2026-11-23 11:04 CET`,
/// `23.11.2026, 11:04 CET`).
fn message_context(m: &StoredMessage, zone: chrono_tz::Tz, language: &str) -> MessageContext {
    MessageContext {
        author_name: m.author_name.clone(),
        from_agent: m.author_role == "agent",
        source: m.source.clone(),
        time: chrono::DateTime::from_timestamp_millis(m.created_at)
            .map(|t| t.with_timezone(&zone).format(locale::time_format(language)).to_string())
            .unwrap_or_default(),
        body: m.body.clone(),
        attachments: m
            .attachments
            .iter()
            .map(|a| AttachmentContext {
                filename: a.filename.clone(),
                content_type: a.content_type.clone(),
                size: a.size,
                attached: false,
                url: String::new(),
                id: a.id,
            })
            .collect(),
        omitted_before: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::{dashboard_home, dashboard_link};

    #[test]
    fn dashboard_links_from_a_base_url_or_a_template() {
        assert_eq!(dashboard_link("https://dash.example.com", "ticket", 7), "https://dash.example.com/tickets/7");
        assert_eq!(dashboard_link("https://dash.example.com", "chat", 12), "https://dash.example.com/chats/12");
        let template = "https://app.example.com/support/{kind}/{id}?from=mail";
        assert_eq!(dashboard_link(template, "ticket", 7), "https://app.example.com/support/ticket/7?from=mail");
        assert_eq!(dashboard_home(template), "https://app.example.com");
        assert_eq!(dashboard_home("https://dash.example.com/desk"), "https://dash.example.com/desk");
    }
}
