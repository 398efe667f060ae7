//! The broker binary as a child process (LocalStack or local key provider), for crash, signal and
//! connection tests, and a one-shot request that reports a cut connection as `None`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::TestDir;
use super::http_client::HttpClient;

pub const APP_KEY: &str = "process-test-app-key-0123456789";
pub const ADMIN_KEY: &str = "process-test-admin-key-0123456789";

pub struct BrokerProcess {
    pub child: Child,
    pub port: u16,
    /// The broker's stderr, shown when it fails to start; removed on drop.
    stderr_log: PathBuf,
}

/// How long a broker may take to serve its first request.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A file for the broker's stderr: a file rather than a pipe, so a broker that logs a lot never
/// blocks on a pipe nobody reads.
fn stderr_log() -> (PathBuf, File) {
    let path = std::env::temp_dir().join(format!(
        "byok-broker-stderr-{}.log",
        uuid::Uuid::new_v4().simple()
    ));
    let file = File::create(&path).expect("create the stderr log");
    (path, file)
}

/// Spawns `command` and waits until `probe` says it serves on `port`; a broker that exits or
/// does not serve in time fails the test with its stderr.
async fn start(mut command: Command, port: u16, probe: Probe) -> BrokerProcess {
    let (stderr_log, stderr) = stderr_log();
    command.stdout(Stdio::null()).stderr(stderr);
    let child = command.spawn().expect("spawn broker");
    let mut broker = BrokerProcess {
        child,
        port,
        stderr_log,
    };
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let serving = match probe {
            Probe::Connect => tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok(),
            Probe::Health => request(port, APP_KEY, "GET", "/healthz", "")
                .await
                .is_some(),
        };
        if serving {
            return broker;
        }
        if let Some(status) = broker.child.try_wait().expect("try_wait") {
            panic!(
                "the broker exited ({status}) before serving; its stderr:\n{}",
                broker.stderr()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the broker did not serve within {START_TIMEOUT:?}; its stderr:\n{}",
            broker.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[derive(Clone, Copy)]
enum Probe {
    /// Accepts a connection.
    Connect,
    /// Answers `/healthz`: the probe connection must not linger as a silent one.
    Health,
}

/// A port nothing listens on at the moment of asking.
pub fn free_port() -> u16 {
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
        .env("RUST_LOG", "warn");
    database_env(&mut command, data_dir);
    for (name, value) in extra {
        command.env(name, value);
    }
    start(command, port, Probe::Connect).await
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

/// One request that must be answered (a cut connection fails the test): its status and JSON body
/// (`Null` when there is none). A `Null` `body` sends none.
pub async fn call(
    port: u16,
    key: &str,
    method: &str,
    path: &str,
    body: &serde_json::Value,
    headers: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let client = HttpClient::new(&format!("http://127.0.0.1:{port}"), Some(key.to_owned()))
        .expect("an HTTP client");
    let payload = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    let response = client
        .send(method, path, &payload, headers)
        .await
        .unwrap_or_else(|e| panic!("{method} {path} on port {port}: {e}"));
    let json = serde_json::from_slice(&response.body).unwrap_or(serde_json::Value::Null);
    (response.status, json)
}

/// On PostgreSQL, points the broker at `data_dir`'s own database, so a restart finds its state;
/// on SQLite, keeps one from this process's environment from choosing the backend.
fn database_env(command: &mut Command, data_dir: &Path) {
    match super::database::broker_url(data_dir) {
        Some(url) => command.env("BYOK_BROKER_DATABASE_URL", url),
        None => command.env_remove("BYOK_BROKER_DATABASE_URL"),
    };
}

/// A fresh data directory for a broker process, removed when dropped (after the process, which
/// is declared later and so dropped first).
pub fn temp_dir(name: &str) -> TestDir {
    let dir = TestDir::new(name);
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
    let (command, port) = local_broker_command(data_dir, settings, open_files);
    start(command, port, Probe::Health).await
}

/// Like `spawn_local_broker`, for a broker that does not answer plain HTTP (a TLS listener): it
/// is up once it accepts connections.
pub async fn spawn_local_broker_accepting(
    data_dir: &Path,
    settings: &[(&str, &str)],
) -> BrokerProcess {
    let (command, port) = local_broker_command(data_dir, settings, None);
    start(command, port, Probe::Connect).await
}

/// `byok-broker serve` with the local key provider on a free port, and that port.
pub fn local_broker_command(
    data_dir: &Path,
    settings: &[(&str, &str)],
    open_files: Option<u32>,
) -> (Command, u16) {
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
        .env("RUST_LOG", "warn");
    database_env(&mut command, data_dir);
    for (name, value) in settings {
        command.env(name, value);
    }
    (command, port)
}

impl BrokerProcess {
    /// What the broker wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

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
        let _ = std::fs::remove_file(&self.stderr_log);
    }
}
