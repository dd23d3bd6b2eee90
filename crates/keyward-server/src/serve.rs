//! How connections are served: one thread per worker, each with its own
//! single-threaded Tokio runtime and its own accept loop on the listener
//! (the socket is shared; the kernel hands each connection to one of them).
//!
//! A connection stays on the thread that accepted it for its whole life, so
//! a request never wakes another thread: the gateway's HTTP/1 fast path
//! (`keyward_gateway`'s `Gateway::serve_h1`) reads the request, talks to the upstream over a
//! keep-alive connection owned by the same thread, and writes the response,
//! all in one task. Anything the fast path does not take is handed, with the
//! bytes already read, to hyper and the axum [`Router`] for the rest of the
//! connection's life; that includes keyward's own API, the console, HTTP/2.
//!
//! Shutdown ([`Workers::drain`]): the listener stops accepting, idle
//! connections close, requests in flight finish. Dropping [`Workers`]
//! without draining stops them the same way.
//!
//! Limits ([`Timeouts`], `http.max_connections`): a request head must
//! arrive within `http.header_read_timeout_ms`, a request body may pause
//! for at most `http.body_read_timeout_ms`, and a connection idle between
//! requests closes after `http.keep_alive_timeout_ms`, on both paths (the
//! fast path keeps them itself; the general path
//! in [`Conn`], which sees hyper's reads, and [`ClientBody`], which sees
//! the request body). Past `max_connections` open connections on the
//! node, new ones are answered `503 overloaded` and closed ([`refuse`]).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use axum::response::Response;
use axum::Router;
use bytes::{Buf, Bytes, BytesMut};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Sleep;

use crate::app::AppState;
use crate::config::{Config, Settings};
use keyward_gateway::conn::{stopping, BodyProgress, ClientBody, Deadline, Handover, Timeouts};
use keyward_http::error::ApiError;

/// What every worker shares.
pub(crate) struct Front {
    pub state: AppState,
    pub router: Router,
    pub timeouts: Timeouts,
    /// Most connections open at once on this node.
    pub max_connections: usize,
    /// hyper's settings for the general path, built once.
    http: auto::Builder<TokioExecutor>,
}

/// HTTP/2 streams open at once per connection (RFC 9113 asks for no fewer
/// than 100); each may hold an upstream connection.
const H2_MAX_STREAMS: u32 = 100;
/// HTTP/2 connections are pinged this often, and closed if a ping is not
/// answered within as long again: a vanished peer does not hold streams.
const H2_PING: Duration = Duration::from_secs(20);

impl Front {
    pub fn new(state: AppState, router: Router) -> Front {
        let config = &state.settings.config;
        let timeouts = state.gateway.settings().timeouts;
        let max_connections = connection_cap(config);
        let mut http = auto::Builder::new(TokioExecutor::new());
        http.http2()
            .enable_connect_protocol()
            .max_concurrent_streams(H2_MAX_STREAMS)
            .timer(TokioTimer::new())
            .keep_alive_interval(H2_PING)
            .keep_alive_timeout(H2_PING);
        Front {
            state,
            router,
            timeouts,
            max_connections,
            http,
        }
    }
}

/// The `[http]` timeouts, as durations.
pub(crate) fn timeouts(config: &Config) -> Timeouts {
    let http = &config.http;
    Timeouts {
        head: Duration::from_millis(http.header_read_timeout_ms),
        body: Duration::from_millis(http.body_read_timeout_ms),
        keep_alive: Duration::from_millis(http.keep_alive_timeout_ms),
    }
}

/// File descriptors kept for everything but client connections: the
/// listener, the runtimes, the store's pool, log files, and connections
/// being refused ([`MAX_REFUSING`]).
const FD_RESERVE: u64 = 64 + MAX_REFUSING as u64;

