//! Admin wire shapes (`/admin/v1/api-keys`, `/admin/v1/events`): the create-key request, the
//! events query, and the key and event responses. Response fields are in alphabetical order, the
//! order the earlier `json!` bodies had (serde_json sorts an untyped object's keys).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

use crate::context::KeyContext;
use crate::context::json::ContextJson;
use crate::error::Error;
use crate::services::api_keys::ApiKeyRecord;
use crate::services::audit::{AuditEvent, StoredEvent};

/// `POST /admin/v1/api-keys`. Checked by `ApiKeys::create_api_key`, not here.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKeyRequest {
    /// 1-100 characters after trimming.
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    /// `app` (data plane) or `admin` (admin plane).
    #[schema(pattern = "^(app|admin)$")]
    pub role: String,
    /// `null` and absent both mean unscoped.
    #[serde(default)]
    #[schema(value_type = Option<KeyContext>)]
    pub scope: Option<ContextJson>,
}

/// The `format` of `GET /admin/v1/events`, for the description (the handler reads the text, so
/// that another value gets its own error code).
#[derive(ToSchema)]
#[allow(dead_code)] // a schema only
pub enum EventsFormat {
    #[schema(rename = "json")]
    Json,
    #[schema(rename = "ndjson")]
    Ndjson,
}

/// `GET /admin/v1/events` parameters, as text: the handler parses each so that a bad value gets
/// its own error code. An empty value means absent.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// The `list_metadata.after` of the previous page.
    pub after: Option<String>,
    /// Comma-separated event names.
    pub events: Option<String>,
    /// `json` (a page, the default) or `ndjson` (a stream of every matching event, one per line).
    #[param(value_type = Option<EventsFormat>)]
    pub format: Option<String>,
    /// Events per page, 1-100 (default 10).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
    pub organization_id: Option<String>,
    /// RFC 3339 time.
    pub range_end: Option<String>,
    /// RFC 3339 time.
    pub range_start: Option<String>,
}

/// `{"object": "list", "data": [...]}`, with `list_metadata` where the list pages.
#[derive(Serialize, ToSchema)]
pub struct List<T> {
    pub data: Vec<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub list_metadata: Option<AfterCursor>,
    pub object: &'static str,
}

impl<T> List<T> {
    pub fn of(data: Vec<T>) -> Self {
        Self {
            data,
            list_metadata: None,
            object: "list",
        }
    }

    pub fn paged(data: Vec<T>, after: Option<String>) -> Self {
        Self {
            data,
            list_metadata: Some(AfterCursor { after }),
            object: "list",
        }
    }
}

/// The next page's cursor; `null` on the last page.
#[derive(Serialize, ToSchema)]
pub struct AfterCursor {
    pub after: Option<String>,
}

/// `api_key`. `key` (the token) is present only in the answer to create.
#[derive(Serialize, ToSchema)]
pub struct ApiKey<'a> {
    pub created_at: &'a str,
    pub id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<&'a str>,
    pub name: &'a str,
    pub object: &'static str,
    pub revoked_at: Option<&'a str>,
    pub role: &'a str,
    pub scope: Option<KeyContext>,
}

impl<'a> ApiKey<'a> {
    pub fn of(record: &'a ApiKeyRecord) -> Result<Self, Error> {
        // The scope was stored from a validated context; one that no longer parses is a broken row.
        let scope = record
            .scope_json
            .as_deref()
            .map(serde_json::from_str::<KeyContext>)
            .transpose()
            .map_err(|e| Error::Internal(format!("stored API key scope: {e}")))?;
        Ok(Self {
            created_at: &record.created_at,
            id: &record.id,
            key: None,
            name: &record.name,
            object: "api_key",
            revoked_at: record.revoked_at.as_deref(),
            role: &record.role,
            scope,
        })
    }

    /// The answer to create: the key with its token, shown this once.
    pub fn with_token(record: &'a ApiKeyRecord, token: &'a str) -> Result<Self, Error> {
        Ok(Self {
            key: Some(token),
            ..Self::of(record)?
        })
    }
}

/// `event`. `data` is the stored JSON, passed through verbatim (the audit writer stores it
/// compact with sorted keys, so the bytes are what re-serializing a parsed value gave).
#[derive(Serialize, ToSchema)]
pub struct Event<'a> {
    pub context: EmptyObject,
    pub created_at: &'a str,
    /// The event's own fields, which depend on `event`.
    #[schema(value_type = Object)]
    pub data: &'a RawValue,
    pub event: &'a str,
    pub id: &'a str,
    pub object: &'static str,
}

impl<'a> Event<'a> {
    pub fn of(event: &'a AuditEvent) -> Result<Self, Error> {
        let data = serde_json::from_str(&event.data_json)
            .map_err(|e| Error::Internal(format!("stored audit event data: {e}")))?;
        Ok(Self {
            context: EmptyObject {},
            created_at: &event.created_at,
            data,
            event: &event.event,
            id: &event.id,
            object: "event",
        })
    }
}

/// One line of an NDJSON export: the event as listed, plus its organization and its place in
/// the hash chain (`null` for an event written before chaining began), so a SIEM can verify the
/// chain. `data` is the stored JSON text verbatim: the text the hash covers.
#[derive(Serialize)]
pub struct ExportedEvent<'a> {
    pub chain: Option<ChainFields<'a>>,
    pub context: EmptyObject,
    pub created_at: &'a str,
    pub data: &'a RawValue,
    pub event: &'a str,
    pub id: &'a str,
    pub object: &'static str,
    pub organization_id: Option<&'a str>,
}

#[derive(Serialize)]
pub struct ChainFields<'a> {
    pub hash: &'a str,
    pub position: i64,
    pub previous_hash: &'a str,
}

impl<'a> ExportedEvent<'a> {
    pub fn of(event: &'a StoredEvent) -> Result<Self, Error> {
        let data = serde_json::from_str(&event.data_json)
            .map_err(|e| Error::Internal(format!("stored audit event data: {e}")))?;
        Ok(Self {
            chain: event.chain.as_ref().map(|link| ChainFields {
                hash: &link.hash,
                position: link.position,
                previous_hash: &link.previous_hash,
            }),
            context: EmptyObject {},
            created_at: &event.created_at,
            data,
            event: &event.event,
            id: &event.id,
            object: "event",
            organization_id: event.organization_id.as_deref(),
        })
    }
}

/// Serializes as `{}`.
#[derive(Serialize, ToSchema)]
pub struct EmptyObject {}

#[cfg(test)]
#[path = "admin_tests.rs"]
mod tests;
