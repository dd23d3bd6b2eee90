//! The real binary: bootstrap, secrets never stored or logged, restart, and
//! graceful shutdown flushing last-use batches.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::kit::temp_dir;

const BIN: &str = env!("CARGO_BIN_EXE_keyward");

pub(crate) struct Running {
    child: Child,
    pub(crate) base: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start(data: &Path, log: &Path) -> Running {
    // The most verbose logs, so the secrecy check has the most to search.
    start_with(data, log, &[], "trace").await
}

async fn start_with(data: &Path, log: &Path, extra: &[&str], level: &str) -> Running {
    start_env(data, log, extra, level, &[]).await
}

/// [`start_with`], with `KEYWARD_*` variables of its own (over the
/// defaults here: usage flushed once a minute).
pub(crate) async fn start_env(
    data: &Path,
    log: &Path,
    extra: &[&str],
    level: &str,
    env: &[(&str, &str)],
) -> Running {
    let port = free_port();
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(data)
        .args(extra)
        .env("KEYWARD_LOG", level)
        .env("KEYWARD_USAGE__FLUSH_INTERVAL_MS", "60000")
        .env("KEYWARD_USAGE__COUNTS_INTERVAL_MS", "60000")
        .envs(env.iter().copied())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..200 {
        if reqwest::get(format!("{base}/v1/health")).await.is_ok() {
            return Running { child, base };
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!(
        "keyward did not start; log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// A failing test must not leave keyward running.
impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Running {
    /// SIGTERM, then wait for a clean exit.
    pub(crate) fn terminate(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        for _ in 0..200 {
            if let Some(code) = self.child.try_wait().unwrap() {
                assert!(code.success(), "keyward exited with {code}");
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = self.child.kill();
        panic!("keyward did not stop on SIGTERM");
    }
}

async fn call(
    base: &str,
    method: reqwest::Method,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn secrets_are_never_stored_or_logged_and_keys_survive_restart() {
    let dir = temp_dir("proc");
    let data = dir.join("data");
    let log = dir.join("keyward.log");

    // Bootstrap: only the secret on stdout.
    let out = Command::new(BIN)
        .args(["root-keys", "create", "--name", "ops", "--data-dir"])
        .arg(&data)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let root = stdout.trim().to_owned();
    assert_eq!(stdout.lines().count(), 1);
    assert!(root.starts_with("kw_root_"), "{stdout}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains(&root));

    let srv = start(&data, &log).await;
    let b = srv.base.clone();
    let (s, tenant) = call(
        &b,
        reqwest::Method::POST,
        "/v1/tenants",
        &root,
        Some(json!({ "name": "Acme" })),
    )
    .await;
    assert_eq!(s, 201);
    let t = tenant["id"].as_str().unwrap().to_owned();
    let (s, created) = call(
        &b,
        reqwest::Method::POST,
        "/v1/keys",
        &root,
        Some(json!({ "tenant_id": t, "name": "web", "environment": "live", "scopes": ["keyward:keys:read"] })),
    )
    .await;
    assert_eq!(s, 201);
    let secret = created["secret"].as_str().unwrap().to_owned();
    let id = created["key"]["id"].as_str().unwrap().to_owned();
    let hash = keyward_core::secret::KeyHash::of(&secret).to_hex();

    // Use the key every way there is, including the wrong ways.
    assert_eq!(
        call(&b, reqwest::Method::GET, "/v1/me", &secret, None)
            .await
            .0,
        200
    );
    let (_, v) = call(
        &b,
        reqwest::Method::POST,
        "/v1/keys/verify",
        &root,
        Some(json!({ "key": secret })),
    )
    .await;
    assert_eq!(v["valid"], true);
    let http = reqwest::Client::new();
    assert_eq!(
        http.get(format!("{b}/v1/me"))
            .header("X-API-Key", &secret)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.get(format!("{b}/v1/me"))
            .basic_auth(&id, Some(&secret))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.get(format!("{b}/v1/me?api_key={secret}"))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        http.get(format!("{b}/v1/me"))
            .bearer_auth(format!("{secret}zz"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let (s, rotated) = call(
        &b,
        reqwest::Method::POST,
        &format!("/v1/keys/{id}/rotate"),
        &root,
        Some(json!({ "grace_seconds": 3600 })),
    )
    .await;
    assert_eq!(s, 201);
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    let new_id = rotated["key"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        call(&b, reqwest::Method::GET, "/v1/me", &new_secret, None)
            .await
            .0,
        200
    );

    // SIGTERM drains and flushes last use (the flush interval is a minute,
    // so only the shutdown flush can have written it).
    srv.terminate();

    let log_text = std::fs::read(&log).unwrap();
    assert!(
        contains(&log_text, "Keyward is listening"),
        "the log is empty, so the check would prove nothing"
    );
    assert!(contains(&log_text, &id), "the log should name key ids");
    for (name, s) in [
        ("root", &root),
        ("key", &secret),
        ("rotated key", &new_secret),
    ] {
        assert!(!contains(&log_text, s), "the {name} secret is in the log");
        for f in files_under(&data) {
            let bytes = std::fs::read(&f).unwrap();
            assert!(
                !contains(&bytes, s),
                "the {name} secret is in {}",
                f.display()
            );
        }
    }
    let db_bytes: Vec<u8> = files_under(&data)
        .iter()
        .flat_map(|f| std::fs::read(f).unwrap())
        .collect();
    assert!(
        contains(&db_bytes, &hash),
        "the hash should be stored, so the search would find a secret"
    );

    // Restart on the same data: keys still verify, last use was flushed.
    let srv = start(&data, &log).await;
    let b = srv.base.clone();
    assert_eq!(
        call(&b, reqwest::Method::GET, "/v1/me", &secret, None)
            .await
            .1["key_id"],
        id.as_str()
    );
    assert_eq!(
        call(&b, reqwest::Method::GET, "/v1/me", &new_secret, None)
            .await
            .1["key_id"],
        new_id.as_str()
    );
    let (_, k) = call(
        &b,
        reqwest::Method::GET,
        &format!("/v1/keys/{new_id}"),
        &root,
        None,
    )
    .await;
    assert_ne!(k["last_used_at"], Value::Null, "{k}");
    assert_eq!(k["last_used_ip"], "127.0.0.1");
    srv.terminate();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs a client command of the CLI against `base` with `root`, feeding
/// `stdin`; returns whether it succeeded, its stdout and its stderr.
fn cli(base: &str, root: &str, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("KEYWARD_URL", base)
        .env("KEYWARD_ROOT_KEY", root);
    let out = crate::kit::run_with_stdin(&mut cmd, stdin);
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// [`cli`] that must succeed; its stdout parsed as `T`.
fn cli_ok<T: serde::de::DeserializeOwned>(base: &str, root: &str, args: &[&str], stdin: &str) -> T {
    let (ok, out, err) = cli(base, root, args, stdin);
    assert!(ok, "{err}");
    serde_json::from_str(&out).unwrap()
}

#[tokio::test]
async fn cli_client_commands_print_the_api_answers() {
    use keyward_wire::{
        KeyPage, KeyView, KeyWithSecret, Problem, TenantPage, TenantView, VerifyResult,
    };
    let dir = temp_dir("cli");
    let data = dir.join("data");
    let log = dir.join("keyward.log");
    let out = Command::new(BIN)
        .args(["root-keys", "create", "--name", "ops", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success());
    let root = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let srv = start_with(&data, &log, &[], "info").await;
    let b = srv.base.clone();

    let tenant: TenantView = cli_ok(&b, &root, &["tenants", "create", "--name", "Acme"], "");
    assert_eq!(tenant.name, "Acme");
    let page: TenantPage = cli_ok(&b, &root, &["tenants", "list"], "");
    assert_eq!(page.data, vec![tenant.clone()]);

    let (ok, out, err) = cli(
        &b,
        &root,
        &[
            "keys",
            "create",
            "--tenant",
            &tenant.id,
            "--name",
            "web",
            "--environment",
            "test",
            "--scope",
            "keyward:keys:read",
            "--allow-ip",
            "127.0.0.1",
            "--expires-at",
            "2999-01-01T00:00:00Z",
        ],
        "",
    );
    assert!(ok, "{err}");
    // Printed as the server answered, pretty.
    let raw: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(out.trim_end(), serde_json::to_string_pretty(&raw).unwrap());
    let created: KeyWithSecret = serde_json::from_str(&out).unwrap();
    assert_eq!(created.key.environment, "test");
    assert_eq!(created.key.scopes, ["keyward:keys:read"]);
    assert_eq!(created.key.ip_allowlist, ["127.0.0.1/32"]);
    assert_eq!(
        created.key.expires_at.as_deref(),
        Some("2999-01-01T00:00:00.000Z")
    );
    let page: KeyPage = cli_ok(&b, &root, &["keys", "list", "--tenant", &tenant.id], "");
    assert_eq!(page.data, vec![created.key.clone()]);

    // The key comes from stdin, never argv; a denial exits 1 (cli.rs
    // tests every exit status).
    let verify = |secret: &str, scope: &str| -> VerifyResult {
        let args = ["keys", "verify", "--scope", scope, "--ip", "127.0.0.1"];
        let (ok, out, err) = cli(&b, &root, &args, &format!("{secret}\n"));
        let v: VerifyResult = serde_json::from_str(&out).unwrap();
        assert_eq!(ok, v.valid, "{err}");
        v
    };
    let v = verify(&created.secret, "keyward:keys:read");
    assert!(v.valid, "{v:?}");
    assert_eq!(v.key.unwrap().key_id, created.key.id);
    let v = verify(&created.secret, "keyward:keys:write");
    assert_eq!(v.code, "insufficient_scope");
    assert_eq!(v.missing_scopes.unwrap(), ["keyward:keys:write"]);

    let rotated: KeyWithSecret = cli_ok(
        &b,
        &root,
        &["keys", "rotate", &created.key.id, "--grace-seconds", "60"],
        "",
    );
    assert_eq!(
        rotated.key.rotated_from.as_deref(),
        Some(created.key.id.as_str())
    );
    let revoked: KeyView = cli_ok(
        &b,
        &root,
        &["keys", "revoke", &rotated.key.id, "--reason", "leaked"],
        "",
    );
    assert_eq!(revoked.status, "revoked");
    assert_eq!(revoked.revoked_reason.as_deref(), Some("leaked"));
    assert!(!verify(&rotated.secret, "keyward:keys:read").valid);

    // An error: the problem on stderr, a failing exit.
    let (ok, out, err) = cli(&b, &root, &["keys", "revoke", "key_nope"], "");
    assert!(!ok);
    assert_eq!(out, "");
    let (problem, last) = err.rsplit_once("\nError: ").unwrap();
    let problem: Problem = serde_json::from_str(problem).unwrap();
    assert_eq!((problem.status, problem.code.as_str()), (404, "not_found"));
    assert!(last.contains("404"), "{err}");
    assert!(!err.contains(&root) && !out.contains(&root));
    srv.terminate();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_config_is_a_clear_startup_error() {
    let dir = temp_dir("cfg");
    let cfg = dir.join("keyward.toml");
    std::fs::write(&cfg, "[keys]\nscopes = [\"bad scope\"]\n").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("keys.scopes"), "{err}");
    let out = Command::new(BIN)
        .arg("serve")
        .env("KEYWARD_CACHE__TTL_SECONDS", "soon")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ttl_seconds"));
}

#[test]
fn regex_matches_issued_keys() {
    let out = Command::new(BIN).arg("regex").output().unwrap();
    let re = String::from_utf8(out.stdout).unwrap();
    for p in ["kw_live_", "kw_test_", "kw_root_"] {
        assert!(re.contains(p), "{re}");
    }
}

/// Peak resident memory of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}

/// Current resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// A `kB` line of `/proc/PID/status`.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The documented bound: a gateway moving 100 MB each way holds far less
/// than the body in memory — its peak stays within this of its resident
/// memory when it started serving (which grows with the binary, not with
/// the bodies).
const STREAM_RSS_BOUND_KIB: u64 = 32 * 1024;

#[tokio::test]
async fn streams_100_mb_each_way_with_bounded_memory() {
    const SIZE: u64 = 100 * 1024 * 1024;
    let up = crate::upstream::start().await;
    let dir = temp_dir("stream");
    let cfg = dir.join("keyward.toml");
    std::fs::write(
        &cfg,
        format!("[gateway]\nupstream = \"{}\"\n[[routes]]\npath = \"/stream/{{*rest}}\"\nauth = false\n", up.url),
    )
    .unwrap();
    let srv = start_with(
        &dir.join("data"),
        &dir.join("keyward.log"),
        &["--config", cfg.to_str().unwrap()],
        "warn",
    )
    .await;
    let http = reqwest::Client::new();
    let start = rss_kib(srv.child.id());

    let upload = vec![b'u'; SIZE as usize];
    let res = http
        .post(format!("{}/stream/upload", srv.base))
        .body(upload)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["received"], SIZE);

    let mut res = http
        .get(format!("{}/stream/download/{SIZE}", srv.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut n = 0u64;
    while let Some(chunk) = res.chunk().await.unwrap() {
        n += chunk.len() as u64;
    }
    assert_eq!(n, SIZE);

    let peak = peak_rss_kib(srv.child.id());
    let grown = peak.saturating_sub(start);
    eprintln!(
        "keyward RSS {start} KiB serving, peak {peak} KiB after 100 MB each way ({grown} KiB more)"
    );
    assert!(
        grown < STREAM_RSS_BOUND_KIB,
        "keyward's peak grew by {grown} KiB moving 100 MB each way"
    );
    srv.terminate();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn sighup_reloads_routes_and_refuses_a_bad_config() {
    let dir = temp_dir("reload");
    let data = dir.join("data");
    let cfg = dir.join("keyward.toml");
    let log = dir.join("keyward.log");
    let out = Command::new(BIN)
        .args(["root-keys", "create", "--name", "ops", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let root = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let routes = |path: &str| {
        format!("[[routes]]\npath = \"{path}\"\nrespond = {{ key = \"{{key_id}}\" }}\n")
    };
    std::fs::write(&cfg, routes("/first")).unwrap();
    let srv = start_with(&data, &log, &["--config", cfg.to_str().unwrap()], "info").await;
    // One client, so the same keep-alive connection is used across the reload.
    let http = reqwest::Client::new();
    let status = |path: &'static str| {
        let req = http.get(format!("{}{path}", srv.base)).bearer_auth(&root);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status("/first").await, 200);
    assert_eq!(status("/second").await, 404);

    let hup = || {
        Command::new("kill")
            .args(["-HUP", &srv.child.id().to_string()])
            .status()
            .unwrap()
    };
    std::fs::write(&cfg, routes("/second")).unwrap();
    assert!(hup().success());
    let mut reloaded = false;
    for _ in 0..100 {
        if status("/second").await == 200 {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reloaded, "SIGHUP did not bring in the new route");
    assert_eq!(status("/first").await, 404);

    // A bad file is refused; the running routes stay.
    std::fs::write(&cfg, "[[routes]]\npath = \"no-slash\"\nrespond = {}\n").unwrap();
    assert!(hup().success());
    let mut refused = false;
    for _ in 0..100 {
        if std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("reload refused")
        {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "the bad config was not reported");
    assert_eq!(status("/second").await, 200);
    srv.terminate();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The server started by [`reload_rig`]: its config file, its log, and a
/// root key.
struct Rig {
    srv: Running,
    dir: PathBuf,
    cfg: PathBuf,
    log: PathBuf,
    root: String,
}

/// A real binary over `toml` (its `--config`), with a root key.
async fn reload_rig(tag: &str, toml: &str) -> Rig {
    let dir = temp_dir(tag);
    let data = dir.join("data");
    let cfg = dir.join("keyward.toml");
    let log = dir.join("keyward.log");
    std::fs::write(&cfg, toml).unwrap();
    let out = Command::new(BIN)
        .args(["root-keys", "create", "--name", "ops", "--config"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    let root = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let srv = start_with(&data, &log, &["--config", cfg.to_str().unwrap()], "info").await;
    Rig {
        srv,
        dir,
        cfg,
        log,
        root,
    }
}

impl Rig {
    /// Writes `toml` and sends SIGHUP, then waits until the log has one
    /// more line containing `outcome` than before.
    async fn reload(&self, toml: &str, outcome: &str) {
        let count = || {
            std::fs::read_to_string(&self.log)
                .unwrap_or_default()
                .matches(outcome)
                .count()
        };
        let before = count();
        std::fs::write(&self.cfg, toml).unwrap();
        let hup = Command::new("kill")
            .args(["-HUP", &self.srv.child.id().to_string()])
            .status()
            .unwrap();
        assert!(hup.success());
        for _ in 0..250 {
            if count() > before {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "no {outcome:?} after SIGHUP; log:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// GET `path` with the root key: status and the `RateLimit-Policy` and
    /// `RateLimit` fields.
    async fn get(&self, http: &reqwest::Client, path: &str) -> (u16, String, String) {
        let res = http
            .get(format!("{}{path}", self.srv.base))
            .bearer_auth(&self.root)
            .send()
            .await
            .unwrap();
        let field = |n: &str| {
            res.headers()
                .get(n)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        (
            res.status().as_u16(),
            field("ratelimit-policy"),
            field("ratelimit"),
        )
    }

    fn finish(self) {
        self.srv.terminate();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const RELOADED: &str = "Configuration reloaded";
const REFUSED: &str = "Configuration reload refused";

/// A route's cost and a tier's rate, changed in one reload, are both in
/// force on the next request, on either gateway path; the bucket's state
/// carries over in time (1 of 10 per hour spent = 360 s of the hour).
#[tokio::test]
async fn sighup_brings_a_new_route_cost_and_tier_rate_in_together() {
    for fast_path in [true, false] {
        let toml = |limit: u64, cost: u64| {
            format!(
                "[gateway]\nfast_path = {fast_path}\n\
                 [limits]\ndefault_tier = \"std\"\n\
                 [limits.tiers.std]\nlimit = {limit}\nwindow_seconds = 3600\n\
                 [[routes]]\npath = \"/priced\"\ncost = {cost}\nrespond = {{ key = \"{{key_id}}\" }}\n"
            )
        };
        let rig = reload_rig("reload-cost", &toml(10, 1)).await;
        // One client: the same keep-alive connection across the reload.
        let http = reqwest::Client::new();
        let (status, policy, rate) = rig.get(&http, "/priced").await;
        assert_eq!(status, 200, "fast_path = {fast_path}");
        assert_eq!(policy, "\"std\";q=10;w=3600", "fast_path = {fast_path}");
        assert!(
            rate.starts_with("\"std\";r=9;"),
            "fast_path = {fast_path}: {rate}"
        );

        rig.reload(&toml(100, 5), RELOADED).await;
        // 36 s a token now: 360 s spent + 5 tokens = 540 s of 3600, 85 left.
        let (status, policy, rate) = rig.get(&http, "/priced").await;
        assert_eq!(status, 200, "fast_path = {fast_path}");
        assert_eq!(policy, "\"std\";q=100;w=3600", "fast_path = {fast_path}");
        assert!(
            rate.starts_with("\"std\";r=85;"),
            "fast_path = {fast_path}: {rate}"
        );
        // A new connection sees the same.
        let (_, _, rate) = rig.get(&reqwest::Client::new(), "/priced").await;
        assert!(
            rate.starts_with("\"std\";r=80;"),
            "fast_path = {fast_path}: {rate}"
        );
        rig.finish();
    }
}

/// A tier added by a reload is one the management API accepts at once (the
/// management checks see the new tiers, not those of the start), and the
/// OpenAPI document lists it.
#[tokio::test]
async fn sighup_hands_new_tiers_to_the_management_api() {
    let tiers = |names: &[&str]| {
        names
            .iter()
            .map(|n| format!("[limits.tiers.{n}]\nlimit = 10\nwindow_seconds = 60\n"))
            .collect::<String>()
    };
    let rig = reload_rig("reload-tiers", &tiers(&["free"])).await;
    let http = reqwest::Client::new();
    let create = |tier: &'static str| {
        http.post(format!("{}/v1/tenants", rig.srv.base))
            .bearer_auth(&rig.root)
            .json(&serde_json::json!({ "name": format!("t-{tier}"), "tier": tier }))
            .send()
    };
    let res = create("gold").await.unwrap();
    assert_eq!(res.status().as_u16(), 422);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "unknown_tier", "{body}");
    let tier_enum = || async {
        let doc: serde_json::Value = http
            .get(format!("{}/openapi.json", rig.srv.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        doc.pointer("/components/schemas/CreateTenant/properties/tier/enum")
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(tier_enum().await, serde_json::json!(["free", null]));
    rig.reload(&tiers(&["free", "gold"]), RELOADED).await;
    assert_eq!(create("gold").await.unwrap().status().as_u16(), 201);
    // The served document follows the tiers in force too.
    assert_eq!(tier_enum().await, serde_json::json!(["free", "gold", null]));
    rig.finish();
}

/// A reload that changes a setting only a restart can change is refused
/// whole, naming the settings; the running routes stay.
#[tokio::test]
async fn sighup_refuses_a_restart_only_change_and_keeps_the_running_routes() {
    let routes = |path: &str| {
        format!("[[routes]]\npath = \"{path}\"\nrespond = {{ key = \"{{key_id}}\" }}\n")
    };
    let rig = reload_rig("reload-restart", &routes("/first")).await;
    let http = reqwest::Client::new();
    assert_eq!(rig.get(&http, "/first").await.0, 200);
    rig.reload(
        &format!(
            "[http]\nworkers = 3\n[cache]\ncapacity = 1234\n{}",
            routes("/second")
        ),
        REFUSED,
    )
    .await;
    let log = std::fs::read_to_string(&rig.log).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains(REFUSED))
        .unwrap()
        .to_owned();
    assert!(line.contains("ERROR") && line.contains("restart"), "{line}");
    assert!(
        line.contains("cache.capacity") && line.contains("http.workers"),
        "{line}"
    );
    assert_eq!(rig.get(&http, "/first").await.0, 200);
    assert_eq!(rig.get(&http, "/second").await.0, 404);
    // The same change without the restart-only settings goes through.
    rig.reload(&routes("/second"), RELOADED).await;
    assert_eq!(rig.get(&http, "/second").await.0, 200);
    assert_eq!(rig.get(&http, "/first").await.0, 404);
    rig.finish();
}

/// Whether a new connection's request is served by the fast path: a body
/// over `gateway.max_body_bytes` (and within the fast path's own limit) is
/// 413 either way, but only the general path answers it without reading
/// the body, and so closes the connection.
async fn served_fast(base: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    let body = vec![b'x'; 5000];
    let mut req = format!(
        "POST /open HTTP/1.1\r\nHost: k\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    tcp.write_all(&req).await.unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed before a response head");
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 413"), "{head}");
    !head.contains("connection: close")
}

/// `gateway.fast_path` is reloadable: new connections follow it.
#[tokio::test]
async fn sighup_turns_the_fast_path_off_and_on() {
    let toml = |fast_path: bool| {
        format!(
            "[gateway]\nupstream = \"http://127.0.0.1:9\"\nfast_path = {fast_path}\nmax_body_bytes = 4096\n\
             [[routes]]\npath = \"/open\"\nauth = false\n"
        )
    };
    let rig = reload_rig("reload-fast", &toml(true)).await;
    assert!(served_fast(&rig.srv.base).await);
    rig.reload(&toml(false), RELOADED).await;
    assert!(!served_fast(&rig.srv.base).await);
    rig.reload(&toml(true), RELOADED).await;
    assert!(served_fast(&rig.srv.base).await);
    rig.finish();
}

/// SIGKILL in the middle of paid traffic and of an idempotent request:
/// every answered spend is still spent after the restart (what the node had
/// reserved is counted as spent; the ledger and the balance agree), and the
/// idempotency claim of the request that died frees itself after
/// `idempotency.lock_seconds`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loses_no_spend_and_frees_idempotency_claims() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    let up = crate::upstream::start().await;
    let dir = temp_dir("crash");
    let data = dir.join("data");
    let cfg = dir.join("keyward.toml");
    let log = dir.join("keyward.log");
    std::fs::write(
        &cfg,
        format!(
            r#"
[gateway]
upstream = "{}"
timeout_ms = 2000
[idempotency]
lock_seconds = 2

[[routes]]
methods = ["GET"]
path = "/paid"
credits = 3
respond = {{ ok = true }}

[[routes]]
methods = ["POST"]
path = "/create/sleep/{{ms}}"
idempotency = "required"
"#,
            up.url
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["root-keys", "create", "--name", "ops", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let root = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let args = ["--config", cfg.to_str().unwrap()];
    let mut srv = start_with(&data, &log, &args, "info").await;
    let b = srv.base.clone();
    let (_, tenant) = call(
        &b,
        reqwest::Method::POST,
        "/v1/tenants",
        &root,
        Some(json!({ "name": "Acme" })),
    )
    .await;
    let t = tenant["id"].as_str().unwrap().to_owned();
    let credits = format!("/v1/tenants/{t}/credits");
    let (s, _) = call(
        &b,
        reqwest::Method::POST,
        &credits,
        &root,
        Some(json!({ "kind": "grant", "amount": 3000 })),
    )
    .await;
    assert_eq!(s, 201);
    let (_, created) = call(
        &b,
        reqwest::Method::POST,
        "/v1/keys",
        &root,
        Some(json!({ "tenant_id": t, "name": "k", "environment": "live" })),
    )
    .await;
    let secret = created["secret"].as_str().unwrap().to_owned();

    // Paid traffic from 16 clients; SIGKILL once 100 answers came back.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..16 {
        let (stop, answered, b, secret) =
            (stop.clone(), answered.clone(), b.clone(), secret.clone());
        workers.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            while !stop.load(Ordering::SeqCst) {
                let Ok(res) = http
                    .get(format!("{b}/paid"))
                    .bearer_auth(&secret)
                    .send()
                    .await
                else {
                    break;
                };
                if res.status() == 200 && res.bytes().await.is_ok() {
                    answered.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    while answered.load(Ordering::SeqCst) < 100 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    srv.child.kill().unwrap();
    srv.child.wait().unwrap();
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    let answered = answered.load(Ordering::SeqCst) as i64;

    let srv = start_with(&data, &log, &args, "info").await;
    let b = srv.base.clone();
    let (_, balance) = call(&b, reqwest::Method::GET, &credits, &root, None).await;
    let balance = balance["balance"].as_i64().unwrap();
    let (_, ledger) = call(
        &b,
        reqwest::Method::GET,
        &format!("{credits}/ledger?limit=100"),
        &root,
        None,
    )
    .await;
    let entries = ledger["data"].as_array().unwrap();
    assert_eq!(ledger["has_more"], false);
    let spent: i64 = -entries
        .iter()
        .filter(|e| e["kind"] == "spend")
        .map(|e| e["amount"].as_i64().unwrap())
        .sum::<i64>();
    // What the crashed node had reserved is counted as spent at its restart.
    assert!(
        entries.iter().any(|e| e["reason"]
            .as_str()
            .is_some_and(|r| r.contains("counted as spent"))),
        "{ledger}"
    );
    assert!(3 * answered <= spent, "answered {answered}, spent {spent}");
    assert_eq!(balance, 3000 - spent, "the balance and the ledger agree");
    assert!(balance >= 0);

    // An idempotent request in flight when keyward dies.
    let post = |b: String| {
        let secret = secret.clone();
        async move {
            reqwest::Client::new()
                .post(format!("{b}/create/sleep/1500"))
                .bearer_auth(&secret)
                .header("Idempotency-Key", "crash-1")
                .json(&json!({ "n": 1 }))
                .send()
                .await
        }
    };
    let mut srv = srv;
    let pending = tokio::spawn(post(b.clone()));
    let arrived = || {
        up.seen()
            .iter()
            .filter(|s| s.uri == "/create/sleep/1500")
            .count()
    };
    while arrived() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    srv.child.kill().unwrap();
    srv.child.wait().unwrap();
    assert!(
        pending.await.unwrap().is_err(),
        "the client saw the connection die"
    );
    let killed_at = std::time::Instant::now();

    let srv = start_with(&data, &log, &args, "info").await;
    let retry = post(srv.base.clone()).await.unwrap();
    if killed_at.elapsed() < Duration::from_millis(1900) {
        assert_eq!(retry.status(), 409, "still claimed right after the crash");
        tokio::time::sleep(Duration::from_millis(2100).saturating_sub(killed_at.elapsed())).await;
    }
    let retry = post(srv.base.clone()).await.unwrap();
    assert_eq!(retry.status(), 201, "the abandoned claim was released");
    assert_eq!(arrived(), 2);
    let replay = post(srv.base.clone()).await.unwrap();
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    srv.terminate();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The documented bound (docs/usage.md): past warm-up, a flood of made-up
/// keys and of client addresses on one key grows keyward by less than this
/// — unknown hashes are held up to `cache.negative_capacity`, usage up to
/// `usage.max_series` series and `usage.max_ips_per_key` addresses a key.
const FLOOD_GROWTH_BOUND_KIB: u64 = 48 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_of_made_up_keys_and_client_addresses_do_not_grow_memory_past_the_bounds() {
    let dir = temp_dir("flood");
    let data = dir.join("data");
    let out = Command::new(BIN)
        .args(["root-keys", "create", "--name", "ops", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success());
    let root = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let cfg = dir.join("keyward.toml");
    std::fs::write(
        &cfg,
        "[http]\ntrusted_proxies = [\"127.0.0.1/32\"]\n\
         [metrics]\nenabled = true\n\
         [[routes]]\nmethods = [\"GET\"]\npath = \"/v1/ping\"\nrespond = { ok = true }\n",
    )
    .unwrap();
    // Usage is held in memory for the whole test (no flush), the worst case.
    let srv = start_env(
        &data,
        &dir.join("keyward.log"),
        &["--config", cfg.to_str().unwrap()],
        "warn",
        &[
            ("KEYWARD_USAGE__COUNTS_INTERVAL_MS", "3600000"),
            ("KEYWARD_HTTP__WORKERS", "2"),
        ],
    )
    .await;
    let b = srv.base.clone();
    let (s, tenant) = call(
        &b,
        reqwest::Method::POST,
        "/v1/tenants",
        &root,
        Some(json!({ "name": "Acme" })),
    )
    .await;
    assert_eq!(s, 201);
    let (s, created) = call(
        &b,
        reqwest::Method::POST,
        "/v1/keys",
        &root,
        Some(json!({ "tenant_id": tenant["id"], "name": "busy", "environment": "live" })),
    )
    .await;
    assert_eq!(s, 201);
    let secret = created["secret"].as_str().unwrap().to_owned();
    let format = keyward_server::config::Settings::from_config(Default::default())
        .unwrap()
        .format;
    let http = reqwest::Client::new();

    type Gen = std::sync::Arc<dyn Fn(usize) -> String + Send + Sync>;
    // `count` requests on 32 connections: the i-th with `key(i)` from `ip(i)`;
    // returns how many were answered 200 and 401.
    async fn flood(
        http: &reqwest::Client,
        url: &str,
        count: usize,
        key: Gen,
        ip: Gen,
    ) -> (usize, usize) {
        let mut tasks = Vec::new();
        for w in 0..32 {
            let (http, url, key, ip) = (http.clone(), url.to_owned(), key.clone(), ip.clone());
            tasks.push(tokio::spawn(async move {
                let (mut ok, mut refused) = (0, 0);
                for i in (w..count).step_by(32) {
                    let r = http
                        .get(&url)
                        .bearer_auth(key(i))
                        .header("X-Forwarded-For", ip(i))
                        .send()
                        .await;
                    match r.map(|r| r.status().as_u16()) {
                        Ok(200) => ok += 1,
                        Ok(401) => refused += 1,
                        _ => {}
                    }
                }
                (ok, refused)
            }));
        }
        let mut total = (0, 0);
        for t in tasks {
            let (a, b) = t.await.unwrap();
            total.0 += a;
            total.1 += b;
        }
        total
    }
    let url = format!("{b}/v1/ping");
    let made_up: Gen = std::sync::Arc::new(move |_| {
        format
            .generate(
                &keyward_core::secret::KeyKind::Environment("live".into()),
                &keyward_core::secret::OsEntropy,
            )
            .unwrap()
            .expose()
            .to_owned()
    });
    let address = |i: usize| format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255);
    let addresses: Gen = std::sync::Arc::new(address);
    let later: Gen = std::sync::Arc::new(move |i| address(100_000 + i));
    let busy: Gen = std::sync::Arc::new(move |_| secret.clone());
    // Warm up: every path, a few of each, so the baseline holds the code's
    // own allocations.
    let warm = flood(&http, &url, 2_000, made_up.clone(), addresses.clone()).await;
    assert_eq!(warm.1, 2_000);
    let warm = flood(&http, &url, 2_000, busy.clone(), addresses.clone()).await;
    assert_eq!(warm.0, 2_000);
    let before = rss_kib(srv.child.id());

    let started = std::time::Instant::now();
    let (_, refused) = flood(&http, &url, 100_000, made_up, addresses).await;
    assert_eq!(refused, 100_000, "every made-up key is refused");
    let (ok, _) = flood(&http, &url, 10_000, busy, later).await;
    assert_eq!(ok, 10_000);
    let after = rss_kib(srv.child.id());
    let grown = after.saturating_sub(before);
    eprintln!(
        "keyward RSS {before} KiB before, {after} KiB after 100,000 made-up keys and 10,000 addresses ({grown} KiB more, {:.1} s)",
        started.elapsed().as_secs_f64()
    );
    assert!(
        grown < FLOOD_GROWTH_BOUND_KIB,
        "keyward grew by {grown} KiB under the flood"
    );
    // What did not fit was counted, not held: each of the two workers held
    // the busy key's first 100 addresses (usage.max_ips_per_key) from the
    // warm-up on, so every later new address is overflow.
    let scrape = reqwest::get(format!("{b}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let sample = |line: &str| {
        scrape
            .lines()
            .find_map(|l| l.strip_prefix(line))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {line} in:\n{scrape}"))
    };
    assert_eq!(
        sample("keyward_usage_overflow_total{kind=\"ips\"}"),
        (2_000 - 2 * 100) + 10_000
    );
    assert_eq!(sample("keyward_usage_overflow_total{kind=\"requests\"}"), 0);
    srv.terminate();
    let _ = std::fs::remove_dir_all(&dir);
}
