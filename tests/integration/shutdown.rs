//! Ordered shutdown in process: `Supervisor::shutdown` ends every background task, the audit
//! event of the last request is in the events table (on SQLite: indexed from the audit log
//! before the database closes), and the store's writer thread has joined.

use std::time::Duration;

use serde_json::json;

use crate::common::broker::TestBroker;
use crate::common::database;

/// Events named `event` in the broker's database, read with a connection of the test's own.
async fn events_named(data_dir: &std::path::Path, event: &str) -> i64 {
    database::query_i64(
        data_dir,
        "SELECT COUNT(*) FROM audit_events WHERE event = $1",
        &[event],
    )
    .await
}

#[tokio::test]
async fn shutdown_ends_every_task_commits_the_audit_queue_and_joins_the_database_writer() {
    let broker = TestBroker::start_local("shutdown").await;
    let body =
        json!({"name": "last", "value": "v", "key_context": {"organization_id": "org_stop"}});
    let created = broker.call("POST", "/vault/v1/kv", Some(&body)).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let id = created.body["id"].as_str().expect("id").to_owned();
    let read = broker
        .call("GET", &format!("/vault/v1/kv/{id}"), None)
        .await;
    assert_eq!(read.status, 200, "{:?}", read.body);
    // A refusal before authentication: counted in memory, committed by the shutdown's flush.
    let refused = broker
        .call_with("GET", &format!("/vault/v1/kv/{id}"), None, None, &[])
        .await;
    assert_eq!(refused.status, 401);
    // The watcher, the retention purge, the rewrap claim scan, the refusal counts' flush, the
    // audit writer, the audit log's indexer and the database's closer; on PostgreSQL also the
    // coherence worker (other processes may share the database).
    let coherence = usize::from(database::is_postgres());
    assert_eq!(broker.supervisor.running(), 7 + coherence);
    assert!(!broker.broker.store.is_closed());

    tokio::time::timeout(Duration::from_secs(10), broker.shutdown())
        .await
        .expect("shutdown ends within its bounds");

    assert_eq!(broker.supervisor.running(), 0, "no task left running");
    assert!(broker.broker.store.is_closed(), "the writer thread joined");
    assert!(
        broker.broker.store.ping().await.is_err(),
        "the readers are closed"
    );
    assert_eq!(events_named(&broker.data_dir, "vault.data.read").await, 1);
    assert_eq!(
        events_named(&broker.data_dir, "vault.access.denied").await,
        1,
        "the last refusal counts are committed before the audit writer stops"
    );
    // A task handed over after shutdown is refused, not left running.
    broker
        .supervisor
        .spawn(byok_broker::supervisor::Stage::Workers, "late", |_| async {
        });
    assert_eq!(broker.supervisor.running(), 0);
}
