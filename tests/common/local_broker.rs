//! An in-process broker on the embedded local key provider (no LocalStack), for tests where KMS
//! semantics do not matter: idempotency, storage failures. Requests go over real HTTP.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use super::http_client::HttpClient;
use byok_broker::broker::Broker;
use byok_broker::config::Config;
use serde_json::Value;

pub const APP_KEY: &str = "local-test-app-key-0123456789";
pub const ADMIN_KEY: &str = "local-test-admin-key-0123456789";

pub struct LocalBroker {
    pub address: SocketAddr,
    pub broker: Arc<Broker>,
    pub data_dir: PathBuf,
}

impl LocalBroker {
    /// Starts with extra `BYOK_BROKER_*` settings.
    pub async fn start(test: &str, settings: &[(&str, &str)]) -> Self {
        let data_dir = std::env::temp_dir().join(format!(
            "byok-local-{test}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let mut env: HashMap<String, String> = HashMap::from([
            ("BYOK_BROKER_KMS".into(), "local".into()),
            ("BYOK_BROKER_LISTEN".into(), "127.0.0.1:0".into()),
            (
                "BYOK_BROKER_DATA_DIR".into(),
                data_dir.display().to_string(),
            ),
            ("BYOK_BROKER_APP_KEY".into(), APP_KEY.into()),
            ("BYOK_BROKER_ADMIN_KEY".into(), ADMIN_KEY.into()),
        ]);
        env.extend(settings.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let config = Config::load(None, |name| env.get(name).cloned()).expect("config");
        let broker = Broker::start(config).await.expect("broker starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let app = byok_broker::http::router(Arc::clone(&broker));
        tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
        Self {
            address,
            broker,
            data_dir,
        }
    }

    /// One request with the app key and `headers`; returns the status and the JSON body.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let client = HttpClient::new(&format!("http://{}", self.address), Some(APP_KEY.into()))
            .expect("url");
        let response = client
            .send(method, path, body, headers)
            .await
            .expect("the broker answers");
        let json = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        (response.status, json)
    }

    /// Every object name visible to the app key, through the list API.
    pub async fn object_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let path = match &after {
                Some(cursor) => format!("/vault/v1/kv?limit=100&order=asc&after={cursor}"),
                None => "/vault/v1/kv?limit=100&order=asc".to_owned(),
            };
            let (status, page) = self.send("GET", &path, b"", &[]).await;
            assert_eq!(status, 200, "{page}");
            for object in page["data"].as_array().expect("data") {
                names.push(object["name"].as_str().expect("name").to_owned());
            }
            match page["list_metadata"]["after"].as_str() {
                Some(cursor) => after = Some(cursor.to_owned()),
                None => return names,
            }
        }
    }
}

impl Drop for LocalBroker {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}
