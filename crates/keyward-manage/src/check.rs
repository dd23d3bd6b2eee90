//! Field checks shared by the actions. Each collects every problem at once.

use keyward_core::allowlist::IpAllowlist;
use keyward_core::clock::Timestamp;
use keyward_core::scope::{self, GrantRefusal, ScopeSet};
use keyward_store::Refill;
use keyward_store::{RateLimitOverride, Tenant};
use serde_json::Value;

use crate::actor::Actor;
use crate::error::{FieldError, ManageError};
use crate::policy::ManagePolicy;
use crate::service::RateLimitInput;

pub const MAX_KEY_NAME: usize = 128;
pub const MAX_TENANT_NAME: usize = 200;
pub const MAX_ALLOWLIST: usize = 100;
pub const MAX_SCOPES: usize = 100;
pub const MAX_GRANTABLE: usize = 100;
pub const MAX_REASON: usize = 500;
/// Thirty days: longer overlaps defeat the point of rotating.
pub const MAX_GRACE_SECONDS: u64 = 30 * 24 * 3600;

/// The tier name rule (the same as `[limits]` tier names).
pub(crate) fn valid_tier_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

pub(crate) struct Checks<'a> {
    pub(crate) policy: &'a ManagePolicy,
    pub(crate) actor: &'a Actor,
    pub(crate) now: Timestamp,
    pub(crate) errors: Vec<FieldError>,
}

