//! The fast path's HTTP/1 codec: pure code, no I/O and no `async`. It
//! judges a request head ([`plan`], [`request_framing`]), writes the
//! upstream request head from the client's ([`UpstreamHead`]), reads how a
//! response body is framed ([`response_framing`], [`Chunked`] for chunked
//! bodies), and writes the client's response head ([`client_head`]) and
//! keyward's own answers ([`write_local`]). The driver (`h1.rs`) does the
//! reading and writing; the fuzz targets drive these functions directly
//! (`h1/fuzzing.rs`).

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use ipnet::IpNet;
use keyward_core::clock::{Clock, Timestamp};
use keyward_http::error::{ApiError, ErrorsConfig};
use keyward_limits::RateState;
use keyward_verify::credential;
use keyward_verify::verifier::CachedKey;

use crate::config::IdempotencyMode;
use crate::policy::Policy;
use crate::routes::{match_segments, Names, OwnPaths, Params, Route, UpstreamTarget, HOP_BY_HOP};

/// Request heads with more headers go to the general path.
pub(crate) const MAX_HEADERS: usize = 64;
/// Upstream responses may carry as many headers as hyper allows.
pub(crate) const MAX_RESPONSE_HEADERS: usize = 100;
/// Larger request heads go to the general path (hyper allows more).
pub(crate) const MAX_HEAD: usize = 16 * 1024;
/// Request bodies up to this size are read whole before forwarding (they
/// fit the socket buffers, so writing them never waits on the upstream);
/// larger ones stream on the general path.
pub(crate) const MAX_BODY: usize = 64 * 1024;
/// Upstream response heads larger than this are a bad gateway.
pub(crate) const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// What the head says about a request this path takes.
pub(crate) struct Plan {
    pub method: Method,
    /// Body length (Content-Length, or 0).
    pub body: usize,
    pub has_length: bool,
    /// The client asked to close after this response.
    pub close: bool,
    /// Index of the matched route in the table, if any.
    pub route: Option<usize>,
}

/// Decides from the head alone whether this path takes the request;
/// `None` hands it (and the rest of the connection) to the general path.
pub(crate) fn plan(
    own: &OwnPaths,
    policy: &Policy,
    req: &httparse::Request<'_, '_>,
) -> Option<Plan> {
    let table = &policy.routes;
    // A reload that turned the fast path off sends the connection's next
    // request (and the rest of the connection) to the general path.
    if req.version != Some(1) || table.is_empty() || !policy.fast_path() {
        return None;
    }
    let method = Method::from_bytes(req.method?.as_bytes()).ok()?;
    if method == Method::CONNECT {
        return None;
    }
    let target = req.path?;
    if !target.starts_with('/') {
        return None;
    }
    let (path, _) = split_target(target);
    // A path not in normal form (or refused) is the general path's to
    // rewrite or answer: the upstream head below is written from the
    // client's bytes, which must then be exactly the path matched.
    if !matches!(keyward_http::path::normalize(path), Ok(Cow::Borrowed(_))) || own.contains(path) {
        return None;
    }
    let framing = request_framing(req.headers)?;
    let route = table.find_index(&method, path);
    if let Some(r) = route.map(|i| &table.routes[i]) {
        let idempotent = match r.idempotency_for(&method, &policy.idempotent_methods) {
            None => false,
            Some(IdempotencyMode::Required) => true,
            Some(_) => framing.idempotency_key,
        };
        if idempotent {
            return None;
        }
    }
    Some(Plan {
        method,
        body: framing.body,
        has_length: framing.has_length,
        close: framing.close,
        route,
    })
}

/// What a request's headers say about its body and connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RequestFraming {
    /// Body length (Content-Length, or 0), at most [`MAX_BODY`].
    pub body: usize,
    pub has_length: bool,
    /// The client asked to close after this response.
    pub close: bool,
    /// The request carries an `Idempotency-Key`.
    pub idempotency_key: bool,
}

