//! Step 4, sender authentication: SPF, DKIM and DMARC for every message (mail-auth).
//!
//! A message whose From domain fails DMARC (neither an aligned SPF pass nor
//! an aligned DKIM pass, and the domain publishes a DMARC record) is refused
//! by default, or held, or only recorded, by configuration. A DNS failure is
//! never a reason to refuse: it is recorded as `temperror`.
//!
//! The resolver is configurable. `static` answers only from records given in
//! the configuration (tests, and air-gapped set-ups); the others ask DNS, with
//! the answers cached.

use super::relayed::CheckedClient;
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::verify::DomainKey;
use mail_auth::dmarc::Dmarc;
use mail_auth::spf::Spf;
use mail_auth::{
    AuthenticatedMessage, DkimResult, DmarcResult, MessageAuthenticator, Parameters, ResolverCache, SpfOutput,
    SpfResult, Txt,
};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What to do with mail whose From domain fails DMARC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDmarcFail {
    /// Refuse it with `550 5.7.1`.
    Refuse,
    /// Accept it (250) without posting; keep it for an agent to look at.
    Hold,
    /// Only record the result.
    Accept,
}

/// The outcome of the checks, as recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AuthResults {
    /// `pass`, `fail`, `softfail`, `neutral`, `none`, `temperror`, `permerror`.
    pub spf: String,
    /// The best DKIM result: `pass`, `fail`, `none`, ...
    pub dkim: String,
    /// `pass`, `fail`, `none`, `temperror`, `permerror`.
    pub dmarc: String,
    /// The From domain judged.
    pub from_domain: String,
    /// Which check passed aligned with the From domain (`spf`, `dkim`,
    /// `spf+dkim`), or empty: what authenticates a domain that publishes
    /// no DMARC record.
    pub aligned: String,
    /// The one From address the checks read, or empty when they read none
    /// or several: the results are about this author only.
    pub author: String,
    /// Where the client the checks judged came from (`connection`,
    /// `xforward`, `received`, …; see `relayed::ClientSource`).
    pub via: String,
}

impl AuthResults {
    /// `spf=pass dkim=none dmarc=fail (example.com)`, for the inbound log.
    pub fn summary(&self) -> String {
        let mut summary = format!("spf={} dkim={} dmarc={}", self.spf, self.dkim, self.dmarc);
        if !self.aligned.is_empty() {
            summary.push_str(&format!(" aligned={}", self.aligned));
        }
        // Always written (`-` for none), so that a record from before the
        // author was recorded can be told from one that read no author.
        let author = if self.author.is_empty() { "-" } else { self.author.as_str() };
        summary.push_str(&format!(" author={author}"));
        if !self.via.is_empty() && self.via != "connection" {
            summary.push_str(&format!(" via={}", self.via));
        }
        format!("{summary} ({})", self.from_domain)
    }

    /// The results again from their [`summary`](Self::summary), as the
    /// inbound log keeps them; `None` for an empty or foreign text.
    pub fn from_summary(summary: &str) -> Option<Self> {
        let (results, domain) = summary.trim().rsplit_once(" (")?;
        let mut fields = results.split(' ').filter_map(|field| field.split_once('='));
        let mut next = |name: &str| fields.next().filter(|(key, _)| *key == name).map(|(_, v)| v.to_owned());
        let (spf, dkim, dmarc) = (next("spf")?, next("dkim")?, next("dmarc")?);
        let optional = |name: &str| {
            results.split(' ').find_map(|f| f.strip_prefix(name)?.strip_prefix('=')).unwrap_or("").to_owned()
        };
        Some(Self {
            spf,
            dkim,
            dmarc,
            from_domain: domain.strip_suffix(')')?.to_owned(),
            aligned: optional("aligned"),
            // Recorded before the author was: judged by the domain alone.
            author: match optional("author").as_str() {
                "" => RECORDED_WITHOUT_AUTHOR.to_owned(),
                "-" => String::new(),
                author => author.to_owned(),
            },
            via: optional("via"),
        })
    }

    /// Results that take `author`'s domain as authenticated, for a dry run
    /// of a message that came over no connection (SPF and DKIM read
    /// `assumed`): what the rules do with it then.
    pub fn assumed_for(author: &str) -> Self {
        Self {
            spf: "assumed".to_owned(),
            dkim: "assumed".to_owned(),
            dmarc: "pass".to_owned(),
            from_domain: author.rsplit_once('@').map_or("", |(_, d)| d).to_owned(),
            aligned: String::new(),
            author: author.to_owned(),
            via: String::new(),
        }
    }

