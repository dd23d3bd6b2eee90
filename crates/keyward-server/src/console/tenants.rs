//! The console's front door and the tenant list: operators see and create
//! every tenant; members see theirs.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::json;

use super::access::{operator_caller, TenantAccess};
use super::session::{SignedForm, SignedIn};
use super::ui::{self, Chrome, Errors, Section};
use super::ConsoleError;
use crate::api;
use crate::api::tenants::ListTenants;
use crate::api::views::CreateTenant;
use crate::app::AppState;
use crate::error::ApiError;

/// `/console`: a member of one tenant goes straight to its keys; everyone
/// else to the tenant list.
pub async fn home(signed: SignedIn) -> Response {
    match signed.memberships.as_slice() {
        [only] if !signed.user.operator => {
            Redirect::to(&format!("/console/t/{}/keys", only.tenant_id)).into_response()
        }
        _ => Redirect::to("/console/tenants").into_response(),
    }
}

pub async fn tenant_home(
    State(state): State<AppState>,
    signed: SignedIn,
    Path(tid): Path<String>,
) -> Result<Response, ConsoleError> {
    let access = TenantAccess::load(&state, &signed, &tid).await?;
    Ok(Redirect::to(&format!("/console/t/{}/keys", access.tenant.id)).into_response())
}

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    cursor: Option<String>,
    done: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    signed: SignedIn,
    Query(q): Query<ListQuery>,
) -> Result<Response, ConsoleError> {
    let body = if signed.user.operator {
        operator_list(&state, &signed, q.cursor.as_deref(), &CreateForm::default()).await?
    } else {
        member_list(&signed)
    };
    let chrome = Chrome {
        signed: &signed,
        access: None,
        section: Section::Tenants,
    };
    let title = if signed.user.operator {
        "Tenants"
    } else {
        "Your tenants"
    };
    let content = html! { (ui::done_notice(q.done.as_deref())) (body) };
    Ok(ui::html(StatusCode::OK, ui::page(title, &chrome, content)))
}

fn member_list(signed: &SignedIn) -> Markup {
    html! {
        div.page-header {
            div {
                h1 { "Your tenants" }
                p.lead { "The organizations you belong to. Pick one to manage its API keys." }
            }
        }
        @if signed.memberships.is_empty() {
            div.empty-state {
                h2 { "You are not a member of any tenant yet" }
                p { "Ask an owner or admin of your organization for an invitation link. Opening it adds you to their tenant." }
            }
        } @else {
            ul.card-list {
                @for m in &signed.memberships {
                    li.card-item {
                        a href={ "/console/t/" (m.tenant_id) "/keys" } {
                            span.card-title { (m.tenant_name) }
                            span.card-meta { code { (m.tenant_id) } " · your role: " span.role { (m.role.as_str()) } }
                        }
                    }
                }
            }
        }
    }
}

#[derive(Debug, Default)]
struct CreateForm {
    name: String,
    id: String,
    errors: Errors,
}

