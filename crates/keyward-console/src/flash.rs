//! Post-redirect-get for refused forms: what was typed and what was wrong
//! travels to the form's page in a short-lived cookie, so a refused form
//! never stays at its POST address (reloading shows the page; it does not
//! resubmit the form).
//!
//! The cookie (`__Host-keyward_flash`, `HttpOnly; SameSite=Strict`, one
//! minute) holds the form's fields and errors as JSON with an HMAC-SHA256
//! keyed by the session, so only this session's own refusals are shown on
//! its pages. It is read by the one page it names and cleared by the next
//! page view, whichever it is. It never carries a password or a key secret:
//! the forms that refuse into it have neither. (Sign-in and invitation
//! forms, before a session exists, redirect to their page with the
//! refusal's code in the address instead.)

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::session::SignedIn;
use super::ui::Errors;
use crate::ConsoleState;

/// Larger flashes are not sent: browsers drop cookies over 4 KiB. The form
/// is then answered in place, as before post-redirect-get.
const MAX_COOKIE: usize = 3800;

/// A refused form, as carried to its page.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Flash {
    /// The page it is for (path only).
    pub to: String,
    /// Which form of that page.
    pub form: String,
    /// The status the refusal answers with when shown.
    pub status: u16,
    /// The fields as typed, in order.
    pub fields: Vec<(String, String)>,
    pub errors: Vec<(String, String)>,
    pub general: Vec<String>,
}

impl Flash {
    pub fn new(to: impl Into<String>, form: &str, status: StatusCode, errors: &Errors) -> Flash {
        Flash {
            to: to.into(),
            form: form.to_owned(),
            status: status.as_u16(),
            fields: Vec::new(),
            errors: errors.fields.clone(),
            general: errors.general.clone(),
        }
    }

    pub fn field(mut self, name: &str, value: &str) -> Flash {
        self.fields.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn fields<'a>(mut self, name: &str, values: impl IntoIterator<Item = &'a String>) -> Flash {
        for v in values {
            self.fields.push((name.to_owned(), v.clone()));
        }
        self
    }

    /// The first value of `name`, or `""`.
    pub fn get(&self, name: &str) -> &str {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }

    /// Every value of `name`.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.fields
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn errors(&self) -> Errors {
        Errors {
            fields: self.errors.clone(),
            general: self.general.clone(),
        }
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY)
    }
}

fn cookie_name(state: &ConsoleState) -> &'static str {
    if state.settings.console.secure_cookies {
        "__Host-keyward_flash"
    } else {
        "keyward_flash"
    }
}

/// The same attributes as the session cookie's.
fn attributes(state: &ConsoleState) -> &'static str {
    crate::session::cookie_attributes(state)
}

fn mac(key: &str, payload: &str) -> Option<Hmac<Sha256>> {
    let mut m = Hmac::<Sha256>::new_from_slice(key.as_bytes()).ok()?;
    m.update(payload.as_bytes());
    Some(m)
}

/// A redirect to the flash's page that carries it; `None` when it is too
/// large for a cookie (the caller then answers in place).
pub fn redirect(state: &ConsoleState, signed: &SignedIn, flash: &Flash) -> Option<Response> {
    let json = serde_json::to_string(flash).ok()?;
    let payload = URL_SAFE_NO_PAD.encode(json.as_bytes());
    let tag = URL_SAFE_NO_PAD.encode(mac(&signed.flash_key, &payload)?.finalize().into_bytes());
    let cookie = format!(
        "{}={payload}.{tag}; {}; Max-Age=60",
        cookie_name(state),
        attributes(state)
    );
    if cookie.len() > MAX_COOKIE {
        return None;
    }
    let mut res = Redirect::to(&flash.to).into_response();
    res.headers_mut()
        .append(header::SET_COOKIE, HeaderValue::from_str(&cookie).ok()?);
    Some(res)
}

/// The flash this request carries, if this session made it.
pub(crate) fn read(state: &ConsoleState, headers: &HeaderMap, flash_key: &str) -> Option<Flash> {
    let value = super::session::cookie_value(headers, cookie_name(state))?;
    let (payload, tag) = value.split_once('.')?;
    let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
    mac(flash_key, payload)?.verify_slice(&tag).ok()?;
    let json = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice(&json).ok()
}

/// Whether a request carries a flash cookie (to clear it once shown).
pub(crate) fn present(state: &ConsoleState, headers: &HeaderMap) -> bool {
    super::session::cookie_value(headers, cookie_name(state)).is_some()
}

/// The `Set-Cookie` that clears the flash.
pub(crate) fn clear(state: &ConsoleState) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{}=; {}; Max-Age=0",
        cookie_name(state),
        attributes(state)
    ))
    .ok()
}
