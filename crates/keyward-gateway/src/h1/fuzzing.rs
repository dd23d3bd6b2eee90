//! The properties behind the fuzz targets `h1_head` and `chunked`, beside
//! the code they drive (so no item of the fast path needs to be more
//! visible than it is). [`crate::fuzzing`] is their door; `cargo test`
//! replays the saved inputs through them.
#![allow(clippy::unwrap_used, clippy::panic)]

use axum::http::Method;

use super::codec::*;

/// The first byte picks request (even) or response (odd; bit 1: a response
/// to HEAD); the rest is the head. Properties: the pure parts of head
/// handling never panic and agree with a plain reading of RFC 9112 §6.
pub(crate) fn head(data: &[u8]) {
    let Some((&mode, raw)) = data.split_first() else {
        return;
    };
    check_length(raw);
    check_length(&raw[..raw.len().min(20)]);
    check_tokens(raw);
    if mode & 1 == 0 {
        request(raw);
    } else {
        response(mode, raw);
    }
}

fn request(raw: &[u8]) {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(_)) = req.parse(raw) else {
        return;
    };
    if let Some(target) = req.path {
        let (path, query) = split_target(target);
        assert!(!path.contains('?'), "{target:?}");
        match query {
            Some(q) => assert_eq!(format!("{path}?{q}"), target),
            None => assert_eq!(path, target),
        }
    }
    assert_eq!(
        request_framing(req.headers),
        expected_request_framing(req.headers),
        "{:?}",
        String::from_utf8_lossy(raw)
    );
    check_listed(req.headers);
}

fn response(mode: u8, raw: &[u8]) {
    let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut res = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(_)) = res.parse(raw) else {
        return;
    };
    let status = res.code.unwrap_or(0);
    let method = if mode & 2 == 0 {
        Method::GET
    } else {
        Method::HEAD
    };
    let got = response_framing(res.headers, &method, status).ok();
    assert_eq!(
        got,
        expected_response_framing(res.headers, &method, status),
        "{:?}",
        String::from_utf8_lossy(raw)
    );
    check_listed(res.headers);
}

