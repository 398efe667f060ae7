//! The audit hash chain on either backend: `byok-broker audit verify` (the binary, against the
//! database the configuration names) reports an intact trail, then names the right event and kind
//! of break after each way of tampering with plain SQL (modify, delete, insert, reorder); a purge
//! by retention is not a break; and the NDJSON export streams a range of one organization's
//! events, complete, in order, with chain fields a SIEM can check.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common;

use byok_broker::store::{ChainedFields, GENESIS_HASH, event_hash};
use common::broker::{ADMIN_KEY, TestBroker};
use common::database;
use serde_json::{Value, json};

/// Runs `byok-broker audit verify` on the broker's database; (success, stdout).
fn verify(data_dir: &Path, extra: &[&str]) -> (bool, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_byok-broker"));
    command
        .args(["audit", "verify"])
        .args(extra)
        .env("BYOK_BROKER_KMS", "local")
        .env("BYOK_BROKER_DATA_DIR", data_dir)
        .env_remove("BYOK_BROKER_CONFIG")
        .env_remove("BYOK_BROKER_DATABASE_URL");
    if let Some(url) = database::broker_url(data_dir) {
        command.env("BYOK_BROKER_DATABASE_URL", url);
    }
    let output = command.output().expect("run the CLI");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() || stderr.contains("the audit trail is broken"),
        "verify failed to run: {stdout}\n{stderr}"
    );
    (output.status.success(), stdout)
}

/// Records `count` events in `organization`'s chain through the broker's own store (so they are
/// sealed as any event is); their ids in order.
async fn record(broker: &TestBroker<impl Sized>, organization: &str, count: usize) -> Vec<String> {
    let events: Vec<_> = (0..count)
        .map(|n| {
            byok_broker::audit::event(None, "test.recorded", Some(organization), json!({ "n": n }))
        })
        .collect();
    let ids = events.iter().map(|e| e.id.clone()).collect();
    broker
        .broker
        .store
        .insert_events(events)
        .await
        .expect("recorded");
    ids
}

/// The line `verify` printed for `organization`'s chain.
fn chain_line<'a>(report: &'a str, organization: &str) -> &'a str {
    let prefix = format!("chain organization:{organization}:");
    report
        .lines()
        .find(|line| line.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no line for {organization} in:\n{report}"))
}

/// `(position, id)` of `organization`'s events, in chain order.
async fn positions(data_dir: &Path, organization: &str) -> Vec<(i64, String)> {
    database::query(
        data_dir,
        "SELECT chain_position, id FROM audit_events WHERE organization_id = $1 ORDER BY chain_position",
        &[organization],
    )
    .await
    .into_iter()
    .map(|row| (row[0].integer(), row[1].text().to_owned()))
    .collect()
}

