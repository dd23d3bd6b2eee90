//! The management and verify API over real HTTP: success paths, every
//! verdict code of the verify checks that applies here, isolation, revoke and rotate.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use keyward_wire::{
    ChangeCredits, CreateKey, CreateTenant, KeyWithSecret, ListAudit, ListKeys, ListLedger,
    ListTenants, Page, RefillMode, RefillPeriod, RefillSpec, RevokeKey, RotateKey, UpdateKey,
    UpdateTenant, VerifyKey,
};

use crate::kit::client::{new_key, Refused};
use crate::kit::{default_config, Backend, Server};

/// The README walkthrough, on a given backend.
pub async fn walkthrough(backend: Backend) {
    let s = Server::start_with(backend, default_config()).await;
    let h = s.call(Method::GET, "/v1/health", None, None).await;
    assert_eq!(h.status, StatusCode::OK);
    assert_eq!(h.body["status"], "ok");
    assert_eq!(
        s.call(Method::GET, "/v1/ready", None, None).await.status,
        StatusCode::OK
    );

    // Tenants.
    let t = s.tenant("Acme Voice").await;
    let got = s.get(&format!("/v1/tenants/{t}"), &s.root).await;
    assert_eq!(got.body["name"], "Acme Voice");
    let renamed = s
        .patch(
            &format!("/v1/tenants/{t}"),
            &s.root,
            json!({ "name": "Acme" }),
        )
        .await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.body);
    assert_eq!(renamed.body["name"], "Acme");
    let list = s.get("/v1/tenants", &s.root).await;
    assert_eq!(list.body["data"][0]["id"], t.as_str());

    // A key: the secret comes back once, the key object never holds it.
    let created = s
        .post(
            "/v1/keys",
            &s.root,
            json!({ "tenant_id": t, "name": "Production Backend", "environment": "live",
                    "scopes": ["vault:read", "vault:write"], "owner": "alex@example.com", "tier": "standard",
                    "metadata": { "team": "core" } }),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let secret = created.body["secret"].as_str().unwrap().to_owned();
    let id = created.body["key"]["id"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("kw_live_"));
    assert_eq!(created.body["key"]["start"], secret[..12]);
    assert_eq!(created.body["key"]["status"], "active");
    assert!(!created.body["key"].to_string().contains(&secret));

    let got = s.get(&format!("/v1/keys/{id}"), &s.root).await;
    assert_eq!(got.body["name"], "Production Backend");
    assert!(!got.body.to_string().contains(&secret));

    // /v1/me: the principal behind the key.
    let me = s.get("/v1/me", &secret).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.body);
    assert_eq!(me.body["key_id"], id.as_str());
    assert_eq!(me.body["tenant_id"], t.as_str());
    assert_eq!(me.body["tenant_name"], "Acme");
    assert_eq!(me.body["environment"], "live");
    assert_eq!(me.body["owner"], "alex@example.com");
    assert_eq!(me.body["tier"], "standard");
    assert_eq!(me.body["scopes"], json!(["vault:read", "vault:write"]));

    // Verify.
    let v = s.verify(&secret, json!({ "scopes": ["vault:read"] })).await;
    assert_eq!(v["valid"], true);
    assert_eq!(v["code"], "valid");
    assert_eq!(v["key"]["key_id"], id.as_str());

    // Update.
    let upd = s
        .patch(
            &format!("/v1/keys/{id}"),
            &s.root,
            json!({ "scopes": ["vault:read"], "name": "Backend" }),
        )
        .await;
    assert_eq!(upd.status, StatusCode::OK, "{}", upd.body);
    let v = s
        .verify(&secret, json!({ "scopes": ["vault:write"] }))
        .await;
    assert_eq!(v["code"], "insufficient_scope");
    assert_eq!(v["missing_scopes"], json!(["vault:write"]));

    // List with filters.
    let l = s
        .get(
            &format!("/v1/keys?tenant_id={t}&environment=live&status=active"),
            &s.root,
        )
        .await;
    assert_eq!(l.body["data"].as_array().unwrap().len(), 1);
    let l = s
        .get(&format!("/v1/keys?tenant_id={t}&environment=test"), &s.root)
        .await;
    assert_eq!(l.body["data"].as_array().unwrap().len(), 0);

    // Revoke → verify says revoked_api_key.
    let r = s
        .post(
            &format!("/v1/keys/{id}/revoke"),
            &s.root,
            json!({ "reason": "leaked in a log" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["status"], "revoked");
    assert_eq!(
        s.verify(&secret, json!({})).await["code"],
        "revoked_api_key"
    );
    let l = s
        .get(&format!("/v1/keys?tenant_id={t}&status=revoked"), &s.root)
        .await;
    assert_eq!(l.body["data"][0]["id"], id.as_str());

    // The audit log has every action, newest first.
    let a = s.get("/v1/audit", &s.root).await;
    let actions: Vec<&str> = a.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        vec![
            "key.revoked",
            "key.updated",
            "key.created",
            "tenant.updated",
            "tenant.created",
            "root_key.created"
        ]
    );
    assert!(!a.body.to_string().contains(&secret));
    s.shutdown().await;
}

