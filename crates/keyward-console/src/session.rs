//! Sign-in, sessions and CSRF.
//!
//! A session is 32 random bytes in a cookie (`__Host-keyward_session`,
//! `Secure; HttpOnly; SameSite=Strict; Path=/`). The store keeps only its
//! SHA-256, so a copy of the database signs nobody in. Sessions end after
//! `console.session_idle_seconds` without a request, after
//! `console.session_lifetime_seconds` whatever the activity, and at
//! sign-out, which deletes them server-side.
//!
//! The CSRF token of a session is the SHA-256 of `"csrf:" + session token`:
//! it needs no storage, differs per session, and cannot be computed without
//! the cookie. Every state change must carry it ([`SignedForm`] checks the
//! `_csrf` form field; [`SignedIn`] checks an `X-CSRF-Token` header on any
//! non-GET request), so a handler cannot forget to.
//!
//! Failed sign-ins are counted per account and per client address in the
//! store (so the limits hold across nodes); past the limits sign-in is
//! refused, even with the right password, until the window ends.

use std::net::IpAddr;

use axum::extract::{FromRequest, FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use keyward_core::secret::KeyHash;
use keyward_store::{Membership, Session, User};
use maud::html;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::flash::{self, Flash};
use super::form::FormData;
use super::{accounts, password, ui, ConsoleError};
use crate::ConsoleState;

/// The signed-in user behind a console request.
pub struct SignedIn {
    pub user: User,
    pub memberships: Vec<Membership>,
    /// Hex SHA-256 of the session token.
    pub token_hash: String,
    /// This session's CSRF token, for forms on the page.
    pub csrf: String,
    pub ip: Option<IpAddr>,
    /// The key of this session's flash cookies ([`crate::flash`]).
    pub flash_key: String,
    /// A refused form carried to this GET, if any.
    pub flash: Option<Flash>,
}

impl SignedIn {
    /// The refused `form` carried to the page at `path`, if any.
    pub fn flash_for(&self, path: &str, form: &str) -> Option<&Flash> {
        self.flash
            .as_ref()
            .filter(|f| f.to == path && f.form == form)
    }

    /// The user's role in `tenant_id`, if a member.
    pub fn membership(&self, tenant_id: &str) -> Option<&Membership> {
        self.memberships.iter().find(|m| m.tenant_id == tenant_id)
    }
}

/// A signed-in state change: the session, and its form whose `_csrf` field
/// has been checked.
pub struct SignedForm {
    pub signed: SignedIn,
    pub form: FormData,
}

pub(crate) fn cookie_name(state: &ConsoleState) -> &'static str {
    if state.settings.console.secure_cookies {
        // The __Host- prefix makes browsers refuse the cookie unless it is
        // Secure, host-only and for Path=/: no subdomain can plant one.
        "__Host-keyward_session"
    } else {
        "keyward_session"
    }
}

pub(crate) fn cookie_attributes(state: &ConsoleState) -> &'static str {
    if state.settings.console.secure_cookies {
        "Path=/; Secure; HttpOnly; SameSite=Strict"
    } else {
        "Path=/; HttpOnly; SameSite=Strict"
    }
}

/// The value of the cookie `name`, if set and not empty.
pub(crate) fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
        .filter(|v| !v.is_empty())
}

fn session_token(headers: &HeaderMap, name: &str) -> Option<String> {
    cookie_value(headers, name).filter(|v| v.len() <= 128)
}

fn token_hash(token: &str) -> String {
    KeyHash::of(token).to_hex()
}

fn csrf_for(token: &str) -> String {
    KeyHash::of(&format!("csrf:{token}")).to_hex()
}

/// Compares without stopping at the first difference.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Random bytes as URL-safe base64: session and invitation tokens.
pub(crate) fn random_token(state: &ConsoleState) -> Result<String, ConsoleError> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    state
        .entropy
        .fill(bytes.as_mut())
        .map_err(|_| ConsoleError::Unavailable)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes.as_ref()))
}

