//! `XFORWARD` and `XCLIENT`, Postfix's commands by which a mail server (or
//! proxy) in front of mailgate names the client it took the message from.
//! Accepted only from a trusted relay (`[auth] trusted_relays`) and on
//! LMTP; anyone else is refused `550 5.7.0`, and what they claim changes
//! nothing. smtp-proto does not know these verbs: the session hands their
//! raw line here.

use super::{Flow, Session, ToldClient};
use crate::domain::reply::SmtpReply;
use crate::pipeline::relayed::ClientSource;

/// The longest attribute value kept (a host name, an address).
const MAX_VALUE: usize = 255;

impl Session {
    /// Answers `line` when it is an `XFORWARD` or `XCLIENT` command;
    /// `None` when it is neither (an unknown command).
    pub(super) fn relay_command(&mut self, line: &[u8]) -> Option<Flow> {
        let text = std::str::from_utf8(line).ok()?.trim_end_matches(['\r', '\n']);
        let (verb, rest) = text.split_once(' ').unwrap_or((text, ""));
        let source = match verb.to_ascii_uppercase().as_str() {
            "XFORWARD" => ClientSource::Xforward,
            "XCLIENT" => ClientSource::Xclient,
            _ => return None,
        };
        self.commands += 1;
        if !self.trusted {
            return Some(self.error(SmtpReply::new(
                550,
                "5.7.0",
                format!("{verb} is accepted only from a trusted relay ([auth] trusted_relays)"),
            )));
        }
        if source == ClientSource::Xclient && self.ctx.lmtp {
            return Some(self.error(SmtpReply::new(502, "5.5.1", "XCLIENT is not offered on LMTP; use XFORWARD")));
        }
        if self.transaction.is_some() {
            return Some(self.error(SmtpReply::new(503, "5.5.1", format!("{verb} must come before MAIL FROM"))));
        }
        let attributes = match attributes(rest) {
            Ok(attributes) if !attributes.is_empty() => attributes,
            Ok(_) => return Some(self.error(SmtpReply::new(501, "5.5.4", format!("Syntax: {verb} NAME=VALUE ...")))),
            Err(why) => return Some(self.error(SmtpReply::new(501, "5.5.4", why))),
        };
        let slot = match source {
            ClientSource::Xforward => &mut self.xforward,
            _ => &mut self.xclient,
        };
        let told = slot.get_or_insert_with(|| ToldClient { source, ..ToldClient::default() });
        for (name, value) in attributes {
            match (name.as_str(), value) {
                ("ADDR", value) => told.ip = value.and_then(|v| parse_ip(&v)),
                ("HELO", value) => told.helo = value,
                _ => {}
            }
        }
        if source == ClientSource::Xforward {
            return Some(self.answer(SmtpReply::new(250, "2.0.0", "Ok")));
        }
        // XCLIENT starts the session again as the named client (Postfix's
        // semantics): a new greeting, and EHLO again; from now on the session
        // is that client's, trusted only if it is itself a trusted relay.
        self.helo = None;
        self.xforward = None;
        let named = self.xclient.as_ref().and_then(|told| told.ip).unwrap_or(self.peer.ip());
        self.trusted = self.ctx.trusted_relays.contains(named);
        let greeting = self.greeting();
        self.out.extend_from_slice(greeting.as_bytes());
        Some(Flow::Continue)
    }
}

/// `NAME=VALUE` pairs, names upper-cased, values decoded from xtext;
/// Postfix's `[UNAVAILABLE]` and `[TEMPUNAVAIL]` read as no value.
fn attributes(text: &str) -> Result<Vec<(String, Option<String>)>, String> {
    text.split_ascii_whitespace()
        .map(|pair| {
            let (name, value) = pair.split_once('=').ok_or_else(|| format!("Bad attribute {pair:.40}: NAME=VALUE"))?;
            let value = xtext_decode(value).ok_or_else(|| format!("Bad value of {name:.40}"))?;
            let value = match value.as_str() {
                "[UNAVAILABLE]" | "[TEMPUNAVAIL]" | "" => None,
                _ if value.len() > MAX_VALUE => return Err(format!("The value of {name:.40} is too long")),
                _ => Some(value),
            };
            Ok((name.to_ascii_uppercase(), value))
        })
        .collect()
}

/// Decodes xtext (RFC 3461 §4: `+HH` for a byte); `None` when malformed
/// or not UTF-8.
fn xtext_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'+' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().filter(|v| !v.chars().any(char::is_control))
}

/// An `ADDR=` value: `192.0.2.1`, `IPv6:2001:db8::1` or `2001:db8::1`.
fn parse_ip(value: &str) -> Option<std::net::IpAddr> {
    let value = value.strip_prefix("IPv6:").or_else(|| value.strip_prefix("ipv6:")).unwrap_or(value);
    value.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::{attributes, parse_ip, xtext_decode};

    #[test]
    fn postfix_attributes_are_read_with_xtext_and_unavailable_values() {
        let read =
            attributes("NAME=mail.customer.example ADDR=IPv6:2001:db8::5 HELO=[UNAVAILABLE] proto=ESMTP").unwrap();
        assert_eq!(read[0], ("NAME".to_owned(), Some("mail.customer.example".to_owned())));
        assert_eq!(parse_ip(read[1].1.as_deref().unwrap()), Some("2001:db8::5".parse().unwrap()));
        assert_eq!(read[2].1, None);
        assert_eq!(read[3].0, "PROTO");
        assert_eq!(xtext_decode("a+2Bb").as_deref(), Some("a+b"));
        assert_eq!(xtext_decode("a+0Ab"), None, "no control characters");
        assert_eq!(xtext_decode("a+2"), None);
        assert!(attributes("ADDR").is_err());
        assert!(attributes(&format!("HELO={}", "x".repeat(300))).is_err());
    }
}
