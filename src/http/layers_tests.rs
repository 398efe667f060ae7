//! The layers over a router of test routes: a panic and a slow handler answer JSON with the
//! request id, request ids are kept when sane and replaced otherwise, and latency is recorded by
//! route template.

use axum::body::{Body, to_bytes};
use axum::routing::get;
use serde_json::Value;
use tower_service::Service;

use super::*;
use crate::cache::DekCacheStats;
use crate::keyring::bindings::BindingSet;

fn test_router(metrics: Arc<Metrics>) -> Router {
    let router = Router::new()
        .route(
            "/panic",
            get(|| async {
                if true {
                    panic!("secret-in-panic");
                }
                "unreachable"
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                "late"
            }),
        )
        .route("/ok", get(|| async { "ok" }))
        .route("/items/{id}", get(|| async { "item" }));
    apply(router, Duration::from_millis(100), metrics)
}

async fn send(path: &str, request_id: Option<&str>) -> (StatusCode, String, Value) {
    send_counted(path, request_id, Arc::default()).await
}

async fn send_counted(
    path: &str,
    request_id: Option<&str>,
    metrics: Arc<Metrics>,
) -> (StatusCode, String, Value) {
    let mut request = Request::builder().uri(path);
    if let Some(id) = request_id {
        request = request.header(REQUEST_ID, id);
    }
    let request = request.body(Body::empty()).expect("request");
    let response = test_router(metrics)
        .call(request)
        .await
        .expect("infallible");
    let status = response.status();
    let id = response
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = to_bytes(response.into_body(), 1 << 16).await.expect("body");
    (
        status,
        id,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn a_panic_answers_500_internal_error_json_with_the_request_id() {
    let (status, id, body) = send("/panic", Some("caller-id-1")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["code"], "internal_error", "{body}");
    assert!(!body.to_string().contains("secret-in-panic"), "{body}");
    assert_eq!(id, "caller-id-1");
}

#[tokio::test]
async fn a_slow_request_answers_503_processing_timeout_json() {
    let (status, id, body) = send("/slow", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["code"], "processing_timeout", "{body}");
    assert!(id.starts_with("req_"), "{id}");
}

#[tokio::test]
async fn request_ids_are_kept_when_sane_and_replaced_otherwise() {
    let (status, id, _) = send("/ok", Some("abc-123")).await;
    assert_eq!((status, id.as_str()), (StatusCode::OK, "abc-123"));
    let (_, id, _) = send("/ok", None).await;
    assert!(id.starts_with("req_") && id.len() == 36, "{id}");
    let (_, id, _) = send("/ok", Some(&"x".repeat(MAX_REQUEST_ID_BYTES + 1))).await;
    assert!(id.starts_with("req_"), "{id}");
    let (_, id, _) = send("/ok", Some("")).await;
    assert!(id.starts_with("req_"), "{id}");
}

#[tokio::test]
async fn latency_is_recorded_by_route_template_never_the_raw_path() {
    let metrics = Arc::new(Metrics::default());
    send_counted("/items/secret-name", None, Arc::clone(&metrics)).await;
    send_counted("/panic", None, Arc::clone(&metrics)).await;
    send_counted("/slow", None, Arc::clone(&metrics)).await;
    let text = metrics.render(&BindingSet::default(), DekCacheStats::default());
    for series in [
        "route=\"/items/{id}\",method=\"GET\",status=\"200\"} 1",
        "route=\"/panic\",method=\"GET\",status=\"500\"} 1",
        "route=\"/slow\",method=\"GET\",status=\"503\"} 1",
    ] {
        let count = format!("byok_broker_http_request_duration_seconds_count{{{series}");
        assert!(text.contains(&count), "{count} in:\n{text}");
    }
    assert!(!text.contains("secret-name"), "{text}");
}
