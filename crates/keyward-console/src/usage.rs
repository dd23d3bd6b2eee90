//! Usage in the console: the usage section of a key's page (a chart of its
//! requests by outcome, its totals and its client addresses) and a
//! tenant's usage page (by key and by tenant header value).
//!
//! Both read through the management service with the user's actor, like
//! every other page ([`ManageService::key_usage`],
//! [`ManageService::tenant_usage`], [`ManageService::key_addresses`]), so
//! they show what the usage API answers. The ranges on offer are the four
//! of [`Span`], chosen with plain links (`?range=24h`): no script.
//!
//! [`ManageService::key_usage`]: keyward_manage::ManageService::key_usage
//! [`ManageService::tenant_usage`]: keyward_manage::ManageService::tenant_usage
//! [`ManageService::key_addresses`]: keyward_manage::ManageService::key_addresses

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use keyward_core::clock::Timestamp;
use keyward_manage::{
    Actor, GroupPaging, KeyAddresses, KeyUsage, ManageError, UsageCounts, UsageWindow,
};
use keyward_store::{Granularity, GroupBy, OutcomeClass};
use maud::{html, Markup};
use serde::Deserialize;

use super::access::TenantAccess;
use super::chart::{self, Bar, Chart, Layer};
use super::session::SignedIn;
use super::ui::{self, Chrome, Section};
use super::ConsoleError;
use crate::ConsoleState;

/// The ranges a usage page offers, each with its bucket size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Span {
    /// The last hour, by minute.
    Hour,
    /// The last 24 hours, by hour.
    #[default]
    Day,
    /// The last 7 days, by hour.
    Week,
    /// The last 30 days, by day.
    Month,
}

impl Span {
    pub const ALL: [Span; 4] = [Span::Hour, Span::Day, Span::Week, Span::Month];

    /// The range named by `?range=` (none: the default), or `None` for a
    /// name not on offer.
    pub fn parse(s: Option<&str>) -> Option<Span> {
        match s {
            None | Some("") => Some(Span::default()),
            Some("1h") => Some(Span::Hour),
            Some("24h") => Some(Span::Day),
            Some("7d") => Some(Span::Week),
            Some("30d") => Some(Span::Month),
            Some(_) => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Span::Hour => "1h",
            Span::Day => "24h",
            Span::Week => "7d",
            Span::Month => "30d",
        }
    }

    /// "Last hour".
    pub fn label(self) -> &'static str {
        match self {
            Span::Hour => "Last hour",
            Span::Day => "Last 24 hours",
            Span::Week => "Last 7 days",
            Span::Month => "Last 30 days",
        }
    }

    pub fn granularity(self) -> Granularity {
        match self {
            Span::Hour => Granularity::Minute,
            Span::Day | Span::Week => Granularity::Hour,
            Span::Month => Granularity::Day,
        }
    }

    /// How many buckets the range holds (the current one included).
    pub fn buckets(self) -> i64 {
        match self {
            Span::Hour => 60,
            Span::Day => 24,
            Span::Week => 168,
            Span::Month => 30,
        }
    }

    /// The window at `now`: exactly [`Span::buckets`] whole buckets, the
    /// last the one holding `now`.
    pub fn window(self, now: Timestamp) -> UsageWindow {
        let g = self.granularity();
        let current = g.floor(now.0);
        UsageWindow {
            from: Some(Timestamp(current - (self.buckets() - 1) * g.millis())),
            to: Some(Timestamp(current + g.millis())),
            granularity: Some(g),
        }
    }

    /// The time axis' label under the bucket starting at `ms`, for every
    /// few buckets (10 minutes, 4 hours, midnights, 5 days).
    fn tick(self, ms: i64) -> Option<String> {
        let iso = Timestamp(ms).to_rfc3339();
        let (minute, hour) = (number(&iso, 14..16), number(&iso, 11..13));
        let hh_mm = || iso.get(11..16).unwrap_or("").to_owned();
        match self {
            Span::Hour => (minute % 10 == 0).then(hh_mm),
            Span::Day => (hour % 4 == 0).then(hh_mm),
            Span::Week => (hour == 0).then(|| month_day(&iso)),
            Span::Month => (ms.div_euclid(86_400_000) % 5 == 0).then(|| month_day(&iso)),
        }
    }

    /// The bucket starting at `ms` in full: `2026-05-03 14:05 UTC`, or
    /// `2026-05-03` for days.
    fn bucket_label(self, ms: i64) -> String {
        let iso = Timestamp(ms).to_rfc3339();
        match self.granularity() {
            Granularity::Day => iso.get(..10).unwrap_or("").to_owned(),
            _ => format!(
                "{} {} UTC",
                iso.get(..10).unwrap_or(""),
                iso.get(11..16).unwrap_or("")
            ),
        }
    }

    fn per(self) -> &'static str {
        self.granularity().as_str()
    }
}

