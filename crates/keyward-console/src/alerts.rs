//! Alerts in the console: the alerts section of a key's page
//! ([`key_section`]) and a tenant's alerts page (open or all, by kind).
//!
//! Alerts are raised by the server's checks (new client addresses, traffic
//! spikes, error rates, dormant and expiring keys, low credits, failing
//! webhook endpoints), never by a page; the console only lists them,
//! through the management service with the user's actor
//! ([`ManageService::list_alerts`]), as the API does.
//!
//! [`ManageService::list_alerts`]: keyward_manage::ManageService::list_alerts

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use keyward_manage::{Actor, AlertQuery, ManageError};
use keyward_store::Alert;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;

use super::access::TenantAccess;
use super::session::SignedIn;
use super::ui::{self, Chrome, Section};
use super::ConsoleError;
use crate::ConsoleState;

/// Alerts per page.
const PAGE_SIZE: u32 = 50;
/// Alerts shown on a key's page.
const KEY_SECTION_SIZE: u32 = 10;

/// The kinds of alert, with their names on the page.
pub(crate) const KINDS: &[(&str, &str)] = &[
    ("new_ip", "New client address"),
    ("traffic_spike", "Traffic spike"),
    ("error_rate", "High error rate"),
    ("key_dormant", "Dormant key"),
    ("key_expiring", "Key expiring"),
    ("credits_low", "Credits low"),
    ("endpoint_failing", "Webhook endpoint failing"),
];

/// A kind's name on the page; an unknown kind as it is.
pub(crate) fn kind_label(kind: &str) -> &str {
    KINDS
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or(kind, |(_, label)| label)
}

fn text<'a>(d: &'a Value, name: &str) -> &'a str {
    d.get(name).and_then(Value::as_str).unwrap_or("?")
}

fn number(d: &Value, name: &str) -> String {
    match d.get(name) {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        _ => "?".to_owned(),
    }
}

/// `2026-05-03T14:22:05Z` as `2026-05-03 14:22 UTC`; anything else as it is.
fn when(rfc3339: &str) -> String {
    match (rfc3339.get(..10), rfc3339.get(11..16)) {
        (Some(day), Some(hm)) if rfc3339.len() >= 16 => format!("{day} {hm} UTC"),
        _ => rfc3339.to_owned(),
    }
}

/// What an alert's details say, in a sentence (the kinds' fields are the
/// alert checks' in keyward-manage); another kind's as `name: value` pairs.
pub(crate) fn summary(kind: &str, d: &Value) -> String {
    match kind {
        "new_ip" => format!(
            "Used from {}, an address not seen on this key before (first seen {}).",
            text(d, "ip"),
            when(text(d, "first_seen"))
        ),
        "traffic_spike" => format!(
            "{} requests in the minute from {}, against about {} a minute before.",
            number(d, "requests"),
            when(text(d, "minute")),
            number(d, "baseline_per_minute")
        ),
        "error_rate" => {
            let rate = d
                .get("error_rate")
                .and_then(Value::as_f64)
                .map_or_else(|| "?".to_owned(), |r| format!("{:.0} %", r * 100.0));
            format!(
                "{} of {} requests failed ({rate}) in {} minutes.",
                number(d, "errors"),
                number(d, "requests"),
                number(d, "window_minutes")
            )
        }
        "key_dormant" => {
            let disabled = d.get("disabled").and_then(Value::as_bool) == Some(true);
            format!(
                "Unused for {} days (last used or created {}).{}",
                number(d, "dormant_days"),
                when(text(d, "last_used_or_created")),
                if disabled { " It was disabled." } else { "" }
            )
        }
        "key_expiring" => format!("Expires {}.", when(text(d, "expires_at"))),
        "credits_low" => format!(
            "Credit balance {}, under the threshold of {}.",
            number(d, "balance"),
            number(d, "threshold")
        ),
        "endpoint_failing" => format!(
            "A {} delivery to {} gave up after {} attempts.",
            text(d, "event_type"),
            text(d, "url"),
            number(d, "attempts")
        ),
        _ => super::audit::details(d),
    }
}

/// Open, or resolved at a time.
fn state_badge(a: &Alert) -> Markup {
    html! {
        @match a.resolved_at {
            None => span class="badge badge-status badge-alert-open" { "open" },
            Some(at) => { span class="badge badge-status badge-alert-resolved" { "resolved" } " " span.hint { (ui::time(at)) } },
        }
    }
}