async fn operator_list(
    state: &AppState,
    signed: &SignedIn,
    cursor: Option<&str>,
    form: &CreateForm,
) -> Result<Markup, ConsoleError> {
    let caller = operator_caller(state, signed)?;
    let q: ListTenants = serde_json::from_value(json!({ "limit": 50, "cursor": cursor }))
        .map_err(|_| ConsoleError::BadRequest("The page link is not valid.".into()))?;
    let page = api::tenants::list(State(state.clone()), caller, api::Query(q))
        .await?
        .0;
    let e = &form.errors;
    Ok(html! {
        div.page-header {
            div {
                h1 { "Tenants" }
                p.lead { "Every business, account or organization on this keyward. Create a tenant, then invite its first owner." }
            }
        }
        section.card aria-labelledby="create-tenant-title" {
            h2 #create-tenant-title { "Create a tenant" }
            (e.summary())
            form.form-row method="post" action="/console/tenants" {
                (ui::csrf(&signed.csrf))
                div.field.grow {
                    label for="tenant-name" { "Name" }
                    input #tenant-name name="name" value=(form.name) required maxlength="200"
                        placeholder="Acme Inc." aria-invalid=[e.has("name").then_some("true")]
                        aria-describedby=[e.described_by("name")];
                    (e.show("name"))
                }
                div.field {
                    label for="tenant-id" { "ID " span.optional { "(optional)" } }
                    input #tenant-id name="id" value=(form.id) maxlength="64" pattern="[A-Za-z0-9_\\-]{1,64}"
                        placeholder="e.g. AC123456" aria-describedby="tenant-id-hint"
                        aria-invalid=[e.has("id").then_some("true")];
                    p.hint #tenant-id-hint { "Your own account id, used in account-scoped paths. Default: a generated ten_… id." }
                    (e.show("id"))
                }
                div.field.field-submit {
                    button.btn.btn-primary type="submit" { "Create tenant" }
                }
            }
        }
        section aria-labelledby="all-tenants-title" {
            h2 #all-tenants-title.section-title { "All tenants" }
            @if page.data.is_empty() {
                div.empty-state {
                    h3 { "No tenants yet" }
                    p { "Create the first one above." }
                }
            } @else {
                div.table-wrap {
                    table.table {
                        thead { tr { th scope="col" { "Name" } th scope="col" { "ID" } th scope="col" { "Created" } th scope="col" { span.visually-hidden { "Links" } } } }
                        tbody {
                            @for t in &page.data {
                                tr {
                                    td { a.strong href={ "/console/t/" (t.id) "/keys" } { (t.name) } }
                                    td { code { (t.id) } }
                                    td { (created(&t.created_at)) }
                                    td.row-actions { a href={ "/console/t/" (t.id) "/members" } { "Members" } }
                                }
                            }
                        }
                    }
                }
                nav.pagination aria-label="Pages" {
                    @if cursor.is_some() { a.btn href="/console/tenants" { "← First page" } }
                    @if let Some(next) = &page.next_cursor {
                        a.btn href={ "/console/tenants?cursor=" (ui::url_encode(next)) } { "Next page →" }
                    }
                }
            }
        }
    })
}

fn created(rfc3339: &str) -> Markup {
    match keyward_core::clock::Timestamp::parse_rfc3339(rfc3339) {
        Ok(t) => ui::time(t.0),
        Err(_) => html! { (rfc3339) },
    }
}

/// Operators create a tenant, then land on its members page to invite an owner.
pub async fn create(
    State(state): State<AppState>,
    f: SignedForm,
) -> Result<Response, ConsoleError> {
    let caller = operator_caller(&state, &f.signed)?;
    let mut form = CreateForm {
        name: f.form.text("name"),
        id: f.form.text("id"),
        errors: Errors::default(),
    };
    let body: CreateTenant = serde_json::from_value(json!({
        "name": form.name,
        "id": (!form.id.is_empty()).then_some(&form.id),
    }))
    .map_err(|e| ConsoleError::BadRequest(e.to_string()))?;
    match api::tenants::create(State(state.clone()), caller, api::Json(body)).await {
        Ok((_, t)) => Ok(Redirect::to(&format!(
            "/console/t/{}/members?done=tenant_created",
            t.0.id
        ))
        .into_response()),
        Err(ApiError::Validation(errors)) => {
            for e in errors {
                let field = e.field.clone();
                form.errors.field(&field, ui::sentence(&e.message));
            }
            rerender(&state, &f.signed, form, StatusCode::UNPROCESSABLE_ENTITY).await
        }
        Err(ApiError::Conflict { message, .. }) => {
            form.errors.field(
                "id",
                format!(
                    "{} Choose another id, or leave it empty.",
                    ui::sentence(&message)
                ),
            );
            rerender(&state, &f.signed, form, StatusCode::CONFLICT).await
        }
        Err(e) => Err(e.into()),
    }
}

async fn rerender(
    state: &AppState,
    signed: &SignedIn,
    form: CreateForm,
    status: StatusCode,
) -> Result<Response, ConsoleError> {
    let body = operator_list(state, signed, None, &form).await?;
    let chrome = Chrome {
        signed,
        access: None,
        section: Section::Tenants,
    };
    Ok(ui::html(status, ui::page("Tenants", &chrome, body)))
}
