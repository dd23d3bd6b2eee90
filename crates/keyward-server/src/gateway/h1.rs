//! The gateway's HTTP/1 fast path: plain HTTP/1.1 gateway requests served
//! by keyward's own code, one task per client connection, as nginx does.
//!
//! A request head is parsed in place (`httparse`, hyper's parser). If the
//! request is one this path takes (see [`plan`]), its key is checked by the
//! same pipeline as the general path ([`super::pipeline::admit`]:
//! authenticate, route checks, spend), the upstream request head is written straight from the
//! client's bytes (credential, hop-by-hop and identity headers dropped,
//! keyward's identity, forwarding and request-id headers added), sent over a
//! keep-alive connection from this worker's [pool](super::pool), and the
//! response is relayed as it arrives: its head rewritten, its body copied
//! with its framing (length, chunked, or until close) checked, never
//! buffered whole.
//!
//! Everything else, and anything unusual, is handed back to the caller with
//! the bytes read so far, and the general stack (hyper and axum) serves the
//! connection from that point as if this path did not exist: keyward's own
//! paths, idempotent requests, bodies that are chunked or over
//! [`MAX_BODY`], `Expect`, upgrades, HTTP/1.0, heads that are malformed or
//! over [`MAX_HEAD`]. Errors are rendered by [`crate::error`], as everywhere.
//!
//! The connection timeouts ([`crate::serve::Timeouts`]) are kept here too,
//! with one timer per connection ([`Deadline`]): a head not complete in
//! time is answered 408 and a body that pauses too long likewise; an idle
//! connection is closed. A head handed to the general path takes its
//! deadline along.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::pin::pin;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::pipeline::{self, Admitted, Inbound};
use super::pool::{self, UpstreamConn};
use super::{Names, Policy, Route, UpstreamTarget, HOP_BY_HOP};
use crate::app::{acceptable_request_id, new_request_id, AppState};
use crate::config::IdempotencyMode;
use crate::credential;
use crate::error::ApiError;
use crate::limits::RateState;
use crate::serve::{stopping, Deadline, Front, Handover};
use crate::verifier::CachedKey;

