//! `/vault/v1`: the WorkOS Vault wire API (paths, JSON shapes, status codes) over the vault use
//! cases. Path segments arrive percent-decoded by the router.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::extract::{AppCaller, JsonBody, RawBody, parse_json};
use super::idempotency;
use super::wire::data_key::{DataKeyPair, DecryptedDataKey};
use super::wire::objects::{DeletedObject, ObjectList, ObjectListCursors, ObjectSummary};
use super::wire::versions::VersionList;
use super::wire::{Metadata, Object};
use crate::broker::Broker;
use crate::context::KeyContext;
use crate::context::json::ContextJson;
use crate::error::{Error, ErrorCode};
use crate::timestamp::Timestamp;
use crate::vault::cursor::{self, Cursor};
use crate::vault::{IdempotencyRequest, IdempotentOutcome, ListQuery, ObjectMeta, Order};

const MAX_LIST_LIMIT: usize = 100;

pub fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route("/vault/v1/kv", post(create_object).get(list_objects))
        .route("/vault/v1/kv/name/{name}", get(read_object_by_name))
        .route(
            "/vault/v1/kv/{id}",
            get(read_object).put(update_object).delete(delete_object),
        )
        .route("/vault/v1/kv/{id}/metadata", get(describe_object))
        .route("/vault/v1/kv/{id}/versions", get(list_versions))
        .route("/vault/v1/keys/data-key", post(create_data_key))
        .route("/vault/v1/keys/decrypt", post(decrypt_data_key))
        .route("/vault/v1/keys/rekey", post(rekey))
}

fn metadata_json(meta: &ObjectMeta) -> Value {
    serde_json::to_value(Metadata::of(meta)).unwrap_or(Value::Null)
}

/// Serializes at once, so the response may borrow from the use case's result.
fn object_response(status: StatusCode, meta: &ObjectMeta, value: Option<&str>) -> Response {
    (status, Json(Object::of(meta, value))).into_response()
}

/// Serializes at once, so the body may borrow from the issued key (the DEK's base64 is wiped
/// when the response struct drops).
fn data_key_response<T: serde::Serialize>(body: T) -> Response {
    Json(body).into_response()
}

/// Context fields arrive as arbitrary JSON, read pair by pair so a repeated name is seen;
/// validation gives 422 `invalid_context` with the offending pair.
fn context_from(value: ContextJson) -> Result<KeyContext, Error> {
    Ok(value.into_context()?)
}

#[derive(Deserialize, ToSchema)]
struct CreateObjectBody {
    /// 1-200 characters after trimming, no control characters; unique within its key context.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    name: String,
    value: String,
    #[schema(value_type = KeyContext)]
    key_context: ContextJson,
}

/// Creates an object: its value encrypted under a fresh DEK wrapped by the context's KEK.
#[utoipa::path(post, path = "/vault/v1/kv", operation_id = "create_object", tag = "vault",
    security(("app_key" = [])),
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 255,
        description = "Replays the first answer to a retried create (1-255 printable ASCII characters)")),
    request_body = CreateObjectBody,
    responses((status = 201, description = "Created: the new object's metadata", body = Metadata)))]
async fn create_object(
    State(broker): State<Arc<Broker>>,
    AppCaller(caller): AppCaller,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, Error> {
    let idempotency_key = idempotency::idempotency_key(&headers)?;
    let parsed: CreateObjectBody = parse_json(&body)?;
    let context = context_from(parsed.key_context)?;
    let Some(key) = idempotency_key else {
        let meta = broker
            .vault
            .create_object(&caller, &parsed.name, &parsed.value, context)
            .await?;
        return Ok((StatusCode::CREATED, Json(metadata_json(&meta))).into_response());
    };
    let request = IdempotencyRequest {
        key: &key,
        request_hash: Sha256::digest(&body).to_vec(),
        respond: |meta| (201, metadata_json(meta).to_string()),
    };
    match broker
        .vault
        .create_object_idempotent(&caller, &parsed.name, &parsed.value, context, request)
        .await?
    {
        IdempotentOutcome::Created(meta) => {
            Ok((StatusCode::CREATED, Json(metadata_json(&meta))).into_response())
        }
        IdempotentOutcome::Replay { status, body } => idempotency::replay(status, &body),
    }
}

/// Reads an object's value and metadata by id.
#[utoipa::path(get, path = "/vault/v1/kv/{id}", operation_id = "read_object", tag = "vault",
    security(("app_key" = [])), params(("id" = String, Path, description = "Object id")),
    responses((status = 200, description = "The object, with its value", body = Object)))]
async fn read_object(
    State(broker): State<Arc<Broker>>,
    AppCaller(caller): AppCaller,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    let object = broker.vault.read_object(&caller, &id).await?;
    Ok(object_response(
        StatusCode::OK,
        &object.meta,
        Some(&object.value),
    ))
}

