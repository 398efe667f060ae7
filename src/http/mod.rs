//! HTTP surface. For now: `/healthz` (the process is alive) and `/readyz` (the key provider
//! answers). Every non-2xx body is JSON `{"error", "message", "code"}`.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::broker::Broker;

pub fn router(broker: Arc<Broker>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .with_state(broker)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(broker): State<Arc<Broker>>) -> Response {
    match broker.check_ready().await {
        Ok(()) => Json(json!({"status": "ready", "kms": broker.provider().name()})).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "kms_unavailable",
                "the key provider is not reachable",
            )
        }
    }
}

async fn not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": message, "message": message, "code": code})),
    )
        .into_response()
}