/// The connection cap in force: `http.max_connections`, or what the
/// open-file limit allows if that is less or the setting is 0. A gateway
/// counts two descriptors per connection (one to the upstream).
fn connection_cap(config: &Config) -> usize {
    let configured = config.http.max_connections;
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    let per_connection = if config.gateway.upstream.is_some() {
        2
    } else {
        1
    };
    let allowed = limit.map(|n| {
        let n = n.saturating_sub(FD_RESERVE) / per_connection;
        usize::try_from(n).unwrap_or(usize::MAX).max(16)
    });
    let cap = match (configured, allowed) {
        (0, Some(a)) => a,
        // No limit on descriptors (rare): a large, finite default.
        (0, None) => 100_000,
        (c, Some(a)) if c > a => {
            tracing::warn!(
                configured = c,
                allowed = a,
                open_file_limit = limit,
                "http.max_connections is more than the open-file limit allows; using the lower number."
            );
            a
        }
        (c, _) => c,
    };
    tracing::info!(
        max_connections = cap,
        open_file_limit = limit,
        "Connection limit set."
    );
    cap
}

/// The worker threads. Dropping this stops them: they stop accepting,
/// finish their connections and exit.
pub(crate) struct Workers {
    stop: StopOnDrop,
    drained: Vec<tokio::sync::oneshot::Receiver<()>>,
    /// Dropped to let the drained workers' runtimes end. They outlive the
    /// drain on purpose: store connections opened while serving (PostgreSQL)
    /// are driven by the runtime that opened them, and the final credit
    /// settlement and last-use flush still need them.
    _exit: watch::Sender<()>,
}

impl Workers {
    /// Starts `n` workers (at least one) serving `listener`.
    pub fn start(front: Arc<Front>, listener: TcpListener, n: usize) -> std::io::Result<Workers> {
        let listener = listener.into_std()?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let (exit_tx, exit_rx) = watch::channel(());
        let n = n.max(1);
        let balance = Arc::new(Balance {
            open: (0..n).map(|_| AtomicUsize::new(0)).collect(),
            changed: tokio::sync::Notify::new(),
            refusing: AtomicUsize::new(0),
        });
        let mut drained = Vec::with_capacity(n);
        for i in 0..n {
            let listener = listener.try_clone()?;
            let front = Arc::clone(&front);
            let balance = Arc::clone(&balance);
            let stop = stop_rx.clone();
            let mut exit = exit_rx.clone();
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            std::thread::Builder::new()
                .name(format!("keyward-http-{i}"))
                .spawn(move || {
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            tracing::error!(error = %e, "Could not start a worker runtime.");
                            return;
                        }
                    };
                    rt.block_on(async move {
                        worker(listener, front, stop, balance, i).await;
                        let _ = tx.send(());
                        // Resolves with an error once `Workers` is dropped.
                        while exit.changed().await.is_ok() {}
                    });
                })?;
            drained.push(rx);
        }
        Ok(Workers {
            stop: StopOnDrop(stop_tx),
            drained,
            _exit: exit_tx,
        })
    }

    /// Stops accepting and waits until every connection has ended (idle
    /// ones are closed, requests in flight finish).
    pub async fn drain(&mut self) {
        let _ = self.stop.0.send(true);
        for rx in self.drained.drain(..) {
            // An error means the worker ended without saying so (it
            // panicked): there is nothing left to wait for.
            let _ = rx.await;
        }
    }
}

/// Tells the workers to stop when dropped.
struct StopOnDrop(watch::Sender<bool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(true);
    }
}

/// Open connections per worker. A connection stays on the worker that
/// accepted it, so the workers share out new ones: a worker holding more
/// than one connection above the least busy one leaves the listener to the
/// others until that changes (all of them are woken by every new
/// connection; the kernel gives it to the one that accepts).
struct Balance {
    open: Vec<AtomicUsize>,
    changed: tokio::sync::Notify,
    /// Connections over the cap being answered 503 ([`refuse`]).
    refusing: AtomicUsize,
}

impl Balance {
    /// Open connections on the node.
    fn total(&self) -> usize {
        self.open.iter().map(|o| o.load(Ordering::Relaxed)).sum()
    }

    fn busier(&self, me: usize) -> bool {
        let mine = self.open[me].load(Ordering::Relaxed);
        let least = self
            .open
            .iter()
            .map(|o| o.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0);
        mine > least + 1
    }

