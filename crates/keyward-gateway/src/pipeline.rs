//! The gateway's policy for one request, the same on both paths: the
//! general path ([`crate::handle`]) and the HTTP/1 fast path
//! (`h1.rs`) each read the request their own way and call
//! [`admit`], which authenticates the key, runs the route's checks and
//! spends the rate limit and credits, in that order. What is left to the
//! paths is their own I/O: answering, forwarding, and the idempotency claim
//! (which sits between the checks and the spend, and needs the body).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{Method, StatusCode};
use keyward_core::verdict::Denial;
use serde_json::Value;

use keyward_http::error::ApiError;
use keyward_limits::{RateState, Spender};
use keyward_verify::credential::{self, HeaderSource};
use keyward_verify::verifier::{CachedKey, Outcome, Request as VerifyRequest};

use crate::config::IdempotencyMode;
use crate::idempotency;
use crate::policy::Policy;
use crate::routes::{Params, Route, RouteTable};
use crate::template::{fill, principal};
use crate::Gateway;

/// What both paths know of a request once its route is matched (all
/// borrowed: nothing is copied for the pipeline).
pub(crate) struct Inbound<'a, H: ?Sized> {
    pub method: &'a Method,
    pub route: &'a Route,
    pub params: &'a Params<'a, 'a>,
    pub headers: &'a H,
    pub query: Option<&'a str>,
    /// The connection's peer (client IP: [`credential::client_ip`]).
    pub peer: Option<SocketAddr>,
}

/// What the path does next with an admitted request.
pub(crate) enum Admitted {
    /// A route without auth: forward without identity (no key was looked
    /// for, and none was let through).
    Open,
    /// A `respond` route, spent: answer `status` with `body` (the route's
    /// template filled from the key).
    Respond { status: StatusCode, body: Value },
    /// Spent: forward with the key's identity headers.
    Forward(Arc<CachedKey>),
    /// The request carries an `Idempotency-Key` the route honours; nothing
    /// is spent yet: claim it, then [`spend`] (or replay).
    Idempotent {
        key: Arc<CachedKey>,
        idempotency_key: String,
    },
}

/// Authenticate → route checks → (idempotency key) → spend. The rate-limit
/// state for the response's headers lands in `rate`, refused or not.
pub(crate) async fn admit<H: HeaderSource + ?Sized>(
    state: &Gateway,
    policy: &Policy,
    req: Inbound<'_, H>,
    rate: &mut Option<RateState>,
) -> Result<Admitted, ApiError> {
    let route = req.route;
    if !route.auth {
        // No key is checked here, and none may pass through either.
        credential::refuse_embedded_keys(req.headers, req.query, &state.settings.credentials)?;
        return Ok(Admitted::Open);
    }
    let key = authenticate(state, &policy.routes, &req).await?;
    if let Some((status, template)) = &route.respond {
        spend(state, policy, route, &key, rate).await?;
        let body = fill(template, &principal(&key));
        return Ok(Admitted::Respond {
            status: *status,
            body,
        });
    }
    if let Some(mode) = route.idempotency_for(req.method, &policy.idempotent_methods) {
        match idempotency::key_of(req.headers)? {
            Some(idempotency_key) => {
                return Ok(Admitted::Idempotent {
                    key,
                    idempotency_key,
                })
            }
            None if mode == IdempotencyMode::Required => {
                return Err(ApiError::IdempotencyKeyRequired)
            }
            None => {}
        }
    }
    spend(state, policy, route, &key, rate).await?;
    Ok(Admitted::Forward(key))
}

/// Finds and verifies the route's key, then checks the route's
/// environments, tenant path parameter and tenant header.
async fn authenticate<H: HeaderSource + ?Sized>(
    state: &Gateway,
    table: &RouteTable,
    req: &Inbound<'_, H>,
) -> Result<Arc<CachedKey>, ApiError> {
    let (route, headers) = (req.route, req.headers);
    let presented = credential::extract_from(
        headers,
        req.query,
        &state.settings.credentials,
        &state.settings.schemes,
    )?
    .ok_or(ApiError::Denied(Denial::MissingCredentials))?;
    let ip = credential::client_ip(req.peer, headers, &state.settings.trusted_proxies);
    let verdict = state
        .verifier
        .verify(
            &presented,
            VerifyRequest {
                client_ip: ip,
                required_scopes: &route.scopes,
            },
        )
        .await?;
    let key = match verdict {
        Outcome::Valid(k) => k,
        Outcome::Denied(d, _) => return Err(ApiError::Denied(d)),
    };
    if !route.environments.is_empty() && !route.environments.contains(&key.record.environment) {
        return Err(ApiError::EnvironmentNotAllowed(
            key.record.environment.clone(),
        ));
    }
    if let Some(p) = &route.tenant_param {
        // Another account's path does not exist for this key.
        let value = req.params.iter().find(|(n, _)| n == p).map(|(_, v)| *v);
        if value != key.record.tenant_id.as_deref() {
            return Err(ApiError::NotFound("account"));
        }
    }
    if let (Some(name), Some(header)) = (
        &table.gateway.tenant_header,
        table.names.as_ref().and_then(|n| n.tenant.as_ref()),
    ) {
        for value in headers.values(header.as_str()) {
            let allowed = credential::header_text(value)
                .is_some_and(|v| key.record.sub_tenants.iter().any(|t| t == v.trim()));
            if !allowed {
                return Err(ApiError::TenantNotAllowed(name.clone()));
            }
        }
    }
    Ok(key)
}

/// Spends the route's rate-limit cost and credits for `key` under the
/// policy's tiers, reporting the rate-limit state for the response's
/// headers either way.
pub(crate) async fn spend(
    state: &Gateway,
    policy: &Policy,
    route: &Route,
    key: &CachedKey,
    rate: &mut Option<RateState>,
) -> Result<(), ApiError> {
    let now = state.clock.now();
    match state
        .limits
        .spend(&policy.tiers, &spender(key), route.cost, route.credits, now)
        .await?
    {
        Ok(spent) => {
            *rate = spent.rate;
            Ok(())
        }
        Err(refused) => {
            *rate = refused.rate;
            Err(ApiError::Denied(refused.denial))
        }
    }
}

/// What limits need to know of a verified key.
pub fn spender(key: &CachedKey) -> Spender<'_> {
    Spender {
        key_id: &key.record.id,
        tenant_id: key.record.tenant_id.as_deref(),
        tier: key.record.tier.as_deref(),
        tenant_tier: key.tenant_tier.as_deref(),
        rate_override: key.rate_override.as_ref(),
        credit_cap: key.record.credit_cap,
    }
}
