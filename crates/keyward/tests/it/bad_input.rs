//! Bad input gets a typed 4xx problem with a code: never a 500 or a panic.

use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::kit::Server;

#[tokio::test]
async fn bodies_fields_and_queries() {
    let s = Server::start().await;
    let t = s.tenant("t").await;
    let key = |extra: serde_json::Value| {
        let mut b = json!({ "tenant_id": t, "name": "k", "environment": "test" });
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        b
    };

    // Oversized body.
    let big = "x".repeat(200 * 1024);
    let r = s.post("/v1/keys", &s.root, json!({ "name": big })).await;
    r.assert_problem(413, "payload_too_large");

    // Malformed JSON, wrong types, unknown fields.
    let raw = |body: &'static str| {
        s.http
            .post(s.url("/v1/keys"))
            .bearer_auth(&s.root)
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
    };
    for body in [
        "{",
        "[]",
        "null",
        "{\"name\": 5, \"environment\": \"test\"}",
        "{\"name\":\"a\",\"environment\":\"test\",\"scopes\":\"vox:read\"}",
    ] {
        let r = raw(body).await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{body}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["code"], "invalid_body");
    }
    let r = s
        .post("/v1/keys", &s.root, key(json!({ "colour": "red" })))
        .await;
    r.assert_problem(400, "invalid_body");
    assert!(r.body["detail"].as_str().unwrap().contains("colour"));

    // No JSON content type.
    let r = s
        .http
        .post(s.url("/v1/keys"))
        .bearer_auth(&s.root)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // Field validation: every problem reported at once, each with a code.
    let r = s
        .post(
            "/v1/keys",
            &s.root,
            key(json!({
                "name": "",
                "environment": "staging",
                "scopes": ["vox:read", "vox:delete", "not a scope"],
                "ip_allowlist": ["10.0.0.0/8", "10.0.0.0/33", "10.1.2.3/8", "example.com"],
                "expires_at": "2001-01-01T00:00:00Z",
                "metadata": [1, 2],
                "credit_cap": -1,
            })),
        )
        .await;
    r.assert_problem(422, "validation_failed");
    let codes: Vec<(String, String)> = r.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["field"].as_str().unwrap().to_owned(),
                e["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for expected in [
        ("name", "invalid"),
        ("environment", "unknown_environment"),
        ("scopes[1]", "unknown_scope"),
        ("scopes[2]", "invalid"),
        ("ip_allowlist[1]", "invalid_cidr"),
        ("ip_allowlist[2]", "invalid_cidr"),
        ("ip_allowlist[3]", "invalid_cidr"),
        ("expires_at", "in_past"),
        ("metadata", "invalid"),
        ("credit_cap", "out_of_range"),
    ] {
        assert!(
            codes.contains(&(expected.0.to_owned(), expected.1.to_owned())),
            "missing {expected:?} in {codes:?}"
        );
    }
    let r = s
        .post(
            "/v1/keys",
            &s.root,
            key(json!({ "expires_at": "next tuesday" })),
        )
        .await;
    r.assert_problem(422, "validation_failed");
    let r = s
        .post(
            "/v1/keys",
            &s.root,
            key(json!({ "metadata": { "blob": "x".repeat(5000) } })),
        )
        .await;
    assert_eq!(r.body["errors"][0]["code"], "too_large");

    // Duplicate names.
    s.key(&t, "dup", json!({})).await;
    s.post("/v1/keys", &s.root, key(json!({ "name": "dup" })))
        .await
        .assert_problem(409, "name_taken");

    // Queries.
    s.get("/v1/keys?limit=0", &s.root)
        .await
        .assert_problem(422, "validation_failed");
    s.get("/v1/keys?limit=101", &s.root)
        .await
        .assert_problem(422, "validation_failed");
    s.get("/v1/keys?limit=ten", &s.root)
        .await
        .assert_problem(400, "invalid_query");
    s.get("/v1/keys?cursor=%%%", &s.root)
        .await
        .assert_problem(400, "invalid_cursor");
    s.get("/v1/keys?cursor=bm9wZQ", &s.root)
        .await
        .assert_problem(400, "invalid_cursor");
    s.get("/v1/keys?status=sleepy", &s.root)
        .await
        .assert_problem(422, "validation_failed");
    s.get("/v1/keys/key_doesnotexist", &s.root)
        .await
        .assert_problem(404, "not_found");
    s.get("/v1/tenants/ten_nope", &s.root)
        .await
        .assert_problem(404, "not_found");
    s.call(Method::PUT, "/v1/keys", Some(&s.root), None)
        .await
        .assert_problem(405, "method_not_allowed");
    s.get("/v2/anything", &s.root)
        .await
        .assert_problem(404, "not_found");

    // Verify input.
    s.post(
        "/v1/keys/verify",
        &s.root,
        json!({ "key": "x", "ip": "999.1.1.1" }),
    )
    .await
    .assert_problem(422, "validation_failed");
    s.post(
        "/v1/keys/verify",
        &s.root,
        json!({ "key": "x", "scopes": ["bad scope"] }),
    )
    .await
    .assert_problem(422, "validation_failed");
    s.post("/v1/keys/verify", &s.root, json!({ "scopes": [] }))
        .await
        .assert_problem(400, "invalid_body");
    let v = s.verify(&"k".repeat(10_000), json!({})).await;
    assert_eq!(v["code"], "invalid_api_key");

    // Rotate with an absurd grace.
    let (id, _) = s.key(&t, "r", json!({})).await;
    s.post(
        &format!("/v1/keys/{id}/rotate"),
        &s.root,
        json!({ "grace_seconds": 99999999 }),
    )
    .await
    .assert_problem(422, "validation_failed");
    s.post(
        &format!("/v1/keys/{id}/rotate"),
        &s.root,
        json!({ "grace_seconds": -5 }),
    )
    .await
    .assert_problem(400, "invalid_body");
}

#[tokio::test]
async fn malformed_credentials_and_headers() {
    let s = Server::start().await;
    let t = s.tenant("t").await;
    let (_, secret) = s.key(&t, "k", json!({})).await;
    let send = |value: HeaderValue| {
        s.http
            .get(s.url("/v1/me"))
            .header(AUTHORIZATION, value)
            .send()
    };
    for bad in [
        HeaderValue::from_bytes(b"Bearer \xff\xfe\xfd").unwrap(),
        HeaderValue::from_bytes(b"Bearer kw_test_\xc3\x28").unwrap(),
        HeaderValue::from_static("Bearer"),
        HeaderValue::from_static("Bearer "),
        HeaderValue::from_static("Basic !!!not-base64"),
        HeaderValue::from_static("Basic bm9jb2xvbg=="),
        HeaderValue::from_static("Digest abc"),
        HeaderValue::from_str(&format!("Bearer {}", &secret[..20])).unwrap(),
        HeaderValue::from_str(&format!("Bearer {secret}x")).unwrap(),
        HeaderValue::from_str(&format!("Bearer {}", secret.to_uppercase())).unwrap(),
    ] {
        let r = send(bad.clone()).await.unwrap();
        assert!(
            r.status() == StatusCode::UNAUTHORIZED,
            "{bad:?} answered {}",
            r.status()
        );
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(
            ["invalid_api_key", "missing_credentials"].contains(&body["code"].as_str().unwrap()),
            "{body}"
        );
    }
    let r = s
        .http
        .get(s.url("/v1/me"))
        .header("X-API-Key", HeaderValue::from_bytes(b"\xff\xff").unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // A key in a cookie is refused too.
    let r = s
        .http
        .get(s.url("/v1/me"))
        .header("Cookie", format!("api_key={secret}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}
