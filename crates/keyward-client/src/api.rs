//! The API's operations, one method of [`Client`](crate::Client) each, in
//! the server's areas: [`meta`] (health, readiness, the caller, the OpenAPI
//! document), [`tenants`], [`credits`], [`keys`] (with verification),
//! [`usage`], [`audit`], [`leaks`], and [`webhooks`] (endpoints,
//! deliveries, events, alerts).

mod audit;
mod credits;
mod keys;
mod leaks;
mod meta;
mod tenants;
mod usage;
mod webhooks;
