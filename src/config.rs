//! Configuration: a TOML file, then `MAILGATE_*` environment variables and
//! command-line flags on top, then validated into a [`Config`].
//!
//! Raw values are parsed once here (addresses, sizes, durations), so a bad
//! setting stops the server at start with an error naming the key. Nothing
//! else in mailgate reads the environment or a config file.

use anyhow::{Context, bail};
use clap::Args;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where a tool finds the gateway's configuration and data: the flags of
/// every command but `serve` that reads the database.
#[derive(Debug, Clone, Default, Args)]
pub struct StoreArgs {
    /// Configuration file (TOML); see mailgate.example.toml for every key.
    #[arg(long, short = 'c', env = "MAILGATE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory of the SQLite database and other state [default: ./mailgate-data].
    #[arg(long, env = "MAILGATE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Database URL; defaults to sqlite://DATA_DIR/mailgate.db.
    #[arg(long, env = "MAILGATE_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
}

impl StoreArgs {
    /// Whether any of the flags (or their variables) was given.
    pub fn given(&self) -> bool {
        self.config.is_some() || self.data_dir.is_some() || self.database_url.is_some()
    }

    /// The configuration these flags name, as `serve` would load it.
    pub fn load(&self) -> anyhow::Result<Config> {
        self.with(None, None).load()
    }

    /// As the `serve` flags, with a domain and a rules file.
    fn with(&self, domain: Option<String>, rules: Option<PathBuf>) -> ConfigArgs {
        ConfigArgs { store: self.clone(), domain, rules, ..ConfigArgs::default() }
    }
}

/// The flags of the tools that read mail as the server would (`inspect`,
/// `rules`, `explain`, `replay`, `held`): where the configuration and data
/// are, and the domain and rules to judge with.
#[derive(Debug, Clone, Default, Args)]
pub struct ToolArgs {
    /// Where the configuration and the data are.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Mail domain of the reply addresses [default: the configured one, else localhost].
    #[arg(long, env = "MAILGATE_DOMAIN", value_name = "DOMAIN")]
    pub domain: Option<String>,
    /// Routing rules file (TOML) [default: the configured one, else the built-in rules].
    #[arg(long, alias = "rules-file", env = "MAILGATE_RULES_FILE", value_name = "FILE")]
    pub rules: Option<PathBuf>,
}

impl ToolArgs {
    /// The configuration these flags name, as `serve` would load it.
    pub fn load(&self) -> anyhow::Result<Config> {
        self.store.with(self.domain.clone(), self.rules.clone()).load()
    }
}

/// Flags shared by every command that needs the gateway's configuration.
/// Each flag can also be set by the environment variable named beside it.
#[derive(Debug, Clone, Default, Args)]
pub struct ConfigArgs {
    /// Where the configuration and the data are (as every tool takes them).
    #[command(flatten)]
    pub store: StoreArgs,
    /// Address the SMTP listener binds to [default: 127.0.0.1:2525].
    #[arg(long, env = "MAILGATE_SMTP_LISTEN", value_name = "ADDR")]
    pub smtp_listen: Option<String>,
    /// Also take mail over LMTP (RFC 2033) from the mail server in front,
    /// on `HOST:PORT` or `unix:/path/to/socket` [default: no LMTP listener].
    #[arg(long, env = "MAILGATE_LMTP_LISTEN", value_name = "ADDR")]
    pub lmtp_listen: Option<String>,
    /// Also answer Postfix's policy requests (check_policy_service) on
    /// `HOST:PORT` or `unix:/path/to/socket` [default: no policy service].
    #[arg(long, env = "MAILGATE_POLICY_LISTEN", value_name = "ADDR")]
    pub policy_listen: Option<String>,
    /// Address the HTTP API binds to [default: 127.0.0.1:8080].
    #[arg(long, env = "MAILGATE_HTTP_LISTEN", value_name = "ADDR")]
    pub http_listen: Option<String>,
    /// Also serve GET /metrics without a token on this address (for a
    /// scraper on a private network) [default: only on the HTTP API, with
    /// the admin token].
    #[arg(long, env = "MAILGATE_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// Mail domain: reply addresses are reply+TOKEN@DOMAIN and the support
    /// address is support@DOMAIN [default: localhost].
    #[arg(long, env = "MAILGATE_DOMAIN", value_name = "DOMAIN")]
    pub domain: Option<String>,
    /// Name the SMTP listener gives in its greeting [default: the domain].
    #[arg(long, env = "MAILGATE_HOSTNAME", value_name = "NAME")]
    pub hostname: Option<String>,
    /// Folder outgoing notifications are written to as .eml files
    /// [default: DATA_DIR/outbox].
    #[arg(long, env = "MAILGATE_OUTBOX_DIR", value_name = "DIR")]
    pub outbox_dir: Option<PathBuf>,
    /// Folder of notification templates overriding the built-in ones.
    #[arg(long, env = "MAILGATE_TEMPLATES_DIR", value_name = "DIR")]
    pub templates_dir: Option<PathBuf>,
    /// The web Dashboard, for links in notifications: a base URL
    /// (`https://dash.example.com`, links go to BASE/chats/N and
    /// BASE/tickets/N) or a link template with `{kind}` (chat, ticket) and
    /// `{id}` (chat id, ticket number). Without it, notifications carry no link.
    #[arg(long, env = "MAILGATE_DASHBOARD_URL", value_name = "URL")]
    pub dashboard_url: Option<String>,
    /// Largest message accepted, in bytes [default: 26214400 (25 MiB)].
    #[arg(long, env = "MAILGATE_MAX_MESSAGE_SIZE", value_name = "BYTES")]
    pub max_message_size: Option<usize>,
    /// Routing rules file (TOML); reloaded on SIGHUP and when it changes
    /// [default: the built-in rules, rules/default.toml].
    #[arg(long, env = "MAILGATE_RULES_FILE", value_name = "FILE")]
    pub rules: Option<PathBuf>,
    /// PEM certificate chain for STARTTLS (with --tls-key).
    #[arg(long, env = "MAILGATE_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for STARTTLS (with --tls-cert).
    #[arg(long, env = "MAILGATE_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Public base URL where this server's /unsubscribe links are reachable
    /// (for one-click List-Unsubscribe) [default: none: mailto links only].
    #[arg(long, env = "MAILGATE_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// SMTP relay for outgoing mail, e.g. smtp://host:25,
    /// smtp://user:pass@host:587?tls=starttls or smtps://host:465
    /// [default: none: mail is written to the outgoing-mail folder].
    #[arg(long, env = "MAILGATE_RELAY_URL", value_name = "URL")]
    pub relay: Option<String>,
}

