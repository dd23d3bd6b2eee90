//! API key pages: the list (filters, pagination), creation, the one-time
//! secret dialog, and a key's detail with its usage (`usage::key_section`),
//! its alerts (`alerts::key_section`), edit, rotate and revoke.
//!
//! Every action calls the management service with the user's actor
//! ([`TenantAccess::actor`]), as the API does, so the console cannot
//! disagree with the API about what is valid or allowed. The secret exists in exactly one
//! response: the page answering the create or rotate POST, whose dialog the
//! script removes from the page once the user confirms they stored it.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use keyward_core::clock::Timestamp;
use keyward_views::KeyViewExt;
use maud::{html, Markup, PreEscaped};
use serde::Deserialize;

use super::access::TenantAccess;
use super::flash::{self, Flash};
use super::form::FormData;
use super::session::{SignedForm, SignedIn};
use super::ui::{self, Chrome, Errors, Section};
use super::usage::{self, Span};
use super::ConsoleError;
use crate::ConsoleState;
use keyward_manage::{FieldError, KeyChanges, KeyQuery, ManageError, NewKey};
use keyward_wire::{KeyPage, KeyView, KeyWithSecret};

const PAGE_SIZE: u32 = 20;

/// Rotation grace choices: seconds and label.
const GRACE: &[(u64, &str)] = &[
    (0, "Immediately — the current secret stops working now"),
    (3600, "After 1 hour"),
    (86_400, "After 24 hours"),
    (604_800, "After 7 days"),
];

/// Expiry choices on the key form.
const EXPIRY: &[(&str, &str)] = &[
    ("never", "Never"),
    ("7d", "In 7 days"),
    ("30d", "In 30 days"),
    ("90d", "In 90 days"),
    ("365d", "In 1 year"),
    ("date", "On a date…"),
];

fn ms(rfc3339: &str) -> i64 {
    Timestamp::parse_rfc3339(rfc3339).map_or(0, |t| t.0)
}

fn key_url(tid: &str, kid: &str) -> String {
    format!("/console/t/{tid}/keys/{kid}")
}

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    environment: Option<String>,
    status: Option<String>,
    cursor: Option<String>,
    limit: Option<u32>,
}

pub async fn list(
    State(state): State<ConsoleState>,
    signed: SignedIn,
    Path(tid): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ConsoleError> {
    let access = TenantAccess::load(&state, &signed, &tid).await?;
    let actor = access.actor(&signed);
    let environment = q.environment.filter(|e| !e.is_empty());
    let status = q.status.filter(|s| !s.is_empty());
    let cursor = q.cursor.filter(|c| !c.is_empty());
    let query = KeyQuery {
        tenant_id: Some(access.tenant.id.clone()),
        environment: environment.clone(),
        status: status.clone(),
        kind: None,
        paging: keyward_views::paging(
            Some(q.limit.unwrap_or(PAGE_SIZE).clamp(1, 100)),
            cursor.as_deref(),
        ),
    };
    let page = match state.manage.list_keys(&actor, query).await {
        Ok(page) => {
            let now = state.clock.now();
            let (data, next_cursor, has_more) =
                keyward_views::page_parts(&page, |k| KeyView::new(k, now));
            KeyPage {
                data,
                next_cursor,
                has_more,
            }
        }
        Err(ManageError::Validation(_) | ManageError::InvalidCursor) => {
            return Err(ConsoleError::BadRequest(
                "The filter or page link is not valid. Clear the filters and try again.".into(),
            ))
        }
        Err(e) => return Err(e.into()),
    };
    // Marked leaked: one indexed read for the page's keys.
    let ids: Vec<String> = page.data.iter().map(|k| k.id.clone()).collect();
    let leaked = state
        .manage
        .leaked_keys(&actor, &ids)
        .await
        .unwrap_or_default();
    let now = state.clock.now().0;
    let filtered = environment.is_some() || status.is_some();
    let filter_query = |cursor: Option<&str>| {
        let mut parts = Vec::new();
        if let Some(e) = &environment {
            parts.push(format!("environment={}", ui::url_encode(e)));
        }
        if let Some(s) = &status {
            parts.push(format!("status={}", ui::url_encode(s)));
        }
        if let Some(c) = cursor {
            parts.push(format!("cursor={}", ui::url_encode(c)));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!("?{}", parts.join("&"))
        }
    };
    let base = format!("/console/t/{}/keys", access.tenant.id);
    let envs: Vec<&str> = state.settings.format.environments().collect();
    let content = html! {
        div.page-header {
            div {
                h1 { "API keys" }
                p.lead { "Keys let your customers' code call your API as " strong { (access.tenant.name) } ". keyward keeps only a hash of each secret." }
            }
            @if access.can_write_keys() {
                a.btn.btn-primary href={ (base) "/new" } { span aria-hidden="true" { "+ " } "Create key" }
            }
        }
        form.filters method="get" action=(base) aria-label="Filter keys" {
            div.field {
                label for="filter-env" { "Environment" }
                select #filter-env name="environment" {
                    option value="" selected[environment.is_none()] { "All environments" }
                    @for e in &envs {
                        option value=(e) selected[environment.as_deref() == Some(*e)] { (e) }
                    }
                }
            }
            div.field {
                label for="filter-status" { "Status" }
                select #filter-status name="status" {
                    option value="" selected[status.is_none()] { "All statuses" }
                    @for s in ["active", "disabled", "expired", "revoked"] {
                        option value=(s) selected[status.as_deref() == Some(s)] { (s) }
                    }
                }
            }
            div.field.field-submit {
                button.btn type="submit" { "Apply filters" }
            }
            @if filtered {
                div.field.field-submit { a.btn.btn-ghost href=(base) { "Clear" } }
            }
        }
        @if page.data.is_empty() {
            div.empty-state {
                span.empty-icon aria-hidden="true" { (PreEscaped(ui::ICON_EMPTY_KEY)) }
                @if filtered || cursor.is_some() {
                    h2 { "No keys match these filters" }
                    p { "Try another environment or status, or " a href=(base) { "clear the filters" } "." }
                } @else {
                    h2 { "No API keys yet" }
                    @if access.can_write_keys() {
                        p { "Create a key for each integration, so you can revoke one without breaking the others." }
                        a.btn.btn-primary href={ (base) "/new" } { "Create your first key" }
                    } @else {
                        p { "When an owner, admin or developer creates a key, it appears here." }
                    }
                }
            }
        } @else {
            div.table-wrap {
                table.table.keys-table {
                    caption.visually-hidden { "API keys of " (access.tenant.name) }
                    thead {
                        tr {
                            th scope="col" { "Name" }
                            th scope="col" { "Key" }
                            th scope="col" { "Environment" }
                            th scope="col" { "Scopes" }
                            th scope="col" { "Status" }
                            th scope="col" { "Created" }
                            th scope="col" { "Last used" }
                        }
                    }
                    tbody {
                        @for k in &page.data {
                            tr {
                                td { a.strong href=(key_url(&access.tenant.id, &k.id)) { (k.name) } }
                                td { code.key-start { (k.start) "…" } }
                                td { (ui::env_badge(&k.environment)) }
                                td { (scope_chips(&k.scopes, 3)) }
                                td {
                                    (ui::key_status(&k.status, k.grace_until.as_deref().map(ms)))
                                    @if leaked.contains(&k.id) { " " span class="badge badge-leaked" title="Reported leaked" { "leaked" } }
                                }
                                td.nowrap { (ui::time(ms(&k.created_at))) }
                                td.nowrap {
                                    @match &k.last_used_at {
                                        Some(t) => (ui::ago(ms(t), now)),
                                        None => span.muted { "Never" },
                                    }
                                }
                            }
                        }
                    }
                }
            }
            nav.pagination aria-label="Pages" {
                @if cursor.is_some() {
                    a.btn href={ (base) (filter_query(None)) } { "← First page" }
                }
                @if let Some(next) = &page.next_cursor {
                    a.btn href={ (base) (filter_query(Some(next))) } rel="next" { "Next page →" }
                }
            }
        }
    };
    let chrome = Chrome {
        signed: &signed,
        access: Some(&access),
        section: Section::Keys,
    };
    Ok(ui::html(
        StatusCode::OK,
        ui::page("API keys", &chrome, content),
    ))
}

