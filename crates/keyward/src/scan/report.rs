//! How `keyward scan` prints what it found: text for people, JSON for
//! programs, SARIF 2.1.0 for code-scanning tools; and the summary on stderr.
//!
//! None of them carries a key: a finding shows the key's display start and,
//! in JSON and SARIF, its SHA-256 (what the store keeps; useful to tell two
//! findings of one key apart from two keys).

use std::io::Write;
use std::path::Path;

use anyhow::Result;
use keyward_core::secret::KeyKind;
use serde_json::{json, Value};

use super::{Finding, Outcome};

/// The SARIF rule every finding is reported under.
const RULE_ID: &str = "keyward-api-key";

/// What a finding's prefix says, in words: `live key`, `root key`.
fn kind_words(kind: &KeyKind) -> String {
    match kind {
        KeyKind::Environment(e) => format!("{e} key"),
        KeyKind::Root => "root key".to_owned(),
    }
}

/// `--check`'s verdict, in words.
fn verdict(live: Option<bool>) -> &'static str {
    match live {
        Some(true) => " [live]",
        Some(false) => " [not live]",
        None => "",
    }
}

/// `path:line:column: kw_live_AB7K… (live key)`, one finding a line, with
/// ` [live]` or ` [not live]` after a check.
pub(crate) fn text(out: &mut impl Write, findings: &[Finding]) -> Result<()> {
    for f in findings {
        writeln!(
            out,
            "{}:{}:{}: {}… ({}){}",
            f.path.display(),
            f.line,
            f.column,
            f.start,
            kind_words(&f.kind),
            verdict(f.live)
        )?;
    }
    Ok(())
}

fn finding_json(f: &Finding) -> Value {
    let (kind, environment) = match &f.kind {
        KeyKind::Environment(e) => ("environment", Some(e.as_str())),
        KeyKind::Root => ("root", None),
    };
    let mut v = json!({
        "path": f.path.to_string_lossy(),
        "line": f.line,
        "column": f.column,
        "start": f.start,
        "kind": kind,
        "environment": environment,
        "sha256": f.hash.to_hex(),
    });
    if let (Some(live), Some(o)) = (f.live, v.as_object_mut()) {
        o.insert("live".to_owned(), Value::Bool(live));
    }
    v
}

/// One JSON document: `findings` (path, line, column, start, kind,
/// environment, sha256, and `live` after a check), the counts and errors.
pub(crate) fn json(out: &mut impl Write, outcome: &Outcome) -> Result<()> {
    let t = &outcome.totals;
    let doc = json!({
        "findings": outcome.findings.iter().map(finding_json).collect::<Vec<_>>(),
        "files_scanned": t.files,
        "bytes_scanned": t.bytes,
        "skipped_binary": t.binary,
        "skipped_too_large": t.too_large,
        "errors": outcome.errors,
    });
    serde_json::to_writer_pretty(&mut *out, &doc)?;
    writeln!(out)?;
    Ok(())
}

