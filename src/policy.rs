//! A Postfix policy service (`check_policy_service`, SMTPD_POLICY_README):
//! Postfix asks at RCPT time, and refuses there what mailgate would refuse,
//! so that it never accepts a message it must then bounce (backscatter).
//!
//! Each request is `name=value` lines ending with an empty line; each answer
//! is one `action=…` line and an empty line; a connection carries many.
//! The answers, in the SMTP answers' words:
//!
//! - `REJECT 5.1.1 …` (or the refusal's own status) for an address of the
//!   desk's domain that mailgate refuses at RCPT: no such mailbox, a forged,
//!   damaged or expired reply address;
//! - `DEFER_IF_PERMIT 4.3.0 …` when the database cannot be asked;
//! - `DUNNO` otherwise: any other stage, another domain (Postfix's own
//!   restrictions decide those), and every address mailgate takes. The
//!   support address is one of those: mail to it may be a reply that finds
//!   its conversation by its references, so only the message can decide;
//!   and answering by who the sender is would tell anyone who asks which
//!   addresses are the desk's customers;
//! - with `[policy] refuse_support_address`, `REJECT 5.7.1 A chat can not be
//!   started by email …` for every message to the support address, whoever
//!   sends it (a known envelope sender also gets the refusal notice, at most
//!   once an hour).

use crate::domain::reply::{self, SmtpReply};
use crate::metrics::Metrics;
use crate::pipeline::{Disposition, Envelope, Pipeline, RcptRefusal, RecipientTarget};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A request line longer than this ends the connection.
const MAX_LINE: usize = 4096;
/// Attributes in one request at most.
const MAX_ATTRIBUTES: usize = 200;
/// Postfix closes idle policy connections after 300 s; we wait a little longer.
const IDLE: std::time::Duration = std::time::Duration::from_secs(330);
/// How long a client may take to read an answer.
const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Connections served at once; more are closed at once (Postfix opens a
/// few per smtpd process and reuses them).
const MAX_CONNECTIONS: usize = 256;

/// What the service needs: the pipeline (its recipient checks and store),
/// our domain for the answers' words, and the metrics when it runs inside
/// the server.
#[derive(Debug, Clone)]
pub struct PolicyService {
    /// Checks recipients as the SMTP session does at RCPT.
    pub pipeline: Pipeline,
    /// Our mail domain.
    pub domain: String,
    /// Counts the answers (inside `serve`).
    pub metrics: Option<Arc<Metrics>>,
    /// Refuse all mail to the support address at RCPT.
    pub refuse_support: bool,
}

/// One answer: the `action=` text, and its labels for the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// What follows `action=`.
    pub action: String,
    /// `reject`, `defer_if_permit` or `dunno`.
    pub kind: &'static str,
    /// Why: a recipient refusal's name, `new_chat`, `accepted`, `not_rcpt`.
    pub reason: &'static str,
}

impl Answer {
    fn dunno(reason: &'static str) -> Self {
        Self { action: "DUNNO".to_owned(), kind: "dunno", reason }
    }

    fn reject(reply: &SmtpReply, reason: &'static str) -> Self {
        Self { action: format!("REJECT {} {}", reply.enhanced, one_line(&reply.text)), kind: "reject", reason }
    }

    fn defer(reason: &'static str) -> Self {
        Self {
            action: "DEFER_IF_PERMIT 4.3.0 mailgate cannot check this address right now; please try again later"
                .to_owned(),
            kind: "defer_if_permit",
            reason,
        }
    }
}

