//! The sender against real HTTP servers on 127.0.0.1: a tiny scripted
//! HTTP/1.1 server on raw tokio sockets, so each test controls exactly what
//! the receiver does (answers, redirects, stalls, floods).
#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyward_webhooks::{
    signature_header, verify, Attempt, Outgoing, Sender, SenderConfig, SigningSecret,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the scripted server does once it has read a request.
#[derive(Clone)]
enum Script {
    /// Writes these bytes and closes.
    Answer(String),
    /// Writes nothing for this long.
    Silent(Duration),
    /// Writes a head declaring `declared` body bytes, sends `sent` of them,
    /// then waits for the client to close (at most `wait`).
    Flood {
        declared: usize,
        sent: usize,
        wait: Duration,
    },
}

#[derive(Debug, Clone)]
struct Received {
    head: String,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
}

struct Server {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<Received>>>,
    /// When the client closed a flooded connection, after the first byte
    /// was sent.
    closed_after: Arc<Mutex<Option<Duration>>>,
}

impl Server {
    async fn start(script: Script) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = Server {
            addr: listener.local_addr().unwrap(),
            accepted: Arc::default(),
            requests: Arc::default(),
            closed_after: Arc::default(),
        };
        let (accepted, requests, closed_after) = (
            server.accepted.clone(),
            server.requests.clone(),
            server.closed_after.clone(),
        );
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                accepted.fetch_add(1, Ordering::SeqCst);
                let (script, requests, closed_after) =
                    (script.clone(), requests.clone(), closed_after.clone());
                tokio::spawn(async move {
                    let _ = handle(stream, script, requests, closed_after).await;
                });
            }
        });
        server
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn requests(&self) -> Vec<Received> {
        self.requests.lock().unwrap().clone()
    }
}

async fn read_request(stream: &mut TcpStream) -> std::io::Result<Received> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 || buf.len() > 1 << 20 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut received = Received {
        head,
        body: buf[head_end..].to_vec(),
    };
    let len: usize = received
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while received.body.len() < len {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        received.body.extend_from_slice(&chunk[..n]);
    }
    Ok(received)
}

async fn handle(
    mut stream: TcpStream,
    script: Script,
    requests: Arc<Mutex<Vec<Received>>>,
    closed_after: Arc<Mutex<Option<Duration>>>,
) -> std::io::Result<()> {
    let received = read_request(&mut stream).await?;
    requests.lock().unwrap().push(received);
    match script {
        Script::Answer(bytes) => {
            stream.write_all(bytes.as_bytes()).await?;
            stream.shutdown().await?;
        }
        Script::Silent(d) => tokio::time::sleep(d).await,
        Script::Flood {
            declared,
            sent,
            wait,
        } => {
            let start = Instant::now();
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {declared}\r\n\r\n");
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(&vec![b'a'; sent]).await?;
            stream.flush().await?;
            // The client has all it wants; it should close now, not wait for
            // the rest.
            let mut sink = [0u8; 64];
            if let Ok(Ok(0)) = tokio::time::timeout(wait, stream.read(&mut sink)).await {
                *closed_after.lock().unwrap() = Some(start.elapsed());
            }
        }
    }
    Ok(())
}

fn config(allow_private: bool) -> SenderConfig {
    SenderConfig {
        connect_timeout: Duration::from_secs(2),
        timeout: Duration::from_secs(3),
        max_response_bytes: 4096,
        allow_private,
        user_agent: "keyward-webhooks-test/1".to_owned(),
    }
}

const BODY: &[u8] =
    br#"{"type":"key.created","timestamp":"2026-01-01T00:00:00Z","data":{"id":"key_1"}}"#;

async fn post(sender: &Sender, url: &str) -> Attempt {
    sender
        .send(&Outgoing {
            url,
            msg_id: "msg_1",
            timestamp: 1_767_225_600,
            body: BODY,
            signature: "v1,AAAA",
        })
        .await
}

