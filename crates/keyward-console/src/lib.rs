//! keyward's developer console: server-rendered HTML pages at `/console`
//! where people sign in and manage their tenants' keys, members, settings
//! and audit log — over the same management service as the HTTP API.
//!
//! People sign in with an email and password (`session`); each holds a
//! [`Role`] per tenant, or is an operator who sees every tenant (`access`).
//! Pages are HTML rendered with `maud` templates (`ui`); usage charts are
//! SVG drawn on the server (`chart`, `usage`); one small script,
//! one stylesheet and one icon are compiled into the binary (`assets`), so
//! the console needs no Node toolchain to build and no network to run.
//!
//! # Invariants
//!
//! - **It acts only through the management service.** Every key, tenant,
//!   member and audit action goes through [`ManageService`] with an `Actor`
//!   built from the signed-in user and their role: validation, tenant
//!   isolation, audit records and cache invalidation are the service's, the
//!   same as the API's. The store is read directly only for sessions,
//!   sign-in and the people behind them.
//! - **No page without a session** but sign-in and accepting an
//!   invitation. Sessions are random tokens in a `Secure; HttpOnly;
//!   SameSite=Strict` cookie, stored only as a SHA-256.
//! - **CSRF on every form:** every state change carries a token derived from
//!   the session token and must come from this origin (`Sec-Fetch-Site` /
//!   `Origin`); every response carries a strict Content-Security-Policy (no
//!   inline script or style) and `Cache-Control: no-store`.
//! - **Secrets are shown once:** a new key's secret appears only in the
//!   response to the create or rotate POST, and is never stored or logged.
//!
//! # Surface
//!
//! [`router`] serves the pages over a [`ConsoleState`] (the management
//! service, the store, clock and entropy, and [`ConsoleSettings`]: the
//! `[console]` section, [`ConsoleConfig`], and what else it reads from the
//! deployment's settings); the server merges it into its router. The CLI
//! creates users and sets passwords through [`accounts`].

mod access;
pub mod accounts;
mod alerts;
mod assets;
mod audit;
mod chart;
mod config;
mod flash;
mod form;
mod keys;
mod members;
mod password;
mod session;
mod tenants;
mod ui;
mod usage;
mod webhooks;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{any, get, post};
use axum::Router;
use ipnet::IpNet;
use keyward_core::clock::Clock;
use keyward_core::scope::ScopeCatalog;
use keyward_core::secret::{Entropy, KeyFormat};
use keyward_http::error::ApiError;
use keyward_manage::{ManageError, ManageService};
use keyward_store::{Role, Store, StoreError};

pub use config::{ConsoleConfig, InvalidSetting};

/// What the console reads: cheap to clone (one reference count), since axum
/// clones the state for every request.
#[derive(Clone)]
pub struct ConsoleState(Arc<Shared>);

impl ConsoleState {
    /// The console over `manage` (every action), `store` (sessions, sign-in
    /// and the people behind them), `clock`, `entropy` (session tokens,
    /// password salts) and `settings`.
    pub fn new(
        manage: Arc<ManageService>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
        settings: ConsoleSettings,
    ) -> ConsoleState {
        ConsoleState(Arc::new(Shared {
            manage,
            store,
            clock,
            entropy,
            settings,
        }))
    }
}

impl std::ops::Deref for ConsoleState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The contents of [`ConsoleState`].
pub struct Shared {
    pub(crate) manage: Arc<ManageService>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) entropy: Arc<dyn Entropy>,
    pub(crate) settings: ConsoleSettings,
}

/// The deployment's settings the console reads.
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    /// The `[console]` section.
    pub console: ConsoleConfig,
    /// Key environments and their prefixes (the new-key form).
    pub format: KeyFormat,
    /// The declared scopes (the scope picker, tenant settings).
    pub catalog: ScopeCatalog,
    /// Proxies whose `X-Forwarded-For` is believed (the client address
    /// that sign-in limits and audit entries record).
    pub trusted_proxies: Vec<IpNet>,
    /// How this deployment accepts keys (the hint beside a new secret).
    pub accepted: keyward_http::error::Accepted,
}

