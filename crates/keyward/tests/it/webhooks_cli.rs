//! `keyward webhooks|events|alerts` over a real server: an endpoint's
//! secret printed once (and a new one after rotation), show/list/update,
//! a test event and an upstream event in the delivery log with their
//! attempts, the API's refusals as problems with a non-zero exit, and no
//! secret on stderr or in the log of a real `keyward serve`.

use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::cli::{run_as, Run};
use crate::kit::{default_config, temp_dir, Backend, Server};
use crate::process::start_env;

/// Runs the CLI as the server's root key and keeps every stderr, to look
/// for secrets in at the end.
struct Cli<'a> {
    s: &'a Server,
    stderr: Mutex<Vec<String>>,
}

impl Cli<'_> {
    async fn run(&self, args: &[&str]) -> Run {
        self.run_in(args, "").await
    }

    async fn run_in(&self, args: &[&str], stdin: &str) -> Run {
        let r = run_as(&self.s.base, Some(&self.s.root), args, stdin).await;
        self.stderr.lock().unwrap().push(r.stderr.clone());
        r
    }
}

/// A server whose webhooks may go to 127.0.0.1 when `allow_private`, with
/// its webhook master key in a temp data directory.
async fn server(allow_private: bool) -> Server {
    let mut c = default_config();
    c.data_dir = temp_dir("wh-cli");
    c.webhooks.allow_private_addresses = allow_private;
    Server::start_with(Backend::Sqlite, c).await
}

