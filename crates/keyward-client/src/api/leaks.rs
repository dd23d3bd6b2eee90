//! Leaked keys: reporting one, asking which hashes are live keys, a key's
//! reports. (GitHub's and GitLab's partner endpoints are for them, not for
//! API keys, and have no method here.)

use http::Method;
use keyward_wire::{CheckLeaks, KeyLeaks, LeakReceipt, LiveKeys, ReportLeak};

use super::keys::key_path;
use crate::call::{json_body, secret_json_body, Call};
use crate::retry::Replay;
use crate::{Client, ClientError};

impl Client {
    /// `POST /v1/leaks`: a leaked key (or its SHA-256) and where it was
    /// found. The body, which may hold the key, is wiped after sending.
    pub async fn report_leak(&self, report: &ReportLeak) -> Result<LeakReceipt, ClientError> {
        let hint = 256
            + [&report.key, &report.key_hash, &report.url, &report.source]
                .iter()
                .map(|f| f.as_ref().map_or(0, String::len))
                .sum::<usize>();
        let body = secret_json_body(report, hint)?;
        self.write(Method::POST, self.url("/v1/leaks")?, Some(body))
            .await?
            .json()
    }

    /// `POST /v1/leaks/check`: which of the SHA-256 hashes are live keys.
    /// A read in effect (it changes nothing), so it is retried like one.
    pub async fn check_leaks(&self, check: &CheckLeaks) -> Result<LiveKeys, ClientError> {
        let call = Call {
            method: Method::POST,
            url: self.url("/v1/leaks/check")?,
            body: Some(json_body(check)?),
            idempotency_key: None,
            replay: Replay::Safe,
        };
        self.execute(&call).await?.json()
    }

    /// `GET /v1/keys/{id}/leaks`: the key's reports, newest first.
    pub async fn key_leaks(&self, key_id: &str) -> Result<KeyLeaks, ClientError> {
        self.read(self.url(&key_path(key_id, "/leaks"))?).await
    }
}
