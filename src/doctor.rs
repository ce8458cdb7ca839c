//! `mailgate doctor`: checks the DNS that decides whether our mail is
//! believed and whether replies reach us: MX of the reply domain, SPF of the
//! envelope domain for the address notifications leave from, the DKIM key
//! published against the one we sign with, DMARC and its alignment with our
//! From, MTA-STS and TLS-RPT, and the PTR of the outbound address.
//!
//! Every lookup goes through the resolver `[auth]` configures, and
//! `[auth.records]` answers first (with `resolver = "static"`, alone): the
//! tests run on static records. Each check says what it found, what it
//! expected, and the exact record to publish when something is wrong.

use crate::config::{Config, RecordSet};
use crate::pipeline::authenticate::{SenderAuth, organizational_domain};
use serde::Serialize;
use std::collections::HashMap;
use std::net::IpAddr;

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// As it should be.
    Ok,
    /// Works, but mail is less likely to be believed or delivered.
    Warn,
    /// Mail will be refused, lost or marked as spam.
    Fail,
    /// Does not apply to this set-up.
    Skip,
}

impl Status {
    /// `ok`, `warn`, `fail` or `skip`.
    pub fn word(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
            Status::Skip => "skip",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// `mx`, `spf`, `dkim`, `dmarc`, `dmarc-alignment`, `mta-sts`, `tls-rpt`, `ptr`.
    pub check: &'static str,
    /// The name looked up (or the address, for PTR).
    pub subject: String,
    /// The verdict.
    pub status: Status,
    /// What DNS answered.
    pub found: String,
    /// What it should say.
    pub expected: String,
    /// The record to publish (or the step to take) when it is not ok.
    pub fix: Option<String>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// One entry per check, in a fixed order.
    pub checks: Vec<Check>,
}

impl Report {
    /// Whether any check failed (`mailgate doctor` then exits 1).
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.status == Status::Fail)
    }

    /// One line per check (and an indented fix below it).
    pub fn text(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            out.push_str(&format!(
                "{:<4} {:<15} {}: found {}; expected {}\n",
                c.status.word(),
                c.check,
                c.subject,
                c.found,
                c.expected
            ));
            if let Some(fix) = &c.fix {
                out.push_str(&format!("     fix: {fix}\n"));
            }
        }
        out
    }
}

/// The key we sign with, as the DKIM check compares it.
#[derive(Debug, Clone)]
pub struct SigningKey {
    /// `d=`.
    pub domain: String,
    /// `s=`.
    pub selector: String,
    /// `rsa` or `ed25519`.
    pub algorithm: String,
    /// The public key as DKIM publishes it (`p=`): RSA as SubjectPublicKeyInfo, Ed25519 raw.
    pub public: Vec<u8>,
    /// The RSA modulus's size in bits.
    pub bits: Option<usize>,
}

/// What the checks need to know about this installation.
pub struct Setup {
    /// The reply domain (also the domain of the envelope sender, `bounces+…@`).
    pub domain: String,
    /// The domain of our notifications' From.
    pub from_domain: String,
    /// This host's name (greeting, HELO).
    pub hostname: String,
    /// Mail reaches mailgate through a mail server in front (LMTP, or trusted relays).
    pub behind_mail_server: bool,
    /// Where notifications leave from: `None` when they are written to a folder.
    pub outbound: Option<Outbound>,
    /// The DKIM key, when notifications are signed.
    pub signing: Option<SigningKey>,
    dns: Dns,
}

/// Where notifications leave from.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// Given (`mailgate doctor --outbound-ip`).
    Address(IpAddr),
    /// The relay's host name: its addresses, or this host's when the relay runs here.
    Relay(String),
}

