//! A proxy in front of LocalStack that answers a share of KMS cryptographic calls with a real
//! `ThrottlingException` (LocalStack never throttles), and records every attempt it sees: its
//! operation, the SDK's invocation id (the same on every retry of one call) and when it came.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// The calls the broker's KMS budget governs: what KMS throttles against the shared quota.
const CRYPTO: &[&str] = &[
    "TrentService.GenerateDataKey",
    "TrentService.Decrypt",
    "TrentService.Encrypt",
    "TrentService.ReEncrypt",
];

#[derive(Debug, Clone)]
pub struct Attempt {
    pub operation: String,
    pub invocation: String,
    pub at: Instant,
    pub throttled: bool,
}

pub struct ThrottlingProxy {
    pub url: String,
    /// Percent of cryptographic calls answered with `ThrottlingException` (0-100).
    share: Arc<AtomicU32>,
    attempts: Arc<Mutex<Vec<Attempt>>>,
}

impl ThrottlingProxy {
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let share = Arc::new(AtomicU32::new(0));
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let proxy = Arc::new(Forwarder {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client: Client::builder(TokioExecutor::new()).build_http(),
            share: Arc::clone(&share),
            attempts: Arc::clone(&attempts),
            seen: AtomicU64::new(0),
        });
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let proxy = Arc::clone(&proxy);
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let proxy = Arc::clone(&proxy);
                        async move { Ok::<_, Infallible>(proxy.handle(request).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            url,
            share,
            attempts,
        }
    }

    /// Throttles `percent` of the cryptographic calls from now on (spread evenly).
    pub fn throttle(&self, percent: u32) {
        self.share.store(percent.min(100), Ordering::SeqCst);
    }

    pub fn attempts(&self) -> Vec<Attempt> {
        self.attempts.lock().expect("not poisoned").clone()
    }
}

struct Forwarder {
    upstream: String,
    client: Client<HttpConnector, Full<Bytes>>,
    share: Arc<AtomicU32>,
    attempts: Arc<Mutex<Vec<Attempt>>>,
    /// Cryptographic calls seen: the n-th is throttled when n's share bucket says so.
    seen: AtomicU64,
}

impl Forwarder {
    async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = request.into_parts();
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let operation = header("x-amz-target");
        if CRYPTO.contains(&operation.as_str()) {
            let n = self.seen.fetch_add(1, Ordering::SeqCst);
            let share = u64::from(self.share.load(Ordering::SeqCst));
            // Evenly spread: of every 100 calls, the first `share` by this rotation.
            let throttled = (n * 37) % 100 < share;
            self.attempts.lock().expect("not poisoned").push(Attempt {
                operation: operation.clone(),
                invocation: header("amz-sdk-invocation-id"),
                at: Instant::now(),
                throttled,
            });
            if throttled {
                let body = r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#;
                return Response::builder()
                    .status(400)
                    .header("content-type", "application/x-amz-json-1.1")
                    .header("x-amzn-errortype", "ThrottlingException")
                    .body(Full::new(Bytes::from_static(body.as_bytes())))
                    .expect("response");
            }
        }
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut forward = Request::builder().method(parts.method.clone()).uri(
            format!("{}{path}", self.upstream)
                .parse::<Uri>()
                .expect("uri"),
        );
        for (name, value) in &parts.headers {
            forward = forward.header(name, value);
        }
        let forward = forward.body(Full::new(body)).expect("request");
        match self.client.request(forward).await {
            Ok(answer) => {
                let (parts, body) = answer.into_parts();
                let body = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                Response::from_parts(parts, Full::new(body))
            }
            Err(e) => Response::builder()
                .status(502)
                .body(Full::new(Bytes::from(format!("proxy: {e}"))))
                .expect("response"),
        }
    }
}