/// The header part of [`plan`], pure so a fuzz target can drive it: `None`
/// if the headers send the request to the general path (a body framed any
/// other way than by one valid Content-Length of at most [`MAX_BODY`],
/// `Expect`, `Upgrade`, a missing or repeated `Host`).
pub(crate) fn request_framing(headers: &[httparse::Header<'_>]) -> Option<RequestFraming> {
    let mut body = None;
    let mut close = false;
    let mut idempotency_key = false;
    let mut hosts = 0u8;
    for h in headers {
        let name = h.name;
        if name.eq_ignore_ascii_case("host") {
            hosts = hosts.saturating_add(1);
        } else if name.eq_ignore_ascii_case("content-length") {
            if body.is_some() {
                return None;
            }
            body = Some(parse_length(h.value)?);
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("expect")
            || name.eq_ignore_ascii_case("upgrade")
        {
            return None;
        } else if name.eq_ignore_ascii_case("connection") {
            close |= tokens(h.value).any(|t| t.eq_ignore_ascii_case(b"close"));
        } else if name.eq_ignore_ascii_case(crate::idempotency::HEADER) {
            idempotency_key = true;
        }
    }
    // Missing or repeated Host: the general path answers 400.
    if hosts != 1 {
        return None;
    }
    let has_length = body.is_some();
    let body = usize::try_from(body.unwrap_or(0)).ok()?;
    if body > MAX_BODY {
        return None;
    }
    Some(RequestFraming {
        body,
        has_length,
        close,
        idempotency_key,
    })
}

/// A request target's path and query (a byte loop: targets are short).
pub(crate) fn split_target(target: &str) -> (&str, Option<&str>) {
    match target.bytes().position(|b| b == b'?') {
        Some(i) => (&target[..i], Some(&target[i + 1..])),
        None => (target, None),
    }
}

/// A Content-Length value: digits only (no sign, no list).
pub(crate) fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// The comma-separated tokens of a header value, trimmed.
pub(crate) fn tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// The request id: the client's, or a new one.
pub(crate) enum RequestId {
    Client(Vec<u8>),
    New([u8; 26]),
}

impl RequestId {
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            RequestId::Client(v) => v,
            RequestId::New(id) => id,
        }
    }
}

/// A response keyward writes itself: a template answer or an error.
pub(crate) struct Local {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

/// What the upstream request head is written from: the client's head and
/// what keyward adds to it.
pub(crate) struct UpstreamHead<'a, 'h, 'b> {
    pub req: &'a httparse::Request<'h, 'b>,
    pub upstream: &'a UpstreamTarget,
    pub names: &'a Names,
    /// The verified key, whose identity headers are added (none on an
    /// open route).
    pub key: Option<&'a CachedKey>,
    /// The route forwards method-override headers.
    pub allow_override: bool,
    /// The forwarding header lines when they depend on the peer alone (no
    /// trusted proxies), written once per connection.
    pub forwarding: Option<&'a [u8]>,
    pub peer: SocketAddr,
    pub trusted: &'a [IpNet],
    pub request_id: &'a [u8],
    /// The client sent a Content-Length.
    pub has_length: bool,
    pub body_len: usize,
}

