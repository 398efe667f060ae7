//! `/admin/v1/byok-keys`: what an admin portal's BYOK page calls. Register (verified), read with
//! state and object counts, enable/disable, rotate, delete; each organization's broker-generated
//! `sts:ExternalId` (`/admin/v1/byok-external-ids`); plus `/admin/v1/metrics`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::extract::{AdminCaller, JsonBody};
use super::wire::admin::List;
use super::wire::byok::{
    ByokExternalId, ByokKey, Deleted, RegisterByokKeyRequest, RotateByokKeyRequest,
};
use crate::broker::Broker;
use crate::error::{Error, ErrorCode};
use crate::keyring::bindings::Binding;
use crate::services::actor::Actor;
use crate::services::byok::service::PROVIDER_AWS_KMS;

pub fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route("/admin/v1/byok-keys", post(register).get(list))
        .route(
            "/admin/v1/byok-keys/{id}",
            get(show).put(rotate).delete(remove),
        )
        .route("/admin/v1/byok-keys/{id}/disable", post(disable))
        .route("/admin/v1/byok-keys/{id}/enable", post(enable))
        .route("/admin/v1/byok-keys/{id}/retire", post(retire))
        .route(
            "/admin/v1/byok-external-ids/{organization_id}",
            get(external_id),
        )
        .route("/admin/v1/metrics", get(metrics))
}

/// The binding as the admin API shows it (see [`ByokKey`]).
async fn byok_key_response(broker: &Broker, binding: &Binding) -> Result<Response, Error> {
    let counts = broker.byok.count_objects_by_kek().await?;
    let outside = broker.byok.count_objects_outside(binding).await?;
    let rotations = broker.byok.kek_rotations().await?;
    Ok(Json(ByokKey::of(binding, &counts, outside, &rotations)).into_response())
}

/// Registers a tenant's KMS key for a match context, after verifying the broker can use it.
#[utoipa::path(post, path = "/admin/v1/byok-keys", operation_id = "register_byok_key", tag = "byok",
    security(("admin_key" = [])), request_body = RegisterByokKeyRequest,
    responses((status = 201, description = "Registered", body = ByokKey)))]
async fn register(
    State(broker): State<Arc<Broker>>,
    AdminCaller(admin): AdminCaller,
    JsonBody(body): JsonBody<RegisterByokKeyRequest>,
) -> Result<Response, Error> {
    let (match_context, provider, spec) = body.into_parts();
    if provider != PROVIDER_AWS_KMS {
        return Err(Error::invalid(
            ErrorCode::InvalidProvider,
            format!("provider must be \"{PROVIDER_AWS_KMS}\""),
        ));
    }
    let match_context = match_context.into_context()?;
    let binding = broker
        .byok
        .register_byok_key(Actor::ApiKey(&admin), match_context, spec)
        .await?;
    let mut response = byok_key_response(&broker, &binding).await?;
    *response.status_mut() = StatusCode::CREATED;
    Ok(response)
}

/// Every BYOK key, with state and object counts.
#[utoipa::path(get, path = "/admin/v1/byok-keys", operation_id = "list_byok_keys", tag = "byok",
    security(("admin_key" = [])),
    responses((status = 200, description = "The keys", body = List<ByokKey>)))]
async fn list(
    State(broker): State<Arc<Broker>>,
    AdminCaller(_admin): AdminCaller,
) -> Result<Response, Error> {
    let bindings = broker.byok.bindings();
    let counts = broker.byok.count_objects_by_kek().await?;
    let rotations = broker.byok.kek_rotations().await?;
    let mut data = Vec::new();
    for binding in bindings.all() {
        let outside = broker.byok.count_objects_outside(binding).await?;
        data.push(ByokKey::of(binding, &counts, outside, &rotations));
    }
    Ok(Json(List::of(data)).into_response())
}

/// One BYOK key, with state and object counts.
#[utoipa::path(get, path = "/admin/v1/byok-keys/{id}", operation_id = "get_byok_key", tag = "byok",
    security(("admin_key" = [])), params(("id" = String, Path, description = "BYOK key id")),
    responses((status = 200, description = "The key", body = ByokKey)))]
async fn show(
    State(broker): State<Arc<Broker>>,
    AdminCaller(_admin): AdminCaller,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    let bindings = broker.byok.bindings();
    let binding = bindings.get(&id).ok_or(Error::NotFound("BYOK key"))?;
    byok_key_response(&broker, binding).await
}

/// Points the BYOK key at a new CMK; the earlier ones keep decrypting until rewrapped.
#[utoipa::path(put, path = "/admin/v1/byok-keys/{id}", operation_id = "rotate_byok_key", tag = "byok",
    security(("admin_key" = [])), params(("id" = String, Path, description = "BYOK key id")), request_body = RotateByokKeyRequest,
    responses((status = 200, description = "The key", body = ByokKey)))]
