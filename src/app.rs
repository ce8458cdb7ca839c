//! Wiring: opens the store, loads secrets and templates, binds the SMTP and
//! HTTP listeners and starts the outbound worker; stops them all in order.
//! No business rules here.

use crate::api;
use crate::config::Config;
use crate::domain::TokenSigner;
use crate::domain::token::TokenKey;
use crate::domain::token::random_hex;
use crate::http::HttpState;
use crate::http::credentials::{self, Credential, TokenKind};
use crate::notify::render::Renderer;
use crate::outbound::mailer::Mailer;
use crate::outbound::{Outbound, OutboundCounters};
use crate::pipeline::Pipeline;
use crate::rules::{LiveRules, RuleSet};
use crate::smtp::listener;
use crate::smtp::session::SessionContext;
use crate::store::{OutboxPolicy, Store};
use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A running mailgate instance.
#[derive(Debug)]
pub struct App {
    /// Where the SMTP listener is bound (the real port when 0 was asked for).
    pub smtp_addr: SocketAddr,
    /// Where the LMTP listener is bound, when it listens on TCP.
    pub lmtp_addr: Option<SocketAddr>,
    /// Where the policy service is bound, when it listens on TCP.
    pub policy_addr: Option<SocketAddr>,
    /// Where the HTTP API is bound.
    pub http_addr: SocketAddr,
    /// Where `GET /metrics` is served without a token, when configured.
    pub metrics_addr: Option<SocketAddr>,
    /// The API token, when this start generated it (show it once: only
    /// its hash is stored).
    pub generated_api_token: Option<String>,
    /// The admin token, when this start generated it.
    pub generated_admin_token: Option<String>,
    /// The database handle.
    pub store: Store,
    shutdown: CancellationToken,
    /// Stops the HTTP side, once the mail listeners have drained (so that
    /// `/readyz` answers "shutting down" meanwhile).
    http_stop: CancellationToken,
    /// The SMTP and LMTP listeners, which end once their sessions have.
    mail_listeners: Vec<tokio::task::JoinHandle<()>>,
    /// `[limits] shutdown_grace_secs`.
    grace: std::time::Duration,
    tasks: TaskTracker,
    /// This instance's name and data folder, locked while it runs.
    _instance_lock: Option<InstanceLock>,
}

/// Refuses to go on when the configuration names a SQLite file that does
/// not exist: a command that looks at a gateway's data must never create an
/// empty database in the wrong folder and report that it found nothing.
pub fn require_existing_database(config: &Config) -> anyhow::Result<()> {
    let Some(rest) = config.database_url.strip_prefix("sqlite:") else { return Ok(()) };
    let path = rest.trim_start_matches("//").split('?').next().unwrap_or("");
    if path.is_empty() || path == ":memory:" || std::path::Path::new(path).exists() {
        return Ok(());
    }
    anyhow::bail!(
        "no mailgate database at {path}: is --data-dir (or --database-url) the one the server uses? \
         This command does not create one"
    )
}

/// [`open_database`] for a tool that looks at a gateway's data: refuses a
/// database that does not exist ([`require_existing_database`]).
pub async fn open_existing_database(config: &Config) -> anyhow::Result<Store> {
    require_existing_database(config)?;
    open_database(config).await
}

/// Opens the database only (no secrets written): for tools that read.
pub async fn open_database(config: &Config) -> anyhow::Result<Store> {
    if config.database_url.starts_with("sqlite:") {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    }
    Store::open_with_stall(&config.database_url, config.limits.store_stall)
        .await
        .with_context(|| format!("opening database {}", config.database_url_for_logs()))
}

/// Opens the database and loads the token signer (creating its secret on first start).
pub async fn open_store(config: &Config) -> anyhow::Result<(Store, TokenSigner)> {
    let policy = OutboxPolicy {
        coalesce_ms: config.delivery.coalesce_window.as_millis() as i64,
        lifetime_ms: config.delivery.lifetime.as_millis() as i64,
    };
    let store = open_database(config).await?.with_outbox_policy(policy);
    // Read first: a tool looking at a running gateway's data then writes
    // nothing, and never waits for the server's writer.
    let mut keys = read_token_keys(&store).await?;
    if keys.is_none() {
        store.setting_or_init(&format!("{TOKEN_KEY}1"), || random_hex(32)).await?;
        keys = read_token_keys(&store).await?;
    }
    let (current, older, retired) = keys.context("no token key")?;
    let signer = TokenSigner::new(current, older).with_retired(retired).with_lifetime_days(config.token_lifetime_days);
    Ok((store, signer))
}

