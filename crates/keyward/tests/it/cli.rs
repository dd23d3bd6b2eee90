//! The client CLI over a real server: every client subcommand, `--output
//! table|json|id`, `--all` paging, `keys verify`'s exit codes with the key
//! on stdin, help text and completions.

use std::process::{Command, Output};
use std::sync::Arc;

use keyward_core::clock::ManualClock;
use keyward_core::secret::OsEntropy;
use keyward_server::config::Settings;
use keyward_store::SqlStore;
use serde_json::{json, Value};

use crate::kit::{default_config, fresh_store_url, run_with_stdin, Backend, Server};

const BIN: &str = env!("CARGO_BIN_EXE_keyward");

/// One run of the binary.
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    }

    /// Succeeded; its stdout as JSON.
    pub(crate) fn json(&self) -> Value {
        assert_eq!(
            self.code, 0,
            "stderr: {}\nstdout: {}",
            self.stderr, self.stdout
        );
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }

    /// Succeeded; its stdout's lines.
    pub(crate) fn lines(&self) -> Vec<String> {
        assert_eq!(
            self.code, 0,
            "stderr: {}\nstdout: {}",
            self.stderr, self.stdout
        );
        self.stdout.lines().map(str::to_owned).collect()
    }
}

/// Runs `keyward args…` against `base` with `key` in `KEYWARD_ROOT_KEY`
/// and `stdin` on its standard input, off the runtime the server runs on.
pub(crate) async fn run_as(base: &str, key: Option<&str>, args: &[&str], stdin: &str) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("KEYWARD_URL", base)
        .env_remove("KEYWARD_ROOT_KEY")
        .env_remove("KEYWARD_CONFIG")
        .env("RUST_BACKTRACE", "0");
    if let Some(k) = key {
        cmd.env("KEYWARD_ROOT_KEY", k);
    }
    let stdin = stdin.to_owned();
    let out = tokio::task::spawn_blocking(move || run_with_stdin(&mut cmd, &stdin))
        .await
        .unwrap();
    Run::from(out)
}

async fn run(s: &Server, args: &[&str]) -> Run {
    run_as(&s.base, Some(&s.root), args, "").await
}