impl Setup {
    /// The set-up `config` describes; reads the DKIM key file.
    pub fn from_config(config: &Config, outbound_ip: Option<IpAddr>) -> anyhow::Result<Self> {
        let from_domain = config
            .delivery
            .from_address
            .as_deref()
            .and_then(|a| a.rsplit_once('@'))
            .map_or_else(|| config.domain.clone(), |(_, d)| d.to_ascii_lowercase());
        let outbound = match (outbound_ip, &config.delivery.relay_url) {
            (Some(ip), _) => Some(Outbound::Address(ip)),
            (None, Some(url)) => Some(Outbound::Relay(relay_host(url))),
            (None, None) => None,
        };
        let signing = config.delivery.dkim.as_ref().map(signing_key).transpose()?;
        let auth =
            SenderAuth::new(&config.auth.resolver, &config.auth.records, config.auth.on_dmarc_fail, &config.hostname)?;
        Ok(Self {
            domain: config.domain.clone(),
            from_domain,
            hostname: config.hostname.to_ascii_lowercase(),
            behind_mail_server: config.lmtp_listen.is_some() || !config.auth.trusted_relays.is_empty(),
            outbound,
            signing,
            dns: Dns { auth, records: config.auth.dns_records.clone(), live: config.auth.resolver != "static" },
        })
    }

    /// Runs every check.
    pub async fn run(&self) -> Report {
        let mut checks = vec![self.mx().await];
        let outbound = self.outbound_addresses().await;
        checks.push(self.spf(&outbound).await);
        checks.push(self.dkim().await);
        let (dmarc, policy) = self.dmarc().await;
        checks.push(dmarc);
        checks.push(self.alignment(policy.as_deref()));
        checks.push(self.tls_record("mta-sts", "_mta-sts", "v=STSv1", "v=STSv1; id=20260101").await);
        checks.push(
            self.tls_record(
                "tls-rpt",
                "_smtp._tls",
                "v=TLSRPTv1",
                &format!("v=TLSRPTv1; rua=mailto:tls-reports@{}", self.domain),
            )
            .await,
        );
        checks.push(self.ptr(&outbound).await);
        Report { checks }
    }

    async fn mx(&self) -> Check {
        let subject = self.domain.clone();
        let expected = format!("an MX record pointing at this host ({})", self.hostname);
        if self.behind_mail_server {
            return skip(
                "mx",
                subject,
                "mail reaches mailgate through the mail server in front (LMTP or a trusted relay): its MX is that server's",
            );
        }
        let fix = format!("{}. MX 10 {}.", self.domain, self.hostname);
        let records = match self.dns.mx(&self.domain).await {
            Ok(records) if !records.is_empty() => records,
            Ok(_) => return fail("mx", subject, "no MX record", expected, Some(fix)),
            Err(error) => return fail("mx", subject, &format!("no answer ({error})"), expected, None),
        };
        let found = records.iter().map(|(p, host)| format!("MX {p} {host}")).collect::<Vec<_>>().join(", ");
        let ours = self.dns.addresses(&self.hostname).await.unwrap_or_default();
        for (_, exchange) in &records {
            if *exchange == self.hostname {
                return ok("mx", subject, found, expected);
            }
            let theirs = self.dns.addresses(exchange).await.unwrap_or_default();
            if theirs.iter().any(|ip| ours.contains(ip)) {
                return ok("mx", subject, found, expected);
            }
        }
        fail("mx", subject, &format!("{found}, none of which is this host"), expected, Some(fix))
    }

    /// The addresses notifications leave from (empty: written to a folder, or unknown).
    async fn outbound_addresses(&self) -> Result<Vec<IpAddr>, String> {
        match &self.outbound {
            None => Ok(Vec::new()),
            Some(Outbound::Address(ip)) => Ok(vec![*ip]),
            Some(Outbound::Relay(host)) => {
                let relay = match host.parse::<IpAddr>() {
                    Ok(ip) => vec![ip],
                    Err(_) => self.dns.addresses(host).await?,
                };
                // A relay on this host or the local network sends from this host's public address.
                if relay.iter().all(|ip| is_local(*ip)) {
                    let own = self.dns.addresses(&self.hostname).await?;
                    Ok(own.into_iter().filter(|ip| !is_local(*ip)).collect())
                } else {
                    Ok(relay)
                }
            }
        }
    }

