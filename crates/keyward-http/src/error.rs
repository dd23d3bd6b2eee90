//! The one place where errors become HTTP.
//!
//! Handlers return [`ApiError`]. Its `IntoResponse` attaches a [`Problem`]
//! to an empty response; the server's edge middleware then writes ([`render_response`]) the body in
//! the deployment's style (RFC 9457 problem+json by default, or the
//! `{"error": {"code", "message"}}` envelope), with configured code spellings
//! and messages. Nothing else in the server builds an error body.

use std::sync::Arc;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use keyward_core::verdict::Denial;
use keyward_store::StoreError;
use serde::Serialize;
use serde_json::{json, Map, Value};

use std::collections::BTreeMap;

use serde::Deserialize;

/// One invalid field of a request (the management service's).
pub use keyward_manage::FieldError;
use keyward_manage::ManageError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{}", .0.message())]
    Denied(Denial),
    #[error("API keys are not accepted in the {place}")]
    CredentialsMisplaced { place: &'static str, header: String },
    #[error("the request is invalid")]
    Validation(Vec<FieldError>),
    #[error("{0}")]
    InvalidBody(String),
    #[error("{0}")]
    InvalidQuery(String),
    #[error("send the body as JSON with Content-Type: application/json")]
    UnsupportedMediaType,
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("no route for this path; see /openapi.json")]
    RouteNotFound,
    #[error("this method is not allowed on this path")]
    MethodNotAllowed,
    #[error("a live key with this name already exists in this tenant; pick another name")]
    NameTaken,
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("the cursor is not valid; pass back next_cursor from a previous page")]
    InvalidCursor,
    #[error("storage is unavailable; retry shortly")]
    Unavailable,
    /// The shared rate limiter does not answer and the deployment refuses
    /// rather than limit per node (`redis.on_failure = "fail_closed"`).
    #[error("the rate limiter is unavailable; retry shortly")]
    LimiterUnavailable,
    #[error("operator root keys only")]
    RootOnly,
    /// A key create, update or rotation that would give scopes the caller
    /// may not grant (`scopes`); `detail` says why, in full sentences.
    #[error("{detail}")]
    ScopeNotGrantable { scopes: Vec<String>, detail: String },
    #[error(
        "this is the last active root key that can manage keys (it holds keyward:keys:write); \
         revoking, deleting or disabling it, or taking that scope away, would lock every operator out of the API. \
         Create another root key first, on the server's host: `keyward root-keys create --name <name>`; \
         then retire this one with the new key"
    )]
    LastRootKey,
    #[error("keys of the {0} environment may not use this route")]
    EnvironmentNotAllowed(String),
    #[error("this API key may not act for the tenant named in {0}")]
    TenantNotAllowed(String),
    #[error("the upstream did not answer in time")]
    UpstreamTimeout,
    #[error("the upstream is unreachable or failed")]
    UpstreamUnavailable,
    #[error("this route requires an Idempotency-Key header (1 to 255 printable characters, e.g. a UUID) so a retry never runs twice")]
    IdempotencyKeyRequired,
    #[error("the Idempotency-Key header {0}")]
    InvalidIdempotencyKey(&'static str),
    #[error("a request with this Idempotency-Key is still in progress; retry after it completes")]
    IdempotencyInProgress,
    #[error("this Idempotency-Key was already used for a different request (method, path or body); use a new key for a new request")]
    IdempotencyKeyReused,
    #[error("the request path is refused: {0}")]
    InvalidPath(crate::path::PathError),
    #[error("the Host header {0}; HTTP/1.1 requests carry exactly one")]
    InvalidHost(&'static str),
    #[error("the request is malformed: {0}")]
    MalformedRequest(&'static str),
    #[error("the request did not arrive in time")]
    RequestTimeout,
    /// At the connection cap, or shedding lookups of unknown keys.
    #[error("keyward is overloaded (at its connection limit, or too many unknown keys are waiting to be looked up); retry shortly")]
    Overloaded,
    #[error("this API key has as many idempotent requests in progress as idempotency.max_records_per_key allows; retry after some complete")]
    IdempotencyQuotaExceeded,
    /// A scanner's leak report whose signature or token did not verify
    /// (why, as a sentence without the body).
    #[error("{0}")]
    ReportNotVerified(&'static str),
    #[error("an internal error occurred")]
    Internal,
}

impl ApiError {
    /// How a request that ended in this error counts in usage and metrics:
    /// its code, a denial (4xx) or an error (5xx).
    pub fn outcome(&self) -> (&'static str, keyward_store::OutcomeClass) {
        let class = if self.status().is_server_error() {
            keyward_store::OutcomeClass::Error
        } else {
            keyward_store::OutcomeClass::Denied
        };
        (self.code(), class)
    }

    /// The status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Denied(d) => {
                StatusCode::from_u16(d.status()).unwrap_or(StatusCode::UNAUTHORIZED)
            }
            ApiError::CredentialsMisplaced { .. }
            | ApiError::InvalidBody(_)
            | ApiError::InvalidQuery(_) => StatusCode::BAD_REQUEST,
            ApiError::InvalidCursor | ApiError::InvalidPath(_) | ApiError::InvalidHost(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotFound(_) | ApiError::RouteNotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NameTaken | ApiError::Conflict { .. } | ApiError::LastRootKey => {
                StatusCode::CONFLICT
            }
            ApiError::Unavailable | ApiError::LimiterUnavailable | ApiError::Overloaded => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::RootOnly
            | ApiError::ScopeNotGrantable { .. }
            | ApiError::EnvironmentNotAllowed(_)
            | ApiError::TenantNotAllowed(_) => StatusCode::FORBIDDEN,
            ApiError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ApiError::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            ApiError::IdempotencyKeyRequired | ApiError::InvalidIdempotencyKey(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::IdempotencyInProgress => StatusCode::CONFLICT,
            ApiError::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::MalformedRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::IdempotencyQuotaExceeded => StatusCode::TOO_MANY_REQUESTS,
            ApiError::ReportNotVerified(_) => StatusCode::UNAUTHORIZED,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::Denied(d) => d.code(),
            ApiError::CredentialsMisplaced { .. } => "credentials_misplaced",
            ApiError::Validation(_) => "validation_failed",
            ApiError::InvalidBody(_) => "invalid_body",
            ApiError::InvalidQuery(_) => "invalid_query",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::NotFound(_) | ApiError::RouteNotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::NameTaken => "name_taken",
            ApiError::Conflict { code, .. } => code,
            ApiError::InvalidCursor => "invalid_cursor",
            ApiError::Unavailable => "store_unavailable",
            ApiError::LimiterUnavailable => "rate_limiter_unavailable",
            ApiError::Overloaded => "overloaded",
            ApiError::RootOnly => "root_key_required",
            ApiError::ScopeNotGrantable { .. } => "scope_not_grantable",
            ApiError::LastRootKey => "last_root_key",
            ApiError::EnvironmentNotAllowed(_) => "environment_not_allowed",
            ApiError::TenantNotAllowed(_) => "tenant_not_allowed",
            ApiError::UpstreamTimeout => "upstream_timeout",
            ApiError::UpstreamUnavailable => "upstream_unavailable",
            ApiError::IdempotencyKeyRequired => "idempotency_key_required",
            ApiError::InvalidIdempotencyKey(_) => "invalid_idempotency_key",
            ApiError::IdempotencyInProgress => "idempotency_in_progress",
            ApiError::IdempotencyKeyReused => "idempotency_key_reused",
            ApiError::InvalidPath(_) => "invalid_path",
            ApiError::InvalidHost(_) => "invalid_host",
            ApiError::MalformedRequest(_) => "malformed_request",
            ApiError::RequestTimeout => "request_timeout",
            ApiError::IdempotencyQuotaExceeded => "idempotency_quota_exceeded",
            ApiError::ReportNotVerified(_) => "report_not_verified",
            ApiError::Internal => "internal_error",
        }
    }

    fn detail(&self) -> String {
        match self {
            // Denial messages are written as final sentences already.
            ApiError::Denied(d) => d.message(),
            // The renderer adds how this deployment takes keys.
            ApiError::CredentialsMisplaced { place, .. } => format!(
                "API keys are not accepted in the {place}, where they leak into logs and histories."
            ),
            other => {
                let s = other.to_string();
                let mut c = s.chars();
                match c.next() {
                    Some(first) => {
                        first.to_uppercase().chain(c).collect::<String>()
                            + if s.ends_with('.') { "" } else { "." }
                    }
                    None => s,
                }
            }
        }
    }

    /// The problem this error is, before deployment styling.
    pub fn problem(&self) -> Problem {
        let mut extra = Map::new();
        match self {
            ApiError::Denied(Denial::InsufficientScope { missing }) => {
                extra.insert("missing_scopes".into(), json!(missing));
            }
            ApiError::Denied(Denial::RateLimited {
                retry_after_seconds,
            }) => {
                extra.insert("retry_after".into(), json!(retry_after_seconds));
            }
            ApiError::IdempotencyInProgress
            | ApiError::IdempotencyQuotaExceeded
            | ApiError::LimiterUnavailable
            | ApiError::Overloaded => {
                extra.insert("retry_after".into(), json!(1));
            }
            ApiError::Validation(errors) => {
                extra.insert("errors".into(), json!(errors));
            }
            ApiError::ScopeNotGrantable { scopes, .. } => {
                extra.insert("not_grantable_scopes".into(), json!(scopes));
            }
            _ => {}
        }
        let status = self.status();
        let code = self.code();
        Problem {
            status,
            code,
            title: title_of(code),
            detail: self.detail(),
            extra,
        }
    }
}

/// The problem type's title: its code as words, e.g. `Insufficient scope`,
/// `IP not allowed`, `Invalid API key`.
fn title_of(code: &str) -> String {
    let words: Vec<String> = code
        .split('_')
        .filter(|w| !w.is_empty())
        .map(|w| match w {
            "api" | "ip" | "url" | "id" | "http" => w.to_ascii_uppercase(),
            _ => w.to_owned(),
        })
        .collect();
    let words = words.join(" ");
    let mut c = words.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// The ways this deployment accepts a key (`keys.schemes`, `keys.header`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub bearer: bool,
    pub basic: bool,
    /// The header of the `header` scheme, when it is on.
    pub header: Option<String>,
}

impl Default for Accepted {
    fn default() -> Accepted {
        Accepted {
            bearer: true,
            basic: true,
            header: Some("X-API-Key".to_owned()),
        }
    }
}

impl Accepted {
    /// How to send a key here, as a sentence.
    pub fn hint(&self) -> String {
        let mut ways = Vec::new();
        if self.bearer {
            ways.push("as `Authorization: Bearer <key>`".to_owned());
        }
        if let Some(h) = &self.header {
            ways.push(format!("in the `{h}` header"));
        }
        if self.basic {
            ways.push(
                "with HTTP Basic authentication (the key id as user name, the key as password)"
                    .to_owned(),
            );
        }
        match ways.len() {
            0 => "This deployment accepts no way of presenting a key.".to_owned(),
            1 => format!("Send it {}.", ways[0]),
            n => format!("Send it {}, or {}.", ways[..n - 1].join(", "), ways[n - 1]),
        }
    }

    /// The `WWW-Authenticate` challenges of a 401: one per scheme this
    /// deployment accepts (RFC 9110 §11.6.1), so a client that sends
    /// credentials only when challenged for its scheme gets in.
    fn challenges(&self, code: &str) -> Vec<String> {
        let presented = code != "missing_credentials";
        let mut out = Vec::new();
        if self.bearer {
            out.push(if presented {
                format!(
                    "Bearer realm=\"keyward\", error=\"invalid_token\", error_description=\"{code}\""
                )
            } else {
                "Bearer realm=\"keyward\"".to_owned()
            });
        }
        if self.basic {
            out.push("Basic realm=\"keyward\", charset=\"UTF-8\"".to_owned());
        }
        if let (Some(h), true) = (&self.header, out.is_empty()) {
            // No registered scheme names a key in a header of its own; a
            // 401 must still challenge (RFC 9110 §15.5.2).
            out.push(format!("ApiKey realm=\"keyward\", header=\"{h}\""));
        }
        out
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound => ApiError::NotFound("resource"),
            StoreError::NameTaken => ApiError::NameTaken,
            StoreError::LastRootKey => ApiError::LastRootKey,
            StoreError::Conflict(message) => ApiError::Conflict {
                code: "conflict",
                message: message.to_owned(),
            },
            other => {
                tracing::error!(error = %other, "Store operation failed.");
                ApiError::Unavailable
            }
        }
    }
}

impl From<keyward_verify::credential::CredentialError> for ApiError {
    fn from(e: keyward_verify::credential::CredentialError) -> ApiError {
        match e {
            keyward_verify::credential::CredentialError::Invalid => {
                ApiError::Denied(Denial::InvalidApiKey)
            }
            keyward_verify::credential::CredentialError::Misplaced { place, header } => {
                ApiError::CredentialsMisplaced { place, header }
            }
        }
    }
}

impl From<keyward_limits::RateLimitError> for ApiError {
    fn from(e: keyward_limits::RateLimitError) -> ApiError {
        tracing::debug!(error = %e, "Rate limiter unavailable.");
        ApiError::LimiterUnavailable
    }
}

impl From<keyward_limits::LimitError> for ApiError {
    fn from(e: keyward_limits::LimitError) -> ApiError {
        match e {
            keyward_limits::LimitError::RateLimit(e) => e.into(),
            keyward_limits::LimitError::Credits(e) => e.into(),
        }
    }
}

/// The management service's refusals, as the API answers them.
impl From<ManageError> for ApiError {
    fn from(e: ManageError) -> ApiError {
        match e {
            ManageError::NotFound(what) => ApiError::NotFound(what),
            ManageError::InsufficientScope { missing } => {
                ApiError::Denied(Denial::InsufficientScope { missing })
            }
            // The API has no console roles; a refusal of one is an operator-only action.
            ManageError::RootOnly | ManageError::RoleRefused(_) => ApiError::RootOnly,
            ManageError::Validation(errors) => ApiError::Validation(errors),
            ManageError::NameTaken => ApiError::NameTaken,
            ManageError::Conflict { code, message } => ApiError::Conflict { code, message },
            ManageError::ScopeNotGrantable { scopes, detail } => {
                ApiError::ScopeNotGrantable { scopes, detail }
            }
            ManageError::LastRootKey => ApiError::LastRootKey,
            ManageError::InvalidCursor => ApiError::InvalidCursor,
            ManageError::IdempotencyKeyReused => ApiError::IdempotencyKeyReused,
            ManageError::InvalidIdempotencyKey(why) => ApiError::InvalidIdempotencyKey(why),
            ManageError::Unavailable => ApiError::Unavailable,
            ManageError::Internal => ApiError::Internal,
        }
    }
}

impl From<keyward_verify::verifier::VerifyError> for ApiError {
    fn from(e: keyward_verify::verifier::VerifyError) -> ApiError {
        match e {
            keyward_verify::verifier::VerifyError::Store(e) => e.into(),
            keyward_verify::verifier::VerifyError::Busy => ApiError::Overloaded,
        }
    }
}

/// An error response before it is rendered.
#[derive(Debug, Clone)]
pub struct Problem {
    pub status: StatusCode,
    pub code: &'static str,
    pub title: String,
    pub detail: String,
    pub extra: Map<String, Value>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = self.problem();
        let mut res = problem.status.into_response();
        res.extensions_mut().insert(Arc::new(problem));
        res
    }
}

