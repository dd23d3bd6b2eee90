//! The test kit: a real keyward on port 0 over a fresh store, a manual clock,
//! and a small client, so tests read like the user's story; [`client`] is a
//! typed client over the `keyward_wire` types, [`raw`] a raw HTTP/1.1 client
//! for tests where bytes matter, [`upstream`] a scripted raw upstream, and
//! [`cluster`] many real `keyward serve` processes over one PostgreSQL and
//! one Redis.

pub mod client;
pub mod cluster;
pub mod raw;
pub mod receiver;
pub mod upstream;

use std::sync::Arc;

use keyward_core::clock::ManualClock;
use keyward_core::id::new_id;
use keyward_core::secret::OsEntropy;
use keyward_server::config::{Config, Settings};
use keyward_server::Keyward;
use keyward_store::SqlStore;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::Executor;

/// The webhook master key of every in-process test server (64 hex digits).
pub const TEST_WEBHOOK_KEY: &str =
    "6b6579776172642d746573742d776562686f6f6b2d6d61737465722d6b657921";

pub const PG_DEFAULT: &str = "postgres://postgres@127.0.0.1:5432/test";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh, empty directory under the system temp dir.
pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "keyward-it-{tag}-{}",
        new_id("d", &OsEntropy).unwrap()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A store URL for a brand-new database: a SQLite file in a temp dir, or a
/// new schema in the test PostgreSQL (which must be reachable).
pub async fn fresh_store_url(backend: Backend) -> String {
    match backend {
        Backend::Sqlite => format!("sqlite://{}", temp_dir("db").join("keyward.db").display()),
        Backend::Postgres => {
            let base = std::env::var("KEYWARD_TEST_POSTGRES_URL")
                .unwrap_or_else(|_| PG_DEFAULT.to_owned());
            sqlx::any::install_default_drivers();
            let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&base).await.unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL tests need a server at {base} (set KEYWARD_TEST_POSTGRES_URL): {e}. \
                     They do not skip: start PostgreSQL and run again."
                )
            });
            let schema = new_id("kwtest", &OsEntropy).unwrap().to_lowercase();
            conn.execute(format!("CREATE SCHEMA {schema}").as_str())
                .await
                .unwrap();
            let sep = if base.contains('?') { '&' } else { '?' };
            format!("{base}{sep}options[search_path]={schema}")
        }
    }
}

pub struct Server {
    pub base: String,
    pub clock: ManualClock,
    /// An operator root key's secret (scopes `keyward:*`).
    pub root: String,
    pub http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

pub fn default_config() -> Config {
    let mut c = Config::default();
    c.keys.scopes = [
        "vox:read",
        "vox:calls:read",
        "vox:calls:create",
        "vault:read",
        "vault:write",
    ]
    .map(Into::into)
    .to_vec();
    c.usage.flush_interval_ms = 50;
    c.usage.counts_interval_ms = 50;
    c
}

impl Server {
    pub async fn start() -> Server {
        Server::start_with(Backend::Sqlite, default_config()).await
    }

    pub async fn start_with(backend: Backend, config: Config) -> Server {
        let url = fresh_store_url(backend).await;
        let store = Arc::new(SqlStore::open(&url).await.unwrap());
        Server::start_on(store, config, ManualClock::starting_now()).await
    }

    pub async fn start_on(store: Arc<SqlStore>, mut config: Config, clock: ManualClock) -> Server {
        // The store is given, not named in the config: without a key of its
        // own the server would put its webhook key file beside the config's
        // default database (./data). One key for every test server, as every
        // node of a deployment has the same (several servers share a store).
        if config.webhooks.signing_key.is_none() && config.webhooks.signing_key_file.is_none() {
            config.webhooks.signing_key = Some(TEST_WEBHOOK_KEY.to_owned());
        }
        let settings = Settings::from_config(config).unwrap();
        let (_, secret) = keyward_server::bootstrap::create_root_key(
            &settings,
            store.clone(),
            Arc::new(clock.clone()),
            Arc::new(OsEntropy),
            &format!("root-{}", new_id("n", &OsEntropy).unwrap()),
            &[],
        )
        .await
        .unwrap();
        let server = Keyward::new(settings, store.clone(), Arc::new(clock.clone())).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .serve(listener, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Server {
            base,
            clock,

            root: secret.expose().to_owned(),
            http: reqwest::Client::new(),
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops gracefully (drain + flush) and waits for it.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Sends a request with `Authorization: Bearer key` (if any) and a JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut req = self.http.request(method, self.url(path));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        Reply::from(req.send().await.unwrap()).await
    }

    pub async fn get(&self, path: &str, key: &str) -> Reply {
        self.call(Method::GET, path, Some(key), None).await
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(key), Some(body)).await
    }

    pub async fn patch(&self, path: &str, key: &str, body: Value) -> Reply {
        self.call(Method::PATCH, path, Some(key), Some(body)).await
    }

    /// Creates a tenant as root; returns its id.
    pub async fn tenant(&self, name: &str) -> String {
        let r = self
            .post("/v1/tenants", &self.root, json!({ "name": name }))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.body["id"].as_str().unwrap().to_owned()
    }

    /// Creates a key as root; returns `(id, secret)`.
    pub async fn key(&self, tenant: &str, name: &str, extra: Value) -> (String, String) {
        let mut body = json!({ "tenant_id": tenant, "name": name, "environment": "test" });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let r = self.post("/v1/keys", &self.root, body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        (
            r.body["key"]["id"].as_str().unwrap().to_owned(),
            r.body["secret"].as_str().unwrap().to_owned(),
        )
    }

    /// Grants `amount` credits to `tenant` as root; returns the ledger entry.
    pub async fn grant(&self, tenant: &str, amount: i64) -> Value {
        let r = self
            .post(
                &format!("/v1/tenants/{tenant}/credits"),
                &self.root,
                json!({ "kind": "grant", "amount": amount }),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.body
    }

    /// Verifies `secret` through the verify API as root.
    pub async fn verify(&self, secret: &str, extra: Value) -> Value {
        let mut body = json!({ "key": secret });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let r = self.post("/v1/keys/verify", &self.root, body).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub async fn from(res: reqwest::Response) -> Reply {
        let status = res.status();
        let headers = res.headers().clone();
        let text = res.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    pub fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Asserts a problem+json error with `status` and `code`.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        assert_eq!(
            self.content_type(),
            "application/problem+json",
            "body: {}",
            self.body
        );
        assert_eq!(self.body["code"], code, "body: {}", self.body);
        assert_eq!(self.body["status"], status);
        assert!(self.body["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
}

/// Runs `cmd` with `stdin` written to its standard input; its output.
pub fn run_with_stdin(cmd: &mut std::process::Command, stdin: &str) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Parses a TOML configuration the way `keyward serve --config` does.
pub fn config_from_toml(text: &str) -> Config {
    let path = temp_dir("cfg").join("keyward.toml");
    std::fs::write(&path, text).unwrap();
    let mut c = Config::load(Some(&path), Vec::<(String, String)>::new()).unwrap();
    c.usage.flush_interval_ms = 50;
    c.usage.counts_interval_ms = 50;
    c
}
