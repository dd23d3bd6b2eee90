//! Who may give which scopes, and the operators' last root key, over real
//! HTTP: a key created, changed or rotated by a tenant key holds at most
//! that key's own scopes; a tenant's ceiling (`grantable_scopes`) bounds
//! everyone but operators; the last active root key that can manage keys
//! cannot be revoked, deleted, disabled or stripped through the API, also
//! when two root keys end each other at once (SQLite and PostgreSQL).

use std::sync::Arc;

use keyward_core::clock::{Clock, ManualClock};
use keyward_core::secret::OsEntropy;
use keyward_server::config::Settings;
use keyward_store::SqlStore;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::kit::{default_config, fresh_store_url, Backend, Reply, Server};

const KEY_ADMIN: [&str; 3] = [
    "keyward:keys:read",
    "keyward:keys:write",
    "keyward:tenants:read",
];

/// A tenant key holding keyward's key-management scopes and `extra`.
async fn manager(s: &Server, tenant: &str, name: &str, extra: &[&str]) -> String {
    let scopes: Vec<&str> = KEY_ADMIN.iter().chain(extra).copied().collect();
    s.key(tenant, name, json!({ "scopes": scopes })).await.1
}

async fn create(s: &Server, by: &str, name: &str, scopes: &[&str]) -> Reply {
    s.post(
        "/v1/keys",
        by,
        json!({ "name": name, "environment": "test", "scopes": scopes }),
    )
    .await
}

#[track_caller]
fn refused(r: &Reply, scopes: &[&str]) {
    r.assert_problem(403, "scope_not_grantable");
    assert_eq!(r.body["not_grantable_scopes"], json!(scopes), "{}", r.body);
    let detail = r.body["detail"].as_str().unwrap();
    for s in scopes {
        assert!(detail.contains(&format!("`{s}`")), "{detail}");
    }
}

