//! The gateway's HTTP/1 fast path: plain HTTP/1.1 gateway requests served
//! by keyward's own code, one task per client connection, as nginx does.
//!
//! A request head is parsed in place (`httparse`, hyper's parser). If the
//! request is one this path takes (see [`codec::plan`]), its key is checked by the
//! same pipeline as the general path ([`crate::pipeline::admit`]:
//! authenticate, route checks, spend), the upstream request head is written straight from the
//! client's bytes (credential, hop-by-hop and identity headers dropped,
//! keyward's identity, forwarding and request-id headers added), sent over a
//! keep-alive connection from this worker's [pool](crate::pool), and the
//! response is relayed as it arrives: its head rewritten, its body copied
//! with its framing (length, chunked, or until close) checked, never
//! buffered whole.
//!
//! Everything else, and anything unusual, is handed back to the caller with
//! the bytes read so far, and the general stack (hyper and axum) serves the
//! connection from that point as if this path did not exist: keyward's own
//! paths, idempotent requests, bodies that are chunked or over
//! [`MAX_BODY`], `Expect`, upgrades, HTTP/1.0, heads that are malformed or
//! over [`MAX_HEAD`]. Errors are rendered by `keyward_http::error`, as everywhere.
//!
//! The pure parts (head plan, framing, the chunked decoder, the heads
//! written) are the [`codec`]; this module is the driver: reads, writes,
//! the pool and the timeouts.
//!
//! The connection timeouts ([`crate::Timeouts`]) are kept here too,
//! with one timer per connection ([`Deadline`]): a head not complete in
//! time is answered 408 and a body that pauses too long likewise; an idle
//! connection is closed. A head handed to the general path takes its
//! deadline along.

use std::net::SocketAddr;
use std::pin::pin;
use std::time::{Duration, Instant};

use axum::http::Method;
use bytes::{Buf, BytesMut};
use keyward_core::clock::Clock;
use keyward_http::edge::{acceptable_request_id, new_request_id};
use keyward_http::error::ApiError;
use keyward_limits::RateState;
use keyward_verify::credential;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::conn::{stopping, Deadline, Handover};
use crate::pipeline::{self, Admitted, Inbound, Seen};
use crate::policy::Policy;
use crate::pool::{self, UpstreamConn};
use crate::routes::UpstreamTarget;
use crate::Gateway;

pub(crate) mod codec;
#[cfg(doc)]
use codec::MAX_BODY;
use codec::{
    client_head, forwarding_lines, io_error, local_error, plan, route_params, split_target, tokens,
    write_local, Chunked, ClientHead, Framing, Local, Plan, RequestId, ResponseHead, UpstreamHead,
    MAX_HEAD, MAX_HEADERS, MAX_RESPONSE_HEAD, MAX_RESPONSE_HEADERS,
};

/// Serves `tcp` (accepted at `accepted`) until it closes (`None`) or a
/// request this path does not take arrives: then the connection is
/// returned with every byte read from it and not yet answered.
pub(crate) async fn serve(
    state: &Gateway,
    mut tcp: TcpStream,
    peer: SocketAddr,
    stop: &mut watch::Receiver<bool>,
    accepted: Instant,
) -> Option<Handover> {
    let timeouts = state.settings.timeouts;
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
            Ok(httparse::Status::Complete(n)) => match plan(&state.settings.own, &policy, &req) {
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
fn timed_out(tcp: &TcpStream, state: &Gateway) {
    let _ = tcp.try_write(&error_bytes(state, ApiError::RequestTimeout));
}

/// `e` as a complete response that closes the connection, written as this
/// path writes its errors (for answers outside a request: timeouts, the
/// connection limit).
pub(crate) fn error_bytes(state: &Gateway, e: ApiError) -> Vec<u8> {
    let local = local_error(&state.settings.errors, e);
    let mut out = Vec::with_capacity(512);
    write_local(
        &mut out,
        state.clock.now(),
        &local,
        None,
        &new_request_id(),
        true,
    );
    out
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

/// One request on this path.
struct Exchange<'a, 'h, 'b> {
    state: &'a Gateway,
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
        let mut seen = Seen::new(Instant::now());
        let answered = match self
            .answer(tcp, scratch, &request_id, &mut seen, stop)
            .await
        {
            Ok(a) => {
                let status = match &a {
                    Answered::Relayed { status, .. } => *status,
                    Answered::Local(local) => local.status.as_u16(),
                };
                pipeline::observe(self.state, &seen, Ok(status));
                a
            }
            Err(e) => {
                pipeline::observe(self.state, &seen, Err(&e));
                Answered::Local(local_error(&self.state.settings.errors, e))
            }
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
                    self.state.clock.now(),
                    &local,
                    seen.rate.as_ref(),
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
        seen: &mut Seen,
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
        let key = match pipeline::admit(state, self.policy, inbound, seen).await? {
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
        UpstreamHead {
            req: self.req,
            upstream,
            names,
            key: key.as_deref(),
            allow_override: route.allow_method_override,
            forwarding: self.forwarding,
            peer: self.peer,
            trusted: &state.settings.trusted_proxies,
            request_id: request_id.as_bytes(),
            has_length: self.plan.has_length,
            body_len: self.body.len(),
        }
        .write(out);
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
            rate: seen.rate.as_ref(),
            request_id: request_id.as_bytes(),
            clock: state.clock.as_ref(),
            close: self.plan.close,
            stop,
        };
        let upstream_started = Instant::now();
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
        seen.upstream = Some(upstream_started.elapsed());
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

/// What the client's response head is written with.
struct Relay<'a> {
    method: &'a Method,
    rate: Option<&'a RateState>,
    request_id: &'a [u8],
    clock: &'a dyn Clock,
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
                        let client = ClientHead {
                            method: relay.method,
                            rate: relay.rate,
                            request_id: relay.request_id,
                            clock: relay.clock,
                            close: relay.close || *relay.stop.borrow(),
                        };
                        let framing = client_head(&res, status, &client, head_out)?;
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
