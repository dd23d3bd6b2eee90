//! How connections are served: one thread per worker, each with its own
//! single-threaded Tokio runtime and its own accept loop on the listener
//! (the socket is shared; the kernel hands each connection to one of them).
//!
//! A connection stays on the thread that accepted it for its whole life, so
//! a request never wakes another thread: the gateway's HTTP/1 fast path
//! ([`crate::gateway::h1`]) reads the request, talks to the upstream over a
//! keep-alive connection owned by the same thread, and writes the response,
//! all in one task. Anything the fast path does not take is handed, with the
//! bytes already read, to hyper and the axum [`Router`] for the rest of the
//! connection's life; that includes keyward's own API, the console, HTTP/2.
//!
//! Shutdown ([`Workers::drain`]): the listener stops accepting, idle
//! connections close, requests in flight finish. Dropping [`Workers`]
//! without draining stops them the same way.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::response::Response;
use axum::Router;
use bytes::{Buf, BytesMut};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::app::AppState;
use crate::config::{Settings, UpstreamProtocol};
use crate::gateway::OwnPaths;
use futures_util::future::{ready, Either, Ready};

/// What every worker shares.
pub(crate) struct Front {
    pub state: AppState,
    pub router: Router,
    /// keyward's own paths, which the fast path leaves to the router.
    pub own: OwnPaths,
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

/// Resolves once the server is stopping (or its controller is gone).
pub(crate) async fn stopping(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Open connections per worker. A connection stays on the worker that
/// accepted it, so the workers share out new ones: a worker holding more
/// than one connection above the least busy one leaves the listener to the
/// others until that changes (all of them are woken by every new
/// connection; the kernel gives it to the one that accepts).
struct Balance {
    open: Vec<AtomicUsize>,
    changed: tokio::sync::Notify,
}

impl Balance {
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
                    connection(&front, tcp, peer, stop).await;
                    drop(counted);
                    drop(open);
                });
            }
            Err(e) => accept_failed(e).await,
        }
    }
    drop(listener);
    let _ = local_tx.send(true);
    drop(open_rx);
    open_tx.closed().await;
    crate::gateway::pool::clear();
}

/// Errors of one connection (reset before it was accepted) are ignored;
/// others (out of file descriptors) are logged and accepting pauses briefly,
/// as hyper and axum do, so the loop does not spin.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "Could not accept a connection; pausing accepts.");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

async fn connection(
    front: &Front,
    tcp: TcpStream,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let gateway = &front.state.settings.config.gateway;
    // The fast path speaks HTTP/1.1 to the upstream; an h2c upstream is
    // served by the general path's HTTP/2 client.
    let fast = gateway.fast_path && gateway.upstream_protocol == UpstreamProtocol::Http1;
    let (tcp, read) = if fast {
        match crate::gateway::h1::serve(front, tcp, peer, &mut stop).await {
            Some(handover) => handover,
            None => return,
        }
    } else {
        (tcp, BytesMut::new())
    };
    general(front, Rewind { read, tcp }, peer, stop).await;
}

/// Serves the rest of a connection with hyper (HTTP/1 or HTTP/2, upgrades)
/// and the router, as `axum::serve` would.
async fn general(front: &Front, io: Rewind, peer: SocketAddr, mut stop: watch::Receiver<bool>) {
    let service = AppService {
        router: front.router.clone(),
        settings: Arc::clone(&front.state.settings),
        peer,
    };
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http2().enable_connect_protocol();
    let mut conn = pin!(builder.serve_connection_with_upgrades(TokioIo::new(io), service));
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
}

impl hyper::service::Service<Request<Incoming>> for AppService {
    type Response = Response;
    type Error = Infallible;
    type Future = Either<
        Ready<Result<Response, Infallible>>,
        <Router as tower_service::Service<Request<Body>>>::Future,
    >;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let mut req = req.map(Body::new);
        if let Err(e) = crate::app::admit(&mut req) {
            return Either::Left(ready(Ok(crate::app::refused(&self.settings, &req, e))));
        }
        req.extensions_mut().insert(ConnectInfo(self.peer));
        Either::Right(tower_service::Service::call(&mut self.router.clone(), req))
    }
}

/// A connection whose first bytes were already read (by the fast path):
/// reads return those first, then the socket's.
struct Rewind {
    read: BytesMut,
    tcp: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read[..n]);
            self.read.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
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
