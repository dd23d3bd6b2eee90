//! What the deployment decides that the checks need.

use std::collections::BTreeMap;

use keyward_core::scope::ScopeCatalog;
use keyward_core::secret::KeyFormat;
use keyward_store::Refill;

/// The deployment's decisions the management checks read: key formats and
/// environments, the scope catalog, the declared tiers (and their credit
/// refills), and validation limits. The server builds it from its settings.
#[derive(Debug, Clone)]
pub struct ManagePolicy {
    /// Key formats: the environments keys may be created in, and how
    /// secrets are generated.
    pub format: KeyFormat,
    /// The scopes keys may be given.
    pub catalog: ScopeCatalog,
    /// Declared tiers by name, each with its credit refill if any. Empty:
    /// any well-formed tier name is accepted.
    pub tiers: BTreeMap<String, Option<Refill>>,
    /// The refill of the default tier, for tenants without a tier.
    pub default_refill: Option<Refill>,
    /// `keys.metadata_max_bytes`: metadata of keys and tenants, as JSON.
    pub metadata_max_bytes: usize,
    /// How long an invitation link works, in milliseconds.
    pub invite_ttl_ms: i64,
    /// What a leak report does to a key (`[leaks]`).
    pub leaks: LeakPolicy,
}

/// What a leak report does to the key it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeakAction {
    /// Revoke the key at once: the next request with it is `revoked_api_key`.
    #[default]
    Revoke,
    /// Disable the key (`disabled_api_key`); it can be enabled again.
    Disable,
    /// Keep the key working; mark it leaked and alert.
    Flag,
}

impl LeakAction {
    pub fn as_str(self) -> &'static str {
        match self {
            LeakAction::Revoke => "revoke",
            LeakAction::Disable => "disable",
            LeakAction::Flag => "flag",
        }
    }
}

/// The leak policy: an action per environment, one for environments not
/// listed (root keys' environment is `root`), and per-tenant overrides by
/// environment.
#[derive(Debug, Clone, Default)]
pub struct LeakPolicy {
    pub environments: BTreeMap<String, LeakAction>,
    pub other_environments: LeakAction,
    pub tenants: BTreeMap<String, BTreeMap<String, LeakAction>>,
}

impl LeakPolicy {
    /// The action for a key of `tenant` in `environment`: the tenant's own
    /// setting for the environment, else the environment's, else the
    /// setting for other environments.
    pub fn action_for(&self, tenant: Option<&str>, environment: &str) -> LeakAction {
        tenant
            .and_then(|t| self.tenants.get(t))
            .and_then(|m| m.get(environment))
            .or_else(|| self.environments.get(environment))
            .copied()
            .unwrap_or(self.other_environments)
    }
}

impl ManagePolicy {
    /// The refill a tenant with `tier` gets from its tier (or the default tier).
    pub fn refill_for_tenant(&self, tier: Option<&str>) -> Option<Refill> {
        match tier {
            Some(t) => self.tiers.get(t).copied().flatten(),
            None => self.default_refill,
        }
    }
}
