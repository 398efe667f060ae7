//! The broker under test: a release `byok-broker serve` child process against LocalStack, on one
//! store backend (its embedded SQLite, or a fresh PostgreSQL database), with helpers to seed it,
//! read its KMS call counters, and measure its peak memory.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::http_client::HttpClient;
use futures_util::StreamExt;
use serde_json::json;

use crate::Options;
use crate::database::Database;
use crate::load::{LoadResult, RequestPlan};
use crate::raw::{TENANT_ACCOUNT, client, create_key};

pub const APP_KEY: &str = "bench-app-key-0123456789abcdef";
pub const ADMIN_KEY: &str = "bench-admin-key-0123456789abcdef";

/// Where a broker keeps its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Stopped (and its PostgreSQL database dropped) when dropped, also when a failed run unwinds.
pub struct Broker {
    child: Child,
    pub port: u16,
    pub backend: Backend,
    /// Held for its `Drop`, which drops the PostgreSQL database.
    _database: Option<Database>,
    data_dir: std::path::PathBuf,
    localstack: String,
    app: HttpClient,
    admin: HttpClient,
    /// The client side of the broker's TLS (a CA made for this broker), `None` for plain HTTP.
    pub tls: crate::load::Tls,
}

impl Broker {
    /// Starts a broker on `backend`; `prefix` names its data directory and KEK aliases.
    pub async fn start(
        options: &Options,
        backend: Backend,
        prefix: &str,
        extra: &[(&str, &str)],
    ) -> Self {
        Self::start_with_tls(options, backend, prefix, extra, false).await
    }

