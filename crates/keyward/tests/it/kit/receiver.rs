//! A Standard Webhooks receiver for the tests: `node
//! console-tests/webhook-receiver.mjs`, which verifies every delivery with
//! the official `standardwebhooks` npm library (not keyward's code), records
//! it, and answers each name's plan of statuses. See the script's header for
//! its routes.
//!
//! Needs `node` and `(cd console-tests && npm ci)`; without them
//! [`Receiver::start`] panics, it never skips. The child is killed on drop,
//! and exits by itself when this process does (its stdin closes).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How long the receiver may take to print its port.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// One delivery as the receiver saw it.
#[derive(Debug, Clone, Deserialize)]
pub struct Received {
    pub name: String,
    /// `webhook-id`.
    pub id: Option<String>,
    /// `webhook-timestamp`, unix seconds.
    pub timestamp: Option<i64>,
    /// `webhook-signature`, as sent.
    pub signature: Option<String>,
    /// The body's `type`.
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// The body's `data`.
    pub data: serde_json::Value,
    /// The body, as it came.
    pub body: String,
    /// Whether `standardwebhooks` verified it under a configured secret.
    pub verified: bool,
    /// The library's complaint when not verified.
    pub error: Option<String>,
    /// The receiver's wall clock on arrival.
    pub received_at_ms: i64,
    /// 1 for the first delivery of this id to this name, 2 for the next…
    pub attempt_no: u32,
    /// The status the receiver answered.
    pub status: u16,
}

/// What a receiver name does with deliveries (`PUT /config/<name>`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Settings {
    /// `whsec_…` secrets; a delivery verifies if any of them does.
    pub secrets: Vec<String>,
    /// Statuses for the 1st, 2nd… delivery of one webhook id; 200 after.
    pub plan: Vec<u16>,
    /// Delay before every answer, in ms.
    pub delay_ms: u64,
    /// The "now" (unix ms) the library checks its 5-minute timestamp
    /// tolerance against, for a keyward on a test clock; `None` = the wall
    /// clock.
    pub now_ms: Option<i64>,
}

pub struct Receiver {
    base: String,
    http: reqwest::Client,
    child: Child,
    /// Held open: the receiver exits when it closes.
    _stdin: ChildStdin,
}

fn console_tests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../console-tests")
}

