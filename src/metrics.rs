//! Metrics an operator can alert on, in Prometheus' text format
//! (`GET /metrics`, admin token), with the `prometheus-client` crate.
//!
//! Counted where they happen: SMTP sessions, transactions by outcome and
//! reply code, the time from the end of a message to its answer, routing
//! rules reloads. Read from the store and the workers' totals when scraped:
//! held mail, the outbox by status and the age of its oldest pending item,
//! deliveries, bounces, and the group commit's transactions, messages and
//! commit time, and the sender checks' DNS answers and time.

use crate::outbound::OutboundCounters;
use crate::store::Store;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// The outcome and reply code of an SMTP transaction.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransactionLabels {
    /// `accepted`, `duplicate`, `dropped`, `held`, `rejected`, `deferred`, `tempfail`, `too_large`.
    pub outcome: &'static str,
    /// The basic reply code, e.g. `250`.
    pub code: u16,
}

/// A result: `ok` or `failed`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `ok` or `failed`.
    pub result: String,
}

/// Why the listener closed a session or turned a connection away.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// The limit: `idle`, `command_line`, `data_section`, `data_too_slow`,
    /// `session_lifetime`, `evicted`; for refused connections
    /// `max_connections`, `per_ip`, `per_network`; for refused recipients
    /// the refusal's name.
    pub reason: &'static str,
}

/// What became of a message.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `accepted`, `duplicate`, `dropped`, `held`, `rejected`, `temporary`.
    pub outcome: String,
}

/// An answer of the policy service.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    /// `reject`, `defer_if_permit` or `dunno`.
    pub action: &'static str,
    /// Why: a recipient refusal's name, `new_chat`, `accepted` or `unavailable`.
    pub reason: &'static str,
}

/// A failed credential check: which credential, and what came of it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CredentialLabels {
    /// `api`, `admin` or `console`.
    pub credential: &'static str,
    /// `wrong` (a wrong token, answered 401 or at the login form) or
    /// `locked` (refused with 429 without being checked).
    pub result: &'static str,
}

/// An outbox status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    /// `pending`, `sending`, `sent`, `merged`, `skipped`, `failed`.
    pub status: String,
}

