//! Webhook endpoints (`/v1/webhooks`), their deliveries, events from the
//! upstream (`POST /v1/events`) and alerts (`/v1/alerts`). Each handler is
//! an adapter over the management service.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use keyward_manage::{AlertQuery, EndpointChanges, NewEndpoint, UpstreamEvent};
use keyward_store::{Alert, Attempt, Delivery, Endpoint, Event};
use keyward_views::{page_parts, paging, time};
use keyward_wire::{
    AlertPage, AlertView, AttemptView, CreateEndpoint, DeliveryDetail, DeliveryPage, DeliveryView,
    EndpointPage, EndpointView, EndpointWithSecret, EventView, ListAlerts, ListDeliveries,
    ListEndpoints, PublishEvent, PublishedEvent, RotateEndpointSecret, UpdateEndpoint,
};

use super::views::ProblemDoc;
use super::{Caller, Json, MaybeJson, Query};
use crate::ApiState;
use keyward_http::error::ApiError;

pub(crate) fn endpoint_view(e: &Endpoint) -> EndpointView {
    EndpointView {
        id: e.id.clone(),
        tenant_id: e.tenant_id.clone(),
        url: e.url.clone(),
        description: e.description.clone(),
        event_types: e.event_types.clone(),
        enabled: e.enabled,
        failing_since: e.failing_since.map(time),
        previous_secret_expires_at: e.previous_salt.as_ref().and(e.previous_until).map(time),
        created_at: time(e.created_at),
        updated_at: time(e.updated_at),
    }
}

fn delivery_view(d: &Delivery) -> DeliveryView {
    DeliveryView {
        event_id: d.event_id.clone(),
        event_type: d.event_type.clone(),
        status: d.status.as_str().to_owned(),
        attempts: d.attempts,
        next_attempt_at: d.next_at.map(time),
        last_status: d.last_status,
        last_error: d.last_error.clone(),
        created_at: time(d.created_at),
        updated_at: time(d.updated_at),
    }
}

fn attempt_view(a: &Attempt) -> AttemptView {
    AttemptView {
        at: time(a.at),
        status: a.status,
        latency_ms: a.latency_ms,
        response: a.response.clone(),
        error: a.error.clone(),
        ok: a.ok,
        node: a.node.clone(),
    }
}

fn event_view(e: &Event) -> EventView {
    EventView {
        id: e.id.clone(),
        event_type: e.event_type.clone(),
        timestamp: time(e.at),
        tenant_id: e.tenant_id.clone(),
        data: e.data.clone(),
    }
}

pub(crate) fn alert_view(a: &Alert) -> AlertView {
    AlertView {
        id: a.id.clone(),
        kind: a.kind.clone(),
        raised_at: time(a.at),
        tenant_id: a.tenant_id.clone(),
        key_id: a.key_id.clone(),
        details: a.details.clone(),
        resolved_at: a.resolved_at.map(time),
    }
}

const ENDPOINT_404: &str = "`not_found`: no such endpoint, or one the key may not see.";
const DISABLED_409: &str = "`webhooks_disabled`: webhooks are off in this deployment.";

