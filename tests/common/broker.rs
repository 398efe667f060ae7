//! A broker per test: in-process, on port 0, backed by LocalStack (or the local key provider where
//! KMS semantics do not matter), with a temporary data directory and known bootstrap API keys;
//! requests go over real HTTP through the library's client.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use super::http_client::HttpClient;
use byok_broker::broker::Broker;
use byok_broker::config::Config;
use serde_json::Value;

use byok_broker::kms::KeyProvider;
use byok_broker::kms::aws::AwsKms;
use byok_broker::kms::local::LocalKms;

use super::{CountingProvider, PLATFORM_ACCOUNT, options_for, unique_prefix};

pub const APP_KEY: &str = "test-app-key-0123456789abcdef";
pub const ADMIN_KEY: &str = "test-admin-key-0123456789abcdef";

pub struct TestBroker<P = AwsKms> {
    pub address: SocketAddr,
    pub broker: Arc<Broker>,
    pub data_dir: PathBuf,
    /// The broker's provider, counting the calls that reach KMS.
    pub kms: Arc<CountingProvider<P>>,
}

pub struct HttpResponse {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Value,
}

impl TestBroker<AwsKms> {
    pub async fn start(test: &str) -> Self {
        Self::start_with(test, &[]).await
    }

    /// Starts with extra `BYOK_BROKER_*` settings.
    pub async fn start_with(test: &str, settings: &[(&'static str, &str)]) -> Self {
        Self::start_with_aws(test, settings, options_for(PLATFORM_ACCOUNT)).await
    }

    /// Starts with extra settings and the given AWS options (e.g. another STS endpoint).
    pub async fn start_with_aws(
        test: &str,
        settings: &[(&'static str, &str)],
        aws: byok_broker::kms::aws::AwsOptions,
    ) -> Self {
        let (mut config, data_dir) = test_config(test, "aws", settings);
        config.aws = aws;
        let kms = AwsKms::connect(&config.aws).await.expect("provider");
        serve(config, data_dir, kms).await
    }
}

impl TestBroker<LocalKms> {
    /// Starts on the embedded local key provider: no LocalStack, same HTTP surface.
    pub async fn start_local(test: &str) -> Self {
        let (config, data_dir) = test_config(test, "local", &[]);
        let kms = LocalKms::open(&data_dir.join("local-kms"))
            .await
            .expect("local provider");
        serve(config, data_dir, kms).await
    }
}

fn test_config(test: &str, provider: &str, settings: &[(&'static str, &str)]) -> (Config, PathBuf) {
    let data_dir = std::env::temp_dir().join(format!(
        "byok-http-{test}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let mut env: HashMap<&str, String> = HashMap::from([
        ("BYOK_BROKER_KMS", provider.to_string()),
        ("BYOK_BROKER_LISTEN", "127.0.0.1:0".to_string()),
        ("BYOK_BROKER_DATA_DIR", data_dir.display().to_string()),
        ("BYOK_BROKER_KEK_ALIAS_PREFIX", unique_prefix(test)),
        ("BYOK_BROKER_APP_KEY", APP_KEY.to_string()),
        ("BYOK_BROKER_ADMIN_KEY", ADMIN_KEY.to_string()),
        ("BYOK_BROKER_MAX_VALUE_BYTES", "65536".to_string()),
    ]);
    env.extend(settings.iter().map(|(k, v)| (*k, v.to_string())));
    let mut config = Config::load(None, |name| env.get(name).cloned()).expect("config");
    if provider == "aws" {
        config.aws = options_for(PLATFORM_ACCOUNT);
    }
    (config, data_dir)
}

async fn serve<P: KeyProvider + 'static>(
    config: Config,
    data_dir: PathBuf,
    kms: P,
) -> TestBroker<P> {
    let kms = Arc::new(CountingProvider::new(kms));
    let broker = Broker::start_with_provider(config, kms.clone())
        .await
        .expect("broker starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let app = byok_broker::http::router(Arc::clone(&broker));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    TestBroker {
        address,
        broker,
        data_dir,
        kms,
    }
}

impl<P> TestBroker<P> {
    /// Sends one request with the app key (or `key`, or none) and parses the JSON response.
    pub async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> HttpResponse {
        self.call_with(method, path, body, Some(APP_KEY), &[]).await
    }

    pub async fn call_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        key: Option<&str>,
        extra: &[(&str, &str)],
    ) -> HttpResponse {
        let payload = body.map(Value::to_string).unwrap_or_default();
        self.raw(method, path, payload.as_bytes(), key, extra).await
    }

    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        payload: &[u8],
        key: Option<&str>,
        extra: &[(&str, &str)],
    ) -> HttpResponse {
        let client = HttpClient::new(&format!("http://{}", self.address), key.map(str::to_owned))
            .expect("url");
        let response = client
            .send(method, path, payload, extra)
            .await
            .expect("the broker answers");
        let body = if response.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&response.body).unwrap_or_else(|_| {
                Value::String(String::from_utf8_lossy(&response.body).into_owned())
            })
        };
        HttpResponse {
            status: response.status,
            headers: response.headers,
            body,
        }
    }
}