/// Request heads with more headers go to the general path.
const MAX_HEADERS: usize = 64;
/// Upstream responses may carry as many headers as hyper allows.
const MAX_RESPONSE_HEADERS: usize = 100;
/// Larger request heads go to the general path (hyper allows more).
const MAX_HEAD: usize = 16 * 1024;
/// Request bodies up to this size are read whole before forwarding (they
/// fit the socket buffers, so writing them never waits on the upstream);
/// larger ones stream on the general path.
const MAX_BODY: usize = 64 * 1024;
/// Upstream response heads larger than this are a bad gateway.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Serves `tcp` (accepted at `accepted`) until it closes (`None`) or a
/// request this path does not take arrives: then the connection is
/// returned with every byte read from it and not yet answered.
pub(crate) async fn serve(
    front: &Front,
    mut tcp: TcpStream,
    peer: SocketAddr,
    stop: &mut watch::Receiver<bool>,
    accepted: Instant,
) -> Option<Handover> {
    let state = &front.state;
    let timeouts = front.timeouts;
    // A new connection's head is due from the moment it was accepted.
    let first = accepted + timeouts.head;
    let sleep = pin!(tokio::time::sleep_until(first.into()));
    let mut deadline = Deadline::new(sleep, first);
    // Whether `deadline` is the head's: set from the head's first byte.
    let mut in_head = true;
    let handover = |tcp, read, in_head: bool, deadline: &Deadline<_>| Handover {
        tcp,
        read,
        head_deadline: if in_head {
            deadline.at()
        } else {
            Instant::now() + timeouts.head
        },
    };
    let mut policy = state.policy.current();
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut scratch = Scratch {
        out: Vec::with_capacity(2 * 1024),
        head: Vec::with_capacity(1024),
    };
    let forwarding = state.settings.trusted_proxies.is_empty().then(|| {
        let mut lines = Vec::new();
        let ip = keyward_core::allowlist::canonical(peer.ip());
        forwarding_lines(&mut lines, ip, None, peer);
        lines
    });
    loop {
        if state.policy.generation() != policy.generation {
            policy = state.policy.current();
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let (head_len, plan) = match req.parse(&buf) {
            Ok(httparse::Status::Complete(n)) => match plan(front, &policy, &req) {
                Some(p) => (n, p),
                None => return Some(handover(tcp, buf, in_head, &deadline)),
            },
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {
                if !in_head && !buf.is_empty() {
                    in_head = true;
                    deadline.set(Instant::now() + timeouts.head);
                }
                match read_more(&mut tcp, &mut buf, stop, &mut deadline).await {
                    Read::More => continue,
                    Read::Closed => return None,
                    Read::TimedOut if buf.is_empty() => {
                        tracing::trace!("Closing a connection idle for too long.");
                        return None;
                    }
                    Read::TimedOut => {
                        tracing::debug!("A request head did not arrive in time; answering 408 and closing the connection.");
                        timed_out(&tcp, state);
                        return None;
                    }
                }
            }
            _ => return Some(handover(tcp, buf, in_head, &deadline)),
        };
        let total = head_len + plan.body;
        if buf.len() < total {
            // The body is still arriving; parse again once it is here.
            buf.reserve(total - buf.len());
            while buf.len() < total {
                deadline.set(Instant::now() + timeouts.body);
                match read_more(&mut tcp, &mut buf, stop, &mut deadline).await {
                    Read::More => {}
                    Read::Closed => return None,
                    Read::TimedOut => {
                        tracing::debug!("A request body paused for too long; answering 408 and closing the connection.");
                        timed_out(&tcp, state);
                        return None;
                    }
                }
            }
            continue;
        }
        let started = Instant::now();
        let exchange = Exchange {
            state,
            policy: &policy,
            req: &req,
            body: &buf[head_len..total],
            peer,
            forwarding: forwarding.as_deref(),
            plan: &plan,
        };
        let done = exchange.run(&mut tcp, &mut scratch, &*stop).await;
        log(&req, done.status, started, &done.request_id);
        if !done.keep_alive {
            return None;
        }
        buf.advance(total);
        // Idle until the next request's first byte (a plain store: the
        // timer moves only if it would go off too late).
        in_head = false;
        deadline.set(Instant::now() + timeouts.keep_alive);
    }
}

/// What [`read_more`] got.
enum Read {
    More,
    /// The client closed the connection, or the server is stopping.
    Closed,
    /// The deadline in force passed first.
    TimedOut,
}

/// Reads more of a request, until the server stops or `deadline` passes:
/// a request not yet fully received when it does is not waited for (an
/// idle connection, or a client that stalls mid-head, must not hold up the
/// shutdown).
async fn read_more(
    tcp: &mut TcpStream,
    buf: &mut BytesMut,
    stop: &mut watch::Receiver<bool>,
    deadline: &mut Deadline<&mut tokio::time::Sleep>,
) -> Read {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(4 * 1024);
    }
    if *stop.borrow() {
        return Read::Closed;
    }
    let read = tokio::select! {
        biased;
        r = tcp.read_buf(buf) => r,
        _ = stopping(stop) => return Read::Closed,
        () = deadline.expired() => return Read::TimedOut,
    };
    if matches!(read, Ok(n) if n > 0) {
        Read::More
    } else {
        Read::Closed
    }
}

/// Answers 408 `request_timeout` on a connection about to close, without
/// waiting: the socket's buffer is empty unless the client stopped reading.
fn timed_out(tcp: &TcpStream, state: &AppState) {
    let _ = tcp.try_write(&error_bytes(state, ApiError::RequestTimeout));
}

