//! Usage over real HTTP: a known mix of requests (every way a request can
//! end, two tenant-header values, three client addresses behind a trusted
//! proxy, through the gateway and the verify API) is counted exactly, per
//! key, per tenant header, per route and per outcome, on SQLite and on two
//! nodes sharing PostgreSQL; bad ranges are typed problems; tenant keys see
//! their own tenant only; retention with the injected clock keeps hours and
//! days when minutes go.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use keyward_core::clock::ManualClock;
use keyward_core::secret::{KeyKind, OsEntropy};
use keyward_server::config::{Config, Settings};
use keyward_store::SqlStore;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::kit::upstream::{scripted, Act, Scripted};
use crate::kit::{config_from_toml, fresh_store_url, Backend, Server};

fn respond(status: &str) -> Vec<u8> {
    format!("HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}")
        .into_bytes()
}

/// An upstream that answers `/v1/calls/404` with 404, `/v1/calls/500` with
/// 500 and everything else with 200.
async fn upstream() -> Scripted {
    scripted(|r| {
        Act::Send(match r.target.as_str() {
            "/v1/calls/404" => respond("404 Not Found"),
            "/v1/calls/500" => respond("500 Internal Server Error"),
            _ => respond("200 OK"),
        })
    })
    .await
}

fn config(upstream: &str) -> Config {
    config_from_toml(&format!(
        r#"
[keys]
scopes = ["calls:read", "calls:write"]

[http]
trusted_proxies = ["127.0.0.1/32"]

[gateway]
upstream = "{upstream}"
tenant_header = "X-Tenant-ID"
timeout_ms = 2000

[[routes]]
methods = ["GET"]
path = "/v1/calls/{{id}}"
scopes = ["calls:read"]
credits = 1

[[routes]]
methods = ["POST"]
path = "/v1/calls"
scopes = ["calls:write"]
"#
    ))
}

const ADDRESSES: [&str; 3] = ["192.0.2.10", "198.51.100.20", "203.0.113.30"];

/// The keys of the mix.
struct Keys {
    tenant: String,
    main: (String, String),
    limited: (String, String),
    revoked: (String, String),
}