    /// Like `start`, serving TLS when `tls` (a certificate for 127.0.0.1 from a CA made here).
    pub async fn start_with_tls(
        options: &Options,
        backend: Backend,
        prefix: &str,
        extra: &[(&str, &str)],
        tls: bool,
    ) -> Self {
        let database = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(
                Database::create(
                    options
                        .database_url
                        .as_deref()
                        .expect("the PostgreSQL half needs --database-url"),
                )
                .await,
            ),
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let data_dir = std::env::temp_dir().join(format!("byok-bench-{prefix}"));
        let mut command = Command::new(&options.broker);
        command
            .arg("serve")
            .env("BYOK_BROKER_KMS", "aws")
            .env("AWS_ENDPOINT_URL", &options.localstack)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("BYOK_BROKER_APP_KEY", APP_KEY)
            .env("BYOK_BROKER_ADMIN_KEY", ADMIN_KEY)
            .env("BYOK_BROKER_DATA_DIR", &data_dir)
            .env("BYOK_BROKER_LISTEN", format!("127.0.0.1:{port}"))
            .env("BYOK_BROKER_KEK_ALIAS_PREFIX", prefix.replace('_', "-"))
            // Not the per-request lines: a flood of 503 kms_busy would print one each.
            .env("RUST_LOG", "warn,byok_broker::access=error")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        // Whatever the bench's own environment says, the backend is the one asked for.
        match &database {
            Some(database) => command.env("BYOK_BROKER_DATABASE_URL", &database.url),
            None => command.env_remove("BYOK_BROKER_DATABASE_URL"),
        };
        for (name, value) in extra {
            command.env(name, value);
        }
        // The certificate files sit in the data directory, removed with it.
        std::fs::create_dir_all(&data_dir).unwrap();
        let client_tls = tls.then(|| {
            let (cert, key, client) = test_certificate(&data_dir);
            command
                .env("BYOK_BROKER_TLS_CERT", cert)
                .env("BYOK_BROKER_TLS_KEY", key);
            std::sync::Arc::new(client)
        });
        let child = command.spawn().expect("start the broker");
        let url = format!("{}://127.0.0.1:{port}", if tls { "https" } else { "http" });
        let client = |key: &str| {
            HttpClient::with_tls(&url, Some(key.into()), client_tls.as_deref().cloned()).unwrap()
        };
        let broker = Self {
            child,
            port,
            backend,
            _database: database,
            data_dir,
            localstack: options.localstack.clone(),
            app: client(APP_KEY),
            admin: client(ADMIN_KEY),
            tls: client_tls,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while broker.app.call("GET", "/healthz", None).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "the {backend} broker did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        broker
    }

    pub async fn create_objects(
        &self,
        prefix: &str,
        count: usize,
        value: fn(u64) -> String,
    ) -> Vec<String> {
        futures_util::stream::iter(0..count as u64)
            .map(|i| async move {
                let body = json!({"name": format!("{prefix}-{i}-{}", uuid::Uuid::new_v4().simple()), "value": value(i), "key_context": {"organization_id": format!("org_{prefix}_{}", i % 10)}});
                let (status, body) = self.app.call("POST", "/vault/v1/kv", Some(&body)).await.expect("create");
                assert_eq!(status, 201, "{body}");
                body["id"].as_str().unwrap().to_owned()
            })
            .buffer_unordered(16)
            .collect()
            .await
    }

    pub async fn data_key_blobs(&self, count: usize) -> Vec<String> {
        futures_util::stream::iter(0..count)
            .map(|i| async move {
                let context =
                    json!({"context": {"organization_id": format!("org_blob_{}", i % 10)}});
                let (status, body) = self
                    .app
                    .call("POST", "/vault/v1/keys/data-key", Some(&context))
                    .await
                    .expect("data key");
                assert_eq!(status, 200, "{body}");
                body["encrypted_keys"].as_str().unwrap().to_owned()
            })
            .buffer_unordered(16)
            .collect()
            .await
    }

    /// Reads every object once (16 at a time): what a hot-read point then reads has its DEK
    /// cached, so a short (quick) point measures hot reads, not the first Decrypt of each object.
    pub async fn read_each(&self, ids: &[String]) {
        futures_util::stream::iter(ids)
            .for_each_concurrent(16, |id| async move {
                let (status, body) = self
                    .app
                    .call("GET", &format!("/vault/v1/kv/{id}"), None)
                    .await
                    .expect("read");
                assert_eq!(status, 200, "{body}");
            })
            .await;
    }

    /// Decrypts every data key once (16 at a time), for the same reason.
    pub async fn decrypt_each(&self, blobs: &[String]) {
        futures_util::stream::iter(blobs)
            .for_each_concurrent(16, |blob| async move {
                let (status, body) = self
                    .app
                    .call(
                        "POST",
                        "/vault/v1/keys/decrypt",
                        Some(&json!({"keys": blob})),
                    )
                    .await
                    .expect("decrypt");
                assert_eq!(status, 200, "{body}");
            })
            .await;
    }

    pub async fn metrics(&self) -> String {
        let (status, body) = self
            .admin
            .call_raw("GET", "/admin/v1/metrics", None)
            .await
            .expect("metrics");
        assert_eq!(status, 200, "metrics");
        String::from_utf8_lossy(&body).into_owned()
    }

    /// KMS calls of one operation so far (all accounts and outcomes).
    pub async fn kms_calls(&self, operation: &str) -> u64 {
        let needle = format!("operation=\"{operation}\"");
        sum_series(&self.metrics().await, |line| {
            line.starts_with("byok_broker_kms_calls_total") && line.contains(&needle)
        })
    }

    pub async fn kms_calls_total(&self) -> u64 {
        sum_series(&self.metrics().await, |line| {
            line.starts_with("byok_broker_kms_calls_total")
        })
    }

    /// Runs one load point and returns it with the KMS calls it caused per 1,000 requests.
    pub async fn measure(
        &self,
        concurrency: usize,
        duration: Duration,
        plan: std::sync::Arc<RequestPlan>,
    ) -> (LoadResult, f64) {
        let before = self.kms_calls_total().await;
        let result = crate::load::run(self.port, &self.tls, concurrency, duration, plan).await;
        let calls = self.kms_calls_total().await - before;
        let per_1000 = calls as f64 * 1000.0 / result.requests.max(1) as f64;
        (result, per_1000)
    }

    /// Peak resident memory of the broker process (VmHWM), MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        status_kib(self.child.id(), "VmHWM:") as f64 / 1024.0
    }