/// `e` as a complete response that closes the connection, written as this
/// path writes its errors (for answers outside a request: timeouts, the
/// connection limit).
pub(crate) fn error_bytes(state: &AppState, e: ApiError) -> Vec<u8> {
    let local = local_error(state, e);
    let mut out = Vec::with_capacity(512);
    write_local(&mut out, state, &local, None, &new_request_id(), true);
    out
}

/// What the head says about a request this path takes.
struct Plan {
    method: Method,
    /// Body length (Content-Length, or 0).
    body: usize,
    has_length: bool,
    /// The client asked to close after this response.
    close: bool,
    /// Index of the matched route in the table, if any.
    route: Option<usize>,
}

/// Decides from the head alone whether this path takes the request;
/// `None` hands it (and the rest of the connection) to the general path.
fn plan(front: &Front, policy: &Policy, req: &httparse::Request<'_, '_>) -> Option<Plan> {
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
    if !matches!(super::path::normalize(path), Ok(Cow::Borrowed(_))) || front.own.contains(path) {
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
struct RequestFraming {
    /// Body length (Content-Length, or 0), at most [`MAX_BODY`].
    body: usize,
    has_length: bool,
    /// The client asked to close after this response.
    close: bool,
    /// The request carries an `Idempotency-Key`.
    idempotency_key: bool,
}

/// The header part of [`plan`], pure so a fuzz target can drive it: `None`
/// if the headers send the request to the general path (a body framed any
/// other way than by one valid Content-Length of at most [`MAX_BODY`],
/// `Expect`, `Upgrade`, a missing or repeated `Host`).
fn request_framing(headers: &[httparse::Header<'_>]) -> Option<RequestFraming> {
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
fn split_target(target: &str) -> (&str, Option<&str>) {
    match target.bytes().position(|b| b == b'?') {
        Some(i) => (&target[..i], Some(&target[i + 1..])),
        None => (target, None),
    }
}

/// A Content-Length value: digits only (no sign, no list).
fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// The comma-separated tokens of a header value, trimmed.
fn tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// A connection's reusable buffers: the request head (and body) for the
/// upstream, or a local answer; and the response head for the client.
struct Scratch {
    out: Vec<u8>,
    head: Vec<u8>,
}

/// How one request ended, for the log and the connection.
struct Done {
    status: u16,
    keep_alive: bool,
    request_id: RequestId,
}

/// The request id: the client's, or a new one.
enum RequestId {
    Client(Vec<u8>),
    New([u8; 26]),
}

impl RequestId {
    fn as_bytes(&self) -> &[u8] {
        match self {
            RequestId::Client(v) => v,
            RequestId::New(id) => id,
        }
    }
}

/// One request on this path.
struct Exchange<'a, 'h, 'b> {
    state: &'a AppState,
    /// The policy in force for this request.
    policy: &'a Policy,
    req: &'a httparse::Request<'h, 'b>,
    body: &'a [u8],
    peer: SocketAddr,
    /// The forwarding header lines when they depend on the peer alone (no
    /// trusted proxies), written once per connection.
    forwarding: Option<&'a [u8]>,
    plan: &'a Plan,
}

/// A response keyward writes itself: a template answer or an error.
struct Local {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

enum Answered {
    /// The upstream's response was relayed; the client connection may
    /// carry on if `keep_alive`.
    Relayed {
        status: u16,
        keep_alive: bool,
    },
    Local(Local),
}

impl Exchange<'_, '_, '_> {
    async fn run(
        &self,
        tcp: &mut TcpStream,
        scratch: &mut Scratch,
        stop: &watch::Receiver<bool>,
    ) -> Done {
        let request_id = match credential::HeaderSource::first(&*self.req.headers, "x-request-id") {
            Some(v) if acceptable_request_id(v) => RequestId::Client(v.to_vec()),
            _ => RequestId::New(new_request_id()),
        };
        let mut rate = None;
        let answered = match self
            .answer(tcp, scratch, &request_id, &mut rate, stop)
            .await
        {
            Ok(a) => a,
            Err(e) => Answered::Local(local_error(self.state, e)),
        };
        match answered {
            Answered::Relayed { status, keep_alive } => Done {
                status,
                keep_alive: keep_alive && !self.plan.close && !*stop.borrow(),
                request_id,
            },
            Answered::Local(local) => {
                let close = self.plan.close || *stop.borrow();
                let status = local.status.as_u16();
                let out = &mut scratch.out;
                out.clear();
                write_local(
                    out,
                    self.state,
                    &local,
                    rate.as_ref(),
                    request_id.as_bytes(),
                    close,
                );
                let written = tcp.write_all(out).await.is_ok();
                Done {
                    status,
                    keep_alive: written && !close,
                    request_id,
                }
            }
        }
    }

    async fn answer(
        &self,
        tcp: &mut TcpStream,
        scratch: &mut Scratch,
        request_id: &RequestId,
        rate: &mut Option<RateState>,
        stop: &watch::Receiver<bool>,
    ) -> Result<Answered, ApiError> {
        let state = self.state;
        let Scratch {
            out,
            head: head_out,
        } = scratch;
        let Some(route) = self.plan.route.map(|i| &self.policy.routes.routes[i]) else {
            return Err(ApiError::RouteNotFound);
        };
        let target = self.req.path.unwrap_or("/");
        let (path, query) = split_target(target);
        let params = route_params(route, path);
        let inbound = Inbound {
            method: &self.plan.method,
            route,
            params: &params,
            headers: &*self.req.headers,
            query,
            peer: Some(self.peer),
        };
        let key = match pipeline::admit(state, self.policy, inbound, rate).await? {
            Admitted::Open => None,
            Admitted::Forward(key) => Some(key),
            Admitted::Respond { status, body } => {
                let body = serde_json::to_vec(&body).map_err(|_| ApiError::Internal)?;
                let mut headers = axum::http::HeaderMap::new();
                headers.insert(
                    axum::http::header::CONTENT_TYPE,
                    axum::http::HeaderValue::from_static("application/json"),
                );
                return Ok(Answered::Local(Local {
                    status,
                    headers,
                    body,
                }));
            }
            // [`plan`] hands requests with an honoured Idempotency-Key to
            // the general path, by the same policy: not reached.
            Admitted::Idempotent { .. } => return Err(ApiError::Internal),
        };
        let limit = self.policy.gateway().max_body_bytes;
        if self.body.len() as u64 > limit {
            return Err(ApiError::PayloadTooLarge(
                usize::try_from(limit).unwrap_or(usize::MAX),
            ));
        }
        let table = &self.policy.routes;
        let (Some(upstream), Some(names)) = (&table.target, &table.names) else {
            return Err(ApiError::Internal);
        };
        out.clear();
        self.upstream_head(out, upstream, names, key.as_deref(), request_id);
        out.extend_from_slice(self.body);
        let gateway = self.policy.gateway();
        let timeout = Duration::from_millis(gateway.timeout_ms);
        let connect_timeout = Duration::from_millis(gateway.connect_timeout_ms);
        let retry = matches!(
            self.plan.method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::PUT
                | Method::DELETE
                | Method::TRACE
        );
        let relay = Relay {
            method: &self.plan.method,
            rate: rate.as_ref(),
            request_id: request_id.as_bytes(),
            state,
            close: self.plan.close,
            stop,
        };
        let (mut up, head, framing) = match tokio::time::timeout(
            timeout,
            send(upstream, connect_timeout, out, retry, &relay, head_out),
        )
        .await
        {
            Err(_) => return Err(ApiError::UpstreamTimeout),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "Upstream request failed.");
                return Err(ApiError::UpstreamUnavailable);
            }
            Ok(Ok(r)) => r,
        };
        let status = head.status;
        let relayed = relay_body(&mut up, tcp, head_out, framing).await;
        let keep_alive = match relayed {
            Ok(upstream_reusable) => {
                if upstream_reusable && head.keep_alive {
                    pool::checkin(up, gateway.max_idle_upstream);
                }
                !matches!(framing, Framing::UntilClose)
            }
            Err(e) => {
                tracing::debug!(error = %e, "Relaying a response body failed; closing the connection.");
                false
            }
        };
        Ok(Answered::Relayed { status, keep_alive })
    }

    /// The request head for the upstream, written from the client's.
    fn upstream_head(
        &self,
        out: &mut Vec<u8>,
        upstream: &UpstreamTarget,
        names: &Names,
        key: Option<&CachedKey>,
        request_id: &RequestId,
    ) {
        let req = self.req;
        let settings = &self.state.settings;
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
        let allow_override = self
            .plan
            .route
            .is_some_and(|i| self.policy.routes.routes[i].allow_method_override);
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
                    && super::METHOD_OVERRIDE
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
                let trusted = &settings.trusted_proxies;
                if let Some(ip) = credential::client_ip(Some(peer), &*self.req.headers, trusted) {
                    let prev = prev_xff
                        .and_then(credential::header_text)
                        .filter(|_| trusted.iter().any(|n| n.contains(&peer.ip())));
                    forwarding_lines(out, ip, prev, peer);
                }
            }
        }
        line(out, b"x-request-id", request_id.as_bytes());
        if self.plan.has_length || !self.body.is_empty() {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(self.body.len()).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// `X-Forwarded-For` (appended to a trusted proxy's `prev`) and
/// `Forwarded` for a request from `ip`, as the general path writes them.
fn forwarding_lines(out: &mut Vec<u8>, ip: std::net::IpAddr, prev: Option<&str>, peer: SocketAddr) {
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
struct Listed<'a, 'b> {
    headers: &'a [httparse::Header<'b>],
    /// Some `Connection` header lists a name other than `keep-alive` and
    /// `close` (else nothing is scanned: those two are the usual ones).
    any: bool,
    /// `close` is listed (a header of that name would go too).
    close: bool,
}

impl<'a, 'b> Listed<'a, 'b> {
    fn of(headers: &'a [httparse::Header<'b>]) -> Listed<'a, 'b> {
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
    fn contains(&self, name: &str) -> bool {
        (self.close && name.eq_ignore_ascii_case("close"))
            || self.any
                && Self::connection_tokens(self.headers)
                    .any(|t| t.eq_ignore_ascii_case(name.as_bytes()))
    }
}

fn line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn route_params<'r, 'p>(route: &'r Route, path: &'p str) -> super::Params<'r, 'p> {
    if route.tenant_param.is_none() {
        return Vec::new();
    }
    super::match_segments(&route.segments, path).unwrap_or_default()
}

/// The parts of an upstream response head that decide what happens next.
#[derive(Debug, Clone, Copy)]
struct ResponseHead {
    status: u16,
    /// The upstream will keep the connection open after this response.
    keep_alive: bool,
}

/// Sends `request` upstream on a pooled connection (or a new one) and waits
/// for the response head. A pooled connection that turns out to be closed
/// before any response byte arrived is replaced once, if `retry` (the
/// method is idempotent, so a second send is safe).
async fn send(
    upstream: &UpstreamTarget,
    connect_timeout: Duration,
    request: &[u8],
    retry: bool,
    relay: &Relay<'_>,
    head_out: &mut Vec<u8>,
) -> std::io::Result<(UpstreamConn, ResponseHead, Framing)> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut up = match pool::checkout(&upstream.authority) {
            Some(c) => c,
            None => pool::connect(&upstream.authority, connect_timeout).await?,
        };
        let result = match up.tcp.write_all(request).await {
            Ok(()) => read_head(&mut up, relay, head_out).await,
            Err(e) => Err(e),
        };
        match result {
            Ok((head, framing)) => return Ok((up, head, framing)),
            Err(e) if attempt < 2 && up.reused && up.buf.is_empty() && (retry || is_unsent(&e)) => {
                tracing::debug!(error = %e, "A pooled upstream connection was closed; retrying on a new one.");
            }
            Err(e) => return Err(e),
        }
    }
}

