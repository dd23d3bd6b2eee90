//! Endpoint URLs and where webhooks may go (SSRF safety).
//!
//! An endpoint URL is absolute `http`/`https` with a host, no userinfo, no
//! fragment, at most 2048 characters ([`parse_endpoint_url`]). Unless a
//! deployment allows private targets, no webhook reaches an address that
//! [`forbidden`] names: loopback, private, link-local, shared (CGNAT),
//! multicast, broadcast, unspecified, documentation, benchmarking and
//! reserved ranges, with IPv4 embedded in IPv6 (mapped, compatible, NAT64,
//! 6to4) judged as the IPv4 address it carries.
//!
//! The check happens twice: when an endpoint is saved ([`check_endpoint`]:
//! every address the host resolves to must be allowed), and at every
//! delivery, in the sender's resolver, which drops forbidden addresses so
//! that a DNS answer changed since the first check cannot reach one.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use reqwest::Url;

/// The longest endpoint URL.
pub const MAX_URL_LEN: usize = 2048;

/// How long [`check_endpoint`] waits for DNS.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// A syntactically acceptable endpoint URL ([`parse_endpoint_url`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointUrl {
    url: Url,
}

impl EndpointUrl {
    /// The URL, normalized.
    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }

    /// The parsed URL.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The host as written in the URL (IPv6 in brackets).
    pub fn host_str(&self) -> &str {
        self.url.host_str().unwrap_or_default()
    }

    /// The port, explicit or the scheme's default.
    pub fn port(&self) -> u16 {
        self.url.port_or_known_default().unwrap_or(80)
    }

    /// The address, if the host is an IP literal (no DNS involved).
    pub fn ip_literal(&self) -> Option<IpAddr> {
        match self.url.host()? {
            url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
            url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
            url::Host::Domain(_) => None,
        }
    }

    /// The host name to resolve (without IPv6 brackets).
    fn host_for_lookup(&self) -> String {
        match self.ip_literal() {
            Some(ip) => ip.to_string(),
            None => self.host_str().to_owned(),
        }
    }
}

impl std::fmt::Display for EndpointUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.url.as_str())
    }
}

/// Parses an endpoint URL: absolute `http` or `https`, a host, no
/// `user:password@`, no `#fragment`, at most 2048 characters.
pub fn parse_endpoint_url(s: &str) -> Result<EndpointUrl, UrlError> {
    if s.len() > MAX_URL_LEN {
        return Err(UrlError::TooLong { len: s.len() });
    }
    let url = Url::parse(s).map_err(|e| UrlError::Malformed {
        reason: e.to_string(),
    })?;
    match url.scheme() {
        "http" | "https" => {}
        other => {
            return Err(UrlError::Scheme {
                scheme: other.chars().take(20).collect(),
            })
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlError::Userinfo);
    }
    if url.fragment().is_some() {
        return Err(UrlError::Fragment);
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(UrlError::MissingHost);
    }
    // Normalization (percent-encoding, IDNA) may lengthen the URL.
    if url.as_str().len() > MAX_URL_LEN {
        return Err(UrlError::TooLong {
            len: url.as_str().len(),
        });
    }
    Ok(EndpointUrl { url })
}

