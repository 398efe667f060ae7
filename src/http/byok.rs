//! `/admin/v1/byok-keys`: what an admin portal's BYOK page calls. Register (verified), read with
//! state and object counts, enable/disable, rotate, delete; each organization's broker-generated
//! `sts:ExternalId` (`/admin/v1/byok-external-ids`); plus `/admin/v1/metrics`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::{AdminCaller, JsonBody};
use crate::broker::Broker;
use crate::context::json::ContextJson;
use crate::error::{Error, ErrorCode};
use crate::keyring::bindings::Binding;
use crate::services::byok::service::{KeySpec, PROVIDER_AWS_KMS};

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    match_context: ContextJson,
    provider: String,
    key_arn: String,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    role_arn: Option<String>,
    #[serde(default)]
    external_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    key_arn: String,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    role_arn: Option<String>,
    #[serde(default)]
    external_id: Option<String>,
}

/// The binding as the admin API shows it, with how many objects each of its CMKs still protects
/// and how many covered objects still sit under another (platform) KEK.
async fn binding_json(broker: &Broker, binding: &Binding) -> Result<Value, Error> {
    let counts = broker.byok.count_objects_by_kek().await?;
    binding_json_with(broker, binding, &counts).await
}

/// As [`binding_json`], with the per-KEK object counts computed once by the caller (a list).
async fn binding_json_with(
    broker: &Broker,
    binding: &Binding,
    counts: &HashMap<String, u64>,
) -> Result<Value, Error> {
    let record = &binding.record;
    let outside = broker.byok.count_objects_outside(binding).await?;
    let current = binding.current_kek();
    let state = binding.state();
    let reason = match &state {
        crate::keyring::bindings::BindingState::Unavailable(reason) => Some(reason.clone()),
        crate::keyring::bindings::BindingState::Disabled => Some("disabled_by_admin".to_owned()),
        crate::keyring::bindings::BindingState::Active
        | crate::keyring::bindings::BindingState::Retired => None,
    };
    let keks: Vec<Value> = record
        .keks
        .iter()
        .map(|k| {
            json!({
                "key_arn": k.key_arn,
                "current": k.key_arn == record.current_kek,
                "region": k.region,
                "role_arn": k.role_arn,
                "external_id": k.external_id,
                "available": k.available,
                "reason": k.reason,
                "last_checked_at": k.last_checked_at,
                "objects": counts.get(&k.key_arn).copied().unwrap_or(0),
            })
        })
        .collect();
    Ok(json!({
        "object": "byok_key",
        "id": record.id,
        "match_context": binding.match_context,
        "provider": record.provider,
        "key_arn": record.current_kek,
        "region": current.and_then(|k| k.region.clone()),
        "role_arn": current.and_then(|k| k.role_arn.clone()),
        "external_id": current.and_then(|k| k.external_id.clone()),
        "state": state.as_str(),
        "reason": reason,
        "last_checked_at": current.and_then(|k| k.last_checked_at.clone()),
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "keks": keks,
        "objects_under_other_keys": outside,
    }))
}

async fn register(
    State(broker): State<Arc<Broker>>,
    AdminCaller(_admin): AdminCaller,
    JsonBody(body): JsonBody<RegisterBody>,
) -> Result<(StatusCode, Json<Value>), Error> {
    if body.provider != PROVIDER_AWS_KMS {
        return Err(Error::invalid(
            ErrorCode::InvalidProvider,
            format!("provider must be \"{PROVIDER_AWS_KMS}\""),
        ));
    }
    let match_context = body.match_context.into_context()?;
    let spec = KeySpec {
        key_arn: body.key_arn,
        region: body.region,
        role_arn: body.role_arn,
        external_id: body.external_id,
    };
    let binding = broker.byok.register_byok_key(match_context, spec).await?;
    Ok((
        StatusCode::CREATED,
        Json(binding_json(&broker, &binding).await?),
    ))
}

async fn list(
    State(broker): State<Arc<Broker>>,
    AdminCaller(_admin): AdminCaller,
) -> Result<Json<Value>, Error> {
    let bindings = broker.byok.bindings();
    let counts = broker.byok.count_objects_by_kek().await?;
    let mut data = Vec::new();
    for binding in bindings.all() {
        data.push(binding_json_with(&broker, binding, &counts).await?);
    }
    Ok(Json(json!({"object": "list", "data": data})))
}

async fn show(
    State(broker): State<Arc<Broker>>,
    AdminCaller(_admin): AdminCaller,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    let bindings = broker.byok.bindings();
    let binding = bindings.get(&id).ok_or(Error::NotFound("BYOK key"))?;
    Ok(Json(binding_json(&broker, binding).await?))
}

async fn rotate(
    State(broker): State<Arc<Broker>>,
    AdminCaller(_admin): AdminCaller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<RotateBody>,
) -> Result<Json<Value>, Error> {
    let spec = KeySpec {
        key_arn: body.key_arn,
        region: body.region,
        role_arn: body.role_arn,
        external_id: body.external_id,
    };
    let binding = broker.byok.rotate_byok_key(&id, spec).await?;
    Ok(Json(binding_json(&broker, &binding).await?))
}

async fn disable(
    State(broker): State<Arc<Broker>>,
    AdminCaller(_admin): AdminCaller,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    let binding = broker.byok.disable_byok_key(&id).await?;
    Ok(Json(binding_json(&broker, &binding).await?))
}

async fn enable(
    State(broker): State<Arc<Broker>>,
    AdminCaller(_admin): AdminCaller,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    let binding = broker.byok.enable_byok_key(&id).await?;
    Ok(Json(binding_json(&broker, &binding).await?))
}

async fn retire(
    State(broker): State<Arc<Broker>>,
    AdminCaller(_admin): AdminCaller,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    let binding = broker.byok.retire_byok_key(&id).await?;
    Ok(Json(binding_json(&broker, &binding).await?))
}

async fn remove(
    State(broker): State<Arc<Broker>>,
    AdminCaller(_admin): AdminCaller,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    broker.byok.delete_byok_key(&id).await?;
    Ok(Json(json!({"id": id, "deleted": true})))
}

/// The organization's `sts:ExternalId` for its role's trust policy: generated on first request,
/// the same ever after, so the tenant can create the role before the key is registered.
async fn external_id(
    State(broker): State<Arc<Broker>>,
    AdminCaller(_admin): AdminCaller,
    Path(organization_id): Path<String>,
) -> Result<Json<Value>, Error> {
    let id = broker.byok.byok_external_id(&organization_id).await?;
    Ok(Json(json!({
        "object": "byok_external_id",
        "organization_id": id.organization_id,
        "external_id": id.external_id,
        "created_at": id.created_at,
    })))
}

async fn metrics(
    State(broker): State<Arc<Broker>>,
    AdminCaller(_admin): AdminCaller,
) -> impl IntoResponse {
    let text = broker
        .metrics
        .render(&broker.keyring.bindings(), broker.dek_cache.stats());
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}