/// Settings `token_key.N`: the secret of signing key N (hex).
const TOKEN_KEY: &str = "token_key.";
/// Settings `token_key_retired.N`: when key N was retired (Unix seconds).
const RETIRED_TOKEN_KEY: &str = "token_key_retired.";

/// The signing keys in the database: (the newest, which signs; the older
/// ones, which verify; the ids of retired keys). `None` before the first key.
async fn read_token_keys(store: &Store) -> anyhow::Result<Option<(TokenKey, Vec<TokenKey>, Vec<u8>)>> {
    let retired = retired_key_ids(store).await?;
    let mut keys = Vec::new();
    for (name, value) in store.settings_with_prefix(TOKEN_KEY).await? {
        let id: u8 = name.trim_start_matches(TOKEN_KEY).parse().with_context(|| format!("setting {name}"))?;
        let secret =
            data_encoding::HEXLOWER.decode(value.as_bytes()).with_context(|| format!("setting {name} is not hex"))?;
        if !retired.contains(&id) {
            keys.push(TokenKey::new(id, secret));
        }
    }
    keys.sort_by_key(|k| k.id);
    Ok(keys.pop().map(|current| (current, keys, retired)))
}

async fn retired_key_ids(store: &Store) -> anyhow::Result<Vec<u8>> {
    Ok(store
        .settings_with_prefix(RETIRED_TOKEN_KEY)
        .await?
        .iter()
        .filter_map(|(name, _)| name.trim_start_matches(RETIRED_TOKEN_KEY).parse::<u8>().ok())
        .collect())
}

/// Adds a new token key and makes it the one new tokens are signed with;
/// tokens signed with older keys keep verifying. Returns the new key's id.
/// Running servers sign with it within [`credentials::REFRESH`] ([`follow_token_keys`]).
pub async fn rotate_token_key(store: &Store) -> anyhow::Result<u8> {
    let held = store.settings_with_prefix(TOKEN_KEY).await?;
    let newest = held
        .iter()
        .filter_map(|(name, _)| name.trim_start_matches(TOKEN_KEY).parse::<u8>().ok())
        .chain(retired_key_ids(store).await?)
        .max()
        .unwrap_or(0);
    let id = newest.checked_add(1).context("255 keys exist; no room for another")?;
    store.setting_or_init(&format!("{TOKEN_KEY}{id}"), || random_hex(32)).await?;
    Ok(id)
}

/// Takes key `id` out of service for good: its secret is deleted and every
/// token it signed (reply addresses, links, bounce addresses) is refused
/// from then on, by every instance within [`credentials::REFRESH`]. The
/// newest key cannot be retired: rotate first.
pub async fn retire_token_key(store: &Store, id: u8) -> anyhow::Result<()> {
    let Some((current, _, retired)) = read_token_keys(store).await? else {
        anyhow::bail!("there are no signing keys yet");
    };
    if retired.contains(&id) {
        anyhow::bail!("key {id} is already retired");
    }
    if store.setting(&format!("{TOKEN_KEY}{id}")).await?.is_none() {
        anyhow::bail!("there is no key {id} (`mailgate keys list` shows them)");
    }
    if current.id == id {
        anyhow::bail!(
            "key {id} is the newest key, which signs every new reply address: run `mailgate keys rotate` first, \
             then retire {id}"
        );
    }
    // Marked first, deleted second: a crash between leaves it refused.
    store.put_setting(&format!("{RETIRED_TOKEN_KEY}{id}"), &chrono::Utc::now().timestamp().to_string()).await?;
    store.delete_setting(&format!("{TOKEN_KEY}{id}")).await?;
    Ok(())
}

/// Keeps `signer` (and so every part of this server) on the keys in the
/// database: a rotation or a retirement made by `mailgate keys` on any
/// host reaches this instance within [`credentials::REFRESH`].
async fn follow_token_keys(store: Store, signer: TokenSigner, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(credentials::REFRESH) => {}
        }
        match read_token_keys(&store).await {
            Ok(Some((current, older, retired))) => {
                let signing = current.id;
                if signer.replace_keys(current, older, retired) {
                    let retired = signer.key_ids().1.iter().map(u8::to_string).collect::<Vec<_>>().join(", ");
                    tracing::info!(signing, retired = %retired, "signing keys changed");
                }
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(error = %error, "could not read the signing keys; keeping the ones held"),
        }
    }
}