/// The alerts section of a key's page: its latest alerts, open or not.
pub async fn key_section(
    state: &ConsoleState,
    actor: &Actor,
    tenant_id: &str,
    key_id: &str,
) -> Markup {
    let q = AlertQuery {
        tenant_id: Some(tenant_id.to_owned()),
        key_id: Some(key_id.to_owned()),
        kind: None,
        open: false,
        paging: keyward_views::paging(Some(KEY_SECTION_SIZE), None),
    };
    let page = state.manage.list_alerts(actor, q).await;
    let now = state.clock.now().0;
    html! {
        section.card #key-alerts aria-labelledby="key-alerts-title" {
            h2 #key-alerts-title { "Alerts" }
            @match &page {
                Err(e) => div.alert.alert-error role="alert" {
                    p { "Alerts could not be read just now (" (e.to_string()) "). Reload the page in a moment." }
                },
                Ok(p) if p.items.is_empty() => p.muted #no-key-alerts {
                    "No alerts for this key. keyward raises one when the key is used from a new address, its traffic spikes, most of its requests fail, or it is about to expire or unused for long."
                },
                Ok(p) => {
                    div.table-wrap {
                        table.table.alerts-table {
                            caption.visually-hidden { "Alerts of this key, newest first" }
                            thead { tr {
                                th scope="col" { "Alert" }
                                th scope="col" { "Raised" }
                                th scope="col" { "Details" }
                                th scope="col" { "State" }
                            } }
                            tbody {
                                @for (_, a) in &p.items {
                                    tr data-kind=(a.kind) {
                                        td { (kind_label(&a.kind)) }
                                        td.nowrap { (ui::ago(a.at, now)) }
                                        td.details-cell { (summary(&a.kind, &a.details)) }
                                        td.nowrap { (state_badge(a)) }
                                    }
                                }
                            }
                        }
                    }
                    @if p.next.is_some() {
                        p.hint { "The " (KEY_SECTION_SIZE) " latest are shown." }
                    }
                },
            }
            p.section-foot {
                a href={ "/console/t/" (tenant_id) "/alerts?status=all" } { "Every alert of this tenant" }
            }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct AlertsQuery {
    /// `open` (the default) or `all`.
    status: Option<String>,
    kind: Option<String>,
    cursor: Option<String>,
}

/// `/console/t/{tid}/alerts`: the tenant's alerts, open or all, by kind.
pub async fn tenant_page(
    State(state): State<ConsoleState>,
    signed: SignedIn,
    Path(tid): Path<String>,
    Query(q): Query<AlertsQuery>,
) -> Result<Response, ConsoleError> {
    let access = TenantAccess::load(&state, &signed, &tid).await?;
    let actor = access.actor(&signed);
    let open = match q.status.as_deref() {
        None | Some("" | "open") => true,
        Some("all") => false,
        Some(_) => {
            return Err(ConsoleError::BadRequest(
                "Show open alerts or all alerts: status=open or status=all.".into(),
            ))
        }
    };
    let kind = q.kind.filter(|k| !k.is_empty());
    if let Some(k) = &kind {
        if !KINDS.iter().any(|(known, _)| known == k) {
            return Err(ConsoleError::BadRequest(
                "This kind of alert does not exist. Choose one from the list.".into(),
            ));
        }
    }
    let cursor = q.cursor.filter(|c| !c.is_empty());
    let query = AlertQuery {
        tenant_id: Some(access.tenant.id.clone()),
        key_id: None,
        kind: kind.clone(),
        open,
        paging: keyward_views::paging(Some(PAGE_SIZE), cursor.as_deref()),
    };
    let page = match state.manage.list_alerts(&actor, query).await {
        Ok(p) => p,
        Err(ManageError::InvalidCursor | ManageError::Validation(_)) => {
            return Err(ConsoleError::BadRequest(
                "The page link is not valid.".into(),
            ))
        }
        Err(e) => return Err(e.into()),
    };
    let (alerts, next, _) = keyward_views::page_parts(&page, Alert::clone);
    let mut names: HashMap<String, String> = HashMap::new();
    for a in &alerts {
        if let Some(kid) = &a.key_id {
            if !names.contains_key(kid) {
                if let Ok(k) = state.manage.get_key(&actor, kid).await {
                    names.insert(kid.clone(), k.name);
                }
            }
        }
    }
    let tid = &access.tenant.id;
    let base = format!("/console/t/{tid}/alerts");
    let filters = |cursor: Option<&str>| {
        let mut parts = vec![format!("status={}", if open { "open" } else { "all" })];
        if let Some(k) = &kind {
            parts.push(format!("kind={}", ui::url_encode(k)));
        }
        if let Some(c) = cursor {
            parts.push(format!("cursor={}", ui::url_encode(c)));
        }
        format!("{base}?{}", parts.join("&"))
    };
    let now = state.clock.now().0;
    let content = html! {
        div.page-header {
            div {
                h1 { "Alerts" }
                p.lead { "What keyward noticed about " strong { (access.tenant.name) } "'s keys and webhooks: new client addresses, traffic spikes, high error rates, dormant and expiring keys, low credits and failing endpoints. Each is also sent as an event to your webhooks." }
            }
        }
        form.filters method="get" action=(base) aria-label="Filter alerts" {
            div.field {
                label for="filter-status" { "Show" }
                select #filter-status name="status" {
                    option value="open" selected[open] { "Open alerts" }
                    option value="all" selected[!open] { "All alerts" }
                }
            }
            div.field {
                label for="filter-kind" { "Kind" }
                select #filter-kind name="kind" {
                    option value="" selected[kind.is_none()] { "All kinds" }
                    @for (k, label) in KINDS {
                        option value=(k) selected[kind.as_deref() == Some(*k)] { (label) }
                    }
                }
            }
            div.field.field-submit { button.btn type="submit" { "Apply filters" } }
        }
        @if alerts.is_empty() {
            div.empty-state #no-alerts {
                h2 { @if open { "No open alerts" } @else { "No alerts" } }
                p {
                    @if open { "Nothing needs your attention. " a href={ (base) "?status=all" } { "See every alert" } ", resolved ones included." }
                    @else { "keyward raises an alert when it notices something about a key, the credits or a webhook endpoint; none so far." }
                }
            }
        } @else {
            div.table-wrap {
                table.table.alerts-table #alerts {
                    caption.visually-hidden { "Alerts of " (access.tenant.name) ", newest first" }
                    thead { tr {
                        th scope="col" { "Alert" }
                        th scope="col" { "Raised" }
                        th scope="col" { "About" }
                        th scope="col" { "Details" }
                        th scope="col" { "State" }
                    } }
                    tbody {
                        @for a in &alerts {
                            tr data-kind=(a.kind) {
                                td { (kind_label(&a.kind)) }
                                td.nowrap { (ui::ago(a.at, now)) }
                                td {
                                    @if let Some(kid) = &a.key_id {
                                        a href={ "/console/t/" (tid) "/keys/" (kid) } { (names.get(kid).map_or(kid.as_str(), String::as_str)) }
                                    } @else if let Some(eid) = a.details.get("endpoint_id").and_then(Value::as_str) {
                                        a href={ "/console/t/" (tid) "/webhooks/" (ui::url_encode(eid)) } { "Webhook endpoint" }
                                    } @else {
                                        span.muted { "The tenant" }
                                    }
                                }
                                td.details-cell { (summary(&a.kind, &a.details)) }
                                td.nowrap { (state_badge(a)) }
                            }
                        }
                    }
                }
            }
            nav.pagination aria-label="Pages" {
                @if cursor.is_some() { a.btn href=(filters(None)) { "← Newest" } }
                @if let Some(next) = &next {
                    a.btn href=(filters(Some(next))) rel="next" { "Older →" }
                }
            }
        }
    };
    let chrome = Chrome {
        signed: &signed,
        access: Some(&access),
        section: Section::Alerts,
    };
    Ok(ui::html(
        StatusCode::OK,
        ui::page("Alerts", &chrome, content),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_kind_reads_as_a_sentence() {
        assert_eq!(
            summary(
                "new_ip",
                &json!({ "ip": "203.0.113.20", "first_seen": "2026-05-03T14:22:05.123Z" })
            ),
            "Used from 203.0.113.20, an address not seen on this key before (first seen 2026-05-03 14:22 UTC)."
        );
        assert_eq!(
            summary(
                "error_rate",
                &json!({ "requests": 40, "errors": 30, "error_rate": 0.75, "threshold": 0.5, "window_minutes": 5 })
            ),
            "30 of 40 requests failed (75 %) in 5 minutes."
        );
        assert_eq!(
            summary(
                "traffic_spike",
                &json!({ "minute": "2026-05-03T14:22:00Z", "requests": 300, "baseline_per_minute": 2.5 })
            ),
            "300 requests in the minute from 2026-05-03 14:22 UTC, against about 2.5 a minute before."
        );
        assert!(summary(
            "key_dormant",
            &json!({ "dormant_days": 90, "last_used_or_created": "2026-01-01T00:00:00Z", "disabled": true })
        )
        .ends_with("It was disabled."));
        assert_eq!(
            summary("credits_low", &json!({ "balance": 5, "threshold": 100 })),
            "Credit balance 5, under the threshold of 100."
        );
        assert_eq!(
            summary(
                "endpoint_failing",
                &json!({ "url": "https://h.example/x", "event_type": "key.revoked", "attempts": 8 })
            ),
            "A key.revoked delivery to https://h.example/x gave up after 8 attempts."
        );
    }

    #[test]
    fn missing_fields_and_unknown_kinds_do_not_break_the_page() {
        assert_eq!(summary("key_expiring", &json!({})), "Expires ?.");
        assert_eq!(summary("future_kind", &json!({ "a": "b" })), "a: b");
        assert_eq!(kind_label("future_kind"), "future_kind");
        assert_eq!(kind_label("new_ip"), "New client address");
    }
}
