//! The edge of the server under abuse: request head, body and keep-alive
//! timeouts, the connection cap, client framing errors, header limits. Raw
//! TCP clients against a real server (in process, or the real binary where
//! the open-file limit or the log matters), on both gateway paths and the
//! management API.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyward_server::config::Config;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

use crate::kit::{config_from_toml, temp_dir, Backend, Server};
use crate::upstream;

/// The longest any single wait may take (a loaded machine is slow).
const WAIT: Duration = Duration::from_secs(15);
/// How much earlier than its timeout a connection may be seen to close:
/// the server's clock starts when it reads, a little after the client's.
const SLACK: Duration = Duration::from_millis(150);

const HEAD_MS: u64 = 800;
const BODY_MS: u64 = 900;
const KEEP_ALIVE_MS: u64 = 1500;

fn config(upstream: &str, fast_path: bool, extra: &str) -> Config {
    let mut c = config_from_toml(&format!(
        r#"
[http]
header_read_timeout_ms = {HEAD_MS}
body_read_timeout_ms = {BODY_MS}
keep_alive_timeout_ms = {KEEP_ALIVE_MS}
{extra}

[gateway]
upstream = "{upstream}"
timeout_ms = 5000
max_body_bytes = 100000

[[routes]]
path = "/public/{{*rest}}"
auth = false
"#
    ));
    c.gateway.fast_path = fast_path;
    c
}

fn authority(s: &Server) -> String {
    s.base.trim_start_matches("http://").to_owned()
}

async fn connect(addr: &str) -> TcpStream {
    let tcp = timeout(WAIT, TcpStream::connect(addr))
        .await
        .expect("connecting timed out")
        .unwrap();
    tcp.set_nodelay(true).unwrap();
    tcp
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads until the server ends the connection (EOF or reset); the bytes
/// and when it ended. Panics if it stays open past `WAIT`.
async fn until_closed(tcp: &mut TcpStream) -> (Vec<u8>, Instant) {
    let mut got = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match timeout(WAIT, tcp.read(&mut chunk)).await {
            Err(_) => panic!(
                "still open after {WAIT:?}; got {:?}",
                String::from_utf8_lossy(&got)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => return (got, Instant::now()),
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
        }
    }
}

/// One response read off the wire: status, headers (lowercased names),
/// body (by Content-Length).
#[derive(Debug)]
struct Res {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Res {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[track_caller]
    fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{self:?}"
        );
        let body: Value = serde_json::from_slice(&self.body).unwrap();
        assert_eq!(body["code"], code, "{body}");
        assert_eq!(body["status"], status, "{body}");
    }
}

/// Parses the first response in `bytes` (None: no complete head).
fn parse(bytes: &[u8]) -> Option<(Res, usize)> {
    let end = find(bytes, b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap());
    let total = end + 4 + length;
    if bytes.len() < total {
        return None;
    }
    let body = bytes[end + 4..total].to_vec();
    Some((
        Res {
            status,
            headers,
            body,
        },
        total,
    ))
}

