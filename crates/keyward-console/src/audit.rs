//! The tenant's audit log: every key and member change, newest first.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use keyward_core::clock::Timestamp;
use maud::html;
use serde::Deserialize;
use serde_json::Value;

use super::access::TenantAccess;
use super::session::SignedIn;
use super::ui::{self, Chrome, Section};
use super::ConsoleError;
use crate::ConsoleState;
use keyward_manage::ManageError;
use keyward_wire::AuditPage;

#[derive(Debug, Default, Deserialize)]
pub struct AuditQuery {
    cursor: Option<String>,
}

/// Details as `key: value` pairs; arrays joined.
pub(crate) fn details(v: &Value) -> String {
    match v {
        Value::Object(m) => m
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}: {s}"),
                Value::Array(a) => format!(
                    "{k}: {}",
                    a.iter()
                        .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                other => format!("{k}: {other}"),
            })
            .collect::<Vec<_>>()
            .join(" · "),
        other => other.to_string(),
    }
}

pub async fn list(
    State(state): State<ConsoleState>,
    signed: SignedIn,
    Path(tid): Path<String>,
    Query(q): Query<AuditQuery>,
) -> Result<Response, ConsoleError> {
    let access = TenantAccess::load(&state, &signed, &tid).await?;
    if !access.can_read_audit() {
        return Err(access.refuse("read the audit log"));
    }
    let cursor = q.cursor.filter(|c| !c.is_empty());
    let query = keyward_manage::AuditQuery {
        tenant_id: Some(access.tenant.id.clone()),
        paging: keyward_views::paging(Some(50), cursor.as_deref()),
    };
    let page = match state.manage.list_audit(&access.actor(&signed), query).await {
        Ok(page) => {
            let (data, next_cursor, has_more) =
                keyward_views::page_parts(&page, keyward_views::audit_event_view);
            AuditPage {
                data,
                next_cursor,
                has_more,
            }
        }
        Err(ManageError::InvalidCursor | ManageError::Validation(_)) => {
            return Err(ConsoleError::BadRequest(
                "The page link is not valid.".into(),
            ))
        }
        Err(e) => return Err(e.into()),
    };
    let mut actors: HashMap<String, String> = HashMap::new();
    for e in &page.data {
        if !actors.contains_key(&e.actor) {
            let label = super::keys::actor_label(&state, &e.actor).await;
            actors.insert(e.actor.clone(), label);
        }
    }
    let base = format!("/console/t/{}/audit", access.tenant.id);
    let content = html! {
        div.page-header {
            div {
                h1 { "Audit log" }
                p.lead { "Every change to " (access.tenant.name) "'s keys and members: who, what, when and from where. Append-only." }
            }
        }
        @if page.data.is_empty() {
            div.empty-state {
                h2 { "Nothing recorded yet" }
                p { "Creating, changing, rotating or revoking a key, and inviting members, will show here." }
            }
        } @else {
            div.table-wrap {
                table.table {
                    thead { tr {
                        th scope="col" { "When" }
                        th scope="col" { "Who" }
                        th scope="col" { "Action" }
                        th scope="col" { "Target" }
                        th scope="col" { "Details" }
                        th scope="col" { "IP" }
                    } }
                    tbody {
                        @for e in &page.data {
                            tr {
                                td.nowrap { (ui::time(Timestamp::parse_rfc3339(&e.at).map_or(0, |t| t.0))) }
                                td { (actors.get(&e.actor).map_or(e.actor.as_str(), String::as_str)) }
                                td { code { (e.action) } }
                                td {
                                    @if e.target.starts_with("key_") {
                                        a href={ "/console/t/" (access.tenant.id) "/keys/" (e.target) } { code { (e.target) } }
                                    } @else {
                                        code { (e.target) }
                                    }
                                }
                                td.details-cell {
                                    @let d = details(&e.details);
                                    @if d.is_empty() { span.muted { "—" } } @else { (d) }
                                }
                                td { @match &e.actor_ip { Some(ip) => code { (ip) }, None => span.muted { "—" } } }
                            }
                        }
                    }
                }
            }
            nav.pagination aria-label="Pages" {
                @if cursor.is_some() { a.btn href=(base) { "← Newest" } }
                @if let Some(next) = &page.next_cursor {
                    a.btn href={ (base) "?cursor=" (ui::url_encode(next)) } rel="next" { "Older →" }
                }
            }
        }
    };
    let chrome = Chrome {
        signed: &signed,
        access: Some(&access),
        section: Section::Audit,
    };
    Ok(ui::html(
        StatusCode::OK,
        ui::page("Audit log", &chrome, content),
    ))
}
