//! One SMTP session: a small state machine over smtp-proto's request and
//! DATA receivers, generic over the stream so that it can run on TCP (and
//! later TLS) alike.
//!
//! Pipelining (RFC 2920) falls out of the design: every complete command in
//! the bytes read so far is answered into one output buffer, which is
//! flushed before the session waits for more input.
//!
//! Limits: a command line is at most 4096 bytes (smtp-proto's limit); a
//! message larger than the configured size is read to its end and discarded,
//! then refused with `552`; a client silent for longer than the command or
//! data timeout is dropped with `421`; after too many errors the session is
//! closed.

use crate::config::Limits;
use crate::domain::reply::{self, SmtpReply};
use crate::pipeline::{Disposition, Envelope, Pipeline};
use smtp_proto::request::receiver::{DataReceiver, RequestReceiver};
use smtp_proto::{Error as ProtoError, Request};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// Errors after which the session is closed.
const MAX_ERRORS: u32 = 10;
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
    /// Bad reply tokens per client address: (count, last time). Peers that
    /// keep guessing are answered more and more slowly.
    pub bad_tokens: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, (u32, std::time::Instant)>>,
}

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
        let mut map = self.bad_tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = std::time::Instant::now();
        if map.len() > 10_000 {
            map.retain(|_, (_, at)| now.duration_since(*at).as_secs() < 600);
        }
        let entry = map.entry(ip).or_insert((0, now));
        if now.duration_since(entry.1).as_secs() > 600 {
            *entry = (0, now);
        }
        entry.0 += 1;
        entry.1 = now;
        // Three free guesses, then 250 ms doubling up to 8 s.
        let extra = entry.0.saturating_sub(3).min(6);
        if entry.0 <= 3 { std::time::Duration::ZERO } else { std::time::Duration::from_millis(250 << extra) }
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
    /// MAIL FROM said `SMTPUTF8`: addresses may be UTF-8 (RFC 6531).
    smtputf8: bool,
}

