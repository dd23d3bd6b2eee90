//! Health, readiness, the caller's principal and the OpenAPI document.

use keyward_wire::{Health, Principal};

use crate::{Client, ClientError};

impl Client {
    /// `GET /v1/health`: the node is up (no key needed).
    pub async fn health(&self) -> Result<Health, ClientError> {
        self.read(self.url("/v1/health")?).await
    }

    /// `GET /v1/ready`: the node serves, with the state of each part it
    /// relies on (no key needed). A node that cannot serve answers 503,
    /// which is retried like any read before it becomes the error.
    pub async fn ready(&self) -> Result<Health, ClientError> {
        self.read(self.url("/v1/ready")?).await
    }

    /// `GET /v1/me`: the principal behind the client's key.
    pub async fn me(&self) -> Result<Principal, ClientError> {
        self.read(self.url("/v1/me")?).await
    }

    /// `GET /openapi.json`: the deployment's OpenAPI document.
    pub async fn openapi(&self) -> Result<serde_json::Value, ClientError> {
        self.read(self.url("/openapi.json")?).await
    }
}
