//! Prometheus metrics over real HTTP: a scrape's counters match a known mix
//! of requests exactly (on the fast path and the general path), the text
//! passes `promtool check metrics`, the token is required when set, the
//! separate listener serves them alone, random paths and keys add no label
//! sets, and with metrics off the path is not keyward's.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use keyward_core::secret::{KeyKind, OsEntropy};
use keyward_server::config::{Config, Settings};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::kit::{config_from_toml, temp_dir, Backend, Reply, Server};
use crate::upstream;

const TOKEN: &str = "scrape-token-0123456789";

fn config(upstream: &str, metrics: &str) -> Config {
    config_from_toml(&format!(
        r#"
[keys]
scopes = ["vox:read", "vox:calls:create"]

[limits]
default_tier = "small"
[limits.tiers.small]
limit = 5
window_seconds = 3600

[metrics]
{metrics}

[gateway]
upstream = "{upstream}"
timeout_ms = 3000

[[routes]]
methods = ["GET"]
path = "/v1/items/{{id}}"

[[routes]]
methods = ["GET"]
path = "/v1/vox/health"
respond = {{ ok = true }}

[[routes]]
methods = ["POST"]
path = "/v1/calls"
scopes = ["vox:calls:create"]

[[routes]]
methods = ["GET"]
path = "/v1/paid"
credits = 1
respond = {{ paid = true }}

[[routes]]
methods = ["GET"]
path = "/metrics"
auth = false
"#
    ))
}

/// A checksum-valid key no store holds.
fn made_up(config: &Config) -> String {
    let settings = Settings::from_config(config.clone()).unwrap();
    settings
        .format
        .generate(&KeyKind::Environment("test".into()), &OsEntropy)
        .unwrap()
        .expose()
        .to_owned()
}

/// GETs `url` with an optional bearer token.
async fn get(http: &reqwest::Client, url: &str, bearer: Option<&str>) -> Reply {
    let mut req = http.get(url);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    Reply::from(req.send().await.unwrap()).await
}

/// Scrapes `url`, asserting a 200 in the text format.
async fn scrape_at(http: &reqwest::Client, url: &str, bearer: Option<&str>) -> String {
    let r = get(http, url, bearer).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.content_type(), "text/plain; version=0.0.4; charset=utf-8");
    r.body.as_str().unwrap().to_owned()
}

async fn scrape(s: &Server) -> String {
    scrape_at(&s.http, &s.url("/metrics"), None).await
}

/// The value of the sample `series` (`name{labels}` as written), if any.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[track_caller]
fn expect(text: &str, series: &str, want: f64) {
    assert_eq!(value(text, series), Some(want), "{series} in:\n{text}");
}

/// Every sample's name and labels.
fn series(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' ').map(|(s, _)| s.to_owned()))
        .collect()
}

