//! Redis going away and coming back, on `redis-server`s of the tests' own:
//! spends keep answering at once, the status says so, and Redis takes over
//! again by itself, without a new limiter.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward_core::clock::{Clock, SystemClock};
use keyward_core::ratelimit::RatePolicy;
use keyward_limits::{RateLimitError, RateLimiter};
use keyward_redis::{FailurePolicy, RedisLimiter, RedisSetupError};

use crate::kit::{self, RedisServer};

/// Bound on noticing that Redis is gone, and that it is back.
const NOTICE: Duration = Duration::from_secs(3);

fn day(limit: u64) -> RatePolicy {
    RatePolicy::new("t", limit, 86_400_000, limit).unwrap()
}

async fn admitted(
    nodes: &[&RedisLimiter],
    bucket: &str,
    policy: &RatePolicy,
    tries: usize,
) -> usize {
    let mut n = 0;
    for i in 0..tries {
        let d = nodes[i % nodes.len()]
            .spend(bucket, policy, 1, SystemClock.now())
            .await
            .unwrap();
        n += usize::from(d.allowed);
    }
    n
}

/// Spends in a loop on `limiter` until `stop`; counts answers and errors
/// and keeps the slowest answer.
struct Load {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(u64, u64, Duration)>,
}

fn load(limiter: Arc<RedisLimiter>) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let task = tokio::spawn(async move {
        let p = RatePolicy::new("load", 1_000_000, 1_000, 1_000_000).unwrap();
        let (ok, err) = (AtomicU64::new(0), AtomicU64::new(0));
        let mut slowest = Duration::ZERO;
        let started = Instant::now();
        // Bounded in time whatever happens.
        while !flag.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(30) {
            let t = Instant::now();
            match limiter.spend("key_load", &p, 1, SystemClock.now()).await {
                Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                Err(_) => err.fetch_add(1, Ordering::Relaxed),
            };
            slowest = slowest.max(t.elapsed());
            tokio::task::yield_now().await;
        }
        (ok.into_inner(), err.into_inner(), slowest)
    });
    Load { stop, task }
}

