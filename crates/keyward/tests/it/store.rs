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
        rate_limit: Some(keyward_store::RateLimitOverride {
            limit: 10,
            window_ms: 60_000,
            burst: 5,
        }),
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
        tier: Some("gold".into()),
        grantable_scopes: Some(vec!["keyward:keys:*".into(), "vox:*".into()]),
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
                tier: Some(None),
                grantable_scopes: None,
                updated_at: 2,
            },
            &audit("tenant.updated", "ten_1", 2),
        )
        .await
        .unwrap();
    assert_eq!((patched.name.as_str(), patched.updated_at), ("Uno", 2));
    assert_eq!(patched.tier, None);
    // A patch without a ceiling leaves it; null clears it; an empty ceiling
    // (nothing grantable) is not the same as none.
    assert_eq!(patched.grantable_scopes, t.grantable_scopes);
    let ceiling = |g: Option<Vec<String>>| TenantPatch {
        grantable_scopes: Some(g),
        updated_at: 2,
        ..TenantPatch::default()
    };
    let cleared = store
        .update_tenant(
            "ten_1",
            &ceiling(None),
            &audit("tenant.updated", "ten_1", 21),
        )
        .await
        .unwrap();
    assert_eq!(cleared.grantable_scopes, None);
    store
        .update_tenant(
            "ten_1",
            &ceiling(Some(Vec::new())),
            &audit("tenant.updated", "ten_1", 22),
        )
        .await
        .unwrap();
    assert_eq!(
        store2.get_tenant("ten_1").await.unwrap().grantable_scopes,
        Some(Vec::new())
    );
    store
        .update_tenant(
            "ten_1",
            &ceiling(None),
            &audit("tenant.updated", "ten_1", 23),
        )
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
    // tenant created and updated (four times), key_1 and key_root1 created.
    assert_eq!(events.items.len(), 7);
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
    // Twelve events of ten_1's keys and tenant, and key_root1's (its audit
    // entry names ten_1 too, as the test helper does).
    assert_eq!(all.len(), 13);
    store.close().await;
    store2.close().await;
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

