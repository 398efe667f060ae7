//! A rewrap job survives `kill -9` of the broker, and SIGTERM stops it at a checkpoint: after a
//! restart it resumes and finishes without losing or double-wrapping any object (the broker
//! binary, LocalStack).

use crate::common;

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::database;
use common::process::{self, ADMIN_KEY, APP_KEY, spawn_broker, temp_dir};
use common::{TENANT_ACCOUNT as TENANT, create_key, key_spec, raw_kms};
use futures_util::StreamExt;
use serde_json::{Value, json};

async fn call(port: u16, key: &str, method: &str, path: &str, body: Value) -> (u16, Value) {
    process::call(port, key, method, path, &body, &[]).await
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

    let (job_id, objects, key_a, key_b) = start_rotation_job(port, count, "org_crash").await;

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

    let finished = wait_until_finished(port, &job_id).await;
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

/// The job's counters as the stopped broker left them, read from its database.
async fn job_counters(data_dir: &std::path::Path, job_id: &str) -> (String, i64, i64) {
    let rows = database::query(
        data_dir,
        "SELECT state, done + skipped + failed, checkpoint_seq FROM rewrap_jobs WHERE id = $1",
        &[job_id],
    )
    .await;
    let row = rows.first().expect("the job's row");
    (row[0].text().to_owned(), row[1].integer(), row[2].integer())
}

#[tokio::test]
async fn sigterm_stops_a_job_at_a_checkpoint_and_a_restart_finishes_it_exactly_once() {
    let count: usize = 1000;
    // The default batch size (objects per checkpoint).
    let batch: i64 = 200;
    let (drain, worker_stop) = (Duration::from_secs(2), Duration::from_secs(5));
    let data_dir = temp_dir("rewrap-sigterm");
    let prefix = common::unique_prefix("rewrap-sigterm");
    let settings = [
        ("BYOK_BROKER_REWRAP_KMS_CALLS_PER_SECOND", "400"),
        ("BYOK_BROKER_REWRAP_CONCURRENCY", "4"),
        ("BYOK_BROKER_SHUTDOWN_DRAIN_MS", "2000"),
        ("BYOK_BROKER_WORKER_STOP_MS", "5000"),
    ];
    let mut broker = spawn_broker(&data_dir, &prefix, &settings).await;
    let port = broker.port;
    let (job_id, objects, _, key_b) = start_rotation_job(port, count, "org_sigterm").await;

    tokio::time::sleep(Duration::from_millis(500)).await;
    // The last request before the signal: its audit event must be in the database afterwards.
    let (last_id, _) = objects.iter().next().expect("an object");
    let (status, read) = call(
        port,
        APP_KEY,
        "GET",
        &format!("/vault/v1/kv/{last_id}"),
        Value::Null,
    )
    .await;
    assert_eq!(status, 200, "{read}");
    let last_name = read["name"].as_str().expect("name").to_owned();
    let pid = broker.child.id().to_string();
    let signalled = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let exit = broker
        .exited_within(drain + worker_stop)
        .await
        .expect("the broker exits within the drain bound plus the worker stop bound");
    println!("exited {exit} {:?} after SIGTERM", signalled.elapsed());
    assert!(exit.success(), "an ordered shutdown exits 0, got {exit}");

    let (state, processed, checkpoint) = job_counters(&data_dir, &job_id).await;
    println!("after SIGTERM: {processed} of {count} processed, checkpoint {checkpoint}, {state}");
    assert_eq!(state, "running", "a stopped job is resumed, not finished");
    assert!(
        processed > 0 && processed < count as i64,
        "the signal landed mid-job"
    );
    assert_eq!(
        processed % batch,
        0,
        "stopped at a checkpoint, not mid-batch"
    );
    let reads = database::query_i64(
        &data_dir,
        "SELECT COUNT(*) FROM audit_events WHERE event = 'vault.data.read' AND data_json LIKE $1",
        &[&format!("%\"kv_name\":\"{last_name}\"%")],
    )
    .await;
    assert_eq!(reads, 1, "the last request's audit event was committed");

    let restarted = spawn_broker(&data_dir, &prefix, &settings).await;
    let finished = wait_until_finished(restarted.port, &job_id).await;
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
    let (status, body) = call(
        restarted.port,
        APP_KEY,
        "GET",
        &format!("/vault/v1/kv/{last_id}"),
        Value::Null,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["metadata"]["key_id"].as_str(), Some(key_b.as_str()));
}

/// Registers a BYOK key over `count` new objects under `organization`, rotates it to a second CMK
/// and starts the rewrap job; returns the job id, the objects (id -> value) and both CMKs.
async fn start_rotation_job(
    port: u16,
    count: usize,
    organization: &str,
) -> (String, HashMap<String, String>, String, String) {
    let key_a = create_key(TENANT).await;
    let mut registration = key_spec(&key_a);
    registration["match_context"] = json!({"organization_id": organization});
    registration["provider"] = json!("aws_kms");
    let (status, body) = call(port, ADMIN_KEY, "POST", "/admin/v1/byok-keys", registration).await;
    assert_eq!(status, 201, "{body}");
    let byok_id = body["id"].as_str().unwrap().to_owned();

    let objects: HashMap<String, String> = futures_util::stream::iter(0..count)
        .map(|i| async move {
            let value = format!("crash test value {i}");
            let (status, body) = call(port, APP_KEY, "POST", "/vault/v1/kv", json!({"name": format!("crash-{i}"), "value": value, "key_context": {"organization_id": organization}})).await;
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

    (job_id, objects, key_a, key_b)
}

/// Polls the job until it is no longer running (at most five minutes).
async fn wait_until_finished(port: u16, job_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (_, status) = call(
            port,
            ADMIN_KEY,
            "GET",
            &format!("/admin/v1/rewrap-jobs/{job_id}"),
            Value::Null,
        )
        .await;
        if status["state"] != "running" {
            return status;
        }
        assert!(Instant::now() < deadline, "job never finished: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
