//! `keyward scan` and `keyward regex` as a user runs them: the real binary
//! on a generated tree of thousands of files (valid keys of several
//! environments and the root prefix, checksum-broken look-alikes, prefix
//! noise, binary files, ignored directories, a file over the size cap),
//! every output format (SARIF validated against the vendored SARIF 2.1.0
//! JSON schema), exit statuses, and `--check` against an HTTP server that
//! speaks the `POST /v1/leaks/check` contract.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use keyward_core::secret::{KeyFormat, KeyHash, KeyKind, KeySecret, OsEntropy};
use serde_json::{json, Value};

use crate::kit::temp_dir;

const BIN: &str = env!("CARGO_BIN_EXE_keyward");

/// The deployment's prefixes: not the defaults, so the scan must read them
/// from the configuration.
const CONFIG: &str = r#"
[keys]
environments = { live = "acme_live_", test = "acme_test_", sandbox = "acme_sbx_" }
root_prefix = "acme_root_"
"#;

fn key_format() -> KeyFormat {
    KeyFormat::new(
        [
            ("live", "acme_live_"),
            ("test", "acme_test_"),
            ("sandbox", "acme_sbx_"),
        ],
        "acme_root_",
    )
    .unwrap()
}

/// One run of the binary.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `keyward args…` in `dir` with nothing from this environment (no
/// KEYWARD_* variables, no global git excludes) but `env`.
fn keyward(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let out = Command::new(BIN)
        .current_dir(dir)
        .env_clear()
        .envs(env.iter().copied())
        .args(args)
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// Deterministic filler (xorshift64*): the same tree on every run.
struct Filler(u64);

impl Filler {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn base62(&mut self, len: usize) -> String {
        const A: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        (0..len)
            .map(|_| char::from(A[self.below(62) as usize]))
            .collect()
    }

    /// A line of source-like text, sometimes with a prefix look-alike.
    fn line(&mut self, f: &KeyFormat, keys: &mut Keys) -> String {
        match self.below(40) {
            0 => format!("let token = \"acme_live_{}\";", self.base62(38)),
            1 => "// acme_live_ acme_test_short acme_root_".to_owned(),
            2 => format!("API_KEY={}", keys.broken(f, self)),
            3 => format!("x = \"acme_prod_{}\"", self.base62(38)),
            _ => {
                let words = [
                    "fn",
                    "let",
                    "return",
                    "self",
                    "config",
                    "value",
                    "match",
                    "=>",
                    "{",
                    "}",
                    "Some(x)",
                    "None",
                    "// TODO",
                    "ünïcødé",
                    "map",
                    "filter",
                    "acme",
                ];
                let n = 3 + self.below(10);
                (0..n)
                    .map(|_| words[self.below(words.len() as u64) as usize])
                    .collect::<Vec<_>>()
                    .join(" ")
            }
        }
    }
}

/// The keys the tree holds, and where the scan must report them.
#[derive(Default)]
struct Keys {
    /// Every valid key written anywhere (reported or not).
    all: Vec<KeySecret>,
    /// `(path, line, column, start, environment or "root")` of the keys
    /// the scan must report.
    expected: BTreeSet<(String, usize, usize, String, String)>,
}

impl Keys {
    fn new_key(&mut self, f: &KeyFormat, kind: &KeyKind) -> String {
        let k = f.generate(kind, &OsEntropy).unwrap();
        let s = k.expose().to_owned();
        self.all.push(k);
        s
    }

    /// A valid key, its checksum broken one of three ways.
    fn broken(&mut self, f: &KeyFormat, r: &mut Filler) -> String {
        let k = f.generate(&KeyKind::Root, &OsEntropy).unwrap();
        let mut s = k.expose().to_owned();
        match r.below(3) {
            0 => {
                // One body character changed.
                let at = "acme_root_".len() + 5;
                let c = if &s[at..=at] == "a" { "b" } else { "a" };
                s.replace_range(at..=at, c);
            }
            1 => {
                // The checksum changed.
                let c = if s.ends_with('0') { '1' } else { '0' };
                s.pop();
                s.push(c);
            }
            _ => {
                // Truncated.
                s.pop();
            }
        }
        assert!(f.parse(&s).is_err());
        s
    }

    fn expect(&mut self, path: &str, line: usize, column: usize, key: &str) {
        let f = key_format();
        let parsed = f.parse(key).unwrap();
        let kind = match parsed.kind {
            KeyKind::Environment(e) => e.clone(),
            KeyKind::Root => "root".to_owned(),
        };
        let start = key[..parsed.prefix_len + 4].to_owned();
        self.expected
            .insert((path.to_owned(), line, column, start, kind));
    }
}

fn write(root: &Path, rel: &str, content: &[u8]) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

/// A tree of 3,000 source-like files in 30 directories, and around them
/// the cases a scanner gets wrong. Returns the keys and where they must be
/// reported.
fn generate_tree(root: &Path) -> Keys {
    let f = key_format();
    let mut r = Filler(0x9E37_79B9_7F4A_7C15);
    let mut keys = Keys::default();
    let kinds = [
        KeyKind::Environment("live".into()),
        KeyKind::Environment("test".into()),
        KeyKind::Environment("sandbox".into()),
        KeyKind::Root,
    ];
    for i in 0..3000 {
        let rel = format!("src/dir{:02}/file{i:04}.rs", i % 30);
        let lines = 10 + r.below(60) as usize;
        let mut text = String::new();
        let with_keys = i % 61 == 7;
        let crlf = i % 2 == 0;
        for n in 1..=lines {
            let mut line = r.line(&f, &mut keys);
            if with_keys && (n == 3 || (n == lines && i % 3 == 0)) {
                let key = keys.new_key(&f, &kinds[(i + n) % kinds.len()]);
                // After multi-byte characters: columns count characters.
                let before = format!("    let clé = \"{}ü\" + \"", "x".repeat(n % 5));
                keys.expect(&rel, n, before.chars().count() + 1, &key);
                line = format!("{before}{key}\"; {line}");
                if n == 3 {
                    // A second key on the same line, glued to more letters.
                    let second = keys.new_key(&f, &kinds[i % kinds.len()]);
                    let col = line.chars().count() + 2;
                    keys.expect(&rel, n, col, &second);
                    line = format!("{line} {second}XYZ");
                }
            }
            text.push_str(&line);
            text.push_str(if crlf { "\r\n" } else { "\n" });
        }
        write(root, &rel, text.as_bytes());
    }
    let live = KeyKind::Environment("live".into());
    // Ignored by .gitignore (outside a git repository too), by a nested
    // .gitignore, by .ignore; .git/ is never scanned.
    write(root, ".gitignore", b"/build/\n*.tmp\n");
    for i in 0..5 {
        let k = keys.new_key(&f, &live);
        write(
            root,
            &format!("build/out{i}.rs"),
            format!("const K: &str = \"{k}\";\n").as_bytes(),
        );
    }
    let k = keys.new_key(&f, &KeyKind::Root);
    write(root, "src/dir03/notes.tmp", k.as_bytes());
    write(root, "src/dir04/.gitignore", b"secret.txt\n");
    let k = keys.new_key(&f, &live);
    write(root, "src/dir04/secret.txt", k.as_bytes());
    write(root, ".ignore", b"*.log\n");
    let k = keys.new_key(&f, &live);
    write(root, "logs/app.log", format!("token={k}\n").as_bytes());
    let k = keys.new_key(&f, &live);
    write(
        root,
        ".git/config",
        format!("[x]\n\ttoken = {k}\n").as_bytes(),
    );
    // Hidden files are scanned: `.env` is where keys leak.
    let k = keys.new_key(&f, &KeyKind::Environment("test".into()));
    write(root, ".env", format!("# local\nACME_KEY={k}\n").as_bytes());
    keys.expect(".env", 2, 10, &k);
    // Binary: a NUL in the first 8 KiB.
    let k = keys.new_key(&f, &live);
    let mut bin = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    bin.extend_from_slice(k.as_bytes());
    write(root, "assets/logo.png", &bin);
    // A NUL only after the first 8 KiB: text, as git and ripgrep decide.
    let k = keys.new_key(&f, &live);
    let mut late = format!("{k}\n").into_bytes();
    late.extend(std::iter::repeat_n(b'a', 9000));
    late.push(0);
    write(root, "assets/late-nul.txt", &late);
    keys.expect("assets/late-nul.txt", 1, 1, &k);
    // Over the 64 KiB cap the tests pass.
    let k = keys.new_key(&f, &live);
    let mut big = format!("-- {k}\n").into_bytes();
    big.extend(std::iter::repeat_n(b'x', 100 * 1024));
    write(root, "data/dump.sql", &big);
    // A directory with only noise.
    for i in 0..20 {
        let text: String = (0..30).map(|_| r.line(&f, &mut keys) + "\n").collect();
        write(root, &format!("clean/file{i}.txt"), text.as_bytes());
    }
    write(root, "keyward.toml", CONFIG.as_bytes());
    keys
}

/// Fails if any valid key, or the part of it its display start does not
/// show, is in `text`.
fn assert_no_secret(keys: &Keys, text: &str) {
    let f = key_format();
    for k in &keys.all {
        let s = k.expose();
        let p = f.parse(s).unwrap().prefix_len;
        assert!(!text.contains(s), "a whole key was printed");
        assert!(
            !text.contains(&s[p + 4..p + 16]),
            "a key's hidden part was printed"
        );
    }
}

fn findings_of(json: &Value) -> BTreeSet<(String, usize, usize, String, String)> {
    json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let kind = match f["kind"].as_str().unwrap() {
                "root" => "root".to_owned(),
                _ => f["environment"].as_str().unwrap().to_owned(),
            };
            (
                f["path"].as_str().unwrap().to_owned(),
                f["line"].as_u64().unwrap() as usize,
                f["column"].as_u64().unwrap() as usize,
                f["start"].as_str().unwrap().to_owned(),
                kind,
            )
        })
        .collect()
}

