//! The general path: a gateway request as hyper and axum read it (the
//! router's fallback, [`handle`]), forwarded with hyper's client, bodies
//! streaming both ways; and the `Idempotency-Key` claim / replay flow
//! (`idempotent`), which only this path serves. The credential and
//! hop-by-hop headers are stripped, client-sent identity headers are
//! removed, keyward's identity headers and `X-Forwarded-For` / `Forwarded`
//! are added.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{self, HeaderName};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use keyward_http::error::ApiError;
use keyward_limits::RateState;
use keyward_store::{ClaimOutcome, IdempotencyClaim, StoredResponse};
use keyward_verify::credential;
use keyward_verify::verifier::{CachedKey, HeaderText};

use crate::config::{GatewayConfig, IdempotencyConfig, UpstreamProtocol};
use crate::conn::BodyProgress;
use crate::idempotency;
use crate::pipeline::{self, spender, Admitted, Inbound, Seen};
use crate::policy::Policy;
use crate::routes::{Route, HOP_BY_HOP, METHOD_OVERRIDE, X_FORWARDED_FOR};
use crate::Gateway;

/// The client to the upstream: pooled HTTP/1.1, or HTTP/2 (h2c) when
/// `gateway.upstream_protocol = "h2c"`.
pub(crate) type UpstreamClient = Client<HttpConnector, Body>;

pub(crate) fn client(gateway: &GatewayConfig) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_millis(gateway.connect_timeout_ms)));
    connector.set_nodelay(true);
    let mut builder = Client::builder(TokioExecutor::new());
    builder.pool_idle_timeout(Duration::from_secs(30));
    if gateway.upstream_protocol == UpstreamProtocol::H2c {
        builder.http2_only(true);
    }
    builder.build(connector)
}

/// The router fallback: gateway routes, or 404. The router's state must
/// give the [`Gateway`] (`FromRef`).
pub async fn handle(State(gateway): State<Arc<Gateway>>, req: Request) -> Response {
    let state = gateway.as_ref();
    let mut seen = Seen::new(std::time::Instant::now());
    let mut response = match serve(state, req, &mut seen).await {
        Ok(r) => {
            pipeline::observe(state, &seen, Ok(r.status().as_u16()));
            r
        }
        Err(e) => {
            pipeline::observe(state, &seen, Err(&e));
            e.into_response()
        }
    };
    if let Some(r) = seen.rate {
        r.write_headers(response.headers_mut());
    }
    response
}

async fn serve(state: &Gateway, req: Request, seen: &mut Seen) -> Result<Response, ApiError> {
    // The server's front door did this already; a router embedded by a
    // library user may not have one, and a route must never be matched on
    // a path that is not in normal form.
    let mut req = req;
    keyward_http::edge::admit(&mut req)?;
    let policy = state.policy.current();
    let policy = policy.as_ref();
    let path = req.uri().path().to_owned();
    let Some((route, params)) = policy.routes.find(req.method(), &path) else {
        return Err(ApiError::RouteNotFound);
    };
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0);
    let inbound = Inbound {
        method: req.method(),
        route,
        params: &params,
        headers: req.headers(),
        query: req.uri().query(),
        peer,
    };
    match pipeline::admit(state, policy, inbound, seen).await? {
        Admitted::Open => forward(state, policy, route, req, None, seen).await,
        Admitted::Respond { status, body } => Ok((status, axum::Json(body)).into_response()),
        Admitted::Forward(key) => forward(state, policy, route, req, Some(&key), seen).await,
        Admitted::Idempotent {
            key,
            idempotency_key,
        } => idempotent(state, policy, route, req, &key, idempotency_key, seen).await,
    }
}

