//! Gateway mode: keyward as a reverse proxy in front of an existing API.
//!
//! Requests that match none of keyward's own paths are matched against the
//! configured `[[routes]]` (in order). A matched route authenticates the key
//! with the same verifier as the verify API, checks the route's scopes,
//! environments and tenant path parameter, and then either answers from a
//! JSON template (`respond`) or forwards to the upstream: the credential and
//! hop-by-hop headers are stripped, client-sent identity headers are removed,
//! keyward's identity headers and `X-Forwarded-For` / `Forwarded` are added,
//! and bodies stream in both directions without buffering.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{self, HeaderName};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use keyward_core::scope::ScopeCatalog;
use serde_json::Value;

use crate::api::views::Principal;
use crate::app::AppState;
use crate::config::{invalid, Config, ConfigError, GatewayConfig, IdempotencyMode, RouteConfig};
use crate::credential;
use crate::error::ApiError;
use crate::idempotency;
use crate::limits::{RateState, Spender, Tiers};
use crate::verifier::{CachedKey, HeaderText};
use keyward_store::limits::{ClaimOutcome, IdempotencyClaim, StoredResponse};
use pipeline::{Admitted, Inbound};

pub(crate) mod h1;
pub use keyward_http::path;
pub(crate) mod pipeline;
pub mod policy;
pub(crate) mod pool;

pub use policy::{LivePolicy, Policy, ReloadError};

/// Hop-by-hop headers (RFC 9110 §7.6.1) never forwarded in either direction
/// (parsed once: removing by `&str` would parse the name every time).
pub(crate) const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
    Rest(String),
}

/// One compiled route.
#[derive(Debug, Clone)]
pub struct Route {
    pub index: usize,
    pub pattern: String,
    methods: Vec<Method>,
    segments: Vec<Segment>,
    pub scopes: Vec<String>,
    pub environments: Vec<String>,
    pub tenant_param: Option<String>,
    pub auth: bool,
    pub respond: Option<(StatusCode, Value)>,
    /// Rate-limit tokens per request.
    pub cost: u64,
    /// Credits per request.
    pub credits: i64,
    pub idempotency: IdempotencyMode,
    /// Method-override headers are forwarded (`allow_method_override`).
    pub allow_method_override: bool,
}

/// Headers some frameworks read as the request's real method; dropped
/// before forwarding unless the route allows them.
pub(crate) const METHOD_OVERRIDE: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

impl Route {
    /// How `Idempotency-Key` applies to a `method` request on this route
    /// (`Optional` or `Required`), or `None` when it is passed through
    /// untouched (the route turned it off, or the method is not one of
    /// `idempotency.methods`).
    pub(crate) fn idempotency_for(
        &self,
        method: &Method,
        methods: &[Method],
    ) -> Option<IdempotencyMode> {
        (self.idempotency != IdempotencyMode::Off && methods.contains(method))
            .then_some(self.idempotency)
    }
}

/// The routes of a deployment, compiled into a [`Policy`].
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    upstream: Option<Uri>,
    /// The upstream as the HTTP/1 fast path dials it.
    pub(crate) target: Option<Arc<UpstreamTarget>>,
    /// Header names parsed once: the credential header, the identity
    /// headers (key id, tenant, environment, scopes, owner) and the tenant
    /// header.
    pub(crate) names: Option<Arc<Names>>,
    /// The `[gateway]` settings these routes were compiled with.
    pub gateway: GatewayConfig,
}

fn parse_pattern(path: &str) -> Result<Vec<Segment>, String> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(format!("path {path:?} must start with /"));
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let mut out = Vec::new();
    let mut names = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let seg = if let Some(inner) = p.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            let (rest, name) = match inner.strip_prefix('*') {
                Some(n) => (true, n),
                None => (false, inner),
            };
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!(
                    "parameter {p:?} in {path:?} needs a name of letters, digits and _"
                ));
            }
            if names.contains(&name) {
                return Err(format!("parameter {name:?} appears twice in {path:?}"));
            }
            names.push(name);
            if rest {
                if i + 1 != parts.len() {
                    return Err(format!("{p:?} must be the last segment of {path:?}"));
                }
                Segment::Rest(name.to_owned())
            } else {
                Segment::Param(name.to_owned())
            }
        } else if p.contains('{') || p.contains('}') {
            return Err(format!(
                "segment {p:?} of {path:?} mixes text and a parameter"
            ));
        } else {
            Segment::Literal((*p).to_owned())
        };
        out.push(seg);
    }
    Ok(out)
}