#[tokio::test]
async fn tenants_and_keys_cover_the_management_api() {
    let s = Server::start().await;

    // Tenants: create (just the id), get, update, list.
    let t = run(&s, &["tenants", "create", "--name", "Acme", "-o", "id"]).await;
    let t = t.lines();
    assert_eq!(t.len(), 1);
    let t = t[0].clone();
    assert!(t.starts_with("ten_"), "{t}");
    let got = run(&s, &["tenants", "get", &t]).await.json();
    assert_eq!(got["name"], "Acme");
    let upd = run(
        &s,
        &[
            "tenants",
            "update",
            &t,
            "--name",
            "Acme Inc",
            "--metadata",
            r#"{"plan":"pro"}"#,
            "-o",
            "json",
        ],
    )
    .await
    .json();
    assert_eq!(upd["name"], "Acme Inc");
    assert_eq!(upd["metadata"]["plan"], "pro");
    let listed = run(&s, &["tenants", "list", "-o", "id", "--all"]).await;
    assert!(listed.lines().contains(&t));
    let table = run(&s, &["tenants", "list", "-o", "table"]).await.lines();
    assert!(
        table[0].starts_with("ID") && table[0].contains("NAME"),
        "{table:?}"
    );
    assert!(table.iter().any(|l| l.contains("Acme Inc")));

    // Keys: create as JSON (the secret is `.secret`), as only the secret,
    // as only the id, and as a table (the secret first, labelled).
    let created = run(
        &s,
        &[
            "keys",
            "create",
            "--tenant",
            &t,
            "--name",
            "backend",
            "--environment",
            "test",
            "--scope",
            "vox:read",
            "--scope",
            "vault:read",
            "--allow-ip",
            "127.0.0.1",
        ],
    )
    .await
    .json();
    let id = created["key"]["id"].as_str().unwrap().to_owned();
    assert!(created["secret"].as_str().unwrap().starts_with("kw_test_"));
    assert_eq!(created["key"]["scopes"], json!(["vault:read", "vox:read"]));
    let secret = run(
        &s,
        &[
            "keys",
            "create",
            "--tenant",
            &t,
            "--name",
            "second",
            "--environment",
            "live",
            "-o",
            "secret",
        ],
    )
    .await
    .lines();
    assert_eq!(secret.len(), 1);
    assert!(secret[0].starts_with("kw_live_"), "{secret:?}");
    let only_id = run(
        &s,
        &[
            "keys",
            "create",
            "--tenant",
            &t,
            "--name",
            "third",
            "--environment",
            "test",
            "-o",
            "id",
        ],
    )
    .await;
    assert_eq!(only_id.lines().len(), 1);
    assert!(only_id.stdout.starts_with("key_") && !only_id.stdout.contains("kw_"));
    let table = run(
        &s,
        &[
            "keys",
            "create",
            "--tenant",
            &t,
            "--name",
            "fourth",
            "--environment",
            "test",
            "-o",
            "table",
        ],
    )
    .await
    .lines();
    assert!(table[0].starts_with("Secret: kw_test_"), "{table:?}");
    assert!(table[1].contains("shown only this once"), "{table:?}");

    // Get, update (set and clear), and the table of one key.
    let got = run(&s, &["keys", "get", &id]).await.json();
    assert_eq!(got["name"], "backend");
    assert!(got.get("secret").is_none());
    let upd = run(
        &s,
        &[
            "keys",
            "update",
            &id,
            "--owner",
            "ops@acme.test",
            "--clear-allow-ip",
            "--disable",
            "--credit-cap",
            "50",
            "--rate-limit",
            "100/60/20",
        ],
    )
    .await
    .json();
    assert_eq!(
        upd["rate_limit"],
        json!({"limit": 100, "window_seconds": 60, "burst": 20})
    );
    assert_eq!(upd["owner"], "ops@acme.test");
    assert_eq!(upd["ip_allowlist"], json!([]));
    assert_eq!(upd["status"], "disabled");
    assert_eq!(upd["credit_cap"], 50);
    let upd = run(
        &s,
        &[
            "keys",
            "update",
            &id,
            "--enable",
            "--clear-owner",
            "--clear-credit-cap",
            "--clear-rate-limit",
        ],
    )
    .await
    .json();
    assert_eq!(upd["rate_limit"], Value::Null);
    let bad = run(&s, &["keys", "update", &id, "--rate-limit", "100"]).await;
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(
        bad.stderr.contains("LIMIT/WINDOW_SECONDS"),
        "{}",
        bad.stderr
    );
    assert_eq!(upd["owner"], Value::Null);
    assert_eq!(upd["credit_cap"], Value::Null);
    assert_eq!(upd["status"], "active");
    let nothing = run(&s, &["keys", "update", &id]).await;
    assert_eq!(nothing.code, 1);
    assert!(
        nothing.stderr.contains("nothing to change"),
        "{}",
        nothing.stderr
    );
    let table = run(&s, &["keys", "get", &id, "-o", "table"]).await.lines();
    assert!(table
        .iter()
        .any(|l| l.starts_with("environment") && l.ends_with("test")));

    // Lists: one page, the next by its cursor, and every page with --all.
    let page = run(
        &s,
        &["keys", "list", "--tenant", &t, "--limit", "3", "-o", "json"],
    )
    .await
    .json();
    assert_eq!(page["data"].as_array().unwrap().len(), 3);
    assert_eq!(page["has_more"], true);
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let rest = run(
        &s,
        &[
            "keys", "list", "--tenant", &t, "--limit", "3", "--cursor", &cursor, "-o", "id",
        ],
    )
    .await
    .lines();
    assert_eq!(rest.len(), 1);
    let all = run(
        &s,
        &[
            "keys", "list", "--tenant", &t, "--limit", "1", "--all", "-o", "id",
        ],
    )
    .await
    .lines();
    assert_eq!(all.len(), 4, "{all:?}");
    assert!(all.contains(&id));
    let all_json = run(
        &s,
        &["keys", "list", "--tenant", &t, "--limit", "2", "--all"],
    )
    .await
    .json();
    assert_eq!(all_json["data"].as_array().unwrap().len(), 4);
    assert_eq!(all_json["has_more"], false);
    let more = run(
        &s,
        &[
            "keys", "list", "--tenant", &t, "--limit", "1", "-o", "table",
        ],
    )
    .await;
    assert!(more.stderr.contains("--cursor"), "{}", more.stderr);
    let test_only = run(
        &s,
        &[
            "keys",
            "list",
            "--tenant",
            &t,
            "--environment",
            "live",
            "-o",
            "id",
        ],
    )
    .await
    .lines();
    assert_eq!(test_only.len(), 1);

    // Rotate prints the new key; its id is the one to use from then on.
    let rotated = run(&s, &["keys", "rotate", &id, "--grace-seconds", "60"])
        .await
        .json();
    let new_id = rotated["key"]["id"].as_str().unwrap().to_owned();
    assert_ne!(new_id, id);
    assert_eq!(rotated["key"]["rotated_from"], id.as_str());
    let old = run(&s, &["keys", "get", &id]).await.json();
    assert_eq!(old["replaced_by"], new_id.as_str());
    let rotated_id = run(&s, &["keys", "rotate", &new_id, "-o", "id"]).await;
    assert_eq!(rotated_id.lines().len(), 1);
    assert!(
        rotated_id.stderr.contains("the new key is"),
        "{}",
        rotated_id.stderr
    );
    let newest = rotated_id.lines()[0].clone();

    // Revoke, delete; a missing key answers 404 and exits 1.
    let revoked = run(&s, &["keys", "revoke", &newest, "--reason", "leaked"])
        .await
        .json();
    assert_eq!(revoked["status"], "revoked");
    assert_eq!(revoked["revoked_reason"], "leaked");
    let deleted = run(&s, &["keys", "delete", &newest, "-o", "id"]).await;
    assert_eq!(deleted.lines(), vec![newest.clone()]);
    let gone = run(&s, &["keys", "get", &newest]).await;
    assert_eq!(gone.code, 1);
    assert!(gone.stderr.contains("not_found") && gone.stderr.contains("404"));
    assert!(gone.stdout.is_empty());
}

