//! Rewrap jobs are leased (issue "Several instances"): a job started on instance A runs on A
//! alone; after `kill -9` of A another instance claims it once the lease runs out, resumes at the
//! checkpoint and finishes with every object rewrapped exactly once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::common;

use common::database;
use common::instances::Instances;
use common::process::{self, ADMIN_KEY, APP_KEY};
use common::{TENANT_ACCOUNT as TENANT, create_key, key_spec, raw_kms};

const OBJECTS: usize = 600;
const LEASE_MS: u64 = 3000;

async fn call(port: u16, key: &str, method: &str, path: &str, body: Value) -> (u16, Value) {
    process::call(port, key, method, path, &body, &[]).await
}

/// The job's lease owner and its `done` counter, from the shared database.
async fn lease(instances: &Instances, job_id: &str) -> (Option<String>, i64) {
    let rows = database::query(
        instances.database_dir(),
        "SELECT lease_owner, done FROM rewrap_jobs WHERE id = $1",
        &[job_id],
    )
    .await;
    let row = rows.first().expect("the job's row");
    let owner = match &row[0] {
        database::Value::Null => None,
        other => Some(other.text().to_owned()),
    };
    (owner, row[1].integer())
}

#[tokio::test]
async fn a_job_whose_instance_is_killed_is_resumed_by_another_and_finishes_exactly_once() {
    let lease_ms = LEASE_MS.to_string();
    // Paced (ReEncrypt: one call per object) so the job runs for about six seconds.
    let settings = [
        ("BYOK_BROKER_REWRAP_KMS_CALLS_PER_SECOND", "100"),
        ("BYOK_BROKER_REWRAP_CONCURRENCY", "4"),
        ("BYOK_BROKER_REWRAP_LEASE_MS", lease_ms.as_str()),
    ];
    let Some(mut instances) = Instances::spawn("inst-rewrap", 3, &settings).await else {
        return;
    };
    let (a, b) = (instances.port(0), instances.port(1));

    // A BYOK key over OBJECTS objects, rotated to a second CMK, all through A.
    let key_a = create_key(TENANT).await;
    let mut registration = key_spec(&key_a);
    registration["match_context"] = json!({"organization_id": "org_lease"});
    registration["provider"] = json!("aws_kms");
    let (status, body) = call(a, ADMIN_KEY, "POST", "/admin/v1/byok-keys", registration).await;
    assert_eq!(status, 201, "{body}");
    let byok_id = body["id"].as_str().unwrap().to_owned();
    let objects: HashMap<String, String> = futures_util::stream::iter(0..OBJECTS)
        .map(|i| async move {
            let value = format!("lease test value {i}");
            let body = json!({"name": format!("lease-{i}"), "value": value, "key_context": {"organization_id": "org_lease"}});
            let (status, body) = call(a, APP_KEY, "POST", "/vault/v1/kv", body).await;
            assert_eq!(status, 201, "{body}");
            (body["id"].as_str().unwrap().to_owned(), value)
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let key_b = create_key(TENANT).await;
    let path = format!("/admin/v1/byok-keys/{byok_id}");
    let (status, body) = call(a, ADMIN_KEY, "PUT", &path, key_spec(&key_b)).await;
    assert_eq!(status, 200, "{body}");
    let (status, job) = call(
        a,
        ADMIN_KEY,
        "POST",
        "/admin/v1/rewrap-jobs",
        json!({"source": {"byok_key_id": byok_id}}),
    )
    .await;
    assert_eq!(status, 202, "{job}");
    let job_id = job["id"].as_str().unwrap().to_owned();

    // A runs it alone: it holds the lease and the others never take it while A lives.
    let (owner_a, _) = lease(&instances, &job_id).await;
    let owner_a = owner_a.expect("the starter holds the lease");
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        assert_eq!(
            lease(&instances, &job_id).await.0.as_deref(),
            Some(owner_a.as_str())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    instances.brokers[0].child.kill().unwrap(); // SIGKILL, mid-job
    instances.brokers[0].child.wait().unwrap();
    let killed = Instant::now();
    let (_, done_at_kill) = lease(&instances, &job_id).await;
    assert!(
        (done_at_kill as usize) < OBJECTS,
        "the kill landed mid-job ({done_at_kill} done)"
    );

    let (successor, resumed) = loop {
        let (owner, _) = lease(&instances, &job_id).await;
        if let Some(owner) = owner.filter(|o| *o != owner_a) {
            break (owner, killed.elapsed());
        }
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "nobody resumed the job"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The lease A last renewed runs out within LEASE_MS; a claim scan comes every LEASE_MS / 5.
    let bound = Duration::from_millis(LEASE_MS + LEASE_MS / 5 + 500);
    println!(
        "after kill -9 at {done_at_kill}/{OBJECTS} done: resumed by {successor} in {resumed:?} (lease {LEASE_MS} ms, bound {bound:?})"
    );
    assert!(resumed <= bound, "resumed after {resumed:?} > {bound:?}");

    let deadline = Instant::now() + Duration::from_secs(120);
    let finished = loop {
        let (_, status) = call(
            b,
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
            finished["total"].as_u64(),
            finished["done"].as_u64(),
            finished["skipped"].as_u64(),
            finished["failed"].as_u64(),
            finished["remaining"].as_u64()
        ),
        (
            Some(OBJECTS as u64),
            Some(OBJECTS as u64),
            Some(0),
            Some(0),
            Some(0)
        ),
        "every object exactly once"
    );
    let left = database::query_i64(
        instances.database_dir(),
        "SELECT COUNT(*) FROM versions WHERE kek_id = $1",
        &[&key_a],
    )
    .await;
    assert_eq!(left, 0, "no version left under the source CMK");

    // Readable without the source CMK, through both survivors.
    raw_kms(TENANT)
        .await
        .disable_key()
        .key_id(&key_a)
        .send()
        .await
        .unwrap();
    let ports = [instances.port(1), instances.port(2)];
    let results: Vec<(u16, Value, String)> = futures_util::stream::iter(objects.iter().enumerate())
        .map(|(i, (id, value))| async move {
            let (status, body) = call(
                ports[i % 2],
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
}
