//! A broker that cannot confirm its routing view is current fails closed (issue "Several
//! instances, one broker", point 3, review finding): while its revision check cannot read the
//! stored revisions, another broker's revocation could be going unseen, so once the check's bound
//! has passed without a confirmation it refuses every request that needs a key, 503
//! `storage_unavailable` with `Retry-After`, hot cached DEKs included, and serves again as soon as
//! a check succeeds. The test blocks the checks by holding a lock on the revision table in a
//! session of its own. PostgreSQL only.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common;
use crate::instances_revocation::{
    CHECK_MS, byok_object, database, first_refusal, read_until_served,
};

use common::instances::Instances;
use common::process::{ADMIN_KEY, APP_KEY, call};

/// How soon after its last confirmation a broker refuses: the check interval plus 1 s (the
/// published backstop bound), plus the test's polling.
const STALE_BOUND: Duration = Duration::from_millis(CHECK_MS + 1000 + 300);

const SETTINGS: &[(&str, &str)] = &[
    ("BYOK_BROKER_COHERENCE_CHECK_MS", "500"),
    // A blocked check gives up after 1 s, as a slow or saturated database would make it.
    ("BYOK_BROKER_STORE_STATEMENT_TIMEOUT_MS", "1000"),
];

#[tokio::test]
async fn a_broker_whose_revision_check_fails_refuses_keyed_requests_until_it_succeeds_again() {
    let Some(instances) = Instances::spawn("stale-view", 2, SETTINGS).await else {
        return;
    };
    let (a, b) = (instances.port(0), instances.port(1));
    let (_, _, byok_path) = byok_object(a).await;
    read_until_served(b, &byok_path).await;
    let platform = json!({"name": "plain", "value": "v", "key_context": {"organization_id": "org_stale_platform"}});
    let (status, created) = call(b, APP_KEY, "POST", "/vault/v1/kv", &platform, &[]).await;
    assert_eq!(status, 201, "{created}");
    let platform_path = format!("/vault/v1/kv/{}", created["id"].as_str().unwrap());

    // The revision table locked: every broker's check waits, then times out.
    let db = database(&instances.url).await;
    db.batch_execute("BEGIN; LOCK TABLE byok_revision IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let locked = Instant::now();
    let (at, status, body) = first_refusal(
        b,
        APP_KEY.to_owned(),
        "GET",
        byok_path.clone(),
        Duration::from_secs(6),
    )
    .await
    .expect("B kept serving a tenant's data from a view it could not confirm");
    let delay = at.saturating_duration_since(locked);
    eprintln!("revision check blocked: B refused the tenant's hot object after {delay:?}");
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("storage_unavailable")),
        "{body}"
    );
    assert!(delay <= STALE_BOUND, "{delay:?}");
    // Every keyed request, not only BYOK contexts: a registration made elsewhere could cover
    // this context now.
    let (status, body) = call(b, APP_KEY, "GET", &platform_path, &Value::Null, &[]).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("storage_unavailable"))
    );
    let another = json!({"name": "plain-2", "value": "v", "key_context": {"organization_id": "org_stale_platform"}});
    let (status, body) = call(b, APP_KEY, "POST", "/vault/v1/kv", &another, &[]).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("storage_unavailable"))
    );
    // Requests that need no key still work (health, listing).
    let (status, _) = call(b, APP_KEY, "GET", "/vault/v1/kv", &Value::Null, &[]).await;
    assert_eq!(status, 200);

    db.batch_execute("ROLLBACK").await.unwrap();
    let released = Instant::now();
    let deadline = released + Duration::from_secs(5);
    loop {
        let (status, body) = call(b, APP_KEY, "GET", &byok_path, &Value::Null, &[]).await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never served again: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "lock released: B served again after {:?}",
        released.elapsed()
    );
    let (status, _) = call(b, APP_KEY, "GET", &platform_path, &Value::Null, &[]).await;
    assert_eq!(status, 200);
}

