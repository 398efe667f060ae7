//! The noisy-neighbour workload (the KMS budget): one broker with a small KMS budget (100 calls
//! per second, the DEK cache off so every read is a `Decrypt`); tenant B sends a light steady mix
//! (open loop, 20 requests per second: two reads of its objects to one create) first alone, then
//! while tenant A offers creates at ten times the budget (open loop, 1,000 per second). B's
//! p50/p99 side by side; A's accepted rate and its 503 `kms_busy` refusals.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::Options;
use crate::http_client::HttpClient;
use crate::load::LoadResult;
use crate::server::{APP_KEY, Backend, Broker};

pub const BUDGET_PER_SECOND: u32 = 100;
const B_PER_SECOND: f64 = 20.0;
const A_PER_SECOND: f64 = 1_000.0;

pub struct Noisy {
    pub b_idle: LoadResult,
    pub b_flooded: LoadResult,
    /// A's answered creates (201) over the flood.
    pub a_accepted: LoadResult,
    /// A's 503 `kms_busy` answers.
    pub a_refused: u64,
}

/// Sends `request(i)` at `rate` per second for `length`, each on its own task; latencies of the
/// answers `ok` accepts, and how many answered 503 `kms_busy`.
async fn open_loop(
    client: Arc<HttpClient>,
    rate: f64,
    length: Duration,
    request: impl Fn(u64) -> (&'static str, String, Option<Value>),
    ok: fn(u16) -> bool,
) -> (LoadResult, u64) {
    let started = Instant::now();
    let mut tasks = Vec::new();
    let mut i = 0u64;
    while started.elapsed() < length {
        let (method, path, body) = request(i);
        let client = Arc::clone(&client);
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let answer = client.call(method, &path, body.as_ref()).await;
            (sent.elapsed(), answer)
        }));
        i += 1;
        tokio::time::sleep_until((started + Duration::from_secs_f64(i as f64 / rate)).into()).await;
    }
    let mut result = LoadResult::default();
    let mut busy = 0;
    for task in tasks {
        let (latency, answer) = task.await.expect("request task");
        match answer {
            Ok((status, _)) if ok(status) => {
                result.requests += 1;
                result.latencies_us.push(latency.as_micros() as u64);
            }
            Ok((503, body)) if body["code"] == "kms_busy" => busy += 1,
            _ => result.errors += 1,
        }
    }
    result.seconds = started.elapsed().as_secs_f64();
    (result, busy)
}

fn create(org: &str, name: String) -> Option<Value> {
    Some(json!({"name": name, "value": "v", "key_context": {"organization_id": org}}))
}

pub async fn run(options: &Options, backend: Backend, run_id: &str, length: Duration) -> Noisy {
    let budget = BUDGET_PER_SECOND.to_string();
    let broker = Broker::start(
        options,
        backend,
        &format!("bench-noisy-{backend}-{run_id}"),
        &[
            ("BYOK_BROKER_KMS_BUDGET_PER_SECOND", budget.as_str()),
            ("BYOK_BROKER_KMS_BUDGET_MAX_WAIT_MS", "250"),
            ("BYOK_BROKER_DEK_CACHE_TTL_SECONDS", "0"),
        ],
    )
    .await;
    let ids = Arc::new(
        broker
            .create_objects("noisyb", 60, |i| format!("{i:08}"))
            .await,
    );
    // A full bucket again before the first point.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let client = Arc::new(
        HttpClient::new(
            &format!("http://127.0.0.1:{}", broker.port),
            Some(APP_KEY.into()),
        )
        .unwrap(),
    );
    let b = |round: &'static str| {
        let ids = Arc::clone(&ids);
        move |i: u64| {
            if i % 3 == 2 {
                (
                    "POST",
                    "/vault/v1/kv".to_owned(),
                    create("org_noisyb_0", format!("{round}-{i}-{run_id}")),
                )
            } else {
                (
                    "GET",
                    format!("/vault/v1/kv/{}", ids[i as usize % ids.len()]),
                    None,
                )
            }
        }
    };
    let answered = |status: u16| status == 200 || status == 201;
    let (b_idle, _) = open_loop(
        Arc::clone(&client),
        B_PER_SECOND,
        length,
        b("idle"),
        answered,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let flood = tokio::spawn(open_loop(
        Arc::clone(&client),
        A_PER_SECOND,
        length,
        move |i| {
            (
                "POST",
                "/vault/v1/kv".to_owned(),
                create("org_noisya", format!("a-{i}")),
            )
        },
        |status| status == 201,
    ));
    let (b_flooded, _) = open_loop(client, B_PER_SECOND, length, b("flood"), answered).await;
    let (a_accepted, a_refused) = flood.await.expect("flood");
    // What the broker itself saw: the budget's waits by priority, and its request latencies.
    for line in broker.metrics().await.lines().filter(|l| {
        (l.starts_with("byok_broker_kms_budget_wait_seconds_")
            && (l.contains("_sum") || l.contains("_count")))
            || (l.starts_with("byok_broker_http_request_duration_seconds_")
                && l.contains("route=\"/vault/v1/kv")
                && (l.contains("_sum") || l.contains("_count")))
    }) {
        println!("noisy broker: {line}");
    }
    broker.stop();
    Noisy {
        b_idle,
        b_flooded,
        a_accepted,
        a_refused,
    }
}
