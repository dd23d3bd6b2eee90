//! The front door's path and header rules, black box: dot segments in
//! every spelling, encoded separators, tenant parameters, method-override
//! headers and the Host rule, on both gateway paths, against the recording
//! upstream. Requests are raw bytes over TCP, since an HTTP client library
//! would resolve the dot segments itself.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::kit::{config_from_toml, Backend, Server};
use crate::upstream;

fn config(upstream: &str, fast_path: bool) -> keyward_server::config::Config {
    let mut c = config_from_toml(&format!(
        r#"
[keys]
scopes = ["vox:read", "admin:all"]

[gateway]
upstream = "{upstream}"
timeout_ms = 3000

[[routes]]
path = "/v1/admin/{{*rest}}"
scopes = ["admin:all"]

[[routes]]
path = "/v1/voice/accounts/{{auth_id}}/{{*rest}}"
tenant_param = "auth_id"

[[routes]]
methods = ["GET"]
path = "/v1/reports/{{*rest}}"

[[routes]]
methods = ["GET"]
path = "/v1/legacy/{{*rest}}"
allow_method_override = true

[[routes]]
path = "/v1/{{*rest}}"
scopes = ["vox:read"]

[[routes]]
path = "/public/{{*rest}}"
auth = false
"#
    ));
    c.gateway.fast_path = fast_path;
    c
}

/// One raw request on a fresh connection (`Connection: close`), its
/// status and body.
async fn raw(s: &Server, head: &str) -> (u16, Value) {
    let addr = s.base.trim_start_matches("http://");
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut out))
        .await
        .expect("the server answered in time")
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status: u16 = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        // The upstream fixture's JSON, chunked by hyper: take the JSON out.
        body.find('{')
            .and_then(|a| body.rfind('}').map(|b| &body[a..=b]))
            .unwrap_or("")
            .to_owned()
    } else {
        body.to_owned()
    };
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn get(target: &str, key: Option<&str>) -> String {
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    format!("GET {target} HTTP/1.1\r\nHost: gw.test\r\n{auth}Connection: close\r\n\r\n")
}

struct Case {
    server: Server,
    up: upstream::Running,
    tenant: String,
    /// `vox:read` only.
    reader: String,
    /// `vox:read` and `admin:all`.
    admin: String,
}

async fn case(fast_path: bool) -> Case {
    let up = upstream::start().await;
    let server = Server::start_with(Backend::Sqlite, config(&up.url, fast_path)).await;
    let tenant = server.tenant("Acme").await;
    let (_, reader) = server
        .key(&tenant, "reader", json!({ "scopes": ["vox:read"] }))
        .await;
    let (_, admin) = server
        .key(
            &tenant,
            "admin",
            json!({ "scopes": ["vox:read", "admin:all"] }),
        )
        .await;
    Case {
        server,
        up,
        tenant,
        reader,
        admin,
    }
}

/// Every spelling of `/v1/vox/../admin/x` the issue names, and more.
const TO_ADMIN: &[&str] = &[
    "/v1/vox/../admin/x",
    "/v1/vox/%2e%2e/admin/x",
    "/v1/vox/%2E%2E/admin/x",
    "/v1/vox/.%2e/admin/x",
    "/v1/vox/%2e./admin/x",
    "/v1/vox/./../admin/x",
    "/v1/./admin/x",
    "/v1//admin/x",
    "/v1/%61dmin/x",
    "/v1/vox/calls/../../admin/x",
];

/// Spellings that are refused outright (400 `invalid_path`).
const REFUSED: &[&str] = &[
    "/v1/vox/%2E%2E%2Fadmin/x",
    "/v1/vox/..%2fadmin/x",
    "/v1/vox/..%2Fadmin/x",
    "/v1/vox/..%5cadmin/x",
    "/v1/vox/..\\admin/x",
    "/v1/vox/..;/admin/x",
    "/v1/admin;jsessionid=1/x",
    "/v1/vox/%252e%252e/admin/x",
    "/v1/vox/%00/x",
    "/v1/vox/%zz",
];

