//! One SMTP session: a small state machine over smtp-proto's request and
//! DATA receivers, generic over the stream so that it runs on TCP and, after
//! STARTTLS, on TLS alike.
//!
//! Pipelining (RFC 2920) falls out of the design: every complete command in
//! the bytes read so far is answered into one output buffer, which is
//! flushed before the session waits for more input.
//!
//! Limits: a command line is at most 2048 bytes (`MAX_COMMAND_LINE`); a
//! message larger than the configured size is read to its end and discarded,
//! then refused with `552`; a client silent for longer than the command or
//! data timeout is dropped with `421`; after too many errors the session is
//! closed.

mod relay;
mod verbs;

use crate::config::Limits;
use crate::domain::reply::{self, SmtpReply};
use crate::pipeline::relayed::ToldClient;
use crate::pipeline::{Disposition, Envelope, Pipeline};
use smtp_proto::request::receiver::{DataReceiver, RequestReceiver};
use smtp_proto::{Error as ProtoError, Request};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Errors after which the session is closed.
const MAX_ERRORS: u32 = 10;

/// What the listener knows of a running session, to choose one to close
/// when every connection slot is taken (see `listener.rs`).
#[derive(Debug)]
pub struct Live {
    /// When the session last made progress (a whole command answered, or
    /// a window of DATA at the minimum rate), in ms on [`Live::clock_ms`].
    progress_ms: std::sync::atomic::AtomicU64,
    /// Its client delivered a message in this session.
    delivered: std::sync::atomic::AtomicBool,
    /// Closes the session with `421` to make room for another.
    pub evict: CancellationToken,
}

impl Default for Live {
    fn default() -> Self {
        Self {
            progress_ms: std::sync::atomic::AtomicU64::new(Self::clock_ms()),
            delivered: std::sync::atomic::AtomicBool::new(false),
            evict: CancellationToken::new(),
        }
    }
}

impl Live {
    /// Milliseconds since the process first asked: the clock of `progress`.
    pub fn clock_ms() -> u64 {
        static START: std::sync::LazyLock<std::time::Instant> = std::sync::LazyLock::new(std::time::Instant::now);
        START.elapsed().as_millis() as u64
    }

    fn progressed(&self) {
        self.progress_ms.store(Self::clock_ms(), std::sync::atomic::Ordering::Relaxed);
    }

    /// How long ago the session last made progress, in ms.
    pub fn idle_ms(&self) -> u64 {
        Self::clock_ms().saturating_sub(self.progress_ms.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Whether its client delivered a message in this session.
    pub fn delivered(&self) -> bool {
        self.delivered.load(std::sync::atomic::Ordering::Relaxed)
    }
}
/// Longest command line accepted, CRLF included. RFC 5321 asks for 512;
/// extensions make lines longer, so we allow some room.
const MAX_COMMAND_LINE: usize = 2048;

/// What every session of one listener shares.
pub struct SessionContext {
    /// Name in the greeting.
    pub hostname: String,
    /// Our mail domain, for reply texts.
    pub domain: String,
    /// Size, recipient and time limits.
    pub limits: Limits,
    /// Where messages go.
    pub pipeline: Pipeline,
    /// STARTTLS, when a certificate is configured.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Counts transactions and their answer time.
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    /// Bad reply tokens per client network: peers that keep guessing are
    /// answered more and more slowly.
    pub bad_tokens: Tarpit,
    /// This listener speaks LMTP (RFC 2033): `LHLO`, and one answer per
    /// recipient after the message.
    pub lmtp: bool,
    /// The mail servers in front of mailgate, whose `XFORWARD` and
    /// `XCLIENT` are accepted (`[auth] trusted_relays`).
    pub trusted_relays: crate::domain::Networks,
    /// TCP proxies whose PROXY header names the client (`[auth] trusted_proxies`).
    pub proxy_protocol_from: crate::domain::Networks,
    /// Sessions running, on every mail listener of the server (shared by
    /// their contexts): a stop turns new connections away until it is 0.
    pub open_sessions: Arc<std::sync::atomic::AtomicUsize>,
}

/// Counts a session in [`SessionContext::open_sessions`] while it lives.
struct OpenSession(Arc<std::sync::atomic::AtomicUsize>);

impl OpenSession {
    fn new(count: &Arc<std::sync::atomic::AtomicUsize>) -> Self {
        count.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Self(Arc::clone(count))
    }
}

impl Drop for OpenSession {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Who is on the other end of a session.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Its address; a unix-socket client is this host (`127.0.0.1`).
    pub addr: SocketAddr,
    /// How the logs name it: `IP:PORT`, or `unix:PATH`.
    pub name: String,
    /// The address came from a trusted proxy's PROXY header.
    pub proxied: bool,
    /// A client of a unix socket (only a process on this host can be one).
    pub unix: bool,
}

impl Peer {
    /// A TCP client at `addr`.
    pub fn tcp(addr: SocketAddr) -> Self {
        Self { addr, name: addr.to_string(), proxied: false, unix: false }
    }

    /// A client of the unix socket at `path`: this host.
    pub fn unix(path: &std::path::Path) -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            name: format!("unix:{}", path.display()),
            proxied: false,
            unix: true,
        }
    }
}

