//! HTML form bodies (`application/x-www-form-urlencoded`), including
//! repeated fields such as scope checkboxes.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use zeroize::Zeroizing;

use super::ConsoleError;

/// A parsed form: every `name=value` pair in order. Values are zeroized on
/// drop, since sign-in and invitation forms carry passwords.
#[derive(Default)]
pub struct FormData {
    fields: Vec<(String, Zeroizing<String>)>,
}

impl std::fmt::Debug for FormData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Field names only: values may be passwords.
        f.debug_list()
            .entries(self.fields.iter().map(|(k, _)| k))
            .finish()
    }
}

impl FormData {
    pub fn parse(body: &[u8]) -> FormData {
        FormData {
            fields: form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), Zeroizing::new(v.into_owned())))
                .collect(),
        }
    }

    /// The first value of `name`, or `""`.
    pub fn get(&self, name: &str) -> &str {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }

    /// The first value of `name`, trimmed.
    pub fn text(&self, name: &str) -> String {
        self.get(name).trim().to_owned()
    }

    /// A copy of a secret value (a password), zeroized when dropped.
    pub fn secret(&self, name: &str) -> Zeroizing<String> {
        Zeroizing::new(self.get(name).to_owned())
    }

    /// Every value of `name`, in order.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.fields
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.to_string())
            .collect()
    }

    /// Whether a checkbox named `name` was ticked.
    pub fn checked(&self, name: &str) -> bool {
        self.fields.iter().any(|(k, _)| k == name)
    }
}

impl<S: Send + Sync> FromRequest<S> for FormData {
    type Rejection = ConsoleError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if !is_form {
            return Err(ConsoleError::BadRequest(
                "Send the form as application/x-www-form-urlencoded, as a browser does.".into(),
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|_| ConsoleError::BadRequest("The form is too large.".into()))?;
        Ok(FormData::parse(&bytes))
    }
}
