//! The console's page frame and shared pieces: the header with the tenant
//! switcher and the account menu, the tenant navigation, badges, times,
//! notices and form errors. `maud` escapes every interpolated value, so
//! nothing a user typed can become markup.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use keyward_core::clock::Timestamp;
use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::access::TenantAccess;
use super::assets;
use super::session::SignedIn;

/// An HTML response.
pub fn html(status: StatusCode, markup: Markup) -> Response {
    let mut res = (status, markup.into_string()).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    res
}

pub fn url_encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Which part of the navigation is current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Keys,
    Usage,
    Alerts,
    Webhooks,
    Members,
    Audit,
    Settings,
    Tenants,
    /// A page of no section (the page-not-found page).
    Other,
}

/// What the frame around a signed-in page needs.
pub struct Chrome<'a> {
    pub signed: &'a SignedIn,
    pub access: Option<&'a TenantAccess>,
    pub section: Section,
}

fn head(title: &str) -> Markup {
    html! {
        meta charset="utf-8";
        meta name="viewport" content="width=device-width, initial-scale=1";
        meta name="color-scheme" content="light dark";
        title { (title) " · keyward" }
        link rel="icon" href=(assets::url("favicon.svg")) type="image/svg+xml";
        link rel="stylesheet" href=(assets::url("console.css"));
        script src=(assets::url("console.js")) defer {}
    }
}

/// The keyward mark: a key in a rounded square.
pub fn brand_mark() -> Markup {
    html! {
        span.brand-mark aria-hidden="true" {
            (PreEscaped(r#"<svg viewBox="0 0 24 24" width="20" height="20" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round"><circle cx="8" cy="15" r="4"/><path d="M10.85 12.15 19 4"/><path d="m18 5 2 2"/><path d="m15 8 2 2"/></svg>"#))
        }
    }
}

/// A page without navigation: sign-in, invitations, errors.
pub fn bare_page(title: &str, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { (head(title)) }
            body.bare {
                main #main { (content) }
                footer.bare-footer { "keyward console" }
            }
        }
    }
}

pub fn error_page(status: StatusCode, title: &str, message: &str) -> Markup {
    let content = html! {
        div.auth-card.error-card {
            (brand_mark())
            p.error-code { "Error " (status.as_u16()) }
            h1 { (title) }
            p { (message) }
            p.actions {
                @if status == StatusCode::UNAUTHORIZED {
                    a.btn.btn-primary href="/console/sign-in" { "Sign in" }
                } @else {
                    a.btn.btn-primary href="/console" { "Go to the console" }
                }
            }
        }
    };
    bare_page(title, content)
}

/// The page-not-found page inside the console's frame, for a signed-in user.
pub fn not_found_page(signed: &SignedIn) -> Markup {
    let chrome = Chrome {
        signed,
        access: None,
        section: Section::Other,
    };
    let content = html! {
        div.empty-state.not-found {
            p.error-code { "Error 404" }
            h1 { "Page not found" }
            p { "This page does not exist, or you do not have access to it. Check the address, or pick a tenant from the list." }
            a.btn.btn-primary href="/console/tenants" { "Go to your tenants" }
        }
    };
    page("Page not found", &chrome, content)
}

