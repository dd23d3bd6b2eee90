//! Many real `keyward serve` processes over one store: the kit for the
//! tests of a cluster (`tests/it/cluster.rs`).
//!
//! [`Cluster::start`] makes one fresh PostgreSQL schema, picks one Redis
//! (the shared server under a key prefix of its own, or a `redis-server` the
//! kit runs on a free port so a test can stop and restart it), starts a real
//! upstream, bootstraps a root key with `keyward root-keys create`, and
//! starts N nodes (default 3) on free loopback ports, each with its own
//! `credits.node_id` and its own log file; it returns once every node
//! answers `/v1/ready`. Every process it started is killed (SIGKILL) when
//! the [`Cluster`] drops, also when the test panics; the temp dir with the
//! logs is then kept and named on stderr (removed after a passing test).
//!
//! Settings a test gives in [`ClusterOptions::config`] go into the nodes'
//! TOML file; the kit's own (store, listen address, node id, Redis URL and
//! prefix, upstream) go in as arguments and `KEYWARD_*` variables, so they
//! merge with the test's tables instead of clashing with them.
//!
//! [`TcpProxy`] sits between the nodes and PostgreSQL when
//! [`ClusterOptions::store_proxy`] is set: cutting it takes the store away
//! from every node without stopping the shared server.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyward_core::id::new_id;
use keyward_core::secret::OsEntropy;
use keyward_wire::LedgerEntryView;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{fresh_store_url, temp_dir, Backend, Reply};
use crate::upstream;

/// The binary the nodes run: this build's, or `KEYWARD_TEST_NODE_BIN` (a
/// release build, for measuring; docs/BENCHMARKS.md).
fn node_bin() -> String {
    std::env::var("KEYWARD_TEST_NODE_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_keyward").to_owned())
}
pub const REDIS_DEFAULT: &str = "redis://127.0.0.1:6379";
/// How long a node may take to answer `/v1/ready` after it was spawned.
const START_BOUND: Duration = Duration::from_secs(30);

/// Which Redis the nodes use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redis {
    /// No `redis_url`: each node limits on its own (in memory).
    None,
    /// The shared server (`KEYWARD_TEST_REDIS_URL`, default
    /// `redis://127.0.0.1:6379`) under a key prefix unique to the cluster.
    Shared,
    /// A `redis-server` of the cluster's own on a free port, which
    /// [`Cluster::redis_server`] can stop and restart.
    Own,
}

pub struct ClusterOptions {
    pub nodes: usize,
    /// TOML written into every node's configuration file.
    pub config: String,
    pub redis: Redis,
    /// The nodes reach PostgreSQL through a [`TcpProxy`] (see
    /// [`Cluster::proxy`]).
    pub store_proxy: bool,
    /// The nodes' `KEYWARD_LOG` filter.
    pub log_level: String,
    /// More `KEYWARD_*` settings for every node.
    pub env: Vec<(String, String)>,
}

impl Default for ClusterOptions {
    fn default() -> ClusterOptions {
        ClusterOptions {
            nodes: 3,
            config: String::new(),
            redis: Redis::Shared,
            store_proxy: false,
            log_level: "info".into(),
            env: Vec::new(),
        }
    }
}

/// One `keyward serve` process.
pub struct Node {
    /// Its `credits.node_id`: a letter (`a`, `b`, …) and the cluster's tag,
    /// unique on the shared PostgreSQL (so a test cutting `b`'s connection
    /// cuts no other test's node).
    pub name: String,
    pub base: String,
    pub log: PathBuf,
    child: Mutex<Option<Child>>,
}

