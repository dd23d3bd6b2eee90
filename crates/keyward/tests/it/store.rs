//! The store conformance suite: the same assertions against SQLite and
//! PostgreSQL, plus the HTTP walkthrough on PostgreSQL.

use keyward_store::*;
use serde_json::json;

use crate::kit::{fresh_store_url, Backend};

fn audit(action: &str, target: &str, at: i64) -> AuditEntry {
    AuditEntry {
        id: format!("evt_{action}_{target}_{at}"),
        at,
        actor: "test".into(),
        actor_ip: Some("192.0.2.1".into()),
        tenant_id: Some("ten_1".into()),
        action: action.into(),
        target: target.into(),
        details: json!({}),
    }
}

fn key(id: &str, name: &str, hash: &str) -> KeyRecord {
    KeyRecord {
        id: id.into(),
        class: KeyClass::Tenant,
        tenant_id: Some("ten_1".into()),
        name: name.into(),
        environment: "test".into(),
        hash: hash.into(),
        start: "kw_test_abcd".into(),
        owner: Some("owner@example.com".into()),
        scopes: vec!["a:b".into(), "c:*".into()],
        tier: Some("standard".into()),
        credit_cap: Some(100),
        ip_allowlist: vec!["10.0.0.0/8".into()],
        sub_tenants: vec!["tenant_xyz".into()],
        expires_at: Some(5_000),
        metadata: json!({ "k": [1, 2] }),
        enabled: true,
        created_by: "key_root".into(),
        created_at: 1_000,
        updated_at: 1_000,
        last_used_at: None,
        last_used_ip: None,
        revoked_at: None,
        revoked_reason: None,
        rotated_from: None,
        replaced_by: None,
        grace_until: None,
        deleted_at: None,
    }
}