/// The file's shape: every key optional, defaults applied in [`Config::load`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    smtp_listen: Option<String>,
    lmtp_listen: Option<String>,
    policy_listen: Option<String>,
    http_listen: Option<String>,
    metrics_listen: Option<String>,
    domain: Option<String>,
    hostname: Option<String>,
    api_token: Option<String>,
    outbox_dir: Option<PathBuf>,
    templates_dir: Option<PathBuf>,
    dashboard_url: Option<String>,
    public_url: Option<String>,
    time_zone: Option<String>,
    rules_file: Option<PathBuf>,
    admin_token: Option<String>,
    trusted_proxies: Option<Vec<String>>,
    token_lifetime_days: Option<u32>,
    tls: Option<RawTls>,
    on_call_address: Option<String>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    delivery: RawDelivery,
    #[serde(default)]
    auth: RawAuth,
    #[serde(default)]
    notify: RawNotify,
    #[serde(default)]
    policy: RawPolicy,
    #[serde(default)]
    participants: RawParticipants,
    dkim: Option<RawDkim>,
    #[serde(default)]
    retention: RawRetention,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    raw_days: Option<f64>,
    held_days: Option<f64>,
    purge_interval_secs: Option<u64>,
}

/// How long what arrived is kept.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retention {
    /// Originals (messages as they arrived) older than this are purged;
    /// `None` keeps them for ever. Originals of held items still waiting
    /// for an admin are never purged.
    pub raw: Option<Duration>,
    /// Held items an admin acted on (released, discarded, answered) are
    /// removed this long after; a discarded item's original goes with it.
    pub held: Option<Duration>,
    /// How often the server purges.
    pub purge_interval: Duration,
    /// The text of sent notifications (matched in replies that bring it
    /// back) is cleared this long after sending: as long as reply addresses
    /// stay valid (`token_lifetime_days`); `None` keeps it for ever.
    pub notification_text: Option<Duration>,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            raw: Some(Duration::from_secs(90 * DAY)),
            held: Some(Duration::from_secs(30 * DAY)),
            purge_interval: Duration::from_secs(3600),
            notification_text: Some(Duration::from_secs(180 * DAY)),
        }
    }
}

/// Seconds in a day.
const DAY: u64 = 24 * 3600;

