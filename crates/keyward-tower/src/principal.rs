//! The principal a handler sees, and the axum extractors that read it:
//! [`Principal`] (any authenticated request) and [`RequireScopes`] (a
//! per-handler scope check, for services that prefer it to the route
//! table).

use std::marker::PhantomData;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use keyward_core::scope::ScopeSet;
use keyward_core::verdict::Denial;
use keyward_http::error::{render_now, ApiError, ErrorsConfig};

/// Who a request comes from: the key's principal as the verify API reports
/// it (`keyward_wire::Principal`: key id and name, tenant, environment,
/// scopes, owner, tier, metadata), with its scopes ready for checks.
/// Cheap to clone (one reference count): the remote backend hands out the
/// one it cached.
#[derive(Debug, Clone)]
pub struct Principal(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    view: keyward_wire::Principal,
    scopes: ScopeSet,
}

impl Principal {
    pub fn new(view: keyward_wire::Principal) -> Principal {
        let scopes = ScopeSet::new(view.scopes.iter().cloned());
        Principal(Arc::new(Inner { view, scopes }))
    }

    /// Whether the key holds `scope` (a grant `calls:*` covers `calls:read`).
    pub fn allows(&self, scope: &str) -> bool {
        self.0.scopes.allows(scope)
    }

    /// The scopes of `required` the key does not hold.
    pub fn missing<'a>(&self, required: &'a [&'a str]) -> Vec<&'a str> {
        required
            .iter()
            .copied()
            .filter(|s| !self.allows(s))
            .collect()
    }

    pub fn view(&self) -> &keyward_wire::Principal {
        &self.0.view
    }
}

impl std::ops::Deref for Principal {
    type Target = keyward_wire::Principal;

    fn deref(&self) -> &keyward_wire::Principal {
        &self.0.view
    }
}

/// The deployment's error style, which the layer puts beside the
/// principal so extractors answer in it.
#[derive(Debug, Clone)]
pub(crate) struct Style(pub(crate) Arc<ErrorsConfig>);

fn refuse(parts: &Parts, e: ApiError) -> Response {
    match parts.extensions.get::<Style>() {
        Some(Style(errors)) => render_now(errors, e),
        None => render_now(&ErrorsConfig::default(), e),
    }
}

/// The request's principal. Without one (the route is open in the table,
/// or the layer is missing) the request is answered 401
/// `missing_credentials`.
impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Principal>() {
            Some(p) => Ok(p.clone()),
            None => Err(refuse(parts, ApiError::Denied(Denial::MissingCredentials))),
        }
    }
}

/// A const list of scopes, for [`RequireScopes`]; [`crate::scopes!`]
/// declares one.
pub trait ScopeList: Send + Sync + 'static {
    const SCOPES: &'static [&'static str];
}

/// Declares a [`ScopeList`]: `keyward_tower::scopes!(CallsRead = ["calls:read"]);`
#[macro_export]
macro_rules! scopes {
    ($vis:vis $name:ident = [$($scope:literal),* $(,)?]) => {
        $vis struct $name;
        impl $crate::ScopeList for $name {
            const SCOPES: &'static [&'static str] = &[$($scope),*];
        }
    };
}

/// The principal, if its key holds every scope of `L`; otherwise the
/// request is answered 403 `insufficient_scope` with `missing_scopes`, as
/// the gateway answers it.
pub struct RequireScopes<L: ScopeList>(pub Principal, PhantomData<L>);

impl<L: ScopeList> std::ops::Deref for RequireScopes<L> {
    type Target = Principal;

    fn deref(&self) -> &Principal {
        &self.0
    }
}

impl<S: Send + Sync, L: ScopeList> FromRequestParts<S> for RequireScopes<L> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let principal = Principal::from_request_parts(parts, state).await?;
        let missing = principal.missing(L::SCOPES);
        if missing.is_empty() {
            return Ok(RequireScopes(principal, PhantomData));
        }
        let missing = missing.into_iter().map(str::to_owned).collect();
        Err(refuse(
            parts,
            ApiError::Denied(Denial::InsufficientScope { missing }),
        ))
    }
}

impl IntoResponse for Principal {
    fn into_response(self) -> Response {
        axum::Json(self.view().clone()).into_response()
    }
}
