//! The in-process broker fixture: one broker per test on port 0, on LocalStack (KMS semantics) or
//! the embedded local key provider (everything else), with known API keys and a data directory
//! removed on drop; requests go over real HTTP. Also the admin-plane helpers tests share.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::http_client::HttpClient;
use byok_broker::broker::Broker;
use byok_broker::config::Config;
use byok_broker::context::KeyContext;
use byok_broker::kms::KeyProvider;
use byok_broker::kms::aws::{AwsKms, AwsOptions};
use byok_broker::kms::local::LocalKms;
use byok_broker::store::{ByokKeyRecord, TenantKekRecord};
use byok_broker::supervisor::Supervisor;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use super::{
    CountingProvider, PLATFORM_ACCOUNT, TestDir, create_key, options_for, registration,
    unique_prefix,
};

pub const APP_KEY: &str = "test-app-key-0123456789abcdef";
pub const ADMIN_KEY: &str = "test-admin-key-0123456789abcdef";

pub struct TestBroker<P = AwsKms> {
    pub address: SocketAddr,
    pub broker: Arc<Broker>,
    pub data_dir: PathBuf,
    /// The broker's provider, counting the calls that reach KMS.
    pub kms: Arc<CountingProvider<P>>,
    /// The broker's background tasks, which `shutdown` stops as the binary does on SIGTERM.
    pub supervisor: Supervisor,
    server: JoinHandle<()>,
    /// `None` when the test owns the directory (restart tests start several brokers on one).
    _owned_dir: Option<TestDir>,
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
    pub async fn start_with(test: &str, settings: &[(&str, &str)]) -> Self {
        Self::start_with_aws(test, settings, options_for(PLATFORM_ACCOUNT)).await
    }

    /// Starts with extra settings and the given AWS options (e.g. another STS endpoint).
    pub async fn start_with_aws(test: &str, settings: &[(&str, &str)], aws: AwsOptions) -> Self {
        let data_dir = TestDir::new(&format!("http-{test}"));
        let mut config = test_config(test, "aws", &data_dir, settings);
        config.aws = aws;
        let kms = AwsKms::connect(&config.aws).await.expect("provider");
        serve(config, kms, Some(data_dir)).await
    }
}

impl TestBroker<LocalKms> {
    /// Starts on the embedded local key provider: no LocalStack, same HTTP surface.
    pub async fn start_local(test: &str) -> Self {
        Self::start_local_with(test, &[]).await
    }

    /// Starts on the local key provider with extra `BYOK_BROKER_*` settings.
    pub async fn start_local_with(test: &str, settings: &[(&str, &str)]) -> Self {
        let data_dir = TestDir::new(&format!("local-{test}"));
        let path = data_dir.to_path_buf();
        Self::open_local(&path, settings, Some(data_dir)).await
    }

    /// Starts on the local key provider in `data_dir`, which the caller owns and removes: a test
    /// that restarts the broker shuts the first one down (as a process ends: it releases the
    /// SQLite audit log) and starts the next one on the same directory.
    pub async fn start_local_in(data_dir: &Path, settings: &[(&str, &str)]) -> Self {
        Self::open_local(data_dir, settings, None).await
    }

    async fn open_local(
        data_dir: &Path,
        settings: &[(&str, &str)],
        owned_dir: Option<TestDir>,
    ) -> Self {
        let config = test_config("", "local", data_dir, settings);
        // Where `Broker::start` keeps it, so a restarted broker finds the same keys.
        let kms = LocalKms::open(&config.data_dir.join("local-kms"))
            .await
            .expect("local provider");
        serve(config, kms, owned_dir).await
    }
}