/// The write itself failed: the request never reached the upstream.
fn is_unsent(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::NotConnected
    )
}

fn io_error(msg: &'static str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

/// What the client's response head is written with.
struct Relay<'a> {
    method: &'a Method,
    rate: Option<&'a RateState>,
    request_id: &'a [u8],
    state: &'a AppState,
    /// The client asked to close after this response.
    close: bool,
    /// The server is stopping (looked at when the head is written, so a
    /// request in flight at shutdown is told the connection closes).
    stop: &'a watch::Receiver<bool>,
}

/// Reads until `up.buf` holds a complete final response head
/// (informational 1xx responses are skipped, as hyper does), writes the
/// client's head from it into `head_out` (parsed once), consumes it, and
/// says how the body is framed.
async fn read_head(
    up: &mut UpstreamConn,
    relay: &Relay<'_>,
    head_out: &mut Vec<u8>,
) -> std::io::Result<(ResponseHead, Framing)> {
    loop {
        let parsed = {
            let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
            let mut res = httparse::Response::new(&mut headers);
            match res.parse(&up.buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let status = res.code.unwrap_or(0);
                    if status == 101 {
                        return Err(io_error("the upstream switched protocols unasked"));
                    }
                    if (100..200).contains(&status) {
                        Some((len, None))
                    } else {
                        let keep_alive = res.version == Some(1)
                            && !res.headers.iter().any(|h| {
                                h.name.eq_ignore_ascii_case("connection")
                                    && tokens(h.value).any(|t| t.eq_ignore_ascii_case(b"close"))
                            });
                        head_out.clear();
                        let framing = client_head(&res, status, relay, head_out)?;
                        let head = ResponseHead { status, keep_alive };
                        Some((len, Some((head, framing))))
                    }
                }
                Ok(httparse::Status::Partial) => None,
                Err(_) => return Err(io_error("the upstream's response head is malformed")),
            }
        };
        match parsed {
            Some((len, None)) => up.buf.advance(len),
            Some((len, Some(done))) => {
                up.buf.advance(len);
                return Ok(done);
            }
            None => {
                if up.buf.len() >= MAX_RESPONSE_HEAD {
                    return Err(io_error("the upstream's response head is too large"));
                }
                if up.buf.capacity() - up.buf.len() < 1024 {
                    up.buf.reserve(8 * 1024);
                }
                if up.tcp.read_buf(&mut up.buf).await? == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the upstream closed the connection before answering",
                    ));
                }
            }
        }
    }
}

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