impl Checks<'_> {
    pub(crate) fn push(
        &mut self,
        field: impl Into<String>,
        code: &'static str,
        message: impl Into<String>,
    ) {
        self.errors.push(FieldError::new(field, code, message));
    }

    pub(crate) fn key_name(&mut self, name: &str) -> String {
        let n = name.trim();
        if n.is_empty() || n.chars().count() > MAX_KEY_NAME || n.chars().any(char::is_control) {
            self.push(
                "name",
                "invalid",
                format!("name must be 1 to {MAX_KEY_NAME} printable characters"),
            );
        }
        n.to_owned()
    }

    pub(crate) fn tenant_name(&mut self, name: &str) {
        if name.trim().is_empty()
            || name.chars().count() > MAX_TENANT_NAME
            || name.chars().any(char::is_control)
        {
            self.push(
                "name",
                "invalid",
                format!("name must be 1 to {MAX_TENANT_NAME} printable characters"),
            );
        }
    }

    pub(crate) fn environment(&mut self, environment: &str) {
        let known: Vec<&str> = self.policy.format.environments().collect();
        if environment.is_empty() {
            // Absent from the body: the API reads it as empty, so that its
            // absence is a field error like any other, not a parse error.
            self.push(
                "environment",
                "required",
                format!("environment is required: one of {}", known.join(", ")),
            );
        } else if !known.contains(&environment) {
            self.push(
                "environment",
                "unknown_environment",
                format!("environment must be one of: {}", known.join(", ")),
            );
        }
    }

    /// Scopes in the catalog; sorted and without repeats.
    pub(crate) fn scopes(&mut self, scopes: &[String]) -> Vec<String> {
        if scopes.len() > MAX_SCOPES {
            self.push("scopes", "too_many", format!("at most {MAX_SCOPES} scopes"));
            return Vec::new();
        }
        self.catalog_entries("scopes", scopes);
        let mut out = scopes.to_vec();
        out.sort();
        out.dedup();
        out
    }

    fn catalog_entries(&mut self, field: &str, scopes: &[String]) {
        for (i, s) in scopes.iter().enumerate() {
            match self.policy.catalog.check_grant(s) {
                Err(scope::ScopeError::Undeclared(_)) => self.push(
                    format!("{field}[{i}]"),
                    "unknown_scope",
                    format!("{s:?} is not in this deployment's scope catalog"),
                ),
                Err(e) => self.push(format!("{field}[{i}]"), "invalid", e.to_string()),
                // Whether the actor may grant it is `check_grants`, once
                // the scopes are known to be valid.
                Ok(()) => {}
            }
        }
    }

    /// A tenant's ceiling of grantable scopes: only operators set it (it is
    /// the customer's plan), and every entry must be grantable in this
    /// deployment. Sorted and without repeats.
    pub(crate) fn grantable(&mut self, scopes: &[String]) -> Vec<String> {
        if !self.actor.is_operator() {
            self.push(
                "grantable_scopes",
                "not_grantable",
                "only operators set a tenant's grantable scopes",
            );
            return Vec::new();
        }
        if scopes.len() > MAX_GRANTABLE {
            self.push(
                "grantable_scopes",
                "too_many",
                format!("at most {MAX_GRANTABLE} scopes"),
            );
            return Vec::new();
        }
        self.catalog_entries("grantable_scopes", scopes);
        let mut out = scopes.to_vec();
        out.sort();
        out.dedup();
        out
    }

    pub(crate) fn allowlist(&mut self, entries: &[String]) -> Vec<String> {
        if entries.len() > MAX_ALLOWLIST {
            self.push(
                "ip_allowlist",
                "too_many",
                format!("at most {MAX_ALLOWLIST} entries"),
            );
            return Vec::new();
        }
        let mut out = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            match IpAllowlist::parse(std::slice::from_ref(e)) {
                Ok(l) => out.extend(l.entries()),
                Err(err) => self.push(
                    format!("ip_allowlist[{i}]"),
                    "invalid_cidr",
                    err.to_string(),
                ),
            }
        }
        out
    }

    pub(crate) fn sub_tenants(&mut self, ids: &[String]) -> Vec<String> {
        if ids.len() > MAX_ALLOWLIST {
            self.push(
                "sub_tenants",
                "too_many",
                format!("at most {MAX_ALLOWLIST} entries"),
            );
        }
        for (i, t) in ids.iter().enumerate() {
            let ok = !t.is_empty()
                && t.len() <= 64
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
            if !ok {
                self.push(
                    format!("sub_tenants[{i}]"),
                    "invalid",
                    "sub-tenant ids are 1 to 64 characters of A-Z, a-z, 0-9, _, - and .",
                );
            }
        }
        let mut out = ids.to_vec();
        out.sort();
        out.dedup();
        out
    }

    pub(crate) fn expiry(&mut self, at: &str) -> Option<i64> {
        match Timestamp::parse_rfc3339(at) {
            Ok(t) if t <= self.now => {
                self.push("expires_at", "in_past", "expires_at must be in the future");
                None
            }
            Ok(t) => Some(t.0),
            Err(e) => {
                self.push("expires_at", "invalid", e.to_string());
                None
            }
        }
    }

    pub(crate) fn metadata(&mut self, m: &Value) {
        let max = self.policy.metadata_max_bytes;
        if !m.is_object() {
            self.push("metadata", "invalid", "metadata must be a JSON object");
        } else if m.to_string().len() > max {
            self.push(
                "metadata",
                "too_large",
                format!("metadata must be at most {max} bytes as JSON"),
            );
        }
    }

    /// A tier name given to a key or tenant: only operators set tiers (they
    /// decide what a customer pays for), and when the deployment declares
    /// tiers the name must be one of them.
    pub(crate) fn tier(&mut self, t: &str) {
        if !self.actor.is_operator() {
            self.push("tier", "not_grantable", "only operator root keys set tiers");
        } else if !valid_tier_name(t) {
            self.push(
                "tier",
                "invalid",
                "tier must be 1 to 64 characters of a-z, 0-9, _ and -",
            );
        } else if !self.policy.tiers.is_empty() && !self.policy.tiers.contains_key(t) {
            let known: Vec<&str> = self.policy.tiers.keys().map(String::as_str).collect();
            self.push(
                "tier",
                "unknown_tier",
                format!("tier must be one of: {}", known.join(", ")),
            );
        }
    }

    pub(crate) fn rate_limit(&mut self, r: &RateLimitInput) -> Option<RateLimitOverride> {
        if !self.actor.is_operator() {
            self.push(
                "rate_limit",
                "not_grantable",
                "only operator root keys set a key's own rate limit",
            );
            return None;
        }
        let burst = r.burst.unwrap_or(r.limit);
        match keyward_core::ratelimit::RatePolicy::new(
            "key",
            r.limit,
            r.window_seconds.saturating_mul(1000),
            burst,
        ) {
            Ok(_) => Some(RateLimitOverride {
                limit: r.limit,
                window_ms: r.window_seconds.saturating_mul(1000),
                burst,
            }),
            Err(e) => {
                self.push("rate_limit", "invalid", e.to_string());
                None
            }
        }
    }

    pub(crate) fn text(&mut self, field: &'static str, v: &str, max: usize) {
        if v.chars().count() > max || v.chars().any(char::is_control) {
            self.push(
                field,
                "invalid",
                format!("{field} must be at most {max} printable characters"),
            );
        }
    }

    pub(crate) fn credit_cap(&mut self, c: i64) {
        if c < 0 {
            self.push(
                "credit_cap",
                "out_of_range",
                "credit_cap must not be negative",
            );
        }
    }

    pub(crate) fn finish(self) -> Result<(), ManageError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ManageError::Validation(self.errors))
        }
    }
}

