//! `keyward scan PATH…`: finds this deployment's keys in files, for a
//! pre-commit hook, CI or an audit of a whole disk.
//!
//! The walk honours `.gitignore`, `.ignore` and git's excludes (also outside
//! a git repository), scans hidden files as git tracks them (`.env` is where
//! keys leak most) but never `.git/`, and skips binary files (a NUL byte in
//! the first 8 KiB, as git and ripgrep decide) and files over
//! `--max-file-size`. Each file is searched by [`KeyFinder`]: candidates by
//! the configured prefixes, kept only if their checksum holds. Findings are
//! printed redacted to the key's display start (`kw_live_AB7K…`); the whole
//! key never leaves this process, only its SHA-256 does (SARIF fingerprints,
//! JSON, and `--check`, which asks a running keyward which hashes are live
//! keys: [`check`]).
//!
//! Exit status: 0 no key found, 1 a key found (whether live or not: a key in
//! a file is a leak to clean up even once revoked; `--check` adds the
//! verdict), 2 an error (a path that cannot be read, a bad configuration, a
//! server that cannot be asked). An error wins over a finding: the scan was
//! incomplete.

mod check;
mod patterns;
mod report;

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use keyward_core::secret::{display_start, KeyFinder, KeyHash, KeyKind};

pub(crate) use patterns::{print_patterns, PatternFormat};

use crate::client::ServerUrl;

/// Bytes read to decide whether a file is binary (git and ripgrep read as
/// many).
const BINARY_PEEK: usize = 8 * 1024;

/// How often the progress line on a terminal may change.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// A scan shorter than this shows no progress line at all.
const PROGRESS_AFTER: Duration = Duration::from_millis(500);

/// `keyward scan`'s arguments.
#[derive(Args, Debug)]
pub(crate) struct ScanArgs {
    /// Files and directories to scan [default: the current directory]. A
    /// file named here is scanned even if an ignore file excludes it.
    #[arg(value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// TOML configuration file: the key prefixes come from its
    /// `keys.environments` and root prefix (or from KEYWARD_* variables).
    #[arg(long, env = "KEYWARD_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// How to print findings: `text` (file:line:column: start…), `json`,
    /// or `sarif` (SARIF 2.1.0, for GitHub code scanning).
    #[arg(long, value_enum, default_value_t = ScanFormat::Text)]
    format: ScanFormat,
    /// Skip files larger than this many bytes (a K, M or G suffix counts in
    /// KiB, MiB, GiB). Skipped files are counted in the summary.
    #[arg(long, value_name = "SIZE", default_value = "10M", value_parser = parse_size)]
    max_file_size: u64,
    /// Ask the keyward at --url (KEYWARD_URL) which found keys are live,
    /// sending only their SHA-256 hashes; needs KEYWARD_ROOT_KEY with the
    /// scope keyward:leaks:check.
    #[arg(long)]
    check: bool,
    #[command(flatten)]
    server: ServerUrl,
    /// Also scan what .gitignore, .ignore and git's excludes leave out.
    #[arg(long)]
    no_ignore: bool,
    /// Threads that read and search files [default: the available cores].
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// No progress line and no summary on stderr (findings and errors are
    /// still printed).
    #[arg(long, short = 'q')]
    quiet: bool,
}

/// `--format` of `keyward scan`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ScanFormat {
    /// `path:line:column: kw_live_AB7K… (live key)`, one finding a line.
    Text,
    /// One JSON document: findings and counts.
    Json,
    /// SARIF 2.1.0, for GitHub code scanning and other SARIF viewers.
    Sarif,
}

/// One key found in a file. Holds no key material beyond its display start
/// and its hash.
#[derive(Debug, Clone)]
pub(crate) struct Finding {
    /// The file, as the walk reached it (no leading `./`).
    pub(crate) path: PathBuf,
    /// 1-based line.
    pub(crate) line: usize,
    /// 1-based column, in Unicode characters (bytes where a line is not
    /// UTF-8).
    pub(crate) column: usize,
    /// The column just after the key (the key is ASCII: one per byte).
    pub(crate) end_column: usize,
    /// The key's display start: prefix + 4 characters.
    pub(crate) start: String,
    /// What its prefix says it is.
    pub(crate) kind: KeyKind,
    /// SHA-256 of the key: what the store keeps and `--check` sends.
    pub(crate) hash: KeyHash,
    /// With `--check`: whether the server says it is a live key.
    pub(crate) live: Option<bool>,
}

