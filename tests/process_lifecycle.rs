//! The broker binary as a process, against LocalStack: `kill -9` during a write burst loses no
//! acknowledged write and leaves no half-written row; SIGTERM lets in-flight requests finish.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::json;

const KEY: &str = "process-test-app-key-0123456789";

struct BrokerProcess {
    child: Child,
    port: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn spawn_broker(data_dir: &Path, prefix: &str) -> BrokerProcess {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_byok-broker"))
        .arg("serve")
        .env("BYOK_BROKER_KMS", "aws")
        .env("AWS_ENDPOINT_URL", common::localstack_endpoint())
        .env("AWS_REGION", common::REGION)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("BYOK_BROKER_APP_KEY", KEY)
        .env("BYOK_BROKER_DATA_DIR", data_dir)
        .env("BYOK_BROKER_LISTEN", format!("127.0.0.1:{port}"))
        .env("BYOK_BROKER_KEK_ALIAS_PREFIX", prefix)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn broker");
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "broker did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    BrokerProcess { child, port }
}

/// One request on its own connection; `None` when the connection failed or was cut.
async fn request(
    port: u16,
    method: &str,
    path: &str,
    body: &str,
) -> Option<(u16, serde_json::Value)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.ok()?;
    let text = String::from_utf8_lossy(&raw);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body_start = text.find("\r\n\r\n")? + 4;
    let json = serde_json::from_str(&text[body_start..]).ok()?;
    Some((status, json))
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("byok-{name}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn kill_9_during_a_write_burst_loses_no_acknowledged_write() {
    let data_dir = temp_dir("kill9");
    let prefix = common::unique_prefix("kill9");
    let mut broker = spawn_broker(&data_dir, &prefix).await;
    let port = broker.port;

    // 8 writers create objects as fast as they can; the broker is killed while they run.
    let writers = (0..8).map(|w| async move {
        let mut acknowledged = Vec::new();
        for i in 0.. {
            let name = format!("w{w}-{i}");
            let body = json!({"name": name, "value": format!("value of {name}"), "key_context": {"organization_id": "org_kill"}}).to_string();
            match request(port, "POST", "/vault/v1/kv", &body).await {
                Some((201, json)) => acknowledged.push((json["id"].as_str().unwrap().to_owned(), name)),
                Some((status, json)) => panic!("unexpected {status}: {json}"),
                None => break, // the broker is gone
            }
        }
        acknowledged
    });
    let killer = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
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

    let mut restarted = spawn_broker(&data_dir, &prefix).await;
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
    let db = rusqlite::Connection::open(data_dir.join("broker.db")).unwrap();
    let headless: i64 = db.query_row("SELECT COUNT(*) FROM objects o LEFT JOIN versions v ON v.id = o.current_version WHERE v.id IS NULL", [], |r| r.get(0)).unwrap();
    let orphaned: i64 = db.query_row("SELECT COUNT(*) FROM versions v LEFT JOIN objects o ON o.id = v.object_id WHERE o.id IS NULL", [], |r| r.get(0)).unwrap();
    assert_eq!((headless, orphaned), (0, 0));
    let _ = std::fs::remove_dir_all(data_dir);
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish() {
    let data_dir = temp_dir("sigterm");
    let mut broker = spawn_broker(&data_dir, &common::unique_prefix("sigterm")).await;
    let port = broker.port;
    let pid = broker.child.id().to_string();

    let requests = (0..20).map(|i| async move {
        let body = json!({"name": format!("t{i}"), "value": "v", "key_context": {"organization_id": "org_term"}}).to_string();
        let result = request(port, "POST", "/vault/v1/kv", &body).await;
        (result, Instant::now())
    });
    let terminate = async {
        tokio::time::sleep(Duration::from_millis(5)).await;
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
        "requests completed across SIGTERM: {completed} of 20, {after_signal} of them after the signal"
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
    let _ = std::fs::remove_dir_all(data_dir);
}
