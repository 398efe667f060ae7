//! Transient STS failures are not revocations. LocalStack cannot make STS throttle or fail, so the
//! broker's STS endpoint points at a loopback stand-in answering real STS error documents (KMS stays
//! LocalStack). Throttling and 5xx: 503 `kms_unavailable`, no state change, nothing recorded, on the
//! request path and in a watcher pass. AccessDenied: the CMK is marked unavailable (the control).
//! The refusals are audited (`vault.access.denied`, reasons `kms_unavailable`, `key_unavailable`).

use crate::common;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use common::broker::{ADMIN_KEY, TestBroker, bind_in_store};
use common::{PLATFORM_ACCOUNT, TENANT_ACCOUNT, options_for};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the stand-in answers every AssumeRole with: HTTP status, STS error type and code.
type Fault = (u16, &'static str, &'static str);
const THROTTLING: Fault = (400, "Sender", "Throttling");
const INTERNAL: Fault = (500, "Receiver", "InternalFailure");
const SERVICE_UNAVAILABLE: Fault = (503, "Receiver", "ServiceUnavailable");
const ACCESS_DENIED: Fault = (403, "Sender", "AccessDenied");

struct FakeSts {
    url: String,
    fault: Arc<Mutex<Fault>>,
    requests: Arc<AtomicU64>,
    /// The body of the last AssumeRole request (form-encoded `Action=AssumeRole&...`).
    last_request: Arc<Mutex<String>>,
}

impl FakeSts {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let fault = Arc::new(Mutex::new(THROTTLING));
        let requests = Arc::new(AtomicU64::new(0));
        let last_request = Arc::new(Mutex::new(String::new()));
        let (shared_fault, counter) = (Arc::clone(&fault), Arc::clone(&requests));
        let shared_last = Arc::clone(&last_request);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let fault = *shared_fault.lock().expect("not poisoned");
                counter.fetch_add(1, Ordering::SeqCst);
                let last = Arc::clone(&shared_last);
                tokio::spawn(async move {
                    let body = read_request(&mut stream).await;
                    *last.lock().expect("not poisoned") = body;
                    let (status, kind, code) = fault;
                    let body = format!(
                        "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>{kind}</Type><Code>{code}</Code><Message>stand-in says {code}</Message></Error><RequestId>fake-1</RequestId></ErrorResponse>"
                    );
                    let response = format!(
                        "HTTP/1.1 {status} Fault\r\ncontent-type: text/xml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Self {
            url,
            fault,
            requests,
            last_request,
        }
    }

    fn answer(&self, fault: Fault) {
        *self.fault.lock().expect("not poisoned") = fault;
    }
}

/// Reads headers and a `content-length` body, so the client sees a complete exchange; returns the body.
async fn read_request(stream: &mut tokio::net::TcpStream) -> String {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Ok(n) = stream.read(&mut chunk).await else {
            return String::new();
        };
        if n == 0 {
            return String::new();
        }
        buffer.extend_from_slice(&chunk[..n]);
        let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let headers = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
        let length: usize = headers
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if buffer.len() >= end + 4 + length {
            return String::from_utf8_lossy(&buffer[end + 4..]).into_owned();
        }
    }
}

async fn state(broker: &TestBroker, id: &str) -> (String, serde_json::Value) {
    let shown = broker
        .call_with(
            "GET",
            &format!("/admin/v1/byok-keys/{id}"),
            None,
            Some(ADMIN_KEY),
            &[],
        )
        .await;
    (
        shown.body["state"].as_str().unwrap_or_default().to_owned(),
        shown.body["reason"].clone(),
    )
}