/// Reads an object's value and metadata by name.
#[utoipa::path(get, path = "/vault/v1/kv/name/{name}", operation_id = "read_object_by_name", tag = "vault",
    security(("app_key" = [])), params(("name" = String, Path, description = "Object name")),
    responses((status = 200, description = "The object, with its value", body = Object)))]
async fn read_object_by_name(
    State(broker): State<Arc<Broker>>,
    AppCaller(caller): AppCaller,
    Path(name): Path<String>,
) -> Result<Response, Error> {
    let object = broker.vault.read_object_by_name(&caller, &name).await?;
    Ok(object_response(
        StatusCode::OK,
        &object.meta,
        Some(&object.value),
    ))
}

/// An object's metadata, without its value.
#[utoipa::path(get, path = "/vault/v1/kv/{id}/metadata", operation_id = "describe_object", tag = "vault",
    security(("app_key" = [])), params(("id" = String, Path, description = "Object id")),
    responses((status = 200, description = "The object without `value`", body = Object)))]
async fn describe_object(
    State(broker): State<Arc<Broker>>,
    AppCaller(caller): AppCaller,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    let meta = broker.vault.describe_object(&caller, &id).await?;
    Ok(object_response(StatusCode::OK, &meta, None))
}

#[derive(Deserialize, ToSchema)]
struct UpdateObjectBody {
    value: String,
    /// The `version_id` the caller last read: the update is refused if another came since.
    #[serde(default)]
    version_check: Option<String>,
}

/// Replaces an object's value (a new version, under the object's context).
#[utoipa::path(put, path = "/vault/v1/kv/{id}", operation_id = "update_object", tag = "vault",
    security(("app_key" = [])), params(("id" = String, Path, description = "Object id")),
    request_body = UpdateObjectBody,
    responses((status = 201, description = "Updated: the object without `value`", body = Object)))]

async fn update_object(
    State(broker): State<Arc<Broker>>,
    AppCaller(caller): AppCaller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<UpdateObjectBody>,
) -> Result<Response, Error> {
    let meta = broker
        .vault
        .update_object(&caller, &id, &body.value, body.version_check)
        .await?;
    Ok(object_response(StatusCode::CREATED, &meta, None))
}

/// Deletes an object and all its versions.
#[utoipa::path(delete, path = "/vault/v1/kv/{id}", operation_id = "delete_object", tag = "vault",
    security(("app_key" = [])),
    params(("id" = String, Path, description = "Object id"),
        ("version_check" = Option<String>, Query, description = "Refuse unless this is the current `version_id`")),
    responses((status = 200, description = "Deleted", body = DeletedObject)))]
async fn delete_object(
    State(broker): State<Arc<Broker>>,
    AppCaller(caller): AppCaller,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, Error> {
    let version_check = query
        .get("version_check")
        .filter(|v| !v.is_empty())
        .cloned();
    let name = broker
        .vault
        .delete_object(&caller, &id, version_check)
        .await?;
    Ok(Json(DeletedObject {
        name: &name,
        success: true,
    })
    .into_response())
}

/// The objects this key can see, by update time, with cursor paging.
#[utoipa::path(get, path = "/vault/v1/kv", operation_id = "list_objects", tag = "vault",
    security(("app_key" = [])),
    params(("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Page size (default 10)"),
        ("order" = Option<String>, Query, description = "`asc` or `desc` (default)"),
        ("after" = Option<String>, Query, description = "A `list_metadata.after` cursor"),
        ("before" = Option<String>, Query, description = "A `list_metadata.before` cursor"),
        ("search" = Option<String>, Query, description = "Names containing this text"),
        ("updated_after" = Option<String>, Query, description = "RFC 3339 time (also read as `updatedAfter`)")),
    responses((status = 200, description = "A page of objects", body = ObjectList)))]
async fn list_objects(
    State(broker): State<Arc<Broker>>,
    AppCaller(caller): AppCaller,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, Error> {
    let limit = match query.get("limit") {
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=MAX_LIST_LIMIT).contains(l))
            .ok_or_else(|| {
                Error::invalid(
                    ErrorCode::InvalidLimit,
                    format!("limit must be 1-{MAX_LIST_LIMIT}"),
                )
            })?,
        None => 10,
    };
    let order = match query.get("order").map(String::as_str) {
        None | Some("desc") => Order::Desc,
        Some("asc") => Order::Asc,
        Some(other) => {
            return Err(Error::invalid(
                ErrorCode::InvalidOrder,
                format!("order must be asc or desc, not {other:?}"),
            ));
        }
    };
    // The SDKs send both spellings, in RFC 3339 or in JavaScript's Date.toString() form.
    let updated_after = match query
        .get("updated_after")
        .or(query.get("updatedAfter"))
        .filter(|t| !t.is_empty())
    {
        Some(text) => Some(Timestamp::parse(text).ok_or_else(|| {
            Error::invalid(
                ErrorCode::InvalidUpdatedAfter,
                format!("cannot parse updated_after {text:?}"),
            )
        })?),
        None => None,
    };
    let non_empty = |name: &str| query.get(name).filter(|v| !v.is_empty()).cloned();
    let after = list_cursor(&query, "after")?;
    let before = list_cursor(&query, "before")?;
    let list = ListQuery {
        limit,
        order,
        after: None,
        before: None,
        search: non_empty("search"),
        updated_after,
        scope: Vec::new(),
    };
    let paging_back = before.is_some() && after.is_none();
    let had_cursor = after.is_some() || before.is_some();
    let (page, more) = broker
        .vault
        .list_objects(&caller, list, after, before)
        .await?;
    let data: Vec<ObjectSummary> = page
        .iter()
        .map(|o| ObjectSummary {
            id: &o.id,
            name: &o.name,
            updated_at: &o.updated_at,
        })
        .collect();
    // Cursors encode a position, not an id, so they survive their object's deletion.
    let first = page.first().map(|o| cursor::encode(&o.position));
    let last = page.last().map(|o| cursor::encode(&o.position));
    // `after` is the next cursor when more items follow; `before` is set when not on the first page.
    let (after, before) = if paging_back {
        (last, more.then_some(first).flatten())
    } else {
        (
            more.then_some(last).flatten(),
            had_cursor.then_some(first).flatten(),
        )
    };
    Ok(Json(ObjectList {
        data,
        list_metadata: ObjectListCursors { after, before },
        object: "list",
    })
    .into_response())
}

