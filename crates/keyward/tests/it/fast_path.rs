//! The gateway's HTTP/1 fast path, black box. Where bytes matter, the
//! client is a raw TCP connection writing HTTP/1.1 by hand and the upstream
//! a scripted TCP listener answering with exact bytes; elsewhere the
//! recording fixture upstream says what arrived.

use std::sync::Arc;
use std::time::Duration;

use keyward_core::clock::ManualClock;
use keyward_server::config::Config;
use keyward_store::SqlStore;
use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::kit::raw::{authority, bearer, find, get, lookup, request, Raw, Res, WAIT};
use crate::kit::upstream::{ok_text, scripted, Act, Scripted, UpReq};
use crate::kit::{config_from_toml, fresh_store_url, Backend, Server};
use crate::upstream;

/// Public routes (no key), keyed routes on every method, and a POST route
/// where `Idempotency-Key` is honoured (the default, `optional`).
fn config(upstream: &str, fast_path: bool) -> Config {
    let mut c = config_from_toml(&format!(
        r#"
[keys]
scopes = ["vox:read", "vox:calls:create"]

[gateway]
upstream = "{upstream}"
timeout_ms = 3000
max_body_bytes = 1048576

[[routes]]
path = "/public/{{*rest}}"
auth = false

[[routes]]
path = "/api/{{*rest}}"

[[routes]]
methods = ["POST"]
path = "/create/{{*rest}}"
"#
    ));
    c.gateway.fast_path = fast_path;
    c
}

/// `n` bytes of a recognisable pattern.
fn pattern(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| b"0123456789abcdefghijklmnopqrstuvwxyz"[i % 36])
        .collect()
}

const CHUNKED_WITH_TRAILER: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\
Transfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n\
5\r\nhello\r\n6;note=ext\r\n world\r\n0\r\nX-Checksum: abc123\r\n\r\n";

/// A chunked body of chunks of awkward sizes; returns (response, body).
fn big_chunked() -> (Vec<u8>, Vec<u8>) {
    let body = pattern(300_000);
    let mut res = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let mut at = 0;
    for size in [1usize, 15, 16, 4095, 70_000, 100_000].iter().cycle() {
        if at == body.len() {
            break;
        }
        let n = (*size).min(body.len() - at);
        res.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        res.extend_from_slice(&body[at..at + n]);
        res.extend_from_slice(b"\r\n");
        at += n;
    }
    res.extend_from_slice(b"0\r\n\r\n");
    (res, body)
}

/// The framings an upstream may use, by path under `/public`.
fn framing_script(req: &UpReq) -> Act {
    let path = req.target.trim_start_matches("/public");
    match path {
        "/cl" => Act::Send(ok_text("hello world")),
        "/chunked" => Act::Send(CHUNKED_WITH_TRAILER.to_vec()),
        "/trickled" => Act::Trickle(CHUNKED_WITH_TRAILER.to_vec(), 3),
        "/big" => {
            let mut res = b"HTTP/1.1 200 OK\r\nContent-Length: 200000\r\n\r\n".to_vec();
            res.extend_from_slice(&pattern(200_000));
            Act::Send(res)
        }
        "/big-chunked" => Act::Send(big_chunked().0),
        "/until-close" => Act::Close(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nthe body ends when the connection does"
                .to_vec(),
        ),
        "/head" => Act::Send(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1234\r\n\r\n".to_vec(),
        ),
        "/204" => Act::Send(b"HTTP/1.1 204 No Content\r\nX-Thing: 1\r\n\r\n".to_vec()),
        "/304" => Act::Send(
            b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 1234\r\n\r\n".to_vec(),
        ),
        "/early-hints" => Act::Send(
            b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n\
HTTP/1.1 103 Early Hints\r\nLink: </app.js>; rel=preload\r\n\r\n\
HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal"
                .to_vec(),
        ),
        "/garbage" => Act::Send(b"NOT-HTTP garbage\r\n\r\n".to_vec()),
        "/bad-header" => Act::Send(b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n".to_vec()),
        "/two-lengths" => Act::Send(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd".to_vec(),
        ),
        "/bad-length" => {
            Act::Send(b"HTTP/1.1 200 OK\r\nContent-Length: 3x\r\n\r\nabc".to_vec())
        }
        "/short-length" => Act::Close(
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this much".to_vec(),
        ),
        "/short-chunked" => Act::Close(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n20\r\nonly this".to_vec(),
        ),
        "/many-headers" => {
            let mut res = b"HTTP/1.1 200 OK\r\n".to_vec();
            for i in 0..70 {
                res.extend_from_slice(format!("X-Header-{i}: {i}\r\n").as_bytes());
            }
            res.extend_from_slice(b"Content-Length: 4\r\n\r\nmany");
            Act::Send(res)
        }
        "/large-header" => Act::Send(
            format!(
                "HTTP/1.1 200 OK\r\nX-Large: {}\r\nContent-Length: 5\r\n\r\nlarge",
                "z".repeat(30 * 1024)
            )
            .into_bytes(),
        ),
        "/cookies" => Act::Send(
            b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1; Path=/\r\nSet-Cookie: b=2; Path=/\r\n\
Cache-Control: no-store\r\nContent-Length: 7\r\n\r\ncookies"
                .to_vec(),
        ),
        "/nine-tokens" => Act::Send(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, x-a, x-b, x-c, x-d, x-e, x-f, x-g, x-hop\r\n\
X-Hop: must-not-pass\r\nContent-Length: 2\r\n\r\nok"
                .to_vec(),
        ),
        "/rate" => Act::Send(
            b"HTTP/1.1 200 OK\r\nRateLimit: limit=999, remaining=999\r\n\
RateLimit-Policy: 999;w=1\r\nX-Request-Id: upstream-id\r\nContent-Length: 2\r\n\r\nok"
                .to_vec(),
        ),
        "/slow" => Act::Later(Duration::from_millis(300), ok_text("worth the wait")),
        _ => Act::Send(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec()),
    }
}

/// A server (fast path on) in front of the framing upstream.
async fn framing_server() -> (Scripted, Server) {
    let up = scripted(framing_script).await;
    let s = Server::start_with(Backend::Sqlite, config(&up.url, true)).await;
    (up, s)
}

// ---------------------------------------------------------------------------
// 1, 2: one connection, many requests.

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let up = upstream::start().await;
    let s = Server::start_with(Backend::Sqlite, config(&up.url, true)).await;
    let t = s.tenant("Acme").await;
    let (_, secret) = s.key(&t, "k", json!({})).await;
    let auth = bearer(&secret);

    // Three requests in one write, one with a body.
    let mut c = Raw::connect(&s).await;
    let mut bytes = request("GET", "/api/one", &[("Authorization", &auth)], b"");
    bytes.extend(request(
        "POST",
        "/api/two",
        &[("Authorization", &auth)],
        b"hello",
    ));
    bytes.extend(get("/public/three"));
    c.send(&bytes).await;
    let mut ids = Vec::new();
    for (path, n) in [("/api/one", 0), ("/api/two", 5), ("/public/three", 0)] {
        let r = c.response().await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.json()["path"], path, "responses come in request order");
        assert_eq!(r.json()["bytes"], n);
        ids.push(r.header("x-request-id").unwrap().to_owned());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "each request has its own id");
    let seen = up.seen();
    let uris: Vec<&str> = seen.iter().map(|r| r.uri.as_str()).collect();
    assert_eq!(uris, ["/api/one", "/api/two", "/public/three"]);
    assert_eq!(&seen[1].body[..], b"hello");

    // A body that arrives after its head, in pieces, on the same connection.
    let whole = request(
        "POST",
        "/api/four",
        &[("Authorization", &auth)],
        b"0123456789",
    );
    let (head, body) = whole.split_at(whole.len() - 10);
    c.send(head).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.send(&body[..4]).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.send(&body[4..]).await;
    let r = c.response().await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["bytes"], 10);
    assert_eq!(&up.last().body[..], b"0123456789");

    // A request asking to close is the last one served, even with more
    // pipelined behind it.
    let mut bytes = request("GET", "/public/last", &[("Connection", "close")], b"");
    bytes.extend(get("/public/never"));
    c.send(&bytes).await;
    let r = c.response().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(c.end().await, b"", "nothing after the closing response");
    assert_eq!(up.last().uri, "/public/last");
}