/// The setting that records the mail domain the server runs with.
const SERVED_DOMAIN: &str = "served_domain";

/// Starts every part of the gateway and returns once all listeners are bound.
pub async fn start(config: Config) -> anyhow::Result<App> {
    refuse_weak_tokens(&config)?;
    let (store, signer) = open_store(&config).await?;
    store.put_setting(SERVED_DOMAIN, &config.domain).await?;
    let (api_token, admin_token) = credentials_of(&store, &config).await?;
    let renderer = load_renderer(&config)?;
    let dkim = config.delivery.dkim.as_ref().map(crate::outbound::load_dkim).transpose()?;
    let mailer = Mailer::new(
        config.delivery.relay_url.as_deref(),
        config.outbox_dir.clone(),
        &config.hostname,
        config.delivery.concurrency,
    )?;
    std::fs::create_dir_all(&config.outbox_dir)
        .with_context(|| format!("creating outgoing-mail folder {}", config.outbox_dir.display()))?;
    let listeners = Listeners::bind(&config).await?;
    let (smtp_addr, http_addr, metrics_addr) = listeners.addresses()?;

    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let rules = Arc::new(LiveRules::new(load_rules(config.rules_file.as_deref())?));
    let pipeline = pipeline_for(&config, store.clone(), signer.clone(), config.domain.clone(), Arc::clone(&rules))?;
    let metrics = Arc::new(crate::metrics::Metrics::default());
    if let Some(path) = config.rules_file.clone() {
        tasks.spawn(watch_rules(path, Arc::clone(&rules), Arc::clone(&metrics), shutdown.clone()));
    }
    tasks.spawn(purge(store.clone(), config.retention, shutdown.clone()));
    tasks.spawn(follow_token_keys(store.clone(), signer.clone(), shutdown.clone()));
    let tls = config.tls.as_ref().map(|(cert, key)| tls_acceptor(cert, key)).transpose()?;
    let open_sessions = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let session_context = |lmtp: bool| {
        Arc::new(SessionContext {
            open_sessions: Arc::clone(&open_sessions),
            hostname: config.hostname.clone(),
            domain: config.domain.clone(),
            limits: config.limits.clone(),
            pipeline: pipeline.clone(),
            metrics: Arc::clone(&metrics),
            bad_tokens: Default::default(),
            tls: if lmtp { None } else { tls.clone() },
            lmtp,
            trusted_relays: config.auth.trusted_relays.clone(),
            proxy_protocol_from: config.auth.proxy_protocol_from.clone(),
        })
    };
    let lmtp_ctx = session_context(true);
    let lmtp_addr = match &listeners.lmtp {
        Some(LmtpListener::Tcp(tcp)) => Some(tcp.local_addr()?),
        _ => None,
    };
    let mut mail_listeners = Vec::new();
    mail_listeners.push(tasks.spawn(listener::serve(
        listeners.smtp,
        session_context(false),
        shutdown.clone(),
        tasks.clone(),
    )));
    let policy_addr = listeners.policy.as_ref().and_then(crate::policy::PolicyListener::local_addr);
    if let Some(policy) = listeners.policy {
        let service = crate::policy::PolicyService {
            pipeline: pipeline.clone(),
            domain: config.domain.clone(),
            metrics: Some(Arc::clone(&metrics)),
            refuse_support: config.policy_refuses_support,
        };
        tasks.spawn(service.serve(policy, shutdown.clone(), tasks.clone()));
    }
    match listeners.lmtp {
        Some(LmtpListener::Tcp(tcp)) => {
            mail_listeners.push(tasks.spawn(listener::serve(tcp, lmtp_ctx, shutdown.clone(), tasks.clone())));
        }
        Some(LmtpListener::Unix(unix, path)) => {
            let serving = listener::serve_unix(unix, path, lmtp_ctx, shutdown.clone(), tasks.clone());
            mail_listeners.push(tasks.spawn(serving));
        }
        None => {}
    }

    let outbound_counters = Arc::new(OutboundCounters::default());
    let state = Arc::new(HttpState {
        store: store.clone(),
        api_token,
        admin_token,
        on_call_address: config.on_call_address.clone(),
        metrics: Arc::clone(&metrics),
        max_hard_bounces: config.delivery.max_hard_bounces,
        suppression_days: config.delivery.suppression_days,
        templates_dir: config.templates_dir.clone(),
        signer: signer.clone(),
        domain: config.domain.clone(),
        rules: Arc::clone(&rules),
        outbound: Arc::clone(&outbound_counters),
        pipeline,
        throttle: crate::http::throttle::Throttle::default(),
        trusted_proxies: config.trusted_proxies.clone(),
        stopping: shutdown.clone(),
        // Never a reason not to start: the checks say why they cannot run.
        doctor: crate::doctor::Setup::from_config(&config, None).map(Arc::new).map_err(|e| format!("{e:#}")),
    });
    let http_stop = CancellationToken::new();
    serve_http(&tasks, &http_stop, state, listeners.http, listeners.metrics);

    let delivered_by = mailer.describe();
    // What this instance was sending when it was last killed goes out now;
    // only once no other live instance can have the same name.
    let instance = config.instance_name();
    let instance_lock = take_back_claims(&store, &config, &instance).await;
    let outbound = Arc::new(Outbound {
        store: store.clone(),
        signer,
        renderer,
        mailer,
        domain: config.domain.clone(),
        dashboard_url: config.dashboard_url.clone(),
        public_url: config.public_url.clone(),
        time_zone: config.time_zone,
        delivery: config.delivery.clone(),
        dkim,
        wake: store.outbox_wakeup(),
        counters: outbound_counters,
        webhooks: crate::outbound::webhook::WebhookClient::default(),
        instance,
    });
    tasks.spawn(crate::outbound::webhook::fan_out(store.clone(), shutdown.clone()));
    tasks.spawn(outbound.run(shutdown.clone()));

    let lmtp = match (&config.lmtp_listen, lmtp_addr) {
        (_, Some(addr)) => addr.to_string(),
        (Some(listen), None) => listen.to_string(),
        (None, None) => "off".to_owned(),
    };
    tracing::info!(
        smtp = %smtp_addr,
        lmtp = %lmtp,
        http = %http_addr,
        database = %config.database_url_for_logs(),
        outgoing = %delivered_by,
        domain = %config.domain,
        console = %format!("http://{http_addr}/admin/"),
        "mailgate started: replies go to reply+TOKEN@{}, new mail to support@{}; the admin console is at http://{}/admin/",
        config.domain,
        config.domain,
        http_addr
    );
    // Only now that everything is up: a start that fails earlier (a port in
    // use, a missing TLS file, a broken rules file) leaves no token behind
    // that nobody was shown.
    let generated_api_token = match config.api_token {
        Some(_) => None,
        None => credentials::generate_if_missing(&store, TokenKind::Api).await?,
    };
    let generated_admin_token = match config.admin_token {
        Some(_) => None,
        None => credentials::generate_if_missing(&store, TokenKind::Admin).await?,
    };
    Ok(App {
        smtp_addr,
        lmtp_addr,
        policy_addr,
        http_addr,
        metrics_addr,
        generated_api_token,
        generated_admin_token,
        store,
        shutdown,
        http_stop,
        mail_listeners,
        grace: config.limits.shutdown_grace,
        tasks,
        _instance_lock: instance_lock,
    })
}

