//! `keyward_client`, the typed client the CLI is built on, against a real
//! server: every area of the API once, refusals as typed problems in both
//! error styles, a server that never answers as a timeout, and retries
//! through a proxy that loses the first answer: a credit change applied
//! once, `verify` and unkeyed writes never sent twice.
//!
//! (`kit/client.rs` is the test kit's own typed client; this module tests
//! the published one.)

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward_client::wire::{
    ChangeCredits, CheckLeaks, CreateEndpoint, CreateKey, CreateTenant, ListAlerts, ListAudit,
    ListDeliveries, ListEndpoints, ListIps, ListKeys, ListLedger, ListTenants, PublishEvent,
    RefillMode, RefillPeriod, RefillSpec, ReportLeak, RevokeKey, RotateEndpointSecret, RotateKey,
    TenantUsageQuery, UpdateEndpoint, UpdateKey, UpdateTenant, UsageQuery, VerifyKey,
};
use keyward_client::{Client, ClientError};
use keyward_core::secret::KeyHash;
use reqwest::StatusCode;
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

use crate::kit::{default_config, temp_dir, Backend, Server};

fn client(base: &str, key: &str) -> Client {
    Client::builder(base).key(key).build().unwrap()
}

/// The problem of a refusal, asserting its status and code.
#[track_caller]
fn refused<T>(
    r: Result<T, ClientError>,
    status: u16,
    code: &str,
) -> keyward_client::ProblemDetails {
    match r {
        Ok(_) => panic!("expected {status} {code}, got a success"),
        Err(ClientError::Problem { status: s, problem }) => {
            assert_eq!(
                (s.as_u16(), problem.code.as_str()),
                (status, code),
                "{problem:?}"
            );
            *problem
        }
        Err(e) => panic!("expected {status} {code}, got {e:?}"),
    }
}

fn verify_request(secret: &str) -> VerifyKey {
    VerifyKey {
        key: secret.to_owned(),
        scopes: vec![],
        ip: None,
        cost: None,
        credits: None,
    }
}