/// A local console path to come back to after sign-in, or `None`.
fn local_next(next: &str) -> Option<&str> {
    let ok = (next == "/console" || next.starts_with("/console/") || next.starts_with("/console?"))
        && !next.contains(['\\', '\r', '\n'])
        && !next.starts_with("/console/sign-");
    ok.then_some(next)
}

async fn load(parts: &Parts, state: &ConsoleState) -> Result<(SignedIn, String), ConsoleError> {
    let signed_out = || ConsoleError::SignedOut {
        next: (parts.method == Method::GET)
            .then(|| {
                parts
                    .uri
                    .path_and_query()
                    .map_or("/console", |p| p.as_str())
                    .to_owned()
            })
            .filter(|n| local_next(n).is_some()),
    };
    let token = session_token(&parts.headers, cookie_name(state)).ok_or_else(signed_out)?;
    let hash = token_hash(&token);
    let session = state
        .store
        .get_session(&hash)
        .await?
        .ok_or_else(signed_out)?;
    let cfg = &state.settings.console;
    let now = state.clock.now().0;
    let idle_ms = secs_to_ms(cfg.session_idle_seconds);
    if now >= session.expires_at || now.saturating_sub(session.last_seen_at) >= idle_ms {
        state.store.delete_session(&hash).await?;
        return Err(signed_out());
    }
    state.store.touch_session(&hash, now).await?;
    let user = match state.store.get_user(&session.user_id).await {
        Ok(u) => u,
        Err(keyward_store::StoreError::NotFound) => return Err(signed_out()),
        Err(e) => return Err(e.into()),
    };
    let memberships = state.store.memberships_of(&user.id).await?;
    let flash_key = KeyHash::of(&format!("flash:{token}")).to_hex();
    let flash = (parts.method == Method::GET)
        .then(|| flash::read(state, &parts.headers, &flash_key))
        .flatten();
    let signed = SignedIn {
        user,
        memberships,
        flash_key,
        flash,
        csrf: csrf_for(&token),
        token_hash: hash,
        ip: crate::client_ip(parts, state),
    };
    Ok((signed, token))
}

/// The signed-in user of a request, if its session is valid.
pub(crate) async fn signed_in(parts: &Parts, state: &ConsoleState) -> Option<SignedIn> {
    load(parts, state).await.ok().map(|(signed, _)| signed)
}

pub(crate) fn secs_to_ms(s: u64) -> i64 {
    i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX)
}

impl FromRequestParts<ConsoleState> for SignedIn {
    type Rejection = ConsoleError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ConsoleState,
    ) -> Result<Self, Self::Rejection> {
        let (signed, _) = load(parts, state).await?;
        if !matches!(parts.method, Method::GET | Method::HEAD) {
            let sent = parts
                .headers
                .get("x-csrf-token")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !same(sent, &signed.csrf) {
                return Err(ConsoleError::Csrf);
            }
        }
        Ok(signed)
    }
}

impl FromRequest<ConsoleState> for SignedForm {
    type Rejection = ConsoleError;

