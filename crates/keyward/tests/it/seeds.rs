//! The five seed documents, reproduced by configuration alone: each test
//! loads `examples/<name>/keyward.toml`, points it at the fixture upstream,
//! and performs the document's own requests (host changed) against it.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::kit::{Backend, Server};
use crate::upstream;

async fn example(name: &str) -> (Server, upstream::Running) {
    let up = upstream::start().await;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../../examples/{name}/keyward.toml"));
    let mut config =
        keyward_server::config::Config::load(Some(&path), Vec::<(String, String)>::new()).unwrap();
    config.gateway.upstream = Some(up.url.clone());
    config.usage.flush_interval_ms = 50;
    config.usage.counts_interval_ms = 50;
    (Server::start_with(Backend::Sqlite, config).await, up)
}

#[tokio::test]
async fn voice_agent_quickstart() {
    let (s, up) = example("voice-agent").await;
    let business = s.tenant("Cloove Demo").await;
    // "Create key, choose the Test environment, and select the scopes you need."
    let (key_id, secret) = s
        .key(&business, "quickstart", json!({ "environment": "test", "scopes": ["vox:read", "vox:calls:read", "vox:calls:create"] }))
        .await;
    assert!(secret.starts_with("clv_test_sk_"));

    // curl https://api.clooveai.com/v1/vox/health -H "Authorization: Bearer clv_test_sk_…"
    let health = s.get("/v1/vox/health", &secret).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(
        health.body,
        json!({ "message": "Vox API ready", "data": { "businessId": business, "environment": "test", "keyId": key_id } })
    );

    // GET /v1/vox/numbers, GET /v1/vox/agents, then queue a call with an Idempotency-Key.
    assert_eq!(
        s.get("/v1/vox/numbers", &secret).await.status,
        StatusCode::OK
    );
    assert_eq!(
        s.get("/v1/vox/agents", &secret).await.status,
        StatusCode::OK
    );
    let call = json!({
        "customer_phone": "+2348012345678",
        "customer_name": "Ada Lovelace",
        "purpose": "order_confirmation",
        "context": "Confirm order #1234 for NGN 5,000 and mention delivery by Friday.",
        "business_voice_number_id": "your-number-id",
        "ai_agent_id": "your-agent-id"
    });
    let res = s
        .http
        .post(s.url("/v1/vox/calls"))
        .bearer_auth(&secret)
        .header("Content-Type", "application/json")
        .header("Idempotency-Key", "9b2e1c7a-quickstart-001")
        .body(call.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let first = res.text().await.unwrap();
    let seen = up.last();
    assert_eq!(seen.uri, "/v1/vox/calls");
    assert_eq!(seen.headers["idempotency-key"], "9b2e1c7a-quickstart-001");
    // "A retry never places two calls": the retry is a replay.
    let retry = s
        .http
        .post(s.url("/v1/vox/calls"))
        .bearer_auth(&secret)
        .header("Content-Type", "application/json")
        .header("Idempotency-Key", "9b2e1c7a-quickstart-001")
        .body(call.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(retry.status(), 200);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.text().await.unwrap(), first);
    let placed = up
        .seen()
        .iter()
        .filter(|r| r.method == "POST" && r.uri == "/v1/vox/calls")
        .count();
    assert_eq!(placed, 1, "one call placed");
    // Without an Idempotency-Key, call creation is refused.
    s.post("/v1/vox/calls", &secret, call.clone())
        .await
        .assert_problem(400, "idempotency_key_required");
    assert_eq!(serde_json::from_slice::<Value>(&seen.body).unwrap(), call);
    assert_eq!(seen.headers["x-keyward-tenant-id"], business.as_str());
    assert_eq!(s.get("/v1/vox/calls", &secret).await.status, StatusCode::OK);

    // "Lock down your key — add an IP allowlist and set an expiry."
    let soon =
        keyward_core::clock::Timestamp(keyward_core::clock::Clock::now(&s.clock).0 + 3_600_000)
            .to_rfc3339();
    let (_, locked) = s
        .key(
            &business,
            "office-only",
            json!({ "scopes": ["vox:read"], "ip_allowlist": ["203.0.113.0/24"] }),
        )
        .await;
    s.get("/v1/vox/numbers", &locked)
        .await
        .assert_problem(403, "ip_not_allowed");
    let (_, expiring) = s
        .key(
            &business,
            "expiring",
            json!({ "scopes": ["vox:read"], "expires_at": soon }),
        )
        .await;
    assert_eq!(
        s.get("/v1/vox/numbers", &expiring).await.status,
        StatusCode::OK
    );
    s.clock.advance_seconds(3_601);
    s.get("/v1/vox/numbers", &expiring)
        .await
        .assert_problem(401, "expired_api_key");

    // "Go to production — swap your clv_test_… key for a clv_live_… key."
    let (_, live) = s
        .key(
            &business,
            "prod",
            json!({ "environment": "live", "scopes": ["vox:read"] }),
        )
        .await;
    assert!(live.starts_with("clv_live_sk_"));
    assert_eq!(
        s.get("/v1/vox/health", &live).await.body["data"]["environment"],
        "live"
    );
    // Least privilege: a read-only key cannot place calls.
    s.post("/v1/vox/calls", &live, call)
        .await
        .assert_problem(403, "insufficient_scope");
}

#[tokio::test]
async fn contact_centre_basic_auth_with_key_id_and_secret() {
    let (s, up) = example("contact-centre").await;
    let org = s.tenant("Cloverhound Customer").await;
    // "Assign a name ... Ensure the name is unique within your organization."
    let (key_id, secret) = s.key(&org, "webex-outbound", json!({})).await;
    let dup = s
        .post(
            "/v1/keys",
            &s.root,
            json!({ "tenant_id": org, "name": "webex-outbound", "environment": "live" }),
        )
        .await;
    dup.assert_problem(409, "name_taken");
    assert!(dup.body["detail"]
        .as_str()
        .unwrap()
        .contains("pick another name"));
    let other = s.tenant("Another Org").await;
    s.key(&other, "webex-outbound", json!({})).await;

    // "The API Key ID and API Key Secret pair ... as the username and password for Basic Authentication."
    let res = s
        .http
        .get(s.url("/api/v1/campaigns"))
        .basic_auth(&key_id, Some(&secret))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let seen = up.last();
    assert_eq!(seen.uri, "/api/v1/campaigns");
    assert!(seen.headers.get("authorization").is_none());
    assert_eq!(seen.headers["x-keyward-key-id"], key_id.as_str());

    // Both must match; a bare bearer secret is not accepted here.
    let (other_id, _) = s.key(&org, "second", json!({})).await;
    let res = s
        .http
        .get(s.url("/api/v1/campaigns"))
        .basic_auth(&other_id, Some(&secret))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = s
        .http
        .get(s.url("/api/v1/campaigns"))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn voice_api_x_api_key_and_immediate_revocation() {
    let (s, up) = example("voice-api").await;
    let account = s.tenant("VoiceInfra Account").await;
    let (crm_id, crm) = s
        .key(&account, "production-crm", json!({ "environment": "live" }))
        .await;
    let (_, staging) = s.key(&account, "staging-automation", json!({})).await;
    let (_, zapier) = s.key(&account, "zapier-integration", json!({})).await;

    // curl -X POST https://api.voiceinfra.ai/v1/calls/outbound -H "X-API-Key: …" -d '{…}'
    let body = r#"{"agent_id": "agent_abc123", "from_number": "+18005551234", "to_number": "+14155550100"}"#;
    let outbound = |key: String| {
        s.http
            .post(s.url("/v1/calls/outbound"))
            .header("X-API-Key", key)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
    };
    assert_eq!(outbound(crm.clone()).await.unwrap().status(), 200);
    assert_eq!(up.last().body, body.as_bytes());
    assert!(up.last().headers.get("x-api-key").is_none());

    // Revoked keys stop working immediately, with exactly the documented body.
    let r = s
        .post(&format!("/v1/keys/{crm_id}/revoke"), &s.root, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let res = outbound(crm).await.unwrap();
    assert_eq!(res.status(), 401);
    let documented =
        json!({ "error": { "code": "unauthorized", "message": "Invalid or missing API key." } });
    assert_eq!(res.json::<Value>().await.unwrap(), documented);
    // Missing header and invalid key: the same documented body.
    let res = s
        .http
        .post(s.url("/v1/calls/outbound"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.json::<Value>().await.unwrap(), documented);
    let res = outbound("YOUR_API_KEY".into()).await.unwrap();
    assert_eq!(res.json::<Value>().await.unwrap(), documented);
    // The other keys are independent and keep working.
    assert_eq!(outbound(staging).await.unwrap().status(), 200);
    assert_eq!(outbound(zapier.clone()).await.unwrap().status(), 200);
    // Bearer is not this API's scheme.
    let res = s
        .http
        .post(s.url("/v1/calls/outbound"))
        .bearer_auth(&zapier)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn telephony_account_scoped_paths_and_tenant_header() {
    let (s, up) = example("telephony").await;
    let r = s
        .post(
            "/v1/tenants",
            &s.root,
            json!({ "id": "AC123456", "name": "TryVox customer" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let (key_id, live) = s
        .key(
            "AC123456",
            "prod",
            json!({ "environment": "live", "sub_tenants": ["tenant_xyz"] }),
        )
        .await;
    assert!(live.starts_with("tvx_sk_live_"));
    let (_, sandbox) = s
        .key("AC123456", "dev", json!({ "environment": "test" }))
        .await;
    assert!(sandbox.starts_with("tvx_sk_test_"));

    // curl -X POST https://api.tryvox.io/v1/voice/accounts/AC123456/calls -H "Authorization: Bearer tvx_sk_live_…"
    let call = json!({ "from": "+919876543210", "to": "+14155551234", "answer_url": "https://your-app.com/answer" });
    let r = s
        .post("/v1/voice/accounts/AC123456/calls", &live, call.clone())
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        serde_json::from_slice::<Value>(&up.last().body).unwrap(),
        call
    );
    assert_eq!(up.last().headers["x-keyward-key-id"], key_id.as_str());

    // With the optional X-Tenant-ID header: passed to the upstream.
    let res = s
        .http
        .get(s.url("/v1/voice/accounts/AC123456/calls"))
        .bearer_auth(&live)
        .header("X-Tenant-ID", "tenant_xyz")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(up.last().headers["x-tenant-id"], "tenant_xyz");
    // A tenant the key may not act for is refused before the upstream.
    let before = up.seen().len();
    let res = s
        .http
        .get(s.url("/v1/voice/accounts/AC123456/calls"))
        .bearer_auth(&live)
        .header("X-Tenant-ID", "tenant_other")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "TENANT_NOT_ALLOWED"
    );
    let res = s
        .http
        .get(s.url("/v1/account/AC123456/numbers"))
        .bearer_auth(&sandbox)
        .header("X-Tenant-ID", "tenant_xyz")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(up.seen().len(), before);

    // curl https://api.tryvox.io/v1/account/{account_id}/numbers
    assert_eq!(
        s.get("/v1/account/AC123456/numbers", &live).await.status,
        StatusCode::OK
    );
    assert_eq!(up.last().uri, "/v1/account/AC123456/numbers");
    // Another account's path does not exist for this key.
    let r = s.get("/v1/account/AC999999/numbers", &live).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // Failure (401 Unauthorized), exactly as documented.
    let r = s
        .get("/v1/account/AC123456/numbers", "tvx_sk_live_abc123")
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.body,
        json!({ "error": { "code": "UNAUTHORIZED", "message": "Invalid or missing API key" } })
    );
}

#[tokio::test]
async fn platform_me_and_scoped_problem_details() {
    let (s, up) = example("platform").await;
    let tenant = s.tenant("Alloovium customer").await;
    let (key_id, secret) = s
        .key(
            &tenant,
            "Production Backend",
            json!({
                "environment": "live",
                "tier": "standard",
                "scopes": ["vault:read", "chat:read", "chat:write"],
                "metadata": { "user_id": "1f02d9ef-2b33-4d1d-9c4a-82f06a91e3d1", "email": "alex@example.com" }
            }),
        )
        .await;

    // GET /api/v2/me with Authorization: Bearer ak_live_…
    let me = s.get("/api/v2/me", &secret).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.body);
    assert_eq!(
        me.body,
        json!({
            "user_id": "1f02d9ef-2b33-4d1d-9c4a-82f06a91e3d1",
            "tenant_id": tenant,
            "auth_method": "api_key",
            "email": "alex@example.com",
            "api_key_id": key_id,
            "api_key_name": "Production Backend",
            "api_key_prefix": &secret[..12],
            "environment": "live",
            "rate_limit_tier": "standard",
            "scopes": ["chat:read", "chat:write", "vault:read"]
        })
    );
    assert!(secret.starts_with("ak_live_"));

    // Paid calls need credits (see platform_tiers_credits_and_idempotent_creates).
    s.grant(&tenant, 100_000).await;
    // GET /api/v2/vault/projects?limit=10 — scoped, forwarded with the query.
    assert_eq!(
        s.get("/api/v2/vault/projects?limit=10", &secret)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(up.last().uri, "/api/v2/vault/projects?limit=10");

    // POST without vault:write: the documented RFC 9457 problem.
    let r = s
        .post(
            "/api/v2/vault/projects",
            &secret,
            json!({ "name": "Downtown Tower", "project_type": "commercial" }),
        )
        .await;
    r.assert_problem(403, "insufficient_scope");
    assert_eq!(
        r.body,
        json!({
            "type": "https://api.alloovium.com/errors/insufficient_scope",
            "title": "Insufficient scope",
            "status": 403,
            "detail": "API key is missing required scope: vault:write",
            "code": "insufficient_scope",
            "missing_scopes": ["vault:write"]
        })
    );
    // "Do not put the key in a query string."
    let r = s
        .call(
            reqwest::Method::GET,
            &format!("/api/v2/me?api_key={secret}"),
            None,
            None,
        )
        .await;
    r.assert_problem(400, "credentials_misplaced");
}

#[tokio::test]
async fn platform_tiers_credits_and_idempotent_creates() {
    let (s, up) = example("platform").await;
    let tenant = s.tenant("Alloovium customer").await;
    let credits = format!("/v1/tenants/{tenant}/credits");
    // A paid call before the welcome grant: 402.
    let (_, secret) = s
        .key(
            &tenant,
            "Production Backend",
            json!({ "environment": "live", "scopes": ["vault:read", "vault:write"] }),
        )
        .await;
    s.get("/api/v2/vault/projects?limit=10", &secret)
        .await
        .assert_problem(402, "credits_exhausted");

    // "New developer accounts start with 100,000 free API credits."
    let welcome = s
        .http
        .post(s.url(&credits))
        .bearer_auth(&s.root)
        .header("Idempotency-Key", format!("welcome-{tenant}"))
        .json(&json!({ "kind": "grant", "amount": 100_000, "reason": "Free credits for new accounts" }))
        .send()
        .await
        .unwrap();
    assert_eq!(welcome.status(), StatusCode::CREATED);

    // /api/v2/me "costs 1 rate-limit token": the standard tier's fields show it.
    let me = s.get("/api/v2/me", &secret).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["rate_limit_tier"], "standard", "the default tier");
    assert_eq!(me.headers["ratelimit-policy"], "\"standard\";q=600;w=60");
    // Two tokens spent: the refused paid call (rate limits come before
    // credits, in the verify checks' order) and this one.
    assert_eq!(me.headers["ratelimit"], "\"standard\";r=598;t=1");

    // Create a project with an Idempotency-Key; the retry is replayed.
    let create = || {
        s.http
            .post(s.url("/api/v2/vault/projects"))
            .bearer_auth(&secret)
            .header("Idempotency-Key", "create-tower-2026-04-08")
            .header("Content-Type", "application/json")
            .body(r#"{"name": "Downtown Tower", "project_type": "commercial"}"#)
            .send()
    };
    let first = create().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first = first.text().await.unwrap();
    let retry = create().await.unwrap();
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.text().await.unwrap(), first);
    let writes = up.seen().iter().filter(|r| r.method == "POST").count();
    assert_eq!(writes, 1, "no duplicate writes");
    s.post(
        "/api/v2/vault/projects",
        &secret,
        json!({ "name": "Downtown Tower", "project_type": "commercial" }),
    )
    .await
    .assert_problem(400, "idempotency_key_required");

    // One paid call since the grant (the create); the replay and the
    // refused calls cost nothing.
    let balance = s.get(&credits, &s.root).await;
    assert_eq!(balance.body["balance"], 100_000 - 1);

    // A free-tier key runs into 429 with an honest Retry-After.
    let (_, free) = s
        .key(
            &tenant,
            "Hobby",
            json!({ "environment": "test", "tier": "free", "scopes": ["vault:read"] }),
        )
        .await;
    for _ in 0..10 {
        assert_eq!(s.get("/api/v2/me", &free).await.status, StatusCode::OK);
    }
    let limited = s.get("/api/v2/me", &free).await;
    limited.assert_problem(429, "rate_limited");
    assert_eq!(limited.headers["retry-after"], "6");
    s.clock.advance_seconds(6);
    assert_eq!(s.get("/api/v2/me", &free).await.status, StatusCode::OK);
}