async fn state_changes(broker: &TestBroker) -> usize {
    let events = broker
        .call_with(
            "GET",
            "/admin/v1/events?events=vault.byok_key.state_changed&limit=100",
            None,
            Some(ADMIN_KEY),
            &[],
        )
        .await;
    events.body["data"].as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn throttled_or_failing_sts_is_retryable_and_access_denied_revokes() {
    let sts = FakeSts::start().await;
    let mut aws = options_for(PLATFORM_ACCOUNT);
    aws.sts_endpoint_url = Some(sts.url.clone());
    let broker = TestBroker::start_with_aws("sts-faults", &[], aws).await;
    let role = format!("arn:aws:iam::{TENANT_ACCOUNT}:role/byok-broker-access");
    let (id, _key_arn) = bind_in_store(
        &broker,
        "org_sts",
        Some((&role, "sts-fault-test-external-id-0123456789")),
    )
    .await;
    let request = json!({"context": {"organization_id": "org_sts"}});

    for fault in [THROTTLING, INTERNAL, SERVICE_UNAVAILABLE] {
        sts.answer(fault);
        let before = sts.requests.load(Ordering::SeqCst);
        let response = broker
            .call("POST", "/vault/v1/keys/data-key", Some(&request))
            .await;
        // Throttling is capacity (`kms_busy`), the rest availability; both retryable.
        let code = if fault == THROTTLING {
            "kms_busy"
        } else {
            "kms_unavailable"
        };
        assert_eq!(
            (response.status, response.body["code"].as_str()),
            (503, Some(code)),
            "{fault:?}: {:?}",
            response.body
        );
        assert!(response.headers.contains_key("retry-after"), "{fault:?}");
        assert_eq!(
            state(&broker, &id).await.0,
            "active",
            "{fault:?}: request path"
        );

        broker.broker.byok.check_all(4).await;
        assert_eq!(
            state(&broker, &id).await.0,
            "active",
            "{fault:?}: watcher pass"
        );
        assert!(
            sts.requests.load(Ordering::SeqCst) >= before + 2,
            "the stand-in was asked"
        );
    }
    assert_eq!(state_changes(&broker).await, 0, "no revocation recorded");

    // Control: a real denial is a revocation, from the watcher as from a request.
    sts.answer(ACCESS_DENIED);
    broker.broker.byok.check_all(4).await;
    assert_eq!(
        state(&broker, &id).await,
        ("unavailable".to_owned(), json!("role_not_assumable"))
    );
    let refused = broker
        .call("POST", "/vault/v1/keys/data-key", Some(&request))
        .await;
    assert_eq!(
        (refused.status, refused.body["code"].as_str()),
        (403, Some("key_unavailable"))
    );
    assert_eq!(state_changes(&broker).await, 1);

    // Each refusal is an audit event of the organization, with its reason (capacity is not one).
    let denied = broker
        .call_with(
            "GET",
            "/admin/v1/events?events=vault.access.denied&organization_id=org_sts&limit=100",
            None,
            Some(ADMIN_KEY),
            &[],
        )
        .await;
    let reasons: Vec<&str> = denied.body["data"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            assert_eq!(e["data"]["operation"], "vault.dek.read", "{e}");
            e["data"]["reason"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        reasons,
        ["kms_unavailable", "kms_unavailable", "key_unavailable"]
    );
}

/// Registration sends the broker-generated external id of the organization to STS, and a refusal
/// is reported with its reason and a fixed message, not the STS error text.
#[tokio::test]
async fn registration_assumes_the_role_with_the_broker_external_id() {
    let sts = FakeSts::start().await;
    sts.answer(ACCESS_DENIED);
    let mut aws = options_for(PLATFORM_ACCOUNT);
    aws.sts_endpoint_url = Some(sts.url.clone());
    let broker = TestBroker::start_with_aws("sts-register", &[], aws).await;
    let external_id = broker
        .call_with(
            "GET",
            "/admin/v1/byok-external-ids/org_reg",
            None,
            Some(ADMIN_KEY),
            &[],
        )
        .await
        .body["external_id"]
        .as_str()
        .expect("external id")
        .to_owned();
    let registration = json!({
        "match_context": {"organization_id": "org_reg"},
        "provider": "aws_kms",
        "key_arn": format!("arn:aws:kms:us-east-1:{TENANT_ACCOUNT}:key/{}", uuid::Uuid::new_v4()),
        "role_arn": format!("arn:aws:iam::{TENANT_ACCOUNT}:role/byok-broker-access"),
    });
    let response = broker
        .call_with(
            "POST",
            "/admin/v1/byok-keys",
            Some(&registration),
            Some(ADMIN_KEY),
            &[],
        )
        .await;
    assert_eq!(
        (response.status, response.body["code"].as_str()),
        (422, Some("byok_verification_failed")),
        "{:?}",
        response.body
    );
    let message = response.body["message"].as_str().unwrap_or_default();
    assert!(message.contains("role_not_assumable"), "{message}");
    assert!(
        !message.contains("stand-in") && !message.contains("AccessDenied"),
        "{message}"
    );
    let sent = sts.last_request.lock().expect("not poisoned").clone();
    assert!(
        sent.contains(&format!("ExternalId={external_id}")),
        "{sent}"
    );
}
