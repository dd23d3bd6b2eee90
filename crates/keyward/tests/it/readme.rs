//! The documents run as they are written: the README's walkthrough and each
//! example's README (after the examples' common steps), with bash,
//! against the built binary on the `PATH` as `keyward`, and the outputs
//! they mark with `# →` checked. A server block (`keyward serve …`) is run
//! by the test itself, in the background, on a port the system chose.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::kit::temp_dir;
use crate::kit::upstream::{scripted, Act};

const BIN: &str = env!("CARGO_BIN_EXE_keyward");

fn repo_file(path: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The text of `markdown` from the heading `heading` to the next heading of
/// the same level.
fn section<'a>(markdown: &'a str, heading: &str) -> &'a str {
    let start = markdown
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("no heading {heading:?}"));
    let level = heading.split(' ').next().unwrap_or("##");
    let rest = &markdown[start + 1..];
    let end = rest[1..]
        .find(&format!("\n{level} "))
        .map_or(rest.len(), |i| i + 1);
    &rest[..end]
}

/// Every ```sh block of `markdown`, with the indentation of its fence (a
/// block inside a list item) removed from each line.
fn sh_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for line in markdown.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match &mut current {
            None if trimmed == "```sh" => current = Some((indent, String::new())),
            Some(_) if trimmed == "```" => {
                if let Some((_, text)) = current.take() {
                    blocks.push(text);
                }
            }
            Some((indent, text)) => {
                let cut = line.len().min(*indent);
                text.push_str(line.get(cut..).unwrap_or(line));
                text.push('\n');
            }
            None => {}
        }
    }
    blocks
}

/// What the `# →` lines of `script` promise, as fragments the output must
/// hold: each `"name":value` pair of a JSON line whose value is written out
/// (not elided with `…`), or, on a line that is not JSON, its text before
/// any parenthesis (matched ignoring case).
fn promises(script: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in script.lines() {
        let Some(shown) = line.trim().strip_prefix("# →") else {
            continue;
        };
        let shown = shown.trim();
        if shown.starts_with('{') {
            out.extend(json_pairs(shown));
        } else {
            let text = shown.split(" (").next().unwrap_or(shown).trim();
            out.push(text.to_ascii_lowercase());
        }
    }
    out
}

/// `"name":value` pairs with a plain value (string without `…`, number,
/// boolean, null, or an array of such strings).
fn json_pairs(line: &str) -> Vec<String> {
    let mut pairs = Vec::new();
    let bytes = line.as_bytes();
    let mut i = 0;
    while let Some(q) = line[i..].find('"').map(|q| q + i) {
        let Some(close) = line[q + 1..].find('"').map(|c| c + q + 1) else {
            break;
        };
        if bytes.get(close + 1) != Some(&b':') {
            i = close + 1;
            continue;
        }
        let value_start = close + 2;
        let rest = &line[value_start..];
        let value_len = if let Some(quoted) = rest.strip_prefix('"') {
            quoted.find('"').map(|e| e + 2)
        } else if rest.starts_with('[') {
            rest.find(']').map(|e| e + 1)
        } else if rest.starts_with('{') {
            None
        } else {
            Some(rest.find([',', '}']).unwrap_or(rest.len()))
        };
        match value_len {
            Some(n) => {
                let value = &rest[..n];
                if !value.contains('…') && !value.is_empty() {
                    pairs.push(format!("{}:{value}", &line[q..=close]));
                }
                i = value_start + n;
            }
            None => i = value_start,
        }
    }
    pairs
}

/// A directory holding `keyward` (the built binary), to put first on the PATH.
fn bin_dir(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(BIN, bin.join("keyward")).unwrap();
    bin
}