async fn dot_segments_never_reach_a_path_the_route_did_not_authorise(fast_path: bool) {
    let c = case(fast_path).await;
    for target in TO_ADMIN {
        // Without admin:all: the admin route matched, and refused.
        let (status, body) = raw(&c.server, &get(target, Some(&c.reader))).await;
        assert_eq!(status, 403, "{target}: {body}");
        assert_eq!(body["code"], "insufficient_scope", "{target}: {body}");
        assert!(c.up.seen().is_empty(), "{target} reached the upstream");

        // No key at all, through the public route.
        let public = format!(
            "/public/..{}",
            target.trim_start_matches("/v1").replacen('/', "/v1/", 1)
        );
        let (status, body) = raw(&c.server, &get(&public, None)).await;
        assert!(status == 401 || status == 403, "{public}: {status} {body}");
        assert!(c.up.seen().is_empty(), "{public} reached the upstream");
    }
    // With admin:all the request is forwarded, to exactly the path that
    // was matched.
    for target in TO_ADMIN {
        let (status, body) = raw(&c.server, &get(target, Some(&c.admin))).await;
        assert_eq!(status, 200, "{target}: {body}");
        assert_eq!(c.up.last().uri, "/v1/admin/x", "{target}");
    }
    // A query survives the rewrite untouched.
    let (status, _) = raw(
        &c.server,
        &get("/v1/x/../admin/y?a=%2e%2e&b=1", Some(&c.admin)),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(c.up.last().uri, "/v1/admin/y?a=%2e%2e&b=1");
    let forwarded = c.up.seen().len();
    for target in REFUSED {
        for key in [Some(c.admin.as_str()), None] {
            let (status, body) = raw(&c.server, &get(target, key)).await;
            assert_eq!(status, 400, "{target}: {body}");
            assert_eq!(body["code"], "invalid_path", "{target}: {body}");
        }
    }
    assert_eq!(
        c.up.seen().len(),
        forwarded,
        "a refused path reached the upstream"
    );
}

#[tokio::test]
async fn dot_segments_never_bypass_a_route_on_the_fast_path() {
    dot_segments_never_reach_a_path_the_route_did_not_authorise(true).await;
}

#[tokio::test]
async fn dot_segments_never_bypass_a_route_on_the_general_path() {
    dot_segments_never_reach_a_path_the_route_did_not_authorise(false).await;
}

async fn tenant_params_are_matched_after_normalisation(fast_path: bool) {
    let c = case(fast_path).await;
    let other = c.server.tenant("Other").await;
    let own = &c.tenant;
    // Into another tenant's account path through a dot segment: 404 as a
    // foreign tenant is, and nothing forwarded.
    for target in [
        format!("/v1/voice/accounts/{own}/../{other}/calls"),
        format!("/v1/voice/accounts/{own}/%2e%2e/{other}/calls"),
        format!("/v1/voice/accounts/{own}/./../{other}/calls"),
        format!("/v1/voice/accounts//{other}/calls"),
    ] {
        let (status, body) = raw(&c.server, &get(&target, Some(&c.reader))).await;
        assert_eq!(status, 404, "{target}: {body}");
        assert!(c.up.seen().is_empty(), "{target} reached the upstream");
    }
    // The key's own tenant, spelled with escapes and dots, is its own.
    let spelled: String = own.bytes().map(|b| format!("%{b:02x}")).collect();
    for target in [
        format!("/v1/voice/accounts/{spelled}/calls"),
        format!("/v1/voice/accounts/{other}/../{own}/calls"),
    ] {
        let (status, body) = raw(&c.server, &get(&target, Some(&c.reader))).await;
        assert_eq!(status, 200, "{target}: {body}");
        assert_eq!(c.up.last().uri, format!("/v1/voice/accounts/{own}/calls"));
    }
}

#[tokio::test]
async fn tenant_params_use_the_normal_path_on_the_fast_path() {
    tenant_params_are_matched_after_normalisation(true).await;
}

#[tokio::test]
async fn tenant_params_use_the_normal_path_on_the_general_path() {
    tenant_params_are_matched_after_normalisation(false).await;
}

async fn method_override_headers_are_dropped_unless_allowed(fast_path: bool) {
    let c = case(fast_path).await;
    let head = |path: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: gw.test\r\nAuthorization: Bearer {}\r\n\
             X-HTTP-Method-Override: DELETE\r\nX-HTTP-Method: DELETE\r\n\
             X-Method-Override: DELETE\r\nConnection: close\r\n\r\n",
            c.reader
        )
    };
    let (status, body) = raw(&c.server, &head("/v1/reports/1")).await;
    assert_eq!(status, 200, "{body}");
    let seen = c.up.last();
    for name in [
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    ] {
        assert!(seen.headers.get(name).is_none(), "{name} was forwarded");
    }
    // A route that opts in passes them on.
    let (status, body) = raw(&c.server, &head("/v1/legacy/1")).await;
    assert_eq!(status, 200, "{body}");
    let seen = c.up.last();
    for name in [
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    ] {
        assert_eq!(seen.headers.get(name).unwrap(), "DELETE", "{name}");
    }
}

#[tokio::test]
async fn method_override_headers_are_dropped_on_the_fast_path() {
    method_override_headers_are_dropped_unless_allowed(true).await;
}

#[tokio::test]
async fn method_override_headers_are_dropped_on_the_general_path() {
    method_override_headers_are_dropped_unless_allowed(false).await;
}

async fn http11_needs_exactly_one_host(fast_path: bool) {
    let c = case(fast_path).await;
    let key = &c.reader;
    for head in [
        format!("GET /v1/x HTTP/1.1\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"),
        format!(
            "GET /v1/x HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
        ),
        "GET /v1/health HTTP/1.1\r\nConnection: close\r\n\r\n".to_owned(),
        "GET /public/x HTTP/1.1\r\nHost: a\r\nHost: a\r\nConnection: close\r\n\r\n".to_owned(),
    ] {
        let (status, body) = raw(&c.server, &head).await;
        assert_eq!(status, 400, "{head:?}: {body}");
        assert_eq!(body["code"], "invalid_host", "{head:?}: {body}");
    }
    assert!(c.up.seen().is_empty());
    // HTTP/1.0 needs none; one is fine.
    let (status, _) = raw(&c.server, "GET /public/x HTTP/1.0\r\n\r\n").await;
    assert_eq!(status, 200);
    let (status, _) = raw(&c.server, &get("/public/x", None)).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn http11_needs_exactly_one_host_on_the_fast_path() {
    http11_needs_exactly_one_host(true).await;
}

#[tokio::test]
async fn http11_needs_exactly_one_host_on_the_general_path() {
    http11_needs_exactly_one_host(false).await;
}

#[tokio::test]
async fn keywards_own_api_answers_on_the_normal_path_too() {
    let c = case(true).await;
    let root = c.server.root.clone();
    // `/v1/tenants` spelled with a dot segment reaches the same handler,
    // with the same authorisation.
    let (status, body) = raw(&c.server, &get("/v1/x/../tenants", Some(&root))).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["data"].is_array() || body["items"].is_array(),
        "{body}"
    );
    let (status, body) = raw(&c.server, &get("/v1/x/../tenants", Some(&c.reader))).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = raw(&c.server, &get("/v1/%2e%2e%2ftenants", Some(&root))).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "invalid_path");
    assert!(c.up.seen().is_empty());
}
