//! `keyward-example-library`: the example service on `LISTEN` (default
//! `127.0.0.1:3000`). See the README for the environment it reads.

use std::net::SocketAddr;

#[tokio::main]
async fn main() -> Result<(), String> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let app = if std::env::var("LIBRARY_WITHOUT_KEYS").is_ok_and(|v| v == "1") {
        // The benchmark's baseline: the same handlers, a fixed principal,
        // no keyward.
        keyward_example_library::router()
            .layer(axum::Extension(keyward_example_library::anonymous()))
    } else {
        keyward_example_library::with_keys(keyward_example_library::layer_from_env().await?)
    };
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| format!("{listen}: {e}"))?;
    tracing::info!(%listen, "Listening.");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
    .map_err(|e| e.to_string())
}
