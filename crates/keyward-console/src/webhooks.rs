//! Webhook pages: a tenant's endpoints (the list and the "Add endpoint"
//! form), an endpoint's page (details, edit, enable or disable, test event,
//! secret rotation, delete, and its delivery log), and one delivery's page
//! (its event, its attempts, and "Redeliver").
//!
//! Every action calls the management service with the user's actor
//! ([`TenantAccess::actor`]), as the API does: which URLs, filters and
//! overlaps are valid, and who may change what (`keyward:webhooks:write`,
//! owners and admins), are the service's rules. The signing secret exists
//! in exactly one response: the page answering the create or rotate POST,
//! whose dialog the script removes once the user confirms they stored it
//! (the same dialog as a new key's, [`crate::keys`]). It is never put in a
//! URL, a flash cookie or a log.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use keyward_manage::{EndpointChanges, FieldError, ManageError, NewEndpoint};
use keyward_store::{Attempt, Delivery, DeliveryStatus, Endpoint};
use maud::{html, Markup};
use serde::Deserialize;
use zeroize::Zeroizing;

use super::access::TenantAccess;
use super::flash::{self, Flash};
use super::form::FormData;
use super::session::{SignedForm, SignedIn};
use super::ui::{self, Chrome, Errors, Section};
use super::ConsoleError;
use crate::ConsoleState;

/// Endpoints and deliveries per page.
const PAGE_SIZE: u32 = 20;
/// The rotation overlap offered by default, in hours.
const DEFAULT_OVERLAP_HOURS: u64 = 24;
/// The longest overlap the service takes (7 days), in hours.
const MAX_OVERLAP_HOURS: u64 = 168;
/// Characters of an attempt's response shown in the delivery's page.
const RESPONSE_SHOWN: usize = 1_000;

fn list_url(tid: &str) -> String {
    format!("/console/t/{tid}/webhooks")
}

fn endpoint_url(tid: &str, eid: &str) -> String {
    format!("/console/t/{tid}/webhooks/{eid}")
}

fn delivery_url(tid: &str, eid: &str, event_id: &str) -> String {
    format!(
        "/console/t/{tid}/webhooks/{eid}/deliveries/{}",
        ui::url_encode(event_id)
    )
}

/// Event types as typed in the form: separated by commas, spaces or new
/// lines; empty entries dropped.
pub(crate) fn parse_event_types(s: &str) -> Vec<String> {
    s.split([',', ' ', '\n', '\r', '\t'])
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `text` cut to at most `max` characters (on a character boundary), and
/// whether anything was cut.
pub(crate) fn truncate(text: &str, max: usize) -> (&str, bool) {
    match text.char_indices().nth(max) {
        Some((at, _)) => (&text[..at], true),
        None => (text, false),
    }
}

/// What an attempt or delivery ended with, in words: `HTTP 200`, or the
/// error, or `—` before any attempt.
pub(crate) fn result_text(status: Option<u16>, error: Option<&str>) -> String {
    match (status, error) {
        (Some(s), Some(e)) if !e.is_empty() => format!("HTTP {s}: {e}"),
        (Some(s), _) => format!("HTTP {s}"),
        (None, Some(e)) if !e.is_empty() => e.to_owned(),
        _ => "—".to_owned(),
    }
}

/// The notice for `?done=…` after a redirect. Codes only, so a link cannot
/// make the page say anything else.
fn done_notice(code: Option<&str>) -> Markup {
    let text = match code {
        Some("updated") => "Changes saved.",
        Some("enabled") => "Endpoint enabled: new events are delivered to it again.",
        Some("disabled") => {
            "Endpoint disabled: no new deliveries are made to it until you enable it."
        }
        Some("test_sent") => {
            "Test event sent. It appears in the delivery log below and is delivered within seconds."
        }
        Some("deleted") => "Endpoint deleted. Its pending deliveries were cancelled.",
        Some("redelivered") => {
            "Delivery queued again: it is sent now, with a fresh retry schedule."
        }
        _ => return html! {},
    };
    html! { div.alert.alert-success role="status" { (text) } }
}

/// What the endpoint form holds, as typed.
#[derive(Debug, Default)]
struct EndpointForm {
    url: String,
    description: String,
    event_types: String,
    enabled: bool,
}

impl EndpointForm {
    fn from_form(f: &FormData) -> EndpointForm {
        EndpointForm {
            url: f.text("url"),
            description: f.text("description"),
            event_types: f.text("event_types"),
            enabled: f.checked("enabled"),
        }
    }

    fn from_flash(f: &Flash) -> EndpointForm {
        EndpointForm {
            url: f.get("url").to_owned(),
            description: f.get("description").to_owned(),
            event_types: f.get("event_types").to_owned(),
            enabled: f.get("enabled") == "1",
        }
    }

    fn to_flash(&self, flash: Flash) -> Flash {
        flash
            .field("url", &self.url)
            .field("description", &self.description)
            .field("event_types", &self.event_types)
            .field("enabled", if self.enabled { "1" } else { "" })
    }

    fn from_endpoint(e: &Endpoint) -> EndpointForm {
        EndpointForm {
            url: e.url.clone(),
            description: e.description.clone(),
            event_types: e.event_types.join(", "),
            enabled: e.enabled,
        }
    }

    /// A new endpoint's form: enabled, filters empty.
    fn blank() -> EndpointForm {
        EndpointForm {
            enabled: true,
            ..EndpointForm::default()
        }
    }
}

/// The service's field errors onto the form's fields (`event_types[2]`
/// onto `event_types`), as sentences without code marks.
fn absorb(errors: &mut Errors, list: Vec<FieldError>) {
    for e in list {
        let field = e.field.split('[').next().unwrap_or("").to_owned();
        let message = ui::sentence(&e.message.replace('`', ""));
        match field.as_str() {
            "url" | "description" | "event_types" | "overlap_hours" => {
                errors.field(&field, message);
            }
            "overlap_seconds" => errors.field("overlap_hours", message),
            _ => errors.general(message),
        }
    }
}

/// Refusals a form shows at its top rather than as a page: webhooks off,
/// too many endpoints.
fn as_general(e: ManageError) -> Result<String, ConsoleError> {
    match e {
        ManageError::Conflict {
            code: "webhooks_disabled",
            ..
        } => Ok(
            "Webhooks are off in this deployment (webhooks.enabled = false in its \
                 configuration): nothing can be sent or changed. Ask its operator to turn them on."
                .to_owned(),
        ),
        ManageError::Conflict { message, .. } => Ok(ui::sentence(&message)),
        other => Err(other.into()),
    }
}

/// Whether this deployment delivers webhooks.
fn webhooks_on(state: &ConsoleState) -> bool {
    state.manage.webhooks().is_ok()
}

fn webhooks_off_notice() -> Markup {
    html! {
        div.alert.alert-info role="status" #webhooks-off {
            p { "Webhooks are off in this deployment (" code { "webhooks.enabled = false" } "): endpoints are kept, but no event is delivered and none can be added or changed." }
        }
    }
}

