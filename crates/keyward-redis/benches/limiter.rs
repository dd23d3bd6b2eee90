//! `cargo bench -p keyward-redis --bench limiter`: rate-limit spends per
//! second and µs per spend, in-memory against Redis, at concurrency 1 and 64,
//! in one run so the ratios survive a noisy machine.
//!
//! Each case runs `RUNS` timed runs of `RUN_FOR` after a warm-up and prints
//! the median. Every task spends on a bucket of its own (as keys do), all
//! admitted. The Redis cases need Redis at `KEYWARD_TEST_REDIS_URL`
//! (default `redis://127.0.0.1:6379`); their keys expire within
//! seconds. The "Redis down" case is a limiter whose Redis port is
//! closed: the local fallback, as a degraded node runs it.
//!
//! A plain harness (no criterion) keeps the build lean. Load goes to
//! 127.0.0.1 only and every loop is bounded in time.
#![allow(clippy::unwrap_used)] // A benchmark: a panic is the report.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward_core::clock::{Clock, SystemClock};
use keyward_core::ratelimit::RatePolicy;
use keyward_limits::{MemoryLimiter, RateLimiter};
use keyward_redis::{FailurePolicy, RedisConfig, RedisLimiter};

const RUNS: usize = 3;
const RUN_FOR: Duration = Duration::from_millis(1500);
const WARM_UP: Duration = Duration::from_millis(300);

/// One timed run: `tasks` tasks spending for `time`; answers spends/s.
async fn run(limiter: &Arc<dyn RateLimiter>, tasks: usize, time: Duration) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let total = Arc::new(AtomicU64::new(0));
    // A token a µs and a bucket of 1,000 s: nothing is refused, even in memory
    // at millions a second.
    let policy = RatePolicy::new("bench", 1_000_000, 1_000, 1_000_000_000).unwrap();
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (limiter, stop, total, policy) = (
                Arc::clone(limiter),
                Arc::clone(&stop),
                Arc::clone(&total),
                policy.clone(),
            );
            tokio::spawn(async move {
                let bucket = format!("key_bench_{t:04}");
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let now = SystemClock.now();
                    // As `keyward_limits::Limits` calls it.
                    let d = match limiter.spend_now(&bucket, &policy, 1, now) {
                        Some(d) => d,
                        None => limiter.spend(&bucket, &policy, 1, now).await.unwrap(),
                    };
                    assert!(d.allowed);
                    n += 1;
                    if n.is_multiple_of(64) {
                        // Let the in-memory case share the workers fairly.
                        tokio::task::yield_now().await;
                    }
                }
                total.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    tokio::time::sleep(time).await;
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.await.unwrap();
    }
    total.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// Runs a case; answers the median spends/s.
async fn case(name: &str, limiter: &Arc<dyn RateLimiter>, tasks: usize) -> f64 {
    run(limiter, tasks, WARM_UP).await;
    let mut rates = Vec::new();
    for _ in 0..RUNS {
        rates.push(run(limiter, tasks, RUN_FOR).await);
    }
    rates.sort_by(f64::total_cmp);
    let median = rates[RUNS / 2];
    // Each task has one spend in flight: µs per spend as a caller waits it.
    let us = tasks as f64 * 1e6 / median;
    println!(
        "{name:<28} c={tasks:<3} {median:>12.0} spends/s  {us:>9.2} µs/spend  (runs: {})",
        rates
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    median
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let url = std::env::var("KEYWARD_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let prefix = format!("kwbench:{}:", std::process::id());
        let config = RedisConfig {
            prefix,
            timeout_ms: 1_000,
            on_failure: FailurePolicy::FailClosed,
        };
        let redis = RedisLimiter::connect(&url, "bench_node", config.clone())
            .await
            .unwrap();
        assert_eq!(redis.status().as_str(), "redis", "the bench needs Redis at {url}");
        let redis = Arc::new(redis);
        // A port nothing listens on: the limiter stays on its local fallback.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let down = RedisLimiter::connect(
            &format!("redis://127.0.0.1:{closed}"),
            "bench_node",
            RedisConfig {
                on_failure: FailurePolicy::FailOpenLocal,
                ..config
            },
        )
        .await
        .unwrap();
        assert_eq!(down.status().as_str(), "local_fallback");
        let memory: Arc<dyn RateLimiter> = Arc::new(MemoryLimiter::default());
        let on_redis: Arc<dyn RateLimiter> = Arc::clone(&redis) as Arc<dyn RateLimiter>;
        let down: Arc<dyn RateLimiter> = Arc::new(down);

        println!("{RUNS} runs of {RUN_FOR:?} per case, median; 2 runtime workers");
        for tasks in [1, 64] {
            let m = case("MemoryLimiter", &memory, tasks).await;
            let r = case("RedisLimiter", &on_redis, tasks).await;
            let d = case("RedisLimiter (Redis down)", &down, tasks).await;
            println!(
                "  c={tasks}: Redis/Memory throughput {:.4}  (Memory is {:.0}x faster); Redis down/Memory {:.2}",
                r / m,
                m / r,
                d / m
            );
        }
        assert_eq!(redis.status().as_str(), "redis", "no spend fell back");
        redis.shutdown().await;
    });
}
