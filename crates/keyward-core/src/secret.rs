//! The key format and the secret types.
//!
//! A secret is `<prefix><body><checksum>`:
//! - the prefix names the environment (`kw_live_`, `clv_test_sk_`, …) or an
//!   operator root key (`kw_root_`);
//! - the body is [`BODY_LEN`] base62 characters from the OS CSPRNG (≈190 bits);
//! - the checksum is CRC32 of prefix + body as 6 base62 characters.
//!
//! [`KeyFormat::parse`] checks prefix, alphabet, length and checksum before
//! anything is looked up, so typos and garbage cost no storage access, and
//! secret scanners can match keys with [`KeyFormat::scan_regex`];
//! [`KeyFinder`] finds the well-formed keys in any bytes (`keyward scan`).
//! Storage keeps only [`KeyHash`] (SHA-256) and the display [`KeySecret::start`].

use std::fmt;

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::base62;

/// Random base62 characters in a new key's body (62^32 ≈ 2^190).
pub const BODY_LEN: usize = 32;
/// The fewest body characters a presented key may have (≥ 178 bits).
pub const MIN_BODY_LEN: usize = 30;
/// Base62 characters of the CRC32 checksum (62^6 > 2^32).
pub const CHECKSUM_LEN: usize = 6;
/// Body characters shown after the prefix in a key's display `start`.
pub const START_LEN: usize = 4;
/// Presented credentials longer than this are rejected unread.
pub const MAX_SECRET_LEN: usize = 256;

/// A source of cryptographically secure random bytes.
pub trait Entropy: Send + Sync {
    fn fill(&self, dest: &mut [u8]) -> Result<(), EntropyError>;
}

/// The operating system's CSPRNG.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&self, dest: &mut [u8]) -> Result<(), EntropyError> {
        getrandom::fill(dest).map_err(|_| EntropyError)
    }
}

#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the operating system's random number generator failed")]
pub struct EntropyError;

/// What a key's prefix says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    /// A tenant key of the named environment.
    Environment(String),
    /// An operator root key: no tenant, manages keyward itself.
    Root,
}

/// The prefixes a deployment issues and accepts.
#[derive(Debug, Clone)]
pub struct KeyFormat {
    /// `(prefix, kind)`, longest prefix first so that parsing picks the most
    /// specific match when one prefix starts another.
    prefixes: Vec<(String, KeyKind)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    #[error("prefix {0:?} must be 1 to 32 characters of letters, digits and _")]
    BadPrefix(String),
    #[error("prefix {0:?} is used twice")]
    DuplicatePrefix(String),
    #[error("environment name {0:?} must be 1 to 32 characters of a-z, 0-9, _ and -")]
    BadEnvironment(String),
    #[error(
        "prefix {longer:?} is prefix {shorter:?} followed by letters and digits, so a key of \
         {shorter:?} can read as one of {longer:?}; end the prefixes differently (with _, for example)"
    )]
    AmbiguousPrefix { shorter: String, longer: String },
}

/// Why a presented string is not a well-formed key. Deliberately coarse:
/// callers answer `invalid_api_key` for all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("the key is empty or too long")]
    Length,
    #[error("the key does not start with a known prefix")]
    Prefix,
    #[error("the key contains characters outside base62")]
    Alphabet,
    #[error("the key's checksum does not match")]
    Checksum,
}