/// Locks this instance's name for the life of the process (a lock on
/// `DATA_DIR/instance.lock`, and on PostgreSQL an advisory lock on the name)
/// and, when both are had, sends again at once what an earlier life of it
/// had claimed. When another live instance holds either lock (a second
/// `serve` on the same data folder, or containers with the same host name
/// and folder path on one PostgreSQL), nothing is taken back: its claims
/// are its own, and run out by their lease if it dies.
async fn take_back_claims(store: &Store, config: &Config, instance: &str) -> Option<InstanceLock> {
    let folder = match lock_data_folder(&config.data_dir) {
        Ok(Some(folder)) => folder,
        Ok(None) => {
            tracing::warn!(
                folder = %config.data_dir.display(),
                "another mailgate runs on this data folder; notifications it claimed are left to it"
            );
            return None;
        }
        Err(error) => {
            tracing::warn!(error = %error, "could not lock the data folder; nothing claimed before is taken back");
            return None;
        }
    };
    let name = match store.lock_instance_name(instance).await {
        Ok(Some(name)) => name,
        Ok(None) => {
            tracing::warn!(
                instance,
                "another live mailgate instance has this instance's name (host name and data folder): \
                 notifications it claimed are left to it; give each instance its own data folder"
            );
            return None;
        }
        Err(error) => {
            tracing::warn!(error = %error, "could not lock this instance's name; nothing claimed before is taken back");
            return None;
        }
    };
    match store.release_claims_of(instance).await {
        Ok(0) => {}
        Ok(released) => tracing::info!(released, "notifications claimed before a crash are due again"),
        Err(error) => tracing::warn!(error = %error, "could not take back notifications claimed before a restart"),
    }
    Some(InstanceLock { _folder: folder, _name: name })
}