/// Bad reply tokens per client network (an IPv4 address, an IPv6 /64):
/// (count, last time), bounded.
#[derive(Debug, Default)]
pub struct Tarpit(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, (u32, std::time::Instant)>>);

impl std::fmt::Debug for SessionContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionContext")
            .field("hostname", &self.hostname)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl SessionContext {
    /// Records a bad token from `ip` and says how long to wait before answering.
    fn penalty(&self, ip: std::net::IpAddr) -> std::time::Duration {
        self.bad_tokens.penalty(ip)
    }
}

impl Tarpit {
    /// Records a bad token from `ip` and says how long to wait before
    /// answering. Addresses are counted as the HTTP throttle counts them (an
    /// IPv6 client is its /64), and the table stays bounded: past
    /// `TARPIT_ENTRIES` it drops what is older than ten minutes, and when
    /// that is not enough, everything (a flood from that many networks).
    fn penalty(&self, ip: std::net::IpAddr) -> std::time::Duration {
        let ip = crate::http::throttle::network_of(ip);
        let mut map = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = std::time::Instant::now();
        if map.len() >= TARPIT_ENTRIES && !map.contains_key(&ip) {
            map.retain(|_, (_, at)| now.duration_since(*at).as_secs() < 600);
            if map.len() >= TARPIT_ENTRIES {
                map.clear();
            }
        }
        let entry = map.entry(ip).or_insert((0, now));
        if now.duration_since(entry.1).as_secs() > 600 {
            *entry = (0, now);
        }
        entry.0 += 1;
        entry.1 = now;
        tarpit_delay(entry.0)
    }
}

/// How many networks the tarpit remembers before it forgets old ones.
const TARPIT_ENTRIES: usize = 10_000;

/// The wait before answering an address's `n`th bad reply token in ten
/// minutes: three free guesses, then 250 ms doubling up to 8 s.
fn tarpit_delay(n: u32) -> std::time::Duration {
    match n {
        0..=3 => std::time::Duration::ZERO,
        n => std::time::Duration::from_millis(250 << (n - 4).min(5)),
    }
}

enum Mode {
    Command,
    Data { receiver: DataReceiver, too_large: bool },
}

enum Flow {
    Continue,
    Close,
    /// The client asked for TLS and was told to go ahead.
    StartTls,
}

struct Transaction {
    envelope: Envelope,
    /// Every log line of the transaction is in it: `transaction{id=…}`.
    span: tracing::Span,
    /// MAIL FROM said `SMTPUTF8`: addresses may be UTF-8 (RFC 6531).
    smtputf8: bool,
}