#[tokio::test]
async fn headers_and_signature_arrive_and_verify() {
    let server = Server::start(Script::Answer(
        "HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n".into(),
    ))
    .await;
    let old = SigningSecret::from_whsec("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let new = SigningSecret::derive(&[7u8; 32], "ep_1", "salt_2");
    let (msg_id, ts) = ("msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", 1_674_087_231);
    let signature = signature_header(&[&new, &old], msg_id, ts, BODY);
    let sender = Sender::new(config(true)).unwrap();
    let url = server.url("/hooks/in?tenant=1");
    let attempt = sender
        .send(&Outgoing {
            url: &url,
            msg_id,
            timestamp: ts,
            body: BODY,
            signature: &signature,
        })
        .await;
    assert_eq!(attempt.status, Some(204), "{attempt:?}");
    assert!(attempt.ok);
    assert_eq!(attempt.error, None);
    assert_eq!(attempt.response, "");

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert!(
        r.head.starts_with("POST /hooks/in?tenant=1 HTTP/1.1\r\n"),
        "{}",
        r.head
    );
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(
        r.header("user-agent").as_deref(),
        Some("keyward-webhooks-test/1")
    );
    assert_eq!(r.header("webhook-id").as_deref(), Some(msg_id));
    assert_eq!(r.header("webhook-timestamp").as_deref(), Some("1674087231"));
    assert_eq!(r.body, BODY);
    let sig = r.header("webhook-signature").unwrap();
    assert_eq!(sig, signature);
    assert_eq!(sig.split(' ').count(), 2);
    // What arrived verifies under either live secret, from the received
    // values alone.
    let ts: i64 = r.header("webhook-timestamp").unwrap().parse().unwrap();
    let id = r.header("webhook-id").unwrap();
    assert!(verify(&sig, &new, &id, ts, &r.body));
    assert!(verify(&sig, &old, &id, ts, &r.body));
    assert!(!verify(
        &sig,
        &SigningSecret::derive(&[8u8; 32], "ep_1", "salt_2"),
        &id,
        ts,
        &r.body
    ));
}

#[tokio::test]
async fn the_response_status_and_body_are_reported() {
    let server = Server::start(Script::Answer(
        "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 11\r\n\r\nbroken, sry".into(),
    ))
    .await;
    let sender = Sender::new(config(true)).unwrap();
    let attempt = post(&sender, &server.url("/")).await;
    assert_eq!(attempt.status, Some(500));
    assert!(!attempt.ok);
    assert_eq!(attempt.error, None);
    assert_eq!(attempt.response, "broken, sry");
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let server = Server::start(Script::Answer(
        "HTTP/1.1 302 Found\r\nlocation: /elsewhere\r\ncontent-length: 0\r\n\r\n".into(),
    ))
    .await;
    let sender = Sender::new(config(true)).unwrap();
    let attempt = post(&sender, &server.url("/start")).await;
    assert_eq!(attempt.status, Some(302));
    assert!(!attempt.ok);
    assert_eq!(
        attempt.error.as_deref(),
        Some("redirect not followed (302)")
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "the redirect was followed");
    assert!(requests[0].head.starts_with("POST /start "));
}

#[tokio::test]
async fn a_slow_server_hits_the_timeout() {
    let server = Server::start(Script::Silent(Duration::from_secs(10))).await;
    let sender = Sender::new(SenderConfig {
        timeout: Duration::from_millis(300),
        ..config(true)
    })
    .unwrap();
    let started = Instant::now();
    let attempt = post(&sender, &server.url("/")).await;
    let took = started.elapsed();
    assert_eq!(attempt.status, None);
    assert!(!attempt.ok);
    assert_eq!(attempt.error.as_deref(), Some("timed out after 300 ms"));
    assert!(took >= Duration::from_millis(290), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!((290..3000).contains(&attempt.latency_ms), "{attempt:?}");
}

#[tokio::test]
async fn a_stalled_response_body_hits_the_timeout_too() {
    // The head and part of the body arrive, then nothing: the timeout covers
    // the body.
    let server = Server::start(Script::Flood {
        declared: 10_000,
        sent: 100,
        wait: Duration::from_secs(10),
    })
    .await;
    let sender = Sender::new(SenderConfig {
        timeout: Duration::from_millis(400),
        ..config(true)
    })
    .unwrap();
    let started = Instant::now();
    let attempt = post(&sender, &server.url("/")).await;
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(attempt.status, Some(200));
    assert!(attempt.ok, "the receiver answered 2xx: {attempt:?}");
    assert_eq!(attempt.response, "a".repeat(100));
    assert_eq!(
        attempt.error.as_deref(),
        Some("timed out after 400 ms reading the response")
    );
}

#[tokio::test]
async fn a_large_response_is_truncated_at_the_bound_and_read_no_further() {
    // 1 MB declared, 256 KiB sent, and the rest never comes: a client that
    // read to the end would wait for the 3 s timeout.
    let server = Server::start(Script::Flood {
        declared: 1 << 20,
        sent: 256 * 1024,
        wait: Duration::from_secs(5),
    })
    .await;
    let sender = Sender::new(config(true)).unwrap();
    let started = Instant::now();
    let attempt = post(&sender, &server.url("/")).await;
    let took = started.elapsed();
    assert_eq!(attempt.status, Some(200));
    assert!(attempt.ok);
    assert_eq!(attempt.error, None, "{attempt:?}");
    assert_eq!(attempt.response.len(), 4096);
    assert!(attempt.response.bytes().all(|b| b == b'a'));
    assert!(
        took < Duration::from_secs(2),
        "waited for the body: {took:?}"
    );
    // And the connection was closed, not kept reading in the background.
    let deadline = Instant::now() + Duration::from_secs(3);
    let closed = loop {
        if let Some(after) = *server.closed_after.lock().unwrap() {
            break Some(after);
        }
        if Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        closed.is_some_and(|d| d < Duration::from_secs(2)),
        "the client kept the connection: {closed:?}"
    );
}

#[tokio::test]
async fn loopback_literal_is_refused_without_connecting() {
    let server = Server::start(Script::Answer(
        "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".into(),
    ))
    .await;
    let sender = Sender::new(config(false)).unwrap();
    let attempt = post(&sender, &server.url("/")).await;
    assert_eq!(attempt.status, None);
    assert!(!attempt.ok);
    assert_eq!(
        attempt.error.as_deref(),
        Some("address 127.0.0.1 is loopback")
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server.accepted.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn localhost_is_refused_by_the_resolver() {
    let server = Server::start(Script::Answer(
        "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".into(),
    ))
    .await;
    let url = format!("http://localhost:{}/", server.addr.port());
    let refused = Sender::new(config(false)).unwrap();
    let attempt = post(&refused, &url).await;
    assert_eq!(attempt.status, None);
    let error = attempt.error.unwrap();
    assert!(
        error == "address 127.0.0.1 is loopback" || error == "address ::1 is loopback",
        "{error}"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server.accepted.load(Ordering::SeqCst), 0);

    // The same name goes through when private targets are allowed: it was
    // the resolver that refused.
    let allowed = Sender::new(config(true)).unwrap();
    let attempt = post(&allowed, &url).await;
    assert_eq!(attempt.status, Some(200), "{attempt:?}");
    assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_closed_port_is_connection_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let sender = Sender::new(config(true)).unwrap();
    let attempt = post(&sender, &format!("http://{addr}/")).await;
    assert_eq!(attempt.status, None);
    assert_eq!(attempt.error.as_deref(), Some("connection refused"));
}

#[tokio::test]
async fn names_that_do_not_resolve_fail_clearly() {
    let sender = Sender::new(config(true)).unwrap();
    let attempt = post(&sender, "http://no-such-host.invalid/").await;
    assert_eq!(attempt.status, None);
    let error = attempt.error.unwrap();
    assert!(
        error.starts_with("host no-such-host.invalid does not resolve ("),
        "{error}"
    );
}

#[tokio::test]
async fn https_speaks_tls_and_reports_a_failed_handshake() {
    // A plain-HTTP server behind an https URL, answering whatever arrives
    // with an HTTP error: the rustls handshake fails on it, and the attempt
    // says so instead of panicking or taking it for a response.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut hello = [0u8; 5];
        stream.read_exact(&mut hello).await.unwrap();
        stream
            .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        // A TLS record of type 22 (handshake) is what a TLS client sends.
        hello[0]
    });
    let sender = Sender::new(config(true)).unwrap();
    let attempt = post(&sender, &format!("https://{addr}/")).await;
    assert_eq!(attempt.status, None);
    assert!(!attempt.ok);
    let error = attempt.error.unwrap();
    assert!(error.starts_with("connection failed: "), "{error}");
    assert_eq!(served.await.unwrap(), 22, "no TLS ClientHello was sent");
}
