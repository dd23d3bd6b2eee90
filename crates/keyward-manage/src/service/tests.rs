//! The service over a real store (SqlStore on a temporary SQLite file).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use keyward_core::clock::ManualClock;
use keyward_core::scope::ScopeCatalog;
use keyward_core::secret::{KeyFormat, OsEntropy};
use keyward_store::{AuditFilter, KeyClass, PageRequest, SqlStore, Store};

use crate::{
    Actor, ChangeEvent, Cursor, Invalidator, KeyChanges, ManageError, ManagePolicy, ManageService,
    NewKey, NewTenant, Paging,
};

#[derive(Default)]
struct Recorder(Mutex<Vec<ChangeEvent>>);

impl Invalidator for Recorder {
    fn changed(&self, event: &ChangeEvent) {
        self.0.lock().unwrap().push(event.clone());
    }
}

impl Recorder {
    fn take(&self) -> Vec<ChangeEvent> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

struct Fixture {
    manage: ManageService,
    store: Arc<dyn Store>,
    events: Arc<Recorder>,
}

async fn fixture() -> Fixture {
    let dir = std::env::temp_dir().join(format!(
        "keyward-manage-{}-{}",
        std::process::id(),
        keyward_core::id::new_id("t", &OsEntropy).unwrap()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("keyward.db").display());
    let store: Arc<dyn Store> = Arc::new(SqlStore::open(&url).await.unwrap());
    let events = Arc::new(Recorder::default());
    let policy = ManagePolicy {
        format: KeyFormat::new([("live", "kw_live_"), ("test", "kw_test_")], "kw_root_").unwrap(),
        catalog: ScopeCatalog::new(["vox:calls:read", "vox:calls:write"]).unwrap(),
        tiers: BTreeMap::new(),
        default_refill: None,
        metadata_max_bytes: 4096,
        invite_ttl_ms: 3_600_000,
        leaks: crate::LeakPolicy::default(),
    };
    let manage = ManageService::new(
        Arc::clone(&store),
        Arc::new(ManualClock::starting_now()),
        Arc::new(OsEntropy),
        Arc::clone(&events) as Arc<dyn Invalidator>,
        policy,
    );
    Fixture {
        manage,
        store,
        events,
    }
}

fn tenant_key(tenant: &str, scopes: &[&str]) -> Actor {
    Actor::Key {
        id: format!("key_of_{tenant}"),
        class: KeyClass::Tenant,
        tenant_id: Some(tenant.to_owned()),
        scopes: keyward_core::scope::ScopeSet::new(scopes.iter().map(|s| (*s).to_owned())),
        ip: None,
    }
}

async fn tenant(f: &Fixture, id: &str) {
    f.manage
        .create_tenant(
            &Actor::host("cli"),
            NewTenant {
                id: Some(id.into()),
                name: id.into(),
                ..NewTenant::default()
            },
        )
        .await
        .unwrap();
}

fn new_key(name: &str, scopes: &[&str]) -> NewKey {
    NewKey {
        name: name.into(),
        environment: "live".into(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        ..NewKey::default()
    }
}

#[tokio::test]
async fn a_tenant_key_does_not_see_another_tenant() {
    let f = fixture().await;
    tenant(&f, "acme").await;
    tenant(&f, "globex").await;
    let globex = tenant_key("globex", &["keyward:*", "vox:*"]);
    let theirs = f
        .manage
        .create_key(&globex, new_key("theirs", &["vox:calls:read"]))
        .await
        .unwrap();
    let acme = tenant_key("acme", &["keyward:*", "vox:*"]);
    let refused = [
        f.manage.get_tenant(&acme, "globex").await.err(),
        f.manage.get_key(&acme, &theirs.record.id).await.err(),
        f.manage
            .revoke_key(&acme, &theirs.record.id, None)
            .await
            .err(),
        f.manage
            .create_key(
                &acme,
                NewKey {
                    tenant_id: Some("globex".into()),
                    ..new_key("mine", &[])
                },
            )
            .await
            .err(),
    ];
    for r in refused {
        assert!(matches!(r, Some(ManageError::NotFound(_))), "{r:?}");
    }
    // Without the scope: refused before anything is looked up.
    let reader = tenant_key("acme", &["keyward:keys:read"]);
    let r = f.manage.create_key(&reader, new_key("x", &[])).await;
    assert!(
        matches!(&r, Err(ManageError::InsufficientScope { missing }) if missing == &["keyward:keys:write"]),
        "{r:?}"
    );
    // A key grants only what it holds.
    let narrow = tenant_key("acme", &["keyward:keys:write", "vox:calls:read"]);
    let r = f
        .manage
        .create_key(&narrow, new_key("wide", &["vox:calls:write"]))
        .await;
    assert!(
        matches!(r, Err(ManageError::ScopeNotGrantable { .. })),
        "{r:?}"
    );
}

#[tokio::test]
async fn every_change_has_one_event_and_one_audit_entry_after_commit() {
    let f = fixture().await;
    let host = Actor::host("cli");
    tenant(&f, "acme").await;
    let actor = tenant_key("acme", &["keyward:*", "vox:*"]);
    let created = f
        .manage
        .create_key(&actor, new_key("one", &["vox:calls:read"]))
        .await
        .unwrap();
    let id = created.record.id.clone();
    f.manage
        .update_key(
            &actor,
            &id,
            KeyChanges {
                name: Some("renamed".into()),
                ..KeyChanges::default()
            },
        )
        .await
        .unwrap();
    let rotated = f.manage.rotate_key(&actor, &id, 60).await.unwrap();
    f.manage
        .revoke_key(&actor, &rotated.record.id, Some("done".into()))
        .await
        .unwrap();
    f.manage.delete_key(&actor, &id).await.unwrap();
    let events = f.events.take();
    let actions: Vec<&str> = events.iter().map(ChangeEvent::action).collect();
    assert_eq!(
        actions,
        [
            "tenant.created",
            "key.created",
            "key.updated",
            "key.rotated",
            "key.revoked",
            "key.deleted"
        ]
    );
    assert!(events.iter().all(|e| e.tenant_id() == Some("acme")));
    match &events[3] {
        ChangeEvent::KeyRotated {
            old_key_id,
            old_hash,
            new_key_id,
            ..
        } => {
            assert_eq!(old_key_id, &id);
            assert_eq!(old_hash, &created.record.hash);
            assert_eq!(new_key_id, &rotated.record.id);
        }
        other => panic!("{other:?}"),
    }
    // No event carries a secret.
    for e in &events {
        let text = format!("{e:?}");
        assert!(!text.contains(created.secret.expose()));
        assert!(!text.contains(rotated.secret.expose()));
    }
    let audit = f
        .store
        .list_audit(
            &AuditFilter {
                tenant_id: Some("acme".into()),
            },
            PageRequest {
                limit: 100,
                before: None,
            },
        )
        .await
        .unwrap();
    let mut logged: Vec<(String, String, String)> = audit
        .items
        .iter()
        .map(|(_, e)| (e.action.clone(), e.actor.clone(), e.target.clone()))
        .collect();
    logged.reverse();
    assert_eq!(logged.len(), 6);
    for ((action, actor_id, _), event) in logged.iter().zip(&events) {
        assert_eq!(action, event.action());
        let expected = if event.action() == "tenant.created" {
            "cli"
        } else {
            "key_of_acme"
        };
        assert_eq!(actor_id, expected);
    }
    assert_eq!(logged[3].2, id, "a rotation's target is the old key");

    // A change the store refuses commits nothing and tells no one.
    let r = f
        .manage
        .create_key(&actor, new_key("renamed-again", &[]))
        .await;
    assert!(r.is_ok());
    f.events.take();
    let r = f
        .manage
        .create_key(&actor, new_key("renamed-again", &[]))
        .await;
    assert!(matches!(r, Err(ManageError::NameTaken)), "{r:?}");
    assert!(f.events.take().is_empty());
    // Reads tell no one either.
    f.manage
        .list_audit(
            &host,
            crate::AuditQuery {
                tenant_id: None,
                paging: Paging {
                    limit: None,
                    cursor: Cursor::Start,
                },
            },
        )
        .await
        .unwrap();
    assert!(f.events.take().is_empty());
}

#[tokio::test]
async fn validation_names_every_invalid_field_and_changes_nothing() {
    let f = fixture().await;
    tenant(&f, "acme").await;
    f.events.take();
    let actor = tenant_key("acme", &["keyward:*", "vox:*"]);
    let r = f
        .manage
        .create_key(
            &actor,
            NewKey {
                name: " ".into(),
                environment: "staging".into(),
                scopes: vec!["nope:read".into()],
                ip_allowlist: vec!["not-an-ip".into()],
                expires_at: Some("2000-01-01T00:00:00Z".into()),
                tier: Some("gold".into()),
                ..NewKey::default()
            },
        )
        .await;
    let Err(ManageError::Validation(errors)) = r else {
        panic!("{r:?}")
    };
    let fields: Vec<(&str, &str)> = errors.iter().map(|e| (e.field.as_str(), e.code)).collect();
    assert_eq!(
        fields,
        [
            ("name", "invalid"),
            ("environment", "unknown_environment"),
            ("scopes[0]", "unknown_scope"),
            ("ip_allowlist[0]", "invalid_cidr"),
            ("expires_at", "in_past"),
            ("tier", "not_grantable"),
        ]
    );
    let r = f
        .manage
        .list_keys(
            &actor,
            crate::KeyQuery {
                tenant_id: None,
                environment: None,
                status: None,
                kind: None,
                paging: Paging {
                    limit: Some(0),
                    cursor: Cursor::Start,
                },
            },
        )
        .await;
    assert!(
        matches!(&r, Err(ManageError::Validation(e)) if e[0].field == "limit"),
        "{r:?}"
    );
    let r = f.manage.rotate_key(&actor, "key_nope", 0).await;
    assert!(matches!(r, Err(ManageError::NotFound("key"))), "{r:?}");
    assert!(f.events.take().is_empty());
}
