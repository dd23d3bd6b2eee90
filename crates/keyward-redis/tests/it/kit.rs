//! What the tests share: the shared Redis, unique key prefixes, and
//! `redis-server` processes of their own that die with the test.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use keyward_core::clock::{Clock, SystemClock};
use keyward_redis::{FailurePolicy, RedisConfig, RedisLimiter};

pub fn shared_url() -> String {
    std::env::var("KEYWARD_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A key prefix no other test (or test run) uses.
pub fn unique_prefix(test: &str) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let ms = SystemClock.now().0;
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("kwtest:{test}:{}:{ms}:{seq}:", std::process::id())
}

pub fn config(prefix: &str, on_failure: FailurePolicy) -> RedisConfig {
    RedisConfig {
        prefix: prefix.to_owned(),
        timeout_ms: 100,
        on_failure,
    }
}

/// A connection to the Redis at `url`, or a loud failure.
pub async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(url).unwrap();
    let conn = tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await;
    match conn {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => panic!("these tests need Redis at {url} (set KEYWARD_TEST_REDIS_URL): {e}"),
        Err(_) => panic!("these tests need Redis at {url}: no connection within 5 s"),
    }
}

/// A limiter on the shared Redis, which must be up.
pub async fn shared_limiter(node: &str, prefix: &str) -> RedisLimiter {
    let url = shared_url();
    raw(&url).await;
    let l = RedisLimiter::connect(&url, node, config(prefix, FailurePolicy::FailClosed))
        .await
        .unwrap();
    assert_eq!(
        l.status().as_str(),
        "redis",
        "these tests need Redis at {url} (set KEYWARD_TEST_REDIS_URL)"
    );
    l
}

/// Deletes the keys under `prefix` (never anything else: the shared Redis
/// is shared).
pub async fn forget(url: &str, prefix: &str) {
    let mut conn = raw(url).await;
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}

/// Waits (at most `limit`) until `done`; answers how long it took.
pub async fn within(limit: Duration, what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

/// A `redis-server` of the test's own on a free loopback port, killed when
/// dropped (a failing test does not leave it behind).
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut s = RedisServer { port, child: None };
        s.restart().await;
        s
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again, on the same port) and waits until it answers.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let bin = std::env::var("KEYWARD_TEST_REDIS_SERVER")
            .unwrap_or_else(|_| "/usr/bin/redis-server".into());
        let child = Command::new(&bin)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("these tests need {bin} (set KEYWARD_TEST_REDIS_SERVER): {e}")
            });
        self.child = Some(child);
        let client = redis::Client::open(self.url()).unwrap();
        let start = Instant::now();
        loop {
            if let Ok(mut c) = client.get_multiplexed_async_connection().await {
                if redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok()
                {
                    return;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "redis-server on port {} did not answer within 10 s",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Freezes it (SIGSTOP) or thaws it (SIGCONT): a Redis that accepts
    /// nothing and answers nothing, with its connections still open.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let ok = Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {signal} {pid}");
    }

    /// Kills it at once (SIGKILL: no goodbye to its clients).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
