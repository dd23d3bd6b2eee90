//! A fixture upstream for gateway tests (test code, not product): records
//! what it receives and answers in a few documented ways.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, Clone)]
pub struct Seen {
    pub version: axum::http::Version,
    pub method: String,
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

#[derive(Clone, Default)]
pub struct Upstream {
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

pub struct Running {
    pub url: String,
    pub upstream: Upstream,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Running {
    pub fn seen(&self) -> Vec<Seen> {
        self.upstream.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Seen {
        self.seen()
            .last()
            .cloned()
            .expect("the upstream received nothing")
    }
}

/// Counts a request body frame by frame, never holding more than one frame.
async fn count(mut body: Body) -> u64 {
    use http_body_util::BodyExt;
    let mut n = 0u64;
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(d) = frame.data_ref() {
            n += d.len() as u64;
        }
    }
    n
}

/// A body of `n` bytes produced in 64 KiB chunks as the reader pulls them.
pub struct Generated {
    left: u64,
    chunk: Bytes,
}

pub fn generated(n: u64) -> Generated {
    Generated {
        left: n,
        chunk: Bytes::from(vec![b'k'; 64 * 1024]),
    }
}

impl http_body::Body for Generated {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        let take = self.left.min(self.chunk.len() as u64) as usize;
        self.left -= take as u64;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(self.chunk.slice(..take)))))
    }
}

async fn handle(State(up): State<Upstream>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    if path == "/stream/upload" {
        let n = count(body).await;
        return axum::Json(json!({ "received": n })).into_response();
    }
    if let Some(n) = path.strip_prefix("/stream/download/") {
        return Body::new(generated(n.parse().unwrap_or(0))).into_response();
    }
    if path == "/slow" {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    up.seen.lock().unwrap().push(Seen {
        version: parts.version,
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        headers: parts.headers.clone(),
        body: body.clone(),
    });
    if path.starts_with("/create") {
        // A slow write that says which execution it was, so tests can tell
        // a replay from a second run.
        // Recorded on arrival (above), so a request cut off mid-way counts.
        let execution = {
            let seen = up.seen.lock().unwrap();
            seen.iter().filter(|s| s.uri.starts_with("/create")).count()
        };
        let ms = path
            .strip_prefix("/create/sleep/")
            .and_then(|ms| ms.parse().ok())
            .unwrap_or(300);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        let mut res = (
            axum::http::StatusCode::CREATED,
            axum::Json(json!({ "execution": execution, "echo": String::from_utf8_lossy(&body) })),
        )
            .into_response();
        res.headers_mut()
            .insert("location", format!("/things/{execution}").parse().unwrap());
        res.headers_mut()
            .insert("x-not-replayed", "1".parse().unwrap());
        return res;
    }
    let mut res =
        axum::Json(json!({ "upstream": true, "path": path, "bytes": body.len() })).into_response();
    res.headers_mut()
        .insert("connection", "x-secret-hop".parse().unwrap());
    res.headers_mut()
        .insert("x-secret-hop", "1".parse().unwrap());
    res
}

pub async fn start() -> Running {
    start_on("127.0.0.1:0").await
}

/// Starts the fixture on a given address (to bring a "down" upstream back).
pub async fn start_on(addr: &str) -> Running {
    let upstream = Upstream::default();
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(upstream.clone());
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    let _ = Body::empty();
    Running {
        url,
        upstream,
        task,
    }
}