impl KeyFormat {
    /// Builds a format from `(environment, prefix)` pairs and the root prefix.
    pub fn new<'a>(
        environments: impl IntoIterator<Item = (&'a str, &'a str)>,
        root_prefix: &str,
    ) -> Result<KeyFormat, KeyFormatError> {
        let mut prefixes: Vec<(String, KeyKind)> = Vec::new();
        let mut add = |prefix: &str, kind: KeyKind| {
            let ok = !prefix.is_empty()
                && prefix.len() <= 32
                && prefix
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !ok {
                return Err(KeyFormatError::BadPrefix(prefix.to_owned()));
            }
            if prefixes.iter().any(|(p, _)| p == prefix) {
                return Err(KeyFormatError::DuplicatePrefix(prefix.to_owned()));
            }
            prefixes.push((prefix.to_owned(), kind));
            Ok(())
        };
        for (env, prefix) in environments {
            if !is_environment_name(env) {
                return Err(KeyFormatError::BadEnvironment(env.to_owned()));
            }
            add(prefix, KeyKind::Environment(env.to_owned()))?;
        }
        add(root_prefix, KeyKind::Root)?;
        // A key body is base62, so a prefix that continues another with
        // base62 characters alone could be the start of that other's key.
        for (shorter, _) in &prefixes {
            for (longer, _) in &prefixes {
                let ambiguous = longer
                    .strip_prefix(shorter.as_str())
                    .is_some_and(|rest| rest.bytes().all(base62::is_symbol));
                if longer != shorter && ambiguous {
                    return Err(KeyFormatError::AmbiguousPrefix {
                        shorter: shorter.clone(),
                        longer: longer.clone(),
                    });
                }
            }
        }
        prefixes.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        Ok(KeyFormat { prefixes })
    }

    /// The prefix that new keys of `kind` get, if the format has one.
    pub fn prefix_for(&self, kind: &KeyKind) -> Option<&str> {
        self.prefixes
            .iter()
            .find(|(_, k)| k == kind)
            .map(|(p, _)| p.as_str())
    }

    /// The configured environment names.
    pub fn environments(&self) -> impl Iterator<Item = &str> {
        self.prefixes.iter().filter_map(|(_, k)| match k {
            KeyKind::Environment(e) => Some(e.as_str()),
            KeyKind::Root => None,
        })
    }

    /// Generates a new secret of `kind` from `entropy`.
    pub fn generate(
        &self,
        kind: &KeyKind,
        entropy: &dyn Entropy,
    ) -> Result<KeySecret, GenerateError> {
        let prefix = self.prefix_for(kind).ok_or(GenerateError::UnknownKind)?;
        let mut s = Zeroizing::new(String::with_capacity(
            prefix.len() + BODY_LEN + CHECKSUM_LEN,
        ));
        s.push_str(prefix);
        crate::id::push_base62(&mut s, BODY_LEN, entropy).map_err(GenerateError::Entropy)?;
        let sum = checksum(s.as_bytes());
        s.push_str(&sum);
        Ok(KeySecret {
            text: s,
            prefix_len: prefix.len(),
        })
    }

    /// Checks that `presented` is a well-formed key of this format, without
    /// any lookup. Cheap enough to run on every request.
    pub fn parse(&self, presented: &str) -> Result<ParsedKey<'_>, Malformed> {
        if presented.is_empty() || presented.len() > MAX_SECRET_LEN {
            return Err(Malformed::Length);
        }
        let (prefix, kind) = self
            .prefixes
            .iter()
            .find(|(p, _)| presented.starts_with(p.as_str()))
            .ok_or(Malformed::Prefix)?;
        let rest = &presented.as_bytes()[prefix.len()..];
        if rest.len() < MIN_BODY_LEN + CHECKSUM_LEN {
            return Err(Malformed::Length);
        }
        if !rest.iter().all(|&b| base62::is_symbol(b)) {
            return Err(Malformed::Alphabet);
        }
        let split = presented.len() - CHECKSUM_LEN;
        // Compare as numbers: fixed-width base62 is one-to-one, and this
        // keeps the hot path free of allocation.
        let expected = u64::from(crc32fast::hash(&presented.as_bytes()[..split]));
        if base62::decode(&presented.as_bytes()[split..]) != Some(expected) {
            return Err(Malformed::Checksum);
        }
        Ok(ParsedKey {
            kind,
            prefix_len: prefix.len(),
        })
    }

    /// Whether `text` holds a well-formed key of this format anywhere: a
    /// known prefix followed by base62 characters that pass
    /// [`KeyFormat::parse`], whatever stands before or after it. Used to find
    /// keys sent where they must not go (a cookie, a query string).
    ///
    /// At each occurrence of a prefix two candidates are tried: the whole
    /// base62 run after it (up to [`MAX_SECRET_LEN`]) and the length keys are
    /// issued with, so a key glued to more letters is still found. The work
    /// is at most `text.len()` × prefixes × [`MAX_SECRET_LEN`] byte steps.
    pub fn holds_key(&self, text: &[u8]) -> bool {
        self.prefixes.iter().any(|(prefix, _)| {
            let p = prefix.as_bytes();
            let mut from = 0;
            while let Some(at) = find(&text[from..], p) {
                let start = from + at;
                if self.key_at(text, start, p.len()).is_some() {
                    return true;
                }
                from = start + 1;
            }
            false
        })
    }

    /// The length of the well-formed key that starts at `start` with a
    /// prefix of `prefix_len` bytes, if there is one: the whole base62 run
    /// after the prefix (up to [`MAX_SECRET_LEN`]) is tried, then the length
    /// keys are issued with, so a key glued to more letters is still found.
    fn key_at(&self, text: &[u8], start: usize, prefix_len: usize) -> Option<usize> {
        let issued = BODY_LEN + CHECKSUM_LEN;
        let body = start + prefix_len;
        let run = text[body..]
            .iter()
            .take(MAX_SECRET_LEN.saturating_sub(prefix_len))
            .take_while(|b| base62::is_symbol(**b))
            .count();
        [run, issued.min(run)]
            .into_iter()
            .find(|&len| {
                len >= MIN_BODY_LEN + CHECKSUM_LEN
                    && std::str::from_utf8(&text[start..body + len])
                        .is_ok_and(|s| self.parse(s).is_ok())
            })
            .map(|len| prefix_len + len)
    }

    /// A regular expression (POSIX ERE / PCRE compatible) that matches keys
    /// of this format, for secret scanners such as GitHub custom patterns or
    /// gitleaks.
    pub fn scan_regex(&self) -> String {
        let mut prefixes: Vec<&str> = self.prefixes.iter().map(|(p, _)| p.as_str()).collect();
        prefixes.sort_unstable();
        format!(
            "\\b({})[0-9A-Za-z]{{{},}}\\b",
            prefixes.join("|"),
            MIN_BODY_LEN + CHECKSUM_LEN
        )
    }
}