/// A matched route's path parameters: (name, raw value) pairs, borrowed
/// from the route and the request path (no allocation for routes without
/// parameters).
pub type Params<'r, 'p> = Vec<(&'r str, &'p str)>;

fn match_segments<'r, 'p>(segments: &'r [Segment], path: &'p str) -> Option<Params<'r, 'p>> {
    let mut params = Vec::new();
    matches_with(segments, path, |name, value| params.push((name, value))).then_some(params)
}

/// Whether `path` matches `segments`, reporting each parameter to
/// `param` (so a plain test allocates nothing).
fn matches_with<'r, 'p>(
    segments: &'r [Segment],
    path: &'p str,
    mut param: impl FnMut(&'r str, &'p str),
) -> bool {
    let Some(mut rest) = path.strip_prefix('/') else {
        return false;
    };
    let mut done = false;
    for seg in segments {
        if let Segment::Rest(name) = seg {
            // `/a/{*rest}` also matches `/a`, with an empty rest.
            param(name.as_str(), if done { "" } else { rest });
            return true;
        }
        if done {
            return false;
        }
        let part = match rest.split_once('/') {
            Some((part, after)) => {
                rest = after;
                part
            }
            None => {
                done = true;
                rest
            }
        };
        match seg {
            Segment::Literal(l) => {
                if part != l {
                    return false;
                }
            }
            Segment::Param(name) => {
                if part.is_empty() {
                    return false;
                }
                param(name.as_str(), part);
            }
            Segment::Rest(_) => {}
        }
    }
    done
}

/// Paths that keyward itself answers (the management API, `/openapi.json`,
/// the console): the gateway's fast path hands them to the full router,
/// where they win over gateway routes.
#[derive(Debug, Clone, Default)]
pub struct OwnPaths {
    /// Each pattern with its leading literal segments (at most two, e.g.
    /// `/v1/keys`), a cheap first test: most gateway paths fail it.
    patterns: Vec<(String, Vec<Segment>)>,
    /// A prefix owned with everything below it (`/console`).
    prefixes: Vec<String>,
}

impl OwnPaths {
    /// `patterns` are keyward's own routes (`/v1/keys/{id}`); a pattern
    /// that does not parse is a bug (the unit test below parses them all).
    pub fn new<'a>(
        patterns: impl IntoIterator<Item = &'a str>,
        prefixes: impl IntoIterator<Item = &'a str>,
    ) -> OwnPaths {
        let patterns = patterns
            .into_iter()
            .filter_map(|p| parse_pattern(p).ok())
            .map(|segments| {
                let lead: String = segments
                    .iter()
                    .take(2)
                    .map_while(|s| match s {
                        Segment::Literal(l) => Some(format!("/{l}")),
                        _ => None,
                    })
                    .collect();
                (lead, segments)
            })
            .collect();
        OwnPaths {
            patterns,
            prefixes: prefixes.into_iter().map(str::to_owned).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.patterns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    pub fn contains(&self, path: &str) -> bool {
        let under = |prefix: &str| {
            path.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        };
        self.prefixes.iter().any(|p| under(p))
            || self
                .patterns
                .iter()
                .any(|(lead, p)| under(lead) && matches_with(p, path, |_, _| {}))
    }
}

/// Where forwarded requests go: `host:port` to connect to, the `Host` to
/// send, and the base path put before every forwarded path.
#[derive(Debug)]
pub(crate) struct UpstreamTarget {
    pub authority: Arc<str>,
    /// The `Host` header: the authority as configured.
    pub host: String,
    pub base: String,
}

#[derive(Debug)]
pub(crate) struct Names {
    api_key: HeaderName,
    identity: [HeaderName; 5],
    tenant: Option<HeaderName>,
}

fn header_name(setting: &str, name: &str) -> Result<HeaderName, ConfigError> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| invalid(setting, format!("{name:?} is not a valid header name")))
}