/// No privilege escalation, for every way in: `requested` scopes for a key
/// of `tenant` must be ones `actor` may grant ([`scope::refused_grants`]:
/// operators any; a tenant key only scopes it holds; a console member
/// keyward's scopes only as their role holds them; all but operators within
/// the tenant's `grantable_scopes`). Scopes in `kept` (the key's current
/// ones) are not new grants. Otherwise [`ManageError::ScopeNotGrantable`]
/// naming the scopes and why.
pub(crate) fn check_grants(
    actor: &Actor,
    tenant: &Tenant,
    kept: &[String],
    requested: &[String],
) -> Result<(), ManageError> {
    let ceiling = tenant
        .grantable_scopes
        .as_ref()
        .map(|g| ScopeSet::new(g.iter().cloned()));
    let kept = ScopeSet::new(kept.iter().cloned());
    let refused = scope::refused_grants(actor.grantor(), ceiling.as_ref(), &kept, requested);
    if refused.is_empty() {
        return Ok(());
    }
    let listed = |why: GrantRefusal| {
        let v: Vec<String> = refused
            .iter()
            .filter(|(_, r)| *r == why)
            .map(|(s, _)| format!("`{s}`"))
            .collect();
        (v.join(", "), v.len())
    };
    let mut detail = Vec::new();
    let (not_held, _) = listed(GrantRefusal::NotHeld);
    if !not_held.is_empty() {
        detail.push(if actor.is_member() {
            format!(
                "Your role in this tenant may not grant {not_held}: of keyward's own scopes, \
                 a key can be given only those your role holds."
            )
        } else {
            format!(
                "This API key may not grant {not_held}: a key can give another key only \
                 scopes it holds itself."
            )
        });
    }
    let (outside, n) = listed(GrantRefusal::OutsideCeiling);
    if n > 0 {
        let (is, it) = if n == 1 {
            ("is", "it")
        } else {
            ("are", "them")
        };
        detail.push(format!(
            "{outside} {is} outside the scopes keys of tenant {} may be given (its grantable_scopes); \
             an operator can grant {it} or raise the tenant's ceiling.",
            tenant.id
        ));
    }
    Err(ManageError::ScopeNotGrantable {
        scopes: refused.iter().map(|(s, _)| (*s).to_owned()).collect(),
        detail: detail.join(" "),
    })
}

/// Whether `actor` may give a new key `scope` in `tenant` (for offering
/// only grantable scopes).
pub(crate) fn may_grant(actor: &Actor, tenant: &Tenant, scope: &str) -> bool {
    let ceiling = tenant
        .grantable_scopes
        .as_ref()
        .map(|g| ScopeSet::new(g.iter().cloned()));
    scope::refused_grants(
        actor.grantor(),
        ceiling.as_ref(),
        &ScopeSet::default(),
        &[scope.to_owned()],
    )
    .is_empty()
}

/// A refill is valid when it adds nothing negative.
pub(crate) fn refill(r: &Refill) -> Result<(), ManageError> {
    if r.amount < 0 {
        return Err(ManageError::field(
            "amount",
            "out_of_range",
            "amount must not be negative",
        ));
    }
    Ok(())
}