    /// Whether these results authenticate `author` (a plain `local@domain`
    /// address, read by the pipeline from the message's one From field):
    /// the checks read that same address, judged its domain, and DMARC
    /// passed, or the domain publishes no DMARC record and SPF or DKIM
    /// passed aligned with it. A result about another address or domain,
    /// or `none` with no domain, authenticates nobody.
    pub fn authenticates(&self, author: &str) -> bool {
        self.is_about(author) && (self.dmarc == "pass" || self.dmarc == "none" && !self.aligned.is_empty())
    }

    /// Whether `author`'s domain is proved the strong way an agent's
    /// commands ask for: DMARC passed, or an aligned DKIM signature.
    pub fn proves_strongly(&self, author: &str) -> bool {
        self.is_about(author) && (self.dmarc == "pass" || self.aligned.contains("dkim"))
    }

    /// Whether the checks read `author` as the message's one author and
    /// judged its domain.
    pub fn is_about(&self, author: &str) -> bool {
        let domain = author.rsplit_once('@').map_or("", |(_, d)| d);
        !author.is_empty()
            && (self.author.eq_ignore_ascii_case(author) || self.author == RECORDED_WITHOUT_AUTHOR)
            && !self.from_domain.is_empty()
            && self.from_domain.eq_ignore_ascii_case(domain)
    }

    /// Whether `author`'s domain publishes a DMARC policy that the message
    /// did not pass (a failure, or an error reading it): anything but
    /// `pass` and `none`.
    pub fn dmarc_not_passed(&self) -> bool {
        self.dmarc != "pass" && self.dmarc != "none"
    }

    /// Whether the From domain failed DMARC.
    pub fn dmarc_failed(&self) -> bool {
        self.dmarc == "fail"
    }
}

/// The author of results recorded before the author was (`explain` and
/// `replay` of older mail): no address, so never one a message names.
const RECORDED_WITHOUT_AUTHOR: &str = "*";

/// What the sender checks did since the process started, for the metrics:
/// TXT answers fetched from DNS (the cache's misses), checks run, and their
/// time in microseconds (a check's time is mostly its lookups).
pub static DNS_ANSWERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// Sender checks run (one per message checked).
pub static CHECKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// Their time, in microseconds.
pub static CHECK_US: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A TXT cache: records from the configuration (kept for ever) and answers
/// from DNS (kept for their TTL, at most 4096 of them). With the `static`
/// resolver (`only_given`) it is the whole of DNS: a name it lacks has no
/// record, as a real server would say, rather than a lookup that fails for
/// want of a server (which would make every DMARC check a `temperror`).
#[derive(Default)]
struct TxtCache {
    answers: Mutex<HashMap<String, (Txt, Option<Instant>)>>,
    only_given: bool,
}

impl ResolverCache<String, Txt> for TxtCache {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        String: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        let map = self.answers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match map.get(name) {
            Some((value, until)) => until.is_none_or(|t| t > Instant::now()).then(|| value.clone()),
            None if self.only_given => Some(Txt::Error(mail_auth::Error::DnsRecordNotFound(
                mail_auth::hickory_resolver::proto::op::ResponseCode::NXDomain,
            ))),
            None => None,
        }
    }
    fn remove<Q>(&self, name: &Q) -> Option<Txt>
    where
        String: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.answers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(name).map(|(v, _)| v)
    }
    fn insert(&self, key: String, value: Txt, valid_until: Instant) {
        DNS_ANSWERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut map = self.answers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= 4096 {
            map.retain(|_, (_, until)| until.is_none());
        }
        map.insert(key, (value, Some(valid_until)));
    }
}

/// Runs the checks; shared by every session.
pub struct SenderAuth {
    authenticator: MessageAuthenticator,
    cache: Arc<TxtCache>,
    /// Our host name, for SPF's `%{r}`.
    host: String,
    /// What to do on a DMARC failure.
    pub on_fail: OnDmarcFail,
    /// The verifiers whose `Authentication-Results` fields are believed.
    pub trusted_authserv_ids: Vec<String>,
}

impl std::fmt::Debug for SenderAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SenderAuth").field("on_fail", &self.on_fail).finish_non_exhaustive()
    }
}