#[derive(Debug, Clone, Copy, thiserror::Error)]
pub enum GenerateError {
    #[error("this key format has no prefix for that environment")]
    UnknownKind,
    #[error(transparent)]
    Entropy(EntropyError),
}

/// A presented key that passed [`KeyFormat::parse`].
#[derive(Debug, Clone, Copy)]
pub struct ParsedKey<'f> {
    pub kind: &'f KeyKind,
    pub prefix_len: usize,
}

/// Finds every well-formed key of a [`KeyFormat`] in arbitrary bytes (a
/// source file, a log): the engine of `keyward scan`.
///
/// All prefixes are searched for in one pass (Aho-Corasick, with a SIMD
/// prefilter for a handful of prefixes); at each occurrence the same two
/// candidate lengths as [`KeyFormat::holds_key`] are tried, and only a
/// candidate whose checksum holds is reported, so look-alikes with a wrong
/// checksum, prefix-only noise and truncated keys are not. What stands
/// before a prefix does not matter (`API_KEY=kw_live_…`, `"kw_live_…"`,
/// `xkw_live_…` all hold a key). Build one per format and reuse it: building
/// costs more than searching a small file.
#[derive(Debug, Clone)]
pub struct KeyFinder {
    format: KeyFormat,
    /// Matches the format's prefixes, in the order of `format.prefixes`.
    prefixes: aho_corasick::AhoCorasick,
}

/// A key that [`KeyFinder::find`] found: where it is in the searched bytes,
/// and what its prefix says it is. Carries no key material: read the key
/// from the searched bytes with [`KeyMatch::range`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyMatch<'f> {
    /// Byte offset of the key's first byte (its prefix).
    pub offset: usize,
    /// The key's length in bytes, prefix and checksum included.
    pub len: usize,
    /// The length of its prefix in bytes (for [`display_start`]).
    pub prefix_len: usize,
    /// What the prefix says the key is.
    pub kind: &'f KeyKind,
}

