//! Health, readiness, `/v1/me` and the OpenAPI document.

use axum::extract::State;
use axum::response::IntoResponse;

use super::views::{Health, Principal, PrincipalExt, ProblemDoc};
use super::Caller;
use crate::ApiState;
use keyward_http::error::ApiError;

/// Liveness: answers while the process runs. No authentication.
#[utoipa::path(
    get,
    path = "/v1/health",
    tag = "meta",
    operation_id = "health",
    responses(
        (status = 200, body = Health),
    ),
)]
pub(crate) async fn health() -> axum::Json<Health> {
    axum::Json(Health {
        status: "ok".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        checks: Default::default(),
    })
}

/// Readiness: the store answers, and how the node's other shared parts
/// stand (`status` is `degraded` while one falls back, and the node still
/// serves). No authentication.
#[utoipa::path(
    get,
    path = "/v1/ready",
    tag = "meta",
    operation_id = "ready",
    responses(
        (status = 200, body = Health),
        (status = 503, description = "`store_unavailable`: the store does not answer.", body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn ready(State(state): State<ApiState>) -> Result<axum::Json<Health>, ApiError> {
    state.manage.ping().await?;
    let mut checks = std::collections::BTreeMap::from([("store".to_owned(), "ok".to_owned())]);
    let mut degraded = false;
    for c in state.readiness.checks() {
        degraded |= c.degraded;
        checks.insert(c.name.to_owned(), c.state.to_owned());
    }
    Ok(axum::Json(Health {
        status: if degraded { "degraded" } else { "ready" }.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        checks,
    }))
}

/// The principal behind the presented key. Needs no scope.
#[utoipa::path(
    get,
    path = "/v1/me",
    tag = "meta",
    operation_id = "me",
    security(("bearer" = []), ("api_key" = []), ("basic" = [])),
    responses(
        (status = 200, body = Principal),
    ),
)]
pub(crate) async fn me(caller: Caller) -> axum::Json<Principal> {
    axum::Json(Principal::new(&caller.key))
}

/// This deployment's OpenAPI 3.1 document.
pub(crate) async fn openapi(State(state): State<ApiState>) -> Result<impl IntoResponse, ApiError> {
    let policy = state.policy.current();
    let tiers: Vec<&str> = policy.tiers.names().into_keys().collect();
    crate::openapi::document(&state.settings, &tiers)
        .map(axum::Json)
        .map_err(|e| {
            tracing::error!(error = %e, "Could not render the OpenAPI document.");
            ApiError::Internal
        })
}
