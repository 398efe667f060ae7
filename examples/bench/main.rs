//! byok-broker benchmark: drives a release broker over HTTP with a keep-alive load generator and
//! measures, in the same run, the baselines the targets are ratios of (the broker's own `/healthz`,
//! raw AWS SDK calls against the same LocalStack). Prints a table, the targets with pass/fail,
//! and one JSON line. Run it through `bench/run.sh` (which starts LocalStack and builds).

// A benchmark driver, not the broker: it stops at the first setup failure, which is what unwrap says.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// The CLI's client, included by path: it is no part of the library's public API.
#[path = "../../src/cli/http_client.rs"]
mod http_client;
mod load;
mod raw;
mod server;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use load::{LoadResult, RequestPlan};
use server::{APP_KEY, Broker};

struct Options {
    broker: String,
    localstack: String,
    quick: bool,
}

fn options() -> Options {
    let mut args = std::env::args().skip(1);
    let mut options = Options {
        broker: "target/release/byok-broker".into(),
        localstack: String::new(),
        quick: false,
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--broker" => options.broker = args.next().expect("--broker PATH"),
            "--localstack" => options.localstack = args.next().expect("--localstack URL"),
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

#[derive(Default)]
struct Report {
    rows: Vec<Value>,
    targets: Vec<(String, bool, String)>,
}

impl Report {
    fn row(
        &mut self,
        workload: &str,
        concurrency: usize,
        result: &LoadResult,
        kms_per_1000: Option<f64>,
    ) {
        let row = json!({
            "workload": workload,
            "concurrency": concurrency,
            "rps": (result.rps() * 10.0).round() / 10.0,
            "p50_ms": (result.percentile_ms(0.50) * 100.0).round() / 100.0,
            "p99_ms": (result.percentile_ms(0.99) * 100.0).round() / 100.0,
            "errors": result.errors,
            "kms_calls_per_1000": kms_per_1000.map(|k| (k * 10.0).round() / 10.0),
        });
        println!(
            "{:<22} {:>4} {:>10.1} {:>9.2} {:>9.2} {:>7} {:>10}",
            workload,
            concurrency,
            result.rps(),
            result.percentile_ms(0.50),
            result.percentile_ms(0.99),
            result.errors,
            kms_per_1000.map_or("-".into(), |k| format!("{k:.1}"))
        );
        self.rows.push(row);
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

#[tokio::main]
async fn main() {
    let options = options();
    let duration = if options.quick {
        Duration::from_millis(1500)
    } else {
        Duration::from_secs(5)
    };
    let concurrencies = [1usize, 16, 64];
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let mut report = Report::default();
    let mut figures: BTreeMap<String, f64> = BTreeMap::new();

    println!(
        "byok-broker bench ({} mode, {:.1} s per point, LocalStack {})",
        if options.quick { "quick" } else { "full" },
        duration.as_secs_f64(),
        options.localstack
    );
    println!(
        "{:<22} {:>4} {:>10} {:>9} {:>9} {:>7} {:>10}",
        "workload", "c", "req/s", "p50 ms", "p99 ms", "errors", "KMS/1000"
    );

    // Broker with the DEK cache on: trivial endpoint, hot reads, writes, data keys.
    let hot = Broker::start(&options, &format!("bench-hot-{run_id}"), &[]).await;
    let objects = hot.create_objects("hot", 200, value_1k).await;
    let decrypts_before = hot.kms_calls("decrypt").await;
    for c in concurrencies {
        let result = load::run(
            hot.port,
            c,
            duration,
            plan(
                "GET",
                |_| "/healthz".into(),
                |_| String::new(),
                APP_KEY,
                200,
            ),
        )
        .await;
        figures.insert(format!("healthz_c{c}"), result.rps());
        report.row("healthz (baseline)", c, &result, None);
    }
    let mut hot_reads = 0;
    for c in concurrencies {
        let ids = Arc::new(objects.clone());
        let before = hot.kms_calls_total().await;
        // BYOK_BENCH_PERF=FILE records a CPU profile of the broker during hot reads at c=64.
        let profiler = std::env::var("BYOK_BENCH_PERF")
            .ok()
            .filter(|_| c == 64)
            .map(|file| hot.profile(&file, duration));
        let result = load::run(
            hot.port,
            c,
            duration,
            plan(
                "GET",
                move |i| format!("/vault/v1/kv/{}", ids[i as usize % ids.len()]),
                |_| String::new(),
                APP_KEY,
                200,
            ),
        )
        .await;
        if let Some(mut profiler) = profiler {
            let _ = profiler.wait();
        }
        hot_reads += result.requests;
        let kms =
            (hot.kms_calls_total().await - before) as f64 * 1000.0 / result.requests.max(1) as f64;
        figures.insert(format!("hot_reads_c{c}"), result.rps());
        report.row("hot reads 1 KiB", c, &result, Some(kms));
    }
    let hot_decrypts = hot.kms_calls("decrypt").await - decrypts_before;
    for c in concurrencies {
        let prefix = format!("create-{c}-{run_id}");
        let (result, kms) = hot.measure(c, duration, plan("POST", |_| "/vault/v1/kv".into(), move |i| json!({"name": format!("{prefix}-{i}"), "value": value_1k(i), "key_context": {"organization_id": format!("org_bench_{}", i % 20)}}).to_string(), APP_KEY, 201)).await;
        figures.insert(format!("creates_c{c}"), result.rps());
        report.row("creates 1 KiB", c, &result, Some(kms));
    }
    for c in concurrencies {
        let ids = Arc::new(objects.clone());
        let (result, kms) = hot
            .measure(
                c,
                duration,
                plan(
                    "PUT",
                    move |i| format!("/vault/v1/kv/{}", ids[i as usize % ids.len()]),
                    |i| json!({"value": value_1k(i)}).to_string(),
                    APP_KEY,
                    201,
                ),
            )
            .await;
        report.row("updates 1 KiB", c, &result, Some(kms));
    }
    for c in concurrencies {
        let (result, kms) = hot
            .measure(
                c,
                duration,
                plan(
                    "POST",
                    |_| "/vault/v1/keys/data-key".into(),
                    |i| {
                        json!({"context": {"organization_id": format!("org_bench_{}", i % 20)}})
                            .to_string()
                    },
                    APP_KEY,
                    200,
                ),
            )
            .await;
        report.row("create data key", c, &result, Some(kms));
    }
    let blobs = Arc::new(hot.data_key_blobs(200).await);
    for c in concurrencies {
        let blobs = Arc::clone(&blobs);
        let (result, kms) = hot
            .measure(
                c,
                duration,
                plan(
                    "POST",
                    |_| "/vault/v1/keys/decrypt".into(),
                    move |i| json!({"keys": blobs[i as usize % blobs.len()]}).to_string(),
                    APP_KEY,
                    200,
                ),
            )
            .await;
        report.row("decrypt data key", c, &result, Some(kms));
    }
    let hot_rss = hot.peak_rss_mib();
    hot.stop();

    // Broker with the DEK cache off: every read is a KMS Decrypt.
    let cold = Broker::start(
        &options,
        &format!("bench-cold-{run_id}"),
        &[("BYOK_BROKER_DEK_CACHE_TTL_SECONDS", "0")],
    )
    .await;
    let cold_objects = cold.create_objects("cold", 200, value_1k).await;
    for c in concurrencies {
        let ids = Arc::new(cold_objects.clone());
        let (result, kms) = cold
            .measure(
                c,
                duration,
                plan(
                    "GET",
                    move |i| format!("/vault/v1/kv/{}", ids[i as usize % ids.len()]),
                    |_| String::new(),
                    APP_KEY,
                    200,
                ),
            )
            .await;
        figures.insert(format!("cold_reads_c{c}"), result.rps());
        report.row("cold reads (no cache)", c, &result, Some(kms));
    }
    let cold_rss = cold.peak_rss_mib();
    cold.stop();

    // Raw AWS SDK against the same LocalStack at the same concurrency.
    let raw = raw::RawKms::connect(&options.localstack).await;
    for c in concurrencies {
        let gdk = raw.generate_data_keys(c, duration).await;
        figures.insert(format!("raw_gdk_c{c}"), gdk.rps());
        report.row("raw SDK GenerateDataKey", c, &gdk, None);
        let decrypt = raw.decrypts(c, duration).await;
        figures.insert(format!("raw_decrypt_c{c}"), decrypt.rps());
        report.row("raw SDK Decrypt", c, &decrypt, None);
    }

    // Rewrap: a job CMK A -> CMK B beside raw ReEncrypt A -> B at the same concurrency.
    let rewrap_concurrency = 16;
    let rewrap_objects = if options.quick { 300 } else { 2000 };
    let rewrap = Broker::start(
        &options,
        &format!("bench-rewrap-{run_id}"),
        &[
            ("BYOK_BROKER_REWRAP_KMS_CALLS_PER_SECOND", "0"),
            ("BYOK_BROKER_REWRAP_CONCURRENCY", "16"),
        ],
    )
    .await;
    let (job_rate, key_a, key_b) = rewrap.rewrap_job_rate(rewrap_objects).await;
    rewrap.stop();
    let reencrypt = raw
        .reencrypts(&key_a, &key_b, rewrap_concurrency, duration)
        .await;
    println!(
        "{:<22} {:>4} {:>10.1}",
        "rewrap job (objects/s)", rewrap_concurrency, job_rate
    );
    report.row("raw SDK ReEncrypt", rewrap_concurrency, &reencrypt, None);
    report.rows.push(json!({"workload": "rewrap job", "concurrency": rewrap_concurrency, "objects_per_second": (job_rate * 10.0).round() / 10.0, "objects": rewrap_objects}));

    // Memory: 100,000 cached DEKs in a DekCache, measured in this process.
    let cache_mib = server::cache_memory_mib(100_000).await;
    println!(
        "peak RSS: broker with cache {hot_rss:.1} MiB, broker without cache {cold_rss:.1} MiB; 100,000 cached DEKs add {cache_mib:.1} MiB"
    );

    println!("\ntargets (ratios measured side by side in this run):");
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let hot_ratio = ratio(figures["hot_reads_c64"], figures["healthz_c64"]);
    report.target(
        "hot reads >= 0.5 x /healthz at c=64",
        hot_ratio >= 0.5,
        format!(
            "{:.0} / {:.0} req/s = {hot_ratio:.2}",
            figures["hot_reads_c64"], figures["healthz_c64"]
        ),
    );
    for c in [16, 64] {
        let r = ratio(
            figures[&format!("creates_c{c}")],
            figures[&format!("raw_gdk_c{c}")],
        );
        report.target(
            &format!("creates >= 0.8 x raw GenerateDataKey at c={c}"),
            r >= 0.8,
            format!(
                "{:.0} / {:.0} per s = {r:.2}",
                figures[&format!("creates_c{c}")],
                figures[&format!("raw_gdk_c{c}")]
            ),
        );
        let r = ratio(
            figures[&format!("cold_reads_c{c}")],
            figures[&format!("raw_decrypt_c{c}")],
        );
        report.target(
            &format!("cold reads >= 0.8 x raw Decrypt at c={c}"),
            r >= 0.8,
            format!(
                "{:.0} / {:.0} per s = {r:.2}",
                figures[&format!("cold_reads_c{c}")],
                figures[&format!("raw_decrypt_c{c}")]
            ),
        );
    }
    report.target(
        "KMS Decrypt calls for hot reads of M objects within one TTL = M",
        hot_decrypts == objects.len() as u64,
        format!(
            "{hot_decrypts} Decrypt calls for {hot_reads} reads of {} objects",
            objects.len()
        ),
    );
    report.target(
        "100,000 cached DEKs add <= 64 MiB RSS",
        cache_mib <= 64.0,
        format!("{cache_mib:.1} MiB"),
    );
    let r = ratio(job_rate, reencrypt.rps());
    report.target(
        &format!("rewrap >= 0.8 x raw ReEncrypt at c={rewrap_concurrency}"),
        r >= 0.8,
        format!("{job_rate:.0} / {:.0} per s = {r:.2}", reencrypt.rps()),
    );

    let passed = report.targets.iter().filter(|t| t.1).count();
    println!("\n{passed} of {} targets passed", report.targets.len());
    let summary = json!({
        "bench": "byok-broker",
        "mode": if options.quick { "quick" } else { "full" },
        "rows": report.rows,
        "peak_rss_mib": {"cache_on": hot_rss, "cache_off": cold_rss},
        "cached_deks_100k_mib": cache_mib,
        "targets": report.targets.iter().map(|(name, pass, detail)| json!({"target": name, "pass": pass, "detail": detail})).collect::<Vec<_>>(),
    });
    println!("{summary}");
}