/// The gateway path for a request with an `Idempotency-Key`: claim, then
/// spend and forward, store the response; or replay / refuse.
async fn idempotent(
    state: &Gateway,
    policy: &Policy,
    route: &Route,
    req: Request,
    key: &CachedKey,
    idempotency_key: String,
    seen: &mut Seen,
) -> Result<Response, ApiError> {
    let cfg = &policy.idempotency;
    let limit = usize::try_from(cfg.max_body_bytes).unwrap_or(usize::MAX);
    let (parts, body) = req.into_parts();
    let body =
        match http_body_util::BodyExt::collect(http_body_util::Limited::new(body, limit)).await {
            Ok(b) => b.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(ApiError::PayloadTooLarge(limit))
            }
            Err(_) => {
                return Err(ApiError::InvalidBody(
                    "the request body could not be read".into(),
                ))
            }
        };
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let fingerprint = idempotency::fingerprint(&parts.method, path_and_query, &body);
    let scope = idempotency::scope(key.record.tenant_id.as_deref(), &key.record.id);
    let now = state.clock.now().0;
    let ttl = i64::try_from(cfg.ttl_seconds.saturating_mul(1000)).unwrap_or(i64::MAX);
    let lock = i64::try_from(cfg.lock_seconds.saturating_mul(1000)).unwrap_or(i64::MAX);
    let claim = IdempotencyClaim {
        scope: scope.clone(),
        key: idempotency_key.clone(),
        fingerprint,
        now,
        lock_until: now.saturating_add(lock),
        expires_at: now.saturating_add(ttl.max(lock)),
        max_records: cfg.max_records_per_key,
    };
    match state.store.claim_idempotency(&claim).await? {
        ClaimOutcome::Claimed => {}
        ClaimOutcome::InProgress => return Err(ApiError::IdempotencyInProgress),
        ClaimOutcome::QuotaExceeded => return Err(ApiError::IdempotencyQuotaExceeded),
        ClaimOutcome::Mismatch => return Err(ApiError::IdempotencyKeyReused),
        ClaimOutcome::Completed(stored) => {
            // A replay spends nothing; it reports the current rate state.
            if let Some(p) = policy.tiers.policy_for(&spender(key)) {
                let d = state
                    .limits
                    .limiter
                    .spend(&key.record.id, p, 0, state.clock.now())
                    .await?;
                seen.rate = Some(RateState::from_decision(p, &d));
            }
            return Ok(replay(stored));
        }
    }
    // From here on the key is ours: give it back unless a response is stored.
    let release = |e: ApiError| async {
        if let Err(err) = state
            .store
            .release_idempotency(&scope, &idempotency_key)
            .await
        {
            tracing::warn!(error = %err, "Could not release an idempotency key; it frees itself after idempotency.lock_seconds.");
        }
        e
    };
    if let Err(e) = pipeline::spend(state, policy, route, key, seen).await {
        return Err(release(e).await);
    }
    let req = Request::from_parts(parts, Body::from(body));
    let response = match forward(state, policy, route, req, Some(key), seen).await {
        Ok(r) => r,
        // Refused before anything was sent: the request can be retried.
        Err(e @ (ApiError::UpstreamUnavailable | ApiError::PayloadTooLarge(_))) => {
            return Err(release(e).await)
        }
        // A timeout may have run upstream: record it so a retry cannot run twice.
        Err(e) => keyward_http::error::render_now(&state.settings.errors, e),
    };
    let (parts, body) = response.into_parts();
    let max = usize::try_from(cfg.max_response_bytes).unwrap_or(usize::MAX);
    let mut stream = body.into_data_stream();
    let mut chunks: Vec<axum::body::Bytes> = Vec::new();
    let mut size = 0usize;
    let mut complete = true;
    while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
        match chunk {
            Ok(c) => {
                size += c.len();
                chunks.push(c);
                if size > max {
                    complete = false;
                    break;
                }
            }
            Err(_) => {
                // The upstream broke off mid-body: what it did is unknown, so
                // retries get this 502 rather than a second execution.
                let failed = keyward_http::error::render_now(
                    &state.settings.errors,
                    ApiError::UpstreamUnavailable,
                );
                let (parts, body) = failed.into_parts();
                let body = http_body_util::BodyExt::collect(body)
                    .await
                    .map(|b| b.to_bytes().to_vec())
                    .unwrap_or_default();
                let stored = stored_of(&parts, body.clone(), cfg);
                if let Err(e) = state
                    .store
                    .complete_idempotency(&scope, &idempotency_key, &stored, claim.expires_at)
                    .await
                {
                    tracing::error!(error = %e, "Could not store an idempotent response.");
                }
                return Ok(Response::from_parts(parts, Body::from(body)));
            }
        }
    }
    let body_bytes: Vec<u8> = if complete {
        chunks.iter().flat_map(|c| c.iter().copied()).collect()
    } else {
        Vec::new()
    };
    let stored = stored_of(&parts, body_bytes, cfg);
    if let Err(e) = state
        .store
        .complete_idempotency(&scope, &idempotency_key, &stored, claim.expires_at)
        .await
    {
        tracing::error!(error = %e, "Could not store an idempotent response; retries get 409 until idempotency.lock_seconds.");
    }
    let body = if complete {
        Body::from(axum::body::Bytes::from(stored.body))
    } else {
        let head = futures_util::stream::iter(chunks.into_iter().map(Ok::<_, axum::Error>));
        Body::from_stream(futures_util::StreamExt::chain(head, stream))
    };
    Ok(Response::from_parts(parts, body))
}

