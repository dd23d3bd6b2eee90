//! Leaked keys: the reports of secret scanners and people, and the live-key
//! check `keyward scan --check` asks.
//!
//! - `POST /v1/leaks/github`: GitHub's secret-scanning partner endpoint.
//!   The raw body is verified against `Github-Public-Key-Identifier` and
//!   `Github-Public-Key-Signature` (base64 DER ECDSA P-256 / SHA-256) with
//!   the configured [`PartnerKeys`] before it is parsed; the answer is the
//!   partner format (`token_hash`, never the token).
//! - `GET /v1/leaks/gitlab/revocable_token_types` and
//!   `POST /v1/leaks/gitlab/revoke`: GitLab's token revocation API, behind
//!   the shared token of `[leaks.gitlab]` (compared in constant time).
//! - `POST /v1/leaks`: a report by an API key holding `keyward:leaks:write`.
//! - `POST /v1/leaks/check`: which hashes are live keys (`keyward:leaks:check`).
//! - `GET /v1/keys/{id}/leaks`: a key's reports (`keyward:keys:read`).
//!
//! Every report goes through `ManageService::report_leaks`, which answers
//! fast (checksum first, one batch lookup, the report recorded pending);
//! the handler then hands the pending reports to the [`LeakQueue`], whose
//! worker applies the policy after the answer. Refused partner reports are
//! audited (`leak.report_refused`, the reason only), at most
//! [`REFUSALS_AUDITED_PER_MINUTE`] a minute per node so a flood of forged
//! reports cannot fill the audit log; the rest are logged.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use base64::Engine;
use keyward_http::error::ApiError;
use keyward_manage::{LeakInput, LeakVerdict, LeakedToken, Reporter};
use keyward_store::LeakReport;
use keyward_views::{opt_time, time};
use keyward_wire::{CheckLeaks, KeyLeakView, KeyLeaks, LeakReceipt, LiveKeys, ReportLeak};
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::views::ProblemDoc;
use super::{Caller, Json};
use crate::{ApiState, BodyLimit};

/// Refused partner reports audited per node and minute; more are logged.
pub const REFUSALS_AUDITED_PER_MINUTE: u32 = 60;

/// The GitLab token types keyward revokes (GitLab names a finding's type
/// `gitleaks_rule_id_` + the rule's id; `keyward regex --format gitleaks`
/// names its rule `keyward_api_key`).
pub const GITLAB_TOKEN_TYPES: &[&str] = &["gitleaks_rule_id_keyward_api_key", "keyward_api_key"];

/// Where accepted reports go to have the policy applied (the server's
/// worker: a bounded queue, with pending reports found again in the store
/// when it overflows or after a crash).
pub trait LeakQueue: Send + Sync + 'static {
    /// Queues a pending report; must not wait.
    fn push(&self, report_id: String);
}

/// Why a public key did not load.
#[derive(Debug, thiserror::Error)]
pub enum PartnerKeyError {
    #[error("key {0:?} is not a PEM P-256 public key")]
    BadKey(String),
    #[error("not GitHub's public-keys JSON: {0}")]
    BadDocument(String),
    #[error("a key has an empty key_identifier")]
    NoIdentifier,
}

/// The public keys partner reports are verified with, by identifier.
#[derive(Debug, Clone, Default)]
pub struct PartnerKeys {
    keys: Vec<(String, VerifyingKey)>,
}

#[derive(Deserialize)]
struct GithubKeyDocument {
    public_keys: Vec<GithubKeyEntry>,
}

#[derive(Deserialize)]
struct GithubKeyEntry {
    key_identifier: String,
    key: String,
}