    async fn spf(&self, outbound: &Result<Vec<IpAddr>, String>) -> Check {
        let subject = self.domain.clone();
        let expected = "SPF passes for the address notifications leave from, in at most 10 DNS lookups".to_owned();
        let ips = match (&self.outbound, outbound) {
            (None, _) => return skip("spf", subject, "notifications are written to a folder, not sent (no relay_url)"),
            (_, Err(error)) => {
                return fail(
                    "spf",
                    subject,
                    &format!("the outbound address is unknown ({error})"),
                    expected,
                    Some("run mailgate doctor --outbound-ip ADDRESS".to_owned()),
                );
            }
            (_, Ok(ips)) if ips.is_empty() => {
                return fail(
                    "spf",
                    subject,
                    "the outbound address is unknown",
                    expected,
                    Some("run mailgate doctor --outbound-ip ADDRESS".to_owned()),
                );
            }
            (_, Ok(ips)) => ips,
        };
        let records: Vec<String> = match self.dns.txt(&self.domain).await {
            Ok(values) => values.into_iter().filter(|t| is_spf(t)).collect(),
            Err(error) => return fail("spf", subject, &format!("the lookup failed: {error}"), expected, None),
        };
        if records.len() > 1 {
            let listed = records.iter().map(|r| format!("\"{r}\"")).collect::<Vec<_>>().join(", ");
            let found = format!("{} SPF records: {listed}", records.len());
            let fix =
                format!("publish one SPF record at {} (receivers give permerror for two, RFC 7208 §4.5)", self.domain);
            return fail("spf", subject, &found, expected, Some(fix));
        }
        let record = records.into_iter().next();
        let mechanisms = ips
            .iter()
            .map(|ip| match ip {
                IpAddr::V4(v4) => format!("ip4:{v4}"),
                IpAddr::V6(v6) => format!("ip6:{v6}"),
            })
            .collect::<Vec<_>>()
            .join(" ");
        let Some(record) = record else {
            let fix = format!("{}. TXT \"v=spf1 {mechanisms} -all\"", self.domain);
            return fail("spf", subject, "no SPF record", expected, Some(fix));
        };
        let lookups = self.spf_lookups(&record, 0).await;
        if lookups > 10 {
            let found =
                format!("\"{record}\", which needs {lookups} DNS lookups (receivers give up after 10: permerror)");
            let fix = format!(
                "{}. TXT \"v=spf1 {mechanisms} -all\" (or replace include: terms by the ip4:/ip6: ranges they name)",
                self.domain
            );
            return fail("spf", subject, &found, expected, Some(fix));
        }
        let sender = format!("bounces@{}", self.domain);
        let mut failing = Vec::new();
        for ip in ips {
            let verdict = self.dns.auth.spf_verdict(*ip, &sender).await;
            if verdict != "pass" {
                failing.push(format!("{ip}: {verdict}"));
            }
        }
        let found = format!("\"{record}\" ({lookups} DNS lookups)");
        if failing.is_empty() {
            return ok("spf", subject, format!("{found}: pass"), expected);
        }
        let fix = match record.rfind(' ') {
            Some(at) if record[at + 1..].ends_with("all") => {
                format!("{}. TXT \"{} {mechanisms}{}\"", self.domain, &record[..at], &record[at..])
            }
            _ => format!("{}. TXT \"v=spf1 {mechanisms} -all\"", self.domain),
        };
        fail("spf", subject, &format!("{found}: {}", failing.join(", ")), expected, Some(fix))
    }

    /// DNS lookups an SPF evaluation of `record` needs (RFC 7208 §4.6.4),
    /// following `include:` and `redirect=` to literal names.
    async fn spf_lookups(&self, record: &str, depth: usize) -> usize {
        let mut count = 0;
        // Iterative over a worklist: a loop of includes ends at the depth limit, never in recursion.
        let mut work = vec![(record.to_owned(), depth)];
        while let Some((record, depth)) = work.pop() {
            for term in record.split_whitespace().skip(1) {
                let term = term.trim_start_matches(['+', '-', '~', '?']).to_ascii_lowercase();
                let target = if let Some(name) = term.strip_prefix("include:") {
                    count += 1;
                    Some(name.to_owned())
                } else if let Some(name) = term.strip_prefix("redirect=") {
                    count += 1;
                    Some(name.to_owned())
                } else {
                    if term == "a"
                        || term == "mx"
                        || term == "ptr"
                        || ["a:", "a/", "mx:", "mx/", "ptr:", "exists:"].iter().any(|p| term.starts_with(p))
                    {
                        count += 1;
                    }
                    None
                };
                if let Some(name) = target.filter(|n| !n.contains('%') && depth < 10 && count <= 10) {
                    let txt = self.dns.txt(&name).await.unwrap_or_default();
                    if let Some(next) = txt.into_iter().find(|t| is_spf(t)) {
                        work.push((next, depth + 1));
                    }
                }
            }
        }
        count
    }