#[tokio::test]
async fn a_connection_handed_to_the_general_path_keeps_working() {
    let up = upstream::start().await;
    let s = Server::start_with(Backend::Sqlite, config(&up.url, true)).await;
    let t = s.tenant("Acme").await;
    let (_, secret) = s.key(&t, "k", json!({})).await;
    let auth = bearer(&secret);
    let gateway = |path: &str| request("GET", path, &[("Authorization", &auth)], b"");

    // One request at a time on one keep-alive connection.
    let mut c = Raw::connect(&s).await;
    c.send(gateway("/api/before")).await;
    let r = c.response().await;
    assert_eq!(
        (r.status, r.json()["path"].clone()),
        (200, json!("/api/before"))
    );
    c.send(get("/v1/health")).await;
    let r = c.response().await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["status"], "ok");
    c.send(gateway("/api/after")).await;
    let r = c.response().await;
    assert_eq!(
        (r.status, r.json()["path"].clone()),
        (200, json!("/api/after"))
    );
    // Still authenticated and still stripped after the handover.
    c.send(get("/api/no-key")).await;
    c.response()
        .await
        .assert_problem(401, "missing_credentials");
    let seen = up.last();
    assert_eq!(seen.uri, "/api/after");
    assert!(seen.headers.get("authorization").is_none());
    assert!(seen.headers.get("x-keyward-key-id").is_some());

    // The same three in one write: the handover happens with the third
    // request already read.
    let mut c = Raw::connect(&s).await;
    let mut bytes = gateway("/api/a");
    bytes.extend(get("/v1/health"));
    bytes.extend(gateway("/api/b"));
    c.send(&bytes).await;
    assert_eq!(c.response().await.json()["path"], "/api/a");
    assert_eq!(c.response().await.json()["status"], "ok");
    assert_eq!(c.response().await.json()["path"], "/api/b");
}

// ---------------------------------------------------------------------------
// 3: response framings.

#[tokio::test]
async fn length_and_chunked_bodies_arrive_whole_and_the_connection_stays_usable() {
    let (up, s) = framing_server().await;
    let mut c = Raw::connect(&s).await;

    c.send(get("/public/cl")).await;
    let r = c.response().await;
    assert_eq!((r.version.as_str(), r.status), ("HTTP/1.1", 200));
    assert_eq!(r.body, b"hello world");
    assert_eq!(r.header("content-length"), Some("11"));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert!(r.header("transfer-encoding").is_none());

    for path in ["/public/chunked", "/public/trickled"] {
        c.send(get(path)).await;
        let r = c.response().await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("transfer-encoding"), Some("chunked"), "{path}");
        assert!(r.header("content-length").is_none(), "{path}");
        assert_eq!(r.body, b"hello world", "{path}");
        assert_eq!(
            r.trailers,
            [("x-checksum".to_owned(), "abc123".to_owned())],
            "{path}: trailers are relayed"
        );
    }

    c.send(get("/public/big")).await;
    let r = c.response().await;
    assert_eq!(r.header("content-length"), Some("200000"));
    assert!(
        r.body == pattern(200_000),
        "a large length-framed body is intact"
    );

    c.send(get("/public/big-chunked")).await;
    let r = c.response().await;
    assert!(r.body == big_chunked().1, "a large chunked body is intact");

    // Still in step after all of that.
    c.send(get("/public/cl")).await;
    assert_eq!(c.response().await.body, b"hello world");
    assert_eq!(
        up.connections(),
        1,
        "one pooled upstream connection served all"
    );
}

#[tokio::test]
async fn bodiless_responses_send_no_body_bytes() {
    let (_up, s) = framing_server().await;
    let mut c = Raw::connect(&s).await;

    // Each is followed, in the same write, by a request whose response must
    // come next on the wire: a stray body byte would break the status line.
    let mut bytes = request("HEAD", "/public/head", &[], b"");
    bytes.extend(get("/public/cl"));
    c.send(&bytes).await;
    let r = c.response_to("HEAD").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-length"),
        Some("1234"),
        "HEAD keeps the length"
    );
    assert!(c.buf.is_empty() || c.buf.starts_with(b"HTTP/1.1 "));
    assert_eq!(c.response().await.body, b"hello world");

    for (path, status) in [("/public/204", 204), ("/public/304", 304)] {
        let mut bytes = get(path);
        bytes.extend(get("/public/cl"));
        c.send(&bytes).await;
        let r = c.response().await;
        assert_eq!(r.status, status, "{r:?}");
        assert!(r.header("transfer-encoding").is_none(), "{r:?}");
        let next = c.response().await;
        assert_eq!(
            next.status, 200,
            "{path}: the next response follows at once"
        );
        assert_eq!(next.body, b"hello world");
    }
    c.send(get("/public/204")).await;
    assert_eq!(c.response().await.header("x-thing"), Some("1"));
    c.send(get("/public/304")).await;
    assert_eq!(c.response().await.header("etag"), Some("\"v1\""));
}

#[tokio::test]
async fn a_close_delimited_body_arrives_whole_and_then_the_connection_closes() {
    let (_up, s) = framing_server().await;
    let mut c = Raw::connect(&s).await;
    c.send(get("/public/until-close")).await;
    let r = c.response().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(r.header("content-length").is_none());
    assert!(r.header("transfer-encoding").is_none());
    assert_eq!(r.body, b"the body ends when the connection does");
}

#[tokio::test]
async fn informational_responses_from_the_upstream_are_not_forwarded() {
    let (_up, s) = framing_server().await;
    let mut c = Raw::connect(&s).await;
    c.send(get("/public/early-hints")).await;
    let r = c.response().await;
    assert_eq!(r.status, 200, "the first response the client sees is final");
    assert_eq!(r.body, b"final");
    assert!(r.header("link").is_none());
    assert!(
        find(&c.wire, b"103").is_none(),
        "{:?}",
        String::from_utf8_lossy(&c.wire)
    );
    c.send(get("/public/cl")).await;
    assert_eq!(c.response().await.body, b"hello world");
}

