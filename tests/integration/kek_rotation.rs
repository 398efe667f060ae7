//! KEK rotation (issue 17): platform KEKs get automatic rotation at the configured period (new ones
//! at creation, existing ones at start or first use), an admin can rotate one on demand with every
//! earlier object still readable and nothing in the store touched, the inventory lists them, and
//! tenant CMKs' rotation is read (never changed) and shown in the admin view, with a warning and
//! an event when it turns off. Against LocalStack, and on the local provider.

use std::sync::atomic::Ordering;

use crate::common;

use byok_broker::context::KeyContext;
use byok_broker::kms::local::LocalKms;
use common::broker::{TestBroker, admin};
use common::{PLATFORM_ACCOUNT, TENANT_ACCOUNT, TestDir, create_key, raw_kms, registration};
use serde_json::{Value, json};

/// Creates an object for `org` and returns its id and the KEK it was written under.
async fn create_object<P>(broker: &TestBroker<P>, name: &str, org: &str) -> (String, String) {
    let created = broker
        .call(
            "POST",
            "/vault/v1/kv",
            Some(&json!({"name": name, "value": format!("value of {name}"), "key_context": {"organization_id": org}})),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    (
        created.body["id"].as_str().expect("id").to_owned(),
        created.body["key_id"].as_str().expect("kek").to_owned(),
    )
}

async fn read_value<P>(broker: &TestBroker<P>, id: &str) -> String {
    let read = broker
        .call("GET", &format!("/vault/v1/kv/{id}"), None)
        .await;
    assert_eq!(read.status, 200, "{:?}", read.body);
    read.body["value"].as_str().expect("value").to_owned()
}

/// The stored sealed value of an object's current version (its wrapped DEK inside).
async fn stored<P>(broker: &TestBroker<P>, id: &str) -> (String, Vec<u8>) {
    let record = broker.broker.store.get_object(id).await.expect("object");
    (record.kek_id, record.sealed)
}

/// The key id alone (the last path segment), which needs no escaping in a URL.
fn short_id(kek_id: &str) -> &str {
    kek_id.rsplit('/').next().expect("segment")
}

/// Every platform KEK of the inventory, page by page with `limit`.
async fn inventory<P>(broker: &TestBroker<P>, limit: usize) -> Vec<Value> {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(cursor) => format!("/admin/v1/keks?limit={limit}&after={}", urlencode(cursor)),
            None => format!("/admin/v1/keks?limit={limit}"),
        };
        let page = admin(broker, "GET", &path, None).await;
        assert_eq!(page.status, 200, "{:?}", page.body);
        let data = page.body["data"].as_array().expect("data").clone();
        assert!(data.len() <= limit);
        all.extend(data);
        match page.body["list_metadata"]["after"].as_str() {
            Some(cursor) => after = Some(cursor.to_owned()),
            None => return all,
        }
    }
}

fn urlencode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

async fn events<P>(broker: &TestBroker<P>, name: &str) -> Vec<Value> {
    broker.broker.audit.flush().await;
    let page = admin(
        broker,
        "GET",
        &format!("/admin/v1/events?events={name}&limit=100"),
        None,
    )
    .await;
    assert_eq!(page.status, 200, "{:?}", page.body);
    page.body["data"].as_array().expect("data").clone()
}

#[tokio::test]
async fn new_platform_keks_rotate_automatically_at_the_configured_period_and_are_listed() {
    let broker = TestBroker::start_with(
        "rotation-new",
        &[("BYOK_BROKER_PLATFORM_KEK_ROTATION_PERIOD_DAYS", "180")],
    )
    .await;
    let mut keks = Vec::new();
    for org in ["org_rot_a", "org_rot_b", "org_rot_c"] {
        let (_, kek) = create_object(&broker, org, org).await;
        keks.push(kek);
    }
    let kms = raw_kms(PLATFORM_ACCOUNT).await;
    for kek in &keks {
        let status = kms
            .get_key_rotation_status()
            .key_id(kek)
            .send()
            .await
            .expect("rotation status");
        assert!(status.key_rotation_enabled(), "{kek}");
        assert_eq!(status.rotation_period_in_days(), Some(180), "{kek}");
    }

    // The inventory, two per page, in creation order.
    let listed = inventory(&broker, 2).await;
    let ids: Vec<&str> = listed.iter().map(|k| k["id"].as_str().unwrap()).collect();
    assert_eq!(ids, keks.iter().map(String::as_str).collect::<Vec<_>>());
    for kek in &listed {
        assert_eq!(kek["object"], "platform_kek");
        assert_eq!(kek["key_arn"], kek["id"]);
        assert_eq!(kek["objects"], 1);
        assert_eq!(kek["rotation"]["enabled"], true, "{kek}");
        assert_eq!(kek["rotation"]["period_days"], 180, "{kek}");
        assert!(
            kek["context_hash"].as_str().is_some_and(|h| h.len() == 64),
            "{kek}"
        );
        assert!(kek["created_at"].as_str().is_some(), "{kek}");
    }
    let bad_limit = admin(&broker, "GET", "/admin/v1/keks?limit=0", None).await;
    assert_eq!(
        (bad_limit.status, &bad_limit.body["code"]),
        (422, &json!("invalid_limit"))
    );
    let bad_cursor = admin(&broker, "GET", "/admin/v1/keks?after=nope", None).await;
    assert_eq!(
        (bad_cursor.status, &bad_cursor.body["code"]),
        (422, &json!("invalid_cursor"))
    );
    // Admin keys only.
    assert_eq!(broker.call("GET", "/admin/v1/keks", None).await.status, 403);
}

