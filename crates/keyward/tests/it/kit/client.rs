//! A typed client over the `keyward_wire` types: each call returns the
//! typed body, or the problem the server answered with its status.

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use keyward_wire::{
    AuditPage, ChangeCredits, CreateKey, CreateTenant, CreditsView, KeyPage, KeyView,
    KeyWithSecret, LedgerEntryView, LedgerPage, ListAudit, ListKeys, ListLedger, ListTenants,
    Principal, Problem, RefillSpec, RevokeKey, RotateKey, TenantPage, TenantView, UpdateKey,
    UpdateTenant, VerifyKey, VerifyResult,
};

use super::Server;

/// A call's outcome: the typed body of a 2xx, or the refusal.
pub type Answer<T> = Result<T, Refusal>;

/// An error answer: its status, content type and problem body.
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub content_type: String,
    pub problem: Problem,
}

impl Refusal {
    /// Asserts a problem+json error with `status` and `code` (what
    /// `Reply::assert_problem` checks).
    #[track_caller]
    pub fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "{self:?}");
        assert_eq!(self.content_type, "application/problem+json", "{self:?}");
        assert_eq!(self.problem.code, code, "{self:?}");
        assert_eq!(self.problem.status, status, "{self:?}");
        assert!(!self.problem.detail.is_empty(), "{self:?}");
    }
}

/// The refusal of an answer that must be one (the body of a success is not
/// printed: it may hold a secret).
pub trait Refused {
    /// Asserts the answer is a problem with `status` and `code`; returns it.
    #[track_caller]
    fn refused(self, status: u16, code: &str) -> Refusal;
}

impl<T> Refused for Answer<T> {
    #[track_caller]
    fn refused(self, status: u16, code: &str) -> Refusal {
        match self {
            Ok(_) => panic!("expected {status} {code}, got a success"),
            Err(r) => {
                r.assert_problem(status, code);
                r
            }
        }
    }
}

/// The API as one key sees it.
pub struct Client<'a> {
    server: &'a Server,
    key: String,
}

impl Server {
    /// A typed client with the operator root key.
    pub fn client(&self) -> Client<'_> {
        self.client_as(&self.root)
    }

    /// A typed client with `key`.
    pub fn client_as(&self, key: &str) -> Client<'_> {
        Client {
            server: self,
            key: key.to_owned(),
        }
    }
}

/// A key body with the defaults tests use: `environment = "test"`, nothing else.
pub fn new_key(tenant: &str, name: &str) -> CreateKey {
    CreateKey {
        tenant_id: Some(tenant.to_owned()),
        name: name.to_owned(),
        environment: Some("test".to_owned()),
        ..CreateKey::default()
    }
}