impl PartnerKeys {
    /// Adds `pem` (a `BEGIN PUBLIC KEY` P-256 key) as `identifier`.
    pub fn add_pem(&mut self, identifier: &str, pem: &str) -> Result<(), PartnerKeyError> {
        if identifier.is_empty() {
            return Err(PartnerKeyError::NoIdentifier);
        }
        let key = VerifyingKey::from_public_key_pem(pem.trim())
            .map_err(|_| PartnerKeyError::BadKey(identifier.to_owned()))?;
        self.keys.retain(|(id, _)| id != identifier);
        self.keys.push((identifier.to_owned(), key));
        Ok(())
    }

    /// Adds the keys of GitHub's document
    /// (`{"public_keys": [{"key_identifier", "key", "is_current"}]}`).
    pub fn add_github_json(&mut self, text: &str) -> Result<(), PartnerKeyError> {
        let doc: GithubKeyDocument =
            serde_json::from_str(text).map_err(|e| PartnerKeyError::BadDocument(e.to_string()))?;
        for k in doc.public_keys {
            self.add_pem(&k.key_identifier, &k.key)?;
        }
        Ok(())
    }

    /// Adds every key of `other` (its keys win on equal identifiers).
    pub fn extend(&mut self, other: &PartnerKeys) {
        for (id, key) in &other.keys {
            self.keys.retain(|(i, _)| i != id);
            self.keys.push((id.clone(), *key));
        }
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are none (every GitHub report is then refused).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn get(&self, identifier: &str) -> Option<&VerifyingKey> {
        self.keys
            .iter()
            .find(|(id, _)| id == identifier)
            .map(|(_, k)| k)
    }
}

/// What the leak endpoints read: the partner keys (swapped when the
/// configured URL is fetched again), GitLab's token, the queue, and the
/// refusal-audit budget.
pub struct LeakIntake {
    github: RwLock<Arc<PartnerKeys>>,
    gitlab_token: Option<String>,
    queue: Arc<dyn LeakQueue>,
    /// (minute, refusals audited in it).
    refusals: Mutex<(i64, u32)>,
}

impl LeakIntake {
    pub fn new(
        github: PartnerKeys,
        gitlab_token: Option<String>,
        queue: Arc<dyn LeakQueue>,
    ) -> LeakIntake {
        LeakIntake {
            github: RwLock::new(Arc::new(github)),
            gitlab_token,
            queue,
            refusals: Mutex::new((0, 0)),
        }
    }

    /// Swaps in a new set of GitHub keys.
    pub fn set_github_keys(&self, keys: PartnerKeys) {
        *self.github.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
    }

    /// The GitHub keys in force.
    pub fn github_keys(&self) -> Arc<PartnerKeys> {
        Arc::clone(&self.github.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn queue_pending(&self, verdicts: &[LeakVerdict]) {
        for id in verdicts.iter().filter_map(LeakVerdict::pending) {
            self.queue.push(id.to_owned());
        }
    }

    /// Whether this minute's audit budget for refusals has room.
    fn may_audit_refusal(&self, now_ms: i64) -> bool {
        let mut r = self.refusals.lock().unwrap_or_else(|e| e.into_inner());
        let minute = now_ms.div_euclid(60_000);
        if r.0 != minute {
            *r = (minute, 0);
        }
        r.1 += 1;
        r.1 <= REFUSALS_AUDITED_PER_MINUTE
    }
}

/// Audits (within the budget) and logs a refused partner report.
async fn refuse(state: &ApiState, reporter: &str, reason: &str, ip: Option<IpAddr>) {
    if state.leaks.may_audit_refusal(state.clock.now().0) {
        if let Err(e) = state.manage.refused_leak_report(reporter, reason, ip).await {
            tracing::error!(error = %e, reporter, reason, "Could not audit a refused leak report.");
        }
    } else {
        tracing::warn!(
            reporter,
            reason,
            "Leak report refused (not audited: over this minute's budget)."
        );
    }
}

/// The peer's address (behind trusted proxies, the client's).
pub(crate) struct Peer(Option<IpAddr>);

impl FromRequestParts<ApiState> for Peer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        Ok(Peer(keyward_verify::credential::client_ip(
            peer,
            &parts.headers,
            &state.settings.trusted_proxies,
        )))
    }
}

/// The raw body of a JSON request, bytes exactly as sent (a signature
/// covers them), with `Content-Type: application/json` required.
pub(crate) struct RawJson(Bytes);

impl<S: Send + Sync> FromRequest<S> for RawJson {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                let v = v.trim();
                v.eq_ignore_ascii_case("application/json")
                    || (v.starts_with("application/") && v.ends_with("+json"))
            });
        if !json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let limit = req.extensions().get::<BodyLimit>().map_or(0, |l| l.0);
        Bytes::from_request(req, state)
            .await
            .map(RawJson)
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge(limit)
                } else {
                    ApiError::InvalidBody(e.body_text())
                }
            })
    }
}

