//! HTTP surface: the Vault data plane (`/vault/v1`), the admin plane (`/admin/v1`), `/healthz`
//! (alive) and `/readyz` (each dependency: database, key provider, and with several brokers the
//! routing view and change notifications). Every non-2xx body is JSON `{"error", "message", "code"}`, and every
//! response carries an `X-Request-ID` (the caller's, or a fresh one).

mod admin;
mod byok;
mod errors;
mod extract;
mod guard;
mod idempotency;
mod keks;
mod layers;
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

pub fn router(broker: Arc<Broker>) -> Router {
    let body_limit = broker.config.limits.max_request_bytes;
    let request_timeout = broker.config.server.request_timeout;
    let routes = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
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

/// The router of the optional metrics listener (`metrics_listen`): `GET /metrics` without a key,
/// nothing else. Unauthenticated by design (scrapers), so it belongs on an internal address: its
/// labels name the AWS accounts of registered tenant keys.
pub fn metrics_router(broker: Arc<Broker>) -> Router {
    Router::new()
        .route("/metrics", get(byok::metrics_text))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(broker)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// 200 with each dependency's state when every required one is ready; else 503 `not_ready` with
/// the same list (each failed check with its reason).
async fn readyz(State(broker): State<Arc<Broker>>) -> Response {
    let readiness = broker.readiness().await;
    let checks: serde_json::Map<String, serde_json::Value> = readiness
        .checks
        .iter()
        .map(|c| {
            let mut check = json!({"ready": c.ready, "required": c.required});
            if let Some(reason) = &c.reason {
                check["reason"] = json!(reason);
            }
            (c.name.to_owned(), check)
        })
        .collect();
    if readiness.is_ready() {
        return Json(json!({
            "status": "ready",
            "kms": broker.provider().name(),
            "checks": checks,
        }))
        .into_response();
    }
    let failed: Vec<&str> = readiness
        .checks
        .iter()
        .filter(|c| c.required && !c.ready)
        .map(|c| c.name)
        .collect();
    let message = format!("not ready: {}", failed.join(", "));
    // The error body every refusal has, plus the checks.
    let body = json!({
        "code": ErrorCode::NotReady,
        "error": message,
        "message": message,
        "status": "not_ready",
        "checks": checks,
    });
    (ErrorCode::NotReady.status(), Json(body)).into_response()
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