/// Held for the life of the process: no other instance shares this one's
/// data folder or name.
#[derive(Debug)]
struct InstanceLock {
    _folder: std::fs::File,
    _name: crate::store::InstanceNameLock,
}

/// An exclusive lock on `DATA_DIR/instance.lock` (released by the system
/// when the process ends, however it ends); `None` when another process
/// holds it.
fn lock_data_folder(data_dir: &std::path::Path) -> std::io::Result<Option<std::fs::File>> {
    use std::os::fd::AsRawFd;
    std::fs::create_dir_all(data_dir)?;
    let file =
        std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(data_dir.join("instance.lock"))?;
    // SAFETY: flock(2) on a descriptor this function owns; it touches no memory.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    Ok(locked.then_some(file))
}

/// Refuses to start with a configured API or admin token that is easy to guess.
fn refuse_weak_tokens(config: &Config) -> anyhow::Result<()> {
    if let Some(token) = &config.api_token {
        crate::http::credentials::refuse_weak("The API token (MAILGATE_API_TOKEN, api_token)", token)?;
    }
    if let Some(token) = &config.admin_token {
        crate::http::credentials::refuse_weak("The admin token (MAILGATE_ADMIN_TOKEN, admin_token)", token)?;
    }
    Ok(())
}

/// The API and admin credentials: the configured tokens, or the stored
/// hashes (a plain-text token an older release stored is hashed now).
async fn credentials_of(store: &Store, config: &Config) -> anyhow::Result<(Credential, Credential)> {
    let credential = |kind: TokenKind, configured: &Option<String>| match configured {
        Some(token) => Credential::fixed(kind, token),
        None => Credential::stored(kind),
    };
    for kind in [TokenKind::Api, TokenKind::Admin] {
        credentials::hash_plaintext_token(store, kind).await?;
    }
    Ok((credential(TokenKind::Api, &config.api_token), credential(TokenKind::Admin, &config.admin_token)))
}

/// The notification templates, checked: a broken one stops the start.
fn load_renderer(config: &Config) -> anyhow::Result<Arc<Renderer>> {
    let renderer = Arc::new(Renderer::load(config.templates_dir.as_deref()).context("loading templates")?);
    if let Some(problem) = renderer.check().into_iter().next() {
        anyhow::bail!("broken template: {problem}");
    }
    for warning in renderer.warnings().into_iter().chain(renderer.gaps()) {
        tracing::warn!("{warning}");
    }
    Ok(renderer)
}

/// The sockets the server listens on, bound before anything is served (a
/// port in use stops the start).
struct Listeners {
    smtp: TcpListener,
    lmtp: Option<LmtpListener>,
    policy: Option<crate::policy::PolicyListener>,
    http: TcpListener,
    metrics: Option<TcpListener>,
}

/// The LMTP listener: a TCP port, or a unix socket (with its path).
enum LmtpListener {
    Tcp(TcpListener),
    Unix(tokio::net::UnixListener, std::path::PathBuf),
}

impl Listeners {
    async fn bind(config: &Config) -> anyhow::Result<Self> {
        let smtp = TcpListener::bind(config.smtp_listen)
            .await
            .with_context(|| format!("binding SMTP listener to {}", config.smtp_listen))?;
        let lmtp = match &config.lmtp_listen {
            None => None,
            Some(crate::config::ListenAddr::Tcp(addr)) => Some(LmtpListener::Tcp(
                TcpListener::bind(addr).await.with_context(|| format!("binding the LMTP listener to {addr}"))?,
            )),
            Some(crate::config::ListenAddr::Unix(path)) => {
                Some(LmtpListener::Unix(listener::bind_unix_socket(path, "lmtp_listen")?, path.clone()))
            }
        };
        let policy = match &config.policy_listen {
            Some(addr) => Some(crate::policy::PolicyListener::bind(addr).await?),
            None => None,
        };
        let http = TcpListener::bind(config.http_listen)
            .await
            .with_context(|| format!("binding HTTP listener to {}", config.http_listen))?;
        let metrics = match config.metrics_listen {
            Some(addr) => {
                Some(TcpListener::bind(addr).await.with_context(|| format!("binding the metrics listener to {addr}"))?)
            }
            None => None,
        };
        Ok(Self { smtp, lmtp, policy, http, metrics })
    }