fn path_with(bin: &Path) -> String {
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// A command without the caller's keyward variables (the documents set
/// their own).
fn clean(mut cmd: Command) -> Command {
    for (name, _) in std::env::vars() {
        if name.starts_with("KEYWARD_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

struct Serving {
    child: Child,
    url: String,
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a document's server command (`keyward serve` and its arguments) in
/// `cwd` on a port the system chooses, with `env` added.
fn serve(cwd: &Path, bin: &Path, line: &str, env: &[(&str, String)]) -> Serving {
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words.first(), Some(&"keyward"), "{line}");
    let address_file = cwd.join("address");
    let log = cwd.join("serve.log");
    let mut cmd = clean(Command::new(BIN));
    cmd.current_dir(cwd)
        .args(&words[1..])
        .args(["--listen", "127.0.0.1:0", "--address-file"])
        .arg(&address_file)
        .env("PATH", path_with(bin))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    // Waited for by `Serving`'s drop, or below when it exits early.
    let child = cmd.spawn().unwrap();
    let mut serving = Serving {
        child,
        url: String::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(a) = std::fs::read_to_string(&address_file) {
            serving.url = format!("http://{}", a.trim());
            return serving;
        }
        if let Ok(Some(status)) = serving.child.try_wait() {
            panic!(
                "keyward serve exited ({status}):\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("keyward serve did not start within 30 s");
}

/// Runs `script` with `bash -e -u -o pipefail` in `cwd`; panics with its
/// output when it fails, else returns its stdout.
fn run_script(cwd: &Path, bin: &Path, url: &str, script: &str) -> String {
    let mut cmd = clean(Command::new("bash"));
    let out = cmd
        .current_dir(cwd)
        .args(["-euo", "pipefail", "-c", script])
        .env("PATH", path_with(bin))
        .env("KEYWARD_URL", url)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the script failed ({}):\n{script}\n--- stdout\n{stdout}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Every promise of `script` holds in `stdout`.
fn check_promises(script: &str, stdout: &str) {
    let promised = promises(script);
    assert!(!promised.is_empty(), "no `# →` lines in:\n{script}");
    let lower = stdout.to_ascii_lowercase();
    for p in promised {
        assert!(
            stdout.contains(&p) || lower.contains(&p),
            "the documented output {p:?} is not in:\n{stdout}"
        );
    }
}

#[test]
fn the_readme_walkthrough_runs_as_written() {
    let readme = repo_file("README.md");
    // The server the walkthrough talks to is the README's run command.
    let run = sh_blocks(section(&readme, "## Install, start, test"));
    let serve_line = run
        .iter()
        .flat_map(|b| b.lines())
        .find(|l| l.trim_start().starts_with("keyward serve"))
        .expect("the README's run command");
    let walkthrough = sh_blocks(section(
        &readme,
        "## Walkthrough: from nothing to a verified key",
    ));
    let script = walkthrough.first().expect("the walkthrough's first block");

    let dir = temp_dir("readme");
    let bin = bin_dir(&dir);
    let server = serve(&dir, &bin, serve_line.trim(), &[]);
    let stdout = run_script(&dir, &bin, &server.url, script);
    check_promises(script, &stdout);
    // The verdicts come in the documented order.
    let valid = stdout.find(r#""code":"valid""#).unwrap();
    let revoked = stdout.find(r#""code":"revoked_api_key""#).unwrap();
    assert!(valid < revoked, "{stdout}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs the examples' common steps for `folder` and then its README's
/// blocks, top to bottom in one shell, against `keyward serve` in a copy of
/// the folder, with a recording upstream behind the gateway; checks the
/// documented outputs and returns what the upstream saw.
async fn run_example(folder: &str) -> Vec<crate::kit::upstream::UpReq> {
    let common = sh_blocks(&repo_file("examples/README.md"));
    let setup = common
        .iter()
        .find(|b| b.contains("root-keys create"))
        .expect("the examples' common steps")
        // "replace the folder name"
        .replace("examples/voice-agent", &format!("examples/{folder}"));
    let serve_line = common
        .iter()
        .flat_map(|b| b.lines())
        .find(|l| l.trim_start().starts_with("keyward serve"))
        .expect("the examples' serve command")
        .split('#')
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    let blocks = sh_blocks(&repo_file(&format!("examples/{folder}/README.md")));
    assert!(!blocks.is_empty(), "{folder}: no sh blocks");

    let root = temp_dir(folder);
    let dir = root.join("examples").join(folder);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("keyward.toml"),
        repo_file(&format!("examples/{folder}/keyward.toml")),
    )
    .unwrap();
    let bin = bin_dir(&root);
    // The API behind the gateway: answers every forwarded call.
    let up = scripted(|_| {
        Act::Send(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"data\":[]}"
                .to_vec(),
        )
    })
    .await;
    let server = serve(
        &dir,
        &bin,
        &serve_line,
        &[("KEYWARD_GATEWAY__UPSTREAM", up.url.clone())],
    );
    let script = format!("{setup}\n{}", blocks.join("\n"));
    let (url, cwd, b, s) = (
        server.url.clone(),
        root.clone(),
        bin.clone(),
        script.clone(),
    );
    let stdout = tokio::task::spawn_blocking(move || run_script(&cwd, &b, &url, &s))
        .await
        .unwrap();
    check_promises(&script, &stdout);
    drop(server);
    let _ = std::fs::remove_dir_all(&root);
    up.seen()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_platform_example_runs_as_written() {
    let seen = run_example("platform").await;
    // The forwarded calls reached the API: the read, and one create (the
    // second attempt was a replay).
    assert!(
        seen.iter()
            .any(|r| r.method == "GET" && r.target == "/api/v2/vault/projects?limit=10"),
        "{seen:?}"
    );
    assert_eq!(
        seen.iter().filter(|r| r.method == "POST").count(),
        1,
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_voice_agent_example_runs_as_written() {
    // The health check is answered by keyward; the refused call never left.
    assert!(run_example("voice-agent").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contact_centre_example_runs_as_written() {
    let seen = run_example("contact-centre").await;
    assert_eq!(seen.len(), 1, "only the Basic call passes: {seen:?}");
    assert_eq!(seen[0].header("authorization"), None, "the key is removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_voice_api_example_runs_as_written() {
    let seen = run_example("voice-api").await;
    assert_eq!(
        seen.len(),
        2,
        "the CRM call before revoke, Zapier's after: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_telephony_example_runs_as_written() {
    let seen = run_example("telephony").await;
    assert_eq!(seen.len(), 1, "only the own-account call passes: {seen:?}");
    assert_eq!(seen[0].target, "/v1/voice/accounts/AC123456/calls");
}

#[test]
fn promises_are_read_from_arrow_lines() {
    let p = promises("# → {\"valid\":true,\"code\":\"valid\",\"key\":{\"key_id\":\"key_…\",\"n\":[\"a\"]}}\n# → 200 (or not)\n");
    assert_eq!(
        p,
        [
            r#""valid":true"#,
            r#""code":"valid""#,
            r#""n":["a"]"#,
            "200"
        ]
    );
}