fn number(s: &str, at: std::ops::Range<usize>) -> u32 {
    s.get(at).and_then(|d| d.parse().ok()).unwrap_or(0)
}

/// `May 3` from an RFC 3339 time.
fn month_day(iso: &str) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let m = number(iso, 5..7) as usize;
    let month = MONTHS.get(m.wrapping_sub(1)).copied().unwrap_or("?");
    format!("{month} {}", number(iso, 8..10))
}

/// The stack of every bar: the four outcome classes.
const LAYERS: [Layer; 4] = [
    Layer {
        label: "Successes",
        class: "success",
    },
    Layer {
        label: "Denials",
        class: "denied",
    },
    Layer {
        label: "Upstream 4xx",
        class: "client",
    },
    Layer {
        label: "Errors",
        class: "error",
    },
];

/// `12.5 %`, to one decimal (`—` without requests).
pub fn percent(c: &UsageCounts) -> String {
    if c.requests == 0 {
        "—".into()
    } else {
        format!("{:.1} %", c.error_rate() * 100.0)
    }
}

/// `3.2 ms` (`—` without requests).
pub fn latency(c: &UsageCounts) -> String {
    match c.mean_latency_ms() {
        Some(ms) if ms >= 100.0 => format!("{ms:.0} ms"),
        Some(ms) => format!("{ms:.1} ms"),
        None => "—".into(),
    }
}

/// Codes of one class and their counts, most first.
fn codes_of(c: &UsageCounts, class: OutcomeClass) -> Vec<(&str, i64)> {
    let mut v: Vec<(&str, i64)> = c
        .outcomes
        .iter()
        .filter(|(code, n)| **n > 0 && c.class_of(code) == Some(class))
        .map(|(code, n)| (code.as_str(), *n))
        .collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    v
}

/// The range links, the current one marked.
fn range_selector(base: &str, current: Span, anchor: &str) -> Markup {
    html! {
        nav.range-selector aria-label="Time range" {
            ul {
                @for s in Span::ALL {
                    li {
                        a href={ (base) "?range=" (s.as_str()) (anchor) }
                            aria-current=[(s == current).then_some("page")] { (s.label()) }
                    }
                }
            }
        }
    }
}

/// The totals as tiles: requests, error rate, denials by code, credits,
/// mean latency.
fn totals(c: &UsageCounts) -> Markup {
    let denials = codes_of(c, OutcomeClass::Denied);
    let errors = codes_of(c, OutcomeClass::Error);
    html! {
        dl.stats {
            div.stat #usage-requests { dt { "Requests" } dd { (chart::grouped(c.requests)) } }
            div.stat #usage-error-rate {
                dt { "Error rate" }
                dd { (percent(c)) }
                @if c.errors > 0 {
                    dd.stat-detail { (chart::grouped(c.errors)) " errors"
                        @for (code, n) in &errors { br; code { (code) } " " (chart::grouped(*n)) } }
                }
            }
            div.stat #usage-denials {
                dt { "Denials" }
                dd { (chart::grouped(c.denied)) }
                @if !denials.is_empty() {
                    dd.stat-detail {
                        ul.code-counts {
                            @for (code, n) in &denials { li { code { (code) } " " span.count-of { (chart::grouped(*n)) } } }
                        }
                    }
                }
            }
            div.stat #usage-credits { dt { "Credits spent" } dd { (chart::grouped(c.credits)) } }
            div.stat #usage-latency { dt { "Mean latency" } dd { (latency(c)) } }
        }
    }
}

/// The usage section of a key's page, over `span`.
pub async fn key_section(
    state: &ConsoleState,
    actor: &Actor,
    tenant_id: &str,
    key_id: &str,
    span: Span,
) -> Markup {
    let now = state.clock.now();
    let base = format!("/console/t/{tenant_id}/keys/{key_id}");
    let usage = state
        .manage
        .key_usage(actor, key_id, span.window(now))
        .await;
    let ips = state
        .manage
        .key_addresses(actor, key_id, keyward_views::paging(Some(50), None))
        .await;
    html! {
        section.card.usage #usage aria-labelledby="usage-title" {
            div.section-head {
                h2 #usage-title { "Usage" }
                (range_selector(&base, span, "#usage"))
            }
            @match (&usage, &ips) {
                (Ok(u), Ok(a)) => (key_usage_body(u, a, span, now.0)),
                (Err(e), _) | (_, Err(e)) => (unreadable(e)),
            }
            p.section-foot {
                a href={ "/console/t/" (tenant_id) "/usage?range=" (span.as_str()) } { "Usage of every key of this tenant" }
            }
        }
    }
}

