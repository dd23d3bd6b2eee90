//! Webhooks end to end: real servers, a real receiver that verifies every
//! delivery with the official Standard Webhooks library
//! (`console-tests/webhook-receiver.mjs`, npm `standardwebhooks`), the
//! retry schedule on the injected clock, upstream events per tenant,
//! alerts raised once, SSRF refusals, and — with real processes — two
//! nodes sharing the outbox and a SIGKILL between attempts.

use std::time::Duration;

use keyward_core::clock::{Clock, Timestamp};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::kit::cluster::{Cluster, ClusterOptions};
use crate::kit::receiver::{Receiver, Settings as ReceiverSettings};
use crate::kit::upstream::{scripted, Act};
use crate::kit::{config_from_toml, fresh_store_url, Backend, Server};

const WAIT: Duration = Duration::from_secs(10);

/// A server whose deliveries may go to loopback, polled fast, with
/// `schedule` as the retry delays (ms).
async fn server(schedule: &[u64], extra: &str) -> (Server, String) {
    let url = fresh_store_url(Backend::Sqlite).await;
    let config = config_from_toml(&format!(
        r#"
[keys]
scopes = ["vox:calls:read"]

[webhooks]
allow_private_addresses = true
poll_interval_ms = 20
retry_schedule_ms = {schedule:?}

{extra}
"#
    ));
    let store = std::sync::Arc::new(keyward_store::SqlStore::open(&url).await.unwrap());
    let s = Server::start_on(
        store,
        config,
        keyward_core::clock::ManualClock::starting_now(),
    )
    .await;
    (s, url)
}

