//! [`EventStore`]: an event written with a change is fanned out in its
//! transaction to the endpoints whose tenant and filter match; claims lease
//! each due delivery to one worker (two handles racing never share one);
//! attempts schedule, deliver or give up (marking the endpoint failing and
//! raising one alert); alerts are raised once per open condition.

use std::sync::Arc;

use keyward_store::*;
use serde_json::json;

fn endpoint(id: &str, tenant: Option<&str>, types: &[&str]) -> (Endpoint, Vec<TypePattern>) {
    let patterns = types
        .iter()
        .map(|t| match t.strip_suffix('*') {
            Some(prefix) => TypePattern::Prefix(prefix.to_owned()),
            None => TypePattern::Exact((*t).to_owned()),
        })
        .collect();
    (
        Endpoint {
            id: id.into(),
            tenant_id: tenant.map(Into::into),
            url: format!("https://hooks.example.com/{id}"),
            description: String::new(),
            event_types: types.iter().map(|t| (*t).to_owned()).collect(),
            enabled: true,
            salt: format!("salt_{id}"),
            previous_salt: None,
            previous_until: None,
            failing_since: None,
            created_at: 1,
            updated_at: 1,
        },
        patterns,
    )
}

fn event(id: &str, tenant: Option<&str>, t: &str, at: i64) -> NewEvent {
    NewEvent {
        id: id.into(),
        at,
        tenant_id: tenant.map(Into::into),
        key_id: None,
        event_type: t.into(),
        data: json!({ "n": id }),
        source: "upstream".into(),
        idempotency_key: None,
    }
}

fn attempt(at: i64, ok: bool) -> Attempt {
    Attempt {
        at,
        status: Some(if ok { 200 } else { 500 }),
        latency_ms: 3,
        response: "{}".into(),
        error: None,
        ok,
        node: "n1".into(),
    }
}

fn alert(id: &str, dedupe: &str, at: i64) -> Alert {
    Alert {
        id: id.into(),
        at,
        tenant_id: Some("ten_1".into()),
        key_id: None,
        kind: "test".into(),
        dedupe: dedupe.into(),
        details: json!({}),
        resolved_at: None,
    }
}

const PAGE: PageRequest = PageRequest {
    limit: 100,
    before: None,
};

