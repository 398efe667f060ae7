//! A rewrap job survives `kill -9` of the broker: after a restart it resumes from its checkpoint
//! and finishes without losing or double-wrapping any object (the broker binary, LocalStack).

use crate::common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::process::{ADMIN_KEY, APP_KEY, request, spawn_broker, temp_dir};
use common::{TENANT_ACCOUNT as TENANT, create_key, key_spec, raw_kms};
use futures_util::StreamExt;
use serde_json::{Value, json};

async fn call(port: u16, key: &str, method: &str, path: &str, body: Value) -> (u16, Value) {
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    request(port, key, method, path, &body)
        .await
        .expect("broker answers")
}

#[tokio::test]
async fn a_job_killed_mid_way_resumes_and_finishes_exactly_once() {
    let count: usize = std::env::var("BYOK_REWRAP_TEST_OBJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let data_dir = temp_dir("rewrap-crash");
    let prefix = common::unique_prefix("rewrap-crash");
    // Paced so the job is still running when the broker is killed.
    let settings = [
        ("BYOK_BROKER_REWRAP_KMS_CALLS_PER_SECOND", "400"),
        ("BYOK_BROKER_REWRAP_CONCURRENCY", "4"),
    ];
    let mut broker = spawn_broker(&data_dir, &prefix, &settings).await;
    let port = broker.port;

    let key_a = create_key(TENANT).await;
    let mut registration = key_spec(&key_a);
    registration["match_context"] = json!({"organization_id": "org_crash"});
    registration["provider"] = json!("aws_kms");
    let (status, body) = call(port, ADMIN_KEY, "POST", "/admin/v1/byok-keys", registration).await;
    assert_eq!(status, 201, "{body}");
    let byok_id = body["id"].as_str().unwrap().to_owned();

    let objects: HashMap<String, String> = futures_util::stream::iter(0..count)
        .map(|i| async move {
            let value = format!("crash test value {i}");
            let (status, body) = call(port, APP_KEY, "POST", "/vault/v1/kv", json!({"name": format!("crash-{i}"), "value": value, "key_context": {"organization_id": "org_crash"}})).await;
            assert_eq!(status, 201, "{body}");
            (body["id"].as_str().unwrap().to_owned(), value)
        })
        .buffer_unordered(16)
        .collect()
        .await;

    let key_b = create_key(TENANT).await;
    let (status, _) = call(
        port,
        ADMIN_KEY,
        "PUT",
        &format!("/admin/v1/byok-keys/{byok_id}"),
        key_spec(&key_b),
    )
    .await;
    assert_eq!(status, 200);
    let (status, job) = call(
        port,
        ADMIN_KEY,
        "POST",
        "/admin/v1/rewrap-jobs",
        json!({"source": {"byok_key_id": byok_id}}),
    )
    .await;
    assert_eq!(status, 202, "{job}");
    let job_id = job["id"].as_str().unwrap().to_owned();

    tokio::time::sleep(Duration::from_millis(800)).await;
    broker.child.kill().unwrap(); // SIGKILL, mid-job
    broker.child.wait().unwrap();

    let mut restarted = spawn_broker(&data_dir, &prefix, &settings).await;
    let port = restarted.port;
    let (_, at_restart) = call(
        port,
        ADMIN_KEY,
        "GET",
        &format!("/admin/v1/rewrap-jobs/{job_id}"),
        Value::Null,
    )
    .await;
    println!(
        "after kill -9: {} of {count} done, state {}",
        at_restart["done"], at_restart["state"]
    );
    assert!(
        at_restart["done"].as_u64().unwrap() < count as u64,
        "the kill landed mid-job"
    );

    let deadline = Instant::now() + Duration::from_secs(300);
    let finished = loop {
        let (_, status) = call(
            port,
            ADMIN_KEY,
            "GET",
            &format!("/admin/v1/rewrap-jobs/{job_id}"),
            Value::Null,
        )
        .await;
        if status["state"] != "running" {
            break status;
        }
        assert!(Instant::now() < deadline, "job never finished: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("resumed job: {finished}");
    assert_eq!(finished["state"], "completed");
    assert_eq!(
        (
            finished["done"].as_u64(),
            finished["failed"].as_u64(),
            finished["remaining"].as_u64()
        ),
        (Some(count as u64), Some(0), Some(0)),
        "every object exactly once"
    );

    raw_kms(TENANT)
        .await
        .disable_key()
        .key_id(&key_a)
        .send()
        .await
        .unwrap();
    let results: Vec<(u16, Value, String)> = futures_util::stream::iter(&objects)
        .map(|(id, value)| async move {
            let (status, body) = call(
                port,
                APP_KEY,
                "GET",
                &format!("/vault/v1/kv/{id}"),
                Value::Null,
            )
            .await;
            (status, body, value.clone())
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for (status, body, value) in results {
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["value"].as_str(), Some(value.as_str()));
        assert_eq!(body["metadata"]["key_id"].as_str(), Some(key_b.as_str()));
    }
    restarted.child.kill().unwrap();
    restarted.child.wait().unwrap();
}