/// Why a GitHub report did not verify: a code for the audit log and a
/// sentence for the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unverified {
    pub(crate) reason: &'static str,
    pub(crate) message: &'static str,
}

const UNSIGNED: Unverified = Unverified {
    reason: "unsigned",
    message: "the report is not signed: send Github-Public-Key-Identifier and Github-Public-Key-Signature",
};
const UNKNOWN_KEY: Unverified = Unverified {
    reason: "unknown_key_identifier",
    message: "the report is signed with a key this deployment does not trust",
};
const BAD_SIGNATURE: Unverified = Unverified {
    reason: "bad_signature",
    message: "the report's signature does not verify",
};

/// Checks GitHub's signature headers over `body` with `keys`.
pub(crate) fn verify_github(
    keys: &PartnerKeys,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Unverified> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(id), Some(sig)) = (
        text("github-public-key-identifier"),
        text("github-public-key-signature"),
    ) else {
        return Err(UNSIGNED);
    };
    let key = keys.get(id.trim()).ok_or(UNKNOWN_KEY)?;
    let der = base64::engine::general_purpose::STANDARD
        .decode(sig.trim())
        .map_err(|_| BAD_SIGNATURE)?;
    let signature = Signature::from_der(&der).map_err(|_| BAD_SIGNATURE)?;
    key.verify(body, &signature).map_err(|_| BAD_SIGNATURE)
}

/// One token of a GitHub partner report.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct GithubToken {
    /// The leaked token (never stored, logged or echoed).
    token: String,
    /// GitHub's name for the pattern that found it.
    #[serde(rename = "type", default)]
    token_type: Option<String>,
    /// Where it was found.
    #[serde(default)]
    url: Option<String>,
    /// What kind of place (`content`, `commit`, `pull_request_comment`, …).
    #[serde(default)]
    source: Option<String>,
}

/// The partner answer for one token.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct GithubLabel {
    /// Hex SHA-256 of the token.
    token_hash: String,
    token_type: String,
    /// `true_positive`: a key of this deployment; `false_positive`: not one
    /// (a broken checksum, or no such key).
    label: &'static str,
}

fn label(v: &LeakVerdict) -> &'static str {
    if v.known {
        "true_positive"
    } else {
        "false_positive"
    }
}