impl Load {
    async fn finish(self) -> (u64, u64, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_local_decides_at_each_nodes_share_and_recovers() {
    let mut server = RedisServer::start().await;
    let url = server.url();
    let prefix = kit::unique_prefix("fail_open");
    let cfg = kit::config(&prefix, FailurePolicy::FailOpenLocal);
    let a = Arc::new(
        RedisLimiter::connect(&url, "node_a", cfg.clone())
            .await
            .unwrap(),
    );
    let b = RedisLimiter::connect(&url, "node_b", cfg).await.unwrap();
    assert_eq!(b.live_nodes(), 2);
    kit::within(NOTICE, "node a sees node b", || a.live_nodes() == 2).await;

    // Global while Redis is up: two nodes share 10.
    assert_eq!(admitted(&[&a, &b], "key_before", &day(10), 40).await, 10);

    // Killed in the middle of a load.
    let running = load(Arc::clone(&a));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let killed = Instant::now();
    server.kill();
    let noticed = kit::within(NOTICE, "node a falls back", || {
        a.status().as_str() == "local_fallback"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ok, err, slowest) = running.finish().await;
    assert_eq!(err, 0, "fail_open_local always answers");
    assert!(ok > 100, "{ok} answers");
    assert!(
        slowest < Duration::from_millis(500),
        "one spend waited {slowest:?}: the timeout bounds it"
    );
    eprintln!("fail_open_local: noticed {noticed:?} after the kill; slowest spend {slowest:?}");
    // The last count is kept: each node admits half.
    assert_eq!(a.live_nodes(), 2);
    let t = Instant::now();
    assert_eq!(admitted(&[&a], "key_down", &day(10), 40).await, 5);
    assert!(
        t.elapsed() < Duration::from_millis(200),
        "local decisions do not wait"
    );
    kit::within(NOTICE, "node b falls back", || {
        b.status().as_str() == "local_fallback"
    })
    .await;
    assert_eq!(admitted(&[&b], "key_down", &day(10), 40).await, 5);
    assert!(killed.elapsed() < Duration::from_secs(10));

    // Back on the same port: Redis takes over again by itself.
    server.restart().await;
    let back = kit::within(NOTICE, "node a uses Redis again", || {
        a.status().as_str() == "redis"
    })
    .await;
    kit::within(NOTICE, "node b uses Redis again", || {
        b.status().as_str() == "redis"
    })
    .await;
    eprintln!("fail_open_local: back on Redis {back:?} after the restart");
    assert_eq!(admitted(&[&a, &b], "key_after", &day(10), 40).await, 10);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_refuses_to_decide_and_recovers() {
    let mut server = RedisServer::start().await;
    let url = server.url();
    let prefix = kit::unique_prefix("fail_closed");
    let a = Arc::new(
        RedisLimiter::connect(
            &url,
            "node_a",
            kit::config(&prefix, FailurePolicy::FailClosed),
        )
        .await
        .unwrap(),
    );
    assert_eq!(admitted(&[&a], "key_before", &day(3), 10).await, 3);

    let running = load(Arc::clone(&a));
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.kill();
    kit::within(NOTICE, "node a is unavailable", || {
        a.status().as_str() == "unavailable"
    })
    .await;
    let (ok, err, slowest) = running.finish().await;
    assert!(
        ok > 0 && err > 0,
        "{ok} answers before the kill, {err} refusals after"
    );
    assert!(
        slowest < Duration::from_millis(500),
        "one spend waited {slowest:?}"
    );
    let t = Instant::now();
    for _ in 0..100 {
        let e = a.spend("key_down", &day(10), 1, SystemClock.now()).await;
        assert!(matches!(e, Err(RateLimitError::Unavailable(_))), "{e:?}");
    }
    assert!(
        t.elapsed() < Duration::from_millis(200),
        "refusals do not wait"
    );

    server.restart().await;
    kit::within(NOTICE, "node a uses Redis again", || {
        a.status().as_str() == "redis"
    })
    .await;
    assert_eq!(admitted(&[&a], "key_after", &day(3), 10).await, 3);
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_costs_one_timeout_not_one_per_request() {
    let server = RedisServer::start().await;
    let prefix = kit::unique_prefix("frozen");
    let a = Arc::new(
        RedisLimiter::connect(
            &server.url(),
            "node_a",
            kit::config(&prefix, FailurePolicy::FailOpenLocal),
        )
        .await
        .unwrap(),
    );
    let running = load(Arc::clone(&a));
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.signal("-STOP");
    kit::within(NOTICE, "node a falls back", || {
        a.status().as_str() == "local_fallback"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok, err, slowest) = running.finish().await;
    assert_eq!(err, 0);
    // The spends in flight when it froze waited for the timeout (100 ms),
    // and none after them.
    assert!(
        slowest >= Duration::from_millis(90) && slowest < Duration::from_millis(400),
        "slowest spend {slowest:?}"
    );
    let t = Instant::now();
    assert_eq!(admitted(&[&a], "key_frozen", &day(6), 10).await, 6);
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "local decisions do not wait"
    );
    eprintln!("frozen Redis: {ok} answers, slowest {slowest:?}");
    server.signal("-CONT");
    kit::within(NOTICE, "node a uses Redis again", || {
        a.status().as_str() == "redis"
    })
    .await;
    assert_eq!(admitted(&[&a], "key_thawed", &day(6), 10).await, 6);
    a.shutdown().await;
}

#[tokio::test]
async fn a_node_starts_without_redis_and_takes_it_up_later() {
    // A port nobody listens on yet.
    let mut server = RedisServer::start().await;
    server.kill();
    let prefix = kit::unique_prefix("late");
    let a = RedisLimiter::connect(
        &server.url(),
        "node_a",
        kit::config(&prefix, FailurePolicy::FailOpenLocal),
    )
    .await
    .unwrap();
    assert_eq!(a.status().as_str(), "local_fallback");
    assert_eq!(a.live_nodes(), 1);
    assert_eq!(admitted(&[&a], "key", &day(4), 10).await, 4);
    server.restart().await;
    kit::within(NOTICE, "node a uses Redis", || {
        a.status().as_str() == "redis"
    })
    .await;
    // A fresh bucket on Redis.
    assert_eq!(admitted(&[&a], "key_redis", &day(4), 10).await, 4);
    a.shutdown().await;
}

#[tokio::test]
async fn only_a_bad_url_or_node_id_fails_the_setup() {
    let cfg = kit::config("kwtest:setup:", FailurePolicy::FailOpenLocal);
    for url in [
        "not a url",
        "http://127.0.0.1:6379",
        "rediss://127.0.0.1:6379",
    ] {
        let e = RedisLimiter::connect(url, "node_a", cfg.clone())
            .await
            .unwrap_err();
        assert!(matches!(e, RedisSetupError::Url(_)), "{url}: {e:?}");
    }
    let with_password = "redis+bogus://user:hunter2@127.0.0.1:6379";
    let e = RedisLimiter::connect(with_password, "node_a", cfg.clone())
        .await
        .unwrap_err();
    assert!(!e.to_string().contains("hunter2"), "{e}");
    let e = RedisLimiter::connect("redis://127.0.0.1:1", "", cfg.clone())
        .await
        .unwrap_err();
    assert!(matches!(e, RedisSetupError::NodeId));
    let mut zero = cfg;
    zero.timeout_ms = 0;
    let e = RedisLimiter::connect("redis://127.0.0.1:1", "node_a", zero)
        .await
        .unwrap_err();
    assert!(matches!(e, RedisSetupError::Timeout));
}

#[test]
fn the_config_reads_from_toml_like_json_with_defaults() {
    let c: keyward_redis::RedisConfig =
        serde_json::from_str(r#"{"on_failure": "fail_closed"}"#).unwrap();
    assert_eq!(c.prefix, "keyward:");
    assert_eq!(c.timeout_ms, 250);
    assert_eq!(c.on_failure, FailurePolicy::FailClosed);
    assert!(serde_json::from_str::<keyward_redis::RedisConfig>(r#"{"prefx": "x"}"#).is_err());
}