/// A retention in days from the file: `0` means for ever; fractions of a
/// day are allowed; a negative or non-finite number is an error naming `key`.
fn retention_days(days: Option<f64>, default: Option<Duration>, key: &str) -> anyhow::Result<Option<Duration>> {
    match days {
        None => Ok(default),
        Some(0.0) => Ok(None),
        Some(days) if days.is_finite() && days > 0.0 => Ok(Some(Duration::from_secs_f64(days * DAY as f64))),
        Some(days) => bail!("retention.{key}: {days} is not a number of days (0 keeps for ever)"),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDelivery {
    relay_url: Option<String>,
    concurrency: Option<u32>,
    coalesce_window_secs: Option<u64>,
    lifetime_hours: Option<u64>,
    retry_base_secs: Option<u64>,
    retry_max_secs: Option<u64>,
    max_hard_bounces: Option<u32>,
    suppression_days: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    refuse_support_address: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParticipants {
    outsiders: Option<crate::pipeline::participants::Outsiders>,
    blocklist: Option<Vec<String>>,
    max_per_conversation: Option<i64>,
    max_new_outsiders_per_org_per_day: Option<i64>,
}

impl RawParticipants {
    /// The `[participants]` table, checked: limits of at least 1, blocklist
    /// entries that are addresses or `@domain`.
    fn validated(self) -> anyhow::Result<crate::pipeline::participants::ParticipantPolicy> {
        let defaults = crate::pipeline::participants::ParticipantPolicy::default();
        let mut blocklist = Vec::new();
        for entry in self.blocklist.unwrap_or_default() {
            let entry = entry.trim().to_lowercase();
            let valid = match entry.strip_prefix('@') {
                Some(domain) => !domain.is_empty() && !domain.contains('@') && domain.contains('.'),
                None => crate::domain::EmailAddress::parse(&entry).is_some(),
            };
            if !valid {
                bail!("participants.blocklist: {entry:?} is neither an address (name@domain) nor a domain (@domain)");
            }
            blocklist.push(entry);
        }
        let limit = |value: Option<i64>, default: i64, name: &str| match value {
            Some(n) if n < 1 => bail!("participants.{name}: {n} must be at least 1"),
            Some(n) => Ok(n),
            None => Ok(default),
        };
        Ok(crate::pipeline::participants::ParticipantPolicy {
            outsiders: self.outsiders.unwrap_or(defaults.outsiders),
            blocklist,
            max_per_conversation: limit(
                self.max_per_conversation,
                defaults.max_per_conversation,
                "max_per_conversation",
            )?,
            max_new_outsiders_per_org_per_day: limit(
                self.max_new_outsiders_per_org_per_day,
                defaults.max_new_outsiders_per_org_per_day,
                "max_new_outsiders_per_org_per_day",
            )?,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotify {
    max_message_bytes: Option<usize>,
    attach_max_bytes: Option<usize>,
    download_link_days: Option<u32>,
    from_name: Option<String>,
    locale: Option<String>,
    from_address: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    certificate: PathBuf,
    private_key: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    enabled: Option<bool>,
    resolver: Option<String>,
    on_dmarc_fail: Option<crate::pipeline::authenticate::OnDmarcFail>,
    on_not_allowed: Option<String>,
    on_ambiguous_author: Option<String>,
    #[serde(default)]
    records: std::collections::HashMap<String, RawRecord>,
    #[serde(default)]
    trusted_relays: Vec<String>,
    #[serde(default)]
    trusted_authserv_ids: Vec<String>,
    #[serde(default)]
    trusted_proxies: Vec<String>,
}

/// One name's entry in `[auth.records]`: a TXT value, or records by type.
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "a TXT value (a string), or a table of lists: { txt = [\"…\"], mx = [\"10 mx.example.com\"], \
                 a = [\"192.0.2.1\"], aaaa = [\"2001:db8::1\"], ptr = [\"host.example.com\"] }"
)]
enum RawRecord {
    Txt(String),
    Typed(RawRecordSet),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecordSet {
    #[serde(default)]
    txt: Vec<String>,
    #[serde(default)]
    mx: Vec<String>,
    #[serde(default)]
    a: Vec<std::net::Ipv4Addr>,
    #[serde(default)]
    aaaa: Vec<std::net::Ipv6Addr>,
    #[serde(default)]
    ptr: Vec<String>,
}

/// Records served without DNS, by type (`[auth.records]`; `mailgate doctor`
/// reads them all, the sender checks the TXT ones).
#[derive(Debug, Clone, Default)]
pub struct RecordSet {
    /// TXT values.
    pub txt: Vec<String>,
    /// MX records: (preference, exchange).
    pub mx: Vec<(u16, String)>,
    /// A and AAAA addresses.
    pub addresses: Vec<std::net::IpAddr>,
    /// PTR names (for an entry named by an IP address).
    pub ptr: Vec<String>,
}

/// Sender authentication (SPF, DKIM, DMARC) of inbound mail.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Whether to check at all.
    pub enabled: bool,
    /// `system`, `cloudflare`, `google`, `quad9`, `static`, or one name
    /// server's `IP:PORT`.
    pub resolver: String,
    /// What a DMARC failure leads to.
    pub on_dmarc_fail: crate::pipeline::authenticate::OnDmarcFail,
    /// TXT records the sender checks read without DNS (name -> value).
    pub records: std::collections::HashMap<String, String>,
    /// Every record of `[auth.records]`, by lower-case name without the
    /// final dot (an IP address for PTR records).
    pub dns_records: std::collections::HashMap<String, RecordSet>,
    /// Hold mail from a sender who may not write in the thread (instead of refusing it).
    pub hold_not_allowed: bool,
    /// Refuse (`550 5.7.1`) mail with no single author that names a
    /// conversation, instead of holding it (`ambiguous_author`).
    pub refuse_ambiguous_author: bool,
    /// The mail servers in front of mailgate (`trusted_relays`): mail they
    /// pass on is judged for the client they saw (XFORWARD or XCLIENT, their
    /// `Received:` field, a trusted `Authentication-Results`).
    pub trusted_relays: crate::domain::Networks,
    /// The `Authentication-Results` fields believed (by authserv-id), on
    /// mail from a trusted relay, over LMTP, or through `deliver`.
    pub trusted_authserv_ids: Vec<String>,
    /// TCP proxies whose PROXY protocol header (v1 or v2) names the client
    /// (`[auth] trusted_proxies`).
    pub proxy_protocol_from: crate::domain::Networks,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            resolver: "system".to_owned(),
            on_dmarc_fail: crate::pipeline::authenticate::OnDmarcFail::Refuse,
            records: Default::default(),
            dns_records: Default::default(),
            hold_not_allowed: false,
            refuse_ambiguous_author: false,
            trusted_relays: Default::default(),
            trusted_authserv_ids: Vec::new(),
            proxy_protocol_from: Default::default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDkim {
    selector: String,
    private_key: PathBuf,
    domain: Option<String>,
    algorithm: Option<String>,
}

/// How outgoing mail is delivered.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// The SMTP relay URL; `None` writes `.eml` files to the outgoing-mail folder.
    pub relay_url: Option<String>,
    /// Deliveries in flight at once (also the relay connection pool size).
    pub concurrency: u32,
    /// Replies to one person in one thread within this window become one notification.
    pub coalesce_window: Duration,
    /// How long a failing delivery is retried.
    pub lifetime: Duration,
    /// The first retry delay; doubled at each attempt, with jitter.
    pub retry_base: Duration,
    /// The longest delay between two attempts.
    pub retry_max: Duration,
    /// Hard bounces after which mail to an address stops.
    pub max_hard_bounces: u32,
    /// How long a hard bounce counts; a suppression ends by itself once
    /// fewer than `max_hard_bounces` are this recent. 0: forever.
    pub suppression_days: u32,
    /// DKIM signing, when configured.
    pub dkim: Option<DkimSettings>,
    /// The desk's name on its mail (`[notify] from_name`, "Support"): the
    /// From of automatic mail, and after an agent's name on theirs.
    pub from_name: String,
    /// The From address of notifications (`[notify] from_address`); `None`
    /// is `support@DOMAIN`.
    pub from_address: Option<String>,
    /// A customer's files are attached to an agent's notification when
    /// together at most this large (`[notify] attach_max_bytes`, 10 MiB;
    /// 0: never), else listed with download links.
    pub attach_max_bytes: usize,
    /// How long a download link works (`[notify] download_link_days`, 30).
    pub download_link_days: u32,
    /// The language of mail to people who chose none (`[notify] locale`, `en`).
    pub locale: String,
    /// The largest notification mailgate sends (`[notify] max_message_bytes`):
    /// long texts are cut and merged notifications shortened to fit.
    pub max_message_bytes: usize,
}

impl DeliveryConfig {
    /// Unix ms from which hard bounces count toward suppression.
    pub fn bounces_count_since(&self, now_ms: i64) -> i64 {
        match self.suppression_days {
            0 => i64::MIN,
            days => now_ms - i64::from(days) * 86_400_000,
        }
    }
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            relay_url: None,
            concurrency: 8,
            coalesce_window: Duration::from_secs(10),
            lifetime: Duration::from_secs(48 * 3600),
            retry_base: Duration::from_secs(30),
            retry_max: Duration::from_secs(3600),
            max_hard_bounces: 3,
            suppression_days: 30,
            dkim: None,
            max_message_bytes: 10 * 1024 * 1024,
            attach_max_bytes: 10 * 1024 * 1024,
            download_link_days: 30,
            from_name: "Support".to_owned(),
            locale: crate::notify::locale::FALLBACK.to_owned(),
            from_address: None,
        }
    }
}

/// DKIM signing settings.
#[derive(Debug, Clone)]
pub struct DkimSettings {
    /// The selector: the key is published at `<selector>._domainkey.<domain>`.
    pub selector: String,
    /// The signing domain (`d=`), by default our mail domain.
    pub domain: String,
    /// PEM file of the private key.
    pub private_key: PathBuf,
    /// `rsa` or `ed25519`.
    pub algorithm: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_message_size: Option<usize>,
    max_recipients: Option<usize>,
    max_connections: Option<usize>,
    command_timeout_secs: Option<u64>,
    data_timeout_secs: Option<u64>,
    max_connections_per_ip: Option<usize>,
    max_mime_parts: Option<usize>,
    max_mime_depth: Option<usize>,
    max_header_fields: Option<usize>,
    max_header_bytes: Option<usize>,
    max_messages_per_sender_per_hour: Option<u32>,
    reading_budget_secs: Option<u64>,
    command_line_secs: Option<u64>,
    data_section_secs: Option<u64>,
    min_data_rate: Option<u64>,
    data_rate_window_secs: Option<u64>,
    session_lifetime_secs: Option<u64>,
    max_connections_per_network: Option<usize>,
    shutdown_grace_secs: Option<u64>,
    store_stall_secs: Option<u64>,
}

/// Limits that protect the SMTP listener from oversized or slow clients.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest message in bytes; advertised with SIZE, `552` beyond it.
    pub max_message_size: usize,
    /// Recipients accepted per message; `452` beyond it.
    pub max_recipients: usize,
    /// Concurrent SMTP connections; `421` beyond it.
    pub max_connections: usize,
    /// How long the listener waits for a command line.
    pub command_timeout: Duration,
    /// How long the listener waits for the next bytes of DATA.
    pub data_timeout: Duration,
    /// Concurrent SMTP connections from one IP address; `421` beyond it.
    pub max_connections_per_ip: usize,
    /// Concurrent SMTP connections from one network (a /24 for IPv4, a /48
    /// for IPv6); `421` beyond it.
    pub max_connections_per_network: usize,
    /// How long one command line may take from its first byte to its end,
    /// however steadily it trickles in; `421 4.4.2` beyond it.
    pub command_line_timeout: Duration,
    /// How long one DATA section may take in all; `421 4.4.2` beyond it.
    pub data_section_timeout: Duration,
    /// Bytes per second a DATA section must average over each
    /// `data_rate_window`; `421 4.4.2` below it.
    pub min_data_rate: u64,
    /// The window over which the DATA rate is measured.
    pub data_rate_window: Duration,
    /// How long one SMTP session may last in all; `421 4.4.2` beyond it
    /// (at the next command, or at once when idle).
    pub session_lifetime: Duration,
    /// MIME parts, multipart nesting and header fields a message may have.
    pub mime: crate::pipeline::MimeLimits,
    /// Loop breaker: messages accepted from one sender in an hour; `451` beyond it.
    pub max_messages_per_sender_per_hour: u32,
    /// On SIGTERM, how long sessions under way may take to finish (new
    /// connections get `421` meanwhile); the server stops after it at the latest.
    pub shutdown_grace: Duration,
    /// How long a message may wait for the database to commit it; past it
    /// (or while the database has been writing one transaction longer than
    /// this) messages get `451 4.3.2` instead of waiting.
    pub store_stall: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_size: 25 * 1024 * 1024,
            max_recipients: 50,
            max_connections: 512,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(180),
            max_connections_per_ip: 20,
            max_connections_per_network: 64,
            command_line_timeout: Duration::from_secs(30),
            data_section_timeout: Duration::from_secs(600),
            min_data_rate: 1024,
            data_rate_window: Duration::from_secs(30),
            session_lifetime: Duration::from_secs(1800),
            mime: crate::pipeline::MimeLimits::default(),
            max_messages_per_sender_per_hour: 120,
            shutdown_grace: Duration::from_secs(30),
            store_stall: Duration::from_secs(30),
        }
    }
}

