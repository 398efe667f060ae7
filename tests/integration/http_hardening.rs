//! The broker binary (local key provider) against hostile or broken clients over raw TCP: slow,
//! silent, half-sent and idle connections are closed on time, the connection bound keeps room
//! for new clients even under a low open-file limit, SIGTERM exits within the drain bound, and
//! every refusal before routing (bad path, oversize target or headers, oversize announced body)
//! is JSON with a code.

use crate::common;

use std::process::Command;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::process::{APP_KEY, BrokerProcess, spawn_local_broker, temp_dir};

async fn connect(broker: &BrokerProcess) -> TcpStream {
    TcpStream::connect(("127.0.0.1", broker.port))
        .await
        .expect("connect")
}

/// Reads until the peer closes (EOF or reset); how long that took, or `None` after `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<(Duration, Vec<u8>)> {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((started + limit).into(), stream.read(&mut chunk)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some((started.elapsed(), received)),
            Ok(Ok(n)) => received.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Status line and JSON body of the first response in `bytes`.
fn parse_response(bytes: &[u8]) -> (u16, serde_json::Value) {
    let text = String::from_utf8_lossy(bytes);
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    let json = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("status {status} body is not JSON ({e}): {text:?}"));
    (status, json)
}

/// Sends `request` on a fresh connection and returns the (single, `Connection: close`) answer.
async fn exchange(broker: &BrokerProcess, request: &[u8]) -> (u16, serde_json::Value) {
    let mut stream = connect(broker).await;
    // The broker may answer and close before reading everything; the answer is what matters.
    let _ = stream.write_all(request).await;
    let (_, bytes) = closed_within(&mut stream, Duration::from_secs(5))
        .await
        .expect("the broker answers and closes");
    parse_response(&bytes)
}

fn get(target: &str, extra_headers: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer {APP_KEY}\r\nConnection: close\r\n{extra_headers}\r\n").into_bytes()
}

const SHORT_TIMEOUTS: &[(&str, &str)] = &[
    ("BYOK_BROKER_HEADER_READ_TIMEOUT_MS", "1000"),
    ("BYOK_BROKER_BODY_TIMEOUT_MS", "1000"),
    ("BYOK_BROKER_IDLE_TIMEOUT_MS", "2500"),
];

#[tokio::test]
async fn silent_slow_half_sent_and_idle_connections_are_closed_on_time() {
    let dir = temp_dir("timeouts");
    let broker = spawn_local_broker(&dir, SHORT_TIMEOUTS, None).await;
    let slack = Duration::from_secs(2);

    let mut silent = connect(&broker).await;
    let mut partial = connect(&broker).await;
    partial
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: b\r\n")
        .await
        .unwrap();
    let mut half_body = connect(&broker).await;
    half_body
        .write_all(format!("POST /vault/v1/kv HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer {APP_KEY}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\":").as_bytes())
        .await
        .unwrap();
    let mut keep_alive = connect(&broker).await;
    keep_alive
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: b\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 1024];
    let n = keep_alive.read(&mut answer).await.unwrap();
    assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 200"));
    let idle_from = Instant::now();

    let (silent_after, _) = closed_within(&mut silent, Duration::from_secs(1) + slack)
        .await
        .expect("a silent connection is closed after the header-read timeout");
    let (partial_after, _) = closed_within(&mut partial, Duration::from_secs(1) + slack)
        .await
        .expect("a connection with a partial head is closed after the header-read timeout");
    let (_, answer) = closed_within(&mut half_body, Duration::from_secs(1) + slack)
        .await
        .expect("a half-sent body is answered and closed after the body timeout");
    let (status, json) = parse_response(&answer);
    assert_eq!(
        (status, json["code"].as_str()),
        (408, Some("request_timeout")),
        "{json}"
    );

    // The keep-alive connection got its answer, then idles: the idle timeout (not the
    // header-read timeout) closes it.
    closed_within(&mut keep_alive, Duration::from_millis(2500) + slack)
        .await
        .expect("an idle keep-alive connection is closed after the idle timeout");
    assert!(
        idle_from.elapsed() >= Duration::from_millis(2000),
        "closed by the idle timeout, not the header-read timeout, after {:?}",
        idle_from.elapsed()
    );
    println!("silent closed after {silent_after:?}, partial head after {partial_after:?}");
}

