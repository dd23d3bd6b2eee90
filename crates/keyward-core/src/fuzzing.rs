//! The properties behind the fuzz targets `key_parse` and `cidr` (see
//! `fuzz/README.md`). They live here, not in `fuzz/`, so that `cargo test`
//! replays every saved input (`fuzz/regressions/<target>/`) through the very
//! same checks on stable Rust, with no libFuzzer. Each function takes the
//! fuzzer's bytes and panics when a property does not hold; it is not part
//! of keyward's API (compiled for tests and with the `fuzzing` feature only).
// A failed property is a panic by design: that is how libFuzzer sees it.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};

use ipnet::IpNet;

use crate::allowlist::{canonical, AllowlistError, IpAllowlist};
use crate::base62;
use crate::secret::{
    checksum, Entropy, EntropyError, KeyFormat, KeyKind, CHECKSUM_LEN, MAX_SECRET_LEN,
    MIN_BODY_LEN, START_LEN,
};

/// The default deployment's prefixes, longest first as the format keeps them.
const PREFIXES: [&str; 3] = ["kw_live_", "kw_test_", "kw_root_"];

fn default_format() -> KeyFormat {
    // Constant, valid prefixes.
    KeyFormat::new([("live", "kw_live_"), ("test", "kw_test_")], "kw_root_").unwrap()
}

/// Key parsing and the checksum. The first byte picks the property:
/// - parsing arbitrary text agrees with a plain reading of the format
///   (prefix, length, base62, CRC32), also once the checksum is made right;
/// - a generated key (entropy from the input) always parses, as its own
///   kind, and every single-byte change to it is refused;
/// - a format built from arbitrary `env=prefix` lines either is refused or
///   reads each of its generated keys back as the kind it was made for.
pub fn key_parse(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => parse_text(rest),
        1 => generated(mode, rest),
        _ => custom_format(rest),
    }
}

fn parse_text(rest: &[u8]) {
    let f = default_format();
    let text = String::from_utf8_lossy(rest);
    check_parse(&f, &text);
    // Make the checksum right, so the fuzzer reaches past it.
    let n = text.len();
    if n > CHECKSUM_LEN && text.is_char_boundary(n - CHECKSUM_LEN) {
        let fixed = format!(
            "{}{}",
            &text[..n - CHECKSUM_LEN],
            checksum(&text.as_bytes()[..n - CHECKSUM_LEN])
        );
        check_parse(&f, &fixed);
    }
}

/// `parse` against a reading of the documented format.
fn check_parse(f: &KeyFormat, s: &str) {
    let expected = (|| {
        if s.is_empty() || s.len() > MAX_SECRET_LEN {
            return None;
        }
        let prefix = PREFIXES.iter().find(|p| s.starts_with(**p))?;
        let rest = &s.as_bytes()[prefix.len()..];
        if rest.len() < MIN_BODY_LEN + CHECKSUM_LEN || !rest.iter().all(|&b| base62::is_symbol(b)) {
            return None;
        }
        let split = s.len() - CHECKSUM_LEN;
        (checksum(&s.as_bytes()[..split]) == s[split..]).then_some(*prefix)
    })();
    match (f.parse(s), expected) {
        (Ok(p), Some(prefix)) => {
            assert_eq!(p.prefix_len, prefix.len(), "{s:?}");
            assert_eq!(f.prefix_for(p.kind), Some(prefix), "{s:?}");
        }
        (Err(_), None) => {}
        (got, want) => panic!("parse({s:?}) = {got:?}, expected a key of prefix {want:?}"),
    }
}

/// Entropy read from the fuzzer's bytes (kept below 248, the sampler's
/// rejection bound, so generation always ends).
struct Bytes<'a> {
    bytes: &'a [u8],
    at: AtomicUsize,
}