fn scope_chips(scopes: &[String], max: usize) -> Markup {
    html! {
        @if scopes.is_empty() {
            span.muted { "none" }
        } @else {
            ul.chips {
                @for s in scopes.iter().take(max) { li.chip { (s) } }
                @if scopes.len() > max {
                    li.chip.chip-more title=(scopes[max..].join(", ")) { "+" (scopes.len() - max) " more" }
                }
            }
        }
    }
}

/// What the key form holds, as typed.
#[derive(Debug, Default)]
struct KeyForm {
    name: String,
    environment: String,
    scopes: Vec<String>,
    expiry: String,
    expiry_date: String,
    ip_allowlist: String,
    enabled: bool,
}

impl KeyForm {
    fn from_form(f: &FormData) -> KeyForm {
        KeyForm {
            name: f.text("name"),
            environment: f.text("environment"),
            scopes: f.all("scopes"),
            expiry: f.text("expiry"),
            expiry_date: f.text("expiry_date"),
            ip_allowlist: f.get("ip_allowlist").to_owned(),
            enabled: f.checked("enabled"),
        }
    }

    /// The form as a refused submission left it.
    fn from_flash(f: &Flash) -> KeyForm {
        KeyForm {
            name: f.get("name").to_owned(),
            environment: f.get("environment").to_owned(),
            scopes: f.all("scopes"),
            expiry: f.get("expiry").to_owned(),
            expiry_date: f.get("expiry_date").to_owned(),
            ip_allowlist: f.get("ip_allowlist").to_owned(),
            enabled: f.get("enabled") == "1",
        }
    }

    fn to_flash(&self, flash: Flash) -> Flash {
        flash
            .field("name", &self.name)
            .field("environment", &self.environment)
            .fields("scopes", &self.scopes)
            .field("expiry", &self.expiry)
            .field("expiry_date", &self.expiry_date)
            .field("ip_allowlist", &self.ip_allowlist)
            .field("enabled", if self.enabled { "1" } else { "" })
    }

    fn from_key(k: &KeyView) -> KeyForm {
        KeyForm {
            name: k.name.clone(),
            environment: k.environment.clone(),
            scopes: k.scopes.clone(),
            expiry: "keep".into(),
            expiry_date: String::new(),
            ip_allowlist: k.ip_allowlist.join("\n"),
            enabled: k.enabled,
        }
    }

