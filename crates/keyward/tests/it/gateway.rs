//! Gateway mode over real HTTP with a recording fixture upstream.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::kit::{config_from_toml, Backend, Server};
use crate::upstream;

fn config(upstream: &str) -> keyward_server::config::Config {
    config_from_toml(&format!(
        r#"
[keys]
scopes = ["vox:read", "vox:calls:read", "vox:calls:create"]

[gateway]
upstream = "{upstream}"
timeout_ms = 500
max_body_bytes = 4096

[[routes]]
methods = ["GET"]
path = "/v1/vox/health"
respond = {{ message = "Vox API ready", data = {{ businessId = "{{tenant_id}}", environment = "{{environment}}", keyId = "{{key_id}}", scopes = "{{scopes}}" }} }}

[[routes]]
methods = ["POST"]
path = "/v1/vox/calls"
scopes = ["vox:calls:create"]

[[routes]]
path = "/v1/voice/accounts/{{auth_id}}/calls"
tenant_param = "auth_id"

[[routes]]
methods = ["GET"]
path = "/v1/live-only"
environments = ["live"]

[[routes]]
methods = ["GET"]
path = "/slow"

[[routes]]
methods = ["GET"]
path = "/public/{{*rest}}"
auth = false
"#
    ))
}

#[tokio::test]
async fn forwards_with_identity_and_without_credentials() {
    let up = upstream::start().await;
    let s = Server::start_with(Backend::Sqlite, config(&up.url)).await;
    let t = s.tenant("Acme").await;
    let (id, secret) = s
        .key(
            &t,
            "agent",
            json!({ "scopes": ["vox:read", "vox:calls:create"], "owner": "ada@example.com" }),
        )
        .await;

    // A respond route: the voice-agent health check, from keyward itself.
    let r = s.get("/v1/vox/health", &secret).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        r.body,
        json!({ "message": "Vox API ready", "data": { "businessId": t, "environment": "test", "keyId": id, "scopes": ["vox:calls:create", "vox:read"] } })
    );
    assert!(
        up.seen().is_empty(),
        "respond routes never reach the upstream"
    );

    // A forwarded route, with forged identity headers and the key in both places.
    let res = s
        .http
        .post(s.url("/v1/vox/calls?x=1"))
        .bearer_auth(&secret)
        .header("X-API-Key", &secret)
        .header("X-Keyward-Key-Id", "key_forged")
        .header("X-Keyward-Tenant-Id", "ten_forged")
        .header("X-Keyward-Scopes", "*")
        .header("Connection", "keep-alive, x-drop-me")
        .header("X-Drop-Me", "1")
        .header("Idempotency-Key", "9b2e1c7a-quickstart-001")
        .json(&json!({ "customer_phone": "+2348012345678" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers().get("x-secret-hop").is_none(),
        "hop-by-hop headers named in Connection are stripped"
    );
    let seen = up.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.uri, "/v1/vox/calls?x=1");
    let h = &seen.headers;
    assert_eq!(h["x-keyward-key-id"], id.as_str());
    assert_eq!(h["x-keyward-tenant-id"], t.as_str());
    assert_eq!(h["x-keyward-environment"], "test");
    assert_eq!(h["x-keyward-scopes"], "vox:calls:create vox:read");
    assert_eq!(h["x-keyward-owner"], "ada@example.com");
    assert_eq!(h.get_all("x-keyward-key-id").iter().count(), 1);
    assert!(h.get("authorization").is_none());
    assert!(h.get("x-api-key").is_none());
    assert!(h.get("x-drop-me").is_none());
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["forwarded"], "for=127.0.0.1;proto=http");
    assert_eq!(h["idempotency-key"], "9b2e1c7a-quickstart-001");
    assert_eq!(&seen.body[..], br#"{"customer_phone":"+2348012345678"}"#);
    let all = format!("{:?}", up.seen());
    assert!(!all.contains(&secret), "the upstream saw the secret");

    // A client's request id is kept and passed on.
    let res = s
        .http
        .get(s.url("/public/x"))
        .header("X-Request-Id", "trace-abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "trace-abc-123");
    assert_eq!(up.last().headers["x-request-id"], "trace-abc-123");

    // Denials never reach the upstream.
    let before = up.seen().len();
    let big = "x".repeat(5000);
    let r = s
        .http
        .post(s.url("/v1/vox/calls"))
        .bearer_auth(&secret)
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let (_, reader) = s.key(&t, "reader", json!({ "scopes": ["vox:read"] })).await;
    let r = s.post("/v1/vox/calls", &reader, json!({})).await;
    r.assert_problem(403, "insufficient_scope");
    assert_eq!(r.body["missing_scopes"], json!(["vox:calls:create"]));
    s.call(Method::POST, "/v1/vox/calls", None, Some(json!({})))
        .await
        .assert_problem(401, "missing_credentials");
    s.post("/v1/vox/calls", "clv_bogus", json!({}))
        .await
        .assert_problem(401, "invalid_api_key");
    // Unmatched paths are denied by default.
    s.get("/v1/vox/unknown", &secret)
        .await
        .assert_problem(404, "not_found");
    s.get("/v1/live-only", &secret)
        .await
        .assert_problem(403, "environment_not_allowed");
    assert_eq!(up.seen().len(), before);
}

#[tokio::test]
async fn account_scoped_paths_belong_to_the_key_tenant() {
    let up = upstream::start().await;
    let s = Server::start_with(Backend::Sqlite, config(&up.url)).await;
    let r = s
        .post(
            "/v1/tenants",
            &s.root,
            json!({ "id": "AC123456", "name": "Telephony Co" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    s.post(
        "/v1/tenants",
        &s.root,
        json!({ "id": "AC123456", "name": "again" }),
    )
    .await
    .assert_problem(409, "tenant_exists");
    let other = s.tenant("Other").await;
    let (_, secret) = s.key("AC123456", "prod", json!({})).await;
    let (_, other_secret) = s.key(&other, "prod", json!({})).await;

    let ok = s.get("/v1/voice/accounts/AC123456/calls", &secret).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert_eq!(up.last().uri, "/v1/voice/accounts/AC123456/calls");
    s.get("/v1/voice/accounts/AC123456/calls", &other_secret)
        .await
        .assert_problem(404, "not_found");
    s.get("/v1/voice/accounts/AC999999/calls", &secret)
        .await
        .assert_problem(404, "not_found");
    // Public routes need no key.
    let p = s.call(Method::GET, "/public/docs/a.txt", None, None).await;
    assert_eq!(p.status, StatusCode::OK);
    assert_eq!(up.last().uri, "/public/docs/a.txt");
}

#[tokio::test]
async fn upstream_down_and_slow_are_502_and_504() {
    let up = upstream::start().await;
    let s = Server::start_with(Backend::Sqlite, config(&up.url)).await;
    let t = s.tenant("t").await;
    let (_, secret) = s.key(&t, "k", json!({})).await;
    s.get("/slow", &secret)
        .await
        .assert_problem(504, "upstream_timeout");

    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let s2 = Server::start_with(Backend::Sqlite, config(&dead)).await;
    let t = s2.tenant("t").await;
    let (_, secret) = s2.key(&t, "k", json!({})).await;
    s2.get("/v1/voice/accounts/x/calls", &secret)
        .await
        .assert_problem(404, "not_found");
    s2.post("/v1/vox/calls", &secret, json!({}))
        .await
        .assert_problem(403, "insufficient_scope");
    let r = s2.get("/public/x", &secret).await;
    r.assert_problem(502, "upstream_unavailable");

    // The upstream comes back on the same address: the gateway recovers.
    let back = upstream::start_on(dead.trim_start_matches("http://")).await;
    let r = s2.get("/public/x", &secret).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(back.last().uri, "/public/x");

    // An upstream that accepts and then drops the connection: 502, no hang.
    let resetter = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let reset_url = format!("http://{}", resetter.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((sock, _)) = resetter.accept().await {
            drop(sock);
        }
    });
    let s3 = Server::start_with(Backend::Sqlite, config(&reset_url)).await;
    let r = s3.call(Method::GET, "/public/x", None, None).await;
    r.assert_problem(502, "upstream_unavailable");
}

#[test]
fn bad_routes_are_startup_errors_naming_the_route() {
    use keyward_server::config::Settings;
    let cases = [
        ("[[routes]]\npath = \"/a\"\nscopes = [\"nope:x\"]\n[gateway]\nupstream = \"http://127.0.0.1:1\"\n", "routes[0] (/a)"),
        ("[[routes]]\npath = \"a/{x\"\n[gateway]\nupstream = \"http://127.0.0.1:1\"\n", "routes[0]"),
        ("[[routes]]\npath = \"/a\"\n", "gateway.upstream is not set"),
        ("[gateway]\nupstream = \"ftp://x\"\n", "gateway.upstream"),
        (
            "[gateway]\nupstream = \"http://127.0.0.1:1\"\n[[routes]]\npath = \"/a/{x}\"\n[[routes]]\npath = \"/a/{y}\"\n",
            "routes[1] (/a/{y}): overlaps routes[0]",
        ),
        ("[gateway]\nupstream = \"http://127.0.0.1:1\"\n[[routes]]\npath = \"/a/{x}\"\ntenant_param = \"y\"\n", "tenant_param"),
    ];
    for (toml, expected) in cases {
        // The configuration parses; compiling its policy refuses it.
        let settings = Settings::from_config(config_from_toml(toml)).unwrap();
        let err = settings.policy().err().unwrap().to_string();
        assert!(err.contains(expected), "{toml}\n→ {err}");
    }
}

#[tokio::test]
async fn speaks_h2c_to_the_upstream_when_configured() {
    let up = upstream::start().await;
    let mut c = config(&up.url);
    c.gateway.upstream_protocol = keyward_server::config::UpstreamProtocol::H2c;
    let s = Server::start_with(Backend::Sqlite, c).await;
    let t = s.tenant("Acme").await;
    let (id, secret) = s
        .key(&t, "agent", json!({ "scopes": ["vox:calls:create"] }))
        .await;
    // Several requests at once share the one HTTP/2 connection.
    let mut calls = Vec::new();
    for i in 0..8 {
        let req = s
            .http
            .post(s.url("/v1/vox/calls"))
            .bearer_auth(&secret)
            .json(&json!({ "n": i }));
        calls.push(tokio::spawn(
            async move { req.send().await.unwrap().status() },
        ));
    }
    for c in calls {
        assert_eq!(c.await.unwrap(), StatusCode::OK);
    }
    let seen = up.seen();
    assert_eq!(seen.len(), 8);
    for r in &seen {
        assert_eq!(r.version, axum::http::Version::HTTP_2);
        assert_eq!(r.headers["x-keyward-key-id"], id.as_str());
        assert!(r.headers.get("authorization").is_none());
    }
}