impl Client<'_> {
    /// A success must have the status the API documents for the call (`ok`).
    async fn call<R: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: Option<&(impl Serialize + ?Sized)>,
        body: Option<&(impl Serialize + ?Sized)>,
        ok: StatusCode,
    ) -> Answer<R> {
        let method_path = format!("{method} {path}");
        let mut req = self
            .server
            .http
            .request(method, self.server.url(path))
            .bearer_auth(&self.key);
        if let Some(q) = query {
            req = req.query(q);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        let content_type = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let text = res.text().await.unwrap();
        // A body-less success (204) reads as `null`.
        let text = if text.is_empty() { "null" } else { &text };
        if status.is_success() {
            assert_eq!(status, ok, "{method_path}: {text}");
            Ok(serde_json::from_str(text)
                .unwrap_or_else(|e| panic!("{status}: not the expected body ({e}): {text}")))
        } else {
            let problem = serde_json::from_str(text)
                .unwrap_or_else(|e| panic!("{status}: not a problem ({e}): {text}"));
            Err(Refusal {
                status,
                content_type,
                problem,
            })
        }
    }

    async fn get<R: DeserializeOwned>(&self, path: &str) -> Answer<R> {
        let ok = StatusCode::OK;
        self.call(Method::GET, path, None::<&()>, None::<&()>, ok)
            .await
    }

    async fn list<R: DeserializeOwned>(&self, path: &str, query: &impl Serialize) -> Answer<R> {
        let ok = StatusCode::OK;
        self.call(Method::GET, path, Some(query), None::<&()>, ok)
            .await
    }

    async fn send<R: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &impl Serialize,
        ok: StatusCode,
    ) -> Answer<R> {
        self.call(method, path, None::<&()>, Some(body), ok).await
    }

    pub async fn me(&self) -> Answer<Principal> {
        self.get("/v1/me").await
    }

    pub async fn create_tenant(&self, body: &CreateTenant) -> Answer<TenantView> {
        self.send(Method::POST, "/v1/tenants", body, StatusCode::CREATED)
            .await
    }

    pub async fn get_tenant(&self, id: &str) -> Answer<TenantView> {
        self.get(&format!("/v1/tenants/{id}")).await
    }

    pub async fn list_tenants(&self, query: &ListTenants) -> Answer<TenantPage> {
        self.list("/v1/tenants", query).await
    }

    pub async fn update_tenant(&self, id: &str, body: &UpdateTenant) -> Answer<TenantView> {
        self.send(
            Method::PATCH,
            &format!("/v1/tenants/{id}"),
            body,
            StatusCode::OK,
        )
        .await
    }

    pub async fn create_key(&self, body: &CreateKey) -> Answer<KeyWithSecret> {
        self.send(Method::POST, "/v1/keys", body, StatusCode::CREATED)
            .await
    }

    pub async fn get_key(&self, id: &str) -> Answer<KeyView> {
        self.get(&format!("/v1/keys/{id}")).await
    }

    pub async fn list_keys(&self, query: &ListKeys) -> Answer<KeyPage> {
        self.list("/v1/keys", query).await
    }

    pub async fn update_key(&self, id: &str, body: &UpdateKey) -> Answer<KeyView> {
        self.send(
            Method::PATCH,
            &format!("/v1/keys/{id}"),
            body,
            StatusCode::OK,
        )
        .await
    }

    pub async fn revoke_key(&self, id: &str, body: &RevokeKey) -> Answer<KeyView> {
        self.send(
            Method::POST,
            &format!("/v1/keys/{id}/revoke"),
            body,
            StatusCode::OK,
        )
        .await
    }

    pub async fn rotate_key(&self, id: &str, body: &RotateKey) -> Answer<KeyWithSecret> {
        self.send(
            Method::POST,
            &format!("/v1/keys/{id}/rotate"),
            body,
            StatusCode::CREATED,
        )
        .await
    }

    pub async fn delete_key(&self, id: &str) -> Answer<()> {
        let path = format!("/v1/keys/{id}");
        let ok = StatusCode::NO_CONTENT;
        self.call(Method::DELETE, &path, None::<&()>, None::<&()>, ok)
            .await
    }

    pub async fn verify(&self, body: &VerifyKey) -> Answer<VerifyResult> {
        self.send(Method::POST, "/v1/keys/verify", body, StatusCode::OK)
            .await
    }

    pub async fn credits(&self, tenant: &str) -> Answer<CreditsView> {
        self.get(&format!("/v1/tenants/{tenant}/credits")).await
    }

    pub async fn change_credits(
        &self,
        tenant: &str,
        body: &ChangeCredits,
    ) -> Answer<LedgerEntryView> {
        self.send(
            Method::POST,
            &format!("/v1/tenants/{tenant}/credits"),
            body,
            StatusCode::CREATED,
        )
        .await
    }

    pub async fn set_refill(&self, tenant: &str, body: &RefillSpec) -> Answer<CreditsView> {
        let path = format!("/v1/tenants/{tenant}/credits/refill");
        self.send(Method::PUT, &path, body, StatusCode::OK).await
    }

    pub async fn clear_refill(&self, tenant: &str) -> Answer<CreditsView> {
        let path = format!("/v1/tenants/{tenant}/credits/refill");
        let ok = StatusCode::OK;
        self.call(Method::DELETE, &path, None::<&()>, None::<&()>, ok)
            .await
    }

    pub async fn ledger(&self, tenant: &str, query: &ListLedger) -> Answer<LedgerPage> {
        self.list(&format!("/v1/tenants/{tenant}/credits/ledger"), query)
            .await
    }

    pub async fn audit(&self, query: &ListAudit) -> Answer<AuditPage> {
        self.list("/v1/audit", query).await
    }
}