/// The validated configuration of one mailgate instance.
#[derive(Clone)]
pub struct Config {
    /// Where state lives when not told otherwise.
    pub data_dir: PathBuf,
    /// `sqlite://...` (the embedded default).
    pub database_url: String,
    /// SMTP listener address; port 0 picks a free port (tests).
    pub smtp_listen: SocketAddr,
    /// Where LMTP is taken, when it is.
    pub lmtp_listen: Option<ListenAddr>,
    /// Where the Postfix policy service answers, when it does.
    pub policy_listen: Option<ListenAddr>,
    /// The policy service refuses all mail to the support address at RCPT
    /// (`[policy] refuse_support_address`): no new chat by email, and no
    /// reply sent there finds its conversation.
    pub policy_refuses_support: bool,
    /// Who of the people copied on a message joins its conversation (`[participants]`).
    pub participants: crate::pipeline::participants::ParticipantPolicy,
    /// HTTP API address; port 0 picks a free port (tests).
    pub http_listen: SocketAddr,
    /// Where `GET /metrics` is also served without a token, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// The reverse proxies whose `X-Forwarded-*` headers the HTTP side believes.
    pub trusted_proxies: crate::http::throttle::TrustedProxies,
    /// Our mail domain, lower case.
    pub domain: String,
    /// Whether the domain was given (flag, environment or file) rather
    /// than defaulted: tools then use the domain the server last ran with.
    pub domain_given: bool,
    /// Name in the SMTP greeting and EHLO answer.
    pub hostname: String,
    /// Bearer token for the API; when absent one is generated and stored.
    pub api_token: Option<String>,
    /// Folder that receives outgoing notifications as `.eml` files.
    pub outbox_dir: PathBuf,
    /// Folder of templates overriding the built-in ones.
    pub templates_dir: Option<PathBuf>,
    /// The Dashboard's base URL or link template (see `--dashboard-url`);
    /// `None`: notifications carry no Dashboard link.
    pub dashboard_url: Option<String>,
    /// SMTP limits.
    pub limits: Limits,
    /// Outgoing mail.
    pub delivery: DeliveryConfig,
    /// Where on-call pages go.
    pub on_call_address: String,
    /// Public base URL of this server, for one-click unsubscribe links.
    pub public_url: Option<String>,
    /// The desk's time zone: notifications show times in it to recipients
    /// who have none of their own (`time_zone`, default UTC).
    pub time_zone: chrono_tz::Tz,
    /// The routing rules file; `None` uses the built-in rules.
    pub rules_file: Option<PathBuf>,
    /// Bearer token of the admin API; generated and stored when absent.
    pub admin_token: Option<String>,
    /// SPF, DKIM and DMARC checks of inbound mail.
    pub auth: AuthConfig,
    /// Reply tokens older than this many days are refused (`0`: never).
    pub token_lifetime_days: Option<u32>,
    /// STARTTLS certificate chain and key (PEM files), when offered.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// How long originals and acted-on held items are kept.
    pub retention: Retention,
}