/// Every metric, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// SMTP connections accepted.
    pub smtp_sessions: Counter,
    /// SMTP transactions that sent a message, by outcome and reply code.
    pub smtp_transactions: Family<TransactionLabels, Counter>,
    /// LMTP deliveries (one per recipient of a message), by outcome and reply code.
    pub lmtp_deliveries: Family<TransactionLabels, Counter>,
    /// Seconds from the end of a message to its answer.
    pub data_answer_seconds: Histogram,
    /// Routing rules reloads, by result.
    pub rules_reloads: Family<ResultLabels, Counter>,
    /// Failed credential checks, by credential and result.
    credential_failures: Family<CredentialLabels, Counter>,
    /// SMTP sessions closed at a limit, by limit.
    smtp_closed: Family<ReasonLabels, Counter>,
    /// SMTP connections turned away at accept, by limit.
    smtp_refused: Family<ReasonLabels, Counter>,
    /// Recipients refused at RCPT time, by why.
    recipients_refused: Family<ReasonLabels, Counter>,
    /// Pipe deliveries (`mailgate deliver`), by outcome, as counted in the store.
    pipe_deliveries: Family<OutcomeLabels, Counter>,
    /// The policy service's answers, by action and reason.
    policy_answers: Family<PolicyLabels, Counter>,
    held: Gauge,
    outbox: Family<StatusLabels, Gauge>,
    oldest_pending_seconds: Gauge<f64, AtomicU64>,
    bounces: Gauge,
    deliveries_sent: Counter,
    deliveries_not_sent: Counter,
    commits: Counter,
    pushed_back: Counter,
    committed_messages: Counter,
    commit_seconds: Counter<f64, AtomicU64>,
    dns_answers: Counter,
    sender_checks: Counter,
    sender_check_seconds: Counter<f64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("mailgate");
        let metrics = Self {
            smtp_sessions: Counter::default(),
            smtp_transactions: Family::default(),
            lmtp_deliveries: Family::default(),
            data_answer_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            rules_reloads: Family::default(),
            credential_failures: Family::default(),
            smtp_closed: Family::default(),
            smtp_refused: Family::default(),
            recipients_refused: Family::default(),
            policy_answers: Family::default(),
            pipe_deliveries: Family::default(),
            held: Gauge::default(),
            outbox: Family::default(),
            oldest_pending_seconds: Gauge::default(),
            bounces: Gauge::default(),
            deliveries_sent: Counter::default(),
            deliveries_not_sent: Counter::default(),
            commits: Counter::default(),
            pushed_back: Counter::default(),
            committed_messages: Counter::default(),
            commit_seconds: Counter::default(),
            dns_answers: Counter::default(),
            sender_checks: Counter::default(),
            sender_check_seconds: Counter::default(),
            registry: Registry::default(),
        };
        registry.register("smtp_sessions", "SMTP connections accepted", metrics.smtp_sessions.clone());
        registry.register(
            "smtp_transactions",
            "SMTP transactions that sent a message, by outcome and reply code",
            metrics.smtp_transactions.clone(),
        );
        registry.register(
            "lmtp_deliveries",
            "LMTP deliveries (one per accepted recipient of a message), by outcome and reply code",
            metrics.lmtp_deliveries.clone(),
        );
        registry.register(
            "pipe_deliveries",
            "Messages handed in by `mailgate deliver` (a pipe transport), by outcome (accepted, duplicate, \
             dropped, held, rejected, temporary)",
            metrics.pipe_deliveries.clone(),
        );
        registry.register(
            "policy_answers",
            "Answers of the Postfix policy service (reject, defer_if_permit, dunno), by action and reason",
            metrics.policy_answers.clone(),
        );
        registry.register(
            "smtp_data_answer_seconds",
            "Time from the end of a message to its answer (parse, decide, durable commit)",
            metrics.data_answer_seconds.clone(),
        );
        registry.register("rules_reloads", "Routing rules reloads, by result", metrics.rules_reloads.clone());
        registry.register(
            "smtp_sessions_closed",
            "SMTP sessions closed at a limit (idle, command_line, data_section, data_too_slow, session_lifetime, \
             evicted to make room)",
            metrics.smtp_closed.clone(),
        );
        registry.register(
            "smtp_connections_refused",
            "SMTP connections turned away with 421 at accept (max_connections, per_ip, per_network, proxy_header, shutting_down)",
            metrics.smtp_refused.clone(),
        );
        registry.register(
            "smtp_recipients_refused",
            "Recipients refused at RCPT time, by why (relay_denied, unknown_mailbox, expired_token, retired_key, bad_token, \
             unknown_thread, revoked, unavailable)",
            metrics.recipients_refused.clone(),
        );
        registry.register(
            "credential_failures",
            "Wrong API or admin tokens and console logins, and checks refused with 429, by credential and result",
            metrics.credential_failures.clone(),
        );
        registry.register("held_messages", "Mail waiting in the held queue", metrics.held.clone());
        registry.register("outbox_items", "Outbox items by status", metrics.outbox.clone());
        registry.register(
            "outbox_oldest_pending_seconds",
            "Age of the oldest pending outbox item (0 when none)",
            metrics.oldest_pending_seconds.clone(),
        );
        registry.register("bounces_recorded", "Delivery reports recorded (kept rows)", metrics.bounces.clone());
        registry.register(
            "deliveries_sent",
            "Notifications and webhook deliveries sent",
            metrics.deliveries_sent.clone(),
        );
        registry.register(
            "deliveries_not_sent",
            "Delivery attempts that failed (retried or for good) or were skipped",
            metrics.deliveries_not_sent.clone(),
        );
        registry.register("group_commits", "Transactions of the group-commit writer", metrics.commits.clone());
        registry.register(
            "store_pushed_back",
            "Messages turned away with 451 4.3.2 because the database had fallen behind ([limits] store_stall_secs)",
            metrics.pushed_back.clone(),
        );
        registry.register(
            "group_commit_messages",
            "Messages the group-commit writer stored (divide by transactions: the group size)",
            metrics.committed_messages.clone(),
        );
        registry.register(
            "group_commit_seconds",
            "Time spent committing group-commit transactions",
            metrics.commit_seconds.clone(),
        );
        registry.register(
            "dns_answers",
            "TXT answers the sender checks fetched from DNS (lookups the cache could not answer)",
            metrics.dns_answers.clone(),
        );
        registry.register(
            "sender_checks",
            "SPF, DKIM and DMARC checks run (one per message)",
            metrics.sender_checks.clone(),
        );
        registry.register(
            "sender_check_seconds",
            "Time the sender checks took, mostly their DNS lookups",
            metrics.sender_check_seconds.clone(),
        );
        Self { registry, ..metrics }
    }
}

