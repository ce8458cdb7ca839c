//! One handler per SMTP verb that moves a transaction along (as stalwart's
//! `inbound/{ehlo,mail,rcpt,data}.rs`): EHLO and HELO, MAIL, RCPT, DATA,
//! RSET and STARTTLS. `Session::command` dispatches to them; each answers
//! into the session's output and says whether the session goes on.

use super::{Envelope, Flow, Mode, Session, Transaction, declared_size, needs_smtputf8};
use crate::domain::reply::{self, SmtpReply};
use smtp_proto::request::receiver::DataReceiver;
use smtp_proto::{MailFrom, RcptTo};

impl Session {
    /// `EHLO` (and, on LMTP, `LHLO`): a new start, and the extensions we
    /// offer (`XFORWARD` and `XCLIENT` to a trusted relay only).
    pub(super) async fn ehlo(&mut self, host: String) -> Flow {
        self.end_transaction().await;
        self.helo = Some(host);
        let mut lines = vec![
            format!("{} greets you", self.ctx.hostname),
            "PIPELINING".to_owned(),
            format!("SIZE {}", self.ctx.limits.max_message_size),
            "8BITMIME".to_owned(),
            "ENHANCEDSTATUSCODES".to_owned(),
            "SMTPUTF8".to_owned(),
        ];
        if self.ctx.tls.is_some() && !self.tls_active && !self.ctx.lmtp {
            lines.insert(1, "STARTTLS".to_owned());
        }
        if self.trusted {
            lines.push("XFORWARD NAME ADDR PROTO HELO SOURCE".to_owned());
            if !self.ctx.lmtp {
                lines.push("XCLIENT NAME ADDR PROTO HELO".to_owned());
            }
        }
        for (i, line) in lines.iter().enumerate() {
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            self.out.extend_from_slice(format!("250{sep}{line}\r\n").as_bytes());
        }
        Flow::Continue
    }

    /// `HELO`: a new start, without extensions.
    pub(super) async fn helo(&mut self, host: String) -> Flow {
        self.end_transaction().await;
        self.helo = Some(host);
        self.out.extend_from_slice(format!("250 {}\r\n", self.ctx.hostname).as_bytes());
        Flow::Continue
    }

    /// `MAIL FROM`: a transaction begins, unless the message would be too
    /// large or the address needs SMTPUTF8 the client did not ask for.
    pub(super) fn mail(&mut self, from: MailFrom<String>, line: &[u8]) -> Flow {
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
        // What XCLIENT said came from a trusted proxy: it stands for the
        // checks even when the client it named is not itself trusted.
        let envelope = Envelope {
            peer: self.peer_name.clone(),
            peer_ip: Some(self.peer.ip()),
            helo: self.helo.clone(),
            mail_from: from.address,
            relay: crate::pipeline::relayed::Relay {
                trusted: self.trusted || self.xclient.is_some(),
                proxied: self.proxied,
                told: self.xforward.clone().or_else(|| self.xclient.clone()),
            },
            ..Envelope::default()
        };
        // A short random id that ties together the log lines of one transaction.
        let span = tracing::info_span!("transaction", id = %crate::domain::token::random_hex(6));
        span.in_scope(|| tracing::debug!(from = %envelope.mail_from, "transaction begins"));
        self.transaction = Some(Transaction { envelope, smtputf8, span });
        self.answer(SmtpReply::new(250, "2.1.0", "Sender OK"))
    }

    /// `RCPT TO`: the recipient checked by the pipeline; a forged or damaged
    /// reply address is answered later and later (the tarpit).
    pub(super) async fn rcpt(&mut self, to: RcptTo<String>) -> Flow {
        let Some(transaction) = &mut self.transaction else {
            return self.error(SmtpReply::new(503, "5.5.1", "Send MAIL FROM first"));
        };
        if !transaction.smtputf8 && !to.address.is_ascii() {
            return self.error(needs_smtputf8());
        }
        if transaction.envelope.recipients.len() >= self.ctx.limits.max_recipients {
            // Not the client's error (RFC 5321 §4.5.3.1.10): a pipelining
            // server sends the rest in another transaction.
            return self.answer(SmtpReply::new(452, "4.5.3", "Too many recipients for one message"));
        }
        let address = to.address;
        let refusal = match self.ctx.pipeline.add_recipient(&mut transaction.envelope, address.clone()).await {
            Ok(()) => return self.answer(SmtpReply::new(250, "2.1.5", "Recipient OK")),
            Err(refusal) => refusal,
        };
        self.ctx.metrics.recipient_refused(refusal.label());
        // Guessing is slowed for the guesser: behind a relay, the client it
        // named (a relay that names none is not slowed: that would slow all
        // of its mail).
        let guesser = (!self.trusted || self.xforward.is_some() || self.xclient.is_some()).then(|| self.client_ip());
        // An expired or retired address was genuine once: its sender is no guesser.
        if matches!(&refusal, crate::pipeline::RcptRefusal::BadToken(e)
            if !matches!(e, crate::domain::TokenError::Expired | crate::domain::TokenError::Retired))
            && let Some(guesser) = guesser
        {
            let wait = self.ctx.penalty(guesser);
            if !wait.is_zero() {
                tracing::info!(peer = %self.peer, wait_ms = wait.as_millis() as u64, "bad reply token: slowing down");
                tokio::time::sleep(wait).await;
            }
        }
        let reply = reply::for_rcpt_refusal(&refusal, &self.ctx.domain);
        tracing::info!(rcpt = %address, why = %refusal, reply = %reply, "recipient refused");
        // A trusted relay carries many senders' mail on one connection: their
        // refused recipients are not its errors.
        if self.trusted { self.answer(reply) } else { self.error(reply) }
    }

    /// `DATA`: the message follows, when some recipient was accepted.
    pub(super) fn data(&mut self) -> Flow {
        let Some(transaction) = &self.transaction else {
            return self.error(SmtpReply::new(503, "5.5.1", "Send MAIL FROM first"));
        };
        if transaction.envelope.recipients.is_empty() {
            // RFC 2033 §4.2: LMTP answers 503 here.
            let code = if self.ctx.lmtp { 503 } else { 554 };
            return self.error(SmtpReply::new(code, "5.5.1", "No valid recipients"));
        }
        self.message.clear();
        self.mode = Mode::Data { receiver: DataReceiver::new(), too_large: false };
        self.answer(SmtpReply::new(354, "2.0.0", "Start mail input; end with <CRLF>.<CRLF>"))
    }

    /// `RSET`: the transaction is forgotten (and logged if it refused
    /// someone), and what XFORWARD said with it.
    pub(super) async fn rset(&mut self) -> Flow {
        self.end_transaction().await;
        self.xforward = None;
        self.answer(SmtpReply::new(250, "2.0.0", "Reset OK"))
    }

    /// `STARTTLS`: the session continues over TLS, when a certificate is
    /// configured and no transaction is open.
    pub(super) fn starttls(&mut self) -> Flow {
        if self.ctx.tls.is_none() {
            return self.error(SmtpReply::new(502, "5.5.1", "Command not implemented"));
        }
        if self.tls_active {
            return self.error(SmtpReply::new(503, "5.5.1", "TLS is already active"));
        }
        if self.transaction.is_some() {
            return self.error(SmtpReply::new(503, "5.5.1", "STARTTLS is not allowed in a mail transaction"));
        }
        self.push(&SmtpReply::new(220, "2.0.0", "Ready to start TLS"));
        Flow::StartTls
    }
}
