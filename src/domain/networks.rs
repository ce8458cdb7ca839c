//! A list of IP networks from the configuration (`10.0.0.0/8`, or a single
//! address), and whether an address is in one of them: the trusted relays,
//! the proxies whose PROXY header is believed, and the HTTP proxies whose
//! forwarded headers are.

use std::net::IpAddr;

/// Addresses and networks; an empty list contains nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Networks(Vec<ipnet::IpNet>);

impl Networks {
    /// Reads `10.0.0.5`, `10.0.0.0/8`, `::1` or `2001:db8::/32` items; the
    /// error names the first that is neither an address nor a network.
    pub fn parse(list: &[String]) -> Result<Self, String> {
        list.iter()
            .map(|text| {
                let text = text.trim();
                text.parse::<ipnet::IpNet>()
                    .or_else(|_| text.parse::<IpAddr>().map(ipnet::IpNet::from))
                    .map(|net| net.trunc())
                    .map_err(|_| format!("{text:?} is not an address or a network like 10.0.0.0/8"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// Whether `ip` (an IPv4-mapped IPv6 address counts as its IPv4
    /// address) is in one of the networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::Networks;

    #[test]
    fn addresses_and_networks_of_both_families() {
        let list: Vec<String> = ["127.0.0.1", "10.0.0.0/8", "2001:db8::/32"].map(str::to_owned).to_vec();
        let nets = Networks::parse(&list).unwrap();
        let has = |ip: &str| nets.contains(ip.parse().unwrap());
        assert!(has("127.0.0.1") && has("10.200.3.4") && has("::ffff:10.1.1.1") && has("2001:db8:5::1"));
        assert!(!has("127.0.0.2") && !has("11.0.0.1") && !has("2001:db9::1"));
        assert!(Networks::parse(&["10.0.0.0/33".to_owned()]).unwrap_err().contains("10.0.0.0/33"));
        assert!(!Networks::default().contains("127.0.0.1".parse().unwrap()));
    }
}
