//! `/admin/v1`: API keys (create, list, revoke) and audit events (filters, cursor pagination).
//! Admin keys only. A new key's token is returned once, at creation, and never again.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::{AdminCaller, JsonBody};
use crate::auth::Role;
use crate::broker::Broker;
use crate::context::json::ContextJson;
use crate::error::{Error, ErrorCode};
use crate::services::api_keys::ApiKeyRecord;
use crate::services::audit::EventQuery;
use crate::timestamp::Timestamp;

const MAX_EVENTS_LIMIT: usize = 100;

pub fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route(
            "/admin/v1/api-keys",
            post(create_api_key).get(list_api_keys),
        )
        .route("/admin/v1/api-keys/{id}", delete(revoke_api_key))
        .route("/admin/v1/events", get(list_events))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateApiKeyBody {
    name: String,
    role: String,
    /// `null` and absent both mean unscoped.
    #[serde(default)]
    scope: Option<ContextJson>,
}

fn api_key_json(record: &ApiKeyRecord) -> Result<Value, Error> {
    let scope: Option<Value> = match &record.scope_json {
        Some(json) => Some(serde_json::from_str(json).map_err(|e| Error::Internal(e.to_string()))?),
        None => None,
    };
    Ok(json!({
        "object": "api_key",
        "id": record.id,
        "name": record.name,
        "role": record.role,
        "scope": scope,
        "created_at": record.created_at,
        "revoked_at": record.revoked_at,
    }))
}

async fn create_api_key(
    State(broker): State<Arc<Broker>>,
    AdminCaller(_admin): AdminCaller,
    JsonBody(body): JsonBody<CreateApiKeyBody>,
) -> Result<(StatusCode, Json<Value>), Error> {
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(Error::invalid(
            ErrorCode::InvalidName,
            "name must be 1-100 characters",
        ));
    }
    let role = match body.role.as_str() {
        "app" => Role::App,
        "admin" => Role::Admin,
        other => {
            return Err(Error::invalid(
                ErrorCode::InvalidRole,
                format!("role must be \"app\" or \"admin\", not {other:?}"),
            ));
        }
    };
    let scope = match body.scope {
        None => None,
        Some(_) if role == Role::Admin => {
            return Err(Error::invalid(
                ErrorCode::InvalidScope,
                "only app keys can be scoped",
            ));
        }
        // A scope is a context selector: the same rules as a key context.
        Some(value) => Some(value.into_context()?),
    };
    let (record, token) = broker.api_keys.create_api_key(name, role, scope).await?;
    let mut response = api_key_json(&record)?;
    response["key"] = Value::String(token.as_str().to_owned());
    Ok((StatusCode::CREATED, Json(response)))
}

async fn list_api_keys(
    State(broker): State<Arc<Broker>>,
    AdminCaller(_admin): AdminCaller,
) -> Result<Json<Value>, Error> {
    let keys = broker.api_keys.list_api_keys().await?;
    let data = keys
        .iter()
        .map(api_key_json)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(json!({"object": "list", "data": data})))
}

async fn revoke_api_key(
    State(broker): State<Arc<Broker>>,
    AdminCaller(admin): AdminCaller,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    if id == admin.key_id {
        return Err(Error::invalid(
            ErrorCode::CannotRevokeSelf,
            "an admin key cannot revoke itself",
        ));
    }
    let record = broker.api_keys.revoke_api_key(&id).await?;
    Ok(Json(api_key_json(&record)?))
}

async fn list_events(
    State(broker): State<Arc<Broker>>,
    AdminCaller(_admin): AdminCaller,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, Error> {
    let limit = match query.get("limit") {
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=MAX_EVENTS_LIMIT).contains(l))
            .ok_or_else(|| {
                Error::invalid(
                    ErrorCode::InvalidLimit,
                    format!("limit must be 1-{MAX_EVENTS_LIMIT}"),
                )
            })?,
        None => 10,
    };
    let time = |name: &str| -> Result<Option<String>, Error> {
        match query.get(name).filter(|v| !v.is_empty()) {
            Some(text) => Timestamp::parse(text)
                .map(|t| Some(t.to_rfc3339()))
                .ok_or_else(|| {
                    Error::invalid(
                        ErrorCode::InvalidTime,
                        format!("cannot parse {name} {text:?}"),
                    )
                }),
            None => Ok(None),
        }
    };
    let events = query
        .get("events")
        .map(|e| {
            e.split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let filter = EventQuery {
        events,
        organization_id: query
            .get("organization_id")
            .filter(|v| !v.is_empty())
            .cloned(),
        range_start: time("range_start")?,
        range_end: time("range_end")?,
        after: query.get("after").filter(|v| !v.is_empty()).cloned(),
        limit,
    };
    let (page, more) = broker.audit.list_events(filter).await?;
    let data = page
        .iter()
        .map(|e| {
            let data: Value = serde_json::from_str(&e.data_json).map_err(|err| Error::Internal(err.to_string()))?;
            Ok(json!({"object": "event", "id": e.id, "event": e.event, "data": data, "created_at": e.created_at, "context": {}}))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let after = more.then(|| page.last().map(|e| e.id.clone())).flatten();
    Ok(Json(
        json!({"object": "list", "data": data, "list_metadata": {"after": after}}),
    ))
}