#[tokio::test]
async fn refusals_before_routing_are_json_with_a_code() {
    let dir = temp_dir("json-refusals");
    let broker = spawn_local_broker(&dir, &[], None).await;

    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "undecodable path segment",
            get("/vault/v1/kv/%FF", ""),
            400,
            "invalid_path",
        ),
        (
            "target over the broker's bound",
            get(&format!("/vault/v1/kv/{}", "a".repeat(10_000)), ""),
            414,
            "uri_too_long",
        ),
        (
            "target over hyper's own bound",
            get(&format!("/vault/v1/kv/{}", "a".repeat(70_000)), ""),
            414,
            "uri_too_long",
        ),
        (
            "header section over the broker's bound",
            get("/healthz", &format!("X-Big: {}\r\n", "b".repeat(20_000))),
            431,
            "headers_too_large",
        ),
        (
            "more header fields than hyper parses",
            get(
                "/healthz",
                &(0..120)
                    .map(|i| format!("X-H{i}: v\r\n"))
                    .collect::<String>(),
            ),
            431,
            "headers_too_large",
        ),
        (
            "not HTTP at all",
            b"NOT HTTP\r\n\r\n".to_vec(),
            400,
            "malformed_request",
        ),
    ];
    for (case, request, status, code) in cases {
        let (got, json) = exchange(&broker, &request).await;
        assert_eq!(
            (got, json["code"].as_str()),
            (status, Some(code)),
            "{case}: {json}"
        );
        assert!(json["message"].is_string(), "{case}: {json}");
    }
}

#[tokio::test]
async fn expect_continue_with_an_oversize_length_gets_413_at_once() {
    let dir = temp_dir("expect");
    let broker = spawn_local_broker(&dir, &[], None).await;
    let mut stream = connect(&broker).await;
    stream
        .write_all(format!("POST /vault/v1/kv HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer {APP_KEY}\r\nContent-Type: application/json\r\nContent-Length: 20971520\r\nExpect: 100-continue\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut first = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut first))
        .await
        .expect("an answer without sending the body")
        .unwrap();
    let (status, json) = parse_response(&first[..n]);
    assert_eq!(
        (status, json["code"].as_str()),
        (413, Some("payload_too_large")),
        "{json}"
    );
}

/// 300 silent connections against a process limited to 256 descriptors: the bound sits below
/// the limit and evicts the longest-idle connection, so a new client is still served.
#[tokio::test]
async fn silent_connections_beyond_the_descriptor_limit_do_not_lock_clients_out() {
    let dir = temp_dir("fd-limit");
    let broker = spawn_local_broker(
        &dir,
        &[("BYOK_BROKER_HEADER_READ_TIMEOUT_MS", "60000")],
        Some(256),
    )
    .await;
    let mut silent = Vec::new();
    for _ in 0..300 {
        silent.push(connect(&broker).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let answer = tokio::time::timeout(
        Duration::from_secs(3),
        common::process::request(broker.port, APP_KEY, "GET", "/healthz", ""),
    )
    .await
    .expect("a new client is answered within 3 s");
    assert_eq!(answer.map(|(status, _)| status), Some(200));
    println!(
        "new client served after {:?} with 300 silent connections open",
        started.elapsed()
    );
    drop(silent);
}

#[tokio::test]
async fn sigterm_with_a_partial_request_open_exits_within_the_drain_bound() {
    let dir = temp_dir("drain");
    let mut broker = spawn_local_broker(
        &dir,
        &[
            ("BYOK_BROKER_HEADER_READ_TIMEOUT_MS", "60000"),
            ("BYOK_BROKER_SHUTDOWN_DRAIN_MS", "1000"),
        ],
        None,
    )
    .await;
    let mut partial = connect(&broker).await;
    partial
        .write_all(b"POST /vault/v1/kv HTTP/1.1\r\nHost: b\r\n")
        .await
        .unwrap();
    let _silent = connect(&broker).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pid = broker.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = broker
        .exited_within(Duration::from_secs(4))
        .await
        .expect("the broker exits within the drain bound (1 s) plus slack");
    assert!(status.success(), "exit status {status}");
}

/// At the bound with every connection busy (bodies still arriving) nothing can be evicted: the
/// newcomer gets 503 JSON at once instead of waiting unanswered; once a slot frees, it is served.
#[tokio::test]
async fn at_the_bound_with_every_connection_busy_a_newcomer_gets_503_json() {
    let dir = temp_dir("bound");
    let broker = spawn_local_broker(
        &dir,
        &[
            ("BYOK_BROKER_MAX_CONNECTIONS", "3"),
            ("BYOK_BROKER_BODY_TIMEOUT_MS", "60000"),
        ],
        None,
    )
    .await;
    let mut busy = Vec::new();
    for _ in 0..3 {
        let mut stream = connect(&broker).await;
        stream
            .write_all(format!("POST /vault/v1/kv HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer {APP_KEY}\r\nContent-Length: 100\r\n\r\n{{").as_bytes())
            .await
            .unwrap();
        busy.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, json) = exchange(&broker, &get("/healthz", "")).await;
    assert_eq!(
        (status, json["code"].as_str()),
        (503, Some("too_many_connections")),
        "{json}"
    );
    drop(busy);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = exchange(&broker, &get("/healthz", "")).await;
    assert_eq!(status, 200);
}
