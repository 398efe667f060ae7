//! Retention on either backend: an idempotency record is honoured for its retention period and
//! then treated as absent and purged; audit events older than `audit_retention_days` are purged
//! in batches, newer ones kept; with no audit retention set, nothing is.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common;

use common::broker::TestBroker;
use common::database;
use serde_json::json;

const LONG_AGO: &str = "2000-01-01T00:00:00.000000Z";

/// `count` audit events dated `LONG_AGO`, inserted behind the broker's back.
async fn insert_old_audit_events(data_dir: &Path, count: u32) {
    let inserted = database::execute(
        data_dir,
        &format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {count}) \
             INSERT INTO audit_events (id, event, organization_id, data_json, created_at) \
             SELECT 'old-' || i, 'test.old', NULL, '{{}}', $1 FROM n"
        ),
        &[LONG_AGO],
    )
    .await;
    assert_eq!(inserted, u64::from(count));
}

async fn old_audit_events(data_dir: &Path) -> i64 {
    database::query_i64(
        data_dir,
        "SELECT COUNT(*) FROM audit_events WHERE created_at < $1",
        &["2001"],
    )
    .await
}

#[tokio::test]
async fn an_expired_idempotency_key_is_free_again_and_old_records_are_purged_in_batches() {
    let broker = TestBroker::start_local_with(
        "retention",
        &[
            ("BYOK_BROKER_STORE_PURGE_INTERVAL_SECONDS", "1"),
            ("BYOK_BROKER_STORE_PURGE_BATCH_SIZE", "1000"),
            ("BYOK_BROKER_STORE_AUDIT_RETENTION_DAYS", "30"),
        ],
    )
    .await;
    let body = json!({"name": "once", "value": "v", "key_context": {"organization_id": "org_ret"}})
        .to_string()
        .into_bytes();
    let headers = [("Idempotency-Key", "retention-key")];
    let (status, first) = broker.send("POST", "/vault/v1/kv", &body, &headers).await;
    assert_eq!(status, 201, "{first}");
    let (status, replay) = broker.send("POST", "/vault/v1/kv", &body, &headers).await;
    assert_eq!(
        (status, &replay["id"]),
        (201, &first["id"]),
        "replayed within retention"
    );

    // The record reaches its end of life: the key no longer replays, so the request runs again
    // (and finds its name taken), whether or not the purge has removed the row yet.
    let aged = database::execute(
        &broker.data_dir,
        "UPDATE idempotency SET created_at = $1",
        &[LONG_AGO],
    )
    .await;
    assert_eq!(aged, 1);
    let (status, again) = broker.send("POST", "/vault/v1/kv", &body, &headers).await;
    assert_eq!(
        (status, again["code"].as_str()),
        (409, Some("name_taken")),
        "{again}"
    );

    // 2500 old audit events: three batches of at most 1000.
    insert_old_audit_events(&broker.data_dir, 2500).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let old_events = old_audit_events(&broker.data_dir).await;
        let old_records = database::query_i64(
            &broker.data_dir,
            "SELECT COUNT(*) FROM idempotency WHERE created_at < $1",
            &["2001"],
        )
        .await;
        if old_events == 0 && old_records == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not purged within 15 s: {old_events} audit events, {old_records} idempotency records"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let recent =
        database::query_i64(&broker.data_dir, "SELECT COUNT(*) FROM audit_events", &[]).await;
    assert!(recent > 0, "events inside the retention period are kept");
}

#[tokio::test]
async fn without_an_audit_retention_period_audit_events_are_kept() {
    let broker = TestBroker::start_local_with(
        "retention-keep",
        &[("BYOK_BROKER_STORE_PURGE_INTERVAL_SECONDS", "1")],
    )
    .await;
    insert_old_audit_events(&broker.data_dir, 10).await;
    // Two purge runs at least.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(old_audit_events(&broker.data_dir).await, 10);
}