    fn add(&self, me: usize) {
        self.open[me].fetch_add(1, Ordering::Relaxed);
        self.changed.notify_waiters();
    }

    fn remove(&self, me: usize) {
        self.open[me].fetch_sub(1, Ordering::Relaxed);
        self.changed.notify_waiters();
    }

    /// Waits until this worker is not the busier one.
    async fn my_turn(&self, me: usize) {
        loop {
            let changed = self.changed.notified();
            let mut changed = pin!(changed);
            changed.as_mut().enable();
            if !self.busier(me) {
                return;
            }
            changed.await;
        }
    }
}

/// One open connection in [`Balance`], until dropped (a panic included).
struct Counted(Arc<Balance>, usize);

impl Counted {
    fn new(balance: Arc<Balance>, me: usize) -> Counted {
        balance.add(me);
        Counted(balance, me)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.remove(self.1);
    }
}

async fn worker(
    listener: std::net::TcpListener,
    front: Arc<Front>,
    stop: watch::Receiver<bool>,
    balance: Arc<Balance>,
    me: usize,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "Could not register the listener with a worker.");
            return;
        }
    };
    // Each connection holds a receiver; `closed()` resolves when all are gone.
    let (open_tx, open_rx) = watch::channel(());
    // The connections watch this worker's own copy of the stop signal: it
    // is read on every request, and only this thread touches it.
    let (local_tx, local_rx) = watch::channel(false);
    let mut stopping_rx = stop;
    // When the connection limit or an accept error was last logged: a
    // flood must not turn into a flood of log lines.
    let mut logged_limit = None;
    let mut logged_error = None;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stopping(&mut stopping_rx) => break,
            accepted = async {
                balance.my_turn(me).await;
                listener.accept().await
            } => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let accepted = Instant::now();
                if balance.total() >= front.max_connections {
                    if due(&mut logged_limit, accepted) {
                        tracing::warn!(
                            max_connections = front.max_connections,
                            "At the connection limit; new connections are answered 503 (logged at most every 10 s)."
                        );
                    }
                    refuse(&front, tcp, &balance);
                    continue;
                }
                // No Nagle: a response is written as soon as it is ready
                // (nginx does the same), and small writes held back for an
                // ACK would add tens of milliseconds.
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "Could not set TCP_NODELAY.");
                }
                let front = Arc::clone(&front);
                let stop = local_rx.clone();
                let open = open_rx.clone();
                let counted = Counted::new(Arc::clone(&balance), me);
                tokio::spawn(async move {
                    connection(front, tcp, peer, stop, accepted).await;
                    drop(counted);
                    drop(open);
                });
            }
            Err(e) => accept_failed(e, &mut logged_error).await,
        }
    }
    drop(listener);
    let _ = local_tx.send(true);
    drop(open_rx);
    open_tx.closed().await;
    keyward_gateway::close_idle_upstreams();
}

/// Whether a rate-limited log line is due (at most one per 10 s), noting
/// that it is written.
fn due(last: &mut Option<Instant>, now: Instant) -> bool {
    let due = last.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10));
    if due {
        *last = Some(now);
    }
    due
}

