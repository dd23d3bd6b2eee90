//! What a management change does to this node's key cache.

use std::sync::Arc;

use keyward_api::changes::ChangeSignal;
use keyward_core::secret::KeyHash;
use keyward_manage::{ChangeEvent, Invalidator};

use keyward_verify::verifier::Verifier;

/// Drops what a committed change makes stale from this node's cache: the
/// changed key's entry (update, revoke, rotate: the old key, delete), and
/// everything on a tenant change (cached principals carry the tenant's name).
/// Then it raises the change signal, so the change feed's long polls read
/// the log (the change is committed by now).
pub(crate) struct LocalInvalidator {
    verifier: Arc<Verifier>,
    signal: Arc<ChangeSignal>,
}

impl LocalInvalidator {
    pub(crate) fn new(verifier: Arc<Verifier>, signal: Arc<ChangeSignal>) -> LocalInvalidator {
        LocalInvalidator { verifier, signal }
    }
}

/// Drops the key whose secret hashes to `hash` (hex) from this node's cache
/// (for changes made here and those heard from other nodes alike).
pub(crate) fn drop_key(verifier: &Verifier, hash: &str) {
    if let Some(h) = KeyHash::from_hex(hash) {
        verifier.cache().invalidate(&h);
    }
}

impl Invalidator for LocalInvalidator {
    fn changed(&self, event: &ChangeEvent) {
        match event {
            ChangeEvent::KeyUpdated { hash, .. }
            | ChangeEvent::KeyRevoked { hash, .. }
            | ChangeEvent::KeyDeleted { hash, .. }
            | ChangeEvent::KeyRotated { old_hash: hash, .. } => drop_key(&self.verifier, hash),
            ChangeEvent::TenantUpdated { .. } => self.verifier.cache().clear(),
            _ => return,
        }
        self.signal.raise();
    }
}
