//! [`KeyStore`]: keys round-trip every field, lookups by hash (one and in
//! batches), unique names, patches, status filters, revoke, rotate, last
//! use, delete; and root keys, of which the last one that can manage keys
//! never ends, even when two nodes end two at once. Each change writes its
//! audit event in the same transaction ([`AuditStore`] reads them back).

use std::sync::Arc;

use keyward_store::*;
use serde_json::json;

use super::{audit, key};

/// Tenant and other keys of tenant `ten_1` (named "Uno", no tier) on a
/// fresh store.
pub(super) async fn suite<S: TenantStore + KeyStore + AuditStore + 'static>(store: Arc<S>) {
    let t = Tenant {
        id: "ten_1".into(),
        name: "Uno".into(),
        metadata: json!({}),
        created_at: 1,
        updated_at: 1,
        tier: None,
        grantable_scopes: None,
        credits_low_threshold: None,
    };
    store
        .create_tenant(&t, &audit("tenant.created", "ten_1", 1))
        .await
        .unwrap();

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
    // The cache's batch lookup: the key with its tenant's name and tier in
    // one round trip; unknown hashes are left out.
    let mut root = key("key_root1", "root", &"9".repeat(64));
    root.class = KeyClass::Root;
    root.tenant_id = None;
    store
        .create_key(&root, &audit("key.created", "key_root1", 3))
        .await
        .unwrap();
    let mut found = store
        .find_keys_with_tenants(&["a".repeat(64), "f".repeat(64), "9".repeat(64)])
        .await
        .unwrap();
    found.sort_by(|a, b| a.key.id.cmp(&b.key.id));
    assert_eq!(
        found,
        vec![
            KeyWithTenant {
                key: k1.clone(),
                tenant_name: Some("Uno".into()),
                tenant_tier: None,
            },
            KeyWithTenant {
                key: root.clone(),
                tenant_name: None,
                tenant_tier: None,
            },
        ]
    );
    assert!(store.find_keys_with_tenants(&[]).await.unwrap().is_empty());
    let many: Vec<String> = (0..MAX_HASHES_PER_LOOKUP)
        .map(|i| format!("{i:064x}"))
        .collect();
    assert!(store
        .find_keys_with_tenants(&many)
        .await
        .unwrap()
        .is_empty());

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
    // tenant created, key_1 and key_root1 created.
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
    // Many keys in one call (more than one statement's worth): each row
    // gets its own use, unknown ids are ignored, and no address is NULL.
    let mut batch: Vec<KeyUse> = (0..700)
        .map(|i| KeyUse {
            key_id: format!("key_nope_{i}"),
            at: 60,
            ip: None,
        })
        .collect();
    batch.insert(
        350,
        KeyUse {
            key_id: "key_6".into(),
            at: 70,
            ip: None,
        },
    );
    batch.push(KeyUse {
        key_id: "key_1".into(),
        at: 80,
        ip: Some("2001:db8::1".into()),
    });
    store.touch_keys(&batch).await.unwrap();
    let used = store.get_key("key_6").await.unwrap();
    assert_eq!((used.last_used_at, used.last_used_ip), (Some(70), None));
    let used = store.get_key("key_1").await.unwrap();
    assert_eq!(
        (used.last_used_at, used.last_used_ip.as_deref()),
        (Some(80), Some("2001:db8::1"))
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
    // Eight events of ten_1's keys and tenant, and key_root1's (its audit
    // entry names ten_1 too, as the test helper does).
    assert_eq!(all.len(), 9);
}

