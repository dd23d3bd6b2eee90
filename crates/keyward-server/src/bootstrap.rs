//! Creating operator root keys straight in the store: how a deployment gets
//! its first key (`keyward root-keys create`), before any API call is
//! possible. The host acts through the management service like everyone
//! else ([`host_service`], `Actor::host("cli")`), without a cache to drop.

use std::sync::Arc;

use keyward_core::clock::Clock;
use keyward_core::secret::{Entropy, KeySecret};
use keyward_manage::{Actor, ManageError, ManageService, NoInvalidation};
use keyward_store::{KeyRecord, Store, StoreError};

use crate::config::Settings;

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("--name must be 1 to 128 printable characters")]
    Name,
    #[error(transparent)]
    Scope(#[from] keyward_core::scope::ScopeError),
    #[error("a live root key named {0:?} already exists")]
    NameTaken(String),
    #[error(transparent)]
    Store(StoreError),
    #[error("key generation failed: {0}")]
    Entropy(String),
    #[error("{0}")]
    Manage(ManageError),
}

/// The management service for the host's direct-store commands (the CLI):
/// no node's cache to invalidate.
pub fn host_service(
    settings: &Settings,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
) -> ManageService {
    ManageService::new(
        store,
        clock,
        entropy,
        Arc::new(NoInvalidation),
        // Every command compiled the policy when it loaded its settings
        // (`Policy::compile`), so the tiers compile here too.
        crate::app::manage_policy(
            settings,
            &keyward_limits::Tiers::compile(&settings.config.limits).unwrap_or_default(),
        ),
    )
}

/// Creates a root key named `name` with `scopes` (default `keyward:*`) and
/// returns its record and the secret, which exists nowhere else.
pub async fn create_root_key(
    settings: &Settings,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
    name: &str,
    scopes: &[String],
) -> Result<(KeyRecord, KeySecret), BootstrapError> {
    // The CLI's own words for what the service refuses too.
    let trimmed = name.trim();
    if trimmed.is_empty() || trimmed.chars().count() > 128 || trimmed.chars().any(char::is_control)
    {
        return Err(BootstrapError::Name);
    }
    for s in scopes {
        settings.catalog.check_grant(s)?;
    }
    let manage = host_service(settings, store, clock, entropy);
    let issued = manage
        .create_root_key(&Actor::host("cli"), trimmed, scopes)
        .await
        .map_err(|e| match e {
            ManageError::NameTaken => BootstrapError::NameTaken(trimmed.to_owned()),
            ManageError::Internal => BootstrapError::Entropy("no entropy".into()),
            other => BootstrapError::Manage(other),
        })?;
    Ok((issued.record, issued.secret))
}