/// The form's fields, shared by "Add endpoint" and "Edit"; `prefix` keeps
/// ids unique.
fn endpoint_fields(form: &EndpointForm, e: &Errors, prefix: &str) -> Markup {
    let id = |name: &str| format!("{prefix}-{name}");
    let described = |name: &str| {
        let mut ids = vec![format!("{prefix}-{name}-hint")];
        if e.has(name) {
            ids.push(format!("{name}-error"));
        }
        ids.join(" ")
    };
    html! {
        div.field {
            label for=(id("url")) { "URL" }
            input id=(id("url")) name="url" type="url" value=(form.url) required maxlength="2048"
                autocomplete="off" spellcheck="false" placeholder="https://example.com/webhooks/keyward"
                aria-describedby=(described("url")) aria-invalid=[e.has("url").then_some("true")];
            p.hint id={ (prefix) "-url-hint" } { "Where keyward POSTs each event, signed. Use https; the address must be public unless this deployment allows private ones." }
            (e.show("url"))
        }
        div.field {
            label for=(id("description")) { "Description " span.optional { "(optional)" } }
            input id=(id("description")) name="description" value=(form.description) maxlength="500" autocomplete="off"
                aria-describedby=(described("description")) aria-invalid=[e.has("description").then_some("true")];
            p.hint id={ (prefix) "-description-hint" } { "What receives these events, so others know what breaks if it is deleted." }
            (e.show("description"))
        }
        div.field {
            label for=(id("event_types")) { "Event types" }
            input id=(id("event_types")) name="event_types" value=(form.event_types) required autocomplete="off" spellcheck="false"
                placeholder="key.*, webhook.test"
                aria-describedby=(described("event_types")) aria-invalid=[e.has("event_types").then_some("true")];
            p.hint id={ (prefix) "-event_types-hint" } {
                "Separated by commas or spaces. An exact type (" code { "key.revoked" } "), a prefix (" code { "key.*" } ", " code { "alert.*" } ") or " code { "*" } " for every event."
            }
            (e.show("event_types"))
        }
        div.field.check {
            input id=(id("enabled")) type="checkbox" name="enabled" value="1" checked[form.enabled];
            label for=(id("enabled")) { "Enabled " span.hint { "— untick to stop deliveries for a while without deleting the endpoint" } }
        }
    }
}

fn event_chips(types: &[String]) -> Markup {
    html! {
        ul.chips { @for t in types { li.chip { (t) } } }
    }
}

/// `2026-05-03 14:22 UTC`, for a title attribute.
fn utc(ms: i64) -> String {
    let iso = keyward_core::clock::Timestamp(ms).to_rfc3339();
    format!(
        "{} {} UTC",
        iso.get(..10).unwrap_or(""),
        iso.get(11..16).unwrap_or("")
    )
}

/// `2026-05-03 14:22:05.120 UTC`: attempts and retries are milliseconds
/// apart, so their times show the seconds and milliseconds.
pub(crate) fn precise_time(ms: i64) -> Markup {
    let iso = keyward_core::clock::Timestamp(ms).to_rfc3339();
    let shown = format!(
        "{} {}.{:03} UTC",
        iso.get(..10).unwrap_or(""),
        iso.get(11..19).unwrap_or(""),
        ms.rem_euclid(1000)
    );
    html! { time datetime=(iso) { (shown) } }
}

/// Enabled or disabled, and "failing" when a delivery gave up.
fn endpoint_badges(e: &Endpoint) -> Markup {
    html! {
        @if e.enabled {
            span class="badge badge-status badge-active" { "enabled" }
        } @else {
            span class="badge badge-status badge-disabled" { "disabled" }
        }
        @if let Some(since) = e.failing_since {
            " "
            span class="badge badge-failing" title={ "A delivery gave up at " (utc(since)) } { "failing" }
        }
    }
}

fn delivery_badge(status: DeliveryStatus) -> Markup {
    let s = status.as_str();
    html! { span class={ "badge badge-status badge-delivery-" (s) } { (s) } }
}

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    cursor: Option<String>,
    done: Option<String>,
}

