//! [`AuditStore`]: the log reads back what each change wrote, newest first,
//! by tenant or all, in complete pages without repeats. (The key suite
//! checks that key changes write their events, and failed ones none.)

use std::sync::Arc;

use keyward_store::*;
use serde_json::json;

/// Events written through [`TenantStore`] changes (a store writes audit
/// events only with a change).
pub(super) async fn suite<S: TenantStore + AuditStore + 'static>(store: Arc<S>) {
    let entry = |n: i64, tenant: &str| AuditEntry {
        id: format!("evt_{n}"),
        at: 100 + n,
        actor: format!("key_actor{n}"),
        actor_ip: (n % 2 == 0).then(|| "2001:db8::7".to_owned()),
        tenant_id: Some(tenant.to_owned()),
        action: if n < 2 {
            "tenant.created"
        } else {
            "tenant.updated"
        }
        .into(),
        target: tenant.to_owned(),
        details: json!({ "changed": ["name"], "n": n, "reason": "ünïcode ✓" }),
        event: None,
    };
    for (id, n) in [("ten_a", 0), ("ten_b", 1)] {
        let t = Tenant {
            id: id.into(),
            name: id.into(),
            metadata: json!({}),
            created_at: 1,
            updated_at: 1,
            tier: None,
            grantable_scopes: None,
            credits_low_threshold: None,
        };
        store.create_tenant(&t, &entry(n, id)).await.unwrap();
    }
    for n in 2..9 {
        let id = if n % 3 == 0 { "ten_b" } else { "ten_a" };
        let patch = TenantPatch {
            name: Some(format!("name {n}")),
            updated_at: 100 + n,
            ..TenantPatch::default()
        };
        store
            .update_tenant(id, &patch, &entry(n, id))
            .await
            .unwrap();
    }

    // Every field comes back as written, with a sequence number.
    let all = store
        .list_audit(
            &AuditFilter::default(),
            PageRequest {
                limit: 100,
                before: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(all.next, None);
    assert_eq!(all.items.len(), 9);
    let (seq, newest) = &all.items[0];
    let written = entry(8, "ten_a");
    assert_eq!(
        newest,
        &AuditEvent {
            seq: *seq,
            id: written.id,
            at: written.at,
            actor: written.actor,
            actor_ip: written.actor_ip,
            tenant_id: written.tenant_id,
            action: written.action,
            target: written.target,
            details: written.details,
        }
    );
    assert_eq!(all.items[1].1.actor_ip, None);
    // Newest first: sequence numbers fall, ids in reverse order of writing.
    assert!(all.items.windows(2).all(|w| w[0].0 > w[1].0));
    let ids: Vec<&str> = all.items.iter().map(|(_, e)| e.id.as_str()).collect();
    assert_eq!(
        ids,
        ["evt_8", "evt_7", "evt_6", "evt_5", "evt_4", "evt_3", "evt_2", "evt_1", "evt_0"]
    );

    // By tenant, in pages of two: complete, without repeats, `next` only
    // while more follow.
    let pages = |tenant: &'static str| {
        let store = store.clone();
        async move {
            let mut ids = Vec::new();
            let mut before = None;
            loop {
                let page = store
                    .list_audit(
                        &AuditFilter {
                            tenant_id: Some(tenant.into()),
                        },
                        PageRequest { limit: 2, before },
                    )
                    .await
                    .unwrap();
                assert!(page.items.len() <= 2);
                assert!(page.items.iter().all(|(s, e)| *s == e.seq));
                ids.extend(page.items.iter().map(|(_, e)| e.id.clone()));
                match page.next {
                    Some(n) => before = Some(n),
                    None => break,
                }
            }
            ids
        }
    };
    assert_eq!(
        pages("ten_a").await,
        ["evt_8", "evt_7", "evt_5", "evt_4", "evt_2", "evt_0"]
    );
    assert_eq!(pages("ten_b").await, ["evt_6", "evt_3", "evt_1"]);
    assert!(pages("ten_none").await.is_empty());
    // A cursor past the oldest gives nothing.
    let oldest = all.items.last().map(|(s, _)| *s).unwrap();
    let none = store
        .list_audit(
            &AuditFilter::default(),
            PageRequest {
                limit: 5,
                before: Some(oldest),
            },
        )
        .await
        .unwrap();
    assert!(none.items.is_empty() && none.next.is_none());
}