/// A list cursor parameter: absent or empty is none; anything else must decode.
fn list_cursor(query: &HashMap<String, String>, name: &str) -> Result<Option<Cursor>, Error> {
    match query.get(name).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(text) => cursor::decode(text).map(Some).map_err(|_| {
            Error::invalid(
                ErrorCode::InvalidCursor,
                format!(
                    "{name} must be a list_metadata cursor or the id of an object this key can see"
                ),
            )
        }),
    }
}

/// An object's versions, newest first.
#[utoipa::path(get, path = "/vault/v1/kv/{id}/versions", operation_id = "list_versions", tag = "vault",
    security(("app_key" = [])), params(("id" = String, Path, description = "Object id")),
    responses((status = 200, description = "The versions", body = VersionList)))]
async fn list_versions(
    State(broker): State<Arc<Broker>>,
    AppCaller(caller): AppCaller,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    let versions = broker.vault.list_versions(&caller, &id).await?;
    Ok(Json(VersionList::of(&versions)).into_response())
}

#[derive(Deserialize, ToSchema)]
struct DataKeyBody {
    #[schema(value_type = KeyContext)]
    context: ContextJson,
}

/// A fresh data key for client-side encryption, and its wrapped form to store beside the data.
#[utoipa::path(post, path = "/vault/v1/keys/data-key", operation_id = "create_data_key", tag = "vault",
    security(("app_key" = [])), request_body = DataKeyBody,
    responses((status = 200, description = "The data key and `encrypted_keys`", body = DataKeyPair)))]

async fn create_data_key(
    State(broker): State<Arc<Broker>>,
    AppCaller(caller): AppCaller,
    JsonBody(body): JsonBody<DataKeyBody>,
) -> Result<Response, Error> {
    let issued = broker
        .vault
        .create_data_key(&caller, context_from(body.context)?)
        .await?;
    Ok(data_key_response(DataKeyPair::of(&issued)))
}

#[derive(Deserialize, ToSchema)]
struct DecryptBody {
    /// An `encrypted_keys` blob from `create_data_key` or `rekey`.
    keys: String,
}

/// Unwraps a data key from its `encrypted_keys` blob.
#[utoipa::path(post, path = "/vault/v1/keys/decrypt", operation_id = "decrypt_data_key", tag = "vault",
    security(("app_key" = [])), request_body = DecryptBody,
    responses((status = 200, description = "The data key", body = DecryptedDataKey)))]

async fn decrypt_data_key(
    State(broker): State<Arc<Broker>>,
    AppCaller(caller): AppCaller,
    JsonBody(body): JsonBody<DecryptBody>,
) -> Result<Response, Error> {
    let issued = broker.vault.decrypt_data_key(&caller, &body.keys).await?;
    Ok(data_key_response(DecryptedDataKey::of(&issued)))
}

#[derive(Deserialize, ToSchema)]
struct RekeyBody {
    #[schema(value_type = KeyContext)]
    context: ContextJson,
    encrypted_keys: String,
}

/// Re-wraps a data key under another context's KEK.
#[utoipa::path(post, path = "/vault/v1/keys/rekey", operation_id = "rekey", tag = "vault",
    security(("app_key" = [])), request_body = RekeyBody,
    responses((status = 200, description = "The data key and its new `encrypted_keys`", body = DataKeyPair)))]

async fn rekey(
    State(broker): State<Arc<Broker>>,
    AppCaller(caller): AppCaller,
    JsonBody(body): JsonBody<RekeyBody>,
) -> Result<Response, Error> {
    let issued = broker
        .vault
        .rekey(&caller, context_from(body.context)?, &body.encrypted_keys)
        .await?;
    Ok(data_key_response(DataKeyPair::of(&issued)))
}
