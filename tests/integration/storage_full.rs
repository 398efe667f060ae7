//! A full database (SQLite's `SQLITE_FULL`, reached for real through `store.max_page_count`):
//! writes and reads answer 507 `storage_full` instead of 500 or a 200 whose audit event is lost
//! (reads once the audit log's events cannot be moved into the table), and the broker recovers
//! without a restart once space is freed, with every answered read's event in the table.

use crate::common;

use byok_broker::kms::local::LocalKms;
use common::broker::TestBroker;
use common::database;
use serde_json::json;

/// 4 KiB pages: room for the schema, the API keys and a few dozen 16 KiB values.
const MAX_PAGES: &str = "300";

fn create_body(name: &str) -> Vec<u8> {
    let value = "x".repeat(16 * 1024);
    json!({"name": name, "value": value, "key_context": {"organization_id": "org_full"}})
        .to_string()
        .into_bytes()
}

async fn read_events(broker: &TestBroker<LocalKms>) -> i64 {
    database::query_i64(
        &broker.data_dir,
        "SELECT COUNT(*) FROM audit_events WHERE event = 'vault.data.read'",
        &[],
    )
    .await
}

#[tokio::test]
async fn a_full_database_answers_storage_full_and_recovers_without_a_restart() {
    if database::is_postgres() {
        eprintln!(
            "storage_full: SQLite-only, skipped on PostgreSQL: it fills the database through \
             store.max_page_count, and PostgreSQL has no per-database size cap to fill"
        );
        return;
    }
    let broker =
        TestBroker::start_local_with("full", &[("BYOK_BROKER_STORE_MAX_PAGE_COUNT", MAX_PAGES)])
            .await;
    let mut ids = Vec::new();
    let full = loop {
        assert!(ids.len() < 200, "the database never filled up");
        let (status, answer) = broker
            .send(
                "POST",
                "/vault/v1/kv",
                &create_body(&format!("fill-{}", ids.len())),
                &[],
            )
            .await;
        match status {
            201 => ids.push(answer["id"].as_str().expect("id").to_owned()),
            _ => break (status, answer),
        }
    };
    assert_eq!(
        (full.0, full.1["code"].as_str()),
        (507, Some("storage_full")),
        "{}",
        full.1
    );
    assert!(!ids.is_empty());

    // Reads keep working until the audit log's events cannot be moved into the table, then fail.
    let path = format!("/vault/v1/kv/{}", ids[0]);
    let mut served = 0;
    let refused = loop {
        assert!(served < 2000, "every read answered 200 on a full database");
        let (status, answer) = broker.send("GET", &path, b"", &[]).await;
        match status {
            200 => served += 1,
            _ => break (status, answer),
        }
    };
    assert_eq!(
        (refused.0, refused.1["code"].as_str()),
        (507, Some("storage_full")),
        "{}",
        refused.1
    );
    // A first use of a new context must reserve its platform KEK in the store: that too is
    // storage_full, not an internal error.
    let (status, answer) = broker
        .send(
            "POST",
            "/vault/v1/keys/data-key",
            json!({"context": {"organization_id": "org_new_when_full"}})
                .to_string()
                .as_bytes(),
            &[],
        )
        .await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (507, Some("storage_full")),
        "{answer}"
    );
    // Freeing space (deleting objects) restores service without a restart.
    for id in &ids[1..] {
        let (status, answer) = broker
            .send("DELETE", &format!("/vault/v1/kv/{id}"), b"", &[])
            .await;
        assert_eq!(status, 200, "{answer}");
    }
    let (status, answer) = broker.send("GET", &path, b"", &[]).await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = broker
        .send("POST", "/vault/v1/kv", &create_body("after-recovery"), &[])
        .await;
    assert_eq!(status, 201, "{answer}");
    // Every read answered 200 had its event durable (in the audit log, while the table could
    // not take it); with space again, all of them are in the table: the `served` while full and
    // the one after recovery.
    broker.broker.audit.flush().await;
    assert_eq!(
        read_events(&broker).await,
        served + 1,
        "every 200 read has its audit event"
    );
}
