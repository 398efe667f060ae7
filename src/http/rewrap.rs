//! `/admin/v1/rewrap-jobs`: start (202), follow and cancel rewrap jobs.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::extract::{AdminCaller, JsonBody};
use super::wire::rewrap::{RewrapJob, StartRewrapJobRequest};
use crate::broker::Broker;
use crate::error::{Error, ErrorCode};
use crate::rewrap::RewrapSource;
use crate::services::actor::Actor;

pub fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route("/admin/v1/rewrap-jobs", post(start))
        .route("/admin/v1/rewrap-jobs/{id}", get(show))
        .route("/admin/v1/rewrap-jobs/{id}/cancel", post(cancel))
}

/// Starts moving every object off a BYOK key's earlier CMKs or off a platform KEK.
#[utoipa::path(post, path = "/admin/v1/rewrap-jobs", operation_id = "start_rewrap_job", tag = "rewrap",
    security(("admin_key" = [])), request_body = StartRewrapJobRequest,
    responses((status = 202, description = "Started", body = RewrapJob)))]
async fn start(
    State(broker): State<Arc<Broker>>,
    AdminCaller(admin): AdminCaller,
    JsonBody(body): JsonBody<StartRewrapJobRequest>,
) -> Result<Response, Error> {
    let source = match (body.source.byok_key_id, body.source.kek_id) {
        (Some(id), None) => RewrapSource::ByokKey(id),
        (None, Some(kek)) => RewrapSource::Kek(kek),
        _ => {
            return Err(Error::invalid(
                ErrorCode::InvalidSource,
                "source must name exactly one of byok_key_id or kek_id",
            ));
        }
    };
    let job = broker
        .rewrap
        .start_rewrap_job(Actor::ApiKey(&admin), source)
        .await?;
    let status = broker.rewrap.rewrap_status(&job.id).await?;
    Ok((StatusCode::ACCEPTED, Json(RewrapJob::of(&status))).into_response())
}

/// A rewrap job's progress.
#[utoipa::path(get, path = "/admin/v1/rewrap-jobs/{id}", operation_id = "get_rewrap_job", tag = "rewrap",
    security(("admin_key" = [])), params(("id" = String, Path, description = "Rewrap job id")),
    responses((status = 200, description = "The job", body = RewrapJob)))]
async fn show(
    State(broker): State<Arc<Broker>>,
    AdminCaller(_admin): AdminCaller,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    let status = broker.rewrap.rewrap_status(&id).await?;
    Ok(Json(RewrapJob::of(&status)).into_response())
}

/// Cancels a running rewrap job (objects already moved stay moved).
#[utoipa::path(post, path = "/admin/v1/rewrap-jobs/{id}/cancel", operation_id = "cancel_rewrap_job", tag = "rewrap",
    security(("admin_key" = [])), params(("id" = String, Path, description = "Rewrap job id")),
    responses((status = 200, description = "The job", body = RewrapJob)))]
async fn cancel(
    State(broker): State<Arc<Broker>>,
    AdminCaller(admin): AdminCaller,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    let status = broker
        .rewrap
        .cancel_rewrap_job(Actor::ApiKey(&admin), &id)
        .await?;
    Ok(Json(RewrapJob::of(&status)).into_response())
}