/// The stored form of a response: status, the configured headers, body.
fn stored_of(
    parts: &axum::http::response::Parts,
    body: Vec<u8>,
    cfg: &IdempotencyConfig,
) -> StoredResponse {
    let headers = cfg
        .replay_headers
        .iter()
        .flat_map(|name| {
            parts
                .headers
                .get_all(name.as_str())
                .iter()
                .filter_map(move |v| {
                    v.to_str()
                        .ok()
                        .map(|v| (name.to_ascii_lowercase(), v.to_owned()))
                })
        })
        .collect();
    StoredResponse {
        status: parts.status.as_u16(),
        headers,
        body,
    }
}

fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = Response::new(Body::from(stored.body));
    *response.status_mut() = status;
    let h = response.headers_mut();
    for (name, value) in stored.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            h.append(n, v);
        }
    }
    h.insert(idempotency::REPLAYED, HeaderValue::from_static("true"));
    response
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the (few) headers present instead of a hashed removal
    // per hop-by-hop name: most messages carry one or none of them.
    let mut found: Vec<HeaderName> = headers
        .keys()
        .filter(|k| HOP_BY_HOP.contains(k))
        .cloned()
        .collect();
    if found.is_empty() {
        return;
    }
    if found.contains(&header::CONNECTION) {
        found.extend(
            headers
                .get_all(header::CONNECTION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok()),
        );
    }
    for n in found {
        headers.remove(n);
    }
}