    async fn from_request(req: Request, state: &ConsoleState) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let (signed, _) = load(&parts, state).await?;
        let form = FormData::from_request(Request::from_parts(parts, body), state).await?;
        if !same(form.get("_csrf"), &signed.csrf) {
            return Err(ConsoleError::Csrf);
        }
        Ok(SignedForm { signed, form })
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct SignInQuery {
    next: Option<String>,
    email: Option<String>,
    signed_out: Option<String>,
    joined: Option<String>,
    /// Why the last attempt was refused (post-redirect-get): `missing`, or
    /// `credentials`, whose message the failure limits may turn into a wait.
    failed: Option<String>,
}

/// Where a refused sign-in goes: the sign-in page, with the email, the page
/// to come back to and the reason in the address (never the password).
fn failed_url(email: &str, next: &str, code: &str) -> String {
    let mut url = format!(
        "/console/sign-in?failed={code}&email={}",
        ui::url_encode(email)
    );
    if !next.is_empty() {
        url.push_str("&next=");
        url.push_str(&ui::url_encode(next));
    }
    url
}

/// The sign-in form.
pub async fn sign_in_page(
    State(state): State<ConsoleState>,
    Query(q): Query<SignInQuery>,
    parts: Parts,
) -> Result<Response, ConsoleError> {
    let headers = &parts.headers;
    // Already signed in: go on (unless this shows a refused attempt).
    if let Some(token) = session_token(headers, cookie_name(&state)).filter(|_| q.failed.is_none())
    {
        if let Ok(Some(s)) = state.store.get_session(&token_hash(&token)).await {
            let now = state.clock.now().0;
            let idle = secs_to_ms(state.settings.console.session_idle_seconds);
            if now < s.expires_at && now - s.last_seen_at < idle {
                let to = q.next.as_deref().and_then(local_next).unwrap_or("/console");
                return Ok(Redirect::to(to).into_response());
            }
        }
    }
    let email = accounts::normalize_email(q.email.as_deref().unwrap_or(""));
    let next = q.next.as_deref().and_then(local_next).unwrap_or("");
    if let Some(code) = q.failed.as_deref() {
        // The message is worked out here, from the store, so an address
        // cannot make the page say anything but the truth.
        let (status, message, retry) = if code == "missing" || email.is_empty() {
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "Enter your email and your password.".to_owned(),
                None,
            )
        } else {
            let ip = crate::client_ip(&parts, &state);
            match Throttle::new(&state, &email, ip).refused().await? {
                Some(r) => (
                    StatusCode::TOO_MANY_REQUESTS,
                    r.message(),
                    Some(r.retry_after),
                ),
                None => (
                    StatusCode::UNAUTHORIZED,
                    "The email or password is not right. Check both and try again.".to_owned(),
                    None,
                ),
            }
        };
        let view = SignInView {
            email: &email,
            next,
            error: Some(&message),
            notice: None,
        };
        let mut res = ui::html(status, sign_in_view(&view));
        if let Some(r) = retry {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(r.max(1)));
        }
        return Ok(res);
    }
    let notice = if q.signed_out.is_some() {
        Some("You are signed out.")
    } else if q.joined.is_some() {
        Some("Your account is ready. Sign in to continue.")
    } else if q.next.is_some() {
        Some("Sign in to continue. (Sessions end after a period without activity.)")
    } else {
        None
    };
    let form = SignInView {
        email: q.email.as_deref().unwrap_or(""),
        next: q.next.as_deref().and_then(local_next).unwrap_or(""),
        error: None,
        notice,
    };
    Ok(ui::html(StatusCode::OK, sign_in_view(&form)))
}

struct SignInView<'a> {
    email: &'a str,
    next: &'a str,
    error: Option<&'a str>,
    notice: Option<&'a str>,
}

fn sign_in_view(v: &SignInView<'_>) -> maud::Markup {
    let content = html! {
        div.auth-card {
            (ui::brand_mark())
            h1 { "Sign in to keyward" }
            @if let Some(n) = v.notice {
                p.notice role="status" { (n) }
            }
            @if let Some(e) = v.error {
                div.alert.alert-error role="alert" id="sign-in-error" { (e) }
            }
            form method="post" action="/console/sign-in" novalidate {
                input type="hidden" name="next" value=(v.next);
                div.field {
                    label for="email" { "Email" }
                    input #email type="email" name="email" value=(v.email) required autocomplete="username" autofocus[v.email.is_empty()]
                        aria-describedby=[v.error.map(|_| "sign-in-error")];
                }
                div.field {
                    label for="password" { "Password" }
                    input #password type="password" name="password" required autocomplete="current-password" autofocus[!v.email.is_empty()];
                }
                button.btn.btn-primary.btn-block type="submit" { "Sign in" }
            }
            p.muted.small { "New here? Ask an owner of your organization for an invitation link. Forgot your password? An operator can set a new one with " code { "keyward users set-password" } "." }
        }
    };
    ui::bare_page("Sign in", content)
}

