//! HTTP surface: the Vault data plane (`/vault/v1`), the admin plane (`/admin/v1`), `/healthz` (alive) and `/readyz` (database
//! and key provider answer). Every non-2xx body is JSON `{"error", "message", "code"}`, and every
//! response carries an `X-Request-ID` (the caller's, or a fresh one).

mod admin;
mod byok;
mod errors;
mod extract;
mod guard;
mod idempotency;
mod keks;
mod layers;
mod openapi;
mod portal;
mod rewrap;
pub mod server;
mod vault;
mod wire;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

pub use errors::error_response;

use crate::broker::Broker;
use crate::error::ErrorCode;
use wire::health::Health;

pub fn router(broker: Arc<Broker>) -> Router {
    let body_limit = broker.config.limits.max_request_bytes;
    let request_timeout = broker.config.server.request_timeout;
    let routes = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi::openapi_document))
        .merge(vault::routes())
        .merge(admin::routes())
        .merge(byok::routes())
        .merge(rewrap::routes())
        .merge(keks::routes())
        .merge(portal::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&broker),
            guard::check_request_head,
        ));
    layers::apply(routes, request_timeout, Arc::clone(&broker.metrics)).with_state(broker)
}

/// The process is up and answering.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "health",
    responses((status = 200, description = "Alive", body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The database and the key provider answer.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "health",
    responses((status = 200, description = "Ready: `status` and the key provider's name (`kms`)", body = Object)))]
async fn readyz(State(broker): State<Arc<Broker>>) -> Response {
    match broker.check_ready().await {
        Ok(()) => Json(json!({"status": "ready", "kms": broker.provider().name()})).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            error_response(
                ErrorCode::NotReady,
                "the database or the key provider is not reachable",
            )
        }
    }
}

async fn not_found() -> Response {
    error_response(ErrorCode::NotFound, "no such endpoint")
}

async fn method_not_allowed() -> Response {
    error_response(
        ErrorCode::MethodNotAllowed,
        "method not allowed on this endpoint",
    )
}
