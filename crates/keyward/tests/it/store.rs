//! The store conformance suite: one suite per concern's trait (`tenants`,
//! `keys`, `audit`, `credits`, `idempotency`, `users`, `changes`, `usage`, `leaks`, `events`), each generic over
//! the traits it needs, so another backend implementing some of them can
//! run those; and the one place below that runs every suite on SQLite and
//! on PostgreSQL (which fails loudly if unreachable, never skips). Plus the
//! HTTP walkthrough on PostgreSQL.

mod audit;
mod changes;
pub(crate) mod credits;
mod events;
mod idempotency;
mod keys;
mod leaks;
mod tenants;
mod usage;
mod users;

use std::future::Future;
use std::sync::Arc;

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
        event: None,
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

/// Opens a fresh store on `backend` twice (two handles on one database:
/// two nodes), runs `suite` on them, and closes both.
async fn on<F, Fut>(backend: Backend, suite: F)
where
    F: FnOnce(Arc<SqlStore>, Arc<SqlStore>) -> Fut,
    Fut: Future<Output = ()>,
{
    let url = fresh_store_url(backend).await;
    let store = Arc::new(SqlStore::open(&url).await.unwrap());
    // Opening again (another node, a restart) re-applies nothing.
    let other = Arc::new(SqlStore::open(&url).await.unwrap());
    store.ping().await.unwrap();
    other.ping().await.unwrap();
    suite(store.clone(), other.clone()).await;
    other.close().await;
    store.close().await;
}

/// Every suite, on both backends: `$name_sqlite` and `$name_postgres`.
macro_rules! conformance {
    ($($name:ident: |$a:ident, $b:ident| $suite:expr;)*) => {
        $(
            mod $name {
                use super::*;

                #[tokio::test]
                async fn sqlite() {
                    on(Backend::Sqlite, |$a, $b| async move { $suite.await }).await;
                }

                #[tokio::test]
                async fn postgres() {
                    on(Backend::Postgres, |$a, $b| async move { $suite.await }).await;
                }
            }
        )*
    };
}

conformance! {
    tenants_conformance: |a, b| tenants::suite(a, b);
    keys_conformance: |a, _b| keys::suite(a);
    root_keys_conformance: |a, b| keys::root_keys(a, b);
    audit_conformance: |a, _b| audit::suite(a);
    credits_conformance: |a, b| credits::suite(a, b);
    credits_running_balance_conformance: |a, b| credits::running_balance(a, b);
    idempotency_conformance: |a, b| idempotency::suite(a, b);
    idempotency_quota_conformance: |a, b| idempotency::quota(a, b);
    users_conformance: |a, _b| users::suite(a);
    changes_conformance: |a, b| changes::suite(a, b);
    usage_conformance: |a, b| usage::suite(a, b);
    leaks_conformance: |a, b| leaks::suite(a, b);
    events_conformance: |a, b| events::suite(a, b);
}

#[tokio::test]
async fn change_feed_on_postgres() {
    on(Backend::Postgres, changes::feed).await;
}

#[tokio::test]
async fn walkthrough_on_postgres() {
    crate::api::walkthrough(Backend::Postgres).await;
}
