//! keyward's management HTTP API: the routes under `/v1` (keys, tenants,
//! credits, audit, key verification, leak reports, usage, webhooks, events,
//! alerts, health, `/v1/me`, the change feed `/v1/changes`) and the OpenAPI
//! document served at `/openapi.json`.
//!
//! Handlers are thin adapters: a `Caller` extractor verifies the presented
//! key and turns it into a management `Actor`; every action then goes
//! through the management service (`keyward_manage::ManageService`), which
//! checks scopes, tenant isolation and input, writes the audit entry and
//! invalidates caches. Only `POST /v1/keys/verify` reads the verifier, the
//! rate limiter and the credit bank itself, as the gateway does.
//!
//! # Surface
//!
//! [`router`] serves the routes over an [`ApiState`] (the management
//! service, the verifier, the limits, the live request policy, the clock
//! and [`ApiSettings`]); the server merges it into its router. [`paths`]
//! lists the routed paths, which the gateway must not shadow. The server's
//! edge middleware puts a [`BodyLimit`] in each request's extensions, which
//! the body extractors quote when a body is too large. Errors are
//! `keyward_http::error::ApiError`s, rendered in the deployment's style by
//! the server's edge.

mod audit;
pub mod changes;
mod credits;
mod keys;
pub mod leaks;
mod meta;
mod openapi;
mod tenants;
mod usage;
mod views;
mod webhooks;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use keyward_observe::Observer;

use axum::extract::rejection::{JsonRejection, QueryRejection, RawPathParamsRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, RawPathParams, Request};
use axum::http::request::Parts;
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use ipnet::IpNet;
use keyward_core::clock::Clock;
use keyward_core::scope::ScopeCatalog;
use keyward_core::verdict::Denial;
use keyward_gateway::LivePolicy;
use keyward_http::error::ApiError;
use keyward_limits::Limits;
use keyward_manage::{Actor, ManageService};
use keyward_verify::credential::{self, CredentialRules};
use keyward_verify::verifier::{CachedKey, Outcome, Request as VerifyRequest, Verifier};
use serde::de::DeserializeOwned;

/// What the API's handlers read: cheap to clone (one reference count),
/// since axum clones the state for every request.
#[derive(Clone)]
pub struct ApiState(Arc<Shared>);

impl ApiState {
    /// The API over its parts (see [`Shared`]).
    pub fn new(parts: Shared) -> ApiState {
        ApiState(Arc::new(parts))
    }
}

/// One part of the node `/v1/ready` reports on.
#[derive(Debug, Clone, Copy)]
pub struct Check {
    pub name: &'static str,
    pub state: &'static str,
    /// Serving, but falling back (the node answers `degraded`).
    pub degraded: bool,
}

/// What `/v1/ready` reports besides the store (the server's shared parts:
/// rate limiter, change feed).
pub trait Readiness: Send + Sync + 'static {
    fn checks(&self) -> Vec<Check>;
}

impl std::ops::Deref for ApiState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The contents of [`ApiState`]: what the handlers read.
pub struct Shared {
    /// Every management action.
    pub manage: Arc<ManageService>,
    /// The caller's key, and keys sent to `/v1/keys/verify`.
    pub verifier: Arc<Verifier>,
    /// The verify endpoint's rate limits and credits.
    pub limits: Arc<Limits>,
    /// The request policy in force (its tiers, reloadable).
    pub policy: LivePolicy,
    /// What `/v1/ready` reports besides the store.
    pub readiness: Arc<dyn Readiness>,
    /// Where verifications are counted (usage, metrics).
    pub observer: Arc<Observer>,
    pub clock: Arc<dyn Clock>,
    pub settings: ApiSettings,
    /// Leak reports: the partner keys, GitLab's token, the policy worker's queue.
    pub leaks: Arc<leaks::LeakIntake>,
    /// Raised when the change log may have grown: ends the change feed's
    /// waits (`GET /v1/changes`).
    pub changes: Arc<changes::ChangeSignal>,
}

/// The deployment's settings the API reads (fixed while serving).
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Where keys are looked for (the key header, the key format and its
    /// environments).
    pub credentials: CredentialRules,
    /// Proxies whose `X-Forwarded-For` is believed (the client address a
    /// key's allowlist is checked against).
    pub trusted_proxies: Vec<IpNet>,
    /// The declared scopes (the OpenAPI document's grantable scopes).
    pub catalog: ScopeCatalog,
}

/// The API's routes, with `state` applied. Merge it into the server's
/// router.
pub fn router<S: Clone + Send + Sync + 'static>(state: ApiState) -> Router<S> {
    routes().with_state(state)
}

fn routes() -> Router<ApiState> {
    table()
        .into_iter()
        .fold(Router::new(), |router, (path, methods)| {
            router.route(path, methods)
        })
}

/// The paths of [`router`], which win over gateway routes (the gateway's
/// fast path hands them to the router).
pub fn paths() -> Vec<&'static str> {
    table().into_iter().map(|(path, _)| path).collect()
}