fn named<'h, 'b>(
    headers: &'h [httparse::Header<'b>],
    name: &'static str,
) -> impl Iterator<Item = &'b [u8]> + 'h {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// A Content-Length: 1 to 19 digits (19 always fit in a u64).
fn expected_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

/// The comma-separated list elements of a header value, OWS trimmed (a
/// header value holds no other ASCII white space; raw bytes may).
fn expected_tokens(v: &[u8]) -> Vec<&[u8]> {
    v.split(|&b| b == b',')
        .map(|t| {
            let start = t.iter().position(|b| !b.is_ascii_whitespace());
            let end = t.iter().rposition(|b| !b.is_ascii_whitespace());
            match (start, end) {
                (Some(s), Some(e)) => &t[s..=e],
                _ => &t[..0],
            }
        })
        .filter(|t| !t.is_empty())
        .collect()
}

fn expected_request_framing(headers: &[httparse::Header<'_>]) -> Option<RequestFraming> {
    for refused in ["transfer-encoding", "expect", "upgrade"] {
        if named(headers, refused).next().is_some() {
            return None;
        }
    }
    // RFC 9112 §3.2: exactly one Host (else the general path answers 400).
    if named(headers, "host").count() != 1 {
        return None;
    }
    let lengths: Vec<&[u8]> = named(headers, "content-length").collect();
    let body = match lengths[..] {
        [] => 0,
        [v] => expected_length(v)?,
        _ => return None,
    };
    if body > MAX_BODY as u64 {
        return None;
    }
    Some(RequestFraming {
        body: body as usize,
        has_length: !lengths.is_empty(),
        close: named(headers, "connection").any(|v| {
            expected_tokens(v)
                .iter()
                .any(|t| t.eq_ignore_ascii_case(b"close"))
        }),
        idempotency_key: named(headers, crate::idempotency::HEADER).next().is_some(),
    })
}

fn expected_response_framing(
    headers: &[httparse::Header<'_>],
    method: &Method,
    status: u16,
) -> Option<(Framing, bool)> {
    let mut lengths = named(headers, "content-length").map(expected_length);
    let length = match lengths.next() {
        None => None,
        Some(first) => {
            let first = first?;
            for other in lengths {
                if other? != first {
                    return None;
                }
            }
            Some(first)
        }
    };
    let has_date = named(headers, "date").next().is_some();
    let no_body = *method == Method::HEAD || matches!(status, 204 | 304) || status < 200;
    // The final transfer coding of the last Transfer-Encoding decides.
    let coding = named(headers, "transfer-encoding")
        .last()
        .map(|v| expected_tokens(v).last().copied().unwrap_or(b""));
    let framing = match (no_body, coding, length) {
        (true, _, _) => Framing::Empty,
        (false, Some(c), _) if c.eq_ignore_ascii_case(b"chunked") => Framing::Chunked,
        (false, Some(_), _) => Framing::UntilClose,
        (false, None, Some(n)) => Framing::Length(n),
        (false, None, None) => Framing::UntilClose,
    };
    Some((framing, has_date))
}

fn check_length(v: &[u8]) {
    assert_eq!(parse_length(v), expected_length(v), "{v:?}");
}

fn check_tokens(v: &[u8]) {
    let got: Vec<&[u8]> = tokens(v).collect();
    assert_eq!(got, expected_tokens(v), "{v:?}");
}

/// The names a message's Connection headers list are hop-by-hop, and no
/// other (`keep-alive` is dropped by name anyway, so it is not asked).
fn check_listed(headers: &[httparse::Header<'_>]) {
    let listed = Listed::of(headers);
    let tokens: Vec<&[u8]> = named(headers, "connection")
        .flat_map(expected_tokens)
        .collect();
    let names = headers
        .iter()
        .map(|h| h.name)
        .chain(tokens.iter().filter_map(|t| std::str::from_utf8(t).ok()));
    for name in names.chain(["close", "x-other"]) {
        if name.eq_ignore_ascii_case("keep-alive") {
            continue;
        }
        let expected = tokens
            .iter()
            .any(|t| t.eq_ignore_ascii_case(name.as_bytes()));
        assert_eq!(listed.contains(name), expected, "{name:?} in {tokens:?}");
    }
}

/// Where a chunked body ends, as [`Chunked`] is to read it fed in pieces.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// Complete after this many bytes.
    At(usize),
    /// More is needed.
    Open,
    Malformed,
}

/// The first four bytes cut the rest into pieces (each 1 to 16 bytes, in
/// turn); the rest is a chunked body and whatever follows it. Properties:
/// fed whole or in those pieces, [`Chunked`] never panics, never consumes
/// past the end, and finds the same end, or the same error, as a plain
/// decoder of RFC 9112 §7.1 (which, like it, takes a bare LF as a line end).
pub(crate) fn chunked(data: &[u8]) {
    let (cuts, body) = data.split_at(data.len().min(4));
    let expected = expected_end(body);
    assert_eq!(feed(body, &[]), expected, "whole: {body:?}");
    assert_eq!(feed(body, cuts), expected, "in pieces {cuts:?}: {body:?}");
}

fn feed(body: &[u8], cuts: &[u8]) -> End {
    let mut c = Chunked::default();
    let mut at = 0;
    let mut k = 0;
    while at < body.len() {
        let len = match cuts.get(k % cuts.len().max(1)) {
            Some(&cut) => (usize::from(cut) % 16 + 1).min(body.len() - at),
            None => body.len() - at,
        };
        k += 1;
        match c.feed(&body[at..at + len]) {
            Err(_) => return End::Malformed,
            Ok((n, true)) => {
                assert!(n <= len);
                return End::At(at + n);
            }
            Ok((n, false)) => {
                // An unfinished body takes every byte given.
                assert_eq!(n, len);
                at += len;
            }
        }
    }
    assert_eq!(c.feed(&[]).unwrap(), (0, false));
    End::Open
}

/// RFC 9112 §7.1: `*chunk last-chunk trailer-section CRLF`, a chunk being
/// `1*HEXDIG [BWS ";" ext] CRLF data CRLF`. Extensions and trailer lines
/// are not looked into (they are relayed as they are).
fn expected_end(b: &[u8]) -> End {
    let mut i = 0;
    // A line end: CRLF or a bare LF.
    let eol = |i: &mut usize| -> Option<bool> {
        match b.get(*i)? {
            b'\n' => *i += 1,
            b'\r' => {
                if *b.get(*i + 1)? != b'\n' {
                    return Some(false);
                }
                *i += 2;
            }
            _ => return Some(false),
        }
        Some(true)
    };
    loop {
        let start = i;
        let mut size: u64 = 0;
        while let Some(d) = b.get(i).and_then(|&c| (c as char).to_digit(16)) {
            match size
                .checked_mul(16)
                .and_then(|s| s.checked_add(u64::from(d)))
            {
                Some(s) => size = s,
                None => return End::Malformed,
            }
            i += 1;
        }
        if i == b.len() {
            return End::Open;
        }
        if i == start {
            return End::Malformed;
        }
        while matches!(b.get(i), Some(b' ' | b'\t')) {
            i += 1;
        }
        if b.get(i) == Some(&b';') {
            while !matches!(b.get(i), None | Some(b'\r' | b'\n')) {
                i += 1;
            }
        }
        match eol(&mut i) {
            None => return End::Open,
            Some(false) => return End::Malformed,
            Some(true) => {}
        }
        if size == 0 {
            break;
        }
        match usize::try_from(size) {
            Ok(n) if n <= b.len() - i => i += n,
            _ => return End::Open,
        }
        match eol(&mut i) {
            None => return End::Open,
            Some(false) => return End::Malformed,
            Some(true) => {}
        }
    }
    loop {
        match b.get(i) {
            None => return End::Open,
            Some(b'\r' | b'\n') => {
                return match eol(&mut i) {
                    None => End::Open,
                    Some(false) => End::Malformed,
                    Some(true) => End::At(i),
                }
            }
            Some(_) => match b[i..].iter().position(|&c| c == b'\n') {
                Some(n) => i += n + 1,
                None => return End::Open,
            },
        }
    }
}
