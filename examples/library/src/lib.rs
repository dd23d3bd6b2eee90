//! An axum service whose routes are checked by keyward-tower: the routes,
//! their rules and the handlers, shared by the binary, the integration
//! tests (`crates/keyward/tests/it/library.rs`) and the benchmark.
//!
//! | route | needs |
//! |---|---|
//! | `GET /health` | nothing (open) |
//! | `GET /v1/calls` | `calls:read` (route table) |
//! | `POST /v1/calls` | `calls:write`, 1 credit (route table) |
//! | `GET /v1/calls/{id}` | a key (route table), `calls:read` (checked in the handler: [`RequireScopes`]) |
//! | `GET /v1/me` | a key |

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use keyward_core::clock::SystemClock;
use keyward_tower::embedded::Embedded;
use keyward_tower::remote::{Remote, RemoteConfig, RootKey};
use keyward_tower::{
    Backend, Deployment, DeploymentConfig, KeywardLayer, Principal, RequireScopes, RouteError,
    RouteTable, Rule,
};
use serde_json::{json, Value};

keyward_tower::scopes!(pub CallsRead = ["calls:read"]);

/// What each route requires.
pub fn routes() -> Result<RouteTable, RouteError> {
    RouteTable::new()
        .route(Method::GET, "/health", Rule::open())?
        .route(Method::GET, "/v1/calls", Rule::scopes(["calls:read"]))?
        .route(
            Method::POST,
            "/v1/calls",
            Rule::scopes(["calls:write"]).credits(1),
        )
}

/// The handlers, without keyward (the layer goes on top: [`with_keys`]).
pub fn router() -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/v1/calls", get(list_calls).post(create_call))
        .route("/v1/calls/{id}", get(get_call))
        .route("/v1/me", get(me))
}

/// The service with every request checked by `layer`.
pub fn with_keys(layer: KeywardLayer) -> Router {
    router().layer(layer)
}

async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn list_calls(principal: Principal) -> Json<Value> {
    Json(json!({
        "calls": [],
        "key_id": principal.key_id,
        "tenant_id": principal.tenant_id,
    }))
}

async fn create_call(principal: Principal) -> (StatusCode, Json<Value>) {
    (
        StatusCode::CREATED,
        Json(json!({ "id": "call_1", "created_by": principal.key_id })),
    )
}

async fn get_call(
    scoped: RequireScopes<CallsRead>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Json<Value> {
    Json(json!({ "id": id, "key_id": scoped.key_id }))
}

async fn me(principal: Principal) -> Principal {
    principal
}

/// Which backend, from the environment: `KEYWARD_URL` + `KEYWARD_ROOT_KEY`
/// → remote; else `KEYWARD_STORE_URL` (or `store_url` in the config) →
/// embedded. `KEYWARD_CONFIG` names the deployment's `keyward.toml`
/// (key format, header, schemes, errors; keyward's defaults without it).
pub async fn layer_from_env() -> Result<KeywardLayer, String> {
    let mut config = match std::env::var("KEYWARD_CONFIG") {
        Ok(path) => {
            let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
            toml::from_str::<DeploymentConfig>(&text).map_err(|e| format!("{path}: {e}"))?
        }
        Err(_) => DeploymentConfig::default(),
    };
    if let Ok(url) = std::env::var("KEYWARD_STORE_URL") {
        config.store_url = Some(url);
    }
    let deployment = Deployment::new(config).map_err(|e| e.to_string())?;
    let backend: Arc<dyn Backend> = match (
        std::env::var("KEYWARD_URL"),
        std::env::var("KEYWARD_ROOT_KEY"),
    ) {
        (Ok(url), Ok(key)) => Arc::new(
            Remote::start(
                RemoteConfig::new(url, RootKey::new(key)),
                &deployment,
                Arc::new(keyward_limits::MemoryLimiter::default()),
                Arc::new(SystemClock),
            )
            .map_err(|e| e.to_string())?,
        ),
        _ => Arc::new(
            Embedded::open(&deployment, Arc::new(SystemClock))
                .await
                .map_err(|e| {
                    format!("{e} (set KEYWARD_URL and KEYWARD_ROOT_KEY, or KEYWARD_STORE_URL)")
                })?,
        ),
    };
    let routes = routes().map_err(|e| e.to_string())?;
    Ok(KeywardLayer::new(deployment, routes, backend))
}

/// A fixed principal, for the benchmark's baseline without keyward.
pub fn anonymous() -> Principal {
    Principal::new(keyward_tower::wire::Principal {
        key_id: "key_anonymous".into(),
        key_name: "anonymous".into(),
        start: String::new(),
        kind: "tenant".into(),
        tenant_id: None,
        tenant_name: None,
        environment: "test".into(),
        scopes: vec!["calls:read".into()],
        owner: None,
        tier: None,
        expires_at: None,
        metadata: json!({}),
    })
}