impl Entropy for Bytes<'_> {
    fn fill(&self, dest: &mut [u8]) -> Result<(), EntropyError> {
        for d in dest {
            let i = self.at.fetch_add(1, Ordering::Relaxed);
            let b = match self.bytes.len() {
                0 => i as u8,
                n => self.bytes[i % n].wrapping_add((i / n) as u8),
            };
            *d = b % 248;
        }
        Ok(())
    }
}

fn generated(mode: u8, rest: &[u8]) {
    let f = default_format();
    let kind = match (mode / 3) % 3 {
        0 => KeyKind::Environment("live".into()),
        1 => KeyKind::Environment("test".into()),
        _ => KeyKind::Root,
    };
    let (edit, entropy) = rest.split_at(rest.len().min(2));
    let entropy = Bytes {
        bytes: entropy,
        at: AtomicUsize::new(0),
    };
    let key = f.generate(&kind, &entropy).unwrap();
    let s = key.expose();
    let parsed = f
        .parse(s)
        .unwrap_or_else(|e| panic!("a generated key does not parse: {e}"));
    assert_eq!(parsed.kind, &kind);
    let prefix = f.prefix_for(&kind).unwrap();
    assert_eq!(parsed.prefix_len, prefix.len());
    assert_eq!(key.start(), s[..prefix.len() + START_LEN]);
    check_parse(&f, s);
    // CRC32 detects every error burst up to 32 bits: any one changed byte
    // (8 bits) is refused, wherever it is.
    if let [pos, to] = *edit {
        let pos = usize::from(pos) % s.len();
        let mut changed = s.as_bytes().to_vec();
        if changed[pos] != to {
            changed[pos] = to;
            let changed = String::from_utf8_lossy(&changed);
            assert!(f.parse(&changed).is_err(), "accepted {changed:?}");
        }
    }
}

fn custom_format(rest: &[u8]) {
    let text = String::from_utf8_lossy(rest);
    let mut lines: Vec<&str> = text.split('\n').collect();
    let root = lines.pop().unwrap_or_default();
    let envs: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| l.split_once('=').unwrap_or((l, "")))
        .collect();
    let Ok(f) = KeyFormat::new(envs.iter().copied(), root) else {
        return;
    };
    let mut kinds: Vec<KeyKind> = f
        .environments()
        .map(|e| KeyKind::Environment(e.to_owned()))
        .collect();
    kinds.push(KeyKind::Root);
    for (i, kind) in kinds.iter().enumerate() {
        // Every body and no body: a key whose body starts with what makes
        // another, longer prefix is the case to get right.
        for seed in [rest, &[i as u8][..], &[0][..], &[61][..], &[36][..]] {
            let entropy = Bytes {
                bytes: seed,
                at: AtomicUsize::new(0),
            };
            let key = f.generate(kind, &entropy).unwrap();
            let parsed = f
                .parse(key.expose())
                .unwrap_or_else(|e| panic!("a generated key does not parse: {e}"));
            assert_eq!(parsed.kind, kind, "{:?} read as another kind", key.expose());
        }
    }
}

