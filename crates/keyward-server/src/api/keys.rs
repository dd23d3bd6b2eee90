//! Keys: create (secret shown once), list, read, update, revoke, rotate,
//! delete, and verify.

use std::net::IpAddr;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use keyward_core::allowlist::IpAllowlist;
use keyward_core::clock::Timestamp;
use keyward_core::id::new_id;
use keyward_core::scope::{self, GrantRefusal, ScopeSet};
use keyward_core::secret::{KeyKind, KeySecret};
use keyward_core::verdict::Denial;
use keyward_store::{
    KeyClass, KeyFilter, KeyPatch, KeyRecord, KeyStatus, RateLimitOverride, StoreError, Tenant,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::views::{
    CreateKey, CreditState, KeyPage, KeyView, KeyWithSecret, Principal, ProblemDoc, RateLimitSpec,
    RateLimitState, RevokeKey, RotateKey, UpdateKey, VerifyKey, VerifyResult,
};
use super::{check_tier, encode_cursor, page_request, Caller, Json, MaybeJson, Query};
use crate::app::AppState;
use crate::credential::{Presented, Secret};
use crate::error::{ApiError, FieldError};
use crate::verifier::{Outcome, Request};

pub(crate) const MAX_NAME: usize = 128;
pub(crate) const MAX_ALLOWLIST: usize = 100;
pub(crate) const MAX_SCOPES: usize = 100;
pub(crate) const MAX_REASON: usize = 500;
/// Thirty days: longer overlaps defeat the point of rotating.
pub(crate) const MAX_GRACE_SECONDS: u64 = 30 * 24 * 3600;

/// Field checks shared by create and update. Collects every problem at once.
struct Checks<'a> {
    state: &'a AppState,
    caller: &'a Caller,
    errors: Vec<FieldError>,
}

