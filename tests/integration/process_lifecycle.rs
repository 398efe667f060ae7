//! The broker binary as a process, against LocalStack: `kill -9` during a write burst loses no
//! acknowledged write and leaves no half-written row; SIGTERM lets in-flight requests finish.

use crate::common;

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::json;

use common::database;
use common::process::{APP_KEY as KEY, spawn_broker, temp_dir};

async fn request(
    port: u16,
    method: &str,
    path: &str,
    body: &str,
) -> Option<(u16, serde_json::Value)> {
    common::process::request(port, KEY, method, path, body).await
}

#[tokio::test]
async fn kill_9_during_a_write_burst_loses_no_acknowledged_write() {
    let data_dir = temp_dir("kill9");
    let prefix = common::unique_prefix("kill9");
    let mut broker = spawn_broker(&data_dir, &prefix, &[]).await;
    let port = broker.port;

    // 8 writers create objects as fast as they can; the broker is killed while they run.
    let acks = &AtomicUsize::new(0);
    let writers = (0..8).map(|w| async move {
        let mut acknowledged = Vec::new();
        for i in 0.. {
            let name = format!("w{w}-{i}");
            let body = json!({"name": name, "value": format!("value of {name}"), "key_context": {"organization_id": "org_kill"}}).to_string();
            match request(port, "POST", "/vault/v1/kv", &body).await {
                Some((201, json)) => {
                    acks.fetch_add(1, Ordering::SeqCst);
                    acknowledged.push((json["id"].as_str().unwrap().to_owned(), name));
                }
                Some((status, json)) => panic!("unexpected {status}: {json}"),
                None => break, // the broker is gone
            }
        }
        acknowledged
    });
    let killer = async {
        // Killed once the burst is under way, not after a fixed time: the first write creates the
        // context's KEK in LocalStack, which a loaded machine can take well over a second to do.
        let deadline = Instant::now() + Duration::from_secs(30);
        while acks.load(Ordering::SeqCst) < 20 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        broker.child.kill().unwrap(); // SIGKILL
        broker.child.wait().unwrap();
    };
    let (acknowledged, ()) = tokio::join!(join_all(writers), killer);
    let acknowledged: Vec<(String, String)> = acknowledged.into_iter().flatten().collect();
    println!("acknowledged writes before kill -9: {}", acknowledged.len());
    assert!(
        acknowledged.len() >= 10,
        "the burst made progress before the kill"
    );

    let mut restarted = spawn_broker(&data_dir, &prefix, &[]).await;
    for (id, name) in &acknowledged {
        let (status, json) = request(restarted.port, "GET", &format!("/vault/v1/kv/{id}"), "")
            .await
            .expect("read");
        assert_eq!(
            status, 200,
            "acknowledged write {name} is readable after kill -9: {json}"
        );
        assert_eq!(json["value"], format!("value of {name}").as_str());
    }
    restarted.child.kill().unwrap();
    restarted.child.wait().unwrap();

    // No half rows: every object has its current version, every version has its object.
    let headless = database::query_i64(&data_dir, "SELECT COUNT(*) FROM objects o LEFT JOIN versions v ON v.id = o.current_version WHERE v.id IS NULL", &[]).await;
    let orphaned = database::query_i64(&data_dir, "SELECT COUNT(*) FROM versions v LEFT JOIN objects o ON o.id = v.object_id WHERE o.id IS NULL", &[]).await;
    assert_eq!((headless, orphaned), (0, 0));
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish() {
    let data_dir = temp_dir("sigterm");
    let mut broker = spawn_broker(&data_dir, &common::unique_prefix("sigterm"), &[]).await;
    let port = broker.port;
    let pid = broker.child.id().to_string();

    let requests = (0..40).map(|i| async move {
        let body = json!({"name": format!("t{i}"), "value": "v", "key_context": {"organization_id": "org_term"}}).to_string();
        let result = request(port, "POST", "/vault/v1/kv", &body).await;
        (result, Instant::now())
    });
    let terminate = async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        Instant::now()
    };
    let (finished, signalled_at) = tokio::join!(join_all(requests), terminate);
    let after_signal = finished
        .iter()
        .filter(|(r, at)| r.is_some() && *at > signalled_at)
        .count();
    let results: Vec<_> = finished.into_iter().map(|(r, _)| r).collect();
    let completed = results
        .iter()
        .filter(|r| matches!(r, Some((201, _))))
        .count();
    println!(
        "requests completed across SIGTERM: {completed} of 40, {after_signal} of them after the signal"
    );
    assert!(
        after_signal > 0,
        "the signal arrived while requests were in flight"
    );
    // Each request was either served in full, or never accepted (refused after the listener closed).
    for (status, body) in results.iter().flatten() {
        assert_eq!(*status, 201, "{body}");
    }
    let status = broker.child.wait().unwrap();
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
}
