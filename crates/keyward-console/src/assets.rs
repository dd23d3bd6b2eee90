//! The console's stylesheet, script and icon, compiled into the binary.
//!
//! Each is served under a name that carries a hash of its content
//! (`console.3f9a1c2b.css`), so browsers may cache it forever and a new
//! build is never mixed with an old cached file.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use keyward_core::secret::KeyHash;

use super::ConsoleError;

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
    /// `console.<hash>.css`
    hashed: String,
}

const FILES: &[(&str, &str, &str)] = &[
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("assets/console.css"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/console.js"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("assets/favicon.svg"),
    ),
];

static ASSETS: LazyLock<Vec<Asset>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|&(name, content_type, body)| {
            let hash = KeyHash::of(body).to_hex();
            let (stem, ext) = name.rsplit_once('.').unwrap_or((name, ""));
            Asset {
                name,
                content_type,
                body,
                hashed: format!("{stem}.{}.{ext}", &hash[..10]),
            }
        })
        .collect()
});

/// The URL of an asset by its plain name, e.g. `console.css`.
pub fn url(name: &str) -> String {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(a) => format!("/console/static/{}", a.hashed),
        None => format!("/console/static/{name}"),
    }
}

pub async fn serve(Path(file): Path<String>) -> Result<Response, ConsoleError> {
    let asset = ASSETS
        .iter()
        .find(|a| a.hashed == file)
        .ok_or(ConsoleError::NotFound)?;
    let mut res = (StatusCode::OK, asset.body).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    Ok(res)
}