fn one_line(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

impl PolicyService {
    /// The answer to one request's attributes.
    pub async fn answer(&self, attributes: &[(String, String)]) -> Answer {
        let get = |name: &str| attributes.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        if get("protocol_state").is_some_and(|state| !state.eq_ignore_ascii_case("RCPT")) {
            return Answer::dunno("not_rcpt");
        }
        let Some(recipient) = get("recipient").filter(|r| !r.is_empty()) else {
            return Answer::dunno("not_rcpt");
        };
        let mut envelope = Envelope { mail_from: get("sender").unwrap_or("").to_owned(), ..Envelope::default() };
        match self.pipeline.add_recipient(&mut envelope, recipient.to_owned()).await {
            Err(RcptRefusal::Unavailable) => Answer::defer("unavailable"),
            Err(RcptRefusal::RelayDenied) => Answer::dunno("other_domain"),
            Err(refusal) => Answer::reject(&reply::for_rcpt_refusal(&refusal, &self.domain), refusal.label()),
            Ok(()) if self.refuse_support && envelope.recipients[0].1 == RecipientTarget::Support => {
                self.new_chat_notice(&envelope.mail_from).await;
                let refusal = Disposition::Rejected(crate::pipeline::Refusal::NoNewChat { emergency: None });
                Answer::reject(&reply::for_disposition(&refusal), "new_chat")
            }
            Ok(()) => Answer::dunno("accepted"),
        }
    }

    /// The refusal notice for a new chat by email, to `sender` when the
    /// directory knows them and they had none in the last hour (as after a
    /// message). Best effort: the answer to Postfix does not wait on it.
    async fn new_chat_notice(&self, sender: &str) {
        let store = self.pipeline.store();
        let Ok(Some(user)) = store.user_by_email(&sender.to_ascii_lowercase()).await else { return };
        let hour_ago = crate::store::now_ms() - 3600 * 1000;
        if store.notice_sent_since(&user.email, hour_ago).await.unwrap_or(true) {
            return;
        }
        let notice = crate::store::NewOutbox {
            kind: "refusal_no_new_chat".to_owned(),
            thread_id: None,
            recipient_id: Some(user.id),
            to_address: user.email,
            context: serde_json::json!({ "subject": "", "reason": "" }),
        };
        if let Err(error) = store.enqueue(&notice, None).await {
            tracing::warn!(error = %error, "policy service: could not queue a refusal notice");
        }
    }

    /// Answers the requests of one connection until it closes or idles.
    pub async fn session<S: AsyncRead + AsyncWrite + Unpin>(&self, stream: S, shutdown: CancellationToken) {
        let mut stream = BufReader::new(stream);
        loop {
            let request = tokio::select! {
                request = tokio::time::timeout(IDLE, read_request(&mut stream)) => request,
                () = shutdown.cancelled() => return,
            };
            let Ok(Some(attributes)) = request else { return };
            let answer = self.answer(&attributes).await;
            if let Some(metrics) = &self.metrics {
                metrics.policy_answer(answer.kind, answer.reason);
            }
            tracing::debug!(action = %answer.action, "policy answer");
            let text = format!("action={}\n\n", answer.action);
            let write = tokio::time::timeout(WRITE_TIMEOUT, stream.get_mut().write_all(text.as_bytes()));
            tokio::select! {
                written = write => if !matches!(written, Ok(Ok(()))) { return },
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// Takes connections on `listener` until `shutdown`.
    pub async fn serve(self, listener: PolicyListener, shutdown: CancellationToken, tasks: TaskTracker) {
        let service = Arc::new(self);
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = shutdown.cancelled() => break,
            };
            let connection = match accepted {
                Ok(connection) => connection,
                Err(error) => {
                    tracing::warn!(error = %error, "policy service: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Past the cap, the connection is closed (dropped) at once.
            let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                tracing::warn!("policy service: {MAX_CONNECTIONS} connections at once; closing another");
                continue;
            };
            let (service, shutdown) = (Arc::clone(&service), shutdown.clone());
            tasks.spawn(async move {
                match connection {
                    Connection::Tcp(stream) => service.session(stream, shutdown).await,
                    Connection::Unix(stream) => service.session(stream, shutdown).await,
                }
                drop(slot);
            });
        }
        if let PolicyListener::Unix(_, path) = &listener {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Where the policy service listens: TCP, or a unix socket (with its path).
#[derive(Debug)]
pub enum PolicyListener {
    /// A TCP port.
    Tcp(tokio::net::TcpListener),
    /// A unix socket, removed at a clean stop.
    Unix(tokio::net::UnixListener, std::path::PathBuf),
}

/// One accepted connection.
enum Connection {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

impl PolicyListener {
    async fn accept(&self) -> std::io::Result<Connection> {
        match self {
            Self::Tcp(listener) => listener.accept().await.map(|(s, _)| Connection::Tcp(s)),
            Self::Unix(listener, _) => listener.accept().await.map(|(s, _)| Connection::Unix(s)),
        }
    }

    /// Binds `addr` (a unix socket with mode 0660, a stale one replaced).
    pub async fn bind(addr: &crate::config::ListenAddr) -> anyhow::Result<Self> {
        use anyhow::Context;
        Ok(match addr {
            crate::config::ListenAddr::Tcp(addr) => Self::Tcp(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding the policy service to {addr}"))?,
            ),
            crate::config::ListenAddr::Unix(path) => {
                Self::Unix(crate::smtp::listener::bind_unix_socket(path, "policy_listen")?, path.clone())
            }
        })
    }

    /// The TCP address bound, when on TCP.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            Self::Tcp(listener) => listener.local_addr().ok(),
            Self::Unix(..) => None,
        }
    }
}

/// Reads one request: its attributes, `None` at the end of the connection
/// or on a request past the limits.
async fn read_request<R: tokio::io::AsyncBufRead + Unpin>(reader: &mut R) -> Option<Vec<(String, String)>> {
    let mut attributes = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        let read =
            tokio::io::AsyncReadExt::take(&mut *reader, MAX_LINE as u64 + 1).read_until(b'\n', &mut line).await.ok()?;
        if read == 0 || line.len() > MAX_LINE || !line.ends_with(b"\n") {
            return None;
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        if text.is_empty() {
            return Some(attributes);
        }
        if attributes.len() >= MAX_ATTRIBUTES {
            return None;
        }
        let (name, value) = text.split_once('=')?;
        attributes.push((name.trim().to_ascii_lowercase(), value.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::read_request;

    #[tokio::test]
    async fn requests_are_read_to_their_empty_line_and_bounded() {
        let mut input: &[u8] = b"request=smtpd_access_policy\nprotocol_state=RCPT\nrecipient=a@b\n\nrequest=x\n\n";
        let first = read_request(&mut input).await.unwrap();
        assert_eq!(first.len(), 3);
        assert_eq!(first[2], ("recipient".to_owned(), "a@b".to_owned()));
        assert_eq!(read_request(&mut input).await.unwrap().len(), 1);
        assert!(read_request(&mut input).await.is_none(), "the end");
        let long = format!("recipient={}\n\n", "x".repeat(5000));
        assert!(read_request(&mut long.as_bytes()).await.is_none());
        let many = "a=b\n".repeat(300) + "\n";
        assert!(read_request(&mut many.as_bytes()).await.is_none());
        assert!(read_request(&mut &b"no equals sign\n\n"[..]).await.is_none());
    }
}
