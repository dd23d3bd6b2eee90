//! What a call fails with: [`ClientError`], and the problem keyward
//! answered an error with, read into [`ProblemDetails`] whichever style
//! the deployment writes (RFC 9457 `application/problem+json`, or the
//! `{"error": {"code", "message"}}` envelope).
//!
//! No error carries the API key: the key travels only in a request header,
//! and neither reqwest's errors nor these quote headers.

use std::time::Duration;

use http::StatusCode;
use keyward_core::secret::EntropyError;
use keyward_wire::{ErrorBody, FieldError};
use serde_json::Value;

/// Why a call failed.
///
/// Whether the request may have been applied differs: [`Connect`] means it
/// was never sent; [`Transport`] and [`Timeout`] mean it was sent and may
/// have been applied (the client retried what was safe to retry before
/// giving up; see the crate docs); [`Problem`] and [`Status`] are the
/// server's answer.
///
/// [`Connect`]: ClientError::Connect
/// [`Transport`]: ClientError::Transport
/// [`Timeout`]: ClientError::Timeout
/// [`Problem`]: ClientError::Problem
/// [`Status`]: ClientError::Status
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// keyward refused or failed the request and said why. Branch on
    /// `problem.code` (stable, snake_case unless the deployment renames
    /// codes).
    #[error("keyward answered {status}: {}", problem.code)]
    Problem {
        status: StatusCode,
        // Boxed: every `Result` of the client carries this enum.
        problem: Box<ProblemDetails>,
    },
    /// An error status whose body is not keyward's (a proxy's page, say).
    #[error("keyward answered {status}")]
    Status { status: StatusCode, body: String },
    /// The request was sent but no whole answer came within the timeout;
    /// it may have been applied.
    #[error("keyward did not answer within {0:?}")]
    Timeout(Duration),
    /// No connection could be made (refused, unresolvable, TLS, or the
    /// connect timeout): the request was not sent.
    #[error("cannot reach keyward at {url}")]
    Connect {
        /// The client's base URL.
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The connection failed after the request was sent: it may have been
    /// applied.
    #[error("the connection to keyward at {url} failed before its answer")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// A success whose body is not what the operation answers.
    #[error("keyward answered {status} with an unexpected body")]
    Decode {
        status: StatusCode,
        #[source]
        source: serde_json::Error,
    },
    /// The base URL given to the builder is not an `http` or `https` URL
    /// that paths can be appended to.
    #[error("invalid keyward URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: &'static str },
    /// The API key cannot travel in a header (control characters or
    /// non-ASCII). The key itself is not quoted.
    #[error("the API key holds characters an HTTP header cannot carry")]
    InvalidKey,
    /// A request could not be encoded: a query or body that does not
    /// serialize, or an idempotency key a header cannot carry.
    #[error("cannot encode the request: {0}")]
    Encode(String),
    /// No randomness for an idempotency key.
    #[error(transparent)]
    Entropy(#[from] EntropyError),
    /// While walking a list, keyward answered a page with the cursor it was
    /// asked for: following it would never end.
    #[error("keyward gave the same cursor twice; stopping the listing")]
    RepeatedCursor,
}

impl ClientError {
    /// The problem keyward answered with, if it answered one.
    pub fn problem(&self) -> Option<&ProblemDetails> {
        match self {
            ClientError::Problem { problem, .. } => Some(problem),
            _ => None,
        }
    }

    /// The HTTP status keyward (or whatever answered) gave, if any.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Problem { status, .. }
            | ClientError::Status { status, .. }
            | ClientError::Decode { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// An error body, whichever style the deployment writes: the members
/// clients branch on, typed, and the body as sent.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ProblemDetails {
    /// The stable code, e.g. `validation_failed`, `not_found`.
    pub code: String,
    /// The problem's `title` (`None` in the envelope style, which has none).
    pub title: Option<String>,
    /// The explanation for people: the problem's `detail`, or the
    /// envelope's `message`.
    pub detail: String,
    /// The problem's `type` URI (`None` in the envelope style).
    pub kind: Option<String>,
    /// With `validation_failed`: each invalid field.
    pub errors: Vec<FieldError>,
    /// With `rate_limited` and `idempotency_in_progress`: seconds to wait.
    pub retry_after: Option<u64>,
    /// The body as keyward sent it, every member included.
    pub body: ErrorBody,
}

impl ProblemDetails {
    /// Reads an error body in either style; `None` if it is neither (not
    /// keyward's).
    pub fn parse(bytes: &[u8]) -> Option<ProblemDetails> {
        let body: ErrorBody = serde_json::from_slice(bytes).ok()?;
        Some(ProblemDetails::from(body))
    }

    /// A member besides those above, e.g. `missing_scopes`.
    pub fn extra(&self, name: &str) -> Option<&Value> {
        self.body.extra(name)
    }
}

impl From<ErrorBody> for ProblemDetails {
    fn from(body: ErrorBody) -> ProblemDetails {
        let (title, kind) = match &body {
            ErrorBody::Problem(p) => (Some(p.title.clone()), Some(p.kind.clone())),
            ErrorBody::Envelope(_) => (None, None),
        };
        // A member of an unexpected shape is left to `body`, not an error:
        // the code and message are what a client needs.
        let errors = body
            .extra("errors")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        let retry_after = body.extra("retry_after").and_then(Value::as_u64);
        ProblemDetails {
            code: body.code().to_owned(),
            detail: body.message().to_owned(),
            title,
            kind,
            errors,
            retry_after,
            body,
        }
    }
}

/// The error of an answer with an error status.
pub(crate) fn from_status(status: StatusCode, body: &[u8]) -> ClientError {
    match ProblemDetails::parse(body) {
        Some(problem) => ClientError::Problem {
            status,
            problem: Box::new(problem),
        },
        None => ClientError::Status {
            status,
            body: String::from_utf8_lossy(body).into_owned(),
        },
    }
}