    async fn dkim(&self) -> Check {
        let Some(key) = &self.signing else {
            let subject = self.from_domain.clone();
            return match self.outbound {
                None => skip("dkim", subject, "notifications are written to a folder, not sent"),
                Some(_) => warn(
                    "dkim",
                    subject,
                    "notifications are not signed",
                    "a DKIM signature aligned with the From domain",
                    Some("configure [delivery.dkim] (docs/outgoing-mail.md): without it DMARC rests on SPF alone, which forwarding breaks".to_owned()),
                ),
            };
        };
        let name = format!("{}._domainkey.{}", key.selector, key.domain);
        let ours = data_encoding::BASE64.encode(&key.public);
        let record = format!("{name}. TXT \"v=DKIM1; k={}; p={ours}\"", key.algorithm);
        let expected = format!(
            "the public key of {} ({})",
            key.algorithm,
            key.bits.map_or_else(|| "Ed25519".to_owned(), |b| format!("{b} bits"))
        );
        let published = match self.dns.txt(&name).await {
            Ok(values) => values,
            Err(error) => return fail("dkim", name, &format!("the lookup failed: {error}"), expected, None),
        };
        let Some(value) = published.iter().find(|t| dkim_tag(t, "p").is_some()) else {
            return fail("dkim", name, "no DKIM record", expected, Some(record));
        };
        let p = dkim_tag(value, "p").unwrap_or_default();
        let theirs = data_encoding::BASE64.decode(p.as_bytes()).unwrap_or_default();
        let found = format!("p={}…", p.chars().take(24).collect::<String>());
        // RSA keys are published as SubjectPublicKeyInfo or bare: ours ends either.
        let same = !theirs.is_empty()
            && (theirs == key.public || key.public.ends_with(&theirs) || theirs.ends_with(&key.public));
        if !same {
            return fail(
                "dkim",
                name,
                &format!("{found}, another key than the one mailgate signs with"),
                expected,
                Some(record),
            );
        }
        match key.bits {
            Some(bits) if bits < 1024 => fail(
                "dkim",
                name,
                &format!("{found} ({bits} bits)"),
                expected,
                Some("make a 2048-bit key: receivers ignore signatures of keys under 1024 bits".to_owned()),
            ),
            Some(bits) if bits < 2048 => warn(
                "dkim",
                name,
                &format!("{found} ({bits} bits)"),
                "a key of 2048 bits",
                Some("make a 2048-bit key: keys under 2048 bits are considered weak".to_owned()),
            ),
            _ => ok("dkim", name, found, expected),
        }
    }

    /// The DMARC check, and the record's `adkim`/`aspf` (for alignment).
    async fn dmarc(&self) -> (Check, Option<String>) {
        let mut name = format!("_dmarc.{}", self.from_domain);
        let mut record = self.dmarc_record(&name).await;
        let org = organizational_domain(&self.from_domain).to_owned();
        if matches!(record, Ok(None)) && org != self.from_domain {
            name = format!("_dmarc.{org}");
            record = self.dmarc_record(&name).await;
        }
        let expected = "a DMARC policy of quarantine or reject".to_owned();
        let record = match record {
            Ok(record) => record,
            Err(error) => return (fail("dmarc", name, &format!("the lookup failed: {error}"), expected, None), None),
        };
        let Some(record) = record else {
            let fix = format!(
                "_dmarc.{}. TXT \"v=DMARC1; p=quarantine; rua=mailto:dmarc-reports@{}\"",
                self.from_domain, self.from_domain
            );
            return (fail("dmarc", name, "no DMARC record", expected, Some(fix)), None);
        };
        let policy = dkim_tag(&record, "p").unwrap_or_default().to_ascii_lowercase();
        let check = match policy.as_str() {
            "quarantine" | "reject" => ok("dmarc", name, format!("\"{record}\""), expected),
            _ => {
                let fix = format!(
                    "{name}. TXT \"{}\" once the aggregate reports show only your own mail failing",
                    record.replace(&format!("p={policy}"), "p=quarantine")
                );
                warn(
                    "dmarc",
                    name,
                    &format!("\"{record}\" (p={policy}: receivers are asked to do nothing about forgeries)"),
                    &expected,
                    Some(fix),
                )
            }
        };
        (check, Some(record))
    }