impl Checks<'_> {
    fn name(&mut self, name: &str) -> String {
        let n = name.trim();
        if n.is_empty() || n.chars().count() > MAX_NAME || n.chars().any(char::is_control) {
            self.errors.push(FieldError::new(
                "name",
                "invalid",
                format!("name must be 1 to {MAX_NAME} printable characters"),
            ));
        }
        n.to_owned()
    }

    fn scopes(&mut self, scopes: &[String]) -> Vec<String> {
        if scopes.len() > MAX_SCOPES {
            self.errors.push(FieldError::new(
                "scopes",
                "too_many",
                format!("at most {MAX_SCOPES} scopes"),
            ));
            return Vec::new();
        }
        let catalog = &self.state.settings.catalog;
        for (i, s) in scopes.iter().enumerate() {
            match catalog.check_grant(s) {
                Err(scope::ScopeError::Undeclared(_)) => self.errors.push(FieldError::new(
                    format!("scopes[{i}]"),
                    "unknown_scope",
                    format!("{s:?} is not in this deployment's scope catalog"),
                )),
                Err(e) => self.errors.push(FieldError::new(
                    format!("scopes[{i}]"),
                    "invalid",
                    e.to_string(),
                )),
                // Whether the caller may grant it is `check_grants`, once
                // the scopes are known to be valid.
                Ok(()) => {}
            }
        }
        let mut out = scopes.to_vec();
        out.sort();
        out.dedup();
        out
    }

    fn allowlist(&mut self, entries: &[String]) -> Vec<String> {
        if entries.len() > MAX_ALLOWLIST {
            self.errors.push(FieldError::new(
                "ip_allowlist",
                "too_many",
                format!("at most {MAX_ALLOWLIST} entries"),
            ));
            return Vec::new();
        }
        let mut out = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            match IpAllowlist::parse(std::slice::from_ref(e)) {
                Ok(l) => out.extend(l.entries()),
                Err(err) => self.errors.push(FieldError::new(
                    format!("ip_allowlist[{i}]"),
                    "invalid_cidr",
                    err.to_string(),
                )),
            }
        }
        out
    }

    fn sub_tenants(&mut self, ids: &[String]) -> Vec<String> {
        if ids.len() > MAX_ALLOWLIST {
            self.errors.push(FieldError::new(
                "sub_tenants",
                "too_many",
                format!("at most {MAX_ALLOWLIST} entries"),
            ));
        }
        for (i, t) in ids.iter().enumerate() {
            let ok = !t.is_empty()
                && t.len() <= 64
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
            if !ok {
                self.errors.push(FieldError::new(
                    format!("sub_tenants[{i}]"),
                    "invalid",
                    "sub-tenant ids are 1 to 64 characters of A-Z, a-z, 0-9, _, - and .",
                ));
            }
        }
        let mut out = ids.to_vec();
        out.sort();
        out.dedup();
        out
    }

    fn expiry(&mut self, at: &str) -> Option<i64> {
        match Timestamp::parse_rfc3339(at) {
            Ok(t) if t <= self.state.clock.now() => {
                self.errors.push(FieldError::new(
                    "expires_at",
                    "in_past",
                    "expires_at must be in the future",
                ));
                None
            }
            Ok(t) => Some(t.0),
            Err(e) => {
                self.errors
                    .push(FieldError::new("expires_at", "invalid", e.to_string()));
                None
            }
        }
    }

    fn metadata(&mut self, m: &Value) {
        let max = self.state.settings.config.keys.metadata_max_bytes;
        if !m.is_object() {
            self.errors.push(FieldError::new(
                "metadata",
                "invalid",
                "metadata must be a JSON object",
            ));
        } else if m.to_string().len() > max {
            self.errors.push(FieldError::new(
                "metadata",
                "too_large",
                format!("metadata must be at most {max} bytes as JSON"),
            ));
        }
    }

    fn tier(&mut self, t: &str) {
        check_tier(self.state, self.caller, t, &mut self.errors);
    }

    fn rate_limit(&mut self, r: &RateLimitSpec) -> Option<RateLimitOverride> {
        if !self.caller.is_root() {
            self.errors.push(FieldError::new(
                "rate_limit",
                "not_grantable",
                "only operator root keys set a key's own rate limit",
            ));
            return None;
        }
        let burst = r.burst.unwrap_or(r.limit);
        match keyward_core::ratelimit::RatePolicy::new(
            "key",
            r.limit,
            r.window_seconds.saturating_mul(1000),
            burst,
        ) {
            Ok(_) => Some(RateLimitOverride {
                limit: r.limit,
                window_ms: r.window_seconds.saturating_mul(1000),
                burst,
            }),
            Err(e) => {
                self.errors
                    .push(FieldError::new("rate_limit", "invalid", e.to_string()));
                None
            }
        }
    }

    fn text(&mut self, field: &'static str, v: &str, max: usize) {
        if v.chars().count() > max || v.chars().any(char::is_control) {
            self.errors.push(FieldError::new(
                field,
                "invalid",
                format!("{field} must be at most {max} printable characters"),
            ));
        }
    }

    fn credit_cap(&mut self, c: i64) {
        if c < 0 {
            self.errors.push(FieldError::new(
                "credit_cap",
                "out_of_range",
                "credit_cap must not be negative",
            ));
        }
    }

    fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self.errors))
        }
    }
}

fn not_found(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::NotFound("key"),
        other => other.into(),
    }
}

/// No privilege escalation, for the API and the console alike: `requested`
/// scopes for a key of `tenant` must be ones `caller` may grant
/// ([`scope::refused_grants`]: operators any; a tenant key only scopes it
/// holds; a console member keyward's scopes only as their role holds them;
/// all but operators within the tenant's `grantable_scopes`). Scopes in
/// `kept` (the key's current ones) are not new grants. Otherwise 403
/// `scope_not_grantable` naming the scopes and why.
pub(crate) fn check_grants(
    caller: &Caller,
    tenant: &Tenant,
    kept: &[String],
    requested: &[String],
) -> Result<(), ApiError> {
    let ceiling = tenant
        .grantable_scopes
        .as_ref()
        .map(|g| ScopeSet::new(g.iter().cloned()));
    let kept = ScopeSet::new(kept.iter().cloned());
    let refused = scope::refused_grants(caller.grantor(), ceiling.as_ref(), &kept, requested);
    if refused.is_empty() {
        return Ok(());
    }
    let listed = |why: GrantRefusal| {
        let v: Vec<String> = refused
            .iter()
            .filter(|(_, r)| *r == why)
            .map(|(s, _)| format!("`{s}`"))
            .collect();
        (v.join(", "), v.len())
    };
    let mut detail = Vec::new();
    let (not_held, _) = listed(GrantRefusal::NotHeld);
    if !not_held.is_empty() {
        detail.push(if caller.member {
            format!(
                "Your role in this tenant may not grant {not_held}: of keyward's own scopes, \
                 a key can be given only those your role holds."
            )
        } else {
            format!(
                "This API key may not grant {not_held}: a key can give another key only \
                 scopes it holds itself."
            )
        });
    }
    let (outside, n) = listed(GrantRefusal::OutsideCeiling);
    if n > 0 {
        let (is, it) = if n == 1 {
            ("is", "it")
        } else {
            ("are", "them")
        };
        detail.push(format!(
            "{outside} {is} outside the scopes keys of tenant {} may be given (its grantable_scopes); \
             an operator can grant {it} or raise the tenant's ceiling.",
            tenant.id
        ));
    }
    Err(ApiError::ScopeNotGrantable {
        scopes: refused.iter().map(|(s, _)| (*s).to_owned()).collect(),
        detail: detail.join(" "),
    })
}

