//! Why a management action failed.

use keyward_store::StoreError;
use serde::Serialize;

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldError {
    /// The field, e.g. `scopes[1]` or `expires_at`.
    pub field: String,
    /// A stable code such as `unknown_scope`, `invalid_cidr`, `in_past`.
    pub code: &'static str,
    pub message: String,
}

impl FieldError {
    pub fn new(
        field: impl Into<String>,
        code: &'static str,
        message: impl Into<String>,
    ) -> FieldError {
        FieldError {
            field: field.into(),
            code,
            message: message.into(),
        }
    }
}

/// A refused or failed management action. Adapters map each case to their
/// own answer (the API to a status and problem code, the console to a page).
#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    /// Unknown, or of another tenant: the two look the same.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The actor lacks the scope the action needs.
    #[error("insufficient scope: {missing:?}")]
    InsufficientScope { missing: Vec<String> },
    /// Operators only (operator root keys, console operators, the host).
    #[error("operator root keys only")]
    RootOnly,
    /// The console role of the actor may not do this (`what` it may not do).
    #[error("the role may not {0}")]
    RoleRefused(&'static str),
    #[error("the request is invalid")]
    Validation(Vec<FieldError>),
    #[error("a live key with this name already exists in this tenant; pick another name")]
    NameTaken,
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// Scopes the actor may not grant (`scopes`); `detail` says why.
    #[error("{detail}")]
    ScopeNotGrantable { scopes: Vec<String>, detail: String },
    #[error("the change would end the last active root key that can manage keys")]
    LastRootKey,
    #[error("the cursor is not valid")]
    InvalidCursor,
    #[error("this Idempotency-Key was already used for a different request")]
    IdempotencyKeyReused,
    /// The Idempotency-Key sent is malformed (why).
    #[error("the Idempotency-Key header {0}")]
    InvalidIdempotencyKey(&'static str),
    #[error("storage is unavailable")]
    Unavailable,
    #[error("an internal error occurred")]
    Internal,
}

impl ManageError {
    pub(crate) fn field(
        field: impl Into<String>,
        code: &'static str,
        message: impl Into<String>,
    ) -> ManageError {
        ManageError::Validation(vec![FieldError::new(field, code, message)])
    }
}

impl From<StoreError> for ManageError {
    fn from(e: StoreError) -> ManageError {
        match e {
            StoreError::NotFound => ManageError::NotFound("resource"),
            StoreError::NameTaken => ManageError::NameTaken,
            StoreError::LastRootKey => ManageError::LastRootKey,
            StoreError::Conflict(message) => ManageError::Conflict {
                code: "conflict",
                message: message.to_owned(),
            },
            other => {
                tracing::error!(error = %other, "Store operation failed.");
                ManageError::Unavailable
            }
        }
    }
}

/// Store errors where "not found" means `what`.
pub(crate) fn not_found(what: &'static str) -> impl Fn(StoreError) -> ManageError {
    move |e| match e {
        StoreError::NotFound => ManageError::NotFound(what),
        other => other.into(),
    }
}