#[tokio::test]
async fn walkthrough_on_sqlite() {
    walkthrough(Backend::Sqlite).await;
}

#[tokio::test]
async fn every_verdict_code() {
    let s = Server::start().await;
    let t = s.tenant("t").await;

    // missing_credentials, with a WWW-Authenticate challenge.
    let r = s.call(Method::GET, "/v1/me", None, None).await;
    r.assert_problem(401, "missing_credentials");
    assert!(r.headers["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));

    // invalid_api_key: garbage, unknown-but-well-formed, and a typo — same answer.
    let (_, secret) = s.key(&t, "k", json!({})).await;
    let mut typo = secret.clone().into_bytes();
    typo[10] = if typo[10] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).unwrap();
    let unknown = {
        // Right prefix and a valid checksum, but never issued.
        let body = "A".repeat(32);
        let pre = format!("kw_test_{body}");
        format!("{pre}{}", keyward_core::secret::checksum(pre.as_bytes()))
    };
    for bad in [
        "nonsense",
        typo.as_str(),
        unknown.as_str(),
        &secret[..secret.len() - 1],
    ] {
        let r = s.get("/v1/me", bad).await;
        r.assert_problem(401, "invalid_api_key");
        assert!(r.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token"));
        assert_eq!(s.verify(bad, json!({})).await["code"], "invalid_api_key");
    }

    // disabled_api_key
    let (id, secret) = s.key(&t, "disabled", json!({})).await;
    s.patch(
        &format!("/v1/keys/{id}"),
        &s.root,
        json!({ "enabled": false }),
    )
    .await;
    s.get("/v1/me", &secret)
        .await
        .assert_problem(401, "disabled_api_key");
    assert_eq!(
        s.verify(&secret, json!({})).await["code"],
        "disabled_api_key"
    );
    s.patch(
        &format!("/v1/keys/{id}"),
        &s.root,
        json!({ "enabled": true }),
    )
    .await;
    assert_eq!(s.get("/v1/me", &secret).await.status, StatusCode::OK);

    // expired_api_key, by the injected clock.
    let soon = keyward_core::clock::Timestamp(s.clock_now() + 60_000).to_rfc3339();
    let (_, secret) = s.key(&t, "expiring", json!({ "expires_at": soon })).await;
    assert_eq!(s.get("/v1/me", &secret).await.status, StatusCode::OK);
    s.clock.advance_seconds(61);
    s.get("/v1/me", &secret)
        .await
        .assert_problem(401, "expired_api_key");
    assert_eq!(
        s.verify(&secret, json!({})).await["code"],
        "expired_api_key"
    );

    // ip_not_allowed: over HTTP the client is 127.0.0.1; in verify, the given ip.
    let (_, secret) = s
        .key(
            &t,
            "office",
            json!({ "ip_allowlist": ["10.0.0.0/8", "2001:db8::/32"] }),
        )
        .await;
    s.get("/v1/me", &secret)
        .await
        .assert_problem(403, "ip_not_allowed");
    assert_eq!(
        s.verify(&secret, json!({ "ip": "10.9.8.7" })).await["valid"],
        true
    );
    assert_eq!(
        s.verify(&secret, json!({ "ip": "2001:db8::5" })).await["valid"],
        true
    );
    assert_eq!(
        s.verify(&secret, json!({ "ip": "192.0.2.1" })).await["code"],
        "ip_not_allowed"
    );
    assert_eq!(s.verify(&secret, json!({})).await["code"], "ip_not_allowed");
    let (_, local) = s
        .key(&t, "local", json!({ "ip_allowlist": ["127.0.0.1"] }))
        .await;
    assert_eq!(s.get("/v1/me", &local).await.status, StatusCode::OK);

    // insufficient_scope: problem with missing_scopes.
    let (_, reader) = s
        .key(&t, "reader", json!({ "scopes": ["keyward:keys:read"] }))
        .await;
    let r = s
        .post(
            "/v1/keys",
            &reader,
            json!({ "name": "x", "environment": "test" }),
        )
        .await;
    r.assert_problem(403, "insufficient_scope");
    assert_eq!(r.body["missing_scopes"], json!(["keyward:keys:write"]));
    let v = s
        .verify(
            &reader,
            json!({ "scopes": ["vox:read", "keyward:keys:read"] }),
        )
        .await;
    assert_eq!(v["code"], "insufficient_scope");
    assert_eq!(v["missing_scopes"], json!(["vox:read"]));

    // Wildcards cover everything below them.
    let (_, wide) = s.key(&t, "wide", json!({ "scopes": ["vox:*"] })).await;
    assert_eq!(
        s.verify(&wide, json!({ "scopes": ["vox:calls:create", "vox:read"] }))
            .await["valid"],
        true
    );
}

impl Server {
    fn clock_now(&self) -> i64 {
        use keyward_core::clock::Clock;
        self.clock.now().0
    }
}

#[tokio::test]
async fn all_three_presentation_schemes() {
    use base64::Engine;
    let s = Server::start().await;
    let t = s.tenant("t").await;
    let (id, secret) = s.key(&t, "k", json!({})).await;
    let me = |req: reqwest::RequestBuilder| async move { req.send().await.unwrap().status() };
    assert_eq!(
        me(s.http.get(s.url("/v1/me")).header("X-API-Key", &secret)).await,
        200
    );
    assert_eq!(
        me(s.http.get(s.url("/v1/me")).basic_auth(&id, Some(&secret))).await,
        200
    );
    assert_eq!(
        me(s.http
            .get(s.url("/v1/me"))
            .basic_auth("key_wrongwrongwrongwrong12", Some(&secret)))
        .await,
        401
    );
    let raw = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
    assert_eq!(
        me(s.http
            .get(s.url("/v1/me"))
            .header("Authorization", format!("basic {raw}")))
        .await,
        200
    );
    // A key in the URL is refused with where to put it.
    let r = s
        .call(Method::GET, &format!("/v1/me?api_key={secret}"), None, None)
        .await;
    r.assert_problem(400, "credentials_misplaced");
    assert!(r.body["detail"]
        .as_str()
        .unwrap()
        .contains("Authorization: Bearer"));
    assert!(!r.body.to_string().contains(&secret));
}

#[tokio::test]
async fn tenant_keys_manage_only_their_tenant() {
    let s = Server::start().await;
    let a = s.tenant("A").await;
    let b = s.tenant("B").await;
    let admin_scopes = json!({ "scopes": ["keyward:keys:read", "keyward:keys:write", "keyward:keys:verify", "keyward:audit:read", "keyward:tenants:read", "vox:*"] });
    let (_, a_admin) = s.key(&a, "a-admin", admin_scopes.clone()).await;
    let (b_key, b_secret) = s.key(&b, "b-key", json!({})).await;

    // A's key creates in A without naming the tenant.
    let r = s
        .post(
            "/v1/keys",
            &a_admin,
            json!({ "name": "a-worker", "environment": "live", "scopes": ["vox:read"] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["key"]["tenant_id"], a.as_str());
    let a_worker = r.body["key"]["id"].as_str().unwrap().to_owned();

    // B's things do not exist for A: 404, never 403.
    s.get(&format!("/v1/keys/{b_key}"), &a_admin)
        .await
        .assert_problem(404, "not_found");
    s.patch(
        &format!("/v1/keys/{b_key}"),
        &a_admin,
        json!({ "name": "pwned" }),
    )
    .await
    .assert_problem(404, "not_found");
    s.post(&format!("/v1/keys/{b_key}/revoke"), &a_admin, json!({}))
        .await
        .assert_problem(404, "not_found");
    s.post(&format!("/v1/keys/{b_key}/rotate"), &a_admin, json!({}))
        .await
        .assert_problem(404, "not_found");
    s.call(
        Method::DELETE,
        &format!("/v1/keys/{b_key}"),
        Some(&a_admin),
        None,
    )
    .await
    .assert_problem(404, "not_found");
    s.get(&format!("/v1/keys?tenant_id={b}"), &a_admin)
        .await
        .assert_problem(404, "not_found");
    s.get(&format!("/v1/tenants/{b}"), &a_admin)
        .await
        .assert_problem(404, "not_found");
    s.get(&format!("/v1/audit?tenant_id={b}"), &a_admin)
        .await
        .assert_problem(404, "not_found");
    s.post(
        "/v1/keys",
        &a_admin,
        json!({ "tenant_id": b, "name": "x", "environment": "test" }),
    )
    .await
    .assert_problem(404, "not_found");
    // Verify of B's key through A's key says nothing about it.
    let v = s
        .post("/v1/keys/verify", &a_admin, json!({ "key": b_secret }))
        .await;
    assert_eq!(v.body["valid"], false);
    assert_eq!(v.body["code"], "invalid_api_key");
    assert_eq!(v.body["key"], Value::Null);
    // Listing shows only A's keys; B's key is untouched.
    let l = s.get("/v1/keys", &a_admin).await;
    assert!(l.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k["tenant_id"] == a.as_str()));
    assert_eq!(
        s.get(&format!("/v1/keys/{b_key}"), &s.root).await.body["name"],
        "b-key"
    );
    // Audit shows only A's events.
    let au = s.get("/v1/audit", &a_admin).await;
    assert!(au.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["tenant_id"] == a.as_str()));
    // Tenant keys cannot create tenants or escalate beyond their own scopes.
    s.post("/v1/tenants", &a_admin, json!({ "name": "C" }))
        .await
        .assert_problem(403, "insufficient_scope");
    let r = s
        .post(
            "/v1/keys",
            &a_admin,
            json!({ "name": "esc", "environment": "test", "scopes": ["keyward:tenants:write"] }),
        )
        .await;
    r.assert_problem(403, "scope_not_grantable");
    assert_eq!(
        r.body["not_grantable_scopes"],
        json!(["keyward:tenants:write"])
    );
    let r = s
        .post(
            "/v1/keys",
            &a_admin,
            json!({ "name": "esc2", "environment": "test", "scopes": ["keyward:*"] }),
        )
        .await;
    r.assert_problem(403, "scope_not_grantable");
    // But A can manage A's keys.
    let r = s
        .post(&format!("/v1/keys/{a_worker}/revoke"), &a_admin, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn revoked_key_is_refused_on_the_very_next_request() {
    let s = Server::start().await;
    let api = s.client();
    let t = s.tenant("t").await;
    let KeyWithSecret { secret, key } = api.create_key(&new_key(&t, "k")).await.unwrap();
    let id = key.id;
    // Warm the cache.
    for _ in 0..3 {
        assert_eq!(s.get("/v1/me", &secret).await.status, StatusCode::OK);
    }
    api.revoke_key(&id, &RevokeKey::default()).await.unwrap();
    s.get("/v1/me", &secret)
        .await
        .assert_problem(401, "revoked_api_key");
    // Revoking again is harmless and changes nothing.
    let twice = RevokeKey {
        reason: Some("twice".to_owned()),
    };
    let again = api.revoke_key(&id, &twice).await.unwrap();
    assert_eq!(again.revoked_reason, None);
    // A revoked key cannot be changed back.
    let enable = UpdateKey {
        enabled: Some(true),
        ..UpdateKey::default()
    };
    api.update_key(&id, &enable)
        .await
        .refused(409, "key_revoked");
    // Its name is free again.
    api.create_key(&new_key(&t, "k")).await.unwrap();
}

#[tokio::test]
async fn rotation_grace_follows_the_clock() {
    let s = Server::start().await;
    let api = s.client();
    let t = s.tenant("t").await;
    let svc = CreateKey {
        scopes: vec!["vox:read".to_owned()],
        ..new_key(&t, "svc")
    };
    let KeyWithSecret {
        secret: old,
        key: old_key,
    } = api.create_key(&svc).await.unwrap();
    let old_id = old_key.id;
    assert_eq!(s.get("/v1/me", &old).await.status, StatusCode::OK);

    let hour = RotateKey {
        grace_seconds: 3600,
    };
    let KeyWithSecret { secret: new, key } = api.rotate_key(&old_id, &hour).await.unwrap();
    let new_id = key.id;
    assert_ne!(new, old);
    assert_eq!(key.rotated_from.as_deref(), Some(old_id.as_str()));
    assert_eq!(key.name, "svc");
    assert_eq!(key.scopes, ["vox:read"]);
    let old_view = api.get_key(&old_id).await.unwrap();
    assert_eq!(old_view.replaced_by.as_deref(), Some(new_id.as_str()));

    // Both work inside the grace period.
    assert_eq!(s.get("/v1/me", &old).await.status, StatusCode::OK);
    assert_eq!(s.client_as(&new).me().await.unwrap().key_id, new_id);
    s.clock.advance_seconds(3599);
    assert_eq!(s.get("/v1/me", &old).await.status, StatusCode::OK);
    // And the old one stops exactly at the deadline.
    s.clock.advance_seconds(1);
    s.client_as(&old).me().await.refused(401, "expired_api_key");
    assert_eq!(s.get("/v1/me", &new).await.status, StatusCode::OK);
    // The old key cannot be rotated twice.
    api.rotate_key(&old_id, &RotateKey::default())
        .await
        .refused(409, "key_not_rotatable");

    // grace 0: the old secret dies at once.
    let now = RotateKey { grace_seconds: 0 };
    let newest = api.rotate_key(&new_id, &now).await.unwrap().secret;
    s.get("/v1/me", &new)
        .await
        .assert_problem(401, "expired_api_key");
    assert_eq!(s.get("/v1/me", &newest).await.status, StatusCode::OK);
}

/// Every typed call of the kit's client: each answer parses as its
/// `keyward_wire` type, and a refusal as a problem.
#[tokio::test]
async fn every_answer_parses_as_its_wire_type() {
    let s = Server::start().await;
    let api = s.client();
    let tenant = api
        .create_tenant(&CreateTenant {
            name: "Acme".to_owned(),
            ..CreateTenant::default()
        })
        .await
        .unwrap();
    assert_eq!(api.get_tenant(&tenant.id).await.unwrap(), tenant);
    let renamed = api
        .update_tenant(
            &tenant.id,
            &UpdateTenant {
                name: Some("Acme Voice".to_owned()),
                ..UpdateTenant::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(renamed.name, "Acme Voice");
    let tenants = api.list_tenants(&ListTenants::default()).await.unwrap();
    assert_eq!(tenants.data, vec![renamed]);

    let body = CreateKey {
        scopes: vec!["vox:read".to_owned()],
        credit_cap: Some(5),
        ..new_key(&tenant.id, "web")
    };
    let created = api.create_key(&body).await.unwrap();
    assert_eq!(created.key.credit_cap, Some(5));
    let me = s.client_as(&created.secret).me().await.unwrap();
    assert_eq!(me.key_id, created.key.id);
    let listed = api
        .list_keys(&ListKeys {
            tenant_id: Some(tenant.id.clone()),
            ..ListKeys::default()
        })
        .await
        .unwrap();
    assert_eq!(Page::from(listed).data, vec![created.key.clone()]);
    // `null` clears, absent keeps.
    let cleared = api
        .update_key(
            &created.key.id,
            &UpdateKey {
                credit_cap: Some(None),
                ..UpdateKey::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (cleared.credit_cap, cleared.scopes),
        (None, created.key.scopes)
    );

    let granted = api
        .change_credits(
            &tenant.id,
            &ChangeCredits {
                kind: "grant".to_owned(),
                amount: 10,
                reason: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (granted.kind.as_str(), granted.balance_after),
        ("grant", 10)
    );
    let verified = api
        .verify(&VerifyKey {
            key: created.secret.clone(),
            scopes: vec!["vox:read".to_owned()],
            ip: None,
            cost: None,
            credits: Some(3),
        })
        .await
        .unwrap();
    assert!(verified.valid, "{verified:?}");
    assert_eq!(verified.credits.map(|c| c.balance), Some(7));
    let refill = RefillSpec {
        amount: 100,
        every: RefillPeriod::Monthly,
        mode: RefillMode::Set,
    };
    let credits = api.set_refill(&tenant.id, &refill).await.unwrap();
    assert_eq!(credits.refill, Some(refill));
    assert_eq!(credits.refill_source.as_deref(), Some("tenant"));
    let credits = api.clear_refill(&tenant.id).await.unwrap();
    assert_eq!(credits.refill, None);
    assert_eq!(api.credits(&tenant.id).await.unwrap(), credits);
    let ledger = api
        .ledger(&tenant.id, &ListLedger::default())
        .await
        .unwrap();
    assert!(ledger.data.iter().any(|e| e.id == granted.id));

    api.delete_key(&created.key.id).await.unwrap();
    let gone = api.get_key(&created.key.id).await.refused(404, "not_found");
    assert_eq!(gone.problem.kind, "https://keyward.dev/errors/not_found");
    let audit = api.audit(&ListAudit::default()).await.unwrap();
    assert!(
        audit.data.iter().any(|e| e.action == "key.deleted"),
        "{audit:?}"
    );
}

#[tokio::test]
async fn names_are_unique_per_tenant_among_live_keys() {
    let s = Server::start().await;
    let a = s.tenant("A").await;
    let b = s.tenant("B").await;
    s.key(&a, "production-crm", json!({})).await;
    let dup = s
        .post(
            "/v1/keys",
            &s.root,
            json!({ "tenant_id": a, "name": "production-crm", "environment": "live" }),
        )
        .await;
    dup.assert_problem(409, "name_taken");
    s.key(&b, "production-crm", json!({})).await;
    // Many named keys per tenant.
    for n in ["staging-automation", "zapier-integration"] {
        s.key(&a, n, json!({})).await;
    }
}

#[tokio::test]
async fn delete_pagination_and_last_use() {
    let s = Server::start().await;
    let t = s.tenant("t").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(s.key(&t, &format!("k{i}"), json!({})).await.0);
    }
    // Pages of 2, newest first, no duplicates, until has_more is false.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/keys?tenant_id={t}&limit=2&cursor={c}"),
            None => format!("/v1/keys?tenant_id={t}&limit=2"),
        };
        let r = s.get(&path, &s.root).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let page = r.body["data"].as_array().unwrap();
        assert!(page.len() <= 2);
        seen.extend(page.iter().map(|k| k["id"].as_str().unwrap().to_owned()));
        if r.body["has_more"] == false {
            assert_eq!(r.body["next_cursor"], Value::Null);
            break;
        }
        cursor = Some(r.body["next_cursor"].as_str().unwrap().to_owned());
    }
    ids.reverse();
    assert_eq!(seen, ids);

    // Last use is recorded off the request path, then visible.
    let (id, secret) = s.key(&t, "used", json!({})).await;
    assert_eq!(
        s.get(&format!("/v1/keys/{id}"), &s.root).await.body["last_used_at"],
        Value::Null
    );
    assert_eq!(s.get("/v1/me", &secret).await.status, StatusCode::OK);
    let mut used = Value::Null;
    for _ in 0..100 {
        used = s.get(&format!("/v1/keys/{id}"), &s.root).await.body;
        if used["last_used_at"] != Value::Null {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_ne!(used["last_used_at"], Value::Null);
    assert_eq!(used["last_used_ip"], "127.0.0.1");

    // Delete: gone from reads and listings, and refused when presented.
    let d = s
        .call(
            Method::DELETE,
            &format!("/v1/keys/{id}"),
            Some(&s.root),
            None,
        )
        .await;
    assert_eq!(d.status, StatusCode::NO_CONTENT);
    s.get(&format!("/v1/keys/{id}"), &s.root)
        .await
        .assert_problem(404, "not_found");
    s.get("/v1/me", &secret)
        .await
        .assert_problem(401, "revoked_api_key");
    let l = s
        .get(&format!("/v1/keys?tenant_id={t}&limit=100"), &s.root)
        .await;
    assert!(l.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k["id"] != id.as_str()));
}

#[tokio::test]
async fn openapi_document_matches_the_snapshot() {
    let s = Server::start().await;
    let r = s.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["openapi"], "3.1.0");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    let current = serde_json::to_string_pretty(&r.body).unwrap() + "\n";
    if std::env::var("UPDATE_SNAPSHOTS").is_ok() {
        std::fs::write(&path, &current).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == current,
        "the OpenAPI document changed; review it and run `UPDATE_SNAPSHOTS=1 cargo test` to accept"
    );
    for p in [
        "/v1/keys",
        "/v1/keys/verify",
        "/v1/keys/{id}/rotate",
        "/v1/me",
        "/v1/audit",
        "/v1/tenants/{id}",
    ] {
        assert!(
            r.body["paths"].get(p).is_some(),
            "{p} missing from the document"
        );
    }
}

#[tokio::test]
async fn envelope_error_style_is_configurable() {
    let mut c = default_config();
    c.errors.style = keyward_server::config::ErrorStyle::Envelope;
    c.errors.code_case = keyward_server::config::CodeCase::Upper;
    c.errors
        .codes
        .insert("invalid_api_key".into(), "UNAUTHORIZED".into());
    c.errors.messages.insert(
        "invalid_api_key".into(),
        "Invalid or missing API key".into(),
    );
    let s = Server::start_with(Backend::Sqlite, c).await;
    let r = s.get("/v1/me", "kw_test_bogus").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.body,
        json!({ "error": { "code": "UNAUTHORIZED", "message": "Invalid or missing API key" } })
    );
    let r = s.call(Method::GET, "/v1/nope", None, None).await;
    assert_eq!(r.body["error"]["code"], "NOT_FOUND");
}

/// Two nodes on one store: a change made on one reaches the other's cache
/// through a background refresh while the key is in use (before the TTL),
/// and a key nobody used meanwhile is re-read when its entry expires. The
/// cache's own bounds, tested apart from the change log (read only at
/// start here), which normally brings the change long before.
#[tokio::test]
async fn another_nodes_revocation_is_picked_up_by_refresh_before_the_ttl() {
    use std::sync::Arc;
    let url = crate::kit::fresh_store_url(Backend::Sqlite).await;
    let store = Arc::new(keyward_store::SqlStore::open(&url).await.unwrap());
    let clock = keyward_core::clock::ManualClock::starting_now();
    let mut config = default_config();
    config.cache.ttl_seconds = 40;
    config.changes.poll_interval_ms = 3_600_000;
    config.changes.max_silence_seconds = 7_200;
    let a = Server::start_on(Arc::clone(&store), config.clone(), clock.clone()).await;
    let b = Server::start_on(Arc::clone(&store), config, clock.clone()).await;
    let t = a.tenant("Acme").await;
    let (id, secret) = a.key(&t, "in-use", json!({})).await;
    let (idle_id, idle_secret) = a.key(&t, "idle", json!({})).await;
    // Node b caches both keys.
    assert_eq!(b.verify(&secret, json!({})).await["valid"], true);
    assert_eq!(b.verify(&idle_secret, json!({})).await["valid"], true);
    // Node a revokes both; b's cache still holds them as valid.
    for key in [&id, &idle_id] {
        let r = a
            .post(&format!("/v1/keys/{key}/revoke"), &a.root, json!({}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    assert_eq!(b.verify(&secret, json!({})).await["valid"], true);
    // Past 3/4 of the TTL every entry is due for a refresh: the next use is
    // still answered from memory, and asks for the refresh.
    clock.advance_seconds(30);
    assert_eq!(b.verify(&secret, json!({})).await["valid"], true);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let v = b.verify(&secret, json!({})).await;
        if v["code"] == "revoked_api_key" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the refresh never landed: {v}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The idle key was never refreshed; at the TTL its entry is gone and
    // the next use reads the store.
    clock.advance_seconds(10);
    assert_eq!(
        b.verify(&idle_secret, json!({})).await["code"],
        "revoked_api_key"
    );
}