    /// The addresses bound (a port 0 became a real port).
    fn addresses(&self) -> anyhow::Result<(SocketAddr, SocketAddr, Option<SocketAddr>)> {
        let metrics = self.metrics.as_ref().map(TcpListener::local_addr).transpose()?;
        Ok((self.smtp.local_addr()?, self.http.local_addr()?, metrics))
    }
}

/// The pipeline as the server runs it, on an existing database, for a
/// command that takes mail beside the server (`deliver`, `policy`).
pub async fn open_pipeline(config: &Config) -> anyhow::Result<Pipeline> {
    require_existing_database(config)?;
    let (store, signer) = open_store(config).await?;
    let rules = Arc::new(LiveRules::new(load_rules(config.rules_file.as_deref())?));
    pipeline_for(config, store, signer, config.domain.clone(), rules)
}

/// The pipeline as the server and the tools run it, on `domain`.
fn pipeline_for(
    config: &Config,
    store: Store,
    signer: TokenSigner,
    domain: String,
    rules: Arc<LiveRules>,
) -> anyhow::Result<Pipeline> {
    Ok(Pipeline::new(store, signer, domain, rules, config.on_call_address.clone())
        .with_auth(sender_auth(config)?)
        .with_mime_limits(config.limits.mime)
        .with_loop_limit(config.limits.max_messages_per_sender_per_hour)
        .with_auth_policy(&config.auth)
        .with_participants(config.participants.clone()))
}

/// Serves the API and the console on `http`, and `/metrics` alone on the
/// metrics listener when there is one.
fn serve_http(
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
    state: Arc<HttpState>,
    http: TcpListener,
    metrics: Option<TcpListener>,
) {
    if let Some(listener) = metrics {
        let metrics_shutdown = shutdown.clone();
        let router = api::metrics_router(Arc::clone(&state));
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(metrics = %addr, "serving GET /metrics without a token");
        }
        tasks.spawn(async move {
            let server = axum::serve(listener, router).with_graceful_shutdown(metrics_shutdown.cancelled_owned());
            if let Err(error) = server.await {
                tracing::error!(error = %error, "metrics listener failed");
            }
        });
    }
    let http_shutdown = shutdown.clone();
    tasks.spawn(async move {
        // The client's address reaches the credential checks (throttling).
        let router = api::router(Arc::clone(&state)).merge(crate::console::router(state));
        let server = axum::serve(http, router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(http_shutdown.cancelled_owned());
        if let Err(error) = server.await {
            tracing::error!(error = %error, "HTTP server failed");
        }
    });
}

impl App {
    /// Stops taking mail (new connections get `421`), lets the sessions
    /// under way finish their message within `[limits] shutdown_grace_secs`,
    /// then stops the HTTP side and every other task and closes the
    /// database. Bounded: what is still running after the grace (and a few
    /// seconds for the HTTP side) is left, unacknowledged, to the process's end.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let listeners = futures_util::future::join_all(self.mail_listeners);
        let _ = tokio::time::timeout(self.grace + std::time::Duration::from_secs(1), listeners).await;
        self.http_stop.cancel();
        self.tasks.close();
        if tokio::time::timeout(std::time::Duration::from_secs(5), self.tasks.wait()).await.is_err() {
            tracing::warn!("stopped without waiting longer for the tasks still running");
        }
        self.store.close().await;
    }

    /// A token that stops the instance when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