/// Checks the email and password, subject to the failure limits, and starts a session.
pub async fn sign_in(
    State(state): State<ConsoleState>,
    req: Request,
) -> Result<Response, ConsoleError> {
    let (parts, body) = req.into_parts();
    let ip = crate::client_ip(&parts, &state);
    let form = FormData::from_request(Request::from_parts(parts, body), &state).await?;
    let email = accounts::normalize_email(form.get("email"));
    let next = local_next(form.get("next")).unwrap_or("").to_owned();
    let password = form.secret("password");
    // Refusals go back to the sign-in page (post-redirect-get), which says why.
    let fail = |code: &str| Redirect::to(&failed_url(&email, &next, code)).into_response();
    if email.is_empty() || password.is_empty() {
        return Ok(fail("missing"));
    }
    let throttle = Throttle::new(&state, &email, ip);
    if throttle.refused().await?.is_some() {
        return Ok(fail("credentials"));
    }
    let user = state.store.find_user_by_email(&email).await?;
    let ok = password::verify(password, user.as_ref().map(|u| u.password_hash.clone())).await;
    let Some(user) = user.filter(|_| ok) else {
        throttle.failed().await?;
        tracing::info!(ip = ?ip, "Console sign-in failed.");
        return Ok(fail("credentials"));
    };
    throttle.succeeded().await?;
    let cookie = start_session(&state, &user, ip).await?;
    tracing::info!(user_id = %user.id, "Console sign-in.");
    let to = if next.is_empty() {
        "/console"
    } else {
        next.as_str()
    };
    let mut res = Redirect::to(to).into_response();
    res.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(res)
}

/// Creates a session for `user`; returns the `Set-Cookie` header value.
pub(crate) async fn start_session(
    state: &ConsoleState,
    user: &User,
    ip: Option<IpAddr>,
) -> Result<HeaderValue, ConsoleError> {
    let cfg = &state.settings.console;
    let now = state.clock.now().0;
    // Expired sessions are swept at each sign-in: no background task needed.
    let idle = secs_to_ms(cfg.session_idle_seconds);
    state.store.purge_sessions(now, now - idle).await?;
    let token = Zeroizing::new(random_token(state)?);
    let session = Session {
        token_hash: token_hash(&token),
        user_id: user.id.clone(),
        created_at: now,
        last_seen_at: now,
        expires_at: now.saturating_add(secs_to_ms(cfg.session_lifetime_seconds)),
        ip: ip.map(|i| i.to_string()),
    };
    state.store.create_session(&session).await?;
    let cookie = Zeroizing::new(format!(
        "{}={}; {}; Max-Age={}",
        cookie_name(state),
        token.as_str(),
        cookie_attributes(state),
        cfg.session_lifetime_seconds
    ));
    HeaderValue::from_str(&cookie).map_err(|_| ConsoleError::Unavailable)
}

/// Ends the session server-side and clears the cookie.
pub async fn sign_out(
    State(state): State<ConsoleState>,
    f: SignedForm,
) -> Result<Response, ConsoleError> {
    state.store.delete_session(&f.signed.token_hash).await?;
    tracing::info!(user_id = %f.signed.user.id, "Console sign-out.");
    let mut res = Redirect::to("/console/sign-in?signed_out=1").into_response();
    let clear = format!(
        "{}=; {}; Max-Age=0",
        cookie_name(&state),
        cookie_attributes(&state)
    );
    if let Ok(v) = HeaderValue::from_str(&clear) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(res)
}

/// Failed sign-in accounting for one attempt: the account and the address.
pub(crate) struct Throttle<'a> {
    state: &'a ConsoleState,
    account: String,
    address: Option<String>,
}