fn test_config(test: &str, provider: &str, data_dir: &Path, settings: &[(&str, &str)]) -> Config {
    let mut env: HashMap<String, String> = [
        ("BYOK_BROKER_KMS", provider.to_owned()),
        ("BYOK_BROKER_LISTEN", "127.0.0.1:0".to_owned()),
        ("BYOK_BROKER_DATA_DIR", data_dir.display().to_string()),
        ("BYOK_BROKER_APP_KEY", APP_KEY.to_owned()),
        ("BYOK_BROKER_ADMIN_KEY", ADMIN_KEY.to_owned()),
        ("BYOK_BROKER_MAX_VALUE_BYTES", "65536".to_owned()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect();
    // On PostgreSQL, the data directory's own database: a restarted broker on it finds its state.
    if let Some(url) = super::database::broker_url(data_dir) {
        env.insert("BYOK_BROKER_DATABASE_URL".into(), url);
    }
    if provider == "aws" {
        // Tests share one LocalStack; a local provider's keys live in its own data directory, and
        // a restarted broker on that directory must find them under the same aliases.
        env.insert("BYOK_BROKER_KEK_ALIAS_PREFIX".into(), unique_prefix(test));
    }
    env.extend(settings.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    // Settings come from this map only, never the process environment: tests share one process.
    let mut config = Config::load(None, |name| env.get(name).cloned()).expect("config");
    if provider == "aws" {
        config.aws = options_for(PLATFORM_ACCOUNT);
    }
    config
}

async fn serve<P: KeyProvider + 'static>(
    config: Config,
    kms: P,
    owned_dir: Option<TestDir>,
) -> TestBroker<P> {
    let data_dir = config.data_dir.clone();
    let kms = Arc::new(CountingProvider::new(kms));
    let supervisor = Supervisor::new();
    let broker = Broker::start_with_provider(config, kms.clone(), &supervisor)
        .await
        .expect("broker starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let app = byok_broker::http::router(Arc::clone(&broker));
    // With the peer address, as the broker's own server hands it to requests.
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    let server = tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    TestBroker {
        address,
        broker,
        data_dir,
        kms,
        supervisor,
        server,
        _owned_dir: owned_dir,
    }
}

impl<P> Drop for TestBroker<P> {
    fn drop(&mut self) {
        // A dropped broker stops answering, so a restarted one on the same directory is the only one.
        self.server.abort();
    }
}

impl<P> TestBroker<P> {
    /// The binary's shutdown after its drain: stops serving, then every background task in order
    /// (workers, audit flush, database close).
    pub async fn shutdown(&self) {
        self.server.abort();
        self.supervisor
            .shutdown(self.broker.config.server.worker_stop)
            .await;
    }

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

    /// One request with the app key, a raw body and `headers`; returns the status and the body.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let response = self.raw(method, path, body, Some(APP_KEY), headers).await;
        (response.status, response.body)
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

    /// Asks for a data key under `context` with `key`.
    pub async fn data_key(&self, key: &str, context: Value) -> HttpResponse {
        let body = json!({ "context": context });
        self.call_with(
            "POST",
            "/vault/v1/keys/data-key",
            Some(&body),
            Some(key),
            &[],
        )
        .await
    }

    /// Creates an unscoped app key and returns its token.
    pub async fn new_app_key(&self, name: &str) -> String {
        let body = json!({"name": name, "role": "app"});
        let created = admin(self, "POST", "/admin/v1/api-keys", Some(&body)).await;
        assert_eq!(created.status, 201, "{:?}", created.body);
        created.body["key"].as_str().expect("token").to_owned()
    }
}

/// One request with the admin key.
pub async fn admin<P>(
    broker: &TestBroker<P>,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> HttpResponse {
    broker
        .call_with(method, path, body, Some(ADMIN_KEY), &[])
        .await
}

/// Creates a key in `account`, registers it for `org` (with the role in `account`) and returns
/// the BYOK key id and the key ARN.
pub async fn register<P>(broker: &TestBroker<P>, org: &str, account: &str) -> (String, String) {
    let key_arn = create_key(account).await;
    let response = admin(
        broker,
        "POST",
        "/admin/v1/byok-keys",
        Some(&registration(org, &key_arn, account)),
    )
    .await;
    assert_eq!(response.status, 201, "{:?}", response.body);
    assert_eq!(response.body["state"], "active");
    (response.body["id"].as_str().unwrap().to_owned(), key_arn)
}

/// Saves a BYOK binding for `org` straight into the store (a key in the tenant account, with an
/// optional role and external id) and reloads routing: for tests where registration cannot verify
/// the key (no AWS KMS, a failing STS). Returns the binding id and the key ARN.
pub async fn bind_in_store<P>(
    broker: &TestBroker<P>,
    org: &str,
    role: Option<(&str, &str)>,
) -> (String, String) {
    let id = format!("byok_stored_{org}");
    let key_arn = format!(
        "arn:aws:kms:us-east-1:{}:key/{}",
        super::TENANT_ACCOUNT,
        uuid::Uuid::new_v4()
    );
    let context = KeyContext::new([("organization_id", org)]).expect("context");
    let record = ByokKeyRecord {
        id: id.clone(),
        match_context_json: serde_json::to_string(&context).expect("json"),
        match_context_hash: context.hash().to_hex(),
        provider: "aws_kms".into(),
        current_kek: key_arn.clone(),
        admin_disabled: false,
        retired: false,
        created_at: String::new(),
        updated_at: String::new(),
        keks: Vec::new(),
    };
    let kek = TenantKekRecord {
        key_arn: key_arn.clone(),
        byok_key_id: id.clone(),
        region: None,
        role_arn: role.map(|(arn, _)| arn.to_owned()),
        external_id: role.map(|(_, external_id)| external_id.to_owned()),
        available: true,
        reason: None,
        last_checked_at: None,
        state_seq: 0,
    };
    broker
        .broker
        .store
        .insert_byok_key(record, kek)
        .await
        .expect("insert");
    broker.broker.byok.reload_bindings().await.expect("reload");
    (id, key_arn)
}
