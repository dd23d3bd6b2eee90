//! [`UsageStore`]: deltas add up (two handles: two nodes writing the same
//! minute), land in their minute, hour and day at once, are read back per
//! key and per tenant grouped (paged by group), client addresses merge and
//! are trimmed to the most recently seen, and pruning keeps each
//! granularity for its own time while the totals of the coarser ones stay.

use std::sync::Arc;

use keyward_store::*;

const MIN: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 86_400_000;
/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600_000;

fn delta(
    minute: i64,
    key: &str,
    header: &str,
    outcome: &str,
    class: OutcomeClass,
    n: i64,
) -> UsageDelta {
    UsageDelta {
        minute,
        key_id: key.into(),
        tenant_id: Some("ten_1".into()),
        tenant_header: header.into(),
        route: "GET /v1/calls/{id}".into(),
        outcome: outcome.into(),
        class,
        requests: n,
        credits: 2 * n,
        latency_us: 1_000 * n,
    }
}

fn range(g: Granularity, from: i64, to: i64) -> UsageRange {
    UsageRange {
        granularity: g,
        from,
        to,
    }
}

async fn total<S: UsageStore>(s: &S, key: &str, g: Granularity) -> i64 {
    s.key_usage(key, range(g, 0, i64::MAX / 2))
        .await
        .unwrap()
        .iter()
        .map(|r| r.requests)
        .sum()
}

