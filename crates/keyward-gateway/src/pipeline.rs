//! The gateway's policy for one request, the same on both paths: the
//! general path ([`crate::handle`]) and the HTTP/1 fast path
//! (`h1.rs`) each read the request their own way and call
//! [`admit`], which authenticates the key, runs the route's checks and
//! spends the rate limit and credits, in that order. What is left to the
//! paths is their own I/O: answering, forwarding, and the idempotency claim
//! (which sits between the checks and the spend, and needs the body).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use keyward_core::verdict::Denial;
use serde_json::Value;

use keyward_http::error::ApiError;
use keyward_limits::{RateState, Spender};
use keyward_observe::{upstream_outcome, KeyFacts, Observation, Surface};
use keyward_store::OutcomeClass;
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

/// What the pipeline learned of a request, however it ended: what usage
/// and metrics count it under.
pub(crate) struct Seen {
    pub started: Instant,
    /// The rate-limit state for the response's headers, refused or not.
    pub rate: Option<RateState>,
    /// The route's label, once one matched.
    pub route: Option<Arc<str>>,
    /// The key, once it was known (denied keys too).
    pub key: Option<Arc<CachedKey>>,
    pub client_ip: Option<IpAddr>,
    /// Which of the key's sub-tenants the tenant header named, once the key
    /// was allowed it.
    pub tenant_header: Option<usize>,
    /// Credits spent.
    pub credits: i64,
    /// Answered from a `respond` template.
    pub responded: bool,
    /// Time spent on the upstream.
    pub upstream: Option<Duration>,
}

impl Seen {
    pub fn new(started: Instant) -> Seen {
        Seen {
            started,
            rate: None,
            route: None,
            key: None,
            client_ip: None,
            tenant_header: None,
            credits: 0,
            responded: false,
            upstream: None,
        }
    }
}

/// Hands the request to the observer: `ended` is the status the client
/// got (from the upstream, or a template) or the error it got.
pub(crate) fn observe(state: &Gateway, seen: &Seen, ended: Result<u16, &ApiError>) {
    let (outcome, class, status) = match ended {
        Ok(status) if seen.responded => ("valid", OutcomeClass::Success, status),
        Ok(status) => {
            let (o, c) = upstream_outcome(status);
            (o, c, status)
        }
        Err(e) => {
            let (o, c) = e.outcome();
            (o, c, e.status().as_u16())
        }
    };
    let key = seen.key.as_deref();
    state.observer.observe(&Observation {
        surface: Surface::Gateway,
        at: state.clock.now(),
        route: seen.route.as_deref().unwrap_or("unmatched"),
        key: key.map(|k| KeyFacts {
            key_id: &k.record.id,
            tenant_id: k.record.tenant_id.as_deref(),
        }),
        tenant_header: key.and_then(|k| {
            seen.tenant_header
                .and_then(|i| k.record.sub_tenants.get(i))
                .map(String::as_str)
        }),
        outcome,
        class,
        status,
        credits: seen.credits,
        latency: seen.started.elapsed(),
        upstream: seen.upstream,
        client_ip: seen.client_ip,
    });
}

/// Authenticate → route checks → (idempotency key) → spend. What the
/// response's headers and usage need lands in `seen` (the rate-limit state,
/// refused or not; the key; the client address…).
pub(crate) async fn admit<H: HeaderSource + ?Sized>(
    state: &Gateway,
    policy: &Policy,
    req: Inbound<'_, H>,
    seen: &mut Seen,
) -> Result<Admitted, ApiError> {
    let route = req.route;
    seen.route = Some(Arc::clone(&route.label));
    if !route.auth {
        // No key is checked here, and none may pass through either.
        credential::refuse_embedded_keys(req.headers, req.query, &state.settings.credentials)?;
        return Ok(Admitted::Open);
    }
    let key = authenticate(state, &policy.routes, &req, seen).await?;
    if let Some((status, template)) = &route.respond {
        seen.responded = true;
        spend(state, policy, route, &key, seen).await?;
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
    spend(state, policy, route, &key, seen).await?;
    Ok(Admitted::Forward(key))
}

/// Finds and verifies the route's key, then checks the route's
/// environments, tenant path parameter and tenant header.
async fn authenticate<H: HeaderSource + ?Sized>(
    state: &Gateway,
    table: &RouteTable,
    req: &Inbound<'_, H>,
    seen: &mut Seen,
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
    seen.client_ip = ip;
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
        Outcome::Denied(d, key) => {
            seen.key = key;
            return Err(ApiError::Denied(d));
        }
    };
    seen.key = Some(Arc::clone(&key));
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
                .and_then(|v| key.record.sub_tenants.iter().position(|t| t == v.trim()));
            match allowed {
                Some(i) => seen.tenant_header = Some(i),
                None => {
                    seen.tenant_header = None;
                    return Err(ApiError::TenantNotAllowed(name.clone()));
                }
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
    seen: &mut Seen,
) -> Result<(), ApiError> {
    let now = state.clock.now();
    match state
        .limits
        .spend(&policy.tiers, &spender(key), route.cost, route.credits, now)
        .await?
    {
        Ok(spent) => {
            seen.rate = spent.rate;
            if spent.credits.is_some() {
                seen.credits = route.credits;
            }
            Ok(())
        }
        Err(refused) => {
            seen.rate = refused.rate;
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
