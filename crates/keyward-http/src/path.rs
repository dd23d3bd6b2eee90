//! The one path rule of the front door.
//!
//! Routes are matched, and requests forwarded, on the *normal form* of the
//! request path, so that what keyward authorises is exactly what the
//! upstream is sent. An upstream that normalises paths itself (nginx,
//! most frameworks) would otherwise see `/v1/admin/x` where keyward matched
//! `/v1/vox/../admin/x`.
//!
//! [`normalize`] turns a request path into its normal form, or refuses it:
//!
//! - percent-encoded *unreserved* characters (`A–Z a–z 0–9 - . _ ~`) are
//!   decoded (`%2e` is `.`, `%41` is `A`); other escapes are kept, with
//!   upper-case hex digits (`%3b` becomes `%3B`);
//! - `.` and `..` segments are resolved (RFC 3986 §5.2.4; `..` at the root
//!   stays at the root) and empty segments are merged (`//` is `/`, as nginx
//!   merges slashes);
//! - refused ([`PathError`]), because some server behind keyward would read
//!   them differently from keyward: an encoded slash or backslash (`%2F`,
//!   `%5C`), a raw backslash, NUL (raw or `%00`), a raw `;` (servlet
//!   containers strip `;params` from segments before routing, so
//!   `/admin;x` would be `/admin` there), a double-encoded dot, slash,
//!   backslash or NUL (`%252e`: a server that decodes twice would see a dot
//!   segment), a `%` not followed by two hex digits, and anything that is
//!   not an absolute path.
//!
//! A path already in normal form is returned borrowed and costs one scan of
//! its bytes, which is what almost every request pays.

use std::borrow::Cow;

/// Why a request path was refused. Every variant is the client's fault and
/// answers `400 invalid_path`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path must start with /")]
    NotAbsolute,
    #[error("the path contains a % not followed by two hex digits")]
    BadEscape,
    #[error(
        "the path contains an encoded slash or backslash (%2F, %5C); send the segment without it"
    )]
    EncodedSeparator,
    #[error("the path contains a backslash")]
    Backslash,
    #[error("the path contains a NUL byte")]
    Nul,
    #[error("the path contains ';' (path parameters are not accepted)")]
    Semicolon,
    #[error("the path contains a double-encoded dot, slash, backslash or NUL (%25 followed by 2E, 2F, 5C or 00)")]
    DoubleEncoded,
}

/// The normal form of `path` (see the module docs), borrowed when `path`
/// already is in it.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    if is_normal(bytes) {
        return Ok(Cow::Borrowed(path));
    }
    let out = rewrite(bytes)?;
    if out == path {
        Ok(Cow::Borrowed(path))
    } else {
        Ok(Cow::Owned(out))
    }
}

/// Whether `bytes` (starting with `/`) needs no work: no escapes, no
/// refused bytes, no empty and no dot segments. One pass, no allocation.
fn is_normal(bytes: &[u8]) -> bool {
    let mut prev = b'/';
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' | b'\\' | b';' | 0 => return false,
            b'/' if prev == b'/' && i > 0 => return false,
            b'.' if prev == b'/' => {
                // A segment starting with '.': a dot segment only if it is
                // exactly "." or "..".
                let rest = &bytes[i..];
                let end = rest.iter().position(|&c| c == b'/').unwrap_or(rest.len());
                if &rest[..end] == b"." || &rest[..end] == b".." {
                    return false;
                }
            }
            _ => {}
        }
        prev = b;
        i += 1;
    }
    true
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// The character at `seg[i]` once decoded (a byte, or an escape's value)
/// and how many bytes it takes.
fn decoded_at(seg: &[u8], i: usize) -> Option<(u8, usize)> {
    match *seg.get(i)? {
        b'%' => {
            let hi = hex(*seg.get(i + 1)?)?;
            let lo = hex(*seg.get(i + 2)?)?;
            Some((hi << 4 | lo, 3))
        }
        b => Some((b, 1)),
    }
}

