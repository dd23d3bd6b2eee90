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
use base64::Engine;
use keyward_core::id::new_id;
use keyward_core::scope::Grantor;
use keyward_core::verdict::Denial;
use keyward_store::{AuditEntry, KeyClass, PageRequest};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::app::AppState;
use crate::credential;
use crate::error::{ApiError, FieldError};
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

/// Checks a tier name given to a key or tenant: only operators set tiers
/// (they decide what a customer pays for), and when the deployment declares
/// tiers the name must be one of them.
pub(crate) fn check_tier(state: &AppState, caller: &Caller, t: &str, errors: &mut Vec<FieldError>) {
    if !caller.is_root() {
        errors.push(FieldError::new(
            "tier",
            "not_grantable",
            "only operator root keys set tiers",
        ));
    } else if !crate::limits::valid_tier_name(t) {
        errors.push(FieldError::new(
            "tier",
            "invalid",
            "tier must be 1 to 64 characters of a-z, 0-9, _ and -",
        ));
    } else {
        let policy = state.policy.current();
        let tiers = &policy.tiers;
        if !tiers.is_empty() && tiers.get(t).is_none() {
            let known: Vec<&str> = tiers.names().into_keys().collect();
            errors.push(FieldError::new(
                "tier",
                "unknown_tier",
                format!("tier must be one of: {}", known.join(", ")),
            ));
        }
    }
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
/// but scopes has passed; handlers then [`Caller::require`] their scope.
pub struct Caller {
    pub key: Arc<CachedKey>,
    pub ip: Option<IpAddr>,
    /// A console member acting with their role's scopes (a synthetic key),
    /// rather than a stored API key: see [`Caller::grantor`].
    pub member: bool,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let presented = credential::extract_with(
            &parts.headers,
            &parts.uri,
            &state.settings,
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
        Ok(Caller {
            key,
            ip,
            member: false,
        })
    }
}

pub(crate) fn client_ip(parts: &Parts, state: &AppState) -> Option<IpAddr> {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    credential::client_ip(peer, &parts.headers, &state.settings.trusted_proxies)
}

impl Caller {
    /// Fails with 403 `insufficient_scope` unless the key holds `scope`.
    pub fn require(&self, scope: &str) -> Result<(), ApiError> {
        if self.key.policy.scopes.allows(scope) {
            Ok(())
        } else {
            Err(ApiError::Denied(Denial::InsufficientScope {
                missing: vec![scope.to_owned()],
            }))
        }
    }

    pub fn is_root(&self) -> bool {
        self.key.record.class == KeyClass::Root
    }

    pub fn require_root(&self) -> Result<(), ApiError> {
        if self.is_root() {
            Ok(())
        } else {
            Err(ApiError::RootOnly)
        }
    }

    /// Who this caller is when giving a key scopes: operators (root keys,
    /// console operators) may give any; a tenant key only what it holds; a
    /// console member keyward's own scopes only as far as their role holds
    /// them (`keyward_core::scope::refused_grants`).
    pub fn grantor(&self) -> Grantor<'_> {
        if self.is_root() {
            Grantor::Operator
        } else if self.member {
            Grantor::Member(&self.key.policy.scopes)
        } else {
            Grantor::Key(&self.key.policy.scopes)
        }
    }

    pub fn tenant_id(&self) -> Option<&str> {
        self.key.record.tenant_id.as_deref()
    }

    /// Whether this caller may see things of `tenant_id` (root keys see all;
    /// a tenant key sees its own tenant only). Callers answer 404 otherwise.
    pub fn sees_tenant(&self, tenant_id: Option<&str>) -> bool {
        self.is_root() || (tenant_id.is_some() && tenant_id == self.tenant_id())
    }

    pub fn audit(
        &self,
        state: &AppState,
        action: &str,
        target: &str,
        tenant_id: Option<&str>,
        details: Value,
    ) -> Result<AuditEntry, ApiError> {
        Ok(AuditEntry {
            id: new_id("evt", state.entropy.as_ref()).map_err(|_| ApiError::Internal)?,
            at: state.clock.now().0,
            actor: self.key.record.id.clone(),
            actor_ip: self.ip.map(|i| i.to_string()),
            tenant_id: tenant_id.map(str::to_owned),
            action: action.to_owned(),
            target: target.to_owned(),
            details,
        })
    }
}

/// Cursor pagination: `?limit=1..100&cursor=…`.
pub(crate) fn page_request(
    limit: Option<u32>,
    cursor: Option<&str>,
) -> Result<PageRequest, ApiError> {
    let limit = limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::Validation(vec![FieldError::new(
            "limit",
            "out_of_range",
            "limit must be between 1 and 100",
        )]));
    }
    let before = match cursor {
        None | Some("") => None,
        Some(c) => Some(decode_cursor(c).ok_or(ApiError::InvalidCursor)?),
    };
    Ok(PageRequest { limit, before })
}

pub(crate) fn encode_cursor(seq: i64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("seq:{seq}"))
}

fn decode_cursor(c: &str) -> Option<i64> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c)
        .ok()?;
    std::str::from_utf8(&bytes)
        .ok()?
        .strip_prefix("seq:")?
        .parse()
        .ok()
}

/// Deserializes a field that may be absent (`None`), `null` (`Some(None)`)
/// or a value (`Some(Some(v))`), for PATCH bodies.
pub(crate) fn nullable<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    T: serde::Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(d).map(Some)
}