async fn forward(
    state: &Gateway,
    policy: &Policy,
    route: &Route,
    req: Request,
    key: Option<&CachedKey>,
    seen: &mut Seen,
) -> Result<Response, ApiError> {
    let table = &policy.routes;
    let Some(upstream) = &table.upstream else {
        return Err(ApiError::Internal);
    };
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0);
    let client_ip = credential::client_ip(peer, req.headers(), &state.settings.trusted_proxies);
    // How the client's body is arriving (absent: no body, or one read whole).
    let progress = req.extensions().get::<BodyProgress>().cloned();
    let limit = table.gateway.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::PayloadTooLarge(
            usize::try_from(limit).unwrap_or(usize::MAX),
        ));
    }
    let (mut parts, body) = req.into_parts();
    // The client's HTTP version is its own hop's: an HTTP/2 request goes to
    // an HTTP/1.1 upstream as HTTP/1.1 (hyper refuses to send it as
    // HTTP/2 over HTTP/1; an h2c upstream's client speaks HTTP/2 anyway).
    parts.version = axum::http::Version::HTTP_11;
    // Chunked bodies are counted as they stream; past the limit the upstream
    // request is aborted.
    let body = Body::new(http_body_util::Limited::new(
        body,
        usize::try_from(limit).unwrap_or(usize::MAX),
    ));
    let base = upstream.path().trim_end_matches('/');
    parts.uri = if base.is_empty() {
        // The usual case: the request's own path and query, shared not copied.
        let mut target = axum::http::uri::Parts::default();
        target.scheme = upstream.scheme().cloned();
        target.authority = upstream.authority().cloned();
        target.path_and_query = parts.uri.path_and_query().cloned();
        Uri::from_parts(target)
            .map_err(|_| ApiError::InvalidQuery("the request target cannot be forwarded".into()))?
    } else {
        let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        format!(
            "{}://{}{}{}",
            upstream.scheme_str().unwrap_or("http"),
            upstream.authority().map_or("", |a| a.as_str()),
            base,
            path_and_query
        )
        .parse()
        .map_err(|_| ApiError::InvalidQuery("the request target cannot be forwarded".into()))?
    };

    let h = &mut parts.headers;
    strip_hop_by_hop(h);
    let Some(names) = &table.names else {
        return Err(ApiError::Internal);
    };
    // The upstream never sees the credential.
    h.remove(header::AUTHORIZATION);
    h.remove(&names.api_key);
    // Identity headers come from keyward only.
    for n in &names.identity {
        h.remove(n);
    }
    if !route.allow_method_override {
        for n in METHOD_OVERRIDE {
            h.remove(n);
        }
    }
    if let Some(k) = key {
        let [key_id, tenant_id, environment, scopes, owner] = &names.identity;
        let v = k.identity();
        // Every `HeaderText` is a valid field value: nothing is dropped here.
        let mut put = |name: &HeaderName, text: Option<&HeaderText>| {
            if let Some(value) = text.and_then(|t| HeaderValue::from_maybe_shared(t.shared()).ok())
            {
                h.insert(name.clone(), value);
            }
        };
        put(key_id, Some(&v.key_id));
        put(tenant_id, v.tenant_id.as_ref());
        put(environment, Some(&v.environment));
        put(scopes, Some(&v.scopes));
        put(owner, v.owner.as_ref());
    }
    if let Some(ip) = client_ip {
        let ip_text = ip.to_string();
        let xff = match h.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(prev)
                if peer.is_some_and(|p| {
                    state
                        .settings
                        .trusted_proxies
                        .iter()
                        .any(|n| n.contains(&p.ip()))
                }) =>
            {
                format!(
                    "{prev}, {}",
                    peer.map(|p| p.ip().to_string()).unwrap_or_default()
                )
            }
            _ => ip_text.clone(),
        };
        if let Ok(v) = HeaderValue::from_str(&xff) {
            h.insert(X_FORWARDED_FOR, v);
        }
        let forwarded = if ip.is_ipv6() {
            format!("for=\"[{ip_text}]\";proto=http")
        } else {
            format!("for={ip_text};proto=http")
        };
        if let Ok(v) = HeaderValue::from_str(&forwarded) {
            h.insert(header::FORWARDED, v);
        }
    }
    if let Some(a) = upstream.authority() {
        if let Ok(v) = HeaderValue::from_str(a.as_str()) {
            h.insert(header::HOST, v);
        }
    }
    let request = axum::http::Request::from_parts(parts, body);
    let timeout = Duration::from_millis(table.gateway.timeout_ms);
    let upstream_started = std::time::Instant::now();
    let response = match tokio::time::timeout(timeout, policy.client.request(request)).await {
        // An upstream is not late with the answer to a request that has not
        // arrived whole: the client's body was still coming.
        Err(_) if progress.as_ref().is_some_and(|p| p.receiving()) => {
            tracing::debug!(
                "The request body was still arriving when gateway.timeout_ms passed; answering 408."
            );
            return Err(ApiError::RequestTimeout);
        }
        Err(_) => return Err(ApiError::UpstreamTimeout),
        Ok(Err(e)) => {
            if let Some(fault) = client_fault(&e, progress.as_ref(), limit) {
                tracing::debug!(error = %e, "The client's request body failed; the upstream request was abandoned.");
                return Err(fault);
            }
            tracing::warn!(error = %e, "Upstream request failed.");
            return Err(ApiError::UpstreamUnavailable);
        }
        Ok(Ok(r)) => r,
    };
    // To the response head: the body streams after the observation.
    seen.upstream = Some(upstream_started.elapsed());
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, Body::new(body)))
}

/// The client's part in a failed upstream request, if it had one: its body
/// was malformed, cut off or stalled (reported by the body itself), or went
/// over `gateway.max_body_bytes` while streaming. Those are 4xx, not the
/// upstream's failure.
fn client_fault(
    e: &(dyn std::error::Error + 'static),
    progress: Option<&BodyProgress>,
    limit: u64,
) -> Option<ApiError> {
    if let Some(fault) = progress.and_then(|p| p.fault()) {
        return Some(fault);
    }
    let mut cause = Some(e);
    while let Some(c) = cause {
        if c.is::<http_body_util::LengthLimitError>() {
            return Some(ApiError::PayloadTooLarge(
                usize::try_from(limit).unwrap_or(usize::MAX),
            ));
        }
        cause = c.source();
    }
    None
}
