//! `/admin/v1/rewrap-jobs`: start (202), follow and cancel rewrap jobs.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::{AdminCaller, JsonBody};
use crate::broker::Broker;
use crate::error::{Error, ErrorCode};
use crate::rewrap::{RewrapSource, RewrapStatus};
use crate::timestamp::Timestamp;

pub fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route("/admin/v1/rewrap-jobs", post(start))
        .route("/admin/v1/rewrap-jobs/{id}", get(show))
        .route("/admin/v1/rewrap-jobs/{id}/cancel", post(cancel))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceBody {
    #[serde(default)]
    byok_key_id: Option<String>,
    #[serde(default)]
    kek_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartBody {
    source: SourceBody,
}

fn status_json(status: &RewrapStatus) -> Value {
    let job = &status.job;
    let started = Timestamp::parse(&job.started_at);
    let until = job
        .finished_at
        .as_deref()
        .and_then(Timestamp::parse)
        .unwrap_or_else(Timestamp::now);
    let seconds = started.map_or(0.0, |s| (until.0 - s.0).max(1) as f64 / 1e6);
    let moved = job.done + job.skipped + job.failed;
    json!({
        "object": "rewrap_job",
        "id": job.id,
        "source": {job.source_kind.clone(): job.source_id},
        "state": job.state,
        "total": job.total,
        "done": job.done,
        "skipped": job.skipped,
        "failed": job.failed,
        "failures": status.failures.iter().map(|(reason, count)| json!({"reason": reason, "objects": count})).collect::<Vec<_>>(),
        "remaining": status.remaining,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "objects_per_second": if seconds > 0.0 { (moved as f64 / seconds * 10.0).round() / 10.0 } else { 0.0 },
        "error": job.error,
    })
}

async fn start(
    State(broker): State<Arc<Broker>>,
    AdminCaller(_admin): AdminCaller,
    JsonBody(body): JsonBody<StartBody>,
) -> Result<(StatusCode, Json<Value>), Error> {
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
    let job = broker.rewrap.start_rewrap_job(source).await?;
    let status = broker.rewrap.rewrap_status(&job.id).await?;
    Ok((StatusCode::ACCEPTED, Json(status_json(&status))))
}

async fn show(
    State(broker): State<Arc<Broker>>,
    AdminCaller(_admin): AdminCaller,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    Ok(Json(status_json(&broker.rewrap.rewrap_status(&id).await?)))
}

async fn cancel(
    State(broker): State<Arc<Broker>>,
    AdminCaller(_admin): AdminCaller,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    Ok(Json(status_json(
        &broker.rewrap.cancel_rewrap_job(&id).await?,
    )))
}