/// How the body of a response to `method` is framed, from its head (pure
/// so a fuzz target can drive it), and whether the head carries `Date`.
fn response_framing(
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

/// Writes the client's response head into `out` from the upstream's, and
/// says how the body is framed.
fn client_head(
    res: &httparse::Response<'_, '_>,
    status: u16,
    relay: &Relay<'_>,
    out: &mut Vec<u8>,
) -> std::io::Result<Framing> {
    let Relay {
        method,
        rate,
        request_id,
        state,
        close,
        stop,
    } = *relay;
    let close = close || *stop.borrow();
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
            date_line(out, state);
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

/// Copies the response body from the upstream to the client as it arrives.
/// `Ok(true)`: the body ended where its framing said, so the upstream
/// connection can serve another request. `out` holds the head on entry.
async fn relay_body(
    up: &mut UpstreamConn,
    tcp: &mut TcpStream,
    out: &mut Vec<u8>,
    framing: Framing,
) -> std::io::Result<bool> {
    /// Bytes already read with the head are sent with it, up to this many.
    const COALESCE: usize = 16 * 1024;
    const CHUNK: usize = 64 * 1024;
    let mut left = match framing {
        Framing::Empty => 0,
        Framing::Length(n) => n,
        Framing::Chunked | Framing::UntilClose => u64::MAX,
    };
    let mut chunks = Chunked::default();
    // The part of `up.buf` that belongs to this message.
    let take =
        |buf: &[u8], left: &mut u64, chunks: &mut Chunked| -> std::io::Result<(usize, bool)> {
            match framing {
                Framing::Empty => Ok((0, true)),
                Framing::Length(_) => {
                    let n = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                    *left -= n as u64;
                    Ok((n, *left == 0))
                }
                Framing::Chunked => chunks.feed(buf),
                Framing::UntilClose => Ok((buf.len(), false)),
            }
        };
    let (n, mut finished) = take(&up.buf, &mut left, &mut chunks)?;
    if n <= COALESCE {
        out.extend_from_slice(&up.buf[..n]);
        tcp.write_all(out).await?;
    } else {
        tcp.write_all(out).await?;
        tcp.write_all(&up.buf[..n]).await?;
    }
    up.buf.advance(n);
    while !finished {
        if !up.buf.is_empty() {
            // Bytes beyond the framing's end: the body's own end is unclear.
            return Ok(false);
        }
        up.buf.clear();
        up.buf.reserve(CHUNK);
        if up.tcp.read_buf(&mut up.buf).await? == 0 {
            if framing == Framing::UntilClose {
                return Ok(false);
            }
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the upstream closed the connection mid-body",
            ));
        }
        let (n, done) = take(&up.buf, &mut left, &mut chunks)?;
        tcp.write_all(&up.buf[..n]).await?;
        up.buf.advance(n);
        finished = done;
    }
    Ok(up.buf.is_empty())
}