/// Deletes what is past its retention, at start and then every
/// `purge_interval`. Each purge runs in short transactions, so that mail
/// keeps being stored meanwhile; a purge cut short (a crash, a stop) leaves
/// only whole transactions behind and the next one goes on.
async fn purge(store: Store, retention: crate::config::Retention, shutdown: CancellationToken) {
    if retention.raw.is_none() && retention.held.is_none() && retention.notification_text.is_none() {
        return;
    }
    let mut every = tokio::time::interval(retention.purge_interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        let now = crate::store::now_ms();
        let before = |keep: Option<std::time::Duration>| keep.map(|keep| now - keep.as_millis() as i64);
        let purging = store.purge(before(retention.raw), before(retention.held), before(retention.notification_text));
        let result = tokio::select! {
            () = shutdown.cancelled() => return,
            result = purging => result,
        };
        match result {
            Ok((0, 0, 0)) => {}
            Ok((originals, held, notification_texts)) => {
                tracing::info!(originals, held, notification_texts, "purged what was past its retention");
            }
            Err(error) => tracing::warn!(error = %error, "purging failed; trying again later"),
        }
    }
}

/// Loads the rules file, or the built-in rules without one. Errors list
/// every problem with its line.
pub fn load_rules(path: Option<&std::path::Path>) -> anyhow::Result<RuleSet> {
    let Some(path) = path else { return Ok(RuleSet::built_in()) };
    let text = std::fs::read_to_string(path).with_context(|| format!("reading rules file {}", path.display()))?;
    crate::rules::compile(&text, &path.display().to_string())
        .map_err(|errors| anyhow::anyhow!("{}", errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")))
}

/// Reloads the rules on SIGHUP and when the file changes (checked every
/// second). A broken file is refused with the same errors as `rules check`,
/// and the rules in force keep serving.
async fn watch_rules(
    path: std::path::PathBuf,
    rules: Arc<LiveRules>,
    metrics: Arc<crate::metrics::Metrics>,
    shutdown: CancellationToken,
) {
    let stamp = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut seen = stamp(&path);
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let signalled = async {
            match hangup.as_mut() {
                Some(signal) => signal.recv().await.is_some(),
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let signalled = std::future::pending::<bool>();
        let forced = tokio::select! {
            () = shutdown.cancelled() => return,
            _ = signalled => true,
            () = tokio::time::sleep(std::time::Duration::from_secs(1)) => false,
        };
        let now = stamp(&path);
        if !forced && now == seen {
            continue;
        }
        seen = now;
        match load_rules(Some(&path)) {
            Ok(new) => {
                let count = new.rules.len();
                rules.replace(new);
                metrics.rules_reload(true);
                tracing::info!(file = %path.display(), rules = count, "routing rules reloaded");
            }
            Err(error) => {
                metrics.rules_reload(false);
                tracing::error!(file = %path.display(), "routing rules refused; the previous rules stay in force:\n{error:#}");
            }
        }
    }
}

/// The SPF/DKIM/DMARC checker of a configuration, when enabled.
pub fn sender_auth(config: &Config) -> anyhow::Result<Option<Arc<crate::pipeline::authenticate::SenderAuth>>> {
    if !config.auth.enabled {
        return Ok(None);
    }
    Ok(Some(Arc::new(
        crate::pipeline::authenticate::SenderAuth::new(
            &config.auth.resolver,
            &config.auth.records,
            config.auth.on_dmarc_fail,
            &config.hostname,
        )?
        .with_authserv_ids(config.auth.trusted_authserv_ids.clone()),
    )))
}

/// The STARTTLS acceptor of a certificate chain and key (PEM files).
pub fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("tls certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("tls certificate {}", cert.display()))?;
    if chain.is_empty() {
        anyhow::bail!("tls certificate {}: no certificate found", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("tls private key {}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .context("tls protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("tls certificate and key do not match")?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The store and a pipeline configured like the server's, for tools that look
/// at mail without receiving it (`inspect`, `rules test`): same rules (or
/// `rules_file` when given), sender checks and limits.
pub async fn tool_pipeline(config: &Config) -> anyhow::Result<(Store, Pipeline)> {
    let (store, signer) = open_store(config).await?;
    let rules = Arc::new(LiveRules::new(load_rules(config.rules_file.as_deref())?));
    // Without a domain of its own, a tool judges mail as the server does:
    // with the domain the server last ran with on this database.
    let domain = match (config.domain_given, store.setting(SERVED_DOMAIN).await?) {
        (false, Some(served)) => served,
        _ => config.domain.clone(),
    };
    let pipeline = pipeline_for(config, store.clone(), signer, domain, rules)?;
    Ok((store, pipeline))
}
