//! Tenants: the businesses, accounts or organizations that own keys.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use keyward_core::id::new_id;
use keyward_core::scope::ScopeError;
use keyward_store::{Tenant, TenantPatch};
use serde_json::{json, Value};

pub use keyward_wire::ListTenants;

use super::views::{tenant_view, CreateTenant, ProblemDoc, TenantPage, TenantView, UpdateTenant};
use super::{check_tier, encode_cursor, page_request, Caller, Json, Query};
use crate::app::AppState;
use crate::error::{ApiError, FieldError};

pub(crate) const MAX_NAME: usize = 200;

fn check_name(name: &str, errors: &mut Vec<FieldError>) {
    if name.trim().is_empty()
        || name.chars().count() > MAX_NAME
        || name.chars().any(char::is_control)
    {
        errors.push(FieldError::new(
            "name",
            "invalid",
            format!("name must be 1 to {MAX_NAME} printable characters"),
        ));
    }
}

pub(crate) const MAX_GRANTABLE: usize = 100;

/// A tenant's ceiling of grantable scopes: only operators set it (it is the
/// customer's plan), and every entry must be grantable in this deployment.
/// Returns it sorted and without repeats.
fn check_grantable(
    state: &AppState,
    caller: &Caller,
    scopes: &[String],
    errors: &mut Vec<FieldError>,
) -> Vec<String> {
    if !caller.is_root() {
        errors.push(FieldError::new(
            "grantable_scopes",
            "not_grantable",
            "only operators set a tenant's grantable scopes",
        ));
        return Vec::new();
    }
    if scopes.len() > MAX_GRANTABLE {
        errors.push(FieldError::new(
            "grantable_scopes",
            "too_many",
            format!("at most {MAX_GRANTABLE} scopes"),
        ));
        return Vec::new();
    }
    for (i, s) in scopes.iter().enumerate() {
        match state.settings.catalog.check_grant(s) {
            Ok(()) => {}
            Err(ScopeError::Undeclared(_)) => errors.push(FieldError::new(
                format!("grantable_scopes[{i}]"),
                "unknown_scope",
                format!("{s:?} is not in this deployment's scope catalog"),
            )),
            Err(e) => errors.push(FieldError::new(
                format!("grantable_scopes[{i}]"),
                "invalid",
                e.to_string(),
            )),
        }
    }
    let mut out = scopes.to_vec();
    out.sort();
    out.dedup();
    out
}

fn check_metadata(state: &AppState, m: &Value, errors: &mut Vec<FieldError>) {
    let max = state.settings.config.keys.metadata_max_bytes;
    if !m.is_object() {
        errors.push(FieldError::new(
            "metadata",
            "invalid",
            "metadata must be a JSON object",
        ));
    } else if m.to_string().len() > max {
        errors.push(FieldError::new(
            "metadata",
            "too_large",
            format!("metadata must be at most {max} bytes as JSON"),
        ));
    }
}

