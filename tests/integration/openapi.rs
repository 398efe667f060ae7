//! `GET /openapi.json`: served without a key, equal to the committed `docs/openapi.json`, and
//! every operation it describes is a route the broker really has.

use serde_json::Value;

use crate::common::broker::TestBroker;

const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");

#[tokio::test]
async fn the_served_document_is_the_committed_one() {
    let broker = TestBroker::start_local("openapi_served").await;
    let served = broker.raw("GET", "/openapi.json", b"", None, &[]).await;
    assert_eq!(served.status, 200);
    assert_eq!(served.headers["content-type"], "application/json");
    let committed: Value =
        serde_json::from_str(&std::fs::read_to_string(COMMITTED).unwrap()).unwrap();
    assert!(
        served.body == committed,
        "docs/openapi.json differs from the served document: regenerate it with \
         `BYOK_UPDATE_OPENAPI=1 cargo test --lib http::openapi`"
    );
}

#[tokio::test]
async fn every_documented_operation_is_routed() {
    let broker = TestBroker::start_local("openapi_routes").await;
    let document = broker
        .raw("GET", "/openapi.json", b"", None, &[])
        .await
        .body;
    let mut checked = 0;
    for (path, item) in document["paths"].as_object().unwrap() {
        // Path parameters get a value no resource has: the route must still match.
        let concrete: String = path
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') {
                    "no-such-id"
                } else {
                    segment
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        for method in item.as_object().unwrap().keys() {
            let answer = broker
                .raw(&method.to_uppercase(), &concrete, b"", None, &[])
                .await;
            let unrouted = answer.status == 405
                || (answer.status == 404 && answer.body["message"] == "no such endpoint");
            assert!(
                !unrouted,
                "{method} {path}: {} {}",
                answer.status, answer.body
            );
            checked += 1;
        }
    }
    assert!(checked >= 50, "only {checked} operations documented");
}
