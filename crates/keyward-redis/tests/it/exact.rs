//! Several nodes, many concurrent requests, one bucket: exactly the limit
//! is admitted, never more.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use keyward_core::clock::Timestamp;
use keyward_core::ratelimit::RatePolicy;
use keyward_limits::RateLimiter;
use keyward_redis::RedisLimiter;

use crate::kit;

const NODES: usize = 4;
const TASKS: usize = 64;

/// Spends `cost(i)` from `TASKS` tasks spread over the limiters, each
/// trying `tries` times; answers (requests admitted, tokens admitted).
async fn hammer(
    nodes: &[Arc<RedisLimiter>],
    policy: &RatePolicy,
    bucket: &str,
    tries: usize,
    cost: fn(usize) -> u64,
) -> (u64, u64) {
    let requests = Arc::new(AtomicU64::new(0));
    let tokens = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let limiter = Arc::clone(&nodes[t % nodes.len()]);
        let (policy, bucket) = (policy.clone(), bucket.to_owned());
        let (requests, tokens) = (Arc::clone(&requests), Arc::clone(&tokens));
        tasks.push(tokio::spawn(async move {
            for i in 0..tries {
                let c = cost(t * tries + i);
                // The node's clock does not matter: the script reads Redis'.
                let d = limiter
                    .spend(&bucket, &policy, c, Timestamp(0))
                    .await
                    .expect("Redis is up: every spend is decided there");
                if d.allowed {
                    requests.fetch_add(1, Ordering::Relaxed);
                    tokens.fetch_add(c, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    (
        requests.load(Ordering::Relaxed),
        tokens.load(Ordering::Relaxed),
    )
}

async fn nodes(prefix: &str) -> Vec<Arc<RedisLimiter>> {
    let mut v = Vec::new();
    for n in 0..NODES {
        v.push(Arc::new(
            kit::shared_limiter(&format!("node_{n}"), prefix).await,
        ));
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_nodes_admit_exactly_the_limit() {
    let prefix = kit::unique_prefix("exact");
    let nodes = nodes(&prefix).await;
    // 500 a day: no token comes back while the test runs.
    let policy = RatePolicy::new("exact", 500, 86_400_000, 500).unwrap();
    let (admitted, _) = hammer(&nodes, &policy, "key_exact", 30, |_| 1).await;
    assert_eq!(admitted, 500, "{} tries on {NODES} nodes", TASKS * 30);
    for n in &nodes {
        assert_eq!(n.status().as_str(), "redis", "no spend fell back");
        let d = n
            .spend("key_exact", &policy, 1, Timestamp(0))
            .await
            .unwrap();
        assert!(!d.allowed);
        assert_eq!(d.remaining, 0);
        n.shutdown().await;
    }
    kit::forget(&kit::shared_url(), &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mixed_costs_never_spend_past_the_burst() {
    let prefix = kit::unique_prefix("exact_costs");
    let nodes = nodes(&prefix).await;
    let policy = RatePolicy::new("exact", 600, 86_400_000, 600).unwrap();
    let (_, tokens) = hammer(&nodes, &policy, "key_costs", 20, |i| (i % 3 + 1) as u64).await;
    // Spent plus left is the whole bucket: nothing over-admitted, nothing
    // lost.
    let left = nodes[0]
        .spend("key_costs", &policy, 0, Timestamp(0))
        .await
        .unwrap()
        .remaining;
    assert_eq!(tokens + left, 600);
    for n in &nodes {
        n.shutdown().await;
    }
    kit::forget(&kit::shared_url(), &prefix).await;
}

#[tokio::test]
async fn every_node_is_counted_and_leaves_on_shutdown() {
    let prefix = kit::unique_prefix("registry");
    let nodes = nodes(&prefix).await;
    // The last one to connect has seen all the others at its first beat.
    assert_eq!(nodes[NODES - 1].live_nodes(), NODES as u64);
    kit::within(
        std::time::Duration::from_secs(3),
        "every node sees all",
        || nodes.iter().all(|n| n.live_nodes() == NODES as u64),
    )
    .await;
    nodes[0].shutdown().await;
    let mut conn = kit::raw(&kit::shared_url()).await;
    let left: u64 = redis::cmd("ZCARD")
        .arg(format!("{prefix}nodes"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, NODES as u64 - 1);
    for n in &nodes[1..] {
        n.shutdown().await;
    }
    kit::forget(&kit::shared_url(), &prefix).await;
}