async fn rotate(
    State(broker): State<Arc<Broker>>,
    AdminCaller(admin): AdminCaller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<RotateByokKeyRequest>,
) -> Result<Response, Error> {
    let binding = broker
        .byok
        .rotate_byok_key(Actor::ApiKey(&admin), &id, body.into())
        .await?;
    byok_key_response(&broker, &binding).await
}

/// Stops serving the key's data (fail closed) until enabled again.
#[utoipa::path(post, path = "/admin/v1/byok-keys/{id}/disable", operation_id = "disable_byok_key", tag = "byok",
    security(("admin_key" = [])), params(("id" = String, Path, description = "BYOK key id")),
    responses((status = 200, description = "The key", body = ByokKey)))]
async fn disable(
    State(broker): State<Arc<Broker>>,
    AdminCaller(admin): AdminCaller,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    let binding = broker
        .byok
        .disable_byok_key(Actor::ApiKey(&admin), &id)
        .await?;
    byok_key_response(&broker, &binding).await
}

/// Serves the key's data again.
#[utoipa::path(post, path = "/admin/v1/byok-keys/{id}/enable", operation_id = "enable_byok_key", tag = "byok",
    security(("admin_key" = [])), params(("id" = String, Path, description = "BYOK key id")),
    responses((status = 200, description = "The key", body = ByokKey)))]
async fn enable(
    State(broker): State<Arc<Broker>>,
    AdminCaller(admin): AdminCaller,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    let binding = broker
        .byok
        .enable_byok_key(Actor::ApiKey(&admin), &id)
        .await?;
    byok_key_response(&broker, &binding).await
}

/// Retires the key: new data goes under platform KEKs; existing data stays readable until rewrapped.
#[utoipa::path(post, path = "/admin/v1/byok-keys/{id}/retire", operation_id = "retire_byok_key", tag = "byok",
    security(("admin_key" = [])), params(("id" = String, Path, description = "BYOK key id")),
    responses((status = 200, description = "The key", body = ByokKey)))]
async fn retire(
    State(broker): State<Arc<Broker>>,
    AdminCaller(admin): AdminCaller,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    let binding = broker
        .byok
        .retire_byok_key(Actor::ApiKey(&admin), &id)
        .await?;
    byok_key_response(&broker, &binding).await
}

/// Deletes a BYOK key no object is under any more.
#[utoipa::path(delete, path = "/admin/v1/byok-keys/{id}", operation_id = "delete_byok_key", tag = "byok",
    security(("admin_key" = [])), params(("id" = String, Path, description = "BYOK key id")),
    responses((status = 200, description = "Deleted", body = Deleted)))]
async fn remove(
    State(broker): State<Arc<Broker>>,
    AdminCaller(admin): AdminCaller,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    broker
        .byok
        .delete_byok_key(Actor::ApiKey(&admin), &id)
        .await?;
    Ok(Json(Deleted {
        deleted: true,
        id: &id,
    })
    .into_response())
}

#[utoipa::path(get, path = "/admin/v1/byok-external-ids/{organization_id}", operation_id = "get_byok_external_id", tag = "byok",
    security(("admin_key" = [])), params(("organization_id" = String, Path, description = "Organization id")),
    responses((status = 200, description = "The organization's external id", body = ByokExternalId)))]
/// The organization's `sts:ExternalId` for its role's trust policy: generated on first request,
/// the same ever after, so the tenant can create the role before the key is registered.
async fn external_id(
    State(broker): State<Arc<Broker>>,
    AdminCaller(_admin): AdminCaller,
    Path(organization_id): Path<String>,
) -> Result<Response, Error> {
    let id = broker.byok.byok_external_id(&organization_id).await?;
    Ok(Json(ByokExternalId::of(&id)).into_response())
}

/// prometheus-client renders OpenMetrics text (`# EOF`, `_total` samples), which a scraper must
/// not read as the older Prometheus text format.
const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The broker's metrics, OpenMetrics text.
#[utoipa::path(get, path = "/admin/v1/metrics", operation_id = "get_metrics", tag = "admin",
    security(("admin_key" = [])),
    responses((status = 200, description = "OpenMetrics text exposition", body = String,
        content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8")))]
async fn metrics(
    State(broker): State<Arc<Broker>>,
    AdminCaller(_admin): AdminCaller,
) -> impl IntoResponse {
    metrics_text(State(broker)).await
}

/// The exposition itself; the metrics listener (`metrics_listen`) serves it without a key.
pub(super) async fn metrics_text(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)],
        broker.render_metrics(),
    )
}