impl Config {
    /// The database URL with its password, if any, replaced by `***`: what
    /// logs and error messages show.
    pub fn database_url_for_logs(&self) -> String {
        redact_password(&self.database_url)
    }
}

/// `scheme://user:password@host/...` as `scheme://user:***@host/...`.
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let Some((credentials, host)) = rest.split_once('@') else { return url.to_owned() };
    match credentials.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("data_dir", &self.data_dir)
            .field("database_url", &self.database_url_for_logs())
            .field("smtp_listen", &self.smtp_listen)
            .field("http_listen", &self.http_listen)
            .field("metrics_listen", &self.metrics_listen)
            .field("domain", &self.domain)
            .field("api_token", &self.api_token.as_ref().map(|_| "<secret>"))
            .field("outbox_dir", &self.outbox_dir)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Reads the file named by `--config` (if any), applies flags and
    /// environment variables on top, and validates the result.
    pub fn load(args: &ConfigArgs) -> anyhow::Result<Self> {
        args.load()
    }
}

impl ConfigArgs {
    /// The configuration: the file, then environment and flags over it.
    pub fn load(&self) -> anyhow::Result<Config> {
        let args = self;
        let raw = match &args.store.config {
            Some(path) => read_file(path)?,
            None => RawConfig::default(),
        };
        let api_token = std::env::var("MAILGATE_API_TOKEN").ok().filter(|t| !t.is_empty()).or(raw.api_token);
        let data_dir = args.store.data_dir.clone().or(raw.data_dir).unwrap_or_else(|| PathBuf::from("mailgate-data"));
        let database_url = args
            .store
            .database_url
            .clone()
            .or(raw.database_url)
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("mailgate.db").display()));
        let smtp_listen = match args.smtp_listen.clone().or(raw.smtp_listen) {
            Some(text) => parse_addr("smtp_listen", &text)?,
            None => SocketAddr::from(([127, 0, 0, 1], 2525)),
        };
        let lmtp_listen =
            args.lmtp_listen.clone().or(raw.lmtp_listen).map(|text| ListenAddr::lmtp(&text)).transpose()?;
        let policy_listen = args
            .policy_listen
            .clone()
            .or(raw.policy_listen)
            .map(|text| ListenAddr::parse("policy_listen", &text))
            .transpose()?;
        let http_listen = match args.http_listen.clone().or(raw.http_listen) {
            Some(text) => parse_addr("http_listen", &text)?,
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
        };
        let metrics_listen = args
            .metrics_listen
            .clone()
            .or(raw.metrics_listen)
            .map(|text| parse_addr("metrics_listen", &text))
            .transpose()?;
        let domain_given = args.domain.is_some() || raw.domain.is_some();
        let domain = args.domain.clone().or(raw.domain).unwrap_or_else(|| "localhost".to_owned()).to_ascii_lowercase();
        if domain.is_empty() || !domain.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-') {
            bail!("domain: {domain:?} is not a valid mail domain (letters, digits, dots and dashes)");
        }
        let hostname = args.hostname.clone().or(raw.hostname).unwrap_or_else(|| domain.clone());
        if hostname.chars().any(|c| c.is_whitespace() || c.is_control()) {
            bail!("hostname: {hostname:?} must not contain spaces or control characters");
        }
        let limits = raw.limits.validated(args.max_message_size)?;
        let mut delivery = raw.delivery.validated(args.relay.clone(), &raw.notify)?;
        delivery.dkim = raw.dkim.map(|d| DkimSettings {
            selector: d.selector,
            domain: d.domain.unwrap_or_else(|| domain.clone()),
            private_key: d.private_key,
            algorithm: d.algorithm.unwrap_or_else(|| "rsa".to_owned()),
        });
        let on_call_address = raw.on_call_address.unwrap_or_else(|| format!("oncall@{domain}"));
        // The desk's own addresses on other domains never join a conversation either.
        let mut participants = raw.participants.validated()?;
        for own in [Some(&on_call_address), delivery.from_address.as_ref()].into_iter().flatten() {
            participants.blocklist.push(own.trim().to_lowercase());
        }
        Ok(Config {
            outbox_dir: args.outbox_dir.clone().or(raw.outbox_dir).unwrap_or_else(|| data_dir.join("outbox")),
            templates_dir: args.templates_dir.clone().or(raw.templates_dir),
            dashboard_url: match args.dashboard_url.clone().or(raw.dashboard_url) {
                Some(url) if url.starts_with("https://") || url.starts_with("http://") => {
                    Some(url.trim_end_matches('/').to_owned())
                }
                Some(url) => bail!("dashboard_url: {url:?} must start with https:// or http://"),
                None => None,
            },
            data_dir,
            database_url,
            smtp_listen,
            lmtp_listen,
            policy_listen,
            policy_refuses_support: raw.policy.refuse_support_address.unwrap_or(false),
            participants,
            http_listen,
            metrics_listen,
            trusted_proxies: match &raw.trusted_proxies {
                Some(list) => crate::http::throttle::TrustedProxies::parse(list)
                    .map_err(|why| anyhow::anyhow!("trusted_proxies: {why}"))?,
                None => crate::http::throttle::TrustedProxies::default(),
            },
            domain,
            domain_given,
            hostname,
            api_token,
            limits,
            delivery,
            on_call_address,
            public_url: args.public_url.clone().or(raw.public_url).map(|u| u.trim_end_matches('/').to_owned()),
            time_zone: match raw.time_zone.as_deref() {
                None => chrono_tz::UTC,
                Some(zone) => zone.parse().map_err(|_| {
                    anyhow::anyhow!("time_zone: {zone:?} is not an IANA time zone name such as Europe/Berlin")
                })?,
            },
            rules_file: args.rules.clone().or(raw.rules_file),
            tls: match (args.tls_cert.clone(), args.tls_key.clone(), raw.tls) {
                (Some(cert), Some(key), _) => Some((cert, key)),
                (None, None, Some(tls)) => Some((tls.certificate, tls.private_key)),
                (None, None, None) => None,
                _ => bail!("tls: --tls-cert and --tls-key go together"),
            },
            token_lifetime_days: match raw.token_lifetime_days.unwrap_or(180) {
                0 => None,
                days => Some(days),
            },
            auth: raw.auth.validated()?,
            admin_token: std::env::var("MAILGATE_ADMIN_TOKEN").ok().filter(|t| !t.is_empty()).or(raw.admin_token),
            retention: Retention {
                raw: retention_days(raw.retention.raw_days, Retention::default().raw, "raw_days")?,
                held: retention_days(raw.retention.held_days, Retention::default().held, "held_days")?,
                purge_interval: Duration::from_secs(raw.retention.purge_interval_secs.unwrap_or(3600).max(1)),
                notification_text: match raw.token_lifetime_days.unwrap_or(180) {
                    0 => None,
                    days => Some(Duration::from_secs(u64::from(days) * DAY)),
                },
            },
        })
    }
}