/// Why webhooks may not go to `ip`, or `None` if they may. The reason reads
/// after "address 10.0.0.1 is …".
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if ip.is_unspecified() => "unspecified",
        (0, _, _) => "reserved (0.0.0.0/8, \"this network\")",
        (127, _, _) => "loopback",
        (10, _, _) | (192, 168, _) => "private",
        (172, 16..=31, _) => "private",
        (169, 254, _) => "link-local",
        (100, 64..=127, _) => "in the shared address space (carrier-grade NAT)",
        (192, 0, 0) => "reserved (IETF protocol assignments)",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "reserved for documentation",
        (198, 18..=19, _) => "reserved for benchmarking",
        (224..=239, _, _) => "multicast",
        _ if ip.is_broadcast() => "broadcast",
        (240..=255, _, _) => "reserved (240.0.0.0/4)",
        _ => return None,
    })
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    let s = ip.segments();
    let o = ip.octets();
    let embedded = |i: usize| Ipv4Addr::new(o[i], o[i + 1], o[i + 2], o[i + 3]);
    // IPv4-mapped (::ffff:a.b.c.d) and the deprecated IPv4-compatible
    // (::a.b.c.d): a socket connects to the IPv4 address.
    if s[..5] == [0; 5] && (s[5] == 0xffff || s[5] == 0) {
        return forbidden_v4(embedded(12));
    }
    // NAT64, well-known prefix 64:ff9b::/96: the translator connects to the
    // embedded IPv4 address.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return forbidden_v4(embedded(12));
    }
    // 6to4, 2002::/16: relays reach the IPv4 address in bits 16..48.
    if s[0] == 0x2002 {
        return forbidden_v4(embedded(2));
    }
    Some(match s[0] {
        // Local-use NAT64 (RFC 8215) translates into a private network.
        0x64 if s[1] == 0xff9b && s[2] == 1 => "private (local-use NAT64)",
        0x100 if s[1..4] == [0, 0, 0] => "reserved (discard-only)",
        0x2001 if s[1] == 0 => "reserved (Teredo)",
        0x2001 if s[1] == 2 && s[2] == 0 => "reserved for benchmarking",
        0x2001 if s[1] == 0x0db8 => "reserved for documentation",
        0xfc00..=0xfdff => "private (unique local)",
        0xfe80..=0xfebf => "link-local",
        0xfec0..=0xfeff => "private (site-local)",
        0xff00..=0xffff => "multicast",
        _ => return None,
    })
}

/// Checks an endpoint before it is saved: the host must resolve (within
/// [`RESOLVE_TIMEOUT`]), and unless `allow_private`, none of its addresses
/// may be [`forbidden`].
pub async fn check_endpoint(url: &EndpointUrl, allow_private: bool) -> Result<(), UrlError> {
    if let Some(ip) = url.ip_literal() {
        return check_ip(url.host_str(), ip, allow_private);
    }
    let host = url.host_for_lookup();
    let addrs = resolve(&host, url.port(), RESOLVE_TIMEOUT).await?;
    for addr in addrs {
        check_ip(&host, addr.ip(), allow_private)?;
    }
    Ok(())
}

fn check_ip(host: &str, ip: IpAddr, allow_private: bool) -> Result<(), UrlError> {
    match forbidden(ip) {
        Some(why) if !allow_private => Err(UrlError::Forbidden {
            host: host.to_owned(),
            ip,
            why,
        }),
        _ => Ok(()),
    }
}

/// Resolves `host` with the system resolver, bounded in time; an empty
/// answer is an error.
pub(crate) async fn resolve(
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<Vec<std::net::SocketAddr>, UrlError> {
    let unresolvable = |detail: String| UrlError::Unresolvable {
        host: host.chars().take(253).collect(),
        detail,
    };
    let addrs = match tokio::time::timeout(timeout, tokio::net::lookup_host((host, port))).await {
        Err(_) => {
            return Err(unresolvable(format!(
                "no answer within {}",
                crate::sender::human_duration(timeout)
            )))
        }
        Ok(Err(e)) => return Err(unresolvable(e.to_string())),
        Ok(Ok(addrs)) => addrs.collect::<Vec<_>>(),
    };
    if addrs.is_empty() {
        return Err(unresolvable("no addresses".to_owned()));
    }
    Ok(addrs)
}

/// Why an endpoint URL was refused. The messages are sentences for the
/// user; [`UrlError::code`] is stable for the API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("The endpoint URL is not a valid absolute URL: {reason}.")]
    Malformed { reason: String },
    #[error("The endpoint URL is {len} characters long; the limit is 2048.")]
    TooLong { len: usize },
    #[error("The endpoint URL must use http or https, not '{scheme}'.")]
    Scheme { scheme: String },
    #[error("The endpoint URL has no host.")]
    MissingHost,
    #[error("The endpoint URL must not contain a user name or password; put credentials in the path or query if the receiver needs them.")]
    Userinfo,
    #[error(
        "The endpoint URL must not contain a fragment ('#…'); it is never sent to the server."
    )]
    Fragment,
    #[error("{}", forbidden_message(host, ip, why))]
    Forbidden {
        host: String,
        ip: IpAddr,
        why: &'static str,
    },
    #[error("The endpoint host {host} does not resolve: {detail}.")]
    Unresolvable { host: String, detail: String },
}

fn forbidden_message(host: &str, ip: &IpAddr, why: &str) -> String {
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    if literal.parse::<IpAddr>().ok() == Some(*ip) {
        format!("The endpoint address {ip} is {why}; webhooks are sent only to public addresses.")
    } else {
        format!("The endpoint host {host} resolves to {ip}, which is {why}; webhooks are sent only to public addresses.")
    }
}