/// Errors of one connection (reset before it was accepted) are ignored;
/// others (out of file descriptors) are logged and accepting pauses briefly,
/// as hyper and axum do, so the loop does not spin.
async fn accept_failed(e: std::io::Error, logged: &mut Option<Instant>) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    if due(logged, Instant::now()) {
        tracing::error!(error = %e, "Could not accept a connection; pausing accepts (logged at most every 10 s).");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Connections over the cap being answered at once, on the node (each
/// holds a file descriptor); past this, one is answered only if its socket
/// takes the answer at once, and closed.
const MAX_REFUSING: usize = 64;
/// The longest a refused connection is kept to deliver its answer.
const REFUSAL_TIME: Duration = Duration::from_secs(2);

/// Answers a connection over the cap `503 overloaded` (with `Retry-After`
/// and `Connection: close`) and closes it. It is accepted and answered
/// rather than left in the listen backlog: a client there waits without
/// knowing why (and once the backlog is full its SYNs are dropped and
/// retried after seconds), while a 503 tells it, and a load balancer, at
/// once; and a connection keyward accepts cannot leave the process out of
/// descriptors (the cap is below the open-file limit, [`FD_RESERVE`]).
fn refuse(front: &Front, tcp: TcpStream, balance: &Arc<Balance>) {
    let answer = front.state.gateway.error_bytes(ApiError::Overloaded);
    if balance.refusing.fetch_add(1, Ordering::Relaxed) >= MAX_REFUSING {
        balance.refusing.fetch_sub(1, Ordering::Relaxed);
        // Too many answers under way: this one is written if the socket
        // takes it now, and the connection closed at once.
        let _ = tcp.try_write(&answer);
        return;
    }
    let balance = Arc::clone(balance);
    tokio::spawn(async move {
        let mut tcp = tcp;
        let _ = tokio::time::timeout(REFUSAL_TIME, async {
            if tcp.write_all(&answer).await.is_err() {
                return;
            }
            let _ = tcp.shutdown().await;
            // Read what the client sends until it closes: closing with
            // unread bytes would reset the connection, and a reset can
            // destroy the answer before the client reads it.
            let mut sink = [0u8; 2048];
            while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
        drop(tcp);
        balance.refusing.fetch_sub(1, Ordering::Relaxed);
    });
}

async fn connection(
    front: Arc<Front>,
    tcp: TcpStream,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
    accepted: Instant,
) {
    // The policy in force when the connection arrives decides (a reload
    // reaches connections already on the fast path at their next request).
    let fast = front.state.gateway.fast_path();
    let handover = if fast {
        match front
            .state
            .gateway
            .serve_h1(tcp, peer, &mut stop, accepted)
            .await
        {
            Some(handover) => handover,
            None => return,
        }
    } else {
        Handover {
            tcp,
            read: BytesMut::new(),
            head_deadline: accepted + front.timeouts.head,
        }
    };
    general(front, handover, peer, stop).await;
}

/// Serves the rest of a connection with hyper (HTTP/1 or HTTP/2, upgrades)
/// and the router, as `axum::serve` would.
async fn general(
    front: Arc<Front>,
    handover: Handover,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let requests = Arc::new(Requests::default());
    let service = AppService {
        router: front.router.clone(),
        settings: Arc::clone(&front.state.settings),
        peer,
        requests: Arc::clone(&requests),
        body_timeout: front.timeouts.body,
    };
    let io = Conn::new(Arc::clone(&front), handover, requests);
    let mut conn = pin!(front
        .http
        .serve_connection_with_upgrades(TokioIo::new(io), service));
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::trace!(error = %e, "Connection ended with an error.");
            }
            return;
        }
        _ = stopping(&mut stop) => conn.as_mut().graceful_shutdown(),
    }
    if let Err(e) = conn.await {
        tracing::trace!(error = %e, "Connection ended with an error.");
    }
}

/// The router as a hyper service, with the peer address for extractors.
#[derive(Clone)]
struct AppService {
    router: Router,
    settings: Arc<Settings>,
    peer: SocketAddr,
    /// The connection's requests, which [`Conn`] watches.
    requests: Arc<Requests>,
    body_timeout: Duration,
}

impl hyper::service::Service<Request<Incoming>> for AppService {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let mut req = req;
        if let Err(e) = crate::app::admit(&mut req) {
            let refused = crate::app::refused(&self.settings, &req, e);
            return Box::pin(std::future::ready(Ok(refused)));
        }
        let mut req = if req.body().is_end_stream() {
            req.map(Body::new)
        } else {
            let progress = BodyProgress::default();
            let mut req = req
                .map(|body| Body::new(ClientBody::new(body, self.body_timeout, progress.clone())));
            req.extensions_mut().insert(progress);
            req
        };
        req.extensions_mut().insert(ConnectInfo(self.peer));
        let busy = InFlight::start(&self.requests);
        let response = tower_service::Service::call(&mut self.router.clone(), req);
        Box::pin(async move {
            let response = response.await?;
            if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                busy.0.upgraded.store(true, Ordering::Relaxed);
            }
            Ok(response.map(|inner| {
                Body::new(Tracked {
                    inner,
                    busy: Some(busy),
                })
            }))
        })
    }
}