/// Creates an endpoint as root; returns `(id, secret)`.
async fn endpoint(s: &Server, tenant: Option<&str>, url: &str, types: &[&str]) -> (String, String) {
    let mut body = json!({ "url": url, "event_types": types, "description": "test" });
    if let Some(t) = tenant {
        body["tenant_id"] = json!(t);
    }
    let r = s.post("/v1/webhooks", &s.root, body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let secret = r.body["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    (
        r.body["endpoint"]["id"].as_str().unwrap().to_owned(),
        secret,
    )
}

/// The receiver's "now" follows the server's test clock, so the library's
/// five-minute timestamp tolerance holds while the test moves time.
async fn sync_receiver(rx: &Receiver, name: &str, s: &Server, secrets: &[&str], plan: &[u16]) {
    rx.configure_with(
        name,
        &ReceiverSettings {
            secrets: secrets.iter().map(|s| (*s).to_owned()).collect(),
            plan: plan.to_vec(),
            delay_ms: 0,
            now_ms: Some(s.clock.now().0),
        },
    )
    .await;
}

async fn delivery(s: &Server, endpoint: &str, event: &str) -> Value {
    let r = s
        .get(
            &format!("/v1/webhooks/{endpoint}/deliveries/{event}"),
            &s.root,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body
}

/// Waits until the delivery has made `attempts` attempts.
async fn attempts(s: &Server, endpoint: &str, event: &str, n: usize) -> Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let d = delivery(s, endpoint, event).await;
        if d["attempts"].as_array().unwrap().len() >= n {
            return d;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{n} attempts expected: {d}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_revocation_is_delivered_once_verified_and_retried_on_the_schedule() {
    let rx = Receiver::start();
    // 5 s then 60 s: the test moves the clock, nothing sleeps that long.
    let (s, db) = server(&[5_000, 60_000], "[metrics]\nenabled = true").await;
    let tenant = s.tenant("Vox").await;
    let (key, _) = s
        .key(&tenant, "agent", json!({ "scopes": ["vox:calls:read"] }))
        .await;
    let (ep, secret) = endpoint(&s, Some(&tenant), &rx.url("revoked"), &["key.revoked"]).await;
    sync_receiver(&rx, "revoked", &s, &[&secret], &[500, 500]).await;

    let r = s
        .post(
            &format!("/v1/keys/{key}/revoke"),
            &s.root,
            json!({ "reason": "test" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let first = rx.wait_for("revoked", 1, WAIT).await;
    let event_id = first[0].id.clone().unwrap();
    assert!(first[0].verified, "{:?}", first[0]);
    assert_eq!(first[0].event_type.as_deref(), Some("key.revoked"));
    assert_eq!(first[0].data["key_id"], key);
    assert_eq!(first[0].data["tenant_id"], tenant);

    // Attempt 1 failed: the next is due 5 s later, ±20 %.
    let d = attempts(&s, &ep, &event_id, 1).await;
    assert_eq!(d["delivery"]["status"], "pending");
    let t0 = s.clock.now().0;
    let next = Timestamp::parse_rfc3339(d["delivery"]["next_attempt_at"].as_str().unwrap())
        .unwrap()
        .0;
    assert!(
        (t0 + 4_000..=t0 + 6_000).contains(&next),
        "next attempt {next} vs now {t0}"
    );
    assert_eq!(d["attempts"][0]["status"], 500);

    // Not before it is due.
    s.clock.set(Timestamp(t0 + 3_900));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.received("revoked").await.len(), 1);

    s.clock.set(Timestamp(t0 + 6_100));
    sync_receiver(&rx, "revoked", &s, &[&secret], &[500, 500]).await;
    rx.wait_for("revoked", 2, WAIT).await;
    attempts(&s, &ep, &event_id, 2).await;

    // The third attempt, after the schedule's 60 s (±20 %), succeeds.
    s.clock.set(Timestamp(t0 + 6_100 + 72_100));
    sync_receiver(&rx, "revoked", &s, &[&secret], &[500, 500]).await;
    let all = rx.wait_for("revoked", 3, WAIT).await;
    let d = attempts(&s, &ep, &event_id, 3).await;
    assert_eq!(d["delivery"]["status"], "delivered", "{d}");
    assert_eq!(
        d["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["status"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [500, 500, 200]
    );
    // Exactly one event, three attempts, each verified by the library.
    assert_eq!(all.len(), 3);
    assert!(all
        .iter()
        .all(|r| r.verified && r.id.as_deref() == Some(&event_id)));
    assert_eq!(
        all.iter().map(|r| r.attempt_no).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        rx.received("revoked").await.len(),
        3,
        "nothing after delivery"
    );

    // The node counted its attempts.
    let m = s
        .http
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "keyward_webhook_attempts_total{result=\"delivered\"} 1",
        "keyward_webhook_attempts_total{result=\"retry\"} 2",
        "keyward_webhook_attempts_total{result=\"failed\"} 0",
    ] {
        assert!(m.lines().any(|l| l == line), "{line} not in:\n{m}");
    }

    // Revoking again changes nothing and sends nothing.
    s.post(&format!("/v1/keys/{key}/revoke"), &s.root, json!({}))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.received("revoked").await.len(), 3);

    // The signing secret is in no file of the store.
    let path = db.trim_start_matches("sqlite://");
    s.shutdown().await;
    let encoded = secret.trim_start_matches("whsec_");
    for file in [path.to_owned(), format!("{path}-wal")] {
        if let Ok(bytes) = std::fs::read(&file) {
            let text = String::from_utf8_lossy(&bytes);
            assert!(!text.contains(encoded), "the secret is in {file}");
        }
    }
}

#[tokio::test]
async fn rotation_sends_both_signatures_during_the_overlap() {
    let rx = Receiver::start();
    let (s, _) = server(&[1_000], "").await;
    let tenant = s.tenant("Vox").await;
    let (ep, old) = endpoint(&s, Some(&tenant), &rx.url("rot"), &["webhook.test"]).await;
    let r = s
        .post(
            &format!("/v1/webhooks/{ep}/rotate-secret"),
            &s.root,
            json!({ "overlap_seconds": 3600 }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let new = r.body["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert!(r.body["endpoint"]["previous_secret_expires_at"].is_string());

    // A receiver that knows only the old secret verifies during the overlap…
    sync_receiver(&rx, "rot", &s, &[&old], &[]).await;
    s.post(&format!("/v1/webhooks/{ep}/test"), &s.root, json!({}))
        .await;
    let got = rx.wait_for("rot", 1, WAIT).await;
    assert!(got[0].verified, "{:?}", got[0]);
    assert_eq!(got[0].signature.as_deref().unwrap().split(' ').count(), 2);
    // …and one that knows only the new one too.
    sync_receiver(&rx, "rot", &s, &[&new], &[]).await;
    s.post(&format!("/v1/webhooks/{ep}/test"), &s.root, json!({}))
        .await;
    let got = rx.wait_for("rot", 2, WAIT).await;
    assert!(got[1].verified, "{:?}", got[1]);

    // After the overlap only the new secret signs.
    s.clock.advance_seconds(3_601);
    sync_receiver(&rx, "rot", &s, &[&old], &[]).await;
    s.post(&format!("/v1/webhooks/{ep}/test"), &s.root, json!({}))
        .await;
    let got = rx.wait_for("rot", 3, WAIT).await;
    assert!(!got[2].verified, "the old secret no longer signs");
    assert_eq!(got[2].signature.as_deref().unwrap().split(' ').count(), 1);
}

#[tokio::test]
async fn upstream_events_reach_only_the_tenants_subscribed_endpoints() {
    let rx = Receiver::start();
    let (s, _) = server(&[1_000], "").await;
    let a = s.tenant("A").await;
    let b = s.tenant("B").await;
    let (_, sa) = endpoint(&s, Some(&a), &rx.url("a"), &["vox.call.*"]).await;
    let (_, sb) = endpoint(&s, Some(&b), &rx.url("b"), &["vox.call.*"]).await;
    sync_receiver(&rx, "a", &s, &[&sa], &[]).await;
    sync_receiver(&rx, "b", &s, &[&sb], &[]).await;

    let publish = |body: Value| s.post("/v1/events", &s.root, body);
    let r = publish(json!({
        "tenant_id": a, "type": "vox.call.completed",
        "data": { "call_id": "call_1", "duration_s": 42 }, "idempotency_key": "call_1-done"
    }))
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.body["deliveries"], 1);
    let id = r.body["id"].as_str().unwrap().to_owned();

    let got = rx.wait_for("a", 1, WAIT).await;
    assert!(got[0].verified);
    assert_eq!(got[0].event_type.as_deref(), Some("vox.call.completed"));
    assert_eq!(got[0].data["call_id"], "call_1");

    // The same idempotency key: the same event, not sent again.
    let again = publish(json!({
        "tenant_id": a, "type": "vox.call.completed",
        "data": { "call_id": "call_1" }, "idempotency_key": "call_1-done"
    }))
    .await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(again.body["id"], id.as_str());
    assert_eq!(again.body["duplicate"], true);

    // An unsubscribed type reaches nobody.
    let r = publish(json!({ "tenant_id": a, "type": "vox.sms.sent", "data": {} })).await;
    assert_eq!(r.body["deliveries"], 0, "{}", r.body);

    // keyward's own types and malformed ones are refused.
    for (t, code) in [
        ("key.revoked", "reserved_type"),
        ("Vox Call", "invalid_event_type"),
    ] {
        let r = publish(json!({ "tenant_id": a, "type": t, "data": {} })).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
        assert_eq!(r.body["errors"][0]["field"], "type", "{}", r.body);
        let _ = code;
    }

    // A tenant key with events:write publishes to its own tenant only.
    let (_, tenant_key) = s
        .key(
            &a,
            "publisher",
            json!({ "scopes": ["keyward:events:write"] }),
        )
        .await;
    let r = s
        .post(
            "/v1/events",
            &tenant_key,
            json!({ "type": "vox.call.started", "data": { "call_id": "call_2" } }),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let r = s
        .post(
            "/v1/events",
            &tenant_key,
            json!({ "tenant_id": b, "type": "vox.call.started", "data": {} }),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);

    rx.wait_for("a", 2, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(rx.received("b").await.is_empty(), "B got A's events");
    assert_eq!(rx.received("a").await.len(), 2);
}

#[tokio::test]
async fn private_and_malformed_endpoint_urls_are_refused() {
    let s = Server::start().await;
    let tenant = s.tenant("Vox").await;
    for (url, code) in [
        ("http://127.0.0.1:9/hook", "forbidden_address"),
        ("http://10.1.2.3/hook", "forbidden_address"),
        (
            "http://169.254.169.254/latest/meta-data",
            "forbidden_address",
        ),
        ("http://[::1]/hook", "forbidden_address"),
        ("http://localhost/hook", "forbidden_address"),
        ("ftp://example.com/hook", "unsupported_url_scheme"),
        ("not a url", "invalid_url"),
    ] {
        let r = s
            .post(
                "/v1/webhooks",
                &s.root,
                json!({ "tenant_id": tenant, "url": url, "event_types": ["key.*"] }),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{url}: {}",
            r.body
        );
        assert_eq!(r.body["errors"][0]["field"], "url", "{url}: {}", r.body);
        assert_eq!(r.body["errors"][0]["code"], code, "{url}: {}", r.body);
    }
    let r = s
        .post(
            "/v1/webhooks",
            &s.root,
            json!({ "tenant_id": tenant, "url": "https://example.com/hook", "event_types": [] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert_eq!(r.body["errors"][0]["field"], "event_types");
}

#[tokio::test]
async fn tenants_see_only_their_endpoints() {
    let (s, _) = server(&[1_000], "").await;
    let a = s.tenant("A").await;
    let b = s.tenant("B").await;
    let (ep_b, _) = endpoint(&s, Some(&b), "http://127.0.0.1:9/b", &["*"]).await;
    let (_, key_a) = s
        .key(
            &a,
            "admin",
            json!({ "scopes": ["keyward:webhooks:read", "keyward:webhooks:write"] }),
        )
        .await;
    let r = s.get(&format!("/v1/webhooks/{ep_b}"), &key_a).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = s.get("/v1/webhooks", &key_a).await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 0);
    let r = s
        .post(
            "/v1/webhooks",
            &key_a,
            json!({ "url": "http://127.0.0.1:9/a", "event_types": ["key.*"] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["endpoint"]["tenant_id"], a.as_str());
    let r = s.get("/v1/webhooks", &key_a).await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 1);
    // Deleting cancels what was pending.
    let id = r.body["data"][0]["id"].as_str().unwrap().to_owned();
    let r = s
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/webhooks/{id}"),
            Some(&key_a),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        s.get(&format!("/v1/webhooks/{id}"), &key_a).await.status,
        StatusCode::NOT_FOUND
    );
}

/// Alerts from real traffic through the gateway: a new client address, a
/// tenfold spike over the key's baseline, a 50 % error rate — each raised
/// once however many requests keep the condition, and sent as an event.
#[tokio::test]
async fn alerts_are_raised_once_and_sent() {
    let rx = Receiver::start();
    let upstream = scripted(|r| {
        let status = if r.target.starts_with("/v1/calls/500") {
            "500 Internal Server Error"
        } else {
            "200 OK"
        };
        Act::Send(
            format!("HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}")
                .into_bytes(),
        )
    })
    .await;
    let (s, _) = server(
        &[1_000],
        &format!(
            r#"
[http]
trusted_proxies = ["127.0.0.1/32"]

[gateway]
upstream = "{}"

[[routes]]
methods = ["GET"]
path = "/v1/calls/{{id}}"
scopes = ["vox:calls:read"]

[alerts]
interval_ms = 100
spike_min_requests = 20
spike_factor = 10.0
error_min_requests = 10
"#,
            upstream.url
        ),
    )
    .await;
    let tenant = s.tenant("Vox").await;
    let (key, secret) = s
        .key(&tenant, "agent", json!({ "scopes": ["vox:calls:read"] }))
        .await;
    let (_, whsec) = endpoint(&s, Some(&tenant), &rx.url("alerts"), &["alert.*"]).await;
    sync_receiver(&rx, "alerts", &s, &[&whsec], &[]).await;
    let call = |path: &'static str, ip: &'static str| {
        s.http
            .get(s.url(path))
            .bearer_auth(&secret)
            .header("X-Forwarded-For", ip)
            .send()
    };
    let open = |kind: &'static str| {
        let s = &s;
        let key = key.clone();
        async move {
            s.get(&format!("/v1/alerts?key_id={key}&kind={kind}"), &s.root)
                .await
                .body["data"]
                .as_array()
                .unwrap()
                .clone()
        }
    };
    let wait_alert = |kind: &'static str| {
        let open = &open;
        async move {
            let deadline = std::time::Instant::now() + WAIT;
            loop {
                let a = open(kind).await;
                if !a.is_empty() {
                    return a;
                }
                assert!(std::time::Instant::now() < deadline, "no {kind} alert");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };

    // A baseline: one request a minute for an hour, from one address.
    let start = s.clock.now().0;
    for m in 0..60 {
        s.clock.set(Timestamp(start + m * 60_000));
        assert_eq!(
            call("/v1/calls/1", "192.0.2.1").await.unwrap().status(),
            200
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Let the counts land before the clock moves on.
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.clock.set(Timestamp(start + 60 * 60_000 + 1_000));
    sync_receiver(&rx, "alerts", &s, &[&whsec], &[]).await;

    // A new address: one alert, however many requests come from it.
    for _ in 0..3 {
        call("/v1/calls/1", "198.51.100.7").await.unwrap();
    }
    let a = wait_alert("new_ip").await;
    assert_eq!(a.len(), 1);
    assert_eq!(a[0]["details"]["ip"], "198.51.100.7");

    // A spike: 30 requests in a minute against ~1 a minute, then more.
    for _ in 0..30 {
        call("/v1/calls/1", "192.0.2.1").await.unwrap();
    }
    let a = wait_alert("traffic_spike").await;
    for _ in 0..30 {
        call("/v1/calls/1", "192.0.2.1").await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(open("traffic_spike").await.len(), 1, "{a:?}");

    // Ten minutes on (the spike is over), half the requests fail
    // upstream: one error-rate alert, however many more fail.
    s.clock.set(Timestamp(start + 70 * 60_000 + 1_000));
    sync_receiver(&rx, "alerts", &s, &[&whsec], &[]).await;
    // (Under the spike minimum of 20 a minute, so no new spike.)
    for _ in 0..5 {
        call("/v1/calls/1", "192.0.2.1").await.unwrap();
        call("/v1/calls/500", "192.0.2.1").await.unwrap();
    }
    let a = wait_alert("error_rate").await;
    assert_eq!(a[0]["details"]["requests"], 10, "{a:?}");
    assert_eq!(a[0]["details"]["errors"], 5, "{a:?}");
    for _ in 0..4 {
        call("/v1/calls/500", "192.0.2.1").await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let spike = open("traffic_spike").await;
    assert_eq!(spike.len(), 1, "{spike:?}");
    assert!(
        spike[0]["resolved_at"].is_string(),
        "the spike ended: {spike:?}"
    );
    assert_eq!(open("error_rate").await.len(), 1);
    assert_eq!(open("new_ip").await.len(), 1);

    // Each sent once, verified.
    let got = rx.wait_for("alerts", 3, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got_now = rx.received("alerts").await;
    assert_eq!(got_now.len(), 3, "{got:?}");
    let mut types: Vec<_> = got_now
        .iter()
        .map(|r| r.event_type.clone().unwrap())
        .collect();
    types.sort();
    assert_eq!(
        types,
        ["alert.error_rate", "alert.new_ip", "alert.traffic_spike"]
    );
    assert!(got_now.iter().all(|r| r.verified));
}

/// Two real nodes over one PostgreSQL: every event is attempted once per
/// attempt (never by both nodes), and a node killed with SIGKILL between
/// attempts leaves the delivery to the other, or to itself after a restart.
#[tokio::test]
async fn two_nodes_deliver_each_attempt_once_and_survive_sigkill() {
    let rx = Receiver::start();
    let cluster = Cluster::start(ClusterOptions {
        nodes: 2,
        config: r#"
[webhooks]
allow_private_addresses = true
poll_interval_ms = 20
retry_schedule_ms = [1000]
signing_key = "6b6579776172642d746573742d6d61737465722d6b65792d3031323334353637"
"#
        .into(),
        ..ClusterOptions::default()
    })
    .await;
    let tenant = cluster.tenant("Vox").await;
    let r = cluster
        .post(
            0,
            "/v1/webhooks",
            &cluster.root,
            json!({ "tenant_id": tenant, "url": rx.url("pair"), "event_types": ["vox.*"] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let secret = r.body["secret"].as_str().unwrap().to_owned();
    // Every event fails once, then succeeds.
    rx.configure("pair", &[&secret], &[500]).await;
    const N: usize = 40;
    for i in 0..N {
        let r = cluster
            .post(
                i % 2,
                "/v1/events",
                &cluster.root,
                json!({ "tenant_id": tenant, "type": "vox.call.completed", "data": { "n": i } }),
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    }
    let got = rx.wait_for("pair", 2 * N, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let got = {
        let now = rx.received("pair").await;
        assert!(now.len() >= got.len());
        now
    };
    let mut per_id = std::collections::BTreeMap::<String, Vec<u32>>::new();
    for r in &got {
        assert!(r.verified, "{r:?}");
        per_id
            .entry(r.id.clone().unwrap())
            .or_default()
            .push(r.attempt_no);
    }
    assert_eq!(per_id.len(), N);
    for (id, tries) in &per_id {
        assert_eq!(tries, &[1, 2], "event {id}: each attempt exactly once");
    }

    // SIGKILL between attempts: attempt 1 fails, the node that made it
    // dies, the other makes attempt 2 when it is due.
    let r = cluster
        .post(
            0,
            "/v1/webhooks",
            &cluster.root,
            json!({ "tenant_id": tenant, "url": rx.url("solo"), "event_types": ["vox.sms.*"] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let solo_secret = r.body["secret"].as_str().unwrap().to_owned();
    rx.configure("solo", &[&solo_secret], &[500]).await;
    let r = cluster
        .post(
            1,
            "/v1/events",
            &cluster.root,
            json!({ "tenant_id": tenant, "type": "vox.sms.sent", "data": {} }),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    rx.wait_for("solo", 1, WAIT).await;
    let ep = r.body["id"].clone();
    let _ = ep;
    // Which node made attempt 1? Kill that one.
    let deadline = std::time::Instant::now() + WAIT;
    let (first_node, endpoint_id) = loop {
        let list = cluster.get(0, "/v1/webhooks", &cluster.root).await;
        let solo = list.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["url"].as_str() == Some(rx.url("solo").as_str()))
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let d = cluster
            .get(
                0,
                &format!("/v1/webhooks/{solo}/deliveries/{id}"),
                &cluster.root,
            )
            .await;
        if let Some(a) = d.body["attempts"].as_array().and_then(|a| a.first()) {
            break (a["node"].as_str().unwrap().to_owned(), solo);
        }
        assert!(std::time::Instant::now() < deadline, "{}", d.body);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (dead, alive) = if cluster.nodes[0].name == first_node {
        (0, 1)
    } else {
        (1, 0)
    };
    cluster.kill(dead);
    let got = rx.wait_for("solo", 2, Duration::from_secs(20)).await;
    assert_eq!(got[1].attempt_no, 2);
    assert!(got[1].verified && got[1].status == 200, "{:?}", got[1]);
    let d = cluster
        .get(
            alive,
            &format!("/v1/webhooks/{endpoint_id}/deliveries/{id}"),
            &cluster.root,
        )
        .await;
    assert_eq!(d.body["delivery"]["status"], "delivered", "{}", d.body);
    assert_eq!(
        d.body["attempts"][1]["node"],
        cluster.nodes[alive].name.as_str()
    );
}

const BIN: &str = env!("CARGO_BIN_EXE_keyward");

/// One `keyward serve` process; killed (SIGKILL) and reaped on drop.
struct Proc(std::process::Child);

impl Proc {
    fn kill9(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `keyward serve` on a SQLite data dir; its base URL.
fn serve(
    data: &std::path::Path,
    config: &std::path::Path,
    log: &std::path::Path,
) -> (Proc, String) {
    let addr = data.join("addr");
    let _ = std::fs::remove_file(&addr);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let child = Proc(
        std::process::Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--address-file"])
            .arg(&addr)
            .arg("--config")
            .arg(config)
            .arg("--data-dir")
            .arg(data)
            .env("KEYWARD_LOG", "debug")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap(),
    );
    for _ in 0..400 {
        if let Some(a) = std::fs::read_to_string(&addr)
            .ok()
            .and_then(|t| t.lines().next().map(str::to_owned))
        {
            if !a.is_empty() {
                return (child, format!("http://{a}"));
            }
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!(
        "keyward did not start: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// SIGKILL between two attempts on the embedded store: after a restart the
/// due attempt is made, and neither the store nor the log holds the secret.
#[tokio::test]
async fn a_delivery_survives_sigkill_and_restart() {
    let rx = Receiver::start();
    let dir = crate::kit::temp_dir("whkill");
    let data = dir.join("data");
    let config = dir.join("keyward.toml");
    let log = dir.join("keyward.log");
    std::fs::write(
        &config,
        "[webhooks]\nallow_private_addresses = true\npoll_interval_ms = 20\nretry_schedule_ms = [1500]\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["root-keys", "create", "--name", "ops", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let root = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let (child, base) = serve(&data, &config, &log);
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        http.post(format!("{base}{path}"))
            .bearer_auth(&root)
            .json(&body)
            .send()
    };
    let t: Value = post("/v1/tenants", json!({ "name": "Vox" }))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tenant = t["id"].as_str().unwrap().to_owned();
    let e: Value = post(
        "/v1/webhooks",
        json!({ "tenant_id": tenant, "url": rx.url("kill"), "event_types": ["vox.call.*"] }),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let secret = e["secret"].as_str().unwrap().to_owned();
    rx.configure("kill", &[&secret], &[500]).await;
    let r = post(
        "/v1/events",
        json!({ "tenant_id": tenant, "type": "vox.call.completed", "data": { "call_id": "c1" } }),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    rx.wait_for("kill", 1, WAIT).await;
    // Attempt 1 failed and is recorded; SIGKILL before attempt 2 is due.
    tokio::time::sleep(Duration::from_millis(100)).await;
    child.kill9();
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert_eq!(
        rx.received("kill").await.len(),
        1,
        "nothing while it is down"
    );
    let (child, _) = serve(&data, &config, &log);
    let got = rx.wait_for("kill", 2, Duration::from_secs(20)).await;
    assert_eq!(got[1].attempt_no, 2);
    assert!(got.iter().all(|r| r.verified), "{got:?}");
    assert_eq!(got[1].status, 200);
    child.kill9();

    // The secret (and its key bytes) are in no file and no log line.
    let encoded = secret.trim_start_matches("whsec_");
    for entry in std::fs::read_dir(&data)
        .unwrap()
        .chain(std::fs::read_dir(&dir).unwrap())
    {
        let path = entry.unwrap().path();
        if path.is_file() {
            let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
            assert!(
                !text.contains(encoded),
                "the secret is in {}",
                path.display()
            );
        }
    }
}

/// The time-based alerts: low credits (the tenant's own threshold),
/// an expiring key, a dormant key disabled by policy — each once, each
/// sent, and resolved when the condition ends.
#[tokio::test]
async fn credits_low_expiring_and_dormant_keys_alert_once() {
    let rx = Receiver::start();
    let (s, _) = server(
        &[1_000],
        r#"
[alerts]
interval_ms = 100
dormant_days = 30
disable_dormant = true
expiring_days = 7
"#,
    )
    .await;
    let tenant = s.tenant("Vox").await;
    let (_, whsec) = endpoint(
        &s,
        Some(&tenant),
        &rx.url("time"),
        &[
            "credits.low",
            "key.expiring",
            "alert.key_dormant",
            "key.updated",
        ],
    )
    .await;
    sync_receiver(&rx, "time", &s, &[&whsec], &[]).await;
    let r = s
        .patch(
            &format!("/v1/tenants/{tenant}"),
            &s.root,
            json!({ "credits_low_threshold": 100 }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["credits_low_threshold"], 100);
    let r = s
        .patch(
            &format!("/v1/tenants/{tenant}"),
            &s.root,
            json!({ "credits_low_threshold": -1 }),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);

    s.grant(&tenant, 50).await;
    let expires = Timestamp(s.clock.now().0 + 3 * 86_400_000).to_rfc3339();
    let (expiring, _) = s
        .key(&tenant, "expiring", json!({ "expires_at": expires }))
        .await;
    let got = rx.wait_for("time", 2, WAIT).await;
    let types: std::collections::BTreeSet<_> =
        got.iter().map(|r| r.event_type.clone().unwrap()).collect();
    assert!(types.contains("credits.low"), "{types:?}");
    assert!(types.contains("key.expiring"), "{types:?}");
    let low = got
        .iter()
        .find(|r| r.event_type.as_deref() == Some("credits.low"))
        .unwrap();
    assert_eq!(low.data["balance"], 50);
    assert_eq!(low.data["threshold"], 100);
    let exp = got
        .iter()
        .find(|r| r.event_type.as_deref() == Some("key.expiring"))
        .unwrap();
    assert_eq!(exp.data["key_id"], expiring.as_str());

    // Back over the threshold: resolved; nothing more is sent meanwhile.
    s.grant(&tenant, 100).await;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let a = s
            .get(
                &format!("/v1/alerts?tenant_id={tenant}&kind=credits_low"),
                &s.root,
            )
            .await;
        if a.body["data"][0]["resolved_at"].is_string() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", a.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(rx.received("time").await.len(), 2);

    // 31 days on, every key of the tenant is dormant: one alert each, and
    // the policy disables them (a `key.updated` event each, audited).
    s.clock.advance_seconds(31 * 86_400);
    sync_receiver(&rx, "time", &s, &[&whsec], &[]).await;
    let got = rx.wait_for("time", 4, WAIT).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let dormant: Vec<_> = rx
        .received("time")
        .await
        .into_iter()
        .filter(|r| r.event_type.as_deref() == Some("alert.key_dormant"))
        .collect();
    assert_eq!(dormant.len(), 1, "{got:?}");
    let k = s.get(&format!("/v1/keys/{expiring}"), &s.root).await;
    assert_eq!(k.body["enabled"], false, "{}", k.body);
    let audit = s
        .get(&format!("/v1/audit?tenant_id={tenant}"), &s.root)
        .await;
    assert!(
        audit.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "key.disabled" && e["actor"] == "alerts"),
        "{}",
        audit.body
    );
    assert!(rx.received("time").await.iter().all(|r| r.verified));
}