// ---------------------------------------------------------------------------
// 4: upstreams that do not keep connections.

#[tokio::test]
async fn an_upstream_closing_after_every_response_causes_no_502() {
    // Closes after each response without saying so.
    let quiet = scripted(|_| Act::Close(ok_text("once"))).await;
    // Says `Connection: close`, then closes.
    let polite = scripted(|_| {
        Act::Close(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 4\r\n\r\nonce".to_vec(),
        )
    })
    .await;
    for up in [&quiet, &polite] {
        let s = Server::start_with(Backend::Sqlite, config(&up.url, true)).await;
        let mut c = Raw::connect(&s).await;
        for i in 0..12 {
            let method = if i % 3 == 2 { "POST" } else { "GET" };
            c.send(request(method, &format!("/public/{i}"), &[], b"x"))
                .await;
            let r = c.response().await;
            assert_eq!(r.status, 200, "request {i} ({method}): {r:?}");
            assert_eq!(r.body, b"once");
            assert!(
                r.header("connection").is_none(),
                "the client's connection stays open"
            );
        }
        // A client library with its own pool, too.
        for i in 0..6 {
            let r = s
                .call(Method::GET, &format!("/public/r{i}"), None, None)
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        }
        assert_eq!(up.seen().len(), 18, "every request arrived exactly once");
        assert_eq!(up.connections(), 18, "a new connection each time");
    }
}

#[tokio::test]
async fn a_pooled_connection_dropped_at_the_next_request_is_retried_only_when_idempotent() {
    // Answers the first request on each connection; reads the second and
    // closes without a word, as a server whose keep-alive timer fired
    // just then does.
    let up = scripted(|req| {
        if req.nth == 0 {
            Act::Send(ok_text("fresh"))
        } else {
            Act::Close(Vec::new())
        }
    })
    .await;
    let s = Server::start_with(Backend::Sqlite, config(&up.url, true)).await;
    let mut c = Raw::connect(&s).await;
    for i in 0..6 {
        c.send(get(&format!("/public/get{i}"))).await;
        let r = c.response().await;
        assert_eq!(r.status, 200, "GET {i}: {r:?}");
        assert_eq!(r.body, b"fresh");
    }
    // GET 0 on a new connection; every later one first on the pooled
    // connection (dropped), then once on a new one.
    assert_eq!(up.seen().len(), 11);
    assert_eq!(up.connections(), 6);

    // A POST that reached the upstream is not sent twice.
    c.send(request("POST", "/public/post", &[], b"charge"))
        .await;
    let r = c.response().await;
    r.assert_problem(502, "upstream_unavailable");
    let posts = up.seen().iter().filter(|r| r.method == "POST").count();
    assert_eq!(posts, 1, "a non-idempotent request is never retried");
}

// ---------------------------------------------------------------------------
// 5: upstream failures.

#[tokio::test]
async fn malformed_upstream_heads_are_502_and_the_client_connection_survives() {
    let (_up, s) = framing_server().await;
    let mut c = Raw::connect(&s).await;
    for path in [
        "/public/garbage",
        "/public/bad-header",
        "/public/two-lengths",
        "/public/bad-length",
    ] {
        c.send(get(path)).await;
        let r = c.response().await;
        r.assert_problem(502, "upstream_unavailable");
        assert!(r.json()["detail"].as_str().is_some_and(|d| !d.is_empty()));
        assert!(r.header("x-request-id").is_some());
        // The error is keyward's: the client connection carries on.
        c.send(get("/public/cl")).await;
        let r = c.response().await;
        assert_eq!(r.status, 200, "after {path}: {r:?}");
        assert_eq!(r.body, b"hello world");
    }
    // The kit's client sees the same.
    s.call(Method::GET, "/public/two-lengths", None, None)
        .await
        .assert_problem(502, "upstream_unavailable");
}

#[tokio::test]
async fn an_upstream_closing_mid_body_ends_the_client_connection() {
    let (_up, s) = framing_server().await;
    for (path, framing, cut) in [
        ("/public/short-length", "content-length", "only this much"),
        (
            "/public/short-chunked",
            "transfer-encoding",
            "20\r\nonly this",
        ),
    ] {
        let mut c = Raw::connect(&s).await;
        c.send(get(path)).await;
        let status = c.line().await;
        assert_eq!(status, "HTTP/1.1 200 OK", "{path}");
        let headers = c.header_lines().await;
        assert!(!lookup(&headers, framing).is_empty(), "{path}: {headers:?}");
        // The client must be able to tell the body was cut: the
        // connection ends (bounded by `end`'s timeout) before it is whole.
        let rest = c.end().await;
        assert_eq!(
            String::from_utf8_lossy(&rest),
            cut,
            "{path}: what was sent before the cut, then the end"
        );
        // And the next request on a new connection is fine.
        let mut c = Raw::connect(&s).await;
        c.send(get("/public/cl")).await;
        assert_eq!(c.response().await.body, b"hello world", "after {path}");
    }
}

// ---------------------------------------------------------------------------
// 6: headers.