    /// The DMARC record at `name`, or why the lookup failed.
    async fn dmarc_record(&self, name: &str) -> Result<Option<String>, String> {
        Ok(self.dns.txt(name).await?.into_iter().find(|t| t.to_ascii_lowercase().starts_with("v=dmarc1")))
    }

    /// Whether our From passes DMARC by an aligned SPF or DKIM domain.
    fn alignment(&self, record: Option<&str>) -> Check {
        let subject = self.from_domain.clone();
        let strict = |tag: &str| record.and_then(|r| dkim_tag(r, tag)).is_some_and(|v| v.eq_ignore_ascii_case("s"));
        let aligned = |domain: &str, strict: bool| {
            if strict {
                domain.eq_ignore_ascii_case(&self.from_domain)
            } else {
                organizational_domain(domain) == organizational_domain(&self.from_domain)
            }
        };
        let expected = format!("the envelope domain or the DKIM domain aligned with {}", self.from_domain);
        if self.outbound.is_none() {
            return skip("dmarc-alignment", subject, "notifications are written to a folder, not sent");
        }
        let spf = aligned(&self.domain, strict("aspf"));
        let dkim = self.signing.as_ref().is_some_and(|k| aligned(&k.domain, strict("adkim")));
        let found = format!(
            "envelope domain {} ({}), DKIM domain {}",
            self.domain,
            if spf { "aligned" } else { "not aligned" },
            self.signing.as_ref().map_or_else(
                || "none".to_owned(),
                |k| format!("{} ({})", k.domain, if dkim { "aligned" } else { "not aligned" })
            )
        );
        if spf || dkim {
            ok("dmarc-alignment", subject, found, expected)
        } else {
            let fix = format!(
                "sign with d={} ([delivery.dkim] domain) or send From an address @{}",
                self.from_domain, self.domain
            );
            fail("dmarc-alignment", subject, &found, expected, Some(fix))
        }
    }

    async fn tls_record(&self, check: &'static str, prefix: &str, version: &str, example: &str) -> Check {
        let name = format!("{prefix}.{}", self.domain);
        let expected = format!("a {version} record");
        let found = match self.dns.txt(&name).await {
            Ok(values) => values.into_iter().find(|t| t.starts_with(version)),
            Err(error) => return warn(check, name, &format!("the lookup failed: {error}"), &expected, None),
        };
        match found {
            Some(record) => ok(check, name, format!("\"{record}\""), expected),
            None => {
                let why = if check == "mta-sts" {
                    "without it, senders may deliver replies over plain text when an attacker strips STARTTLS"
                } else {
                    "without it, nobody tells you when senders fail to reach you over TLS"
                };
                warn(
                    check,
                    name.clone(),
                    &format!("no record ({why})"),
                    &expected,
                    Some(format!("{name}. TXT \"{example}\"")),
                )
            }
        }
    }