/// Decodes one segment's escapes (unreserved only) into `out`, refusing
/// what [`normalize`] refuses.
fn decode_segment(seg: &[u8], out: &mut Vec<u8>) -> Result<(), PathError> {
    let mut i = 0;
    while i < seg.len() {
        let b = seg[i];
        match b {
            0 => return Err(PathError::Nul),
            b'\\' => return Err(PathError::Backslash),
            b';' => return Err(PathError::Semicolon),
            b'%' => {
                let (Some(hi), Some(lo)) = (
                    seg.get(i + 1).copied().and_then(hex),
                    seg.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathError::BadEscape);
                };
                let c = hi << 4 | lo;
                match c {
                    b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                    0 => return Err(PathError::Nul),
                    b'%' => {
                        // `%25` followed by the escape of a character that
                        // would change the path's shape if decoded again;
                        // its hex digits may be escaped too (`%25%32%65`
                        // is `%252e` once decoded).
                        let h2 = decoded_at(seg, i + 3);
                        let l2 = h2.and_then(|(_, n)| decoded_at(seg, i + 3 + n));
                        if let (Some((h2, _)), Some((l2, _))) = (h2, l2) {
                            if let (Some(h2), Some(l2)) = (hex(h2), hex(l2)) {
                                if matches!(h2 << 4 | l2, b'.' | b'/' | b'\\' | 0) {
                                    return Err(PathError::DoubleEncoded);
                                }
                            }
                        }
                    }
                    _ => {}
                }
                if is_unreserved(c) {
                    out.push(c);
                } else {
                    out.push(b'%');
                    out.push(seg[i + 1].to_ascii_uppercase());
                    out.push(seg[i + 2].to_ascii_uppercase());
                }
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(())
}

/// The slow path of [`normalize`]: decode, then resolve segments.
fn rewrite(bytes: &[u8]) -> Result<String, PathError> {
    // Offsets in `out` where each kept segment starts (its leading '/').
    let mut starts: Vec<usize> = Vec::new();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut decoded = Vec::new();
    let segments: Vec<&[u8]> = bytes[1..].split(|&b| b == b'/').collect();
    let last = segments.len() - 1;
    for (n, seg) in segments.into_iter().enumerate() {
        decoded.clear();
        decode_segment(seg, &mut decoded)?;
        let is_last = n == last;
        match decoded.as_slice() {
            b"." => {
                if is_last {
                    // `/a/.` is `/a/`.
                    out.push(b'/');
                }
            }
            b".." => {
                if let Some(s) = starts.pop() {
                    out.truncate(s);
                }
                if is_last {
                    out.push(b'/');
                }
            }
            b"" => {
                // Empty segments merge, except the last: `/a/` keeps its
                // trailing slash (and `/` is `/`).
                if is_last && out.last() != Some(&b'/') {
                    out.push(b'/');
                }
            }
            s => {
                starts.push(out.len());
                out.push(b'/');
                out.extend_from_slice(s);
            }
        }
    }
    if out.is_empty() {
        out.push(b'/');
    }
    // Every byte came from a `&str` or is ASCII, and escapes are decoded
    // only to ASCII; a failure here would be a bug, answered as a refusal.
    String::from_utf8(out).map_err(|_| PathError::BadEscape)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(p: &str) -> String {
        normalize(p).unwrap().into_owned()
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for p in [
            "/",
            "/v1/vox/calls",
            "/v1/.well-known/x",
            "/a/b/",
            "/a/..b/c.",
            "/a/...",
            "/a%20b",
        ] {
            assert!(
                matches!(normalize(p), Ok(Cow::Borrowed(_))),
                "{p} should be normal"
            );
        }
    }

    #[test]
    fn dot_segments_resolve_in_every_spelling() {
        for p in [
            "/v1/vox/../admin/x",
            "/v1/vox/%2e%2e/admin/x",
            "/v1/vox/%2E%2E/admin/x",
            "/v1/vox/.%2e/admin/x",
            "/v1/vox/%2e./admin/x",
            "/v1/vox/./../admin/x",
            "/v1/./vox/../admin/./x",
            "/v1//admin/x",
            "/v1/admin//x",
            "/v1/%61dmin/x",
            "/v1/vox/calls/../../admin/x",
        ] {
            assert_eq!(ok(p), "/v1/admin/x", "{p}");
        }
        assert_eq!(ok("/../x"), "/x");
        assert_eq!(ok("/a/.."), "/");
        assert_eq!(ok("/a/b/.."), "/a/");
        assert_eq!(ok("/a/."), "/a/");
        assert_eq!(ok("/a//"), "/a/");
        assert_eq!(ok("//"), "/");
        assert_eq!(ok("/public/../v1/admin/x"), "/v1/admin/x");
        assert_eq!(
            ok("/v1/voice/accounts/A/../B/calls"),
            "/v1/voice/accounts/B/calls"
        );
    }

    #[test]
    fn other_escapes_are_kept_with_upper_case_hex() {
        assert_eq!(ok("/a%3bb"), "/a%3Bb");
        assert_eq!(ok("/a%20b/%7e"), "/a%20b/~");
        assert_eq!(ok("/caf%c3%a9"), "/caf%C3%A9");
        assert_eq!(ok("/100%25"), "/100%25");
    }

    #[test]
    fn refusals() {
        use PathError::*;
        for (p, e) in [
            ("v1/x", NotAbsolute),
            ("*", NotAbsolute),
            ("", NotAbsolute),
            ("/v1/vox/..%2fadmin/x", EncodedSeparator),
            ("/v1/vox/%2E%2E%2Fadmin/x", EncodedSeparator),
            ("/v1/a%2Fb", EncodedSeparator),
            ("/v1/a%5cb", EncodedSeparator),
            ("/v1/a\\..\\admin", Backslash),
            ("/v1/a%00", Nul),
            ("/v1/a\0", Nul),
            ("/v1/admin;x/y", Semicolon),
            ("/v1/vox/..;/admin", Semicolon),
            ("/v1/%252e%252e/admin", DoubleEncoded),
            ("/v1/%252F", DoubleEncoded),
            ("/v1/%25%32%65", DoubleEncoded),
            ("/v1/%252%65", DoubleEncoded),
            ("/v1/%", BadEscape),
            ("/v1/%4", BadEscape),
            ("/v1/%zz", BadEscape),
        ] {
            assert_eq!(normalize(p), Err(e), "{p}");
        }
    }

    #[test]
    fn normal_form_is_a_fixed_point() {
        for p in [
            "/a/./b/../c//d/%2e%2E/e%41",
            "/x/%3b/y/..",
            "/./../.",
            "/a/b/c/../../../../d",
        ] {
            let once = ok(p);
            assert_eq!(ok(&once), once);
            assert!(matches!(normalize(&once), Ok(Cow::Borrowed(_))));
        }
    }
}