pub(super) async fn suite<S: EventStore + AuditStore + 'static>(a: Arc<S>, b: Arc<S>) {
    for (id, tenant, types) in [
        ("whe_a", Some("ten_1"), &["vox.call.*"][..]),
        ("whe_b", Some("ten_2"), &["vox.call.*"][..]),
        ("whe_op", None, &["*"][..]),
        ("whe_exact", Some("ten_1"), &["key.revoked"][..]),
    ] {
        let (e, p) = endpoint(id, tenant, types);
        a.create_endpoint(&e, &p, &super::audit("webhook.endpoint_created", id, 1))
            .await
            .unwrap();
    }
    assert_eq!(a.count_endpoints(Some("ten_1")).await.unwrap(), 2);
    assert_eq!(a.count_endpoints(None).await.unwrap(), 1);

    // Fan-out: the tenant's matching endpoints and the operator-wide one.
    let r = a
        .record_event(&event("msg_1", Some("ten_1"), "vox.call.completed", 10))
        .await
        .unwrap();
    assert_eq!(r.deliveries, 2);
    let r = a
        .record_event(&event("msg_2", Some("ten_1"), "vox.sms.sent", 10))
        .await
        .unwrap();
    assert_eq!(r.deliveries, 1, "only the operator-wide `*`");
    // `vox.call` is not under `vox.call.*`.
    let r = a
        .record_event(&event("msg_3", Some("ten_1"), "vox.call", 10))
        .await
        .unwrap();
    assert_eq!(r.deliveries, 1);

    // With a change: the audit entry carries the event.
    let mut change = super::audit("key.revoked", "key_1", 11);
    change.event = Some(event("msg_4", Some("ten_1"), "key.revoked", 11));
    a.create_endpoint(
        &endpoint("whe_x", Some("ten_3"), &["*"]).0,
        &endpoint("whe_x", Some("ten_3"), &["*"]).1,
        &change,
    )
    .await
    .unwrap();
    assert_eq!(
        a.get_event("msg_4").await.unwrap().event_type,
        "key.revoked"
    );
    let d = a.get_delivery("whe_exact", "msg_4").await.unwrap();
    assert_eq!(d.status, DeliveryStatus::Pending);

    // Idempotency per tenant.
    let mut once = event("msg_5", Some("ten_1"), "vox.call.started", 12);
    once.idempotency_key = Some("k1".into());
    assert!(!a.record_event(&once).await.unwrap().duplicate);
    let mut again = once.clone();
    again.id = "msg_6".into();
    let r = b.record_event(&again).await.unwrap();
    assert!(r.duplicate);
    assert_eq!(r.event.id, "msg_5");
    assert_eq!(r.deliveries, 2);
    let mut other_tenant = again.clone();
    other_tenant.tenant_id = Some("ten_2".into());
    assert!(!a.record_event(&other_tenant).await.unwrap().duplicate);

    // Two handles claim at once: no delivery is leased twice.
    let (x, y) = tokio::join!(
        a.claim_deliveries("n1", 100, 60_000, 4),
        b.claim_deliveries("n2", 100, 60_000, 4)
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    let mut seen: Vec<i64> = x.iter().chain(&y).map(|c| c.delivery.seq).collect();
    let total = seen.len();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), total, "a delivery was claimed twice");
    // Due: msg_1 2, msg_2 1, msg_3 1, msg_4 2 (the exact filter and the
    // operator-wide `*`), msg_5 2, msg_6 2 = 10; the two claimed 8.
    assert_eq!(total, 8);
    // Leased ones are skipped: the rest, then nothing until leases run out.
    let rest = a.claim_deliveries("n1", 200, 60_000, 100).await.unwrap();
    assert_eq!(rest.len(), 2);
    assert!(b
        .claim_deliveries("n2", 300, 60_000, 100)
        .await
        .unwrap()
        .is_empty());
    let again = b
        .claim_deliveries("n2", 60_001, 120_000, 100)
        .await
        .unwrap();
    assert_eq!(again.len(), 10, "expired leases are taken over");

    // A retry, a success, a give-up.
    let c = &again[0];
    assert!(a
        .finish_attempt(
            c.delivery.seq,
            "n2",
            &attempt(60_002, false),
            &NextStep::RetryAt(70_000)
        )
        .await
        .unwrap());
    assert!(
        !a.finish_attempt(
            c.delivery.seq,
            "n1",
            &attempt(60_003, true),
            &NextStep::Delivered
        )
        .await
        .unwrap(),
        "a lease not held"
    );
    let d = a
        .get_delivery(&c.delivery.endpoint_id, &c.delivery.event_id)
        .await
        .unwrap();
    assert_eq!(
        (d.status, d.attempts, d.next_at),
        (DeliveryStatus::Pending, 1, Some(70_000))
    );
    assert!(a
        .claim_deliveries("n1", 69_999, 200_000, 100)
        .await
        .unwrap()
        .is_empty());
    let due = a
        .claim_deliveries("n1", 70_000, 200_000, 100)
        .await
        .unwrap();
    assert_eq!(due.len(), 1);
    let give_up = NextStep::GiveUp(Box::new((
        Alert {
            kind: "endpoint_failing".into(),
            ..alert(
                "alr_f",
                &format!("endpoint_failing:{}", c.delivery.endpoint_id),
                70_001,
            )
        },
        event("msg_f", None, "webhook.endpoint_failing", 70_001),
    )));
    assert!(a
        .finish_attempt(c.delivery.seq, "n1", &attempt(70_001, false), &give_up)
        .await
        .unwrap());
    let failing = a.get_endpoint(&c.delivery.endpoint_id).await.unwrap();
    assert_eq!(failing.failing_since, Some(70_001));
    let attempts = a
        .list_attempts(&c.delivery.endpoint_id, &c.delivery.event_id, 10)
        .await
        .unwrap();
    assert_eq!(
        attempts.len(),
        3,
        "every attempt is recorded, also a late one"
    );
    // Redelivery restarts the schedule; a success clears `failing`.
    let r = a
        .redeliver(&c.delivery.endpoint_id, &c.delivery.event_id, 80_000)
        .await
        .unwrap();
    assert_eq!((r.status, r.tries), (DeliveryStatus::Pending, 0));
    // Due now: it, and the give-up's `webhook.endpoint_failing` event to
    // the operator-wide endpoint (the others are still leased).
    let due = a
        .claim_deliveries("n1", 80_000, 200_000, 100)
        .await
        .unwrap();
    assert_eq!(due.len(), 2);
    assert!(due
        .iter()
        .any(|d| d.event.event_type == "webhook.endpoint_failing" && d.endpoint.id == "whe_op"));
    assert!(a
        .finish_attempt(
            c.delivery.seq,
            "n1",
            &attempt(80_001, true),
            &NextStep::Delivered
        )
        .await
        .unwrap());
    assert_eq!(
        a.get_endpoint(&c.delivery.endpoint_id)
            .await
            .unwrap()
            .failing_since,
        None
    );
    let open = a
        .list_alerts(
            &AlertFilter {
                kind: Some("endpoint_failing".into()),
                open: true,
                ..AlertFilter::default()
            },
            PAGE,
        )
        .await
        .unwrap();
    assert!(open.items.is_empty(), "the success resolved it");

    // Alerts: once per open dedupe value, across handles; again once resolved.
    let e = |id: &str| event(id, Some("ten_1"), "alert.test", 90_000);
    assert!(a
        .raise_alert(&alert("alr_1", "d1", 90_000), &e("msg_a1"))
        .await
        .unwrap());
    assert!(!b
        .raise_alert(&alert("alr_2", "d1", 90_001), &e("msg_a2"))
        .await
        .unwrap());
    assert!(
        a.get_event("msg_a2").await.is_err(),
        "no event for a repeat"
    );
    assert!(a.resolve_alert("d1", 90_002).await.unwrap());
    assert!(b
        .raise_alert(&alert("alr_3", "d1", 90_003), &e("msg_a3"))
        .await
        .unwrap());

    // Deleting an endpoint cancels its pending deliveries.
    a.record_event(&event("msg_7", Some("ten_2"), "vox.call.x", 95_000))
        .await
        .unwrap();
    a.delete_endpoint(
        "whe_b",
        &super::audit("webhook.endpoint_deleted", "whe_b", 95_001),
    )
    .await
    .unwrap();
    assert_eq!(
        a.get_delivery("whe_b", "msg_7").await.unwrap().status,
        DeliveryStatus::Cancelled
    );
    assert!(a.get_endpoint("whe_b").await.is_err());

    // Pruning keeps what is pending.
    let pending = a.pending_deliveries().await.unwrap();
    let pruned = a.prune_events(1_000_000).await.unwrap();
    assert!(pruned.deliveries > 0 && pruned.attempts > 0);
    assert_eq!(a.pending_deliveries().await.unwrap(), pending);

    // Settings: the first value wins.
    assert_eq!(a.init_setting("s", "one").await.unwrap(), "one");
    assert_eq!(b.init_setting("s", "two").await.unwrap(), "one");
}
