//! How client commands print answers: `--output table` (aligned text for
//! people, the default on a terminal), `json` (the API's body, pretty, the
//! default when stdout is not a terminal) or `id` (only ids, one a line).
//!
//! [`Render`] says how one answer looks as a table and which ids it has;
//! [`Row`] says how a list item looks as one line of a table. The answers of
//! `webhooks`, `events` and `alerts` implement them beside their commands,
//! with the helpers here.

use std::io::{IsTerminal, Write};

use anyhow::Result;
use clap::ValueEnum;
use keyward_wire::{
    AuditEventView, CreditsView, KeyView, KeyWithSecret, LedgerEntryView, Page, RefillSpec,
    TenantView, VerifyResult,
};
use serde::Serialize;

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Output {
    /// Aligned text for people.
    Table,
    /// The API's JSON body, pretty.
    Json,
    /// Only the id (of each item of a list), one a line.
    Id,
}

/// `--output` as given, else a table on a terminal and JSON otherwise.
pub(crate) fn resolve(given: Option<Output>) -> Output {
    given.unwrap_or_else(|| {
        if std::io::stdout().is_terminal() {
            Output::Table
        } else {
            Output::Json
        }
    })
}

/// An answer the CLI prints.
pub(crate) trait Render: Serialize {
    /// What `--output id` prints, one a line.
    fn ids(&self) -> Vec<String>;
    /// What `--output table` prints.
    fn table(&self) -> String;
}

/// One item of a list, as a line of a table.
pub(crate) trait Row {
    const HEADERS: &'static [&'static str];
    fn id(&self) -> String;
    fn cells(&self) -> Vec<String>;
}

/// Prints `answer` on stdout in the chosen format.
pub(crate) fn print(output: Output, answer: &impl Render) -> Result<()> {
    let text = match output {
        Output::Json => pretty(answer)?,
        Output::Id => answer.ids().join("\n"),
        Output::Table => answer.table(),
    };
    if text.is_empty() {
        return Ok(());
    }
    match writeln!(std::io::stdout().lock(), "{}", text.trim_end()) {
        // A reader that stopped early (`| head`) is not an error.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// Prints a page of a list; in a table or ids, where the next page starts
/// goes to stderr (JSON has it as `next_cursor`).
pub(crate) fn print_page<T: Row + Serialize>(output: Output, page: &Page<T>) -> Result<()> {
    print(output, page)?;
    if output != Output::Json {
        if let Some(c) = page.next_cursor.as_deref().filter(|_| page.has_more) {
            eprintln!("More: add --cursor {c} (or --all for every page).");
        }
    }
    Ok(())
}

/// Pretty JSON with members in alphabetical order (through `Value`), as
/// the CLI has always printed.
pub(crate) fn pretty(answer: &impl Serialize) -> serde_json::Result<String> {
    serde_json::to_string_pretty(&serde_json::to_value(answer)?)
}

impl<T: Row + Serialize> Render for Page<T> {
    fn ids(&self) -> Vec<String> {
        self.data.iter().map(Row::id).collect()
    }

    fn table(&self) -> String {
        columns(T::HEADERS, self.data.iter().map(Row::cells).collect())
    }
}

/// Aligned columns under a header line.
pub(crate) fn columns(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        let mut s = String::new();
        for (i, (cell, w)) in cells.into_iter().zip(&widths).enumerate() {
            s.push_str(&cell);
            if i < last {
                s.push_str(&" ".repeat(w - cell.chars().count() + 2));
            }
        }
        s.trim_end().to_owned()
    };
    let mut out = vec![line(headers.iter().map(|h| (*h).to_owned()).collect())];
    out.extend(rows.into_iter().map(line));
    out.join("\n")
}

/// `label  value` lines, aligned; empty values are left out.
pub(crate) fn fields(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    rows.iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(l, v)| format!("{l:width$}  {v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

pub(crate) fn opt(v: &Option<String>) -> String {
    v.clone().unwrap_or_default()
}

pub(crate) fn list(v: &[String]) -> String {
    v.join(", ")
}

fn refill(r: &Option<RefillSpec>) -> String {
    r.map(|r| {
        let every = serde_json::to_value(r.every).ok();
        let mode = serde_json::to_value(r.mode).ok();
        format!(
            "{} {} ({})",
            r.amount,
            every.as_ref().and_then(|v| v.as_str()).unwrap_or_default(),
            mode.as_ref().and_then(|v| v.as_str()).unwrap_or_default()
        )
    })
    .unwrap_or_default()
}

/// A key's status, with the end of a rotation's grace period.
fn status(k: &KeyView) -> String {
    match &k.grace_until {
        Some(until) if k.status == "active" => format!("active (retiring until {until})"),
        _ => k.status.clone(),
    }
}

impl Render for TenantView {
    fn ids(&self) -> Vec<String> {
        vec![self.id.clone()]
    }

    fn table(&self) -> String {
        fields(&[
            ("id", self.id.clone()),
            ("name", self.name.clone()),
            ("tier", opt(&self.tier)),
            (
                "grantable scopes",
                self.grantable_scopes
                    .as_deref()
                    .map(list)
                    .unwrap_or_default(),
            ),
            ("metadata", compact(&self.metadata)),
            ("created", self.created_at.clone()),
            ("updated", self.updated_at.clone()),
        ])
    }
}

impl Row for TenantView {
    const HEADERS: &'static [&'static str] = &["ID", "NAME", "TIER", "CREATED"];

    fn id(&self) -> String {
        self.id.clone()
    }

    fn cells(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.name.clone(),
            opt(&self.tier),
            self.created_at.clone(),
        ]
    }
}

pub(crate) fn compact(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => String::new(),
        serde_json::Value::Object(m) if m.is_empty() => String::new(),
        v => v.to_string(),
    }
}