/// Reads one response (bounded).
async fn response(tcp: &mut TcpStream) -> Res {
    let mut got = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some((r, _)) = parse(&got) {
            return r;
        }
        match timeout(WAIT, tcp.read(&mut chunk)).await {
            Err(_) => panic!("no response within {WAIT:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => panic!(
                "closed before a whole response: {:?}",
                String::from_utf8_lossy(&got)
            ),
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Sends `bytes` on a new connection and reads everything until the
/// server closes: the one response in it.
async fn exchange_and_close(addr: &str, bytes: &[u8]) -> Res {
    let mut tcp = connect(addr).await;
    tcp.write_all(bytes).await.unwrap();
    let (got, _) = until_closed(&mut tcp).await;
    let (res, used) = parse(&got).unwrap_or_else(|| {
        panic!(
            "no whole response before the close: {:?}",
            String::from_utf8_lossy(&got)
        )
    });
    assert_eq!(used, got.len(), "one response, then the close");
    res
}

// ---------------------------------------------------------------------------
// Timeouts.

/// How a stalled connection must end.
#[derive(Debug, Clone, Copy, PartialEq)]
enum End {
    /// Answered 408 `request_timeout`, then closed.
    Timeout,
    /// Closed without a byte.
    Silent,
}

/// A stalled connection: what it did, when its clock started (client
/// side), the timeout it is under, and how it must end.
struct Stall {
    what: &'static str,
    tcp: TcpStream,
    since: Instant,
    after: Duration,
    end: End,
}

/// Opens a connection, optionally makes one whole request on it, then
/// sends `then` and leaves it. The clock starts at the connection (a new
/// connection's head is due from its accept) or after the last write.
async fn stall(
    addr: &str,
    what: &'static str,
    first: Option<&[u8]>,
    then: &[u8],
    after: u64,
    end: End,
) -> Stall {
    let mut tcp = connect(addr).await;
    let mut since = Instant::now();
    if let Some(first) = first {
        tcp.write_all(first).await.unwrap();
        let r = response(&mut tcp).await;
        assert_eq!(r.status, 200, "{what}: {r:?}");
        since = Instant::now();
    }
    if !then.is_empty() {
        tcp.write_all(then).await.unwrap();
        // A head on a new connection is due from the accept; anything
        // else from the last byte.
        if first.is_some() || after != HEAD_MS {
            since = Instant::now();
        }
    }
    Stall {
        what,
        tcp,
        since,
        after: Duration::from_millis(after),
        end,
    }
}

const HALF_HEAD: &[u8] = b"GET /public/x HTTP/1.1\r\nHost: keyward.test\r\nX-Half: ";
const PUBLIC: &[u8] = b"GET /public/ok HTTP/1.1\r\nHost: keyward.test\r\n\r\n";
const HEALTH: &[u8] = b"GET /v1/health HTTP/1.1\r\nHost: keyward.test\r\n\r\n";
const PARTIAL_BODY: &[u8] =
    b"POST /public/upload HTTP/1.1\r\nHost: keyward.test\r\nContent-Length: 100\r\n\r\n0123456789";
const PARTIAL_CHUNKED: &[u8] = b"POST /public/upload HTTP/1.1\r\nHost: keyward.test\r\n\
Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n";
/// A management request (with a key, so its handler reads the body)
/// whose body stops.
fn partial_api_body(root: &str) -> Vec<u8> {
    format!(
        "POST /v1/tenants HTTP/1.1\r\nHost: keyward.test\r\nAuthorization: Bearer {root}\r\n\
Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\":"
    )
    .into_bytes()
}

/// Opens every kind of stalled connection `n` times over: nothing sent,
/// half a head (gateway, and on a connection already handed to the
/// general stack by a management request), idle after a gateway or a
/// management response, and bodies that stop (length-delimited, chunked,
/// to a management endpoint).
async fn stalls(addr: &str, root: &str, n: usize) -> Vec<Stall> {
    let api_body = partial_api_body(root);
    let mut all = Vec::new();
    for _ in 0..n {
        all.push(stall(addr, "nothing sent", None, b"", HEAD_MS, End::Silent).await);
        all.push(stall(addr, "half a head", None, HALF_HEAD, HEAD_MS, End::Timeout).await);
        all.push(
            stall(
                addr,
                "half a head after a management request",
                Some(HEALTH),
                HALF_HEAD,
                HEAD_MS,
                End::Timeout,
            )
            .await,
        );
        all.push(
            stall(
                addr,
                "idle after a gateway response",
                Some(PUBLIC),
                b"",
                KEEP_ALIVE_MS,
                End::Silent,
            )
            .await,
        );
        all.push(
            stall(
                addr,
                "idle after a management response",
                Some(HEALTH),
                b"",
                KEEP_ALIVE_MS,
                End::Silent,
            )
            .await,
        );
        all.push(
            stall(
                addr,
                "a body that stops",
                None,
                PARTIAL_BODY,
                BODY_MS,
                End::Timeout,
            )
            .await,
        );
        all.push(
            stall(
                addr,
                "a chunked body that stops",
                None,
                PARTIAL_CHUNKED,
                BODY_MS,
                End::Timeout,
            )
            .await,
        );
        all.push(
            stall(
                addr,
                "a management body that stops",
                None,
                &api_body,
                BODY_MS,
                End::Timeout,
            )
            .await,
        );
    }
    all
}

/// Waits for every stalled connection to end and checks when and how.
async fn check_ends(all: Vec<Stall>, fast_path: bool) {
    let tasks: Vec<_> = all
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                let what = s.what;
                let (got, at) = timeout(Duration::from_secs(12), until_closed(&mut s.tcp))
                    .await
                    .unwrap_or_else(|_| panic!("fast_path = {fast_path}, {what}: still open"));
                let took = at - s.since;
                assert!(
                    took + SLACK >= s.after,
                    "fast_path = {fast_path}, {what}: closed after {took:?}, before its {:?} timeout",
                    s.after
                );
                assert!(
                    took <= s.after + Duration::from_secs(8),
                    "fast_path = {fast_path}, {what}: closed only after {took:?}"
                );
                match s.end {
                    End::Silent => assert_eq!(
                        got,
                        b"",
                        "fast_path = {fast_path}, {what}: an idle connection closes without a word"
                    ),
                    End::Timeout => {
                        let (r, used) = parse(&got).unwrap_or_else(|| {
                            panic!(
                                "fast_path = {fast_path}, {what}: no 408: {:?}",
                                String::from_utf8_lossy(&got)
                            )
                        });
                        r.assert_problem(408, "request_timeout");
                        assert_eq!(r.header("connection"), Some("close"), "{what}: {r:?}");
                        assert_eq!(used, got.len(), "{what}: nothing after the 408");
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

/// A legitimate client, all along: a gateway request, a chunked upload
/// (the general stack, raw) and `/v1/health`, again and again until told
/// to stop. Returns how many rounds it made; any failure fails the test.
fn legitimate(s: &Server, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<usize> {
    let base = s.base.clone();
    let addr = authority(s);
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        let mut rounds = 0;
        while !stop.load(Ordering::Relaxed) {
            let r = http
                .get(format!("{base}/public/legit"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let r = exchange_and_close(
                &addr,
                b"POST /public/legit-upload HTTP/1.1\r\nHost: k\r\nTransfer-Encoding: chunked\r\n\
Connection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            )
            .await;
            assert_eq!(r.status, 200, "{r:?}");
            let r = http.get(format!("{base}/v1/health")).send().await.unwrap();
            assert_eq!(r.status(), 200);
            rounds += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        rounds
    })
}

async fn stalled_connections_close_on_time(fast_path: bool) {
    let up = upstream::start().await;
    let s = Server::start_with(Backend::Sqlite, config(&up.url, fast_path, "")).await;
    let addr = authority(&s);
    let stop = Arc::new(AtomicBool::new(false));
    let client = legitimate(&s, Arc::clone(&stop));
    // 8 kinds × 25 = 200 stalled connections.
    let all = stalls(&addr, &s.root, 25).await;
    assert_eq!(all.len(), 200);
    check_ends(all, fast_path).await;
    stop.store(true, Ordering::Relaxed);
    let rounds = client.await.unwrap();
    assert!(rounds >= 3, "the legitimate client made {rounds} rounds");
    // The stopped bodies never reached the upstream whole.
    assert!(
        up.seen()
            .iter()
            .all(|r| r.uri != "/public/upload" || r.body.len() < 10),
        "a partial body was forwarded as if whole"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn stalled_connections_close_on_time_while_a_client_is_served() {
    stalled_connections_close_on_time(true).await;
}

#[tokio::test]
async fn stalled_connections_close_on_time_while_a_client_is_served_with_the_fast_path_off() {
    stalled_connections_close_on_time(false).await;
}

/// A connection that keeps sending pieces of its head does not keep it
/// open: the head timeout counts from its first byte, not the last.
#[tokio::test]
async fn a_trickled_head_is_cut_off_at_the_head_timeout() {
    let up = upstream::start().await;
    for fast_path in [true, false] {
        let s = Server::start_with(Backend::Sqlite, config(&up.url, fast_path, "")).await;
        let mut tcp = connect(&authority(&s)).await;
        let started = Instant::now();
        let trickle = async {
            for b in b"GET /public/x HTTP/1.1\r\nHost: keyward.test\r\nX-Slow: 1234567890" {
                if tcp.write_all(&[*b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let _ = timeout(Duration::from_millis(HEAD_MS * 3), trickle).await;
        let (got, at) = until_closed(&mut tcp).await;
        let took = at - started;
        assert!(
            took < Duration::from_millis(HEAD_MS * 3),
            "fast_path = {fast_path}: the trickle held the connection {took:?}"
        );
        let (r, _) = parse(&got).expect("a 408");
        r.assert_problem(408, "request_timeout");
        s.shutdown().await;
    }
}

/// Requests with pauses shorter than the timeouts are served: the
/// timeouts bound pauses (and heads), not whole exchanges.
#[tokio::test]
async fn pauses_shorter_than_the_timeouts_are_fine() {
    let up = upstream::start().await;
    for fast_path in [true, false] {
        let s = Server::start_with(Backend::Sqlite, config(&up.url, fast_path, "")).await;
        let mut tcp = connect(&authority(&s)).await;
        for _ in 0..3 {
            // A body in pieces, each pause 60 % of the body timeout.
            tcp.write_all(
                b"POST /public/paced HTTP/1.1\r\nHost: keyward.test\r\nContent-Length: 9\r\n\r\n",
            )
            .await
            .unwrap();
            for piece in [b"abc", b"def", b"ghi"] {
                tokio::time::sleep(Duration::from_millis(BODY_MS * 6 / 10)).await;
                tcp.write_all(piece).await.unwrap();
            }
            let r = response(&mut tcp).await;
            assert_eq!(r.status, 200, "fast_path = {fast_path}: {r:?}");
            // Idle for a while, less than the keep-alive timeout.
            tokio::time::sleep(Duration::from_millis(KEEP_ALIVE_MS * 6 / 10)).await;
        }
        assert_eq!(&up.last().body[..], b"abcdefghi");
        s.shutdown().await;
    }
}

/// HTTP/2 (prior knowledge) is served, and a connection with no stream
/// open is closed after the keep-alive timeout, without HTTP/1 bytes.
#[tokio::test]
async fn http2_connections_are_served_and_closed_when_idle() {
    let up = upstream::start().await;
    for fast_path in [true, false] {
        let s = Server::start_with(Backend::Sqlite, config(&up.url, fast_path, "")).await;
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .http2_only(true)
                .build_http::<http_body_util::Empty<axum::body::Bytes>>();
        for path in ["/v1/health", "/public/h2", "/v1/health"] {
            let res = client
                .get(s.url(path).parse().unwrap())
                .await
                .unwrap_or_else(|e| panic!("fast_path = {fast_path}, {path}: {e}"));
            assert_eq!(res.status(), 200, "fast_path = {fast_path}, {path}");
            assert_eq!(res.version(), axum::http::Version::HTTP_2);
        }
        assert_eq!(up.last().uri, "/public/h2");

        // The preface and SETTINGS, then nothing.
        let mut tcp = connect(&authority(&s)).await;
        tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await
            .unwrap();
        let since = Instant::now();
        let (got, at) = until_closed(&mut tcp).await;
        let took = at - since;
        let keep_alive = Duration::from_millis(KEEP_ALIVE_MS);
        assert!(
            took + SLACK >= keep_alive && took <= keep_alive + Duration::from_secs(8),
            "fast_path = {fast_path}: an idle HTTP/2 connection closed after {took:?}"
        );
        assert!(
            find(&got, b"HTTP/1.1").is_none(),
            "fast_path = {fast_path}: HTTP/1 bytes on an HTTP/2 connection: {got:?}"
        );
        s.shutdown().await;
    }
}

// ---------------------------------------------------------------------------
// The connection cap.

#[tokio::test]
async fn past_the_connection_cap_new_connections_are_answered_503_and_health_recovers() {
    let up = upstream::start().await;
    for fast_path in [true, false] {
        let mut c = config(&up.url, fast_path, "max_connections = 8");
        // Held connections must not time out while the test looks.
        c.http.keep_alive_timeout_ms = 60_000;
        let s = Server::start_with(Backend::Sqlite, c).await;
        let addr = authority(&s);
        // Eight connections in use (a served request each, then idle).
        let mut held = Vec::new();
        for _ in 0..8 {
            let mut tcp = connect(&addr).await;
            tcp.write_all(PUBLIC).await.unwrap();
            assert_eq!(response(&mut tcp).await.status, 200);
            held.push(tcp);
        }
        // The ninth is answered at once and closed.
        let r = exchange_and_close(&addr, HEALTH).await;
        r.assert_problem(503, "overloaded");
        assert_eq!(r.header("retry-after"), Some("1"), "{r:?}");
        assert_eq!(r.header("connection"), Some("close"), "{r:?}");
        // Nine to twenty: the same, and the held connections still work.
        for _ in 0..12 {
            exchange_and_close(&addr, PUBLIC)
                .await
                .assert_problem(503, "overloaded");
        }
        held[0].write_all(HEALTH).await.unwrap();
        assert_eq!(response(&mut held[0]).await.status, 200);
        // Two close: two new connections are served.
        held.truncate(6);
        let deadline = Instant::now() + WAIT;
        loop {
            let mut tcp = connect(&addr).await;
            tcp.write_all(HEALTH).await.unwrap();
            let r = response(&mut tcp).await;
            if r.status == 200 {
                held.push(tcp);
                if held.len() == 8 {
                    break;
                }
                continue;
            }
            r.assert_problem(503, "overloaded");
            assert!(
                Instant::now() < deadline,
                "closed connections never freed their slots"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // And the idle ones time out, freeing the rest.
        drop(held);
        s.shutdown().await;
    }
}

// ---------------------------------------------------------------------------
// Header limits (hyper's: the fast path hands such heads over).

#[tokio::test]
async fn header_and_target_limits_hold_on_every_path() {
    let up = upstream::start().await;
    for fast_path in [true, false] {
        let s = Server::start_with(Backend::Sqlite, config(&up.url, fast_path, "")).await;
        let addr = authority(&s);
        for target in ["/public/many", "/v1/health"] {
            // 90 headers are served (more than 64 leave the fast path) …
            let head = |n: usize| {
                let mut head = format!("GET {target} HTTP/1.1\r\nHost: keyward.test\r\n");
                for i in 1..n {
                    head.push_str(&format!("X-H-{i}: v\r\n"));
                }
                head + "\r\n"
            };
            let mut tcp = connect(&addr).await;
            tcp.write_all(head(90).as_bytes()).await.unwrap();
            let r = response(&mut tcp).await;
            assert_eq!(r.status, 200, "fast_path = {fast_path}, {target}: {r:?}");
            // … 101 are not (hyper's limit is 100).
            let r = exchange_and_close(&addr, head(101).as_bytes()).await;
            assert_eq!(r.status, 431, "fast_path = {fast_path}, {target}: {r:?}");

            // A target over hyper's limit (about 64 KiB) is 414.
            let long = format!(
                "GET {target}?q={} HTTP/1.1\r\nHost: keyward.test\r\n\r\n",
                "q".repeat(70_000)
            );
            let r = exchange_and_close(&addr, long.as_bytes()).await;
            assert_eq!(r.status, 414, "fast_path = {fast_path}, {target}: {r:?}");

            // A head larger than hyper's buffer (about 400 KiB; a head that
            // arrives whole in the read that passes it may be taken). The
            // answer is read while the head is still being written.
            let mut tcp = connect(&addr).await;
            let (mut rd, mut wr) = tcp.split();
            let big = format!(
                "GET {target} HTTP/1.1\r\nHost: keyward.test\r\nX-Big: {}\r\n\r\n",
                "b".repeat(1024 * 1024)
            );
            let write = async {
                for piece in big.as_bytes().chunks(4096) {
                    if wr.write_all(piece).await.is_err() {
                        break;
                    }
                }
            };
            let read = async {
                let mut got = Vec::new();
                let mut chunk = [0u8; 4096];
                while let Ok(Ok(n)) = timeout(WAIT, rd.read(&mut chunk)).await {
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&chunk[..n]);
                }
                got
            };
            let ((), got) = tokio::join!(write, read);
            let (r, _) = parse(&got).unwrap_or_else(|| {
                panic!(
                    "fast_path = {fast_path}, {target}: no answer to a huge head: {:?}",
                    String::from_utf8_lossy(&got)
                )
            });
            assert_eq!(r.status, 431, "fast_path = {fast_path}, {target}: {r:?}");
            drop(tcp);
        }
        s.shutdown().await;
    }
}

// ---------------------------------------------------------------------------
// Client framing errors.

/// A raw upstream that answers 200 to a complete request and records, per
/// connection, every byte it received and whether the connection ended
/// before a complete request arrived.
struct RawUpstream {
    url: String,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `answer`: whether to answer a request head (`false`: close at once
/// after reading the head: an upstream failure).
async fn raw_upstream(answer: bool) -> RawUpstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let received: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let task = tokio::spawn({
        let received = Arc::clone(&received);
        async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let received = Arc::clone(&received);
                tokio::spawn(async move {
                    let i = {
                        let mut r = received.lock().unwrap();
                        r.push(Vec::new());
                        r.len() - 1
                    };
                    let mut chunk = [0u8; 8192];
                    loop {
                        let n = match tcp.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        let all = {
                            let mut r = received.lock().unwrap();
                            r[i].extend_from_slice(&chunk[..n]);
                            r[i].clone()
                        };
                        if !answer && find(&all, b"\r\n\r\n").is_some() {
                            return;
                        }
                        // A complete chunked body ends with the last chunk.
                        if answer && all.ends_with(b"0\r\n\r\n") {
                            let _ = tcp
                                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                                .await;
                        }
                    }
                });
            }
        }
    });
    RawUpstream {
        url,
        received,
        task,
    }
}

const BIN: &str = env!("CARGO_BIN_EXE_keyward");

/// The real binary (its log is the point), with a config file.
struct Binary {
    child: std::process::Child,
    addr: String,
    log: std::path::PathBuf,
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Binary {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Starts `keyward serve` with `toml`, through `sh` with `ulimit -n
/// nofile` if given, and waits until it answers.
async fn binary(toml: &str, nofile: Option<u32>) -> Binary {
    let dir = temp_dir("edge");
    let config = dir.join("keyward.toml");
    std::fs::write(&config, toml).unwrap();
    let log = dir.join("keyward.log");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let log_file = std::fs::File::create(&log).unwrap();
    let mut cmd = std::process::Command::new("sh");
    let limit = nofile.map_or(String::new(), |n| format!("ulimit -n {n} && "));
    cmd.arg("-c")
        .arg(format!(r#"{limit}exec "$0" "$@""#))
        .arg(BIN)
        .args(["serve", "--listen", &addr, "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env("KEYWARD_LOG", "debug")
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file);
    let child = cmd.spawn().unwrap();
    let b = Binary { child, addr, log };
    let health = format!("http://{}/v1/health", b.addr);
    for _ in 0..400 {
        if reqwest::get(&health).await.is_ok() {
            return b;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("keyward did not start; log:\n{}", b.log());
}

fn gateway_toml(upstream: &str, fast_path: bool) -> String {
    format!(
        r#"
[gateway]
upstream = "{upstream}"
timeout_ms = 5000
max_body_bytes = 1000
fast_path = {fast_path}

[[routes]]
path = "/public/{{*rest}}"
auth = false
"#
    )
}

#[tokio::test]
async fn a_malformed_chunked_body_is_400_and_a_dead_upstream_still_502() {
    for fast_path in [true, false] {
        let up = raw_upstream(true).await;
        let kw = binary(&gateway_toml(&up.url, fast_path), None).await;
        let f = fast_path;

        // A well-formed chunked upload goes through (the upstream works).
        let r = exchange_and_close(
            &kw.addr,
            b"POST /public/ok HTTP/1.1\r\nHost: k\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
5\r\nhello\r\n0\r\n\r\n",
        )
        .await;
        assert_eq!(r.status, 200, "fast_path = {f}: {r:?}");

        // Bad chunk sizes, a chunk longer than it said, a client hanging
        // up mid-chunk.
        let bad: [&[u8]; 3] = [
            b"5\r\nhello\r\nZZ\r\nxx\r\n0\r\n\r\n",
            b"3\r\nhello\r\n0\r\n\r\n",
            b"ffffffffffffffffffff\r\nx\r\n",
        ];
        for body in bad {
            let mut req =
                b"POST /public/bad HTTP/1.1\r\nHost: k\r\nTransfer-Encoding: chunked\r\n\r\n"
                    .to_vec();
            req.extend_from_slice(body);
            let r = exchange_and_close(&kw.addr, &req).await;
            r.assert_problem(400, "malformed_request");
            assert_eq!(r.header("connection"), Some("close"), "{r:?}");
        }
        // None of them reached the upstream whole.
        tokio::time::sleep(Duration::from_millis(200)).await;
        for got in up.received.lock().unwrap().iter() {
            let text = String::from_utf8_lossy(got);
            assert!(
                !text.contains("/public/bad") || !text.ends_with("0\r\n\r\n"),
                "fast_path = {f}: a malformed body was forwarded whole: {text:?}"
            );
        }

        // A chunked body over gateway.max_body_bytes is the client's too.
        let mut req =
            b"POST /public/big HTTP/1.1\r\nHost: k\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..3 {
            req.extend_from_slice(format!("{:x}\r\n{}\r\n", 600, "x".repeat(600)).as_bytes());
        }
        req.extend_from_slice(b"0\r\n\r\n");
        let r = exchange_and_close(&kw.addr, &req).await;
        r.assert_problem(413, "payload_too_large");

        // A Content-Length that is not a number never reaches a route:
        // hyper refuses the head (the fast path hands it over).
        for head in [
            &b"POST /public/x HTTP/1.1\r\nHost: k\r\nContent-Length: 3x\r\n\r\nabc"[..],
            b"POST /public/x HTTP/1.1\r\nHost: k\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
            b"POST /public/x HTTP/1.1\r\nHost: k\r\nContent-Length: -1\r\n\r\n",
        ] {
            let r = exchange_and_close(&kw.addr, head).await;
            assert_eq!(r.status, 400, "fast_path = {f}: {r:?}");
        }

        let log = kw.log();
        assert!(
            !log.contains("Upstream request failed"),
            "fast_path = {f}: a client's error was logged as the upstream's:\n{log}"
        );
        assert!(
            log.contains("The client's request body failed"),
            "fast_path = {f}: {log}"
        );

        // A genuine upstream failure is still the upstream's.
        let dead = raw_upstream(false).await;
        drop(kw);
        let kw = binary(&gateway_toml(&dead.url, fast_path), None).await;
        for req in [
            &b"POST /public/x HTTP/1.1\r\nHost: k\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n"[..],
            b"GET /public/x HTTP/1.1\r\nHost: k\r\nConnection: close\r\n\r\n",
        ] {
            let r = exchange_and_close(&kw.addr, req).await;
            r.assert_problem(502, "upstream_unavailable");
        }
        assert!(
            kw.log().contains("Upstream request failed"),
            "fast_path = {f}: {}",
            kw.log()
        );
    }
}

/// A chunked body that stops is 408 on the gateway, logged as the
/// client's, and the upstream gets no whole request.
#[tokio::test]
async fn a_stalled_chunked_body_is_408_and_not_the_upstream_s_fault() {
    let up = raw_upstream(true).await;
    let toml = format!(
        "[http]\nbody_read_timeout_ms = 500\n{}",
        gateway_toml(&up.url, true)
    );
    let kw = binary(&toml, None).await;
    let mut tcp = connect(&kw.addr).await;
    tcp.write_all(b"POST /public/slow HTTP/1.1\r\nHost: k\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        .await
        .unwrap();
    let (got, _) = until_closed(&mut tcp).await;
    let (r, _) = parse(&got).expect("an answer");
    r.assert_problem(408, "request_timeout");
    let log = kw.log();
    assert!(!log.contains("Upstream request failed"), "{log}");
    assert!(log.contains("The client's request body failed"), "{log}");
}

// ---------------------------------------------------------------------------
// The connection cap from the open-file limit, on the real binary.

#[tokio::test]
async fn with_a_low_open_file_limit_the_server_stays_answerable() {
    // 256 descriptors: the cap becomes 256 − 128 = 128 connections.
    let kw = binary(
        "[http]\nheader_read_timeout_ms = 2000\nmax_connections = 100000\n",
        Some(256),
    )
    .await;
    let log = kw.log();
    assert!(log.contains("max_connections=128"), "{log}");
    assert!(
        log.contains("more than the open-file limit allows"),
        "{log}"
    );

    // 300 connections that send nothing: more than the cap and more than
    // the process could even hold. Those past the cap are answered 503 and
    // closed; the others close silently when their head timeout (2 s)
    // passes.
    let refused = Arc::new(AtomicUsize::new(0));
    let mut reads = Vec::new();
    for _ in 0..300 {
        let mut tcp = connect(&kw.addr).await;
        let refused = Arc::clone(&refused);
        reads.push(tokio::spawn(async move {
            let (got, _) = until_closed(&mut tcp).await;
            if let Some((r, _)) = parse(&got) {
                r.assert_problem(503, "overloaded");
                refused.fetch_add(1, Ordering::Relaxed);
            } else {
                assert_eq!(got, b"");
            }
        }));
    }
    // A legitimate client is answered right away: 503 while the cap is
    // full, 200 once the idle connections time out.
    let started = Instant::now();
    loop {
        let mut tcp = connect(&kw.addr).await;
        tcp.write_all(b"GET /v1/health HTTP/1.1\r\nHost: k\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let (got, _) = timeout(Duration::from_secs(3), until_closed(&mut tcp))
            .await
            .expect("/v1/health did not answer within 3 s");
        // Closed unanswered: refusals were all under way (see `refuse`).
        if let Some((answered, _)) = parse(&got) {
            if answered.status == 200 {
                break;
            }
            answered.assert_problem(503, "overloaded");
        }
        assert!(
            started.elapsed() < WAIT,
            "/v1/health still refused after {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for r in reads {
        r.await.unwrap();
    }
    // Past the cap, connections are answered (while at most 64 answers are
    // under way; past that only if the socket takes the answer at once).
    let refused = refused.load(Ordering::Relaxed);
    assert!(
        refused >= 150,
        "only {refused} connections past the cap were answered 503"
    );
    let log = kw.log();
    assert!(!log.contains("Could not accept"), "{log}");
    assert!(log.contains("At the connection limit"), "{log}");
}
