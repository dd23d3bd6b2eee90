//! A deployment's first minutes through the binary: `keyward init`,
//! `keyward config check` / `config defaults` and `docs/configuration.md`,
//! and what `serve` says and does first.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::kit::{run_with_stdin, temp_dir};

const BIN: &str = env!("CARGO_BIN_EXE_keyward");

fn repo() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The binary without the caller's keyward variables.
fn keyward(cwd: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    for (name, _) in std::env::vars() {
        if name.starts_with("KEYWARD_") {
            cmd.env_remove(name);
        }
    }
    cmd.current_dir(cwd).env("RUST_BACKTRACE", "0");
    cmd
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap()
}

#[test]
fn docs_configuration_md_is_what_config_defaults_prints() {
    let out = run(keyward(&repo()).args(["config", "defaults", "--markdown"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let generated = text(&out.stdout);
    let path = repo().join("docs/configuration.md");
    if std::env::var("UPDATE_SNAPSHOTS").is_ok() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/configuration.md differs from `keyward config defaults --markdown`; review and run `UPDATE_SNAPSHOTS=1 cargo test -p keyward --test it -- setup::` to accept"
    );
    for name in [
        "cache.ttl_seconds",
        "redis_url",
        "redis.on_failure",
        "changes.max_silence_seconds",
        "routes[].path",
        "limits.tiers.<name>.limit",
    ] {
        assert!(generated.contains(&format!("| `{name}` |")), "{name}");
    }
}

#[test]
fn config_defaults_prints_a_file_that_checks_as_the_defaults() {
    let dir = temp_dir("defaults");
    let out = run(keyward(&dir).args(["config", "defaults"]));
    assert!(out.status.success());
    let toml = text(&out.stdout);
    assert!(toml.contains("\nttl_seconds = 30\n"), "{toml}");
    assert!(toml.contains("# Most known keys kept in memory"), "{toml}");
    std::fs::write(dir.join("defaults.toml"), &toml).unwrap();
    let out = run(keyward(&dir).args(["config", "check", "--config", "defaults.toml"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("listen: 127.0.0.1:8080"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn config_check_passes_every_example_and_fails_naming_the_setting() {
    let examples = repo().join("examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&examples).unwrap() {
        let file = entry.unwrap().path().join("keyward.toml");
        if !file.exists() {
            continue;
        }
        let out = run(keyward(&examples)
            .arg("config")
            .arg("check")
            .arg("--config")
            .arg(&file));
        assert!(
            out.status.success(),
            "{}: {}",
            file.display(),
            text(&out.stderr)
        );
        assert!(text(&out.stdout).contains("valid"));
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} examples");

    // It touches no store: neither the data directory nor a database.
    let dir = temp_dir("check");
    std::fs::write(
        dir.join("k.toml"),
        "data_dir = \"never\"\nstore_url = \"postgres://nobody@127.0.0.1:1/none\"\n",
    )
    .unwrap();
    let out = run(keyward(&dir).args(["config", "check", "--config", "k.toml"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!dir.join("never").exists());

    for (file, setting) in [
        ("[cache]\nttl_seconds = \"soon\"\n", "cache.ttl_seconds"),
        ("[keys]\nscopes = [\"bad scope\"]\n", "keys.scopes"),
        (
            "[changes]\npoll_interval_ms = 0\n",
            "changes.poll_interval_ms",
        ),
        ("redis_url = \"http://127.0.0.1:6379\"\n", "redis_url"),
        ("[gateway]\nnope = 1\n", "nope"),
        (
            "[[routes]]\npath = \"/x\"\nscopes = [\"vox:read\"]\n",
            "routes[0]",
        ),
    ] {
        std::fs::write(dir.join("bad.toml"), file).unwrap();
        let out = run(keyward(&dir).args(["config", "check", "--config", "bad.toml"]));
        assert_eq!(out.status.code(), Some(1), "{file}");
        let err = text(&out.stderr);
        assert!(err.contains(setting), "{file}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // An environment variable that does not fit names the variable.
    let out = run(keyward(&dir)
        .args(["config", "check"])
        .env("KEYWARD_CACHE__TTL_SECONDS", "abc"));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("KEYWARD_CACHE__TTL_SECONDS (cache.ttl_seconds)"),
        "{err}"
    );
    assert!(!err.contains("TOML parse error"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

struct Serving(std::process::Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `keyward serve ARGS` on a port the system chooses; its base URL once it
/// listens, and its log file.
fn serve(cwd: &Path, args: &[&str]) -> (Serving, String, std::path::PathBuf) {
    let address = cwd.join("address");
    let _ = std::fs::remove_file(&address);
    let log = cwd.join(format!("serve-{}.log", Instant::now().elapsed().as_nanos()));
    let child = keyward(cwd)
        .arg("serve")
        .args(args)
        .args(["--listen", "127.0.0.1:0", "--address-file"])
        .arg(&address)
        .env("KEYWARD_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut serving = Serving(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(a) = std::fs::read_to_string(&address) {
            return (serving, format!("http://{}", a.trim()), log);
        }
        if let Ok(Some(s)) = serving.0.try_wait() {
            panic!(
                "serve exited {s}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("serve did not start");
}

/// The log once it has `needle` (within 10 s).
fn log_with(log: &Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn init_writes_a_config_and_the_first_root_key_and_operator() {
    let dir = temp_dir("init");
    // A bad environment leaves nothing behind.
    let out = run(keyward(&dir).args(["init", "--dir", "site", "--environment", "live"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("NAME=PREFIX"));
    assert!(!dir.join("site").exists());
    let out = run(keyward(&dir).args(["init", "--dir", "site", "--scope", "bad scope"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("keys.scopes"),
        "{}",
        text(&out.stderr)
    );
    assert!(!dir.join("site/keyward.toml").exists());

    let out = run_with_stdin(
        keyward(&dir).args([
            "init",
            "--dir",
            "site",
            "--environment",
            "live=acme_live_",
            "--environment",
            "test=acme_test_",
            "--scope",
            "calls:read",
            "--operator-email",
            "ops@example.com",
            "--password-stdin",
        ]),
        "correct horse battery staple\n",
    );
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    // stdout is the secret alone, so `KEY=$(keyward init …)` works.
    let stdout = text(&out.stdout);
    let root = stdout.trim().to_owned();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(root.starts_with("kw_root_"), "{stdout}");
    assert!(!err.contains(&root), "the secret is on stdout only");
    assert!(err.contains("shown only this once"), "{err}");
    assert!(
        err.contains("Created console operator ops@example.com"),
        "{err}"
    );
    for next in [
        "keyward serve --config site/keyward.toml",
        "export KEYWARD_ROOT_KEY=",
        "keyward tenants create",
    ] {
        assert!(err.contains(next), "{next}: {err}");
    }
    let written = std::fs::read_to_string(dir.join("site/keyward.toml")).unwrap();
    assert!(
        written.contains("environments = { live = \"acme_live_\", test = \"acme_test_\" }"),
        "{written}"
    );
    assert!(written.contains("scopes = [\"calls:read\"]"));
    assert!(
        written.lines().filter(|l| l.starts_with('#')).count() >= 10,
        "commented"
    );

    // Never over an existing file.
    let again = run(keyward(&dir).args(["init", "--dir", "site"]));
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again.stderr).contains("already exists"));
    assert_eq!(
        std::fs::read_to_string(dir.join("site/keyward.toml")).unwrap(),
        written
    );

    let out = run(keyward(&dir).args(["config", "check", "--config", "site/keyward.toml"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(keyward(&dir).args(["users", "list", "--config", "site/keyward.toml"]));
    assert!(
        text(&out.stdout).contains("ops@example.com\toperator"),
        "{}",
        text(&out.stdout)
    );

    // The file and the key work together: the key manages the deployment,
    // whose keys carry the chosen prefixes.
    let (server, base, _log) = serve(&dir, &["--config", "site/keyward.toml"]);
    let http = reqwest::Client::new();
    let tenant: serde_json::Value = http
        .post(format!("{base}/v1/tenants"))
        .bearer_auth(&root)
        .json(&serde_json::json!({"name": "Acme"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key: serde_json::Value = http
        .post(format!("{base}/v1/keys"))
        .bearer_auth(&root)
        .json(&serde_json::json!({"tenant_id": tenant["id"], "name": "b", "environment": "live", "scopes": ["calls:read"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        key["secret"].as_str().unwrap().starts_with("acme_live_"),
        "{key}"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn serve_binds_before_it_opens_the_store() {
    let dir = temp_dir("bindfirst");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    // A store that cannot be opened: the address must be the error.
    let out = run(keyward(&dir).args([
        "serve",
        "--listen",
        &address,
        "--store-url",
        "postgres://nobody@127.0.0.1:1/none",
    ]));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen on {address}")),
        "{err}"
    );
    assert!(!err.contains("cannot open the store"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_start_up_log_says_where_everything_is_and_how_to_make_a_root_key() {
    let dir = temp_dir("startlog");
    std::fs::write(
        dir.join("k.toml"),
        "[gateway]\nupstream = \"http://127.0.0.1:9\"\n[[routes]]\npath = \"/v1/{*rest}\"\n[[routes]]\npath = \"/health\"\nauth = false\n",
    )
    .unwrap();
    let (server, base, log) = serve(&dir, &["--config", "k.toml"]);
    let text = log_with(&log, "root-keys create");
    let address = base.trim_start_matches("http://");
    for needle in [
        &format!("address={address}") as &str,
        "store=sqlite://data/keyward.db",
        "upstream=http://127.0.0.1:9",
        "routes=2",
        &format!("console={base}/console"),
        "No root key exists yet",
        "keyward root-keys create --config k.toml --name operator",
    ] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
    drop(server);
    // With a root key, no such hint.
    let out =
        run(keyward(&dir).args(["root-keys", "create", "--config", "k.toml", "--name", "ops"]));
    assert!(out.status.success());
    let (server, _, log) = serve(&dir, &["--config", "k.toml"]);
    let text = log_with(&log, "Keyward is listening.");
    assert!(text.contains("Keyward is listening."), "{text}");
    std::thread::sleep(Duration::from_millis(200));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("No root key exists yet"), "{text}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The README's configuration excerpt is a file `config check` accepts: no
/// setting in it is misspelt, moved or gone (docs/configuration.md is the
/// full reference and is checked against the types above).
#[test]
fn the_readme_configuration_excerpt_checks() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let section = readme
        .split("\n## Configuration\n")
        .nth(1)
        .expect("README has a Configuration section");
    let block = section
        .split("```toml\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .expect("the Configuration section has a TOML block");
    assert!(block.contains("[redis]") && block.contains("[changes]"));
    let dir = temp_dir("readme-config");
    let file = dir.join("keyward.toml");
    std::fs::write(&file, block).unwrap();
    let out = run(keyward(&dir)
        .arg("config")
        .arg("check")
        .arg("--config")
        .arg(&file));
    assert!(out.status.success(), "{}", text(&out.stderr));
}
