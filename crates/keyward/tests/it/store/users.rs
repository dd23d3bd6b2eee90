//! [`UserStore`]: users, memberships (never without an owner), sessions,
//! invitations, sign-in failure counts.

use std::sync::Arc;

use keyward_store::*;
use serde_json::json;

pub(super) async fn suite<S: TenantStore + UserStore + 'static>(store: Arc<S>) {
    // A tenant (memberships need one).
    let ten = "ten_1".to_owned();
    store
        .create_tenant(
            &Tenant {
                id: ten.clone(),
                name: "One".into(),
                metadata: json!({}),
                created_at: 1,
                updated_at: 1,
                tier: None,
                grantable_scopes: None,
                credits_low_threshold: None,
            },
            &AuditEntry {
                id: "evt_t".into(),
                at: 1,
                actor: "test".into(),
                actor_ip: None,
                tenant_id: Some(ten.clone()),
                action: "tenant.created".into(),
                target: ten.clone(),
                details: json!({}),
                event: None,
            },
        )
        .await
        .unwrap();
    let audit = |n: &str| AuditEntry {
        id: format!("evt_{n}"),
        at: 1_000,
        actor: "test".into(),
        actor_ip: None,
        tenant_id: Some("ten_1".into()),
        action: n.into(),
        target: "x".into(),
        details: json!({}),
        event: None,
    };
    let user = |id: &str, email: &str| User {
        id: id.into(),
        email: email.into(),
        name: String::new(),
        password_hash: "$argon2id$fake".into(),
        operator: false,
        created_at: 1,
        updated_at: 1,
    };
    let ann = user("usr_ann", "ann@example.com");
    store.create_user(&ann, &audit("u1")).await.unwrap();
    assert!(matches!(
        store
            .create_user(&user("usr_x", "ann@example.com"), &audit("u2"))
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.get_user("usr_ann").await.unwrap(), ann);
    assert_eq!(
        store.find_user_by_email("ann@example.com").await.unwrap(),
        Some(ann.clone())
    );
    assert!(format!("{ann:?}").contains("<redacted>"));

    // Roles; the last owner stays.
    store
        .set_role(&ten, "usr_ann", Role::Owner, &audit("r1"))
        .await
        .unwrap();
    assert!(matches!(
        store
            .set_role(&ten, "usr_ann", Role::Viewer, &audit("r2"))
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.remove_member(&ten, "usr_ann", &audit("r3")).await,
        Err(StoreError::Conflict(_))
    ));
    let m = store.memberships_of("usr_ann").await.unwrap();
    assert_eq!(m.len(), 1);
    assert_eq!((m[0].role, m[0].tenant_name.as_str()), (Role::Owner, "One"));

    // Sessions.
    let s = Session {
        token_hash: "h1".into(),
        user_id: "usr_ann".into(),
        created_at: 1_000,
        last_seen_at: 1_000,
        expires_at: 10_000,
        ip: Some("192.0.2.1".into()),
    };
    store.create_session(&s).await.unwrap();
    store.touch_session("h1", 2_000).await.unwrap();
    store.touch_session("h1", 1_500).await.unwrap();
    assert_eq!(
        store.get_session("h1").await.unwrap().unwrap().last_seen_at,
        2_000
    );
    assert_eq!(store.purge_sessions(5_000, 1_000).await.unwrap(), 0);
    assert_eq!(store.purge_sessions(10_000, 0).await.unwrap(), 1);
    assert!(store.get_session("h1").await.unwrap().is_none());

    // Invitations are used once, atomically.
    let inv = Invite {
        id: "inv_1".into(),
        token_hash: "ih1".into(),
        tenant_id: ten.clone(),
        email: "bob@example.com".into(),
        role: Role::Developer,
        invited_by: "usr_ann".into(),
        created_at: 1_000,
        expires_at: 5_000,
        accepted_at: None,
        accepted_by: None,
        revoked_at: None,
    };
    store.create_invite(&inv, &audit("i1")).await.unwrap();
    assert_eq!(store.list_invites(&ten, 2_000).await.unwrap().len(), 1);
    assert_eq!(store.list_invites(&ten, 5_000).await.unwrap().len(), 0);
    let bob = user("usr_bob", "bob@example.com");
    let mut at = audit("i2");
    at.at = 2_000;
    store
        .accept_invite(&inv, Invitee::New(&bob), &at)
        .await
        .unwrap();
    let mut at = audit("i3");
    at.at = 2_001;
    assert!(matches!(
        store
            .accept_invite(&inv, Invitee::Existing("usr_ann"), &at)
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store
            .membership(&ten, "usr_bob")
            .await
            .unwrap()
            .unwrap()
            .role,
        Role::Developer
    );
    let members = store.list_members(&ten).await.unwrap();
    assert_eq!(
        members.iter().map(|m| m.email.as_str()).collect::<Vec<_>>(),
        ["ann@example.com", "bob@example.com"]
    );

    // Failed sign-ins: counted in one step, windowed, cleared.
    assert_eq!(
        store.login_failures("account:a", 0, 100).await.unwrap(),
        (0, 0)
    );
    assert_eq!(
        store
            .record_login_failure("account:a", 10, 100)
            .await
            .unwrap(),
        (1, 10)
    );
    assert_eq!(
        store
            .record_login_failure("account:a", 20, 100)
            .await
            .unwrap(),
        (2, 10)
    );
    assert_eq!(
        store.login_failures("account:a", 50, 100).await.unwrap(),
        (2, 10)
    );
    assert_eq!(
        store.login_failures("account:a", 110, 100).await.unwrap(),
        (0, 110)
    );
    assert_eq!(
        store
            .record_login_failure("account:a", 111, 100)
            .await
            .unwrap(),
        (1, 111)
    );
    store.clear_login_failures("account:a").await.unwrap();
    assert_eq!(
        store.login_failures("account:a", 112, 100).await.unwrap().0,
        0
    );

    // A new password ends the user's sessions.
    store
        .create_session(&Session {
            token_hash: "h2".into(),
            ..s
        })
        .await
        .unwrap();
    store
        .set_password("usr_ann", "$argon2id$new", &audit("p"))
        .await
        .unwrap();
    assert!(store.get_session("h2").await.unwrap().is_none());
    assert_eq!(
        store.get_user("usr_ann").await.unwrap().password_hash,
        "$argon2id$new"
    );

    // Every user, oldest first.
    let ids: Vec<String> = store
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(ids, ["usr_ann", "usr_bob"]);

    // Signing out deletes the session; deleting it again is no error.
    store
        .create_session(&Session {
            token_hash: "h3".into(),
            user_id: "usr_bob".into(),
            created_at: 3_000,
            last_seen_at: 3_000,
            expires_at: 10_000,
            ip: None,
        })
        .await
        .unwrap();
    assert!(store.get_session("h3").await.unwrap().is_some());
    store.delete_session("h3").await.unwrap();
    assert!(store.get_session("h3").await.unwrap().is_none());
    store.delete_session("h3").await.unwrap();

    // Invitations are found by token hash, used or not.
    let used = store.find_invite("ih1").await.unwrap().unwrap();
    assert_eq!(
        (
            used.id.as_str(),
            used.accepted_at,
            used.accepted_by.as_deref()
        ),
        ("inv_1", Some(2_000), Some("usr_bob"))
    );
    assert!(!used.is_open(2_000));
    assert_eq!(store.find_invite("nope").await.unwrap(), None);
    // Revoking closes an open invitation once; a used one, another
    // tenant's or an unknown one is not found.
    let inv2 = Invite {
        id: "inv_2".into(),
        token_hash: "ih2".into(),
        email: "cy@example.com".into(),
        ..inv.clone()
    };
    store.create_invite(&inv2, &audit("i4")).await.unwrap();
    assert_eq!(store.find_invite("ih2").await.unwrap(), Some(inv2.clone()));
    assert_eq!(store.list_invites(&ten, 2_000).await.unwrap(), [inv2]);
    assert!(matches!(
        store
            .revoke_invite("ten_other", "inv_2", &audit("i5"))
            .await,
        Err(StoreError::NotFound)
    ));
    let mut at = audit("i6");
    at.at = 2_500;
    store.revoke_invite(&ten, "inv_2", &at).await.unwrap();
    assert_eq!(
        store.find_invite("ih2").await.unwrap().unwrap().revoked_at,
        Some(2_500)
    );
    assert!(store.list_invites(&ten, 2_000).await.unwrap().is_empty());
    assert!(matches!(
        store.revoke_invite(&ten, "inv_2", &audit("i7")).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.revoke_invite(&ten, "inv_1", &audit("i8")).await,
        Err(StoreError::NotFound)
    ));
}
