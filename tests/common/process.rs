//! The broker binary as a child process against LocalStack, for crash and signal tests, and a
//! one-shot request that reports a cut connection as `None`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::http_client::HttpClient;

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

/// Starts `byok-broker serve` with the local key provider (no LocalStack) on a free port, with
/// `settings` as extra environment and, if `open_files` is given, that `ulimit -n` for the process.
pub async fn spawn_local_broker(
    data_dir: &Path,
    settings: &[(&str, &str)],
    open_files: Option<u32>,
) -> BrokerProcess {
    let port = free_port();
    let binary = env!("CARGO_BIN_EXE_byok-broker");
    let mut command = match open_files {
        // exec keeps the broker's pid the child's pid, so signals reach the broker itself.
        Some(limit) => {
            let mut c = Command::new("bash");
            c.args([
                "-c",
                &format!("ulimit -n {limit} && exec \"$0\" serve"),
                binary,
            ]);
            c
        }
        None => {
            let mut c = Command::new(binary);
            c.arg("serve");
            c
        }
    };
    command
        .env("BYOK_BROKER_KMS", "local")
        .env("BYOK_BROKER_APP_KEY", APP_KEY)
        .env("BYOK_BROKER_ADMIN_KEY", ADMIN_KEY)
        .env("BYOK_BROKER_DATA_DIR", data_dir)
        .env("BYOK_BROKER_LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (name, value) in settings {
        command.env(name, value);
    }
    let child = command.spawn().expect("spawn broker");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // A served /healthz, not just a connect: the probe connection must not linger as a silent one.
        if request(port, APP_KEY, "GET", "/healthz", "")
            .await
            .is_some()
        {
            break;
        }
        assert!(Instant::now() < deadline, "broker did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    BrokerProcess { child, port }
}

impl BrokerProcess {
    /// Waits up to `limit` for the process to exit; `None` if it is still running.
    pub async fn exited_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
