//! Error bodies. keyward answers every error as an RFC 9457 problem
//! ([`ProblemDoc`] documents it; [`Problem`] reads it with all its extra
//! members), or, with `errors.style = "envelope"`, as an [`Envelope`];
//! [`ErrorBody`] reads either.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// An RFC 9457 problem, as every error is answered by default (a
/// deployment with `errors.style = "envelope"` answers
/// `{"error": {"code", "message"}}` as `application/json` instead).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProblemDoc {
    /// `errors.type_base` followed by the code.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    pub detail: String,
    /// Stable snake_case code to branch on.
    pub code: String,
    /// With `insufficient_scope`.
    pub missing_scopes: Option<Vec<String>>,
    /// With `scope_not_grantable`: the scopes the caller may not give.
    pub not_grantable_scopes: Option<Vec<String>>,
    /// With `validation_failed`.
    pub errors: Option<Vec<FieldError>>,
    /// With `idempotency_in_progress` and `rate_limited`: seconds to wait
    /// (also in `Retry-After`).
    pub retry_after: Option<u64>,
}

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FieldError {
    /// The field, e.g. `scopes[1]` or `expires_at`.
    pub field: String,
    /// A stable code such as `unknown_scope`, `invalid_cidr`, `in_past`.
    pub code: String,
    pub message: String,
}

/// A problem body as a client reads it: the five standard members and
/// every other member (`errors`, `missing_scopes`, `retry_after`, …) in
/// `extra`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    /// `errors.type_base` followed by the code.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    pub detail: String,
    /// Stable code to branch on (snake_case unless the deployment says otherwise).
    pub code: String,
    /// The other members.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The envelope style of error body: `{"error": {"code", "message", …}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub error: EnvelopeError,
}

/// The inside of an [`Envelope`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvelopeError {
    pub code: String,
    pub message: String,
    /// The other members, as a problem has them.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An error body in either style.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ErrorBody {
    Problem(Problem),
    Envelope(Envelope),
}

impl ErrorBody {
    /// The stable code.
    pub fn code(&self) -> &str {
        match self {
            ErrorBody::Problem(p) => &p.code,
            ErrorBody::Envelope(e) => &e.error.code,
        }
    }

    /// The human-readable explanation (`detail`, or the envelope's `message`).
    pub fn message(&self) -> &str {
        match self {
            ErrorBody::Problem(p) => &p.detail,
            ErrorBody::Envelope(e) => &e.error.message,
        }
    }

    /// A member besides code and message, e.g. `errors` or `retry_after`.
    pub fn extra(&self, name: &str) -> Option<&Value> {
        match self {
            ErrorBody::Problem(p) => p.extra.get(name),
            ErrorBody::Envelope(e) => e.error.extra.get(name),
        }
    }
}