/// Runs one session on `stream` until the client quits, times out, or the
/// server shuts down (answered with `421` at the next command boundary; a
/// message being received is finished first).
pub async fn run<S>(stream: S, peer: SocketAddr, ctx: Arc<SessionContext>, shutdown: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut session = Session {
        ctx,
        peer,
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
    // No enhanced status code in the greeting (RFC 2034).
    session.out.extend_from_slice(format!("220 {} ESMTP mailgate ready\r\n", session.ctx.hostname).as_bytes());
    if let Some(plain) = drive(&mut session, stream, &shutdown).await {
        // STARTTLS: the same session continues over TLS, from a clean state
        // (RFC 3207): no EHLO, no transaction, nothing pipelined before it.
        let Some(acceptor) = session.ctx.tls.clone() else { return };
        let limit = session.ctx.limits.command_timeout.min(std::time::Duration::from_secs(30));
        let handshake = tokio::select! {
            result = tokio::time::timeout(limit, acceptor.accept(plain)) => result,
            () = shutdown.cancelled() => return,
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
async fn drive<S>(session: &mut Session, mut stream: S, shutdown: &CancellationToken) -> Option<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if !session.flush(&mut stream).await {
            break;
        }
        let in_data = matches!(session.mode, Mode::Data { .. });
        let limit = if in_data { session.ctx.limits.data_timeout } else { session.ctx.limits.command_timeout };
        let read = tokio::select! {
            read = tokio::time::timeout(limit, stream.read(&mut buf)) => read,
            () = shutdown.cancelled(), if !in_data => {
                session.push(&SmtpReply::new(421, "4.3.0", "Server shutting down, please try again later"));
                session.flush(&mut stream).await;
                break;
            }
        };
        let n = match read {
            Err(_elapsed) => {
                session.push(&SmtpReply::new(421, "4.4.2", "Timeout waiting for input, closing connection"));
                session.flush(&mut stream).await;
                break;
            }
            Ok(Err(_)) | Ok(Ok(0)) => break,
            Ok(Ok(n)) => n,
        };
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
    }
    let _ = stream.shutdown().await;
    None
}

struct Session {
    ctx: Arc<SessionContext>,
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
}

impl Session {
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
        let ok = matches!(tokio::time::timeout(self.ctx.limits.command_timeout, write).await, Ok(Ok(())));
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
                    self.message_complete(too_large).await;
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
                    match self.command(request, &line).await {
                        Flow::Continue => {}
                        other => return other,
                    }
                }
            }
        }
    }

    /// Answers one command; `line` is its raw text.
    async fn command(&mut self, request: Request<String>, line: &[u8]) -> Flow {
        match request {
            Request::Ehlo { host } | Request::Helo { host } | Request::Lhlo { host }
                if host.chars().any(|c| c.is_control() || c.is_whitespace()) =>
            {
                return self.error(SmtpReply::new(501, "5.5.4", "Invalid host name"));
            }
            Request::Ehlo { host } => {
                self.end_transaction().await;
                self.helo = Some(host);
                let lines = [
                    format!("{} greets you", self.ctx.hostname),
                    "PIPELINING".to_owned(),
                    format!("SIZE {}", self.ctx.limits.max_message_size),
                    "8BITMIME".to_owned(),
                    "ENHANCEDSTATUSCODES".to_owned(),
                    "SMTPUTF8".to_owned(),
                ];
                let mut lines = lines.to_vec();
                if self.ctx.tls.is_some() && !self.tls_active {
                    lines.insert(1, "STARTTLS".to_owned());
                }
                for (i, line) in lines.iter().enumerate() {
                    let sep = if i + 1 == lines.len() { ' ' } else { '-' };
                    self.out.extend_from_slice(format!("250{sep}{line}\r\n").as_bytes());
                }
            }
            Request::Helo { host } | Request::Lhlo { host } => {
                self.end_transaction().await;
                self.helo = Some(host);
                self.out.extend_from_slice(format!("250 {}\r\n", self.ctx.hostname).as_bytes());
            }
            Request::Mail { from } => {
                if self.helo.is_none() {
                    return self.error(SmtpReply::new(503, "5.5.1", "Say EHLO first"));
                }
                if self.transaction.is_some() {
                    return self.error(SmtpReply::new(503, "5.5.1", "Nested MAIL command; send RSET first"));
                }
                let declared = declared_size(line).unwrap_or(0);
                if from.size > self.ctx.limits.max_message_size || declared > self.ctx.limits.max_message_size as u128 {
                    return self.error(self.too_large_reply());
                }
                let smtputf8 = from.flags & smtp_proto::MAIL_SMTPUTF8 != 0;
                if !smtputf8 && !from.address.is_ascii() {
                    return self.error(needs_smtputf8());
                }
                let envelope = Envelope {
                    peer: self.peer.to_string(),
                    peer_ip: Some(self.peer.ip()),
                    helo: self.helo.clone(),
                    mail_from: from.address,
                    ..Envelope::default()
                };
                self.transaction = Some(Transaction { envelope, smtputf8 });
                self.push(&SmtpReply::new(250, "2.1.0", "Sender OK"));
            }
            Request::Rcpt { to } => {
                let Some(transaction) = &mut self.transaction else {
                    return self.error(SmtpReply::new(503, "5.5.1", "Send MAIL FROM first"));
                };
                if !transaction.smtputf8 && !to.address.is_ascii() {
                    return self.error(needs_smtputf8());
                }
                if transaction.envelope.recipients.len() >= self.ctx.limits.max_recipients {
                    // Not the client's error (RFC 5321 §4.5.3.1.10): a pipelining
                    // server sends the rest in another transaction.
                    self.push(&SmtpReply::new(452, "4.5.3", "Too many recipients for one message"));
                    return Flow::Continue;
                }
                let address = to.address;
                match self.ctx.pipeline.add_recipient(&mut transaction.envelope, address.clone()).await {
                    Ok(()) => self.push(&SmtpReply::new(250, "2.1.5", "Recipient OK")),
                    Err(refusal) => {
                        if matches!(&refusal, crate::pipeline::RcptRefusal::BadToken(e) if *e != crate::domain::TokenError::Expired)
                        {
                            let wait = self.ctx.penalty(self.peer.ip());
                            if !wait.is_zero() {
                                tracing::info!(peer = %self.peer, wait_ms = wait.as_millis() as u64, "bad reply token: slowing down");
                                tokio::time::sleep(wait).await;
                            }
                        }
                        let reply = reply::for_rcpt_refusal(&refusal, &self.ctx.domain);
                        tracing::info!(rcpt = %address, reply = %reply, "recipient refused");
                        return self.error(reply);
                    }
                }
            }
            Request::Data => {
                let Some(transaction) = &self.transaction else {
                    return self.error(SmtpReply::new(503, "5.5.1", "Send MAIL FROM first"));
                };
                if transaction.envelope.recipients.is_empty() {
                    return self.error(SmtpReply::new(554, "5.5.1", "No valid recipients"));
                }
                self.message.clear();
                self.mode = Mode::Data { receiver: DataReceiver::new(), too_large: false };
                self.push(&SmtpReply::new(354, "2.0.0", "Start mail input; end with <CRLF>.<CRLF>"));
            }
            Request::Bdat { .. } => {
                return self.error(SmtpReply::new(502, "5.5.1", "BDAT is not supported; use DATA"));
            }
            Request::Rset => {
                self.end_transaction().await;
                self.push(&SmtpReply::new(250, "2.0.0", "Reset OK"));
            }
            Request::Noop { .. } => self.push(&SmtpReply::new(250, "2.0.0", "OK")),
            Request::Quit => {
                self.push(&SmtpReply::new(221, "2.0.0", "Bye"));
                return Flow::Close;
            }
            Request::Vrfy { .. } | Request::Expn { .. } => {
                self.push(&SmtpReply::new(252, "2.5.2", "Cannot verify users; send the message and we will try"));
            }
            Request::Help { .. } => {
                self.push(&SmtpReply::new(214, "2.0.0", "mailgate accepts replies to support notifications"));
            }
            Request::StartTls if self.ctx.tls.is_some() && !self.tls_active => {
                if self.transaction.is_some() {
                    return self.error(SmtpReply::new(503, "5.5.1", "STARTTLS is not allowed in a mail transaction"));
                }
                self.push(&SmtpReply::new(220, "2.0.0", "Ready to start TLS"));
                return Flow::StartTls;
            }
            Request::StartTls if self.tls_active => {
                return self.error(SmtpReply::new(503, "5.5.1", "TLS is already active"));
            }
            Request::StartTls | Request::Auth { .. } => {
                return self.error(SmtpReply::new(502, "5.5.1", "Command not implemented"));
            }
            Request::Etrn { .. } | Request::Atrn { .. } | Request::Burl { .. } => {
                return self.error(SmtpReply::new(502, "5.5.1", "Command not implemented"));
            }
        }
        Flow::Continue
    }

    async fn message_complete(&mut self, too_large: bool) {
        let Some(transaction) = self.transaction.take() else {
            return;
        };
        let message = std::mem::take(&mut self.message);
        let started = std::time::Instant::now();
        if too_large {
            let reply = SmtpReply::new(
                552,
                "5.3.4",
                format!("Message too large: the limit is {} bytes", self.ctx.limits.max_message_size),
            );
            tracing::info!(peer = %self.peer, "message over the size limit refused");
            self.ctx
                .pipeline
                .log_unreceived(&transaction.envelope, &reply.to_string(), "message over the size limit")
                .await;
            self.ctx.metrics.transaction("too_large", reply.code, started.elapsed().as_secs_f64());
            self.push(&reply);
            return;
        }
        let disposition = self.ctx.pipeline.ingest(&transaction.envelope, &message).await;
        let reply = reply::for_disposition(&disposition);
        let outcome = match &disposition {
            Disposition::Accepted { duplicate: true, .. } => "duplicate",
            Disposition::Accepted { .. } => "accepted",
            Disposition::Dropped { .. } => "dropped",
            Disposition::Held { .. } => "held",
            Disposition::Rejected(_) => "rejected",
            Disposition::Deferred { .. } => "deferred",
            Disposition::TempFail { .. } => "tempfail",
        };
        self.ctx.metrics.transaction(outcome, reply.code, started.elapsed().as_secs_f64());
        match &disposition {
            Disposition::Accepted { thread_id, message_id, duplicate, .. } => {
                tracing::info!(thread_id, message_id, duplicate, "message accepted");
            }
            other => tracing::info!(outcome = ?other, "message not posted"),
        }
        self.push(&reply);
    }

    /// Ends the current transaction without DATA; records it when some
    /// recipient was refused, so that every refusal is in the inbound log.
    async fn end_transaction(&mut self) {
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