/// `/console/t/{tid}/webhooks`: the endpoints and the "Add endpoint" form.
pub async fn list(
    State(state): State<ConsoleState>,
    signed: SignedIn,
    Path(tid): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ConsoleError> {
    let access = TenantAccess::load(&state, &signed, &tid).await?;
    let base = list_url(&access.tenant.id);
    let (form, errors, status) = match signed.flash_for(&base, "create") {
        Some(fl) => (EndpointForm::from_flash(fl), fl.errors(), fl.status()),
        None => (EndpointForm::blank(), Errors::default(), StatusCode::OK),
    };
    list_view(
        &state,
        &signed,
        &access,
        q.cursor.as_deref(),
        q.done.as_deref(),
        &form,
        &errors,
        status,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn list_view(
    state: &ConsoleState,
    signed: &SignedIn,
    access: &TenantAccess,
    cursor: Option<&str>,
    done: Option<&str>,
    form: &EndpointForm,
    errors: &Errors,
    status: StatusCode,
) -> Result<Response, ConsoleError> {
    let cursor = cursor.filter(|c| !c.is_empty());
    let paging = keyward_views::paging(Some(PAGE_SIZE), cursor);
    let page = match state
        .manage
        .list_endpoints(
            &access.actor(signed),
            Some(access.tenant.id.clone()),
            paging,
        )
        .await
    {
        Ok(page) => page,
        Err(ManageError::InvalidCursor | ManageError::Validation(_)) => {
            return Err(ConsoleError::BadRequest(
                "The page link is not valid.".into(),
            ))
        }
        Err(e) => return Err(e.into()),
    };
    let (endpoints, next, _) = keyward_views::page_parts(&page, Endpoint::clone);
    let tid = &access.tenant.id;
    let base = list_url(tid);
    let on = webhooks_on(state);
    let writable = access.can_write_webhooks();
    let content = html! {
        div.page-header {
            div {
                h1 { "Webhooks" }
                p.lead { "keyward POSTs events about " strong { (access.tenant.name) } "'s keys, alerts and your own API to these endpoints, signed the Standard Webhooks way, and retries until they answer 2xx." }
            }
        }
        (done_notice(done))
        @if !on { (webhooks_off_notice()) }
        @if endpoints.is_empty() {
            div.empty-state #no-endpoints {
                h2 { @if cursor.is_some() { "No more endpoints" } @else { "No webhook endpoints yet" } }
                @if writable && on {
                    p { "Add an endpoint below to receive events such as " code { "key.revoked" } " or " code { "alert.new_ip" } " as they happen." }
                } @else {
                    p { "When an owner or admin adds an endpoint, it appears here." }
                }
            }
        } @else {
            div.table-wrap {
                table.table #endpoints {
                    caption.visually-hidden { "Webhook endpoints of " (access.tenant.name) }
                    thead { tr {
                        th scope="col" { "URL" }
                        th scope="col" { "Description" }
                        th scope="col" { "Event types" }
                        th scope="col" { "Status" }
                        th scope="col" { "Created" }
                    } }
                    tbody {
                        @for e in &endpoints {
                            tr {
                                td.url-cell { a.strong href=(endpoint_url(tid, &e.id)) { (e.url) } }
                                td { @if e.description.is_empty() { span.muted { "—" } } @else { (e.description) } }
                                td { (event_chips(&e.event_types)) }
                                td.nowrap { (endpoint_badges(e)) }
                                td.nowrap { (ui::time(e.created_at)) }
                            }
                        }
                    }
                }
            }
            nav.pagination aria-label="Pages" {
                @if cursor.is_some() { a.btn href=(base) { "← First page" } }
                @if let Some(next) = &next {
                    a.btn href={ (base) "?cursor=" (ui::url_encode(next)) } rel="next" { "Next page →" }
                }
            }
        }
        @if writable && on {
            section.card #add-endpoint aria-labelledby="add-title" {
                h2 #add-title { "Add endpoint" }
                p { "The endpoint's signing secret is shown once, right after you add it." }
                (errors.summary())
                form.stack method="post" action=(base) {
                    (ui::csrf(&signed.csrf))
                    (endpoint_fields(form, errors, "new"))
                    div.form-actions { button.btn.btn-primary type="submit" { "Add endpoint" } }
                }
            }
        } @else if !writable {
            p.notice { "You have view access to " (access.tenant.name) "'s webhooks. Owners and admins can add, change and delete endpoints." }
        }
    };
    let chrome = Chrome {
        signed,
        access: Some(access),
        section: Section::Webhooks,
    };
    Ok(ui::html(status, ui::page("Webhooks", &chrome, content)))
}