impl Render for KeyView {
    fn ids(&self) -> Vec<String> {
        vec![self.id.clone()]
    }

    fn table(&self) -> String {
        fields(&key_fields(self))
    }
}

fn key_fields(k: &KeyView) -> Vec<(&'static str, String)> {
    vec![
        ("id", k.id.clone()),
        ("name", k.name.clone()),
        ("kind", k.kind.clone()),
        ("tenant", opt(&k.tenant_id)),
        ("environment", k.environment.clone()),
        ("status", status(k)),
        ("start", k.start.clone()),
        ("scopes", list(&k.scopes)),
        ("owner", opt(&k.owner)),
        ("tier", opt(&k.tier)),
        (
            "credit cap",
            k.credit_cap.map(|c| c.to_string()).unwrap_or_default(),
        ),
        (
            "rate limit",
            k.rate_limit
                .map(|r| format!("{} per {} s", r.limit, r.window_seconds))
                .unwrap_or_default(),
        ),
        ("allowed ips", list(&k.ip_allowlist)),
        ("sub-tenants", list(&k.sub_tenants)),
        ("expires", opt(&k.expires_at)),
        ("metadata", compact(&k.metadata)),
        ("created", format!("{} by {}", k.created_at, k.created_by)),
        ("last used", opt(&k.last_used_at)),
        ("revoked", opt(&k.revoked_at)),
        ("revoke reason", opt(&k.revoked_reason)),
        ("rotated from", opt(&k.rotated_from)),
        ("replaced by", opt(&k.replaced_by)),
    ]
}

impl Row for KeyView {
    const HEADERS: &'static [&'static str] =
        &["ID", "NAME", "TENANT", "ENV", "STATUS", "START", "SCOPES"];

    fn id(&self) -> String {
        self.id.clone()
    }

    fn cells(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.name.clone(),
            opt(&self.tenant_id),
            self.environment.clone(),
            status(self),
            self.start.clone(),
            list(&self.scopes),
        ]
    }
}

/// The secret first and labelled, then the key.
impl Render for KeyWithSecret {
    fn ids(&self) -> Vec<String> {
        vec![self.key.id.clone()]
    }

    fn table(&self) -> String {
        format!(
            "Secret: {}\n        (shown only this once: store it now; keyward keeps only its hash)\n\n{}",
            self.secret,
            fields(&key_fields(&self.key))
        )
    }
}

