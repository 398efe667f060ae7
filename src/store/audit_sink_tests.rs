//! The SQLite audit log through the store: index passes cut short by their caller, and appends
//! when the indexer cannot keep up.

use std::time::Duration;

use super::*;

fn events(from: usize, count: usize) -> Vec<AuditEvent> {
    (from..from + count)
        .map(|n| AuditEvent {
            id: format!("event_{n:06}"),
            event: "vault.data.read".into(),
            organization_id: Some("org_sink".into()),
            data_json: format!(r#"{{"n":{n}}}"#),
            created_at: "2026-11-29T00:00:00.000000Z".into(),
        })
        .collect()
}

async fn open() -> (Store, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("byok-sink-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    (Store::open(&dir.join("broker.db")).await.unwrap(), dir)
}

async fn indexed_events(store: &Store) -> usize {
    let query = crate::store::EventQuery {
        limit: 10_000,
        ..Default::default()
    };
    store.list_events(query).await.unwrap().0.len()
}

/// A listing's flush runs index passes inside a request, which a timeout or a client that goes
/// away can drop at any point, also after its transaction committed: the next passes must go on
/// from where the database says, not fail on the events already moved.
#[tokio::test]
async fn index_passes_cut_short_by_their_caller_leave_the_log_indexable() {
    let (store, dir) = open().await;
    for round in 0..40u64 {
        let n = usize::try_from(round).unwrap();
        store.append_audit_events(events(n * 10, 10)).await.unwrap();
        let cut = Duration::from_micros(25 * round);
        let _ = tokio::time::timeout(cut, store.index_audit_log()).await;
    }
    loop {
        let pass = store
            .index_audit_log()
            .await
            .expect("a pass after cut ones");
        if pass.remaining == 0 {
            break;
        }
    }
    assert_eq!(indexed_events(&store).await, 400, "each event indexed once");
    store.close().await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

/// Past the backlog bound an append waits for the indexer; an indexer that does not catch up
/// (here: none runs) makes it fail with a reason after a while, never hang.
#[tokio::test]
async fn an_append_past_the_backlog_bound_waits_then_fails_instead_of_hanging() {
    let (mut store, dir) = open().await;
    let AuditSink::Segments(sink) = &mut store.audit else {
        panic!("a SQLite store has the log");
    };
    let sink = Arc::get_mut(sink).expect("the only handle");
    // More than a fresh segment's header (counted until the first pass), less than one event.
    sink.max_backlog = 16;
    sink.patience = Duration::from_millis(200);
    store.append_audit_events(events(0, 1)).await.unwrap();
    let waited = tokio::time::timeout(
        Duration::from_secs(5),
        store.append_audit_events(events(1, 1)),
    )
    .await
    .expect("it gives up within its patience");
    assert!(
        matches!(&waited, Err(StoreError::Unavailable(why)) if why.contains("not keeping up")),
        "{waited:?}"
    );
    store.index_audit_log().await.unwrap();
    store
        .append_audit_events(events(2, 1))
        .await
        .expect("room again");
    store.close().await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}