    async fn ptr(&self, outbound: &Result<Vec<IpAddr>, String>) -> Check {
        let ips = match (&self.outbound, outbound) {
            (None, _) => return skip("ptr", self.hostname.clone(), "notifications are written to a folder, not sent"),
            (_, Ok(ips)) if !ips.is_empty() => ips,
            _ => {
                return warn(
                    "ptr",
                    self.hostname.clone(),
                    "the outbound address is unknown",
                    "a PTR record naming this host",
                    Some("run mailgate doctor --outbound-ip ADDRESS".to_owned()),
                );
            }
        };
        let ip = ips[0];
        let expected = "a PTR record whose name resolves back to the address".to_owned();
        let fix = Some(format!(
            "ask whoever runs {ip} (your hosting provider) to set its PTR to {}, which must resolve to {ip}",
            self.hostname
        ));
        let names = self.dns.ptr(ip).await.unwrap_or_default();
        if names.is_empty() {
            return warn(
                "ptr",
                ip.to_string(),
                "no PTR record (many receivers refuse or distrust such mail)",
                &expected,
                fix,
            );
        }
        for name in &names {
            if self.dns.addresses(name).await.unwrap_or_default().contains(&ip) {
                return ok("ptr", ip.to_string(), format!("PTR {name}"), expected);
            }
        }
        warn(
            "ptr",
            ip.to_string(),
            &format!("PTR {}, which does not resolve back to {ip}", names.join(", ")),
            &expected,
            fix,
        )
    }
}

impl std::fmt::Debug for Setup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setup").field("domain", &self.domain).field("outbound", &self.outbound).finish_non_exhaustive()
    }
}

/// DNS as the checks see it: `[auth.records]` first, then (unless the
/// resolver is `static`) the resolver `[auth]` configures.
struct Dns {
    auth: SenderAuth,
    records: HashMap<String, RecordSet>,
    live: bool,
}

impl Dns {
    fn configured(&self, name: &str) -> Option<&RecordSet> {
        self.records.get(name.trim_end_matches('.').to_ascii_lowercase().as_str())
    }

    async fn txt(&self, name: &str) -> Result<Vec<String>, String> {
        if let Some(set) = self.configured(name).filter(|s| !s.txt.is_empty()) {
            return Ok(set.txt.clone());
        }
        if !self.live {
            return Ok(Vec::new());
        }
        let lookup = self.auth.authenticator().resolver().txt_lookup(fqdn(name)).await;
        match lookup {
            Ok(lookup) => Ok(lookup
                .as_lookup()
                .record_iter()
                .filter_map(|r| r.data().as_txt())
                .map(|txt| {
                    txt.txt_data().iter().map(|part| String::from_utf8_lossy(part).into_owned()).collect::<String>()
                })
                .collect()),
            Err(error) => absent_or(error),
        }
    }

    async fn mx(&self, name: &str) -> Result<Vec<(u16, String)>, String> {
        if let Some(set) = self.configured(name).filter(|s| !s.mx.is_empty()) {
            return Ok(set.mx.clone());
        }
        if !self.live {
            return Ok(Vec::new());
        }
        match self.auth.authenticator().resolver().mx_lookup(fqdn(name)).await {
            Ok(lookup) => {
                let mut records: Vec<(u16, String)> = lookup
                    .as_lookup()
                    .record_iter()
                    .filter_map(|r| r.data().as_mx())
                    .map(|mx| {
                        (mx.preference(), mx.exchange().to_lowercase().to_string().trim_end_matches('.').to_owned())
                    })
                    .collect();
                records.sort();
                Ok(records)
            }
            Err(error) => absent_or(error),
        }
    }

    async fn addresses(&self, name: &str) -> Result<Vec<IpAddr>, String> {
        if let Some(set) = self.configured(name).filter(|s| !s.addresses.is_empty()) {
            return Ok(set.addresses.clone());
        }
        if !self.live {
            return Ok(Vec::new());
        }
        match self.auth.authenticator().resolver().lookup_ip(fqdn(name)).await {
            Ok(lookup) => Ok(lookup.iter().collect()),
            Err(error) => absent_or(error),
        }
    }

    async fn ptr(&self, ip: IpAddr) -> Result<Vec<String>, String> {
        if let Some(set) = self.configured(&ip.to_string()).filter(|s| !s.ptr.is_empty()) {
            return Ok(set.ptr.clone());
        }
        if !self.live {
            return Ok(Vec::new());
        }
        match self.auth.authenticator().resolver().reverse_lookup(ip).await {
            Ok(lookup) => Ok(lookup
                .as_lookup()
                .record_iter()
                .filter_map(|r| r.data().as_ptr())
                .map(|name| name.to_lowercase().to_string().trim_end_matches('.').to_owned())
                .collect()),
            Err(error) => absent_or(error),
        }
    }
}