pub(super) async fn suite<S>(a: Arc<S>, b: Arc<S>)
where
    S: UsageStore + 'static,
{
    use OutcomeClass::*;
    // Two nodes add to the same rows at once, many times: nothing lost.
    let batch = |node: i64| {
        vec![
            delta(T0, "key_1", "", "upstream_2xx", Success, 3 + node),
            delta(T0 + MIN, "key_1", "acme", "upstream_2xx", Success, 1),
            delta(T0 + MIN, "key_1", "", "rate_limited", Denied, 2),
            delta(T0 + 2 * HOUR, "key_1", "", "upstream_5xx", Error, 1),
            delta(T0, "key_2", "", "revoked_api_key", Denied, 4),
        ]
    };
    let mut tasks = Vec::new();
    for i in 0..10 {
        let (a, b) = (a.clone(), b.clone());
        tasks.push(tokio::spawn(async move {
            a.add_usage(&batch(0), &[], 100).await.unwrap();
            b.add_usage(&batch(1), &[], 100).await.unwrap();
            i
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Per node per round: key_1 has 3(+1) + 1 + 2 + 1 requests.
    let key_1 = 10 * ((3 + 1 + 2 + 1) + (4 + 1 + 2 + 1));
    for g in Granularity::ALL {
        assert_eq!(total(a.as_ref(), "key_1", g).await, key_1, "{g:?}");
        assert_eq!(total(b.as_ref(), "key_2", g).await, 80, "{g:?}");
    }
    // By minute: three buckets, outcomes apart, in order.
    let rows = a
        .key_usage("key_1", range(Granularity::Minute, T0, T0 + DAY))
        .await
        .unwrap();
    let shape: Vec<(i64, &str, i64)> = rows
        .iter()
        .map(|r| (r.bucket, r.outcome.as_str(), r.requests))
        .collect();
    assert_eq!(
        shape,
        vec![
            (T0, "upstream_2xx", 70),
            (T0 + MIN, "rate_limited", 40),
            (T0 + MIN, "upstream_2xx", 20),
            (T0 + 2 * HOUR, "upstream_5xx", 20),
        ]
    );
    assert_eq!(rows[1].class, Denied);
    assert_eq!(rows[0].credits, 140);
    assert_eq!(rows[0].latency_us, 70_000);
    // By hour: the first two minutes share an hour.
    let hours = a
        .key_usage("key_1", range(Granularity::Hour, T0, T0 + DAY))
        .await
        .unwrap();
    let buckets: Vec<i64> = hours.iter().map(|r| r.bucket).collect();
    assert_eq!(buckets, vec![T0, T0, T0 + 2 * HOUR]);
    // A range leaves out what is outside it.
    assert_eq!(
        a.key_usage("key_1", range(Granularity::Minute, T0 + MIN, T0 + 2 * MIN))
            .await
            .unwrap()
            .iter()
            .map(|r| r.requests)
            .sum::<i64>(),
        60
    );

    // A tenant grouped by key, then by tenant header, paged by group.
    let day = range(Granularity::Day, T0, T0 + DAY);
    let by_key = a
        .tenant_usage("ten_1", day, GroupBy::Key, None, 10)
        .await
        .unwrap();
    let groups: Vec<(&str, &str, i64)> = by_key
        .iter()
        .map(|r| (r.group.as_str(), r.outcome.as_str(), r.requests))
        .collect();
    assert_eq!(
        groups,
        vec![
            ("key_1", "rate_limited", 40),
            ("key_1", "upstream_2xx", 90),
            ("key_1", "upstream_5xx", 20),
            ("key_2", "revoked_api_key", 80),
        ]
    );
    let first = a
        .tenant_usage("ten_1", day, GroupBy::Key, None, 1)
        .await
        .unwrap();
    assert!(first.iter().all(|r| r.group == "key_1"), "{first:?}");
    let second = a
        .tenant_usage("ten_1", day, GroupBy::Key, Some("key_1"), 1)
        .await
        .unwrap();
    assert!(
        !second.is_empty() && second.iter().all(|r| r.group == "key_2"),
        "{second:?}"
    );
    let by_header = a
        .tenant_usage("ten_1", day, GroupBy::TenantHeader, None, 10)
        .await
        .unwrap();
    let acme: i64 = by_header
        .iter()
        .filter(|r| r.group == "acme")
        .map(|r| r.requests)
        .sum();
    assert_eq!(acme, 20);
    assert!(a
        .tenant_usage("ten_other", day, GroupBy::Key, None, 10)
        .await
        .unwrap()
        .is_empty());

    // Client addresses: merged across batches and nodes, most recent first,
    // trimmed to the bound by last sight.
    let seen = |ip: &str, first: i64, last: i64, n: i64| IpSighting {
        key_id: "key_1".into(),
        ip: ip.into(),
        first_seen: first,
        last_seen: last,
        requests: n,
    };
    a.add_usage(
        &[],
        &[
            seen("192.0.2.1", T0, T0 + 10, 2),
            seen("192.0.2.2", T0 + 5, T0 + 20, 1),
        ],
        3,
    )
    .await
    .unwrap();
    b.add_usage(&[], &[seen("192.0.2.1", T0 - 100, T0 + 30, 5)], 3)
        .await
        .unwrap();
    let ips = a.key_ips("key_1", 0, 10).await.unwrap();
    assert_eq!(
        ips,
        vec![
            KeyIp {
                ip: "192.0.2.1".into(),
                first_seen: T0 - 100,
                last_seen: T0 + 30,
                requests: 7
            },
            KeyIp {
                ip: "192.0.2.2".into(),
                first_seen: T0 + 5,
                last_seen: T0 + 20,
                requests: 1
            },
        ]
    );
    a.add_usage(
        &[],
        &[
            seen("198.51.100.1", T0 + 40, T0 + 40, 1),
            seen("198.51.100.2", T0 + 50, T0 + 50, 1),
        ],
        3,
    )
    .await
    .unwrap();
    let kept: Vec<String> = a
        .key_ips("key_1", 0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.ip)
        .collect();
    // The longest unseen (192.0.2.2, last seen at +20) went.
    assert_eq!(kept, vec!["198.51.100.2", "198.51.100.1", "192.0.2.1"]);
    assert_eq!(
        a.key_ips("key_1", 1, 1).await.unwrap()[0].ip,
        "198.51.100.1"
    );

    // Retention: 8 days on, minutes go and hours and days keep the totals;
    // 91 days on, hours go too; past two years, everything.
    let keep = UsageRetention {
        minutes: 7 * DAY,
        hours: 90 * DAY,
        days: 730 * DAY,
    };
    let p = a.prune_usage(T0 + DAY, keep).await.unwrap();
    assert_eq!(p, Pruned::default(), "nothing is old yet");
    let p = a.prune_usage(T0 + 8 * DAY, keep).await.unwrap();
    assert!(p.minutes > 0 && p.hours == 0 && p.days == 0, "{p:?}");
    assert_eq!(total(a.as_ref(), "key_1", Granularity::Minute).await, 0);
    assert_eq!(total(a.as_ref(), "key_1", Granularity::Hour).await, key_1);
    assert_eq!(total(a.as_ref(), "key_1", Granularity::Day).await, key_1);
    let p = a.prune_usage(T0 + 91 * DAY, keep).await.unwrap();
    assert!(p.hours > 0 && p.days == 0, "{p:?}");
    assert_eq!(total(a.as_ref(), "key_1", Granularity::Day).await, key_1);
    assert_eq!(a.key_ips("key_1", 0, 10).await.unwrap().len(), 3);
    let p = a.prune_usage(T0 + 731 * DAY, keep).await.unwrap();
    assert!(p.days > 0 && p.ips == 3, "{p:?}");
    assert_eq!(total(a.as_ref(), "key_1", Granularity::Day).await, 0);
}