impl UrlError {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            UrlError::Malformed { .. } => "invalid_url",
            UrlError::TooLong { .. } => "url_too_long",
            UrlError::Scheme { .. } => "unsupported_url_scheme",
            UrlError::MissingHost => "url_without_host",
            UrlError::Userinfo => "url_with_credentials",
            UrlError::Fragment => "url_with_fragment",
            UrlError::Forbidden { .. } => "forbidden_address",
            UrlError::Unresolvable { .. } => "unresolvable_host",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn why(s: &str) -> Option<&'static str> {
        forbidden(s.parse().unwrap())
    }

    #[test]
    fn forbidden_ipv4_ranges() {
        let cases = [
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "reserved (0.0.0.0/8, \"this network\")"),
            ("127.0.0.1", "loopback"),
            ("127.255.255.254", "loopback"),
            ("10.0.0.1", "private"),
            ("10.255.255.255", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            (
                "100.64.0.1",
                "in the shared address space (carrier-grade NAT)",
            ),
            (
                "100.127.255.255",
                "in the shared address space (carrier-grade NAT)",
            ),
            ("192.0.0.8", "reserved (IETF protocol assignments)"),
            ("192.0.2.1", "reserved for documentation"),
            ("198.51.100.7", "reserved for documentation"),
            ("203.0.113.9", "reserved for documentation"),
            ("198.18.0.1", "reserved for benchmarking"),
            ("198.19.255.255", "reserved for benchmarking"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("240.0.0.1", "reserved (240.0.0.0/4)"),
            ("255.255.255.254", "reserved (240.0.0.0/4)"),
            ("255.255.255.255", "broadcast"),
        ];
        for (ip, expected) in cases {
            assert_eq!(why(ip), Some(expected), "{ip}");
        }
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "172.15.255.255",
            "172.32.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "192.0.1.1",
            "192.0.3.1",
            "198.17.255.255",
            "198.20.0.0",
            "198.51.101.1",
            "203.0.114.1",
            "169.253.1.1",
            "223.255.255.255",
            "11.0.0.1",
        ] {
            assert_eq!(why(ip), None, "{ip}");
        }
    }

    #[test]
    fn forbidden_ipv6_ranges() {
        let cases = [
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("fc00::1", "private (unique local)"),
            ("fdff:ffff::1", "private (unique local)"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fec0::1", "private (site-local)"),
            ("ff02::1", "multicast"),
            ("2001:db8::1", "reserved for documentation"),
            ("2001:db8:ffff::1", "reserved for documentation"),
            ("2001::1", "reserved (Teredo)"),
            ("2001:2::1", "reserved for benchmarking"),
            ("100::1", "reserved (discard-only)"),
            ("64:ff9b:1::1", "private (local-use NAT64)"),
        ];
        for (ip, expected) in cases {
            assert_eq!(why(ip), Some(expected), "{ip}");
        }
        for ip in [
            "2606:4700:4700::1111",
            "2a00:1450:4001::1",
            "2001:db9::1",
            "2001:4860::8888",
            "fbff::1",
        ] {
            assert_eq!(why(ip), None, "{ip}");
        }
    }

    #[test]
    fn ipv4_embedded_in_ipv6_is_judged_as_ipv4() {
        // Mapped.
        assert_eq!(why("::ffff:127.0.0.1"), Some("loopback"));
        assert_eq!(why("::ffff:10.1.2.3"), Some("private"));
        assert_eq!(why("::ffff:169.254.169.254"), Some("link-local"));
        assert_eq!(why("::ffff:8.8.8.8"), None);
        // Compatible (deprecated).
        assert_eq!(why("::192.168.0.1"), Some("private"));
        assert_eq!(why("::127.0.0.2"), Some("loopback"));
        assert_eq!(why("::8.8.8.8"), None);
        // NAT64.
        assert_eq!(why("64:ff9b::10.0.0.1"), Some("private"));
        assert_eq!(why("64:ff9b::7f00:1"), Some("loopback"));
        assert_eq!(why("64:ff9b::8.8.8.8"), None);
        // 6to4.
        assert_eq!(why("2002:a00:1::1"), Some("private"));
        assert_eq!(why("2002:7f00:1::"), Some("loopback"));
        assert_eq!(why("2002:808:808::1"), None);
    }

    #[test]
    fn endpoint_urls() {
        let u = parse_endpoint_url("https://hooks.example.com/in?x=1").unwrap();
        assert_eq!(u.as_str(), "https://hooks.example.com/in?x=1");
        assert_eq!(u.host_str(), "hooks.example.com");
        assert_eq!(u.port(), 443);
        assert_eq!(u.ip_literal(), None);
        let u = parse_endpoint_url("http://[::1]:8080/").unwrap();
        assert_eq!(u.ip_literal(), Some("::1".parse().unwrap()));
        assert_eq!(u.port(), 8080);
        // Odd IPv4 spellings are normalized, so they cannot dodge the check.
        let u = parse_endpoint_url("http://0x7f.1/").unwrap();
        assert_eq!(u.ip_literal(), Some("127.0.0.1".parse().unwrap()));
        let u = parse_endpoint_url("http://2130706433/").unwrap();
        assert_eq!(u.ip_literal(), Some("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn endpoint_url_refusals() {
        let cases = [
            ("/relative", "invalid_url"),
            ("not a url", "invalid_url"),
            ("http://exa mple.com/", "invalid_url"),
            ("ftp://example.com/", "unsupported_url_scheme"),
            ("file:///etc/passwd", "unsupported_url_scheme"),
            ("javascript:alert(1)", "unsupported_url_scheme"),
            ("https://user:pw@example.com/", "url_with_credentials"),
            ("https://user@example.com/", "url_with_credentials"),
            ("https://example.com/#frag", "url_with_fragment"),
            ("https://example.com/#", "url_with_fragment"),
            ("http://", "invalid_url"),
        ];
        for (url, code) in cases {
            let e = parse_endpoint_url(url).unwrap_err();
            assert_eq!(e.code(), code, "{url}: {e}");
        }
        let long = format!("https://example.com/{}", "a".repeat(2048));
        let e = parse_endpoint_url(&long).unwrap_err();
        assert_eq!(e.code(), "url_too_long");
        assert_eq!(
            e.to_string(),
            format!(
                "The endpoint URL is {} characters long; the limit is 2048.",
                long.len()
            )
        );
        let ok = format!("https://example.com/{}", "a".repeat(2048 - 20));
        assert_eq!(ok.len(), 2048);
        assert!(parse_endpoint_url(&ok).is_ok());
    }

    #[tokio::test]
    async fn check_endpoint_refuses_forbidden_literals_and_names() {
        let u = parse_endpoint_url("http://10.0.0.1/hook").unwrap();
        let e = check_endpoint(&u, false).await.unwrap_err();
        assert_eq!(e.code(), "forbidden_address");
        assert_eq!(
            e.to_string(),
            "The endpoint address 10.0.0.1 is private; webhooks are sent only to public addresses."
        );
        assert_eq!(check_endpoint(&u, true).await, Ok(()));
        let u = parse_endpoint_url("http://[::ffff:127.0.0.1]/").unwrap();
        assert_eq!(
            check_endpoint(&u, false).await.unwrap_err().code(),
            "forbidden_address"
        );
        // `localhost` resolves (from /etc/hosts) to loopback only.
        let u = parse_endpoint_url("http://localhost:9/").unwrap();
        let e = check_endpoint(&u, false).await.unwrap_err();
        assert!(
            matches!(&e, UrlError::Forbidden { host, why: "loopback", .. } if host == "localhost"),
            "{e:?}"
        );
        // 127.0.0.1 here; ::1 first where /etc/hosts says so.
        let msg = e.to_string();
        assert!(
            msg.starts_with("The endpoint host localhost resolves to "),
            "{msg}"
        );
        assert!(
            msg.ends_with(", which is loopback; webhooks are sent only to public addresses."),
            "{msg}"
        );
        assert_eq!(check_endpoint(&u, true).await, Ok(()));
    }

    #[tokio::test]
    async fn check_endpoint_refuses_names_that_do_not_resolve() {
        // `.invalid` never resolves (RFC 2606), with or without a network.
        let u = parse_endpoint_url("https://no-such-host.invalid/").unwrap();
        let e = check_endpoint(&u, true).await.unwrap_err();
        assert_eq!(e.code(), "unresolvable_host", "{e}");
        assert!(e
            .to_string()
            .starts_with("The endpoint host no-such-host.invalid does not resolve: "));
    }
}
