//! [`TenantStore`]: create, read, list, patch (the grantable-scope ceiling
//! included), read back through a second handle.

use std::sync::Arc;

use keyward_store::*;
use serde_json::json;

use super::audit;

/// `store2` is a second handle on the same database (another node).
pub(super) async fn suite<S: TenantStore + 'static>(store: Arc<S>, store2: Arc<S>) {
    let t = Tenant {
        id: "ten_1".into(),
        name: "One".into(),
        metadata: json!({}),
        created_at: 1,
        updated_at: 1,
        tier: Some("gold".into()),
        grantable_scopes: Some(vec!["keyward:keys:*".into(), "vox:*".into()]),
        credits_low_threshold: None,
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
                credits_low_threshold: None,
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
        credits_low_threshold: None,
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

    // Ids are unique.
    assert!(matches!(
        store
            .create_tenant(&t, &audit("tenant.created", "ten_1", 3))
            .await,
        Err(StoreError::Conflict(_))
    ));
    // Patching a tenant that does not exist changes nothing.
    assert!(matches!(
        store
            .update_tenant(
                "nope",
                &TenantPatch {
                    metadata: Some(json!({ "x": 1 })),
                    updated_at: 3,
                    ..TenantPatch::default()
                },
                &audit("tenant.updated", "nope", 3),
            )
            .await,
        Err(StoreError::NotFound)
    ));
    // The metadata patch replaces it; the rest stays.
    let m = store
        .update_tenant(
            "ten_1",
            &TenantPatch {
                metadata: Some(json!({ "plan": "pro", "n": [1, 2] })),
                tier: Some(Some("silver".into())),
                updated_at: 4,
                ..TenantPatch::default()
            },
            &audit("tenant.updated", "ten_1", 4),
        )
        .await
        .unwrap();
    assert_eq!(m.metadata, json!({ "plan": "pro", "n": [1, 2] }));
    assert_eq!(
        (m.name.as_str(), m.tier.as_deref()),
        ("Uno", Some("silver"))
    );
    assert_eq!(m.created_at, 1);
    assert_eq!(store2.get_tenant("ten_1").await.unwrap(), m);

    // Listing pages newest first, complete and without repeats.
    for i in 2..=5 {
        let ti = Tenant {
            id: format!("ten_{i}"),
            name: format!("T{i}"),
            ..t.clone()
        };
        store
            .create_tenant(&ti, &audit("tenant.created", &ti.id, 10 + i))
            .await
            .unwrap();
    }
    let mut ids = Vec::new();
    let mut before = None;
    let mut pages = 0;
    loop {
        let page = store2
            .list_tenants(PageRequest { limit: 2, before })
            .await
            .unwrap();
        pages += 1;
        assert!(page.items.len() <= 2);
        ids.extend(page.items.iter().map(|(_, t)| t.id.clone()));
        match page.next {
            Some(n) => before = Some(n),
            None => break,
        }
    }
    assert_eq!(ids, ["ten_5", "ten_4", "ten_3", "ten_2", "ten_1"]);
    assert_eq!(pages, 3);
    let all = store
        .list_tenants(PageRequest {
            limit: 10,
            before: None,
        })
        .await
        .unwrap();
    assert_eq!(all.next, None);
    assert_eq!(all.items.last().map(|(_, t)| t), Some(&m));
}
