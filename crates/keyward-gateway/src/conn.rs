//! Connection primitives the fast path and the server's general path
//! share: the `[http]` [`Timeouts`], one timer per connection
//! ([`Deadline`]), the [`Handover`] of a connection from the fast path to
//! the general path, the stop signal ([`stopping`]), and the general path's
//! request body with its read timeout ([`ClientBody`], reporting to
//! [`BodyProgress`]).

use std::future::Future;
use std::ops::DerefMut;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use keyward_http::error::ApiError;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Sleep;

/// The `[http]` timeouts, as durations.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// A request head, from its first byte (a new connection: from accept).
    pub head: Duration,
    /// The longest pause within a request body.
    pub body: Duration,
    /// Idle between requests.
    pub keep_alive: Duration,
}

/// Resolves once the server is stopping (or its controller is gone).
pub async fn stopping(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// A connection the fast path hands to the general path: the socket, the
/// bytes read and not answered, and when the head they begin must be
/// complete.
pub struct Handover {
    pub tcp: TcpStream,
    pub read: BytesMut,
    pub head_deadline: Instant,
}

/// How a request body on the general path ended, shared between the body
/// ([`ClientBody`]) and those who answer for it (a request extension read
/// by the gateway and the `edge` middleware).
#[derive(Debug, Clone, Default)]
pub struct BodyProgress(Arc<AtomicU8>);

impl BodyProgress {
    const RECEIVING: u8 = 0;
    const COMPLETE: u8 = 1;
    const MALFORMED: u8 = 2;
    const STALLED: u8 = 3;

    fn set(&self, state: u8) {
        self.0.store(state, Ordering::Relaxed);
    }

    /// The body has not ended yet (nor failed).
    pub fn receiving(&self) -> bool {
        self.0.load(Ordering::Relaxed) == Self::RECEIVING
    }

    /// The client's fault that ended the body, if one did.
    pub fn fault(&self) -> Option<ApiError> {
        match self.0.load(Ordering::Relaxed) {
            Self::MALFORMED => Some(ApiError::MalformedRequest(
                "its body's framing is invalid or the body ended early",
            )),
            Self::STALLED => Some(ApiError::RequestTimeout),
            _ => None,
        }
    }
}

/// Why a client's request body failed: the client's doing, never the
/// upstream's.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    #[error("the client's request body is malformed or ended early: {0}")]
    Malformed(#[source] hyper::Error),
    #[error("the client's request body stalled for longer than http.body_read_timeout_ms")]
    Stalled,
}

/// A request body on the general path: hyper's, with the body read
/// timeout (the longest pause between two pieces of it) and its ending
/// reported in [`BodyProgress`]. The timer is armed once per pause at
/// most, and only moved when it fires early.
pub struct ClientBody {
    inner: Incoming,
    progress: BodyProgress,
    idle: Duration,
    /// When the current pause began (`None`: data just arrived).
    paused: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
    ended: bool,
}

impl ClientBody {
    pub fn new(inner: Incoming, idle: Duration, progress: BodyProgress) -> ClientBody {
        ClientBody {
            inner,
            progress,
            idle,
            paused: None,
            timer: None,
            ended: false,
        }
    }

    fn fail(
        &mut self,
        state: u8,
        e: ClientBodyError,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        self.ended = true;
        self.progress.set(state);
        Poll::Ready(Some(Err(e)))
    }
}

impl HttpBody for ClientBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.paused = None;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.fail(BodyProgress::MALFORMED, ClientBodyError::Malformed(e))
            }
            Poll::Ready(None) => {
                this.ended = true;
                this.progress.set(BodyProgress::COMPLETE);
                Poll::Ready(None)
            }
            Poll::Pending => {
                let deadline = *this.paused.get_or_insert_with(Instant::now) + this.idle;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.into())));
                loop {
                    if timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    if expired(deadline) {
                        return this.fail(BodyProgress::STALLED, ClientBodyError::Stalled);
                    }
                    timer.as_mut().reset(deadline.into());
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether `deadline` has come, to the timer's resolution (a millisecond):
/// a timer never fires early, but may fire at the millisecond it rounds to.
fn expired(deadline: Instant) -> bool {
    Instant::now() + Duration::from_millis(1) >= deadline
}

/// A connection's one timer for its deadline in force (`at`). The deadline
/// may move freely (a plain store); the timer is reset only when the
/// deadline comes earlier than the timer is armed, or when the timer fires
/// before the deadline (then it is re-armed). So a connection serving
/// requests back to back touches the runtime's timer about once per
/// timeout, not once per request.
pub struct Deadline<P> {
    sleep: Pin<P>,
    at: Instant,
    armed: Instant,
}

impl<P: DerefMut<Target = Sleep>> Deadline<P> {
    /// `sleep` must be set to go off at `at`.
    pub fn new(sleep: Pin<P>, at: Instant) -> Deadline<P> {
        Deadline {
            sleep,
            at,
            armed: at,
        }
    }

    /// The deadline in force.
    pub fn at(&self) -> Instant {
        self.at
    }

    pub fn set(&mut self, at: Instant) {
        self.at = at;
        if at < self.armed {
            self.sleep.as_mut().reset(at.into());
            self.armed = at;
        }
    }

    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if expired(self.at) {
                return Poll::Ready(());
            }
            self.sleep.as_mut().reset(self.at.into());
            self.armed = self.at;
        }
    }

    /// Resolves once the deadline in force has passed.
    pub async fn expired(&mut self) {
        std::future::poll_fn(|cx| self.poll_expired(cx)).await;
    }
}
