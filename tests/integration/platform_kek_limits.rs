//! Limits on just-in-time platform KEKs and the operator's choice of the context fields that
//! select one, with the local key provider in process: per API key per hour (429 with
//! Retry-After), in total across restarts (403), and selector fields (shared KEK, 422 if missing).

use crate::common::TestDir;
use crate::common::broker::{APP_KEY, TestBroker};
use serde_json::{Value, json};

fn data_dir(test: &str) -> TestDir {
    TestDir::new(&format!("limits-{test}"))
}

fn org(name: &str) -> Value {
    json!({ "organization_id": name })
}

#[tokio::test]
async fn new_platform_keks_are_limited_per_api_key_per_hour() {
    let dir = data_dir("hourly");
    let broker = TestBroker::start_local_in(
        &dir,
        &[("BYOK_BROKER_NEW_PLATFORM_KEKS_PER_KEY_PER_HOUR", "2")],
    )
    .await;
    for name in ["org_1", "org_2"] {
        let ok = broker.data_key(APP_KEY, org(name)).await;
        assert!(ok.status < 300, "{name}: {} {:?}", ok.status, ok.body);
    }
    let refused = broker.data_key(APP_KEY, org("org_3")).await;
    assert_eq!(refused.status, 429, "{:?}", refused.body);
    assert_eq!(refused.body["code"], "kek_quota_exceeded");
    let retry_after: u64 = refused.headers["retry-after"].parse().expect("seconds");
    assert!((1..=3600).contains(&retry_after), "{retry_after}");
    // Contexts whose KEK exists keep working; another key has its own budget.
    assert!(broker.data_key(APP_KEY, org("org_1")).await.status < 300);
    let other_key = broker.new_app_key("other").await;
    assert!(broker.data_key(&other_key, org("org_3")).await.status < 300);
    // Nothing was created for the refused request: its context's KEK now exists once, by the
    // other key (a write by the first key reuses it).
    assert_eq!(broker.broker.keyring.stats().keks_created, 3);
    assert!(broker.data_key(APP_KEY, org("org_3")).await.status < 300);
}

#[tokio::test]
async fn platform_keks_are_limited_in_total_across_restarts() {
    let dir = data_dir("total");
    let settings = [("BYOK_BROKER_MAX_PLATFORM_KEKS", "2")];
    {
        let broker = TestBroker::start_local_in(&dir, &settings).await;
        assert!(broker.data_key(APP_KEY, org("org_1")).await.status < 300);
        let other_key = broker.new_app_key("other").await;
        assert!(broker.data_key(&other_key, org("org_2")).await.status < 300);
        let refused = broker.data_key(APP_KEY, org("org_3")).await;
        assert_eq!(refused.status, 403, "{:?}", refused.body);
        assert_eq!(refused.body["code"], "kek_limit_reached");
        broker.shutdown().await;
    }
    // A restart does not reset the count: it is kept in the store.
    let broker = TestBroker::start_local_in(&dir, &settings).await;
    let refused = broker.data_key(APP_KEY, org("org_4")).await;
    assert_eq!(refused.status, 403, "{:?}", refused.body);
    assert_eq!(refused.body["code"], "kek_limit_reached");
    assert!(broker.data_key(APP_KEY, org("org_2")).await.status < 300);
}

