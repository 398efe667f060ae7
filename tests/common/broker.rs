//! A broker per test: in-process, on port 0, backed by LocalStack, with a temporary data directory
//! and known bootstrap API keys; plus a minimal HTTP/1.1 client so tests see the real wire.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use byok_broker::broker::Broker;
use byok_broker::config::Config;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use byok_broker::kms::aws::AwsKms;

use super::{CountingProvider, PLATFORM_ACCOUNT, options_for, unique_prefix};

pub const APP_KEY: &str = "test-app-key-0123456789abcdef";
pub const ADMIN_KEY: &str = "test-admin-key-0123456789abcdef";

pub struct TestBroker {
    pub address: SocketAddr,
    pub broker: Arc<Broker>,
    pub data_dir: PathBuf,
    /// The broker's provider, counting the calls that reach KMS.
    pub kms: Arc<CountingProvider<AwsKms>>,
}

pub struct HttpResponse {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Value,
}

impl TestBroker {
    pub async fn start(test: &str) -> Self {
        Self::start_with(test, &[]).await
    }

    /// Starts with extra `BYOK_BROKER_*` settings.
    pub async fn start_with(test: &str, settings: &[(&'static str, &str)]) -> Self {
        let data_dir = std::env::temp_dir().join(format!(
            "byok-http-{test}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let env: HashMap<&str, String> = HashMap::from([
            ("BYOK_BROKER_KMS", "aws".to_string()),
            ("BYOK_BROKER_LISTEN", "127.0.0.1:0".to_string()),
            ("BYOK_BROKER_DATA_DIR", data_dir.display().to_string()),
            ("BYOK_BROKER_KEK_ALIAS_PREFIX", unique_prefix(test)),
            ("BYOK_BROKER_APP_KEY", APP_KEY.to_string()),
            ("BYOK_BROKER_ADMIN_KEY", ADMIN_KEY.to_string()),
            ("BYOK_BROKER_MAX_VALUE_BYTES", "65536".to_string()),
        ]);
        let mut env = env;
        env.extend(settings.iter().map(|(k, v)| (*k, v.to_string())));
        let mut config = Config::load(None, |name| env.get(name).cloned()).expect("config");
        config.aws = options_for(PLATFORM_ACCOUNT);
        let kms = Arc::new(CountingProvider::new(
            AwsKms::connect(&config.aws).await.expect("provider"),
        ));
        let broker = Broker::start_with_provider(config, kms.clone())
            .await
            .expect("broker starts");
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
            kms,
        }
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
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            self.address,
            payload.len()
        );
        if let Some(key) = key {
            request.push_str(&format!("Authorization: Bearer {key}\r\n"));
        }
        for (name, value) in extra {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        let mut stream = tokio::net::TcpStream::connect(self.address)
            .await
            .expect("connect");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("write head");
        stream.write_all(payload).await.expect("write body");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read");
        parse_response(&raw)
    }
}

fn parse_response(raw: &[u8]) -> HttpResponse {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status");
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    let body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()))
    };
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = data.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&data[..end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[end + 2..end + 2 + size]);
        data = &data[end + 2 + size + 2..];
    }
    out
}