impl RawLimits {
    /// The limits, checked; `flag` is `--max-message-size`.
    fn validated(self, flag: Option<usize>) -> anyhow::Result<Limits> {
        let mut limits = Limits::default();
        if let Some(size) = flag.or(self.max_message_size) {
            limits.max_message_size = size;
        }
        if let Some(n) = self.max_recipients {
            limits.max_recipients = n;
        }
        if let Some(n) = self.max_connections {
            limits.max_connections = n;
        }
        if let Some(secs) = self.command_timeout_secs {
            limits.command_timeout = Duration::from_secs(secs);
        }
        if let Some(secs) = self.shutdown_grace_secs {
            limits.shutdown_grace = Duration::from_secs(secs);
        }
        if let Some(secs) = self.store_stall_secs {
            limits.store_stall = Duration::from_secs(secs.max(1));
        }
        if let Some(secs) = self.data_timeout_secs {
            limits.data_timeout = Duration::from_secs(secs);
        }
        if let Some(n) = self.max_connections_per_ip {
            limits.max_connections_per_ip = n.max(1);
        }
        if let Some(n) = self.max_mime_parts {
            limits.mime.max_parts = n.max(1);
        }
        if let Some(n) = self.max_mime_depth {
            limits.mime.max_depth = n.max(1);
        }
        if let Some(n) = self.max_header_fields {
            limits.mime.max_headers = n.max(10);
        }
        if let Some(n) = self.max_header_bytes {
            limits.mime.max_header_bytes = n.max(1024);
        }
        if let Some(n) = self.max_connections_per_network {
            limits.max_connections_per_network = n.max(1);
        }
        if let Some(secs) = self.command_line_secs {
            limits.command_line_timeout = Duration::from_secs(secs.max(1));
        }
        if let Some(secs) = self.data_section_secs {
            limits.data_section_timeout = Duration::from_secs(secs.max(1));
        }
        if let Some(rate) = self.min_data_rate {
            limits.min_data_rate = rate;
        }
        if let Some(secs) = self.data_rate_window_secs {
            limits.data_rate_window = Duration::from_secs(secs.max(1));
        }
        if let Some(secs) = self.session_lifetime_secs {
            limits.session_lifetime = Duration::from_secs(secs.max(1));
        }
        if let Some(secs) = self.reading_budget_secs {
            limits.mime.reading_budget = Duration::from_secs(secs.max(1));
        }
        if let Some(n) = self.max_messages_per_sender_per_hour {
            limits.max_messages_per_sender_per_hour = n.max(1);
        }
        if limits.max_message_size < 1024 {
            bail!("limits.max_message_size: {} is too small (at least 1024 bytes)", limits.max_message_size);
        }
        if limits.max_recipients == 0 || limits.max_connections == 0 {
            bail!("limits.max_recipients and limits.max_connections must be at least 1");
        }
        Ok(limits)
    }
}