impl Node {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The address the node bound, once it wrote it (`--address-file`);
    /// panics with its log if it exits first or takes too long.
    async fn bound_address(&self, file: &Path) -> String {
        let deadline = Instant::now() + START_BOUND;
        loop {
            if let Ok(text) = std::fs::read_to_string(file) {
                if let Some(addr) = text.lines().next().filter(|a| !a.is_empty()) {
                    return addr.to_owned();
                }
            }
            if let Some(status) = self.exited() {
                panic!(
                    "node {} exited ({status}) before listening:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "node {} did not listen within {START_BOUND:?}:\n{}",
                self.name,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn exited(&self) -> Option<std::process::ExitStatus> {
        let mut guard = self.child.lock().unwrap();
        guard.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Also when a later node could not be spawned: no orphan process.
impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    /// An operator root key's secret (scopes `keyward:*`).
    pub root: String,
    /// A client with a 15 s timeout, so no call of a test hangs.
    pub http: reqwest::Client,
    pub upstream: upstream::Running,
    /// The store URL straight to PostgreSQL (also when the nodes go
    /// through the proxy).
    pub store_url: String,
    pub redis_url: Option<String>,
    pub redis_prefix: String,
    /// The cluster's own Redis ([`Redis::Own`]).
    pub redis_server: Option<RedisServer>,
    /// Between the nodes and PostgreSQL ([`ClusterOptions::store_proxy`]).
    pub proxy: Option<TcpProxy>,
    pub dir: PathBuf,
    secrets: Mutex<Vec<String>>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &self.nodes {
            n.kill();
        }
        if std::thread::panicking() {
            eprintln!("the cluster's logs are in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        if self.redis_server.is_none() {
            if let Some(url) = &self.redis_url {
                forget_prefix(url, &self.redis_prefix);
            }
        }
    }
}

/// A short lowercase tag, unique enough to name a test's things.
pub fn tag() -> String {
    let id = new_id("t", &OsEntropy).unwrap().to_lowercase();
    id[2..10].to_owned()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn authority(url: &str) -> SocketAddr {
    let u = reqwest::Url::parse(url).unwrap_or_else(|e| panic!("{url} is not a URL: {e}"));
    let host = u.host_str().unwrap_or("127.0.0.1");
    let port = u.port_or_known_default().unwrap_or(6379);
    format!("{host}:{port}")
        .parse()
        .unwrap_or_else(|e| panic!("{host}:{port} is not a loopback address: {e}"))
}

/// The shared Redis, which must answer: tests that need it fail, never skip.
pub async fn shared_redis_url() -> String {
    let url = std::env::var("KEYWARD_TEST_REDIS_URL").unwrap_or_else(|_| REDIS_DEFAULT.into());
    if !redis_ping(authority(&url)).await {
        panic!(
            "Cluster tests need Redis at {url} (set KEYWARD_TEST_REDIS_URL). \
             They do not skip: start redis-server and run again."
        );
    }
    url
}

/// Whether a Redis answers PING at `addr`.
pub async fn redis_ping(addr: SocketAddr) -> bool {
    let attempt = async {
        let mut tcp = TcpStream::connect(addr).await.ok()?;
        tcp.write_all(b"PING\r\n").await.ok()?;
        let mut buf = [0u8; 7];
        let n = tcp.read(&mut buf).await.ok()?;
        Some(buf[..n].starts_with(b"+PONG"))
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(500), attempt).await,
        Ok(Some(true))
    )
}

/// Deletes the cluster's keys from the shared Redis (never FLUSHALL).
/// Best effort: leftovers only take memory until they expire.
fn forget_prefix(url: &str, prefix: &str) {
    let Ok(out) = Command::new("redis-cli")
        .args(["-u", url, "--scan", "--pattern"])
        .arg(format!("{prefix}*"))
        .output()
    else {
        return;
    };
    let keys: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .filter(|k| k.starts_with(prefix))
        .collect();
    for chunk in keys.chunks(500) {
        let _ = Command::new("redis-cli")
            .args(["-u", url, "DEL"])
            .args(chunk)
            .stdout(Stdio::null())
            .status();
    }
}

/// `KEYWARD_*` variables inherited from whoever runs the tests would change
/// the nodes' configuration behind the test's back.
fn clean_command() -> Command {
    let mut cmd = Command::new(node_bin());
    for (name, _) in std::env::vars() {
        if name.starts_with("KEYWARD_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

impl Cluster {
    pub async fn start(opts: ClusterOptions) -> Cluster {
        assert!(opts.nodes >= 1 && opts.nodes <= 26);
        let dir = temp_dir("cluster");
        let tag = tag();
        let store_url = fresh_store_url(Backend::Postgres).await;
        let (proxy, node_store_url) = if opts.store_proxy {
            let proxy = TcpProxy::start(authority(&store_url)).await;
            let mut u = reqwest::Url::parse(&store_url).unwrap();
            u.set_host(Some("127.0.0.1")).unwrap();
            u.set_port(Some(proxy.addr.port())).unwrap();
            // In clear, so the proxy can read a connection's name.
            u.query_pairs_mut().append_pair("sslmode", "disable");
            (Some(proxy), u.to_string())
        } else {
            (None, store_url.clone())
        };
        let (redis_server, redis_url) = match opts.redis {
            Redis::None => (None, None),
            Redis::Shared => (None, Some(shared_redis_url().await)),
            Redis::Own => {
                let r = RedisServer::start(&dir).await;
                let url = r.url.clone();
                (Some(r), Some(url))
            }
        };
        let redis_prefix = format!("keyward:it-{tag}:");
        let upstream = upstream::start().await;

        let config = dir.join("keyward.toml");
        std::fs::write(&config, &opts.config).unwrap();
        let mut env: Vec<(String, String)> = vec![
            ("KEYWARD_GATEWAY__UPSTREAM".into(), upstream.url.clone()),
            ("KEYWARD_LOG".into(), opts.log_level.clone()),
        ];
        if let Some(url) = &redis_url {
            env.push(("KEYWARD_REDIS_URL".into(), url.clone()));
            env.push(("KEYWARD_REDIS__PREFIX".into(), redis_prefix.clone()));
        }
        env.extend(opts.env.iter().cloned());

        // The root key, the way an operator makes the first one.
        let out = clean_command()
            .args(["root-keys", "create", "--name", "root", "--config"])
            .arg(&config)
            .args(["--store-url", &node_store_url])
            .envs(env.iter().cloned())
            .env("KEYWARD_CREDITS__NODE_ID", format!("setup-{tag}"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "keyward root-keys create failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let root = String::from_utf8(out.stdout).unwrap().trim().to_owned();

        let mut nodes = Vec::with_capacity(opts.nodes);
        for i in 0..opts.nodes {
            let name = format!("{}-{tag}", (b'a' + i as u8) as char);
            let log = dir.join(format!("node-{name}.log"));
            let address_file = dir.join(format!("node-{name}.addr"));
            let file = std::fs::File::create(&log).unwrap();
            let child = clean_command()
                .args(["serve", "--config"])
                .arg(&config)
                // Port 0: the system picks a free port, and the node says
                // which (no race with other tests for a port picked early).
                .args(["--listen", "127.0.0.1:0", "--address-file"])
                .arg(&address_file)
                .args(["--store-url", &node_store_url])
                .envs(env.iter().cloned())
                .env("KEYWARD_CREDITS__NODE_ID", &name)
                .stdin(Stdio::null())
                .stdout(file.try_clone().unwrap())
                .stderr(file)
                .spawn()
                .unwrap();
            let mut node = Node {
                name,
                base: String::new(),
                log,
                child: Mutex::new(Some(child)),
            };
            node.base = format!("http://{}", node.bound_address(&address_file).await);
            nodes.push(node);
        }
        let cluster = Cluster {
            nodes,
            root,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .unwrap(),
            upstream,
            store_url,
            redis_url,
            redis_prefix,
            redis_server,
            proxy,
            dir,
            secrets: Mutex::new(Vec::new()),
        };
        cluster.secrets.lock().unwrap().push(cluster.root.clone());
        for i in 0..cluster.nodes.len() {
            cluster.wait_started(i).await;
        }
        cluster
    }

    async fn wait_started(&self, i: usize) {
        let node = &self.nodes[i];
        let deadline = Instant::now() + START_BOUND;
        loop {
            if let Some(status) = node.exited() {
                panic!(
                    "node {} exited ({status}) before it was ready; its log:\n{}",
                    node.name,
                    node.log_text()
                );
            }
            if let Ok(r) = self.http.get(node.url("/v1/ready")).send().await {
                if r.status() == StatusCode::OK {
                    return;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "node {} was not ready after {START_BOUND:?}; its log:\n{}",
                    node.name,
                    node.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn url(&self, node: usize, path: &str) -> String {
        self.nodes[node].url(path)
    }

    /// The cluster's own Redis (started with [`Redis::Own`]).
    pub fn redis_server(&self) -> &RedisServer {
        self.redis_server
            .as_ref()
            .expect("the cluster was started without Redis::Own")
    }

    /// The proxy between the nodes and PostgreSQL.
    pub fn proxy(&self) -> &TcpProxy {
        self.proxy
            .as_ref()
            .expect("the cluster was started without store_proxy")
    }

    /// A request to `node` with `Authorization: Bearer key` (if any) and a
    /// JSON body (if any).
    pub async fn call(
        &self,
        node: usize,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut req = self.http.request(method.clone(), self.url(node, path));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        match req.send().await {
            Ok(res) => Reply::from(res).await,
            Err(e) => panic!("{method} {path} on node {}: {e}", self.nodes[node].name),
        }
    }

    pub async fn get(&self, node: usize, path: &str, key: &str) -> Reply {
        self.call(node, Method::GET, path, Some(key), None).await
    }

    pub async fn post(&self, node: usize, path: &str, key: &str, body: Value) -> Reply {
        self.call(node, Method::POST, path, Some(key), Some(body))
            .await
    }

    /// `GET /v1/ready` on `node`.
    pub async fn ready(&self, node: usize) -> Reply {
        self.call(node, Method::GET, "/v1/ready", None, None).await
    }

    /// Polls `/v1/ready` on `node` until `done` holds for the answer or
    /// `bound` passed (then panics naming `what` and the last answer).
    /// Returns the answer and how long it took.
    pub async fn wait_ready(
        &self,
        node: usize,
        what: &str,
        bound: Duration,
        done: impl Fn(&Reply) -> bool,
    ) -> (Reply, Duration) {
        let start = Instant::now();
        loop {
            let r = self.ready(node).await;
            if done(&r) {
                return (r, start.elapsed());
            }
            if start.elapsed() > bound {
                panic!(
                    "node {}: not {what} after {bound:?}; /v1/ready answers {} {}",
                    self.nodes[node].name, r.status, r.body
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Creates a tenant as root on node 0; returns its id.
    pub async fn tenant(&self, name: &str) -> String {
        let r = self
            .post(0, "/v1/tenants", &self.root, json!({ "name": name }))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.body["id"].as_str().unwrap().to_owned()
    }

    /// Creates a key as root on `node`; returns `(id, secret)`. The kit
    /// remembers the secret for [`Cluster::assert_secrets_not_logged`].
    pub async fn key_on(
        &self,
        node: usize,
        tenant: &str,
        name: &str,
        extra: Value,
    ) -> (String, String) {
        let mut body = json!({ "tenant_id": tenant, "name": name, "environment": "test" });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let r = self.post(node, "/v1/keys", &self.root, body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body["code"]);
        let secret = r.body["secret"].as_str().unwrap().to_owned();
        self.secrets.lock().unwrap().push(secret.clone());
        (r.body["key"]["id"].as_str().unwrap().to_owned(), secret)
    }

    /// [`Cluster::key_on`] node 0.
    pub async fn key(&self, tenant: &str, name: &str, extra: Value) -> (String, String) {
        self.key_on(0, tenant, name, extra).await
    }

    /// Grants `amount` credits to `tenant` as root on node 0.
    pub async fn grant(&self, tenant: &str, amount: i64) -> Value {
        let r = self
            .post(
                0,
                &format!("/v1/tenants/{tenant}/credits"),
                &self.root,
                json!({ "kind": "grant", "amount": amount }),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.body
    }

    /// The tenant's balance as `node` reports it.
    pub async fn balance(&self, node: usize, tenant: &str) -> i64 {
        let r = self
            .get(node, &format!("/v1/tenants/{tenant}/credits"), &self.root)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body["balance"].as_i64().unwrap()
    }

    /// The tenant's whole ledger, newest first, page by page through the API.
    pub async fn ledger(&self, node: usize, tenant: &str) -> Vec<LedgerEntryView> {
        let mut entries = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/v1/tenants/{tenant}/credits/ledger?limit=100");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = self.get(node, &path, &self.root).await;
            assert_eq!(page.status, StatusCode::OK, "{}", page.body);
            let page: keyward_wire::LedgerPage = serde_json::from_value(page.body).unwrap();
            entries.extend(page.data);
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return entries,
            }
        }
    }

    /// Revokes a key as root on `node`.
    pub async fn revoke(&self, node: usize, key_id: &str) -> Reply {
        self.post(
            node,
            &format!("/v1/keys/{key_id}/revoke"),
            &self.root,
            json!({}),
        )
        .await
    }

    /// Sends `n` requests at once, each its own task; `build(i)` makes the
    /// i-th. Answers in order; a request that got no answer is `Err`.
    pub async fn burst(
        &self,
        n: usize,
        build: impl Fn(usize, &reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Vec<Result<Reply, String>> {
        let tasks: Vec<JoinHandle<Result<Reply, String>>> = (0..n)
            .map(|i| {
                let req = build(i, &self.http);
                tokio::spawn(async move {
                    match req.send().await {
                        Ok(res) => Ok(Reply::from(res).await),
                        Err(e) => Err(e.to_string()),
                    }
                })
            })
            .collect();
        let mut out = Vec::with_capacity(n);
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    }

    /// Ends node `i` with SIGKILL (no drain, no settlement).
    pub fn kill(&self, i: usize) {
        self.nodes[i].kill();
    }

    /// Terminates node `i`'s change-notification connection to PostgreSQL
    /// (the one named `keyward-changes/<node_id>`); how many it ended.
    pub async fn cut_notifications(&self, i: usize) -> i64 {
        let mut conn = admin(&self.store_url).await;
        terminate_named(&mut conn, &self.nodes[i].name).await
    }

    /// Takes node `i`'s change notifications away for good: the proxy
    /// (`store_proxy`) refuses every connection naming itself
    /// `keyward-changes/<node_id>`, and the current one is terminated. The
    /// node's other store connections keep working, so only its polls can
    /// tell it of changes. [`Cluster::give_back_notifications`] ends it.
    pub async fn take_notifications_away(&self, i: usize) -> i64 {
        self.proxy()
            .refuse_connections_naming(Some(&format!("keyward-changes/{}", self.nodes[i].name)));
        // A reconnect that got past the proxy just before may still be
        // starting: cut until none has been seen for a while.
        let mut conn = admin(&self.store_url).await;
        let (mut ended, mut quiet) = (0, 0);
        let start = Instant::now();
        while quiet < 5 {
            let n = terminate_named(&mut conn, &self.nodes[i].name).await;
            ended += n;
            quiet = if n == 0 { quiet + 1 } else { 0 };
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "node {}'s notification connection keeps coming back",
                self.nodes[i].name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ended
    }

    pub fn give_back_notifications(&self) {
        self.proxy().refuse_connections_naming(None);
    }

    /// The lines of every node's log that contain `text`, each prefixed
    /// with its node's name.
    pub fn log_lines_containing(&self, text: &str) -> Vec<String> {
        self.nodes
            .iter()
            .flat_map(|n| {
                n.log_text()
                    .lines()
                    .filter(|l| l.contains(text))
                    .map(|l| format!("{}: {l}", n.name))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// No node logged any secret the kit handed out (the root key and every
    /// key made with [`Cluster::key`]); the logs are not empty (else the
    /// check would prove nothing).
    pub fn assert_secrets_not_logged(&self) {
        let secrets = self.secrets.lock().unwrap().clone();
        assert!(secrets.len() > 1, "no key was made, nothing to look for");
        for n in &self.nodes {
            let log = n.log_text();
            assert!(
                log.contains("Keyward is listening"),
                "node {}'s log is empty, so the check would prove nothing",
                n.name
            );
            for (i, s) in secrets.iter().enumerate() {
                assert!(
                    !log.contains(s.as_str()),
                    "secret #{i} (0 is the root key) is in node {}'s log {}",
                    n.name,
                    n.log.display()
                );
            }
        }
    }
}

/// Ends the connections named `keyward-changes/<node>`; how many.
async fn terminate_named(conn: &mut sqlx::AnyConnection, node: &str) -> i64 {
    let app = format!("keyward-changes/{node}");
    // Two steps: in one statement PostgreSQL may call pg_terminate_backend
    // before it filters by name, on every backend.
    let pids: Vec<i32> =
        sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE application_name = $1")
            .bind(app)
            .fetch_all(&mut *conn)
            .await
            .unwrap();
    let mut ended = 0;
    for pid in pids {
        let done: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        ended += i64::from(done);
    }
    ended
}

async fn admin(url: &str) -> sqlx::AnyConnection {
    sqlx::any::install_default_drivers();
    <sqlx::AnyConnection as sqlx::Connection>::connect(url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url}: {e}"))
}

/// What a stretch of load got back from one node.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub by_status: BTreeMap<u16, usize>,
    /// Requests that got no HTTP answer (refused, reset, timed out).
    pub errors: usize,
    /// The first few bodies of 5xx answers, for the failure message.
    pub server_errors: Vec<String>,
}

impl Tally {
    pub fn count(&self, status: u16) -> usize {
        self.by_status.get(&status).copied().unwrap_or(0)
    }

    pub fn total(&self) -> usize {
        self.by_status.values().sum::<usize>() + self.errors
    }

    pub fn five_xx(&self) -> usize {
        self.by_status
            .iter()
            .filter(|(s, _)| **s >= 500)
            .map(|(_, n)| n)
            .sum()
    }

    fn merge(&mut self, other: Tally) {
        for (s, n) in other.by_status {
            *self.by_status.entry(s).or_default() += n;
        }
        self.errors += other.errors;
        self.server_errors.extend(other.server_errors);
        self.server_errors.truncate(5);
    }
}

/// One stream of load: `tasks` loops sending `GET url` with `key`.
pub struct Target {
    pub node: usize,
    pub url: String,
    pub key: String,
    pub tasks: usize,
}

/// Background load, bounded in time: it stops at [`Load::stop`] or after
/// its bound, whichever comes first.
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<(usize, JoinHandle<Tally>)>,
}

impl Load {
    pub fn start(http: &reqwest::Client, targets: Vec<Target>, bound: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let deadline = Instant::now() + bound;
        let mut tasks = Vec::new();
        for t in targets {
            for _ in 0..t.tasks {
                let (http, url, key, stop) = (
                    http.clone(),
                    t.url.clone(),
                    t.key.clone(),
                    Arc::clone(&stop),
                );
                tasks.push((
                    t.node,
                    tokio::spawn(async move {
                        let mut tally = Tally::default();
                        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                            match http.get(&url).bearer_auth(&key).send().await {
                                Ok(res) => {
                                    let status = res.status().as_u16();
                                    *tally.by_status.entry(status).or_default() += 1;
                                    let body = res.text().await.unwrap_or_default();
                                    if status >= 500 && tally.server_errors.len() < 5 {
                                        tally.server_errors.push(format!("{status} {body}"));
                                    }
                                }
                                Err(_) => {
                                    tally.errors += 1;
                                    // A dead node refuses at once: do not spin.
                                    tokio::time::sleep(Duration::from_millis(5)).await;
                                }
                            }
                        }
                        tally
                    }),
                ));
            }
        }
        Load { stop, tasks }
    }

    /// Stops the load; what each node answered, by node index.
    pub async fn stop(self) -> BTreeMap<usize, Tally> {
        self.stop.store(true, Ordering::Relaxed);
        let mut out: BTreeMap<usize, Tally> = BTreeMap::new();
        for (node, t) in self.tasks {
            out.entry(node).or_default().merge(t.await.unwrap());
        }
        out
    }
}

/// A `redis-server` of the test's own on a free loopback port, without
/// persistence, killed on drop.
pub struct RedisServer {
    pub port: u16,
    pub url: String,
    dir: PathBuf,
    child: Mutex<Option<Child>>,
}

impl RedisServer {
    pub async fn start(dir: &Path) -> RedisServer {
        let port = free_port();
        let r = RedisServer {
            port,
            url: format!("redis://127.0.0.1:{port}"),
            dir: dir.to_owned(),
            child: Mutex::new(None),
        };
        r.restart().await;
        r
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Kills it (SIGKILL: its clients see their connections drop).
    pub async fn stop(&self) {
        if let Some(mut c) = self.child.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        assert!(!redis_ping(self.addr()).await, "redis-server still answers");
    }

    /// Starts it (again) on the same port, empty, and waits for PING.
    pub async fn restart(&self) {
        self.stop().await;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("redis.log"))
            .unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-server ({e}); cluster tests need it: \
                     apt-get install -y redis-server"
                )
            });
        *self.child.lock().unwrap() = Some(child);
        let start = Instant::now();
        while !redis_ping(self.addr()).await {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "redis-server did not answer on port {}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A TCP proxy on a free loopback port to `target`, which a test can cut
/// (every connection through it closes, new ones are closed on accept: a
/// server that went away) and restore; it can also refuse only the
/// connections that name themselves a certain way in their first bytes (a
/// PostgreSQL startup message in clear carries `application_name`).
pub struct TcpProxy {
    pub addr: SocketAddr,
    open: watch::Sender<bool>,
    refuse: Arc<Mutex<Option<Vec<u8>>>>,
    freeze: Arc<Mutex<Option<Vec<u8>>>>,
    task: JoinHandle<()>,
}

impl TcpProxy {
    pub async fn start(target: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (open, watch) = watch::channel(true);
        let refuse: Arc<Mutex<Option<Vec<u8>>>> = Arc::default();
        let freeze: Arc<Mutex<Option<Vec<u8>>>> = Arc::default();
        let task = tokio::spawn({
            let refuse = Arc::clone(&refuse);
            let freeze = Arc::clone(&freeze);
            async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        continue;
                    };
                    if !*watch.borrow() {
                        continue; // Dropped: closed at once.
                    }
                    let mut watch = watch.clone();
                    let refuse = refuse.lock().unwrap().clone();
                    let freeze = Arc::clone(&freeze);
                    tokio::spawn(async move {
                        let Ok(server) = TcpStream::connect(target).await else {
                            return;
                        };
                        tokio::select! {
                            _ = relay(client, server, refuse, freeze) => {}
                            _ = watch.wait_for(|open| !*open) => {}
                        }
                    });
                }
            }
        });
        TcpProxy {
            addr,
            open,
            refuse,
            freeze,
            task,
        }
    }

    pub fn cut(&self) {
        self.open.send_replace(false);
    }

    pub fn restore(&self) {
        self.open.send_replace(true);
    }

    /// From now on, closes each new connection whose first 4 KiB from the
    /// client contain `name` (`None`: refuses none).
    pub fn refuse_connections_naming(&self, name: Option<&str>) {
        *self.refuse.lock().unwrap() = name.map(|n| n.as_bytes().to_vec());
    }

    /// From now on, and until called with `None`, relays nothing either way
    /// on connections (open ones too) whose first 4 KiB from the client
    /// contain `name`, and keeps them open: a connection that died without
    /// a word, as a dropped route or a frozen host leaves it.
    pub fn freeze_connections_naming(&self, name: Option<&str>) {
        *self.freeze.lock().unwrap() = name.map(|n| n.as_bytes().to_vec());
    }
}

/// Waits while `freeze` names a connection whose head is `head`.
async fn thaw(head: &Mutex<Vec<u8>>, freeze: &Mutex<Option<Vec<u8>>>) {
    loop {
        let frozen = {
            let name = freeze.lock().unwrap().clone();
            let head = head.lock().unwrap();
            name.is_some_and(|n| head.windows(n.len()).any(|w| w == n.as_slice()))
        };
        if !frozen {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Copies both ways until either side ends; closes both if the client's
/// first 4 KiB contain `refuse`.
async fn relay(
    client: TcpStream,
    server: TcpStream,
    refuse: Option<Vec<u8>>,
    freeze: Arc<Mutex<Option<Vec<u8>>>>,
) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let head: Mutex<Vec<u8>> = Mutex::new(Vec::new());
    let down = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            thaw(&head, &freeze).await;
            if client_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let up = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let refused = {
                let mut head = head.lock().unwrap();
                if head.len() < 4096 {
                    head.extend_from_slice(&buf[..n]);
                }
                refuse
                    .as_ref()
                    .is_some_and(|name| head.windows(name.len()).any(|w| w == name.as_slice()))
            };
            if refused {
                return;
            }
            thaw(&head, &freeze).await;
            if server_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = down => {}
        _ = up => {}
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.open.send_replace(false);
        self.task.abort();
    }
}
