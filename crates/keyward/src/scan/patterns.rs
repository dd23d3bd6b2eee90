//! `keyward regex --format regex|gitleaks|github`: this deployment's key
//! pattern for other secret scanners.
//!
//! Those scanners match by regular expression only; they cannot check the
//! CRC32 checksum, so they also report look-alikes that `keyward scan`
//! would not.

use std::io::Write;

use anyhow::{Context, Result};
use clap::ValueEnum;
use keyward_core::secret::{KeyFormat, KeyKind, OsEntropy, CHECKSUM_LEN, MIN_BODY_LEN};

/// `--format` of `keyward regex`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) enum PatternFormat {
    /// The plain regular expression (POSIX ERE / PCRE / RE2 compatible).
    #[default]
    Regex,
    /// A gitleaks rule (TOML `[[rules]]`) to add to a `.gitleaks.toml`.
    Gitleaks,
    /// A GitHub secret-scanning custom pattern: format, before and after
    /// boundaries, and a test string.
    Github,
}

/// The deployment's prefixes, sorted.
fn prefixes(format: &KeyFormat) -> Vec<String> {
    let mut all: Vec<String> = format
        .environments()
        .filter_map(|e| format.prefix_for(&KeyKind::Environment(e.to_owned())))
        .chain(format.prefix_for(&KeyKind::Root))
        .map(str::to_owned)
        .collect();
    all.sort_unstable();
    all
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// Prints the pattern of `format` as `what` asks.
pub(crate) fn print_patterns(
    out: &mut impl Write,
    format: &KeyFormat,
    what: PatternFormat,
) -> Result<()> {
    let prefixes = prefixes(format);
    match what {
        PatternFormat::Regex => writeln!(out, "{}", format.scan_regex())?,
        PatternFormat::Gitleaks => {
            let keywords: Vec<String> = prefixes.iter().map(|p| toml_string(p)).collect();
            writeln!(
                out,
                "# keyward API keys. gitleaks cannot check their CRC32 checksum: \
                 `keyward scan` reports only well-formed keys.\n\
                 [[rules]]\n\
                 id = \"keyward_api_key\"\n\
                 description = \"keyward API key\"\n\
                 regex = '''{}'''\n\
                 keywords = [{}]",
                format.scan_regex(),
                keywords.join(", ")
            )?;
        }
        PatternFormat::Github => {
            let env = format
                .environments()
                .next()
                .map(|e| KeyKind::Environment(e.to_owned()))
                .unwrap_or(KeyKind::Root);
            let sample = format
                .generate(&env, &OsEntropy)
                .context("cannot generate a sample key")?;
            let body = format!("[0-9A-Za-z]{{{},}}", MIN_BODY_LEN + CHECKSUM_LEN);
            writeln!(
                out,
                "# GitHub secret scanning custom pattern: Settings → Advanced Security →\n\
                 # Secret scanning → Custom patterns → New pattern (repository,\n\
                 # organization or enterprise). Paste each value in its field.\n\
                 Pattern name: keyward API key\n\
                 Secret format: (?:{}){}\n\
                 Before secret: \\A|[^0-9A-Za-z]\n\
                 After secret: \\z|[^0-9A-Za-z]\n\
                 Test string: {}\n\
                 # The test string is a key generated now in this format; no keyward\n\
                 # deployment issued it.",
                prefixes.join("|"),
                body,
                sample.expose()
            )?;
        }
    }
    Ok(())
}
