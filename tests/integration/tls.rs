//! TLS on the listener, through the binary (local key provider): requests over TLS, plain HTTP on
//! the TLS port, clients that refuse an expired or wrong-host certificate, client certificates
//! (none, another CA's, a good one, whose subject reaches the audit actor), rotation on SIGHUP
//! with an open connection kept, a bad new file that keeps the old certificate, and bad files at
//! start.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio_rustls::TlsConnector;

use crate::common::certs::{Issued, TestCa, client_config};
use crate::common::http_client::HttpClient;
use crate::common::process::{
    ADMIN_KEY, APP_KEY, BrokerProcess, local_broker_command, spawn_local_broker_accepting, temp_dir,
};

/// Starts a broker serving `server` (and requiring certificates from `client_ca`, if given).
pub(crate) async fn tls_broker(
    dir: &Path,
    server: &Issued,
    client_ca: Option<&TestCa>,
) -> BrokerProcess {
    let (cert, key) = server.write(dir, "server");
    let ca = client_ca.map(|ca| ca.write(dir, "client-ca"));
    let mut settings = vec![
        ("BYOK_BROKER_TLS_CERT", cert.display().to_string()),
        ("BYOK_BROKER_TLS_KEY", key.display().to_string()),
    ];
    if let Some(ca) = ca {
        settings.push(("BYOK_BROKER_TLS_CLIENT_CA", ca.display().to_string()));
    }
    let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    spawn_local_broker_accepting(dir, &settings).await
}

pub(crate) fn https(port: u16, key: &str, tls: rustls::ClientConfig) -> HttpClient {
    HttpClient::with_tls(
        &format!("https://127.0.0.1:{port}"),
        Some(key.to_owned()),
        Some(tls),
    )
    .unwrap()
}

async fn call(
    client: &HttpClient,
    method: &str,
    path: &str,
    body: &Value,
) -> Result<(u16, Value), String> {
    let payload = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    let response = client.send(method, path, &payload, &[]).await?;
    Ok((
        response.status,
        serde_json::from_slice(&response.body).unwrap_or(Value::Null),
    ))
}

fn object(name: &str) -> Value {
    json!({"name": name, "value": "s3cr3t", "key_context": {"organization_id": "org_tls"}})
}

#[tokio::test]
async fn requests_over_tls_succeed_and_plain_http_on_the_tls_port_gets_a_clear_answer() {
    let dir = temp_dir("tls-basic");
    let ca = TestCa::new("byok test CA");
    let broker = tls_broker(&dir, &ca.server(&["127.0.0.1", "localhost"], false), None).await;
    let client = https(broker.port, APP_KEY, client_config(&ca, None));
    let (status, created) = call(&client, "POST", "/vault/v1/kv", &object("over-tls"))
        .await
        .unwrap();
    assert_eq!(status, 201, "{created}");
    let path = format!("/vault/v1/kv/{}", created["id"].as_str().unwrap());
    let (status, read) = call(&client, "GET", &path, &Value::Null).await.unwrap();
    assert_eq!((status, read["value"].as_str()), (200, Some("s3cr3t")));

    // Plain HTTP to the TLS port: a JSON 400 that says to use https, then the connection closes.
    let plain = HttpClient::new(
        &format!("http://127.0.0.1:{}", broker.port),
        Some(APP_KEY.into()),
    )
    .unwrap();
    let (status, body) = call(&plain, "GET", "/healthz", &Value::Null).await.unwrap();
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "malformed_request");
    assert!(
        body["message"].as_str().unwrap().contains("https://"),
        "{body}"
    );
    // The broker is unharmed.
    assert_eq!(
        call(&client, "GET", "/healthz", &Value::Null)
            .await
            .unwrap()
            .0,
        200
    );
}