/// The requests of one surface, summed over every label set.
fn requests_of(text: &str, surface: &str) -> f64 {
    let prefix = format!("keyward_requests_total{{surface=\"{surface}\",");
    text.lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// `promtool check metrics` on `text`: it must be installed (Debian package
/// `prometheus`); the test fails, never skips, without it.
fn promtool_check(text: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("promtool is required (apt-get install prometheus) and did not start: {e}")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- the scrape:\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn gw(route: &str, outcome: &str, class: &str) -> String {
    format!(
        "keyward_requests_total{{surface=\"gateway\",route=\"{route}\",outcome=\"{outcome}\",status_class=\"{class}\"}}"
    )
}

async fn a_known_mix_is_counted_exactly(fast_path: bool) {
    let up = upstream::start().await;
    let mut c = config(&up.url, "enabled = true");
    c.gateway.fast_path = fast_path;
    let unknown = made_up(&c);
    let s = Server::start_with(Backend::Sqlite, c).await;
    let tenant = s.tenant("Acme").await;
    let (_, a) = s.key(&tenant, "a", json!({ "scopes": ["vox:read"] })).await;
    let (_, b) = s.key(&tenant, "b", json!({ "scopes": ["vox:read"] })).await;
    let before = scrape(&s).await;
    assert_eq!(requests_of(&before, "gateway"), 0.0, "{before}");

    // Key a: 3 forwarded and 2 answered by keyward spend its limit of 5;
    // the 6th is refused; a scope it lacks is refused before any spend.
    for _ in 0..3 {
        assert_eq!(s.get("/v1/items/1", &a).await.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(s.get("/v1/vox/health", &a).await.status, 200);
    }
    s.get("/v1/vox/health", &a)
        .await
        .assert_problem(429, "rate_limited");
    s.post("/v1/calls", &a, json!({}))
        .await
        .assert_problem(403, "insufficient_scope");
    // Keys that are not keys: malformed (no cache lookup), well-formed but
    // unknown (a miss, then a hit in the negative cache), none at all.
    for _ in 0..2 {
        s.get("/v1/items/1", "kw_test_nope")
            .await
            .assert_problem(401, "invalid_api_key");
    }
    let cache = scrape(&s).await;
    let hits = value(&cache, "keyward_key_cache_lookups_total{result=\"hit\"}").unwrap();
    let misses = value(&cache, "keyward_key_cache_lookups_total{result=\"miss\"}").unwrap();
    for _ in 0..2 {
        s.get("/v1/items/1", &unknown)
            .await
            .assert_problem(401, "invalid_api_key");
    }
    let cache = scrape(&s).await;
    expect(
        &cache,
        "keyward_key_cache_lookups_total{result=\"miss\"}",
        misses + 1.0,
    );
    expect(
        &cache,
        "keyward_key_cache_lookups_total{result=\"hit\"}",
        hits + 1.0,
    );
    s.call(Method::GET, "/v1/items/1", None, None)
        .await
        .assert_problem(401, "missing_credentials");
    s.get("/nope", &a).await.assert_problem(404, "not_found");
    // Key b: credits, none and then two.
    s.get("/v1/paid", &b)
        .await
        .assert_problem(402, "credits_exhausted");
    s.grant(&tenant, 5).await;
    for _ in 0..2 {
        assert_eq!(s.get("/v1/paid", &b).await.status, 200);
    }
    // The verify API: one valid (spends b's rate limit), one malformed.
    assert_eq!(s.verify(&b, json!({})).await["valid"], true);
    assert_eq!(s.verify("kw_test_nope", json!({})).await["valid"], false);
    // A gateway route at /metrics never sees a scrape: keyward's own path wins.
    let text = scrape(&s).await;
    assert!(
        up.seen().iter().all(|r| r.uri != "/metrics"),
        "the scrape reached the upstream"
    );
    promtool_check(&text);

    let items = "GET /v1/items/{id}";
    let health = "GET /v1/vox/health";
    for (series, want) in [
        (gw(items, "upstream_2xx", "2xx"), 3.0),
        (gw(health, "valid", "2xx"), 2.0),
        (gw(health, "rate_limited", "4xx"), 1.0),
        (gw("POST /v1/calls", "insufficient_scope", "4xx"), 1.0),
        (gw(items, "invalid_api_key", "4xx"), 4.0),
        (gw(items, "missing_credentials", "4xx"), 1.0),
        (gw("unmatched", "not_found", "4xx"), 1.0),
        (gw("GET /v1/paid", "credits_exhausted", "4xx"), 1.0),
        (gw("GET /v1/paid", "valid", "2xx"), 2.0),
    ] {
        expect(&text, &series, want);
    }
    assert_eq!(requests_of(&text, "gateway"), 16.0, "{text}");
    let verify = |outcome: &str| {
        format!("keyward_requests_total{{surface=\"verify\",route=\"POST /v1/keys/verify\",outcome=\"{outcome}\",status_class=\"2xx\"}}")
    };
    expect(&text, &verify("valid"), 1.0);
    expect(&text, &verify("invalid_api_key"), 1.0);
    assert_eq!(requests_of(&text, "verify"), 2.0, "{text}");
    expect(
        &text,
        "keyward_request_duration_seconds_count{surface=\"gateway\"}",
        16.0,
    );
    expect(
        &text,
        "keyward_request_duration_seconds_bucket{surface=\"gateway\",le=\"+Inf\"}",
        16.0,
    );
    expect(
        &text,
        "keyward_request_duration_seconds_count{surface=\"verify\"}",
        2.0,
    );
    expect(&text, "keyward_upstream_duration_seconds_count", 3.0);
    // 3 + 2 + 1 (429) by a, 1 + 2 on the paid route and 1 verify by b.
    expect(
        &text,
        "keyward_rate_limit_decisions_total{decision=\"allowed\"}",
        9.0,
    );
    expect(
        &text,
        "keyward_rate_limit_decisions_total{decision=\"refused\"}",
        1.0,
    );
    expect(
        &text,
        "keyward_credit_decisions_total{decision=\"spent\"}",
        2.0,
    );
    expect(
        &text,
        "keyward_credit_decisions_total{decision=\"exhausted\"}",
        1.0,
    );
    // keyward's own routes, by template: two tenant keys and a grant made
    // as root, two verify calls, and the scrapes so far (this one counts
    // when it is answered).
    expect(
        &text,
        "keyward_http_requests_total{route=\"/v1/keys\",status_class=\"2xx\"}",
        2.0,
    );
    expect(
        &text,
        "keyward_http_requests_total{route=\"/v1/tenants/{id}/credits\",status_class=\"2xx\"}",
        1.0,
    );
    expect(
        &text,
        "keyward_http_requests_total{route=\"/v1/keys/verify\",status_class=\"2xx\"}",
        2.0,
    );
    expect(
        &text,
        "keyward_http_requests_total{route=\"/metrics\",status_class=\"2xx\"}",
        3.0,
    );
    assert!(
        !text.contains("route=\"unmatched\",status_class"),
        "gateway requests are not counted twice:\n{text}"
    );
    expect(&text, "keyward_rate_limiter_state{state=\"local\"}", 1.0);
    expect(&text, "keyward_rate_limiter_state{state=\"redis\"}", 0.0);
    expect(
        &text,
        "keyward_change_follower_state{state=\"polling\"}",
        1.0,
    );
    expect(&text, "keyward_metrics_overflow_total", 0.0);
    for secret in [&a, &b, &unknown] {
        assert!(!text.contains(secret.as_str()), "a secret in the scrape");
    }
    assert!(!text.contains(&tenant), "a tenant id in the scrape");
    assert!(!text.contains("127.0.0.1"), "an address in the scrape");

    // The usage flush is timed once it has written something.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = scrape(&s).await;
        if value(&text, "keyward_usage_rows_written_total").unwrap_or(0.0) > 0.0 {
            assert!(
                value(
                    &text,
                    "keyward_store_duration_seconds_count{op=\"usage_flush\"}"
                )
                .unwrap()
                    >= 1.0,
                "{text}"
            );
            assert!(
                value(
                    &text,
                    "keyward_store_duration_seconds_count{op=\"find_keys\"}"
                )
                .unwrap()
                    >= 1.0,
                "{text}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "usage was never flushed:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_mix_is_counted_exactly_on_the_fast_path() {
    a_known_mix_is_counted_exactly(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_mix_is_counted_exactly_on_the_general_path() {
    a_known_mix_is_counted_exactly(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_required_when_set() {
    let up = upstream::start().await;
    let s = Server::start_with(
        Backend::Sqlite,
        config(&up.url, &format!("enabled = true\ntoken = \"{TOKEN}\"")),
    )
    .await;
    let url = s.url("/metrics");
    get(&s.http, &url, None)
        .await
        .assert_problem(401, "invalid_api_key");
    get(&s.http, &url, Some("scrape-token-012345678X"))
        .await
        .assert_problem(401, "invalid_api_key");
    get(&s.http, &url, Some(&s.root))
        .await
        .assert_problem(401, "invalid_api_key");
    let r = s
        .http
        .get(&url)
        .header("authorization", format!("Basic {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "only the bearer scheme");
    let text = scrape_at(&s.http, &url, Some(TOKEN)).await;
    assert!(text.contains("# TYPE keyward_requests_total counter"));
    assert!(!text.contains(TOKEN));
    // Refused scrapes are counted as keyward's own requests.
    expect(
        &text,
        "keyward_http_requests_total{route=\"/metrics\",status_class=\"4xx\"}",
        4.0,
    );
    assert!(up.seen().is_empty(), "nothing reached the upstream");
}

/// A port free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_listen_serves_them_on_their_own_address_only() {
    let up = upstream::start().await;
    let port = free_port();
    let mut c = config(
        &up.url,
        &format!("enabled = true\nlisten = \"127.0.0.1:{port}\"\ntoken = \"{TOKEN}\""),
    );
    // No gateway route at /metrics here: the main listener has nothing there.
    c.routes.retain(|r| r.path != "/metrics");
    let s = Server::start_with(Backend::Sqlite, c).await;
    let tenant = s.tenant("Acme").await;
    let (_, a) = s.key(&tenant, "a", json!({})).await;
    assert_eq!(s.get("/v1/items/7", &a).await.status, 200);

    s.get("/metrics", &a).await.assert_problem(404, "not_found");
    let own = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(5);
    let text = loop {
        match s
            .http
            .get(format!("{own}/metrics"))
            .bearer_auth(TOKEN)
            .send()
            .await
        {
            Ok(r) if r.status() == 200 => break r.text().await.unwrap(),
            other => {
                assert!(Instant::now() < deadline, "{other:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    promtool_check(&text);
    expect(&text, &gw("GET /v1/items/{id}", "upstream_2xx", "2xx"), 1.0);
    expect(
        &text,
        "keyward_http_requests_total{route=\"/v1/keys\",status_class=\"2xx\"}",
        1.0,
    );
    // The token holds there too, and errors keep the deployment's style.
    get(&s.http, &format!("{own}/metrics"), None)
        .await
        .assert_problem(401, "invalid_api_key");
    get(&s.http, &format!("{own}/v1/ready"), Some(TOKEN))
        .await
        .assert_problem(404, "not_found");
    // It stops with the server.
    s.shutdown().await;
    assert!(
        reqwest::Client::new()
            .get(format!("{own}/metrics"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_err(),
        "the metrics listener outlived the server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_paths_and_keys_add_no_label_sets() {
    use rand_like::Rand;
    let up = upstream::start().await;
    let c = config(&up.url, "enabled = true");
    let unknown = made_up(&c);
    let s = Server::start_with(Backend::Sqlite, c.clone()).await;
    // One of each kind first: a route matched and none, a malformed key,
    // a well-formed unknown one, none.
    let kinds = |rng: &mut Rand, i: usize| {
        let path = if i.is_multiple_of(2) {
            format!("/v1/items/{}", rng.word())
        } else {
            format!("/{}/{}", rng.word(), rng.word())
        };
        let key = match i % 3 {
            0 => Some(format!("kw_test_{}", rng.word())),
            1 => Some(made_up(&c)),
            _ => None,
        };
        (path, key)
    };
    let mut rng = Rand::new(7);
    for i in 0..6 {
        let (path, key) = kinds(&mut rng, i);
        let r = s.call(Method::GET, &path, key.as_deref(), None).await;
        assert!(r.status.is_client_error(), "{path}: {}", r.status);
    }
    s.get("/v1/items/1", &unknown).await;
    let before = scrape(&s).await;
    let sets = value(&before, "keyward_metrics_label_sets").unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0..1000 {
        assert!(
            Instant::now() < deadline,
            "1,000 requests took over a minute"
        );
        let (path, key) = kinds(&mut rng, i);
        let r = s.call(Method::GET, &path, key.as_deref(), None).await;
        assert!(r.status.is_client_error(), "{path}: {}", r.status);
    }
    let after = scrape(&s).await;
    // The scrape itself is the one label set that may be new (its own
    // route, first counted after the first scrape).
    let mut new: BTreeSet<String> = series(&after)
        .difference(&series(&before))
        .cloned()
        .collect();
    new.remove("keyward_http_requests_total{route=\"/metrics\",status_class=\"2xx\"}");
    assert!(new.is_empty(), "new label sets: {new:?}");
    // Each worker holds the label sets it counted: at most this many.
    let distinct = series(&after)
        .iter()
        .filter(|s| {
            s.starts_with("keyward_requests_total{")
                || s.starts_with("keyward_http_requests_total{")
        })
        .count();
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let held = value(&after, "keyward_metrics_label_sets").unwrap();
    assert!(
        held >= sets && held <= (distinct * workers) as f64,
        "{after}"
    );
    assert_eq!(
        requests_of(&after, "gateway") - requests_of(&before, "gateway"),
        1000.0
    );
    assert!(!after.contains("kw_test_"), "a key in a label");
    expect(&after, "keyward_metrics_overflow_total", 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_metrics_off_the_path_is_not_keywards() {
    let up = upstream::start().await;
    // Off (the default): a gateway route at /metrics gets the request.
    let s = Server::start_with(Backend::Sqlite, config(&up.url, "enabled = false")).await;
    let r = get(&s.http, &s.url("/metrics"), None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["upstream"], true, "{}", r.body);
    assert_eq!(up.last().uri, "/metrics");
    s.shutdown().await;
    // And without such a route, nothing is there.
    let mut c = config(&up.url, "");
    c.routes.retain(|r| r.path != "/metrics");
    let s = Server::start_with(Backend::Sqlite, c).await;
    get(&s.http, &s.url("/metrics"), None)
        .await
        .assert_problem(404, "not_found");
}

#[test]
fn a_metrics_path_that_is_keywards_own_or_a_pattern_is_refused() {
    for (path, listen) in [
        ("/v1/ready", ""),
        ("/console", ""),
        ("/metrics/{x}", ""),
        ("/a//b", "listen = \"127.0.0.1:9\""),
    ] {
        let c = config_from_toml(&format!(
            "[metrics]\nenabled = true\npath = \"{path}\"\n{listen}\n"
        ));
        let dir = temp_dir("metrics-path");
        let store = format!("sqlite://{}", dir.join("k.db").display());
        let rt = tokio::runtime::Runtime::new().unwrap();
        let err = rt.block_on(async {
            let store = std::sync::Arc::new(keyward_store::SqlStore::open(&store).await.unwrap());
            keyward_server::Keyward::new(
                Settings::from_config(c).unwrap(),
                store,
                std::sync::Arc::new(keyward_core::clock::SystemClock),
            )
            .err()
            .map(|e| e.to_string())
        });
        let err = err.unwrap_or_else(|| panic!("{path} was accepted"));
        assert!(err.contains("metrics.path"), "{path}: {err}");
    }
}

/// A small deterministic generator (the tests need words, not quality).
mod rand_like {
    pub struct Rand(u64);

    impl Rand {
        pub fn new(seed: u64) -> Rand {
            Rand(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }

        fn next(&mut self) -> u64 {
            // xorshift64*
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        pub fn word(&mut self) -> String {
            const A: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
            let n = 4 + (self.next() % 12) as usize;
            (0..n)
                .map(|_| A[(self.next() % A.len() as u64) as usize] as char)
                .collect()
        }
    }
}

/// `keyward serve` itself: the start-up log names where the metrics are,
/// and they are there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_serve_command_names_the_metrics_listener_and_serves_it() {
    use std::process::{Command, Stdio};
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let dir = temp_dir("metrics-serve");
    let port = free_port();
    std::fs::write(
        dir.join("k.toml"),
        format!("[metrics]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    let log = dir.join("serve.log");
    let address = dir.join("address");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyward"));
    for (name, _) in std::env::vars() {
        if name.starts_with("KEYWARD_") {
            cmd.env_remove(name);
        }
    }
    let child = cmd
        .current_dir(&dir)
        .args(["serve", "--config", "k.toml", "--listen", "127.0.0.1:0"])
        .arg("--address-file")
        .arg(&address)
        .env("KEYWARD_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let _serving = Killed(child);
    let url = format!("http://127.0.0.1:{port}/metrics");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        if let Ok(r) = http.get(&url).send().await {
            if r.status() == 200 {
                break r.text().await.unwrap();
            }
        }
        assert!(
            Instant::now() < deadline,
            "no metrics at {url}: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(text.contains("# TYPE keyward_requests_total counter"));
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains(&format!("metrics={url}")), "{log}");
    assert!(
        log.contains("Metrics are served on their own listener."),
        "{log}"
    );
    // The main listener does not serve them.
    let main = std::fs::read_to_string(&address).unwrap();
    let r = get(&http, &format!("http://{}/metrics", main.trim()), None).await;
    r.assert_problem(404, "not_found");
}
