//! API keys: creation, listing, changes, revocation, rotation, deletion,
//! and verification.

use http::Method;
use keyward_wire::{
    CreateKey, KeyView, KeyWithSecret, ListKeys, Page, RevokeKey, RotateKey, UpdateKey, VerifyKey,
    VerifyResult,
};

use crate::call::{json_body, secret_json_body, Call};
use crate::path::segment;
use crate::retry::Replay;
use crate::{paging, Client, ClientError};

impl Client {
    /// `POST /v1/keys`. The answer holds the new secret, shown only this
    /// once. Not sent again once sent (a second attempt would make a
    /// second key).
    pub async fn create_key(&self, key: &CreateKey) -> Result<KeyWithSecret, ClientError> {
        self.write(Method::POST, self.url("/v1/keys")?, Some(json_body(key)?))
            .await?
            .secret_json()
    }

    /// `GET /v1/keys`: one page, newest first.
    pub async fn list_keys(&self, query: &ListKeys) -> Result<Page<KeyView>, ClientError> {
        self.read(self.url_with_query("/v1/keys", query)?).await
    }

    /// Every page of `GET /v1/keys` from `query.cursor` on, at most
    /// `max_pages` requests.
    pub async fn list_keys_all(
        &self,
        query: &ListKeys,
        max_pages: usize,
    ) -> Result<Page<KeyView>, ClientError> {
        paging::walk(
            query,
            max_pages,
            |q| async move { self.list_keys(&q).await },
        )
        .await
    }

    /// `GET /v1/keys/{id}` (never the secret).
    pub async fn get_key(&self, id: &str) -> Result<KeyView, ClientError> {
        self.read(self.url(&key_path(id, ""))?).await
    }

    /// `PATCH /v1/keys/{id}`: absent fields stay, `Some(None)` clears.
    pub async fn update_key(&self, id: &str, changes: &UpdateKey) -> Result<KeyView, ClientError> {
        self.write(
            Method::PATCH,
            self.url(&key_path(id, ""))?,
            Some(json_body(changes)?),
        )
        .await?
        .json()
    }

    /// `DELETE /v1/keys/{id}`: gone for good (revoking keeps the record).
    pub async fn delete_key(&self, id: &str) -> Result<(), ClientError> {
        self.write(Method::DELETE, self.url(&key_path(id, ""))?, None)
            .await
            .map(drop)
    }

    /// `POST /v1/keys/{id}/revoke`: it stops working at once.
    pub async fn revoke_key(&self, id: &str, revoke: &RevokeKey) -> Result<KeyView, ClientError> {
        let url = self.url(&key_path(id, "/revoke"))?;
        self.write(Method::POST, url, Some(json_body(revoke)?))
            .await?
            .json()
    }

    /// `POST /v1/keys/{id}/rotate`: a new key (new id, new secret shown
    /// only this once) with the same settings replaces this one.
    pub async fn rotate_key(
        &self,
        id: &str,
        rotate: &RotateKey,
    ) -> Result<KeyWithSecret, ClientError> {
        let url = self.url(&key_path(id, "/rotate"))?;
        self.write(Method::POST, url, Some(json_body(rotate)?))
            .await?
            .secret_json()
    }

    /// `POST /v1/keys/verify`: the verdict on a key presented to your
    /// service, valid or not (a denial is an `Ok` with `valid: false`).
    ///
    /// Every arrival spends the key's rate-limit tokens and credits, so a
    /// request is sent again only if it never left (no connection). The
    /// body, which holds the key verified, is wiped after the last attempt.
    pub async fn verify(&self, request: &VerifyKey) -> Result<VerifyResult, ClientError> {
        // Room for the members around the key, so the buffer is not
        // reallocated (leaving a copy of the key behind) in the usual case.
        let hint = 128
            + request.key.len()
            + request.ip.as_ref().map_or(0, String::len)
            + request.scopes.iter().map(|s| s.len() + 3).sum::<usize>();
        let call = Call {
            method: Method::POST,
            url: self.inner.verify_url.clone(),
            body: Some(secret_json_body(request, hint)?),
            idempotency_key: None,
            replay: Replay::UnsentOnly,
        };
        self.execute(&call).await?.json()
    }
}

/// `/v1/keys/{id}` and what follows.
pub(crate) fn key_path(id: &str, rest: &str) -> String {
    format!("/v1/keys/{}{rest}", segment(id))
}