/// Adds an endpoint and answers with its page and the secret dialog.
pub async fn create(
    State(state): State<ConsoleState>,
    Path(tid): Path<String>,
    f: SignedForm,
) -> Result<Response, ConsoleError> {
    let access = TenantAccess::load(&state, &f.signed, &tid).await?;
    if !access.can_write_webhooks() {
        return Err(access.refuse("add webhook endpoints"));
    }
    let form = EndpointForm::from_form(&f.form);
    let mut errors = Errors::default();
    if form.url.is_empty() {
        errors.field("url", "Give the URL keyward should send events to.");
    }
    let types = parse_event_types(&form.event_types);
    if types.is_empty() {
        errors.field(
            "event_types",
            "List at least one event type or pattern, such as key.* or * for every event.",
        );
    }
    let status = if errors.is_empty() {
        let input = NewEndpoint {
            tenant_id: Some(access.tenant.id.clone()),
            url: form.url.clone(),
            description: (!form.description.is_empty()).then(|| form.description.clone()),
            event_types: types,
            enabled: Some(form.enabled),
        };
        match state
            .manage
            .create_endpoint(&access.actor(&f.signed), input)
            .await
        {
            Ok(created) => {
                let dialog = SecretDialog {
                    secret: created.secret.to_whsec(),
                    note: None,
                };
                let page = DetailPage {
                    forms: Forms::default(),
                    dialog: Some(dialog),
                    cursor: None,
                    status: StatusCode::CREATED,
                };
                return detail_view(&state, &f.signed, &access, &created.endpoint, page).await;
            }
            Err(ManageError::Validation(list)) => {
                absorb(&mut errors, list);
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Err(e) => {
                errors.general(as_general(e)?);
                StatusCode::CONFLICT
            }
        }
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let to = list_url(&access.tenant.id);
    let fl = form.to_flash(Flash::new(to, "create", status, &errors));
    match flash::redirect(&state, &f.signed, &fl) {
        Some(res) => Ok(res),
        None => {
            list_view(
                &state, &f.signed, &access, None, None, &form, &errors, status,
            )
            .await
        }
    }
}

/// The endpoint of the address, if it belongs to the tenant of the address
/// (operators act with a caller that sees every tenant's endpoints).
async fn tenant_endpoint(
    state: &ConsoleState,
    access: &TenantAccess,
    signed: &SignedIn,
    eid: &str,
) -> Result<Endpoint, ConsoleError> {
    let e = state
        .manage
        .get_endpoint(&access.actor(signed), eid)
        .await?;
    if e.tenant_id.as_deref() != Some(access.tenant.id.as_str()) {
        return Err(ConsoleError::NotFound);
    }
    Ok(e)
}

/// The secret shown once.
struct SecretDialog {
    secret: Zeroizing<String>,
    /// What happens to the previous secret, after a rotation.
    note: Option<Markup>,
}

/// The forms on an endpoint's page, with what was typed and what was wrong.
#[derive(Default)]
struct Forms {
    edit: Option<(EndpointForm, Errors)>,
    /// The overlap as typed.
    rotate: Option<(String, Errors)>,
    delete: Option<Errors>,
    /// "Send test event" and "Enable"/"Disable".
    actions: Option<Errors>,
    done: Option<String>,
}

/// Everything an endpoint page shows besides the endpoint.
struct DetailPage {
    forms: Forms,
    dialog: Option<SecretDialog>,
    /// The delivery log's page.
    cursor: Option<String>,
    status: StatusCode,
}

#[derive(Debug, Default, Deserialize)]
pub struct DetailQuery {
    cursor: Option<String>,
    done: Option<String>,
}

/// `/console/t/{tid}/webhooks/{eid}`.
pub async fn detail(
    State(state): State<ConsoleState>,
    signed: SignedIn,
    Path((tid, eid)): Path<(String, String)>,
    Query(q): Query<DetailQuery>,
) -> Result<Response, ConsoleError> {
    let access = TenantAccess::load(&state, &signed, &tid).await?;
    let endpoint = tenant_endpoint(&state, &access, &signed, &eid).await?;
    let url = endpoint_url(&access.tenant.id, &endpoint.id);
    let mut forms = Forms {
        done: q.done,
        ..Forms::default()
    };
    let mut status = StatusCode::OK;
    if let Some(fl) = signed.flash_for(&url, "edit") {
        forms.edit = Some((EndpointForm::from_flash(fl), fl.errors()));
        status = fl.status();
    } else if let Some(fl) = signed.flash_for(&url, "rotate") {
        forms.rotate = Some((fl.get("overlap_hours").to_owned(), fl.errors()));
        status = fl.status();
    } else if let Some(fl) = signed.flash_for(&url, "delete") {
        forms.delete = Some(fl.errors());
        status = fl.status();
    } else if let Some(fl) = signed.flash_for(&url, "actions") {
        forms.actions = Some(fl.errors());
        status = fl.status();
    }
    let page = DetailPage {
        forms,
        dialog: None,
        cursor: q.cursor.filter(|c| !c.is_empty()),
        status,
    };
    detail_view(&state, &signed, &access, &endpoint, page).await
}

async fn detail_view(
    state: &ConsoleState,
    signed: &SignedIn,
    access: &TenantAccess,
    endpoint: &Endpoint,
    page: DetailPage,
) -> Result<Response, ConsoleError> {
    let tid = &access.tenant.id;
    let url = endpoint_url(tid, &endpoint.id);
    let now = state.clock.now().0;
    let on = webhooks_on(state);
    let writable = access.can_write_webhooks();
    let cursor = page.cursor.as_deref();
    let deliveries = match state
        .manage
        .list_deliveries(
            &access.actor(signed),
            &endpoint.id,
            keyward_views::paging(Some(PAGE_SIZE), cursor),
        )
        .await
    {
        Ok(p) => p,
        Err(ManageError::InvalidCursor | ManageError::Validation(_)) => {
            return Err(ConsoleError::BadRequest(
                "The page link is not valid.".into(),
            ))
        }
        Err(e) => return Err(e.into()),
    };
    let (deliveries, next, _) = keyward_views::page_parts(&deliveries, Delivery::clone);
    let forms = &page.forms;
    let default_edit = (EndpointForm::from_endpoint(endpoint), Errors::default());
    let (edit_form, edit_errors) = forms
        .edit
        .as_ref()
        .map_or((&default_edit.0, &default_edit.1), |(f, e)| (f, e));
    let no_errors = Errors::default();
    let default_overlap = DEFAULT_OVERLAP_HOURS.to_string();
    let (overlap, rotate_errors) = forms
        .rotate
        .as_ref()
        .map_or((default_overlap.as_str(), &no_errors), |(o, e)| {
            (o.as_str(), e)
        });
    let delete_errors = forms.delete.as_ref().unwrap_or(&no_errors);
    let action_errors = forms.actions.as_ref().unwrap_or(&no_errors);
    let overlapping = endpoint.previous_until.filter(|u| *u > now);
    let content = html! {
        nav.breadcrumb aria-label="Breadcrumb" {
            a href=(list_url(tid)) { "Webhooks" }
            span aria-hidden="true" { " / " }
            span aria-current="page" { "Endpoint" }
        }
        div.page-header {
            div {
                h1 #endpoint-title { "Endpoint " (endpoint_badges(endpoint)) }
                p.lead.url-lead { code #endpoint-url { (endpoint.url) } }
                p.lead { "Endpoint ID " code #endpoint-id { (endpoint.id) } }
            }
        }
        (done_notice(forms.done.as_deref()))
        @if !on { (webhooks_off_notice()) }
        @if let Some(since) = endpoint.failing_since {
            div.alert.alert-error role="alert" #endpoint-failing {
                p { "A delivery to this endpoint gave up at " (ui::time(since)) " after its retries. Check that the receiver answers 2xx within the timeout and verifies signatures with the current secret, then redeliver the failed deliveries below. The next successful delivery clears this." }
            }
        }
        @if let Some(until) = overlapping {
            div.alert.alert-info role="status" #rotation-overlap {
                p { "The secret was rotated: until " (ui::time(until)) " deliveries carry two signatures, one with the new secret and one with the previous one, so receivers can switch without missing an event." }
            }
        }
        section.card aria-labelledby="details-title" {
            h2 #details-title { "Details" }
            dl.details {
                div { dt { "URL" } dd { code.break-all { (endpoint.url) } } }
                div { dt { "Description" } dd { @if endpoint.description.is_empty() { span.muted { "None" } } @else { (endpoint.description) } } }
                div { dt { "Event types" } dd { (event_chips(&endpoint.event_types)) } }
                div { dt { "Status" } dd { (endpoint_badges(endpoint)) } }
                div { dt { "Signing" } dd {
                    "Standard Webhooks: headers " code { "webhook-id" } ", " code { "webhook-timestamp" } " and " code { "webhook-signature" } " (HMAC-SHA256 with the endpoint's " code { "whsec_" } " secret)."
                } }
                div { dt { "Created" } dd { (ui::time(endpoint.created_at)) } }
                div { dt { "Changed" } dd { (ui::time(endpoint.updated_at)) } }
            }
            @if writable {
                (action_errors.summary())
                div.button-row {
                    form.inline-form method="post" action={ (url) "/test" } {
                        (ui::csrf(&signed.csrf))
                        button.btn type="submit" disabled[!endpoint.enabled] aria-describedby=[(!endpoint.enabled).then_some("test-disabled-hint")] { "Send test event" }
                    }
                    form.inline-form method="post" action={ (url) "/enabled" } {
                        (ui::csrf(&signed.csrf))
                        @if endpoint.enabled {
                            input type="hidden" name="enabled" value="0";
                            button.btn type="submit" { "Disable endpoint" }
                        } @else {
                            input type="hidden" name="enabled" value="1";
                            button.btn type="submit" { "Enable endpoint" }
                        }
                    }
                }
                @if !endpoint.enabled {
                    p.hint #test-disabled-hint { "Enable the endpoint to send it a test event." }
                }
            }
        }
        (delivery_log(now, tid, endpoint, &deliveries, cursor, next.as_deref()))
        @if !writable {
            p.notice { "You have view access to " (access.tenant.name) "'s webhooks. Owners and admins can change, test, rotate and delete endpoints, and redeliver events." }
        }
        @if writable {
            section.card aria-labelledby="edit-title" #edit-endpoint {
                h2 #edit-title { "Edit" }
                (edit_errors.summary())
                form.stack method="post" action=(url) {
                    (ui::csrf(&signed.csrf))
                    (endpoint_fields(edit_form, edit_errors, "edit"))
                    div.form-actions { button.btn.btn-primary type="submit" { "Save changes" } }
                }
            }
            section.card aria-labelledby="rotate-title" #rotate-secret {
                h2 #rotate-title { "Rotate secret" }
                p { "Issue a new signing secret; it is shown once. During the overlap every delivery carries a signature with each secret, so you can deploy the new one to the receiver before the previous one stops signing." }
                (rotate_errors.summary())
                form.stack method="post" action={ (url) "/rotate" } {
                    (ui::csrf(&signed.csrf))
                    div.field {
                        label for="overlap-hours" { "Overlap in hours" }
                        input #overlap-hours.narrow type="number" name="overlap_hours" min="0" max=(MAX_OVERLAP_HOURS) step="1" value=(overlap) required
                            aria-describedby={ "overlap-hint" @if rotate_errors.has("overlap_hours") { " overlap_hours-error" } }
                            aria-invalid=[rotate_errors.has("overlap_hours").then_some("true")];
                        p.hint #overlap-hint { "How long the previous secret keeps signing: 0 to " (MAX_OVERLAP_HOURS) " hours (7 days). 0 stops it at once." }
                        (rotate_errors.show("overlap_hours"))
                    }
                    div.form-actions { button.btn type="submit" { "Rotate secret" } }
                }
            }
            section.card.card-danger aria-labelledby="delete-title" #delete-endpoint {
                h2 #delete-title { "Delete" }
                p { "Deleting the endpoint stops every delivery to it at once and cancels those still pending. This cannot be undone." }
                (delete_errors.summary())
                form.stack method="post" action={ (url) "/delete" } {
                    (ui::csrf(&signed.csrf))
                    div.field.check {
                        input #delete-confirm type="checkbox" name="confirm" value="1" required
                            aria-invalid=[delete_errors.has("confirm").then_some("true")]
                            aria-describedby=[delete_errors.described_by("confirm")];
                        label for="delete-confirm" { "Yes, delete the endpoint for " code.break-all { (endpoint.url) } }
                    }
                    (delete_errors.show("confirm"))
                    div.form-actions { button.btn.btn-danger type="submit" { "Delete endpoint" } }
                }
            }
        }
        @if let Some(d) = &page.dialog {
            (secret_dialog(endpoint, d, &url))
        }
    };
    let chrome = Chrome {
        signed,
        access: Some(access),
        section: Section::Webhooks,
    };
    Ok(ui::html(
        page.status,
        ui::page("Webhook endpoint", &chrome, content),
    ))
}

