//! [`ManageService`]: every management action, checked, committed with its
//! audit entry, and announced to the [`Invalidator`].

mod alerts;
mod credits;
mod keys;
mod leaks;
pub(crate) mod people;
mod tenants;
mod usage;
mod webhooks;

use std::sync::{Arc, RwLock};

use keyward_core::clock::{Clock, Timestamp};
use keyward_core::id::new_id;
use keyward_core::secret::{Entropy, KeySecret};
use keyward_store::{
    AuditEntry, AuditEvent, AuditFilter, KeyRecord, NewEvent, Page, PageRequest, Store,
};
use serde_json::Value;

use crate::actor::Actor;
use crate::error::ManageError;
use crate::event::{ChangeEvent, Invalidator};
use crate::policy::ManagePolicy;

pub use alerts::{error_rate, spike, AlertPolicy, AlertRun, Spike};
pub use credits::{CreditChangeInput, Credits};
pub use keys::{KeyChanges, KeyQuery, NewKey, RateLimitInput, Revocation};
pub use leaks::{
    LeakInput, LeakVerdict, LeakedToken, Reporter, MAX_CHECK_HASHES, MAX_LEAK_REPORTS,
};
pub use tenants::{NewTenant, TenantChanges};
pub use usage::{
    GroupPaging, KeyAddresses, KeyUsage, SeenAddress, TenantUsage, UsageCounts, UsageWindow,
    MAX_BUCKETS, UNFAMILIAR_MS,
};
pub use webhooks::{
    AlertQuery, DeliveryLog, EndpointChanges, EndpointWithSecret, NewEndpoint, UpstreamEvent,
    WebhookSettings, MAX_DESCRIPTION, MAX_EVENT_DATA, RESERVED_PREFIXES,
};

/// The management service: one per server (or CLI command).
pub struct ManageService {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
    invalidator: Arc<dyn Invalidator>,
    policy: RwLock<Arc<ManagePolicy>>,
    /// `None` while webhooks are off.
    webhooks: RwLock<Option<Arc<WebhookSettings>>>,
}

/// A key just issued (created, rotated, or a root key): its record and the
/// secret, which exists nowhere else and is shown once.
pub struct IssuedKey {
    pub record: KeyRecord,
    pub secret: KeySecret,
    /// When it was issued.
    pub at: Timestamp,
}

impl std::fmt::Debug for IssuedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedKey")
            .field("record", &self.record.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Where a page starts: the first page, after a cursor's sequence number,
/// or a cursor that did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    Start,
    Before(i64),
    Invalid,
}

/// Cursor pagination: `limit` 1 to 100 (default 20).
#[derive(Debug, Clone, Copy)]
pub struct Paging {
    pub limit: Option<u32>,
    pub cursor: Cursor,
}

impl Paging {
    pub(crate) fn request(&self) -> Result<PageRequest, ManageError> {
        let limit = self.limit.unwrap_or(20);
        if !(1..=100).contains(&limit) {
            return Err(ManageError::field(
                "limit",
                "out_of_range",
                "limit must be between 1 and 100",
            ));
        }
        let before = match self.cursor {
            Cursor::Start => None,
            Cursor::Before(s) => Some(s),
            Cursor::Invalid => return Err(ManageError::InvalidCursor),
        };
        Ok(PageRequest { limit, before })
    }
}

/// Which audit events to list.
#[derive(Debug, Clone)]
pub struct AuditQuery {
    /// Operators may filter by tenant; others always see their own.
    pub tenant_id: Option<String>,
    pub paging: Paging,
}

