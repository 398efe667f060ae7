//! The layers every route runs under, outermost first: a sane `X-Request-ID` (the caller's, or a
//! fresh `req_…`) on the request and its response; the request's tracing span (request id, route
//! template, method, and the caller's key id and context hash once known) with one log line per
//! answered request (status, latency) and its latency by route template, method and status;
//! panics answered with 500 `internal_error` JSON (never a cut connection), and a request
//! timeout answered with 503 `processing_timeout` JSON. Request ids, panics and the timeout are
//! tower-http's.

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::timeout::TimeoutLayer;
use tracing::Instrument;

use super::errors::error_response;
use crate::error::ErrorCode;
use crate::metrics::Metrics;

const REQUEST_ID: &str = "x-request-id";
/// The target of the per-request lines, so operators can filter them apart from the rest
/// (`RUST_LOG=info,byok_broker::access=warn` keeps only failed requests).
pub const ACCESS_LOG: &str = "byok_broker::access";
/// Longest caller-chosen request id kept; a longer (or empty, or non-text) one is replaced.
const MAX_REQUEST_ID_BYTES: usize = 200;

/// Wraps every route of `router` (so the route template is known to the span) in the layers.
pub fn apply<S>(router: Router<S>, request_timeout: Duration, metrics: Arc<Metrics>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            request_timeout,
        ))
        .layer(middleware::map_response(timeout_as_json))
        .layer(CatchPanicLayer::custom(panic_as_json))
        .layer(middleware::from_fn_with_state(metrics, observe))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(FreshRequestId))
        .layer(middleware::map_request(drop_insane_request_id))
}

/// `req_<32 hex>` for requests that bring no usable id of their own.
#[derive(Clone, Copy)]
struct FreshRequestId;

impl MakeRequestId for FreshRequestId {
    fn make_request_id<B>(&mut self, _request: &Request<B>) -> Option<RequestId> {
        let id = format!("req_{}", uuid::Uuid::new_v4().simple());
        HeaderValue::from_str(&id).ok().map(RequestId::new)
    }
}

/// tower-http keeps any id the caller sent; an empty, overlong or non-text one is dropped first so
/// that a fresh one replaces it (and no log line carries a caller's arbitrary bytes).
async fn drop_insane_request_id(mut request: Request) -> Request {
    let sane = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| !v.is_empty() && v.len() <= MAX_REQUEST_ID_BYTES);
    if !sane {
        request.headers_mut().remove(REQUEST_ID);
    }
    request
}

/// The matched route template (`/vault/v1/kv/name/{name}`), never the raw path: names and ids
/// stay out of logs and metric labels.
fn route_of(request: &Request) -> &str {
    request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
}

/// Outside the panic catcher and the timeout, so their 500 and 503 are measured and logged too;
/// the time is to the response head (bodies here are small and already in memory). The handler
/// runs inside the request's span, where the caller's key id and the context hash are recorded
/// when known ([`record_caller`], `keyring`), so the one line logged here carries them.
async fn observe(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let route = route_of(&request).to_owned();
    let method = match *request.method() {
        // A caller can send any token as a method: only the standard ones become label values.
        Method::GET
        | Method::POST
        | Method::PUT
        | Method::DELETE
        | Method::PATCH
        | Method::HEAD
        | Method::OPTIONS => request.method().as_str(),
        _ => "other",
    }
    .to_owned();
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %method,
        route = %route,
        key_id = tracing::field::Empty,
        context_hash = tracing::field::Empty,
    );
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    metrics.record_request(&route, &method, status, elapsed);
    // Microsecond precision: a float of nanoseconds only adds digits to every line.
    let latency_ms = elapsed.as_micros() as f64 / 1000.0;
    span.in_scope(|| {
        // 5xx other than an internal error are refusals the broker chose (503 unavailable or
        // busy, 507 full): worth a warning, not an error page for every one of them.
        if status == 500 {
            tracing::error!(target: ACCESS_LOG, status, latency_ms, "request");
        } else if status >= 500 {
            tracing::warn!(target: ACCESS_LOG, status, latency_ms, "request");
        } else {
            tracing::info!(target: ACCESS_LOG, status, latency_ms, "request");
        }
    });
    response
}

/// Records the authenticated caller's key id on the request's span (for the request log line).
pub fn record_caller(key_id: &str) {
    tracing::Span::current().record("key_id", key_id);
}

/// tower-http's timeout answers with an empty body; every refusal of the broker is JSON. Only the
/// timeout's 503 lacks a content type: every 503 the broker writes itself is JSON already.
async fn timeout_as_json(response: Response) -> Response {
    if response.status() != StatusCode::SERVICE_UNAVAILABLE
        || response.headers().contains_key(CONTENT_TYPE)
    {
        return response;
    }
    tracing::warn!("request timed out before its response was ready");
    let mut response = error_response(
        ErrorCode::ProcessingTimeout,
        "the request took longer than the server's request timeout; retry shortly",
    );
    response
        .headers_mut()
        .insert("retry-after", HeaderValue::from_static("1"));
    response
}

fn panic_as_json(_payload: Box<dyn Any + Send + 'static>) -> Response {
    // The payload may quote request data (a secret, a token), so it is not logged.
    tracing::error!("a request handler panicked");
    error_response(ErrorCode::InternalError, "internal error")
}

#[cfg(test)]
#[path = "layers_tests.rs"]
mod tests;