impl RouteTable {
    /// Compiles `[[routes]]` and `[gateway]`; a route's cost must fit every
    /// one of `tiers` (the tiers of the same policy).
    pub fn compile(
        config: &Config,
        catalog: &ScopeCatalog,
        tiers: &Tiers,
    ) -> Result<RouteTable, ConfigError> {
        let upstream = match &config.gateway.upstream {
            None => None,
            Some(u) => {
                let uri: Uri = u
                    .parse()
                    .map_err(|_| invalid("gateway.upstream", format!("{u:?} is not a URL")))?;
                if uri.scheme_str() != Some("http") || uri.authority().is_none() {
                    return Err(invalid(
                        "gateway.upstream",
                        format!("{u:?} must be an http:// URL with a host (https upstreams are not supported yet)"),
                    ));
                }
                Some(uri)
            }
        };
        if let Some(h) = &config.gateway.tenant_header {
            if HeaderName::from_bytes(h.as_bytes()).is_err() {
                return Err(invalid(
                    "gateway.tenant_header",
                    format!("{h:?} is not a valid header name"),
                ));
            }
        }
        let mut routes: Vec<Route> = Vec::new();
        for (index, r) in config.routes.iter().enumerate() {
            let setting = format!("routes[{index}] ({})", r.path);
            routes.push(
                compile_route(index, r, catalog, config, tiers, upstream.is_some())
                    .map_err(|m| invalid(setting, m))?,
            );
        }
        // Two routes with the same methods and the same shape would make the
        // second unreachable: refuse them instead of guessing.
        for (i, a) in routes.iter().enumerate() {
            for b in &routes[..i] {
                let same_methods = a.methods.is_empty()
                    || b.methods.is_empty()
                    || a.methods.iter().any(|m| b.methods.contains(m));
                if same_methods && shape(&a.segments) == shape(&b.segments) {
                    return Err(invalid(
                        format!("routes[{}] ({})", a.index, a.pattern),
                        format!(
                            "overlaps routes[{}] ({}), which would always win",
                            b.index, b.pattern
                        ),
                    ));
                }
            }
        }
        let ids = &config.gateway.identity_headers;
        let names = Names {
            api_key: header_name("keys.header", &config.keys.header)?,
            identity: [
                header_name("gateway.identity_headers.key_id", &ids.key_id)?,
                header_name("gateway.identity_headers.tenant_id", &ids.tenant_id)?,
                header_name("gateway.identity_headers.environment", &ids.environment)?,
                header_name("gateway.identity_headers.scopes", &ids.scopes)?,
                header_name("gateway.identity_headers.owner", &ids.owner)?,
            ],
            tenant: config
                .gateway
                .tenant_header
                .as_deref()
                .map(|h| header_name("gateway.tenant_header", h))
                .transpose()?,
        };
        let target = upstream.as_ref().and_then(|u| {
            let a = u.authority()?;
            let authority: Arc<str> = match a.port_u16() {
                Some(_) => a.as_str().into(),
                None => format!("{}:80", a.host()).into(),
            };
            Some(Arc::new(UpstreamTarget {
                authority,
                host: a.as_str().to_owned(),
                base: u.path().trim_end_matches('/').to_owned(),
            }))
        });
        Ok(RouteTable {
            routes,
            target,
            upstream,
            names: Some(Arc::new(names)),
            gateway: config.gateway.clone(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// How many routes there are.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// The index of the first route matching `method` and `path`.
    pub(crate) fn find_index(&self, method: &Method, path: &str) -> Option<usize> {
        self.routes.iter().position(|r| {
            (r.methods.is_empty() || r.methods.contains(method))
                && matches_with(&r.segments, path, |_, _| {})
        })
    }

    /// The first route matching `method` and `path`, with its parameters.
    pub fn find<'r, 'p>(
        &'r self,
        method: &Method,
        path: &'p str,
    ) -> Option<(&'r Route, Params<'r, 'p>)> {
        self.routes.iter().find_map(|r| {
            if !r.methods.is_empty() && !r.methods.contains(method) {
                return None;
            }
            match_segments(&r.segments, path).map(|p| (r, p))
        })
    }
}

/// The pattern with parameter names erased, for overlap checks.
fn shape(segments: &[Segment]) -> Vec<String> {
    segments
        .iter()
        .map(|s| match s {
            Segment::Literal(l) => l.clone(),
            Segment::Param(_) => "{}".into(),
            Segment::Rest(_) => "{*}".into(),
        })
        .collect()
}

fn compile_route(
    index: usize,
    r: &RouteConfig,
    catalog: &ScopeCatalog,
    config: &Config,
    tiers: &Tiers,
    has_upstream: bool,
) -> Result<Route, String> {
    let segments = parse_pattern(&r.path)?;
    let mut methods = Vec::new();
    for m in &r.methods {
        methods.push(
            Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                .map_err(|_| format!("{m:?} is not an HTTP method"))?,
        );
    }
    for s in &r.scopes {
        catalog.check_grant(s).map_err(|e| e.to_string())?;
    }
    for e in &r.environments {
        if !config.keys.environments.contains_key(e) {
            return Err(format!("environment {e:?} is not in keys.environments"));
        }
    }
    if let Some(p) = &r.tenant_param {
        if !segments
            .iter()
            .any(|s| matches!(s, Segment::Param(n) if n == p))
        {
            return Err(format!(
                "tenant_param {p:?} is not a {{parameter}} of the path"
            ));
        }
        if !r.auth {
            return Err("a route with tenant_param needs auth".into());
        }
    }
    let respond = match &r.respond {
        None => {
            if !has_upstream {
                return Err("forwards to the upstream, but gateway.upstream is not set".into());
            }
            None
        }
        Some(t) => {
            let status = StatusCode::from_u16(r.respond_status).map_err(|_| {
                format!("respond_status {} is not an HTTP status", r.respond_status)
            })?;
            let body = serde_json::to_value(t).map_err(|e| e.to_string())?;
            Some((status, body))
        }
    };
    if respond.is_some() && !r.auth {
        return Err("respond routes fill their template from the key, so they need auth".into());
    }
    if r.credits < 0 {
        return Err("credits must not be negative".into());
    }
    if !r.auth && (r.credits > 0 || r.idempotency == IdempotencyMode::Required) {
        return Err(
            "credits and required idempotency belong to a key, so the route needs auth".into(),
        );
    }
    if respond.is_some() && r.idempotency == IdempotencyMode::Required {
        return Err("respond routes answer from keyward and take no Idempotency-Key".into());
    }
    if let Some(t) = tiers
        .names()
        .into_values()
        .find(|t| r.cost > t.policy.burst)
    {
        return Err(format!(
            "cost {} is more than a tier's burst ({}), so such keys could never call it",
            r.cost, t.policy.burst
        ));
    }
    Ok(Route {
        index,
        pattern: r.path.clone(),
        methods,
        segments,
        scopes: r.scopes.clone(),
        environments: r.environments.clone(),
        tenant_param: r.tenant_param.clone(),
        auth: r.auth,
        respond,
        cost: r.cost,
        credits: r.credits,
        idempotency: r.idempotency,
        allow_method_override: r.allow_method_override,
    })
}

/// The client to the upstream: pooled HTTP/1.1, or HTTP/2 (h2c) when
/// `gateway.upstream_protocol = "h2c"`.
pub type UpstreamClient = Client<HttpConnector, Body>;

pub fn client(config: &Config) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_millis(
        config.gateway.connect_timeout_ms,
    )));
    connector.set_nodelay(true);
    let mut builder = Client::builder(TokioExecutor::new());
    builder.pool_idle_timeout(Duration::from_secs(30));
    if config.gateway.upstream_protocol == crate::config::UpstreamProtocol::H2c {
        builder.http2_only(true);
    }
    builder.build(connector)
}

/// The router fallback: gateway routes, or 404.
pub async fn handle(State(state): State<AppState>, req: Request) -> Response {
    let mut rate = None;
    let mut response = match serve(&state, req, &mut rate).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    if let Some(r) = rate {
        r.write_headers(response.headers_mut());
    }
    response
}

async fn serve(
    state: &AppState,
    req: Request,
    rate: &mut Option<RateState>,
) -> Result<Response, ApiError> {
    // The server's front door did this already; a router embedded by a
    // library user may not have one, and a route must never be matched on
    // a path that is not in normal form.
    let mut req = req;
    crate::app::admit(&mut req)?;
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
    match pipeline::admit(state, policy, inbound, rate).await? {
        Admitted::Open => forward(state, policy, route, req, None).await,
        Admitted::Respond { status, body } => Ok((status, axum::Json(body)).into_response()),
        Admitted::Forward(key) => forward(state, policy, route, req, Some(&key)).await,
        Admitted::Idempotent {
            key,
            idempotency_key,
        } => idempotent(state, policy, route, req, &key, idempotency_key, rate).await,
    }
}

/// The gateway path for a request with an `Idempotency-Key`: claim, then
/// spend and forward, store the response; or replay / refuse.
async fn idempotent(
    state: &AppState,
    policy: &Policy,
    route: &Route,
    req: Request,
    key: &CachedKey,
    idempotency_key: String,
    rate: &mut Option<RateState>,
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
                *rate = Some(RateState::from_decision(p, &d));
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
    if let Err(e) = pipeline::spend(state, policy, route, key, rate).await {
        return Err(release(e).await);
    }
    let req = Request::from_parts(parts, Body::from(body));
    let response = match forward(state, policy, route, req, Some(key)).await {
        Ok(r) => r,
        // Refused before anything was sent: the request can be retried.
        Err(e @ (ApiError::UpstreamUnavailable | ApiError::PayloadTooLarge(_))) => {
            return Err(release(e).await)
        }
        // A timeout may have run upstream: record it so a retry cannot run twice.
        Err(e) => crate::error::render_now(&state.settings, e),
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
                let failed =
                    crate::error::render_now(&state.settings, ApiError::UpstreamUnavailable);
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
    cfg: &crate::config::IdempotencyConfig,
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

/// Fills `{placeholders}` in every string of `template` from `p`: `{key_id}`,
/// `{key_name}`, `{start}`, `{tenant_id}`, `{tenant_name}`, `{environment}`,
/// `{owner}`, `{tier}`, `{metadata.FIELD}`; a string that is exactly
/// `{scopes}` becomes the scope array. Unknown placeholders stay as written.
pub(crate) fn fill(template: &Value, p: &Principal) -> Value {
    match template {
        Value::String(s) if s == "{scopes}" => Value::from(p.scopes.clone()),
        Value::String(s) => Value::String(fill_str(s, p)),
        Value::Array(a) => Value::Array(a.iter().map(|v| fill(v, p)).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), fill(v, p))).collect()),
        other => other.clone(),
    }
}