async fn keys(s: &Server) -> Keys {
    let tenant = s.tenant("Acme").await;
    s.grant(&tenant, 1_000).await;
    let main = s
        .key(
            &tenant,
            "main",
            json!({ "scopes": ["calls:read"], "sub_tenants": ["t_a", "t_b"] }),
        )
        .await;
    let limited = s
        .key(
            &tenant,
            "limited",
            json!({ "scopes": ["calls:read"], "rate_limit": { "limit": 2, "window_seconds": 3600 } }),
        )
        .await;
    let revoked = s
        .key(&tenant, "revoked", json!({ "scopes": ["calls:read"] }))
        .await;
    let r = s
        .post(
            &format!("/v1/keys/{}/revoke", revoked.0),
            &s.root,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    Keys {
        tenant,
        main,
        limited,
        revoked,
    }
}

/// One gateway request with `secret`, from `ip` (through the trusted
/// proxy), with a tenant header if any; returns the status.
async fn call(
    s: &Server,
    method: reqwest::Method,
    path: &str,
    secret: &str,
    ip: &str,
    tenant: Option<&str>,
) -> u16 {
    let mut req = s
        .http
        .request(method, s.url(path))
        .bearer_auth(secret)
        .header("X-Forwarded-For", ip);
    if let Some(t) = tenant {
        req = req.header("X-Tenant-ID", t);
    }
    req.send().await.unwrap().status().as_u16()
}

/// Sends the mix, spreading it over `nodes` (the rate-limited key's
/// requests all go to the first: in-memory limits are per node). Returns
/// the number of requests that count as usage.
async fn send_mix(nodes: &[&Server], k: &Keys) -> i64 {
    use reqwest::Method;
    let node = |i: usize| nodes[i % nodes.len()];
    let ip = |i: usize| ADDRESSES[i % ADDRESSES.len()];
    let main = k.main.1.as_str();
    let mut i = 0;
    let expect = |got: u16, want: u16, what: &str| {
        assert_eq!(got, want, "{what}");
    };
    for _ in 0..6 {
        let got = call(
            node(i),
            Method::GET,
            "/v1/calls/1",
            main,
            ip(i),
            Some("t_a"),
        )
        .await;
        expect(got, 200, "t_a");
        i += 1;
    }
    for _ in 0..4 {
        let got = call(
            node(i),
            Method::GET,
            "/v1/calls/2",
            main,
            ip(i),
            Some("t_b"),
        )
        .await;
        expect(got, 200, "t_b");
        i += 1;
    }
    for _ in 0..2 {
        let got = call(node(i), Method::GET, "/v1/calls/404", main, ip(i), None).await;
        expect(got, 404, "upstream 404");
        i += 1;
    }
    let got = call(node(i), Method::GET, "/v1/calls/500", main, ip(i), None).await;
    expect(got, 500, "upstream 500");
    i += 1;
    let got = call(
        node(i),
        Method::GET,
        "/v1/calls/3",
        main,
        ip(i),
        Some("t_evil"),
    )
    .await;
    expect(got, 403, "tenant not allowed");
    i += 1;
    for _ in 0..2 {
        let got = call(node(i), Method::POST, "/v1/calls", main, ip(i), None).await;
        expect(got, 403, "scope");
        i += 1;
    }
    for _ in 0..3 {
        let r = node(i)
            .post(
                "/v1/keys/verify",
                &node(i).root,
                json!({ "key": main, "ip": ip(i), "scopes": ["calls:read"] }),
            )
            .await;
        assert_eq!(r.body["valid"], true, "{}", r.body);
        i += 1;
    }
    // The limited key: two pass, the third is refused (all on one node).
    for n in 0..3 {
        let got = call(
            nodes[0],
            Method::GET,
            "/v1/calls/4",
            &k.limited.1,
            ip(n),
            None,
        )
        .await;
        expect(got, if n < 2 { 200 } else { 429 }, "rate limit");
    }
    for n in 0..2 {
        let got = call(
            node(n),
            Method::GET,
            "/v1/calls/5",
            &k.revoked.1,
            ip(n),
            None,
        )
        .await;
        expect(got, 401, "revoked");
    }
    // Keys nobody issued, and no key at all: no key to count usage for.
    let made_up = Settings::from_config(Config::default())
        .unwrap()
        .format
        .generate(&KeyKind::Environment("test".into()), &OsEntropy)
        .unwrap();
    for n in 0..5 {
        let got = call(
            node(n),
            Method::GET,
            "/v1/calls/6",
            made_up.expose(),
            ip(n),
            None,
        )
        .await;
        expect(got, 401, "unknown key");
    }
    let got = node(0)
        .http
        .get(node(0).url("/v1/calls/7"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(got, 401);
    6 + 4 + 2 + 1 + 1 + 2 + 3 + 3 + 2
}

/// Polls `path` until `field` (a JSON pointer) is `want`, then checks it
/// stays there (a count that goes on past it is a double count).
async fn settle(s: &Server, path: &str, field: &str, want: i64) -> Value {
    settle_on(
        s,
        path,
        |b| b.pointer(field).and_then(Value::as_i64).unwrap_or(0),
        want,
    )
    .await
}

/// [`settle`] on any number read from the body.
async fn settle_on(s: &Server, path: &str, read: impl Fn(&Value) -> i64, want: i64) -> Value {
    let field = "the count";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = s.get(path, &s.root).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
        let got = read(&r.body);
        if got == want {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let again = s.get(path, &s.root).await;
            assert_eq!(again.body, r.body, "{path} changed after settling");
            return r.body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path}: {field} stayed at {got}, not {want}: {}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn groups(page: &Value) -> BTreeMap<String, i64> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["group"].as_str().unwrap().to_owned(),
                g["requests"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn counts(v: &Value) -> BTreeMap<String, i64> {
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, n)| (k.clone(), n.as_i64().unwrap()))
        .collect()
}

fn map(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
    pairs.iter().map(|(k, n)| ((*k).to_owned(), *n)).collect()
}

/// The mix's counts, read through `reader` (any node).
async fn check_mix(reader: &Server, k: &Keys, n: i64) {
    let main = &k.main.0;
    let usage = settle(
        reader,
        &format!("/v1/keys/{main}/usage?granularity=minute"),
        "/totals/requests",
        19,
    )
    .await;
    let totals = &usage["totals"];
    assert_eq!(
        counts(&totals["outcomes"]),
        map(&[
            ("upstream_2xx", 10),
            ("upstream_4xx", 2),
            ("upstream_5xx", 1),
            ("tenant_not_allowed", 1),
            ("insufficient_scope", 2),
            ("valid", 3),
        ])
    );
    assert_eq!(
        counts(&totals["denials"]),
        map(&[("tenant_not_allowed", 1), ("insufficient_scope", 2)])
    );
    assert_eq!(totals["successes"], 13);
    assert_eq!(totals["denied"], 3);
    assert_eq!(totals["client_errors"], 2);
    assert_eq!(totals["errors"], 1);
    // A credit per GET that passed its checks (the upstream's answer aside).
    assert_eq!(totals["credits"], 13);
    let rate = totals["error_rate"].as_f64().unwrap();
    assert!((rate - 1.0 / 19.0).abs() < 1e-9, "{rate}");
    // Every minute of the last day is a point; the points add up to the totals.
    let points = usage["points"].as_array().unwrap();
    assert!(points.len() >= 1440, "{}", points.len());
    let summed: i64 = points.iter().map(|p| p["requests"].as_i64().unwrap()).sum();
    assert_eq!(summed, 19);

    let tenant = &k.tenant;
    let by = |g: &str| format!("/v1/tenants/{tenant}/usage?group_by={g}&limit=100");
    let by_key = settle_on(reader, &by("key"), |b| groups(b).values().sum(), n).await;
    assert_eq!(
        groups(&by_key),
        BTreeMap::from([
            (k.main.0.clone(), 19),
            (k.limited.0.clone(), 3),
            (k.revoked.0.clone(), 2),
        ])
    );
    let by_header = groups(&reader.get(&by("tenant_header"), &reader.root).await.body);
    assert_eq!(by_header, map(&[("", n - 10), ("t_a", 6), ("t_b", 4)]));
    let by_outcome = groups(&reader.get(&by("outcome"), &reader.root).await.body);
    assert_eq!(
        by_outcome,
        map(&[
            ("insufficient_scope", 2),
            ("rate_limited", 1),
            ("revoked_api_key", 2),
            ("tenant_not_allowed", 1),
            ("upstream_2xx", 12),
            ("upstream_4xx", 2),
            ("upstream_5xx", 1),
            ("valid", 3),
        ])
    );
    assert_eq!(by_outcome.values().sum::<i64>(), n);
    let by_route = groups(&reader.get(&by("route"), &reader.root).await.body);
    assert_eq!(
        by_route,
        map(&[
            ("GET /v1/calls/{id}", n - 5),
            ("POST /v1/calls", 2),
            ("POST /v1/keys/verify", 3),
        ])
    );

    // The main key's three addresses, each with its share of the requests.
    let ips = reader
        .get(&format!("/v1/keys/{main}/ips"), &reader.root)
        .await;
    assert_eq!(ips.status, StatusCode::OK, "{}", ips.body);
    let seen: BTreeMap<String, i64> = ips.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            assert_eq!(
                a["unfamiliar"], false,
                "a new key's addresses are not unfamiliar"
            );
            (
                a["ip"].as_str().unwrap().to_owned(),
                a["requests"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(seen.keys().cloned().collect::<Vec<_>>(), {
        let mut a: Vec<String> = ADDRESSES.iter().map(|s| (*s).to_owned()).collect();
        a.sort();
        a
    });
    assert_eq!(seen.values().sum::<i64>(), 19);
}

#[tokio::test]
async fn a_known_mix_is_counted_exactly_per_key_tenant_header_route_and_outcome() {
    let up = upstream().await;
    let s = Server::start_with(Backend::Sqlite, config(&up.url)).await;
    let k = keys(&s).await;
    let n = send_mix(&[&s], &k).await;
    check_mix(&s, &k, n).await;
}

#[tokio::test]
async fn the_general_path_counts_the_same_mix_alike() {
    let up = upstream().await;
    let mut c = config(&up.url);
    c.gateway.fast_path = false;
    let s = Server::start_with(Backend::Sqlite, c).await;
    let k = keys(&s).await;
    let n = send_mix(&[&s], &k).await;
    check_mix(&s, &k, n).await;
}

#[tokio::test]
async fn two_nodes_sharing_postgres_add_up_to_the_same_counts() {
    let up = upstream().await;
    let url = fresh_store_url(Backend::Postgres).await;
    let clock = ManualClock::starting_now();
    let a = Server::start_on(
        Arc::new(SqlStore::open(&url).await.unwrap()),
        config(&up.url),
        clock.clone(),
    )
    .await;
    let b = Server::start_on(
        Arc::new(SqlStore::open(&url).await.unwrap()),
        config(&up.url),
        clock,
    )
    .await;
    let k = keys(&a).await;
    let n = send_mix(&[&a, &b], &k).await;
    // Either node reads what both wrote.
    check_mix(&b, &k, n).await;
    check_mix(&a, &k, n).await;
}

#[tokio::test]
async fn bad_ranges_granularities_and_cursors_are_typed_problems() {
    let up = upstream().await;
    let s = Server::start_with(Backend::Sqlite, config(&up.url)).await;
    let k = keys(&s).await;
    let key = &k.main.0;
    let tenant = &k.tenant;
    for (path, field, code) in [
        (format!("/v1/keys/{key}/usage?granularity=week"), "granularity", "invalid"),
        (format!("/v1/keys/{key}/usage?from=yesterday"), "from", "invalid"),
        (
            format!("/v1/keys/{key}/usage?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z"),
            "from",
            "invalid_range",
        ),
        (
            format!("/v1/keys/{key}/usage?from=2026-01-01T00:00:00Z&to=2026-01-01T00:00:00Z"),
            "from",
            "invalid_range",
        ),
        (
            format!(
                "/v1/keys/{key}/usage?granularity=minute&from=2026-01-01T00:00:00Z&to=2026-01-05T00:00:00Z"
            ),
            "from",
            "range_too_large",
        ),
        (
            format!("/v1/tenants/{tenant}/usage?group_by=colour"),
            "group_by",
            "invalid",
        ),
        (format!("/v1/keys/{key}/ips?limit=0"), "limit", "out_of_range"),
        (format!("/v1/tenants/{tenant}/usage?limit=101"), "limit", "out_of_range"),
    ] {
        let r = s.get(&path, &s.root).await;
        r.assert_problem(422, "validation_failed");
        let errors = r.body["errors"].as_array().unwrap();
        assert!(
            errors
                .iter()
                .any(|e| e["field"] == field && e["code"] == code),
            "{path}: {}",
            r.body
        );
    }
    for path in [
        format!("/v1/tenants/{tenant}/usage?cursor=nonsense"),
        format!("/v1/keys/{key}/ips?cursor=nonsense"),
    ] {
        s.get(&path, &s.root)
            .await
            .assert_problem(400, "invalid_cursor");
    }
    s.get("/v1/keys/key_nope/usage", &s.root)
        .await
        .assert_problem(404, "not_found");
    s.get("/v1/tenants/ten_nope/usage", &s.root)
        .await
        .assert_problem(404, "not_found");
    // A day of hours is the default; a range of days by day is fine.
    let r = s.get(&format!("/v1/keys/{key}/usage"), &s.root).await;
    assert_eq!(r.body["granularity"], "hour", "{}", r.body);
    assert!(matches!(
        r.body["points"].as_array().map(Vec::len),
        Some(24 | 25)
    ));
    let r = s
        .get(
            &format!("/v1/keys/{key}/usage?granularity=day&from=2026-01-01T00:00:00Z&to=2026-03-01T00:00:00Z"),
            &s.root,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["points"].as_array().unwrap().len(), 59);
    assert_eq!(r.body["from"], "2026-01-01T00:00:00.000Z");
}

#[tokio::test]
async fn tenant_keys_read_their_own_tenants_usage_only() {
    let up = upstream().await;
    let s = Server::start_with(Backend::Sqlite, config(&up.url)).await;
    let k = keys(&s).await;
    let other = s.tenant("Other").await;
    let (other_key, _) = s.key(&other, "theirs", json!({})).await;
    let (_, reader) = s
        .key(
            &k.tenant,
            "reader",
            json!({ "scopes": ["keyward:keys:read", "keyward:tenants:read"] }),
        )
        .await;
    let main = &k.main.0;
    for path in [
        format!("/v1/keys/{main}/usage"),
        format!("/v1/keys/{main}/ips"),
        format!("/v1/tenants/{}/usage", k.tenant),
    ] {
        let r = s.get(&path, &reader).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
    }
    for path in [
        format!("/v1/keys/{other_key}/usage"),
        format!("/v1/keys/{other_key}/ips"),
        format!("/v1/tenants/{other}/usage"),
    ] {
        s.get(&path, &reader).await.assert_problem(404, "not_found");
    }
    // Without the read scopes: 403.
    let (_, bare) = s.key(&k.tenant, "bare", json!({})).await;
    s.get(&format!("/v1/keys/{main}/usage"), &bare)
        .await
        .assert_problem(403, "insufficient_scope");
    s.get(&format!("/v1/tenants/{}/usage", k.tenant), &bare)
        .await
        .assert_problem(403, "insufficient_scope");
}

#[tokio::test]
async fn retention_drops_minutes_then_hours_and_keeps_the_totals_in_coarser_rows() {
    let up = upstream().await;
    let mut c = config(&up.url);
    c.usage.prune_interval_seconds = 1;
    let s = Server::start_with(Backend::Sqlite, c).await;
    let k = keys(&s).await;
    let main = &k.main.1;
    for i in 0..5 {
        let got = call(
            &s,
            reqwest::Method::GET,
            "/v1/calls/1",
            main,
            ADDRESSES[i % 3],
            None,
        )
        .await;
        assert_eq!(got, 200);
    }
    // The minute the requests were counted in, and the day around it.
    let at = keyward_core::clock::Clock::now(&s.clock).0;
    let minute = at - at.rem_euclid(60_000);
    let day = at - at.rem_euclid(86_400_000);
    let iso = |ms: i64| keyward_core::clock::Timestamp(ms).to_rfc3339();
    let id = &k.main.0;
    let path = |g: &str, from: i64, to: i64| {
        format!(
            "/v1/keys/{id}/usage?granularity={g}&from={}&to={}",
            iso(from),
            iso(to)
        )
    };
    let minutes = path("minute", minute, minute + 60_000);
    let hours = path("hour", day, day + 86_400_000);
    let days = path("day", day, day + 86_400_000);
    settle(&s, &minutes, "/totals/requests", 5).await;
    settle(&s, &hours, "/totals/requests", 5).await;
    settle(&s, &days, "/totals/requests", 5).await;

    // Eight days on, the next pass deletes the minutes; hours and days stay.
    s.clock.advance_seconds(8 * 86_400);
    settle(&s, &minutes, "/totals/requests", 0).await;
    assert_eq!(s.get(&hours, &s.root).await.body["totals"]["requests"], 5);
    assert_eq!(s.get(&days, &s.root).await.body["totals"]["requests"], 5);
    // 91 days on, the hours go; the day keeps the total, and the addresses stay.
    s.clock.advance_seconds(83 * 86_400);
    settle(&s, &hours, "/totals/requests", 0).await;
    assert_eq!(s.get(&days, &s.root).await.body["totals"]["requests"], 5);
    let ips = s.get(&format!("/v1/keys/{id}/ips"), &s.root).await;
    assert_eq!(
        ips.body["data"].as_array().unwrap().len(),
        3,
        "{}",
        ips.body
    );
    // Past two years, the days and the addresses go too.
    s.clock.advance_seconds(640 * 86_400);
    settle(&s, &days, "/totals/requests", 0).await;
    let ips = s.get(&format!("/v1/keys/{id}/ips"), &s.root).await;
    assert_eq!(ips.body["data"], json!([]));
}

#[tokio::test]
async fn an_address_first_seen_long_after_the_key_was_made_is_unfamiliar() {
    let up = upstream().await;
    let s = Server::start_with(Backend::Sqlite, config(&up.url)).await;
    let k = keys(&s).await;
    let main = &k.main.1;
    assert_eq!(
        call(
            &s,
            reqwest::Method::GET,
            "/v1/calls/1",
            main,
            "192.0.2.10",
            None
        )
        .await,
        200
    );
    s.clock.advance_seconds(3 * 86_400);
    assert_eq!(
        call(
            &s,
            reqwest::Method::GET,
            "/v1/calls/1",
            main,
            "192.0.2.10",
            None
        )
        .await,
        200
    );
    assert_eq!(
        call(
            &s,
            reqwest::Method::GET,
            "/v1/calls/1",
            main,
            "203.0.113.99",
            None
        )
        .await,
        200
    );
    let id = &k.main.0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let page = loop {
        let r = s.get(&format!("/v1/keys/{id}/ips"), &s.root).await;
        if r.body["data"].as_array().is_some_and(|d| d.len() == 2) {
            break r.body;
        }
        assert!(tokio::time::Instant::now() < deadline, "{}", r.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let unfamiliar: BTreeMap<String, bool> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["ip"].as_str().unwrap().to_owned(),
                a["unfamiliar"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        unfamiliar,
        BTreeMap::from([
            ("192.0.2.10".to_owned(), false),
            ("203.0.113.99".to_owned(), true)
        ])
    );
    // Most recently seen first, and pages of one carry on with a cursor.
    let first = s.get(&format!("/v1/keys/{id}/ips?limit=1"), &s.root).await;
    assert_eq!(first.body["has_more"], true);
    let cursor = first.body["next_cursor"].as_str().unwrap();
    let second = s
        .get(
            &format!("/v1/keys/{id}/ips?limit=1&cursor={cursor}"),
            &s.root,
        )
        .await;
    assert_eq!(second.body["has_more"], false);
    let both: Vec<&str> = [&first.body, &second.body]
        .iter()
        .map(|b| b["data"][0]["ip"].as_str().unwrap())
        .collect();
    assert_eq!(both.len(), 2);
    assert_ne!(both[0], both[1]);
}