/// The console's routes, with `state` applied; empty when
/// `console.enabled` is off. Merge it into the server's router.
pub fn router<S: Clone + Send + Sync + 'static>(state: ConsoleState) -> Router<S> {
    if !state.settings.console.enabled {
        return Router::new();
    }
    Router::new()
        .route("/console", get(tenants::home))
        .route("/console/", get(|| async { Redirect::to("/console") }))
        .route(
            "/console/sign-in",
            get(session::sign_in_page).post(session::sign_in),
        )
        .route("/console/sign-out", post(session::sign_out))
        .route(
            "/console/invite",
            get(members::accept_page).post(members::accept),
        )
        .route("/console/tenants", get(tenants::list).post(tenants::create))
        .route("/console/t/{tid}", get(tenants::tenant_home))
        .route("/console/t/{tid}/keys", get(keys::list).post(keys::create))
        .route("/console/t/{tid}/keys/new", get(keys::new_page))
        .route(
            "/console/t/{tid}/keys/{kid}",
            get(keys::detail).post(keys::update),
        )
        .route("/console/t/{tid}/keys/{kid}/revoke", post(keys::revoke))
        .route("/console/t/{tid}/keys/{kid}/rotate", post(keys::rotate))
        .route("/console/t/{tid}/members", get(members::list))
        .route("/console/t/{tid}/members/invite", post(members::invite))
        .route(
            "/console/t/{tid}/members/{uid}/role",
            post(members::change_role),
        )
        .route(
            "/console/t/{tid}/members/{uid}/remove",
            post(members::remove),
        )
        .route(
            "/console/t/{tid}/invites/{iid}/revoke",
            post(members::revoke_invite),
        )
        .route("/console/t/{tid}/audit", get(audit::list))
        .route("/console/t/{tid}/usage", get(usage::tenant_page))
        .route("/console/t/{tid}/alerts", get(alerts::tenant_page))
        .route(
            "/console/t/{tid}/webhooks",
            get(webhooks::list).post(webhooks::create),
        )
        .route(
            "/console/t/{tid}/webhooks/{eid}",
            get(webhooks::detail).post(webhooks::update),
        )
        .route(
            "/console/t/{tid}/webhooks/{eid}/enabled",
            post(webhooks::set_enabled),
        )
        .route(
            "/console/t/{tid}/webhooks/{eid}/test",
            post(webhooks::send_test),
        )
        .route(
            "/console/t/{tid}/webhooks/{eid}/rotate",
            post(webhooks::rotate),
        )
        .route(
            "/console/t/{tid}/webhooks/{eid}/delete",
            post(webhooks::delete),
        )
        .route(
            "/console/t/{tid}/webhooks/{eid}/deliveries/{event}",
            get(webhooks::delivery),
        )
        .route(
            "/console/t/{tid}/webhooks/{eid}/deliveries/{event}/redeliver",
            post(webhooks::redeliver),
        )
        .route(
            "/console/t/{tid}/settings",
            get(tenants::settings).post(tenants::save_settings),
        )
        .route("/console/static/{file}", get(assets::serve))
        .route("/console/{*rest}", any(|| async { ConsoleError::NotFound }))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// The client's address: the peer, or what a trusted proxy says it forwards.
pub(crate) fn client_ip(parts: &Parts, state: &ConsoleState) -> Option<IpAddr> {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    keyward_verify::credential::client_ip(peer, &parts.headers, &state.settings.trusted_proxies)
}

