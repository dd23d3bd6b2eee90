//! Creating operator root keys straight in the store: how a deployment gets
//! its first key (`keyward root-keys create`), before any API call is possible.

use keyward_core::clock::Clock;
use keyward_core::id::new_id;
use keyward_core::secret::{Entropy, KeyKind, KeySecret};
use keyward_store::{AuditEntry, KeyClass, KeyRecord, Store, StoreError};
use serde_json::json;

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
}

/// Creates a root key named `name` with `scopes` (default `keyward:*`) and
/// returns its record and the secret, which exists nowhere else.
pub async fn create_root_key(
    settings: &Settings,
    store: &dyn Store,
    clock: &dyn Clock,
    entropy: &dyn Entropy,
    name: &str,
    scopes: &[String],
) -> Result<(KeyRecord, KeySecret), BootstrapError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 128 || name.chars().any(char::is_control) {
        return Err(BootstrapError::Name);
    }
    let scopes = if scopes.is_empty() {
        vec!["keyward:*".to_owned()]
    } else {
        scopes.to_vec()
    };
    for s in &scopes {
        settings.catalog.check_grant(s)?;
    }
    let entropy_err = |e: &dyn std::fmt::Display| BootstrapError::Entropy(e.to_string());
    let secret = settings
        .format
        .generate(&KeyKind::Root, entropy)
        .map_err(|e| entropy_err(&e))?;
    let now = clock.now().0;
    let id = new_id("key", entropy).map_err(|e| entropy_err(&e))?;
    let issued = KeyRecord::issued(
        id,
        KeyClass::Root,
        "root".into(),
        secret.hash().to_hex(),
        secret.start(),
        "cli".into(),
        now,
    );
    let record = KeyRecord {
        name: name.to_owned(),
        scopes,
        ..issued
    };
    let audit = AuditEntry {
        id: new_id("evt", entropy).map_err(|e| entropy_err(&e))?,
        at: now,
        actor: "cli".into(),
        actor_ip: None,
        tenant_id: None,
        action: "root_key.created".into(),
        target: record.id.clone(),
        details: json!({ "name": record.name, "scopes": record.scopes }),
    };
    store
        .create_key(&record, &audit)
        .await
        .map_err(|e| match e {
            StoreError::NameTaken => BootstrapError::NameTaken(record.name.clone()),
            other => BootstrapError::Store(other),
        })?;
    Ok((record, secret))
}
