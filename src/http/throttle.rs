//! Guessing credentials is slowed per client address: failed Bearer checks
//! and failed console logins are counted per address, answered later and
//! later, and then refused with `429 Too Many Requests` and `Retry-After`
//! for a time that doubles, while everyone else is answered at once.
//!
//! The client address is the connection's, or, when the connection comes
//! from one of the trusted proxies (`trusted_proxies`; by default a reverse
//! proxy on the same host, as the console guide sets it up), the last
//! address of `X-Forwarded-For`: the one the proxy itself added. A success
//! forgets an address's failures.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures answered at once.
const FREE_FAILURES: u32 = 3;
/// Failures after which an address is refused with `429` for a while.
const LOCKOUT_AFTER: u32 = 10;
/// The first refusal's length; each further failure doubles it.
const FIRST_LOCKOUT: Duration = Duration::from_secs(30);
/// The longest refusal.
const MAX_LOCKOUT: Duration = Duration::from_secs(3600);
/// An address with no failure for this long starts afresh.
const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// Addresses remembered at most (the oldest are forgotten first).
const MAX_ADDRESSES: usize = 100_000;

/// One address's failures.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    /// Refused with `429` until then.
    locked_until: Option<Instant>,
}

/// What to do with a credential check from an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Check it now.
    Check,
    /// Refuse it with `429`; try again after this long.
    Locked(Duration),
}

/// Failed credential checks per client address.
#[derive(Debug, Default)]
pub struct Throttle {
    failures: Mutex<HashMap<IpAddr, Failures>>,
}

impl Throttle {
    /// Whether `ip` may try a credential now.
    pub fn verdict(&self, ip: IpAddr) -> Verdict {
        let map = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match map.get(&ip).and_then(|f| f.locked_until) {
            Some(until) if until > Instant::now() => Verdict::Locked(until - Instant::now()),
            _ => Verdict::Check,
        }
    }

    /// Records a failed check from `ip`; how long to wait before answering
    /// it (zero for the first few, then doubling from 100 ms to 800 ms).
    pub fn failed(&self, ip: IpAddr) -> Duration {
        let now = Instant::now();
        let mut map = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= MAX_ADDRESSES && !map.contains_key(&ip) {
            map.retain(|_, f| now.duration_since(f.last) < FORGET_AFTER);
            if map.len() >= MAX_ADDRESSES {
                let oldest = map.iter().min_by_key(|(_, f)| f.last).map(|(ip, _)| *ip);
                oldest.and_then(|ip| map.remove(&ip));
            }
        }
        let entry = map.entry(ip).or_insert(Failures { count: 0, last: now, locked_until: None });
        if now.duration_since(entry.last) > FORGET_AFTER {
            *entry = Failures { count: 0, last: now, locked_until: None };
        }
        entry.count += 1;
        entry.last = now;
        if entry.count >= LOCKOUT_AFTER {
            let doublings = (entry.count - LOCKOUT_AFTER).min(16);
            entry.locked_until = Some(now + (FIRST_LOCKOUT * (1 << doublings)).min(MAX_LOCKOUT));
        }
        match entry.count.checked_sub(FREE_FAILURES + 1) {
            None => Duration::ZERO,
            Some(extra) => Duration::from_millis(100 << extra.min(3)),
        }
    }

    /// Forgets `ip`'s failures after a check that succeeded.
    pub fn succeeded(&self, ip: IpAddr) {
        let mut map = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.get(&ip).is_some_and(|f| f.locked_until.is_none()) {
            map.remove(&ip);
        }
    }
}

/// The reverse proxies whose `X-Forwarded-For`, `X-Forwarded-Host` and
/// `X-Forwarded-Proto` are believed (`trusted_proxies` in the config file;
/// by default a proxy on this host: 127.0.0.0/8 and ::1). From any other
/// peer those headers are ignored: anyone can send them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedProxies(crate::domain::Networks);

impl Default for TrustedProxies {
    fn default() -> Self {
        let loopback = ["127.0.0.0/8", "::1/128"].map(str::to_owned);
        Self(crate::domain::Networks::parse(&loopback).unwrap_or_default())
    }
}

impl TrustedProxies {
    /// Addresses (`10.0.0.5`) and networks (`10.0.0.0/8`); an empty list
    /// believes no forwarded header.
    pub fn parse(list: &[String]) -> Result<Self, String> {
        crate::domain::Networks::parse(list).map(Self)
    }

    /// Whether a connection from `peer` is one of the proxies.
    pub fn trust(&self, peer: IpAddr) -> bool {
        self.0.contains(peer)
    }
}