/// What the walk read and left out.
#[derive(Debug, Default)]
pub(crate) struct Totals {
    /// Files searched.
    pub(crate) files: u64,
    /// Bytes searched.
    pub(crate) bytes: u64,
    /// Files skipped as binary.
    pub(crate) binary: u64,
    /// Files skipped as larger than the cap.
    pub(crate) too_large: u64,
}

/// Counters the walkers share with the progress line.
#[derive(Default)]
struct Counters {
    files: AtomicU64,
    bytes: AtomicU64,
    binary: AtomicU64,
    too_large: AtomicU64,
    found: AtomicU64,
}

impl Counters {
    fn totals(&self) -> Totals {
        Totals {
            files: self.files.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            binary: self.binary.load(Ordering::Relaxed),
            too_large: self.too_large.load(Ordering::Relaxed),
        }
    }
}

/// What one scan produced.
pub(crate) struct Outcome {
    /// Findings, by path then position.
    pub(crate) findings: Vec<Finding>,
    /// Counts for the summary.
    pub(crate) totals: Totals,
    /// Files or directories that could not be read, with why.
    pub(crate) errors: Vec<String>,
}

/// Runs `keyward scan`; never fails: errors are printed and become exit
/// status 2.
pub(crate) async fn run(args: ScanArgs) -> ExitCode {
    match scan_and_report(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("keyward scan: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn scan_and_report(args: ScanArgs) -> Result<ExitCode> {
    let settings = crate::load_settings(&crate::ServerArgs {
        config: args.config.clone(),
        listen: None,
        data_dir: None,
        store_url: None,
    })?;
    let finder = KeyFinder::new(&settings.format)?;
    let paths = if args.paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        args.paths.clone()
    };
    for p in &paths {
        std::fs::symlink_metadata(p).with_context(|| format!("cannot read {}", p.display()))?;
    }
    // A client before the walk: a missing KEYWARD_ROOT_KEY is an error
    // before minutes of scanning, not after.
    let checker = if args.check {
        Some(check::Checker::new(&args.server)?)
    } else {
        None
    };
    let progress = !args.quiet && std::io::stderr().is_terminal();
    let walk = WalkSettings {
        paths,
        max_file_size: args.max_file_size,
        no_ignore: args.no_ignore,
        threads: args.threads.unwrap_or(0),
        progress,
    };
    let mut outcome = tokio::task::spawn_blocking(move || scan(&finder, &walk)).await?;
    if let Some(checker) = checker {
        checker.mark_live(&mut outcome.findings).await?;
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match args.format {
        ScanFormat::Text => report::text(&mut out, &outcome.findings)?,
        ScanFormat::Json => report::json(&mut out, &outcome)?,
        ScanFormat::Sarif => report::sarif(&mut out, &outcome.findings)?,
    }
    out.flush()?;
    for e in &outcome.errors {
        eprintln!("keyward scan: error: {e}");
    }
    if !args.quiet {
        eprintln!("{}", report::summary(&outcome, args.max_file_size));
    }
    Ok(if !outcome.errors.is_empty() {
        ExitCode::from(2)
    } else if outcome.findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// How to walk.
struct WalkSettings {
    paths: Vec<PathBuf>,
    max_file_size: u64,
    no_ignore: bool,
    /// 0: the walker's choice (the available cores).
    threads: usize,
    progress: bool,
}

/// Walks `walk.paths` on parallel threads and searches every text file with
/// `finder`.
fn scan(finder: &KeyFinder, walk: &WalkSettings) -> Outcome {
    let mut builder = ignore::WalkBuilder::new(&walk.paths[0]);
    for p in &walk.paths[1..] {
        builder.add(p);
    }
    builder
        .standard_filters(!walk.no_ignore)
        // Hidden files are scanned (git tracks them; `.env` leaks keys);
        // `.git/` itself holds packed objects, not text.
        .hidden(false)
        // Outside a git repository a `.gitignore` still means what it says.
        .require_git(false)
        .threads(walk.threads)
        .filter_entry(|e| e.file_name() != ".git");
    let counters = Counters::default();
    let findings = Mutex::new(Vec::new());
    let errors = Mutex::new(Vec::new());
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        if walk.progress {
            s.spawn(|| show_progress(&counters, &done));
        }
        builder.build_parallel().run(|| {
            let mut buf = Vec::new();
            let (counters, findings, errors) = (&counters, &findings, &errors);
            Box::new(move |entry| {
                match entry {
                    Ok(e) if e.file_type().is_some_and(|t| t.is_file()) => {
                        match scan_file(finder, e.path(), walk.max_file_size, &mut buf, counters) {
                            Ok(found) if !found.is_empty() => lock(findings).extend(found),
                            Ok(_) => {}
                            Err(err) => lock(errors).push(err),
                        }
                    }
                    Ok(_) => {}
                    Err(err) => lock(errors).push(err.to_string()),
                }
                ignore::WalkState::Continue
            })
        });
        done.store(true, Ordering::Relaxed);
    });
    let mut findings = findings.into_inner().unwrap_or_else(|p| p.into_inner());
    findings.sort_by(|a, b| (&a.path, a.line, a.column).cmp(&(&b.path, b.line, b.column)));
    let mut errors = errors.into_inner().unwrap_or_else(|p| p.into_inner());
    errors.sort();
    Outcome {
        findings,
        totals: counters.totals(),
        errors,
    }
}

/// A mutex's value, also after another walker panicked holding it (the
/// vectors stay consistent: a push either happened or not).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads one file into `buf` and finds the keys in it.
fn scan_file(
    finder: &KeyFinder,
    path: &Path,
    cap: u64,
    buf: &mut Vec<u8>,
    counters: &Counters,
) -> Result<Vec<Finding>, String> {
    let why = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let file = std::fs::File::open(path).map_err(why)?;
    let size = file.metadata().map_err(why)?.len();
    if size > cap {
        counters.too_large.fetch_add(1, Ordering::Relaxed);
        return Ok(Vec::new());
    }
    buf.clear();
    // One byte more than the cap: a file that grew past it since the
    // metadata was read is still skipped, not half read.
    file.take(cap.saturating_add(1))
        .read_to_end(buf)
        .map_err(why)?;
    if buf.len() as u64 > cap {
        counters.too_large.fetch_add(1, Ordering::Relaxed);
        return Ok(Vec::new());
    }
    if buf[..buf.len().min(BINARY_PEEK)].contains(&0) {
        counters.binary.fetch_add(1, Ordering::Relaxed);
        return Ok(Vec::new());
    }
    counters.files.fetch_add(1, Ordering::Relaxed);
    counters
        .bytes
        .fetch_add(buf.len() as u64, Ordering::Relaxed);
    let matches = finder.find(buf);
    if matches.is_empty() {
        return Ok(Vec::new());
    }
    counters
        .found
        .fetch_add(matches.len() as u64, Ordering::Relaxed);
    let shown = path.strip_prefix(".").unwrap_or(path).to_path_buf();
    let mut line = 1;
    let mut line_start = 0;
    let mut counted_to = 0;
    let mut found = Vec::with_capacity(matches.len());
    for m in matches {
        for (i, &b) in buf[counted_to..m.offset].iter().enumerate() {
            if b == b'\n' {
                line += 1;
                line_start = counted_to + i + 1;
            }
        }
        counted_to = m.offset;
        // Characters, not bytes: a UTF-8 continuation byte starts none.
        let column = 1 + buf[line_start..m.offset]
            .iter()
            .filter(|&&b| (b & 0xC0) != 0x80)
            .count();
        // The finder matched base62 after an ASCII prefix: the key is ASCII.
        let key = String::from_utf8_lossy(&buf[m.range()]);
        found.push(Finding {
            path: shown.clone(),
            line,
            column,
            end_column: column + m.len,
            start: display_start(&key, m.prefix_len),
            kind: m.kind.clone(),
            hash: KeyHash::of(&key),
            live: None,
        });
    }
    Ok(found)
}

/// A `\r` status line on stderr, at most every [`PROGRESS_EVERY`], once the
/// scan has taken [`PROGRESS_AFTER`]; cleared at the end.
fn show_progress(counters: &Counters, done: &AtomicBool) {
    let began = Instant::now();
    let mut shown = false;
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(PROGRESS_EVERY);
        if began.elapsed() < PROGRESS_AFTER || done.load(Ordering::Relaxed) {
            continue;
        }
        let t = counters.totals();
        let found = counters.found.load(Ordering::Relaxed);
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[KScanning: {} files, {:.1} MB, {found} keys found",
            t.files,
            t.bytes as f64 / 1e6
        );
        let _ = err.flush();
        shown = true;
    }
    if shown {
        let _ = write!(std::io::stderr().lock(), "\r\x1b[K");
    }
}

/// `--max-file-size`: bytes, or a number with K, M or G (powers of 1024).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        _ => return Err(format!("{s:?} is not a size like 10M, 512K or 1048576")),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 10M, 512K or 1048576"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_read_with_units() {
        assert_eq!(parse_size("10M"), Ok(10 << 20));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("2 GiB"), Ok(2 << 30));
        assert!(parse_size("ten").is_err());
        assert!(parse_size("10X").is_err());
        assert!(parse_size("").is_err());
    }
}