/// A connection's requests, as the general path's service counts them for
/// [`Conn`]: hyper tells its I/O nothing about where a request begins or
/// ends.
#[derive(Default)]
struct Requests {
    /// Requests begun (a change means a request head was complete).
    started: AtomicU64,
    /// Requests whose response has not been sent whole.
    in_flight: AtomicUsize,
    /// The connection was upgraded: its bytes are no longer HTTP.
    upgraded: AtomicBool,
    /// The connection's task, when its read waits while a request is in
    /// flight: woken when the last one ends, so the keep-alive timer starts
    /// (hyper may have polled the read for the last time before that).
    waiting: std::sync::Mutex<Option<std::task::Waker>>,
}

/// One request in [`Requests::in_flight`], until dropped.
struct InFlight(Arc<Requests>);

impl InFlight {
    fn start(requests: &Arc<Requests>) -> InFlight {
        requests.started.fetch_add(1, Ordering::Relaxed);
        requests.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(requests))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            let waiting = self
                .0
                .waiting
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(w) = waiting {
                w.wake();
            }
        }
    }
}

/// A response body that keeps its request in flight until it has been
/// sent (or dropped).
struct Tracked {
    inner: Body,
    busy: Option<InFlight>,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.busy = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Where the general path's connection is between requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for a request head (`bytes`: some of it arrived).
    Head { bytes: bool },
    /// A request is in the service or its response is being sent.
    Busy,
    /// After a response, before a byte of the next request.
    Idle,
    /// Upgraded: no more HTTP, no more timeouts.
    Off,
}

/// The general path's connection: the bytes the fast path read and did not
/// answer first, then the socket's; and the head and keep-alive timeouts,
/// which hyper does not keep as configured (its header timeout, when set,
/// also bounds keep-alive, and closes without an answer). A head that
/// started and did not finish in time is answered 408 `request_timeout`
/// before the connection closes; a connection idle too long (nothing sent
/// on a new one, nothing after a response) just closes: a 408 there could
/// be taken as the answer to a request the client is only now sending.
/// HTTP/2 connections (told by their preface) have no head phase: one
/// without a stream open for the keep-alive timeout is closed.
struct Conn {
    read: BytesMut,
    tcp: TcpStream,
    front: Arc<Front>,
    requests: Arc<Requests>,
    /// `requests.started` when last looked at.
    seen: u64,
    phase: Phase,
    /// The first bytes, until three tell whether this is HTTP/2.
    preface: ([u8; 3], usize),
    h2: bool,
    deadline: Deadline<Box<Sleep>>,
}

impl Conn {
    fn new(front: Arc<Front>, handover: Handover, requests: Arc<Requests>) -> Conn {
        let Handover {
            tcp,
            read,
            head_deadline,
        } = handover;
        let sleep = Box::pin(tokio::time::sleep_until(head_deadline.into()));
        Conn {
            read,
            tcp,
            front,
            requests,
            seen: 0,
            phase: Phase::Head { bytes: false },
            preface: ([0; 3], 0),
            h2: false,
            deadline: Deadline::new(sleep, head_deadline),
        }
    }

    /// Notes the first bytes of the connection, until they tell HTTP/2.
    fn preface(&mut self, got: &[u8]) {
        let (bytes, n) = &mut self.preface;
        for &b in got.iter().take(3 - *n) {
            bytes[*n] = b;
            *n += 1;
        }
        if *n == 3 && bytes == b"PRI" {
            self.h2 = true;
            self.phase = Phase::Idle;
            self.deadline
                .set(Instant::now() + self.front.timeouts.keep_alive);
        }
    }