/// The API's paths and handlers: one list, so [`paths`] cannot drift from
/// what is routed.
fn table() -> Vec<(&'static str, MethodRouter<ApiState>)> {
    use axum::routing::put;
    vec![
        ("/v1/health", get(meta::health)),
        ("/v1/ready", get(meta::ready)),
        ("/v1/me", get(meta::me)),
        ("/v1/tenants", post(tenants::create).get(tenants::list)),
        ("/v1/tenants/{id}", get(tenants::get).patch(tenants::update)),
        (
            "/v1/tenants/{id}/credits",
            get(credits::get).post(credits::change),
        ),
        (
            "/v1/tenants/{id}/credits/refill",
            put(credits::set_refill).delete(credits::clear_refill),
        ),
        ("/v1/tenants/{id}/credits/ledger", get(credits::ledger)),
        ("/v1/tenants/{id}/usage", get(usage::tenant)),
        ("/v1/keys", post(keys::create).get(keys::list)),
        ("/v1/keys/verify", post(keys::verify)),
        ("/v1/changes", get(changes::list)),
        (
            "/v1/keys/{id}",
            get(keys::get).patch(keys::update).delete(keys::delete),
        ),
        ("/v1/keys/{id}/revoke", post(keys::revoke)),
        ("/v1/keys/{id}/rotate", post(keys::rotate)),
        ("/v1/keys/{id}/usage", get(usage::key)),
        ("/v1/keys/{id}/ips", get(usage::ips)),
        ("/v1/keys/{id}/leaks", get(leaks::of_key)),
        ("/v1/leaks", post(leaks::report)),
        ("/v1/leaks/check", post(leaks::check)),
        ("/v1/leaks/github", post(leaks::github)),
        (
            "/v1/leaks/gitlab/revocable_token_types",
            get(leaks::gitlab_types),
        ),
        ("/v1/leaks/gitlab/revoke", post(leaks::gitlab_revoke)),
        ("/v1/audit", get(audit::list)),
        ("/v1/webhooks", post(webhooks::create).get(webhooks::list)),
        (
            "/v1/webhooks/{id}",
            get(webhooks::get)
                .patch(webhooks::update)
                .delete(webhooks::delete),
        ),
        ("/v1/webhooks/{id}/rotate-secret", post(webhooks::rotate)),
        ("/v1/webhooks/{id}/test", post(webhooks::test)),
        ("/v1/webhooks/{id}/deliveries", get(webhooks::deliveries)),
        (
            "/v1/webhooks/{id}/deliveries/{event_id}",
            get(webhooks::delivery),
        ),
        (
            "/v1/webhooks/{id}/deliveries/{event_id}/redeliver",
            post(webhooks::redeliver),
        ),
        ("/v1/events", post(webhooks::publish)),
        ("/v1/alerts", get(webhooks::alerts)),
        ("/openapi.json", get(meta::openapi)),
    ]
}

/// JSON bodies, with every rejection turned into a typed problem.
pub(crate) struct Json<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = req.extensions().get::<BodyLimit>().map_or(0, |l| l.0);
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::UnsupportedMediaType),
            Err(JsonRejection::BytesRejection(e))
                if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Err(ApiError::PayloadTooLarge(limit))
            }
            Err(e) => Err(ApiError::InvalidBody(e.body_text())),
        }
    }
}

/// An optional JSON body: an empty body is `None`.
pub(crate) struct MaybeJson<T>(pub(crate) Option<T>);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for MaybeJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = req.extensions().get::<BodyLimit>().map_or(0, |l| l.0);
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge(limit)
                } else {
                    ApiError::InvalidBody(e.body_text())
                }
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(MaybeJson(None));
        }
        serde_json::from_slice(&bytes)
            .map(|v| MaybeJson(Some(v)))
            .map_err(|e| ApiError::InvalidBody(format!("Failed to parse the JSON body: {e}")))
    }
}

/// The configured body limit (`http.max_body_bytes`), for the message of a
/// 413: the server's edge puts it in each request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// Query strings, with rejections as typed problems.
pub(crate) struct Query<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => {
                Err(ApiError::InvalidQuery(e.body_text()))
            }
            Err(e) => Err(ApiError::InvalidQuery(e.body_text())),
        }
    }
}

/// The authenticated key behind a management or `/me` request. Every check
/// but scopes has passed; handlers hand its [`Actor`] to the management
/// service, which checks the scope each action needs.
pub(crate) struct Caller {
    pub(crate) key: Arc<CachedKey>,
    pub(crate) actor: Actor,
}

impl Caller {
    /// The API key as a management actor.
    pub(crate) fn of_key(key: Arc<CachedKey>, ip: Option<IpAddr>) -> Caller {
        let r = &key.record;
        let actor = Actor::Key {
            id: r.id.clone(),
            class: r.class,
            tenant_id: r.tenant_id.clone(),
            scopes: key.policy.scopes.clone(),
            ip,
        };
        Caller { key, actor }
    }
}

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        let presented = credential::extract(
            &parts.headers,
            &parts.uri,
            &state.settings.credentials,
            credential::ALL_SCHEMES,
        )?
        .ok_or(ApiError::Denied(Denial::MissingCredentials))?;
        let ip = client_ip(parts, state);
        let req = VerifyRequest {
            client_ip: ip,
            required_scopes: &[],
        };
        let key = match state.verifier.verify(&presented, req).await? {
            Outcome::Valid(key) => key,
            Outcome::Denied(d, _) => return Err(ApiError::Denied(d)),
        };
        // Every handler with a path parameter takes the caller first, so
        // this is where a parameter that does not decode to UTF-8 (`%FF`)
        // is answered: no id is such a string, so 404 like any unknown id
        // (axum's `Path` would answer a `text/plain` 400).
        if let Err(RawPathParamsRejection::InvalidUtf8InPathParam(_)) =
            RawPathParams::from_request_parts(parts, state).await
        {
            return Err(ApiError::NotFound("resource"));
        }
        Ok(Caller::of_key(key, ip))
    }
}

fn client_ip(parts: &Parts, state: &ApiState) -> Option<IpAddr> {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    credential::client_ip(peer, &parts.headers, &state.settings.trusted_proxies)
}