#[tokio::test]
async fn credentials_hop_by_hop_and_forged_identity_never_cross() {
    let up = scripted(|_| {
        Act::Send(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: X-Up-Hop, Keep-Alive\r\n\
X-Up-Hop: secret\r\nKeep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nUpgrade: h2c\r\n\
X-Request-Id: the-upstream-s-own\r\nX-Up-Kept: yes\r\n\r\nok"
                .to_vec(),
        )
    })
    .await;
    let s = Server::start_with(Backend::Sqlite, config(&up.url, true)).await;
    let t = s.tenant("Acme").await;
    let (id, secret) = s
        .key(
            &t,
            "agent",
            json!({ "scopes": ["vox:read", "vox:calls:create"], "owner": "ada@example.com" }),
        )
        .await;
    let auth = bearer(&secret);
    let forged: &[(&str, &str)] = &[
        ("X-Keyward-Key-Id", "key_forged"),
        ("x-keyward-tenant-id", "ten_forged"),
        ("X-KEYWARD-ENVIRONMENT", "live"),
        ("X-Keyward-Scopes", "*"),
        ("X-Keyward-Owner", "mallory@example.com"),
    ];
    let mut headers: Vec<(&str, &str)> = vec![
        ("Authorization", &auth),
        ("X-API-Key", &secret),
        ("Connection", "keep-alive, X-Client-Hop"),
        ("X-Client-Hop", "1"),
        ("Keep-Alive", "timeout=5"),
        ("TE", "trailers"),
        ("Trailer", "X-Never"),
        ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
        ("Proxy-Connection", "keep-alive"),
        ("X-Forwarded-For", "203.0.113.9"),
        ("Forwarded", "for=203.0.113.9"),
        ("X-Custom", "one"),
        ("X-Custom", "two"),
    ];
    headers.extend_from_slice(forged);

    let mut c = Raw::connect(&s).await;
    for path in ["/api/calls?x=1", "/public/page"] {
        c.send(request("POST", path, &headers, b"{}")).await;
        let r = c.response().await;
        assert_eq!(r.status, 200, "{path}: {r:?}");
        assert_eq!(r.body, b"ok");
        // Upstream → client.
        for h in [
            "connection",
            "x-up-hop",
            "keep-alive",
            "proxy-authenticate",
            "upgrade",
        ] {
            assert!(
                r.header(h).is_none(),
                "{path}: {h} reached the client: {r:?}"
            );
        }
        assert_eq!(r.header("x-up-kept"), Some("yes"));
        assert_eq!(r.all("x-request-id").len(), 1);
        assert_ne!(r.header("x-request-id"), Some("the-upstream-s-own"));

        // Client → upstream.
        let seen = up.last();
        assert_eq!(seen.target, path);
        assert_eq!(seen.all("host"), [up.authority.as_str()], "{}", seen.head);
        for h in [
            "authorization",
            "x-api-key",
            "connection",
            "x-client-hop",
            "keep-alive",
            "te",
            "trailer",
            "proxy-authorization",
            "proxy-connection",
        ] {
            assert!(
                seen.header(h).is_none(),
                "{path}: {h} reached the upstream:\n{}",
                seen.head
            );
        }
        assert!(!seen.head.contains(&secret), "{}", seen.head);
        assert!(
            !seen.head.contains("forged") && !seen.head.contains("mallory"),
            "{}",
            seen.head
        );
        assert_eq!(seen.all("x-forwarded-for"), ["127.0.0.1"], "{}", seen.head);
        assert_eq!(
            seen.all("forwarded"),
            ["for=127.0.0.1;proto=http"],
            "{}",
            seen.head
        );
        assert_eq!(seen.all("x-custom"), ["one", "two"]);
        assert_eq!(seen.all("content-length"), ["2"]);
        assert_eq!(seen.body, b"{}");
        if path.starts_with("/api") {
            assert_eq!(seen.all("x-keyward-key-id"), [id.as_str()]);
            assert_eq!(seen.all("x-keyward-tenant-id"), [t.as_str()]);
            assert_eq!(seen.all("x-keyward-environment"), ["test"]);
            assert_eq!(seen.all("x-keyward-scopes"), ["vox:calls:create vox:read"]);
            assert_eq!(seen.all("x-keyward-owner"), ["ada@example.com"]);
        } else {
            let identity: Vec<_> = seen
                .headers
                .iter()
                .filter(|(n, _)| n.starts_with("x-keyward-"))
                .collect();
            assert!(
                identity.is_empty(),
                "a public route has no identity: {identity:?}"
            );
        }
    }
}

#[tokio::test]
async fn request_ids_are_passed_on_or_generated_and_echoed() {
    let (up, s) = framing_server().await;
    let mut c = Raw::connect(&s).await;

    c.send(request(
        "GET",
        "/public/cl",
        &[("X-Request-Id", "trace-abc-123")],
        b"",
    ))
    .await;
    let r = c.response().await;
    assert_eq!(r.all("x-request-id"), ["trace-abc-123"]);
    assert_eq!(up.last().all("x-request-id"), ["trace-abc-123"]);

    let long = "x".repeat(200);
    for sent in [None, Some("has space"), Some(long.as_str())] {
        let headers: Vec<(&str, &str)> = sent.map(|v| ("X-Request-Id", v)).into_iter().collect();
        c.send(request("GET", "/public/cl", &headers, b"")).await;
        let r = c.response().await;
        let echoed = r.header("x-request-id").unwrap().to_owned();
        assert!(
            echoed.len() == 26
                && echoed.starts_with("req_")
                && echoed[4..].bytes().all(|b| b.is_ascii_alphanumeric()),
            "{sent:?} → {echoed}"
        );
        assert_eq!(up.last().all("x-request-id"), [echoed.as_str()], "{sent:?}");
    }

    // keyward's own answers carry the id too.
    c.send(request(
        "GET",
        "/api/x",
        &[("X-Request-Id", "trace-denied")],
        b"",
    ))
    .await;
    let r = c.response().await;
    r.assert_problem(401, "missing_credentials");
    assert_eq!(r.all("x-request-id"), ["trace-denied"]);
}

// ---------------------------------------------------------------------------
// 7: what the fast path leaves to the general path.

#[tokio::test]
async fn requests_the_fast_path_declines_still_work_end_to_end() {
    let up = upstream::start().await;
    let s = Server::start_with(Backend::Sqlite, config(&up.url, true)).await;
    let t = s.tenant("Acme").await;
    let (_, secret) = s.key(&t, "k", json!({})).await;
    let auth = bearer(&secret);
    let warm_up = || request("GET", "/api/warm-up", &[("Authorization", &auth)], b"");

    // A chunked upload, after a fast-path request on the same connection.
    let mut c = Raw::connect(&s).await;
    c.send(warm_up()).await;
    assert_eq!(c.response().await.status, 200);
    let mut upload = request(
        "POST",
        "/api/chunked",
        &[("Authorization", &auth), ("Transfer-Encoding", "chunked")],
        b"",
    );
    upload.extend_from_slice(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
    c.send(&upload).await;
    let r = c.response().await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["bytes"], 11);
    let seen = up.last();
    assert_eq!(seen.uri, "/api/chunked");
    assert_eq!(&seen.body[..], b"hello world");
    assert!(seen.headers.get("authorization").is_none());
    c.send(warm_up()).await;
    assert_eq!(c.response().await.status, 200, "the connection carries on");

    // Expect: 100-continue: the body is sent once the server asks for it.
    let mut c = Raw::connect(&s).await;
    c.send(request(
        "POST",
        "/api/expect",
        &[
            ("Authorization", &auth),
            ("Expect", "100-continue"),
            ("Content-Length", "5"),
        ],
        b"",
    ))
    .await;
    let interim = c.response().await;
    assert_eq!(interim.status, 100, "{interim:?}");
    c.send(b"hello").await;
    let r = c.response().await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["bytes"], 5);
    assert_eq!(&up.last().body[..], b"hello");

    // HTTP/1.0.
    let mut c = Raw::connect(&s).await;
    c.send(format!(
        "GET /api/old HTTP/1.0\r\nAuthorization: {auth}\r\n\r\n"
    ))
    .await;
    let r = c.response().await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["path"], "/api/old");
    assert_eq!(c.end().await, b"", "HTTP/1.0 without keep-alive ends");
    assert_eq!(up.last().uri, "/api/old");

    // 100 KiB, pipelined behind a fast-path request in the same write.
    let big = pattern(100 * 1024);
    let mut c = Raw::connect(&s).await;
    let mut bytes = warm_up();
    bytes.extend(request(
        "POST",
        "/api/big",
        &[("Authorization", &auth)],
        &big,
    ));
    c.send(&bytes).await;
    assert_eq!(c.response().await.json()["path"], "/api/warm-up");
    let r = c.response().await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["bytes"], big.len());
    assert!(
        up.last().body[..] == big[..],
        "the large body arrived intact"
    );

    // Conflicting Content-Lengths are refused, not forwarded.
    let before = up.seen().len();
    let mut c = Raw::connect(&s).await;
    c.send(
        b"POST /public/smuggle HTTP/1.1\r\nHost: k\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde",
    )
    .await;
    let r = c.response().await;
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(up.seen().len(), before);
}