/// Every console response: security headers, and state changes refused
/// unless they come from this origin (a second line behind the CSRF token,
/// and the only one for the sign-in and invitation forms, which have no
/// session yet).
async fn guard(
    axum::extract::State(state): axum::extract::State<ConsoleState>,
    req: Request,
    next: Next,
) -> Response {
    let unsafe_method = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if unsafe_method && !same_origin(req.headers()) {
        return ConsoleError::CrossOrigin.into_response();
    }
    // A flash is shown by the first page viewed after it was set.
    let shown_flash = req.method() == Method::GET
        && !req.uri().path().starts_with("/console/static/")
        && flash::present(&state, req.headers());
    // Enough of the request to find its session again for a 404 page.
    let head = (
        req.method().clone(),
        req.uri().clone(),
        req.headers().clone(),
        req.extensions().get::<ConnectInfo<SocketAddr>>().cloned(),
    );
    let mut res = next.run(req).await;
    if res.extensions().get::<NotFoundPage>().is_some() {
        if let Some(framed) = framed_not_found(&state, head).await {
            res = framed;
        }
    }
    let h = res.headers_mut();
    if shown_flash {
        if let Some(clear) = flash::clear(&state) {
            h.append(header::SET_COOKIE, clear);
        }
    }
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

/// Marks the page-not-found response, which the guard frames for a
/// signed-in user.
#[derive(Clone, Copy)]
struct NotFoundPage;

/// The page-not-found page in the console's frame, when the request has a
/// session; `None` otherwise (the bare page stays).
async fn framed_not_found(
    state: &ConsoleState,
    (method, uri, headers, peer): (
        Method,
        axum::http::Uri,
        HeaderMap,
        Option<ConnectInfo<SocketAddr>>,
    ),
) -> Option<Response> {
    let mut req = Request::new(axum::body::Body::empty());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    if let Some(p) = peer {
        req.extensions_mut().insert(p);
    }
    let (parts, _) = req.into_parts();
    let signed = session::signed_in(&parts, state).await?;
    Some(ui::html(StatusCode::NOT_FOUND, ui::not_found_page(&signed)))
}

/// Whether a state-changing request comes from a page of this origin.
/// Browsers say so in `Sec-Fetch-Site` (it must be `same-origin`, or `none`
/// for what the user did themselves); without it, `Origin`, when present,
/// must name this host. Clients that send neither (curl, tests) are not
/// browsers and carry no ambient cookies by accident.
fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    match text("sec-fetch-site") {
        Some("same-origin" | "none") => true,
        Some(_) => false,
        None => match text("origin") {
            None => true,
            Some(origin) => {
                let origin_host = origin.split_once("://").map(|(_, rest)| rest);
                matches!((origin_host, text("host")), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
            }
        },
    }
}

/// How console requests fail. Each renders as a page that says what
/// happened and what to do; form mistakes are shown on the form instead.
#[derive(Debug)]
pub enum ConsoleError {
    /// No valid session: a GET is sent to sign in and come back to `next`;
    /// anything else (`None`) is refused with 401.
    SignedOut {
        next: Option<String>,
    },
    /// The page exists but the role does not allow the action.
    Forbidden(String),
    /// Unknown, or another tenant's: the two look the same.
    NotFound,
    /// A state change without this session's CSRF token.
    Csrf,
    /// A state change from another site.
    CrossOrigin,
    BadRequest(String),
    /// Anything the management service refused that a form does not show,
    /// worded as the API words it.
    Api(ApiError),
    Unavailable,
}

impl From<ApiError> for ConsoleError {
    fn from(e: ApiError) -> ConsoleError {
        match e {
            ApiError::NotFound(_) => ConsoleError::NotFound,
            ApiError::Unavailable => ConsoleError::Unavailable,
            other => ConsoleError::Api(other),
        }
    }
}

/// The one place management refusals become console pages: unknown things
/// are 404 pages, a role's refusal says what the role may not do, and the
/// rest read as the API words them.
impl From<ManageError> for ConsoleError {
    fn from(e: ManageError) -> ConsoleError {
        match e {
            ManageError::NotFound(_) => ConsoleError::NotFound,
            ManageError::Unavailable => ConsoleError::Unavailable,
            ManageError::RoleRefused(what) => ConsoleError::Forbidden(format!(
                "Your role may not {what}. Ask an owner or admin of the tenant to change \
                 your role if you need to."
            )),
            other => ConsoleError::Api(ApiError::from(other)),
        }
    }
}

impl From<StoreError> for ConsoleError {
    fn from(e: StoreError) -> ConsoleError {
        ConsoleError::from(ApiError::from(e))
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let (status, title, message) = match self {
            ConsoleError::SignedOut { next: Some(next) } => {
                let target = format!("/console/sign-in?next={}", ui::url_encode(&next));
                return Redirect::to(&target).into_response();
            }
            ConsoleError::SignedOut { next: None } => (
                StatusCode::UNAUTHORIZED,
                "You are signed out",
                "Your session has ended, or you signed out. Nothing was changed. \
                 Sign in again, then repeat what you were doing."
                    .to_owned(),
            ),
            ConsoleError::Forbidden(m) => (StatusCode::FORBIDDEN, "Not allowed", m),
            ConsoleError::NotFound => (
                StatusCode::NOT_FOUND,
                "Page not found",
                "This page does not exist, or you do not have access to it. \
                 Check the address, or pick a tenant from the list."
                    .to_owned(),
            ),
            ConsoleError::Csrf => (
                StatusCode::FORBIDDEN,
                "This form has expired",
                "The form was not sent from this session (its security token is missing or \
                 out of date). Go back, reload the page, and try again."
                    .to_owned(),
            ),
            ConsoleError::CrossOrigin => (
                StatusCode::FORBIDDEN,
                "Refused: request from another site",
                "The console only accepts changes made on its own pages. \
                 Open the console directly and try again."
                    .to_owned(),
            ),
            ConsoleError::BadRequest(m) => (StatusCode::BAD_REQUEST, "Bad request", m),
            ConsoleError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Temporarily unavailable",
                "keyward cannot reach its store right now. Wait a moment and try again.".to_owned(),
            ),
            ConsoleError::Api(e) => {
                let p = e.problem();
                let status = p.status;
                let title = if status == StatusCode::FORBIDDEN {
                    "Not allowed"
                } else if status.is_server_error() {
                    "Something went wrong"
                } else {
                    "That did not work"
                };
                (status, title, p.detail)
            }
        };
        let not_found = status == StatusCode::NOT_FOUND;
        let mut res = ui::html(status, ui::error_page(status, title, &message));
        if not_found {
            res.extensions_mut().insert(NotFoundPage);
        }
        res
    }
}

/// The message for a role that may not do something.
pub(crate) fn role_refusal(role: Option<Role>, tenant: &str, what: &str) -> ConsoleError {
    let role = role.map_or("member", Role::as_str);
    ConsoleError::Forbidden(format!(
        "Your role in {tenant} is {role}, which cannot {what}. \
         Ask an owner or admin of {tenant} to change your role if you need to."
    ))
}
