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

pin_project_lite::pin_project! {
    /// The answer of [`KeywardService`]: decided without waiting (the
    /// inner service's future, or a refusal) costs no allocation; a
    /// decision that waits on the backend is boxed.
    #[project = KeywardFutureProj]
    pub enum KeywardFuture<F, E> {
        /// Admitted (or open): the inner service answers.
        Inner { #[pin] inner: F, rate: Option<RateState> },
        /// Refused before the inner service was called.
        Refused { response: Option<Response<Body>> },
        /// The backend had to wait.
        Waiting { #[pin] future: BoxFuture<Result<Response<Body>, E>> },
    }
}

impl<F, ResBody, E> Future for KeywardFuture<F, E>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<axum::BoxError>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            KeywardFutureProj::Inner { inner, rate } => inner
                .poll(cx)
                .map(|r| r.map(|res| with_rate(boxed(res), rate.take()))),
            KeywardFutureProj::Refused { response } => match response.take() {
                Some(r) => Poll::Ready(Ok(r)),
                // Polled again after it answered: a caller bug; answer
                // something rather than panic.
                None => Poll::Ready(Ok(Response::new(Body::empty()))),
            },
            KeywardFutureProj::Waiting { future } => future.poll(cx),
        }
    }
}

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
    type Future = KeywardFuture<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let shared = &self.shared;
        let refused = |refused| KeywardFuture::Refused {
            response: Some(shared.refusal(refused)),
        };
        let step = match shared.prepare(&mut req) {
            Ok(step) => step,
            Err(r) => return refused(r),
        };
        let Step::Check {
            presented,
            rule,
            client_ip,
        } = step
        else {
            req.extensions_mut().insert(shared.style.clone());
            return KeywardFuture::Inner {
                inner: self.inner.call(req),
                rate: None,
            };
        };
        let demand = Demand {
            presented: &presented,
            client_ip,
            scopes: &rule.scopes,
            cost: rule.cost,
            credits: rule.credits,
        };
        if let Some(decided) = shared.backend.decide_now(&demand) {
            // Decided now: the service made ready is called now, no clone.
            return match decided {
                Ok(admitted) => {
                    let rate = shared.admit(&mut req, admitted);
                    KeywardFuture::Inner {
                        inner: self.inner.call(req),
                        rate,
                    }
                }
                Err(r) => refused(r),
            };
        }
        // The clone that was made ready is the one that serves, later.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = Arc::clone(&self.shared);
        KeywardFuture::Waiting {
            future: Box::pin(async move {
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
            }),
        }
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

#[cfg(test)]
mod tests {
    //! The checks the layer makes before any backend is asked: the path
    //! rule, open routes, and credentials that are missing, broken or
    //! misplaced. The backend here admits every key it is asked about and
    //! counts the asks, so a refusal that reached it shows.

    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::routing::get;
    use tower_layer::Layer;
    use tower_service::Service;

    use super::*;
    use crate::{DeploymentConfig, Principal};

    #[derive(Default)]
    struct Admitting(AtomicUsize);

    #[async_trait::async_trait]
    impl Backend for Admitting {
        async fn decide(&self, _: Demand<'_>) -> Result<Admitted, Refused> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(Admitted {
                principal: Principal::new(keyward_wire::Principal {
                    key_id: "key_1".into(),
                    key_name: "k".into(),
                    start: "kw_test_abcd".into(),
                    kind: "tenant".into(),
                    tenant_id: None,
                    tenant_name: None,
                    environment: "test".into(),
                    scopes: vec![],
                    owner: None,
                    tier: None,
                    expires_at: None,
                    metadata: serde_json::json!({}),
                }),
                rate: None,
            })
        }
    }

    async fn send(
        backend: &Arc<Admitting>,
        target: &str,
        headers: &[(&str, &str)],
    ) -> (u16, serde_json::Value, Option<String>) {
        let deployment = Deployment::new(DeploymentConfig::default()).unwrap();
        let routes = RouteTable::new()
            .route(http::Method::GET, "/open", Rule::open())
            .unwrap();
        let app = axum::Router::new()
            .route("/open", get(|| async { "open" }))
            .route(
                "/v1/items",
                get(|req: Request<Body>| async move {
                    // The handler never sees the credential.
                    assert!(req.headers().get("authorization").is_none());
                    assert!(req.headers().get("x-api-key").is_none());
                    req.uri().path().to_owned()
                }),
            );
        let mut svc =
            KeywardLayer::new(deployment, routes, Arc::clone(backend) as Arc<dyn Backend>)
                .layer(app);
        let mut req = Request::builder().uri(target);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = svc.call(req.body(Body::empty()).unwrap()).await.unwrap();
        let status = res.status().as_u16();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        (status, json, (status == 200).then_some(text))
    }

    fn key() -> String {
        let format = Deployment::new(DeploymentConfig::default())
            .unwrap()
            .credentials
            .format;
        format
            .generate(
                &keyward_core::secret::KeyKind::Environment("test".into()),
                &keyward_core::secret::OsEntropy,
            )
            .unwrap()
            .expose()
            .to_owned()
    }

    #[tokio::test]
    async fn misplaced_missing_and_broken_credentials_never_reach_the_backend() {
        let backend = Arc::new(Admitting::default());
        let key = key();
        let bearer = format!("Bearer {key}");
        type Case<'a> = (String, Vec<(&'a str, &'a str)>, u16, &'a str);
        let cases: Vec<Case<'_>> = vec![
            ("/v1/items".into(), vec![], 401, "missing_credentials"),
            (
                format!("/v1/items?api_key={key}"),
                vec![],
                400,
                "credentials_misplaced",
            ),
            (
                format!("/v1/items?q={key}"),
                vec![("authorization", bearer.as_str())],
                400,
                "credentials_misplaced",
            ),
            (
                "/v1/items".into(),
                vec![("authorization", bearer.as_str()), ("cookie", "token=abc")],
                400,
                "credentials_misplaced",
            ),
            (
                format!("/open?x={key}"),
                vec![],
                400,
                "credentials_misplaced",
            ),
            (
                "/v1/items".into(),
                vec![("authorization", "Basic !!!")],
                401,
                "invalid_api_key",
            ),
            (
                "/v1/items".into(),
                vec![("authorization", "Digest abc")],
                401,
                "invalid_api_key",
            ),
            ("/v1/%2e%2e%2fx".into(), vec![], 400, "invalid_path"),
        ];
        for (target, headers, status, code) in cases {
            let (s, body, _) = send(&backend, &target, &headers).await;
            assert_eq!((s, body["code"].as_str()), (status, Some(code)), "{target}");
        }
        assert_eq!(backend.0.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn open_routes_pass_and_keys_in_either_header_are_checked_on_the_normal_path() {
        let backend = Arc::new(Admitting::default());
        let (s, _, text) = send(&backend, "/open", &[]).await;
        assert_eq!((s, text.as_deref()), (200, Some("open")));
        assert_eq!(backend.0.load(Ordering::SeqCst), 0);
        let key = key();
        let bearer = format!("Bearer {key}");
        for header in [("authorization", bearer.as_str()), ("x-api-key", &key)] {
            let (s, _, text) = send(&backend, "/v1/./items", &[header]).await;
            assert_eq!((s, text.as_deref()), (200, Some("/v1/items")));
        }
        assert_eq!(backend.0.load(Ordering::SeqCst), 2);
    }
}
