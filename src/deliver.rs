//! One message handed in by a pipe command (`mailgate deliver`: Postfix's
//! `pipe(8)`, Exim's `pipe` transport, an alias or `.forward`): read from
//! standard input, decided and stored through the same pipeline as the SMTP
//! and LMTP listeners, with the answer as an exit code the mail server
//! reads (sysexits): `0` stored or held, `67` no such address, `77` refused
//! by policy, `75` try again later. Anything unexpected is `75`: a mail
//! server bounces for good on any other code, and mail must never be lost
//! because mailgate was misconfigured or down for a moment.

use crate::config::Config;
use crate::domain::reply::{self, SmtpReply};
use crate::pipeline::relayed::{ClientSource, Relay, ToldClient};
use crate::pipeline::{Disposition, Envelope, Pipeline, RcptRefusal};
use std::io::Read;

/// Stored, or held for an admin (`EX_OK`).
pub const EX_OK: u8 = 0;
/// No such address, or a reply address that does not verify (`EX_NOUSER`).
pub const EX_NOUSER: u8 = 67;
/// Temporary: try again later (`EX_TEMPFAIL`).
pub const EX_TEMPFAIL: u8 = 75;
/// Refused by policy: a new chat by email, a DMARC failure, a sender who
/// may not write there, a message too large (`EX_NOPERM`).
pub const EX_NOPERM: u8 = 77;

/// The prefix of the settings that count pipe deliveries by outcome (the
/// server's metrics read them: `deliver` runs in a process of its own).
pub const PIPE_COUNTS: &str = "pipe_deliveries.";

/// The envelope a pipe command was given.
#[derive(Debug, Clone, Default)]
pub struct PipeEnvelope {
    /// The envelope sender (`${sender}`; empty for a bounce).
    pub sender: String,
    /// The one envelope recipient (`${recipient}`).
    pub recipient: String,
    /// The client the mail server took the message from (`${client_address}`).
    pub client_address: Option<std::net::IpAddr>,
    /// The name that client gave in HELO (`${client_helo}`).
    pub client_helo: Option<String>,
}

/// What became of the message: the exit code and the one line for stderr
/// (the enhanced status code and the reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The sysexits code.
    pub code: u8,
    /// `5.1.1 No such mailbox …`.
    pub line: String,
}

impl Outcome {
    fn of(code: u8, reply: &SmtpReply) -> Self {
        Self { code, line: format!("{} {}", reply.enhanced, reply.text) }
    }

    /// A temporary failure, with why.
    pub fn temporary(why: &str) -> Self {
        Self { code: EX_TEMPFAIL, line: format!("4.3.0 {why}; the mail server will try again") }
    }
}

/// Reads at most `limit` bytes and one more from `input` (to tell a message
/// over the limit), with line ends made CRLF as SMTP would carry them (a
/// pipe hands on the message with bare LF).
pub fn read_message(input: &mut impl Read, limit: usize) -> std::io::Result<Vec<u8>> {
    let mut raw = Vec::new();
    input.take(limit as u64 + 1).read_to_end(&mut raw)?;
    let bare = raw.iter().enumerate().filter(|&(i, &b)| b == b'\n' && (i == 0 || raw[i - 1] != b'\r')).count();
    if bare == 0 {
        return Ok(raw);
    }
    let mut crlf = Vec::with_capacity(raw.len() + bare);
    for (i, &b) in raw.iter().enumerate() {
        if b == b'\n' && (i == 0 || raw[i - 1] != b'\r') {
            crlf.push(b'\r');
        }
        crlf.push(b);
    }
    Ok(crlf)
}

/// Decides and stores `raw` for `pipe` as the server would: the recipient
/// checked as at RCPT, the message as after DATA. The relay that ran the
/// command is trusted: the sender checks judge the client it names, else
/// its own `Received:` field.
pub async fn deliver(pipeline: &Pipeline, config: &Config, pipe: &PipeEnvelope, raw: &[u8]) -> Outcome {
    let helo = pipe.client_helo.clone();
    let mut envelope = Envelope {
        peer: "pipe".to_owned(),
        peer_ip: Some(std::net::IpAddr::from([127, 0, 0, 1])),
        helo: helo.clone(),
        mail_from: pipe.sender.clone(),
        relay: Relay {
            trusted: true,
            proxied: false,
            told: pipe.client_address.map(|ip| ToldClient { ip: Some(ip), helo, source: ClientSource::Pipe }),
        },
        ..Envelope::default()
    };
    if let Err(refusal) = pipeline.add_recipient(&mut envelope, pipe.recipient.clone()).await {
        let reply = reply::for_rcpt_refusal(&refusal, &config.domain);
        pipeline.log_unreceived(&envelope, &reply.to_string(), "recipient refused").await;
        let code = match refusal {
            RcptRefusal::Unavailable => EX_TEMPFAIL,
            _ => EX_NOUSER,
        };
        return Outcome::of(code, &reply);
    }
    if raw.len() > config.limits.max_message_size {
        let reply = SmtpReply::new(
            552,
            "5.3.4",
            format!("Message too large: the limit is {} bytes", config.limits.max_message_size),
        );
        pipeline.log_unreceived(&envelope, &reply.to_string(), "message over the size limit").await;
        return Outcome::of(EX_NOPERM, &reply);
    }
    let disposition = pipeline.ingest(&envelope, raw).await;
    let label = match &disposition {
        Disposition::Deferred { .. } | Disposition::TempFail { .. } => "temporary",
        other => other.label(),
    };
    // A count for the metrics: never worth keeping the mail server waiting
    // (a stalled database is why a delivery was turned away in the first place).
    let key = format!("{PIPE_COUNTS}{label}");
    let counting = pipeline.store().count_up(&key);
    match tokio::time::timeout(std::time::Duration::from_secs(2), counting).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(error = %error, "could not count a pipe delivery"),
        Err(_) => tracing::warn!("the database did not take the pipe delivery's count within 2 s; not counted"),
    }
    let reply = reply::for_disposition(&disposition);
    let code = match disposition {
        Disposition::Accepted { .. } | Disposition::Dropped { .. } | Disposition::Held { .. } => EX_OK,
        Disposition::Rejected(_) => EX_NOPERM,
        Disposition::Deferred { .. } | Disposition::TempFail { .. } => EX_TEMPFAIL,
    };
    Outcome::of(code, &reply)
}

#[cfg(test)]
mod tests {
    use super::read_message;

    #[test]
    fn bare_line_ends_become_crlf_and_the_limit_reads_one_byte_more() {
        let read = |input: &[u8], limit| read_message(&mut &input[..], limit).unwrap();
        assert_eq!(read(b"A: b\n\nbody\n", 100), b"A: b\r\n\r\nbody\r\n");
        assert_eq!(read(b"A: b\r\n\r\nx\r\n", 100), b"A: b\r\n\r\nx\r\n");
        assert_eq!(read(b"\nx\r\ny\n", 100), b"\r\nx\r\ny\r\n");
        assert_eq!(read(&[b'x'; 50], 10).len(), 11);
    }
}