#[tokio::test]
async fn existing_platform_keks_get_rotation_at_start_and_at_first_use_once() {
    let broker = TestBroker::start("rotation-existing").await;
    let kms = raw_kms(PLATFORM_ACCOUNT).await;
    // A KEK from before rotation existed, behind its context's alias: first use enables it.
    let context = KeyContext::new([("organization_id", "org_rot_old")]).expect("context");
    let alias = broker.broker.keyring.alias_for(&context);
    let old_kek = create_key(PLATFORM_ACCOUNT).await;
    kms.create_alias()
        .alias_name(&alias)
        .target_key_id(&old_kek)
        .send()
        .await
        .expect("alias");
    let (_, used) = create_object(&broker, "old", "org_rot_old").await;
    assert_eq!(used, old_kek);
    let status = kms
        .get_key_rotation_status()
        .key_id(&old_kek)
        .send()
        .await
        .expect("status");
    assert!(status.key_rotation_enabled());
    assert_eq!(status.rotation_period_in_days(), Some(365), "the default");

    // A KEK the store records without rotation (made by an earlier release): enabled at start.
    let recorded = create_key(PLATFORM_ACCOUNT).await;
    let store = &broker.broker.store;
    let reservation = store
        .reserve_platform_kek(None, &"ab".repeat(32), 100, 10_000)
        .await
        .expect("store")
        .expect("within limits");
    store
        .confirm_platform_kek(reservation, &recorded)
        .await
        .expect("confirm");
    assert_eq!(
        broker
            .broker
            .platform_keks
            .enable_rotation_on_existing()
            .await,
        1
    );
    let status = kms
        .get_key_rotation_status()
        .key_id(&recorded)
        .send()
        .await
        .expect("status");
    assert!(status.key_rotation_enabled());
    // Recorded: the next start asks KMS for nothing.
    assert_eq!(
        broker
            .broker
            .platform_keks
            .enable_rotation_on_existing()
            .await,
        0
    );
    let listed = inventory(&broker, 100).await;
    let row = listed
        .iter()
        .find(|k| k["id"] == recorded.as_str())
        .expect("listed");
    assert_eq!(row["rotation"]["enabled"], true);
    assert_eq!(row["rotation"]["period_days"], 365);
    assert_eq!(row["objects"], 0);
}

