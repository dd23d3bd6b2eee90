//! Errors become HTTP in `keyward_http::error`; these are its renderers
//! bound to this server's [`Settings`].

pub use keyward_http::error::*;

use axum::response::Response;

use crate::config::Settings;

/// [`keyward_http::error::render_response`] in this deployment's style.
pub fn render_response(settings: &Settings, res: Response) -> Response {
    keyward_http::error::render_response(&settings.config.errors, res)
}

/// [`keyward_http::error::render_now`] in this deployment's style.
pub fn render_now(settings: &Settings, e: ApiError) -> Response {
    keyward_http::error::render_now(&settings.config.errors, e)
}

/// [`keyward_http::error::render_parts`] in this deployment's style.
pub fn render_parts(settings: &Settings, e: ApiError) -> (axum::http::response::Parts, String) {
    keyward_http::error::render_parts(&settings.config.errors, e)
}