#[tokio::test]
async fn idempotent_requests_replay_on_a_fast_path_connection() {
    let up = upstream::start().await;
    let s = Server::start_with(Backend::Sqlite, config(&up.url, true)).await;
    let t = s.tenant("Acme").await;
    let (_, secret) = s.key(&t, "k", json!({})).await;
    let auth = bearer(&secret);
    let create = || {
        request(
            "POST",
            "/create/sleep/10",
            &[
                ("Authorization", &auth),
                ("Idempotency-Key", "fast-001"),
                ("Content-Type", "application/json"),
            ],
            br#"{"n":1}"#,
        )
    };

    let mut c = Raw::connect(&s).await;
    // A plain POST on the same route stays on the fast path.
    c.send(request(
        "POST",
        "/create/sleep/10",
        &[("Authorization", &auth)],
        b"{}",
    ))
    .await;
    assert_eq!(c.response().await.status, 201);
    c.send(create()).await;
    let first = c.response().await;
    assert_eq!(first.status, 201, "{first:?}");
    assert!(first.header("idempotent-replayed").is_none());
    c.send(create()).await;
    let again = c.response().await;
    assert_eq!(again.status, 201, "{again:?}");
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.json(), first.json());
    assert_eq!(again.header("location"), first.header("location"));
    let runs = up
        .seen()
        .iter()
        .filter(|r| r.headers.get("idempotency-key").is_some())
        .count();
    assert_eq!(runs, 1, "one execution");
}

// ---------------------------------------------------------------------------
// 8: the same result either way.

/// Two servers over one store (so one key works on both), the fast path on
/// and off, in front of one recording upstream.
async fn twins(up: &str) -> (Server, Server) {
    twins_with(|fast_path| config(up, fast_path)).await
}

/// Twins with a configuration of their own (and one clock, so rate-limit
/// arithmetic agrees to the millisecond).
async fn twins_with(config: impl Fn(bool) -> Config) -> (Server, Server) {
    let url = fresh_store_url(Backend::Sqlite).await;
    let store = Arc::new(SqlStore::open(&url).await.unwrap());
    let clock = ManualClock::starting_now();
    let fast = Server::start_on(Arc::clone(&store), config(true), clock.clone()).await;
    let general = Server::start_on(store, config(false), clock).await;
    (fast, general)
}

/// Sends `bytes` on a new connection to each twin; the two responses.
async fn both(fast: &Server, general: &Server, bytes: &[u8], method: &str) -> (Res, Res) {
    let mut replies = Vec::new();
    for s in [fast, general] {
        let mut c = Raw::connect(s).await;
        c.send(bytes).await;
        replies.push(c.response_to(method).await);
    }
    let g = replies.pop().unwrap();
    let f = replies.pop().unwrap();
    (f, g)
}

#[track_caller]
fn assert_same(f: &Res, g: &Res, what: &str) {
    assert_eq!(
        f.status, g.status,
        "{what}: status (fast, general)\n{f:?}\n{g:?}"
    );
    assert_eq!(f.body, g.body, "{what}: body (fast, general)");
    assert_eq!(
        f.stable_headers(),
        g.stable_headers(),
        "{what}: headers (fast, general)"
    );
    assert!(
        f.header("date").is_some() && g.header("date").is_some(),
        "{what}"
    );
    assert_eq!(f.all("x-request-id").len(), 1, "{what}");
    assert_eq!(g.all("x-request-id").len(), 1, "{what}");
}

#[tokio::test]
async fn forwarded_requests_are_the_same_with_the_fast_path_off() {
    let up = upstream::start().await;
    let (fast, general) = twins(&up.url).await;
    let t = fast.tenant("Acme").await;
    let (_, secret) = fast
        .key(
            &t,
            "k",
            json!({ "scopes": ["vox:read"], "owner": "ada@example.com" }),
        )
        .await;
    let auth = bearer(&secret);
    let headers: Vec<(&str, &str)> = vec![
        ("Authorization", &auth),
        ("X-Keyward-Key-Id", "key_forged"),
        ("Connection", "keep-alive, X-Drop"),
        ("X-Drop", "1"),
        ("Keep-Alive", "timeout=5"),
        ("TE", "trailers"),
        ("Accept", "application/json"),
        ("User-Agent", "raw-test/1"),
        ("X-Custom", "a"),
        ("X-Custom", "b"),
        ("X-Forwarded-For", "203.0.113.7"),
        ("Content-Type", "application/json"),
    ];
    let cases = [
        (
            "POST",
            "/api/calls?x=1&y=two",
            &br#"{"to":"+15551234567"}"#[..],
        ),
        ("GET", "/api/calls/1", &b""[..]),
        ("DELETE", "/public/thing", &b""[..]),
    ];
    for (method, target, body) in cases {
        let mut results = Vec::new();
        for s in [&fast, &general] {
            let mut c = Raw::connect(s).await;
            c.send(request(method, target, &headers, body)).await;
            let r = c.response().await;
            let mut seen = up.last();
            seen.headers.remove("x-request-id");
            results.push((r, seen));
        }
        let [(fr, fs), (gr, gs)] = [&results[0], &results[1]];
        assert_eq!(fr.status, 200, "{fr:?}");
        assert_eq!(fr.status, gr.status, "{method} {target}");
        assert_eq!(fr.body, gr.body, "{method} {target}");
        assert_eq!(
            fr.stable_headers(),
            gr.stable_headers(),
            "{method} {target}: response headers (fast, general)"
        );
        assert_eq!((&fs.method, &fs.uri), (&gs.method, &gs.uri));
        assert_eq!(fs.version, gs.version);
        assert_eq!(fs.body, gs.body, "{method} {target}");
        assert_eq!(
            fs.headers, gs.headers,
            "{method} {target}: headers at the upstream (fast, general)"
        );
    }
}