impl UpstreamHead<'_, '_, '_> {
    /// Writes the request head for the upstream into `out`, from the
    /// client's: credential, hop-by-hop, identity, forwarding and request-id
    /// headers dropped; keyward's identity, forwarding and request-id
    /// headers added.
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        let req = self.req;
        let (upstream, names, key) = (self.upstream, self.names, self.key);
        let allow_override = self.allow_override;
        out.extend_from_slice(req.method.unwrap_or("GET").as_bytes());
        out.push(b' ');
        out.extend_from_slice(upstream.base.as_bytes());
        out.extend_from_slice(req.path.unwrap_or("/").as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        out.extend_from_slice(upstream.host.as_bytes());
        out.extend_from_slice(b"\r\n");
        let prev_xff = credential::HeaderSource::first(&*req.headers, "x-forwarded-for");
        // Names the client listed in Connection are hop-by-hop too.
        let listed = Listed::of(req.headers);
        for h in req.headers.iter() {
            let name = h.name;
            let drop = name.eq_ignore_ascii_case("host")
                || name.eq_ignore_ascii_case("content-length")
                || name.eq_ignore_ascii_case("x-request-id")
                || name.eq_ignore_ascii_case("x-forwarded-for")
                || name.eq_ignore_ascii_case("forwarded")
                || name.eq_ignore_ascii_case("authorization")
                || name.eq_ignore_ascii_case(names.api_key.as_str())
                || names
                    .identity
                    .iter()
                    .any(|n| name.eq_ignore_ascii_case(n.as_str()))
                || HOP_BY_HOP
                    .iter()
                    .any(|n| name.eq_ignore_ascii_case(n.as_str()))
                || listed.contains(name)
                || (!allow_override
                    && crate::routes::METHOD_OVERRIDE
                        .iter()
                        .any(|n| name.eq_ignore_ascii_case(n)));
            if !drop {
                line(out, name.as_bytes(), h.value);
            }
        }
        if let Some(k) = key {
            let [key_id, tenant_id, environment, scopes, owner] = &names.identity;
            let v = k.identity();
            line(out, key_id.as_str().as_bytes(), v.key_id.as_bytes());
            if let Some(t) = &v.tenant_id {
                line(out, tenant_id.as_str().as_bytes(), t.as_bytes());
            }
            line(
                out,
                environment.as_str().as_bytes(),
                v.environment.as_bytes(),
            );
            line(out, scopes.as_str().as_bytes(), v.scopes.as_bytes());
            if let Some(o) = &v.owner {
                line(out, owner.as_str().as_bytes(), o.as_bytes());
            }
        }
        match self.forwarding {
            Some(lines) => out.extend_from_slice(lines),
            None => {
                let peer = self.peer;
                let trusted = self.trusted;
                if let Some(ip) = credential::client_ip(Some(peer), &*self.req.headers, trusted) {
                    let prev = prev_xff
                        .and_then(credential::header_text)
                        .filter(|_| trusted.iter().any(|n| n.contains(&peer.ip())));
                    forwarding_lines(out, ip, prev, peer);
                }
            }
        }
        line(out, b"x-request-id", self.request_id);
        if self.has_length || self.body_len > 0 {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(self.body_len).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// `X-Forwarded-For` (appended to a trusted proxy's `prev`) and
/// `Forwarded` for a request from `ip`, as the general path writes them.
pub(crate) fn forwarding_lines(
    out: &mut Vec<u8>,
    ip: std::net::IpAddr,
    prev: Option<&str>,
    peer: SocketAddr,
) {
    use std::io::Write;
    let _ = match prev {
        Some(prev) => write!(out, "x-forwarded-for: {prev}, {}\r\n", peer.ip()),
        None => write!(out, "x-forwarded-for: {ip}\r\n"),
    };
    let _ = if ip.is_ipv6() {
        write!(out, "forwarded: for=\"[{ip}]\";proto=http\r\n")
    } else {
        write!(out, "forwarded: for={ip};proto=http\r\n")
    };
}

/// The header names a message's `Connection` headers list (hop-by-hop by
/// that listing, RFC 9110 §7.6.1), however many there are.
pub(crate) struct Listed<'a, 'b> {
    headers: &'a [httparse::Header<'b>],
    /// Some `Connection` header lists a name other than `keep-alive` and
    /// `close` (else nothing is scanned: those two are the usual ones).
    any: bool,
    /// `close` is listed (a header of that name would go too).
    close: bool,
}

impl<'a, 'b> Listed<'a, 'b> {
    pub(crate) fn of(headers: &'a [httparse::Header<'b>]) -> Listed<'a, 'b> {
        let (mut any, mut close) = (false, false);
        for t in Self::connection_tokens(headers) {
            if t.eq_ignore_ascii_case(b"close") {
                close = true;
            } else if !t.eq_ignore_ascii_case(b"keep-alive") {
                any = true;
            }
        }
        Listed {
            headers,
            any,
            close,
        }
    }

    fn connection_tokens(
        headers: &'a [httparse::Header<'b>],
    ) -> impl Iterator<Item = &'b [u8]> + 'a {
        headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("connection"))
            .flat_map(|h| tokens(h.value))
    }

    /// `keep-alive` is hop-by-hop by name already; the caller drops it.
    pub(crate) fn contains(&self, name: &str) -> bool {
        (self.close && name.eq_ignore_ascii_case("close"))
            || self.any
                && Self::connection_tokens(self.headers)
                    .any(|t| t.eq_ignore_ascii_case(name.as_bytes()))
    }
}