fn event_ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["event_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn webhooks_events_and_alerts_through_the_cli() {
    let s = server(true).await;
    let cli = Cli {
        s: &s,
        stderr: Mutex::new(Vec::new()),
    };
    let t = s.tenant("Acme").await;
    let mut secrets = Vec::new();

    // Create: as JSON the whole endpoint with its secret; as a table the
    // secret first, labelled.
    let created = cli
        .run(&[
            "webhooks",
            "create",
            "--url",
            "http://127.0.0.1:9/hook",
            "--events",
            "key.*,vox.call.*",
            "--tenant",
            &t,
            "--description",
            "calls",
            "-o",
            "json",
        ])
        .await
        .json();
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{created}");
    secrets.push(secret.clone());
    let e = &created["endpoint"];
    let id = e["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("whe_"), "{id}");
    assert_eq!(e["tenant_id"], t.as_str());
    assert_eq!(e["url"], "http://127.0.0.1:9/hook");
    assert_eq!(e["event_types"], json!(["key.*", "vox.call.*"]));
    assert_eq!(e["enabled"], true);
    let table = cli
        .run(&[
            "webhooks",
            "create",
            "--url",
            "http://127.0.0.1:9/all",
            "--events",
            "key.*",
            "-o",
            "table",
        ])
        .await
        .lines();
    assert!(table[0].starts_with("Secret: whsec_"), "{table:?}");
    assert!(table[1].contains("shown only this once"), "{table:?}");
    assert!(table.iter().any(|l| l.contains("(operator-wide)")));
    secrets.push(table[0]["Secret: ".len()..].to_owned());
    let wide = table
        .iter()
        .find_map(|l| l.strip_prefix("id"))
        .unwrap()
        .trim()
        .to_owned();

    // Show and list never print a secret.
    let shown = cli.run(&["webhooks", "show", &id]).await;
    let v = shown.json();
    assert!(v.get("secret").is_none());
    assert_eq!(v["description"], "calls");
    let mine = cli
        .run(&["webhooks", "list", "--tenant", &t, "-o", "id"])
        .await
        .lines();
    assert_eq!(mine, vec![id.clone()]);
    let all = cli
        .run(&["webhooks", "list", "--limit", "1", "--all", "-o", "id"])
        .await
        .lines();
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(all.contains(&id) && all.contains(&wide));
    let listed = cli.run(&["webhooks", "list", "-o", "table"]).await;
    let rows = listed.lines();
    assert!(
        rows[0].starts_with("ID") && rows[0].contains("EVENTS"),
        "{rows:?}"
    );
    for out in [&shown.stdout, &listed.stdout] {
        assert!(!out.contains("whsec_"), "{out}");
    }

    // Update: `--url` is the endpoint's; the server's is `--server-url`
    // (here a dead KEYWARD_URL is overridden by it).
    let upd = cli
        .run(&[
            "webhooks",
            "update",
            &id,
            "--events",
            "vox.call.*",
            "--url",
            "http://127.0.0.1:9/calls",
            "--disable",
        ])
        .await
        .json();
    assert_eq!(upd["event_types"], json!(["vox.call.*"]));
    assert_eq!(upd["url"], "http://127.0.0.1:9/calls");
    assert_eq!(upd["enabled"], false);
    let enabled = run_as(
        "http://127.0.0.1:9",
        Some(&s.root),
        &[
            "webhooks",
            "update",
            &id,
            "--enable",
            "--server-url",
            &s.base,
        ],
        "",
    )
    .await
    .json();
    assert_eq!(enabled["enabled"], true);
    let nothing = cli.run(&["webhooks", "update", &id]).await;
    assert_eq!(nothing.code, 1);
    assert!(
        nothing.stderr.contains("nothing to change"),
        "{}",
        nothing.stderr
    );
    let both = cli
        .run(&["webhooks", "update", &id, "--enable", "--disable"])
        .await;
    assert_eq!(both.code, 2, "{}", both.stderr);

    // Rotate: a new secret each time, printed once; the old one overlaps.
    let rotated = cli
        .run(&[
            "webhooks",
            "rotate-secret",
            &id,
            "--overlap-seconds",
            "60",
            "-o",
            "json",
        ])
        .await;
    assert!(
        rotated.stderr.contains("also signs until"),
        "{}",
        rotated.stderr
    );
    let rotated = rotated.json();
    let second = rotated["secret"].as_str().unwrap().to_owned();
    assert!(second.starts_with("whsec_") && second != secret);
    assert!(rotated["endpoint"]["previous_secret_expires_at"].is_string());
    secrets.push(second.clone());
    let third = cli
        .run(&["webhooks", "rotate-secret", &id, "-o", "secret"])
        .await
        .lines();
    assert_eq!(third.len(), 1, "{third:?}");
    assert!(third[0].starts_with("whsec_"));
    assert!(third[0] != secret && third[0] != second);
    secrets.push(third[0].clone());
    let only_id = cli
        .run(&["webhooks", "rotate-secret", &id, "-o", "id"])
        .await;
    assert_eq!(only_id.lines(), vec![id.clone()]);

    // Test: a webhook.test event, in the endpoint's deliveries, with its
    // attempts (the deliverer tries 127.0.0.1:9, where nothing listens).
    let tested = cli.run(&["webhooks", "test", &id]).await;
    assert!(
        tested.stderr.contains("Queued webhook.test"),
        "{}",
        tested.stderr
    );
    let tested = tested.json();
    assert_eq!(tested["type"], "webhook.test");
    let msg = tested["id"].as_str().unwrap().to_owned();
    assert!(msg.starts_with("msg_"), "{msg}");
    let page = cli.run(&["webhooks", "deliveries", &id]).await.json();
    assert_eq!(event_ids(&page), vec![msg.clone()]);
    assert_eq!(page["data"][0]["event_type"], "webhook.test");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let d = cli
            .run(&["webhooks", "delivery", &id, &msg, "-o", "json"])
            .await
            .json();
        assert_eq!(d["event"]["type"], "webhook.test");
        if !d["attempts"].as_array().unwrap().is_empty() {
            assert_eq!(d["attempts"][0]["ok"], false, "{d}");
            break;
        }
        assert!(Instant::now() < deadline, "no attempt was made: {d}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let detail = cli
        .run(&["webhooks", "delivery", &id, &msg, "-o", "table"])
        .await
        .lines();
    let at = detail.iter().position(|l| l == "Attempts:").unwrap();
    assert!(detail[at + 1].starts_with("AT"), "{detail:?}");
    assert!(detail.len() > at + 2, "{detail:?}");
    let again = cli.run(&["webhooks", "redeliver", &id, &msg]).await.json();
    assert_eq!(again["event_id"], msg.as_str());
    assert_eq!(again["status"], "pending");

    // Delete the operator-wide endpoint; it is gone.
    let deleted = cli.run(&["webhooks", "delete", &wide, "-o", "id"]).await;
    assert_eq!(deleted.lines(), vec![wide.clone()]);
    let gone = cli.run(&["webhooks", "show", &wide]).await;
    assert_eq!(gone.code, 1);
    assert!(gone.stderr.contains("not_found"), "{}", gone.stderr);

    // Events: one for the tenant reaches its vox.call.* endpoint; the same
    // idempotency key records it once; data from stdin.
    let sent = cli
        .run(&[
            "events",
            "send",
            "--tenant",
            &t,
            "--type",
            "vox.call.completed",
            "--data",
            r#"{"call_id":"c_1"}"#,
            "--idempotency-key",
            "call-c_1",
        ])
        .await
        .json();
    assert_eq!(sent["deliveries"], 1, "{sent}");
    assert_eq!(sent["duplicate"], false);
    let event = sent["id"].as_str().unwrap().to_owned();
    let page = cli
        .run(&["webhooks", "deliveries", &id, "--all", "--limit", "1"])
        .await
        .json();
    assert_eq!(event_ids(&page), vec![event.clone(), msg.clone()]);
    assert_eq!(page["data"][0]["event_type"], "vox.call.completed");
    let d = cli.run(&["webhooks", "delivery", &id, &event]).await.json();
    assert_eq!(d["event"]["data"], json!({ "call_id": "c_1" }));
    let dup = cli
        .run(&[
            "events",
            "send",
            "--tenant",
            &t,
            "--type",
            "vox.call.completed",
            "--data",
            r#"{"call_id":"c_1"}"#,
            "--idempotency-key",
            "call-c_1",
            "-o",
            "id",
        ])
        .await;
    assert_eq!(dup.lines(), vec![event.clone()]);
    assert!(dup.stderr.contains("used already"), "{}", dup.stderr);
    let piped = cli
        .run_in(
            &[
                "events",
                "send",
                "--tenant",
                &t,
                "--type",
                "vox.call.started",
                "--data-file",
                "-",
            ],
            r#"{"call_id":"c_2"}"#,
        )
        .await
        .json();
    assert_eq!(piped["deliveries"], 1, "{piped}");
    let not_object = cli
        .run(&[
            "events", "send", "--tenant", &t, "--type", "vox.x", "--data", "[1]",
        ])
        .await;
    assert_eq!(not_object.code, 2, "{}", not_object.stderr);
    assert!(
        not_object.stderr.contains("JSON object"),
        "{}",
        not_object.stderr
    );

    // A type of keyward's own is the API's 422, on stderr, exit 1.
    let reserved = cli
        .run(&[
            "events",
            "send",
            "--tenant",
            &t,
            "--type",
            "key.revoked",
            "--data",
            "{}",
        ])
        .await;
    assert_eq!(reserved.code, 1, "{}", reserved.stderr);
    assert!(reserved.stdout.is_empty(), "{}", reserved.stdout);
    for said in [
        "422",
        "validation_failed",
        "reserved_type",
        "are keyward's own",
    ] {
        assert!(
            reserved.stderr.contains(said),
            "{said}: {}",
            reserved.stderr
        );
    }

    // Alerts: the list works (none need be open here).
    let alerts = cli.run(&["alerts", "list"]).await.json();
    assert!(alerts["data"].is_array(), "{alerts}");
    let table = cli
        .run(&[
            "alerts", "list", "--tenant", &t, "--kind", "new_ip", "--open", "-o", "table",
        ])
        .await
        .lines();
    assert!(table[0].starts_with("RAISED"), "{table:?}");

    // No secret on any stderr (the server's log: the next test).
    let stderr = cli.stderr.lock().unwrap().join("\n");
    for secret in &secrets {
        assert!(!stderr.contains(secret.as_str()), "a secret on stderr");
    }
}

/// A real `keyward serve` logging at trace level: the secrets of a created
/// and a rotated endpoint, and the deliveries signed with them, leave no
/// trace in its log or on the CLI's stderr.
#[tokio::test]
async fn endpoint_secrets_are_never_on_stderr_or_in_the_server_log() {
    const BIN: &str = env!("CARGO_BIN_EXE_keyward");
    let dir = temp_dir("wh-cli-log");
    let data = dir.join("data");
    let log = dir.join("keyward.log");
    let out = Command::new(BIN)
        .args(["root-keys", "create", "--name", "ops", "--data-dir"])
        .arg(&data)
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success());
    let root = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let k = start_env(
        &data,
        &log,
        &[],
        "trace",
        &[
            ("KEYWARD_WEBHOOKS__ALLOW_PRIVATE_ADDRESSES", "true"),
            ("KEYWARD_WEBHOOKS__POLL_INTERVAL_MS", "50"),
        ],
    )
    .await;
    let mut stderr = String::new();
    let run = |args: &[&str]| {
        let base = k.base.clone();
        let root = root.clone();
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_as(&base, Some(&root), &args, "").await
        }
    };
    let t = run(&["tenants", "create", "--name", "Acme", "-o", "id"])
        .await
        .lines()[0]
        .clone();
    let created = run(&[
        "webhooks",
        "create",
        "--url",
        "http://127.0.0.1:9/hook",
        "--events",
        "vox.call.*",
        "--tenant",
        &t,
        "-o",
        "table",
    ])
    .await;
    stderr.push_str(&created.stderr);
    let lines = created.lines();
    let first = lines[0]["Secret: ".len()..].to_owned();
    let id = lines
        .iter()
        .find_map(|l| l.strip_prefix("id"))
        .unwrap()
        .trim()
        .to_owned();
    let rotated = run(&["webhooks", "rotate-secret", &id, "-o", "json"]).await;
    stderr.push_str(&rotated.stderr);
    let second = rotated.json()["secret"].as_str().unwrap().to_owned();
    let sent = run(&[
        "events",
        "send",
        "--tenant",
        &t,
        "--type",
        "vox.call.completed",
        "--data",
        r#"{"call_id":"c_1"}"#,
    ])
    .await;
    stderr.push_str(&sent.stderr);
    let event = sent.json()["id"].as_str().unwrap().to_owned();
    // Signed with both secrets (the old one overlaps) and attempted.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let d = run(&["webhooks", "delivery", &id, &event]).await;
        stderr.push_str(&d.stderr);
        if d.json()["delivery"]["attempts"].as_u64().unwrap() > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no attempt was made");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    k.terminate();

    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains(&id), "the log names the endpoint");
    for secret in [&first, &second] {
        assert!(secret.starts_with("whsec_"), "{secret}");
        let material = secret.trim_start_matches("whsec_");
        assert!(!logged.contains(material), "a secret is in the log");
        assert!(!stderr.contains(material), "a secret is on stderr");
    }
}