/// Runs one session on `stream` until the client quits, times out, or the
/// server shuts down (answered with `421` at the next command boundary; a
/// message being received is finished first).
///
/// `live` is the listener's view of the session (its progress, and the
/// token that closes it to make room); `None` outside a listener.
pub async fn run<S>(
    stream: S,
    peer: Peer,
    ctx: Arc<SessionContext>,
    shutdown: CancellationToken,
    live: Option<Arc<Live>>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let _open = OpenSession::new(&ctx.open_sessions);
    let now = std::time::Instant::now();
    // LMTP's unix socket only takes this host's mail server; over TCP, an
    // LMTP client must be a trusted relay like any other.
    let trusted = (ctx.lmtp && peer.unix) || ctx.trusted_relays.contains(peer.addr.ip());
    let mut session = Session {
        trusted,
        peer_name: peer.name,
        proxied: peer.proxied,
        xforward: None,
        xclient: None,
        live,
        started: now,
        last_read: now,
        line_started: None,
        data_started: None,
        window_start: now,
        window_bytes: 0,
        commands: 0,
        ctx,
        peer: peer.addr,
        helo: None,
        transaction: None,
        mode: Mode::Command,
        receiver: RequestReceiver::default(),
        message: Vec::new(),
        line: Vec::new(),
        out: Vec::with_capacity(1024),
        errors: 0,
        line_len: 0,
        discarding_line: false,
        tls_active: false,
    };
    if session.ctx.lmtp && !session.trusted {
        tracing::warn!(peer = %session.peer_name, "an LMTP client that is not in [auth] trusted_relays was turned away");
        let mut stream = stream;
        let refusal = "554 5.7.0 This LMTP service takes mail only from the mail servers in [auth] trusted_relays\r\n";
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), stream.write_all(refusal.as_bytes())).await;
        let _ = stream.shutdown().await;
        return;
    }
    // No enhanced status code in the greeting (RFC 2034).
    let greeting = session.greeting();
    session.out.extend_from_slice(greeting.as_bytes());
    if let Some(plain) = drive(&mut session, stream, &shutdown).await {
        // STARTTLS: the same session continues over TLS, from a clean state
        // (RFC 3207): no EHLO, no transaction, nothing pipelined before it.
        let Some(acceptor) = session.ctx.tls.clone() else { return };
        let limit = session.ctx.limits.command_timeout.min(std::time::Duration::from_secs(10));
        let evicted = async {
            match &session.live {
                Some(live) => live.evict.cancelled().await,
                None => std::future::pending().await,
            }
        };
        let handshake = tokio::select! {
            result = tokio::time::timeout(limit, acceptor.accept(plain)) => result,
            () = shutdown.cancelled() => return,
            () = evicted => return,
        };
        match handshake {
            Ok(Ok(tls)) => {
                session.helo = None;
                session.transaction = None;
                session.receiver = RequestReceiver::default();
                session.tls_active = true;
                if let Some(mut tls) = drive(&mut session, tls, &shutdown).await {
                    let _ = tls.shutdown().await;
                }
            }
            Ok(Err(error)) => tracing::info!(peer = %session.peer, error = %error, "TLS handshake failed"),
            Err(_) => tracing::info!(peer = %session.peer, "TLS handshake timed out"),
        }
    }
    session.end_transaction().await;
}

