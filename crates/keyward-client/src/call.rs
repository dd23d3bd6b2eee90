//! One call: the request built once (URL, body bytes, idempotency key),
//! sent, and sent again while `retry.rs` says that is safe; the answer's
//! status and body, or the [`ClientError`].

use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Method, StatusCode};
use keyward_core::id::new_id;
use reqwest::Url;
use serde::de::DeserializeOwned;
use serde::Serialize;
use zeroize::{Zeroize, Zeroizing};

use crate::error::{self, ClientError};
use crate::retry::{retryable, Failure, Replay};
use crate::Client;

/// A request, ready to be sent as many times as is safe.
pub(crate) struct Call {
    pub(crate) method: Method,
    pub(crate) url: Url,
    pub(crate) body: Option<Bytes>,
    pub(crate) idempotency_key: Option<HeaderValue>,
    pub(crate) replay: Replay,
}

/// A whole answer.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) body: Bytes,
    /// `Retry-After` in seconds, if the answer had one.
    retry_after: Option<u64>,
}

impl Answer {
    /// The body as `R`.
    pub(crate) fn json<R: DeserializeOwned>(&self) -> Result<R, ClientError> {
        serde_json::from_slice(&self.body).map_err(|source| ClientError::Decode {
            status: self.status,
            source,
        })
    }

    /// The body as `R`, then its bytes wiped if this is their only holder:
    /// for answers that carry a secret (the HTTP stack's own copies are
    /// out of reach, so this is a best effort).
    pub(crate) fn secret_json<R: DeserializeOwned>(self) -> Result<R, ClientError> {
        let parsed = self.json();
        if let Ok(mut bytes) = self.body.try_into_mut() {
            bytes.as_mut().zeroize();
        }
        parsed
    }
}

impl Client {
    /// `base + path`. Paths are built from constants and
    /// [`crate::path::segment`]s, so this fails only on a base URL that
    /// the builder would have refused.
    pub(crate) fn url(&self, path: &str) -> Result<Url, ClientError> {
        let text = format!("{}{path}", self.inner.base);
        Url::parse(&text).map_err(|_| ClientError::InvalidUrl {
            url: text,
            reason: "paths cannot be appended to it",
        })
    }

    /// `base + path ? query`, the query encoded as a form (absent fields
    /// left out).
    pub(crate) fn url_with_query<Q: Serialize>(
        &self,
        path: &str,
        query: &Q,
    ) -> Result<Url, ClientError> {
        let mut url = self.url(path)?;
        let encoded =
            serde_urlencoded::to_string(query).map_err(|e| ClientError::Encode(e.to_string()))?;
        if !encoded.is_empty() {
            url.set_query(Some(&encoded));
        }
        Ok(url)
    }

    /// The idempotency key of a write: the caller's, or a new one for this
    /// call (sent on each of its attempts).
    pub(crate) fn idempotency_key(&self, given: Option<&str>) -> Result<HeaderValue, ClientError> {
        let key = match given {
            Some(k) => k.to_owned(),
            None => new_id("idem", self.inner.entropy.as_ref())?,
        };
        HeaderValue::from_str(&key).map_err(|_| {
            ClientError::Encode(
                "the idempotency key holds characters an HTTP header cannot carry".to_owned(),
            )
        })
    }

    /// `GET url`: a read, safe to send again.
    pub(crate) async fn read<R: DeserializeOwned>(&self, url: Url) -> Result<R, ClientError> {
        let call = Call {
            method: Method::GET,
            url,
            body: None,
            idempotency_key: None,
            replay: Replay::Safe,
        };
        self.execute(&call).await?.json()
    }

    /// A write without an idempotency key: sent again only if it never
    /// left.
    pub(crate) async fn write(
        &self,
        method: Method,
        url: Url,
        body: Option<Bytes>,
    ) -> Result<Answer, ClientError> {
        let call = Call {
            method,
            url,
            body,
            idempotency_key: None,
            replay: Replay::UnsentOnly,
        };
        self.execute(&call).await
    }

    /// Sends `call`, and again while it is safe and retries remain.
    pub(crate) async fn execute(&self, call: &Call) -> Result<Answer, ClientError> {
        let mut retry = 0;
        loop {
            let (failure, error, retry_after) = match self.attempt(call).await {
                Ok(answer) if answer.status.is_success() => return Ok(answer),
                Ok(answer) => {
                    let error = error::from_status(answer.status, &answer.body);
                    let retry_after = answer
                        .retry_after
                        .or_else(|| error.problem().and_then(|p| p.retry_after));
                    (Failure::Status(answer.status.as_u16()), error, retry_after)
                }
                Err((failure, error)) => (failure, error, None),
            };
            retry += 1;
            if retry > self.inner.retries || !retryable(call.replay, failure) {
                return Err(error);
            }
            let wait = self.inner.backoff.delay_after(
                retry,
                self.jitter(),
                retry_after.map(Duration::from_secs),
            );
            match wait {
                Some(wait) => tokio::time::sleep(wait).await,
                None => return Err(error),
            }
        }
    }

    /// One attempt: the whole answer, or how it failed.
    async fn attempt(&self, call: &Call) -> Result<Answer, (Failure, ClientError)> {
        let mut req = self
            .inner
            .http
            .request(call.method.clone(), call.url.clone());
        if let Some(auth) = &self.inner.auth {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        if let Some(key) = &call.idempotency_key {
            req = req.header("idempotency-key", key.clone());
        }
        if let Some(body) = &call.body {
            req = req
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(body.clone());
        }
        let res = req.send().await.map_err(|e| self.failure(e))?;
        let status = res.status();
        let retry_after = res
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let body = res.bytes().await.map_err(|e| self.failure(e))?;
        Ok(Answer {
            status,
            body,
            retry_after,
        })
    }

    /// What a transport error means for the request: never sent, lost
    /// after sending, or timed out.
    fn failure(&self, e: reqwest::Error) -> (Failure, ClientError) {
        let url = self.inner.base.clone();
        if e.is_builder() {
            (Failure::Invalid, ClientError::Encode(e.to_string()))
        } else if e.is_connect() {
            (Failure::Unsent, ClientError::Connect { url, source: e })
        } else if e.is_timeout() {
            (Failure::TimedOut, ClientError::Timeout(self.inner.timeout))
        } else {
            (Failure::Lost, ClientError::Transport { url, source: e })
        }
    }

    /// A number in `[0, 1)` for the backoff's jitter; without randomness,
    /// the longest wait.
    fn jitter(&self) -> f64 {
        let mut b = [0u8; 4];
        match self.inner.entropy.fill(&mut b) {
            Ok(()) => f64::from(u32::from_le_bytes(b)) / 4_294_967_296.0,
            Err(_) => 1.0,
        }
    }
}

/// A JSON body.
pub(crate) fn json_body<B: Serialize + ?Sized>(body: &B) -> Result<Bytes, ClientError> {
    serde_json::to_vec(body)
        .map(Bytes::from)
        .map_err(|e| ClientError::Encode(e.to_string()))
}

/// A JSON body that holds a secret: written into one buffer sized up front
/// (a growing buffer would leave copies behind) and wiped when the last
/// attempt is done with it.
pub(crate) fn secret_json_body<B: Serialize + ?Sized>(
    body: &B,
    size_hint: usize,
) -> Result<Bytes, ClientError> {
    let mut buf = Zeroizing::new(Vec::with_capacity(size_hint));
    serde_json::to_writer(&mut *buf, body).map_err(|e| ClientError::Encode(e.to_string()))?;
    Ok(Bytes::from_owner(buf))
}