#[tokio::test]
async fn an_on_demand_rotation_leaves_every_earlier_object_readable_and_the_store_untouched() {
    let broker = TestBroker::start("rotation-on-demand").await;
    let (first, kek) = create_object(&broker, "before-1", "org_rot_incident").await;
    let (second, same) = create_object(&broker, "before-2", "org_rot_incident").await;
    assert_eq!(kek, same);
    let issued = broker
        .call(
            "POST",
            "/vault/v1/keys/data-key",
            Some(&json!({"context": {"organization_id": "org_rot_incident"}})),
        )
        .await;
    assert_eq!(issued.status, 200, "{:?}", issued.body);
    let before = [
        stored(&broker, &first).await,
        stored(&broker, &second).await,
    ];

    let rotated = admin(
        &broker,
        "POST",
        &format!("/admin/v1/keks/{}/rotate", short_id(&kek)),
        None,
    )
    .await;
    assert_eq!(rotated.status, 200, "{:?}", rotated.body);
    assert_eq!(rotated.body["id"], kek.as_str());
    assert!(rotated.body["rotation"]["last_on_demand_at"].is_string());
    assert_eq!(rotated.body["objects"], 2);
    // The full id, percent-encoded, names it too.
    let again = admin(
        &broker,
        "POST",
        &format!("/admin/v1/keks/{}/rotate", urlencode(&kek)),
        None,
    )
    .await;
    assert!(
        again.status == 200 || again.body["code"] == "kek_rotation_refused",
        "{:?}",
        again.body
    );

    let (after, under) = create_object(&broker, "after", "org_rot_incident").await;
    assert_eq!(under, kek, "the same KEK id after rotation");
    // Every read goes to KMS, not the DEK cache.
    broker.broker.dek_cache.purge_kek(&kek).await;
    let decrypts = broker.kms.decrypt_calls();
    assert_eq!(read_value(&broker, &first).await, "value of before-1");
    assert_eq!(read_value(&broker, &second).await, "value of before-2");
    assert_eq!(read_value(&broker, &after).await, "value of after");
    assert!(broker.kms.decrypt_calls() >= decrypts + 3);
    let opened = broker
        .call(
            "POST",
            "/vault/v1/keys/decrypt",
            Some(&json!({"keys": issued.body["encrypted_keys"]})),
        )
        .await;
    assert_eq!(opened.status, 200, "{:?}", opened.body);
    assert_eq!(opened.body["data_key"], issued.body["data_key"]);
    assert_eq!(
        [
            stored(&broker, &first).await,
            stored(&broker, &second).await
        ],
        before,
        "data and wrapped DEKs untouched"
    );

    let rotations = events(&broker, "vault.kek.rotated").await;
    assert!(!rotations.is_empty());
    let data = &rotations[0]["data"];
    assert_eq!(data["kek_id"], kek.as_str());
    assert_eq!(data["actor_source"], "api");
    assert!(
        data["actor_id"].is_string() && data["actor_name"].is_string(),
        "{data}"
    );

    // Unknown KEKs, and a tenant's CMK, are not platform KEKs.
    for unknown in ["0b5f4c3e-0000-4000-8000-000000000000", "nope"] {
        let missing = admin(
            &broker,
            "POST",
            &format!("/admin/v1/keks/{unknown}/rotate"),
            None,
        )
        .await;
        assert_eq!(missing.status, 404, "{:?}", missing.body);
        assert_eq!(missing.body["code"], "not_found");
    }
    let (_, tenant_kek) = common::broker::register(&broker, "org_rot_tenant", TENANT_ACCOUNT).await;
    let tenant = admin(
        &broker,
        "POST",
        &format!("/admin/v1/keks/{}/rotate", urlencode(&tenant_kek)),
        None,
    )
    .await;
    assert_eq!(tenant.status, 404, "{:?}", tenant.body);
}

#[tokio::test]
async fn a_tenant_keys_rotation_is_shown_and_turning_it_off_warns_without_revoking() {
    // A long interval: the test runs the watcher's pass itself.
    let broker = TestBroker::start_with(
        "rotation-tenant",
        &[("BYOK_BROKER_BYOK_WATCH_INTERVAL_MS", "60000")],
    )
    .await;
    let tenant = raw_kms(TENANT_ACCOUNT).await;
    let key_arn = create_key(TENANT_ACCOUNT).await;
    tenant
        .enable_key_rotation()
        .key_id(&key_arn)
        .rotation_period_in_days(200)
        .send()
        .await
        .expect("enable rotation");
    let registered = admin(
        &broker,
        "POST",
        "/admin/v1/byok-keys",
        Some(&registration("org_rot_watch", &key_arn, TENANT_ACCOUNT)),
    )
    .await;
    assert_eq!(registered.status, 201, "{:?}", registered.body);
    let rotation = &registered.body["rotation"];
    assert_eq!(
        rotation["enabled"], true,
        "read at verification: {rotation}"
    );
    assert_eq!(rotation["period_days"], 200);
    assert!(rotation["next_rotation_at"].is_string(), "{rotation}");
    assert!(rotation["warning"].is_null());
    assert_eq!(registered.body["keks"][0]["rotation"], *rotation);
    let id = registered.body["id"].as_str().expect("id").to_owned();
    let path = format!("/admin/v1/byok-keys/{id}");

    // The tenant turns rotation off: the next pass shows it, warns, records it once.
    tenant
        .disable_key_rotation()
        .key_id(&key_arn)
        .send()
        .await
        .expect("disable rotation");
    broker.broker.byok.check_all(4).await;
    broker.broker.byok.check_all(4).await;
    let shown = admin(&broker, "GET", &path, None).await;
    assert_eq!(shown.body["state"], "active", "rotation is no key state");
    let rotation = &shown.body["rotation"];
    assert_eq!(rotation["enabled"], false, "{rotation}");
    assert!(
        rotation["warning"]
            .as_str()
            .is_some_and(|w| w.contains("off")),
        "{rotation}"
    );
    let changes = events(&broker, "vault.byok_key.rotation_changed").await;
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0]["data"]["rotation_enabled"], false);
    assert_eq!(changes[0]["data"]["previously_enabled"], true);
    assert_eq!(changes[0]["data"]["byok_key_id"], id.as_str());
    let of_org = admin(
        &broker,
        "GET",
        "/admin/v1/events?events=vault.byok_key.rotation_changed&organization_id=org_rot_watch",
        None,
    )
    .await;
    assert_eq!(
        of_org.body["data"].as_array().map(Vec::len),
        Some(1),
        "{:?}",
        of_org.body
    );
    let metrics = admin(&broker, "GET", "/admin/v1/metrics", None).await;
    let text = metrics.body.as_str().expect("text").to_owned();
    assert!(
        text.contains("byok_broker_tenant_key_rotation_disabled_total 1"),
        "{text}"
    );
    assert!(
        text.contains("byok_broker_tenant_keys_without_rotation 1"),
        "{text}"
    );

    // The role loses kms:GetKeyRotationStatus: shown as an error, the key keeps working.
    broker
        .kms
        .refuse_rotation_status
        .store(true, Ordering::SeqCst);
    broker.broker.byok.check_all(4).await;
    let shown = admin(&broker, "GET", &path, None).await;
    assert_eq!(shown.body["state"], "active", "{:?}", shown.body);
    assert_eq!(shown.body["rotation"]["error"], "access_denied");
    assert_eq!(
        shown.body["rotation"]["enabled"], false,
        "the last value read stays"
    );
    let written = broker
        .call(
            "POST",
            "/vault/v1/kv",
            Some(&json!({"name": "still-works", "value": "v", "key_context": {"organization_id": "org_rot_watch"}})),
        )
        .await;
    assert_eq!(written.status, 201, "{:?}", written.body);
    assert_eq!(written.body["key_id"], key_arn.as_str());

    // Turned on again: recorded as a change too.
    broker
        .kms
        .refuse_rotation_status
        .store(false, Ordering::SeqCst);
    tenant
        .enable_key_rotation()
        .key_id(&key_arn)
        .send()
        .await
        .expect("enable rotation");
    broker.broker.byok.check_all(4).await;
    let shown = admin(&broker, "GET", &path, None).await;
    assert_eq!(shown.body["rotation"]["enabled"], true);
    assert!(shown.body["rotation"]["error"].is_null());
    assert_eq!(
        events(&broker, "vault.byok_key.rotation_changed")
            .await
            .len(),
        2
    );
}

