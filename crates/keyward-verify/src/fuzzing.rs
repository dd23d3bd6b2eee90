//! The property behind the fuzz target `credential` (see `fuzz/README.md`):
//! the door through which `fuzz/` reaches this crate, so no item is made
//! more visible for it. The function takes the fuzzer's bytes and panics
//! when a property does not hold; `cargo test` replays every saved input
//! (`fuzz/regressions/credential/`) through the same function on stable
//! Rust. Not part of keyward's API: compiled for tests and with the
//! `fuzzing` feature only.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;

use ipnet::IpNet;
use keyward_core::allowlist::canonical;
use keyward_core::secret::KeyFormat;

use crate::credential::{self, CredentialRules, Presented, Scheme};

/// Query and cookie names that must be refused as a misplaced credential.
const MISPLACED: &[&str] = &[
    "api_key",
    "apikey",
    "api-key",
    "key",
    "token",
    "access_token",
    "x-api-key",
];

/// The default configuration's rules: the `X-API-Key` header, and keys of
/// the environments `live` (`kw_live_`) and `test` (`kw_test_`) and root
/// keys (`kw_root_`).
fn rules() -> &'static CredentialRules {
    static RULES: OnceLock<CredentialRules> = OnceLock::new();
    RULES.get_or_init(|| CredentialRules {
        header: "X-API-Key".to_owned(),
        format: KeyFormat::new([("live", "kw_live_"), ("test", "kw_test_")], "kw_root_").unwrap(),
    })
}

/// Credential extraction and the client address. The input's first byte
/// picks the function (bit 3) and the accepted schemes (bits 0–2); the rest
/// is lines: the first is the query string (or, for `client_ip`, the peer
/// and the trusted proxies as bytes), then `name:value` headers.
pub fn credential(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut lines = rest.split(|&b| b == b'\n');
    let first = lines.next().unwrap_or_default();
    let owned: Vec<(String, &[u8])> = lines
        .map(|l| {
            let colon = l.iter().position(|&b| b == b':').unwrap_or(l.len());
            let name = String::from_utf8_lossy(&l[..colon]).into_owned();
            (name, l.get(colon + 1..).unwrap_or_default())
        })
        .collect();
    let headers: Vec<httparse::Header<'_>> = owned
        .iter()
        .map(|(name, value)| httparse::Header { name, value })
        .collect();
    for h in &headers {
        let text = h
            .value
            .iter()
            .all(|&b| b == b'\t' || (32..127).contains(&b));
        assert_eq!(credential::header_text(h.value).is_some(), text);
    }
    if mode & 8 == 0 {
        extract(mode, first, &headers);
    } else {
        client_ip(first, &headers);
    }
}

fn extract(mode: u8, first: &[u8], headers: &[httparse::Header<'_>]) {
    let all = [Scheme::Bearer, Scheme::Header, Scheme::Basic];
    let mut schemes: Vec<Scheme> = (0..3)
        .filter(|i| mode & (1 << i) != 0)
        .map(|i| all[i])
        .collect();
    if schemes.is_empty() {
        schemes = all.to_vec();
    }
    let query = (!first.is_empty()).then(|| String::from_utf8_lossy(first));
    let rules = rules();
    let result = credential::extract_from(headers, query.as_deref(), rules, &schemes);
    let in_query = query.as_deref().is_some_and(|q| {
        q.split('&').any(|pair| {
            let name = pair.split('=').next().unwrap_or("");
            MISPLACED.iter().any(|m| m.eq_ignore_ascii_case(name))
        })
    });
    if in_query {
        assert!(
            matches!(result, Err(credential::CredentialError::Misplaced { .. })),
            "{query:?}: {result:?}"
        );
    }
    let key_header = rules.header.as_str();
    let carriers = || {
        headers.iter().filter(|h| {
            h.name.eq_ignore_ascii_case("authorization") || h.name.eq_ignore_ascii_case(key_header)
        })
    };
    let has = |name: &str| headers.iter().any(|h| h.name.eq_ignore_ascii_case(name));
    match result {
        Ok(Some(Presented::Secret(secret))) => {
            let secret = secret.expose();
            assert!(credential::header_text(secret.as_bytes()).is_some());
            assert_eq!(secret, secret.trim());
            // Taken from a header that carries credentials, as it was sent.
            assert!(
                secret.is_empty()
                    || carriers().any(|h| h
                        .value
                        .windows(secret.len())
                        .any(|w| w == secret.as_bytes())),
                "{secret:?}"
            );
        }
        Ok(Some(Presented::Basic { key_id, .. })) => {
            assert!(schemes.contains(&Scheme::Basic));
            assert!(has("authorization"));
            assert!(!key_id.contains(':'));
        }
        Ok(None) => {
            assert!(!has("authorization"));
            assert!(!(schemes.contains(&Scheme::Header) && has(key_header)));
        }
        Err(_) => {}
    }
}

/// A byte reader for addresses and networks.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    fn ip(&mut self) -> Option<IpAddr> {
        let [kind] = self.take::<1>()?;
        Some(if kind % 2 == 0 {
            IpAddr::V4(Ipv4Addr::from(self.take::<4>()?))
        } else {
            IpAddr::V6(Ipv6Addr::from(self.take::<16>()?))
        })
    }

    fn net(&mut self) -> Option<IpNet> {
        let [len] = self.take::<1>()?;
        let ip = self.ip()?;
        let max = if ip.is_ipv4() { 33 } else { 129 };
        IpNet::new(ip, len % max).ok().map(|n| n.trunc())
    }
}

fn client_ip(first: &[u8], headers: &[httparse::Header<'_>]) {
    let mut r = Reader(first);
    let Some(peer) = r.ip() else {
        return;
    };
    let mut trusted = Vec::new();
    while let Some(net) = r.net() {
        trusted.push(net);
    }
    let peer = SocketAddr::new(peer, 443);
    assert_eq!(credential::client_ip(None, headers, &trusted), None);
    let got = credential::client_ip(Some(peer), headers, &trusted).unwrap();
    assert_eq!(canonical(got), got, "{got}");
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    let peer = canonical(peer.ip());
    if !is_trusted(&peer) || got == peer {
        assert_eq!(got, peer, "{trusted:?}");
        return;
    }
    // Believed from X-Forwarded-For only behind a trusted proxy, and then
    // an untrusted address of the chain, the right-most.
    assert!(!is_trusted(&got));
    let chain: Vec<IpAddr> = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("x-forwarded-for"))
        .flat_map(|h| std::str::from_utf8(h.value).unwrap().split(','))
        .map(|p| canonical(p.trim().parse().unwrap()))
        .collect();
    assert_eq!(chain.iter().rev().find(|ip| !is_trusted(ip)), Some(&got));
}

#[cfg(test)]
mod tests {
    use keyward_core::fuzzing::replay_regressions as replay;

    #[test]
    fn credential_regressions_replay() {
        replay("credential", super::credential);
    }
}