/// The delivery log: newest first, one page.
fn delivery_log(
    now: i64,
    tid: &str,
    endpoint: &Endpoint,
    deliveries: &[Delivery],
    cursor: Option<&str>,
    next: Option<&str>,
) -> Markup {
    let base = endpoint_url(tid, &endpoint.id);
    html! {
        section.card #deliveries aria-labelledby="deliveries-title" {
            h2 #deliveries-title { "Delivery log" }
            p.hint { "Every event sent to this endpoint, newest first. Open one to see its attempts and the receiver's answers." }
            @if deliveries.is_empty() {
                p.muted #no-deliveries { @if cursor.is_some() { "No older deliveries." } @else { "Nothing delivered yet. Send a test event to try the endpoint." } }
            } @else {
                div.table-wrap {
                    table.table #delivery-log {
                        caption.visually-hidden { "Deliveries to " (endpoint.url) ", newest first" }
                        thead { tr {
                            th scope="col" { "Event type" }
                            th scope="col" { "Event ID" }
                            th scope="col" { "Status" }
                            th.num scope="col" { "Attempts" }
                            th scope="col" { "Last result" }
                            th scope="col" { "Next attempt" }
                            th scope="col" { "Created" }
                        } }
                        tbody {
                            @for d in deliveries {
                                tr data-event-id=(d.event_id) {
                                    td { a href=(delivery_url(tid, &endpoint.id, &d.event_id)) { code { (d.event_type) } } }
                                    td { code { (d.event_id) } }
                                    td { (delivery_badge(d.status)) }
                                    td.num { (d.attempts) }
                                    td.result-cell { (result_text(d.last_status, d.last_error.as_deref())) }
                                    td.nowrap {
                                        @match (d.status, d.next_at) {
                                            (DeliveryStatus::Pending, Some(at)) => (precise_time(at)),
                                            _ => span.muted { "—" },
                                        }
                                    }
                                    td.nowrap { (ui::ago(d.created_at, now)) }
                                }
                            }
                        }
                    }
                }
                nav.pagination aria-label="Pages of deliveries" {
                    @if cursor.is_some() { a.btn href={ (base) "#deliveries" } { "← Newest" } }
                    @if let Some(next) = next {
                        a.btn href={ (base) "?cursor=" (ui::url_encode(next)) "#deliveries" } rel="next" { "Older →" }
                    }
                }
            }
        }
    }
}

/// The one-time secret dialog: the key page's dialog (`data-secret-dialog`,
/// driven by the console script), worded for a signing secret, with how to
/// verify a delivery.
fn secret_dialog(endpoint: &Endpoint, d: &SecretDialog, endpoint_page: &str) -> Markup {
    html! {
        dialog #secret-dialog.dialog open data-secret-dialog data-next=(endpoint_page) closedby="none"
            aria-labelledby="secret-title" aria-describedby="secret-desc" {
            form method="dialog" #secret-form {
                h2 #secret-title { "Save the signing secret" }
                p #secret-desc {
                    "This is the only time this endpoint's signing secret is shown. keyward does not store it: "
                    "if you lose it, rotate the secret to get a new one."
                }
                @if let Some(n) = &d.note { p.alert.alert-info { (n) } }
                div.field {
                    label for="new-endpoint-id" { "Endpoint ID" }
                    div.copy-row {
                        input #new-endpoint-id.mono type="text" readonly value=(endpoint.id) spellcheck="false";
                        button.btn type="button" data-copy="new-endpoint-id" { "Copy ID" }
                    }
                }
                div.field {
                    label for="secret-value" { "Signing secret" }
                    div.copy-row {
                        textarea #secret-value.mono.secret readonly rows="2" spellcheck="false" autocomplete="off" { (d.secret.as_str()) }
                        button.btn.btn-primary type="button" data-copy="secret-value" { "Copy secret" }
                    }
                    p.hint { "Copy it into the receiver's configuration, for example an environment variable such as " code { "WEBHOOK_SECRET" } "." }
                }
                div.verify-note {
                    p { strong { "Verify every delivery." } " Each one is signed the Standard Webhooks way: compute HMAC-SHA256, keyed with the secret's bytes (the base64 after " code { "whsec_" } "), over "
                        code { "{webhook-id}.{webhook-timestamp}.{body}" } ", and compare it with each " code { "v1," } " signature in " code { "webhook-signature" } "; refuse timestamps more than 5 minutes off. "
                        "The official " code { "standardwebhooks" } " libraries do all of this: " code { "new Webhook(secret).verify(body, headers)" } "." }
                }
                p.visually-hidden #copy-status role="status" aria-live="polite" {}
                div.ack {
                    input #secret-ack type="checkbox" name="ack" required aria-describedby="ack-hint";
                    label for="secret-ack" { "I have stored the signing secret in a safe place" }
                }
                p.field-error #ack-hint hidden { "Tick the box to confirm you stored the secret: it cannot be shown again." }
                div.dialog-actions {
                    button.btn.btn-primary #secret-done type="submit" value="done" { "Done" }
                }
            }
        }
    }
}

