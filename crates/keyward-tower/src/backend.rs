//! What the layer asks of a backend: is this presented key good for this
//! request, and what does it spend?

use std::net::IpAddr;

use keyward_http::error::ApiError;
use keyward_limits::RateState;
use keyward_verify::credential::Presented;

use crate::Principal;

/// One request's demand on a key.
#[derive(Debug, Clone, Copy)]
pub struct Demand<'a> {
    pub presented: &'a Presented,
    /// The client address (behind trusted proxies: `X-Forwarded-For`).
    pub client_ip: Option<IpAddr>,
    /// Scopes the route needs; all must be held.
    pub scopes: &'a [String],
    /// Rate-limit tokens the request costs.
    pub cost: u64,
    /// Credits it costs, spent from the key's tenant.
    pub credits: i64,
}

/// A request let in: who it is, and the rate-limit state for the answer's
/// `RateLimit` fields.
#[derive(Debug, Clone)]
pub struct Admitted {
    pub principal: Principal,
    pub rate: Option<RateState>,
}

/// A request refused: the error it is answered with, and the rate-limit
/// state when one was read (a 429 carries it).
#[derive(Debug)]
pub struct Refused {
    pub error: ApiError,
    pub rate: Option<RateState>,
}

impl From<ApiError> for Refused {
    fn from(error: ApiError) -> Refused {
        Refused { error, rate: None }
    }
}

/// Decides requests: the checks of `keyward_core::verdict::evaluate`, then
/// the rate limit, then credits, in that order, spending only when every
/// earlier check passed.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The decision, when it can be made without waiting (a cache hit with
    /// an in-memory limiter and no credits): saves boxing a future per
    /// request. `None` has spent nothing; the layer then calls
    /// [`Backend::decide`].
    fn decide_now(&self, _demand: &Demand<'_>) -> Option<Result<Admitted, Refused>> {
        None
    }

    async fn decide(&self, demand: Demand<'_>) -> Result<Admitted, Refused>;
}