#[tokio::test]
async fn every_area_of_the_api_through_the_typed_client() {
    let mut config = default_config();
    config.data_dir = temp_dir("typed-client");
    config.webhooks.allow_private_addresses = true;
    let s = Server::start_with(Backend::Sqlite, config).await;
    let c = client(&s.base, &s.root);

    // Health, readiness, the caller, the document; without a key only the
    // first two and the document.
    assert_eq!(c.health().await.unwrap().status, "ok");
    assert!(c.ready().await.unwrap().checks.contains_key("store"));
    assert_eq!(c.me().await.unwrap().kind, "root");
    assert!(c.openapi().await.unwrap()["paths"]["/v1/keys"].is_object());
    let anonymous = Client::builder(&s.base).build().unwrap();
    assert_eq!(anonymous.health().await.unwrap().status, "ok");
    let e = anonymous.me().await.unwrap_err();
    assert_eq!(e.status(), Some(StatusCode::UNAUTHORIZED), "{e:?}");

    // Tenants: an id of one's own, pages one at a time, walked, bounded.
    let acme = c
        .create_tenant(&CreateTenant {
            id: Some("acct_42".into()),
            name: "Acme".into(),
            ..CreateTenant::default()
        })
        .await
        .unwrap();
    assert_eq!(acme.id, "acct_42");
    c.create_tenant(&CreateTenant {
        name: "Beta".into(),
        ..CreateTenant::default()
    })
    .await
    .unwrap();
    let one = ListTenants {
        limit: Some(1),
        cursor: None,
    };
    let first = c.list_tenants(&one).await.unwrap();
    assert_eq!(first.data.len(), 1);
    assert!(first.has_more && first.next_cursor.is_some());
    let all = c.list_tenants_all(&one, 10).await.unwrap();
    assert_eq!(all.data.len(), 2);
    assert!(!all.has_more && all.next_cursor.is_none());
    let bounded = c.list_tenants_all(&one, 1).await.unwrap();
    assert_eq!(bounded.data.len(), 1);
    assert_eq!(bounded.next_cursor, first.next_cursor);
    assert_eq!(c.get_tenant("acct_42").await.unwrap().name, "Acme");
    let renamed = c
        .update_tenant(
            "acct_42",
            &UpdateTenant {
                name: Some("Acme Inc".into()),
                ..UpdateTenant::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(renamed.name, "Acme Inc");
    // An id with characters a path cannot hold travels encoded, as one id:
    // not another resource's path, nor a query.
    refused(c.get_tenant("acct_42?x=1").await, 404, "not_found");
    refused(c.get_tenant("acct 42#").await, 404, "not_found");
    // (keyward's front door refuses an encoded slash outright.)
    refused(c.get_tenant("acct_42/credits").await, 400, "invalid_path");

    // Credits: a grant with the caller's idempotency key replayed, an
    // adjustment with the client's own key, the refill, the ledger.
    let grant = ChangeCredits {
        kind: "grant".into(),
        amount: 100,
        reason: Some("welcome".into()),
    };
    let granted = c
        .change_credits("acct_42", &grant, Some("order-1"))
        .await
        .unwrap();
    assert_eq!(granted.balance_after, 100);
    assert_eq!(granted.idempotency_key.as_deref(), Some("order-1"));
    let replayed = c
        .change_credits("acct_42", &grant, Some("order-1"))
        .await
        .unwrap();
    assert_eq!(replayed.id, granted.id);
    let adjust = ChangeCredits {
        kind: "adjust".into(),
        amount: -10,
        reason: None,
    };
    let adjusted = c.change_credits("acct_42", &adjust, None).await.unwrap();
    assert!(adjusted
        .idempotency_key
        .as_deref()
        .is_some_and(|k| k.starts_with("idem_")));
    assert_eq!(c.get_credits("acct_42").await.unwrap().balance, 90);
    let refill = RefillSpec {
        amount: 500,
        every: RefillPeriod::Monthly,
        mode: RefillMode::Set,
    };
    let refilled = c.set_refill("acct_42", &refill).await.unwrap();
    assert_eq!(refilled.refill, Some(refill));
    assert_eq!(refilled.balance, 500);
    assert_eq!(c.clear_refill("acct_42").await.unwrap().refill, None);
    let ledger = c
        .list_ledger_all(
            "acct_42",
            &ListLedger {
                limit: Some(1),
                cursor: None,
            },
            100,
        )
        .await
        .unwrap();
    let kinds: Vec<&str> = ledger.data.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, vec!["refill", "adjust", "grant"]);
    assert_eq!(
        c.list_ledger("acct_42", &ListLedger::default())
            .await
            .unwrap()
            .data
            .len(),
        3
    );

    // Keys: create, list, get, update, verify (a denial is an answer, not
    // an error), usage, addresses, leaks, rotate, revoke, delete.
    let issued = c
        .create_key(&CreateKey {
            tenant_id: Some("acct_42".into()),
            name: "web".into(),
            environment: Some("test".into()),
            scopes: vec!["vox:read".into()],
            ..CreateKey::default()
        })
        .await
        .unwrap();
    let id = issued.key.id.clone();
    let listed = c
        .list_keys(&ListKeys {
            tenant_id: Some("acct_42".into()),
            ..ListKeys::default()
        })
        .await
        .unwrap();
    assert!(listed.data.iter().any(|k| k.id == id));
    let walked = c.list_keys_all(&ListKeys::default(), 10).await.unwrap();
    assert!(walked.data.iter().any(|k| k.id == id));
    assert_eq!(c.get_key(&id).await.unwrap().name, "web");
    let owned = c
        .update_key(
            &id,
            &UpdateKey {
                owner: Some(Some("ops@acme.test".into())),
                ..UpdateKey::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(owned.owner.as_deref(), Some("ops@acme.test"));
    let mut ask = verify_request(&issued.secret);
    ask.scopes = vec!["vox:read".into()];
    ask.credits = Some(1);
    let valid = c.verify(&ask).await.unwrap();
    assert!(valid.valid, "{valid:?}");
    assert_eq!(valid.key.as_ref().unwrap().key_id, id);
    assert_eq!(valid.credits.as_ref().unwrap().balance, 499);
    ask.scopes = vec!["vault:write".into()];
    let denied = c.verify(&ask).await.unwrap();
    assert!(!denied.valid);
    assert_eq!(denied.code, "insufficient_scope");
    let usage = c.key_usage(&id, &UsageQuery::default()).await.unwrap();
    assert_eq!(usage.key_id, id);
    c.list_key_ips(&id, &ListIps::default()).await.unwrap();
    c.list_key_ips_all(&id, &ListIps::default(), 5)
        .await
        .unwrap();
    assert!(!c.key_leaks(&id).await.unwrap().leaked);
    let rotated = c
        .rotate_key(&id, &RotateKey { grace_seconds: 0 })
        .await
        .unwrap();
    assert_ne!(rotated.key.id, id);
    assert_ne!(rotated.secret, issued.secret);
    assert_eq!(rotated.key.rotated_from.as_deref(), Some(id.as_str()));
    let revoked = c
        .revoke_key(
            &rotated.key.id,
            &RevokeKey {
                reason: Some("done".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(revoked.status, "revoked");
    c.delete_key(&rotated.key.id).await.unwrap();
    refused(c.get_key(&rotated.key.id).await, 404, "not_found");

    // A tenant's usage, and the audit log walked.
    let tenant_usage = c
        .tenant_usage("acct_42", &TenantUsageQuery::default())
        .await
        .unwrap();
    assert_eq!(tenant_usage.tenant_id, "acct_42");
    c.tenant_usage_all("acct_42", &TenantUsageQuery::default(), 5)
        .await
        .unwrap();
    let audit = c
        .list_audit_all(
            &ListAudit {
                tenant_id: Some("acct_42".into()),
                limit: Some(2),
                cursor: None,
            },
            100,
        )
        .await
        .unwrap();
    let actions: Vec<&str> = audit.data.iter().map(|e| e.action.as_str()).collect();
    for action in ["tenant.created", "key.created", "key.revoked"] {
        assert!(actions.contains(&action), "{action}: {actions:?}");
    }
    assert!(!c
        .list_audit(&ListAudit::default())
        .await
        .unwrap()
        .data
        .is_empty());

    // Leaks: which hashes are live, a report by hash, the key's reports.
    let leaky = c
        .create_key(&CreateKey {
            tenant_id: Some("acct_42".into()),
            name: "leaky".into(),
            environment: Some("test".into()),
            ..CreateKey::default()
        })
        .await
        .unwrap();
    let hash = KeyHash::of(&leaky.secret).to_hex();
    let live = c
        .check_leaks(&CheckLeaks {
            hashes: vec![hash.clone(), "0".repeat(64)],
        })
        .await
        .unwrap();
    assert_eq!(live.live, vec![hash.clone()]);
    let receipt = c
        .report_leak(&ReportLeak {
            key_hash: Some(hash.clone()),
            url: Some("https://paste.example/abc".into()),
            source: Some("paste".into()),
            ..ReportLeak::default()
        })
        .await
        .unwrap();
    assert_eq!(receipt.label, "true_positive");
    assert_eq!(receipt.token_hash, hash);
    assert!(receipt.report_id.is_some());
    let reports = c.key_leaks(&leaky.key.id).await.unwrap();
    assert!(reports.leaked);
    assert_eq!(
        reports.data[0].url.as_deref(),
        Some("https://paste.example/abc")
    );

    // Webhooks: an endpoint, its test event and delivery log, a rotated
    // secret, an event of the upstream's (once per idempotency key),
    // alerts, and the endpoint deleted.
    let endpoint = c
        .create_webhook(&CreateEndpoint {
            tenant_id: Some("acct_42".into()),
            url: "http://127.0.0.1:9/hook".into(),
            description: Some("calls".into()),
            event_types: vec!["vox.call.*".into()],
            enabled: None,
        })
        .await
        .unwrap();
    assert!(endpoint.secret.starts_with("whsec_"));
    let wid = endpoint.endpoint.id.clone();
    let hooks = c.list_webhooks(&ListEndpoints::default()).await.unwrap();
    assert!(hooks.data.iter().any(|e| e.id == wid));
    c.list_webhooks_all(&ListEndpoints::default(), 5)
        .await
        .unwrap();
    assert_eq!(c.get_webhook(&wid).await.unwrap().description, "calls");
    let updated = c
        .update_webhook(
            &wid,
            &UpdateEndpoint {
                description: Some("voice calls".into()),
                ..UpdateEndpoint::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.description, "voice calls");
    let event = c.test_webhook(&wid).await.unwrap();
    assert_eq!(event.event_type, "webhook.test");
    let deliveries = c
        .list_deliveries(&wid, &ListDeliveries::default())
        .await
        .unwrap();
    assert!(deliveries.data.iter().any(|d| d.event_id == event.id));
    c.list_deliveries_all(&wid, &ListDeliveries::default(), 5)
        .await
        .unwrap();
    let detail = c.get_delivery(&wid, &event.id).await.unwrap();
    assert_eq!(detail.event.id, event.id);
    let again = c.redeliver(&wid, &event.id).await.unwrap();
    assert_eq!(
        (again.event_id.as_str(), again.status.as_str()),
        (event.id.as_str(), "pending")
    );
    let rotated = c
        .rotate_webhook_secret(
            &wid,
            &RotateEndpointSecret {
                overlap_seconds: Some(60),
            },
        )
        .await
        .unwrap();
    assert_ne!(rotated.secret, endpoint.secret);
    assert!(rotated.endpoint.previous_secret_expires_at.is_some());
    let call = PublishEvent {
        tenant_id: Some("acct_42".into()),
        event_type: "vox.call.completed".into(),
        data: json!({ "call_id": "c_1" }),
        idempotency_key: Some("call-c_1".into()),
    };
    let published = c.publish_event(&call).await.unwrap();
    assert_eq!((published.deliveries, published.duplicate), (1, false));
    let repeated = c.publish_event(&call).await.unwrap();
    assert_eq!(
        (repeated.id.as_str(), repeated.duplicate),
        (published.id.as_str(), true)
    );
    let unkeyed = PublishEvent {
        idempotency_key: None,
        ..call
    };
    let fresh = c.publish_event(&unkeyed).await.unwrap();
    assert!(!fresh.duplicate && fresh.id != published.id);
    c.list_alerts(&ListAlerts::default()).await.unwrap();
    c.list_alerts_all(&ListAlerts::default(), 5).await.unwrap();
    c.delete_webhook(&wid).await.unwrap();
    refused(c.get_webhook(&wid).await, 404, "not_found");
}

#[tokio::test]
async fn refusals_are_typed_problems_in_either_error_style() {
    let s = Server::start().await;
    let c = client(&s.base, &s.root);
    let t = s.tenant("Acme").await;

    // Every invalid field named, with its code.
    let problem = refused(
        c.create_key(&CreateKey {
            tenant_id: Some(t.clone()),
            name: String::new(),
            scopes: vec!["nope".into()],
            ..CreateKey::default()
        })
        .await,
        422,
        "validation_failed",
    );
    assert!(problem.title.is_some() && !problem.detail.is_empty());
    assert!(problem
        .kind
        .as_deref()
        .is_some_and(|k| k.ends_with("validation_failed")));
    let field = |name: &str| problem.errors.iter().find(|e| e.field == name);
    assert_eq!(field("environment").unwrap().code, "required");
    assert!(field("name").is_some(), "{:?}", problem.errors);
    assert!(
        problem.errors.iter().any(|e| e.field.starts_with("scopes")),
        "{:?}",
        problem.errors
    );

    // A key without the scope: its missing scopes are readable.
    let (_, weak) = s.key(&t, "weak", json!({})).await;
    let problem = refused(
        client(&s.base, &weak)
            .list_audit(&ListAudit::default())
            .await,
        403,
        "insufficient_scope",
    );
    assert!(problem.extra("missing_scopes").is_some(), "{problem:?}");
    // A wrong key: refused, and the error does not hold it.
    let wrong = "kw_test_0000000000000000000000000000000000";
    let e = client(&s.base, wrong).me().await.unwrap_err();
    assert_eq!(e.status(), Some(StatusCode::UNAUTHORIZED));
    assert!(!format!("{e:?} {e}").contains(wrong));

    // The envelope style reads into the same problem.
    let mut config = default_config();
    config.errors.style = keyward_server::config::ErrorStyle::Envelope;
    let envelope = Server::start_with(Backend::Sqlite, config).await;
    let c = client(&envelope.base, &envelope.root);
    let problem = refused(c.get_tenant("nope").await, 404, "not_found");
    assert_eq!((problem.title, problem.kind), (None, None));
    assert!(matches!(
        problem.body,
        keyward_client::wire::ErrorBody::Envelope(_)
    ));
    let t = envelope.tenant("Acme").await;
    let problem = refused(
        c.create_key(&CreateKey {
            tenant_id: Some(t),
            name: "x".into(),
            ..CreateKey::default()
        })
        .await,
        422,
        "validation_failed",
    );
    assert_eq!(problem.errors[0].field, "environment");
}

#[tokio::test]
async fn a_server_that_never_answers_is_a_timeout_not_a_hang() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Accepts and holds every connection, never answering.
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok(Ok((conn, _))) =
            tokio::time::timeout(Duration::from_secs(20), listener.accept()).await
        {
            held.push(conn);
        }
    });
    let key = "kw_test_0000000000000000000000000000000000";
    let c = Client::builder(format!("http://{addr}"))
        .key(key)
        .timeout(Duration::from_millis(300))
        .retries(3)
        .build()
        .unwrap();
    // A read and verify each wait one timeout: neither is sent again (a
    // timed-out request was sent, and a retry would multiply the wait).
    for what in ["a read", "verify"] {
        let started = Instant::now();
        let e = match what {
            "a read" => c.me().await.map(drop),
            _ => c.verify(&verify_request(key)).await.map(drop),
        }
        .unwrap_err();
        let waited = started.elapsed();
        assert!(
            matches!(e, ClientError::Timeout(d) if d == Duration::from_millis(300)),
            "{what}: {e:?}"
        );
        assert!(!format!("{e:?} {e}").contains(key));
        assert!(
            waited >= Duration::from_millis(300) && waited < Duration::from_millis(1200),
            "{what}: {waited:?}"
        );
    }
    silent.abort();
}

#[tokio::test]
async fn a_request_that_never_left_is_sent_again_even_for_verify() {
    // A port nothing listens on.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let key = "kw_test_0000000000000000000000000000000000";
    let c = Client::builder(format!("http://{addr}"))
        .key(key)
        .retries(2)
        .backoff(Duration::from_millis(200), Duration::from_millis(200))
        .build()
        .unwrap();
    let started = Instant::now();
    let e = c.verify(&verify_request(key)).await.unwrap_err();
    // Two retries, each after at least half the 200 ms ceiling.
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(e, ClientError::Connect { .. }), "{e:?}");
    assert!(e
        .to_string()
        .contains(&format!("cannot reach keyward at http://{addr}")));
    assert!(!format!("{e:?} {e}").contains(key));
}

/// A loopback proxy to `upstream` that loses the answer on its first
/// connection (it forwards the request, waits for the answer to begin, so
/// the server has acted, then closes without passing it on) and forwards
/// every later connection whole.
struct LosesFirstAnswer {
    base: String,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl LosesFirstAnswer {
    async fn start(upstream: &str) -> LosesFirstAnswer {
        let upstream: SocketAddr = upstream.trim_start_matches("http://").parse().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok(Ok((conn, _))) =
                tokio::time::timeout(Duration::from_secs(30), listener.accept()).await
            {
                let n = seen.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(relay(conn, upstream, n == 0));
            }
        });
        LosesFirstAnswer {
            base,
            connections,
            task,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for LosesFirstAnswer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(mut conn: TcpStream, upstream: SocketAddr, lose_answer: bool) {
    let Ok(mut up) = TcpStream::connect(upstream).await else {
        return;
    };
    if !lose_answer {
        let _ = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::io::copy_bidirectional(&mut conn, &mut up),
        )
        .await;
        return;
    }
    let (mut from_client, _to_client) = conn.into_split();
    let (mut from_up, mut to_up) = up.into_split();
    let forward = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut from_client, &mut to_up).await;
    });
    let mut first = [0u8; 1];
    let _ = tokio::time::timeout(Duration::from_secs(10), from_up.read(&mut first)).await;
    // Dropping both halves closes the client's connection unanswered.
    forward.abort();
}

#[tokio::test]
async fn a_lost_answer_is_retried_only_where_sending_twice_is_safe() {
    let s = Server::start().await;
    let t = s.tenant("Acme").await;
    s.grant(&t, 10).await;
    let (_, secret) = s.key(&t, "web", json!({})).await;
    let direct = client(&s.base, &s.root);
    let through = |proxy: &LosesFirstAnswer| {
        Client::builder(&proxy.base)
            .key(s.root.as_str())
            .retries(2)
            .backoff(Duration::from_millis(10), Duration::from_millis(50))
            .build()
            .unwrap()
    };

    // A credit change: the first answer is lost after the server applied
    // it; the retry carries the same idempotency key, so it is applied once.
    let proxy = LosesFirstAnswer::start(&s.base).await;
    let grant = ChangeCredits {
        kind: "grant".into(),
        amount: 5,
        reason: None,
    };
    let entry = through(&proxy)
        .change_credits(&t, &grant, None)
        .await
        .unwrap();
    assert_eq!(proxy.connections(), 2);
    assert_eq!(entry.balance_after, 15);
    assert_eq!(direct.get_credits(&t).await.unwrap().balance, 15);
    let ledger = direct
        .list_ledger(&t, &ListLedger::default())
        .await
        .unwrap();
    let grants: Vec<i64> = ledger.data.iter().map(|e| e.amount).collect();
    assert_eq!(grants, vec![5, 10]);

    // A read is sent again.
    let proxy = LosesFirstAnswer::start(&s.base).await;
    assert_eq!(through(&proxy).get_tenant(&t).await.unwrap().id, t);
    assert_eq!(proxy.connections(), 2);

    // verify spends on every arrival: sent once, the loss is the caller's
    // to see, and the credit was spent once.
    let proxy = LosesFirstAnswer::start(&s.base).await;
    let mut spend = verify_request(&secret);
    spend.credits = Some(1);
    let e = through(&proxy).verify(&spend).await.unwrap_err();
    assert!(matches!(e, ClientError::Transport { .. }), "{e:?}");
    assert!(!format!("{e:?} {e}").contains(&secret));
    assert_eq!(proxy.connections(), 1);
    assert_eq!(direct.get_credits(&t).await.unwrap().balance, 14);

    // A write without idempotency is not sent twice either: the tenant the
    // lost answer was about exists once.
    let proxy = LosesFirstAnswer::start(&s.base).await;
    let e = through(&proxy)
        .create_tenant(&CreateTenant {
            name: "Once".into(),
            ..CreateTenant::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::Transport { .. }), "{e:?}");
    assert_eq!(proxy.connections(), 1);
    let tenants = direct
        .list_tenants_all(&ListTenants::default(), 10)
        .await
        .unwrap();
    assert_eq!(tenants.data.iter().filter(|t| t.name == "Once").count(), 1);
}