/// Follows a chunked body (RFC 9112 §7.1) to find where it ends; the bytes
/// themselves are relayed unchanged, chunk extensions and trailers included.
#[derive(Debug, Default)]
struct Chunked {
    state: ChunkState,
    size: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
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
    fn feed(&mut self, buf: &[u8]) -> std::io::Result<(usize, bool)> {
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
fn local_error(state: &AppState, e: ApiError) -> Local {
    let (parts, body) = crate::error::render_parts(&state.settings, e);
    Local {
        status: parts.status,
        headers: parts.headers,
        body: body.into_bytes(),
    }
}

fn write_local(
    out: &mut Vec<u8>,
    state: &AppState,
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
    date_line(out, state);
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&local.body);
}

/// `date: …` from the server's clock, formatted once a second per thread.
fn date_line(out: &mut Vec<u8>, state: &AppState) {
    use std::cell::RefCell;
    thread_local! {
        static DATE: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
    }
    let secs = state.clock.now().0.div_euclid(1000);
    DATE.with_borrow_mut(|(at, text)| {
        if *at != secs {
            let t = std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0));
            *text = httpdate::fmt_http_date(t);
            *at = secs;
        }
        line(out, b"date", text.as_bytes());
    });
}

/// The general path's request log line (`app::edge`), for this path's
/// requests: method, path without the query (keys sent there by mistake
/// stay out of the logs), status, time, request id; never a header.
fn log(req: &httparse::Request<'_, '_>, status: u16, started: Instant, request_id: &RequestId) {
    let method = req.method.unwrap_or("");
    let path = req.path.unwrap_or("");
    let (path, _) = split_target(path);
    let request_id = std::str::from_utf8(request_id.as_bytes()).unwrap_or_default();
    if status >= 500 {
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        tracing::warn!(method, path, status, micros, request_id, "Request failed.");
    } else if tracing::enabled!(tracing::Level::DEBUG) {
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        tracing::debug!(method, path, status, micros, request_id, "Request served.");
    }
}

#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod fuzzing;

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
