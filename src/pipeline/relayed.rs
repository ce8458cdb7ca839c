//! Which client the sender checks judge (step 4's input). A message that
//! came straight from its sender's server is judged against the connection.
//! One handed on by a mail server in front of mailgate (a trusted relay,
//! any LMTP client, the `deliver` command) is judged against the client
//! that server saw, taken from the first of:
//!
//! 1. what the relay said in the session (`XFORWARD`, or `XCLIENT`);
//! 2. an `Authentication-Results` field from a verifier the admin trusts by
//!    its authserv-id (`[auth] trusted_authserv_ids`): its SPF verdict is
//!    taken as it stands (DKIM is always verified here);
//! 3. the `Received:` fields the trusted relays added, read from the top:
//!    the first client that is not itself a trusted relay.
//!
//! Nothing else is believed: from any other peer, `XFORWARD` is refused and
//! `Received:` and `Authentication-Results` fields are only text.

use crate::domain::Networks;
use std::net::IpAddr;

/// Where the client the checks judged was learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientSource {
    /// The connection itself.
    #[default]
    Connection,
    /// The connection, as a trusted proxy's PROXY header named it.
    Proxy,
    /// The relay's `XFORWARD` command.
    Xforward,
    /// The relay's `XCLIENT` command.
    Xclient,
    /// A trusted verifier's `Authentication-Results` field.
    AuthenticationResults,
    /// The `Received:` field a trusted relay added.
    Received,
    /// The client the pipe command was given (`deliver --client-address`).
    Pipe,
}

impl ClientSource {
    /// The name in the inbound log (`via=…`) and in `explain`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connection => "connection",
            Self::Proxy => "proxy",
            Self::Xforward => "xforward",
            Self::Xclient => "xclient",
            Self::AuthenticationResults => "authentication-results",
            Self::Received => "received",
            Self::Pipe => "pipe",
        }
    }

    /// A sentence for people: where the sender checks' client came from.
    pub fn describe(name: &str) -> &'static str {
        match name {
            "proxy" => "the client a trusted proxy named in its PROXY header",
            "xforward" => "the client the trusted relay named with XFORWARD",
            "xclient" => "the client the trusted proxy named with XCLIENT",
            "authentication-results" => "the SPF verdict of a trusted Authentication-Results field",
            "received" => "the client in the Received: field a trusted relay added",
            "pipe" => "the client the mail server named to the pipe command (--client-address)",
            _ => "the connection that delivered the message",
        }
    }
}

/// What a relay said about its own client in the session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToldClient {
    /// The client's address (`ADDR=`), when the relay knew it.
    pub ip: Option<IpAddr>,
    /// The name it gave in HELO (`HELO=`).
    pub helo: Option<String>,
    /// `XFORWARD` or `XCLIENT`.
    pub source: ClientSource,
}

/// How a message reached mailgate, besides the envelope.
#[derive(Debug, Clone, Default)]
pub struct Relay {
    /// It came from a trusted relay, over LMTP, or through `deliver`: what
    /// the relay saw of its client is believed.
    pub trusted: bool,
    /// The connection's address came from a trusted proxy's PROXY header.
    pub proxied: bool,
    /// What the relay told in the session.
    pub told: Option<ToldClient>,
}

/// The client the sender checks judge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedClient {
    /// Its address; `None` when only a verifier's verdict is known.
    pub ip: Option<IpAddr>,
    /// The name it gave in HELO.
    pub helo: String,
    /// Where this was learned.
    pub source: ClientSource,
    /// A trusted verifier's SPF verdict (`pass`, `fail`, …) and the
    /// `smtp.mailfrom` it judged, taken instead of checking SPF here.
    pub spf_verdict: Option<(String, Option<String>)>,
}

/// How many `Received:` fields are read from the top at most.
const MAX_HOPS: usize = 30;

/// The client to judge, or `None` when none is known (no connection
/// address: a message handed in by a tool).
pub fn checked_client(
    relay: &Relay,
    peer_ip: Option<IpAddr>,
    helo: Option<&str>,
    headers: &[(String, String)],
    trusted_relays: &Networks,
    authserv_ids: &[String],
) -> Option<CheckedClient> {
    let connection = |source| {
        Some(CheckedClient { ip: Some(peer_ip?), helo: helo.unwrap_or("").to_owned(), source, spf_verdict: None })
    };
    if !relay.trusted {
        return connection(if relay.proxied { ClientSource::Proxy } else { ClientSource::Connection });
    }
    if let Some(told) = &relay.told
        && let Some(ip) = told.ip.filter(|ip| !trusted_relays.contains(*ip))
    {
        let helo = told.helo.clone().unwrap_or_default();
        return Some(CheckedClient { ip: Some(ip), helo, source: told.source, spf_verdict: None });
    }
    if let Some((verdict, mail_from)) = trusted_spf_verdict(headers, authserv_ids) {
        return Some(CheckedClient {
            ip: None,
            helo: String::new(),
            source: ClientSource::AuthenticationResults,
            spf_verdict: Some((verdict, mail_from)),
        });
    }
    // Each field was added by the server the one above it names: only
    // while those are trusted relays is the next one credible.
    for (_, value) in headers.iter().filter(|(name, _)| name == "received").take(MAX_HOPS) {
        let Some(hop) = super::parse::received_hop(value) else { break };
        let Some(ip) = hop.ip else { break };
        if trusted_relays.contains(ip) {
            continue;
        }
        return Some(CheckedClient {
            ip: Some(ip),
            helo: hop.helo.unwrap_or_default(),
            source: ClientSource::Received,
            spf_verdict: None,
        });
    }
    // A relay that names no client (mail submitted on its own host): the
    // relay is the client.
    connection(ClientSource::Connection)
}

