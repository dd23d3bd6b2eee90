//! The compiled `[[routes]]` ([`RouteTable`], [`Route`]): path patterns,
//! matching, and the checks a route's settings get when compiled; and
//! keyward's own paths ([`OwnPaths`]), which win over every route.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::header::{self, HeaderName};
use axum::http::{Method, StatusCode, Uri};
use keyward_core::scope::ScopeCatalog;
use keyward_limits::Tiers;
use serde_json::Value;

use crate::config::{GatewayConfig, IdempotencyMode, RouteConfig};
use crate::policy::{invalid, PolicyConfig, PolicyError};

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
pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    Literal(String),
    Param(String),
    Rest(String),
}

/// One compiled route.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub index: usize,
    pub pattern: String,
    /// The route's template as usage and metrics name it: its methods and
    /// pattern (`GET /v1/calls/{id}`; the pattern alone when the route
    /// takes any method). Bounded by the configuration, never a raw path.
    pub label: Arc<str>,
    methods: Vec<Method>,
    pub(crate) segments: Vec<Segment>,
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

/// The routes of a deployment, compiled into a [`Policy`](crate::Policy).
#[derive(Debug, Clone, Default)]
pub(crate) struct RouteTable {
    pub(crate) routes: Vec<Route>,
    pub(crate) upstream: Option<Uri>,
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
pub(crate) type Params<'r, 'p> = Vec<(&'r str, &'p str)>;

pub(crate) fn match_segments<'r, 'p>(
    segments: &'r [Segment],
    path: &'p str,
) -> Option<Params<'r, 'p>> {
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
    pub api_key: HeaderName,
    pub identity: [HeaderName; 5],
    pub tenant: Option<HeaderName>,
}

fn header_name(setting: &str, name: &str) -> Result<HeaderName, PolicyError> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| invalid(setting, format!("{name:?} is not a valid header name")))
}

impl RouteTable {
    /// Compiles `[[routes]]` and `[gateway]`; a route's cost must fit every
    /// one of `tiers` (the tiers of the same policy).
    pub(crate) fn compile(
        config: &PolicyConfig<'_>,
        tiers: &Tiers,
    ) -> Result<RouteTable, PolicyError> {
        let catalog = config.catalog;
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
                compile_route(
                    index,
                    r,
                    catalog,
                    config.environments,
                    tiers,
                    upstream.is_some(),
                )
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
            api_key: header_name("keys.header", config.key_header)?,
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
    environments: &BTreeMap<String, String>,
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
        if !environments.contains_key(e) {
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
    let label: Arc<str> = if methods.is_empty() {
        r.path.as_str().into()
    } else {
        let names: Vec<&str> = methods.iter().map(Method::as_str).collect();
        format!("{} {}", names.join(","), r.path).into()
    };
    Ok(Route {
        index,
        pattern: r.path.clone(),
        label,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_paths_match_their_patterns_and_prefixes() {
        // The server's test checks its real own paths the same way.
        let api = [
            "/v1/health",
            "/v1/keys",
            "/v1/keys/{id}",
            "/v1/keys/{id}/rotate",
            "/v1/tenants/{id}/credits/ledger",
            "/openapi.json",
        ];
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
