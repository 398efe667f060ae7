//! The KMS budget against LocalStack (issue "A quota-aware KMS client"). LocalStack does not
//! throttle, so the broker is given a small budget (100 calls per second): tenant A floods creates
//! at many times that; tenant B's light steady mix of reads of uncached objects and creates all
//! succeed, and its latency stays close to what it is with A idle (reads go first, and B takes
//! turns with A for writes); A gets 503 `kms_busy` with `Retry-After`, never a 500; an onboarding
//! rewrap running meanwhile makes progress. And KMS's own throttling, through a proxy that answers
//! `ThrottlingException`: retried with backoff within `max_attempts`, 503 `kms_busy` when it
//! persists, never a retry storm.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common;

use common::broker::{APP_KEY, TestBroker, admin, register};
use common::http_client::HttpClient;
use common::throttling_proxy::ThrottlingProxy;
use common::{PLATFORM_ACCOUNT, TENANT_ACCOUNT, options_for};

const BUDGET: &[(&str, &str)] = &[
    ("BYOK_BROKER_KMS_BUDGET_PER_SECOND", "100"),
    ("BYOK_BROKER_KMS_BUDGET_MAX_WAIT_MS", "500"),
    // B's reads must reach KMS: a DEK stays cached 1 s, and B reads each object every 4 s.
    ("BYOK_BROKER_DEK_CACHE_TTL_SECONDS", "1"),
    ("BYOK_BROKER_REWRAP_KMS_CALLS_PER_SECOND", "0"),
];

/// One request: status, whether it carried `Retry-After`, and the JSON body.
async fn send(port: u16, method: &str, path: &str, body: &Value) -> (u16, bool, Value) {
    let client =
        HttpClient::new(&format!("http://127.0.0.1:{port}"), Some(APP_KEY.into())).expect("client");
    let payload = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    let response = client
        .send(method, path, &payload, &[])
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let retry_after = response.headers.contains_key("retry-after");
    let json = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    (response.status, retry_after, json)
}

fn create(org: &str, name: &str) -> Value {
    json!({"name": name, "value": "v", "key_context": {"organization_id": org}})
}

/// B's latencies in one phase, in order, by kind.
#[derive(Debug, Default)]
struct Latencies {
    reads: Vec<Duration>,
    creates: Vec<Duration>,
}

/// B's steady mix for `length`: a read of one of `objects` every 100 ms (each object read every
/// 4 s at most, so its DEK has left the cache), and a create every third tick. Any answer but
/// 200/201 fails the test.
async fn tenant_b(port: u16, objects: &[String], length: Duration, round: &str) -> Latencies {
    let started = Instant::now();
    let mut latencies = Latencies::default();
    let mut tick = 0usize;
    while started.elapsed() < length {
        let next = started + Duration::from_millis(100) * (tick as u32 + 1);
        let sent = Instant::now();
        let creating = tick % 3 == 2;
        let (status, _, body) = if creating {
            let created = create("org_budget_b", &format!("{round}-{tick}"));
            send(port, "POST", "/vault/v1/kv", &created).await
        } else {
            let path = format!("/vault/v1/kv/{}", objects[tick % objects.len()]);
            send(port, "GET", &path, &Value::Null).await
        };
        assert!(status == 200 || status == 201, "B refused: {status} {body}");
        let kind = if creating {
            &mut latencies.creates
        } else {
            &mut latencies.reads
        };
        kind.push(sent.elapsed());
        tick += 1;
        tokio::time::sleep_until(next.into()).await;
    }
    latencies
}