/// The SPF verdict of the topmost `Authentication-Results` field whose
/// authserv-id is trusted (RFC 8601), with the `smtp.mailfrom` it judged.
fn trusted_spf_verdict(headers: &[(String, String)], authserv_ids: &[String]) -> Option<(String, Option<String>)> {
    if authserv_ids.is_empty() {
        return None;
    }
    headers.iter().filter(|(name, _)| name == "authentication-results").take(MAX_HOPS).find_map(|(_, value)| {
        let (id, results) = authentication_results(value)?;
        if !authserv_ids.iter().any(|trusted| trusted.eq_ignore_ascii_case(&id)) {
            return None;
        }
        results.into_iter().find(|r| r.method == "spf").map(|r| (r.result.clone(), r.property("smtp.mailfrom")))
    })
}

/// One `method=result` of an `Authentication-Results` field, with its
/// properties (`smtp.mailfrom=…`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct MethodResult {
    method: String,
    result: String,
    properties: Vec<(String, String)>,
}

impl MethodResult {
    fn property(&self, name: &str) -> Option<String> {
        self.properties.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone())
    }
}

/// Reads an `Authentication-Results` value: its authserv-id and results.
/// Comments are dropped (nested ones too, at most 20 deep); a value over
/// 8 KiB is not read.
fn authentication_results(value: &str) -> Option<(String, Vec<MethodResult>)> {
    if value.len() > 8192 {
        return None;
    }
    let mut text = String::with_capacity(value.len());
    let (mut depth, mut quoted, mut escaped) = (0u32, false, false);
    for c in value.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' if depth == 0 => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth > 0 => {
                depth -= 1;
                text.push(' ');
                continue;
            }
            _ => {}
        }
        if depth > 20 {
            return None;
        }
        if depth == 0 && !(c == '\\' && escaped) && c != '"' {
            text.push(c);
        }
    }
    let mut statements = text.split(';');
    let id = statements.next()?.split_whitespace().next()?.to_ascii_lowercase();
    let results = statements
        .filter_map(|statement| {
            let mut words = statement.split_whitespace();
            let (method, result) = words.next()?.split_once('=')?;
            let properties =
                words.filter_map(|w| w.split_once('=')).map(|(n, v)| (n.to_owned(), v.to_owned())).collect();
            Some(MethodResult {
                method: method.split('/').next()?.to_ascii_lowercase(),
                result: result.to_ascii_lowercase(),
                properties,
            })
        })
        .collect();
    Some((id, results))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(fields: &[(&str, &str)]) -> Vec<(String, String)> {
        fields.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    fn relays() -> Networks {
        Networks::parse(&["127.0.0.0/8".to_owned(), "10.0.0.0/8".to_owned()]).unwrap()
    }

    fn trusted() -> Relay {
        Relay { trusted: true, ..Relay::default() }
    }

    #[test]
    fn the_client_is_read_from_postfix_exim_and_sendmail_received_fields() {
        let cases = [
            (
                "from mail.customer.example (mail.customer.example [203.0.113.5])\r\n\tby mx.desk.example (Postfix) with ESMTPS id 4Q2x; Mon, 7 Dec 2026 10:00:00 +0000",
                "203.0.113.5",
                "mail.customer.example",
            ),
            (
                "from unknown (HELO relay.customer.example) ([203.0.113.6]) by mx (Postfix) with ESMTP",
                "203.0.113.6",
                "relay.customer.example",
            ),
            (
                "from [203.0.113.7] (helo=laptop.customer.example)\r\n\tby mx.desk.example with esmtp (Exim 4.96)\r\n\tid 1abc; Mon, 07 Dec 2026 10:00:00 +0000",
                "203.0.113.7",
                "laptop.customer.example",
            ),
            (
                "from mail.customer.example ([203.0.113.8] helo=mail.customer.example) by mx.desk.example with esmtps (Exim 4.96) id 1abd",
                "203.0.113.8",
                "mail.customer.example",
            ),
            (
                "from mail.customer.example (mail.customer.example [203.0.113.9]) by mx.desk.example (8.17.1/8.17.1) with ESMTP id 2B7A; Mon, 7 Dec 2026 10:00:00 GMT",
                "203.0.113.9",
                "mail.customer.example",
            ),
            (
                "from mail.customer.example (mail.customer.example [IPv6:2001:db8::25]) by mx.desk.example (Postfix) with ESMTPS id 4Q2y",
                "2001:db8::25",
                "mail.customer.example",
            ),
        ];
        for (field, ip, helo) in cases {
            let client = checked_client(
                &trusted(),
                Some("127.0.0.1".parse().unwrap()),
                Some("mx"),
                &headers(&[("received", field)]),
                &relays(),
                &[],
            )
            .unwrap();
            assert_eq!(client.ip, Some(ip.parse().unwrap()), "{field}");
            assert_eq!(client.helo, helo, "{field}");
            assert_eq!(client.source, ClientSource::Received);
        }
    }

    #[test]
    fn only_fields_added_by_trusted_relays_are_believed() {
        let fields = headers(&[
            ("received", "from localhost (localhost [127.0.0.1]) by mx (Postfix) with ESMTP id A"),
            (
                "received",
                "from mail.customer.example (mail.customer.example [203.0.113.5]) by mx (Postfix) with ESMTPS id B",
            ),
            ("received", "from forged.example (forged.example [198.51.100.66]) by mail.customer.example with SMTP"),
        ]);
        let peer = Some("127.0.0.1".parse().unwrap());
        let client = checked_client(&trusted(), peer, Some("mx"), &fields, &relays(), &[]).unwrap();
        assert_eq!(
            client.ip,
            Some("203.0.113.5".parse().unwrap()),
            "walks past the trusted hop, stops at the first other"
        );
        // From a peer that is not trusted, nothing in the message counts.
        let untrusted = Relay::default();
        let attacker = Some("198.51.100.9".parse().unwrap());
        let client =
            checked_client(&untrusted, attacker, Some("evil"), &fields, &relays(), &["mx.google.com".into()]).unwrap();
        assert_eq!((client.ip, client.source), (attacker, ClientSource::Connection));
        // A top field that names no client ends the walk: nothing below it is credible.
        let broken = headers(&[
            ("received", "by mx (Postfix, from userid 0) id C"),
            ("received", "from forged.example (forged.example [198.51.100.66]) by mx with SMTP"),
        ]);
        let client = checked_client(&trusted(), peer, Some("mx"), &broken, &relays(), &[]).unwrap();
        assert_eq!(client.ip, peer);
        assert_eq!(client.source, ClientSource::Connection);
    }

    #[test]
    fn xforward_comes_first_and_a_trusted_verifier_before_received() {
        let fields = headers(&[
            ("authentication-results", "evil.example; spf=pass smtp.mailfrom=ceo@customer.example"),
            (
                "authentication-results",
                "mx.google.com (the verifier);\r\n spf=pass (google.com: domain of a@customer.example designates 203.0.113.5 as permitted sender) smtp.mailfrom=a@customer.example;\r\n dkim=pass header.i=@customer.example",
            ),
            ("received", "from mail.customer.example (mail.customer.example [203.0.113.5]) by mx (Postfix)"),
        ]);
        let peer = Some("10.1.1.1".parse().unwrap());
        let told = ToldClient {
            ip: Some("203.0.113.77".parse().unwrap()),
            helo: Some("h".into()),
            source: ClientSource::Xforward,
        };
        let relay = Relay { trusted: true, told: Some(told), proxied: false };
        let client = checked_client(&relay, peer, None, &fields, &relays(), &["mx.google.com".into()]).unwrap();
        assert_eq!((client.ip, client.source), (Some("203.0.113.77".parse().unwrap()), ClientSource::Xforward));
        let client = checked_client(&trusted(), peer, None, &fields, &relays(), &["mx.google.com".into()]).unwrap();
        assert_eq!(client.source, ClientSource::AuthenticationResults);
        assert_eq!(client.spf_verdict, Some(("pass".into(), Some("a@customer.example".into()))));
        // The foreign field (evil.example) is never read, whatever it says.
        let client = checked_client(&trusted(), peer, None, &fields, &relays(), &["evil.example".into()]).unwrap();
        assert_eq!(client.spf_verdict, Some(("pass".into(), Some("ceo@customer.example".into()))), "only when trusted");
        let client = checked_client(&trusted(), peer, None, &fields, &relays(), &[]).unwrap();
        assert_eq!(client.source, ClientSource::Received);
    }

    #[test]
    fn authentication_results_comments_and_versions() {
        let (id, results) = authentication_results(
            "mx.example.org 1; spf=fail (a (nested) comment) smtp.mailfrom=\"x\"@a.example; dkim=none",
        )
        .unwrap();
        assert_eq!(id, "mx.example.org");
        assert_eq!(results[0].result, "fail");
        assert_eq!(results[1].method, "dkim");
        assert!(
            authentication_results(&"(".repeat(50)).is_none()
                || authentication_results(&"(".repeat(50)).unwrap().1.is_empty()
        );
    }
}