/// The client's address: the connection's, or behind trusted proxies the
/// last `X-Forwarded-For` address that is not itself a trusted proxy (read
/// from the right: each proxy appends the address it was called from, so
/// that is the first address no trusted proxy vouches for).
///
/// Addresses are counted as IPv4 (an IPv4-mapped IPv6 address is its IPv4
/// address) and IPv6 by its /64, the least a single client is given.
pub fn client_ip(peer: IpAddr, headers: &axum::http::HeaderMap, proxies: &TrustedProxies) -> IpAddr {
    let peer = peer.to_canonical();
    let client = match proxies.trust(peer) {
        false => peer,
        true => {
            let forwarded: Vec<IpAddr> = headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(|a| a.trim().parse::<IpAddr>().map(|ip| ip.to_canonical()))
                .collect::<Result<_, _>>()
                .unwrap_or_default();
            forwarded.iter().rev().find(|ip| !proxies.trust(**ip)).or(forwarded.first()).copied().unwrap_or(peer)
        }
    };
    network_of(client)
}

/// The address a client is counted as: an IPv4 address (an IPv4-mapped
/// IPv6 address is its IPv4 address), or an IPv6 address's /64, the least a
/// single client is given.
pub fn network_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::{LOCKOUT_AFTER, Throttle, TrustedProxies, Verdict, client_ip};
    use std::net::IpAddr;
    use std::time::Duration;

    #[test]
    fn failures_slow_one_address_then_lock_it_out_and_leave_others_alone() {
        let throttle = Throttle::default();
        let guesser: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        let waits: Vec<Duration> = (0..LOCKOUT_AFTER - 1).map(|_| throttle.failed(guesser)).collect();
        assert_eq!(&waits[..3], &[Duration::ZERO; 3], "the first few mistakes cost nothing");
        assert!(waits.windows(2).all(|w| w[1] >= w[0]) && waits[8] > waits[3], "{waits:?}");
        assert_eq!(throttle.verdict(guesser), Verdict::Check);
        throttle.failed(guesser);
        assert!(matches!(throttle.verdict(guesser), Verdict::Locked(d) if d > Duration::from_secs(20)));
        assert_eq!(throttle.verdict(other), Verdict::Check, "someone else is not slowed");
        // A success does not lift a lockout.
        throttle.succeeded(guesser);
        assert!(matches!(throttle.verdict(guesser), Verdict::Locked(_)));
    }

    #[test]
    fn behind_a_local_proxy_the_forwarded_address_counts() {
        let mut headers = axum::http::HeaderMap::new();
        headers.append("x-forwarded-for", "203.0.113.9, 198.51.100.4".parse().unwrap());
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let proxies = TrustedProxies::default();
        assert_eq!(client_ip(local, &headers, &proxies), "198.51.100.4".parse::<IpAddr>().unwrap());
        let remote: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(client_ip(remote, &headers, &proxies), remote, "a remote client cannot claim another address");
        // A configured proxy elsewhere is believed; with none, not even a local one.
        let lan = TrustedProxies::parse(&["10.0.0.0/8".to_owned(), "192.0.2.1".to_owned()]).unwrap();
        assert_eq!(client_ip(remote, &headers, &lan), "198.51.100.4".parse::<IpAddr>().unwrap());
        assert_eq!(client_ip(local, &headers, &lan), local);
        assert_eq!(client_ip(local, &headers, &TrustedProxies::parse(&[]).unwrap()), local);
        assert!(TrustedProxies::parse(&["10.0.0.0/33".to_owned()]).is_err());
        // A chain of trusted proxies (an edge, then nginx here): the client is
        // the last address none of them is.
        let mut chain = axum::http::HeaderMap::new();
        chain.append("x-forwarded-for", "198.51.100.7, 10.1.2.3".parse().unwrap());
        let edge = TrustedProxies::parse(&["127.0.0.1".to_owned(), "10.0.0.0/8".to_owned()]).unwrap();
        assert_eq!(client_ip(local, &chain, &edge), "198.51.100.7".parse::<IpAddr>().unwrap());
        // One IPv6 client is its /64, however many addresses it takes from it;
        // an IPv4-mapped address is its IPv4 address.
        let (a, b): (IpAddr, IpAddr) = ("2001:db8:1:2::1".parse().unwrap(), "2001:db8:1:2:ffff::9".parse().unwrap());
        let none = axum::http::HeaderMap::new();
        assert_eq!(client_ip(a, &none, &proxies), client_ip(b, &none, &proxies));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(client_ip(mapped, &none, &proxies), remote);
    }
}