    /// Follows the connection's phase after a read, and decides on a
    /// timeout when the read waits.
    fn watch(
        &mut self,
        cx: &mut Context<'_>,
        polled: &Poll<std::io::Result<()>>,
        got: &[u8],
    ) -> Watched {
        if self.phase == Phase::Off {
            return Watched::Pass;
        }
        let requests = &self.requests;
        if requests.upgraded.load(Ordering::Relaxed) {
            self.phase = Phase::Off;
            return Watched::Pass;
        }
        let started = requests.started.load(Ordering::Relaxed);
        if started != self.seen || requests.in_flight.load(Ordering::Relaxed) > 0 {
            self.seen = started;
            self.phase = Phase::Busy;
            if requests.in_flight.load(Ordering::Relaxed) > 0 {
                if polled.is_pending() {
                    let mut waiting = requests.waiting.lock().unwrap_or_else(|p| p.into_inner());
                    if !waiting.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        *waiting = Some(cx.waker().clone());
                    }
                    drop(waiting);
                    // The request may have ended meanwhile, its wake-up
                    // missed: look again.
                    if requests.in_flight.load(Ordering::Relaxed) > 0 {
                        return Watched::Pass;
                    }
                } else {
                    return Watched::Pass;
                }
            }
        }
        match polled {
            Poll::Ready(Ok(())) if !got.is_empty() => {
                if self.preface.1 < 3 {
                    self.preface(got);
                }
                if !self.h2 {
                    match &mut self.phase {
                        Phase::Head { bytes } => *bytes = true,
                        phase => {
                            // Bytes of a new request head (or the body of
                            // one already answered, which hyper drains).
                            *phase = Phase::Head { bytes: true };
                            self.deadline.set(Instant::now() + self.front.timeouts.head);
                        }
                    }
                }
                Watched::Pass
            }
            Poll::Ready(_) => Watched::Pass,
            Poll::Pending => {
                if self.phase == Phase::Busy {
                    self.phase = Phase::Idle;
                    self.deadline
                        .set(Instant::now() + self.front.timeouts.keep_alive);
                }
                match self.deadline.poll_expired(cx) {
                    Poll::Pending => Watched::Pass,
                    Poll::Ready(()) if self.phase == (Phase::Head { bytes: true }) => {
                        Watched::HeadTimedOut
                    }
                    Poll::Ready(()) => Watched::Idle,
                }
            }
        }
    }
}

/// What [`Conn::watch`] made of a read.
enum Watched {
    Pass,
    /// A request head did not arrive whole in time.
    HeadTimedOut,
    /// The connection was idle too long.
    Idle,
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let polled = if !this.read.is_empty() {
            let n = this.read.len().min(buf.remaining());
            buf.put_slice(&this.read[..n]);
            this.read.advance(n);
            Poll::Ready(Ok(()))
        } else {
            Pin::new(&mut this.tcp).poll_read(cx, buf)
        };
        match this.watch(cx, &polled, &buf.filled()[before..]) {
            Watched::Pass => polled,
            Watched::HeadTimedOut => {
                tracing::debug!("A request head did not arrive in time; answering 408 and closing the connection.");
                // Best effort and without waiting: the socket's buffer is
                // empty or the client is not reading anyway.
                let answer = this
                    .front
                    .state
                    .gateway
                    .error_bytes(ApiError::RequestTimeout);
                let _ = this.tcp.try_write(&answer);
                Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the request head did not arrive in time",
                )))
            }
            // The end of the stream, as if the client had closed it.
            Watched::Idle => {
                tracing::trace!("Closing a connection idle for too long.");
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_worker_more_than_one_connection_ahead_waits_its_turn() {
        let balance = Arc::new(Balance {
            open: (0..2).map(|_| AtomicUsize::new(0)).collect(),
            changed: tokio::sync::Notify::new(),
            refusing: AtomicUsize::new(0),
        });
        let a = Counted::new(Arc::clone(&balance), 0);
        assert!(!balance.busier(0), "one ahead may still accept");
        let b = Counted::new(Arc::clone(&balance), 0);
        assert!(balance.busier(0));
        assert!(!balance.busier(1));
        // Worker 0 waits until worker 1 catches up or 0's connections end.
        let waiting = tokio::spawn({
            let balance = Arc::clone(&balance);
            async move { balance.my_turn(0).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        drop(b);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("a connection ending gives worker 0 its turn")
            .unwrap();
        drop(a);
        assert_eq!(balance.open[0].load(Ordering::Relaxed), 0);
    }
}