/// A database restored from a backup has a lower BYOK revision than the view brokers loaded:
/// "stored > loaded" never held again and the view froze until a restart, serving whatever the
/// restored state had revoked. Here the key is disabled and the revision set back, silently (no
/// trigger, no notification): B must pick the stored view up within the revision check's bound.
#[tokio::test]
async fn a_database_whose_revision_went_backwards_replaces_the_view() {
    let Some(instances) = Instances::spawn("stale-rewind", 2, SETTINGS).await else {
        return;
    };
    let (a, b) = (instances.port(0), instances.port(1));
    let (byok_id, _, path) = byok_object(a).await;
    read_until_served(b, &path).await;
    let db = database(&instances.url).await;
    let poller = tokio::spawn(first_refusal(
        b,
        APP_KEY.to_owned(),
        "GET",
        path.clone(),
        Duration::from_secs(5),
    ));
    tokio::time::sleep(Duration::from_millis(100)).await;
    db.batch_execute(&format!(
        "BEGIN; \
         ALTER TABLE byok_keys DISABLE TRIGGER byok_keys_change; \
         UPDATE byok_keys SET admin_disabled = 1 WHERE id = '{byok_id}'; \
         ALTER TABLE byok_keys ENABLE TRIGGER byok_keys_change; \
         UPDATE byok_revision SET revision = 1; \
         COMMIT;"
    ))
    .await
    .unwrap();
    let restored = Instant::now();
    let (at, status, body) = poller
        .await
        .unwrap()
        .expect("B kept serving from a view newer-numbered than the restored database");
    let delay = at.saturating_duration_since(restored);
    eprintln!("revision set back: B refused the disabled key after {delay:?}");
    assert_eq!((status, body["code"].as_str()), (403, Some("key_revoked")));
    assert!(delay <= STALE_BOUND, "{delay:?}");
}

/// A rewrap job running while the broker cannot confirm its view meets `storage_unavailable` on
/// every object: it pauses at the batch (not checkpointed, nothing counted failed) and resumes
/// once the view is confirmed again, so it ends `completed` with every object moved once. (Before:
/// it recorded each object of those batches as failed and ended `failed`.)
#[tokio::test]
async fn a_rewrap_job_pauses_while_the_view_is_unconfirmed_and_completes_after() {
    let settings = [
        SETTINGS[0],
        SETTINGS[1],
        // About 100 objects per second (two KMS calls each), so the lock lands mid-job.
        ("BYOK_BROKER_REWRAP_KMS_CALLS_PER_SECOND", "200"),
        ("BYOK_BROKER_REWRAP_BATCH_SIZE", "50"),
        ("BYOK_BROKER_REWRAP_LEASE_MS", "3000"),
    ];
    let Some(instances) = Instances::spawn("stale-rewrap", 1, &settings).await else {
        return;
    };
    let a = instances.port(0);
    let org = "org_stale_rewrap";
    let mut platform_kek = String::new();
    for i in 0..400 {
        let body =
            json!({"name": format!("o{i}"), "value": "v", "key_context": {"organization_id": org}});
        let (status, created) = call(a, APP_KEY, "POST", "/vault/v1/kv", &body, &[]).await;
        assert_eq!(status, 201, "{created}");
        platform_kek = created["key_id"].as_str().unwrap().to_owned();
    }
    let key_arn = common::create_key(common::TENANT_ACCOUNT).await;
    let registration = common::registration(org, &key_arn, common::TENANT_ACCOUNT);
    let (status, body) = call(
        a,
        ADMIN_KEY,
        "POST",
        "/admin/v1/byok-keys",
        &registration,
        &[],
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let source = json!({"source": {"kek_id": platform_kek}});
    let (status, job) = call(a, ADMIN_KEY, "POST", "/admin/v1/rewrap-jobs", &source, &[]).await;
    assert_eq!(status, 202, "{job}");
    let job_path = format!("/admin/v1/rewrap-jobs/{}", job["id"].as_str().unwrap());

    tokio::time::sleep(Duration::from_millis(500)).await;
    let db = database(&instances.url).await;
    db.batch_execute("BEGIN; LOCK TABLE byok_revision IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let (_, during) = call(a, ADMIN_KEY, "GET", &job_path, &Value::Null, &[]).await;
    db.batch_execute("ROLLBACK").await.unwrap();
    eprintln!("rewrap job while the view was unconfirmed: {during}");

    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let (_, status) = call(a, ADMIN_KEY, "GET", &job_path, &Value::Null, &[]).await;
        if status["state"] != "running" {
            break status;
        }
        assert!(Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("rewrap job at the end: {status}");
    assert_eq!(
        (
            status["state"].as_str(),
            status["done"].as_u64(),
            status["failed"].as_u64()
        ),
        (Some("completed"), Some(400), Some(0)),
        "{status}"
    );
}