/// GitHub's secret-scanning partner endpoint: a signed list of tokens found
/// in public; answers each token's label at once and applies the leak
/// policy to known keys after the answer.
#[utoipa::path(
    post,
    path = "/v1/leaks/github",
    tag = "leaks",
    operation_id = "report_github_leaks",
    request_body = Vec<GithubToken>,
    params(
        ("Github-Public-Key-Identifier" = String, Header, description = "The identifier of the GitHub key that signed the body."),
        ("Github-Public-Key-Signature" = String, Header, description = "Base64 DER ECDSA P-256 / SHA-256 signature of the raw body."),
    ),
    responses(
        (status = 200, body = Vec<GithubLabel>),
        (status = 400, description = "`invalid_body`: the signed body is not a JSON array of `{token, type, url, source}`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "`report_not_verified`: unsigned, signed with a key this deployment does not trust, or a signature that does not verify the body.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large`: the body is over `http.max_body_bytes`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported_media_type`: the body must be sent with `Content-Type: application/json`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: more than 1000 tokens.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "`store_unavailable`: the store does not answer; GitHub retries.", body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn github(
    State(state): State<ApiState>,
    Peer(ip): Peer,
    headers: HeaderMap,
    RawJson(body): RawJson,
) -> Result<axum::Json<Vec<GithubLabel>>, ApiError> {
    let keys = state.leaks.github_keys();
    if let Err(u) = verify_github(&keys, &headers, &body) {
        refuse(&state, "github", u.reason, ip).await;
        return Err(ApiError::ReportNotVerified(u.message));
    }
    let tokens: Vec<GithubToken> = match serde_json::from_slice(&body) {
        Ok(t) => t,
        Err(e) => {
            refuse(&state, "github", "malformed_body", ip).await;
            // The parser's message quotes no input, only positions and types.
            return Err(ApiError::InvalidBody(format!(
                "The signed body is not a JSON array of {{token, type, url, source}}: {e}"
            )));
        }
    };
    let types: Vec<String> = tokens
        .iter()
        .map(|t| t.token_type.clone().unwrap_or_default())
        .collect();
    let inputs = tokens
        .into_iter()
        .map(|t| LeakInput {
            token: LeakedToken::Secret(t.token),
            token_type: t.token_type,
            url: t.url,
            source: t.source,
        })
        .collect();
    let verdicts = state.manage.report_leaks(Reporter::GitHub, inputs).await?;
    state.leaks.queue_pending(&verdicts);
    Ok(axum::Json(
        verdicts
            .iter()
            .zip(types)
            .map(|(v, token_type)| GithubLabel {
                token_hash: v.token_hash.clone(),
                token_type,
                label: label(v),
            })
            .collect(),
    ))
}

/// Checks GitLab's `Authorization` (the raw token, or `Bearer <token>`)
/// against `[leaks.gitlab] token`, in constant time.
fn gitlab_authorized(state: &ApiState, headers: &HeaderMap) -> Result<(), ApiError> {
    let refused = || {
        ApiError::ReportNotVerified("send the token of [leaks.gitlab] in the Authorization header")
    };
    let Some(expected) = &state.leaks.gitlab_token else {
        return Err(ApiError::ReportNotVerified(
            "GitLab reports are not configured here ([leaks.gitlab] token)",
        ));
    };
    let sent = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim())
        .ok_or_else(refused)?;
    if constant_time_eq(sent.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(refused())
    }
}

/// Equality whose time depends on the lengths only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// GitLab's list of revocable token types, with the pattern that finds them.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RevocableTokenTypes {
    /// The `type` values `POST /v1/leaks/gitlab/revoke` accepts.
    types: Vec<&'static str>,
    /// The regular expression of this deployment's keys (`keyward regex`).
    pattern: String,
}

