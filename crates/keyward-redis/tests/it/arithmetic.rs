//! The script decides as `keyward_core::ratelimit::spend` does.
//!
//! The script reads the Redis clock, so the comparison runs the core's
//! `spend` at the very instant the script reports it decided at (server
//! time, whole milliseconds, which is also the core's resolution): the same
//! inputs, so the decisions and the stored TAT must be identical, bit for
//! bit. Policies are fast (a token every few ms), with pauses between
//! spends, so refills, partial buckets, refusals with honest retry times and
//! a policy change in the middle of a bucket's life are all exercised
//! against real time rather than a frozen clock.

use std::time::Duration;

use keyward_core::clock::Timestamp;
use keyward_core::ratelimit::{spend, RatePolicy, Tat};
use keyward_limits::RateLimiter;

use crate::kit;

/// The TAT stored for `bucket`, checked against the core's: equal, or
/// gone because the bucket is full again.
async fn check_stored(
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
    want: Tat,
    step: usize,
) {
    let stored: Option<u64> = redis::cmd("GET").arg(key).query_async(conn).await.unwrap();
    match stored {
        Some(tat) => assert_eq!(tat, want, "stored TAT at step {step}"),
        None => {
            let (s, us): (u64, u64) = redis::cmd("TIME").query_async(conn).await.unwrap();
            assert!(
                want <= s * 1_000_000 + us,
                "step {step}: key gone while the bucket is not full ({want})"
            );
        }
    }
}

#[tokio::test]
async fn decisions_equal_the_core_at_the_server_clock() {
    let prefix = kit::unique_prefix("arith");
    let url = kit::shared_url();
    let limiter = kit::shared_limiter("node_a", &prefix).await;
    let mut conn = kit::raw(&url).await;
    let key = format!("{prefix}rl:key_arith");
    let policies = [
        // 10 per 50 ms: a token every 5 ms.
        RatePolicy::new("fast", 10, 50, 10).unwrap(),
        // Burst above the limit, then below it.
        RatePolicy::new("wide", 4, 40, 7).unwrap(),
        RatePolicy::new("narrow", 20, 100, 3).unwrap(),
        // Slow: a reload to it keeps the debt at its own bucket size.
        RatePolicy::new("slow", 2, 60_000, 2).unwrap(),
        RatePolicy::new("fast", 10, 50, 10).unwrap(),
    ];
    let costs = [1, 0, 3, 1, 1, 2, 11, 1, 5, 1, 0, 7, 1, 4];
    let mut tat: Tat = 0;
    let (mut allowed, mut refused) = (0, 0);
    let mut last_now = 0;
    for step in 0..300 {
        let policy = &policies[step / 60];
        let cost = costs[step % costs.len()];
        let (got, at) = limiter
            .spend_on_server("key_arith", policy, cost)
            .await
            .unwrap();
        assert!(at.0 >= last_now, "the server clock went back");
        last_now = at.0;
        let want = spend(policy, &mut tat, at, cost);
        assert_eq!(
            got, want,
            "step {step}: {} cost {cost} at {}",
            policy.name, at.0
        );
        check_stored(&mut conn, &key, tat, step).await;
        if got.allowed {
            allowed += 1;
        } else {
            refused += 1;
        }
        if step % 4 == 3 {
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    }
    // Both branches were compared, many times.
    assert!(
        allowed > 30 && refused > 30,
        "{allowed} allowed, {refused} refused"
    );

    limiter.shutdown().await;
    kit::forget(&url, &prefix).await;
}

#[tokio::test]
async fn idle_buckets_vanish_once_full() {
    let prefix = kit::unique_prefix("expire");
    let url = kit::shared_url();
    let limiter = kit::shared_limiter("node_a", &prefix).await;
    let mut conn = kit::raw(&url).await;
    let key = format!("{prefix}rl:key_ttl");
    // 5 per 100 ms: three spent refill within 60 ms.
    let p = RatePolicy::new("t", 5, 100, 5).unwrap();
    for _ in 0..3 {
        assert!(
            limiter
                .spend("key_ttl", &p, 1, Timestamp(0))
                .await
                .unwrap()
                .allowed
        );
    }
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((1..=60).contains(&ttl), "PTTL {ttl}");
    tokio::time::sleep(Duration::from_millis(150)).await;
    let exists: bool = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!exists);
    // A report (cost 0) on a full bucket writes nothing.
    let d = limiter.spend("key_ttl", &p, 0, Timestamp(0)).await.unwrap();
    assert_eq!(d.remaining, 5);
    let exists: bool = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!exists);
    limiter.shutdown().await;
    kit::forget(&url, &prefix).await;
}