/// A path as a SARIF `artifactLocation.uri`: relative paths stay relative
/// (to the directory the scan ran in, which CI makes the repository root),
/// with forward slashes and percent-encoding; absolute ones become
/// `file://` URIs.
pub(crate) fn uri(path: &Path) -> String {
    let text = path.to_string_lossy().replace('\\', "/");
    let mut out = String::with_capacity(text.len());
    if path.is_absolute() {
        out.push_str("file://");
        if !text.starts_with('/') {
            out.push('/');
        }
    }
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn result_json(f: &Finding) -> Value {
    let mut message = format!(
        "A keyward {} ({}…) is written in this file. Revoke or rotate it, then remove it from the file and from the history.",
        kind_words(&f.kind),
        f.start
    );
    let level = match f.live {
        Some(true) => {
            message.push_str(" keyward says this key is live.");
            "error"
        }
        Some(false) => {
            message.push_str(" keyward says this key is not live (revoked, expired, deleted or not of this deployment).");
            "warning"
        }
        None => "error",
    };
    let uri = uri(&f.path);
    json!({
        "ruleId": RULE_ID,
        "ruleIndex": 0,
        "level": level,
        "message": { "text": message },
        "locations": [{
            "physicalLocation": {
                "artifactLocation": { "uri": uri },
                "region": {
                    "startLine": f.line,
                    "startColumn": f.column,
                    "endLine": f.line,
                    "endColumn": f.end_column,
                },
            },
        }],
        // Together they name one key at one place; the key's hash alone
        // tells where one key was written twice.
        "partialFingerprints": {
            "keySha256/v1": f.hash.to_hex(),
            "path/v1": uri,
        },
        "properties": {
            "keyStart": f.start,
            "keySha256": f.hash.to_hex(),
            "live": f.live,
        },
    })
}

/// A SARIF 2.1.0 log with one run of the `keyward` tool, its one rule and
/// a result per finding.
pub(crate) fn sarif(out: &mut impl Write, findings: &[Finding]) -> Result<()> {
    let doc = json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {
                "driver": {
                    "name": "keyward",
                    "version": env!("CARGO_PKG_VERSION"),
                    "rules": [{
                        "id": RULE_ID,
                        "name": "KeywardApiKey",
                        "shortDescription": { "text": "keyward API key in a file" },
                        "fullDescription": {
                            "text": "A well-formed keyward API key (its prefix is one of this deployment's and its CRC32 checksum holds) is written in a file. Anyone who can read the file can use the key."
                        },
                        "help": {
                            "text": "Revoke or rotate the key in keyward (`keyward keys revoke`), give its user a new one through a secret store or environment variable, and remove the key from the file and the repository's history.",
                            "markdown": "Revoke or rotate the key in keyward (`keyward keys revoke`), give its user a new one through a secret store or environment variable, and remove the key from the file **and** the repository's history."
                        },
                        "defaultConfiguration": { "level": "error" },
                        "properties": {
                            "tags": ["security", "secret", "external/cwe/cwe-798"],
                            "precision": "very-high",
                            "security-severity": "9.0",
                        },
                    }],
                },
            },
            "columnKind": "unicodeCodePoints",
            "results": findings.iter().map(result_json).collect::<Vec<_>>(),
        }],
    });
    serde_json::to_writer_pretty(&mut *out, &doc)?;
    writeln!(out)?;
    Ok(())
}

/// The summary line for stderr: what was scanned, skipped and found.
pub(crate) fn summary(outcome: &Outcome, cap: u64) -> String {
    let t = &outcome.totals;
    let found = outcome.findings.len();
    let live = outcome
        .findings
        .iter()
        .filter(|f| f.live == Some(true))
        .count();
    let checked = outcome.findings.iter().any(|f| f.live.is_some());
    let keys = match (found, checked) {
        (1, false) => "1 key found".to_owned(),
        (n, false) => format!("{n} keys found"),
        (n, true) => format!("{n} keys found ({live} live)"),
    };
    format!(
        "keyward scan: {} files ({:.1} MB) scanned; skipped {} binary and {} over {}; {keys}.",
        t.files,
        t.bytes as f64 / 1e6,
        t.binary,
        t.too_large,
        size_words(cap)
    )
}

fn size_words(n: u64) -> String {
    for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if n >= 1 << shift && n.is_multiple_of(1 << shift) {
            return format!("{} {unit}", n >> shift);
        }
    }
    format!("{n} bytes")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::uri;

    #[test]
    fn uris_are_relative_with_forward_slashes_and_escaped() {
        assert_eq!(uri(Path::new("src/a b.rs")), "src/a%20b.rs");
        assert_eq!(uri(Path::new("src/ü.rs")), "src/%C3%BC.rs");
        assert_eq!(uri(Path::new("/tmp/x.env")), "file:///tmp/x.env");
    }
}
