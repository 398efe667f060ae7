//! `/admin/v1/keks`: the platform KEK inventory (paginated) and on-demand rotation.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::extract::{AdminCaller, QueryParams};
use super::wire::admin::List;
use super::wire::keks::{KeksQuery, PlatformKek};
use crate::broker::Broker;
use crate::error::{Error, ErrorCode};

const MAX_LIMIT: usize = 100;
const DEFAULT_LIMIT: usize = 10;

pub fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route("/admin/v1/keks", get(list))
        .route("/admin/v1/keks/{id}/rotate", post(rotate))
}

#[utoipa::path(get, path = "/admin/v1/keks", operation_id = "list_platform_keks", tag = "keks",
    security(("admin_key" = [])), params(KeksQuery),
    responses((status = 200, description = "A page of platform KEKs", body = List<PlatformKek>)))]
/// Oldest first; `list_metadata.after` is the id of the last KEK of the page (`null` at the end).
async fn list(
    State(broker): State<Arc<Broker>>,
    AdminCaller(_admin): AdminCaller,
    QueryParams(query): QueryParams<KeksQuery>,
) -> Result<Response, Error> {
    let limit = match query.limit.as_deref().filter(|l| !l.is_empty()) {
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=MAX_LIMIT).contains(l))
            .ok_or_else(|| {
                Error::invalid(
                    ErrorCode::InvalidLimit,
                    format!("limit must be 1-{MAX_LIMIT}"),
                )
            })?,
        None => DEFAULT_LIMIT,
    };
    let after = query.after.filter(|a| !a.is_empty());
    let page = broker.platform_keks.list(after, limit).await?;
    let data: Vec<PlatformKek> = page
        .keks
        .iter()
        .map(|kek| PlatformKek::of(kek, &page.objects))
        .collect();
    let after = page
        .more
        .then(|| page.keks.last().map(|k| k.kek_id.clone()))
        .flatten();
    Ok(Json(List::paged(data, after)).into_response())
}

#[utoipa::path(post, path = "/admin/v1/keks/{id}/rotate", operation_id = "rotate_platform_kek", tag = "keks",
    security(("admin_key" = [])),
    params(("id" = String, Path, description = "The KEK id percent-encoded, or its key id alone")),
    responses((status = 200, description = "The KEK after rotation", body = PlatformKek)))]
/// Rotates the KEK's backing material now. `{id}` is the KEK id percent-encoded, or its key id
/// alone (the UUID after `key/`, or after `local/`).
async fn rotate(
    State(broker): State<Arc<Broker>>,
    AdminCaller(admin): AdminCaller,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    let record = broker.platform_keks.rotate(&id, &admin).await?;
    let objects: HashMap<String, u64> = broker.byok.count_objects_by_kek().await?;
    Ok(Json(PlatformKek::of(&record, &objects)).into_response())
}