async fn conformance(backend: Backend) {
    let url = fresh_store_url(backend).await;
    let store = SqlStore::open(&url).await.unwrap();
    // Opening again (another node, a restart) re-applies nothing.
    let store2 = SqlStore::open(&url).await.unwrap();
    store.ping().await.unwrap();

    let t = Tenant {
        id: "ten_1".into(),
        name: "One".into(),
        metadata: json!({}),
        created_at: 1,
        updated_at: 1,
    };
    store
        .create_tenant(&t, &audit("tenant.created", "ten_1", 1))
        .await
        .unwrap();
    assert_eq!(store2.get_tenant("ten_1").await.unwrap(), t);
    assert!(matches!(
        store.get_tenant("nope").await,
        Err(StoreError::NotFound)
    ));
    let patched = store
        .update_tenant(
            "ten_1",
            &TenantPatch {
                name: Some("Uno".into()),
                metadata: None,
                updated_at: 2,
            },
            &audit("tenant.updated", "ten_1", 2),
        )
        .await
        .unwrap();
    assert_eq!((patched.name.as_str(), patched.updated_at), ("Uno", 2));

    // Keys round-trip every field.
    let k1 = key("key_1", "alpha", &"a".repeat(64));
    store
        .create_key(&k1, &audit("key.created", "key_1", 3))
        .await
        .unwrap();
    assert_eq!(store.get_key("key_1").await.unwrap(), k1);
    assert_eq!(
        store.find_key_by_hash(&"a".repeat(64)).await.unwrap(),
        Some(k1.clone())
    );
    assert_eq!(store.find_key_by_hash(&"f".repeat(64)).await.unwrap(), None);

    // Names are unique per tenant among live keys.
    let dup = key("key_2", "alpha", &"b".repeat(64));
    assert!(matches!(
        store
            .create_key(&dup, &audit("key.created", "key_2", 4))
            .await,
        Err(StoreError::NameTaken)
    ));
    // The failed insert wrote no audit event either (same transaction).
    let events = store
        .list_audit(
            &AuditFilter::default(),
            PageRequest {
                limit: 100,
                before: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(events.items.len(), 3);
    // Same hash twice is refused too.
    let same_hash = key("key_3", "beta", &"a".repeat(64));
    assert!(store
        .create_key(&same_hash, &audit("key.created", "key_3", 4))
        .await
        .is_err());

    // Update only what the patch names.
    let p = KeyPatch {
        name: Some("alpha2".into()),
        expires_at: Some(None),
        enabled: Some(false),
        updated_at: 6,
        ..KeyPatch::default()
    };
    let u = store
        .update_key("key_1", &p, &audit("key.updated", "key_1", 6))
        .await
        .unwrap();
    assert_eq!(
        (u.name.as_str(), u.expires_at, u.enabled, u.scopes.len()),
        ("alpha2", None, false, 2)
    );
    assert_eq!(u.status(7), KeyStatus::Disabled);

    // Status filters.
    let k4 = key("key_4", "gamma", &"c".repeat(64));
    store
        .create_key(&k4, &audit("key.created", "key_4", 7))
        .await
        .unwrap();
    let list = |status: KeyStatus, now: i64| {
        let store = &store;
        async move {
            let f = KeyFilter {
                tenant_id: Some("ten_1".into()),
                status: Some(status),
                now,
                ..KeyFilter::default()
            };
            store
                .list_keys(
                    &f,
                    PageRequest {
                        limit: 10,
                        before: None,
                    },
                )
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|(_, k)| k.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list(KeyStatus::Active, 10).await, vec!["key_4"]);
    assert_eq!(list(KeyStatus::Disabled, 10).await, vec!["key_1"]);
    assert_eq!(list(KeyStatus::Expired, 6_000).await, vec!["key_4"]);

    // Revoke, idempotently; the name becomes free.
    let r = store
        .revoke_key("key_4", Some("leak"), &audit("key.revoked", "key_4", 8))
        .await
        .unwrap();
    assert_eq!(
        (r.revoked_at, r.revoked_reason.as_deref()),
        (Some(8), Some("leak"))
    );
    let again = store
        .revoke_key("key_4", Some("other"), &audit("key.revoked", "key_4", 9))
        .await
        .unwrap();
    assert_eq!(again.revoked_reason.as_deref(), Some("leak"));
    assert_eq!(list(KeyStatus::Revoked, 10).await, vec!["key_4"]);
    store
        .create_key(
            &key("key_5", "gamma", &"d".repeat(64)),
            &audit("key.created", "key_5", 10),
        )
        .await
        .unwrap();

    // Rotate: the old key is replaced, the new one shares the name.
    let mut k6 = key("key_6", "gamma", &"e".repeat(64));
    k6.rotated_from = Some("key_5".into());
    let rotated = store
        .rotate_key("key_5", &k6, 100, &audit("key.rotated", "key_5", 11))
        .await
        .unwrap();
    assert_eq!(rotated.rotated_from.as_deref(), Some("key_5"));
    let old = store.get_key("key_5").await.unwrap();
    assert_eq!(
        (old.replaced_by.as_deref(), old.grace_until),
        (Some("key_6"), Some(100))
    );
    let k7 = key("key_7", "gamma", &"7".repeat(64));
    assert!(matches!(
        store
            .rotate_key("key_5", &k7, 100, &audit("key.rotated", "key_5", 12))
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store
            .rotate_key("key_4", &k7, 100, &audit("key.rotated", "key_4", 12))
            .await,
        Err(StoreError::Conflict(_))
    ));

    // Last use: batches, and older never overwrites newer.
    store
        .touch_keys(&[KeyUse {
            key_id: "key_6".into(),
            at: 50,
            ip: Some("10.0.0.1".into()),
        }])
        .await
        .unwrap();
    store
        .touch_keys(&[KeyUse {
            key_id: "key_6".into(),
            at: 40,
            ip: Some("10.0.0.2".into()),
        }])
        .await
        .unwrap();
    let used = store.get_key("key_6").await.unwrap();
    assert_eq!(
        (used.last_used_at, used.last_used_ip.as_deref()),
        (Some(50), Some("10.0.0.1"))
    );

    // Delete hides the key but keeps its hash known as deleted.
    store
        .delete_key("key_6", &audit("key.deleted", "key_6", 13))
        .await
        .unwrap();
    assert!(matches!(
        store.get_key("key_6").await,
        Err(StoreError::NotFound)
    ));
    assert!(store
        .find_key_by_hash(&"e".repeat(64))
        .await
        .unwrap()
        .unwrap()
        .deleted_at
        .is_some());
    assert!(matches!(
        store
            .delete_key("key_6", &audit("key.deleted", "key_6", 14))
            .await,
        Err(StoreError::NotFound)
    ));

    // Audit pagination, newest first, complete and without repeats.
    let mut all = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .list_audit(
                &AuditFilter {
                    tenant_id: Some("ten_1".into()),
                },
                PageRequest { limit: 3, before },
            )
            .await
            .unwrap();
        all.extend(page.items.iter().map(|(_, e)| e.action.clone()));
        match page.next {
            Some(n) => before = Some(n),
            None => break,
        }
    }
    assert_eq!(all.first().map(String::as_str), Some("key.deleted"));
    assert_eq!(all.last().map(String::as_str), Some("tenant.created"));
    assert_eq!(all.len(), 9);
    store.close().await;
    store2.close().await;
}

#[tokio::test]
async fn conformance_sqlite() {
    conformance(Backend::Sqlite).await;
}

#[tokio::test]
async fn conformance_postgres() {
    conformance(Backend::Postgres).await;
}

#[tokio::test]
async fn walkthrough_on_postgres() {
    crate::api::walkthrough(Backend::Postgres).await;
}
