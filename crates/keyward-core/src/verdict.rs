//! The verdict of a verification: the checks of a key, in order, stopping
//! at the first failure:
//!
//! credential present → well-formed → known → not revoked/deleted → enabled →
//! not expired (or rotated past grace) → IP allowed → scopes → rate limit →
//! credits.
//!
//! The first three happen before and during lookup (the caller reports them
//! with [`Denial::MissingCredentials`] and [`Denial::InvalidApiKey`]);
//! [`evaluate`] runs the key's own policy; rate limits and credits are spent
//! by the caller only after [`evaluate`] passed, so a denied request never
//! costs anything.

use std::net::IpAddr;

use crate::allowlist::IpAllowlist;
use crate::clock::Timestamp;
use crate::scope::ScopeSet;

/// Why a request was refused. Each has a stable code and HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    MissingCredentials,
    /// Malformed or unknown; deliberately never says which.
    InvalidApiKey,
    Revoked,
    Disabled,
    Expired,
    IpNotAllowed,
    InsufficientScope {
        missing: Vec<String>,
    },
    RateLimited {
        retry_after_seconds: u64,
    },
    CreditsExhausted,
}

impl Denial {
    /// The stable snake_case code.
    pub fn code(&self) -> &'static str {
        match self {
            Denial::MissingCredentials => "missing_credentials",
            Denial::InvalidApiKey => "invalid_api_key",
            Denial::Revoked => "revoked_api_key",
            Denial::Disabled => "disabled_api_key",
            Denial::Expired => "expired_api_key",
            Denial::IpNotAllowed => "ip_not_allowed",
            Denial::InsufficientScope { .. } => "insufficient_scope",
            Denial::RateLimited { .. } => "rate_limited",
            Denial::CreditsExhausted => "credits_exhausted",
        }
    }

    /// The HTTP status the gateway and management API answer with.
    pub fn status(&self) -> u16 {
        match self {
            Denial::MissingCredentials
            | Denial::InvalidApiKey
            | Denial::Revoked
            | Denial::Disabled
            | Denial::Expired => 401,
            Denial::IpNotAllowed | Denial::InsufficientScope { .. } => 403,
            Denial::RateLimited { .. } => 429,
            Denial::CreditsExhausted => 402,
        }
    }

    /// A human sentence that says what to do.
    pub fn message(&self) -> String {
        match self {
            Denial::MissingCredentials => {
                // Where an HTTP response is made, the renderer adds how this
                // deployment takes keys.
                "No API key was presented.".into()
            }
            Denial::InvalidApiKey => "The API key is not valid.".into(),
            Denial::Revoked => "The API key has been revoked. Create a new key.".into(),
            Denial::Disabled => "The API key is disabled. Enable it or use another key.".into(),
            Denial::Expired => "The API key has expired. Create or rotate a key.".into(),
            Denial::IpNotAllowed => {
                "The client address is not in the API key's IP allowlist.".into()
            }
            Denial::InsufficientScope { missing } => {
                format!("API key is missing required scope: {}", missing.join(", "))
            }
            Denial::RateLimited {
                retry_after_seconds,
            } => {
                format!("Rate limit exceeded. Retry after {retry_after_seconds} seconds.")
            }
            Denial::CreditsExhausted => "Not enough credits left for this request.".into(),
        }
    }
}

/// The stored facts about a key that its policy depends on.
#[derive(Debug, Clone)]
pub struct KeyPolicy {
    /// Revoked or deleted.
    pub revoked: bool,
    pub enabled: bool,
    pub expires_at: Option<Timestamp>,
    /// Set when the key was rotated: the old secret works until then.
    pub grace_until: Option<Timestamp>,
    pub allowlist: IpAllowlist,
    pub scopes: ScopeSet,
}

/// What the request asks of the key.
#[derive(Debug, Clone, Copy)]
pub struct Demand<'a> {
    pub now: Timestamp,
    pub client_ip: Option<IpAddr>,
    pub required_scopes: &'a [String],
}