#[tokio::test]
async fn keys_create_needs_an_environment_and_the_api_names_it() {
    let s = Server::start().await;
    let t = s.tenant("Acme").await;
    let r = run(&s, &["keys", "create", "--tenant", &t, "--name", "x"]).await;
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--environment"), "{}", r.stderr);

    // The API: absent is a 422 naming the field, not a parse error.
    let r = s
        .post("/v1/keys", &s.root, json!({ "tenant_id": t, "name": "x" }))
        .await;
    r.assert_problem(422, "validation_failed");
    let errors = r.body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{}", r.body);
    assert_eq!(errors[0]["field"], "environment");
    assert_eq!(errors[0]["code"], "required");
    assert!(errors[0]["message"].as_str().unwrap().contains("live"));
    // With other invalid fields, all are named at once.
    let r = s
        .post(
            "/v1/keys",
            &s.root,
            json!({ "tenant_id": t, "name": "", "scopes": ["nope"] }),
        )
        .await;
    r.assert_problem(422, "validation_failed");
    let fields: Vec<&str> = r.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert!(
        fields.contains(&"environment") && fields.contains(&"name"),
        "{fields:?}"
    );
}

#[tokio::test]
async fn keys_verify_reads_stdin_and_exits_by_verdict() {
    let s = Server::start().await;
    let t = s.tenant("Acme").await;
    let (id, secret) = s.key(&t, "web", json!({ "scopes": ["vox:read"] })).await;
    let verify = |args: &'static [&'static str], stdin: String| {
        let base = s.base.clone();
        let root = s.root.clone();
        async move {
            let mut all = vec!["keys", "verify"];
            all.extend_from_slice(args);
            run_as(&base, Some(&root), &all, &stdin).await
        }
    };

    // 0: valid.
    let ok = verify(&["--scope", "vox:read"], format!("{secret}\n")).await;
    let v = ok.json();
    assert_eq!(v["valid"], true);
    assert_eq!(v["key"]["key_id"], id.as_str());
    let ok = verify(&["-o", "id"], secret.clone()).await;
    assert_eq!(ok.lines(), vec![id.clone()]);
    let table = verify(&["-o", "table"], secret.clone()).await.lines();
    assert!(table[0].starts_with("valid") && table[0].ends_with("yes"));

    // 1: every denial, with its code.
    for (args, stdin, code) in [
        (
            &["--scope", "vault:write"][..],
            secret.clone(),
            "insufficient_scope",
        ),
        (&[][..], "kw_test_notarealkey".to_owned(), "invalid_api_key"),
    ] {
        let mut all = vec!["keys", "verify"];
        all.extend_from_slice(args);
        let r = run_as(&s.base, Some(&s.root), &all, &stdin).await;
        assert_eq!(r.code, 1, "{code}: {}", r.stderr);
        assert!(r.stderr.contains(code), "{code}: {}", r.stderr);
        let v: Value = serde_json::from_str(&r.stdout).unwrap();
        assert_eq!(v["code"], code);
    }
    let revoked = run(&s, &["keys", "revoke", &id]).await;
    assert_eq!(revoked.code, 0, "{}", revoked.stderr);
    let r = verify(&[], secret.clone()).await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("revoked_api_key"), "{}", r.stderr);

    // 2: no key, no server, no management key; the secret never on stderr.
    for stdin in ["", "\n", "   \n"] {
        let r = verify(&[], stdin.to_owned()).await;
        assert_eq!(r.code, 2, "{stdin:?}");
        assert!(r.stderr.contains("no key to verify"), "{}", r.stderr);
        assert!(!r.stderr.contains("Bearer"), "{}", r.stderr);
    }
    let r = run_as(
        "http://127.0.0.1:9",
        Some(&s.root),
        &["keys", "verify"],
        &secret,
    )
    .await;
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("cannot reach keyward"), "{}", r.stderr);
    assert!(!r.stderr.contains(&secret));
    let r = run_as(&s.base, None, &["keys", "verify"], &secret).await;
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("KEYWARD_ROOT_KEY"), "{}", r.stderr);
    let r = verify(&["--bogus"], secret.clone()).await;
    assert_eq!(r.code, 2);
}