impl RawDelivery {
    /// The delivery settings, checked; `flag` is `--relay`, `notify` the
    /// `[notify]` table (the size cap of a notification).
    fn validated(self, flag: Option<String>, notify: &RawNotify) -> anyhow::Result<DeliveryConfig> {
        let mut delivery = DeliveryConfig {
            relay_url: flag.or(self.relay_url).filter(|u| !u.is_empty()),
            ..DeliveryConfig::default()
        };
        if let Some(n) = self.concurrency {
            delivery.concurrency = n.max(1);
        }
        if let Some(secs) = self.coalesce_window_secs {
            delivery.coalesce_window = Duration::from_secs(secs);
        }
        if let Some(hours) = self.lifetime_hours {
            delivery.lifetime = Duration::from_secs(hours * 3600);
        }
        if let Some(secs) = self.retry_base_secs {
            delivery.retry_base = Duration::from_secs(secs.max(1));
        }
        if let Some(secs) = self.retry_max_secs {
            delivery.retry_max = Duration::from_secs(secs.max(1));
        }
        if let Some(n) = self.max_hard_bounces {
            delivery.max_hard_bounces = n.max(1);
        }
        if let Some(days) = self.suppression_days {
            delivery.suppression_days = days;
        }
        if let Some(bytes) = notify.max_message_bytes {
            if bytes < 64 * 1024 {
                bail!("notify.max_message_bytes: {bytes} is too small (at least 65536 bytes)");
            }
            delivery.max_message_bytes = bytes;
        }
        if let Some(name) = &notify.from_name {
            let name = name.trim();
            if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
                bail!("notify.from_name: {name:?} must be a name of 1 to 100 characters on one line");
            }
            delivery.from_name = name.to_owned();
        }
        if let Some(bytes) = notify.attach_max_bytes {
            if bytes > 100 * 1024 * 1024 {
                bail!("notify.attach_max_bytes: {bytes} is too large (at most 104857600 bytes; 0 attaches nothing)");
            }
            delivery.attach_max_bytes = bytes;
        }
        if let Some(days) = notify.download_link_days {
            if !(1..=365).contains(&days) {
                bail!("notify.download_link_days: {days} must be 1 to 365");
            }
            delivery.download_link_days = days;
        }
        if let Some(locale) = &notify.locale {
            delivery.locale = crate::notify::locale::canonical(locale).ok_or_else(|| {
                anyhow::anyhow!("notify.locale: {locale:?} is not a language tag such as en, de or pt-BR")
            })?;
        }
        if let Some(address) = &notify.from_address {
            if crate::domain::EmailAddress::parse(address).is_none() {
                bail!("notify.from_address: {address:?} is not an email address");
            }
            delivery.from_address = Some(address.trim().to_owned());
        }
        if let Some(url) = &delivery.relay_url
            && !(url.starts_with("smtp://") || url.starts_with("smtps://"))
        {
            bail!("delivery.relay_url: {url:?} must start with smtp:// or smtps://");
        }
        Ok(delivery)
    }
}

/// `[auth.records]` as the sender checks read it (a TXT value for each name
/// that has an SPF, DKIM or DMARC record) and by type, for `mailgate doctor`.
#[allow(clippy::type_complexity)]
fn records_by_type(
    raw: std::collections::HashMap<String, RawRecord>,
) -> anyhow::Result<(std::collections::HashMap<String, String>, std::collections::HashMap<String, RecordSet>)> {
    let (mut checked, mut typed) = (std::collections::HashMap::new(), std::collections::HashMap::new());
    for (name, record) in raw {
        let key = match name.parse::<std::net::IpAddr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => name.trim_end_matches('.').to_ascii_lowercase(),
        };
        // The TXT values the sender checks read at this name: SPF at a
        // domain, DKIM keys at `._domainkey.`, DMARC at `_dmarc.`; others
        // (MTA-STS, TLS-RPT, site verifications) are for `mailgate doctor`.
        let read_by_checks = |value: &&String| {
            let value = value.trim_start().to_ascii_lowercase();
            if key.starts_with("_dmarc.") {
                value.starts_with("v=dmarc1")
            } else if key.contains("._domainkey.") {
                value.starts_with("v=dkim1") || value.contains("p=")
            } else {
                value.starts_with("v=spf1")
            }
        };
        let set = match record {
            RawRecord::Txt(value) => RecordSet { txt: vec![value], ..RecordSet::default() },
            RawRecord::Typed(set) => {
                let mut mx = Vec::new();
                for entry in &set.mx {
                    let parsed = entry.split_once(char::is_whitespace).and_then(|(preference, exchange)| {
                        let exchange = exchange.trim().trim_end_matches('.').to_ascii_lowercase();
                        Some((preference.parse::<u16>().ok()?, exchange)).filter(|(_, e)| !e.is_empty())
                    });
                    mx.push(parsed.with_context(|| {
                        format!(
                            "auth.records.{name:?}.mx: {entry:?} is not PREFERENCE HOST (e.g. \"10 mx.example.com\")"
                        )
                    })?);
                }
                RecordSet {
                    txt: set.txt,
                    mx,
                    addresses: set.a.into_iter().map(Into::into).chain(set.aaaa.into_iter().map(Into::into)).collect(),
                    ptr: set.ptr.iter().map(|p| p.trim_end_matches('.').to_ascii_lowercase()).collect(),
                }
            }
        };
        // A record the checks cannot read must not pass for no record: with
        // the static resolver a missing `_dmarc.` record is "no policy", and a
        // forged From would pass a domain meant to publish `p=reject`.
        for value in &set.txt {
            let trimmed = value.trim();
            if trimmed.len() >= 2 && trimmed.starts_with('"') && trimmed.ends_with('"') {
                bail!("auth.records.{name:?}: {value:?} is in quotes (copied from a zone file?); give the text alone");
            }
        }
        let unread = |what: &str| {
            anyhow::anyhow!(
                "auth.records.{name:?}: no value here is a {what} record, which the sender checks need at this name"
            )
        };
        match set.txt.iter().find(read_by_checks) {
            Some(value) => {
                checked.insert(key.clone(), value.clone());
            }
            None if key.starts_with("_dmarc.") && !set.txt.is_empty() => return Err(unread("DMARC (v=DMARC1; ...)")),
            None if key.contains("._domainkey.") && !set.txt.is_empty() => {
                return Err(unread("DKIM key (v=DKIM1; ...)"));
            }
            None => {}
        }
        if typed.insert(key.clone(), set).is_some() {
            bail!("auth.records: {name:?} names {key:?} a second time (names are compared without case and final dot)");
        }
    }
    Ok((checked, typed))
}