#[tokio::test]
async fn verify_names_the_first_modified_deleted_inserted_and_reordered_event() {
    let broker = TestBroker::start_local("audit-verify").await;
    let data_dir = broker.data_dir.clone();
    for organization in [
        "org_modify",
        "org_delete",
        "org_insert",
        "org_reorder",
        "org_tail",
        "org_intact",
    ] {
        // Several groups per chain: events of one chain are sealed across commits.
        for _ in 0..3 {
            record(&broker, organization, 4).await;
        }
    }
    // Events the broker writes itself, inside a data write's transaction.
    let created = broker
        .call("POST", "/vault/v1/kv", Some(&json!({"name": "n", "value": "v", "key_context": {"organization_id": "org_intact"}})))
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    broker.shutdown().await;

    let (intact, report) = verify(&data_dir, &[]);
    assert!(intact, "{report}");
    // 12 recorded, and what the create recorded in its own transaction.
    let events = positions(&data_dir, "org_intact").await.len();
    assert!(events > 12);
    assert!(
        chain_line(&report, "org_intact")
            .contains(&format!("{events} events checked (positions 1-{events})")),
        "{report}"
    );
    assert!(report.ends_with(": intact\n"), "{report}");

    // Modified: an event's data changed.
    let modified = &positions(&data_dir, "org_modify").await[4].1;
    database::execute(
        &data_dir,
        "UPDATE audit_events SET data_json = '{\"n\":99}' WHERE id = $1",
        &[modified],
    )
    .await;
    // Deleted: an event in the middle of the chain.
    let chain = positions(&data_dir, "org_delete").await;
    database::execute(
        &data_dir,
        "DELETE FROM audit_events WHERE id = $1",
        &[&chain[6].1],
    )
    .await;
    // Inserted: a forged event claiming a chained event's position, another outside any chain.
    let chain = positions(&data_dir, "org_insert").await;
    database::execute(
        &data_dir,
        "INSERT INTO audit_events (id, event, organization_id, data_json, created_at, chain_position, chain_previous, chain_hash) \
         SELECT 'event_forged', event, organization_id, data_json, created_at, chain_position, chain_previous, chain_hash \
         FROM audit_events WHERE id = $1",
        &[&chain[7].1],
    )
    .await;
    database::execute(
        &data_dir,
        "UPDATE audit_events SET data_json = '{\"forged\":true}' WHERE id = 'event_forged'",
        &[],
    )
    .await;
    database::execute(
        &data_dir,
        "INSERT INTO audit_events (id, event, organization_id, data_json, created_at) \
         VALUES ('event_unchained', 'vault.data.read', 'org_intact', '{}', '2026-01-01T00:00:00.000000Z')",
        &[],
    )
    .await;
    // Reordered: two events swap positions.
    let chain = positions(&data_dir, "org_reorder").await;
    let (first, second) = (&chain[2].1, &chain[3].1);
    database::execute(
        &data_dir,
        "UPDATE audit_events SET chain_position = CASE WHEN id = $1 THEN CAST(CAST($3 AS TEXT) AS BIGINT) ELSE CAST(CAST($4 AS TEXT) AS BIGINT) END WHERE id IN ($1, $2)",
        &[first, second, "4", "3"],
    )
    .await;
    // Deleted at the tail: only the head record remembers it.
    let chain = positions(&data_dir, "org_tail").await;
    database::execute(
        &data_dir,
        "DELETE FROM audit_events WHERE id = $1",
        &[&chain[11].1],
    )
    .await;

    let (intact, report) = verify(&data_dir, &[]);
    assert!(!intact, "{report}");
    assert!(
        chain_line(&report, "org_modify")
            .contains(&format!("BROKEN: modified event {modified} at position 5")),
        "{report}"
    );
    let deleted_chain = positions(&data_dir, "org_delete").await;
    assert!(
        chain_line(&report, "org_delete").contains(&format!(
            "BROKEN: deleted event {} at position 7: the event at position 7 is missing (before event {})",
            deleted_chain[5].1, deleted_chain[6].1
        )),
        "{report}"
    );
    assert!(
        chain_line(&report, "org_insert")
            .contains("BROKEN: inserted event event_forged at position 8"),
        "{report}"
    );
    assert!(
        report.contains("outside any chain: BROKEN: inserted event event_unchained"),
        "{report}"
    );
    assert!(
        chain_line(&report, "org_reorder").contains(&format!(
            "BROKEN: reordered event {second} at position 3: intact, but chained at position 4"
        )),
        "{report}"
    );
    assert!(
        chain_line(&report, "org_tail").contains("BROKEN: deleted")
            && chain_line(&report, "org_tail").contains("position 12"),
        "{report}"
    );
    assert!(
        chain_line(&report, "org_intact").ends_with(": intact"),
        "{report}"
    );

    // A range before the tampering is intact; one chain alone reports alone.
    let (intact, report) = verify(
        &data_dir,
        &["--organization", "org_modify", "--to-position", "4"],
    );
    assert!(intact, "{report}");
    assert!(
        report.contains("4 events checked (positions 1-4)"),
        "{report}"
    );
    assert_eq!(report.lines().count(), 2, "{report}");
    let (intact, report) = verify(
        &data_dir,
        &["--organization", "org_modify", "--from-position", "6"],
    );
    assert!(intact, "from position 6 on, the chain is intact: {report}");
}