#[tokio::test]
async fn a_private_endpoint_is_refused_unless_the_deployment_allows_it() {
    let s = server(false).await;
    let r = run_as(
        &s.base,
        Some(&s.root),
        &[
            "webhooks",
            "create",
            "--url",
            "http://127.0.0.1:9/hook",
            "--events",
            "vox.call.*",
        ],
        "",
    )
    .await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    for said in [
        "422",
        "forbidden_address",
        "webhooks are sent only to public addresses",
    ] {
        assert!(r.stderr.contains(said), "{said}: {}", r.stderr);
    }
}

#[tokio::test]
async fn help_names_the_environment_and_the_endpoint_url() {
    for args in [
        &["webhooks", "create", "--help"][..],
        &["webhooks", "deliveries", "--help"][..],
        &["events", "send", "--help"][..],
        &["alerts", "list", "--help"][..],
    ] {
        let r = run_as("", None, args, "").await;
        assert_eq!(r.code, 0, "{args:?}");
        assert!(r.stdout.contains("KEYWARD_ROOT_KEY"), "{args:?}");
        assert!(r.stdout.contains("KEYWARD_URL"), "{args:?}");
    }
    let r = run_as("", None, &["webhooks", "update", "--help"], "").await;
    assert!(r.stdout.contains("--server-url"), "{}", r.stdout);
    assert!(r.stdout.contains("here --url"), "{}", r.stdout);
    // Without data, `events send` asks for it and calls nobody.
    let r = run_as(
        "http://127.0.0.1:9",
        Some("kw_test_x"),
        &["events", "send", "--type", "vox.x"],
        "",
    )
    .await;
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--data"), "{}", r.stderr);
}
