//! Keep-alive connections to the upstream for the HTTP/1 fast path, one
//! pool per worker thread.
//!
//! A worker's connections are only ever used by that worker's tasks, so the
//! pool is a thread-local list: no lock, no hashing, no reference counts on
//! the way in or out. The most recently returned connection is taken first
//! (its socket and buffers are warm); connections idle for longer than
//! [`IDLE_TIMEOUT`] are closed as others come back.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::net::TcpStream;

/// Idle upstream connections older than this are closed (the general
/// path's pooled client uses the same).
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// One HTTP/1.1 connection to the upstream, with the bytes read from it and
/// not yet consumed.
pub(crate) struct UpstreamConn {
    pub tcp: TcpStream,
    pub buf: BytesMut,
    /// Came from the pool (it served a request before): a failure before
    /// any response byte may be the upstream closing it while idle.
    pub reused: bool,
    authority: Arc<str>,
}

struct Idle {
    conn: UpstreamConn,
    since: Instant,
}

thread_local! {
    static IDLE: RefCell<VecDeque<Idle>> = const { RefCell::new(VecDeque::new()) };
}

/// A live idle connection to `authority`, if this thread has one.
pub(crate) fn checkout(authority: &str) -> Option<UpstreamConn> {
    IDLE.with_borrow_mut(|idle| {
        while let Some(pos) = idle.iter().rposition(|i| &*i.conn.authority == authority) {
            let Some(i) = idle.remove(pos) else { break };
            if i.since.elapsed() < IDLE_TIMEOUT && alive(&i.conn.tcp) {
                let mut conn = i.conn;
                conn.reused = true;
                return Some(conn);
            }
        }
        None
    })
}

/// Returns a connection whose last response was read completely.
pub(crate) fn checkin(conn: UpstreamConn, max_idle: usize) {
    if max_idle == 0 || !conn.buf.is_empty() {
        return;
    }
    let now = Instant::now();
    IDLE.with_borrow_mut(|idle| {
        while idle
            .front()
            .is_some_and(|i| now.duration_since(i.since) >= IDLE_TIMEOUT)
        {
            idle.pop_front();
        }
        while idle.len() >= max_idle {
            idle.pop_front();
        }
        idle.push_back(Idle { conn, since: now });
    });
}

/// Closes this thread's idle connections (a worker that stops).
pub(crate) fn clear() {
    IDLE.with_borrow_mut(VecDeque::clear);
}

/// Opens a new connection to `authority` (`host:port`).
pub(crate) async fn connect(
    authority: &Arc<str>,
    timeout: Duration,
) -> std::io::Result<UpstreamConn> {
    let tcp = tokio::time::timeout(timeout, TcpStream::connect(&**authority))
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connecting to the upstream timed out",
            )
        })??;
    tcp.set_nodelay(true)?;
    Ok(UpstreamConn {
        tcp,
        buf: BytesMut::with_capacity(16 * 1024),
        reused: false,
        authority: Arc::clone(authority),
    })
}

/// An idle connection is usable if nothing arrived on it: a readable idle
/// socket means the upstream closed it (or sent bytes nobody asked for).
/// Tokio clears read readiness after a short read, so the usual answer
/// comes without a system call.
fn alive(tcp: &TcpStream) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    match tcp.poll_read_ready(&mut cx) {
        Poll::Pending => true,
        Poll::Ready(Err(_)) => false,
        Poll::Ready(Ok(())) => {
            let mut probe = [0u8; 1];
            matches!(tcp.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn closed_idle_connections_are_not_handed_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority: Arc<str> = listener.local_addr().unwrap().to_string().into();
        let a = connect(&authority, Duration::from_secs(1)).await.unwrap();
        let (server_side, _) = listener.accept().await.unwrap();
        checkin(a, 8);
        let again = checkout(&authority).expect("an open idle connection is reused");
        assert!(again.reused);
        checkin(again, 8);
        drop(server_side);
        // Give the FIN time to arrive.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            checkout(&authority).is_none(),
            "a connection the upstream closed is dropped"
        );
        assert!(checkout("127.0.0.1:1").is_none());
    }
}