impl SenderAuth {
    /// A checker using `resolver` (`system`, `cloudflare`, `google`, `quad9`
    /// or `static`) and the given TXT records (name -> value).
    pub fn new(
        resolver: &str,
        records: &HashMap<String, String>,
        on_fail: OnDmarcFail,
        host: &str,
    ) -> anyhow::Result<Self> {
        use mail_auth::hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
        let mut options = ResolverOpts::default();
        options.timeout = Duration::from_secs(3);
        options.attempts = 1;
        let authenticator = match resolver {
            "system" => MessageAuthenticator::new_system_conf(),
            "cloudflare" => MessageAuthenticator::new_cloudflare(),
            "google" => MessageAuthenticator::new_google(),
            "quad9" => MessageAuthenticator::new_quad9(),
            "static" => MessageAuthenticator::new(
                ResolverConfig::from_parts(None, vec![], NameServerConfigGroup::with_capacity(0)),
                options,
            ),
            // One name server of the desk's own (a local resolver), by address.
            other => match other.parse::<std::net::SocketAddr>() {
                Ok(server) => MessageAuthenticator::new(
                    ResolverConfig::from_parts(
                        None,
                        vec![],
                        NameServerConfigGroup::from_ips_clear(&[server.ip()], server.port(), true),
                    ),
                    options,
                ),
                Err(_) => anyhow::bail!(
                    "auth.resolver: {other:?} is not system, cloudflare, google, quad9, static or a name server's IP:PORT"
                ),
            },
        }
        .map_err(|e| anyhow::anyhow!("auth.resolver: {e}"))?;
        let cache = Arc::new(TxtCache { only_given: resolver == "static", ..TxtCache::default() });
        {
            let mut map = cache.answers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for (name, value) in records {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                let parsed = if name.starts_with("_dmarc.") {
                    Dmarc::parse(value.as_bytes()).map(|r| Txt::Dmarc(Arc::new(r)))
                } else if name.contains("._domainkey.") {
                    DomainKey::parse(value.as_bytes()).map(|r| Txt::DomainKey(Arc::new(r)))
                } else {
                    Spf::parse(value.as_bytes()).map(|r| Txt::Spf(Arc::new(r)))
                }
                .map_err(|e| anyhow::anyhow!("auth.records.{name:?}: {e}"))?;
                map.insert(format!("{name}."), (parsed.clone(), None));
                map.insert(name, (parsed, None));
            }
        }
        Ok(Self { authenticator, cache, host: host.to_owned(), on_fail, trusted_authserv_ids: Vec::new() })
    }