/// A refused form on an endpoint's page: back to the page with the form's
/// state (post-redirect-get), or the page answered in place if too large.
async fn refuse_on_endpoint(
    state: &ConsoleState,
    signed: &SignedIn,
    access: &TenantAccess,
    endpoint: &Endpoint,
    forms: Forms,
    status: StatusCode,
) -> Result<Response, ConsoleError> {
    let to = endpoint_url(&access.tenant.id, &endpoint.id);
    let no_errors = Errors::default();
    let fl = if let Some((form, errors)) = &forms.edit {
        form.to_flash(Flash::new(to, "edit", status, errors))
    } else if let Some((overlap, errors)) = &forms.rotate {
        Flash::new(to, "rotate", status, errors).field("overlap_hours", overlap)
    } else if let Some(errors) = &forms.delete {
        Flash::new(to, "delete", status, errors)
    } else {
        Flash::new(
            to,
            "actions",
            status,
            forms.actions.as_ref().unwrap_or(&no_errors),
        )
    };
    match flash::redirect(state, signed, &fl) {
        Some(res) => Ok(res),
        None => {
            let page = DetailPage {
                forms,
                dialog: None,
                cursor: None,
                status,
            };
            detail_view(state, signed, access, endpoint, page).await
        }
    }
}

/// A loaded endpoint page for a state change: the access, the endpoint,
/// and the user's role checked for `what`.
async fn writable_endpoint(
    state: &ConsoleState,
    signed: &SignedIn,
    tid: &str,
    eid: &str,
    what: &str,
) -> Result<(TenantAccess, Endpoint), ConsoleError> {
    let access = TenantAccess::load(state, signed, tid).await?;
    if !access.can_write_webhooks() {
        return Err(access.refuse(what));
    }
    let endpoint = tenant_endpoint(state, &access, signed, eid).await?;
    Ok((access, endpoint))
}

