//! Messages that follow the deployment: 401 challenges for the schemes it
//! accepts (on the API and on both gateway paths), hints that name its ways
//! of presenting a key and no other, titles spelled as words people use,
//! and a revocation that is idempotent and says so.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::kit::{config_from_toml, Backend, Server};

fn challenges(r: &crate::kit::Reply) -> Vec<String> {
    r.headers
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

fn deployment(schemes: &str, fast_path: bool) -> keyward_server::config::Config {
    let mut c = config_from_toml(&format!(
        r#"
[keys]
schemes = {schemes}
header = "X-Vox-Key"

[[routes]]
methods = ["GET"]
path = "/hello"
respond = {{ key = "{{key_id}}" }}
"#
    ));
    c.gateway.fast_path = fast_path;
    c
}

#[tokio::test]
async fn every_scheme_on_challenges_bearer_and_basic_and_hints_all_three() {
    let s = Server::start().await;
    let r = s.call(Method::GET, "/v1/me", None, None).await;
    r.assert_problem(401, "missing_credentials");
    assert_eq!(
        challenges(&r),
        [
            "Bearer realm=\"keyward\"",
            "Basic realm=\"keyward\", charset=\"UTF-8\""
        ]
    );
    let detail = r.body["detail"].as_str().unwrap();
    assert!(detail.contains("Authorization: Bearer <key>"), "{detail}");
    assert!(detail.contains("`X-API-Key` header"), "{detail}");
    assert!(detail.contains("HTTP Basic"), "{detail}");
    let r = s.get("/v1/me", "kw_test_nonsense").await;
    r.assert_problem(401, "invalid_api_key");
    assert_eq!(r.body["title"], "Invalid API key");
    assert!(challenges(&r)[0].contains("error_description=\"invalid_api_key\""));
    s.shutdown().await;
}

#[tokio::test]
async fn a_basic_only_deployment_challenges_basic_on_every_path() {
    for fast_path in [true, false] {
        let s = Server::start_with(Backend::Sqlite, deployment(r#"["basic"]"#, fast_path)).await;
        for path in ["/v1/me", "/hello"] {
            let r = s.call(Method::GET, path, None, None).await;
            r.assert_problem(401, "missing_credentials");
            assert_eq!(
                challenges(&r),
                ["Basic realm=\"keyward\", charset=\"UTF-8\""],
                "{path} (fast path {fast_path})"
            );
            let detail = r.body["detail"].as_str().unwrap();
            assert!(detail.contains("HTTP Basic"), "{detail}");
            assert!(!detail.contains("Bearer"), "{detail}");
            assert!(!detail.contains("X-Vox-Key"), "{detail}");
        }
        // The client answers the challenge, and gets in.
        let t = s.tenant("Acme").await;
        let (id, secret) = s.key(&t, "k", json!({})).await;
        let res = s
            .http
            .get(format!("{}/hello", s.base))
            .basic_auth(&id, Some(&secret))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        s.shutdown().await;
    }
}

#[tokio::test]
async fn a_header_only_deployment_names_its_header_in_the_hint_and_the_challenge() {
    let s = Server::start_with(Backend::Sqlite, deployment(r#"["header"]"#, true)).await;
    let r = s.call(Method::GET, "/hello", None, None).await;
    r.assert_problem(401, "missing_credentials");
    assert_eq!(
        challenges(&r),
        ["ApiKey realm=\"keyward\", header=\"X-Vox-Key\""]
    );
    assert_eq!(
        r.body["detail"],
        "No API key was presented. Send it in the `X-Vox-Key` header."
    );
    // A key in the query string: refused, and told the one way that works.
    let t = s.tenant("Acme").await;
    let (_, secret) = s.key(&t, "k", json!({})).await;
    let r = s
        .call(Method::GET, &format!("/hello?api_key={secret}"), None, None)
        .await;
    r.assert_problem(400, "credentials_misplaced");
    let detail = r.body["detail"].as_str().unwrap();
    assert!(
        detail.ends_with("Send it in the `X-Vox-Key` header."),
        "{detail}"
    );
    assert!(!detail.contains("Bearer"), "{detail}");
    s.shutdown().await;
}

#[tokio::test]
async fn titles_read_as_words() {
    let s = Server::start().await;
    let t = s.tenant("Acme").await;
    let (_, secret) = s
        .key(&t, "office", json!({ "ip_allowlist": ["10.0.0.0/8"] }))
        .await;
    let r = s.get("/v1/me", &secret).await;
    r.assert_problem(403, "ip_not_allowed");
    assert_eq!(r.body["title"], "IP not allowed");
    s.shutdown().await;
}

#[tokio::test]
async fn revoking_twice_changes_and_audits_once_and_says_so() {
    let s = Server::start().await;
    let t = s.tenant("Acme").await;
    let (id, _) = s.key(&t, "k", json!({})).await;
    let first = s
        .post(
            &format!("/v1/keys/{id}/revoke"),
            &s.root,
            json!({"reason": "leaked"}),
        )
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert!(first.headers.get("keyward-already-revoked").is_none());
    s.clock.advance_seconds(5);
    let second = s
        .post(
            &format!("/v1/keys/{id}/revoke"),
            &s.root,
            json!({"reason": "again"}),
        )
        .await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    assert_eq!(second.headers["keyward-already-revoked"], "true");
    // Nothing changed: the first revocation's time and reason stand.
    assert_eq!(second.body["revoked_at"], first.body["revoked_at"]);
    assert_eq!(second.body["status"], "revoked");
    let audit = s.get("/v1/audit?limit=100", &s.root).await;
    assert_eq!(audit.status, StatusCode::OK, "{}", audit.body);
    let revocations = audit.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "key.revoked" && e["target"] == id.as_str())
        .count();
    assert_eq!(revocations, 1, "{}", audit.body);
    s.shutdown().await;
}