fn sarif_validator() -> jsonschema::Validator {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sarif");
    let text = std::fs::read_to_string(dir.join("sarif-schema-2.1.0.json")).unwrap();
    let schema: Value = serde_json::from_str(&text).unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

fn assert_valid_sarif(validator: &jsonschema::Validator, sarif: &Value) {
    let errors: Vec<String> = validator
        .iter_errors(sarif)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "invalid SARIF: {errors:#?}");
}

#[test]
fn scan_reports_exactly_the_valid_keys_in_a_generated_tree() {
    let root = temp_dir("scan-tree");
    let keys = generate_tree(&root);
    assert!(keys.expected.len() > 100, "{}", keys.expected.len());
    let base = ["scan", "--config", "keyward.toml", "--max-file-size", "64K"];

    // JSON: exactly the expected findings, with hashes of the keys.
    let run = keyward(&root, &[&base[..], &["--format", "json"]].concat(), &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let json: Value = serde_json::from_str(&run.stdout).unwrap();
    let found = findings_of(&json);
    let missing: Vec<_> = keys.expected.difference(&found).collect();
    let extra: Vec<_> = found.difference(&keys.expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:#?}\nextra {extra:#?}"
    );
    let hashes: BTreeSet<String> = keys.all.iter().map(|k| k.hash().to_hex()).collect();
    for f in json["findings"].as_array().unwrap() {
        assert!(hashes.contains(f["sha256"].as_str().unwrap()));
        assert!(f.get("live").is_none(), "no verdict without --check");
    }
    assert_eq!(json["skipped_binary"], 1);
    assert_eq!(json["skipped_too_large"], 1);
    assert_eq!(json["errors"], json!([]));
    assert!(json["files_scanned"].as_u64().unwrap() >= 3000);
    assert!(
        run.stderr.contains("skipped 1 binary and 1 over 64 KiB;"),
        "{}",
        run.stderr
    );
    assert!(run
        .stderr
        .contains(&format!("{} keys found", keys.expected.len())));
    assert_no_secret(&keys, &run.stdout);
    assert_no_secret(&keys, &run.stderr);

    // Text: one line per finding, in path and position order.
    let run = keyward(&root, &base, &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    let mut want: Vec<(String, usize, usize, String, String)> =
        keys.expected.iter().cloned().collect();
    want.sort_by(|a, b| (&a.0, a.1, a.2).cmp(&(&b.0, b.1, b.2)));
    let want: Vec<String> = want
        .iter()
        .map(|(p, l, c, s, k)| format!("{p}:{l}:{c}: {s}… ({k} key)"))
        .collect();
    assert_eq!(lines, want);
    assert_no_secret(&keys, &run.stdout);
    assert_no_secret(&keys, &run.stderr);

    // SARIF: valid against the SARIF 2.1.0 schema, one result per finding
    // at the same place.
    let run = keyward(&root, &[&base[..], &["--format", "sarif"]].concat(), &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_no_secret(&keys, &run.stdout);
    assert_no_secret(&keys, &run.stderr);
    let sarif: Value = serde_json::from_str(&run.stdout).unwrap();
    let validator = sarif_validator();
    assert_valid_sarif(&validator, &sarif);
    let sarif_run = &sarif["runs"][0];
    assert_eq!(sarif_run["tool"]["driver"]["name"], "keyward");
    assert_eq!(
        sarif_run["tool"]["driver"]["rules"][0]["id"],
        "keyward-api-key"
    );
    let places: BTreeSet<(String, usize, usize)> = sarif_run["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["ruleId"], "keyward-api-key");
            assert_eq!(r["level"], "error");
            let loc = &r["locations"][0]["physicalLocation"];
            (
                loc["artifactLocation"]["uri"].as_str().unwrap().to_owned(),
                loc["region"]["startLine"].as_u64().unwrap() as usize,
                loc["region"]["startColumn"].as_u64().unwrap() as usize,
            )
        })
        .collect();
    let want: BTreeSet<(String, usize, usize)> = keys
        .expected
        .iter()
        .map(|(p, l, c, _, _)| (p.clone(), *l, *c))
        .collect();
    assert_eq!(places, want);
    // The validator is not a rubber stamp: a level SARIF does not define
    // and a result without a message are refused.
    let mut bad = sarif.clone();
    bad["runs"][0]["results"][0]["level"] = json!("fatal");
    assert!(!validator.is_valid(&bad));
    let mut bad = sarif.clone();
    bad["runs"][0]["results"][0]
        .as_object_mut()
        .unwrap()
        .remove("message");
    assert!(!validator.is_valid(&bad));

    // A file named on the command line is scanned even if ignored; a
    // directory of noise alone finds nothing (exit 0).
    let run = keyward(
        &root,
        &["scan", "--config", "keyward.toml", "build/out0.rs"],
        &[],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stdout.starts_with("build/out0.rs:1:18: acme_live_"),
        "{}",
        run.stdout
    );
    let run = keyward(
        &root,
        &[
            "scan",
            "--config",
            "keyward.toml",
            "clean",
            "--format",
            "json",
        ],
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let json: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["findings"], json!([]));
    assert_eq!(json["files_scanned"], 20);
    let run = keyward(&root, &["scan", "--config", "keyward.toml", "clean"], &[]);
    assert_eq!((run.code, run.stdout.as_str()), (0, ""));
    // --no-ignore also reads the ignored files; --quiet drops the summary.
    let run = keyward(
        &root,
        &[&base[..], &["--no-ignore", "--quiet", "--format", "json"]].concat(),
        &[],
    );
    assert_eq!(run.code, 1);
    assert_eq!(run.stderr, "");
    let with_ignored = findings_of(&serde_json::from_str(&run.stdout).unwrap());
    assert_eq!(
        with_ignored.len(),
        keys.expected.len() + 8,
        "build/ ×5, notes.tmp, secret.txt, app.log"
    );

    // Errors: a path that does not exist, a configuration that is wrong.
    let run = keyward(
        &root,
        &["scan", "--config", "keyward.toml", "no/such/dir"],
        &[],
    );
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("cannot read no/such/dir"),
        "{}",
        run.stderr
    );
    write(
        &root,
        "bad.toml",
        b"[keys]\nroot_prefix = \"no spaces allowed\"\n",
    );
    let run = keyward(&root, &["scan", "--config", "bad.toml", "clean"], &[]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    // The default prefixes (no configuration) find none of acme's keys.
    let run = keyward(&root, &["scan", "src"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    std::fs::remove_dir_all(&root).unwrap();
}

/// What the stand-in for `POST /v1/leaks/check` saw.
#[derive(Default)]
struct Seen {
    authorization: Vec<String>,
    bodies: Vec<Value>,
}

/// A server that speaks the leak-check contract: `{"hashes": […]}` in,
/// `{"live": […]}` out (the hashes in `live` it was asked about), bearer
/// `root` required.
async fn leak_check_server(root: &str, live: BTreeSet<String>) -> (String, Arc<Mutex<Seen>>) {
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    use axum::Json;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (seen2, want) = (seen.clone(), format!("Bearer {root}"));
    let app = axum::Router::new().route(
        "/v1/leaks/check",
        axum::routing::post(move |headers: HeaderMap, Json(body): Json<Value>| {
            let (seen, live, want) = (seen2.clone(), live.clone(), want.clone());
            async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let mut s = seen.lock().unwrap();
                s.authorization.push(auth.clone());
                s.bodies.push(body.clone());
                if auth != want {
                    return (StatusCode::UNAUTHORIZED, Json(json!({"type": "about:blank", "title": "Unauthorized", "status": 401, "detail": "bad key", "code": "invalid_api_key"}))).into_response();
                }
                let asked = body["hashes"].as_array().cloned().unwrap_or_default();
                if asked.len() > 100 {
                    return (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({"detail": "too many"}))).into_response();
                }
                let answer: Vec<Value> = asked
                    .into_iter()
                    .filter(|h| h.as_str().is_some_and(|h| live.contains(h)))
                    .collect();
                Json(json!({ "live": answer })).into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

#[tokio::test]
async fn check_sends_only_hashes_and_says_which_keys_are_live() {
    let root = temp_dir("scan-check");
    write(&root, "keyward.toml", CONFIG.as_bytes());
    let f = key_format();
    // 150 distinct keys (two requests: at most 100 hashes each), one of
    // them written twice (asked once).
    let keys: Vec<KeySecret> = (0..150)
        .map(|_| {
            f.generate(&KeyKind::Environment("live".into()), &OsEntropy)
                .unwrap()
        })
        .collect();
    let mut text = String::new();
    for k in &keys {
        text.push_str(&format!("key = \"{}\"\n", k.expose()));
    }
    text.push_str(&format!("again = \"{}\"\n", keys[0].expose()));
    write(&root, "app/settings.py", text.as_bytes());
    let live: BTreeSet<String> = keys.iter().step_by(3).map(|k| k.hash().to_hex()).collect();
    let operator = "acme_root_operator-key-for-the-test";
    let (url, seen) = leak_check_server(operator, live.clone()).await;

    let run_in = |args: Vec<String>, env: Vec<(String, String)>| {
        let root = root.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let env: Vec<(&str, &str)> =
                env.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
            keyward(&root, &args, &env)
        })
    };
    let args = |extra: &[&str]| -> Vec<String> {
        ["scan", "--config", "keyward.toml", "--check"]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
    };
    let env = |url: &str, key: &str| {
        vec![
            ("KEYWARD_URL".to_owned(), url.to_owned()),
            ("KEYWARD_ROOT_KEY".to_owned(), key.to_owned()),
        ]
    };

    let run = run_in(args(&["--format", "json"]), env(&url, operator))
        .await
        .unwrap();
    assert_eq!(run.code, 1, "{}", run.stderr);
    let json: Value = serde_json::from_str(&run.stdout).unwrap();
    let findings = json["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 151);
    for (i, fnd) in findings.iter().enumerate() {
        let k = &keys[i % 150];
        assert_eq!(fnd["line"], i + 1);
        assert_eq!(fnd["sha256"], k.hash().to_hex());
        assert_eq!(fnd["live"], live.contains(&k.hash().to_hex()), "{fnd}");
    }
    assert!(
        run.stderr.contains("151 keys found (51 live)"),
        "{}",
        run.stderr
    );
    {
        let s = seen.lock().unwrap();
        assert_eq!(s.bodies.len(), 2);
        assert!(s
            .authorization
            .iter()
            .all(|a| a == &format!("Bearer {operator}")));
        let mut asked = BTreeSet::new();
        for b in &s.bodies {
            let obj = b.as_object().unwrap();
            assert_eq!(obj.len(), 1, "only hashes: {b}");
            let hs = b["hashes"].as_array().unwrap();
            assert!(hs.len() <= 100);
            for h in hs {
                let h = h.as_str().unwrap();
                assert!(KeyHash::from_hex(h).is_some(), "{h}");
                assert!(asked.insert(h.to_owned()), "asked twice: {h}");
            }
        }
        assert_eq!(asked.len(), 150);
        let all_sent = serde_json::to_string(&s.bodies).unwrap();
        for k in &keys {
            let p = f.parse(k.expose()).unwrap().prefix_len;
            assert!(
                !all_sent.contains(&k.expose()[p..p + 12]),
                "key material sent"
            );
        }
    }

    // Text says the verdict; SARIF makes a dead key a warning and stays valid.
    let run = run_in(args(&[]), env(&url, operator)).await.unwrap();
    assert_eq!(run.code, 1, "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines[0].ends_with("(live key) [live]"), "{}", lines[0]);
    assert!(lines[1].ends_with("(live key) [not live]"), "{}", lines[1]);
    let run = run_in(args(&["--format", "sarif"]), env(&url, operator))
        .await
        .unwrap();
    assert_eq!(run.code, 1, "{}", run.stderr);
    let sarif: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_valid_sarif(&sarif_validator(), &sarif);
    let levels: Vec<&str> = sarif["runs"][0]["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["level"].as_str().unwrap())
        .collect();
    assert_eq!(&levels[..3], ["error", "warning", "warning"]);
    for out in [&run.stdout, &run.stderr] {
        for k in &keys {
            assert!(!out.contains(k.expose()));
        }
    }

    // Errors are exit 2: a refused key, no key, no server.
    let run = run_in(args(&[]), env(&url, "acme_root_wrong"))
        .await
        .unwrap();
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("401"), "{}", run.stderr);
    let run = run_in(args(&[]), vec![("KEYWARD_URL".to_owned(), url.clone())])
        .await
        .unwrap();
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("KEYWARD_ROOT_KEY"), "{}", run.stderr);
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let run = run_in(args(&[]), env(&closed, operator)).await.unwrap();
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("cannot reach keyward"),
        "{}",
        run.stderr
    );
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn regex_prints_the_pattern_a_gitleaks_rule_and_a_github_custom_pattern() {
    let root = temp_dir("scan-regex");
    write(&root, "keyward.toml", CONFIG.as_bytes());
    let plain = keyward(&root, &["regex", "--config", "keyward.toml"], &[]);
    assert_eq!(plain.code, 0, "{}", plain.stderr);
    assert_eq!(
        plain.stdout,
        "\\b(acme_live_|acme_root_|acme_sbx_|acme_test_)[0-9A-Za-z]{36,}\\b\n"
    );
    let same = keyward(
        &root,
        &["regex", "--config", "keyward.toml", "--format", "regex"],
        &[],
    );
    assert_eq!(same.stdout, plain.stdout);

    let gitleaks = keyward(
        &root,
        &["regex", "--config", "keyward.toml", "--format", "gitleaks"],
        &[],
    );
    assert_eq!(gitleaks.code, 0, "{}", gitleaks.stderr);
    let rules: toml::Value = toml::from_str(&gitleaks.stdout).unwrap();
    let rule = &rules["rules"][0];
    assert_eq!(rule["id"].as_str(), Some("keyward_api_key"));
    assert_eq!(
        format!("{}\n", rule["regex"].as_str().unwrap()),
        plain.stdout
    );
    let keywords: Vec<&str> = rule["keywords"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!(
        keywords,
        ["acme_live_", "acme_root_", "acme_sbx_", "acme_test_"]
    );

    let github = keyward(
        &root,
        &["regex", "--config", "keyward.toml", "--format", "github"],
        &[],
    );
    assert_eq!(github.code, 0, "{}", github.stderr);
    let field = |name: &str| -> String {
        github
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} in {}", github.stdout))
            .to_owned()
    };
    assert_eq!(
        field("Secret format"),
        "(?:acme_live_|acme_root_|acme_sbx_|acme_test_)[0-9A-Za-z]{36,}"
    );
    assert_eq!(field("Before secret"), "\\A|[^0-9A-Za-z]");
    assert_eq!(field("After secret"), "\\z|[^0-9A-Za-z]");
    // The test string is a well-formed key of the first environment, and
    // `keyward scan` finds it.
    let sample = field("Test string");
    assert!(key_format().parse(&sample).is_ok(), "{sample}");
    write(&root, "sample.txt", sample.as_bytes());
    let run = keyward(
        &root,
        &["scan", "--config", "keyward.toml", "sample.txt"],
        &[],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    std::fs::remove_dir_all(&root).unwrap();
}

/// The vendored schema is the one its note names.
#[test]
fn the_vendored_sarif_schema_is_sarif_2_1_0() {
    let dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sarif");
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("sarif-schema-2.1.0.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(schema["properties"]["version"]["enum"], json!(["2.1.0"]));
    assert!(std::fs::read_to_string(dir.join("README.md"))
        .unwrap()
        .contains("oasis-tcs/sarif-spec"));
}

/// `--check` against a real keyward: a live key, a revoked one and one
/// nobody issued, in one file; only the live one is live.
#[tokio::test]
async fn check_against_a_running_keyward_marks_only_its_live_keys() {
    let s = crate::kit::Server::start().await;
    let tenant = s.tenant("Acme").await;
    let (_, live) = s.key(&tenant, "live", json!({})).await;
    let (revoked_id, revoked) = s.key(&tenant, "old", json!({})).await;
    let r = s
        .post(
            &format!("/v1/keys/{revoked_id}/revoke"),
            &s.root,
            json!({ "reason": "leaked" }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let unknown = keyward_server::config::Settings::from_config(crate::kit::default_config())
        .unwrap()
        .format
        .generate(&KeyKind::Environment("test".into()), &OsEntropy)
        .unwrap();
    let root = temp_dir("scan-check-real");
    write(
        &root,
        "app/.env",
        format!("A={live}\nB={revoked}\nC={}\n", unknown.expose()).as_bytes(),
    );
    let (base, key) = (s.base.clone(), s.root.clone());
    let dir = root.clone();
    let run = tokio::task::spawn_blocking(move || {
        keyward(
            &dir,
            &["scan", "--check", "--format", "json", "."],
            &[
                ("KEYWARD_URL", base.as_str()),
                ("KEYWARD_ROOT_KEY", key.as_str()),
            ],
        )
    })
    .await
    .unwrap();
    assert_eq!(run.code, 1, "{}", run.stderr);
    let json: Value = serde_json::from_str(&run.stdout).unwrap();
    let verdicts: Vec<(i64, bool)> = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["line"].as_i64().unwrap(), f["live"].as_bool().unwrap()))
        .collect();
    assert_eq!(verdicts, vec![(1, true), (2, false), (3, false)]);
    for secret in [live.as_str(), revoked.as_str(), unknown.expose()] {
        assert!(!run.stdout.contains(secret) && !run.stderr.contains(secret));
    }
}
