//! [`ChangeStore`]: every change that can make a cached key stale lands in
//! the change log in its own transaction (table triggers), in `seq` order;
//! last-use updates do not; explicit changes round-trip; pruning works; on
//! PostgreSQL the live feed delivers a change committed through another
//! handle (another node).

use std::sync::Arc;
use std::time::Duration;

use keyward_store::*;
use serde_json::json;

use super::{audit, key};

async fn since<S: ChangeStore>(store: &S, after: i64) -> Vec<Change> {
    store.changes_after(after, 100).await.unwrap()
}

/// `store2` is a second handle on the same database (another node).
pub(super) async fn suite<S>(store: Arc<S>, store2: Arc<S>)
where
    S: ChangeStore + KeyStore + TenantStore + 'static,
{
    let start = store.last_change_seq().await.unwrap();
    let tenant = Tenant {
        id: "ten_1".into(),
        name: "One".into(),
        metadata: json!({}),
        created_at: 1,
        updated_at: 1,
        tier: None,
        grantable_scopes: None,
        credits_low_threshold: None,
    };
    store
        .create_tenant(&tenant, &audit("tenant.created", "ten_1", 1))
        .await
        .unwrap();
    store
        .create_key(
            &key("key_1", "one", "aa11"),
            &audit("key.created", "key_1", 2),
        )
        .await
        .unwrap();
    // Creating rows is nothing a cache can hold stale.
    assert!(since(store.as_ref(), start).await.is_empty());

    // Last use changes on every request and is left out.
    store
        .touch_keys(&[KeyUse {
            key_id: "key_1".into(),
            at: 10,
            ip: Some("192.0.2.7".into()),
        }])
        .await
        .unwrap();
    assert!(since(store.as_ref(), start).await.is_empty());

    let patch = KeyPatch {
        scopes: Some(vec!["x:y".into()]),
        updated_at: 3,
        ..KeyPatch::default()
    };
    store
        .update_key("key_1", &patch, &audit("key.updated", "key_1", 3))
        .await
        .unwrap();
    store2
        .revoke_key("key_1", Some("leaked"), &audit("key.revoked", "key_1", 4))
        .await
        .unwrap();
    store
        .update_tenant(
            "ten_1",
            &TenantPatch {
                name: Some("Uno".into()),
                updated_at: 5,
                ..TenantPatch::default()
            },
            &audit("tenant.updated", "ten_1", 5),
        )
        .await
        .unwrap();
    let reclaim = store2
        .record_change(ChangeKind::CreditsReclaim, Some("ten_1"), Some("node-b"), 6)
        .await
        .unwrap();

    // Both handles read the same log, in commit order here.
    let log = since(store2.as_ref(), start).await;
    assert_eq!(log, since(store.as_ref(), start).await);
    let kinds: Vec<_> = log.iter().map(|c| c.kind.clone()).collect();
    assert_eq!(
        kinds,
        [
            ChangeKind::Key,
            ChangeKind::Key,
            ChangeKind::Tenant,
            ChangeKind::CreditsReclaim
        ]
    );
    assert!(log.windows(2).all(|w| w[0].seq < w[1].seq));
    for c in &log[..2] {
        assert_eq!(c.key_hash.as_deref(), Some("aa11"));
        assert_eq!(c.tenant_id.as_deref(), Some("ten_1"));
        assert_eq!(c.origin, None);
    }
    assert_eq!(log[2].tenant_id.as_deref(), Some("ten_1"));
    assert_eq!(log[2].key_hash, None);
    assert_eq!(log[3].seq, reclaim);
    assert_eq!(log[3].origin.as_deref(), Some("node-b"));
    assert_eq!(store.last_change_seq().await.unwrap(), reclaim);
    // Paging: `after` and `limit`.
    let first_two = store.changes_after(start, 2).await.unwrap();
    assert_eq!(first_two, log[..2].to_vec());
    assert_eq!(since(store.as_ref(), log[1].seq).await, log[2..].to_vec());

    // Deleting counts too.
    store
        .delete_key("key_1", &audit("key.deleted", "key_1", 7))
        .await
        .unwrap();
    let after_delete = since(store.as_ref(), reclaim).await;
    assert_eq!(after_delete.len(), 1);
    assert_eq!(after_delete[0].kind, ChangeKind::Key);

    // Pruning by time: the explicit change was recorded at 6 (ms since
    // the epoch); trigger rows carry the store's clock (now).
    assert_eq!(store.prune_changes(7).await.unwrap(), 1);
    let kept = since(store.as_ref(), start).await;
    assert_eq!(kept.len(), 4);
    assert!(kept.iter().all(|c| c.kind != ChangeKind::CreditsReclaim));
}

/// PostgreSQL: a change committed through one handle arrives on the other's
/// live feed as it commits; a cut connection says so (`None`) and a new
/// feed hears what follows.
pub(super) async fn feed(store: Arc<SqlStore>, store2: Arc<SqlStore>) {
    let mut feed = store
        .change_feed("keyward-changes/conformance")
        .await
        .unwrap()
        .expect("PostgreSQL has a live feed");
    let seq = store2
        .record_change(ChangeKind::CreditsReclaim, Some("ten_9"), Some("b"), 1)
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), feed.next())
        .await
        .expect("the notice arrives")
        .unwrap()
        .expect("a change, not a lost connection");
    assert_eq!(got.seq, seq);
    assert_eq!(got.kind, ChangeKind::CreditsReclaim);
    assert_eq!(got.tenant_id.as_deref(), Some("ten_9"));
    assert_eq!(got.origin.as_deref(), Some("b"));
    // A ping: a notice that changes nothing, and is in no log.
    store2.ping_feed("node-b").await.unwrap();
    let ping = tokio::time::timeout(Duration::from_secs(5), feed.next())
        .await
        .expect("the ping arrives")
        .unwrap()
        .expect("a notice");
    assert_eq!(ping.kind, ChangeKind::Other("ping".into()));
    assert_eq!((ping.seq, ping.origin.as_deref()), (0, Some("node-b")));
    assert_eq!(store.last_change_seq().await.unwrap(), seq);

    // The feed's connection is named, so operators (and tests) can find it.
    let base = std::env::var("KEYWARD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| crate::kit::PG_DEFAULT.to_owned());
    let mut admin = <sqlx::AnyConnection as sqlx::Connection>::connect(&base)
        .await
        .unwrap();
    let cut = sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = 'keyward-changes/conformance'",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(cut.len(), 1, "one named feed connection");
    let lost = tokio::time::timeout(Duration::from_secs(5), feed.next())
        .await
        .expect("the loss is reported");
    assert!(matches!(lost, Ok(None) | Err(_)), "{lost:?}");
    drop(feed);

    let mut again = store
        .change_feed("keyward-changes/conformance")
        .await
        .unwrap()
        .expect("a live feed");
    let seq = store2
        .record_change(ChangeKind::Tenant, Some("ten_9"), None, 2)
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), again.next())
        .await
        .expect("the notice arrives")
        .unwrap()
        .expect("a change");
    assert_eq!(got.seq, seq);
}