#[tokio::test]
async fn the_local_provider_rotates_platform_keks_and_keeps_earlier_objects_readable() {
    let dir = TestDir::new("local-rotation");
    let settings = [("BYOK_BROKER_PLATFORM_KEK_ROTATION_PERIOD_DAYS", "90")];
    let (first, kek, blob) = {
        let broker = TestBroker::<LocalKms>::start_local_in(&dir, &settings).await;
        let (first, kek) = create_object(&broker, "local-before", "org_local_rot").await;
        assert!(kek.starts_with("local/"));
        let blob = broker
            .call(
                "POST",
                "/vault/v1/keys/data-key",
                Some(&json!({"context": {"organization_id": "org_local_rot"}})),
            )
            .await
            .body;
        let listed = inventory(&broker, 10).await;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0]["rotation"]["enabled"], true);
        assert_eq!(listed[0]["rotation"]["period_days"], 90);
        let status = broker
            .broker
            .provider()
            .key_rotation_status(&byok_broker::kms::KekRef::platform(&kek))
            .await
            .expect("status");
        assert_eq!(status.period_days, Some(90));
        let before = stored(&broker, &first).await;
        let rotated = admin(
            &broker,
            "POST",
            &format!("/admin/v1/keks/{}/rotate", short_id(&kek)),
            None,
        )
        .await;
        assert_eq!(rotated.status, 200, "{:?}", rotated.body);
        assert_eq!(stored(&broker, &first).await, before);
        broker.shutdown().await;
        (first, kek, blob)
    };
    // A restarted broker on the same directory: old and new objects and the data key all open.
    let broker = TestBroker::<LocalKms>::start_local_in(&dir, &settings).await;
    let (after, under) = create_object(&broker, "local-after", "org_local_rot").await;
    assert_eq!(under, kek);
    assert_eq!(read_value(&broker, &first).await, "value of local-before");
    assert_eq!(read_value(&broker, &after).await, "value of local-after");
    let opened = broker
        .call(
            "POST",
            "/vault/v1/keys/decrypt",
            Some(&json!({"keys": blob["encrypted_keys"]})),
        )
        .await;
    assert_eq!(opened.status, 200, "{:?}", opened.body);
    assert_eq!(opened.body["data_key"], blob["data_key"]);
    // The new object's DEK is wrapped under the rotated material (the versioned format).
    let (_, sealed) = stored(&broker, &after).await;
    assert!(
        sealed.windows(4).any(|w| w == b"BBL2"),
        "wrapped under material version 1"
    );
}