/// Renders `res` in the deployment's error style if it carries a
/// [`Problem`] (adding `WWW-Authenticate` to 401s); other responses pass as
/// they are. The app's one middleware (`app::edge`) calls it for every
/// response.
pub fn render_response(errors: &ErrorsConfig, res: Response) -> Response {
    match res.extensions().get::<Arc<Problem>>().cloned() {
        Some(problem) => render_problem(errors, &problem, res),
        None => res,
    }
}

/// `e` rendered in the deployment's style now, rather than by the
/// middleware (for responses that are stored, like idempotent replays).
pub fn render_now(errors: &ErrorsConfig, e: ApiError) -> Response {
    let (parts, body) = render_parts(errors, e);
    Response::from_parts(parts, axum::body::Body::from(body))
}

/// `e` rendered in the deployment's style as head and body, for the
/// gateway's HTTP/1 path, which writes responses itself.
pub fn render_parts(errors: &ErrorsConfig, e: ApiError) -> (axum::http::response::Parts, String) {
    let problem = e.problem();
    styled(errors, &problem, e.into_response())
}

fn render_problem(errors: &ErrorsConfig, p: &Problem, res: Response) -> Response {
    let (parts, body) = styled(errors, p, res);
    Response::from_parts(parts, axum::body::Body::from(body))
}