    /// Registers a tenant CMK, writes `count` objects, rotates, runs a rewrap job; returns its
    /// objects per second and the two key ARNs.
    pub async fn rewrap_job_rate(&self, count: usize) -> (f64, String, String) {
        let tenant = client(&self.localstack, TENANT_ACCOUNT).await;
        let key_a = create_key(&tenant).await;
        let role = format!("arn:aws:iam::{TENANT_ACCOUNT}:role/bench");
        let registration = json!({"match_context": {"organization_id": "org_rewrap_bench"}, "provider": "aws_kms", "key_arn": key_a, "role_arn": role});
        let (status, body) = self
            .admin
            .call("POST", "/admin/v1/byok-keys", Some(&registration))
            .await
            .unwrap();
        assert_eq!(status, 201, "{body}");
        let id = body["id"].as_str().unwrap().to_owned();
        futures_util::stream::iter(0..count)
            .for_each_concurrent(16, |i| async move {
                let body = json!({"name": format!("rewrap-{i}-{}", uuid::Uuid::new_v4().simple()), "value": "v".repeat(1024), "key_context": {"organization_id": "org_rewrap_bench"}});
                let (status, _) = self.app.call("POST", "/vault/v1/kv", Some(&body)).await.unwrap();
                assert_eq!(status, 201);
            })
            .await;
        let key_b = create_key(&tenant).await;
        let (status, body) = self
            .admin
            .call(
                "PUT",
                &format!("/admin/v1/byok-keys/{id}"),
                Some(&json!({"key_arn": key_b, "role_arn": role})),
            )
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
        let (status, job) = self
            .admin
            .call(
                "POST",
                "/admin/v1/rewrap-jobs",
                Some(&json!({"source": {"byok_key_id": id}})),
            )
            .await
            .unwrap();
        assert_eq!(status, 202, "{job}");
        let job_id = job["id"].as_str().unwrap().to_owned();
        loop {
            let (_, job) = self
                .admin
                .call("GET", &format!("/admin/v1/rewrap-jobs/{job_id}"), None)
                .await
                .unwrap();
            if job["state"] != "running" {
                assert_eq!(job["state"], "completed", "{job}");
                return (
                    job["objects_per_second"].as_f64().unwrap_or(0.0),
                    key_a,
                    key_b,
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `perf record` of this broker for `duration` (flat, 499 Hz) into `file`.
    pub fn profile(&self, file: &str, duration: Duration) -> Child {
        Command::new("perf")
            .args([
                "record",
                "-F",
                "499",
                "-o",
                file,
                "-p",
                &self.child.id().to_string(),
                "--",
                "sleep",
            ])
            .arg(format!("{:.1}", duration.as_secs_f64()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("perf (Debian package linux-perf) is installed")
    }

    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
        // `_database` is dropped after this, once the broker is gone.
    }
}

/// A CA, and a certificate for 127.0.0.1 signed by it, written under `dir`: the certificate and
/// key paths, and a client configuration that trusts the CA.
fn test_certificate(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, rustls::ClientConfig) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let (cert_file, key_file) = (dir.join("tls-cert.pem"), dir.join("tls-key.pem"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    (cert_file, key_file, client)
}

fn sum_series(metrics: &str, matches: impl Fn(&str) -> bool) -> u64 {
    metrics
        .lines()
        .filter(|l| matches(l))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Resident memory that `count` cached DEKs add, measured in this process.
pub async fn cache_memory_mib(count: usize) -> f64 {
    use byok_broker::cache::{DekCache, DekCacheConfig};
    use byok_broker::context::KeyContext;
    use byok_broker::data_key::DataKey;
    let before = status_kib(std::process::id(), "VmRSS:");
    let cache = DekCache::new(DekCacheConfig {
        ttl: Duration::from_secs(3600),
        capacity: count as u64 + 1,
    });
    let kek = "arn:aws:kms:us-east-1:111111111111:key/2b5c1f0e-6a0d-4a5b-9f0e-1c2d3e4f5a6b";
    for i in 0..count {
        let context = KeyContext::new([("organization_id", format!("org_{}", i % 1000))]).unwrap();
        // A realistic wrapped DEK size from KMS (~180 bytes); only its digest is kept.
        let wrapped = format!("{i:0>180}");
        cache
            .get_or_load(kek, wrapped.as_bytes(), &context, || async {
                Ok(DataKey::random().unwrap())
            })
            .await
            .unwrap();
    }
    cache.run_pending_tasks().await;
    let after = status_kib(std::process::id(), "VmRSS:");
    assert_eq!(cache.stats().entries, count as u64);
    drop(cache);
    after.saturating_sub(before) as f64 / 1024.0
}
