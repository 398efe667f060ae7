//! `/admin/v1`: API keys (create, list, revoke) and audit events (filters, cursor pagination, or
//! an NDJSON export streamed in constant memory).
//! Admin keys only. A new key's token is returned once, at creation, and never again.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use bytes::Bytes;

use super::extract::{AdminCaller, JsonBody, QueryParams};
use super::wire::admin::{ApiKey, CreateApiKeyRequest, Event, EventsQuery, ExportedEvent, List};
use crate::broker::Broker;
use crate::error::{Error, ErrorCode};
use crate::services::audit::{EventQuery, ExportQuery};
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

/// Creates an API key. Its token is in this answer only, never again.
#[utoipa::path(post, path = "/admin/v1/api-keys", operation_id = "create_api_key", tag = "admin",
    security(("admin_key" = [])), request_body = CreateApiKeyRequest,
    responses((status = 201, description = "Created, with `key`: the token", body = ApiKey)))]
async fn create_api_key(
    State(broker): State<Arc<Broker>>,
    AdminCaller(admin): AdminCaller,
    JsonBody(body): JsonBody<CreateApiKeyRequest>,
) -> Result<Response, Error> {
    let (record, token) = broker
        .api_keys
        .create_api_key(&admin, &body.name, &body.role, body.scope)
        .await?;
    // Serialized here, while the token is borrowed: it is never copied into a longer-lived value.
    let body = ApiKey::with_token(&record, token.as_str())?;
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Every API key, revoked ones included (never their tokens).
#[utoipa::path(get, path = "/admin/v1/api-keys", operation_id = "list_api_keys", tag = "admin",
    security(("admin_key" = [])),
    responses((status = 200, description = "The keys", body = List<ApiKey>)))]
async fn list_api_keys(
    State(broker): State<Arc<Broker>>,
    AdminCaller(_admin): AdminCaller,
) -> Result<Response, Error> {
    let keys = broker.api_keys.list_api_keys().await?;
    let data = keys.iter().map(ApiKey::of).collect::<Result<Vec<_>, _>>()?;
    Ok(Json(List::of(data)).into_response())
}

/// Revokes an API key at once; an admin key cannot revoke itself.
#[utoipa::path(delete, path = "/admin/v1/api-keys/{id}", operation_id = "revoke_api_key", tag = "admin",
    security(("admin_key" = [])), params(("id" = String, Path, description = "API key id")),
    responses((status = 200, description = "The revoked key", body = ApiKey)))]
async fn revoke_api_key(
    State(broker): State<Arc<Broker>>,
    AdminCaller(admin): AdminCaller,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    if id == admin.key_id {
        return Err(Error::invalid(
            ErrorCode::CannotRevokeSelf,
            "an admin key cannot revoke itself",
        ));
    }
    let record = broker.api_keys.revoke_api_key(&admin, &id).await?;
    Ok(Json(ApiKey::of(&record)?).into_response())
}

/// Audit events with filters and cursor paging (`format=json`, the default), or every event of
/// an organization and time range streamed as NDJSON (`format=ndjson`: one event per line, with
/// its `organization_id` and `chain` fields, oldest first).
#[utoipa::path(get, path = "/admin/v1/events", operation_id = "list_events", tag = "admin",
    security(("admin_key" = [])), params(EventsQuery),
    responses((status = 200, description = "A page of events, or (`format=ndjson`) the NDJSON stream",
        content((List<Event> = "application/json"), (String = "application/x-ndjson")))))]
async fn list_events(
    State(broker): State<Arc<Broker>>,
    AdminCaller(_admin): AdminCaller,
    QueryParams(query): QueryParams<EventsQuery>,
) -> Result<Response, Error> {
    match non_empty(&query.format) {
        None | Some("json") => {}
        Some("ndjson") => return export_events(broker, &query),
        Some(other) => {
            return Err(Error::invalid(
                ErrorCode::InvalidFormat,
                format!("format must be json or ndjson, not {other:?}"),
            ));
        }
    }
    let limit = match &query.limit {
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
    let events = query
        .events
        .as_deref()
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
        organization_id: non_empty(&query.organization_id).map(str::to_owned),
        range_start: time("range_start", &query.range_start)?,
        range_end: time("range_end", &query.range_end)?,
        after: non_empty(&query.after).map(str::to_owned),
        limit,
    };
    let (page, more) = broker.audit.list_events(filter).await?;
    let data = page.iter().map(Event::of).collect::<Result<Vec<_>, _>>()?;
    let after = more.then(|| page.last().map(|e| e.id.clone())).flatten();
    Ok(Json(List::paged(data, after)).into_response())
}

/// `format=ndjson`: every event matching the organization and time range, one JSON object per
/// line, oldest first. The body is streamed a page at a time (only one page is ever held, and the
/// next is read only once the client took the last), so an export of any size runs in constant
/// memory. A store failure mid-stream aborts the body: the client sees an incomplete response,
/// never a silently short one.
fn export_events(broker: Arc<Broker>, query: &EventsQuery) -> Result<Response, Error> {
    let paging = [
        ("after", &query.after),
        ("limit", &query.limit),
        ("events", &query.events),
    ];
    if let Some((name, _)) = paging.iter().find(|(_, value)| non_empty(value).is_some()) {
        return Err(Error::invalid(
            ErrorCode::InvalidFormat,
            format!(
                "format=ndjson exports a whole range: {name} does not apply (use organization_id, range_start, range_end)"
            ),
        ));
    }
    let filter = ExportQuery {
        organization_id: non_empty(&query.organization_id).map(str::to_owned),
        range_start: time("range_start", &query.range_start)?,
        range_end: time("range_end", &query.range_end)?,
    };
    // (events after this seq, whether the last page was read)
    let pages = futures_util::stream::unfold((0_i64, false), move |(after, done)| {
        let broker = Arc::clone(&broker);
        let filter = filter.clone();
        async move {
            if done {
                return None;
            }
            let chunk = export_chunk(&broker, filter, after).await;
            Some(match chunk {
                Ok((bytes, next, more)) => (Ok(bytes), (next, !more)),
                Err(e) => {
                    tracing::error!(error = %e, "audit export aborted");
                    (
                        Err(std::io::Error::other("audit export aborted")),
                        (after, true),
                    )
                }
            })
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(pages),
    )
        .into_response())
}

/// Events exported per page (one chunk of the body).
const EXPORT_PAGE: usize = 500;

/// One page as NDJSON, the last `seq` it holds, and whether more may follow.
async fn export_chunk(
    broker: &Broker,
    filter: ExportQuery,
    after: i64,
) -> Result<(Bytes, i64, bool), Error> {
    let page = broker.audit.export_page(filter, after, EXPORT_PAGE).await?;
    let mut body = Vec::with_capacity(page.len() * 512);
    for event in &page {
        serde_json::to_writer(&mut body, &ExportedEvent::of(event)?)
            .map_err(|e| Error::Internal(format!("serializing an audit event: {e}")))?;
        body.push(b'\n');
    }
    let next = page.last().map_or(after, |event| event.seq);
    Ok((Bytes::from(body), next, page.len() == EXPORT_PAGE))
}

/// An RFC 3339 query value, normalised; an empty one counts as absent.
fn time(name: &str, value: &Option<String>) -> Result<Option<String>, Error> {
    match non_empty(value) {
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
}

/// A query value, with an empty one counted as absent.
fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}