/// The names of the tenant's keys, as root sees them.
async fn key_names(s: &Server, tenant: &str) -> Vec<String> {
    let r = s
        .get(&format!("/v1/keys?tenant_id={tenant}&limit=100"), &s.root)
        .await;
    r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_tenant_key_grants_at_most_its_own_scopes() {
    let s = Server::start().await;
    let t = s.tenant("Acme").await;
    let wide = manager(&s, &t, "wide", &["vox:*"]).await;
    let narrow = manager(&s, &t, "narrow", &["vox:calls:read"]).await;

    // Held, or covered by a held wildcard: granted.
    for (name, scopes) in [
        ("w1", vec!["vox:calls:read", "vox:read"]),
        ("w2", vec!["vox:*"]),
        ("w3", vec!["vox:calls:*", "keyward:keys:read"]),
        ("w4", vec![]),
    ] {
        let r = create(&s, &wide, name, &scopes).await;
        assert_eq!(r.status, StatusCode::CREATED, "{name}: {}", r.body);
    }
    // Not held: refused, every refused scope named, nothing created.
    let before = key_names(&s, &t).await;
    refused(
        &create(&s, &wide, "x1", &["vox:read", "vault:read"]).await,
        &["vault:read"],
    );
    refused(
        &create(
            &s,
            &wide,
            "x2",
            &["keyward:tenants:write", "*", "keyward:keys:verify"],
        )
        .await,
        &["*", "keyward:keys:verify", "keyward:tenants:write"],
    );
    // A literal scope does not grant the wildcard above it.
    refused(&create(&s, &narrow, "x3", &["vox:*"]).await, &["vox:*"]);
    refused(
        &create(&s, &narrow, "x4", &["vox:calls:*"]).await,
        &["vox:calls:*"],
    );
    assert_eq!(key_names(&s, &t).await, before);
    let r = create(&s, &narrow, "n1", &["vox:calls:read"]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let n1 = r.body["key"]["id"].as_str().unwrap().to_owned();

    // Updates: adding a scope the caller lacks is refused and changes
    // nothing; scopes the key holds already may be kept or narrowed.
    let (granted, _) = s
        .key(&t, "granted", json!({ "scopes": ["vault:*", "vox:read"] }))
        .await;
    let path = format!("/v1/keys/{granted}");
    let r = s
        .patch(
            &path,
            &narrow,
            json!({ "scopes": ["vault:*", "vault:write", "vox:calls:read", "vox:read"] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        r.body["scopes"],
        json!(["vault:*", "vault:write", "vox:calls:read", "vox:read"])
    );
    let r = s
        .patch(
            &path,
            &narrow,
            json!({ "scopes": ["vault:*", "vox:calls:create", "vox:*"] }),
        )
        .await;
    refused(&r, &["vox:*", "vox:calls:create"]);
    assert_eq!(
        s.get(&path, &s.root).await.body["scopes"],
        json!(["vault:*", "vault:write", "vox:calls:read", "vox:read"])
    );
    // Other fields need no grant.
    let r = s.patch(&path, &narrow, json!({ "name": "renamed" })).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // A key cannot widen itself either.
    let me = s.get("/v1/me", &narrow).await.body["key_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = s
        .patch(
            &format!("/v1/keys/{me}"),
            &narrow,
            json!({ "scopes": ["keyward:keys:read", "keyward:keys:write", "keyward:tenants:read", "vox:calls:read", "vox:calls:create"] }),
        )
        .await;
    refused(&r, &["vox:calls:create"]);

    // Rotation hands the caller a new secret with the old key's scopes: a
    // grant like any other.
    refused(
        &s.post(&format!("{path}/rotate"), &narrow, json!({})).await,
        &["vault:*", "vault:write", "vox:read"],
    );
    let r = s
        .post(&format!("/v1/keys/{n1}/rotate"), &narrow, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    // Operators are unrestricted.
    let r = s.post(&format!("{path}/rotate"), &s.root, json!({})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = s
        .post(
            "/v1/keys",
            &s.root,
            json!({ "tenant_id": t, "name": "op", "environment": "test", "scopes": ["*"] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    // Validation still comes first: an unknown scope is a 422.
    create(&s, &wide, "bad", &["nope:x"])
        .await
        .assert_problem(422, "validation_failed");
}

#[tokio::test]
async fn a_tenant_ceiling_bounds_every_grant_but_operators() {
    let s = Server::start().await;
    let r = s
        .post(
            "/v1/tenants",
            &s.root,
            json!({ "name": "Starter", "grantable_scopes": ["vox:*", "keyward:keys:read", "keyward:keys:write", "vox:*"] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let ceiling = json!(["keyward:keys:read", "keyward:keys:write", "vox:*"]);
    assert_eq!(r.body["grantable_scopes"], ceiling);
    let t = r.body["id"].as_str().unwrap().to_owned();
    let other = s.tenant("Unlimited").await;
    assert_eq!(
        s.get(&format!("/v1/tenants/{other}"), &s.root).await.body["grantable_scopes"],
        Value::Null
    );

    // Operators grant past the ceiling: this key holds everything.
    let all = manager(&s, &t, "all", &["*"]).await;
    // The tenant's own keys see their ceiling.
    assert_eq!(
        s.get(&format!("/v1/tenants/{t}"), &all).await.body["grantable_scopes"],
        ceiling
    );
    let r = create(&s, &all, "in", &["vox:calls:create", "keyward:keys:read"]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let inside = r.body["key"]["id"].as_str().unwrap().to_owned();
    let r = create(
        &s,
        &all,
        "out",
        &["vox:read", "vault:read", "keyward:audit:read"],
    )
    .await;
    refused(&r, &["keyward:audit:read", "vault:read"]);
    assert!(r.body["detail"]
        .as_str()
        .unwrap()
        .contains("grantable_scopes"));
    // A wildcard wider than the ceiling is outside it.
    refused(&create(&s, &all, "wider", &["*"]).await, &["*"]);
    // Updates and rotations are bounded too.
    refused(
        &s.patch(
            &format!("/v1/keys/{inside}"),
            &all,
            json!({ "scopes": ["vault:write"] }),
        )
        .await,
        &["vault:write"],
    );
    let (premium, _) = s
        .key(&t, "premium", json!({ "scopes": ["vault:read"] }))
        .await;
    refused(
        &s.post(&format!("/v1/keys/{premium}/rotate"), &all, json!({}))
            .await,
        &["vault:read"],
    );
    // Another tenant has no ceiling.
    let all_other = manager(&s, &other, "all", &["*"]).await;
    let r = create(&s, &all_other, "free", &["vault:read"]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);

    // Only operators set the ceiling; its scopes must be grantable here.
    let tpath = format!("/v1/tenants/{t}");
    for body in [
        json!({ "grantable_scopes": ["*"] }),
        json!({ "grantable_scopes": null }),
    ] {
        let r = s.patch(&tpath, &all, body).await;
        r.assert_problem(422, "validation_failed");
        assert_eq!(r.body["errors"][0]["field"], "grantable_scopes");
        assert_eq!(r.body["errors"][0]["code"], "not_grantable");
    }
    let r = s
        .post(
            "/v1/tenants",
            &s.root,
            json!({ "name": "Bad", "grantable_scopes": ["vox:read", "nope:x", "bad scope"] }),
        )
        .await;
    r.assert_problem(422, "validation_failed");
    assert_eq!(r.body["errors"][0]["field"], "grantable_scopes[1]");
    assert_eq!(r.body["errors"][0]["code"], "unknown_scope");
    assert_eq!(r.body["errors"][1]["field"], "grantable_scopes[2]");
    assert_eq!(
        s.get(&tpath, &s.root).await.body["grantable_scopes"],
        ceiling
    );

    // An empty ceiling: keys without scopes only.
    let r = s
        .patch(&tpath, &s.root, json!({ "grantable_scopes": [] }))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["grantable_scopes"], json!([]));
    refused(&create(&s, &all, "e1", &["vox:read"]).await, &["vox:read"]);
    let r = create(&s, &all, "e2", &[]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    // null removes the ceiling; the change is in the audit log.
    let r = s
        .patch(
            &tpath,
            &s.root,
            json!({ "grantable_scopes": null, "name": "Pro" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["grantable_scopes"], Value::Null);
    let r = create(&s, &all, "now-free", &["vault:read", "keyward:audit:read"]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let audit = s.get(&format!("/v1/audit?tenant_id={t}"), &s.root).await;
    let changes: Vec<&Value> = audit.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "tenant.updated")
        .map(|e| &e["details"])
        .collect();
    assert_eq!(
        changes,
        vec![
            &json!({ "changed": ["name", "grantable_scopes"], "grantable_scopes": null }),
            &json!({ "changed": ["grantable_scopes"], "grantable_scopes": [] }),
        ]
    );
}

/// A server whose store the test can reach, to make root keys the way
/// `keyward root-keys create` does.
async fn server_with_store(backend: Backend) -> (Server, Arc<SqlStore>) {
    let url = fresh_store_url(backend).await;
    let store = Arc::new(SqlStore::open(&url).await.unwrap());
    let s = Server::start_on(store.clone(), default_config(), ManualClock::starting_now()).await;
    (s, store)
}

/// A new root key; returns `(id, secret)`.
async fn root_key(
    s: &Server,
    store: &Arc<SqlStore>,
    name: &str,
    scopes: &[&str],
) -> (String, String) {
    let settings = Settings::from_config(default_config()).unwrap();
    let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
    let (record, secret) = keyward_server::bootstrap::create_root_key(
        &settings,
        store.clone(),
        Arc::new(s.clock.clone()),
        Arc::new(OsEntropy),
        name,
        &scopes,
    )
    .await
    .unwrap();
    (record.id, secret.expose().to_owned())
}

#[track_caller]
fn last_root_key(r: &Reply) {
    r.assert_problem(409, "last_root_key");
    let detail = r.body["detail"].as_str().unwrap();
    assert!(
        detail.contains("keyward root-keys create --name"),
        "{detail}"
    );
}

async fn me(s: &Server, key: &str) -> String {
    let r = s.get("/v1/me", key).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["key_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_last_root_key_cannot_be_ended_through_the_api() {
    let (s, store) = server_with_store(Backend::Sqlite).await;
    let root = s.root.clone();
    let id = me(&s, &root).await;
    let path = format!("/v1/keys/{id}");
    // The only root key: not revoked, deleted, disabled or stripped of
    // keyward:keys:write, by itself.
    last_root_key(&s.post(&format!("{path}/revoke"), &root, json!({})).await);
    last_root_key(&s.call(Method::DELETE, &path, Some(&root), None).await);
    last_root_key(&s.patch(&path, &root, json!({ "enabled": false })).await);
    last_root_key(
        &s.patch(
            &path,
            &root,
            json!({ "scopes": ["keyward:keys:read", "keyward:tenants:*"] }),
        )
        .await,
    );
    // An expiry in the past is refused as such; one in the future leaves
    // it active now (and other changes pass).
    let past = s.clock.now().plus_seconds(-1).to_rfc3339();
    let r = s.patch(&path, &root, json!({ "expires_at": past })).await;
    r.assert_problem(422, "validation_failed");
    assert_eq!(r.body["errors"][0]["code"], "in_past");
    let soon = s.clock.now().plus_seconds(3600).to_rfc3339();
    let r = s
        .patch(
            &path,
            &root,
            json!({ "expires_at": soon, "name": "ops", "scopes": ["keyward:*", "vox:read"] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["status"], "active");
    // Root keys are rotated with the CLI, as before.
    s.post(&format!("{path}/rotate"), &root, json!({}))
        .await
        .assert_problem(409, "root_key_rotation");
    // Nothing was lost: it still manages.
    assert_eq!(me(&s, &root).await, id);
    s.tenant("still works").await;

    // Root keys that cannot manage keys do not count.
    let (verify_only, verify_secret) =
        root_key(&s, &store, "verifier", &["keyward:keys:verify"]).await;
    last_root_key(&s.post(&format!("{path}/revoke"), &root, json!({})).await);
    // With a second that can, a root key may revoke itself (but still not
    // delete itself); then the second is the last.
    let (second, second_secret) = root_key(
        &s,
        &store,
        "second",
        &[
            "keyward:keys:write",
            "keyward:keys:read",
            "keyward:audit:read",
        ],
    )
    .await;
    s.call(Method::DELETE, &path, Some(&root), None)
        .await
        .assert_problem(409, "cannot_delete_self");
    let r = s
        .post(
            &format!("{path}/revoke"),
            &root,
            json!({ "reason": "handover" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["status"], "revoked");
    s.get("/v1/me", &root)
        .await
        .assert_problem(401, "revoked_api_key");
    let second_path = format!("/v1/keys/{second}");
    last_root_key(
        &s.post(&format!("{second_path}/revoke"), &second_secret, json!({}))
            .await,
    );
    last_root_key(
        &s.call(Method::DELETE, &second_path, Some(&second_secret), None)
            .await,
    );
    // The verify-only root key can go; the audit log has every change
    // that happened and none that was refused.
    let r = s
        .post(
            &format!("/v1/keys/{verify_only}/revoke"),
            &second_secret,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    s.get("/v1/me", &verify_secret)
        .await
        .assert_problem(401, "revoked_api_key");
    let audit = s.get("/v1/audit?limit=100", &second_secret).await;
    let on_root: Vec<&str> = audit.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["target"] == id.as_str() || e["target"] == second.as_str())
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        on_root,
        vec![
            "key.revoked",
            "root_key.created",
            "key.updated",
            "root_key.created"
        ]
    );
}

/// Two root keys revoking each other at the same moment, round after
/// round: exactly one wins and one root key remains.
async fn root_keys_revoking_each_other(backend: Backend) {
    let (s, store) = server_with_store(backend).await;
    // The kit's own root key steps aside first.
    let kit_root = me(&s, &s.root).await;
    let (_, mut survivor) = root_key(&s, &store, "r-start", &["keyward:*"]).await;
    let r = s
        .post(&format!("/v1/keys/{kit_root}/revoke"), &survivor, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    for round in 0..12 {
        let (_, fresh) = root_key(&s, &store, &format!("r{round}"), &["keyward:*"]).await;
        let a = me(&s, &survivor).await;
        let b = me(&s, &fresh).await;
        // Each revokes the other, or itself: both orders race.
        let (target_a, target_b) = if round % 2 == 0 { (&b, &a) } else { (&a, &b) };
        let (path_a, path_b) = (
            format!("/v1/keys/{target_a}/revoke"),
            format!("/v1/keys/{target_b}/revoke"),
        );
        let (ra, rb) = tokio::join!(
            s.post(&path_a, &survivor, json!({})),
            s.post(&path_b, &fresh, json!({})),
        );
        let ok = [&ra, &rb]
            .iter()
            .filter(|r| r.status == StatusCode::OK)
            .count();
        assert_eq!(ok, 1, "round {round}: {} / {}", ra.body, rb.body);
        for r in [&ra, &rb] {
            if r.status != StatusCode::OK {
                // Refused by the rule, or its caller was revoked first.
                let code = r.body["code"].as_str().unwrap_or("");
                assert!(
                    code == "last_root_key" || code == "revoked_api_key",
                    "round {round}: {}",
                    r.body
                );
            }
        }
        let mut alive = Vec::new();
        for k in [&survivor, &fresh] {
            if s.get("/v1/me", k).await.status == StatusCode::OK {
                alive.push(k.clone());
            }
        }
        assert_eq!(alive.len(), 1, "round {round}");
        survivor = alive.remove(0);
    }
}

#[tokio::test]
async fn root_keys_revoking_each_other_leave_one_on_sqlite() {
    root_keys_revoking_each_other(Backend::Sqlite).await;
}

#[tokio::test]
async fn root_keys_revoking_each_other_leave_one_on_postgres() {
    root_keys_revoking_each_other(Backend::Postgres).await;
}