async fn load_tenant(state: &AppState, id: &str) -> Result<Tenant, ApiError> {
    state.store.get_tenant(id).await.map_err(|e| match e {
        StoreError::NotFound => ApiError::NotFound("tenant"),
        other => other.into(),
    })
}

/// Whether an active root key other than `id` can manage keys (to answer a
/// root key deleting itself; the store enforces the rule itself).
async fn another_managing_root(state: &AppState, id: &str) -> Result<bool, ApiError> {
    let now = state.clock.now().0;
    let filter = KeyFilter {
        class: Some(KeyClass::Root),
        status: Some(KeyStatus::Active),
        now,
        ..KeyFilter::default()
    };
    let mut before = None;
    loop {
        let page = state
            .store
            .list_keys(&filter, keyward_store::PageRequest { limit: 100, before })
            .await?;
        if page
            .items
            .iter()
            .any(|(_, k)| k.id != id && k.is_managing_root(now))
        {
            return Ok(true);
        }
        match page.next {
            Some(n) => before = Some(n),
            None => return Ok(false),
        }
    }
}

/// A key the caller may see, or 404 (never 403: ids of other tenants do not exist for them).
async fn visible_key(state: &AppState, caller: &Caller, id: &str) -> Result<KeyRecord, ApiError> {
    let k = state.store.get_key(id).await.map_err(not_found)?;
    let sees = match k.class {
        KeyClass::Root => caller.is_root(),
        KeyClass::Tenant => caller.sees_tenant(k.tenant_id.as_deref()),
    };
    if sees {
        Ok(k)
    } else {
        Err(ApiError::NotFound("key"))
    }
}

fn generate(state: &AppState, environment: &str) -> Result<KeySecret, ApiError> {
    state
        .settings
        .format
        .generate(
            &KeyKind::Environment(environment.to_owned()),
            state.entropy.as_ref(),
        )
        .map_err(|e| {
            tracing::error!(error = %e, "Key generation failed.");
            ApiError::Internal
        })
}