/// Creates a webhook endpoint; the answer holds its signing secret, shown
/// only now (`keyward:webhooks:write`).
#[utoipa::path(
    post,
    path = "/v1/webhooks",
    tag = "webhooks",
    operation_id = "create_webhook_endpoint",
    request_body = CreateEndpoint,
    security(("bearer" = []), ("api_key" = []), ("basic" = [])),
    responses(
        (status = 201, body = EndpointWithSecret),
        (status = 400, description = "`invalid_body`: not JSON, a field of the wrong type, or an unknown field.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "`insufficient_scope`: the key lacks `keyward:webhooks:write`; `root_key_required`: a root key must name the tenant or none.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such tenant, or one the key may not see.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "`too_many_endpoints`: the tenant has `webhooks.max_endpoints`; `webhooks_disabled`: webhooks are off.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large`: the body is over `http.max_body_bytes`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported_media_type`: the body must be sent with `Content-Type: application/json`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: `errors` names each invalid field — `url` (`invalid_url`, `forbidden_address`: it resolves to a loopback, private or link-local address; `unresolvable_host`), `event_types`, `description`.", body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn create(
    State(state): State<ApiState>,
    caller: Caller,
    Json(body): Json<CreateEndpoint>,
) -> Result<(StatusCode, axum::Json<EndpointWithSecret>), ApiError> {
    let created = state
        .manage
        .create_endpoint(
            &caller.actor,
            NewEndpoint {
                tenant_id: body.tenant_id,
                url: body.url,
                description: body.description,
                event_types: body.event_types,
                enabled: body.enabled,
            },
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(EndpointWithSecret {
            secret: created.secret.to_whsec().to_string(),
            endpoint: endpoint_view(&created.endpoint),
        }),
    ))
}

/// Lists webhook endpoints, newest first (`keyward:webhooks:read`).
#[utoipa::path(
    get,
    path = "/v1/webhooks",
    tag = "webhooks",
    operation_id = "list_webhook_endpoints",
    params(ListEndpoints),
    security(("bearer" = []), ("api_key" = []), ("basic" = [])),
    responses(
        (status = 200, body = EndpointPage),
        (status = 400, description = "`invalid_query`: a query parameter of the wrong type; `invalid_cursor`: not a `next_cursor` this server gave.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "`insufficient_scope`: the key lacks `keyward:webhooks:read`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: a tenant the key may not see.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: `limit` is not 1 to 100.", body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn list(
    State(state): State<ApiState>,
    caller: Caller,
    Query(q): Query<ListEndpoints>,
) -> Result<axum::Json<EndpointPage>, ApiError> {
    let page = state
        .manage
        .list_endpoints(
            &caller.actor,
            q.tenant_id,
            paging(q.limit, q.cursor.as_deref()),
        )
        .await?;
    let (data, next_cursor, has_more) = page_parts(&page, endpoint_view);
    Ok(axum::Json(EndpointPage {
        data,
        next_cursor,
        has_more,
    }))
}

/// One webhook endpoint (`keyward:webhooks:read`).
#[utoipa::path(
    get,
    path = "/v1/webhooks/{id}",
    tag = "webhooks",
    operation_id = "get_webhook_endpoint",
    params(("id" = String, Path, description = "The endpoint's id, `whe_…`.")),
    security(("bearer" = []), ("api_key" = []), ("basic" = [])),
    responses(
        (status = 200, body = EndpointView),
        (status = 403, description = "`insufficient_scope`: the key lacks `keyward:webhooks:read`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = ENDPOINT_404, body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn get(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<EndpointView>, ApiError> {
    let e = state.manage.get_endpoint(&caller.actor, &id).await?;
    Ok(axum::Json(endpoint_view(&e)))
}

/// Changes an endpoint's URL, description, event types or enabled flag
/// (`keyward:webhooks:write`).
#[utoipa::path(
    patch,
    path = "/v1/webhooks/{id}",
    tag = "webhooks",
    operation_id = "update_webhook_endpoint",
    params(("id" = String, Path, description = "The endpoint's id, `whe_…`.")),
    request_body = UpdateEndpoint,
    security(("bearer" = []), ("api_key" = []), ("basic" = [])),
    responses(
        (status = 200, body = EndpointView),
        (status = 400, description = "`invalid_body`: not JSON, a field of the wrong type, or an unknown field.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "`insufficient_scope`: the key lacks `keyward:webhooks:write`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = ENDPOINT_404, body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = DISABLED_409, body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large`: the body is over `http.max_body_bytes`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported_media_type`: the body must be sent with `Content-Type: application/json`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: `errors` names each invalid field.", body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn update(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<UpdateEndpoint>,
) -> Result<axum::Json<EndpointView>, ApiError> {
    let e = state
        .manage
        .update_endpoint(
            &caller.actor,
            &id,
            EndpointChanges {
                url: body.url,
                description: body.description,
                event_types: body.event_types,
                enabled: body.enabled,
            },
        )
        .await?;
    Ok(axum::Json(endpoint_view(&e)))
}

/// Deletes an endpoint; its pending deliveries are cancelled
/// (`keyward:webhooks:write`).
#[utoipa::path(
    delete,
    path = "/v1/webhooks/{id}",
    tag = "webhooks",
    operation_id = "delete_webhook_endpoint",
    params(("id" = String, Path, description = "The endpoint's id, `whe_…`.")),
    security(("bearer" = []), ("api_key" = []), ("basic" = [])),
    responses(
        (status = 204, description = "Deleted."),
        (status = 403, description = "`insufficient_scope`: the key lacks `keyward:webhooks:write`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = ENDPOINT_404, body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn delete(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.manage.delete_endpoint(&caller.actor, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A new signing secret, shown only now; the old one keeps signing (both
/// signatures are sent) for the overlap (`keyward:webhooks:write`).
#[utoipa::path(
    post,
    path = "/v1/webhooks/{id}/rotate-secret",
    tag = "webhooks",
    operation_id = "rotate_webhook_secret",
    params(("id" = String, Path, description = "The endpoint's id, `whe_…`.")),
    request_body(content = Option<RotateEndpointSecret>, description = "Optional; an empty body takes the default overlap."),
    security(("bearer" = []), ("api_key" = []), ("basic" = [])),
    responses(
        (status = 200, body = EndpointWithSecret),
        (status = 400, description = "`invalid_body`: not JSON, a field of the wrong type, or an unknown field.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "`insufficient_scope`: the key lacks `keyward:webhooks:write`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = ENDPOINT_404, body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = DISABLED_409, body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large`: the body is over `http.max_body_bytes`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported_media_type`: the body must be sent with `Content-Type: application/json`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: `overlap_seconds` is over 604800.", body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn rotate(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    MaybeJson(body): MaybeJson<RotateEndpointSecret>,
) -> Result<axum::Json<EndpointWithSecret>, ApiError> {
    let overlap = body.and_then(|b| b.overlap_seconds);
    let r = state
        .manage
        .rotate_endpoint_secret(&caller.actor, &id, overlap)
        .await?;
    Ok(axum::Json(EndpointWithSecret {
        secret: r.secret.to_whsec().to_string(),
        endpoint: endpoint_view(&r.endpoint),
    }))
}

/// Sends a `webhook.test` event to this endpoint only
/// (`keyward:webhooks:write`).
#[utoipa::path(
    post,
    path = "/v1/webhooks/{id}/test",
    tag = "webhooks",
    operation_id = "send_webhook_test",
    params(("id" = String, Path, description = "The endpoint's id, `whe_…`.")),
    security(("bearer" = []), ("api_key" = []), ("basic" = [])),
    responses(
        (status = 202, body = EventView),
        (status = 403, description = "`insufficient_scope`: the key lacks `keyward:webhooks:write`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = ENDPOINT_404, body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = DISABLED_409, body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn test(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<(StatusCode, axum::Json<EventView>), ApiError> {
    let e = state.manage.send_test_event(&caller.actor, &id).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(event_view(&e))))
}

/// An endpoint's deliveries, newest first (`keyward:webhooks:read`).
#[utoipa::path(
    get,
    path = "/v1/webhooks/{id}/deliveries",
    tag = "webhooks",
    operation_id = "list_webhook_deliveries",
    params(("id" = String, Path, description = "The endpoint's id, `whe_…`."), ListDeliveries),
    security(("bearer" = []), ("api_key" = []), ("basic" = [])),
    responses(
        (status = 200, body = DeliveryPage),
        (status = 400, description = "`invalid_query`: a query parameter of the wrong type; `invalid_cursor`: not a `next_cursor` this server gave.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "`insufficient_scope`: the key lacks `keyward:webhooks:read`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = ENDPOINT_404, body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: `limit` is not 1 to 100.", body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn deliveries(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<ListDeliveries>,
) -> Result<axum::Json<DeliveryPage>, ApiError> {
    let page = state
        .manage
        .list_deliveries(&caller.actor, &id, paging(q.limit, q.cursor.as_deref()))
        .await?;
    let (data, next_cursor, has_more) = page_parts(&page, delivery_view);
    Ok(axum::Json(DeliveryPage {
        data,
        next_cursor,
        has_more,
    }))
}

/// One delivery: its event and every attempt (`keyward:webhooks:read`).
#[utoipa::path(
    get,
    path = "/v1/webhooks/{id}/deliveries/{event_id}",
    tag = "webhooks",
    operation_id = "get_webhook_delivery",
    params(
        ("id" = String, Path, description = "The endpoint's id, `whe_…`."),
        ("event_id" = String, Path, description = "The event's id, `msg_…` (the `webhook-id` header)."),
    ),
    security(("bearer" = []), ("api_key" = []), ("basic" = [])),
    responses(
        (status = 200, body = DeliveryDetail),
        (status = 403, description = "`insufficient_scope`: the key lacks `keyward:webhooks:read`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such endpoint or delivery, or one the key may not see.", body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn delivery(
    State(state): State<ApiState>,
    caller: Caller,
    Path((id, event_id)): Path<(String, String)>,
) -> Result<axum::Json<DeliveryDetail>, ApiError> {
    let log = state
        .manage
        .delivery_log(&caller.actor, &id, &event_id)
        .await?;
    Ok(axum::Json(DeliveryDetail {
        delivery: delivery_view(&log.delivery),
        event: event_view(&log.event),
        attempts: log.attempts.iter().map(attempt_view).collect(),
    }))
}

/// Sends a delivery again now, with a fresh retry schedule
/// (`keyward:webhooks:write`).
#[utoipa::path(
    post,
    path = "/v1/webhooks/{id}/deliveries/{event_id}/redeliver",
    tag = "webhooks",
    operation_id = "redeliver_webhook",
    params(
        ("id" = String, Path, description = "The endpoint's id, `whe_…`."),
        ("event_id" = String, Path, description = "The event's id, `msg_…`."),
    ),
    security(("bearer" = []), ("api_key" = []), ("basic" = [])),
    responses(
        (status = 202, body = DeliveryView),
        (status = 403, description = "`insufficient_scope`: the key lacks `keyward:webhooks:write`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such endpoint or delivery (or it was cancelled), or one the key may not see.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = DISABLED_409, body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn redeliver(
    State(state): State<ApiState>,
    caller: Caller,
    Path((id, event_id)): Path<(String, String)>,
) -> Result<(StatusCode, axum::Json<DeliveryView>), ApiError> {
    let d = state
        .manage
        .redeliver(&caller.actor, &id, &event_id)
        .await?;
    Ok((StatusCode::ACCEPTED, axum::Json(delivery_view(&d))))
}

/// Hands an event of the upstream API to keyward, which signs and delivers
/// it to the tenant's endpoints subscribed to its type
/// (`keyward:events:write`).
#[utoipa::path(
    post,
    path = "/v1/events",
    tag = "webhooks",
    operation_id = "publish_event",
    request_body = PublishEvent,
    params(("Idempotency-Key" = Option<String>, Header, description = "Used when the body has no `idempotency_key`.")),
    security(("bearer" = []), ("api_key" = []), ("basic" = [])),
    responses(
        (status = 202, description = "Recorded (or, with a used idempotency key, the recorded event).", body = PublishedEvent),
        (status = 400, description = "`invalid_body`: not JSON, a field of the wrong type, or an unknown field. `invalid_idempotency_key`: the Idempotency-Key header is malformed.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "`insufficient_scope`: the key lacks `keyward:events:write`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such tenant, or one the key may not see.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = DISABLED_409, body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large`: the body is over `http.max_body_bytes`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported_media_type`: the body must be sent with `Content-Type: application/json`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: `type` (`invalid_event_type`, `reserved_type`), `data` (not an object, over 64 KiB), `tenant_id` (operators must name it) or `idempotency_key`.", body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn publish(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    Json(body): Json<PublishEvent>,
) -> Result<(StatusCode, axum::Json<PublishedEvent>), ApiError> {
    let header_key = keyward_gateway::idempotency::key_of(&headers)?;
    let r = state
        .manage
        .publish_event(
            &caller.actor,
            UpstreamEvent {
                tenant_id: body.tenant_id,
                event_type: body.event_type,
                data: body.data,
                idempotency_key: body.idempotency_key.or(header_key),
            },
        )
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(PublishedEvent {
            id: r.event.id,
            event_type: r.event.event_type,
            tenant_id: r.event.tenant_id,
            deliveries: r.deliveries,
            duplicate: r.duplicate,
        }),
    ))
}

/// Lists alerts, newest first (`keyward:alerts:read`).
#[utoipa::path(
    get,
    path = "/v1/alerts",
    tag = "webhooks",
    operation_id = "list_alerts",
    params(ListAlerts),
    security(("bearer" = []), ("api_key" = []), ("basic" = [])),
    responses(
        (status = 200, body = AlertPage),
        (status = 400, description = "`invalid_query`: a query parameter of the wrong type; `invalid_cursor`: not a `next_cursor` this server gave.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "`insufficient_scope`: the key lacks `keyward:alerts:read`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: a tenant the key may not see.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: `limit` is not 1 to 100.", body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn alerts(
    State(state): State<ApiState>,
    caller: Caller,
    Query(q): Query<ListAlerts>,
) -> Result<axum::Json<AlertPage>, ApiError> {
    let page = state
        .manage
        .list_alerts(
            &caller.actor,
            AlertQuery {
                tenant_id: q.tenant_id,
                key_id: q.key_id,
                kind: q.kind,
                open: q.open.unwrap_or(false),
                paging: paging(q.limit, q.cursor.as_deref()),
            },
        )
        .await?;
    let (data, next_cursor, has_more) = page_parts(&page, alert_view);
    Ok(axum::Json(AlertPage {
        data,
        next_cursor,
        has_more,
    }))
}