fn root_key(id: &str, scopes: &[&str]) -> KeyRecord {
    let issued = KeyRecord::issued(
        id.into(),
        KeyClass::Root,
        "root".into(),
        format!("{:0>64}", id.trim_start_matches("key_")),
        "kw_root_abcd".into(),
        "cli".into(),
        1_000,
    );
    KeyRecord {
        name: id.into(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        ..issued
    }
}

pub(super) async fn root_keys<S: KeyStore + AuditStore + 'static>(store: Arc<S>, other: Arc<S>) {
    let now = 2_000;
    let at = |action: &str, target: &str| AuditEntry {
        tenant_id: None,
        ..audit(action, target, now)
    };
    let events = |store: &Arc<S>| {
        let store = store.clone();
        async move {
            store
                .list_audit(
                    &AuditFilter::default(),
                    PageRequest {
                        limit: 100,
                        before: None,
                    },
                )
                .await
                .unwrap()
                .items
                .len()
        }
    };
    let a = root_key("key_a", &["keyward:*"]);
    let b = root_key("key_b", &["keyward:keys:write", "keyward:keys:read"]);
    let verify_only = root_key("key_c", &["keyward:keys:verify"]);
    let expired = KeyRecord {
        expires_at: Some(1_500),
        ..root_key("key_d", &["keyward:*"])
    };
    for k in [&a, &b, &verify_only, &expired] {
        store
            .create_key(k, &at("key.created", &k.id))
            .await
            .unwrap();
    }
    // Another remains: a root key revokes itself.
    store
        .revoke_key("key_a", None, &at("key.revoked", "key_a"))
        .await
        .unwrap();
    // key_b is the last that can manage keys: the verify-only key and the
    // expired one do not count. Nothing changes, no event is written.
    let before = events(&store).await;
    let off = |p: KeyPatch| KeyPatch {
        updated_at: now,
        ..p
    };
    for result in [
        store
            .revoke_key("key_b", Some("x"), &at("key.revoked", "key_b"))
            .await,
        store.delete_key("key_b", &at("key.deleted", "key_b")).await,
        store
            .update_key(
                "key_b",
                &off(KeyPatch {
                    enabled: Some(false),
                    ..KeyPatch::default()
                }),
                &at("key.updated", "key_b"),
            )
            .await,
        store
            .update_key(
                "key_b",
                &off(KeyPatch {
                    scopes: Some(vec!["keyward:keys:read".into()]),
                    ..KeyPatch::default()
                }),
                &at("key.updated", "key_b"),
            )
            .await,
        store
            .update_key(
                "key_b",
                &off(KeyPatch {
                    expires_at: Some(Some(now)),
                    ..KeyPatch::default()
                }),
                &at("key.updated", "key_b"),
            )
            .await,
    ] {
        assert!(matches!(result, Err(StoreError::LastRootKey)), "{result:?}");
    }
    assert_eq!(store.get_key("key_b").await.unwrap(), b);
    assert_eq!(events(&store).await, before);
    // Changes that leave it able to manage keys pass; so do changes of root
    // keys that could not manage keys anyway, and of tenant keys.
    let renamed = store
        .update_key(
            "key_b",
            &off(KeyPatch {
                name: Some("renamed".into()),
                scopes: Some(vec!["keyward:*".into()]),
                expires_at: Some(Some(now + 1_000)),
                ..KeyPatch::default()
            }),
            &at("key.updated", "key_b"),
        )
        .await
        .unwrap();
    assert!(renamed.is_managing_root(now));
    store
        .revoke_key("key_c", None, &at("key.revoked", "key_c"))
        .await
        .unwrap();
    store
        .delete_key("key_d", &at("key.deleted", "key_d"))
        .await
        .unwrap();
    // With a second one, the first may go.
    let e = root_key("key_e", &["keyward:keys:write"]);
    store
        .create_key(&e, &at("key.created", "key_e"))
        .await
        .unwrap();
    store
        .delete_key("key_b", &at("key.deleted", "key_b"))
        .await
        .unwrap();

    // Two root keys ending each other at once, on two handles (on
    // PostgreSQL two connections: two nodes), round after round: one wins,
    // the other is refused, and exactly one remains.
    let managing = |store: &Arc<S>| {
        let store = store.clone();
        async move {
            let f = KeyFilter {
                class: Some(KeyClass::Root),
                status: Some(KeyStatus::Active),
                now,
                ..KeyFilter::default()
            };
            store
                .list_keys(
                    &f,
                    PageRequest {
                        limit: 100,
                        before: None,
                    },
                )
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|(_, k)| k)
                .filter(|k| k.is_managing_root(now))
                .map(|k| k.id)
                .collect::<Vec<_>>()
        }
    };
    let end = |store: Arc<S>, id: String, how: usize| async move {
        let a = at("key.ended", &id);
        match how % 3 {
            0 => store.revoke_key(&id, None, &a).await,
            1 => store.delete_key(&id, &a).await,
            _ => {
                let p = KeyPatch {
                    enabled: Some(false),
                    updated_at: now,
                    ..KeyPatch::default()
                };
                store.update_key(&id, &p, &a).await
            }
        }
    };
    let mut survivor = "key_e".to_owned();
    for round in 0..30 {
        let fresh = root_key(&format!("key_{round:x}f"), &["keyward:*"]);
        store
            .create_key(&fresh, &at("key.created", &fresh.id))
            .await
            .unwrap();
        let (x, y) = tokio::join!(
            end(store.clone(), survivor.clone(), round),
            end(other.clone(), fresh.id.clone(), round + 1),
        );
        let refused = [&x, &y]
            .iter()
            .filter(|r| matches!(r, Err(StoreError::LastRootKey)))
            .count();
        assert_eq!(
            (refused, x.is_ok() || y.is_ok()),
            (1, true),
            "round {round}: {x:?} {y:?}"
        );
        let left = managing(&store).await;
        assert_eq!(left.len(), 1, "round {round}: {left:?}");
        survivor = left[0].clone();
    }
}