impl KeyMatch<'_> {
    /// The key's bytes in the searched text.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len
    }
}

/// A [`KeyFinder`] could not be built (a format with far more prefixes than
/// any deployment has).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the key finder: {0}")]
pub struct FinderError(#[from] aho_corasick::BuildError);

impl KeyFinder {
    /// A finder for the keys of `format`.
    pub fn new(format: &KeyFormat) -> Result<KeyFinder, FinderError> {
        let prefixes = aho_corasick::AhoCorasick::builder()
            // The longest prefix where two start at the same byte; the
            // format forbids one prefix continuing another with base62
            // characters, so the longest is the only one that can be a key.
            .match_kind(aho_corasick::MatchKind::LeftmostLongest)
            .build(format.prefixes.iter().map(|(p, _)| p.as_bytes()))?;
        Ok(KeyFinder {
            format: format.clone(),
            prefixes,
        })
    }

    /// The format this finder finds keys of.
    pub fn format(&self) -> &KeyFormat {
        &self.format
    }

    /// Every well-formed key in `text`, in order, not overlapping. The work
    /// is linear in `text.len()` plus at most [`MAX_SECRET_LEN`] steps per
    /// occurrence of a prefix.
    pub fn find(&self, text: &[u8]) -> Vec<KeyMatch<'_>> {
        let mut found = Vec::new();
        let mut from = 0;
        while from < text.len() {
            let input = aho_corasick::Input::new(text).span(from..text.len());
            let Some(hit) = self.prefixes.find(input) else {
                break;
            };
            let (_, kind) = &self.format.prefixes[hit.pattern().as_usize()];
            match self.format.key_at(text, hit.start(), hit.len()) {
                Some(len) => {
                    found.push(KeyMatch {
                        offset: hit.start(),
                        len,
                        prefix_len: hit.len(),
                        kind,
                    });
                    from = hit.start() + len;
                }
                None => from = hit.start() + 1,
            }
        }
        found
    }
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Whether `s` is a valid environment name (`live`, `test`, `sandbox`, …).
pub fn is_environment_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// The CRC32 checksum of `data` as 6 base62 characters.
pub fn checksum(data: &[u8]) -> String {
    base62::encode_fixed(u64::from(crc32fast::hash(data)), CHECKSUM_LEN)
}

/// A plaintext secret. It never prints (`Debug` and `Display` say
/// `<redacted>`), is wiped from memory on drop, and is exposed only to hash it
/// or to return it once to the caller who created it.
pub struct KeySecret {
    text: Zeroizing<String>,
    prefix_len: usize,
}

impl KeySecret {
    /// The plaintext. Callers: hashing, and the one create/rotate response.
    pub fn expose(&self) -> &str {
        &self.text
    }

    pub fn hash(&self) -> KeyHash {
        KeyHash::of(&self.text)
    }

    /// The display start: prefix + first body characters, e.g. `ak_live_AB7K`.
    pub fn start(&self) -> String {
        display_start(&self.text, self.prefix_len)
    }
}

impl fmt::Debug for KeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeySecret(<redacted>)")
    }
}

impl fmt::Display for KeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The display start of a well-formed key: its prefix and [`START_LEN`] body
/// characters.
pub fn display_start(secret: &str, prefix_len: usize) -> String {
    let end = (prefix_len + START_LEN).min(secret.len());
    secret.get(..end).unwrap_or_default().to_owned()
}

/// SHA-256 of a secret: what storage keeps and looks keys up by. Keys carry
/// ≥178 random bits, so a fast unsalted hash is safe here (no dictionary to
/// attack) and keeps verification under a microsecond.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    pub fn of(secret: &str) -> KeyHash {
        KeyHash(Sha256::digest(secret.as_bytes()).into())
    }

    pub fn to_hex(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 15)]));
        }
        s
    }

    pub fn from_hex(s: &str) -> Option<KeyHash> {
        if s.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in s.as_bytes().chunks(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            out[i] = u8::try_from(hi * 16 + lo).ok()?;
        }
        Some(KeyHash(out))
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({})", self.to_hex())
    }
}

#[cfg(test)]
mod tests;