    /// SPF's verdict (`pass`, `fail`, `softfail`, …) for mail from `sender`
    /// sent from `ip`, through the configured resolver and records
    /// (`mailgate doctor` asks it about our own notifications).
    pub async fn spf_verdict(&self, ip: std::net::IpAddr, sender: &str) -> &'static str {
        let params = mail_auth::spf::verify::SpfParameters::verify_mail_from(ip, &self.host, &self.host, sender);
        let output = self.authenticator.verify_spf(Parameters::new(params).with_txt_cache(self.cache.as_ref())).await;
        spf_result(output.result())
    }

    /// The DNS resolver the checks use (`mailgate doctor` looks up MX, A and
    /// PTR records through the same one).
    pub fn authenticator(&self) -> &MessageAuthenticator {
        &self.authenticator
    }

    /// The same checker, believing the `Authentication-Results` of
    /// `authserv_ids` on relayed mail.
    pub fn with_authserv_ids(mut self, authserv_ids: Vec<String>) -> Self {
        self.trusted_authserv_ids = authserv_ids;
        self
    }

    /// Checks one message whose sending client is `client` (the connection,
    /// or what a trusted relay saw), with envelope sender `mail_from`.
    ///
    /// mail-auth parses the message and its signatures itself; like
    /// mail-parser (see `parse.rs`), it must not take the session down on a
    /// malformed message. A panic in it fails closed: SPF and DKIM read
    /// `permerror` and DMARC `fail`, so that a message crafted to crash the
    /// checks is handled as `auth.on_dmarc_fail` says, never as if it had
    /// not been checked.
    pub async fn check(&self, client: &CheckedClient, mail_from: &str, raw: &[u8]) -> AuthResults {
        let started = Instant::now();
        let mut results = failing_closed(self.verify(client, mail_from, raw), raw.len()).await;
        results.via = client.source.as_str().to_owned();
        CHECKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        CHECK_US.fetch_add(started.elapsed().as_micros() as u64, std::sync::atomic::Ordering::Relaxed);
        results
    }

    /// [`SenderAuth::check`] without the guard.
    async fn verify(&self, client: &CheckedClient, mail_from: &str, raw: &[u8]) -> AuthResults {
        let Some(message) = AuthenticatedMessage::parse(raw) else {
            return AuthResults { spf: "none".into(), dkim: "none".into(), dmarc: "none".into(), ..Default::default() };
        };
        // The results are about one author only: the one From address mail-auth read.
        let author = match message.froms() {
            [one] => one.clone(),
            _ => String::new(),
        };
        let cache = self.cache.as_ref();
        let helo = if client.helo.is_empty() { "unknown" } else { client.helo.as_str() };
        let (spf_sender, spf) = match (&client.spf_verdict, client.ip) {
            // A trusted verifier judged SPF where the message came in.
            (Some((verdict, judged_from)), _) => {
                let sender = judged_from.clone().filter(|s| s.contains('@')).unwrap_or_else(|| mail_from.to_owned());
                let domain = sender.rsplit_once('@').map_or("", |(_, d)| d).to_owned();
                let result = SpfResult::try_from(verdict.as_str()).unwrap_or(SpfResult::None);
                (sender, SpfOutput::new(domain).with_result(result))
            }
            (None, Some(ip)) => {
                let sender = if mail_from.is_empty() { format!("postmaster@{helo}") } else { mail_from.to_owned() };
                let spf = self
                    .authenticator
                    .verify_spf(
                        Parameters::new(mail_auth::spf::verify::SpfParameters::verify_mail_from(
                            ip, helo, &self.host, &sender,
                        ))
                        .with_txt_cache(cache),
                    )
                    .await;
                (sender, spf)
            }
            (None, None) => (mail_from.to_owned(), SpfOutput::new(String::new())),
        };
        let dkim = self.authenticator.verify_dkim(Parameters::new(&message).with_txt_cache(cache)).await;
        let mail_from_domain = spf_sender.rsplit_once('@').map_or(helo, |(_, d)| d).to_ascii_lowercase();
        let dmarc = self
            .authenticator
            .verify_dmarc(
                Parameters::new(mail_auth::dmarc::verify::DmarcParameters {
                    message: &message,
                    dkim_output: &dkim,
                    rfc5321_mail_from_domain: &mail_from_domain,
                    spf_output: &spf,
                    domain_suffix_fn: organizational_domain,
                })
                .with_txt_cache(cache),
            )
            .await;
        let dkim_word = if dkim.is_empty() {
            "none"
        } else if dkim.iter().any(|d| d.result() == &DkimResult::Pass) {
            "pass"
        } else {
            dkim_result(dkim[0].result())
        };
        // mail-auth leaves both results at None when a record exists but
        // nothing passed: that is a DMARC failure too.
        let dmarc_word = match (dmarc.dkim_result(), dmarc.spf_result(), dmarc.dmarc_record().is_some()) {
            (DmarcResult::Pass, _, _) | (_, DmarcResult::Pass, _) => "pass",
            (DmarcResult::TempError(_), _, _) | (_, DmarcResult::TempError(_), _) => "temperror",
            (DmarcResult::PermError(_), _, _) | (_, DmarcResult::PermError(_), _) => "permerror",
            (DmarcResult::Fail(_), _, _) | (_, DmarcResult::Fail(_), _) | (_, _, true) => "fail",
            _ => "none",
        };
        let from_domain = dmarc.domain().to_owned();
        // mail-auth reads any answer without a record as "no policy", a
        // server failure (SERVFAIL, REFUSED) included: during a DNS outage a
        // forged From would pass a domain that publishes `p=reject`. "none"
        // stands only once DNS has said there is no record.
        let dmarc_word = if dmarc_word == "none" && !self.cache.only_given && !from_domain.is_empty() {
            self.no_policy_or_temperror(&from_domain).await
        } else {
            dmarc_word
        };
        let aligned_with = |domain: &str| {
            !from_domain.is_empty()
                && organizational_domain(&domain.to_ascii_lowercase())
                    == organizational_domain(&from_domain.to_ascii_lowercase())
        };
        let spf_aligned = spf.result() == SpfResult::Pass && aligned_with(&mail_from_domain);
        let dkim_aligned =
            dkim.iter().any(|d| d.result() == &DkimResult::Pass && d.signature().is_some_and(|s| aligned_with(&s.d)));
        let aligned = match (spf_aligned, dkim_aligned) {
            (true, true) => "spf+dkim",
            (true, false) => "spf",
            (false, true) => "dkim",
            (false, false) => "",
        };
        AuthResults {
            spf: spf_result(spf.result()).to_owned(),
            dkim: dkim_word.to_owned(),
            dmarc: dmarc_word.to_owned(),
            from_domain,
            aligned: aligned.to_owned(),
            author,
            via: String::new(),
        }
    }
}