#[tokio::test]
async fn errors_are_the_same_with_the_fast_path_off() {
    let up = upstream::start().await;
    let (fast, general) = twins(&up.url).await;
    let t = fast.tenant("Acme").await;
    let (_, secret) = fast.key(&t, "k", json!({})).await;
    let revoked = {
        let (id, secret) = fast.key(&t, "gone", json!({})).await;
        let r = fast
            .call(
                Method::POST,
                &format!("/v1/keys/{id}/revoke"),
                Some(&fast.root),
                None,
            )
            .await;
        assert!(r.status.is_success(), "{}", r.body);
        secret
    };
    let bad = bearer("clv_bogus");
    let gone = bearer(&revoked);
    let good = bearer(&secret);
    type Headers<'a> = Vec<(&'a str, &'a str)>;
    let cases: Vec<(&str, Headers, &str)> = vec![
        ("/api/x", vec![], "missing_credentials"),
        ("/api/x", vec![("Authorization", &bad)], "invalid_api_key"),
        ("/api/x", vec![("Authorization", &gone)], "revoked_api_key"),
        ("/unrouted", vec![("Authorization", &good)], "not_found"),
        ("/api/x?api_key=abc", vec![], "credentials_misplaced"),
        (
            "/api/x",
            vec![("Cookie", "a=1"), ("Cookie", "api_key=abc")],
            "credentials_misplaced",
        ),
    ];
    for (path, headers, code) in cases {
        let mut replies = Vec::new();
        for s in [&fast, &general] {
            let mut c = Raw::connect(s).await;
            c.send(request("GET", path, &headers, b"")).await;
            replies.push(c.response().await);
        }
        let (f, g) = (&replies[0], &replies[1]);
        assert_eq!(f.json()["code"], code, "{f:?}");
        assert_eq!(f.status, g.status, "{code}");
        assert_eq!(f.json(), g.json(), "{code}");
        assert_eq!(f.header("content-type"), g.header("content-type"), "{code}");
        assert_eq!(
            f.header("www-authenticate"),
            g.header("www-authenticate"),
            "{code}"
        );
        if f.status == 401 {
            assert!(f.header("www-authenticate").is_some(), "{f:?}");
        }
        assert_eq!(
            f.stable_headers(),
            g.stable_headers(),
            "{code}: (fast, general)"
        );
    }
    assert!(up.seen().is_empty(), "denials never reach the upstream");
}

#[tokio::test]
async fn responses_of_every_framing_are_the_same_with_the_fast_path_off() {
    let up = scripted(framing_script).await;
    let (fast, general) = twins(&up.url).await;
    for (method, path) in [
        ("GET", "/public/cl"),
        ("GET", "/public/big"),
        ("HEAD", "/public/head"),
        ("GET", "/public/204"),
        ("GET", "/public/304"),
        ("GET", "/public/early-hints"),
        ("GET", "/public/rate"),
        ("GET", "/public/large-header"),
        ("GET", "/public/cookies"),
        ("GET", "/public/garbage"),
        ("GET", "/public/two-lengths"),
    ] {
        let (mut f, mut g) = both(&fast, &general, &request(method, path, &[], b""), method).await;
        if path == "/public/304" {
            // The general stack drops a 304's Content-Length; the fast path
            // relays the upstream's, which RFC 9110 §8.6 allows (it is the
            // length a 200 would have had). Either is right.
            f.headers.retain(|(n, _)| n != "content-length");
            g.headers.retain(|(n, _)| n != "content-length");
        }
        assert_same(&f, &g, &format!("{method} {path}"));
    }
}

#[tokio::test]
async fn templates_and_rate_limits_are_the_same_with_the_fast_path_off() {
    let up = scripted(framing_script).await;
    let (fast, general) = twins_with(|fast_path| {
        let mut c = config_from_toml(&format!(
            r#"
[gateway]
upstream = "{}"

[limits]
default_tier = "tiny"
[limits.tiers.tiny]
limit = 3
window_seconds = 60

[[routes]]
methods = ["GET"]
path = "/hello"
respond = {{ key = "{{key_id}}", tenant = "{{tenant_id}}" }}

[[routes]]
path = "/{{*rest}}"
"#,
            up.url
        ));
        c.gateway.fast_path = fast_path;
        c
    })
    .await;
    let t = fast.tenant("Acme").await;
    let (_, secret) = fast.key(&t, "k", json!({})).await;
    let auth = bearer(&secret);
    // A template, a forwarded response whose own RateLimit headers give
    // way to keyward's, a template again, then refused.
    for (i, path) in ["/hello", "/rate", "/hello", "/rate", "/hello"]
        .iter()
        .enumerate()
    {
        let bytes = request("GET", path, &[("Authorization", &auth)], b"");
        let (f, g) = both(&fast, &general, &bytes, "GET").await;
        assert_same(&f, &g, &format!("request {i}: {path}"));
        assert_eq!(f.status, if i < 3 { 200 } else { 429 }, "{i}: {f:?}");
        assert!(f.header("ratelimit").is_some(), "{f:?}");
        assert!(!f.all("ratelimit").contains(&"limit=999, remaining=999"));
    }
}

#[tokio::test]
async fn forwarding_headers_behind_a_trusted_proxy_are_the_same_with_the_fast_path_off() {
    let up = scripted(framing_script).await;
    let (fast, general) = twins_with(|fast_path| {
        let mut c = config(&up.url, fast_path);
        c.http.trusted_proxies = vec!["127.0.0.1/32".into()];
        c
    })
    .await;
    let bytes = request(
        "GET",
        "/public/cl",
        &[
            ("X-Forwarded-For", "198.51.100.1, 203.0.113.7"),
            ("X-Forwarded-For", "192.0.2.99"),
            ("Forwarded", "for=192.0.2.1"),
        ],
        b"",
    );
    let mut seen = Vec::new();
    for s in [&fast, &general] {
        let mut c = Raw::connect(s).await;
        c.send(&bytes).await;
        assert_eq!(c.response().await.status, 200);
        seen.push(up.last());
    }
    let forwarding = |r: &UpReq| {
        (
            r.all("x-forwarded-for")
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>(),
            r.all("forwarded")
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>(),
        )
    };
    assert_eq!(
        forwarding(&seen[0]),
        forwarding(&seen[1]),
        "(fast, general)"
    );
    assert_eq!(seen[0].all("x-forwarded-for").len(), 1, "{}", seen[0].head);
    assert!(
        seen[0].all("x-forwarded-for")[0].ends_with(", 127.0.0.1"),
        "the trusted peer is appended: {}",
        seen[0].head
    );
}

#[tokio::test]
async fn an_oversized_body_is_413_and_the_connection_stays_in_step() {
    let up = scripted(framing_script).await;
    let (fast, general) = twins_with(|fast_path| {
        let mut c = config(&up.url, fast_path);
        c.gateway.max_body_bytes = 4096;
        c
    })
    .await;
    let big = pattern(5000);
    let (f, g) = both(
        &fast,
        &general,
        &request("POST", "/public/cl", &[], &big),
        "POST",
    )
    .await;
    f.assert_problem(413, "payload_too_large");
    // The general path answers before reading the body, so it closes the
    // connection and says so; the fast path read the (small) body and
    // keeps it. Otherwise the answers are the same.
    assert_eq!(g.header("connection"), Some("close"));
    assert_eq!(f.header("connection"), None);
    let without_connection = |r: &Res| {
        let mut r = r.clone();
        r.headers.retain(|(n, _)| n != "connection");
        r
    };
    assert_same(&without_connection(&f), &without_connection(&g), "413");
    // On the fast path the body was read, so the next request is parsed
    // from the right place.
    let mut c = Raw::connect(&fast).await;
    let mut bytes = request("POST", "/public/cl", &[], &big);
    bytes.extend(get("/public/cl"));
    c.send(&bytes).await;
    c.response().await.assert_problem(413, "payload_too_large");
    let r = c.response().await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hello world"[..]));
    assert!(
        up.seen().iter().all(|r| r.method == "GET"),
        "nothing too large was sent"
    );
}

