//! A revocation made through one broker is refused by every broker on the same PostgreSQL within
//! 1 s (issue "Several instances, one broker", point 3): a BYOK disable (hot cached DEKs
//! included) and an API key revocation through instance A, measured on B and C from A's 200 to
//! their first refusal (and a rotation: their writes use the new CMK); with the listeners'
//! connections killed, and with a change whose notification never comes, within the revision
//! check's bound instead. PostgreSQL only.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common;

use common::instances::Instances;
use common::process::{ADMIN_KEY, APP_KEY, call};
use common::{TENANT_ACCOUNT, create_key, key_spec, registration};

/// The bound the notification path promises.
const NOTIFY_BOUND: Duration = Duration::from_secs(1);
/// The brokers' revision check in these tests (the default): the backstop's bound is this
/// plus 1 s.
pub(crate) const CHECK_MS: u64 = 500;
const BACKSTOP_BOUND: Duration = Duration::from_millis(CHECK_MS + 1000);
pub(crate) const SETTINGS: &[(&str, &str)] = &[("BYOK_BROKER_COHERENCE_CHECK_MS", "500")];
/// `store::LISTENER_APPLICATION_NAME`, as the database shows it.
const LISTENER: &str = "byok-broker-listener";

/// One request to instance `port` as `key`: status and JSON body (`Null` if none).
async fn send(port: u16, key: &str, method: &str, path: &str, body: &Value) -> (u16, Value) {
    call(port, key, method, path, body, &[]).await
}

/// Sends `method path` as `key` to `port` until the answer is not 200, for at most `limit`;
/// when it first was not, and the answer.
pub(crate) async fn first_refusal(
    port: u16,
    key: String,
    method: &'static str,
    path: String,
    limit: Duration,
) -> Option<(Instant, u16, Value)> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let (status, body) = send(port, &key, method, &path, &Value::Null).await;
        if status != 200 {
            return Some((Instant::now(), status, body));
        }
        // Fine enough for a 1 s bound, light enough for a 2-core machine running the suite.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Starts polling `path` on each of `ports` as `key`, then runs `revoke` (which returns when A
/// answered 200); each broker's delay from that answer to its first refusal, and the refusal.
/// The delay from sending A's request is printed too: a refusal often comes before A's answer
/// (A audits after the commit its notification announced).
async fn measure<F>(
    ports: &[u16],
    key: &str,
    method: &'static str,
    path: &str,
    limit: Duration,
    revoke: F,
) -> Vec<(Duration, u16, Value)>
where
    F: Future<Output = ()>,
{
    let pollers: Vec<_> = ports
        .iter()
        .map(|port| {
            tokio::spawn(first_refusal(
                *port,
                key.to_owned(),
                method,
                path.to_owned(),
                limit,
            ))
        })
        .collect();
    // The pollers are running (a request each at least) before the revocation.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sent = Instant::now();
    revoke.await;
    let answered = Instant::now();
    let mut delays = Vec::new();
    for (poller, port) in pollers.into_iter().zip(ports) {
        let (refused_at, status, body) = poller
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("instance on port {port} still served after {limit:?}"));
        eprintln!(
            "  port {port}: refused {:?} after A's request was sent",
            refused_at.saturating_duration_since(sent)
        );
        // A refusal before A's answer (its commit was already announced) counts as 0.
        delays.push((refused_at.saturating_duration_since(answered), status, body));
    }
    delays
}

/// A BYOK key for a fresh organization, registered through instance `port`, and an object of
/// that organization created through it: the key's id and the object's path.
pub(crate) async fn byok_object(port: u16) -> (String, String, String) {
    let org = format!("org_rev_{}", uuid::Uuid::new_v4().simple());
    let key_arn = create_key(TENANT_ACCOUNT).await;
    let (status, registered) = send(
        port,
        ADMIN_KEY,
        "POST",
        "/admin/v1/byok-keys",
        &registration(&org, &key_arn, TENANT_ACCOUNT),
    )
    .await;
    assert_eq!(status, 201, "{registered}");
    let id = registered["id"].as_str().unwrap().to_owned();
    let body = json!({"name": "secret", "value": "v", "key_context": {"organization_id": org}});
    let (status, created) = send(port, APP_KEY, "POST", "/vault/v1/kv", &body).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        created["key_id"],
        key_arn.as_str(),
        "under the tenant's CMK"
    );
    let path = format!("/vault/v1/kv/{}", created["id"].as_str().unwrap());
    (id, org, path)
}