/// The last active root key that can manage keys cannot be revoked,
/// deleted, disabled or stripped of `keyward:keys:write`, and two root keys
/// ending each other at once (on two handles: two nodes) leave one.
async fn root_keys_conformance(backend: Backend) {
    let url = fresh_store_url(backend).await;
    let store = SqlStore::open(&url).await.unwrap();
    let now = 2_000;
    let at = |action: &str, target: &str| AuditEntry {
        tenant_id: None,
        ..audit(action, target, now)
    };
    let events = |store: &SqlStore| {
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
    let other = SqlStore::open(&url).await.unwrap();
    let managing = |store: &SqlStore| {
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
    let end = |store: SqlStore, id: String, how: usize| async move {
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
    other.close().await;
    store.close().await;
}

#[tokio::test]
async fn conformance_sqlite() {
    conformance(Backend::Sqlite).await;
}

#[tokio::test]
async fn root_keys_conformance_sqlite() {
    root_keys_conformance(Backend::Sqlite).await;
}

#[tokio::test]
async fn root_keys_conformance_postgres() {
    root_keys_conformance(Backend::Postgres).await;
}

#[tokio::test]
async fn conformance_postgres() {
    conformance(Backend::Postgres).await;
}

#[tokio::test]
async fn walkthrough_on_postgres() {
    crate::api::walkthrough(Backend::Postgres).await;
}

/// Credits and idempotency records, the same on both backends. Two handles
/// on one database stand for two nodes.
async fn limits_conformance(backend: Backend) {
    use keyward_store::limits::*;
    let url = fresh_store_url(backend).await;
    let a = SqlStore::open(&url).await.unwrap();
    let b = SqlStore::open(&url).await.unwrap();
    let t = "ten_credits";
    let reserve = |node: &str, min: i64, want: i64| ReserveRequest {
        tenant_id: t.into(),
        node_id: node.into(),
        min,
        want,
        refill: None,
    };
    // A tenant that never had credits has none, and reserves nothing.
    assert_eq!(a.credit_account(t, None, 10).await.unwrap().balance, 0);
    let r = a.reserve_credits(&reserve("n1", 1, 5), 10).await.unwrap();
    assert_eq!(r.granted, 0);

    // Grant 10: idempotent by key, and the ledger and audit log record it once.
    let grant = |key: Option<&str>, amount: i64, fp: &str| CreditChange {
        id: format!("led_{fp}_{amount}"),
        tenant_id: t.into(),
        kind: LedgerKind::Grant,
        amount,
        at: 20,
        actor: "key_root".into(),
        reason: Some("welcome".into()),
        idempotency_key: key.map(str::to_owned),
        fingerprint: fp.into(),
        refill: None,
    };
    let first = a
        .change_credits(
            &grant(Some("g1"), 10, "fp1"),
            &audit("credits.granted", t, 20),
        )
        .await
        .unwrap();
    assert!(!first.replayed);
    assert_eq!(first.entry.balance_after, 10);
    let again = b
        .change_credits(
            &grant(Some("g1"), 10, "fp1"),
            &audit("credits.granted", t, 21),
        )
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.entry, first.entry);
    assert!(matches!(
        a.change_credits(
            &grant(Some("g1"), 11, "fp2"),
            &audit("credits.granted", t, 22)
        )
        .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(a.credit_account(t, None, 23).await.unwrap().balance, 10);

    // Reservations leave the balance at once and never exceed it; below
    // `min` nothing is taken.
    let r = a.reserve_credits(&reserve("n1", 3, 8), 30).await.unwrap();
    assert_eq!((r.granted, r.balance), (8, 2));
    assert_eq!(
        b.reserve_credits(&reserve("n2", 3, 5), 30)
            .await
            .unwrap()
            .granted,
        0
    );
    let r = b.reserve_credits(&reserve("n2", 2, 5), 30).await.unwrap();
    assert_eq!((r.granted, r.balance), (2, 0));
    // n1 spent 6 of its 8 (key_c, capped, spent 5 of them) and gives 2 back.
    a.settle_credits(
        "n1",
        &[Settlement {
            tenant_id: t.into(),
            spent: 6,
            requests: 2,
            release: 2,
            key_id: None,
            key_spends: vec![("key_c".into(), 5)],
            remaining: 0,
        }],
        31,
    )
    .await
    .unwrap();
    assert_eq!(a.credit_account(t, None, 32).await.unwrap().balance, 2);
    assert_eq!(a.key_credits_spent("key_c").await.unwrap(), 5);
    assert_eq!(a.key_credits_spent("key_none").await.unwrap(), 0);
    // n2 stops without settling: another node counts its 2 as spent once
    // they are stale, and a late settlement from n2 changes nothing.
    assert_eq!(
        a.recover_reservations(
            Recover::StaleExcept {
                node_id: "n1",
                before: 30
            },
            40
        )
        .await
        .unwrap(),
        0,
        "not stale yet"
    );
    assert_eq!(
        a.recover_reservations(
            Recover::StaleExcept {
                node_id: "n1",
                before: 31
            },
            40
        )
        .await
        .unwrap(),
        1
    );
    b.settle_credits(
        "n2",
        &[Settlement {
            tenant_id: t.into(),
            spent: 1,
            requests: 1,
            release: 1,
            ..Settlement::default()
        }],
        41,
    )
    .await
    .unwrap();
    assert_eq!(a.credit_account(t, None, 42).await.unwrap().balance, 2);

    // Never negative: an adjustment below zero is refused.
    assert!(matches!(
        a.change_credits(
            &CreditChange {
                kind: LedgerKind::Adjust,
                ..grant(None, -3, "fp3")
            },
            &audit("credits.adjusted", t, 43)
        )
        .await,
        Err(StoreError::Conflict(_))
    ));

    // Concurrent reservations from two nodes take exactly the balance.
    a.change_credits(&grant(None, 38, "fp4"), &audit("credits.granted", t, 44))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (s, node) = if i % 2 == 0 {
            (a.clone(), "n1")
        } else {
            (b.clone(), "n3")
        };
        let req = reserve(node, 1, 3);
        tasks.push(tokio::spawn(async move {
            (
                i % 2 == 0,
                s.reserve_credits(&req, 45).await.unwrap().granted,
            )
        }));
    }
    let (mut total, mut n1) = (0, 0);
    for task in tasks {
        let (is_n1, granted) = task.await.unwrap();
        total += granted;
        if is_n1 {
            n1 += granted;
        }
    }
    assert_eq!(total, 40);
    assert_eq!(a.credit_account(t, None, 46).await.unwrap().balance, 0);
    // n3 crashes and comes back: its own reservation is counted as spent.
    let n = b
        .recover_reservations(Recover::Node("n3"), 47)
        .await
        .unwrap();
    assert_eq!(n, 1);
    a.settle_credits(
        "n1",
        &[Settlement {
            tenant_id: t.into(),
            spent: n1,
            requests: n1,
            key_id: Some("key_d".into()),
            ..Settlement::default()
        }],
        48,
    )
    .await
    .unwrap();

    // Refills: a tier schedule applies on first sight, then at boundaries;
    // the tenant's own schedule wins over it.
    let monthly_set = Refill {
        amount: 100,
        every: RefillPeriod::Monthly,
        mode: RefillMode::Set,
    };
    let t2 = "ten_refill";
    let now = 1_795_371_590_000; // 2026-11-22T18:19:50Z
    let acc = a.credit_account(t2, Some(monthly_set), now).await.unwrap();
    assert_eq!(acc.balance, 100);
    assert_eq!(acc.next_refill_at, Some(1_796_083_200_000));
    let out = a
        .reserve_credits(
            &ReserveRequest {
                tenant_id: t2.into(),
                node_id: "n1".into(),
                min: 30,
                want: 30,
                refill: Some(monthly_set),
            },
            now + 1,
        )
        .await
        .unwrap();
    assert_eq!(out.balance, 70);
    // Not due yet: nothing changes; due: set back to 100.
    let acc = a
        .credit_account(t2, Some(monthly_set), now + 2)
        .await
        .unwrap();
    assert_eq!(acc.balance, 70);
    let acc = a
        .credit_account(t2, Some(monthly_set), 1_796_083_200_000)
        .await
        .unwrap();
    assert_eq!(acc.balance, 100);
    let own = Refill {
        amount: 5,
        every: RefillPeriod::Daily,
        mode: RefillMode::Add,
    };
    a.set_refill(
        t2,
        Some(own),
        1_796_083_200_001,
        &audit("credits.refill_set", t2, 1),
    )
    .await
    .unwrap();
    let acc = a
        .credit_account(t2, Some(monthly_set), 1_796_083_200_002)
        .await
        .unwrap();
    assert_eq!(acc.balance, 105, "the tenant's own add-5 applies at once");
    assert_eq!(acc.refill, Some(own));

    // The ledger pages newest first and accounts for every change.
    let page = a
        .list_ledger(
            t,
            PageRequest {
                limit: 3,
                before: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(page.items.len(), 3);
    let mut all = page.items.clone();
    let mut next = page.next;
    while let Some(before) = next {
        let p = a
            .list_ledger(
                t,
                PageRequest {
                    limit: 3,
                    before: Some(before),
                },
            )
            .await
            .unwrap();
        all.extend(p.items);
        next = p.next;
    }
    let sum: i64 = all.iter().map(|(_, e)| e.amount).sum();
    assert_eq!(sum, 0, "grants of 10 + 38; spends and recoveries of 48");
    let recovered = all
        .iter()
        .filter(|(_, e)| {
            e.reason
                .as_deref()
                .is_some_and(|r| r.contains("counted as spent"))
        })
        .count();
    assert_eq!(recovered, 2, "n2 (stale) and n3 (its own restart)");
    assert_eq!(
        all.iter()
            .filter(|(_, e)| e.kind == LedgerKind::Grant)
            .count(),
        2
    );

    // Idempotency records: claim, in progress, mismatch, complete, replay,
    // expiry; an abandoned claim can be taken over after its lock.
    let claim = |key: &str, fp: &str, now: i64| IdempotencyClaim {
        scope: "ten_1/key_1".into(),
        key: key.into(),
        fingerprint: fp.into(),
        now,
        lock_until: now + 60_000,
        expires_at: now + 86_400_000,
    };
    assert_eq!(
        a.claim_idempotency(&claim("k1", "f", 0)).await.unwrap(),
        ClaimOutcome::Claimed
    );
    assert_eq!(
        b.claim_idempotency(&claim("k1", "f", 1)).await.unwrap(),
        ClaimOutcome::InProgress
    );
    assert_eq!(
        b.claim_idempotency(&claim("k1", "g", 1)).await.unwrap(),
        ClaimOutcome::Mismatch
    );
    let stored = StoredResponse {
        status: 201,
        headers: vec![("content-type".into(), "application/json".into())],
        body: b"{\"id\":1}".to_vec(),
    };
    a.complete_idempotency("ten_1/key_1", "k1", &stored, 86_400_000)
        .await
        .unwrap();
    assert_eq!(
        b.claim_idempotency(&claim("k1", "f", 2)).await.unwrap(),
        ClaimOutcome::Completed(stored.clone())
    );
    // Another scope is another key space.
    let mut other = claim("k1", "f", 3);
    other.scope = "ten_2/key_9".into();
    assert_eq!(
        a.claim_idempotency(&other).await.unwrap(),
        ClaimOutcome::Claimed
    );
    // Past its window the key is free again.
    assert_eq!(
        a.claim_idempotency(&claim("k1", "h", 86_400_001))
            .await
            .unwrap(),
        ClaimOutcome::Claimed
    );
    // Abandoned: in progress until the lock passes, then taken over.
    a.claim_idempotency(&claim("k2", "f", 0)).await.unwrap();
    assert_eq!(
        b.claim_idempotency(&claim("k2", "f", 59_999))
            .await
            .unwrap(),
        ClaimOutcome::InProgress
    );
    assert_eq!(
        b.claim_idempotency(&claim("k2", "f", 60_000))
            .await
            .unwrap(),
        ClaimOutcome::Claimed
    );
    // Released: free at once.
    a.claim_idempotency(&claim("k3", "f", 0)).await.unwrap();
    a.release_idempotency("ten_1/key_1", "k3").await.unwrap();
    assert_eq!(
        b.claim_idempotency(&claim("k3", "f", 1)).await.unwrap(),
        ClaimOutcome::Claimed
    );
    // Purge removes what expired and nothing else.
    // (k3 was claimed at 1, so its record ends at 86_400_001.)
    a.complete_idempotency("ten_2/key_9", "k1", &stored, 200_000_000)
        .await
        .unwrap();
    assert_eq!(a.purge_idempotency(86_400_000).await.unwrap(), 0);
    assert_eq!(a.purge_idempotency(86_400_002).await.unwrap(), 1);
    assert_eq!(a.purge_idempotency(86_400_002).await.unwrap(), 0);
    let mut later = claim("k1", "f", 199_999_999);
    later.scope = "ten_2/key_9".into();
    assert_eq!(
        b.claim_idempotency(&later).await.unwrap(),
        ClaimOutcome::Completed(stored.clone()),
        "a completed record inside its window survives the purge"
    );
}

#[tokio::test]
async fn limits_conformance_sqlite() {
    limits_conformance(Backend::Sqlite).await;
}

#[tokio::test]
async fn limits_conformance_postgres() {
    limits_conformance(Backend::Postgres).await;
}