impl ManageService {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
        invalidator: Arc<dyn Invalidator>,
        policy: ManagePolicy,
    ) -> ManageService {
        ManageService {
            store,
            clock,
            entropy,
            invalidator,
            policy: RwLock::new(Arc::new(policy)),
            webhooks: RwLock::new(None),
        }
    }

    /// Swaps the deployment policy (on a configuration reload).
    pub fn set_policy(&self, policy: ManagePolicy) {
        let mut p = self.policy.write().unwrap_or_else(|e| e.into_inner());
        *p = Arc::new(policy);
    }

    /// Readiness: whether the store answers.
    pub async fn ping(&self) -> Result<(), keyward_store::StoreError> {
        self.store.ping().await
    }

    /// The change log after `after` (at most `limit` entries, oldest first)
    /// and the newest `seq`, for the change feed (`GET /v1/changes`): needs
    /// `keyward:keys:verify`. A tenant key reads only its own tenant's
    /// entries (another tenant's keys do not exist for it); the newest
    /// `seq` is the log's either way, so its reader moves on.
    pub async fn changes_after(
        &self,
        actor: &Actor,
        after: i64,
        limit: u32,
    ) -> Result<(Vec<keyward_store::Change>, i64), ManageError> {
        actor.require("keyward:keys:verify")?;
        let last = self.store.last_change_seq().await?;
        let mut changes = self.store.changes_after(after, limit).await?;
        if !actor.is_operator() {
            changes.retain(|c| c.tenant_id.is_some() && actor.sees_tenant(c.tenant_id.as_deref()));
        }
        Ok((changes, last))
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<ManagePolicy> {
        Arc::clone(&self.policy.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Whether `actor` may give a new key of `tenant` the scope `scope`
    /// (the rule create, update and rotate apply; for offering choices).
    pub fn may_grant(&self, actor: &Actor, tenant: &keyward_store::Tenant, scope: &str) -> bool {
        crate::check::may_grant(actor, tenant, scope)
    }

    pub(crate) fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub(crate) fn new_id(&self, prefix: &str) -> Result<String, ManageError> {
        new_id(prefix, self.entropy.as_ref()).map_err(|_| ManageError::Internal)
    }

    /// The audit entry of `event` by `actor`.
    pub(crate) fn audit(
        &self,
        actor: &Actor,
        event: &ChangeEvent,
        details: Value,
    ) -> Result<AuditEntry, ManageError> {
        let at = self.clock.now().0;
        let published = if event.published() {
            let mut data = event.ids();
            if let Value::Object(d) = &details {
                for (k, v) in d {
                    data.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
            data.insert("actor".to_owned(), Value::from(actor.audit_id()));
            Some(NewEvent {
                id: self.new_id("msg")?,
                at,
                tenant_id: event.tenant_id().map(str::to_owned),
                key_id: event.key_id().map(str::to_owned),
                event_type: event.action().to_owned(),
                data: Value::Object(data),
                source: "keyward".to_owned(),
                idempotency_key: None,
            })
        } else {
            None
        };
        Ok(AuditEntry {
            id: self.new_id("evt")?,
            at,
            actor: actor.audit_id().to_owned(),
            actor_ip: actor.ip().map(|i| i.to_string()),
            tenant_id: event.tenant_id().map(str::to_owned),
            action: event.action().to_owned(),
            target: event.target().to_owned(),
            details,
            event: published,
        })
    }

    /// After a change is committed: tells the invalidator, once.
    pub(crate) fn committed(&self, event: &ChangeEvent) {
        self.invalidator.changed(event);
    }

    /// Lists audit events, newest first (`keyward:audit:read`).
    pub async fn list_audit(
        &self,
        actor: &Actor,
        q: AuditQuery,
    ) -> Result<Page<AuditEvent>, ManageError> {
        actor.require("keyward:audit:read")?;
        let tenant_id = match (actor.is_operator(), q.tenant_id) {
            (true, t) => t,
            (false, Some(t)) if Some(t.as_str()) != actor.tenant_id() => {
                return Err(ManageError::NotFound("tenant"))
            }
            (false, _) => actor.tenant_id().map(str::to_owned),
        };
        let page = q.paging.request()?;
        Ok(self
            .store
            .list_audit(&AuditFilter { tenant_id }, page)
            .await?)
    }
}

#[cfg(test)]
mod tests;