/// Moves a counter up to `total` (totals kept elsewhere only grow).
fn catch_up(counter: &Counter, total: u64) {
    counter.inc_by(total.saturating_sub(counter.get()));
}

impl Metrics {
    /// Counts a session closed at a limit.
    pub fn smtp_closed(&self, reason: &'static str) {
        self.smtp_closed.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// Counts a connection turned away at accept.
    pub fn smtp_refused(&self, reason: &'static str) {
        self.smtp_refused.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// Counts a recipient refused at RCPT time.
    pub fn recipient_refused(&self, reason: &'static str) {
        self.recipients_refused.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// Counts an answer of the policy service.
    pub fn policy_answer(&self, action: &'static str, reason: &'static str) {
        self.policy_answers.get_or_create(&PolicyLabels { action, reason }).inc();
    }

    /// Counts a failed credential check (`credential`: `api`, `admin`,
    /// `console`; `result`: `wrong` or `locked`).
    pub fn credential_failure(&self, credential: &'static str, result: &'static str) {
        self.credential_failures.get_or_create(&CredentialLabels { credential, result }).inc();
    }

    /// Counts one transaction that sent a message (`lmtp`: one recipient's
    /// delivery over LMTP).
    pub fn transaction(&self, lmtp: bool, outcome: &'static str, code: u16, seconds: f64) {
        let family = if lmtp { &self.lmtp_deliveries } else { &self.smtp_transactions };
        family.get_or_create(&TransactionLabels { outcome, code }).inc();
        self.data_answer_seconds.observe(seconds);
    }

    /// Counts a rules reload.
    pub fn rules_reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.rules_reloads.get_or_create(&ResultLabels { result: result.to_owned() }).inc();
    }

    /// The metrics in Prometheus' text format, with what is read from the
    /// store and the workers' totals brought up to date first.
    pub async fn render(&self, store: &Store, outbound: &OutboundCounters) -> anyhow::Result<String> {
        let (held, by_status, oldest, bounces) = store.operator_gauges().await?;
        for (key, count) in store.settings_with_prefix(crate::deliver::PIPE_COUNTS).await? {
            let outcome = key.trim_start_matches(crate::deliver::PIPE_COUNTS).to_owned();
            catch_up(&self.pipe_deliveries.get_or_create(&OutcomeLabels { outcome }), count.parse().unwrap_or(0));
        }
        self.held.set(held);
        for status in crate::store::OutboxStatus::ALL.iter().map(|s| s.as_str()) {
            let count = by_status.iter().find(|(s, _)| s == status).map_or(0, |(_, n)| *n);
            self.outbox.get_or_create(&StatusLabels { status: status.to_owned() }).set(count);
        }
        let age = oldest.map_or(0.0, |at| ((crate::store::now_ms() - at).max(0) as f64) / 1000.0);
        self.oldest_pending_seconds.set(age);
        self.bounces.set(bounces);
        let sent = outbound.snapshot();
        catch_up(&self.deliveries_sent, sent.sent);
        catch_up(&self.deliveries_not_sent, sent.not_sent);
        let group = store.group_commit_stats();
        catch_up(&self.commits, group.transactions);
        catch_up(&self.pushed_back, group.pushed_back);
        catch_up(&self.committed_messages, group.messages);
        let seconds = group.commit_us as f64 / 1e6;
        self.commit_seconds.inc_by((seconds - self.commit_seconds.get()).max(0.0));
        {
            use crate::pipeline::authenticate::{CHECK_US, CHECKS, DNS_ANSWERS};
            use std::sync::atomic::Ordering::Relaxed;
            catch_up(&self.dns_answers, DNS_ANSWERS.load(Relaxed));
            catch_up(&self.sender_checks, CHECKS.load(Relaxed));
            let seconds = CHECK_US.load(Relaxed) as f64 / 1e6;
            self.sender_check_seconds.inc_by((seconds - self.sender_check_seconds.get()).max(0.0));
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}