/// GitLab's token revocation API: the token types keyward revokes.
#[utoipa::path(
    get,
    path = "/v1/leaks/gitlab/revocable_token_types",
    tag = "leaks",
    operation_id = "gitlab_revocable_token_types",
    params(("Authorization" = String, Header, description = "The token of `[leaks.gitlab]` (as is, or after `Bearer `).")),
    responses(
        (status = 200, body = RevocableTokenTypes),
        (status = 401, description = "`report_not_verified`: no token, a wrong one, or GitLab reports are not configured.", body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn gitlab_types(
    State(state): State<ApiState>,
    Peer(ip): Peer,
    headers: HeaderMap,
) -> Result<axum::Json<RevocableTokenTypes>, ApiError> {
    if let Err(e) = gitlab_authorized(&state, &headers) {
        refuse(&state, "gitlab", "bad_token", ip).await;
        return Err(e);
    }
    Ok(axum::Json(RevocableTokenTypes {
        types: GITLAB_TOKEN_TYPES.to_vec(),
        pattern: state.settings.credentials.format.scan_regex(),
    }))
}

/// One token of GitLab's revoke call.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct GitlabToken {
    /// One of the revocable token types.
    #[serde(rename = "type")]
    token_type: String,
    /// The leaked token (never stored, logged or echoed).
    token: String,
    /// Where it was found.
    #[serde(default)]
    location: Option<String>,
}

/// GitLab's token revocation API: tokens its secret detection found. All
/// are accepted for revocation by policy (204), or the call is refused
/// whole (400) when the body is malformed or names a type keyward does not
/// revoke.
#[utoipa::path(
    post,
    path = "/v1/leaks/gitlab/revoke",
    tag = "leaks",
    operation_id = "gitlab_revoke_tokens",
    request_body = Vec<GitlabToken>,
    params(("Authorization" = String, Header, description = "The token of `[leaks.gitlab]` (as is, or after `Bearer `).")),
    responses(
        (status = 204, description = "Every token was accepted; known keys get the leak policy."),
        (status = 400, description = "`invalid_body`: not a JSON array of `{type, token, location}`, or a `type` keyward does not revoke.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "`report_not_verified`: no token, a wrong one, or GitLab reports are not configured.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large`: the body is over `http.max_body_bytes`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported_media_type`: the body must be sent with `Content-Type: application/json`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: more than 1000 tokens.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "`store_unavailable`: the store does not answer; retry.", body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn gitlab_revoke(
    State(state): State<ApiState>,
    Peer(ip): Peer,
    headers: HeaderMap,
    RawJson(body): RawJson,
) -> Result<StatusCode, ApiError> {
    if let Err(e) = gitlab_authorized(&state, &headers) {
        refuse(&state, "gitlab", "bad_token", ip).await;
        return Err(e);
    }
    let tokens: Vec<GitlabToken> = serde_json::from_slice(&body).map_err(|e| {
        ApiError::InvalidBody(format!(
            "The body is not a JSON array of {{type, token, location}}: {e}"
        ))
    })?;
    if let Some(t) = tokens
        .iter()
        .find(|t| !GITLAB_TOKEN_TYPES.contains(&t.token_type.as_str()))
    {
        return Err(ApiError::InvalidBody(format!(
            "Token type {:?} is not one keyward revokes; see /v1/leaks/gitlab/revocable_token_types",
            t.token_type
        )));
    }
    let inputs = tokens
        .into_iter()
        .map(|t| LeakInput {
            token: LeakedToken::Secret(t.token),
            token_type: Some(t.token_type),
            url: t.location,
            source: Some("gitlab_secret_detection".into()),
        })
        .collect();
    let verdicts = state.manage.report_leaks(Reporter::GitLab, inputs).await?;
    state.leaks.queue_pending(&verdicts);
    Ok(StatusCode::NO_CONTENT)
}

/// Reports a leaked key (`keyward:leaks:write`). Tenant keys reach their
/// tenant's keys only. The policy is applied after the answer, once per key.
#[utoipa::path(
    post,
    path = "/v1/leaks",
    tag = "leaks",
    operation_id = "report_leak",
    request_body = ReportLeak,
    security(("bearer" = []), ("api_key" = []), ("basic" = [])),
    responses(
        (status = 202, body = LeakReceipt),
        (status = 400, description = "`invalid_body`: not JSON, a field of the wrong type, or an unknown field.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "`insufficient_scope`: the key lacks `keyward:leaks:write`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large`: the body is over `http.max_body_bytes`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported_media_type`: the body must be sent with `Content-Type: application/json`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: neither or both of `key` and `key_hash`, or a `key_hash` that is not 64 hex digits.", body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn report(
    State(state): State<ApiState>,
    caller: Caller,
    Json(body): Json<ReportLeak>,
) -> Result<(StatusCode, axum::Json<LeakReceipt>), ApiError> {
    let token = match (body.key, body.key_hash) {
        (Some(k), None) => LeakedToken::Secret(k),
        (None, Some(h)) => LeakedToken::Hash(h),
        _ => {
            return Err(ApiError::Validation(vec![
                keyward_http::error::FieldError::new(
                    "key",
                    "required",
                    "send exactly one of key and key_hash",
                ),
            ]))
        }
    };
    let input = LeakInput {
        token,
        token_type: None,
        url: body.url,
        source: body.source,
    };
    let verdicts = state
        .manage
        .report_leaks(Reporter::Actor(&caller.actor), vec![input])
        .await
        .map_err(|e| match e {
            // The service names the field of a list; this body has one.
            keyward_manage::ManageError::Validation(errors) => ApiError::Validation(
                errors
                    .into_iter()
                    .map(|f| keyward_http::error::FieldError::new("key_hash", f.code, f.message))
                    .collect(),
            ),
            other => other.into(),
        })?;
    state.leaks.queue_pending(&verdicts);
    let v = verdicts.into_iter().next().ok_or(ApiError::Internal)?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(LeakReceipt {
            label: label(&v).to_owned(),
            report_id: v.report.as_ref().map(|r| r.id.clone()),
            status: v.report.as_ref().map(|r| r.status.as_str().to_owned()),
            token_hash: v.token_hash,
        }),
    ))
}

/// Which hashes are live keys (`keyward:leaks:check`): what `keyward scan
/// --check` asks, sending hashes only. Tenant keys learn of their tenant's
/// keys only.
#[utoipa::path(
    post,
    path = "/v1/leaks/check",
    tag = "leaks",
    operation_id = "check_leaks",
    request_body = CheckLeaks,
    security(("bearer" = []), ("api_key" = []), ("basic" = [])),
    responses(
        (status = 200, body = LiveKeys),
        (status = 400, description = "`invalid_body`: not JSON, a field of the wrong type, or an unknown field.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "`insufficient_scope`: the key lacks `keyward:leaks:check`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large`: the body is over `http.max_body_bytes`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported_media_type`: the body must be sent with `Content-Type: application/json`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: not 1 to 100 hashes, or one that is not 64 lowercase hex digits.", body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn check(
    State(state): State<ApiState>,
    caller: Caller,
    Json(body): Json<CheckLeaks>,
) -> Result<axum::Json<LiveKeys>, ApiError> {
    let live = state
        .manage
        .live_hashes(&caller.actor, &body.hashes)
        .await?;
    Ok(axum::Json(LiveKeys { live }))
}

fn leak_view(r: &LeakReport) -> KeyLeakView {
    KeyLeakView {
        id: r.id.clone(),
        reporter: r.reporter.clone(),
        url: r.url.clone(),
        source: r.source.clone(),
        token_type: r.token_type.clone(),
        received_at: time(r.received_at),
        status: r.status.as_str().to_owned(),
        action: r.action.clone(),
        applied_at: opt_time(r.applied_at),
        detail: r.detail.clone(),
    }
}

/// A key's leak reports (`keyward:keys:read`).
#[utoipa::path(
    get,
    path = "/v1/keys/{id}/leaks",
    tag = "leaks",
    operation_id = "key_leaks",
    params(("id" = String, Path, description = "The key's id, e.g. `key_3fQ9…`.")),
    security(("bearer" = []), ("api_key" = []), ("basic" = [])),
    responses(
        (status = 200, body = KeyLeaks),
        (status = 403, description = "`insufficient_scope`: the key lacks `keyward:keys:read`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such key, or one the key may not see.", body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn of_key(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<KeyLeaks>, ApiError> {
    let reports = state.manage.key_leaks(&caller.actor, &id).await?;
    Ok(axum::Json(KeyLeaks {
        leaked: !reports.is_empty(),
        data: reports.iter().map(leak_view).collect(),
    }))
}