fn p(latencies: &[Duration], quantile: f64) -> Duration {
    let mut sorted = latencies.to_vec();
    sorted.sort();
    sorted[((sorted.len() as f64 * quantile).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Waits until the budget's bucket is full again (one second refills it).
async fn let_budget_refill() {
    tokio::time::sleep(Duration::from_millis(1500)).await;
}

#[tokio::test]
async fn a_tenant_flooding_creates_is_refused_while_another_tenants_requests_go_through() {
    let broker = TestBroker::start_with("kms-budget", BUDGET).await;
    let port = broker.address.port();

    // B's objects, and C's under the platform KEK, to onboard to C's own key during the flood.
    let mut objects = Vec::new();
    for i in 0..40 {
        let (status, _, body) = send(
            port,
            "POST",
            "/vault/v1/kv",
            &create("org_budget_b", &format!("b{i}")),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        objects.push(body["id"].as_str().unwrap().to_owned());
        if i % 20 == 19 {
            let_budget_refill().await;
        }
    }
    let mut platform_kek = String::new();
    for i in 0..60 {
        let (status, _, body) = send(
            port,
            "POST",
            "/vault/v1/kv",
            &create("org_budget_c", &format!("c{i}")),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        platform_kek = body["key_id"].as_str().unwrap().to_owned();
        if i % 20 == 19 {
            let_budget_refill().await;
        }
    }
    register(&broker, "org_budget_c", TENANT_ACCOUNT).await;
    let_budget_refill().await;

    let idle = tenant_b(port, &objects, Duration::from_secs(4), "idle").await;

    // A floods: 128 callers creating back to back; with the budget's 100 calls per second that
    // is more than twice what a 500 ms wait can absorb.
    let flooding = Arc::new(AtomicBool::new(true));
    let flood: Vec<_> = (0..128)
        .map(|caller| {
            let flooding = Arc::clone(&flooding);
            tokio::spawn(async move {
                let mut answers: BTreeMap<(u16, String), usize> = BTreeMap::new();
                let mut n = 0;
                while flooding.load(Ordering::Relaxed) {
                    n += 1;
                    let body = create("org_budget_a", &format!("a{caller}-{n}"));
                    let (status, retry_after, body) =
                        send(port, "POST", "/vault/v1/kv", &body).await;
                    let code = body["code"].as_str().unwrap_or_default().to_owned();
                    if status == 503 {
                        assert!(retry_after, "503 without Retry-After: {body}");
                    }
                    *answers.entry((status, code)).or_default() += 1;
                }
                answers
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let job = admin(
        &broker,
        "POST",
        "/admin/v1/rewrap-jobs",
        Some(&json!({"source": {"kek_id": platform_kek}})),
    )
    .await;
    assert_eq!(job.status, 202, "{:?}", job.body);
    let job_path = format!("/admin/v1/rewrap-jobs/{}", job.body["id"].as_str().unwrap());

    let flooded = tenant_b(port, &objects, Duration::from_secs(4), "flood").await;
    let during = admin(&broker, "GET", &job_path, None).await.body;
    flooding.store(false, Ordering::Relaxed);
    let mut a: HashMap<(u16, String), usize> = HashMap::new();
    for caller in flood {
        for (answer, count) in caller.await.unwrap() {
            *a.entry(answer).or_default() += count;
        }
    }

    println!("B with A idle: {idle:?}");
    println!("B with A flooding: {flooded:?}");
    println!("A's answers: {a:?}; rewrap during the flood: {during}");
    let created = a.get(&(201, String::new())).copied().unwrap_or(0);
    let busy = a.get(&(503, "kms_busy".into())).copied().unwrap_or(0);
    assert_eq!(
        created + busy,
        a.values().sum::<usize>(),
        "A got only 201 or 503 kms_busy: {a:?}"
    );
    assert!(busy > 0, "A was never refused: {a:?}");
    assert!(created > 0, "A got none of the capacity: {a:?}");
    // B is never pushed behind A's queue: that would cost its reads or its creates most of the
    // 500 ms wait (or a refusal, which `tenant_b` fails on). Judged by each kind's median against
    // the same kind with A idle: on 2 cores shared with A's 128 callers and LocalStack, every
    // request of B slows with the CPU (a CI run saw B's reads and creates at 40-170 ms, one at
    // 491 ms, none near the wait), which the tail shows and the median much less. The 2x p99
    // target itself is the benchmark's (`bench/run.sh`, noisy neighbour), on a quieter machine.
    for (kind, idle, flooded) in [
        ("reads", &idle.reads, &flooded.reads),
        ("creates", &idle.creates, &flooded.creates),
    ] {
        let (idle_p50, flood_p50) = (p(idle, 0.5), p(flooded, 0.5));
        assert!(
            flood_p50 <= idle_p50 * 2 + Duration::from_millis(100),
            "B's {kind} took {flood_p50:?} at the median with A flooding, {idle_p50:?} with A idle"
        );
    }
    assert!(
        during["done"].as_u64().unwrap_or(0) > 0,
        "the rewrap made no progress during the flood: {during}"
    );
    // With A gone, the job finishes.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = admin(&broker, "GET", &job_path, None).await.body;
        if status["state"] != "running" {
            assert_eq!(status["state"], "completed", "{status}");
            assert_eq!(status["done"], 60, "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn kms_throttling_is_retried_with_backoff_and_then_answered_kms_busy() {
    let proxy = ThrottlingProxy::start(common::localstack_endpoint()).await;
    let mut aws = options_for(PLATFORM_ACCOUNT);
    aws.endpoint_url = Some(proxy.url.clone());
    aws.max_attempts = 3;
    let broker = TestBroker::start_with_aws("kms-throttled", &[], aws).await;
    let port = broker.address.port();

    // Half the calls throttled: most creates get through on a retry; none is a 500.
    proxy.throttle(50);
    let mut statuses: BTreeMap<(u16, String), usize> = BTreeMap::new();
    for i in 0..20 {
        let (status, retry_after, body) = send(
            port,
            "POST",
            "/vault/v1/kv",
            &create("org_throttled", &format!("t{i}")),
        )
        .await;
        if status == 503 {
            assert!(retry_after);
        }
        let code = body["code"].as_str().unwrap_or_default().to_owned();
        *statuses.entry((status, code)).or_default() += 1;
    }
    let attempts = proxy.attempts();
    let calls: HashMap<&str, usize> = attempts.iter().fold(HashMap::new(), |mut m, a| {
        *m.entry(a.invocation.as_str()).or_default() += 1;
        m
    });
    println!(
        "50% throttled: answers {statuses:?}; {} attempts for {} calls",
        attempts.len(),
        calls.len()
    );
    assert!(
        statuses
            .keys()
            .all(|(s, code)| *s == 201 || (*s == 503 && code == "kms_busy"))
    );
    assert!(
        statuses.get(&(201, String::new())).copied().unwrap_or(0) >= 10,
        "{statuses:?}"
    );
    assert!(
        calls.values().all(|n| *n <= 3),
        "more than max_attempts: {calls:?}"
    );

    // Every call throttled: each create ends 503 kms_busy after at most three attempts, spaced
    // by the SDK's jittered backoff.
    proxy.throttle(100);
    let before = proxy.attempts().len();
    for i in 0..5 {
        let (status, retry_after, body) = send(
            port,
            "POST",
            "/vault/v1/kv",
            &create("org_throttled", &format!("x{i}")),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (503, Some("kms_busy")),
            "{body}"
        );
        assert!(retry_after);
    }
    let attempts = &proxy.attempts()[before..];
    assert!(
        attempts
            .iter()
            .all(|a| a.operation == "TrentService.GenerateDataKey"),
        "creates call GenerateDataKey only"
    );
    let mut by_call: HashMap<&str, Vec<Instant>> = HashMap::new();
    for a in attempts {
        assert!(a.throttled);
        by_call.entry(a.invocation.as_str()).or_default().push(a.at);
    }
    let gaps: Vec<Duration> = by_call
        .values()
        .flat_map(|times| times.windows(2).map(|w| w[1] - w[0]))
        .collect();
    let mean = gaps.iter().sum::<Duration>() / gaps.len().max(1) as u32;
    println!(
        "all throttled: {} attempts for {} calls, retry gaps {gaps:?} (mean {mean:?})",
        attempts.len(),
        by_call.len()
    );
    assert!(by_call.values().all(|t| t.len() <= 3), "{by_call:?}");
    assert!(attempts.len() <= 5 * 3);
    assert!(!gaps.is_empty(), "throttled calls were not retried");
    assert!(
        mean >= Duration::from_millis(20),
        "no backoff between retries: {gaps:?}"
    );

    // A throttled call changes no key state: the broker still serves once KMS answers.
    proxy.throttle(0);
    let (status, _, body) = send(
        port,
        "POST",
        "/vault/v1/kv",
        &create("org_throttled", "after"),
    )
    .await;
    assert_eq!(status, 201, "{body}");
}
