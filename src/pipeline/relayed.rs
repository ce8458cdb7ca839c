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
//! 3. the topmost `Received:` field, the one the relay that handed the
//!    message on added: the client it names, as it stands.
//!
//! Nothing else is believed: from any other peer, `XFORWARD` is refused and
//! `Received:` and `Authentication-Results` fields are only text.

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
    authserv_ids: &[String],
) -> Option<CheckedClient> {
    let connection = |source| {
        Some(CheckedClient { ip: Some(peer_ip?), helo: helo.unwrap_or("").to_owned(), source, spf_verdict: None })
    };
    if !relay.trusted {
        return connection(if relay.proxied { ClientSource::Proxy } else { ClientSource::Connection });
    }
    // What the relay said is taken as it stands, even when it names a host
    // that is itself trusted (mail submitted on the relay's own host is
    // judged for that host, never for what its Received: fields claim).
    if let Some(told) = &relay.told
        && let Some(ip) = told.ip
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
    // Only the topmost field is the trusted relay's own: it names the client
    // the relay took the message from. Anything below was written by that
    // client, whoever it is.
    if let Some((_, value)) = headers.iter().find(|(name, _)| name == "received")
        && let Some(hop) = super::parse::received_hop(value)
        && let Some(ip) = hop.ip
    {
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
/// authserv-id is trusted (RFC 8601), with the `smtp.mailfrom` it judged;
/// none when that field has no SPF result (an older field is never read:
/// it may be the sender's own).
fn trusted_spf_verdict(headers: &[(String, String)], authserv_ids: &[String]) -> Option<(String, Option<String>)> {
    if authserv_ids.is_empty() {
        return None;
    }
    let (_, results) = headers
        .iter()
        .filter(|(name, _)| name == "authentication-results")
        .take(MAX_HOPS)
        .filter_map(|(_, value)| authentication_results(value))
        .find(|(id, _)| authserv_ids.iter().any(|trusted| trusted.eq_ignore_ascii_case(id)))?;
    results.into_iter().find(|r| r.method == "spf").map(|r| (r.result.clone(), r.property("smtp.mailfrom")))
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
/// The authserv-id must be the value's first word and a plain host name
/// (no comment before it, no escapes: a name a verifier that strips fields
/// bearing its own would see the same way). Statements are split at `;`
/// outside quoted strings and comments; comments are dropped (nested ones
/// too, at most 20 deep); a value over 8 KiB is not read.
fn authentication_results(value: &str) -> Option<(String, Vec<MethodResult>)> {
    if value.len() > 8192 {
        return None;
    }
    let id: String = value.trim_start().chars().take_while(|c| !c.is_whitespace() && *c != ';').collect();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c)) {
        return None;
    }
    let mut statements = vec![String::new()];
    let (mut depth, mut quoted, mut escaped) = (0u32, false, false);
    for c in value.chars() {
        let current = statements.last_mut()?;
        if escaped {
            escaped = false;
            if depth == 0 {
                current.push(c);
            }
            continue;
        }
        match c {
            '\\' if quoted || depth > 0 => escaped = true,
            '"' if depth == 0 => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    current.push(' ');
                }
            }
            ';' if !quoted && depth == 0 => statements.push(String::new()),
            _ if depth == 0 => current.push(c),
            _ => {}
        }
        if depth > 20 {
            return None;
        }
    }
    let results = statements
        .iter()
        .skip(1)
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
    Some((id.to_ascii_lowercase(), results))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(fields: &[(&str, &str)]) -> Vec<(String, String)> {
        fields.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
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
                &[],
            )
            .unwrap();
            assert_eq!(client.ip, Some(ip.parse().unwrap()), "{field}");
            assert_eq!(client.helo, helo, "{field}");
            assert_eq!(client.source, ClientSource::Received);
        }
    }

    #[test]
    fn only_the_relays_own_field_is_believed() {
        let relayed = headers(&[
            (
                "received",
                "from mail.customer.example (mail.customer.example [203.0.113.5]) by mx (Postfix) with ESMTPS id B",
            ),
            ("received", "from forged.example (forged.example [198.51.100.66]) by mail.customer.example with SMTP"),
        ]);
        let peer = Some("127.0.0.1".parse().unwrap());
        let client = checked_client(&trusted(), peer, Some("mx"), &relayed, &[]).unwrap();
        assert_eq!(client.ip, Some("203.0.113.5".parse().unwrap()));
        // Mail submitted on the relay's own host is judged for that host,
        // whatever the submitter wrote below.
        let submitted = headers(&[
            ("received", "from localhost (localhost [127.0.0.1]) by mx (Postfix) with ESMTP id A"),
            ("received", "from mail.customer.example (mail.customer.example [203.0.113.5]) by mx (Postfix)"),
        ]);
        let client = checked_client(&trusted(), peer, Some("mx"), &submitted, &[]).unwrap();
        assert_eq!((client.ip, client.source), (peer, ClientSource::Received));
        let told = ToldClient { ip: peer, helo: None, source: ClientSource::Xforward };
        let relay = Relay { trusted: true, told: Some(told), proxied: false };
        let client = checked_client(&relay, peer, Some("mx"), &submitted, &[]).unwrap();
        assert_eq!((client.ip, client.source), (peer, ClientSource::Xforward), "XFORWARD naming this host");
        // From a peer that is not trusted, nothing in the message counts.
        let untrusted = Relay::default();
        let attacker = Some("198.51.100.9".parse().unwrap());
        let client = checked_client(&untrusted, attacker, Some("evil"), &relayed, &["mx.google.com".into()]).unwrap();
        assert_eq!((client.ip, client.source), (attacker, ClientSource::Connection));
        // A top field that names no client: the relay is the client.
        let broken = headers(&[
            ("received", "by mx (Postfix, from userid 0) id C"),
            ("received", "from forged.example (forged.example [198.51.100.66]) by mx with SMTP"),
        ]);
        let client = checked_client(&trusted(), peer, Some("mx"), &broken, &[]).unwrap();
        assert_eq!((client.ip, client.source), (peer, ClientSource::Connection));
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
        let client = checked_client(&relay, peer, None, &fields, &["mx.google.com".into()]).unwrap();
        assert_eq!((client.ip, client.source), (Some("203.0.113.77".parse().unwrap()), ClientSource::Xforward));
        let client = checked_client(&trusted(), peer, None, &fields, &["mx.google.com".into()]).unwrap();
        assert_eq!(client.source, ClientSource::AuthenticationResults);
        assert_eq!(client.spf_verdict, Some(("pass".into(), Some("a@customer.example".into()))));
        // The foreign field (evil.example) is never read, whatever it says.
        let client = checked_client(&trusted(), peer, None, &fields, &["evil.example".into()]).unwrap();
        assert_eq!(client.spf_verdict, Some(("pass".into(), Some("ceo@customer.example".into()))), "only when trusted");
        let client = checked_client(&trusted(), peer, None, &fields, &[]).unwrap();
        assert_eq!(client.source, ClientSource::Received);
    }

    #[test]
    fn a_verifiers_field_is_read_as_the_verifier_wrote_it() {
        let ids = ["mx.trusted.example".to_owned()];
        let verdict = |fields: &[(&str, &str)]| trusted_spf_verdict(&headers(fields), &ids).map(|(v, _)| v);
        let ar = "authentication-results";
        // Escaped or commented names are not the verifier's.
        assert_eq!(verdict(&[(ar, "mx.trusted\\.example; spf=pass smtp.mailfrom=o@acme.example")]), None);
        assert_eq!(verdict(&[(ar, "(x)mx.trusted.example; spf=pass smtp.mailfrom=o@acme.example")]), None);
        // A `;` inside a quoted value does not start a statement.
        let quoted = "mx.trusted.example; dkim=fail header.i=\"@x; spf=pass smtp.mailfrom=o@acme.example\"; spf=fail smtp.mailfrom=m@evil.example";
        assert_eq!(verdict(&[(ar, quoted)]), Some("fail".to_owned()));
        // The topmost trusted field without SPF: no verdict (older fields may be the sender's).
        let fields = [
            (ar, "mx.trusted.example; dkim=pass header.d=acme.example"),
            (ar, "mx.trusted.example; spf=pass smtp.mailfrom=o@acme.example"),
        ];
        assert_eq!(verdict(&fields), None);
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