/// Saves the edit form.
pub async fn update(
    State(state): State<ConsoleState>,
    Path((tid, eid)): Path<(String, String)>,
    f: SignedForm,
) -> Result<Response, ConsoleError> {
    let (access, endpoint) =
        writable_endpoint(&state, &f.signed, &tid, &eid, "change webhook endpoints").await?;
    let form = EndpointForm::from_form(&f.form);
    let mut errors = Errors::default();
    if form.url.is_empty() {
        errors.field("url", "Give the URL keyward should send events to.");
    }
    let types = parse_event_types(&form.event_types);
    if types.is_empty() {
        errors.field(
            "event_types",
            "List at least one event type or pattern, such as key.* or * for every event.",
        );
    }
    let status = if errors.is_empty() {
        let changes = EndpointChanges {
            // Unchanged URLs are not checked again (their host may resolve
            // differently now; that is the deliverer's concern).
            url: (form.url != endpoint.url).then(|| form.url.clone()),
            description: Some(form.description.clone()),
            event_types: Some(types),
            enabled: Some(form.enabled),
        };
        match state
            .manage
            .update_endpoint(&access.actor(&f.signed), &endpoint.id, changes)
            .await
        {
            Ok(_) => {
                return Ok(Redirect::to(&format!(
                    "{}?done=updated",
                    endpoint_url(&access.tenant.id, &endpoint.id)
                ))
                .into_response())
            }
            Err(ManageError::Validation(list)) => {
                absorb(&mut errors, list);
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Err(e) => {
                errors.general(as_general(e)?);
                StatusCode::CONFLICT
            }
        }
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let forms = Forms {
        edit: Some((form, errors)),
        ..Forms::default()
    };
    refuse_on_endpoint(&state, &f.signed, &access, &endpoint, forms, status).await
}

/// "Enable endpoint" / "Disable endpoint".
pub async fn set_enabled(
    State(state): State<ConsoleState>,
    Path((tid, eid)): Path<(String, String)>,
    f: SignedForm,
) -> Result<Response, ConsoleError> {
    let (access, endpoint) =
        writable_endpoint(&state, &f.signed, &tid, &eid, "change webhook endpoints").await?;
    let enabled = match f.form.text("enabled").as_str() {
        "1" => true,
        "0" => false,
        _ => {
            return Err(ConsoleError::BadRequest(
                "Say whether to enable (1) or disable (0) the endpoint.".into(),
            ))
        }
    };
    let changes = EndpointChanges {
        enabled: Some(enabled),
        ..EndpointChanges::default()
    };
    match state
        .manage
        .update_endpoint(&access.actor(&f.signed), &endpoint.id, changes)
        .await
    {
        Ok(_) => {
            let done = if enabled { "enabled" } else { "disabled" };
            Ok(Redirect::to(&format!(
                "{}?done={done}",
                endpoint_url(&access.tenant.id, &endpoint.id)
            ))
            .into_response())
        }
        Err(e) => {
            let mut errors = Errors::default();
            errors.general(as_general(e)?);
            let forms = Forms {
                actions: Some(errors),
                ..Forms::default()
            };
            refuse_on_endpoint(
                &state,
                &f.signed,
                &access,
                &endpoint,
                forms,
                StatusCode::CONFLICT,
            )
            .await
        }
    }
}

/// "Send test event": a `webhook.test` event to this endpoint only.
pub async fn send_test(
    State(state): State<ConsoleState>,
    Path((tid, eid)): Path<(String, String)>,
    f: SignedForm,
) -> Result<Response, ConsoleError> {
    let (access, endpoint) = writable_endpoint(
        &state,
        &f.signed,
        &tid,
        &eid,
        "send test events to webhook endpoints",
    )
    .await?;
    match state
        .manage
        .send_test_event(&access.actor(&f.signed), &endpoint.id)
        .await
    {
        Ok(_) => Ok(Redirect::to(&format!(
            "{}?done=test_sent#deliveries",
            endpoint_url(&access.tenant.id, &endpoint.id)
        ))
        .into_response()),
        Err(e) => {
            let mut errors = Errors::default();
            errors.general(as_general(e)?);
            let forms = Forms {
                actions: Some(errors),
                ..Forms::default()
            };
            refuse_on_endpoint(
                &state,
                &f.signed,
                &access,
                &endpoint,
                forms,
                StatusCode::CONFLICT,
            )
            .await
        }
    }
}

/// The overlap field: whole hours from 0 to [`MAX_OVERLAP_HOURS`].
pub(crate) fn parse_overlap_hours(typed: &str) -> Result<u64, &'static str> {
    match typed.trim().parse::<u64>() {
        Ok(h) if h <= MAX_OVERLAP_HOURS => Ok(h),
        Ok(_) => Err("The overlap is at most 168 hours (7 days)."),
        Err(_) => Err("Give the overlap as a whole number of hours, from 0 to 168."),
    }
}

/// "Rotate secret": a new secret, shown once, on the endpoint's page.
pub async fn rotate(
    State(state): State<ConsoleState>,
    Path((tid, eid)): Path<(String, String)>,
    f: SignedForm,
) -> Result<Response, ConsoleError> {
    let (access, endpoint) = writable_endpoint(
        &state,
        &f.signed,
        &tid,
        &eid,
        "rotate webhook signing secrets",
    )
    .await?;
    let typed = f.form.text("overlap_hours");
    let mut errors = Errors::default();
    let status = match parse_overlap_hours(&typed) {
        Err(message) => {
            errors.field("overlap_hours", message);
            StatusCode::UNPROCESSABLE_ENTITY
        }
        Ok(hours) => match state
            .manage
            .rotate_endpoint_secret(&access.actor(&f.signed), &endpoint.id, Some(hours * 3600))
            .await
        {
            Ok(rotated) => {
                let note = match rotated.endpoint.previous_until {
                    Some(until) if hours > 0 => html! {
                        "The previous secret keeps signing deliveries, beside the new one, until " (ui::time(until)) ": deploy the new secret to the receiver before then."
                    },
                    _ => {
                        html! { "The previous secret stopped signing now: only the new one signs deliveries." }
                    }
                };
                let page = DetailPage {
                    forms: Forms::default(),
                    dialog: Some(SecretDialog {
                        secret: rotated.secret.to_whsec(),
                        note: Some(note),
                    }),
                    cursor: None,
                    status: StatusCode::CREATED,
                };
                return detail_view(&state, &f.signed, &access, &rotated.endpoint, page).await;
            }
            Err(ManageError::Validation(list)) => {
                absorb(&mut errors, list);
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Err(e) => {
                errors.general(as_general(e)?);
                StatusCode::CONFLICT
            }
        },
    };
    let forms = Forms {
        rotate: Some((typed, errors)),
        ..Forms::default()
    };
    refuse_on_endpoint(&state, &f.signed, &access, &endpoint, forms, status).await
}

/// "Delete endpoint", once confirmed.
pub async fn delete(
    State(state): State<ConsoleState>,
    Path((tid, eid)): Path<(String, String)>,
    f: SignedForm,
) -> Result<Response, ConsoleError> {
    let (access, endpoint) =
        writable_endpoint(&state, &f.signed, &tid, &eid, "delete webhook endpoints").await?;
    if !f.form.checked("confirm") {
        let mut errors = Errors::default();
        errors.field(
            "confirm",
            "Tick the box to confirm you want to delete this endpoint. Nothing was deleted.",
        );
        let forms = Forms {
            delete: Some(errors),
            ..Forms::default()
        };
        return refuse_on_endpoint(
            &state,
            &f.signed,
            &access,
            &endpoint,
            forms,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    state
        .manage
        .delete_endpoint(&access.actor(&f.signed), &endpoint.id)
        .await?;
    Ok(Redirect::to(&format!("{}?done=deleted", list_url(&access.tenant.id))).into_response())
}

#[derive(Debug, Default, Deserialize)]
pub struct DeliveryQuery {
    done: Option<String>,
}

/// `/console/t/{tid}/webhooks/{eid}/deliveries/{event_id}`: one delivery,
/// its event and its attempts.
pub async fn delivery(
    State(state): State<ConsoleState>,
    signed: SignedIn,
    Path((tid, eid, event_id)): Path<(String, String, String)>,
    Query(q): Query<DeliveryQuery>,
) -> Result<Response, ConsoleError> {
    let access = TenantAccess::load(&state, &signed, &tid).await?;
    let endpoint = tenant_endpoint(&state, &access, &signed, &eid).await?;
    let log = state
        .manage
        .delivery_log(&access.actor(&signed), &endpoint.id, &event_id)
        .await?;
    let tid = &access.tenant.id;
    let here = delivery_url(tid, &endpoint.id, &log.delivery.event_id);
    let (errors, status) = match signed.flash_for(&here, "redeliver") {
        Some(fl) => (fl.errors(), fl.status()),
        None => (Errors::default(), StatusCode::OK),
    };
    let d = &log.delivery;
    let writable = access.can_write_webhooks();
    let payload = serde_json::to_string_pretty(&log.event.data).unwrap_or_default();
    let content = html! {
        nav.breadcrumb aria-label="Breadcrumb" {
            a href=(list_url(tid)) { "Webhooks" }
            span aria-hidden="true" { " / " }
            a href=(endpoint_url(tid, &endpoint.id)) { "Endpoint" }
            span aria-hidden="true" { " / " }
            span aria-current="page" { "Delivery" }
        }
        div.page-header {
            div {
                h1 #delivery-title { "Delivery of " code { (d.event_type) } " " (delivery_badge(d.status)) }
                p.lead { "To " code.break-all { (endpoint.url) } }
            }
        }
        (done_notice(q.done.as_deref()))
        section.card aria-labelledby="delivery-details-title" {
            h2 #delivery-details-title { "Details" }
            dl.details {
                div { dt { "Event ID" } dd { code #delivery-event-id { (d.event_id) } span.hint { " (the " code { "webhook-id" } " header: the same on every attempt, for deduplication)" } } }
                div { dt { "Event type" } dd { code { (d.event_type) } } }
                div { dt { "Event time" } dd { (ui::time(log.event.at)) } }
                div { dt { "Status" } dd { (delivery_badge(d.status)) } }
                div { dt { "Attempts" } dd { (d.attempts) } }
                div { dt { "Last result" } dd { (result_text(d.last_status, d.last_error.as_deref())) } }
                @if let (DeliveryStatus::Pending, Some(at)) = (d.status, d.next_at) {
                    div { dt { "Next attempt" } dd { (precise_time(at)) } }
                }
            }
            @if writable && d.status != DeliveryStatus::Cancelled {
                (errors.summary())
                form.stack.redeliver-form method="post" action={ (here) "/redeliver" } {
                    (ui::csrf(&signed.csrf))
                    p.hint #redeliver-hint { "Sends the event again now, with a fresh retry schedule. Receivers should deduplicate by " code { "webhook-id" } "." }
                    div.form-actions { button.btn.btn-primary type="submit" aria-describedby="redeliver-hint" { "Redeliver" } }
                }
            }
        }
        section.card aria-labelledby="attempts-title" #attempts {
            h2 #attempts-title { "Attempts" }
            @if log.attempts.is_empty() {
                p.muted { "No attempt yet: it is due " @match d.next_at { Some(at) => { "at " (ui::time(at)) }, None => "soon" } "." }
            } @else {
                (attempts_table(&log.attempts))
            }
        }
        section.card aria-labelledby="payload-title" {
            h2 #payload-title { "Event data" }
            p.hint { "The " code { "data" } " of the payload, as sent." }
            pre.payload #event-data tabindex="0" { (payload) }
        }
    };
    let chrome = Chrome {
        signed: &signed,
        access: Some(&access),
        section: Section::Webhooks,
    };
    Ok(ui::html(
        status,
        ui::page("Webhook delivery", &chrome, content),
    ))
}

fn attempts_table(attempts: &[Attempt]) -> Markup {
    html! {
        div.table-wrap {
            table.table #attempts-table {
                caption.visually-hidden { "Attempts, oldest first" }
                thead { tr {
                    th.num scope="col" { "#" }
                    th scope="col" { "Time" }
                    th scope="col" { "Result" }
                    th.num scope="col" { "Latency" }
                    th scope="col" { "Response" }
                } }
                tbody {
                    @for (i, a) in attempts.iter().enumerate() {
                        tr.attempt-ok[a.ok] {
                            td.num { (i + 1) }
                            td.nowrap { (precise_time(a.at)) }
                            td.result-cell {
                                @if a.ok { span class="badge badge-status badge-delivery-delivered" { "ok" } " " }
                                @else { span class="badge badge-status badge-delivery-failed" { "failed" } " " }
                                (result_text(a.status, a.error.as_deref()))
                            }
                            td.num.nowrap { (a.latency_ms) " ms" }
                            td.response-cell {
                                @if a.response.is_empty() {
                                    span.muted { "—" }
                                } @else {
                                    @let (shown, cut) = truncate(&a.response, RESPONSE_SHOWN);
                                    pre.response { (shown) @if cut { "…" } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// "Redeliver": due now with a fresh schedule.
pub async fn redeliver(
    State(state): State<ConsoleState>,
    Path((tid, eid, event_id)): Path<(String, String, String)>,
    f: SignedForm,
) -> Result<Response, ConsoleError> {
    let (access, endpoint) =
        writable_endpoint(&state, &f.signed, &tid, &eid, "redeliver webhook events").await?;
    let here = delivery_url(&access.tenant.id, &endpoint.id, &event_id);
    match state
        .manage
        .redeliver(&access.actor(&f.signed), &endpoint.id, &event_id)
        .await
    {
        Ok(_) => Ok(Redirect::to(&format!("{here}?done=redelivered")).into_response()),
        Err(e) => {
            let mut errors = Errors::default();
            errors.general(as_general(e)?);
            let fl = Flash::new(here.clone(), "redeliver", StatusCode::CONFLICT, &errors);
            Ok(flash::redirect(&state, &f.signed, &fl)
                .unwrap_or_else(|| Redirect::to(&here).into_response()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_split_on_commas_spaces_and_lines() {
        assert_eq!(
            parse_event_types(" key.*, webhook.test\nalert.new_ip\t*,, "),
            vec!["key.*", "webhook.test", "alert.new_ip", "*"]
        );
        assert!(parse_event_types(" , \n").is_empty());
    }

    #[test]
    fn responses_are_cut_on_character_boundaries() {
        assert_eq!(truncate("short", 10), ("short", false));
        assert_eq!(truncate("exactly", 7), ("exactly", false));
        assert_eq!(truncate("éèêë", 2), ("éè", true));
        assert_eq!(truncate("", 0), ("", false));
    }

    #[test]
    fn a_result_reads_as_the_status_or_the_error() {
        assert_eq!(result_text(Some(200), None), "HTTP 200");
        assert_eq!(result_text(Some(500), Some("")), "HTTP 500");
        assert_eq!(
            result_text(Some(400), Some("signature refused")),
            "HTTP 400: signature refused"
        );
        assert_eq!(
            result_text(None, Some("connection refused")),
            "connection refused"
        );
        assert_eq!(result_text(None, None), "—");
    }

    #[test]
    fn overlaps_are_whole_hours_up_to_a_week() {
        assert_eq!(parse_overlap_hours("24"), Ok(24));
        assert_eq!(parse_overlap_hours(" 0 "), Ok(0));
        assert_eq!(parse_overlap_hours("168"), Ok(168));
        assert!(parse_overlap_hours("169").is_err());
        assert!(parse_overlap_hours("1.5").is_err());
        assert!(parse_overlap_hours("-1").is_err());
        assert!(parse_overlap_hours("").is_err());
    }

    #[test]
    fn field_errors_land_on_the_form_fields() {
        let mut e = Errors::default();
        absorb(
            &mut e,
            vec![
                FieldError::new("event_types[1]", "invalid_event_filter", "bad `x`"),
                FieldError::new("url", "forbidden_address", "The endpoint address 10.0.0.1 is private; webhooks are sent only to public addresses."),
                FieldError::new("overlap_seconds", "out_of_range", "at most 7 days"),
                FieldError::new("tenant_id", "required", "no tenant"),
            ],
        );
        assert_eq!(e.for_field("event_types"), vec!["Bad x."]);
        assert_eq!(e.for_field("url").len(), 1);
        assert_eq!(e.for_field("overlap_hours"), vec!["At most 7 days."]);
        assert_eq!(e.general, vec!["No tenant."]);
    }

    #[test]
    fn precise_times_show_milliseconds() {
        let at = 1_777_817_045_120; // 2026-05-03T14:04:05.120Z
        let html = precise_time(at).into_string();
        assert!(html.contains(">2026-05-03 14:04:05.120 UTC<"), "{html}");
        assert!(precise_time(at - 120)
            .into_string()
            .contains("14:04:05.000 UTC"));
    }

    #[test]
    fn done_notices_come_only_from_known_codes() {
        assert!(done_notice(Some("test_sent"))
            .into_string()
            .contains("Test event sent"));
        assert_eq!(done_notice(Some("<script>")).into_string(), "");
        assert_eq!(done_notice(None).into_string(), "");
    }
}