fn unreadable(e: &ManageError) -> Markup {
    html! {
        div.alert.alert-error role="alert" {
            p { "Usage could not be read just now (" (e.to_string()) "). Reload the page in a moment." }
        }
    }
}

fn key_usage_body(u: &KeyUsage, a: &KeyAddresses, span: Span, now: i64) -> Markup {
    let t = &u.totals;
    let bars: Vec<Bar> = u
        .points
        .iter()
        .map(|(at, c)| Bar {
            label: span.bucket_label(*at),
            tick: span.tick(*at),
            values: vec![c.successes, c.denied, c.client_errors, c.errors],
        })
        .collect();
    let title = format!(
        "Requests per {} by outcome, {}",
        span.per(),
        span.label().to_lowercase()
    );
    html! {
        @if t.requests == 0 && a.items.is_empty() {
            div.empty-state.usage-empty {
                h3 { "No usage yet" }
                p { "Requests made with this key, through the gateway or checked with " code { "POST /v1/keys/verify" } ", show here: how many, with what outcome, and from which addresses. They appear within seconds." }
            }
        } @else {
            @if t.requests == 0 {
                p.notice { "No requests in the " (span.label().to_lowercase()) ". Choose a longer range above." }
            } @else {
                (totals(t))
                (chart::render(&Chart {
                    id: "usage-chart",
                    title: &title,
                    time_axis: "Time (UTC)",
                    count_axis: "Requests",
                    layers: &LAYERS,
                    bars: &bars,
                }))
            }
            (addresses(a, now))
        }
    }
}

