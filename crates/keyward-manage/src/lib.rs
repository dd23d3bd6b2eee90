//! keyward's management service: the one place where a management action
//! (tenants, keys, credits, console people, users, root keys) is checked,
//! performed and recorded.
//!
//! The HTTP API, the developer console and the CLI are adapters over
//! [`ManageService`]: each turns its caller into an [`Actor`] and its input
//! into typed arguments, and maps [`ManageError`] to its own answers. The
//! service checks permissions and domain rules (tenant isolation, scope
//! grants, tiers, environments, expiry, names: [`ManagePolicy`] holds what the
//! deployment decides), writes the change and its audit entry in one store
//! transaction, and then tells the [`Invalidator`] which [`ChangeEvent`]
//! happened, so caches (and later, other nodes, webhooks, alerts) learn of
//! every change from one place. No secret ever appears in an event, an audit
//! entry or a log line.

mod actor;
mod check;
mod error;
mod event;
mod policy;
mod service;

/// The validation's limits (documented in the OpenAPI schema too).
pub mod limits {
    pub use crate::check::{
        MAX_ALLOWLIST, MAX_GRACE_SECONDS, MAX_GRANTABLE, MAX_KEY_NAME, MAX_REASON, MAX_SCOPES,
        MAX_TENANT_NAME,
    };
}

pub use actor::Actor;
pub use error::{FieldError, ManageError};
pub use event::{ChangeEvent, Invalidator, NoInvalidation};
pub use policy::{LeakAction, LeakPolicy, ManagePolicy};
pub use service::{
    error_rate, spike, AlertPolicy, AlertQuery, AlertRun, DeliveryLog, EndpointChanges,
    EndpointWithSecret, NewEndpoint, Spike, UpstreamEvent, WebhookSettings, MAX_DESCRIPTION,
    MAX_EVENT_DATA, RESERVED_PREFIXES,
};
pub use service::{
    people::{check_email, check_name, normalize_email, NewInvite, NewUser},
    AuditQuery, CreditChangeInput, Credits, Cursor, IssuedKey, KeyChanges, KeyQuery, ManageService,
    NewKey, NewTenant, Paging, RateLimitInput, Revocation, TenantChanges,
};
pub use service::{
    GroupPaging, KeyAddresses, KeyUsage, SeenAddress, TenantUsage, UsageCounts, UsageWindow,
    MAX_BUCKETS, UNFAMILIAR_MS,
};
pub use service::{
    LeakInput, LeakVerdict, LeakedToken, Reporter, MAX_CHECK_HASHES, MAX_LEAK_REPORTS,
};