#[tokio::test]
async fn keyward_s_own_paths_win_over_a_catch_all_route() {
    let up = upstream::start().await;
    let mut c = config_from_toml(&format!(
        "[gateway]\nupstream = \"{}\"\n[[routes]]\npath = \"/{{*rest}}\"\nauth = false\n",
        up.url
    ));
    c.gateway.fast_path = true;
    let s = Server::start_with(Backend::Sqlite, c).await;
    let t = s.tenant("Acme").await;
    let (_, secret) = s.key(&t, "k", json!({})).await;
    let root = bearer(&s.root);
    let verify = format!(r#"{{"key":"{secret}"}}"#);
    let tenant_path = format!("/v1/tenants/{t}");
    let cases: Vec<(&str, &str, Vec<u8>, u16)> = vec![
        ("GET", "/v1/health", Vec::new(), 200),
        ("GET", "/v1/ready", Vec::new(), 200),
        ("GET", "/v1/me", Vec::new(), 200),
        ("GET", "/v1/tenants", Vec::new(), 200),
        ("GET", &tenant_path, Vec::new(), 200),
        ("GET", "/v1/keys?limit=1", Vec::new(), 200),
        ("POST", "/v1/keys/verify", verify.into_bytes(), 200),
        ("GET", "/v1/audit", Vec::new(), 200),
        ("GET", "/openapi.json", Vec::new(), 200),
        ("DELETE", "/v1/health", Vec::new(), 405),
        ("GET", "/console/sign-in", Vec::new(), 200),
    ];
    for (method, target, body, status) in &cases {
        // Each on a new connection: its first request, so the fast path
        // decides.
        let mut conn = Raw::connect(&s).await;
        conn.send(request(
            method,
            target,
            &[
                ("Authorization", &root),
                ("Content-Type", "application/json"),
            ],
            body,
        ))
        .await;
        let r = conn.response_to(method).await;
        assert_eq!(r.status, *status, "{method} {target}: {r:?}");
    }
    assert!(
        up.seen().is_empty(),
        "own paths reached the upstream: {:?}",
        up.seen()
    );
    let mut conn = Raw::connect(&s).await;
    conn.send(get("/v1/healthz")).await;
    assert_eq!(conn.response().await.status, 200);
    assert_eq!(
        up.last().uri,
        "/v1/healthz",
        "everything else is the gateway's"
    );
}

/// `req` with the first `@@` replaced by `bytes` (for values that are not
/// UTF-8).
fn splice(req: Vec<u8>, bytes: &[u8]) -> Vec<u8> {
    let at = find(&req, b"@@").unwrap();
    [&req[..at], bytes, &req[at + 2..]].concat()
}

#[tokio::test]
async fn credential_forms_are_judged_the_same_with_the_fast_path_off() {
    use base64::Engine;
    let up = upstream::start().await;
    let (fast, general) = twins(&up.url).await;
    let t = fast.tenant("Acme").await;
    let (id, secret) = fast.key(&t, "k", json!({})).await;
    let (_, other) = fast.key(&t, "other", json!({})).await;
    let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
    let bearer_good = bearer(&secret);
    let lower = format!("bearer {secret}");
    let spaced = format!("Bearer  {secret}");
    let basic = format!("Basic {}", b64(format!("{id}:{secret}")));
    let basic_wrong_id = format!("Basic {}", b64(format!("key_nope:{secret}")));
    let bearer_other = bearer(&other);
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![("Authorization", &bearer_good)],
        vec![("authorization", &lower)],
        vec![("Authorization", &spaced)],
        vec![("X-API-Key", &secret)],
        vec![("x-api-key", &secret)],
        vec![("Authorization", &basic)],
        vec![("Authorization", &basic_wrong_id)],
        vec![
            ("Authorization", "Bearer clv_bogus"),
            ("Authorization", &bearer_good),
        ],
        vec![
            ("Authorization", &bearer_good),
            ("Authorization", "Bearer clv_bogus"),
        ],
        vec![("X-API-Key", &secret), ("X-API-Key", &secret)],
        vec![
            ("Authorization", "Bearer clv_bogus"),
            ("X-API-Key", &secret),
        ],
        vec![("Authorization", &bearer_good), ("X-API-Key", &other)],
        vec![("Authorization", &bearer_other), ("X-API-Key", &other)],
        vec![("Authorization", "Token abc")],
        vec![("Authorization", "Bearer")],
        vec![("Authorization", "")],
    ];
    let mut requests: Vec<Vec<u8>> = cases
        .iter()
        .map(|h| request("GET", "/api/who", h, b""))
        .collect();
    requests.push(splice(
        request("GET", "/api/who", &[("Authorization", "Bearer @@")], b""),
        b"\xff\xfe",
    ));
    requests.push(splice(
        request("GET", "/api/who", &[("X-API-Key", "@@")], b""),
        b"clv_\x80",
    ));
    for (i, bytes) in requests.iter().enumerate() {
        let (f, g) = both(&fast, &general, bytes, "GET").await;
        assert_same(
            &f,
            &g,
            &format!("case {i}: {}", String::from_utf8_lossy(bytes)),
        );
    }
    // The judgements were not all alike.
    assert!(up.seen().len() >= 2 * 6, "{}", up.seen().len());
}

#[tokio::test]
async fn concurrent_connections_each_get_their_own_responses() {
    // Answers after a delay that differs per request, so responses
    // complete out of order across connections.
    let up = scripted(|req| {
        let n: u64 = req
            .target
            .rsplit('/')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        Act::Later(Duration::from_millis(n * 7 % 23), ok_text(&req.target))
    })
    .await;
    let s = Server::start_with(Backend::Sqlite, config(&up.url, true)).await;
    let addr = authority(&s).to_owned();
    let mut clients = Vec::new();
    for client in 0..12 {
        let addr = addr.clone();
        clients.push(tokio::spawn(async move {
            let mut c = Raw::connect_to(&addr).await;
            for i in 0..8 {
                let target = format!("/public/c{client}/{}", client * 8 + i);
                if i % 2 == 0 {
                    c.send(get(&target)).await;
                    assert_eq!(c.response().await.body, target.as_bytes());
                } else {
                    // Two at once on this connection.
                    let second = format!("{target}0");
                    let mut bytes = get(&target);
                    bytes.extend(get(&second));
                    c.send(&bytes).await;
                    assert_eq!(c.response().await.body, target.as_bytes());
                    assert_eq!(c.response().await.body, second.as_bytes());
                }
            }
        }));
    }
    for c in clients {
        timeout(WAIT * 3, c)
            .await
            .expect("clients finished")
            .unwrap();
    }
    assert_eq!(up.seen().len(), 12 * 12);
}

