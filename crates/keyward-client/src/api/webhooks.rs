//! Webhook endpoints and their deliveries, events handed in by your API,
//! and alerts.

use http::Method;
use keyward_wire::{
    AlertView, CreateEndpoint, DeliveryDetail, DeliveryView, EndpointView, EndpointWithSecret,
    EventView, ListAlerts, ListDeliveries, ListEndpoints, Page, PublishEvent, PublishedEvent,
    RotateEndpointSecret, UpdateEndpoint,
};

use crate::call::{json_body, Call};
use crate::path::segment;
use crate::retry::Replay;
use crate::{paging, Client, ClientError};

impl Client {
    /// `POST /v1/webhooks`. The answer holds the signing secret, shown
    /// only this once.
    pub async fn create_webhook(
        &self,
        endpoint: &CreateEndpoint,
    ) -> Result<EndpointWithSecret, ClientError> {
        self.write(
            Method::POST,
            self.url("/v1/webhooks")?,
            Some(json_body(endpoint)?),
        )
        .await?
        .secret_json()
    }

    /// `GET /v1/webhooks`: one page, newest first (never the secrets).
    pub async fn list_webhooks(
        &self,
        query: &ListEndpoints,
    ) -> Result<Page<EndpointView>, ClientError> {
        self.read(self.url_with_query("/v1/webhooks", query)?).await
    }

    /// Every page of `GET /v1/webhooks` from `query.cursor` on, at most
    /// `max_pages` requests.
    pub async fn list_webhooks_all(
        &self,
        query: &ListEndpoints,
        max_pages: usize,
    ) -> Result<Page<EndpointView>, ClientError> {
        paging::walk(
            query,
            max_pages,
            |q| async move { self.list_webhooks(&q).await },
        )
        .await
    }

    /// `GET /v1/webhooks/{id}` (never the secret).
    pub async fn get_webhook(&self, id: &str) -> Result<EndpointView, ClientError> {
        self.read(self.url(&endpoint_path(id, ""))?).await
    }

    /// `PATCH /v1/webhooks/{id}`: absent fields stay.
    pub async fn update_webhook(
        &self,
        id: &str,
        changes: &UpdateEndpoint,
    ) -> Result<EndpointView, ClientError> {
        let url = self.url(&endpoint_path(id, ""))?;
        self.write(Method::PATCH, url, Some(json_body(changes)?))
            .await?
            .json()
    }

    /// `DELETE /v1/webhooks/{id}`: its pending deliveries are cancelled.
    pub async fn delete_webhook(&self, id: &str) -> Result<(), ClientError> {
        self.write(Method::DELETE, self.url(&endpoint_path(id, ""))?, None)
            .await
            .map(drop)
    }

    /// `POST /v1/webhooks/{id}/rotate-secret`: a new signing secret, shown
    /// only this once; the old one keeps signing for the overlap.
    pub async fn rotate_webhook_secret(
        &self,
        id: &str,
        rotate: &RotateEndpointSecret,
    ) -> Result<EndpointWithSecret, ClientError> {
        let url = self.url(&endpoint_path(id, "/rotate-secret"))?;
        self.write(Method::POST, url, Some(json_body(rotate)?))
            .await?
            .secret_json()
    }

    /// `POST /v1/webhooks/{id}/test`: a `webhook.test` event for this
    /// endpoint only.
    pub async fn test_webhook(&self, id: &str) -> Result<EventView, ClientError> {
        self.write(Method::POST, self.url(&endpoint_path(id, "/test"))?, None)
            .await?
            .json()
    }

    /// `GET /v1/webhooks/{id}/deliveries`: one page, newest first.
    pub async fn list_deliveries(
        &self,
        id: &str,
        query: &ListDeliveries,
    ) -> Result<Page<DeliveryView>, ClientError> {
        self.read(self.url_with_query(&endpoint_path(id, "/deliveries"), query)?)
            .await
    }

    /// Every page of an endpoint's deliveries from `query.cursor` on, at
    /// most `max_pages` requests.
    pub async fn list_deliveries_all(
        &self,
        id: &str,
        query: &ListDeliveries,
        max_pages: usize,
    ) -> Result<Page<DeliveryView>, ClientError> {
        paging::walk(query, max_pages, |q| async move {
            self.list_deliveries(id, &q).await
        })
        .await
    }

    /// `GET /v1/webhooks/{id}/deliveries/{event_id}`: the delivery, its
    /// event and every attempt.
    pub async fn get_delivery(
        &self,
        id: &str,
        event_id: &str,
    ) -> Result<DeliveryDetail, ClientError> {
        self.read(self.url(&delivery_path(id, event_id, ""))?).await
    }

    /// `POST /v1/webhooks/{id}/deliveries/{event_id}/redeliver`: sent again
    /// now, with a fresh retry schedule.
    pub async fn redeliver(&self, id: &str, event_id: &str) -> Result<DeliveryView, ClientError> {
        let url = self.url(&delivery_path(id, event_id, "/redeliver"))?;
        self.write(Method::POST, url, None).await?.json()
    }

    /// `POST /v1/events`: an event of your API for the tenant's endpoints
    /// subscribed to its type, recorded once however often it is sent. The
    /// idempotency key is `event.idempotency_key`, or one the client makes
    /// for this call (sent as `Idempotency-Key` on every attempt). A
    /// repeat answers the recorded event with `duplicate: true`, and so
    /// does this call when its first answer was lost and a retry found the
    /// event recorded.
    pub async fn publish_event(&self, event: &PublishEvent) -> Result<PublishedEvent, ClientError> {
        let idempotency_key = match event.idempotency_key {
            // The body's key wins over the header; it is sent as it is.
            Some(_) => None,
            None => Some(self.idempotency_key(None)?),
        };
        let call = Call {
            method: Method::POST,
            url: self.url("/v1/events")?,
            body: Some(json_body(event)?),
            idempotency_key,
            replay: Replay::Safe,
        };
        self.execute(&call).await?.json()
    }

    /// `GET /v1/alerts`: one page, newest first.
    pub async fn list_alerts(&self, query: &ListAlerts) -> Result<Page<AlertView>, ClientError> {
        self.read(self.url_with_query("/v1/alerts", query)?).await
    }

    /// Every page of `GET /v1/alerts` from `query.cursor` on, at most
    /// `max_pages` requests.
    pub async fn list_alerts_all(
        &self,
        query: &ListAlerts,
        max_pages: usize,
    ) -> Result<Page<AlertView>, ClientError> {
        paging::walk(
            query,
            max_pages,
            |q| async move { self.list_alerts(&q).await },
        )
        .await
    }
}

/// `/v1/webhooks/{id}` and what follows.
fn endpoint_path(id: &str, rest: &str) -> String {
    format!("/v1/webhooks/{}{rest}", segment(id))
}

/// `/v1/webhooks/{id}/deliveries/{event_id}` and what follows.
fn delivery_path(id: &str, event_id: &str, rest: &str) -> String {
    format!(
        "{}/deliveries/{}{rest}",
        endpoint_path(id, ""),
        segment(event_id)
    )
}