impl Render for VerifyResult {
    fn ids(&self) -> Vec<String> {
        self.key.iter().map(|k| k.key_id.clone()).collect()
    }

    fn table(&self) -> String {
        let key = self.key.as_ref();
        fields(&[
            ("valid", if self.valid { "yes" } else { "no" }.to_owned()),
            ("code", self.code.clone()),
            ("message", opt(&self.message)),
            (
                "missing scopes",
                self.missing_scopes.as_deref().map(list).unwrap_or_default(),
            ),
            ("key", key.map(|k| k.key_id.clone()).unwrap_or_default()),
            ("name", key.map(|k| k.key_name.clone()).unwrap_or_default()),
            (
                "tenant",
                key.and_then(|k| k.tenant_id.clone()).unwrap_or_default(),
            ),
            (
                "environment",
                key.map(|k| k.environment.clone()).unwrap_or_default(),
            ),
            ("scopes", key.map(|k| list(&k.scopes)).unwrap_or_default()),
            (
                "rate limit",
                self.ratelimit
                    .as_ref()
                    .map(|r| format!("{} of {} left ({})", r.remaining, r.limit, r.policy))
                    .unwrap_or_default(),
            ),
            (
                "credits",
                self.credits
                    .as_ref()
                    .map(|c| c.balance.to_string())
                    .unwrap_or_default(),
            ),
            (
                "retry after",
                self.retry_after
                    .map(|s| format!("{s} s"))
                    .unwrap_or_default(),
            ),
        ])
    }
}

impl Render for CreditsView {
    fn ids(&self) -> Vec<String> {
        vec![self.tenant_id.clone()]
    }

    fn table(&self) -> String {
        fields(&[
            ("tenant", self.tenant_id.clone()),
            ("balance", self.balance.to_string()),
            ("refill", refill(&self.refill)),
            ("refill source", opt(&self.refill_source)),
            ("last refill", opt(&self.last_refill_at)),
            ("next refill", opt(&self.next_refill_at)),
        ])
    }
}

impl Render for LedgerEntryView {
    fn ids(&self) -> Vec<String> {
        vec![self.id.clone()]
    }

    fn table(&self) -> String {
        fields(&[
            ("id", self.id.clone()),
            ("tenant", self.tenant_id.clone()),
            ("at", self.at.clone()),
            ("kind", self.kind.clone()),
            ("amount", self.amount.to_string()),
            ("balance after", self.balance_after.to_string()),
            ("key", opt(&self.key_id)),
            ("actor", opt(&self.actor)),
            ("reason", opt(&self.reason)),
        ])
    }
}

impl Row for LedgerEntryView {
    const HEADERS: &'static [&'static str] =
        &["AT", "KIND", "AMOUNT", "BALANCE", "KEY", "REASON", "ID"];

    fn id(&self) -> String {
        self.id.clone()
    }

    fn cells(&self) -> Vec<String> {
        vec![
            self.at.clone(),
            self.kind.clone(),
            self.amount.to_string(),
            self.balance_after.to_string(),
            opt(&self.key_id),
            opt(&self.reason),
            self.id.clone(),
        ]
    }
}

impl Row for AuditEventView {
    const HEADERS: &'static [&'static str] = &["AT", "ACTION", "TARGET", "ACTOR", "TENANT", "ID"];

    fn id(&self) -> String {
        self.id.clone()
    }

    fn cells(&self) -> Vec<String> {
        vec![
            self.at.clone(),
            self.action.clone(),
            self.target.clone(),
            self.actor.clone(),
            opt(&self.tenant_id),
            self.id.clone(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_fields_skip_empty_values() {
        let t = columns(
            &["ID", "NAME"],
            vec![
                vec!["a".into(), "x".into()],
                vec!["long-id".into(), "y".into()],
            ],
        );
        assert_eq!(t, "ID       NAME\na        x\nlong-id  y");
        let f = fields(&[
            ("id", "k".into()),
            ("owner", String::new()),
            ("environment", "live".into()),
        ]);
        assert_eq!(f, "id           k\nenvironment  live");
    }
}
