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