/// Runs the command loop on `stream` until the session ends (`None`) or the
/// client asked for STARTTLS (`Some(stream)`, to be wrapped in TLS).
///
/// Every wait has a deadline that no trickle of bytes pushes back: the idle
/// timeout counts from the last byte, but a command line, a DATA section and
/// the session each have a lifetime of their own, and DATA must keep a
/// minimum rate over every window (`limits.data_rate_window`).
async fn drive<S>(session: &mut Session, mut stream: S, shutdown: &CancellationToken) -> Option<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    let live = session.live.clone();
    let evicted = async {
        match &live {
            Some(live) => live.evict.cancelled().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(evicted);
    loop {
        if !session.flush(&mut stream).await {
            break;
        }
        let in_data = matches!(session.mode, Mode::Data { .. });
        let deadline = session.deadline();
        let read = tokio::select! {
            read = tokio::time::timeout_at(deadline.into(), stream.read(&mut buf)) => read,
            () = shutdown.cancelled(), if !in_data => {
                session.push(&SmtpReply::new(421, "4.3.0", "Server shutting down, please try again later"));
                session.flush(&mut stream).await;
                break;
            }
            () = &mut evicted => {
                session.ctx.metrics.smtp_closed("evicted");
                session.push(&SmtpReply::new(
                    421,
                    "4.3.2",
                    "Every connection slot is taken and this session made no progress; closing it to make room",
                ));
                session.flush(&mut stream).await;
                break;
            }
        };
        let n = match read {
            Err(_elapsed) => 0,
            Ok(Err(_)) | Ok(Ok(0)) => break,
            Ok(Ok(n)) => n,
        };
        if n > 0 {
            session.received(n);
            let commands = session.commands;
            match session.process(&buf[..n]).await {
                Flow::Continue => {}
                Flow::Close => {
                    session.flush(&mut stream).await;
                    break;
                }
                Flow::StartTls => {
                    // Bytes pipelined after STARTTLS were sent in the clear: dropped.
                    if session.flush(&mut stream).await {
                        return Some(stream);
                    }
                    break;
                }
            }
            session.after_process(commands);
        }
        if let Some((reason, reply)) = session.limit_reached(std::time::Instant::now()) {
            session.ctx.metrics.smtp_closed(reason);
            tracing::info!(peer = %session.peer, reason, "closing a session at its limit");
            session.push(&reply);
            session.flush(&mut stream).await;
            break;
        }
    }
    let _ = stream.shutdown().await;
    None
}

struct Session {
    ctx: Arc<SessionContext>,
    /// The listener's view of this session.
    live: Option<Arc<Live>>,
    /// When the session began (its lifetime).
    started: std::time::Instant,
    /// When the last bytes arrived (the idle timeout).
    last_read: std::time::Instant,
    /// When the first byte of the command line being read arrived.
    line_started: Option<std::time::Instant>,
    /// When the DATA section being read began.
    data_started: Option<std::time::Instant>,
    /// The current window of the DATA rate, and the bytes it brought.
    window_start: std::time::Instant,
    window_bytes: u64,
    /// Commands answered so far (progress, for the listener).
    commands: u64,
    peer: SocketAddr,
    helo: Option<String>,
    transaction: Option<Transaction>,
    mode: Mode,
    receiver: RequestReceiver,
    message: Vec<u8>,
    /// The bytes of the command being read, as they came (at most
    /// `MAX_COMMAND_LINE`): what smtp-proto parsed, to check it again.
    line: Vec<u8>,
    out: Vec<u8>,
    errors: u32,
    /// Bytes of the current, unfinished command line seen so far.
    line_len: usize,
    /// Skipping the rest of an overlong command line.
    discarding_line: bool,
    /// The session already runs over TLS.
    tls_active: bool,
    /// How the logs name the client.
    peer_name: String,
    /// The client's address came from a PROXY header.
    proxied: bool,
    /// The client is a trusted relay (or this is LMTP): its XFORWARD and
    /// XCLIENT are accepted and what it saw is believed.
    trusted: bool,
    /// What the relay said with `XFORWARD` for the next transaction.
    xforward: Option<ToldClient>,
    /// What a proxy said with `XCLIENT`, for the rest of the session.
    xclient: Option<ToldClient>,
}

impl Session {
    /// The greeting, without enhanced status code (RFC 2034).
    fn greeting(&self) -> String {
        let protocol = if self.ctx.lmtp { "LMTP" } else { "ESMTP" };
        format!("220 {} {protocol} mailgate ready\r\n", self.ctx.hostname)
    }

    /// The address that answers for what this session sends: the client a
    /// trusted relay named, else the connection's (the tarpit's key).
    fn client_ip(&self) -> std::net::IpAddr {
        self.xclient.as_ref().or(self.xforward.as_ref()).and_then(|told| told.ip).unwrap_or(self.peer.ip())
    }

    /// Notes `n` bytes received now.
    fn received(&mut self, n: usize) {
        let now = std::time::Instant::now();
        self.last_read = now;
        if matches!(self.mode, Mode::Data { .. }) {
            self.window_bytes += n as u64;
            // Arriving at the minimum rate so far: progress.
            let due = self.ctx.limits.min_data_rate as f64 * now.duration_since(self.window_start).as_secs_f64();
            if self.window_bytes as f64 >= due
                && let Some(live) = &self.live
            {
                live.progressed();
            }
        }
    }

    /// After bytes were processed: the progress made, the state of the
    /// command line being read, and when a DATA section began or ended.
    fn after_process(&mut self, commands_before: u64) {
        let now = std::time::Instant::now();
        if self.commands != commands_before
            && let Some(live) = &self.live
        {
            live.progressed();
        }
        let partial = self.line_len > 0 || self.discarding_line || !self.line.is_empty();
        match (&self.mode, partial) {
            (Mode::Command, true) => {
                self.line_started.get_or_insert(now);
            }
            _ => self.line_started = None,
        }
        match (&self.mode, self.data_started) {
            (Mode::Data { .. }, None) => {
                self.data_started = Some(now);
                self.window_start = now;
                self.window_bytes = 0;
            }
            (Mode::Command, Some(_)) => self.data_started = None,
            _ => {}
        }
    }

    /// The earliest moment a limit could be reached, to wait for input until.
    fn deadline(&self) -> std::time::Instant {
        let limits = &self.ctx.limits;
        let mut at = match self.mode {
            Mode::Data { .. } => self.last_read + limits.data_timeout,
            Mode::Command => (self.last_read + limits.command_timeout).min(self.started + limits.session_lifetime),
        };
        if let Some(line) = self.line_started {
            at = at.min(line + limits.command_line_timeout);
        }
        if let Some(data) = self.data_started {
            at = at.min(data + limits.data_section_timeout).min(self.window_start + limits.data_rate_window);
        }
        at
    }

    /// The limit reached at `now`, if any: its name (for the metrics) and
    /// the answer that closes the session. A DATA rate window that ends
    /// with enough bytes starts the next one (and counts as progress).
    fn limit_reached(&mut self, now: std::time::Instant) -> Option<(&'static str, SmtpReply)> {
        let limits = &self.ctx.limits;
        let closing = |text: &str| SmtpReply::new(421, "4.4.2", format!("{text}, closing connection"));
        if let Some(data) = self.data_started {
            if now >= data + limits.data_section_timeout {
                let text = format!("The message took longer than {} s to send", limits.data_section_timeout.as_secs());
                return Some(("data_section", closing(&text)));
            }
            if now >= self.window_start + limits.data_rate_window {
                let window = now.duration_since(self.window_start).as_secs_f64();
                let needed = (limits.min_data_rate as f64 * window) as u64;
                if self.window_bytes < needed {
                    let text = format!("The message is arriving slower than {} bytes a second", limits.min_data_rate);
                    return Some(("data_too_slow", closing(&text)));
                }
                self.window_start = now;
                self.window_bytes = 0;
                if let Some(live) = &self.live {
                    live.progressed();
                }
            }
            if now >= self.last_read + limits.data_timeout {
                return Some(("idle", closing("Timeout waiting for input")));
            }
            return None;
        }
        if let Some(line) = self.line_started
            && now >= line + limits.command_line_timeout
        {
            let text = format!("A command line took longer than {} s to arrive", limits.command_line_timeout.as_secs());
            return Some(("command_line", closing(&text)));
        }
        if now >= self.started + limits.session_lifetime {
            let text = format!("The session lasted longer than {} s", limits.session_lifetime.as_secs());
            return Some(("session_lifetime", closing(&text)));
        }
        if now >= self.last_read + limits.command_timeout {
            return Some(("idle", closing("Timeout waiting for input")));
        }
        None
    }

    fn push(&mut self, reply: &SmtpReply) {
        self.out.extend_from_slice(reply.to_string().as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    async fn flush<S: AsyncWrite + Unpin>(&mut self, stream: &mut S) -> bool {
        if self.out.is_empty() {
            return true;
        }
        let write = async {
            stream.write_all(&self.out).await?;
            stream.flush().await
        };
        // A client that does not read its answers gets thirty seconds.
        let limit = self.ctx.limits.command_timeout.min(std::time::Duration::from_secs(30));
        let ok = matches!(tokio::time::timeout(limit, write).await, Ok(Ok(())));
        self.out.clear();
        ok
    }

    /// `552 5.3.4` with the size limit.
    fn too_large_reply(&self) -> SmtpReply {
        SmtpReply::new(
            552,
            "5.3.4",
            format!("Message too large: the limit is {} bytes", self.ctx.limits.max_message_size),
        )
    }

    fn error(&mut self, reply: SmtpReply) -> Flow {
        self.push(&reply);
        self.errors += 1;
        if self.errors >= MAX_ERRORS {
            self.push(&SmtpReply::new(421, "4.7.0", "Too many errors, closing connection"));
            return Flow::Close;
        }
        Flow::Continue
    }

    async fn process(&mut self, bytes: &[u8]) -> Flow {
        let mut iter = bytes.iter();
        loop {
            match &mut self.mode {
                Mode::Data { receiver, too_large } => {
                    let done = receiver.ingest(&mut iter, &mut self.message);
                    if self.message.len() > self.ctx.limits.max_message_size {
                        *too_large = true;
                        self.message.clear();
                    }
                    if !done {
                        return Flow::Continue;
                    }
                    let too_large = *too_large;
                    self.mode = Mode::Command;
                    let span = self.transaction_span();
                    self.message_complete(too_large).instrument(span).await;
                }
                Mode::Command => {
                    let rest = iter.as_slice();
                    if rest.is_empty() {
                        return Flow::Continue;
                    }
                    let newline = rest.iter().position(|&b| b == b'\n');
                    if self.discarding_line {
                        let Some(end) = newline else {
                            return Flow::Continue;
                        };
                        iter = rest[end + 1..].iter();
                        self.discarding_line = false;
                        if let Flow::Close = self.error(SmtpReply::new(500, "5.5.6", "Line too long")) {
                            return Flow::Close;
                        }
                        continue;
                    }
                    if self.line_len + newline.map_or(rest.len(), |end| end + 1) > MAX_COMMAND_LINE {
                        self.receiver = RequestReceiver::default();
                        self.discarding_line = true;
                        self.line_len = 0;
                        continue;
                    }
                    self.line_len = match newline {
                        Some(_) => 0,
                        None => self.line_len + rest.len(),
                    };
                    let before = iter.as_slice();
                    let ingested = self.receiver.ingest(&mut iter);
                    let consumed = before.len() - iter.as_slice().len();
                    self.line.extend_from_slice(&before[..consumed]);
                    let request = match ingested {
                        Ok(request) => request.into_owned(),
                        Err(ProtoError::NeedsMoreData { .. }) => return Flow::Continue,
                        Err(error) => {
                            let line = std::mem::take(&mut self.line);
                            if let ProtoError::UnknownCommand = error
                                && let Some(flow) = self.relay_command(&line)
                            {
                                match flow {
                                    Flow::Continue => continue,
                                    other => return other,
                                }
                            }
                            let reply = match error {
                                // A SIZE too large for smtp-proto's integer is too large for us.
                                ProtoError::InvalidParameter { param: "SIZE" }
                                    if declared_size(&line)
                                        .is_some_and(|size| size > self.ctx.limits.max_message_size as u128) =>
                                {
                                    self.too_large_reply()
                                }
                                _ => protocol_error(&error),
                            };
                            if let Flow::Close = self.error(reply) {
                                return Flow::Close;
                            }
                            continue;
                        }
                    };
                    let line = std::mem::take(&mut self.line);
                    let span = self.transaction_span();
                    match self.command(request, &line).instrument(span).await {
                        Flow::Continue => {}
                        other => return other,
                    }
                }
            }
        }
    }

    /// Answers one command (`line` is its raw text): each verb has its own
    /// handler, in `verbs`.
    async fn command(&mut self, request: Request<String>, line: &[u8]) -> Flow {
        // Progress is a step toward a message: NOOP, RSET, HELP or EHLO
        // again and again keep no slot.
        if matches!(
            request,
            Request::Mail { .. } | Request::Rcpt { .. } | Request::Data | Request::StartTls | Request::Quit
        ) {
            self.commands += 1;
        }
        match request {
            Request::Ehlo { host } | Request::Helo { host } | Request::Lhlo { host }
                if host.chars().any(|c| c.is_control() || c.is_whitespace()) =>
            {
                self.error(SmtpReply::new(501, "5.5.4", "Invalid host name"))
            }
            Request::Ehlo { .. } | Request::Helo { .. } if self.ctx.lmtp => self.error(SmtpReply::new(
                500,
                "5.5.1",
                "This is an LMTP service (RFC 2033): greet it with LHLO, not EHLO or HELO",
            )),
            Request::Lhlo { .. } if !self.ctx.lmtp => {
                self.error(SmtpReply::new(500, "5.5.1", "LHLO is for LMTP; greet this SMTP service with EHLO"))
            }
            Request::Ehlo { host } | Request::Lhlo { host } => self.ehlo(host).await,
            Request::Helo { host } => self.helo(host).await,
            Request::Mail { from } => self.mail(from, line),
            Request::Rcpt { to } => self.rcpt(to).await,
            Request::Data => self.data(),
            Request::Rset => self.rset().await,
            Request::StartTls => self.starttls(),
            Request::Quit => {
                self.push(&SmtpReply::new(221, "2.0.0", "Bye"));
                Flow::Close
            }
            Request::Noop { .. } => self.answer(SmtpReply::new(250, "2.0.0", "OK")),
            Request::Vrfy { .. } | Request::Expn { .. } => {
                self.answer(SmtpReply::new(252, "2.5.2", "Cannot verify users; send the message and we will try"))
            }
            Request::Help { .. } => {
                self.answer(SmtpReply::new(214, "2.0.0", "mailgate accepts replies to support notifications"))
            }
            Request::Bdat { .. } => self.error(SmtpReply::new(502, "5.5.1", "BDAT is not supported; use DATA")),
            Request::Auth { .. } | Request::Etrn { .. } | Request::Atrn { .. } | Request::Burl { .. } => {
                self.error(SmtpReply::new(502, "5.5.1", "Command not implemented"))
            }
        }
    }

    /// The span of the transaction under way (none between transactions).
    fn transaction_span(&self) -> tracing::Span {
        self.transaction.as_ref().map_or_else(tracing::Span::none, |t| t.span.clone())
    }

    /// Answers `reply` and goes on.
    fn answer(&mut self, reply: SmtpReply) -> Flow {
        self.push(&reply);
        Flow::Continue
    }

    /// The message of the transaction has arrived: SMTP answers once for
    /// the message, LMTP once for each accepted recipient, in RCPT order
    /// (RFC 2033 §4.2), each with its own outcome.
    async fn message_complete(&mut self, too_large: bool) {
        self.data_started = None;
        let Some(transaction) = self.transaction.take() else {
            return;
        };
        // XFORWARD speaks for one transaction.
        self.xforward = None;
        let message = std::mem::take(&mut self.message);
        let started = std::time::Instant::now();
        let answers = if self.ctx.lmtp { transaction.envelope.recipients.len() } else { 1 };
        if too_large {
            let reply = self.too_large_reply();
            tracing::info!(peer = %self.peer_name, "message over the size limit refused");
            self.ctx
                .pipeline
                .log_unreceived(&transaction.envelope, &reply.to_string(), "message over the size limit")
                .await;
            for _ in 0..answers {
                self.ctx.metrics.transaction(self.ctx.lmtp, "too_large", reply.code, started.elapsed().as_secs_f64());
                self.push(&reply);
            }
            return;
        }
        if !self.ctx.lmtp {
            let disposition = self.ctx.pipeline.ingest(&transaction.envelope, &message).await;
            let reply = self.answered(&disposition, started);
            self.push(&reply);
            return;
        }
        // Recipients that are the same target (the same reply address, or
        // any number of `bounces+` addresses without a valid token) share
        // one reading and one outcome; each still gets its own answer.
        let groups = transaction.envelope.by_target();
        let mut answers = vec![None; transaction.envelope.recipients.len()];
        for (positions, envelope) in groups {
            let disposition = self.ctx.pipeline.ingest(&envelope, &message).await;
            for position in positions {
                answers[position] = Some(self.answered(&disposition, started));
            }
        }
        for ((recipient, _), answer) in transaction.envelope.recipients.iter().zip(answers) {
            let mut reply =
                answer.unwrap_or_else(|| SmtpReply::new(451, "4.3.0", "Not processed; please try again later"));
            reply.text = format!("<{recipient}> {}", reply.text);
            self.push(&reply);
        }
    }

    /// The answer to a message's `disposition`, counted and logged.
    fn answered(&mut self, disposition: &Disposition, started: std::time::Instant) -> SmtpReply {
        let reply = reply::for_disposition(disposition);
        let outcome = disposition.label();
        self.ctx.metrics.transaction(self.ctx.lmtp, outcome, reply.code, started.elapsed().as_secs_f64());
        if let Some(live) = &self.live {
            live.progressed();
            if matches!(disposition, Disposition::Accepted { .. }) {
                live.delivered.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        match disposition {
            Disposition::Accepted { thread_id, message_id, duplicate, .. } => {
                tracing::info!(thread_id, message_id, duplicate, "message accepted");
            }
            other => {
                let reason = other.reason().map_or_else(|| reply.text.clone(), str::to_owned);
                tracing::info!(outcome = other.label(), reason, answer = %reply, "message not posted");
            }
        }
        reply
    }

    /// Ends the current transaction without DATA; records it when some
    /// recipient was refused, so that every refusal is in the inbound log.
    async fn end_transaction(&mut self) {
        self.xforward = None;
        let Some(transaction) = self.transaction.take() else {
            return;
        };
        if let Some((_, first)) = transaction.envelope.refused.first() {
            let reply = reply::for_rcpt_refusal(first, &self.ctx.domain).to_string();
            self.ctx.pipeline.log_unreceived(&transaction.envelope, &reply, "recipient refused").await;
        }
    }
}

/// The answer to a UTF-8 address in a transaction that did not ask for
/// `SMTPUTF8` (RFC 6531 §3.5).
fn needs_smtputf8() -> SmtpReply {
    SmtpReply::new(553, "5.6.7", "This address is not ASCII: send MAIL FROM with the SMTPUTF8 parameter")
}

/// The `SIZE=` value of a MAIL command, read from its raw line with no
/// upper bound on the digits (smtp-proto wraps a number too large for its
/// integer around to a small one); `None` when there is none.
fn declared_size(line: &[u8]) -> Option<u128> {
    let parameters = &line[line.iter().rposition(|&b| b == b'>')? + 1..];
    let value = parameters
        .split(u8::is_ascii_whitespace)
        .find_map(|p| (p.len() > 5 && p[..5].eq_ignore_ascii_case(b"SIZE=")).then(|| &p[5..]))?;
    let digits = value.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits > 30 {
        return Some(u128::MAX);
    }
    std::str::from_utf8(&value[..digits]).ok()?.parse().ok()
}

fn protocol_error(error: &ProtoError) -> SmtpReply {
    match error {
        ProtoError::UnknownCommand => SmtpReply::new(500, "5.5.1", "Unknown command"),
        ProtoError::InvalidSenderAddress => SmtpReply::new(501, "5.1.7", "Invalid sender address"),
        ProtoError::InvalidRecipientAddress => SmtpReply::new(501, "5.1.3", "Invalid recipient address"),
        ProtoError::SyntaxError { syntax } => SmtpReply::new(501, "5.5.4", format!("Syntax: {syntax}")),
        ProtoError::InvalidParameter { param } => SmtpReply::new(501, "5.5.4", format!("Invalid parameter {param}")),
        ProtoError::UnsupportedParameter { param } => {
            let param: String = param.chars().filter(char::is_ascii_graphic).take(64).collect();
            SmtpReply::new(555, "5.5.4", format!("Unsupported parameter {param}"))
        }
        ProtoError::ResponseTooLong => SmtpReply::new(500, "5.5.6", "Line too long"),
        ProtoError::NeedsMoreData { .. } | ProtoError::InvalidResponse { .. } => {
            SmtpReply::new(500, "5.5.2", "Syntax error")
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_tarpit_is_three_free_guesses_then_250_ms_doubling_to_8_s() {
        let waits: Vec<u128> = (1..=11).map(|n| super::tarpit_delay(n).as_millis()).collect();
        assert_eq!(waits, [0, 0, 0, 250, 500, 1000, 2000, 4000, 8000, 8000, 8000]);
    }
}

#[cfg(test)]
mod tarpit_tests {
    use super::{TARPIT_ENTRIES, Tarpit};
    use std::net::IpAddr;

    #[test]
    fn an_ipv6_client_is_one_network_and_the_table_stays_bounded() {
        let tarpit = Tarpit::default();
        let waits: Vec<u128> = (1..=5u16)
            .map(|i| {
                let ip: IpAddr = format!("2001:db8:1:2::{i:x}").parse().unwrap();
                tarpit.penalty(ip).as_millis()
            })
            .collect();
        assert_eq!(waits, [0, 0, 0, 250, 500], "five addresses of one /64 are one guesser");
        for i in 0..(TARPIT_ENTRIES as u32 + 10) {
            tarpit.penalty(IpAddr::from(i.to_be_bytes()));
        }
        assert!(tarpit.0.lock().unwrap().len() <= TARPIT_ENTRIES, "bounded");
    }
}
