//! Several broker processes on one PostgreSQL when it gets hard (issue "Several instances, one
//! broker"): the first use of a context on all instances at once converges on one platform KEK and
//! leaves no orphan key nor half-recorded creation; a kill -9 of one instance under mixed load
//! loses no acknowledged write and duplicates no retried create. PostgreSQL-only.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::common;

use common::http_client::HttpClient;
use common::instances::Instances;
use common::process::APP_KEY;
use common::{PLATFORM_ACCOUNT, raw_kms};

/// A response: status, JSON body (`null` if none) and headers (lower-case names).
struct Answer {
    status: u16,
    body: Value,
    headers: HashMap<String, String>,
}

/// One request on its own connection; `None` when it could not connect or the connection was cut.
async fn send(
    port: u16,
    method: &str,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> Option<Answer> {
    let client = HttpClient::new(
        &format!("http://127.0.0.1:{port}"),
        Some(APP_KEY.to_owned()),
    )
    .ok()?;
    let payload = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    let response = client.send(method, path, &payload, headers).await.ok()?;
    Some(Answer {
        status: response.status,
        body: serde_json::from_slice(&response.body).unwrap_or(Value::Null),
        headers: response.headers,
    })
}

async fn postgres(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the shared database");
    tokio::spawn(connection);
    client
}

/// Every KMS key id in the platform account (ListKeys, all pages).
async fn all_key_ids(kms: &aws_sdk_kms::Client) -> HashSet<String> {
    let mut ids = HashSet::new();
    let mut marker = None;
    loop {
        let page = kms
            .list_keys()
            .set_marker(marker)
            .limit(1000)
            .send()
            .await
            .expect("ListKeys");
        ids.extend(
            page.keys()
                .iter()
                .filter_map(|k| k.key_id().map(str::to_owned)),
        );
        marker = page.next_marker().map(str::to_owned);
        if !page.truncated() || marker.is_none() {
            return ids;
        }
    }
}

/// The aliases under `alias/<prefix>/` (ListAliases, all pages): name → target key id.
async fn aliases_under(kms: &aws_sdk_kms::Client, prefix: &str) -> HashMap<String, String> {
    let wanted = format!("alias/{prefix}/");
    let mut aliases = HashMap::new();
    let mut marker = None;
    loop {
        let page = kms
            .list_aliases()
            .set_marker(marker)
            .limit(100)
            .send()
            .await
            .expect("ListAliases");
        for alias in page.aliases() {
            if let Some(name) = alias.alias_name().filter(|n| n.starts_with(&wanted)) {
                aliases.insert(
                    name.to_owned(),
                    alias.target_key_id().unwrap_or_default().to_owned(),
                );
            }
        }
        marker = page.next_marker().map(str::to_owned);
        if !page.truncated() || marker.is_none() {
            return aliases;
        }
    }
}

/// The key id at the end of an ARN (`arn:aws:kms:…:key/<id>`), or the id itself.
fn key_id_of(arn_or_id: &str) -> &str {
    arn_or_id.rsplit('/').next().unwrap_or(arn_or_id)
}

#[tokio::test]
async fn first_use_of_a_context_on_three_instances_at_once_makes_one_kek_and_no_orphan() {
    let Some(instances) = Instances::spawn("inst-jit", 3, &[]).await else {
        return;
    };
    let ports: Vec<u16> = (0..3).map(|i| instances.port(i)).collect();
    let kms = raw_kms(PLATFORM_ACCOUNT).await;
    // A context no broker has seen: its KEK's description names its hash, which tells this test's
    // keys from those other tests create in the same LocalStack meanwhile.
    let org = format!("org_jit_{}", uuid::Uuid::new_v4().simple());
    let hash = common::context(&[("organization_id", &org)])
        .hash()
        .to_hex();
    let before = all_key_ids(&kms).await;

    // 30 creates in the new context, all at once, spread over the three instances.
    let creates = join_all((0..30).map(|i| {
        let body = json!({"name": format!("jit-{i}"), "value": format!("value {i}"), "key_context": {"organization_id": org}});
        let port = ports[i % 3];
        async move { send(port, "POST", "/vault/v1/kv", &body, &[]).await }
    }))
    .await;
    let mut objects = Vec::new();
    for (i, answer) in creates.into_iter().enumerate() {
        let answer = answer.expect("every instance answers");
        assert_eq!(answer.status, 201, "create {i}: {}", answer.body);
        objects.push((
            i,
            answer.body["id"].as_str().unwrap().to_owned(),
            answer.body["key_id"].as_str().unwrap().to_owned(),
        ));
    }
    let kek_ids: HashSet<&str> = objects.iter().map(|(_, _, k)| key_id_of(k)).collect();
    assert_eq!(kek_ids.len(), 1, "one KEK serves the context: {kek_ids:?}");
    let winner = kek_ids.into_iter().next().unwrap().to_owned();

    // Every object reads back through every instance.
    for (i, id, _) in &objects {
        for port in &ports {
            let read = send(
                *port,
                "GET",
                &format!("/vault/v1/kv/{id}"),
                &Value::Null,
                &[],
            )
            .await
            .expect("read");
            assert_eq!(read.status, 200, "object {i} via {port}: {}", read.body);
            assert_eq!(read.body["value"], format!("value {i}").as_str());
        }
    }

    // In KMS: one alias under the prefix, naming the winner.
    let aliases = aliases_under(&kms, &instances.prefix).await;
    let alias = format!("alias/{}/ctx-{hash}", instances.prefix);
    assert_eq!(aliases.len(), 1, "{aliases:?}");
    assert_eq!(
        aliases.get(&alias).map(|k| key_id_of(k)),
        Some(winner.as_str()),
        "{aliases:?}"
    );
    // Every other key made for this context is scheduled for deletion: no orphan keeps costing.
    let description = format!("byok-broker platform KEK for context {hash}");
    let mut made = Vec::new();
    for id in all_key_ids(&kms).await.difference(&before) {
        let described = kms
            .describe_key()
            .key_id(id)
            .send()
            .await
            .expect("DescribeKey");
        let meta = described.key_metadata().expect("metadata");
        if meta.description() == Some(description.as_str()) {
            made.push((id.clone(), meta.key_state().map(|s| s.as_str().to_owned())));
        }
    }
    let orphans: Vec<_> = made
        .iter()
        .filter(|(id, state)| *id != winner && state.as_deref() != Some("PendingDeletion"))
        .collect();
    println!(
        "keys made for the new context by 3 instances: {} (1 serves it, the rest pending deletion)",
        made.len()
    );
    assert!(made.iter().any(|(id, _)| *id == winner), "{made:?}");
    assert!(orphans.is_empty(), "orphan keys: {orphans:?}");

    // The broker's own record: the winner counted once, no creation left "in flight".
    let db = postgres(&instances.url).await;
    let rows = db
        .query(
            "SELECT kek_id FROM platform_keks WHERE context_hash = $1",
            &[&hash],
        )
        .await
        .unwrap();
    let recorded: Vec<Option<String>> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(recorded.len(), 1, "one row for the context: {recorded:?}");
    assert_eq!(
        recorded[0].as_deref().map(key_id_of),
        Some(winner.as_str()),
        "{recorded:?}"
    );
    let in_flight: i64 = db
        .query_one(
            "SELECT COUNT(*) FROM platform_keks WHERE kek_id IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(in_flight, 0, "dangling in-flight reservations");
}

/// What the load saw, shared by its workers.
struct Load {
    ports: [u16; 2],
    /// Instances a request failed to reach: later requests go to the other, as a balancer would.
    down: [AtomicBool; 2],
    stop: AtomicBool,
    requests: AtomicU64,
    /// Writes acknowledged so far: the kill waits until the load is under way.
    acknowledged: AtomicU64,
    retries: AtomicU64,
    /// Waits on a 503 or a 409 `idempotency_in_flight`, both with Retry-After.
    waits: AtomicU64,
    killed_at: std::sync::Mutex<Option<Instant>>,
    /// The first answer the survivor gave after the kill, and the last answer to a request that
    /// had to be retried, both measured from the kill.
    first_after_kill: std::sync::Mutex<Option<Duration>>,
    slowest_failover: std::sync::Mutex<Duration>,
    /// Answers no client should see: any other 5xx, a 503 without Retry-After, wrong values.
    violations: Mutex<Vec<String>>,
}

/// How long one logical request may keep retrying before the test gives up on it.
const REQUEST_DEADLINE: Duration = Duration::from_secs(120);

impl Load {
    fn since_kill(&self) -> Option<Duration> {
        self.killed_at.lock().unwrap().map(|at| at.elapsed())
    }

    /// Sends one logical request, preferring instance `preferred`; on a refused or cut connection
    /// the same request again on the other instance, and on a 503 or an in-flight idempotency key,
    /// again after its Retry-After. The final answer.
    async fn call(
        &self,
        preferred: usize,
        method: &str,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> Answer {
        let started = Instant::now();
        let mut target = if self.down[preferred].load(Ordering::SeqCst) {
            1 - preferred
        } else {
            preferred
        };
        let mut retried = false;
        loop {
            assert!(
                started.elapsed() < REQUEST_DEADLINE,
                "{method} {path} not served within {REQUEST_DEADLINE:?}"
            );
            self.requests.fetch_add(1, Ordering::SeqCst);
            let Some(answer) = send(self.ports[target], method, path, body, headers).await else {
                self.down[target].store(true, Ordering::SeqCst);
                self.retries.fetch_add(1, Ordering::SeqCst);
                retried = true;
                target = 1 - target;
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            if let Some(since) = self.since_kill() {
                self.first_after_kill.lock().unwrap().get_or_insert(since);
                if retried {
                    let mut slowest = self.slowest_failover.lock().unwrap();
                    *slowest = (*slowest).max(since);
                }
            }
            let retry_after = answer
                .headers
                .get("retry-after")
                .and_then(|s| s.parse::<u64>().ok());
            let in_flight = answer.status == 409 && answer.body["code"] == "idempotency_in_flight";
            if (answer.status == 503 || in_flight) && retry_after.is_some() {
                self.waits.fetch_add(1, Ordering::SeqCst);
                retried = true;
                let wait =
                    Duration::from_secs(retry_after.unwrap_or(1)).min(Duration::from_secs(1));
                tokio::time::sleep(wait).await;
                continue;
            }
            if matches!(answer.status, 201) {
                self.acknowledged.fetch_add(1, Ordering::SeqCst);
            }
            if answer.status >= 500 {
                self.violations.lock().await.push(format!(
                    "{method} {path} answered {}: {}",
                    answer.status, answer.body
                ));
            }
            return answer;
        }
    }
}

/// One object a worker created: its id, name and the last value a write of it was acknowledged with.
struct Owned {
    id: String,
    name: String,
    value: String,
    version: u32,
}

/// A client: creates, updates and reads its own objects until told to stop.
async fn worker(load: Arc<Load>, w: usize, org: String) -> Vec<Owned> {
    let mut owned: Vec<Owned> = Vec::new();
    let mut i = 0usize;
    while !load.stop.load(Ordering::SeqCst) {
        let preferred = (w + i) % 2;
        match (i % 4, owned.len()) {
            (0 | 1, _) | (_, 0) => {
                let name = format!("w{w}-{i}");
                let value = format!("{name} v0");
                let key = uuid::Uuid::new_v4().to_string();
                let body =
                    json!({"name": name, "value": value, "key_context": {"organization_id": org}});
                let answer = load
                    .call(
                        preferred,
                        "POST",
                        "/vault/v1/kv",
                        &body,
                        &[("Idempotency-Key", &key)],
                    )
                    .await;
                if answer.status == 201 {
                    let id = answer.body["id"].as_str().unwrap().to_owned();
                    owned.push(Owned {
                        id,
                        name,
                        value,
                        version: 0,
                    });
                } else {
                    load.violations
                        .lock()
                        .await
                        .push(format!("create {name}: {} {}", answer.status, answer.body));
                }
            }
            (2, n) => {
                let object = &mut owned[i % n];
                let value = format!("{} v{}", object.name, object.version + 1);
                let path = format!("/vault/v1/kv/{}", object.id);
                let answer = load
                    .call(preferred, "PUT", &path, &json!({"value": value}), &[])
                    .await;
                if answer.status == 201 {
                    object.value = value;
                    object.version += 1;
                } else {
                    load.violations.lock().await.push(format!(
                        "update {}: {} {}",
                        object.name, answer.status, answer.body
                    ));
                }
            }
            (_, n) => {
                let object = &owned[i % n];
                let path = format!("/vault/v1/kv/{}", object.id);
                let answer = load.call(preferred, "GET", &path, &Value::Null, &[]).await;
                if answer.status != 200 || answer.body["value"] != object.value.as_str() {
                    load.violations.lock().await.push(format!(
                        "read {} expected {:?}: {} {}",
                        object.name, object.value, answer.status, answer.body
                    ));
                }
            }
        }
        i += 1;
    }
    owned
}

#[tokio::test]
async fn losing_an_instance_under_load_loses_no_acknowledged_write() {
    let Some(mut instances) = Instances::spawn("inst-kill", 2, &[]).await else {
        return;
    };
    let load = Arc::new(Load {
        ports: [instances.port(0), instances.port(1)],
        down: [AtomicBool::new(false), AtomicBool::new(false)],
        stop: AtomicBool::new(false),
        requests: AtomicU64::new(0),
        acknowledged: AtomicU64::new(0),
        retries: AtomicU64::new(0),
        waits: AtomicU64::new(0),
        killed_at: std::sync::Mutex::new(None),
        first_after_kill: std::sync::Mutex::new(None),
        slowest_failover: std::sync::Mutex::new(Duration::ZERO),
        violations: Mutex::new(Vec::new()),
    });
    let org = format!("org_kill_{}", uuid::Uuid::new_v4().simple());
    let workers: Vec<_> = (0..8)
        .map(|w| tokio::spawn(worker(Arc::clone(&load), w, org.clone())))
        .collect();

    // Load both, kill -9 instance 0 mid-load, keep the load on the survivor a while, stop. The
    // kill waits for the load to be under way (the context's first write creates its KEK).
    let deadline = Instant::now() + Duration::from_secs(30);
    while load.acknowledged.load(Ordering::SeqCst) < 40 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let victim = &mut instances.brokers[0].child;
    victim.kill().unwrap(); // SIGKILL
    *load.killed_at.lock().unwrap() = Some(Instant::now());
    victim.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(3000)).await;
    load.stop.store(true, Ordering::SeqCst);
    let mut owned = Vec::new();
    for w in workers {
        owned.extend(w.await.unwrap());
    }

    // Every acknowledged write reads back with its value through the survivor.
    let survivor = instances.port(1);
    let mut lost = Vec::new();
    for object in &owned {
        let path = format!("/vault/v1/kv/{}", object.id);
        let read = send(survivor, "GET", &path, &Value::Null, &[])
            .await
            .expect("survivor answers");
        if read.status != 200 || read.body["value"] != object.value.as_str() {
            lost.push(format!(
                "{} expected {:?}: {} {}",
                object.name, object.value, read.status, read.body
            ));
        }
    }
    // One object per acknowledged create: no retried create made a second one.
    let db = postgres(&instances.url).await;
    let row = db
        .query_one("SELECT COUNT(*), COUNT(DISTINCT name) FROM objects", &[])
        .await
        .unwrap();
    let (objects, names): (i64, i64) = (row.get(0), row.get(1));
    let updates: u32 = owned.iter().map(|o| o.version).sum();
    println!(
        "kill -9 under load: {} requests sent, {} objects created and {updates} updates acknowledged, \
         {} retries on the other instance, {} waits after Retry-After; survivor's first answer {:?} \
         after the kill, slowest retried request served {:?} after it",
        load.requests.load(Ordering::SeqCst),
        owned.len(),
        load.retries.load(Ordering::SeqCst),
        load.waits.load(Ordering::SeqCst),
        load.first_after_kill.lock().unwrap(),
        load.slowest_failover.lock().unwrap(),
    );
    let violations = load.violations.lock().await;
    assert!(violations.is_empty(), "{violations:#?}");
    assert!(lost.is_empty(), "lost acknowledged writes: {lost:#?}");
    assert!(owned.len() >= 20, "the load made progress");
    // A retried create whose first attempt died with the killed instance runs on the survivor at
    // once: its claim is not left to go stale (60 s).
    let slowest = *load.slowest_failover.lock().unwrap();
    assert!(
        slowest < Duration::from_secs(15),
        "a retried request waited {slowest:?}"
    );
    assert!(
        load.retries.load(Ordering::SeqCst) > 0,
        "the kill cut or refused requests"
    );
    assert_eq!(
        (objects, names),
        (owned.len() as i64, owned.len() as i64),
        "objects in the store"
    );
}

/// A create's Idempotency-Key claimed by a holder whose database session ended (its broker was
/// killed) is taken over at once, not after the claim goes stale; one whose session lives is not.
#[tokio::test]
async fn a_claim_whose_holder_died_is_taken_over_at_once() {
    let Some(instances) = Instances::spawn("inst-claim", 1, &[]).await else {
        return;
    };
    let port = instances.port(0);
    let key = [("Idempotency-Key", "dead-holder-1")];
    let body =
        json!({"name": "claimed", "value": "v", "key_context": {"organization_id": "org_claim"}});
    // A first attempt stores the request's hash under the key; its object is then deleted and
    // the record turned back into a pending claim held by `holder`'s session.
    let first = send(port, "POST", "/vault/v1/kv", &body, &key)
        .await
        .unwrap();
    assert_eq!(first.status, 201, "{}", first.body);
    let path = format!("/vault/v1/kv/{}", first.body["id"].as_str().unwrap());
    let deleted = send(port, "DELETE", &path, &Value::Null, &[])
        .await
        .unwrap();
    assert!(matches!(deleted.status, 200 | 204), "{}", deleted.body);
    let db = postgres(&instances.url).await;
    let holder = postgres(&instances.url).await;
    let pid: i32 = holder
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let claimed = db
        .execute(
            "UPDATE idempotency SET status = 0, body = '', claim_token = $1 WHERE key = 'dead-holder-1'",
            &[&format!("held.{pid}")],
        )
        .await
        .unwrap();
    assert_eq!(claimed, 1);

    // The holder's session lives: the claim stands (the retry is told to come back).
    let refused = send(port, "POST", "/vault/v1/kv", &body, &key)
        .await
        .unwrap();
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert_eq!(refused.body["code"], "idempotency_in_flight");

    // The holder's session ends, as a killed broker's does: the retry runs now.
    drop(holder);
    let started = Instant::now();
    let retried = send(port, "POST", "/vault/v1/kv", &body, &key)
        .await
        .unwrap();
    assert_eq!(retried.status, 201, "{}", retried.body);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "taken over in {:?}",
        started.elapsed()
    );
}