/// The key's client addresses, most recently seen first; unfamiliar ones
/// carry a "new" badge (text, not a colour).
fn addresses(a: &KeyAddresses, now: i64) -> Markup {
    let unfamiliar = a.items.iter().filter(|s| s.unfamiliar).count();
    html! {
        h3 #addresses-title { "Client addresses" }
        p.hint {
            "The addresses this key was used from, most recent first. "
            span.badge.badge-new { "new" } " marks an address first seen in the last 24 hours on a key older than that: check it is yours."
        }
        @if unfamiliar > 0 {
            p.alert.alert-info role="status" { (unfamiliar) " unfamiliar " @if unfamiliar == 1 { "address" } @else { "addresses" } " in the list." }
        }
        @if a.items.is_empty() {
            p.muted { "No client address recorded yet." }
        } @else {
            div.table-wrap {
                table.table.ips-table aria-labelledby="addresses-title" {
                    thead { tr {
                        th scope="col" { "Address" }
                        th scope="col" { "First seen" }
                        th scope="col" { "Last seen" }
                        th.num scope="col" { "Requests" }
                    } }
                    tbody {
                        @for s in &a.items {
                            tr.unfamiliar[s.unfamiliar] {
                                td {
                                    code.ip { (s.ip.ip) }
                                    @if s.unfamiliar { " " span.badge.badge-new title="First seen in the last 24 hours" { "new" } }
                                }
                                td.nowrap { (ui::time(s.ip.first_seen)) }
                                td.nowrap { (ui::ago(s.ip.last_seen, now)) }
                                td.num { (chart::grouped(s.ip.requests)) }
                            }
                        }
                    }
                }
            }
            @if a.next.is_some() {
                p.hint { "The 50 most recently seen addresses are shown; the usage API (" code { "GET /v1/keys/{id}/ips" } ") pages through the rest." }
            }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct UsageQuery {
    range: Option<String>,
    keys_after: Option<String>,
    headers_after: Option<String>,
}

/// How many groups a table of the tenant page shows at a time.
const GROUPS: u32 = 50;

/// `/console/t/{tid}/usage`: the tenant's usage by key and by tenant
/// header value, over a range.
pub async fn tenant_page(
    State(state): State<ConsoleState>,
    signed: SignedIn,
    Path(tid): Path<String>,
    Query(q): Query<UsageQuery>,
) -> Result<Response, ConsoleError> {
    let access = TenantAccess::load(&state, &signed, &tid).await?;
    let actor = access.actor(&signed);
    let span = Span::parse(q.range.as_deref()).ok_or_else(|| {
        ConsoleError::BadRequest(
            "This range is not on offer: choose the last hour, 24 hours, 7 days or 30 days.".into(),
        )
    })?;
    let window = span.window(state.clock.now());
    let group = |by, after: Option<String>, limit| {
        let state = state.clone();
        let actor = actor.clone();
        let tid = access.tenant.id.clone();
        async move {
            let paging = GroupPaging {
                limit: Some(limit),
                after: after.filter(|a| !a.is_empty()),
            };
            state
                .manage
                .tenant_usage(&actor, &tid, window, by, paging)
                .await
        }
    };
    let bad_link = |e: ManageError| match e {
        ManageError::Validation(_) | ManageError::InvalidCursor => {
            ConsoleError::BadRequest("The page link is not valid.".into())
        }
        other => other.into(),
    };
    let by_key = group(GroupBy::Key, q.keys_after.clone(), GROUPS)
        .await
        .map_err(bad_link)?;
    let by_header = group(GroupBy::TenantHeader, q.headers_after.clone(), GROUPS)
        .await
        .map_err(bad_link)?;
    // Outcomes are few (a fixed set of codes): one page holds them all.
    let by_outcome = group(GroupBy::Outcome, None, 100).await.map_err(bad_link)?;
    let mut all = UsageCounts::default();
    for (code, c) in &by_outcome.groups {
        all.add(
            code,
            c.class_of(code).unwrap_or(OutcomeClass::Denied),
            c.requests,
            c.credits,
            c.latency_us,
        );
    }
    let mut names: HashMap<String, String> = HashMap::new();
    for (kid, _) in &by_key.groups {
        if let Ok(k) = state.manage.get_key(&actor, kid).await {
            names.insert(kid.clone(), k.name);
        }
    }
    let base = format!("/console/t/{}/usage", access.tenant.id);
    let next = |param: &str, after: &str| {
        format!(
            "{base}?range={}&{param}={}",
            span.as_str(),
            ui::url_encode(after)
        )
    };
    let key_base = format!("/console/t/{}/keys", access.tenant.id);
    let content = html! {
        div.page-header {
            div {
                h1 { "Usage" }
                p.lead { "How " strong { (access.tenant.name) } "'s API keys were used: requests by key and by tenant header value, with their outcomes. Times are UTC." }
            }
        }
        (range_selector(&base, span, ""))
        @if all.requests == 0 && by_key.groups.is_empty() {
            div.empty-state {
                h2 { "No usage in the " (span.label().to_lowercase()) }
                p { "Requests made with this tenant's keys, through the gateway or checked with " code { "POST /v1/keys/verify" } ", show here within seconds. Choose a longer range, or " a href=(key_base) { "see the keys" } "." }
            }
        } @else {
            section.card aria-labelledby="tenant-totals-title" {
                h2 #tenant-totals-title { "All keys, " (span.label().to_lowercase()) }
                (totals(&all))
            }
            section aria-labelledby="by-key-title" {
                h2 #by-key-title.section-title { "By key" }
                (group_table("by-key", "Key", &by_key.groups, |kid| html! {
                    a.strong href={ (key_base) "/" (kid) } title=(kid) { (names.get(kid).map_or(kid, String::as_str)) }
                }))
                @if let Some(after) = &by_key.next {
                    nav.pagination aria-label="Pages of keys" {
                        @if q.keys_after.is_some() { a.btn href={ (base) "?range=" (span.as_str()) } { "← First page" } }
                        a.btn href=(next("keys_after", after)) rel="next" { "More keys →" }
                    }
                }
            }
            section aria-labelledby="by-header-title" {
                h2 #by-header-title.section-title { "By tenant header value" }
                p.hint { "The tenant header's value each request carried (for keys that act for sub-tenants); " em { "(none)" } " is requests without one." }
                (group_table("by-header", "Tenant header value", &by_header.groups, |v| html! {
                    @if v.is_empty() { em.muted { "(none)" } } @else { code { (v) } }
                }))
                @if let Some(after) = &by_header.next {
                    nav.pagination aria-label="Pages of tenant header values" {
                        a.btn href=(next("headers_after", after)) rel="next" { "More values →" }
                    }
                }
            }
        }
    };
    let chrome = Chrome {
        signed: &signed,
        access: Some(&access),
        section: Section::Usage,
    };
    Ok(ui::html(
        StatusCode::OK,
        ui::page("Usage", &chrome, content),
    ))
}

/// A table of groups: the group's cell, then its counts.
fn group_table(
    id: &str,
    heading: &str,
    groups: &[(String, UsageCounts)],
    cell: impl Fn(&str) -> Markup,
) -> Markup {
    html! {
        @if groups.is_empty() {
            p.muted { "Nothing in this range." }
        } @else {
            div.table-wrap {
                table.table.usage-table #(id) {
                    thead { tr {
                        th scope="col" { (heading) }
                        th.num scope="col" { "Requests" }
                        th.num scope="col" { "Successes" }
                        th.num scope="col" { "Denials" }
                        th.num scope="col" { "Upstream 4xx" }
                        th.num scope="col" { "Errors" }
                        th.num scope="col" { "Error rate" }
                        th.num scope="col" { "Credits" }
                        th.num scope="col" { "Mean latency" }
                    } }
                    tbody {
                        @for (g, c) in groups {
                            tr {
                                th scope="row" { (cell(g)) }
                                td.num { (chart::grouped(c.requests)) }
                                td.num { (chart::grouped(c.successes)) }
                                td.num { (chart::grouped(c.denied)) }
                                td.num { (chart::grouped(c.client_errors)) }
                                td.num { (chart::grouped(c.errors)) }
                                td.num { (percent(c)) }
                                td.num { (chart::grouped(c.credits)) }
                                td.num.nowrap { (latency(c)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_range_is_its_number_of_whole_buckets_ending_with_the_current_one() {
        let now = Timestamp(1_777_800_000_000 + 123_456); // not on a bucket edge
        for span in Span::ALL {
            let w = span.window(now);
            let g = span.granularity();
            let (from, to) = (w.from.map_or(0, |t| t.0), w.to.map_or(0, |t| t.0));
            assert_eq!(from % g.millis(), 0);
            assert_eq!((to - from) / g.millis(), span.buckets(), "{span:?}");
            assert!(from <= now.0 && now.0 < to);
            assert!(to - now.0 <= g.millis());
            assert_eq!(Span::parse(Some(span.as_str())), Some(span));
        }
        // On an edge, the bucket that starts now is the last.
        let edge = Timestamp(1_777_800_000_000 - 1_777_800_000_000 % 3_600_000);
        let w = Span::Day.window(edge);
        assert_eq!(w.to.map(|t| t.0), Some(edge.0 + 3_600_000));
        assert_eq!(Span::parse(None), Some(Span::Day));
        assert_eq!(Span::parse(Some("2h")), None);
    }

    #[test]
    fn ticks_fall_on_round_times() {
        let midnight = 1_777_766_400_000; // 2026-05-03T00:00:00Z
        assert_eq!(
            Span::Hour.tick(midnight + 10 * 60_000).as_deref(),
            Some("00:10")
        );
        assert_eq!(Span::Hour.tick(midnight + 11 * 60_000), None);
        assert_eq!(
            Span::Day.tick(midnight + 4 * 3_600_000).as_deref(),
            Some("04:00")
        );
        assert_eq!(Span::Day.tick(midnight + 5 * 3_600_000), None);
        assert_eq!(Span::Week.tick(midnight).as_deref(), Some("May 3"));
        assert_eq!(Span::Week.tick(midnight + 3_600_000), None);
        assert_eq!(
            Span::Hour.bucket_label(midnight + 60_000),
            "2026-05-03 00:01 UTC"
        );
        assert_eq!(Span::Month.bucket_label(midnight), "2026-05-03");
    }

    #[test]
    fn outcomes_keep_the_recorders_classes() {
        let mut c = UsageCounts::default();
        assert_eq!(percent(&c), "—");
        assert_eq!(latency(&c), "—");
        c.add("valid", OutcomeClass::Success, 7, 0, 7_000);
        c.add("upstream_5xx", OutcomeClass::Error, 1, 0, 1_000);
        c.add("rate_limited", OutcomeClass::Denied, 2, 0, 0);
        assert_eq!(percent(&c), "10.0 %");
        assert_eq!(latency(&c), "0.8 ms");
        assert_eq!(
            codes_of(&c, OutcomeClass::Denied),
            vec![("rate_limited", 2)]
        );
        assert_eq!(codes_of(&c, OutcomeClass::Error), vec![("upstream_5xx", 1)]);
        assert!(codes_of(&c, OutcomeClass::ClientError).is_empty());
    }
}