/// Creates a tenant. Root keys only (`keyward:tenants:write`).
#[utoipa::path(
    post,
    path = "/v1/tenants",
    tag = "tenants",
    operation_id = "create_tenant",
    request_body = CreateTenant,
    security(("bearer" = []), ("api_key" = []), ("basic" = [])),
    responses(
        (status = 201, body = TenantView),
        (status = 400, description = "`invalid_body`: not JSON, a field of the wrong type, or an unknown field.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "`insufficient_scope`: the key lacks `keyward:tenants:write`; `root_key_required`: operator root keys only.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "`tenant_exists`: a tenant with this id exists.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large`: the body is over `http.max_body_bytes`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported_media_type`: the body must be sent with `Content-Type: application/json`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: `errors` names each invalid field.", body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateTenant>,
) -> Result<(StatusCode, axum::Json<TenantView>), ApiError> {
    caller.require("keyward:tenants:write")?;
    caller.require_root()?;
    let mut errors = Vec::new();
    check_name(&body.name, &mut errors);
    let metadata = body.metadata.unwrap_or_else(|| json!({}));
    check_metadata(&state, &metadata, &mut errors);
    if let Some(t) = &body.tier {
        check_tier(&state, &caller, t, &mut errors);
    }
    let grantable_scopes = body
        .grantable_scopes
        .as_deref()
        .map(|g| check_grantable(&state, &caller, g, &mut errors));
    if let Some(id) = &body.id {
        let ok = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok {
            errors.push(FieldError::new(
                "id",
                "invalid",
                "id must be 1 to 64 characters of A-Z, a-z, 0-9, _ and -",
            ));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let now = state.clock.now().0;
    let id = match body.id {
        Some(id) => id,
        None => new_id("ten", state.entropy.as_ref()).map_err(|_| ApiError::Internal)?,
    };
    let tenant = Tenant {
        id,
        name: body.name.trim().to_owned(),
        metadata,
        created_at: now,
        updated_at: now,
        tier: body.tier,
        grantable_scopes,
    };
    let audit = caller.audit(
        &state,
        "tenant.created",
        &tenant.id,
        Some(&tenant.id),
        json!({ "name": tenant.name, "grantable_scopes": tenant.grantable_scopes }),
    )?;
    state
        .store
        .create_tenant(&tenant, &audit)
        .await
        .map_err(|e| match e {
            keyward_store::StoreError::Conflict(m) => ApiError::Conflict {
                code: "tenant_exists",
                message: format!("{}.", capitalize(m)),
            },
            other => other.into(),
        })?;
    Ok((StatusCode::CREATED, axum::Json(tenant_view(&tenant))))
}

/// Lists tenants, newest first. Root keys only (`keyward:tenants:read`).
#[utoipa::path(
    get,
    path = "/v1/tenants",
    tag = "tenants",
    operation_id = "list_tenants",
    params(ListTenants),
    security(("bearer" = []), ("api_key" = []), ("basic" = [])),
    responses(
        (status = 200, body = TenantPage),
        (status = 400, description = "`invalid_query`: a query parameter of the wrong type; `invalid_cursor`: not a `next_cursor` this server gave.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "`insufficient_scope`: the key lacks `keyward:tenants:read`; `root_key_required`: operator root keys only.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: `limit` is not 1 to 100 (`errors` says so).", body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListTenants>,
) -> Result<axum::Json<TenantPage>, ApiError> {
    caller.require("keyward:tenants:read")?;
    caller.require_root()?;
    let page = state
        .store
        .list_tenants(page_request(q.limit, q.cursor.as_deref())?)
        .await?;
    Ok(axum::Json(TenantPage {
        data: page.items.iter().map(|(_, t)| tenant_view(t)).collect(),
        next_cursor: page.next.map(encode_cursor),
        has_more: page.next.is_some(),
    }))
}

async fn visible(state: &AppState, caller: &Caller, id: &str) -> Result<Tenant, ApiError> {
    if !caller.sees_tenant(Some(id)) {
        return Err(ApiError::NotFound("tenant"));
    }
    state.store.get_tenant(id).await.map_err(|e| match e {
        keyward_store::StoreError::NotFound => ApiError::NotFound("tenant"),
        other => other.into(),
    })
}

/// One tenant. Root keys, or a key of that tenant (`keyward:tenants:read`).
#[utoipa::path(
    get,
    path = "/v1/tenants/{id}",
    tag = "tenants",
    operation_id = "get_tenant",
    params(("id" = String, Path, description = "The tenant's id, e.g. `ten_3fQ9…`.")),
    security(("bearer" = []), ("api_key" = []), ("basic" = [])),
    responses(
        (status = 200, body = TenantView),
        (status = 403, description = "`insufficient_scope`: the key lacks `keyward:tenants:read`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such tenant, or one the key may not see.", body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<TenantView>, ApiError> {
    caller.require("keyward:tenants:read")?;
    let t = visible(&state, &caller, &id).await?;
    Ok(axum::Json(tenant_view(&t)))
}

/// Renames a tenant or replaces its metadata (`keyward:tenants:write`).
#[utoipa::path(
    patch,
    path = "/v1/tenants/{id}",
    tag = "tenants",
    operation_id = "update_tenant",
    params(("id" = String, Path, description = "The tenant's id, e.g. `ten_3fQ9…`.")),
    request_body = UpdateTenant,
    security(("bearer" = []), ("api_key" = []), ("basic" = [])),
    responses(
        (status = 200, body = TenantView),
        (status = 400, description = "`invalid_body`: not JSON, a field of the wrong type, or an unknown field.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "`insufficient_scope`: the key lacks `keyward:tenants:write`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such tenant, or one the key may not see.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large`: the body is over `http.max_body_bytes`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported_media_type`: the body must be sent with `Content-Type: application/json`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: `errors` names each invalid field.", body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<UpdateTenant>,
) -> Result<axum::Json<TenantView>, ApiError> {
    caller.require("keyward:tenants:write")?;
    visible(&state, &caller, &id).await?;
    let mut errors = Vec::new();
    if let Some(n) = &body.name {
        check_name(n, &mut errors);
    }
    if let Some(m) = &body.metadata {
        check_metadata(&state, m, &mut errors);
    }
    match &body.tier {
        Some(Some(t)) => check_tier(&state, &caller, t, &mut errors),
        Some(None) if !caller.is_root() => errors.push(FieldError::new(
            "tier",
            "not_grantable",
            "only operator root keys set tiers",
        )),
        _ => {}
    }
    let grantable_scopes = match &body.grantable_scopes {
        None => None,
        Some(Some(g)) => Some(Some(check_grantable(&state, &caller, g, &mut errors))),
        Some(None) => {
            if !caller.is_root() {
                errors.push(FieldError::new(
                    "grantable_scopes",
                    "not_grantable",
                    "only operators set a tenant's grantable scopes",
                ));
            }
            Some(None)
        }
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let patch = TenantPatch {
        name: body.name.map(|n| n.trim().to_owned()),
        metadata: body.metadata,
        tier: body.tier,
        grantable_scopes,
        updated_at: state.clock.now().0,
    };
    let mut changed = Vec::new();
    if patch.name.is_some() {
        changed.push("name");
    }
    if patch.metadata.is_some() {
        changed.push("metadata");
    }
    if patch.tier.is_some() {
        changed.push("tier");
    }
    let mut details = json!({ "changed": changed });
    if let Some(g) = &patch.grantable_scopes {
        changed.push("grantable_scopes");
        details = json!({ "changed": changed, "grantable_scopes": g });
    }
    let audit = caller.audit(&state, "tenant.updated", &id, Some(&id), details)?;
    let t = state.store.update_tenant(&id, &patch, &audit).await?;
    // Cached principals carry the tenant name.
    state.verifier.cache().clear();
    Ok(axum::Json(tenant_view(&t)))
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}
