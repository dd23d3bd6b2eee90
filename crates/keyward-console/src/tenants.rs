//! The console's front door and the tenant list: operators see and create
//! every tenant; members see theirs.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use keyward_manage::{ManageError, NewTenant, TenantChanges};
use maud::{html, Markup};
use serde::Deserialize;

use super::access::{operator_actor, Standing, TenantAccess};
use super::flash::{self, Flash};
use super::session::{SignedForm, SignedIn};
use super::ui::{self, Chrome, Errors, Section};
use super::ConsoleError;
use crate::ConsoleState;
use keyward_wire::TenantPage;

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
    State(state): State<ConsoleState>,
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
    State(state): State<ConsoleState>,
    signed: SignedIn,
    Query(q): Query<ListQuery>,
) -> Result<Response, ConsoleError> {
    let mut status = StatusCode::OK;
    let body = if signed.user.operator {
        let form = match signed.flash_for("/console/tenants", "create-tenant") {
            Some(fl) => {
                status = fl.status();
                CreateForm {
                    name: fl.get("name").to_owned(),
                    id: fl.get("id").to_owned(),
                    errors: fl.errors(),
                }
            }
            None => CreateForm::default(),
        };
        operator_list(&state, &signed, q.cursor.as_deref(), &form).await?
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
    Ok(ui::html(status, ui::page(title, &chrome, content)))
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
    state: &ConsoleState,
    signed: &SignedIn,
    cursor: Option<&str>,
    form: &CreateForm,
) -> Result<Markup, ConsoleError> {
    let actor = operator_actor(signed)?;
    let page = state
        .manage
        .list_tenants(&actor, keyward_views::paging(Some(50), cursor))
        .await?;
    let (data, next_cursor, has_more) =
        keyward_views::page_parts(&page, keyward_views::tenant_view);
    let page = TenantPage {
        data,
        next_cursor,
        has_more,
    };
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
                                    td.row-actions {
                                        a href={ "/console/t/" (t.id) "/members" } { "Members" }
                                        " · "
                                        a href={ "/console/t/" (t.id) "/settings" } { "Settings" }
                                    }
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
    State(state): State<ConsoleState>,
    f: SignedForm,
) -> Result<Response, ConsoleError> {
    let actor = operator_actor(&f.signed)?;
    let mut form = CreateForm {
        name: f.form.text("name"),
        id: f.form.text("id"),
        errors: Errors::default(),
    };
    let input = NewTenant {
        name: form.name.clone(),
        id: (!form.id.is_empty()).then(|| form.id.clone()),
        ..NewTenant::default()
    };
    match state.manage.create_tenant(&actor, input).await {
        Ok(t) => Ok(
            Redirect::to(&format!("/console/t/{}/members?done=tenant_created", t.id))
                .into_response(),
        ),
        Err(ManageError::Validation(errors)) => {
            for e in errors {
                let field = e.field.clone();
                form.errors.field(&field, ui::sentence(&e.message));
            }
            rerender(&state, &f.signed, form, StatusCode::UNPROCESSABLE_ENTITY).await
        }
        Err(ManageError::Conflict { message, .. }) => {
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

/// A refused tenant: back to the list with the form (post-redirect-get).
async fn rerender(
    state: &ConsoleState,
    signed: &SignedIn,
    form: CreateForm,
    status: StatusCode,
) -> Result<Response, ConsoleError> {
    let fl = Flash::new("/console/tenants", "create-tenant", status, &form.errors)
        .field("name", &form.name)
        .field("id", &form.id);
    if let Some(res) = flash::redirect(state, signed, &fl) {
        return Ok(res);
    }
    let body = operator_list(state, signed, None, &form).await?;
    let chrome = Chrome {
        signed,
        access: None,
        section: Section::Tenants,
    };
    Ok(ui::html(status, ui::page("Tenants", &chrome, body)))
}

#[derive(Debug, Default, Deserialize)]
pub struct SettingsQuery {
    done: Option<String>,
}

/// What the settings form holds, as typed.
struct SettingsForm {
    /// `none` (no ceiling) or `list`.
    ceiling: String,
    scopes: String,
    errors: Errors,
}

impl SettingsForm {
    fn of(tenant: &keyward_store::Tenant) -> SettingsForm {
        SettingsForm {
            ceiling: if tenant.grantable_scopes.is_some() {
                "list"
            } else {
                "none"
            }
            .into(),
            scopes: tenant
                .grantable_scopes
                .as_deref()
                .unwrap_or_default()
                .join(" "),
            errors: Errors::default(),
        }
    }
}

fn operator_only(access: &TenantAccess) -> Result<(), ConsoleError> {
    if access.standing == Standing::Operator {
        Ok(())
    } else {
        Err(ConsoleError::Forbidden(format!(
            "Only keyward operators change the settings of {}, such as the scopes its keys may be \
             given. Ask an operator if your plan should allow more.",
            access.tenant.name
        )))
    }
}

/// `/console/t/{tid}/settings`: the tenant's plan, for operators: the
/// ceiling of scopes its members and API keys may give keys.
pub async fn settings(
    State(state): State<ConsoleState>,
    signed: SignedIn,
    Path(tid): Path<String>,
    Query(q): Query<SettingsQuery>,
) -> Result<Response, ConsoleError> {
    let access = TenantAccess::load(&state, &signed, &tid).await?;
    operator_only(&access)?;
    let path = format!("/console/t/{}/settings", access.tenant.id);
    let (form, status) = match signed.flash_for(&path, "settings") {
        Some(fl) => (
            SettingsForm {
                ceiling: fl.get("ceiling").to_owned(),
                scopes: fl.get("grantable_scopes").to_owned(),
                errors: fl.errors(),
            },
            fl.status(),
        ),
        None => (SettingsForm::of(&access.tenant), StatusCode::OK),
    };
    Ok(settings_view(
        &state,
        &signed,
        &access,
        &form,
        q.done.as_deref(),
        status,
    ))
}

fn settings_view(
    state: &ConsoleState,
    signed: &SignedIn,
    access: &TenantAccess,
    form: &SettingsForm,
    done: Option<&str>,
    status: StatusCode,
) -> Response {
    let e = &form.errors;
    let catalog: Vec<&str> = state
        .settings
        .catalog
        .entries()
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    let action = format!("/console/t/{}/settings", access.tenant.id);
    let content = html! {
        div.page-header {
            div {
                h1 { "Tenant settings" }
                p.lead { "How " strong { (access.tenant.name) } " may use keyward. Only operators see this page." }
            }
        }
        (ui::done_notice(done))
        section.card aria-labelledby="ceiling-title" {
            h2 #ceiling-title { "Grantable scopes" }
            p { "The most that this tenant's members and API keys may give a key, for example the scopes of its plan. Operators are not bound by it. Keys keep the scopes they hold when you lower it: it bounds what is granted from then on (new keys, scope changes, rotations)." }
            (e.summary())
            form.stack method="post" action=(action) {
                (ui::csrf(&signed.csrf))
                fieldset.field {
                    legend { "Ceiling" }
                    div.radio-list {
                        label.radio {
                            input type="radio" name="ceiling" value="none" checked[form.ceiling != "list"];
                            span { "None: any scope of this deployment" }
                        }
                        label.radio {
                            input type="radio" name="ceiling" value="list" checked[form.ceiling == "list"];
                            span { "Only the scopes below" }
                        }
                    }
                }
                div.field {
                    label for="grantable-scopes" { "Scopes" }
                    input #grantable-scopes.mono name="grantable_scopes" value=(form.scopes) spellcheck="false" autocomplete="off"
                        placeholder="vox:* keyward:keys:read keyward:keys:write"
                        aria-describedby={ "grantable-scopes-hint" @if e.has("grantable_scopes") { " grantable_scopes-error" } }
                        aria-invalid=[e.has("grantable_scopes").then_some("true")];
                    p.hint #grantable-scopes-hint {
                        "Separated by spaces; a trailing " code { "*" } " covers every scope that starts with what comes before it. "
                        "Include keyward's own scopes (such as " code { "keyward:keys:read" } ") if members and keys should grant them. "
                        "This deployment's scopes: " @for (i, s) in catalog.iter().enumerate() { @if i > 0 { ", " } code { (s) } } "."
                    }
                    (e.show("grantable_scopes"))
                }
                div.form-actions { button.btn.btn-primary type="submit" { "Save settings" } }
            }
        }
    };
    let chrome = Chrome {
        signed,
        access: Some(access),
        section: Section::Settings,
    };
    ui::html(status, ui::page("Tenant settings", &chrome, content))
}

pub async fn save_settings(
    State(state): State<ConsoleState>,
    Path(tid): Path<String>,
    f: SignedForm,
) -> Result<Response, ConsoleError> {
    let access = TenantAccess::load(&state, &f.signed, &tid).await?;
    operator_only(&access)?;
    let mut form = SettingsForm {
        ceiling: f.form.text("ceiling"),
        scopes: f.form.text("grantable_scopes"),
        errors: Errors::default(),
    };
    let scopes: Option<Vec<&str>> = (form.ceiling == "list").then(|| {
        form.scopes
            .split([' ', ',', '\n', '\r', '\t'])
            .filter(|s| !s.is_empty())
            .collect()
    });
    let changes = TenantChanges {
        grantable_scopes: Some(
            scopes
                .as_ref()
                .map(|l| l.iter().map(|s| (*s).to_owned()).collect()),
        ),
        ..TenantChanges::default()
    };
    match state
        .manage
        .update_tenant(&access.actor(&f.signed), &tid, changes)
        .await
    {
        Ok(_) => {
            Ok(Redirect::to(&format!("/console/t/{tid}/settings?done=updated")).into_response())
        }
        Err(ManageError::Validation(errors)) => {
            let typed: Vec<&str> = scopes.unwrap_or_default();
            for e in errors {
                let message = match e.code {
                    "unknown_scope" | "invalid" => {
                        let at: Option<usize> = e
                            .field
                            .trim_start_matches("grantable_scopes[")
                            .trim_end_matches(']')
                            .parse()
                            .ok();
                        let scope = at.and_then(|i| typed.get(i)).copied().unwrap_or("");
                        format!(
                            "“{scope}” is not a scope of this deployment, nor a wildcard covering one. {}",
                            ui::sentence(&e.message)
                        )
                    }
                    _ => ui::sentence(&e.message),
                };
                form.errors.field("grantable_scopes", message);
            }
            let status = StatusCode::UNPROCESSABLE_ENTITY;
            let fl = Flash::new(
                format!("/console/t/{tid}/settings"),
                "settings",
                status,
                &form.errors,
            )
            .field("ceiling", &form.ceiling)
            .field("grantable_scopes", &form.scopes);
            if let Some(res) = flash::redirect(&state, &f.signed, &fl) {
                return Ok(res);
            }
            Ok(settings_view(
                &state,
                &f.signed,
                &access,
                &form,
                None,
                StatusCode::UNPROCESSABLE_ENTITY,
            ))
        }
        Err(e) => Err(e.into()),
    }
}