pub(crate) struct Refusal {
    by_account: bool,
    pub retry_after: i64,
}

impl Refusal {
    pub fn message(&self) -> String {
        let minutes = (self.retry_after + 59) / 60;
        let wait = if minutes <= 1 {
            "a minute".to_owned()
        } else {
            format!("{minutes} minutes")
        };
        if self.by_account {
            format!(
                "Too many failed sign-in attempts for this account. For its safety, sign-in is \
                 paused: wait {wait} and try again. If you forgot your password, ask an operator to set a new one."
            )
        } else {
            format!(
                "Too many failed sign-in attempts from your network address. Wait {wait} and try again."
            )
        }
    }
}

impl<'a> Throttle<'a> {
    pub(crate) fn new(state: &'a ConsoleState, email: &str, ip: Option<IpAddr>) -> Throttle<'a> {
        Throttle {
            state,
            account: format!("account:{email}"),
            address: ip.map(|i| format!("ip:{i}")),
        }
    }

    fn limits(&self) -> Vec<(&str, i64, bool)> {
        let c = &self.state.settings.console;
        let mut out = vec![(
            self.account.as_str(),
            i64::from(c.login_max_failures_per_account),
            true,
        )];
        if let Some(a) = &self.address {
            out.push((a.as_str(), i64::from(c.login_max_failures_per_ip), false));
        }
        out
    }

    fn window(&self) -> i64 {
        secs_to_ms(self.state.settings.console.login_window_seconds)
    }

    fn refusal(&self, by_account: bool, window_start: i64, now: i64) -> Refusal {
        Refusal {
            by_account,
            retry_after: (window_start + self.window() - now + 999) / 1000,
        }
    }

    /// Whether sign-in is paused for the account or the address.
    pub(crate) async fn refused(&self) -> Result<Option<Refusal>, ConsoleError> {
        let now = self.state.clock.now().0;
        for (subject, max, by_account) in self.limits() {
            let (n, start) = self
                .state
                .store
                .login_failures(subject, now, self.window())
                .await?;
            if n >= max {
                return Ok(Some(self.refusal(by_account, start, now)));
            }
        }
        Ok(None)
    }

    /// Counts a failure; says so if it used up a limit.
    pub(crate) async fn failed(&self) -> Result<Option<Refusal>, ConsoleError> {
        let now = self.state.clock.now().0;
        let mut refusal = None;
        for (subject, max, by_account) in self.limits() {
            let (n, start) = self
                .state
                .store
                .record_login_failure(subject, now, self.window())
                .await?;
            if n >= max && refusal.is_none() {
                refusal = Some(self.refusal(by_account, start, now));
            }
        }
        Ok(refusal)
    }

    /// A right password clears the account's count (not the address's).
    pub(crate) async fn succeeded(&self) -> Result<(), ConsoleError> {
        self.state.store.clear_login_failures(&self.account).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_must_stay_in_the_console() {
        assert_eq!(local_next("/console/t/x/keys"), Some("/console/t/x/keys"));
        assert_eq!(local_next("//evil.example/console"), None);
        assert_eq!(local_next("https://evil.example"), None);
        assert_eq!(local_next("/consolex"), None);
        assert_eq!(local_next("/console/sign-in"), None);
        assert_eq!(local_next("/v1/keys"), None);
    }

    #[test]
    fn cookies_are_found_by_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-keyward_session=tok; b=2"),
        );
        assert_eq!(
            session_token(&h, "__Host-keyward_session").as_deref(),
            Some("tok")
        );
        assert_eq!(session_token(&h, "keyward_session"), None);
    }

    #[test]
    fn csrf_tokens_differ_per_session_and_compare_fully() {
        assert_ne!(csrf_for("a"), csrf_for("b"));
        assert!(same(&csrf_for("a"), &csrf_for("a")));
        assert!(!same(&csrf_for("a"), ""));
    }
}