impl Receiver {
    /// Starts the receiver and waits for its port.
    pub fn start() -> Receiver {
        const SETUP: &str = "run `(cd console-tests && npm ci)` (and install Node.js 20+) first; \
                             the webhook tests do not skip";
        let dir = console_tests_dir();
        let node_ok = Command::new("node")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(node_ok, "`node` is not on PATH: {SETUP}.");
        let lib = dir.join("node_modules/standardwebhooks/package.json");
        assert!(lib.exists(), "{} is missing: {SETUP}.", lib.display());

        let mut child = Command::new("node")
            .arg("webhook-receiver.mjs")
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start node webhook-receiver.mjs: {e}; {SETUP}."));
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = tx.send(BufReader::new(stdout).read_line(&mut line).map(|_| line));
        });
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(line)) => line,
            other => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("webhook-receiver.mjs printed no port within {START_TIMEOUT:?}: {other:?}");
            }
        };
        #[derive(Deserialize)]
        struct Hello {
            port: u16,
        }
        let hello: Hello = serde_json::from_str(line.trim()).unwrap_or_else(|e| {
            let _ = child.kill();
            panic!("webhook-receiver.mjs's first line is not {{\"port\":N}}: {line:?}: {e}")
        });
        Receiver {
            base: format!("http://127.0.0.1:{}", hello.port),
            http: reqwest::Client::new(),
            child,
            _stdin: stdin,
        }
    }

    /// The URL deliveries for `name` go to.
    pub fn url(&self, name: &str) -> String {
        format!("{}/hooks/{name}", self.base)
    }

    /// Sets `name`'s secrets and plan (no delay, wall clock).
    pub async fn configure(&self, name: &str, secrets: &[&str], plan: &[u16]) {
        self.configure_with(
            name,
            &Settings {
                secrets: secrets.iter().map(|s| (*s).to_owned()).collect(),
                plan: plan.to_vec(),
                ..Settings::default()
            },
        )
        .await;
    }

    pub async fn configure_with(&self, name: &str, settings: &Settings) {
        let res = self
            .http
            .put(format!("{}/config/{name}", self.base))
            .json(settings)
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.status(),
            200,
            "{}",
            res.text().await.unwrap_or_default()
        );
    }

    /// What `name` received so far, in arrival order.
    pub async fn received(&self, name: &str) -> Vec<Received> {
        self.get(&format!("{}/received/{name}", self.base)).await
    }

    /// Everything received so far, in arrival order.
    pub async fn received_all(&self) -> Vec<Received> {
        self.get(&format!("{}/received", self.base)).await
    }

    async fn get(&self, url: &str) -> Vec<Received> {
        let res = self.http.get(url).send().await.unwrap();
        assert_eq!(res.status(), 200);
        res.json().await.unwrap()
    }

    /// Polls until `name` has received at least `n` deliveries; panics
    /// with what it has if `timeout` passes first.
    pub async fn wait_for(&self, name: &str, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.received(name).await;
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "receiver {name:?} got {} of {n} deliveries within {timeout:?}: {got:#?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn receiver_verifies_a_hand_signed_delivery() {
    use keyward_webhooks::{signature_header, SigningSecret};

    let receiver = Receiver::start();
    let secret = SigningSecret::derive(&[42u8; 32], "ep_smoke", "salt_1");
    let rotated_out = SigningSecret::derive(&[42u8; 32], "ep_smoke", "salt_0");
    let wrong = SigningSecret::derive(&[43u8; 32], "ep_smoke", "salt_1");
    // A fixed time, with the receiver's tolerance check set to it.
    let ts: i64 = 1_767_225_600;
    for name in ["good", "old-secret"] {
        let whsec = if name == "good" {
            secret.to_whsec()
        } else {
            rotated_out.to_whsec()
        };
        receiver
            .configure_with(
                name,
                &Settings {
                    secrets: vec![whsec.to_string()],
                    plan: vec![503],
                    now_ms: Some(ts * 1000 + 30_000),
                    ..Settings::default()
                },
            )
            .await;
    }
    receiver
        .configure_with(
            "wrong",
            &Settings {
                secrets: vec![wrong.to_whsec().to_string()],
                now_ms: Some(ts * 1000),
                ..Settings::default()
            },
        )
        .await;

    let body =
        r#"{"type":"key.created","timestamp":"2026-01-01T00:00:00.000Z","data":{"id":"key_1"}}"#;
    // Signed with the new and the old secret, as during a rotation.
    let signature = signature_header(&[&secret, &rotated_out], "msg_smoke1", ts, body.as_bytes());
    let http = reqwest::Client::new();
    let post = |name: &str| {
        http.post(receiver.url(name))
            .header("content-type", "application/json")
            .header("webhook-id", "msg_smoke1")
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", &signature)
            .body(body)
            .send()
    };
    // The plan: 503 first, then 200 for the same id.
    assert_eq!(post("good").await.unwrap().status(), 503);
    assert_eq!(post("good").await.unwrap().status(), 200);
    assert_eq!(post("old-secret").await.unwrap().status(), 503);
    assert_eq!(post("wrong").await.unwrap().status(), 400);

    let good = receiver.wait_for("good", 2, Duration::from_secs(5)).await;
    assert!(good.iter().all(|r| r.verified), "{good:#?}");
    assert_eq!(
        good.iter()
            .map(|r| (r.attempt_no, r.status))
            .collect::<Vec<_>>(),
        [(1, 503), (2, 200)]
    );
    let r = &good[0];
    assert_eq!(r.id.as_deref(), Some("msg_smoke1"));
    assert_eq!(r.timestamp, Some(ts));
    assert_eq!(r.signature.as_deref(), Some(signature.as_str()));
    assert_eq!(r.event_type.as_deref(), Some("key.created"));
    assert_eq!(r.data["id"], "key_1");
    assert_eq!(r.body, body);
    assert_eq!(r.error, None);

    assert!(receiver.received("old-secret").await[0].verified);

    let wrong = receiver.received("wrong").await;
    assert_eq!(wrong.len(), 1);
    assert!(!wrong[0].verified);
    assert_eq!(wrong[0].status, 400);
    assert!(
        wrong[0]
            .error
            .as_deref()
            .unwrap()
            .contains("No matching signature"),
        "{:?}",
        wrong[0].error
    );

    // The library's own timestamp tolerance applies: ten minutes off fails.
    receiver
        .configure_with(
            "late",
            &Settings {
                secrets: vec![secret.to_whsec().to_string()],
                now_ms: Some((ts + 600) * 1000),
                ..Settings::default()
            },
        )
        .await;
    assert_eq!(post("late").await.unwrap().status(), 400);
    let late = receiver.received("late").await;
    assert!(!late[0].verified);
    assert!(
        late[0].error.as_deref().unwrap().contains("too old"),
        "{late:?}"
    );

    // With the wall clock (no `now_ms`), a delivery stamped now verifies.
    use keyward_core::clock::{Clock, SystemClock};
    receiver
        .configure("live", &[secret.to_whsec().as_str()], &[])
        .await;
    let now = SystemClock.now().millis() / 1000;
    let live_sig = signature_header(&[&secret], "msg_live", now, body.as_bytes());
    let res = http
        .post(receiver.url("live"))
        .header("webhook-id", "msg_live")
        .header("webhook-timestamp", now.to_string())
        .header("webhook-signature", &live_sig)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let live = receiver.wait_for("live", 1, Duration::from_secs(5)).await;
    assert!(live[0].verified, "{live:?}");
    assert_eq!(live[0].name, "live");
    assert!((live[0].received_at_ms / 1000 - now).abs() < 60);

    // keyward-webhooks' own sender, as the delivery worker uses it.
    let sender = keyward_webhooks::Sender::new(keyward_webhooks::SenderConfig {
        allow_private: true,
        ..Default::default()
    })
    .unwrap();
    let sent_sig = signature_header(&[&secret], "msg_sender", now, body.as_bytes());
    let url = receiver.url("live");
    let attempt = sender
        .send(&keyward_webhooks::Outgoing {
            url: &url,
            msg_id: "msg_sender",
            timestamp: now,
            body: body.as_bytes(),
            signature: &sent_sig,
        })
        .await;
    assert!(attempt.ok, "{attempt:?}");
    assert_eq!(attempt.response, r#"{"received":true}"#);
    let live = receiver.wait_for("live", 2, Duration::from_secs(5)).await;
    assert!(live[1].verified, "{live:?}");
    assert_eq!(live[1].id.as_deref(), Some("msg_sender"));

    assert_eq!(receiver.received_all().await.len(), 7);
}