/// Runs the key's own checks in order (revoked → enabled → expired /
/// rotated past grace → IP → scopes).
pub fn evaluate(key: &KeyPolicy, demand: Demand<'_>) -> Result<(), Denial> {
    if key.revoked {
        return Err(Denial::Revoked);
    }
    if !key.enabled {
        return Err(Denial::Disabled);
    }
    let past = |deadline: Option<Timestamp>| deadline.is_some_and(|d| demand.now >= d);
    if past(key.expires_at) || past(key.grace_until) {
        return Err(Denial::Expired);
    }
    if !key.allowlist.allows(demand.client_ip) {
        return Err(Denial::IpNotAllowed);
    }
    let missing = key.scopes.missing(demand.required_scopes);
    if !missing.is_empty() {
        return Err(Denial::InsufficientScope {
            missing: missing.into_iter().map(str::to_owned).collect(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn good() -> KeyPolicy {
        KeyPolicy {
            revoked: false,
            enabled: true,
            expires_at: Some(Timestamp(10_000)),
            grace_until: None,
            allowlist: IpAllowlist::parse(&["10.0.0.0/8"]).unwrap(),
            scopes: ScopeSet::new(["vox:*".to_string()]),
        }
    }

    fn demand(now: i64, ip: &str, scopes: &'static [String]) -> Demand<'static> {
        Demand {
            now: Timestamp(now),
            client_ip: Some(ip.parse().unwrap()),
            required_scopes: scopes,
        }
    }

    #[test]
    fn passes_when_everything_holds() {
        assert_eq!(evaluate(&good(), demand(0, "10.1.1.1", &[])), Ok(()));
    }

    #[test]
    fn expiry_and_grace_are_deadlines() {
        assert_eq!(evaluate(&good(), demand(9_999, "10.1.1.1", &[])), Ok(()));
        assert_eq!(
            evaluate(&good(), demand(10_000, "10.1.1.1", &[])),
            Err(Denial::Expired)
        );
        let rotated = KeyPolicy {
            grace_until: Some(Timestamp(5_000)),
            ..good()
        };
        assert_eq!(evaluate(&rotated, demand(4_999, "10.1.1.1", &[])), Ok(()));
        assert_eq!(
            evaluate(&rotated, demand(5_000, "10.1.1.1", &[])),
            Err(Denial::Expired)
        );
    }

    #[test]
    fn first_failure_wins_in_spec_order() {
        let everything_wrong = KeyPolicy {
            revoked: true,
            enabled: false,
            expires_at: Some(Timestamp(0)),
            ..good()
        };
        let need = vec!["chat:read".to_string()];
        let d = Demand {
            now: Timestamp(1),
            client_ip: Some("192.0.2.1".parse().unwrap()),
            required_scopes: &need,
        };
        assert_eq!(evaluate(&everything_wrong, d), Err(Denial::Revoked));
        let k = KeyPolicy {
            revoked: false,
            ..everything_wrong
        };
        assert_eq!(evaluate(&k, d), Err(Denial::Disabled));
        let k = KeyPolicy { enabled: true, ..k };
        assert_eq!(evaluate(&k, d), Err(Denial::Expired));
        let k = KeyPolicy {
            expires_at: None,
            ..k
        };
        assert_eq!(evaluate(&k, d), Err(Denial::IpNotAllowed));
        let k = KeyPolicy {
            allowlist: IpAllowlist::default(),
            ..k
        };
        assert_eq!(
            evaluate(&k, d),
            Err(Denial::InsufficientScope {
                missing: need.clone()
            })
        );
    }

    #[test]
    fn codes_and_statuses_are_stable() {
        assert_eq!(Denial::InvalidApiKey.code(), "invalid_api_key");
        assert_eq!(Denial::InsufficientScope { missing: vec![] }.status(), 403);
        assert_eq!(
            Denial::RateLimited {
                retry_after_seconds: 1
            }
            .status(),
            429
        );
        assert_eq!(Denial::CreditsExhausted.status(), 402);
    }

    proptest! {
        /// Whatever the facts, a revoked key is always refused as revoked.
        #[test]
        fn revoked_always_wins(enabled: bool, now in 0i64..20_000, exp in proptest::option::of(0i64..20_000)) {
            let k = KeyPolicy { revoked: true, enabled, expires_at: exp.map(Timestamp), ..good() };
            prop_assert_eq!(evaluate(&k, demand(now, "192.0.2.1", &[])), Err(Denial::Revoked));
        }

        /// Time only ever moves a valid key towards expiry, never back.
        #[test]
        fn expiry_is_monotonic(t1 in 0i64..20_000, dt in 0i64..20_000) {
            let k = good();
            let early = evaluate(&k, demand(t1, "10.0.0.1", &[]));
            let late = evaluate(&k, demand(t1 + dt, "10.0.0.1", &[]));
            prop_assert!(early.is_err() <= late.is_err());
        }
    }
}