#[tokio::test]
async fn root_keys_audit_and_credits() {
    // A second root key, straight into the store, so one can be revoked.
    let store = Arc::new(
        SqlStore::open(&fresh_store_url(Backend::Sqlite).await)
            .await
            .unwrap(),
    );
    let clock = ManualClock::starting_now();
    let (spare, _) = keyward_server::bootstrap::create_root_key(
        &Settings::from_config(default_config()).unwrap(),
        store.clone(),
        Arc::new(clock.clone()),
        Arc::new(OsEntropy),
        "spare",
        &[],
    )
    .await
    .unwrap();
    let s = Server::start_on(store, default_config(), clock).await;
    let me = s.get("/v1/me", &s.root).await.body["key_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let roots = run(&s, &["root-keys", "list", "-o", "id"]).await.lines();
    assert_eq!(roots.len(), 2, "{roots:?}");
    assert!(roots.contains(&me) && roots.contains(&spare.id));
    let roots = run(&s, &["root-keys", "list", "--limit", "1", "--all"])
        .await
        .json();
    assert_eq!(roots["data"].as_array().unwrap().len(), 2);
    assert!(roots["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k["kind"] == "root"));
    let revoked = run(
        &s,
        &["root-keys", "revoke", &spare.id, "--reason", "rotated out"],
    )
    .await
    .json();
    assert_eq!(revoked["status"], "revoked");
    let active = run(&s, &["root-keys", "list", "--status", "active", "-o", "id"])
        .await
        .lines();
    assert_eq!(active, vec![me.clone()]);
    // The last active root key cannot be revoked.
    let last = run(&s, &["root-keys", "revoke", &me]).await;
    assert_eq!(last.code, 1);
    assert!(last.stderr.contains("last_root_key"), "{}", last.stderr);

    // Credits: grant, adjust (negative), a retried grant counted once,
    // balance, ledger, refill set and clear.
    let t = s.tenant("Acme").await;
    let g = run(&s, &["credits", "grant", &t, "100", "--reason", "welcome"])
        .await
        .json();
    assert_eq!(g["kind"], "grant");
    assert_eq!(g["balance_after"], 100);
    let a = run(&s, &["credits", "adjust", &t, "-30", "-o", "id"]).await;
    assert!(a.lines()[0].starts_with("led_"), "{}", a.stdout);
    let first = run(
        &s,
        &[
            "credits",
            "grant",
            &t,
            "5",
            "--idempotency-key",
            "order-1",
            "-o",
            "id",
        ],
    )
    .await
    .lines();
    let again = run(
        &s,
        &[
            "credits",
            "grant",
            &t,
            "5",
            "--idempotency-key",
            "order-1",
            "-o",
            "id",
        ],
    )
    .await
    .lines();
    assert_eq!(first, again);
    let bal = run(&s, &["credits", "balance", &t]).await.json();
    assert_eq!(bal["balance"], 75);
    let ledger = run(&s, &["credits", "ledger", &t, "--limit", "1", "--all"])
        .await
        .json();
    let amounts: Vec<i64> = ledger["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["amount"].as_i64().unwrap())
        .collect();
    assert_eq!(amounts, vec![5, -30, 100]);
    let table = run(&s, &["credits", "ledger", &t, "-o", "table"])
        .await
        .lines();
    assert!(table[0].starts_with("AT") && table.len() == 4, "{table:?}");
    let too_much = run(&s, &["credits", "adjust", &t, "-1000"]).await;
    assert_eq!(too_much.code, 1);
    assert!(
        too_much.stderr.contains("insufficient_balance"),
        "{}",
        too_much.stderr
    );
    let set = run(
        &s,
        &[
            "credits", "refill", "set", &t, "--amount", "500", "--every", "monthly",
        ],
    )
    .await
    .json();
    assert_eq!(
        set["refill"],
        json!({ "amount": 500, "every": "monthly", "mode": "set" })
    );
    assert_eq!(set["balance"], 500);
    let cleared = run(&s, &["credits", "refill", "clear", &t]).await.json();
    assert_eq!(cleared["refill"], Value::Null);

    // Audit: newest first, filtered by tenant, paged.
    let audit = run(
        &s,
        &["audit", "list", "--tenant", &t, "--all", "--limit", "2"],
    )
    .await
    .json();
    let actions: Vec<&str> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"tenant.created"), "{actions:?}");
    assert!(audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["tenant_id"] == t.as_str()));
    let all = run(&s, &["audit", "list", "-o", "table"]).await.lines();
    assert!(all[0].starts_with("AT") && all.iter().any(|l| l.contains("key.revoked")));
    let ids = run(&s, &["audit", "list", "-o", "id", "--limit", "2"])
        .await
        .lines();
    assert_eq!(ids.len(), 2);
    assert!(ids.iter().all(|i| i.starts_with("evt_")));
}

#[tokio::test]
async fn help_names_the_environment_and_completions_print() {
    let help = |args: &'static [&'static str]| async move { run_as("", None, args, "").await };
    for args in [
        &["keys", "--help"][..],
        &["keys", "list", "--help"][..],
        &["tenants", "create", "--help"][..],
        &["credits", "refill", "set", "--help"][..],
        &["audit", "list", "--help"][..],
        &["root-keys", "list", "--help"][..],
    ] {
        let r = help(args).await;
        assert_eq!(r.code, 0, "{args:?}");
        assert!(
            r.stdout.contains("KEYWARD_ROOT_KEY"),
            "{args:?}: {}",
            r.stdout
        );
        assert!(r.stdout.contains("KEYWARD_URL"), "{args:?}: {}", r.stdout);
    }
    // Commands that do not serve take no --listen.
    for args in [
        &["root-keys", "create", "--help"][..],
        &["users", "create", "--help"][..],
        &["users", "list", "--help"][..],
        &["regex", "--help"][..],
    ] {
        let r = help(args).await;
        assert_eq!(r.code, 0, "{args:?}");
        assert!(!r.stdout.contains("--listen"), "{args:?}: {}", r.stdout);
        assert!(!r.stdout.contains("KEYWARD_ROOT_KEY"), "{args:?}");
    }
    let r = help(&["keys", "verify", "--help"]).await;
    assert!(r
        .stdout
        .contains("Exit status: 0 the key is valid; 1 it is denied"));
    let r = help(&["keys", "create", "--help"]).await;
    assert!(r.stdout.contains("--output secret"), "{}", r.stdout);
    assert!(r.stdout.contains("LIMIT/WINDOW"), "{}", r.stdout);
    // serve says what it does without each flag.
    let r = help(&["serve", "--help"]).await;
    for default in ["127.0.0.1:8080", "./data", "keyward.db", "config defaults"] {
        assert!(r.stdout.contains(default), "{default}: {}", r.stdout);
    }
    for shell in ["bash", "zsh", "fish"] {
        let r = run_as("", None, &["completions", shell], "").await;
        assert_eq!(r.code, 0, "{shell}: {}", r.stderr);
        assert!(
            r.stdout.contains("keyward") && r.stdout.contains("rotate"),
            "{shell}"
        );
    }
}