/// Creates a key. The response holds the secret; it is never shown again.
#[utoipa::path(
    post,
    path = "/v1/keys",
    tag = "keys",
    operation_id = "create_key",
    request_body = CreateKey,
    security(("bearer" = []), ("api_key" = []), ("basic" = [])),
    responses(
        (status = 201, body = KeyWithSecret),
        (status = 400, description = "`invalid_body`: not JSON, a field of the wrong type, or an unknown field.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "`insufficient_scope`: the key lacks `keyward:keys:write`. `scope_not_grantable`: a scope the key may not grant.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such tenant, or one the key may not see.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "`name_taken`: a live key of the tenant has this name.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large`: the body is over `http.max_body_bytes`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported_media_type`: the body must be sent with `Content-Type: application/json`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: `errors` names each invalid field.", body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateKey>,
) -> Result<(StatusCode, axum::Json<KeyWithSecret>), ApiError> {
    caller.require("keyward:keys:write")?;
    let tenant_id = match (&body.tenant_id, caller.tenant_id()) {
        (Some(t), _) if !caller.sees_tenant(Some(t)) => return Err(ApiError::NotFound("tenant")),
        (Some(t), _) => t.clone(),
        (None, Some(own)) => own.to_owned(),
        (None, None) => {
            return Err(ApiError::Validation(vec![FieldError::new(
                "tenant_id",
                "required",
                "root keys must say which tenant the key is for",
            )]))
        }
    };
    let mut c = Checks {
        state: &state,
        caller: &caller,
        errors: Vec::new(),
    };
    let name = c.name(&body.name);
    if !state
        .settings
        .format
        .environments()
        .any(|e| e == body.environment)
    {
        let known: Vec<&str> = state.settings.format.environments().collect();
        c.errors.push(FieldError::new(
            "environment",
            "unknown_environment",
            format!("environment must be one of: {}", known.join(", ")),
        ));
    }
    let scopes = c.scopes(&body.scopes);
    let ip_allowlist = c.allowlist(&body.ip_allowlist);
    let sub_tenants = c.sub_tenants(&body.sub_tenants);
    let expires_at = body.expires_at.as_deref().and_then(|e| c.expiry(e));
    let metadata = body.metadata.unwrap_or_else(|| json!({}));
    c.metadata(&metadata);
    if let Some(t) = &body.tier {
        c.tier(t);
    }
    if let Some(o) = &body.owner {
        c.text("owner", o, 200);
    }
    if let Some(cap) = body.credit_cap {
        c.credit_cap(cap);
    }
    let rate_limit = body.rate_limit.as_ref().and_then(|r| c.rate_limit(r));
    c.finish()?;
    let tenant = load_tenant(&state, &tenant_id).await?;
    check_grants(&caller, &tenant, &[], &scopes)?;

    let secret = generate(&state, &body.environment)?;
    let now = state.clock.now().0;
    let id = new_id("key", state.entropy.as_ref()).map_err(|_| ApiError::Internal)?;
    let issued = KeyRecord::issued(
        id,
        KeyClass::Tenant,
        body.environment,
        secret.hash().to_hex(),
        secret.start(),
        caller.key.record.id.clone(),
        now,
    );
    let record = KeyRecord {
        tenant_id: Some(tenant_id.clone()),
        name,
        owner: body.owner,
        scopes,
        tier: body.tier,
        credit_cap: body.credit_cap,
        rate_limit,
        ip_allowlist,
        sub_tenants,
        expires_at,
        metadata,
        enabled: body.enabled.unwrap_or(true),
        ..issued
    };
    let audit = caller.audit(
        &state,
        "key.created",
        &record.id,
        Some(&tenant_id),
        json!({ "name": record.name, "environment": record.environment, "scopes": record.scopes }),
    )?;
    state.store.create_key(&record, &audit).await?;
    tracing::info!(key_id = %record.id, tenant_id = %tenant_id, actor = %caller.key.record.id, "Key created.");
    Ok((
        StatusCode::CREATED,
        axum::Json(KeyWithSecret {
            secret: secret.expose().to_owned(),
            key: KeyView::new(&record, Timestamp(now)),
        }),
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListKeys {
    /// Root keys: filter by tenant. Tenant keys see their own tenant.
    pub tenant_id: Option<String>,
    pub environment: Option<String>,
    /// `active`, `disabled`, `expired` or `revoked`.
    pub status: Option<String>,
    /// `tenant` (default) or `root` (root keys only).
    pub kind: Option<String>,
    /// 1 to 100, default 20.
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// Lists keys, newest first (`keyward:keys:read`).
#[utoipa::path(
    get,
    path = "/v1/keys",
    tag = "keys",
    operation_id = "list_keys",
    params(ListKeys),
    security(("bearer" = []), ("api_key" = []), ("basic" = [])),
    responses(
        (status = 200, body = KeyPage),
        (status = 400, description = "`invalid_query`: a query parameter of the wrong type; `invalid_cursor`: not a `next_cursor` this server gave.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "`insufficient_scope`: the key lacks `keyward:keys:read`. `root_key_required`: `kind=root` from a tenant key.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: `tenant_id` names another tenant (tenant keys).", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: `status`, `kind` or `limit` is not one of its values (`errors` names them).", body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListKeys>,
) -> Result<axum::Json<KeyPage>, ApiError> {
    caller.require("keyward:keys:read")?;
    let mut errors = Vec::new();
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => {
            let parsed = KeyStatus::parse(s);
            if parsed.is_none() {
                errors.push(FieldError::new(
                    "status",
                    "invalid",
                    "status must be active, disabled, expired or revoked",
                ));
            }
            parsed
        }
    };
    let class = match q.kind.as_deref() {
        None | Some("tenant") => KeyClass::Tenant,
        Some("root") if caller.is_root() => KeyClass::Root,
        Some("root") => return Err(ApiError::RootOnly),
        Some(_) => {
            errors.push(FieldError::new(
                "kind",
                "invalid",
                "kind must be tenant or root",
            ));
            KeyClass::Tenant
        }
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let tenant_id = match (caller.is_root(), q.tenant_id) {
        (true, t) => t,
        (false, Some(t)) if Some(t.as_str()) != caller.tenant_id() => {
            return Err(ApiError::NotFound("tenant"))
        }
        (false, _) => caller.tenant_id().map(str::to_owned),
    };
    let now = state.clock.now();
    let filter = KeyFilter {
        tenant_id,
        class: Some(class),
        environment: q.environment,
        status,
        now: now.0,
    };
    let page = state
        .store
        .list_keys(&filter, page_request(q.limit, q.cursor.as_deref())?)
        .await?;
    Ok(axum::Json(KeyPage {
        data: page
            .items
            .iter()
            .map(|(_, k)| KeyView::new(k, now))
            .collect(),
        next_cursor: page.next.map(encode_cursor),
        has_more: page.next.is_some(),
    }))
}

/// One key (`keyward:keys:read`).
#[utoipa::path(
    get,
    path = "/v1/keys/{id}",
    tag = "keys",
    operation_id = "get_key",
    params(("id" = String, Path, description = "The key's id, e.g. `key_3fQ9…`.")),
    security(("bearer" = []), ("api_key" = []), ("basic" = [])),
    responses(
        (status = 200, body = KeyView),
        (status = 403, description = "`insufficient_scope`: the key lacks `keyward:keys:read`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such key, or one the key may not see.", body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<KeyView>, ApiError> {
    caller.require("keyward:keys:read")?;
    let k = visible_key(&state, &caller, &id).await?;
    Ok(axum::Json(KeyView::new(&k, state.clock.now())))
}

/// Changes a key's name, scopes, expiry, allowlist, metadata or enabled flag (`keyward:keys:write`).
#[utoipa::path(
    patch,
    path = "/v1/keys/{id}",
    tag = "keys",
    operation_id = "update_key",
    params(("id" = String, Path, description = "The key's id, e.g. `key_3fQ9…`.")),
    request_body = UpdateKey,
    security(("bearer" = []), ("api_key" = []), ("basic" = [])),
    responses(
        (status = 200, body = KeyView),
        (status = 400, description = "`invalid_body`: not JSON, a field of the wrong type, or an unknown field.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "`insufficient_scope`: the key lacks `keyward:keys:write`. `scope_not_grantable`: a scope the key may not grant.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such key, or one the key may not see.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "`key_revoked`: a revoked key cannot be changed. `last_root_key`: the change would disable, or take `keyward:keys:write` from, the last active root key that can manage keys.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large`: the body is over `http.max_body_bytes`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported_media_type`: the body must be sent with `Content-Type: application/json`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: `errors` names each invalid field.", body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<UpdateKey>,
) -> Result<axum::Json<KeyView>, ApiError> {
    caller.require("keyward:keys:write")?;
    let current = visible_key(&state, &caller, &id).await?;
    if current.revoked_at.is_some() {
        return Err(ApiError::Conflict {
            code: "key_revoked",
            message: "The key is revoked and can no longer be changed.".into(),
        });
    }
    let mut c = Checks {
        state: &state,
        caller: &caller,
        errors: Vec::new(),
    };
    let mut patch = KeyPatch {
        updated_at: state.clock.now().0,
        ..KeyPatch::default()
    };
    let mut changed: Vec<&str> = Vec::new();
    if let Some(n) = &body.name {
        patch.name = Some(c.name(n));
        changed.push("name");
    }
    if let Some(s) = &body.scopes {
        patch.scopes = Some(c.scopes(s));
        changed.push("scopes");
    }
    if let Some(a) = &body.ip_allowlist {
        patch.ip_allowlist = Some(c.allowlist(a));
        changed.push("ip_allowlist");
    }
    if let Some(t) = &body.sub_tenants {
        patch.sub_tenants = Some(c.sub_tenants(t));
        changed.push("sub_tenants");
    }
    if let Some(e) = &body.expires_at {
        patch.expires_at = Some(e.as_deref().and_then(|e| c.expiry(e)));
        changed.push("expires_at");
    }
    if let Some(m) = &body.metadata {
        c.metadata(m);
        patch.metadata = Some(m.clone());
        changed.push("metadata");
    }
    if let Some(t) = &body.tier {
        match t {
            Some(t) => c.tier(t),
            None if !caller.is_root() => c.errors.push(FieldError::new(
                "tier",
                "not_grantable",
                "only operator root keys change a key's tier",
            )),
            None => {}
        }
        patch.tier = Some(t.clone());
        changed.push("tier");
    }
    if let Some(r) = &body.rate_limit {
        let value = match r {
            Some(r) => c.rate_limit(r),
            None if !caller.is_root() => {
                c.errors.push(FieldError::new(
                    "rate_limit",
                    "not_grantable",
                    "only operator root keys change a key's own rate limit",
                ));
                None
            }
            None => None,
        };
        patch.rate_limit = Some(value);
        changed.push("rate_limit");
    }
    if let Some(o) = &body.owner {
        if let Some(o) = o {
            c.text("owner", o, 200);
        }
        patch.owner = Some(o.clone());
        changed.push("owner");
    }
    if let Some(cap) = body.credit_cap {
        if let Some(cap) = cap {
            c.credit_cap(cap);
        }
        patch.credit_cap = Some(cap);
        changed.push("credit_cap");
    }
    if let Some(e) = body.enabled {
        patch.enabled = Some(e);
        changed.push(if e { "enabled" } else { "disabled" });
    }
    c.finish()?;
    if let (Some(scopes), Some(t)) = (&patch.scopes, &current.tenant_id) {
        if !caller.is_root() {
            let tenant = load_tenant(&state, t).await?;
            check_grants(&caller, &tenant, &current.scopes, scopes)?;
        }
    }
    let audit = caller.audit(
        &state,
        "key.updated",
        &id,
        current.tenant_id.as_deref(),
        json!({ "changed": changed }),
    )?;
    let k = state
        .store
        .update_key(&id, &patch, &audit)
        .await
        .map_err(not_found)?;
    state.verifier.invalidate(&k);
    Ok(axum::Json(KeyView::new(&k, state.clock.now())))
}

/// Revokes a key at once: the very next request with it is refused (`keyward:keys:write`).
#[utoipa::path(
    post,
    path = "/v1/keys/{id}/revoke",
    tag = "keys",
    operation_id = "revoke_key",
    params(("id" = String, Path, description = "The key's id, e.g. `key_3fQ9…`.")),
    request_body(content = Option<RevokeKey>, description = "Optional; an empty body revokes without a reason."),
    security(("bearer" = []), ("api_key" = []), ("basic" = [])),
    responses(
        (status = 200, body = KeyView),
        (status = 400, description = "`invalid_body`: not JSON (an empty body is fine), a field of the wrong type, or an unknown field.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "`insufficient_scope`: the key lacks `keyward:keys:write`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such key, or one the key may not see.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "`last_root_key`: the last active root key cannot be revoked; create another with `keyward root-keys create` first.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large`: the body is over `http.max_body_bytes`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: `errors` names each invalid field.", body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    MaybeJson(body): MaybeJson<RevokeKey>,
) -> Result<axum::Json<KeyView>, ApiError> {
    caller.require("keyward:keys:write")?;
    let current = visible_key(&state, &caller, &id).await?;
    let reason = body.and_then(|b| b.reason);
    if let Some(r) = &reason {
        let mut c = Checks {
            state: &state,
            caller: &caller,
            errors: Vec::new(),
        };
        c.text("reason", r, MAX_REASON);
        c.finish()?;
    }
    let audit = caller.audit(
        &state,
        "key.revoked",
        &id,
        current.tenant_id.as_deref(),
        json!({ "reason": reason }),
    )?;
    let k = state
        .store
        .revoke_key(&id, reason.as_deref(), &audit)
        .await
        .map_err(not_found)?;
    state.verifier.invalidate(&k);
    tracing::info!(key_id = %id, actor = %caller.key.record.id, "Key revoked.");
    Ok(axum::Json(KeyView::new(&k, state.clock.now())))
}

/// Issues a new secret for a key. The old secret keeps working for
/// `grace_seconds` (0 = it stops now). Returns the new secret once (`keyward:keys:write`).
#[utoipa::path(
    post,
    path = "/v1/keys/{id}/rotate",
    tag = "keys",
    operation_id = "rotate_key",
    params(("id" = String, Path, description = "The key's id, e.g. `key_3fQ9…`.")),
    request_body(content = Option<RotateKey>, description = "Optional; an empty body ends the old secret now."),
    security(("bearer" = []), ("api_key" = []), ("basic" = [])),
    responses(
        (status = 201, body = KeyWithSecret),
        (status = 400, description = "`invalid_body`: not JSON (an empty body is fine), a field of the wrong type, or an unknown field.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "`insufficient_scope`: the key lacks `keyward:keys:write`. `scope_not_grantable`: the key may not grant the scopes the rotated key holds.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such key, or one the key may not see.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "`root_key_rotation`: root keys are rotated with the CLI; `key_not_rotatable`: the key is revoked, expired or already rotated.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large`: the body is over `http.max_body_bytes`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: `errors` names each invalid field.", body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub async fn rotate(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    MaybeJson(body): MaybeJson<RotateKey>,
) -> Result<(StatusCode, axum::Json<KeyWithSecret>), ApiError> {
    caller.require("keyward:keys:write")?;
    let old = visible_key(&state, &caller, &id).await?;
    let grace = body.map_or(0, |b| b.grace_seconds);
    if grace > MAX_GRACE_SECONDS {
        return Err(ApiError::Validation(vec![FieldError::new(
            "grace_seconds",
            "out_of_range",
            format!("grace_seconds must be at most {MAX_GRACE_SECONDS} (30 days)"),
        )]));
    }
    if old.class == KeyClass::Root {
        return Err(ApiError::Conflict {
            code: "root_key_rotation",
            message: "Root keys are rotated with the CLI: create a new one, then revoke this one."
                .into(),
        });
    }
    // The new secret is a new grant of the old key's scopes to the caller.
    if let (false, Some(t)) = (caller.is_root(), &old.tenant_id) {
        let tenant = load_tenant(&state, t).await?;
        check_grants(&caller, &tenant, &[], &old.scopes)?;
    }
    let secret = generate(&state, &old.environment)?;
    let now = state.clock.now();
    let new_key = KeyRecord {
        id: new_id("key", state.entropy.as_ref()).map_err(|_| ApiError::Internal)?,
        hash: secret.hash().to_hex(),
        start: secret.start(),
        created_by: caller.key.record.id.clone(),
        created_at: now.0,
        updated_at: now.0,
        last_used_at: None,
        last_used_ip: None,
        rotated_from: Some(old.id.clone()),
        replaced_by: None,
        grace_until: None,
        ..old.clone()
    };
    let grace_until = now.plus_seconds(i64::try_from(grace).unwrap_or(i64::MAX));
    let audit = caller.audit(
        &state,
        "key.rotated",
        &old.id,
        old.tenant_id.as_deref(),
        json!({ "new_key_id": new_key.id, "grace_seconds": grace }),
    )?;
    let created = state
        .store
        .rotate_key(&old.id, &new_key, grace_until.0, &audit)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(m) => ApiError::Conflict {
                code: "key_not_rotatable",
                message: m.to_owned(),
            },
            other => not_found(other),
        })?;
    state.verifier.invalidate(&old);
    tracing::info!(key_id = %old.id, new_key_id = %created.id, grace_seconds = grace, "Key rotated.");
    Ok((
        StatusCode::CREATED,
        axum::Json(KeyWithSecret {
            secret: secret.expose().to_owned(),
            key: KeyView::new(&created, now),
        }),
    ))
}

/// Deletes a key: it stops working at once and disappears from listings (`keyward:keys:write`).
#[utoipa::path(
    delete,
    path = "/v1/keys/{id}",
    tag = "keys",
    operation_id = "delete_key",
    params(("id" = String, Path, description = "The key's id, e.g. `key_3fQ9…`.")),
    security(("bearer" = []), ("api_key" = []), ("basic" = [])),
    responses(
        (status = 204, description = "Deleted."),
        (status = 403, description = "`insufficient_scope`: the key lacks `keyward:keys:write`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such key, or one the key may not see.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "`cannot_delete_self`: a key cannot delete itself; `last_root_key`: the last active root key cannot be deleted.", body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require("keyward:keys:write")?;
    let current = visible_key(&state, &caller, &id).await?;
    if current.id == caller.key.record.id {
        if current.class == KeyClass::Root && !another_managing_root(&state, &current.id).await? {
            return Err(ApiError::LastRootKey);
        }
        return Err(ApiError::Conflict {
            code: "cannot_delete_self",
            message: "A key cannot delete itself; use another key.".into(),
        });
    }
    let audit = caller.audit(
        &state,
        "key.deleted",
        &id,
        current.tenant_id.as_deref(),
        json!({}),
    )?;
    let k = state
        .store
        .delete_key(&id, &audit)
        .await
        .map_err(not_found)?;
    state.verifier.invalidate(&k);
    Ok(StatusCode::NO_CONTENT)
}

/// Verifies a presented key. Always HTTP 200: the verdict is data
/// (`valid`, `code`). Needs `keyward:keys:verify`; a tenant key verifies
/// only its own tenant's keys (others are `invalid_api_key`).
#[utoipa::path(
    post,
    path = "/v1/keys/verify",
    tag = "keys",
    operation_id = "verify_key",
    request_body = VerifyKey,
    security(("bearer" = []), ("api_key" = []), ("basic" = [])),
    responses(
        (status = 200, body = VerifyResult, description = "The verdict, valid or not."),
        (status = 400, description = "`invalid_body`: not JSON, a field of the wrong type, or an unknown field.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "`insufficient_scope`: the key lacks `keyward:keys:verify`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large`: the body is over `http.max_body_bytes`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported_media_type`: the body must be sent with `Content-Type: application/json`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: `errors` names each invalid field.", body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub async fn verify(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<VerifyKey>,
) -> Result<axum::response::Response, ApiError> {
    caller.require("keyward:keys:verify")?;
    let mut errors = Vec::new();
    for (i, s) in body.scopes.iter().enumerate() {
        if let Err(e) = scope::check_syntax(s) {
            errors.push(FieldError::new(
                format!("scopes[{i}]"),
                "invalid",
                e.to_string(),
            ));
        }
    }
    let ip = match body.ip.as_deref().map(str::parse::<IpAddr>) {
        None => None,
        Some(Ok(ip)) => Some(ip),
        Some(Err(_)) => {
            errors.push(FieldError::new(
                "ip",
                "invalid",
                "ip must be an IPv4 or IPv6 address",
            ));
            None
        }
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    if body.credits.is_some_and(|c| c < 0) {
        return Err(ApiError::Validation(vec![FieldError::new(
            "credits",
            "out_of_range",
            "credits must not be negative",
        )]));
    }
    let presented = Presented::Secret(Secret::new(body.key));
    let outcome = state
        .verifier
        .verify(
            &presented,
            Request {
                client_ip: ip,
                required_scopes: &body.scopes,
            },
        )
        .await?;
    let foreign = |k: &crate::verifier::CachedKey| {
        k.record.class != KeyClass::Tenant || !caller.sees_tenant(k.record.tenant_id.as_deref())
    };
    let denied = |d: Denial, key: Option<Principal>| VerifyResult {
        valid: false,
        code: d.code(),
        missing_scopes: match &d {
            Denial::InsufficientScope { missing } => Some(missing.clone()),
            _ => None,
        },
        retry_after: match &d {
            Denial::RateLimited {
                retry_after_seconds,
            } => Some(*retry_after_seconds),
            _ => None,
        },
        message: Some(d.message()),
        key,
        ratelimit: None,
        credits: None,
    };
    let mut rate = None;
    let result = match outcome {
        Outcome::Valid(k) if !foreign(&k) => {
            // Rate limit, then credits: spent only now that all else passed.
            let policy = state.policy.current();
            let spent = state
                .limits
                .spend(
                    &policy.tiers,
                    &k,
                    body.cost.unwrap_or(1),
                    body.credits.unwrap_or(0),
                    state.clock.now(),
                )
                .await?;
            match spent {
                Ok(spent) => {
                    rate = spent.rate;
                    VerifyResult {
                        valid: true,
                        code: "valid",
                        key: Some(Principal::new(&k)),
                        missing_scopes: None,
                        message: None,
                        ratelimit: rate.as_ref().map(RateLimitState::from),
                        credits: spent.credits.map(|c| CreditState {
                            balance: c.balance,
                            key_remaining: c.key_remaining,
                        }),
                        retry_after: None,
                    }
                }
                Err(refused) => {
                    rate = refused.rate;
                    VerifyResult {
                        ratelimit: rate.as_ref().map(RateLimitState::from),
                        ..denied(refused.denial, Some(Principal::new(&k)))
                    }
                }
            }
        }
        Outcome::Denied(d, Some(k)) if !foreign(&k) => denied(d, Some(Principal::new(&k))),
        Outcome::Denied(d, None) => denied(d, None),
        // A key of another tenant (or a root key) does not exist for this caller.
        _ => denied(Denial::InvalidApiKey, None),
    };
    let mut response = axum::Json(result).into_response();
    if let Some(r) = rate {
        r.write_headers(response.headers_mut());
    }
    Ok(response)
}