/// Whether a TXT value is an SPF record (`v=spf1`, then a space or nothing).
fn is_spf(value: &str) -> bool {
    let value = value.trim_start().to_ascii_lowercase();
    value == "v=spf1" || value.starts_with("v=spf1 ")
}

/// A name as the resolver takes it: fully qualified, so that no search domain is tried.
fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

/// "No such name" (NXDOMAIN) or an answer without the record is an empty
/// answer; any other failure (no answer, SERVFAIL, REFUSED) is an error, so
/// that a failed lookup is never reported as a record to publish.
fn absent_or<T>(error: mail_auth::hickory_resolver::proto::ProtoError) -> Result<Vec<T>, String> {
    use mail_auth::hickory_resolver::proto::{ProtoErrorKind, op::ResponseCode};
    match error.kind() {
        ProtoErrorKind::NoRecordsFound(none)
            if matches!(none.response_code, ResponseCode::NXDomain | ResponseCode::NoError) =>
        {
            Ok(Vec::new())
        }
        ProtoErrorKind::NoRecordsFound(none) => Err(format!("the name server answered {}", none.response_code)),
        _ => Err(error.to_string()),
    }
}

/// The value of tag `name` in a `tag=value; …` record (DKIM, DMARC).
fn dkim_tag<'r>(record: &'r str, name: &str) -> Option<&'r str> {
    record.split(';').find_map(|tag| {
        let (key, value) = tag.split_once('=')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// The host of a relay URL (`smtp://user:pass@host:587?tls=…`).
fn relay_host(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or(v6)
    } else {
        host_port.rsplit_once(':').map_or(host_port, |(h, _)| h)
    };
    host.to_ascii_lowercase()
}

/// Loopback, private or link-local: an address the internet never sees.
fn is_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local() || v4.is_unspecified(),
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// Our public key as DKIM publishes it, read from the private key file.
fn signing_key(settings: &crate::config::DkimSettings) -> anyhow::Result<SigningKey> {
    use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
    use rustls_pki_types::PrivateKeyDer;
    use rustls_pki_types::pem::PemObject;
    let pem = std::fs::read(&settings.private_key)
        .map_err(|e| anyhow::anyhow!("dkim.private_key: reading {}: {e}", settings.private_key.display()))?;
    let der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| anyhow::anyhow!("dkim.private_key: {e}"))?;
    let (public, bits) = match settings.algorithm.as_str() {
        "rsa" => {
            let key = RsaKey::<Sha256>::from_key_der(der).map_err(|e| anyhow::anyhow!("dkim.private_key: {e}"))?;
            let pkcs1 = key.public_key();
            let bits = rsa_modulus_bits(&pkcs1);
            (rsa_subject_public_key_info(&pkcs1), bits)
        }
        "ed25519" => {
            let key = Ed25519Key::from_pkcs8_maybe_unchecked_der(der.secret_der())
                .map_err(|e| anyhow::anyhow!("dkim.private_key: {e}"))?;
            (key.public_key(), None)
        }
        other => anyhow::bail!("dkim.algorithm: {other:?} is not rsa or ed25519"),
    };
    Ok(SigningKey {
        domain: settings.domain.to_ascii_lowercase(),
        selector: settings.selector.clone(),
        algorithm: settings.algorithm.clone(),
        public,
        bits,
    })
}

/// A DER length.
fn der_length(length: usize, out: &mut Vec<u8>) {
    match length {
        0..=0x7f => out.push(length as u8),
        0x80..=0xff => out.extend_from_slice(&[0x81, length as u8]),
        _ => out.extend_from_slice(&[0x82, (length >> 8) as u8, length as u8]),
    }
}

