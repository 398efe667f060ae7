//! Several broker processes on one PostgreSQL behave as one broker (issue "Several instances"):
//! version checks, unique names and idempotency keys hold across instances, and a write through
//! one instance is what the next read through another returns.

use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::common;

use common::instances::Instances;
use common::process::{APP_KEY, call};

/// One request to instance `port` with the app key and `headers`.
async fn send(
    port: u16,
    method: &str,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    call(port, APP_KEY, method, path, body, headers).await
}

fn context() -> Value {
    json!({"organization_id": "org_instances"})
}

#[tokio::test]
async fn writes_through_three_instances_keep_version_checks_names_and_idempotency() {
    let Some(instances) = Instances::spawn("inst-writes", 3, &[]).await else {
        return;
    };
    let ports: Vec<u16> = (0..3).map(|i| instances.port(i)).collect();

    // 50 concurrent updates with one version check, spread over the instances: one wins.
    let (status, created) = send(
        ports[0],
        "POST",
        "/vault/v1/kv",
        &json!({"name": "counter", "value": "0", "key_context": context()}),
        &[],
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let version = created["version_id"].as_str().unwrap().to_owned();
    let path = format!("/vault/v1/kv/{id}");
    let updates = join_all((0..50).map(|i| {
        let body = json!({"value": format!("v{i}"), "version_check": version});
        let (port, path) = (ports[i % 3], path.clone());
        async move { send(port, "PUT", &path, &body, &[]).await.0 }
    }))
    .await;
    assert_eq!(
        updates.iter().filter(|s| **s == 201).count(),
        1,
        "{updates:?}"
    );
    assert_eq!(
        updates.iter().filter(|s| **s == 409).count(),
        49,
        "{updates:?}"
    );

    // Concurrent creates of one name in one context, over the instances: one object.
    let creates = join_all((0..30).map(|i| {
        let body = json!({"name": "only-once", "value": format!("{i}"), "key_context": context()});
        let port = ports[i % 3];
        async move { send(port, "POST", "/vault/v1/kv", &body, &[]).await.0 }
    }))
    .await;
    assert_eq!(
        creates.iter().filter(|s| **s == 201).count(),
        1,
        "{creates:?}"
    );
    assert!(
        creates.iter().all(|s| *s == 201 || *s == 409),
        "{creates:?}"
    );

    // An Idempotency-Key replayed on another instance answers the first response.
    let body = json!({"name": "idempotent", "value": "v", "key_context": context()});
    let headers = [("Idempotency-Key", "instances-retry-1")];
    let (first_status, first) = send(ports[0], "POST", "/vault/v1/kv", &body, &headers).await;
    assert_eq!(first_status, 201, "{first}");
    for port in &ports[1..] {
        let (status, replay) = send(*port, "POST", "/vault/v1/kv", &body, &headers).await;
        assert_eq!(
            (status, &replay["id"]),
            (201, &first["id"]),
            "replayed on another instance"
        );
    }
}

#[tokio::test]
async fn a_write_through_one_instance_is_what_the_next_read_through_another_returns() {
    let Some(instances) = Instances::spawn("inst-reads", 2, &[]).await else {
        return;
    };
    let (a, b) = (instances.port(0), instances.port(1));
    let (status, created) = send(
        a,
        "POST",
        "/vault/v1/kv",
        &json!({"name": "rw", "value": "v0", "key_context": context()}),
        &[],
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let path = format!("/vault/v1/kv/{}", created["id"].as_str().unwrap());
    let mut stale = Vec::new();
    for round in 1..=40 {
        // Alternate which instance writes and which reads; both have the object cached.
        let (writer, reader) = if round % 2 == 0 { (a, b) } else { (b, a) };
        let value = format!("v{round}");
        let (status, answer) = send(writer, "PUT", &path, &json!({"value": value}), &[]).await;
        assert_eq!(status, 201, "{answer}");
        let (status, read) = send(reader, "GET", &path, &Value::Null, &[]).await;
        assert_eq!(status, 200, "{read}");
        if read["value"] != value.as_str() {
            stale.push((round, read["value"].clone()));
        }
    }
    assert!(stale.is_empty(), "stale reads (round, value): {stale:?}");
    // A delete through one instance is seen by the other at once.
    let (status, _) = send(a, "DELETE", &path, &Value::Null, &[]).await;
    assert!(status == 200 || status == 204, "delete answered {status}");
    let (status, gone) = send(b, "GET", &path, &Value::Null, &[]).await;
    assert_eq!(status, 404, "{gone}");
}