#[tokio::test]
async fn a_retention_purge_is_not_a_break() {
    let broker = TestBroker::start_local_with(
        "audit-purge",
        &[
            ("BYOK_BROKER_STORE_PURGE_INTERVAL_SECONDS", "1"),
            ("BYOK_BROKER_STORE_PURGE_BATCH_SIZE", "7"),
            ("BYOK_BROKER_STORE_AUDIT_RETENTION_DAYS", "30"),
        ],
    )
    .await;
    let data_dir = broker.data_dir.clone();
    let old: Vec<_> = (0..20)
        .map(|n| {
            let mut event =
                byok_broker::audit::event(None, "test.old", Some("org_purged"), json!({ "n": n }));
            event.created_at = "2000-01-01T00:00:00.000000Z".into();
            event
        })
        .collect();
    broker
        .broker
        .store
        .insert_events(old)
        .await
        .expect("recorded");
    record(&broker, "org_purged", 5).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while database::query_i64(
        &data_dir,
        "SELECT COUNT(*) FROM audit_events WHERE created_at < $1",
        &["2001"],
    )
    .await
        > 0
    {
        assert!(Instant::now() < deadline, "the old events were not purged");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    broker.shutdown().await;
    let (intact, report) = verify(&data_dir, &[]);
    assert!(intact, "{report}");
    assert!(
        chain_line(&report, "org_purged").contains("5 events checked (positions 21-25)"),
        "{report}"
    );
    // Deleting the oldest event left is a break again.
    let chain = positions(&data_dir, "org_purged").await;
    database::execute(
        &data_dir,
        "DELETE FROM audit_events WHERE id = $1",
        &[&chain[0].1],
    )
    .await;
    let (intact, report) = verify(&data_dir, &[]);
    assert!(!intact, "{report}");
    assert!(
        chain_line(&report, "org_purged").contains("BROKEN: deleted"),
        "{report}"
    );
}

#[tokio::test]
async fn the_ndjson_export_streams_one_organizations_range_complete_and_in_order() {
    let broker = TestBroker::start_local("audit-export").await;
    // Before the range: not exported.
    record(&broker, "org_export", 10).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let range_start = byok_broker::timestamp::Timestamp::now().to_rfc3339();
    let mut expected = Vec::new();
    for _ in 0..30 {
        expected.extend(record(&broker, "org_export", 100).await);
        record(&broker, "org_other", 20).await;
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    let range_end = byok_broker::timestamp::Timestamp::now().to_rfc3339();
    record(&broker, "org_export", 10).await;

    let path = format!(
        "/admin/v1/events?format=ndjson&organization_id=org_export&range_start={range_start}&range_end={range_end}"
    );
    let response = broker.raw("GET", &path, b"", Some(ADMIN_KEY), &[]).await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.headers.get("content-type").map(String::as_str),
        Some("application/x-ndjson")
    );
    assert_eq!(
        response
            .headers
            .get("transfer-encoding")
            .map(String::as_str),
        Some("chunked"),
        "streamed, not buffered"
    );
    let Value::String(body) = response.body else {
        panic!("an NDJSON body is not one JSON value")
    };
    let lines: Vec<Value> = body
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is one JSON object"))
        .collect();
    let ids: Vec<&str> = lines
        .iter()
        .map(|l| l["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids.len(), 3000);
    assert_eq!(ids, expected.iter().map(String::as_str).collect::<Vec<_>>());
    // A SIEM holding the 10 earlier events can check every line's hash and link.
    let mut previous: Option<String> = None;
    for (n, line) in lines.iter().enumerate() {
        let chain = &line["chain"];
        let position = chain["position"].as_i64().expect("position");
        assert_eq!(position, 11 + n as i64);
        let previous_hash = chain["previous_hash"].as_str().expect("previous hash");
        if let Some(previous) = &previous {
            assert_eq!(previous_hash, previous);
        }
        assert_ne!(previous_hash, GENESIS_HASH);
        let data = serde_json::to_string(&line["data"]).expect("data");
        let hash = event_hash(&ChainedFields {
            id: line["id"].as_str().expect("id"),
            event: line["event"].as_str().expect("event"),
            organization_id: line["organization_id"].as_str(),
            data_json: &data,
            created_at: line["created_at"].as_str().expect("created_at"),
            position,
            previous_hash,
        });
        assert_eq!(chain["hash"].as_str(), Some(hash.as_str()), "line {n}");
        previous = Some(hash);
    }

    // Paging parameters do not apply to an export; an unknown format is refused.
    let refused = broker
        .raw(
            "GET",
            "/admin/v1/events?format=ndjson&limit=5",
            b"",
            Some(ADMIN_KEY),
            &[],
        )
        .await;
    assert_eq!(
        (refused.status, refused.body["code"].as_str()),
        (422, Some("invalid_format"))
    );
    let refused = broker
        .raw(
            "GET",
            "/admin/v1/events?format=csv",
            b"",
            Some(ADMIN_KEY),
            &[],
        )
        .await;
    assert_eq!(
        (refused.status, refused.body["code"].as_str()),
        (422, Some("invalid_format"))
    );
}

/// Several instances append to one organization's chain at once (PostgreSQL only): each group
/// takes the chain's head last and in turn, so the chain stays dense and whole.
#[tokio::test]
async fn several_instances_append_to_one_chain_without_breaking_it() {
    use common::instances::Instances;
    use common::process::{APP_KEY, call};
    use futures_util::future::join_all;

    let Some(instances) = Instances::spawn("audit-instances", 3, &[]).await else {
        return;
    };
    let ports: Vec<u16> = (0..3).map(|i| instances.port(i)).collect();
    let context = json!({"organization_id": "org_shared"});
    let (status, created) = call(
        ports[0],
        APP_KEY,
        "POST",
        "/vault/v1/kv",
        &json!({"name": "shared", "value": "v", "key_context": context}),
        &[],
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let path = format!("/vault/v1/kv/{}", created["id"].as_str().expect("id"));
    let requests = join_all((0..150).map(|i| {
        let port = ports[i % 3];
        let (path, context) = (path.clone(), context.clone());
        async move {
            if i % 3 == 0 {
                let body = json!({"name": format!("n{i}"), "value": "v", "key_context": context});
                call(port, APP_KEY, "POST", "/vault/v1/kv", &body, &[])
                    .await
                    .0
            } else {
                call(port, APP_KEY, "GET", &path, &Value::Null, &[]).await.0
            }
        }
    }))
    .await;
    assert!(
        requests.iter().all(|s| *s == 200 || *s == 201),
        "{requests:?}"
    );
    let data_dir = instances.database_dir();
    let events = positions(data_dir, "org_shared").await;
    assert!(events.len() > 150, "{}", events.len());
    let (intact, report) = verify(data_dir, &["--organization", "org_shared"]);
    assert!(intact, "{report}");
    assert!(
        chain_line(&report, "org_shared").contains(&format!(
            "{n} events checked (positions 1-{n})",
            n = events.len()
        )),
        "{report}"
    );
}

/// Every read a broker answered before `kill -9` has its durable `vault.data.read` event: after a
/// restart (which indexes what the SQLite audit log holds) the events are in the table, chained,
/// and `audit verify` finds the trail intact. On PostgreSQL the events were in the table already.
#[tokio::test]
async fn acknowledged_reads_keep_their_events_through_kill_9_and_the_chain_stays_whole() {
    use common::process::{APP_KEY, request, spawn_local_broker, temp_dir};
    use std::sync::atomic::{AtomicUsize, Ordering};

    let data_dir = temp_dir("audit-kill9");
    let mut broker = spawn_local_broker(&data_dir, &[], None).await;
    let port = broker.port;
    let body =
        json!({"name": "hot", "value": "v", "key_context": {"organization_id": "org_kill_reads"}});
    let (status, created) = request(port, APP_KEY, "POST", "/vault/v1/kv", &body.to_string())
        .await
        .expect("created");
    assert_eq!(status, 201, "{created}");
    let path = format!("/vault/v1/kv/{}", created["id"].as_str().expect("id"));

    // 16 readers as fast as they can; killed once a few hundred reads were answered.
    let (answered, sent) = (&AtomicUsize::new(0), &AtomicUsize::new(0));
    let readers = (0..16).map(|_| {
        let path = path.clone();
        async move {
            loop {
                sent.fetch_add(1, Ordering::SeqCst);
                match request(port, APP_KEY, "GET", &path, "").await {
                    Some((200, _)) => answered.fetch_add(1, Ordering::SeqCst),
                    Some((status, json)) => panic!("unexpected {status}: {json}"),
                    None => break, // the broker is gone
                };
            }
        }
    });
    let killer = async {
        let deadline = Instant::now() + Duration::from_secs(30);
        while answered.load(Ordering::SeqCst) < 300 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        broker.child.kill().unwrap(); // SIGKILL
        broker.child.wait().unwrap();
    };
    tokio::join!(futures_util::future::join_all(readers), killer);
    let (answered, sent) = (answered.load(Ordering::SeqCst), sent.load(Ordering::SeqCst));
    assert!(
        answered >= 300,
        "only {answered} reads answered before the kill"
    );

    let restarted = spawn_local_broker(&data_dir, &[], None).await;
    let count = || {
        database::query_i64(
            &data_dir,
            "SELECT COUNT(*) FROM audit_events WHERE event = 'vault.data.read' AND organization_id = 'org_kill_reads'",
            &[],
        )
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut recorded = count().await;
    while (recorded as usize) < answered && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        recorded = count().await;
    }
    println!(
        "reads answered before kill -9: {answered} (of {sent} sent); events recorded: {recorded}"
    );
    assert!(
        (answered..=sent).contains(&(recorded as usize)),
        "{answered} reads were answered, {sent} sent, {recorded} events recorded"
    );
    let unchained = database::query_i64(
        &data_dir,
        "SELECT COUNT(*) FROM audit_events WHERE organization_id = 'org_kill_reads' AND chain_hash IS NULL",
        &[],
    )
    .await;
    assert_eq!(unchained, 0, "every recorded event is chained");
    drop(restarted);
    let (intact, report) = verify(&data_dir, &["--organization", "org_kill_reads"]);
    assert!(intact, "{report}");
    assert!(
        chain_line(&report, "org_kill_reads").contains("intact"),
        "{report}"
    );
}