fn styled(
    errors: &ErrorsConfig,
    p: &Problem,
    res: Response,
) -> (axum::http::response::Parts, String) {
    let cfg = errors;
    let code = cfg
        .codes
        .get(p.code)
        .cloned()
        .unwrap_or_else(|| match cfg.code_case {
            CodeCase::Snake => p.code.to_owned(),
            CodeCase::Upper => p.code.to_ascii_uppercase(),
        });
    let detail = cfg.messages.get(p.code).cloned().unwrap_or_else(|| {
        match p.code {
            // Say how this deployment takes keys, not every way keyward can.
            "missing_credentials" | "credentials_misplaced" => {
                format!("{} {}", p.detail, cfg.accepted.hint())
            }
            _ => p.detail.clone(),
        }
    });
    let (content_type, body) = match cfg.style {
        ErrorStyle::Problem => {
            let mut body = Map::new();
            body.insert("type".into(), json!(format!("{}{}", cfg.type_base, p.code)));
            body.insert("title".into(), json!(p.title));
            body.insert("status".into(), json!(p.status.as_u16()));
            body.insert("detail".into(), json!(detail));
            body.insert("code".into(), json!(code));
            body.extend(p.extra.clone());
            ("application/problem+json", Value::Object(body))
        }
        ErrorStyle::Envelope => {
            let mut inner = Map::new();
            inner.insert("code".into(), json!(code));
            inner.insert("message".into(), json!(detail));
            inner.extend(p.extra.clone());
            ("application/json", json!({ "error": inner }))
        }
    };
    let (mut parts, _) = res.into_parts();
    parts.extensions.remove::<Arc<Problem>>();
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    parts.headers.remove(header::CONTENT_LENGTH);
    if p.status == StatusCode::UNAUTHORIZED {
        parts.headers.remove(header::WWW_AUTHENTICATE);
        for challenge in cfg.accepted.challenges(p.code) {
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                parts.headers.append(header::WWW_AUTHENTICATE, v);
            }
        }
    }
    if let Some(retry) = p.extra.get("retry_after").and_then(Value::as_u64) {
        parts
            .headers
            .insert(header::RETRY_AFTER, HeaderValue::from(retry));
    }
    (parts, body.to_string())
}

