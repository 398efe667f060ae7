//! Rewrap jobs against LocalStack: CMK→CMK after rotation (then the old CMK disabled, everything
//! still readable and byte-identical, data ciphertext untouched), the same with the broker killed
//! mid-job, concurrent updates during a job, onboarding (platform KEK → CMK), offboarding
//! (CMK → platform KEK, then delete), and a disabled source reported and finished by a re-run.
//! `BYOK_REWRAP_TEST_OBJECTS` sets the object count (1,000 by default; 10,000 for the long run).

use crate::common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use byok_broker::envelope::SealedValue;
use common::broker::{TestBroker, admin, register};
use common::database;
use common::{TENANT_ACCOUNT as TENANT, create_key, key_spec, raw_kms};
use futures_util::StreamExt;
use serde_json::{Value, json};

fn object_count() -> usize {
    std::env::var("BYOK_REWRAP_TEST_OBJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// Creates `count` objects (16 at a time) and returns id → value.
async fn create_objects(broker: &TestBroker, org: &str, count: usize) -> HashMap<String, String> {
    futures_util::stream::iter(0..count)
        .map(|i| async move {
            let value = format!("{org} secret number {i} {}", "x".repeat(i % 64));
            let body = json!({"name": format!("{org}-{i}"), "value": value, "key_context": {"organization_id": org}});
            let response = broker.call("POST", "/vault/v1/kv", Some(&body)).await;
            assert_eq!(response.status, 201, "{:?}", response.body);
            (response.body["id"].as_str().unwrap().to_owned(), value)
        })
        .buffer_unordered(16)
        .collect()
        .await
}

/// Reads every object and checks its value byte for byte; returns the KEK ids seen.
async fn assert_all_readable(
    broker: &TestBroker,
    objects: &HashMap<String, String>,
) -> HashMap<String, usize> {
    let keks: Vec<String> = futures_util::stream::iter(objects)
        .map(|(id, value)| async move {
            let response = broker
                .call("GET", &format!("/vault/v1/kv/{id}"), None)
                .await;
            assert_eq!(response.status, 200, "{id}: {:?}", response.body);
            assert_eq!(
                response.body["value"].as_str(),
                Some(value.as_str()),
                "{id} is byte-identical"
            );
            response.body["metadata"]["key_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut counts = HashMap::new();
    for kek in keks {
        *counts.entry(kek).or_default() += 1;
    }
    counts
}

async fn wait_for_job(broker: &TestBroker, job_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let status = admin(
            broker,
            "GET",
            &format!("/admin/v1/rewrap-jobs/{job_id}"),
            None,
        )
        .await
        .body;
        if status["state"] != "running" {
            return status;
        }
        assert!(Instant::now() < deadline, "job did not finish: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn start_job(broker: &TestBroker, source: Value) -> String {
    let response = admin(
        broker,
        "POST",
        "/admin/v1/rewrap-jobs",
        Some(&json!({"source": source})),
    )
    .await;
    assert_eq!(
        (response.status, response.body["state"].as_str()),
        (202, Some("running")),
        "{:?}",
        response.body
    );
    response.body["id"].as_str().unwrap().to_owned()
}

/// Data ciphertext (nonce ‖ ciphertext ‖ tag) per object, straight from the database.
async fn data_ciphertexts(data_dir: &Path) -> HashMap<String, Vec<u8>> {
    let rows = database::query(
        data_dir,
        "SELECT o.id, v.sealed FROM objects o JOIN versions v ON v.id = o.current_version",
        &[],
    )
    .await;
    rows.iter()
        .map(|row| {
            let sealed = SealedValue::decode(row[1].blob()).unwrap();
            (row[0].text().to_owned(), sealed.ciphertext)
        })
        .collect()
}

async fn start() -> TestBroker {
    TestBroker::start_with(
        "rewrap",
        &[
            ("BYOK_BROKER_REWRAP_KMS_CALLS_PER_SECOND", "0"),
            ("BYOK_BROKER_REWRAP_CONCURRENCY", "16"),
            ("BYOK_BROKER_BYOK_WATCH_INTERVAL_MS", "500"),
        ],
    )
    .await
}

#[tokio::test]
async fn rotation_rewrap_then_old_cmk_disabled_everything_still_readable() {
    let broker = start().await;
    let count = object_count();
    let (id, key_a) = register(&broker, "org_rot", TENANT).await;
    let objects = create_objects(&broker, "org_rot", count).await;
    let before = data_ciphertexts(&broker.data_dir).await;

    let key_b = create_key(TENANT).await;
    assert_eq!(
        admin(
            &broker,
            "PUT",
            &format!("/admin/v1/byok-keys/{id}"),
            Some(&key_spec(&key_b))
        )
        .await
        .status,
        200
    );
    let started = Instant::now();
    let job = start_job(&broker, json!({"byok_key_id": id})).await;
    let status = wait_for_job(&broker, &job).await;
    let elapsed = started.elapsed();
    println!(
        "rewrapped {count} objects CMK A -> CMK B in {:.2} s ({:.0} objects/s): {status}",
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(status["state"], "completed", "{status}");
    assert_eq!(
        (
            status["total"].as_u64(),
            status["done"].as_u64(),
            status["failed"].as_u64(),
            status["remaining"].as_u64()
        ),
        (Some(count as u64), Some(count as u64), Some(0), Some(0))
    );

    // The data ciphertext of every object is untouched; only wrapped DEKs moved.
    assert_eq!(data_ciphertexts(&broker.data_dir).await, before);
    // The tenant disables the old CMK: nothing depends on it any more.
    raw_kms(TENANT)
        .await
        .disable_key()
        .key_id(&key_a)
        .send()
        .await
        .unwrap();
    broker.broker.dek_cache.purge_kek(&key_a).await;
    let keks = assert_all_readable(&broker, &objects).await;
    assert_eq!(keks, HashMap::from([(key_b.clone(), count)]));
}

#[tokio::test]
async fn concurrent_updates_during_a_job_are_never_lost() {
    let broker = TestBroker::start_with(
        "rewrap-race",
        &[
            ("BYOK_BROKER_REWRAP_KMS_CALLS_PER_SECOND", "200"),
            ("BYOK_BROKER_REWRAP_CONCURRENCY", "4"),
        ],
    )
    .await;
    let (id, _key_a) = register(&broker, "org_race", TENANT).await;
    let mut objects = create_objects(&broker, "org_race", 300).await;
    let key_b = create_key(TENANT).await;
    assert_eq!(
        admin(
            &broker,
            "PUT",
            &format!("/admin/v1/byok-keys/{id}"),
            Some(&key_spec(&key_b))
        )
        .await
        .status,
        200
    );
    let job = start_job(&broker, json!({"byok_key_id": id})).await;

    // While the paced job runs, update 60 objects.
    let updates: Vec<(String, String)> = objects
        .keys()
        .take(60)
        .map(|id| (id.clone(), format!("updated {id}")))
        .collect();
    for (object_id, value) in &updates {
        let response = broker
            .call(
                "PUT",
                &format!("/vault/v1/kv/{object_id}"),
                Some(&json!({"value": value})),
            )
            .await;
        assert_eq!(response.status, 201);
        objects.insert(object_id.clone(), value.clone());
    }
    let status = wait_for_job(&broker, &job).await;
    println!("job during updates: {status}");
    assert_eq!(status["state"], "completed");
    // An object updated before the job reached it already moved to the new CMK by itself and is
    // not visited; one updated between read and write-back is skipped by the compare-and-swap.
    let (done, skipped) = (
        status["done"].as_u64().unwrap(),
        status["skipped"].as_u64().unwrap(),
    );
    assert!(done >= 240 && done + skipped <= 300, "{status}");
    assert_eq!(status["remaining"], 0);
    let keks = assert_all_readable(&broker, &objects).await;
    assert_eq!(
        keks,
        HashMap::from([(key_b, 300)]),
        "updated and rewrapped objects all end under the new CMK"
    );
}

#[tokio::test]
async fn onboarding_and_offboarding() {
    let broker = start().await;
    // Onboarding: objects under the platform KEK, then the tenant turns BYOK on.
    let objects = create_objects(&broker, "org_onboard", 100).await;
    let platform_kek = assert_all_readable(&broker, &objects)
        .await
        .into_keys()
        .next()
        .unwrap();
    let (id, cmk) = register(&broker, "org_onboard", TENANT).await;
    let job = start_job(&broker, json!({"kek_id": platform_kek})).await;
    let status = wait_for_job(&broker, &job).await;
    assert_eq!(
        (status["state"].as_str(), status["done"].as_u64()),
        (Some("completed"), Some(100)),
        "{status}"
    );
    assert_eq!(
        assert_all_readable(&broker, &objects).await,
        HashMap::from([(cmk.clone(), 100)])
    );
    assert_eq!(
        admin(&broker, "GET", &format!("/admin/v1/byok-keys/{id}"), None)
            .await
            .body["objects_under_other_keys"],
        0
    );

    // Offboarding: the tenant turns BYOK off; a job moves everything back to the platform KEK.
    assert_eq!(
        admin(
            &broker,
            "DELETE",
            &format!("/admin/v1/byok-keys/{id}"),
            None
        )
        .await
        .status,
        409
    );
    let retired = admin(
        &broker,
        "POST",
        &format!("/admin/v1/byok-keys/{id}/retire"),
        None,
    )
    .await;
    assert_eq!(retired.body["state"], "retired");
    let job = start_job(&broker, json!({"byok_key_id": id})).await;
    let status = wait_for_job(&broker, &job).await;
    assert_eq!(
        (status["state"].as_str(), status["done"].as_u64()),
        (Some("completed"), Some(100)),
        "{status}"
    );
    assert_eq!(
        assert_all_readable(&broker, &objects).await,
        HashMap::from([(platform_kek, 100)])
    );
    let deleted = admin(
        &broker,
        "DELETE",
        &format!("/admin/v1/byok-keys/{id}"),
        None,
    )
    .await;
    assert_eq!(deleted.status, 200, "{:?}", deleted.body);
}

#[tokio::test]
async fn a_disabled_source_is_reported_and_a_rerun_finishes() {
    let broker = start().await;
    let (id, key_a) = register(&broker, "org_stuck", TENANT).await;
    let objects = create_objects(&broker, "org_stuck", 50).await;
    let key_b = create_key(TENANT).await;
    assert_eq!(
        admin(
            &broker,
            "PUT",
            &format!("/admin/v1/byok-keys/{id}"),
            Some(&key_spec(&key_b))
        )
        .await
        .status,
        200
    );
    raw_kms(TENANT)
        .await
        .disable_key()
        .key_id(&key_a)
        .send()
        .await
        .unwrap();

    let job = start_job(&broker, json!({"byok_key_id": id})).await;
    let status = wait_for_job(&broker, &job).await;
    assert_eq!(
        (status["state"].as_str(), status["failed"].as_u64()),
        (Some("failed"), Some(50)),
        "{status}"
    );
    assert_eq!(
        status["failures"],
        json!([{"reason": "key_unavailable", "objects": 50}])
    );
    assert_eq!(
        status["remaining"], 50,
        "failed objects are left intact under the source"
    );

    raw_kms(TENANT)
        .await
        .enable_key()
        .key_id(&key_a)
        .send()
        .await
        .unwrap();
    // The watcher restores the old CMK by itself (interval 500 ms), then a re-run finishes. A
    // re-run that starts before the watcher has seen the key may move some objects and fail the
    // rest; the next one moves what is left, so the re-runs together move each object once.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut moved = 0;
    let rerun = loop {
        let response = admin(
            &broker,
            "POST",
            "/admin/v1/rewrap-jobs",
            Some(&json!({"source": {"byok_key_id": id}})),
        )
        .await;
        let status = wait_for_job(&broker, response.body["id"].as_str().unwrap()).await;
        moved += status["done"].as_u64().unwrap_or_default();
        if status["state"] == "completed" {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "re-run never completed: {status}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(
        (moved, rerun["remaining"].as_u64()),
        (50, Some(0)),
        "{rerun}"
    );
    assert_eq!(
        assert_all_readable(&broker, &objects).await,
        HashMap::from([(key_b, 50)])
    );
}
