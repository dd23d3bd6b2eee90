//! The HTTP API under `/v1`: routing, extractors shared by handlers, and the
//! [`Caller`] that every authenticated handler starts from.

pub mod audit;
pub mod credits;
pub mod keys;
pub mod meta;
pub mod tenants;
pub mod views;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection, RawPathParamsRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, RawPathParams, Request};
use axum::http::request::Parts;
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use keyward_core::verdict::Denial;
use keyward_manage::Actor;
use serde::de::DeserializeOwned;

use crate::app::AppState;
use crate::credential;
use crate::error::ApiError;
use crate::verifier::{CachedKey, Outcome, Request as VerifyRequest};

pub(crate) fn routes() -> Router<AppState> {
    table()
        .into_iter()
        .fold(Router::new(), |router, (path, methods)| {
            router.route(path, methods)
        })
}

/// The paths of [`routes`], which win over gateway routes (the gateway's
/// fast path hands them to the router).
pub(crate) fn paths() -> Vec<&'static str> {
    table().into_iter().map(|(path, _)| path).collect()
}

/// The API's paths and handlers: one list, so [`paths`] cannot drift from
/// what is routed.
fn table() -> Vec<(&'static str, MethodRouter<AppState>)> {
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
        ("/v1/keys", post(keys::create).get(keys::list)),
        ("/v1/keys/verify", post(keys::verify)),
        (
            "/v1/keys/{id}",
            get(keys::get).patch(keys::update).delete(keys::delete),
        ),
        ("/v1/keys/{id}/revoke", post(keys::revoke)),
        ("/v1/keys/{id}/rotate", post(keys::rotate)),
        ("/v1/audit", get(audit::list)),
        ("/openapi.json", get(meta::openapi)),
    ]
}

/// JSON bodies, with every rejection turned into a typed problem.
pub struct Json<T>(pub T);

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
pub struct MaybeJson<T>(pub Option<T>);

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

/// The configured body limit, for error messages.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// Query strings, with rejections as typed problems.
pub struct Query<T>(pub T);

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
pub struct Caller {
    pub key: Arc<CachedKey>,
    pub actor: Actor,
}

impl Caller {
    /// The API key as a management actor.
    pub fn of_key(key: Arc<CachedKey>, ip: Option<IpAddr>) -> Caller {
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

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
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

pub(crate) fn client_ip(parts: &Parts, state: &AppState) -> Option<IpAddr> {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    credential::client_ip(peer, &parts.headers, &state.settings.trusted_proxies)
}
