//! The JSON types of keyward's HTTP API, in one place: the server writes
//! and reads them, the `keyward` CLI and the integration tests post and
//! parse them, so the three cannot drift apart.
//!
//! Every type is both `Serialize` and `Deserialize` (clients parse what
//! servers write). Response views, request bodies and list queries derive
//! utoipa's `ToSchema`/`IntoParams`, so the server's OpenAPI document takes
//! its schemas from here. Conversions from store records live in the server.
//! Times are RFC 3339 strings in UTC.
//!
//! Map: [`keys`] (keys and verification), [`tenants`], [`credits`],
//! [`audit`], [`changes`] (the change feed), [`usage`], [`leaks`] (reports
//! and the live-key check), [`webhooks`] (endpoints, deliveries, events,
//! alerts), [`meta`] (health and the principal), [`problem`] (error bodies),
//! [`page`] (a page of any list).

pub mod audit;
pub mod changes;
pub mod credits;
pub mod keys;
pub mod leaks;
pub mod meta;
pub mod page;
pub mod problem;
pub mod tenants;
pub mod usage;
pub mod webhooks;

pub use audit::{AuditEventView, AuditPage, ListAudit};
pub use changes::{ChangePage, ChangeView, ListChanges};
pub use credits::{
    ChangeCredits, CreditState, CreditsView, LedgerEntryView, LedgerPage, ListLedger, RefillMode,
    RefillPeriod, RefillSpec,
};
pub use keys::{
    CreateKey, KeyPage, KeyView, KeyWithSecret, ListKeys, RateLimitSpec, RateLimitState,
    RatePolicySpec, RevokeKey, RotateKey, UpdateKey, VerifyKey, VerifyPolicy, VerifyQuery,
    VerifyResult,
};
pub use leaks::{CheckLeaks, KeyLeakView, KeyLeaks, LeakReceipt, LiveKeys, ReportLeak};
pub use meta::{Health, Principal};
pub use page::Page;
pub use problem::{Envelope, EnvelopeError, ErrorBody, FieldError, Problem, ProblemDoc};
pub use tenants::{CreateTenant, ListTenants, TenantPage, TenantView, UpdateTenant};
pub use usage::{
    KeyIpPage, KeyIpView, KeyUsageView, ListIps, TenantUsagePage, TenantUsageQuery,
    UsageCountsView, UsageGroupView, UsagePoint, UsageQuery,
};

pub use webhooks::{
    AlertPage, AlertView, AttemptView, CreateEndpoint, DeliveryDetail, DeliveryPage, DeliveryView,
    EndpointPage, EndpointView, EndpointWithSecret, EventView, ListAlerts, ListDeliveries,
    ListEndpoints, PublishEvent, PublishedEvent, RotateEndpointSecret, UpdateEndpoint,
};

/// Deserializes a field that may be absent (`None`), `null` (`Some(None)`)
/// or a value (`Some(Some(v))`), for PATCH bodies. Such fields also carry
/// `skip_serializing_if = "Option::is_none"`, so an absent field is not
/// written as `null` (which would clear it).
fn nullable<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    T: serde::Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(d).map(Some)
}
