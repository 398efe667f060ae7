//! The broker binary as a child process against LocalStack, for crash and signal tests, and a
//! one-shot request that reports a cut connection as `None`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use byok_broker::cli::http_client::HttpClient;

pub const APP_KEY: &str = "process-test-app-key-0123456789";
pub const ADMIN_KEY: &str = "process-test-admin-key-0123456789";

pub struct BrokerProcess {
    pub child: Child,
    pub port: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `byok-broker serve` on a free port and waits until it accepts connections.
pub async fn spawn_broker(data_dir: &Path, prefix: &str, extra: &[(&str, &str)]) -> BrokerProcess {
    let port = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_byok-broker"));
    command
        .arg("serve")
        .env("BYOK_BROKER_KMS", "aws")
        .env("AWS_ENDPOINT_URL", super::localstack_endpoint())
        .env("AWS_REGION", super::REGION)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("BYOK_BROKER_APP_KEY", APP_KEY)
        .env("BYOK_BROKER_ADMIN_KEY", ADMIN_KEY)
        .env("BYOK_BROKER_DATA_DIR", data_dir)
        .env("BYOK_BROKER_LISTEN", format!("127.0.0.1:{port}"))
        .env("BYOK_BROKER_KEK_ALIAS_PREFIX", prefix)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (name, value) in extra {
        command.env(name, value);
    }
    let child = command.spawn().expect("spawn broker");
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
pub async fn request(
    port: u16,
    key: &str,
    method: &str,
    path: &str,
    body: &str,
) -> Option<(u16, serde_json::Value)> {
    let client = HttpClient::new(&format!("http://127.0.0.1:{port}"), Some(key.to_owned())).ok()?;
    let response = client.send(method, path, body.as_bytes(), &[]).await.ok()?;
    let json = serde_json::from_slice(&response.body).ok()?;
    Some((response.status, json))
}

pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("byok-{name}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