/// Allowlist (CIDR) parsing. The input is a comma- or newline-separated
/// list of entries, then (the last 17 bytes) an address to check. Properties:
/// a parsed list prints entries that parse back to the same list; an entry
/// refused for host bits suggests a network that parses; a refused entry
/// is no address or block; every listed block allows its own first and
/// last address, in every notation, and `allows` agrees with the blocks.
pub fn cidr(data: &[u8]) {
    let (text, probe) = data.split_at(data.len().saturating_sub(17));
    let text = String::from_utf8_lossy(text);
    let entries: Vec<&str> = text.split([',', '\n']).collect();
    let list = match IpAllowlist::parse(&entries) {
        Ok(list) => list,
        Err(AllowlistError::HostBits { given, network }) => {
            let suggested = IpAllowlist::parse(&[&network])
                .unwrap_or_else(|e| panic!("{given:?}: the suggestion {network:?} fails: {e}"));
            assert_eq!(suggested.entries().len(), 1);
            return;
        }
        Err(AllowlistError::Syntax(e)) => {
            assert!(
                e.parse::<IpNet>().is_err() && e.parse::<IpAddr>().is_err(),
                "{e:?}"
            );
            return;
        }
    };
    let printed = list.entries();
    assert_eq!(printed.len(), entries.len());
    for (entry, net) in entries.iter().zip(&printed) {
        // The same block, or the IPv4 block an IPv4-mapped one maps.
        let written: IpNet = entry
            .trim()
            .parse()
            .or_else(|_| entry.trim().parse::<IpAddr>().map(IpNet::from))
            .unwrap();
        let net: IpNet = net.parse().unwrap();
        let mapped = match (written, net) {
            (IpNet::V6(w), IpNet::V4(n)) => {
                w.network().to_ipv4_mapped() == Some(n.network())
                    && w.prefix_len() == n.prefix_len() + 96
            }
            _ => false,
        };
        assert!(written == net || mapped, "{entry:?} became {net}");
    }
    let again = IpAllowlist::parse(&printed).unwrap_or_else(|e| panic!("{printed:?}: {e}"));
    assert_eq!(again, list);
    assert_eq!(again.entries(), printed);
    let nets: Vec<IpNet> = printed.iter().map(|e| e.parse().unwrap()).collect();
    for net in &nets {
        assert_eq!(net.trunc(), *net);
        // No entry is a block of IPv4-mapped addresses (it would match no
        // client): those are kept as the IPv4 blocks they map.
        if let IpNet::V6(v6) = net {
            assert!(v6.prefix_len() < 96 || v6.network().to_ipv4_mapped().is_none());
        }
        for ip in [net.network(), net.broadcast()] {
            // An IPv6 block wider than the mapped range does not cover
            // IPv4 clients (documented in `allowlist`).
            if net.addr().is_ipv6() && canonical(ip).is_ipv4() {
                continue;
            }
            assert!(list.allows(Some(ip)), "{printed:?} refuses {ip}");
            for other in notations(ip) {
                assert!(list.allows(Some(other)), "{printed:?} refuses {other}");
            }
        }
    }
    if let Some(ip) = address(probe) {
        let ip_canonical = canonical(ip);
        assert_eq!(canonical(ip_canonical), ip_canonical);
        let expected = nets.is_empty() || nets.iter().any(|n| n.contains(&ip_canonical));
        assert_eq!(list.allows(Some(ip)), expected, "{printed:?} and {ip}");
    }
    assert_eq!(list.allows(None), nets.is_empty());
}

/// The other ways to write `ip` that keyward treats as the same client.
fn notations(ip: IpAddr) -> Vec<IpAddr> {
    match ip {
        IpAddr::V4(v4) => vec![IpAddr::V6(v4.to_ipv6_mapped())],
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).into_iter().collect(),
    }
}

fn address(probe: &[u8]) -> Option<IpAddr> {
    let (&kind, rest) = probe.split_first()?;
    if kind % 2 == 0 {
        let b: [u8; 4] = rest.get(..4)?.try_into().ok()?;
        Some(IpAddr::V4(Ipv4Addr::from(b)))
    } else {
        let b: [u8; 16] = rest.try_into().ok()?;
        Some(IpAddr::V6(Ipv6Addr::from(b)))
    }
}

/// Replays `fuzz/regressions/<target>/*` (the inputs that found bugs, and
/// the seeds) through `check`, for the replay tests of every crate with fuzz
/// properties. Panics, naming the file, on the first input that fails, and
/// if there is none.
#[allow(clippy::unwrap_used)] // Test support: a panic is the failure report.
pub fn replay_regressions(target: &str, check: fn(&[u8])) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
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

#[cfg(test)]
mod tests {
    use super::replay_regressions as replay;

    #[test]
    fn key_parse_regressions_replay() {
        replay("key_parse", super::key_parse);
    }

    #[test]
    fn cidr_regressions_replay() {
        replay("cidr", super::cidr);
    }
}
