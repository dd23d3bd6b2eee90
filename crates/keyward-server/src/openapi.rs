//! The OpenAPI 3.1 document, generated from the handlers' annotations. A
//! snapshot test (`docs/openapi.json`) keeps it from drifting silently.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "keyward",
        description = "Self-hostable API-key platform: issue keys, verify them, manage tenants. Errors are RFC 9457 problem+json with a stable `code`."
    ),
    paths(
        api::meta::health,
        api::meta::ready,
        api::meta::me,
        api::tenants::create,
        api::tenants::list,
        api::tenants::get,
        api::tenants::update,
        api::keys::create,
        api::keys::list,
        api::keys::get,
        api::keys::update,
        api::keys::revoke,
        api::keys::rotate,
        api::keys::delete,
        api::keys::verify,
        api::audit::list,
        api::credits::get,
        api::credits::change,
        api::credits::set_refill,
        api::credits::clear_refill,
        api::credits::ledger,
    ),
    modifiers(&Security),
    tags(
        (name = "meta", description = "Health, readiness and the caller's principal."),
        (name = "tenants", description = "Businesses, accounts or organizations that own keys."),
        (name = "keys", description = "API keys: issue, manage, verify."),
        (name = "audit", description = "Append-only log of management actions."),
        (name = "credits", description = "Tenant credit balances, refills and the ledger."),
    )
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
    }
}

/// The document served at `/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}