#[tokio::test]
async fn the_operator_chooses_which_context_fields_select_the_kek() {
    let dir = data_dir("selector");
    let broker = TestBroker::start_local_in(
        &dir,
        &[("BYOK_BROKER_PLATFORM_KEK_CONTEXT_FIELDS", "organization_id")],
    )
    .await;
    let pii = json!({"organization_id": "org_a", "data_type": "pii"});
    let logs = json!({"organization_id": "org_a", "data_type": "logs"});
    let mut kek_ids = Vec::new();
    for (name, context) in [("pii", &pii), ("logs", &logs)] {
        let created = broker
            .call(
                "POST",
                "/vault/v1/kv",
                Some(&json!({"name": name, "value": name, "key_context": context})),
            )
            .await;
        assert_eq!(created.status, 201, "{:?}", created.body);
        kek_ids.push(created.body["key_id"].as_str().expect("key id").to_owned());
        let read = broker
            .call(
                "GET",
                &format!("/vault/v1/kv/{}", created.body["id"].as_str().expect("id")),
                None,
            )
            .await;
        assert_eq!(read.body["value"], name, "{:?}", read.body);
    }
    assert_eq!(kek_ids[0], kek_ids[1], "one KEK per organization");
    assert_eq!(broker.broker.keyring.stats().keks_created, 1);
    let missing = broker.data_key(APP_KEY, json!({"data_type": "pii"})).await;
    assert_eq!(missing.status, 422, "{:?}", missing.body);
    assert_eq!(missing.body["code"], "invalid_context");
    assert!(
        missing.body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("organization_id"),
        "{:?}",
        missing.body
    );
}

#[tokio::test]
async fn objects_and_data_keys_made_before_a_selector_stay_readable_after_it() {
    let dir = data_dir("selector-later");
    let context = json!({"organization_id": "org_a", "data_type": "pii"});
    let (object_path, blob) = {
        let broker = TestBroker::start_local_in(&dir, &[]).await;
        let created = broker
            .call(
                "POST",
                "/vault/v1/kv",
                Some(&json!({"name": "before", "value": "kept", "key_context": context})),
            )
            .await;
        assert_eq!(created.status, 201, "{:?}", created.body);
        let issued = broker.data_key(APP_KEY, context.clone()).await;
        assert_eq!(issued.status, 200, "{:?}", issued.body);
        broker.shutdown().await;
        (
            format!("/vault/v1/kv/{}", created.body["id"].as_str().expect("id")),
            issued.body["encrypted_keys"].clone(),
        )
    };
    // The operator now selects KEKs by organization only: new data goes to another KEK, and what
    // the whole-context KEK protects must still open (it is the broker's own key for the context).
    let broker = TestBroker::start_local_in(
        &dir,
        &[("BYOK_BROKER_PLATFORM_KEK_CONTEXT_FIELDS", "organization_id")],
    )
    .await;
    let read = broker.call("GET", &object_path, None).await;
    assert_eq!(read.status, 200, "{:?}", read.body);
    assert_eq!(read.body["value"], "kept");
    let opened = broker
        .call(
            "POST",
            "/vault/v1/keys/decrypt",
            Some(&json!({ "keys": blob })),
        )
        .await;
    assert_eq!(opened.status, 200, "{:?}", opened.body);
}

#[tokio::test]
async fn objects_stay_readable_whatever_the_selector_is_changed_to() {
    let dir = data_dir("selector-changes");
    let context = json!({"organization_id": "org_a", "data_type": "pii"});
    let selectors: [&[(&str, &str)]; 3] = [
        &[("BYOK_BROKER_PLATFORM_KEK_CONTEXT_FIELDS", "organization_id")],
        &[(
            "BYOK_BROKER_PLATFORM_KEK_CONTEXT_FIELDS",
            "organization_id,data_type",
        )],
        &[("BYOK_BROKER_PLATFORM_KEK_CONTEXT_FIELDS", "data_type")],
    ];
    let mut written = Vec::new();
    for (round, selector) in selectors.iter().enumerate() {
        let broker = TestBroker::start_local_in(&dir, selector).await;
        let created = broker
            .call(
                "POST",
                "/vault/v1/kv",
                Some(&json!({"name": format!("round-{round}"), "value": format!("v{round}"), "key_context": context})),
            )
            .await;
        assert_eq!(created.status, 201, "{:?}", created.body);
        written.push((
            format!("/vault/v1/kv/{}", created.body["id"].as_str().expect("id")),
            format!("v{round}"),
        ));
        // Everything written under every earlier selector still opens under this one.
        for (path, value) in &written {
            let read = broker.call("GET", path, None).await;
            assert_eq!(read.status, 200, "round {round}, {path}: {:?}", read.body);
            assert_eq!(&read.body["value"], value);
        }
        broker.shutdown().await;
    }
}