fn placeholder(name: &str, p: &Principal) -> Option<String> {
    let s = |v: &str| Some(v.to_owned());
    match name {
        "key_id" => s(&p.key_id),
        "key_name" => s(&p.key_name),
        "start" => s(&p.start),
        "tenant_id" => Some(p.tenant_id.clone().unwrap_or_default()),
        "tenant_name" => Some(p.tenant_name.clone().unwrap_or_default()),
        "environment" => s(&p.environment),
        "owner" => Some(p.owner.clone().unwrap_or_default()),
        "tier" => Some(p.tier.clone().unwrap_or_default()),
        "scopes" => Some(p.scopes.join(" ")),
        other => other
            .strip_prefix("metadata.")
            .map(|field| match p.metadata.get(field) {
                Some(Value::String(v)) => v.clone(),
                Some(Value::Null) | None => String::new(),
                Some(v) => v.to_string(),
            }),
    }
}

fn fill_str(s: &str, p: &Principal) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after
            .find('}')
            .and_then(|close| placeholder(&after[..close], p).map(|v| (close, v)))
        {
            Some((close, value)) => {
                out.push_str(&value);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
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
    state: &AppState,
    policy: &Policy,
    route: &Route,
    req: Request,
    key: Option<&CachedKey>,
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
    let progress = req
        .extensions()
        .get::<crate::serve::BodyProgress>()
        .cloned();
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
    progress: Option<&crate::serve::BodyProgress>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywards_own_paths_all_parse_and_win() {
        let api = crate::api::paths();
        let own = OwnPaths::new(api.iter().copied(), Some("/console"));
        assert_eq!(own.len(), api.len(), "every own route pattern parses");
        for p in [
            "/v1/health",
            "/v1/keys",
            "/v1/keys/key_1/rotate",
            "/v1/tenants/t/credits/ledger",
            "/openapi.json",
            "/console",
            "/console/t/x/keys",
        ] {
            assert!(own.contains(p), "{p}");
        }
        for p in [
            "/v1/items",
            "/v1/keysx",
            "/v1/keys/a/b/c",
            "/v1/health/",
            "/consoles",
            "/",
            "",
        ] {
            assert!(!own.contains(p), "{p}");
        }
    }

    #[test]
    fn patterns_match_segments_and_rest() {
        let s = parse_pattern("/v1/voice/accounts/{auth_id}/calls").unwrap();
        let p = match_segments(&s, "/v1/voice/accounts/AC1/calls").unwrap();
        assert_eq!(p, vec![("auth_id", "AC1")]);
        assert!(match_segments(&s, "/v1/voice/accounts/AC1/calls/x").is_none());
        assert!(match_segments(&s, "/v1/voice/accounts//calls").is_none());
        let r = parse_pattern("/v1/vox/{*rest}").unwrap();
        assert_eq!(
            match_segments(&r, "/v1/vox/calls/1").unwrap(),
            vec![("rest", "calls/1")]
        );
        assert_eq!(match_segments(&r, "/v1/vox/").unwrap(), vec![("rest", "")]);
        assert_eq!(match_segments(&r, "/v1/vox").unwrap(), vec![("rest", "")]);
        let lit = parse_pattern("/v1/items").unwrap();
        assert!(match_segments(&lit, "/v1/items").unwrap().is_empty());
        assert!(match_segments(&lit, "/v1/items/").is_none());
        assert!(match_segments(&lit, "/v1").is_none());
        assert!(match_segments(&lit, "/v1//items").is_none());
        assert!(parse_pattern("v1").is_err());
        assert!(parse_pattern("/a/{*x}/b").is_err());
        assert!(parse_pattern("/a/x{y}").is_err());
        assert!(parse_pattern("/a/{x}/{x}").is_err());
    }
}
