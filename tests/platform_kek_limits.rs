//! Limits on just-in-time platform KEKs and the operator's choice of the context fields that
//! select one, with the local key provider in process: per API key per hour (429 with
//! Retry-After), in total across restarts (403), and selector fields (shared KEK, 422 if missing).

// The CLI's client, included by path: it is no part of the library's public API.
#[path = "../src/cli/http_client.rs"]
#[allow(dead_code)] // this test uses only `send`
mod http_client;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use byok_broker::broker::Broker;
use byok_broker::config::Config;
use http_client::HttpClient;
use serde_json::{Value, json};

const APP_KEY: &str = "limits-app-key-0123456789abcdef";
const ADMIN_KEY: &str = "limits-admin-key-0123456789abcdef";

struct LocalBroker {
    address: SocketAddr,
    broker: Arc<Broker>,
}

struct Answer {
    status: u16,
    headers: HashMap<String, String>,
    body: Value,
}

fn data_dir(test: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "byok-limits-{test}-{}",
        uuid::Uuid::new_v4().simple()
    ))
}

impl LocalBroker {
    async fn start(data_dir: &Path, settings: &[(&str, &str)]) -> Self {
        let mut env: HashMap<String, String> = [
            ("BYOK_BROKER_KMS", "local"),
            ("BYOK_BROKER_LISTEN", "127.0.0.1:0"),
            ("BYOK_BROKER_APP_KEY", APP_KEY),
            ("BYOK_BROKER_ADMIN_KEY", ADMIN_KEY),
        ]
        .into_iter()
        .chain(settings.iter().copied())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        env.insert(
            "BYOK_BROKER_DATA_DIR".into(),
            data_dir.display().to_string(),
        );
        let config = Config::load(None, |name| env.get(name).cloned()).expect("config");
        let broker = Broker::start(config).await.expect("broker starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let app = byok_broker::http::router(Arc::clone(&broker));
        tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
        Self { address, broker }
    }

    async fn call(&self, key: &str, method: &str, path: &str, body: &Value) -> Answer {
        let client = HttpClient::new(&format!("http://{}", self.address), Some(key.to_owned()))
            .expect("url");
        let response = client
            .send(method, path, body.to_string().as_bytes(), &[])
            .await
            .expect("the broker answers");
        Answer {
            status: response.status,
            headers: response.headers,
            body: serde_json::from_slice(&response.body).unwrap_or(Value::Null),
        }
    }

    /// Asks for a data key under `context` with `key`.
    async fn data_key(&self, key: &str, context: Value) -> Answer {
        self.call(
            key,
            "POST",
            "/vault/v1/keys/data-key",
            &json!({ "context": context }),
        )
        .await
    }

    async fn new_app_key(&self, name: &str) -> String {
        let created = self
            .call(
                ADMIN_KEY,
                "POST",
                "/admin/v1/api-keys",
                &json!({"name": name, "role": "app"}),
            )
            .await;
        assert_eq!(created.status, 201, "{:?}", created.body);
        created.body["key"].as_str().expect("token").to_owned()
    }
}

fn org(name: &str) -> Value {
    json!({ "organization_id": name })
}

#[tokio::test]
async fn new_platform_keks_are_limited_per_api_key_per_hour() {
    let dir = data_dir("hourly");
    let broker = LocalBroker::start(
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
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn platform_keks_are_limited_in_total_across_restarts() {
    let dir = data_dir("total");
    let settings = [("BYOK_BROKER_MAX_PLATFORM_KEKS", "2")];
    {
        let broker = LocalBroker::start(&dir, &settings).await;
        assert!(broker.data_key(APP_KEY, org("org_1")).await.status < 300);
        let other_key = broker.new_app_key("other").await;
        assert!(broker.data_key(&other_key, org("org_2")).await.status < 300);
        let refused = broker.data_key(APP_KEY, org("org_3")).await;
        assert_eq!(refused.status, 403, "{:?}", refused.body);
        assert_eq!(refused.body["code"], "kek_limit_reached");
    }
    // A restart does not reset the count: it is kept in the store.
    let broker = LocalBroker::start(&dir, &settings).await;
    let refused = broker.data_key(APP_KEY, org("org_4")).await;
    assert_eq!(refused.status, 403, "{:?}", refused.body);
    assert_eq!(refused.body["code"], "kek_limit_reached");
    assert!(broker.data_key(APP_KEY, org("org_2")).await.status < 300);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn the_operator_chooses_which_context_fields_select_the_kek() {
    let dir = data_dir("selector");
    let broker = LocalBroker::start(
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
                APP_KEY,
                "POST",
                "/vault/v1/kv",
                &json!({"name": name, "value": name, "key_context": context}),
            )
            .await;
        assert_eq!(created.status, 201, "{:?}", created.body);
        kek_ids.push(created.body["key_id"].as_str().expect("key id").to_owned());
        let read = broker
            .call(
                APP_KEY,
                "GET",
                &format!("/vault/v1/kv/{}", created.body["id"].as_str().expect("id")),
                &Value::Null,
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
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn objects_and_data_keys_made_before_a_selector_stay_readable_after_it() {
    let dir = data_dir("selector-later");
    let context = json!({"organization_id": "org_a", "data_type": "pii"});
    let (object_path, blob) = {
        let broker = LocalBroker::start(&dir, &[]).await;
        let created = broker
            .call(
                APP_KEY,
                "POST",
                "/vault/v1/kv",
                &json!({"name": "before", "value": "kept", "key_context": context}),
            )
            .await;
        assert_eq!(created.status, 201, "{:?}", created.body);
        let issued = broker.data_key(APP_KEY, context.clone()).await;
        assert_eq!(issued.status, 200, "{:?}", issued.body);
        (
            format!("/vault/v1/kv/{}", created.body["id"].as_str().expect("id")),
            issued.body["encrypted_keys"].clone(),
        )
    };
    // The operator now selects KEKs by organization only: new data goes to another KEK, and what
    // the whole-context KEK protects must still open (it is the broker's own key for the context).
    let broker = LocalBroker::start(
        &dir,
        &[("BYOK_BROKER_PLATFORM_KEK_CONTEXT_FIELDS", "organization_id")],
    )
    .await;
    let read = broker
        .call(APP_KEY, "GET", &object_path, &Value::Null)
        .await;
    assert_eq!(read.status, 200, "{:?}", read.body);
    assert_eq!(read.body["value"], "kept");
    let opened = broker
        .call(
            APP_KEY,
            "POST",
            "/vault/v1/keys/decrypt",
            &json!({ "keys": blob }),
        )
        .await;
    assert_eq!(opened.status, 200, "{:?}", opened.body);
    let _ = std::fs::remove_dir_all(dir);
}