pub(crate) fn line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

pub(crate) fn route_params<'r, 'p>(route: &'r Route, path: &'p str) -> Params<'r, 'p> {
    if route.tenant_param.is_none() {
        return Vec::new();
    }
    match_segments(&route.segments, path).unwrap_or_default()
}

/// The parts of an upstream response head that decide what happens next.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResponseHead {
    pub status: u16,
    /// The upstream will keep the connection open after this response.
    pub keep_alive: bool,
}

pub(crate) fn io_error(msg: &'static str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

/// How the body of a response to `method` is framed, from its head (pure
/// so a fuzz target can drive it), and whether the head carries `Date`.
pub(crate) fn response_framing(
    headers: &[httparse::Header<'_>],
    method: &Method,
    status: u16,
) -> std::io::Result<(Framing, bool)> {
    let mut framing = None;
    let mut length: Option<u64> = None;
    let mut has_date = false;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let last = tokens(h.value).last().unwrap_or(b"");
            framing = Some(if last.eq_ignore_ascii_case(b"chunked") {
                Framing::Chunked
            } else {
                Framing::UntilClose
            });
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let n = parse_length(h.value)
                .ok_or_else(|| io_error("the upstream sent an invalid Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(io_error("the upstream sent conflicting Content-Lengths"));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("date") {
            has_date = true;
        }
    }
    let no_body = *method == Method::HEAD || status == 204 || status == 304 || status < 200;
    let framing = if no_body {
        Framing::Empty
    } else {
        framing.unwrap_or(match length {
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        })
    };
    Ok((framing, has_date))
}

/// What the client's response head is written with, besides the
/// upstream's head.
#[derive(Clone, Copy)]
pub(crate) struct ClientHead<'a> {
    pub method: &'a Method,
    pub rate: Option<&'a RateState>,
    pub request_id: &'a [u8],
    /// Read only if the upstream sent no `Date`.
    pub clock: &'a dyn Clock,
    /// The connection closes after this response (the client asked, or
    /// the server is stopping).
    pub close: bool,
}

/// Writes the client's response head into `out` from the upstream's, and
/// says how the body is framed.
pub(crate) fn client_head(
    res: &httparse::Response<'_, '_>,
    status: u16,
    head: &ClientHead<'_>,
    out: &mut Vec<u8>,
) -> std::io::Result<Framing> {
    let ClientHead {
        method,
        rate,
        request_id,
        clock,
        close,
    } = *head;
    let framing = {
        let (framing, has_date) = response_framing(res.headers, method, status)?;
        let listed = Listed::of(res.headers);
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
        out.push(b' ');
        let reason: &str = match StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
        {
            Some(r) => r,
            None => res.reason.unwrap_or(""),
        };
        out.extend_from_slice(reason.as_bytes());
        out.extend_from_slice(b"\r\n");
        for h in res.headers.iter() {
            let name = h.name;
            let drop = HOP_BY_HOP
                .iter()
                .any(|n| name.eq_ignore_ascii_case(n.as_str()))
                || listed.contains(name)
                || name.eq_ignore_ascii_case("x-request-id")
                || (framing == Framing::Chunked && name.eq_ignore_ascii_case("content-length"))
                || (rate.is_some()
                    && (name.eq_ignore_ascii_case("ratelimit")
                        || name.eq_ignore_ascii_case("ratelimit-policy")));
            if !drop {
                line(out, name.as_bytes(), h.value);
            }
        }
        if !has_date {
            date_line(out, clock.now());
        }
        if framing == Framing::Chunked {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        if let Some(r) = rate {
            r.write_header_lines(out);
        }
        line(out, b"x-request-id", request_id);
        if close || framing == Framing::UntilClose {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        framing
    };
    Ok(framing)
}

/// Follows a chunked body (RFC 9112 §7.1) to find where it ends; the bytes
/// themselves are relayed unchanged, chunk extensions and trailers included.
#[derive(Debug, Default)]
pub(crate) struct Chunked {
    state: ChunkState,
    size: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChunkState {
    /// A chunk size has at least one digit (an empty one is not `0`).
    #[default]
    SizeStart,
    Size,
    /// White space after the size: only `;` or the line end may follow.
    SizeLws,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    Trailer,
    EndLf,
    Done,
}

impl Chunked {
    /// Consumes `buf` up to the end of the body: how many bytes belong to
    /// it, and whether the body is complete.
    pub(crate) fn feed(&mut self, buf: &[u8]) -> std::io::Result<(usize, bool)> {
        let bad = || io_error("the upstream sent a malformed chunked body");
        let mut i = 0;
        while i < buf.len() && self.state != ChunkState::Done {
            let b = buf[i];
            match self.state {
                ChunkState::SizeStart => {
                    self.size = u64::from((b as char).to_digit(16).ok_or_else(bad)?);
                    self.state = ChunkState::Size;
                }
                ChunkState::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        let d = (b as char).to_digit(16).ok_or_else(bad)?;
                        self.size = self
                            .size
                            .checked_mul(16)
                            .and_then(|s| s.checked_add(u64::from(d)))
                            .ok_or_else(bad)?;
                    }
                    b';' => self.state = ChunkState::Extension,
                    b' ' | b'\t' => self.state = ChunkState::SizeLws,
                    b'\r' => self.state = ChunkState::SizeLf,
                    b'\n' => self.end_size_line(),
                    _ => return Err(bad()),
                },
                ChunkState::SizeLws => match b {
                    b' ' | b'\t' => {}
                    b';' => self.state = ChunkState::Extension,
                    b'\r' => self.state = ChunkState::SizeLf,
                    b'\n' => self.end_size_line(),
                    _ => return Err(bad()),
                },
                ChunkState::Extension => match b {
                    b'\r' => self.state = ChunkState::SizeLf,
                    b'\n' => self.end_size_line(),
                    _ => {}
                },
                ChunkState::SizeLf => {
                    if b != b'\n' {
                        return Err(bad());
                    }
                    self.end_size_line();
                }
                ChunkState::Data => {
                    let n = usize::try_from(self.size)
                        .unwrap_or(usize::MAX)
                        .min(buf.len() - i);
                    self.size -= n as u64;
                    i += n;
                    if self.size == 0 {
                        self.state = ChunkState::DataCr;
                    }
                    continue;
                }
                ChunkState::DataCr => match b {
                    b'\r' => self.state = ChunkState::DataLf,
                    b'\n' => self.state = ChunkState::SizeStart,
                    _ => return Err(bad()),
                },
                ChunkState::DataLf => {
                    if b != b'\n' {
                        return Err(bad());
                    }
                    self.state = ChunkState::SizeStart;
                }
                ChunkState::TrailerStart => match b {
                    b'\r' => self.state = ChunkState::EndLf,
                    b'\n' => self.state = ChunkState::Done,
                    _ => self.state = ChunkState::Trailer,
                },
                ChunkState::Trailer => {
                    if b == b'\n' {
                        self.state = ChunkState::TrailerStart;
                    }
                }
                ChunkState::EndLf => {
                    if b != b'\n' {
                        return Err(bad());
                    }
                    self.state = ChunkState::Done;
                }
                ChunkState::Done => {}
            }
            i += 1;
        }
        Ok((i, self.state == ChunkState::Done))
    }

    fn end_size_line(&mut self) {
        self.state = if self.size == 0 {
            ChunkState::TrailerStart
        } else {
            ChunkState::Data
        };
    }
}

/// An error in the deployment's style, as the general path renders it.
pub(crate) fn local_error(errors: &ErrorsConfig, e: ApiError) -> Local {
    let (parts, body) = keyward_http::error::render_parts(errors, e);
    Local {
        status: parts.status,
        headers: parts.headers,
        body: body.into_bytes(),
    }
}

pub(crate) fn write_local(
    out: &mut Vec<u8>,
    now: Timestamp,
    local: &Local,
    rate: Option<&RateState>,
    request_id: &[u8],
    close: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(local.status.as_u16()).as_bytes());
    out.push(b' ');
    out.extend_from_slice(local.status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &local.headers {
        line(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if let Some(r) = rate {
        r.write_header_lines(out);
    }
    line(out, b"x-request-id", request_id);
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(itoa::Buffer::new().format(local.body.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    date_line(out, now);
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&local.body);
}

/// `date: …` from the server's clock, formatted once a second per thread.
pub(crate) fn date_line(out: &mut Vec<u8>, now: Timestamp) {
    use std::cell::RefCell;
    thread_local! {
        static DATE: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
    }
    let secs = now.0.div_euclid(1000);
    DATE.with_borrow_mut(|(at, text)| {
        if *at != secs {
            let t = std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0));
            *text = httpdate::fmt_http_date(t);
            *at = secs;
        }
        line(out, b"date", text.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_end_where_the_terminal_chunk_and_trailers_end() {
        let body = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nX-Trailer: 1\r\n\r\nEXTRA";
        let mut c = Chunked::default();
        let (n, done) = c.feed(body).unwrap();
        assert!(done);
        assert_eq!(&body[n..], b"EXTRA");
        // Fed one byte at a time, the end is found at the same place.
        let mut c = Chunked::default();
        let mut total = 0;
        for b in body.iter() {
            let (n, done) = c.feed(std::slice::from_ref(b)).unwrap();
            total += n;
            if done {
                break;
            }
        }
        assert_eq!(total, body.len() - 5);
        assert!(Chunked::default().feed(b"zz\r\n").is_err());
        assert!(Chunked::default().feed(b"3\r\nabcX").is_err());
        assert!(Chunked::default().feed(b"ffffffffffffffffff\r\n").is_err());
        let (n, done) = Chunked::default().feed(b"0\r\n\r\n").unwrap();
        assert_eq!((n, done), (5, true));
    }

    /// Found by the `chunked` fuzz target: a size line with no digits read
    /// as the last chunk, and anything after white space as an extension.
    /// Both are malformed (RFC 9112 §7.1), as hyper reads them.
    #[test]
    fn chunk_sizes_have_digits_and_nothing_but_an_extension_after_them() {
        for bad in [
            &b"\n"[..],
            b"\r\n\r\n",
            b";ext\r\n\r\n",
            b" 0\r\n\r\n",
            b"1 2\r\nx\r\n0\r\n\r\n",
            b"1\r\nx\r\n\r\n\r\n",
        ] {
            assert!(Chunked::default().feed(bad).is_err(), "{bad:?}");
        }
        let body = b"1 \t;name=\"v\"\r\nx\r\n0 \r\n\r\n";
        assert_eq!(Chunked::default().feed(body).unwrap(), (body.len(), true));
    }

    #[test]
    fn content_lengths_are_digits_only() {
        assert_eq!(parse_length(b"0"), Some(0));
        assert_eq!(parse_length(b"1234"), Some(1234));
        for bad in [
            &b""[..],
            b"-1",
            b"+1",
            b"1,1",
            b" 1",
            b"0x10",
            b"99999999999999999999",
        ] {
            assert_eq!(parse_length(bad), None, "{bad:?}");
        }
    }
}