impl SenderAuth {
    /// `none` when DNS says that neither `_dmarc.` of `domain` nor that of
    /// its organizational domain holds a record (no such name, or no TXT
    /// there); `temperror` when a lookup failed instead.
    async fn no_policy_or_temperror(&self, domain: &str) -> &'static str {
        use mail_auth::hickory_resolver::proto::op::ResponseCode;
        let organizational = organizational_domain(domain);
        let names = std::iter::once(domain).chain((organizational != domain).then_some(organizational));
        for name in names {
            match self.authenticator.txt_raw_lookup(format!("_dmarc.{name}").as_str()).await {
                Ok(_) => {}
                Err(mail_auth::Error::DnsRecordNotFound(ResponseCode::NXDomain | ResponseCode::NoError)) => {}
                Err(_) => return "temperror",
            }
        }
        "none"
    }
}

/// The results of `checks`, or, if they panic, a DMARC failure (see
/// [`SenderAuth::check`]).
async fn failing_closed(checks: impl std::future::Future<Output = AuthResults>, bytes: usize) -> AuthResults {
    use futures_util::FutureExt;
    match std::panic::AssertUnwindSafe(checks).catch_unwind().await {
        Ok(results) => results,
        Err(_) => {
            tracing::warn!(bytes, "mail-auth gave up on a malformed message");
            AuthResults {
                spf: "permerror".to_owned(),
                dkim: "permerror".to_owned(),
                dmarc: "fail".to_owned(),
                ..Default::default()
            }
        }
    }
}

/// The registrable domain, for DMARC alignment: the public suffix list
/// decides (`acme.co.uk`, not `co.uk`, so that any `.co.uk` sender is not
/// aligned with every other); a name it does not know stays as it is.
/// The organizational domain of `domain` (`mail.acme.co.uk` → `acme.co.uk`),
/// by the public suffix list, as DMARC's relaxed alignment compares them.
pub fn organizational_domain(domain: &str) -> &str {
    psl::domain_str(domain).unwrap_or(domain)
}

fn spf_result(result: SpfResult) -> &'static str {
    match result {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
        SpfResult::None => "none",
    }
}

fn dkim_result(result: &DkimResult) -> &'static str {
    match result {
        DkimResult::Pass => "pass",
        DkimResult::Neutral(_) => "neutral",
        DkimResult::Fail(_) => "fail",
        DkimResult::PermError(_) => "permerror",
        DkimResult::TempError(_) => "temperror",
        DkimResult::None => "none",
    }
}

#[cfg(test)]
mod tests {
    use super::{AuthResults, failing_closed, organizational_domain};

    #[tokio::test]
    async fn checks_that_panic_count_as_a_dmarc_failure() {
        let crashed = failing_closed(async { panic!("a malformed signature") }, 10).await;
        assert!(crashed.dmarc_failed(), "{crashed:?}");
        assert_eq!((crashed.spf.as_str(), crashed.dkim.as_str()), ("permerror", "permerror"));
        let passed = AuthResults { dmarc: "pass".into(), ..Default::default() };
        assert!(!failing_closed(async { passed }, 10).await.dmarc_failed());
    }

    #[test]
    fn results_are_recorded_and_read_back_with_their_author() {
        let results = AuthResults {
            spf: "pass".into(),
            dkim: "none".into(),
            dmarc: "none".into(),
            from_domain: "acme.example".into(),
            aligned: "spf".into(),
            author: "olivia@acme.example".into(),
            via: "received".into(),
        };
        let read = AuthResults::from_summary(&results.summary()).unwrap();
        assert_eq!(read, results);
        assert!(read.authenticates("olivia@acme.example") && !read.authenticates("mike@acme.example"));
        let nobody = AuthResults { author: String::new(), ..results };
        assert!(!AuthResults::from_summary(&nobody.summary()).unwrap().is_about("olivia@acme.example"));
        // Recorded before authors were: judged by the domain alone.
        let old = AuthResults::from_summary("spf=pass dkim=none dmarc=pass (acme.example)").unwrap();
        assert!(old.authenticates("olivia@acme.example") && !old.is_about("mallory@evil.example"));
    }

    #[test]
    fn organizational_domains() {
        assert_eq!(organizational_domain("mail.acme.example"), "acme.example");
        assert_eq!(organizational_domain("acme.example"), "acme.example");
        assert_eq!(organizational_domain("localhost"), "localhost");
        assert_eq!(organizational_domain("mail.acme.co.uk"), "acme.co.uk");
        assert_ne!(organizational_domain("evil.co.uk"), organizational_domain("acme.co.uk"));
    }
}
