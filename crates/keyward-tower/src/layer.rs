//! The layer: per request, the path rule, the route's rule, the
//! credential, the backend's decision, then the inner service with the
//! principal in the request's extensions (or the denial, rendered).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::ConnectInfo;
use http::{header, Request, Response, Uri};
use keyward_core::verdict::Denial;
use keyward_http::error::{render_now, ApiError};
use keyward_limits::RateState;
use keyward_verify::credential::{self, Presented};

use crate::backend::{Admitted, Backend, Demand, Refused};
use crate::principal::Style;
use crate::routes::{RouteTable, Rule};
use crate::Deployment;

/// Authenticates every request of the service it wraps (see the crate
/// docs). Cheap to clone.
#[derive(Clone)]
pub struct KeywardLayer {
    shared: Arc<Shared>,
}

struct Shared {
    deployment: Deployment,
    routes: RouteTable,
    backend: Arc<dyn Backend>,
    style: Style,
}

impl KeywardLayer {
    pub fn new(deployment: Deployment, routes: RouteTable, backend: Arc<dyn Backend>) -> Self {
        let style = Style(Arc::new(deployment.errors.clone()));
        KeywardLayer {
            shared: Arc::new(Shared {
                deployment,
                routes,
                backend,
                style,
            }),
        }
    }
}

impl<S> tower_layer::Layer<S> for KeywardLayer {
    type Service = KeywardService<S>;

    fn layer(&self, inner: S) -> KeywardService<S> {
        KeywardService {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service [`KeywardLayer`] makes. Answers `Response<axum::body::Body>`
/// (the inner service's body, boxed), so it fits axum, hyper and tonic.
#[derive(Clone)]
pub struct KeywardService<S> {
    inner: S,
    shared: Arc<Shared>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, B, ResBody> tower_service::Service<Request<B>> for KeywardService<S>
where
    S: tower_service::Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<axum::BoxError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // The clone that was made ready is the one that serves.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = Arc::clone(&self.shared);
        let step = match shared.prepare(&mut req) {
            Ok(step) => step,
            Err(refused) => return Box::pin(std::future::ready(Ok(shared.refusal(refused)))),
        };
        let Step::Check {
            presented,
            rule,
            client_ip,
        } = step
        else {
            req.extensions_mut().insert(shared.style.clone());
            return Box::pin(async move { inner.call(req).await.map(boxed) });
        };
        let demand = Demand {
            presented: &presented,
            client_ip,
            scopes: &rule.scopes,
            cost: rule.cost,
            credits: rule.credits,
        };
        if let Some(decided) = shared.backend.decide_now(&demand) {
            return match decided {
                Ok(admitted) => {
                    let rate = shared.admit(&mut req, admitted);
                    Box::pin(
                        async move { inner.call(req).await.map(|r| with_rate(boxed(r), rate)) },
                    )
                }
                Err(refused) => Box::pin(std::future::ready(Ok(shared.refusal(refused)))),
            };
        }
        Box::pin(async move {
            let demand = Demand {
                presented: &presented,
                client_ip,
                scopes: &rule.scopes,
                cost: rule.cost,
                credits: rule.credits,
            };
            match shared.backend.decide(demand).await {
                Ok(admitted) => {
                    let rate = shared.admit(&mut req, admitted);
                    inner.call(req).await.map(|r| with_rate(boxed(r), rate))
                }
                Err(refused) => Ok(shared.refusal(refused)),
            }
        })
    }
}

/// What a request needs after the checks that need no backend.
enum Step {
    /// An open route: passes as it is.
    Open,
    Check {
        presented: Presented,
        rule: Arc<Rule>,
        client_ip: Option<std::net::IpAddr>,
    },
}

impl Shared {
    /// The path rule, the route, the credential.
    fn prepare<B>(&self, req: &mut Request<B>) -> Result<Step, Refused> {
        let d = &self.deployment;
        // Routes are matched on the path in normal form, and the service
        // routes that same path: a path another spelling of a protected
        // route reaches it only through that route's rule.
        let normal = keyward_http::path::normalize(req.uri().path())
            .map_err(ApiError::InvalidPath)?
            .into_owned_if_changed();
        if let Some(path) = normal {
            let uri = with_path(req.uri(), &path).ok_or(ApiError::MalformedRequest(
                "the request target could not be rebuilt",
            ))?;
            *req.uri_mut() = uri;
        }
        let rule = Arc::clone(self.routes.rule(req.method(), req.uri().path()));
        let query = req.uri().query();
        if rule.open {
            // No key is checked here, and none may ride along either.
            credential::refuse_embedded_keys(req.headers(), query, &d.credentials)
                .map_err(ApiError::from)?;
            return Ok(Step::Open);
        }
        let presented = credential::extract_from(req.headers(), query, &d.credentials, &d.schemes)
            .map_err(ApiError::from)?
            .ok_or(ApiError::Denied(Denial::MissingCredentials))?;
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        let client_ip = credential::client_ip(peer, req.headers(), &d.trusted_proxies);
        // The handler never sees the secret.
        req.headers_mut().remove(header::AUTHORIZATION);
        req.headers_mut().remove(d.credentials.header.as_str());
        Ok(Step::Check {
            presented,
            rule,
            client_ip,
        })
    }

    fn admit<B>(&self, req: &mut Request<B>, admitted: Admitted) -> Option<RateState> {
        let ext = req.extensions_mut();
        ext.insert(admitted.principal);
        ext.insert(self.style.clone());
        admitted.rate
    }

    fn refusal(&self, refused: Refused) -> Response<Body> {
        with_rate(
            render_now(&self.deployment.errors, refused.error),
            refused.rate,
        )
    }
}

trait IntoOwnedIfChanged {
    fn into_owned_if_changed(self) -> Option<String>;
}

impl IntoOwnedIfChanged for std::borrow::Cow<'_, str> {
    fn into_owned_if_changed(self) -> Option<String> {
        match self {
            std::borrow::Cow::Borrowed(_) => None,
            std::borrow::Cow::Owned(s) => Some(s),
        }
    }
}

fn with_path(uri: &Uri, path: &str) -> Option<Uri> {
    let mut parts = uri.clone().into_parts();
    let target = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    parts.path_and_query = Some(target.parse().ok()?);
    Uri::from_parts(parts).ok()
}

fn boxed<ResBody>(res: Response<ResBody>) -> Response<Body>
where
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<axum::BoxError>,
{
    res.map(Body::new)
}

/// Adds the IETF `RateLimit-Policy` / `RateLimit` fields, as the gateway
/// does on every answer of a limited key.
fn with_rate(mut res: Response<Body>, rate: Option<RateState>) -> Response<Body> {
    if let Some(r) = rate {
        r.write_headers(res.headers_mut());
    }
    res
}