/// Reads `path` through `port` until it answers 200 (the broker learnt of the registration):
/// afterwards its DEK is in that broker's cache.
pub(crate) async fn read_until_served(port: u16, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = send(port, APP_KEY, "GET", path, &Value::Null).await;
        if status == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never served on {port}: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A new app key created through `port`: its id and token.
pub(crate) async fn app_key(port: u16) -> (String, String) {
    let body = json!({"name": "revocable", "role": "app"});
    let (status, created) = send(port, ADMIN_KEY, "POST", "/admin/v1/api-keys", &body).await;
    assert_eq!(status, 201, "{created}");
    (
        created["id"].as_str().unwrap().to_owned(),
        created["key"].as_str().unwrap().to_owned(),
    )
}

/// A connection of the test's own to the shared database.
pub(crate) async fn database(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// The brokers' listener sessions on the shared database.
async fn listeners(db: &tokio_postgres::Client) -> i64 {
    db.query_one(
        "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()",
        &[&LISTENER],
    )
    .await
    .unwrap()
    .get(0)
}

/// Waits until `count` listener sessions are connected.
async fn wait_for_listeners(db: &tokio_postgres::Client, count: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while listeners(db).await != count {
        assert!(Instant::now() < deadline, "listeners never reached {count}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_rotation_and_a_byok_disable_through_one_instance_reach_the_others_within_a_second() {
    let Some(instances) = Instances::spawn("rev-byok", 3, SETTINGS).await else {
        return;
    };
    let (a, b, c) = (instances.port(0), instances.port(1), instances.port(2));
    let (id, org, path) = byok_object(a).await;
    // Hot on every instance: the DEK is cached on B and C.
    for port in [a, b, c] {
        read_until_served(port, &path).await;
    }

    // A rotation through A: B's next writes use the new CMK, objects under the old one stay
    // readable (and their DEKs hot).
    let new_key = create_key(TENANT_ACCOUNT).await;
    let (status, rotated) = send(
        a,
        ADMIN_KEY,
        "PUT",
        &format!("/admin/v1/byok-keys/{id}"),
        &key_spec(&new_key),
    )
    .await;
    assert_eq!(status, 200, "{rotated}");
    let rotated_at = Instant::now();
    let mut written = 0;
    let delay = loop {
        written += 1;
        let body = json!({"name": format!("w{written}"), "value": "v", "key_context": {"organization_id": org}});
        let (status, created) = send(b, APP_KEY, "POST", "/vault/v1/kv", &body).await;
        assert_eq!(status, 201, "{created}");
        if created["key_id"] == new_key.as_str() {
            break rotated_at.elapsed();
        }
        assert!(
            rotated_at.elapsed() < Duration::from_secs(5),
            "B never used the new key"
        );
    };
    eprintln!("rotation through A used by B's writes after {delay:?}");
    assert!(delay <= NOTIFY_BOUND, "{delay:?}");
    let (status, _) = send(b, APP_KEY, "GET", &path, &Value::Null).await;
    assert_eq!(status, 200, "the earlier CMK still opens its objects");

    let disable = format!("/admin/v1/byok-keys/{id}/disable");
    let delays = measure(
        &[b, c],
        APP_KEY,
        "GET",
        &path,
        Duration::from_secs(5),
        async {
            let (status, disabled) = send(a, ADMIN_KEY, "POST", &disable, &Value::Null).await;
            assert_eq!(
                (status, disabled["state"].as_str()),
                (200, Some("disabled"))
            );
        },
    )
    .await;
    let (status, on_a) = send(a, APP_KEY, "GET", &path, &Value::Null).await;
    assert_eq!((status, on_a["code"].as_str()), (403, Some("key_revoked")));
    for (i, (delay, status, body)) in delays.iter().enumerate() {
        eprintln!(
            "BYOK disable through A refused on instance {}: {delay:?}",
            i + 1
        );
        assert_eq!((*status, &body["code"]), (403, &on_a["code"]), "as on A");
        assert!(*delay <= NOTIFY_BOUND, "instance {}: {delay:?}", i + 1);
    }
    // Writes for the tenant are refused too (never a platform KEK), and stay refused.
    let write = json!({"name": "after", "value": "v", "key_context": {"organization_id": org}});
    for port in [b, c] {
        let (status, refused) = send(port, APP_KEY, "POST", "/vault/v1/kv", &write).await;
        assert_eq!(
            (status, refused["code"].as_str()),
            (403, Some("key_revoked"))
        );
        let (status, _) = send(port, APP_KEY, "GET", &path, &Value::Null).await;
        assert_eq!(status, 403);
    }
}

#[tokio::test]
async fn an_api_key_revoked_through_one_instance_is_refused_by_the_others_within_a_second() {
    let Some(instances) = Instances::spawn("rev-apikey", 2, SETTINGS).await else {
        return;
    };
    let (a, b) = (instances.port(0), instances.port(1));
    let (id, token) = app_key(a).await;
    // Verified (and so cached) on B.
    let (status, listed) = send(b, &token, "GET", "/vault/v1/kv", &Value::Null).await;
    assert_eq!(status, 200, "{listed}");

    let revoke = format!("/admin/v1/api-keys/{id}");
    let delays = measure(
        &[b],
        &token,
        "GET",
        "/vault/v1/kv",
        Duration::from_secs(5),
        async {
            let (status, revoked) = send(a, ADMIN_KEY, "DELETE", &revoke, &Value::Null).await;
            assert_eq!(status, 200, "{revoked}");
        },
    )
    .await;
    let (status, on_a) = send(a, &token, "GET", "/vault/v1/kv", &Value::Null).await;
    assert_eq!(status, 401, "{on_a}");
    let (delay, status, body) = &delays[0];
    eprintln!("API key revocation through A refused on B: {delay:?}");
    assert_eq!((*status, &body["code"]), (401, &on_a["code"]), "as on A");
    assert!(*delay <= NOTIFY_BOUND, "{delay:?}");
}

#[tokio::test]
async fn with_the_listeners_killed_a_revocation_is_refused_within_the_revision_check_bound() {
    let Some(instances) = Instances::spawn("rev-killed", 2, SETTINGS).await else {
        return;
    };
    let (a, b) = (instances.port(0), instances.port(1));
    let db = database(&instances.url).await;
    wait_for_listeners(&db, 2).await;
    let (id, token) = app_key(a).await;
    let (status, _) = send(b, &token, "GET", "/vault/v1/kv", &Value::Null).await;
    assert_eq!(status, 200);
    let (byok_id, _, path) = byok_object(a).await;
    read_until_served(b, &path).await;

    let killed: Vec<bool> = db
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()",
            &[&LISTENER],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(killed, [true, true], "both listeners were connected");
    let revoke = format!("/admin/v1/api-keys/{id}");
    let delays = measure(
        &[b],
        &token,
        "GET",
        "/vault/v1/kv",
        Duration::from_secs(5),
        async {
            let (status, _) = send(a, ADMIN_KEY, "DELETE", &revoke, &Value::Null).await;
            assert_eq!(status, 200);
        },
    )
    .await;
    let (delay, status, _) = &delays[0];
    eprintln!("API key revocation with the listeners killed, refused on B: {delay:?}");
    assert_eq!(*status, 401);
    assert!(*delay <= BACKSTOP_BOUND, "{delay:?}");

    // The listeners come back by themselves, and notifications flow again.
    wait_for_listeners(&db, 2).await;
    let disable = format!("/admin/v1/byok-keys/{byok_id}/disable");
    let delays = measure(&[b], APP_KEY, "GET", &path, Duration::from_secs(5), async {
        let (status, _) = send(a, ADMIN_KEY, "POST", &disable, &Value::Null).await;
        assert_eq!(status, 200);
    })
    .await;
    let (delay, status, _) = &delays[0];
    eprintln!("BYOK disable after the listeners reconnected, refused on B: {delay:?}");
    assert_eq!(*status, 403);
    assert!(*delay <= NOTIFY_BOUND, "{delay:?}");
}

#[tokio::test]
async fn a_change_whose_notification_never_comes_is_caught_by_the_revision_check() {
    let Some(instances) = Instances::spawn("rev-silent", 2, SETTINGS).await else {
        return;
    };
    let b = instances.port(1);
    let db = database(&instances.url).await;
    let (byok_id, _, path) = byok_object(instances.port(0)).await;
    read_until_served(b, &path).await;
    let (id, token) = app_key(instances.port(0)).await;
    let (status, _) = send(b, &token, "GET", "/vault/v1/kv", &Value::Null).await;
    assert_eq!(status, 200);

    // Both revocations committed with their revision bumps but without the triggers, so no
    // notification is sent: only the revision check can tell B.
    let silent_disable = format!(
        "BEGIN; \
         ALTER TABLE byok_keys DISABLE TRIGGER byok_keys_change; \
         UPDATE byok_keys SET admin_disabled = 1 WHERE id = '{byok_id}'; \
         ALTER TABLE byok_keys ENABLE TRIGGER byok_keys_change; \
         UPDATE byok_revision SET revision = revision + 1; \
         ALTER TABLE api_keys DISABLE TRIGGER api_keys_change; \
         UPDATE api_keys SET revoked_at = 'now' WHERE id = '{id}'; \
         ALTER TABLE api_keys ENABLE TRIGGER api_keys_change; \
         UPDATE api_key_revision SET revision = revision + 1; \
         COMMIT;"
    );
    let byok = tokio::spawn(first_refusal(
        b,
        APP_KEY.to_owned(),
        "GET",
        path.clone(),
        Duration::from_secs(5),
    ));
    let api_key = tokio::spawn(first_refusal(
        b,
        token,
        "GET",
        "/vault/v1/kv".to_owned(),
        Duration::from_secs(5),
    ));
    tokio::time::sleep(Duration::from_millis(100)).await;
    db.batch_execute(&silent_disable).await.unwrap();
    let committed = Instant::now();
    for (what, poller, expected) in [
        ("BYOK disable", byok, 403),
        ("API key revocation", api_key, 401),
    ] {
        let (at, status, body) = poller.await.unwrap().expect("refused in time");
        let delay = at.saturating_duration_since(committed);
        eprintln!("{what} without a notification, refused on B: {delay:?}");
        assert_eq!(status, expected, "{body}");
        assert!(delay <= BACKSTOP_BOUND, "{what}: {delay:?}");
    }
}
