//! The properties behind the fuzz targets `credential` and `path` (see
//! `fuzz/README.md`; `h1_head` and `chunked` are in
//! `keyward_gateway::fuzzing`): the door through which `fuzz/` reaches
//! crate-private code, so no item is made more visible for it. Each
//! function takes the fuzzer's bytes and panics when a property does not
//! hold; `cargo test` replays every saved input (`fuzz/regressions/<target>/`)
//! through the same functions on stable Rust. Not part of keyward's API:
//! compiled for tests and with the `fuzzing` feature only.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;

use ipnet::IpNet;
use keyward_core::allowlist::canonical;

use crate::config::{Config, Scheme, Settings};
use keyward_verify::credential::{self, Presented};

/// The request-path rule ([`keyward_http::path::normalize`]). The input
/// is a path (lossy UTF-8), tried as it is and behind a `/`. Properties: a
/// normal form starts with `/`, has no `.` or `..` segment, no empty
/// segment but a trailing one, no NUL, no escape of `/`, `\`, NUL or of an
/// unreserved character (and escapes in upper case); it is its own normal
/// form (so is returned borrowed); a path returned borrowed is unchanged.
pub fn path(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    check_path(&text);
    check_path(&format!("/{text}"));
}

fn check_path(p: &str) {
    use keyward_http::path::normalize;
    use std::borrow::Cow;
    let Ok(out) = normalize(p) else {
        return;
    };
    if let Cow::Borrowed(b) = out {
        assert_eq!(b, p);
    }
    assert!(out.starts_with('/'), "{p:?} -> {out:?}");
    assert!(!out.contains("//"), "{p:?} -> {out:?}");
    assert!(!out.contains('\0'), "{p:?} -> {out:?}");
    for seg in out.split('/').skip(1) {
        assert!(seg != "." && seg != "..", "{p:?} -> {out:?}");
    }
    let b = out.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'%' {
            i += 1;
            continue;
        }
        let escape = b
            .get(i + 1..i + 3)
            .unwrap_or_else(|| panic!("{p:?} -> {out:?}"));
        assert!(
            escape
                .iter()
                .all(|h| h.is_ascii_digit() || (b'A'..=b'F').contains(h)),
            "{p:?} -> {out:?}"
        );
        let c = u8::from_str_radix(std::str::from_utf8(escape).unwrap(), 16).unwrap();
        let unreserved = c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~');
        assert!(
            !unreserved && !matches!(c, b'/' | b'\\' | 0),
            "{p:?} -> {out:?}"
        );
        i += 3;
    }
    match normalize(&out) {
        Ok(Cow::Borrowed(again)) => assert_eq!(again, out),
        other => panic!("{p:?} -> {out:?} -> {other:?}"),
    }
}

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

fn settings() -> &'static Settings {
    static SETTINGS: OnceLock<Settings> = OnceLock::new();
    // The default configuration is valid.
    SETTINGS.get_or_init(|| Settings::from_config(Config::default()).unwrap())
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
    let s = settings();
    let result = credential::extract_from(headers, query.as_deref(), &s.credentials, &schemes);
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
    let key_header = s.config.keys.header.as_str();
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
    use std::path::Path;

    /// Replays `fuzz/regressions/<target>/*` (the inputs that found bugs and
    /// the seeds) through the target's property check.
    fn replay(target: &str, check: fn(&[u8])) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/regressions")
            .join(target);
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            // Printed with the test's output if the check fails.
            eprintln!("Replaying {}.", path.display());
            check(&data);
            n += 1;
        }
        assert!(n > 0, "no inputs in {}", dir.display());
    }

    #[test]
    fn credential_regressions_replay() {
        replay("credential", super::credential);
    }

    #[test]
    fn path_regressions_replay() {
        replay("path", super::path);
    }
}