#[tokio::test]
async fn an_upstream_base_path_prefixes_every_target_the_same_on_both_paths() {
    let up = scripted(|_| Act::Send(ok_text("based"))).await;
    let (fast, general) =
        twins_with(|fast_path| config(&format!("{}/base/", up.url), fast_path)).await;
    for target in [
        "/public/cl",
        "/public/a%20b?q=%2F&x=1",
        "/public/cl?",
        "/public/",
    ] {
        let mut seen = Vec::new();
        for s in [&fast, &general] {
            let mut c = Raw::connect(s).await;
            c.send(get(target)).await;
            assert_eq!(c.response().await.body, b"based", "{target}");
            seen.push(up.last());
        }
        assert_eq!(seen[0].target, format!("/base{target}"), "fast path");
        assert_eq!(seen[0].target, seen[1].target, "(fast, general)");
        assert_eq!(seen[0].all("host"), [up.authority.as_str()]);
        assert_eq!(seen[0].all("host"), seen[1].all("host"));
    }
}

// ---------------------------------------------------------------------------
// Limits of the fast path's own parser: what it cannot hold must still be
// served as the general path serves it.

#[tokio::test]
async fn a_client_connection_header_listing_many_names_strips_every_one() {
    let up = scripted(framing_script).await;
    let (fast, general) = twins(&up.url).await;
    // The ninth name listed in Connection names a header that is present.
    let bytes = request(
        "GET",
        "/public/cl",
        &[
            (
                "Connection",
                "keep-alive, x-a, x-b, x-c, x-d, x-e, x-f, x-g, x-hop",
            ),
            ("X-Hop", "must-not-pass"),
        ],
        b"",
    );
    for (s, name) in [(&general, "general"), (&fast, "fast")] {
        let mut c = Raw::connect(s).await;
        c.send(&bytes).await;
        assert_eq!(c.response().await.status, 200, "{name}");
        let seen = up.last();
        assert!(
            seen.header("x-hop").is_none(),
            "{name} path: a header named in Connection reached the upstream:\n{}",
            seen.head
        );
    }
}

#[tokio::test]
async fn an_upstream_connection_header_listing_many_names_strips_every_one() {
    let up = scripted(framing_script).await;
    let (fast, general) = twins(&up.url).await;
    for (s, name) in [(&general, "general"), (&fast, "fast")] {
        let mut c = Raw::connect(s).await;
        c.send(get("/public/nine-tokens")).await;
        let r = c.response().await;
        assert_eq!(r.status, 200, "{name}");
        assert!(
            r.header("x-hop").is_none(),
            "{name} path: a header named in Connection reached the client: {r:?}"
        );
    }
}

#[tokio::test]
async fn a_response_with_many_headers_is_relayed() {
    let up = scripted(framing_script).await;
    let (fast, general) = twins(&up.url).await;
    let (f, g) = both(&fast, &general, &get("/public/many-headers"), "GET").await;
    // The general path relays it (hyper allows 100 response headers) …
    assert_eq!(g.status, 200, "{g:?}");
    assert_eq!(g.all("x-header-69"), ["69"]);
    // … and so must the fast path.
    assert_eq!(f.status, 200, "{f:?}");
    assert_same(&f, &g, "70 response headers");
}

#[tokio::test]
async fn requests_with_many_or_large_headers_are_served() {
    let up = scripted(framing_script).await;
    let s = Server::start_with(Backend::Sqlite, config(&up.url, true)).await;
    let mut c = Raw::connect(&s).await;
    let names: Vec<String> = (0..80).map(|i| format!("X-Many-{i}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    c.send(request("GET", "/public/cl", &many, b"")).await;
    let r = c.response().await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(up.last().all("x-many-79"), ["v"]);
    let large = "y".repeat(20 * 1024);
    c.send(request("GET", "/public/cl", &[("X-Large", &large)], b""))
        .await;
    let r = c.response().await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(up.last().header("x-large"), Some(large.as_str()));
}

// ---------------------------------------------------------------------------
// 9: graceful shutdown.

#[tokio::test]
async fn shutdown_finishes_requests_in_flight_and_closes_idle_connections() {
    shutdown_in_flight_and_idle(true).await;
}

#[tokio::test]
async fn shutdown_finishes_requests_in_flight_and_closes_idle_connections_with_the_fast_path_off() {
    shutdown_in_flight_and_idle(false).await;
}

async fn shutdown_in_flight_and_idle(fast_path: bool) {
    let up = scripted(framing_script).await;
    let s = Server::start_with(Backend::Sqlite, config(&up.url, fast_path)).await;
    let addr = authority(&s).to_owned();

    // Idle on the fast path, idle after a handover, and never used.
    let mut idle_fast = Raw::connect(&s).await;
    idle_fast.send(get("/public/cl")).await;
    assert_eq!(idle_fast.response().await.status, 200);
    let mut idle_general = Raw::connect(&s).await;
    idle_general.send(get("/v1/health")).await;
    assert_eq!(idle_general.response().await.status, 200);
    let mut unused = Raw::connect(&s).await;

    // A slow request (the upstream takes 300 ms), in flight at shutdown.
    let mut slow = Raw::connect(&s).await;
    slow.send(get("/public/slow")).await;
    up.wait_for("/public/slow").await;
    let stopping = tokio::spawn(s.shutdown());

    let r = slow.response().await;
    assert_eq!(r.status, 200, "fast_path = {fast_path}: {r:?}");
    assert_eq!(r.body, b"worth the wait");
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(slow.end().await, b"");

    let f = fast_path;
    assert_eq!(
        idle_fast.end().await,
        b"",
        "fast_path = {f}: an idle connection is closed"
    );
    assert_eq!(
        idle_general.end().await,
        b"",
        "fast_path = {f}: idle after a handover"
    );
    assert_eq!(
        unused.end().await,
        b"",
        "fast_path = {f}: an unused connection is closed"
    );
    timeout(WAIT, stopping)
        .await
        .expect("shutdown finished")
        .unwrap();

    // Nothing is served any more.
    match timeout(WAIT, TcpStream::connect(&addr)).await.unwrap() {
        Err(_) => {}
        Ok(tcp) => {
            let mut c = Raw {
                tcp,
                buf: Vec::new(),
                wire: Vec::new(),
            };
            c.send(get("/public/cl")).await;
            assert_eq!(c.end().await, b"", "a stopped server answers nothing");
        }
    }
}

/// A client sent part of a request head and then nothing: shutdown closes
/// its connection rather than waiting for the rest. (The general stack
/// waits too, with `fast_path = false`: hyper's graceful shutdown treats a
/// started head as a request in flight, and no header read timeout is set.)
#[tokio::test]
async fn shutdown_does_not_wait_for_a_half_sent_head() {
    let up = scripted(framing_script).await;
    let s = Server::start_with(Backend::Sqlite, config(&up.url, true)).await;
    let mut c = Raw::connect(&s).await;
    c.send(b"GET /public/cl HTTP/1.1\r\nHost: keyward.test\r\nX-Half: ")
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let stopped = timeout(WAIT, s.shutdown()).await;
    assert!(stopped.is_ok(), "shutdown still waits after {WAIT:?}");
    assert_eq!(c.end().await, b"");
}
