//! [`LeakStore`]: reports are recorded by hash with their audit entry, one
//! acting report per key hash (later ones repeats, also across two handles
//! on one database), finished once, read back per key, newest first.

use std::sync::Arc;

use keyward_store::*;
use serde_json::json;

fn report(id: &str, hash: &str, key: Option<&str>, at: i64) -> LeakReport {
    LeakReport {
        id: id.into(),
        key_hash: hash.into(),
        key_id: key.map(Into::into),
        tenant_id: key.map(|_| "ten_1".into()),
        token_type: Some("keyward_api_key".into()),
        url: Some(format!("https://github.com/a/b/{id}")),
        source: Some("content".into()),
        reporter: "github".into(),
        received_at: at,
        status: if key.is_some() {
            LeakStatus::Pending
        } else {
            LeakStatus::Unmatched
        },
        action: None,
        applied_at: None,
        detail: None,
    }
}

pub(super) async fn suite<S: LeakStore + KeyStore + TenantStore + AuditStore + 'static>(
    a: Arc<S>,
    b: Arc<S>,
) {
    let t = Tenant {
        id: "ten_1".into(),
        name: "t".into(),
        metadata: json!({}),
        created_at: 1,
        updated_at: 1,
        tier: None,
        grantable_scopes: None,
        credits_low_threshold: None,
    };
    a.create_tenant(&t, &super::audit("tenant.created", "ten_1", 1))
        .await
        .unwrap();
    let h1 = "1".repeat(64);
    let h2 = "2".repeat(64);
    a.create_key(
        &super::key("key_1", "one", &h1),
        &super::audit("key.created", "key_1", 2),
    )
    .await
    .unwrap();

    // The first report of a key acts, with its audit entry.
    let audit = super::audit("key.leaked", "key_1", 10);
    let first = a
        .record_leak(&report("leak_1", &h1, Some("key_1"), 10), Some(&audit))
        .await
        .unwrap();
    assert_eq!(first.status, LeakStatus::Pending);
    assert_eq!(first, report("leak_1", &h1, Some("key_1"), 10));
    // Again, through the other node: a repeat.
    let again = b
        .record_leak(&report("leak_2", &h1, Some("key_1"), 11), None)
        .await
        .unwrap();
    assert_eq!(again.status, LeakStatus::Repeat);
    // A hash of no key: unmatched, never pending.
    let none = a
        .record_leak(&report("leak_3", &h2, None, 12), None)
        .await
        .unwrap();
    assert_eq!(none.status, LeakStatus::Unmatched);
    let events = a
        .list_audit(
            &AuditFilter::default(),
            PageRequest {
                limit: 100,
                before: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        events
            .items
            .iter()
            .filter(|(_, e)| e.action == "key.leaked")
            .count(),
        1
    );

    // Only the acting report is pending.
    let pending = b.pending_leaks(10).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].id, "leak_1");
    assert_eq!(
        a.get_leak("leak_2").await.unwrap().status,
        LeakStatus::Repeat
    );
    assert!(matches!(
        a.get_leak("leak_nope").await,
        Err(StoreError::NotFound)
    ));

    // Finished once: a second finish (another node's sweep) changes nothing.
    assert!(a
        .finish_leak("leak_1", LeakStatus::Applied, "revoke", None, 20)
        .await
        .unwrap());
    assert!(!b
        .finish_leak("leak_1", LeakStatus::Failed, "disable", Some("x"), 21)
        .await
        .unwrap());
    let done = b.get_leak("leak_1").await.unwrap();
    assert_eq!(
        (
            done.status,
            done.action.as_deref(),
            done.applied_at,
            done.detail
        ),
        (LeakStatus::Applied, Some("revoke"), Some(20), None)
    );
    assert!(a.pending_leaks(10).await.unwrap().is_empty());

    // A key's reports, newest first; which keys were reported.
    let mine: Vec<String> = a
        .leaks_of_key("key_1", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(mine, ["leak_2", "leak_1"]);
    assert_eq!(a.leaks_of_key("key_1", 1).await.unwrap().len(), 1);
    assert_eq!(
        a.leaked_keys(&["key_1".into(), "key_2".into()])
            .await
            .unwrap(),
        ["key_1"]
    );
    assert!(a.leaked_keys(&[]).await.unwrap().is_empty());

    // A refused report writes its audit entry only.
    a.audit_refused_leak(&super::audit("leak.report_refused", "github", 30))
        .await
        .unwrap();
    let events = b
        .list_audit(
            &AuditFilter::default(),
            PageRequest {
                limit: 1,
                before: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(events.items[0].1.action, "leak.report_refused");
}