/// An RSA public key (PKCS #1) wrapped as SubjectPublicKeyInfo, the form
/// `openssl rsa -pubout` writes and DKIM records carry.
fn rsa_subject_public_key_info(pkcs1: &[u8]) -> Vec<u8> {
    // AlgorithmIdentifier { rsaEncryption (1.2.840.113549.1.1.1), NULL }
    const ALGORITHM: [u8; 15] =
        [0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00];
    let mut bits = vec![0x03];
    der_length(pkcs1.len() + 1, &mut bits);
    bits.push(0);
    bits.extend_from_slice(pkcs1);
    let mut out = vec![0x30];
    der_length(ALGORITHM.len() + bits.len(), &mut out);
    out.extend_from_slice(&ALGORITHM);
    out.extend_from_slice(&bits);
    out
}

/// The modulus size of a PKCS #1 RSA public key (`SEQUENCE { INTEGER n, INTEGER e }`).
fn rsa_modulus_bits(pkcs1: &[u8]) -> Option<usize> {
    let read_length = |bytes: &[u8]| -> Option<(usize, usize)> {
        match *bytes.first()? {
            short @ 0..=0x7f => Some((usize::from(short), 1)),
            0x81 => Some((usize::from(*bytes.get(1)?), 2)),
            0x82 => Some((usize::from(*bytes.get(1)?) << 8 | usize::from(*bytes.get(2)?), 3)),
            _ => None,
        }
    };
    if *pkcs1.first()? != 0x30 {
        return None;
    }
    let (_, used) = read_length(pkcs1.get(1..)?)?;
    let integer = pkcs1.get(1 + used..)?;
    if *integer.first()? != 0x02 {
        return None;
    }
    let (length, used) = read_length(integer.get(1..)?)?;
    let modulus = integer.get(1 + used..1 + used + length)?;
    let leading_zero = usize::from(modulus.first() == Some(&0));
    Some((length - leading_zero) * 8)
}

fn ok(check: &'static str, subject: String, found: String, expected: String) -> Check {
    Check { check, subject, status: Status::Ok, found, expected, fix: None }
}

fn warn(check: &'static str, subject: String, found: &str, expected: &str, fix: Option<String>) -> Check {
    Check { check, subject, status: Status::Warn, found: found.to_owned(), expected: expected.to_owned(), fix }
}

fn fail(check: &'static str, subject: String, found: &str, expected: String, fix: Option<String>) -> Check {
    Check { check, subject, status: Status::Fail, found: found.to_owned(), expected, fix }
}

fn skip(check: &'static str, subject: String, why: &str) -> Check {
    Check { check, subject, status: Status::Skip, found: why.to_owned(), expected: "-".to_owned(), fix: None }
}

#[cfg(test)]
mod tests {
    use super::{relay_host, rsa_modulus_bits, rsa_subject_public_key_info};

    #[test]
    fn relay_hosts_are_read_from_every_form_of_url() {
        assert_eq!(relay_host("smtp://relay.example.com:25"), "relay.example.com");
        assert_eq!(relay_host("smtp://user:p%40ss@Relay.Example.com:587?tls=starttls"), "relay.example.com");
        assert_eq!(relay_host("smtps://[2001:db8::1]:465"), "2001:db8::1");
        assert_eq!(relay_host("smtp://127.0.0.1"), "127.0.0.1");
    }

    #[test]
    fn an_rsa_key_is_wrapped_as_subject_public_key_info_and_its_size_read() {
        // SEQUENCE { INTEGER (257 bytes, leading zero: 2048 bits), INTEGER 65537 }
        let mut pkcs1 = vec![0x30, 0x82, 0x01, 0x0a, 0x02, 0x82, 0x01, 0x01, 0x00];
        pkcs1.extend(std::iter::repeat_n(0xc5, 256));
        pkcs1.extend_from_slice(&[0x02, 0x03, 0x01, 0x00, 0x01]);
        assert_eq!(rsa_modulus_bits(&pkcs1), Some(2048));
        let spki = rsa_subject_public_key_info(&pkcs1);
        assert_eq!(&spki[..4], &[0x30, 0x82, 0x01, 0x22], "the 294-byte header openssl writes for 2048-bit keys");
        assert!(spki.ends_with(&pkcs1));
        assert_eq!(rsa_modulus_bits(&[0x30]), None, "a truncated key is no key");
    }
}
