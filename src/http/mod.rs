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

pub use errors::error_response;

use crate::broker::Broker;
use crate::error::ErrorCode;
use errors::ErrorBody;
use wire::health::{Health, NotReady, Readiness};

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

/// The process is up and answering.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "health",
    responses((status = 200, description = "Alive", body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Each dependency's state: the database, the key provider and, with several brokers on one
/// PostgreSQL database, the routing view and the change notifications (reported, not required).
/// 200 when every required one is ready; else 503 `not_ready` naming the failed ones, with the
/// same `checks` and `status` fields beside the error's.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "health",
    responses((status = 200, description = "Every required dependency is ready", body = Readiness)))]
async fn readyz(State(broker): State<Arc<Broker>>) -> Response {
    let readiness = broker.readiness().await;
    let body = Readiness::of(&readiness, broker.provider().name());
    if readiness.is_ready() {
        return Json(body).into_response();
    }
    let failed: Vec<&str> = readiness
        .checks
        .iter()
        .filter(|c| c.required && !c.ready)
        .map(|c| c.name)
        .collect();
    let message = format!("not ready: {}", failed.join(", "));
    // The error body every refusal has, plus the checks.
    let refusal = NotReady {
        error: ErrorBody::new(ErrorCode::NotReady, &message),
        readiness: body,
    };
    (ErrorCode::NotReady.status(), Json(refusal)).into_response()
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