    fn allowlist(&self) -> Vec<String> {
        self.ip_allowlist
            .split(['\n', ',', ' ', '\r', '\t'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The expiry as the service takes it: `None` keeps it, `Some(None)`
    /// clears it, a time sets it.
    fn expires_at(&self, now: Timestamp, errors: &mut Errors) -> Option<Option<String>> {
        let days = |d: i64| Some(Some(now.plus_seconds(d * 86_400).to_rfc3339()));
        match self.expiry.as_str() {
            "keep" => None,
            "" | "never" => Some(None),
            "7d" => days(7),
            "30d" => days(30),
            "90d" => days(90),
            "365d" => days(365),
            "date" => {
                let at = format!("{}T23:59:59Z", self.expiry_date);
                match Timestamp::parse_rfc3339(&at) {
                    Ok(t) if t > now => Some(Some(t.to_rfc3339())),
                    Ok(_) => {
                        errors.field("expires_at", "Pick a date in the future.");
                        None
                    }
                    Err(_) => {
                        errors.field("expires_at", "Pick the date the key should stop working.");
                        None
                    }
                }
            }
            _ => {
                errors.field("expires_at", "Choose when the key expires.");
                None
            }
        }
    }
}

/// API field errors onto the form's fields, with messages that say what to do.
fn absorb(errors: &mut Errors, api_errors: Vec<FieldError>, form: &KeyForm) {
    for e in api_errors {
        let field = e.field.split('[').next().unwrap_or("").to_owned();
        let message = match (field.as_str(), e.code) {
            ("ip_allowlist", _) => {
                let idx: usize = e
                    .field
                    .trim_start_matches("ip_allowlist[")
                    .trim_end_matches(']')
                    .parse()
                    .unwrap_or(usize::MAX);
                let entry = form.allowlist().get(idx).cloned().unwrap_or_default();
                format!(
                    "“{entry}” is not an IP address or CIDR range. Use forms like 203.0.113.7, 10.0.0.0/8 or 2001:db8::/32."
                )
            }
            ("environment", _) => format!("Choose an environment. {}", ui::sentence(&e.message)),
            _ => ui::sentence(&e.message),
        };
        errors.field(&field, message);
    }
}

/// An API message for the page: code spans (`vox:read`) as plain text.
fn plain(detail: &str) -> String {
    detail.replace('`', "")
}

fn name_taken(errors: &mut Errors, name: &str, tenant: &str) {
    errors.field(
        "name",
        format!(
            "A key named “{name}” already exists in {tenant}. Key names are unique within a tenant: \
             choose another name, or revoke the existing key first."
        ),
    );
}

/// A scope on the key form: its name and what it allows.
struct ScopeOption<'a> {
    name: &'a str,
    description: Option<&'a str>,
}

/// The scopes to offer, in catalog order: those of the deployment's catalog
/// the user may grant (within the tenant's ceiling; keyward's own
/// management scopes only to operators, since they are for the deployment's
/// own tooling, not for customers' keys), and any the key already holds
/// (wildcards set through the API, scopes an operator granted), so that
/// saving the form never drops one silently.
fn scope_options<'a>(
    state: &'a ConsoleState,
    access: &TenantAccess,
    held: &'a [String],
) -> (Vec<ScopeOption<'a>>, Vec<ScopeOption<'a>>) {
    let operator = access.standing == super::access::Standing::Operator;
    let mut own = Vec::new();
    let mut keyward = Vec::new();
    for e in state.settings.catalog.entries() {
        let name = e.name.as_str();
        let is_keyward = name.starts_with("keyward:");
        let offered = access.may_grant(state, name) && (operator || !is_keyward);
        if !offered && !held.iter().any(|h| h == name) {
            continue;
        }
        let option = ScopeOption {
            name,
            description: e.description.as_deref(),
        };
        if is_keyward {
            keyward.push(option);
        } else {
            own.push(option);
        }
    }
    for s in held {
        let listed = |v: &[ScopeOption<'_>]| v.iter().any(|o| o.name == s.as_str());
        if listed(&own) || listed(&keyward) {
            continue;
        }
        let option = ScopeOption {
            name: s,
            description: None,
        };
        if s.starts_with("keyward:") {
            keyward.push(option);
        } else {
            own.push(option);
        }
    }
    (own, keyward)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FormMode {
    Create,
    Edit,
}

fn key_fields(
    state: &ConsoleState,
    access: &TenantAccess,
    form: &KeyForm,
    e: &Errors,
    mode: FormMode,
    current_expiry: Option<&str>,
) -> Markup {
    let (own, keyward) = scope_options(state, access, &form.scopes);
    let envs: Vec<&str> = state.settings.format.environments().collect();
    let scope_box = |o: &ScopeOption<'_>| {
        let id = format!("scope-{}", o.name.replace([':', '*', '.', '/'], "-"));
        let desc_id = format!("{id}-desc");
        html! {
            li.check {
                input type="checkbox" id=(id) name="scopes" value=(o.name)
                    checked[form.scopes.iter().any(|s| s == o.name)]
                    aria-describedby=[o.description.map(|_| desc_id.as_str())];
                div.check-text {
                    label for=(id) { code { (o.name) } }
                    @if let Some(d) = o.description {
                        span.scope-desc id=(desc_id) { (d) }
                    }
                }
            }
        }
    };
    html! {
        div.field {
            label for="key-name" { "Name" }
            input #key-name name="name" value=(form.name) required maxlength="128" autocomplete="off"
                placeholder="e.g. billing-service" aria-describedby={ "key-name-hint" @if e.has("name") { " name-error" } }
                aria-invalid=[e.has("name").then_some("true")];
            p.hint #key-name-hint { "Unique within " (access.tenant.name) ". Say where the key is used, so you know what breaks if you revoke it." }
            (e.show("name"))
        }
        @if mode == FormMode::Create {
            fieldset.field {
                legend { "Environment" }
                div.radio-row {
                    @for env in &envs {
                        label.radio-card {
                            input type="radio" name="environment" value=(env) checked[form.environment == *env] required;
                            span.radio-title { (env) }
                            span.hint { "Secrets start with " code { (state.settings.format.prefix_for(&keyward_core::secret::KeyKind::Environment((*env).to_owned())).unwrap_or("")) } }
                        }
                    }
                }
                (e.show("environment"))
            }
        }
        fieldset.field {
            legend { "Scopes" }
            p.hint { "What the key may do. Grant only what the integration needs." }
            @if own.is_empty() && keyward.is_empty() {
                p.muted { "This deployment declares no scopes (" code { "keys.scopes" } " in its configuration). The key will hold none." }
            }
            @if !own.is_empty() {
                ul.checks { @for s in &own { (scope_box(s)) } }
            }
            @if !keyward.is_empty() {
                p.subhead { "keyward management API" }
                ul.checks { @for s in &keyward { (scope_box(s)) } }
            }
            (e.show("scopes"))
        }
        div.field {
            label for="key-expiry" { "Expires" }
            div.inline-fields {
                select #key-expiry name="expiry" data-toggles="expiry-date-field" data-toggle-value="date"
                    aria-describedby=[e.described_by("expires_at")] {
                    @if mode == FormMode::Edit {
                        option value="keep" selected[form.expiry == "keep"] {
                            "Keep: " @match current_expiry { Some(t) => (t), None => "never" }
                        }
                    }
                    @for (v, label) in EXPIRY {
                        option value=(v) selected[form.expiry == *v || (form.expiry.is_empty() && *v == "never" && mode == FormMode::Create)] { (label) }
                    }
                }
                span #expiry-date-field.toggled hidden[form.expiry != "date"] {
                    label.visually-hidden for="key-expiry-date" { "Expiry date (UTC)" }
                    input #key-expiry-date type="date" name="expiry_date" value=(form.expiry_date);
                    span.hint { " end of day, UTC" }
                }
            }
            (e.show("expires_at"))
        }
        div.field {
            label for="key-ips" { "IP allowlist " span.optional { "(optional)" } }
            textarea #key-ips name="ip_allowlist" rows="3" spellcheck="false" placeholder="203.0.113.7\n10.0.0.0/8\n2001:db8::/32"
                aria-describedby={ "key-ips-hint" @if e.has("ip_allowlist") { " ip_allowlist-error" } }
                aria-invalid=[e.has("ip_allowlist").then_some("true")] { (form.ip_allowlist) }
            p.hint #key-ips-hint { "One address or CIDR range per line, IPv4 or IPv6. Empty allows every address." }
            (e.show("ip_allowlist"))
        }
        @if mode == FormMode::Edit {
            div.field.check {
                input #key-enabled type="checkbox" name="enabled" value="1" checked[form.enabled];
                label for="key-enabled" { "Enabled " span.hint { "— untick to refuse the key for a while without revoking it" } }
            }
        }
    }
}

pub async fn new_page(
    State(state): State<ConsoleState>,
    signed: SignedIn,
    Path(tid): Path<String>,
) -> Result<Response, ConsoleError> {
    let access = TenantAccess::load(&state, &signed, &tid).await?;
    if !access.can_write_keys() {
        return Err(access.refuse("create API keys"));
    }
    let path = format!("/console/t/{}/keys/new", access.tenant.id);
    if let Some(fl) = signed.flash_for(&path, "create") {
        let (form, errors) = (KeyForm::from_flash(fl), fl.errors());
        return Ok(new_view(
            &state,
            &signed,
            &access,
            &form,
            &errors,
            fl.status(),
        ));
    }
    let envs: Vec<&str> = state.settings.format.environments().collect();
    let form = KeyForm {
        environment: if envs.contains(&"test") {
            "test".into()
        } else {
            envs.first().map(|e| (*e).to_owned()).unwrap_or_default()
        },
        expiry: "never".into(),
        ..KeyForm::default()
    };
    Ok(new_view(
        &state,
        &signed,
        &access,
        &form,
        &Errors::default(),
        StatusCode::OK,
    ))
}

fn new_view(
    state: &ConsoleState,
    signed: &SignedIn,
    access: &TenantAccess,
    form: &KeyForm,
    e: &Errors,
    status: StatusCode,
) -> Response {
    let base = format!("/console/t/{}/keys", access.tenant.id);
    let content = html! {
        nav.breadcrumb aria-label="Breadcrumb" { a href=(base) { "API keys" } span aria-hidden="true" { " / " } span aria-current="page" { "New key" } }
        div.page-header { div { h1 { "Create an API key" } p.lead { "The secret is shown once, right after you create the key. Have a password manager or secret store ready." } } }
        section.card {
            (e.summary())
            form.stack method="post" action=(base) {
                (ui::csrf(&signed.csrf))
                (key_fields(state, access, form, e, FormMode::Create, None))
                div.form-actions {
                    button.btn.btn-primary type="submit" { "Create key" }
                    a.btn.btn-ghost href=(base) { "Cancel" }
                }
            }
        }
    };
    let chrome = Chrome {
        signed,
        access: Some(access),
        section: Section::Keys,
    };
    ui::html(status, ui::page("Create an API key", &chrome, content))
}

/// Creates the key through the API and answers with its page and the
/// secret dialog.
pub async fn create(
    State(state): State<ConsoleState>,
    Path(tid): Path<String>,
    f: SignedForm,
) -> Result<Response, ConsoleError> {
    let access = TenantAccess::load(&state, &f.signed, &tid).await?;
    if !access.can_write_keys() {
        return Err(access.refuse("create API keys"));
    }
    let form = KeyForm::from_form(&f.form);
    let mut errors = Errors::default();
    let expires_at = form.expires_at(state.clock.now(), &mut errors).flatten();
    if form.name.is_empty() {
        errors.field("name", "Give the key a name.");
    }
    if !errors.is_empty() {
        return Ok(refuse_new(
            &state,
            &f.signed,
            &access,
            &form,
            &errors,
            StatusCode::UNPROCESSABLE_ENTITY,
        ));
    }
    let input = NewKey {
        tenant_id: Some(access.tenant.id.clone()),
        name: form.name.clone(),
        environment: form.environment.clone(),
        scopes: form.scopes.clone(),
        ip_allowlist: form.allowlist(),
        expires_at,
        ..NewKey::default()
    };
    match state
        .manage
        .create_key(&access.actor(&f.signed), input)
        .await
    {
        Ok(issued) => {
            let KeyWithSecret { secret, key } = keyward_views::with_secret(&issued);
            let dialog = SecretDialog {
                secret,
                note: None,
                how: how_to_send(&state.settings.accepted),
            };
            Ok(detail_view(
                &state,
                &f.signed,
                &access,
                &key,
                &Forms::default(),
                Some(dialog),
                StatusCode::CREATED,
            )
            .await)
        }
        Err(ManageError::Validation(list)) => {
            absorb(&mut errors, list, &form);
            Ok(refuse_new(
                &state,
                &f.signed,
                &access,
                &form,
                &errors,
                StatusCode::UNPROCESSABLE_ENTITY,
            ))
        }
        Err(ManageError::NameTaken) => {
            name_taken(&mut errors, &form.name, &access.tenant.name);
            Ok(refuse_new(
                &state,
                &f.signed,
                &access,
                &form,
                &errors,
                StatusCode::CONFLICT,
            ))
        }
        Err(ManageError::ScopeNotGrantable { detail, .. }) => {
            errors.field("scopes", plain(&detail));
            Ok(refuse_new(
                &state,
                &f.signed,
                &access,
                &form,
                &errors,
                StatusCode::FORBIDDEN,
            ))
        }
        Err(e) => Err(e.into()),
    }
}

/// A refused new-key form: back to the form's page with what was typed and
/// what was wrong (post-redirect-get), or, if that is too large to carry,
/// the form answered in place.
fn refuse_new(
    state: &ConsoleState,
    signed: &SignedIn,
    access: &TenantAccess,
    form: &KeyForm,
    errors: &Errors,
    status: StatusCode,
) -> Response {
    let path = format!("/console/t/{}/keys/new", access.tenant.id);
    let fl = form.to_flash(Flash::new(path, "create", status, errors));
    flash::redirect(state, signed, &fl)
        .unwrap_or_else(|| new_view(state, signed, access, form, errors, status))
}

/// A refused form on a key's page: back to the page with the form's state
/// (post-redirect-get), or that page answered in place if it is too large.
async fn refuse_on_key(
    state: &ConsoleState,
    signed: &SignedIn,
    access: &TenantAccess,
    key: &KeyView,
    forms: Forms,
    status: StatusCode,
) -> Response {
    let to = key_url(&access.tenant.id, &key.id);
    let fl = if let Some((form, errors)) = &forms.edit {
        form.to_flash(Flash::new(to, "edit", status, errors))
    } else if let Some((typed, errors)) = &forms.revoke {
        Flash::new(to, "revoke", status, errors).field("confirm_name", typed)
    } else {
        let no_errors = Errors::default();
        Flash::new(
            to,
            "rotate",
            status,
            forms.rotate.as_ref().unwrap_or(&no_errors),
        )
    };
    match flash::redirect(state, signed, &fl) {
        Some(res) => res,
        None => detail_view(state, signed, access, key, &forms, None, status).await,
    }
}

/// The secret shown once.
struct SecretDialog {
    secret: String,
    /// What happens to the previous secret, after a rotation.
    note: Option<Markup>,
    /// How this deployment takes keys.
    how: Markup,
}

/// "Send it as …": the ways this deployment accepts a key, and no other.
fn how_to_send(accepted: &keyward_http::error::Accepted) -> Markup {
    let mut ways: Vec<Markup> = Vec::new();
    if accepted.bearer {
        ways.push(html! { "as " code { "Authorization: Bearer <secret>" } });
    }
    if let Some(h) = &accepted.header {
        ways.push(html! { "in the " code { (h) } " header" });
    }
    if accepted.basic {
        ways.push(html! { "with HTTP Basic: the key ID as user name and the secret as password" });
    }
    let n = ways.len();
    html! {
        "Send it "
        @for (i, way) in ways.into_iter().enumerate() {
            @if i > 0 && i + 1 == n { ", or " } @else if i > 0 { ", " }
            (way)
        }
        "."
    }
}

/// The forms on a key's page, with what was typed and what was wrong.
#[derive(Default)]
struct Forms {
    edit: Option<(KeyForm, Errors)>,
    revoke: Option<(String, Errors)>,
    rotate: Option<Errors>,
    done: Option<String>,
    /// The usage section's range.
    range: Span,
}

#[derive(Debug, Default, Deserialize)]
pub struct DetailQuery {
    done: Option<String>,
    range: Option<String>,
}

async fn tenant_key(
    state: &ConsoleState,
    access: &TenantAccess,
    signed: &SignedIn,
    kid: &str,
) -> Result<KeyView, ConsoleError> {
    let record = state.manage.get_key(&access.actor(signed), kid).await?;
    let key = KeyView::new(&record, state.clock.now());
    // Operators act with a root caller that sees every tenant's keys: the
    // key must belong to the tenant in the address.
    if key.tenant_id.as_deref() != Some(access.tenant.id.as_str()) {
        return Err(ConsoleError::NotFound);
    }
    Ok(key)
}

pub async fn detail(
    State(state): State<ConsoleState>,
    signed: SignedIn,
    Path((tid, kid)): Path<(String, String)>,
    Query(q): Query<DetailQuery>,
) -> Result<Response, ConsoleError> {
    let access = TenantAccess::load(&state, &signed, &tid).await?;
    let key = tenant_key(&state, &access, &signed, &kid).await?;
    let range = Span::parse(q.range.as_deref()).ok_or_else(|| {
        ConsoleError::BadRequest(
            "This range is not on offer: choose the last hour, 24 hours, 7 days or 30 days.".into(),
        )
    })?;
    let mut forms = Forms {
        done: q.done,
        range,
        ..Forms::default()
    };
    let mut status = StatusCode::OK;
    let url = key_url(&access.tenant.id, &key.id);
    if let Some(fl) = signed.flash_for(&url, "edit") {
        forms.edit = Some((KeyForm::from_flash(fl), fl.errors()));
        status = fl.status();
    } else if let Some(fl) = signed.flash_for(&url, "revoke") {
        forms.revoke = Some((fl.get("confirm_name").to_owned(), fl.errors()));
        status = fl.status();
    } else if let Some(fl) = signed.flash_for(&url, "rotate") {
        forms.rotate = Some(fl.errors());
        status = fl.status();
    }
    Ok(detail_view(&state, &signed, &access, &key, &forms, None, status).await)
}

/// `usr_…` ids as their email; key ids and `cli` as they are.
pub(crate) async fn actor_label(state: &ConsoleState, actor: &str) -> String {
    if actor.starts_with("usr_") {
        if let Ok(u) = state.store.get_user(actor).await {
            return u.email;
        }
    }
    actor.to_owned()
}

async fn detail_view(
    state: &ConsoleState,
    signed: &SignedIn,
    access: &TenantAccess,
    key: &KeyView,
    forms: &Forms,
    dialog: Option<SecretDialog>,
    status: StatusCode,
) -> Response {
    let tid = &access.tenant.id;
    let base = format!("/console/t/{tid}/keys");
    let url = key_url(tid, &key.id);
    let now = state.clock.now().0;
    let created_by = actor_label(state, &key.created_by).await;
    let revoked = key.revoked_at.is_some();
    let writable = access.can_write_keys();
    let default_edit = (KeyForm::from_key(key), Errors::default());
    let (edit_form, edit_errors) = forms
        .edit
        .as_ref()
        .map_or((&default_edit.0, &default_edit.1), |(f, e)| (f, e));
    let no_errors = Errors::default();
    let (revoke_typed, revoke_errors) = forms
        .revoke
        .as_ref()
        .map_or(("", &no_errors), |(t, e)| (t.as_str(), e));
    let rotate_errors = forms.rotate.as_ref().unwrap_or(&no_errors);
    let current_expiry = key.expires_at.as_deref().map(|t| {
        let iso = t.to_owned();
        format!(
            "{} {} UTC",
            &iso[..10.min(iso.len())],
            iso.get(11..16).unwrap_or("")
        )
    });
    let usage = usage::key_section(state, &access.actor(signed), tid, &key.id, forms.range).await;
    let alerts = super::alerts::key_section(state, &access.actor(signed), tid, &key.id).await;
    let leaks = state
        .manage
        .key_leaks(&access.actor(signed), &key.id)
        .await
        .unwrap_or_default();
    let content = html! {
        nav.breadcrumb aria-label="Breadcrumb" { a href=(base) { "API keys" } span aria-hidden="true" { " / " } span aria-current="page" { (key.name) } }
        div.page-header {
            div {
                h1 #key-title {
                    (key.name) " "
                    @if key.grace_until.is_some() && key.status == "active" {
                        span class="badge badge-status badge-retiring" { "retiring" }
                    } @else {
                        (ui::status_badge(&key.status))
                    }
                    " " (ui::env_badge(&key.environment))
                    @if !leaks.is_empty() { " " span class="badge badge-leaked" #key-leaked { "leaked" } }
                }
                p.lead { "Key ID " code #key-id { (key.id) } }
            }
        }
        (ui::done_notice(forms.done.as_deref()))
        @if let Some(next) = &key.replaced_by {
            div.alert.alert-info role="status" {
                "This key was rotated. "
                @if let Some(g) = &key.grace_until {
                    @if ms(g) > now { "Its secret keeps working until " (ui::time(ms(g))) ". " } @else { "Its secret stopped working at " (ui::time(ms(g))) ". " }
                }
                a href=(key_url(tid, next)) { "Go to the key that replaced it" } "."
            }
        }
        section.card aria-labelledby="details-title" {
            h2 #details-title { "Details" }
            dl.details {
                div { dt { "Key" } dd { code { (key.start) "…" } span.hint { " (the secret's first characters, to recognize it)" } } }
                div { dt { "Status" } dd { (ui::key_status(&key.status, key.grace_until.as_deref().map(ms))) @if !key.enabled && !revoked { " " span.hint { "(disabled)" } } } }
                div { dt { "Environment" } dd { (key.environment) } }
                div { dt { "Scopes" } dd { (scope_chips(&key.scopes, usize::MAX)) } }
                div { dt { "IP allowlist" } dd {
                    @if key.ip_allowlist.is_empty() { span.muted { "Any address" } }
                    @else { ul.chips { @for ip in &key.ip_allowlist { li.chip { (ip) } } } }
                } }
                div { dt { "Expires" } dd {
                    @match (&key.grace_until, &key.expires_at) {
                        (Some(g), Some(t)) if ms(g) < ms(t) => { (ui::time(ms(g))) span.hint { " (end of the rotation grace period)" } },
                        (Some(g), None) => { (ui::time(ms(g))) span.hint { " (end of the rotation grace period)" } },
                        (_, Some(t)) => (ui::time(ms(t))),
                        (None, None) => span.muted { "Never" },
                    }
                } }
                div { dt { "Created" } dd { (ui::time(ms(&key.created_at))) " by " (created_by) } }
                div { dt { "Last used" } dd {
                    @match &key.last_used_at {
                        Some(t) => { (ui::ago(ms(t), now)) @if let Some(ip) = &key.last_used_ip { " from " code { (ip) } } },
                        None => span.muted { "Never" },
                    }
                } }
                @if let Some(from) = &key.rotated_from {
                    div { dt { "Rotated from" } dd { a href=(key_url(tid, from)) { code { (from) } } } }
                }
                @if let Some(at) = &key.revoked_at {
                    div { dt { "Revoked" } dd { (ui::time(ms(at))) @if let Some(r) = &key.revoked_reason { " — " (r) } } }
                }
            }
        }
        @if !leaks.is_empty() {
            section.card.card-danger aria-labelledby="leaks-title" #key-leaks {
                h2 #leaks-title { "Leaked" }
                p { "This key's secret was reported found where others can read it. "
                    @if revoked { "It was revoked." } @else { "Rotate it, then revoke the old secret." } }
                div.table-wrap {
                    table.table {
                        caption.visually-hidden { "Leak reports of " (key.name) }
                        thead { tr { th scope="col" { "Reported" } th scope="col" { "Where" } th scope="col" { "Source" } th scope="col" { "By" } th scope="col" { "Action" } } }
                        tbody {
                            @for r in &leaks {
                                tr {
                                    td.nowrap { (ui::time(r.received_at)) }
                                    td { @match &r.url { Some(u) => code { (u) }, None => span.muted { "Not given" } } }
                                    td { (r.source.as_deref().unwrap_or("—")) }
                                    td { (r.reporter) }
                                    td {
                                        @match (r.status, r.action.as_deref()) {
                                            (keyward_store::LeakStatus::Repeat, _) => span.muted { "none (reported before)" },
                                            (keyward_store::LeakStatus::Pending, _) => "pending",
                                            (keyward_store::LeakStatus::Failed, a) => { (a.unwrap_or("")) " failed" @if let Some(d) = &r.detail { ": " (d) } },
                                            (_, Some("flag")) => "flagged (still works)",
                                            (_, Some("revoke")) => "revoked",
                                            (_, Some("disable")) => "disabled",
                                            (_, a) => { (a.unwrap_or("none")) @if let Some(d) = &r.detail { " — " (d) } },
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        (usage)
        (alerts)
        @if !writable {
            p.notice { "You have view access to " (access.tenant.name) ". Owners, admins and developers can change, rotate and revoke keys." }
        }
        @if writable && !revoked {
            section.card aria-labelledby="edit-title" {
                h2 #edit-title { "Edit" }
                (edit_errors.summary())
                form.stack method="post" action=(url) {
                    (ui::csrf(&signed.csrf))
                    (key_fields(state, access, edit_form, edit_errors, FormMode::Edit, current_expiry.as_deref()))
                    div.form-actions { button.btn.btn-primary type="submit" { "Save changes" } }
                }
            }
            @if key.replaced_by.is_none() {
                section.card aria-labelledby="rotate-title" {
                    h2 #rotate-title { "Rotate" }
                    p { "Issue a new secret for this key. The new secret is shown once. Choose how long the current secret keeps working, so you can deploy the new one first." }
                    (rotate_errors.summary())
                    form.stack method="post" action={ (url) "/rotate" } {
                        (ui::csrf(&signed.csrf))
                        fieldset.field {
                            legend { "The current secret stops working" }
                            div.radio-list {
                                @for (secs, label) in GRACE {
                                    label.radio {
                                        input type="radio" name="grace_seconds" value=(secs) checked[*secs == 3600];
                                        span { (label) }
                                    }
                                }
                            }
                        }
                        div.form-actions { button.btn type="submit" { "Rotate key" } }
                    }
                }
            }
            section.card.card-danger aria-labelledby="revoke-title" {
                h2 #revoke-title { "Revoke" }
                p { "Revoking " strong { (key.name) } " refuses every request that uses it, at once, with " code { "revoked_api_key" } ". This cannot be undone." }
                (revoke_errors.summary())
                form.stack method="post" action={ (url) "/revoke" } data-confirm-name=(key.name) {
                    (ui::csrf(&signed.csrf))
                    div.field {
                        label for="confirm-name" { "To confirm, type the key's name, " strong.confirm-name { (key.name) } }
                        input #confirm-name name="confirm_name" value=(revoke_typed) autocomplete="off" spellcheck="false" required
                            aria-invalid=[revoke_errors.has("confirm_name").then_some("true")]
                            aria-describedby=[revoke_errors.described_by("confirm_name")];
                        (revoke_errors.show("confirm_name"))
                    }
                    div.field {
                        label for="revoke-reason" { "Reason " span.optional { "(optional, recorded in the audit log)" } }
                        input #revoke-reason name="reason" maxlength="500" placeholder="e.g. leaked in a public repository";
                    }
                    div.form-actions { button.btn.btn-danger type="submit" { "Revoke " (key.name) } }
                }
            }
        }
        @if let Some(d) = &dialog {
            (secret_dialog(key, d, &url))
        }
    };
    let chrome = Chrome {
        signed,
        access: Some(access),
        section: Section::Keys,
    };
    ui::html(status, ui::page(&key.name, &chrome, content))
}

/// The one-time secret dialog. It opens as a modal and cannot be closed
/// (button, Escape, backdrop) until the acknowledgement is ticked; the
/// script then removes it from the page and points the address bar at the
/// key's own page, so a reload never shows the secret again.
fn secret_dialog(key: &KeyView, d: &SecretDialog, key_page: &str) -> Markup {
    html! {
        dialog #secret-dialog.dialog open data-secret-dialog data-next=(key_page) closedby="none"
            aria-labelledby="secret-title" aria-describedby="secret-desc" {
            form method="dialog" #secret-form {
                h2 #secret-title { "Save your secret key" }
                p #secret-desc {
                    "This is the only time the secret of " strong { (key.name) } " is shown. keyward keeps only a hash of it: "
                    "if you lose it, rotate the key to get a new one."
                }
                @if let Some(n) = &d.note { p.alert.alert-info { (n) } }
                div.field {
                    label for="new-key-id" { "API key ID" }
                    div.copy-row {
                        input #new-key-id.mono type="text" readonly value=(key.id) spellcheck="false";
                        button.btn type="button" data-copy="new-key-id" { "Copy ID" }
                    }
                }
                div.field {
                    label for="secret-value" { "Secret key" }
                    div.copy-row {
                        // A textarea, so the whole secret shows on a phone too (it wraps).
                        textarea #secret-value.mono.secret readonly rows="2" spellcheck="false" autocomplete="off" { (d.secret) }
                        button.btn.btn-primary type="button" data-copy="secret-value" { "Copy secret" }
                    }
                    p.hint { (d.how) }
                }
                p.visually-hidden #copy-status role="status" aria-live="polite" {}
                div.ack {
                    input #secret-ack type="checkbox" name="ack" required aria-describedby="ack-hint";
                    label for="secret-ack" { "I have stored the secret key in a safe place" }
                }
                p.field-error #ack-hint hidden { "Tick the box to confirm you stored the secret: it cannot be shown again." }
                div.dialog-actions {
                    button.btn.btn-primary #secret-done type="submit" value="done" { "Done" }
                }
            }
        }
    }
}

pub async fn update(
    State(state): State<ConsoleState>,
    Path((tid, kid)): Path<(String, String)>,
    f: SignedForm,
) -> Result<Response, ConsoleError> {
    let access = TenantAccess::load(&state, &f.signed, &tid).await?;
    if !access.can_write_keys() {
        return Err(access.refuse("change API keys"));
    }
    let key = tenant_key(&state, &access, &f.signed, &kid).await?;
    let form = KeyForm::from_form(&f.form);
    let mut errors = Errors::default();
    if form.name.is_empty() {
        errors.field("name", "Give the key a name.");
    }
    let changes = KeyChanges {
        name: Some(form.name.clone()),
        scopes: Some(form.scopes.clone()),
        ip_allowlist: Some(form.allowlist()),
        enabled: Some(form.enabled),
        expires_at: form.expires_at(state.clock.now(), &mut errors),
        ..KeyChanges::default()
    };
    let result = if errors.is_empty() {
        state
            .manage
            .update_key(&access.actor(&f.signed), &kid, changes)
            .await
            .map(|_| ())
    } else {
        Err(ManageError::Validation(Vec::new()))
    };
    let status = match result {
        Ok(()) => {
            return Ok(
                Redirect::to(&format!("{}?done=updated", key_url(&tid, &kid))).into_response(),
            )
        }
        Err(ManageError::Validation(list)) => {
            absorb(&mut errors, list, &form);
            StatusCode::UNPROCESSABLE_ENTITY
        }
        Err(ManageError::NameTaken) => {
            name_taken(&mut errors, &form.name, &access.tenant.name);
            StatusCode::CONFLICT
        }
        Err(ManageError::ScopeNotGrantable { detail, .. }) => {
            errors.field("scopes", plain(&detail));
            StatusCode::FORBIDDEN
        }
        Err(e) => return Err(e.into()),
    };
    let forms = Forms {
        edit: Some((form, errors)),
        ..Forms::default()
    };
    Ok(refuse_on_key(&state, &f.signed, &access, &key, forms, status).await)
}

pub async fn revoke(
    State(state): State<ConsoleState>,
    Path((tid, kid)): Path<(String, String)>,
    f: SignedForm,
) -> Result<Response, ConsoleError> {
    let access = TenantAccess::load(&state, &f.signed, &tid).await?;
    if !access.can_write_keys() {
        return Err(access.refuse("revoke API keys"));
    }
    let key = tenant_key(&state, &access, &f.signed, &kid).await?;
    let typed = f.form.text("confirm_name");
    if typed != key.name {
        let mut errors = Errors::default();
        errors.field(
            "confirm_name",
            format!(
                "Type the key's name exactly, “{}”, to confirm. Nothing was revoked.",
                key.name
            ),
        );
        let forms = Forms {
            revoke: Some((typed, errors)),
            ..Forms::default()
        };
        return Ok(refuse_on_key(
            &state,
            &f.signed,
            &access,
            &key,
            forms,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await);
    }
    let reason = f.form.text("reason");
    let reason = (!reason.is_empty()).then_some(reason);
    match state
        .manage
        .revoke_key(&access.actor(&f.signed), &kid, reason)
        .await
    {
        Ok(_) => Ok(Redirect::to(&format!("{}?done=revoked", key_url(&tid, &kid))).into_response()),
        Err(ManageError::Validation(list)) => {
            let mut errors = Errors::default();
            for e in list {
                errors.general(ui::sentence(&e.message));
            }
            let forms = Forms {
                revoke: Some((typed, errors)),
                ..Forms::default()
            };
            Ok(refuse_on_key(
                &state,
                &f.signed,
                &access,
                &key,
                forms,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await)
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn rotate(
    State(state): State<ConsoleState>,
    Path((tid, kid)): Path<(String, String)>,
    f: SignedForm,
) -> Result<Response, ConsoleError> {
    let access = TenantAccess::load(&state, &f.signed, &tid).await?;
    if !access.can_write_keys() {
        return Err(access.refuse("rotate API keys"));
    }
    let key = tenant_key(&state, &access, &f.signed, &kid).await?;
    let grace = f
        .form
        .text("grace_seconds")
        .parse::<u64>()
        .ok()
        .filter(|g| GRACE.iter().any(|(s, _)| s == g));
    let Some(grace) = grace else {
        let mut errors = Errors::default();
        errors.general("Choose when the current secret stops working.");
        let forms = Forms {
            rotate: Some(errors),
            ..Forms::default()
        };
        return Ok(refuse_on_key(
            &state,
            &f.signed,
            &access,
            &key,
            forms,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await);
    };
    match state
        .manage
        .rotate_key(&access.actor(&f.signed), &kid, grace)
        .await
    {
        Ok(rotated) => {
            let KeyWithSecret {
                secret,
                key: new_key,
            } = keyward_views::with_secret(&rotated);
            let until = state
                .clock
                .now()
                .plus_seconds(i64::try_from(grace).unwrap_or(0))
                .0;
            let note = if grace == 0 {
                html! { "The previous secret stopped working now." }
            } else {
                html! { "The previous secret keeps working until " (ui::time(until)) ": deploy the new one before then." }
            };
            let dialog = SecretDialog {
                secret,
                note: Some(note),
                how: how_to_send(&state.settings.accepted),
            };
            Ok(detail_view(
                &state,
                &f.signed,
                &access,
                &new_key,
                &Forms::default(),
                Some(dialog),
                StatusCode::CREATED,
            )
            .await)
        }
        Err(e @ (ManageError::Conflict { .. } | ManageError::ScopeNotGrantable { .. })) => {
            let (message, status) = match e {
                ManageError::ScopeNotGrantable { detail, .. } => {
                    (plain(&detail), StatusCode::FORBIDDEN)
                }
                other => (ui::sentence(&other.to_string()), StatusCode::CONFLICT),
            };
            let mut errors = Errors::default();
            errors.general(message);
            let forms = Forms {
                rotate: Some(errors),
                ..Forms::default()
            };
            Ok(refuse_on_key(&state, &f.signed, &access, &key, forms, status).await)
        }
        Err(e) => Err(e.into()),
    }
}