/// `[errors]`: how error bodies look (RFC 9457 or an envelope), and the
/// deployment's own spellings of codes and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorStyle {
    /// RFC 9457 `application/problem+json` with a `code` member.
    Problem,
    /// `{"error": {"code": …, "message": …}}`.
    Envelope,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CodeCase {
    /// `invalid_api_key`
    Snake,
    /// `INVALID_API_KEY`
    Upper,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ErrorsConfig {
    /// How this deployment accepts keys (from `[keys]`, not a setting of
    /// `[errors]`): 401 challenges and the hints of `missing_credentials`
    /// and `credentials_misplaced` name these ways, and no other.
    #[serde(skip)]
    pub accepted: Accepted,
    pub style: ErrorStyle,
    /// Problem `type` is this followed by the code.
    pub type_base: String,
    pub code_case: CodeCase,
    /// Per-code replacements, e.g. `invalid_api_key = "unauthorized"`.
    pub codes: BTreeMap<String, String>,
    /// Per-code replacement messages.
    pub messages: BTreeMap<String, String>,
}

impl Default for ErrorsConfig {
    fn default() -> ErrorsConfig {
        ErrorsConfig {
            accepted: Accepted::default(),
            style: ErrorStyle::Problem,
            type_base: "https://keyward.dev/errors/".into(),
            code_case: CodeCase::Snake,
            codes: BTreeMap::new(),
            messages: BTreeMap::new(),
        }
    }
}