impl RawAuth {
    /// The sender checks and what to do with their failures, checked.
    fn validated(self) -> anyhow::Result<AuthConfig> {
        let (records, dns_records) = records_by_type(self.records)?;
        Ok(AuthConfig {
            enabled: self.enabled.unwrap_or(true),
            resolver: self.resolver.unwrap_or_else(|| "system".to_owned()),
            on_dmarc_fail: self.on_dmarc_fail.unwrap_or(crate::pipeline::authenticate::OnDmarcFail::Refuse),
            records,
            dns_records,
            hold_not_allowed: match self.on_not_allowed.as_deref() {
                None | Some("refuse") => false,
                Some("hold") => true,
                Some(other) => bail!("auth.on_not_allowed: {other:?} is not refuse or hold"),
            },
            refuse_ambiguous_author: match self.on_ambiguous_author.as_deref() {
                None | Some("hold") => false,
                Some("refuse") => true,
                Some(other) => bail!("auth.on_ambiguous_author: {other:?} is not hold or refuse"),
            },
            trusted_relays: crate::domain::Networks::parse(&self.trusted_relays)
                .map_err(|why| anyhow::anyhow!("auth.trusted_relays: {why}"))?,
            trusted_authserv_ids: self
                .trusted_authserv_ids
                .iter()
                .map(|id| {
                    let id = id.trim().to_ascii_lowercase();
                    match !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c)) {
                        true => Ok(id),
                        false => Err(anyhow::anyhow!(
                            "auth.trusted_authserv_ids: {id:?} is not a host name such as mx.google.com"
                        )),
                    }
                })
                .collect::<anyhow::Result<_>>()?,
            proxy_protocol_from: crate::domain::Networks::parse(&self.trusted_proxies)
                .map_err(|why| anyhow::anyhow!("auth.trusted_proxies: {why}"))?,
        })
    }
}

impl Config {
    /// This instance's name on the outbox leases it takes: the machine's
    /// host name and the data folder, the same across restarts and different
    /// for two instances on one PostgreSQL.
    pub fn instance_name(&self) -> String {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_owned());
        let folder = std::fs::canonicalize(&self.data_dir).unwrap_or_else(|_| self.data_dir.clone());
        format!("{host}:{}", folder.display())
    }

    /// A configuration for tests and tools: everything under `data_dir`,
    /// listeners on free loopback ports.
    pub fn for_data_dir(data_dir: &Path, domain: &str) -> Self {
        Self {
            database_url: format!("sqlite://{}", data_dir.join("mailgate.db").display()),
            smtp_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            lmtp_listen: None,
            policy_listen: None,
            policy_refuses_support: false,
            participants: crate::pipeline::participants::ParticipantPolicy::default(),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_listen: None,
            trusted_proxies: crate::http::throttle::TrustedProxies::default(),
            domain: domain.to_ascii_lowercase(),
            domain_given: true,
            hostname: domain.to_ascii_lowercase(),
            api_token: None,
            outbox_dir: data_dir.join("outbox"),
            templates_dir: None,
            dashboard_url: None,
            limits: Limits::default(),
            delivery: DeliveryConfig { coalesce_window: Duration::ZERO, ..DeliveryConfig::default() },
            on_call_address: format!("oncall@{}", domain.to_ascii_lowercase()),
            public_url: None,
            time_zone: chrono_tz::UTC,
            rules_file: None,
            admin_token: None,
            token_lifetime_days: Some(180),
            tls: None,
            // Tests answer DNS from configured records only.
            auth: AuthConfig { resolver: "static".to_owned(), ..AuthConfig::default() },
            retention: Retention::default(),
            data_dir: data_dir.to_path_buf(),
        }
    }

    /// The support address, `support@DOMAIN`: the From of notifications, and
    /// where mail that tries to start a conversation arrives.
    pub fn support_address(&self) -> String {
        format!("support@{}", self.domain)
    }
}

/// Where a listener other than SMTP's takes connections: a TCP address, or
/// a unix socket (`unix:/run/mailgate/lmtp.sock`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// `HOST:PORT`.
    Tcp(SocketAddr),
    /// `unix:PATH`: the socket file is made with mode 0660, a stale one
    /// replaced, and removed when the server stops.
    Unix(PathBuf),
}

impl ListenAddr {
    /// Reads `HOST:PORT` or `unix:PATH` for `key`.
    pub fn parse(key: &str, text: &str) -> anyhow::Result<Self> {
        match text.trim().strip_prefix("unix:") {
            Some(path) if path.trim().is_empty() => {
                bail!("{key}: {text:?} names no socket file; write unix:/path/to/socket")
            }
            Some(path) => Ok(Self::Unix(PathBuf::from(path.trim()))),
            None => parse_addr(key, text).map(Self::Tcp),
        }
    }

    /// The LMTP listener's address: never port 25, which RFC 2033 §5
    /// forbids to LMTP (a mail server would mistake it for SMTP).
    pub fn lmtp(text: &str) -> anyhow::Result<Self> {
        let addr = Self::parse("lmtp_listen", text)?;
        if let Self::Tcp(socket) = &addr
            && socket.port() == 25
        {
            bail!(
                "lmtp_listen: {text:?} is port 25, which LMTP must not use (RFC 2033); use another port such as 24 or a unix socket"
            );
        }
        Ok(addr)
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "{addr}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

fn read_file(path: &Path) -> anyhow::Result<RawConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("config file {}", path.display()))
}

/// A listening address: `IP:PORT`, `[IPv6]:PORT`, or `NAME:PORT` (a name is
/// resolved once, at start; its first address is used).
fn parse_addr(key: &str, text: &str) -> anyhow::Result<SocketAddr> {
    let text = text.trim();
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let how = "write it as IP:PORT (127.0.0.1:2525, [::1]:2525, 0.0.0.0:25) or NAME:PORT (localhost:2525)";
    let Some((host, port)) = text.rsplit_once(':') else { bail!("{key}: {text:?} has no port; {how}") };
    if host.is_empty() || port.parse::<u16>().is_err() {
        bail!("{key}: {text:?} is not an address; {how}");
    }
    std::net::ToSocketAddrs::to_socket_addrs(text)
        .ok()
        .and_then(|mut addrs| addrs.next())
        .with_context(|| format!("{key}: the name {host:?} in {text:?} does not resolve to an address; {how}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_passwords_never_reach_the_logs() {
        assert_eq!(
            super::redact_password("postgres://mailgate:s3cret@db.internal:5432/mailgate"),
            "postgres://mailgate:***@db.internal:5432/mailgate"
        );
        assert_eq!(super::redact_password("postgres://mailgate@db/m"), "postgres://mailgate@db/m");
        assert_eq!(super::redact_password("sqlite://data/mailgate.db"), "sqlite://data/mailgate.db");
    }
}