#[tokio::test]
async fn a_verifying_client_refuses_an_expired_or_wrong_host_certificate() {
    let ca = TestCa::new("byok test CA");
    for (name, server) in [
        ("expired", ca.server(&["127.0.0.1"], true)),
        ("wrong-host", ca.server(&["other.example"], false)),
    ] {
        let dir = temp_dir(&format!("tls-{name}"));
        let broker = tls_broker(&dir, &server, None).await;
        let client = https(broker.port, APP_KEY, client_config(&ca, None));
        let refused = call(&client, "GET", "/healthz", &Value::Null).await;
        assert!(refused.is_err(), "{name}: {refused:?}");
    }
    // And a certificate from a CA the client does not trust.
    let dir = temp_dir("tls-untrusted");
    let broker = tls_broker(
        &dir,
        &TestCa::new("other CA").server(&["127.0.0.1"], false),
        None,
    )
    .await;
    let client = https(broker.port, APP_KEY, client_config(&ca, None));
    assert!(
        call(&client, "GET", "/healthz", &Value::Null)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn with_a_client_ca_only_a_good_client_certificate_and_the_api_key_get_in() {
    let dir = temp_dir("tls-mtls");
    let server_ca = TestCa::new("byok server CA");
    let client_ca = TestCa::new("byok client CA");
    let broker = tls_broker(
        &dir,
        &server_ca.server(&["127.0.0.1"], false),
        Some(&client_ca),
    )
    .await;

    let no_certificate = https(broker.port, APP_KEY, client_config(&server_ca, None));
    assert!(
        call(&no_certificate, "GET", "/healthz", &Value::Null)
            .await
            .is_err()
    );
    let stranger = TestCa::new("another client CA").client("billing-backend", "Acme");
    let wrong_ca = https(
        broker.port,
        APP_KEY,
        client_config(&server_ca, Some(&stranger)),
    );
    assert!(
        call(&wrong_ca, "GET", "/healthz", &Value::Null)
            .await
            .is_err()
    );

    let good = client_ca.client("billing-backend", "Acme");
    // The certificate is not a credential by itself: the API key is still required.
    let keyless = HttpClient::with_tls(
        &format!("https://127.0.0.1:{}", broker.port),
        None,
        Some(client_config(&server_ca, Some(&good))),
    )
    .unwrap();
    assert_eq!(
        call(&keyless, "POST", "/vault/v1/kv", &object("keyless"))
            .await
            .unwrap()
            .0,
        401
    );
    let app = https(broker.port, APP_KEY, client_config(&server_ca, Some(&good)));
    let (status, created) = call(&app, "POST", "/vault/v1/kv", &object("with-certificate"))
        .await
        .unwrap();
    assert_eq!(status, 201, "{created}");

    // The audit actor carries the certificate's subject next to the key.
    let admin = https(
        broker.port,
        ADMIN_KEY,
        client_config(&server_ca, Some(&good)),
    );
    let (status, events) = call(
        &admin,
        "GET",
        "/admin/v1/events?events=vault.data.created",
        &Value::Null,
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{events}");
    let event = &events["data"][0]["data"];
    assert_eq!(event["actor_name"], "bootstrap-app", "{events}");
    assert_eq!(
        event["actor_certificate_subject"], "CN=billing-backend,O=Acme",
        "{events}"
    );
}

/// A keep-alive HTTP/1.1 connection over TLS, for a connection that stays open across a rotation.
struct KeptConnection {
    stream: BufReader<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
}

impl KeptConnection {
    async fn open(port: u16, tls: rustls::ClientConfig) -> std::io::Result<Self> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let stream = TlsConnector::from(Arc::new(tls)).connect(name, tcp).await?;
        Ok(Self {
            stream: BufReader::new(stream),
        })
    }

    /// `GET /healthz` on this connection; its status.
    async fn healthz(&mut self) -> std::io::Result<u16> {
        self.stream
            .get_mut()
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: broker\r\n\r\n")
            .await?;
        let mut line = String::new();
        self.stream.read_line(&mut line).await?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut length = 0usize;
        loop {
            line.clear();
            if self.stream.read_line(&mut line).await? == 0 || line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        self.stream.read_exact(&mut body).await?;
        Ok(status)
    }
}

fn hangup(broker: &BrokerProcess) {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &broker.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn sighup_rotates_the_certificate_for_new_connections_and_keeps_open_ones() {
    let dir = temp_dir("tls-rotation");
    let (old_ca, new_ca) = (TestCa::new("old CA"), TestCa::new("new CA"));
    let broker = tls_broker(&dir, &old_ca.server(&["127.0.0.1"], false), None).await;
    let mut kept = KeptConnection::open(broker.port, client_config(&old_ca, None))
        .await
        .unwrap();
    assert_eq!(kept.healthz().await.unwrap(), 200);

    // A bad new key: the old certificate stays, and the log says why without quoting the file.
    std::fs::write(
        dir.join("server-key.pem"),
        "-----BEGIN PRIVATE KEY-----\nnot-key-material!!\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    hangup(&broker);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !broker.stderr().contains("not reloaded") {
        assert!(
            Instant::now() < deadline,
            "no reload failure logged: {}",
            broker.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        broker.stderr().contains("server-key.pem"),
        "{}",
        broker.stderr()
    );
    assert!(
        !broker.stderr().contains("not-key-material"),
        "{}",
        broker.stderr()
    );
    let old_client = https(broker.port, APP_KEY, client_config(&old_ca, None));
    assert_eq!(
        call(&old_client, "GET", "/healthz", &Value::Null)
            .await
            .unwrap()
            .0,
        200
    );

    // The new certificate (another CA, so a client that pins it cannot mistake the old one).
    new_ca.server(&["127.0.0.1"], false).write(&dir, "server");
    hangup(&broker);
    let new_client = https(broker.port, APP_KEY, client_config(&new_ca, None));
    let deadline = Instant::now() + Duration::from_secs(10);
    while call(&new_client, "GET", "/healthz", &Value::Null)
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "the new certificate is not served: {}",
            broker.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A fresh client that trusts only the old CA is refused now (a fresh one: an old client's
    // TLS session may still resume, as with any server whose certificate changes).
    let fresh_old = https(broker.port, APP_KEY, client_config(&old_ca, None));
    assert!(
        call(&fresh_old, "GET", "/healthz", &Value::Null)
            .await
            .is_err()
    );
    // The connection opened before the rotation still works.
    assert_eq!(kept.healthz().await.unwrap(), 200);
}

#[tokio::test]
async fn a_missing_or_mismatched_file_is_a_clear_startup_error() {
    let dir = temp_dir("tls-bad-start");
    let ca = TestCa::new("byok test CA");
    let (cert, _) = ca.server(&["127.0.0.1"], false).write(&dir, "one");
    let (_, other_key) = ca.server(&["127.0.0.1"], false).write(&dir, "two");
    let missing = dir.join("missing.pem");
    for (key, expected) in [
        (missing.display().to_string(), "missing.pem"),
        (
            other_key.display().to_string(),
            "does not belong to the certificate",
        ),
    ] {
        let cert = cert.display().to_string();
        let (mut command, _) = local_broker_command(
            &dir,
            &[
                ("BYOK_BROKER_TLS_CERT", &cert),
                ("BYOK_BROKER_TLS_KEY", &key),
            ],
            None,
        );
        command.stdout(std::process::Stdio::null());
        let output = tokio::time::timeout(
            Duration::from_secs(20),
            tokio::task::spawn_blocking(move || command.output()),
        )
        .await
        .unwrap()
        .unwrap()
        .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success());
        assert!(stderr.contains(expected), "{stderr}");
        assert!(!stderr.contains("PRIVATE KEY"), "{stderr}");
    }
}

/// The connection bound holds over TLS: idle connections make room, and when every connection is
/// busy a newcomer gets the 503 JSON after its handshake.
#[tokio::test]
async fn the_connection_bound_holds_over_tls() {
    let dir = temp_dir("tls-bound");
    let ca = TestCa::new("byok test CA");
    let (cert, key) = ca.server(&["127.0.0.1"], false).write(&dir, "server");
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let broker = spawn_local_broker_accepting(
        &dir,
        &[
            ("BYOK_BROKER_TLS_CERT", &cert),
            ("BYOK_BROKER_TLS_KEY", &key),
            ("BYOK_BROKER_MAX_CONNECTIONS", "2"),
            ("BYOK_BROKER_BODY_TIMEOUT_MS", "60000"),
        ],
    )
    .await;
    let client = https(broker.port, APP_KEY, client_config(&ca, None));
    // Two idle keep-alive connections at the bound: the newcomer evicts one and is served.
    let mut idle = Vec::new();
    for _ in 0..2 {
        let mut connection = KeptConnection::open(broker.port, client_config(&ca, None))
            .await
            .unwrap();
        assert_eq!(connection.healthz().await.unwrap(), 200);
        idle.push(connection);
    }
    assert_eq!(
        call(&client, "GET", "/healthz", &Value::Null)
            .await
            .unwrap()
            .0,
        200
    );
    drop(idle);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Two connections with a body still arriving: nothing can be evicted.
    let mut busy = Vec::new();
    for _ in 0..2 {
        let mut connection = KeptConnection::open(broker.port, client_config(&ca, None))
            .await
            .unwrap();
        let head = format!(
            "POST /vault/v1/kv HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer {APP_KEY}\r\nContent-Length: 100\r\n\r\n{{"
        );
        let stream = connection.stream.get_mut();
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.flush().await.unwrap();
        busy.push(connection);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = call(&client, "GET", "/healthz", &Value::Null)
        .await
        .unwrap();
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("too_many_connections")),
        "{body}"
    );
    drop(busy);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        call(&client, "GET", "/healthz", &Value::Null)
            .await
            .unwrap()
            .0,
        200
    );
}