/// A signed-in page: header, navigation, and `content` in `<main>`.
pub fn page(title: &str, chrome: &Chrome<'_>, content: Markup) -> Markup {
    let signed = chrome.signed;
    let user = &signed.user;
    html! {
        (DOCTYPE)
        html lang="en" {
            head { (head(title)) }
            body {
                a.skip-link href="#main" { "Skip to content" }
                header.topbar {
                    a.brand href="/console" {
                        (brand_mark())
                        span { "keyward" }
                        span.brand-sub { "console" }
                    }
                    (switcher(chrome))
                    div.topbar-spacer {}
                    details.menu.account-menu {
                        summary {
                            span.avatar aria-hidden="true" { (initial(&user.email)) }
                            span.account-email { (user.email) }
                        }
                        div.menu-panel {
                            p.menu-label { "Signed in as" }
                            p.menu-strong { (user.email) }
                            @if user.operator {
                                p { span.badge.badge-operator { "Operator" } }
                            }
                            form method="post" action="/console/sign-out" {
                                (csrf(&signed.csrf))
                                button.btn.btn-block type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                div.shell {
                    (sidebar(chrome))
                    main #main tabindex="-1" { (content) }
                }
            }
        }
    }
}

fn initial(email: &str) -> String {
    email
        .chars()
        .next()
        .map(|c| c.to_uppercase().collect())
        .unwrap_or_default()
}

fn switcher(chrome: &Chrome<'_>) -> Markup {
    let signed = chrome.signed;
    let current = chrome.access.map(|a| &a.tenant);
    html! {
        details.menu.tenant-switcher {
            summary {
                span.switcher-label { "Tenant" }
                span.switcher-current {
                    @match current {
                        Some(t) => (t.name),
                        None => "Choose a tenant",
                    }
                }
                span.chevron aria-hidden="true" { "▾" }
            }
            div.menu-panel {
                @if signed.memberships.is_empty() && !signed.user.operator {
                    p.muted { "You are not a member of any tenant yet." }
                }
                @if !signed.memberships.is_empty() {
                    p.menu-label { "Your tenants" }
                    ul.menu-list {
                        @for m in &signed.memberships {
                            li {
                                a href={ "/console/t/" (m.tenant_id) "/keys" }
                                    aria-current=[current.filter(|t| t.id == m.tenant_id).map(|_| "page")] {
                                    span { (m.tenant_name) }
                                    span.role { (m.role.as_str()) }
                                }
                            }
                        }
                    }
                }
                @if signed.user.operator {
                    a.menu-footer href="/console/tenants" { "All tenants…" }
                }
            }
        }
    }
}

fn sidebar(chrome: &Chrome<'_>) -> Markup {
    let link = |href: String, label: &str, icon: &str, current: bool| {
        html! {
            li {
                a href=(href) aria-current=[current.then_some("page")] {
                    span.nav-icon aria-hidden="true" { (PreEscaped(icon)) }
                    span { (label) }
                }
            }
        }
    };
    html! {
        nav.sidebar aria-label="Console" {
            @if let Some(a) = chrome.access {
                div.sidebar-tenant {
                    p.sidebar-tenant-name { (a.tenant.name) }
                    p.sidebar-tenant-meta { code { (a.tenant.id) } " · " span.role { (a.label()) } }
                }
                ul.nav-list {
                    (link(format!("/console/t/{}/keys", a.tenant.id), "API keys", ICON_KEY, chrome.section == Section::Keys))
                    (link(format!("/console/t/{}/usage", a.tenant.id), "Usage", ICON_CHART, chrome.section == Section::Usage))
                    (link(format!("/console/t/{}/alerts", a.tenant.id), "Alerts", ICON_BELL, chrome.section == Section::Alerts))
                    (link(format!("/console/t/{}/webhooks", a.tenant.id), "Webhooks", ICON_WEBHOOK, chrome.section == Section::Webhooks))
                    (link(format!("/console/t/{}/members", a.tenant.id), "Members", ICON_USERS, chrome.section == Section::Members))
                    @if a.can_read_audit() {
                        (link(format!("/console/t/{}/audit", a.tenant.id), "Audit log", ICON_LIST, chrome.section == Section::Audit))
                    }
                    @if chrome.signed.user.operator {
                        (link(format!("/console/t/{}/settings", a.tenant.id), "Settings", ICON_SLIDERS, chrome.section == Section::Settings))
                    }
                }
            }
            @if chrome.signed.user.operator {
                p.nav-heading { "Operator" }
                ul.nav-list {
                    (link("/console/tenants".into(), "All tenants", ICON_BUILDING, chrome.section == Section::Tenants))
                }
            } @else if chrome.access.is_none() {
                ul.nav-list {
                    (link("/console/tenants".into(), "Your tenants", ICON_BUILDING, chrome.section == Section::Tenants))
                }
            }
        }
    }
}

const ICON_KEY: &str = r#"<svg viewBox="0 0 24 24" width="18" height="18" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round"><circle cx="8" cy="15" r="4"/><path d="M10.85 12.15 19 4"/><path d="m18 5 2 2"/><path d="m15 8 2 2"/></svg>"#;
const ICON_CHART: &str = r#"<svg viewBox="0 0 24 24" width="18" height="18" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round"><path d="M3 3v18h18"/><path d="M8 17v-5"/><path d="M13 17V8"/><path d="M18 17v-8"/></svg>"#;
const ICON_USERS: &str = r#"<svg viewBox="0 0 24 24" width="18" height="18" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round"><path d="M16 21v-2a4 4 0 0 0-4-4H6a4 4 0 0 0-4 4v2"/><circle cx="9" cy="7" r="4"/><path d="M22 21v-2a4 4 0 0 0-3-3.87"/><path d="M16 3.13a4 4 0 0 1 0 7.75"/></svg>"#;
const ICON_LIST: &str = r#"<svg viewBox="0 0 24 24" width="18" height="18" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round"><path d="M8 6h13"/><path d="M8 12h13"/><path d="M8 18h13"/><path d="M3 6h.01"/><path d="M3 12h.01"/><path d="M3 18h.01"/></svg>"#;
const ICON_BUILDING: &str = r#"<svg viewBox="0 0 24 24" width="18" height="18" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round"><rect x="4" y="2" width="16" height="20" rx="2"/><path d="M9 22v-4h6v4"/><path d="M8 6h.01"/><path d="M16 6h.01"/><path d="M12 6h.01"/><path d="M12 10h.01"/><path d="M12 14h.01"/><path d="M16 10h.01"/><path d="M16 14h.01"/><path d="M8 10h.01"/><path d="M8 14h.01"/></svg>"#;
const ICON_SLIDERS: &str = r#"<svg viewBox="0 0 24 24" width="18" height="18" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round"><path d="M4 21v-7"/><path d="M4 10V3"/><path d="M12 21v-9"/><path d="M12 8V3"/><path d="M20 21v-5"/><path d="M20 12V3"/><path d="M1 14h6"/><path d="M9 8h6"/><path d="M17 16h6"/></svg>"#;
const ICON_BELL: &str = r#"<svg viewBox="0 0 24 24" width="18" height="18" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round"><path d="M6 8a6 6 0 0 1 12 0c0 7 3 9 3 9H3s3-2 3-9"/><path d="M10.3 21a1.94 1.94 0 0 0 3.4 0"/></svg>"#;
const ICON_WEBHOOK: &str = r#"<svg viewBox="0 0 24 24" width="18" height="18" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round"><path d="M18 16.98h-5.99c-1.1 0-1.95.94-2.48 1.9A4 4 0 0 1 2 17c.01-.7.2-1.4.57-2"/><path d="m6 17 3.13-5.78c.53-.97.1-2.18-.5-3.1a4 4 0 1 1 6.89-4.06"/><path d="m12 6 3.13 5.73C15.66 12.7 16.9 13 18 13a4 4 0 0 1 0 8"/></svg>"#;
pub const ICON_EMPTY_KEY: &str = r#"<svg viewBox="0 0 24 24" width="40" height="40" fill="none" stroke="currentColor" stroke-width="1.5" stroke-linecap="round" stroke-linejoin="round"><circle cx="8" cy="15" r="4"/><path d="M10.85 12.15 19 4"/><path d="m18 5 2 2"/><path d="m15 8 2 2"/></svg>"#;

/// The hidden CSRF field every POST form carries.
pub fn csrf(token: &str) -> Markup {
    html! { input type="hidden" name="_csrf" value=(token); }
}

/// `2026-05-03 14:22 UTC`, in a `<time>` the script shows in local time.
pub fn time(ms: i64) -> Markup {
    let iso = Timestamp(ms).to_rfc3339();
    let shown = format!("{} {} UTC", &iso[..10], &iso[11..16]);
    html! { time datetime=(iso) title=(shown) { (shown) } }
}

/// "3 minutes ago", "2 days ago", or a date.
pub fn ago(ms: i64, now: i64) -> Markup {
    let s = (now - ms).max(0) / 1000;
    let text = match s {
        0..=59 => "just now".to_owned(),
        60..=3599 => plural(s / 60, "minute"),
        3600..=86_399 => plural(s / 3600, "hour"),
        86_400..=2_591_999 => plural(s / 86_400, "day"),
        _ => return time(ms),
    };
    let iso = Timestamp(ms).to_rfc3339();
    html! { time datetime=(iso) title=(iso) { (text) } }
}

fn plural(n: i64, unit: &str) -> String {
    if n == 1 {
        format!("1 {unit} ago")
    } else {
        format!("{n} {unit}s ago")
    }
}

/// A key status as a coloured badge.
pub fn status_badge(status: &str) -> Markup {
    html! { span class={ "badge badge-status badge-" (status) } { (status) } }
}

/// A key's status: its badge, or, for a rotated key whose secret still
/// works for a grace period, "retiring until <time>".
pub fn key_status(status: &str, grace_until: Option<i64>) -> Markup {
    match grace_until {
        Some(until) if status == "active" => html! {
            span.key-retiring {
                span class="badge badge-status badge-retiring" { "retiring" }
                " until " (time(until))
            }
        },
        _ => status_badge(status),
    }
}

pub fn env_badge(env: &str) -> Markup {
    let class = if env == "live" {
        "badge badge-live"
    } else {
        "badge badge-env"
    };
    html! { span class=(class) { (env) } }
}

/// The notice for `?done=…` after a redirect. Codes only, so a link cannot
/// make the page say anything else.
pub fn done_notice(code: Option<&str>) -> Markup {
    let text = match code {
        Some("updated") => "Changes saved.",
        Some("revoked") => "The key is revoked. Requests using it are refused from now on.",
        Some("tenant_created") => {
            "Tenant created. Invite its first owner below: they will manage its keys and members."
        }
        Some("role_changed") => "Role changed.",
        Some("removed") => "Member removed.",
        Some("invite_revoked") => "Invitation revoked; its link no longer works.",
        _ => return html! {},
    };
    html! { div.alert.alert-success role="status" { (text) } }
}

/// Form errors by field, plus errors that belong to no field.
#[derive(Debug, Default)]
pub struct Errors {
    pub fields: Vec<(String, String)>,
    pub general: Vec<String>,
}

impl Errors {
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty() && self.general.is_empty()
    }

    pub fn field(&mut self, name: &str, message: impl Into<String>) {
        self.fields.push((name.to_owned(), message.into()));
    }

    pub fn general(&mut self, message: impl Into<String>) {
        self.general.push(message.into());
    }

    /// Messages for `name` (and for `name[i]`).
    pub fn for_field(&self, name: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(f, _)| f == name || f.strip_prefix(name).is_some_and(|r| r.starts_with('[')))
            .map(|(_, m)| m.as_str())
            .collect()
    }

    pub fn has(&self, name: &str) -> bool {
        !self.for_field(name).is_empty()
    }

    /// The error list under a field, with an id for `aria-describedby`.
    pub fn show(&self, name: &str) -> Markup {
        let messages = self.for_field(name);
        html! {
            @if !messages.is_empty() {
                div.field-error id={ (name) "-error" } {
                    @for m in messages { p { (m) } }
                }
            }
        }
    }

    /// `aria-describedby` for a field with errors.
    pub fn described_by(&self, name: &str) -> Option<String> {
        self.has(name).then(|| format!("{name}-error"))
    }

    /// A summary at the top of a form.
    pub fn summary(&self) -> Markup {
        html! {
            @if !self.is_empty() {
                div.alert.alert-error role="alert" {
                    @if self.general.is_empty() {
                        p { "Please correct the fields marked below." }
                    }
                    @for g in &self.general { p { (g) } }
                }
            }
        }
    }
}

/// Capitalizes and ends with a period, for messages from the API.
pub fn sentence(s: &str) -> String {
    let mut c = s.chars();
    let mut out: String = match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => return String::new(),
    };
    if !out.ends_with('.') {
        out.push('.');
    }
    out
}
