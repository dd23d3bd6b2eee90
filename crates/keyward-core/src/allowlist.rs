//! IP allowlists: CIDR blocks and single addresses, IPv4 and IPv6. An empty
//! list allows every address. IPv4-mapped IPv6 clients (`::ffff:10.1.2.3`)
//! are matched as the IPv4 address they carry, and so are entries: a block
//! of mapped addresses (`::ffff:10.0.0.0/104`) is the IPv4 block it maps
//! (`10.0.0.0/8`). An IPv6 block wider than the mapped range (`::/80`) does
//! not cover IPv4 clients.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllowlistError {
    #[error("{0:?} is not an IP address or CIDR block (for example 203.0.113.7, 10.0.0.0/8 or 2001:db8::/32)")]
    Syntax(String),
    #[error("{given:?} has host bits set; did you mean {network}?")]
    HostBits { given: String, network: String },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpAllowlist {
    nets: Vec<IpNet>,
    deny_all: bool,
}

impl IpAllowlist {
    /// Parses entries such as `10.0.0.0/8`, `2001:db8::/32` or `203.0.113.7`.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<IpAllowlist, AllowlistError> {
        let mut nets = Vec::with_capacity(entries.len());
        for e in entries {
            let e = e.as_ref().trim();
            let net = match e.parse::<IpNet>() {
                Ok(net) => {
                    if net.trunc() != net {
                        return Err(AllowlistError::HostBits {
                            given: e.to_owned(),
                            network: net.trunc().to_string(),
                        });
                    }
                    net
                }
                Err(_) => e
                    .parse::<IpAddr>()
                    .map(IpNet::from)
                    .map_err(|_| AllowlistError::Syntax(e.to_owned()))?,
            };
            nets.push(canonical_net(net));
        }
        Ok(IpAllowlist {
            nets,
            deny_all: false,
        })
    }

    /// An allowlist that allows no address at all: the safe reading of a
    /// stored list that cannot be parsed.
    pub fn deny_all() -> IpAllowlist {
        IpAllowlist {
            nets: Vec::new(),
            deny_all: true,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// The entries in canonical form (`10.0.0.0/8`, `203.0.113.7/32`).
    pub fn entries(&self) -> Vec<String> {
        self.nets.iter().map(ToString::to_string).collect()
    }

    /// Whether `ip` may use the key. An empty list allows all; a non-empty
    /// list with no known client address allows none.
    pub fn allows(&self, ip: Option<IpAddr>) -> bool {
        if self.deny_all {
            return false;
        }
        if self.nets.is_empty() {
            return true;
        }
        let Some(ip) = ip else { return false };
        let ip = canonical(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }
}

/// A block of IPv4-mapped IPv6 addresses becomes the IPv4 block it maps:
/// clients are matched by their [`canonical`] address, which is never a
/// mapped one, so the block as written could match no client.
fn canonical_net(net: IpNet) -> IpNet {
    let IpNet::V6(v6) = net else { return net };
    let mapped = v6.network().to_ipv4_mapped();
    match (mapped, v6.prefix_len().checked_sub(96)) {
        (Some(v4), Some(len)) => Ipv4Net::new(v4, len).map_or(net, IpNet::V4),
        _ => net,
    }
}

/// IPv4-mapped IPv6 addresses become the IPv4 address they carry.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn cidrs_and_single_addresses() {
        let l = IpAllowlist::parse(&["10.0.0.0/8", "2001:db8::/32", "203.0.113.7"]).unwrap();
        assert!(l.allows(ip("10.200.1.1")));
        assert!(l.allows(ip("::ffff:10.1.2.3")));
        assert!(l.allows(ip("2001:db8:abcd::1")));
        assert!(l.allows(ip("203.0.113.7")));
        assert!(!l.allows(ip("203.0.113.8")));
        assert!(!l.allows(ip("2001:db9::1")));
        assert!(!l.allows(None));
        assert_eq!(
            l.entries(),
            vec!["10.0.0.0/8", "2001:db8::/32", "203.0.113.7/32"]
        );
    }

    /// Found by the `cidr` fuzz target: an entry of IPv4-mapped addresses
    /// matched no client at all (clients are matched as IPv4).
    #[test]
    fn mapped_entries_are_the_ipv4_blocks_they_map() {
        let l = IpAllowlist::parse(&["::ffff:203.0.113.7", "::ffff:10.0.0.0/104"]).unwrap();
        assert_eq!(l.entries(), vec!["203.0.113.7/32", "10.0.0.0/8"]);
        assert!(l.allows(ip("203.0.113.7")));
        assert!(l.allows(ip("::ffff:203.0.113.7")));
        assert!(l.allows(ip("10.9.8.7")));
        assert!(!l.allows(ip("11.0.0.1")));
        // Wider IPv6 blocks stay IPv6: they do not cover IPv4 clients.
        let wide = IpAllowlist::parse(&["::/80"]).unwrap();
        assert_eq!(wide.entries(), vec!["::/80"]);
        assert!(wide.allows(ip("::1")));
        assert!(!wide.allows(ip("::ffff:10.0.0.1")));
    }

    #[test]
    fn empty_allows_all() {
        assert!(IpAllowlist::default().allows(None));
        assert!(!IpAllowlist::deny_all().allows(Some("127.0.0.1".parse().unwrap())));
    }

    #[test]
    fn bad_entries_are_explained() {
        assert!(matches!(
            IpAllowlist::parse(&["10.0.0.1/8"]),
            Err(AllowlistError::HostBits { .. })
        ));
        assert!(matches!(
            IpAllowlist::parse(&["10.0.0.0/33"]),
            Err(AllowlistError::Syntax(_))
        ));
        assert!(matches!(
            IpAllowlist::parse(&["example.com"]),
            Err(AllowlistError::Syntax(_))
        ));
    }
}