/// The README's CLI block, run verbatim by bash with `keyward` on the PATH,
/// against a real server: it must run top to bottom and say what it says.
#[tokio::test]
async fn the_readme_cli_block_runs_as_written() {
    let readme = include_str!("../../../../README.md");
    let start = readme
        .find("The same without writing JSON, through the CLI")
        .expect("README: the CLI block's lead-in");
    let body = &readme[start..];
    let open = body.find("```sh\n").expect("README: the CLI block") + "```sh\n".len();
    let close = open
        + body[open..]
            .find("```")
            .expect("README: the CLI block's end");
    let script = format!("set -e\n{}", &body[open..close]);

    let s = Server::start().await;
    let bin_dir = crate::kit::temp_dir("cli-path");
    std::os::unix::fs::symlink(BIN, bin_dir.join("keyward")).unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("bash");
    cmd.args(["-c", &script])
        .env("PATH", path)
        .env("KEYWARD_URL", &s.base)
        .env("KEYWARD_ROOT_KEY", &s.root)
        .env("RUST_BACKTRACE", "0");
    let out = tokio::task::spawn_blocking(move || run_with_stdin(&mut cmd, ""))
        .await
        .unwrap();
    let r = Run::from(out);
    assert_eq!(r.code, 0, "stderr: {}\nstdout: {}", r.stderr, r.stdout);
    // Piped, so JSON: the revoked key is denied (exit 1, caught), the
    // rotated-in key carries the new owner, credits were granted.
    assert!(
        r.stdout.contains("\"code\": \"revoked_api_key\""),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("denied, exit 1"), "{}", r.stdout);
    assert!(r.stdout.contains("\"owner\": \"ops@globex.example\""));
    assert!(r.stdout.contains("\"balance\": 1000"));
    assert!(r.stderr.contains("the new key is key_"), "{}", r.stderr);
}
