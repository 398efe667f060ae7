//! Push revocation against LocalStack (issue "Several instances", point 7): an SQS queue with a
//! dead-letter queue (redrive policy), fed by an EventBridge rule for `aws.kms` CloudTrail calls.
//! LocalStack emits no CloudTrail events, so each test changes the key in the tenant's account
//! and puts the CloudTrail-shaped event on the bus itself, as the tenant's account (EventBridge
//! stamps the sender's account, which the broker checks). Measured from PutEvents: refusal within
//! 1 s, hot cached DEKs included, with the watcher's interval far longer (it is not what revokes).
//! Events for unknown keys and events sent by another account are ignored; a malformed message
//! ends in the DLQ and the consumer keeps working; with two instances on PostgreSQL both refuse.

use std::time::{Duration, Instant};

use aws_sdk_sqs::types::QueueAttributeName;
use byok_broker::kms::aws::load_sdk_config;
use serde_json::{Value, json};

use crate::common;

use common::broker::{TestBroker, register};
use common::http_client::HttpClient;
use common::instances::Instances;
use common::process::{ADMIN_KEY, APP_KEY, request};
use common::{
    OTHER_TENANT_ACCOUNT, PLATFORM_ACCOUNT, REGION, TENANT_ACCOUNT, create_key,
    localstack_endpoint, options_for, raw_kms, registration,
};

/// What push revocation promises, from the event reaching the bus to the first refusal.
const PUSH_BOUND: Duration = Duration::from_secs(1);
/// Long enough that the watcher never revokes during a test.
const WATCH_INTERVAL_MS: &str = "60000";

/// The operator's side: a queue with a DLQ and a bus whose rule forwards KMS calls to it.
struct Pipeline {
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    dlq_url: String,
    bus_arn: String,
}

async fn sqs() -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(&load_sdk_config(&options_for(PLATFORM_ACCOUNT)).await)
}

/// One EventBridge call (AWS JSON 1.1) as `account`: the SDK crate for EventBridge is not a
/// dependency for four calls; LocalStack takes the account from the credential scope.
async fn events(account: &str, target: &str, body: Value) -> Value {
    let client = HttpClient::new(localstack_endpoint(), None).unwrap();
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential={account}/20240101/{REGION}/events/aws4_request, SignedHeaders=host, Signature=00"
    );
    let response = client
        .send(
            "POST",
            "/",
            body.to_string().as_bytes(),
            &[
                ("content-type", "application/x-amz-json-1.1"),
                ("x-amz-target", &format!("AWSEvents.{target}")),
                ("authorization", &auth),
            ],
        )
        .await
        .unwrap();
    let answer: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    assert_eq!(response.status, 200, "{target}: {answer}");
    answer
}

impl Pipeline {
    async fn create(name: &str) -> Self {
        let sqs = sqs().await;
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let dlq_url = sqs
            .create_queue()
            .queue_name(format!("{name}-dlq-{suffix}"))
            .send()
            .await
            .unwrap()
            .queue_url
            .unwrap();
        let dlq_arn = sqs
            .get_queue_attributes()
            .queue_url(&dlq_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap()[&QueueAttributeName::QueueArn]
            .clone();
        // One receive, then the DLQ: a malformed message gets there after one visibility timeout.
        let redrive = json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "1"}).to_string();
        let queue_url = sqs
            .create_queue()
            .queue_name(format!("{name}-{suffix}"))
            .attributes(QueueAttributeName::RedrivePolicy, redrive)
            .attributes(QueueAttributeName::VisibilityTimeout, "1")
            .send()
            .await
            .unwrap()
            .queue_url
            .unwrap();
        let queue_arn = format!(
            "arn:aws:sqs:{REGION}:{PLATFORM_ACCOUNT}:{}",
            queue_url.rsplit('/').next().unwrap()
        );
        let bus = format!("{name}-bus-{suffix}");
        let bus_arn =
            events(PLATFORM_ACCOUNT, "CreateEventBus", json!({"Name": bus})).await["EventBusArn"]
                .as_str()
                .unwrap()
                .to_owned();
        let pattern =
            json!({"source": ["aws.kms"], "detail-type": ["AWS API Call via CloudTrail"]});
        events(
            PLATFORM_ACCOUNT,
            "PutRule",
            json!({"Name": "kms-key-events", "EventBusName": bus, "EventPattern": pattern.to_string()}),
        )
        .await;
        events(
            PLATFORM_ACCOUNT,
            "PutTargets",
            json!({"Rule": "kms-key-events", "EventBusName": bus, "Targets": [{"Id": "queue", "Arn": queue_arn}]}),
        )
        .await;
        // The bus policy the README describes: tenant accounts may put events on it.
        for account in [TENANT_ACCOUNT, OTHER_TENANT_ACCOUNT] {
            events(
                PLATFORM_ACCOUNT,
                "PutPermission",
                json!({"EventBusName": bus, "Action": "events:PutEvents", "Principal": account, "StatementId": format!("tenant-{account}")}),
            )
            .await;
        }
        Self {
            sqs,
            queue_url,
            dlq_url,
            bus_arn,
        }
    }

    /// Puts the CloudTrail record of `event_name` on `key_arn` on the bus, as `account`.
    async fn put(&self, account: &str, event_name: &str, key_arn: &str) {
        let key_id = key_arn.rsplit('/').next().unwrap();
        let detail = json!({
            "eventVersion": "1.08",
            "eventSource": "kms.amazonaws.com",
            "eventName": event_name,
            "awsRegion": REGION,
            "recipientAccountId": key_arn.split(':').nth(4).unwrap(),
            "requestParameters": {"keyId": key_id},
            "resources": [{"accountId": key_arn.split(':').nth(4).unwrap(), "type": "AWS::KMS::Key", "ARN": key_arn}],
            "eventType": "AwsApiCall",
        });
        let entry = json!({
            "Source": "aws.kms",
            "DetailType": "AWS API Call via CloudTrail",
            "Detail": detail.to_string(),
            "EventBusName": self.bus_arn,
        });
        let answer = events(account, "PutEvents", json!({"Entries": [entry]})).await;
        assert_eq!(answer["FailedEntryCount"], 0, "{answer}");
    }

    /// Messages waiting (or in flight) in `url`.
    async fn depth(&self, url: &str) -> u64 {
        let attributes = self
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap();
        [
            QueueAttributeName::ApproximateNumberOfMessages,
            QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
        ]
        .iter()
        .map(|name| attributes[name].parse::<u64>().unwrap())
        .sum()
    }

    /// Waits until `url` holds `count` messages.
    async fn wait_for_depth(&self, url: &str, count: u64, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.depth(url).await != count {
            assert!(
                Instant::now() < deadline,
                "{url} never held {count} messages (holds {})",
                self.depth(url).await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn settings(pipeline: &Pipeline) -> Vec<(&'static str, String)> {
    vec![
        (
            "BYOK_BROKER_BYOK_EVENTS_QUEUE_URL",
            pipeline.queue_url.clone(),
        ),
        (
            "BYOK_BROKER_BYOK_WATCH_INTERVAL_MS",
            WATCH_INTERVAL_MS.into(),
        ),
    ]
}

async fn start(pipeline: &Pipeline) -> TestBroker {
    let settings = settings(pipeline);
    let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    TestBroker::start_with("push", &settings).await
}

/// A tenant object under `org`'s CMK, read once so its DEK is hot in the cache: its path.
async fn hot_object(broker: &TestBroker, org: &str, key_arn: &str) -> String {
    let body = json!({"name": format!("{org}-secret"), "value": "v", "key_context": {"organization_id": org}});
    let created = broker.call("POST", "/vault/v1/kv", Some(&body)).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(created.body["key_id"], key_arn);
    let path = format!("/vault/v1/kv/{}", created.body["id"].as_str().unwrap());
    assert_eq!(broker.call("GET", &path, None).await.status, 200);
    path
}

/// Polls `path` until refused, for at most `limit`; when it was first refused and the answer.
async fn refused(broker: &TestBroker, path: &str, limit: Duration) -> (Instant, Value) {
    let deadline = Instant::now() + limit;
    loop {
        let read = broker.call("GET", path, None).await;
        if read.status != 200 {
            assert_eq!(read.status, 403, "{:?}", read.body);
            return (Instant::now(), read.body);
        }
        assert!(Instant::now() < deadline, "still served after {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn disable_in_tenant_account(key_arn: &str) {
    raw_kms(TENANT_ACCOUNT)
        .await
        .disable_key()
        .key_id(key_arn)
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_disable_key_event_revokes_within_a_second_and_enable_key_restores_after_a_check() {
    let pipeline = Pipeline::create("push-one").await;
    let broker = start(&pipeline).await;
    let (_, key_arn) = register(&broker, "org_push", TENANT_ACCOUNT).await;
    let path = hot_object(&broker, "org_push", &key_arn).await;

    // Ignored: a key no binding names, and a revocation of this key sent by another account.
    let unknown = create_key(TENANT_ACCOUNT).await;
    pipeline.put(TENANT_ACCOUNT, "DisableKey", &unknown).await;
    pipeline
        .put(OTHER_TENANT_ACCOUNT, "DisableKey", &key_arn)
        .await;
    pipeline
        .wait_for_depth(&pipeline.queue_url, 0, Duration::from_secs(10))
        .await;
    assert_eq!(broker.call("GET", &path, None).await.status, 200);
    assert_eq!(
        pipeline.depth(&pipeline.dlq_url).await,
        0,
        "handled, not dead"
    );

    disable_in_tenant_account(&key_arn).await;
    let put_at = Instant::now();
    pipeline.put(TENANT_ACCOUNT, "DisableKey", &key_arn).await;
    let (refused_at, body) = refused(&broker, &path, Duration::from_secs(5)).await;
    let latency = refused_at.saturating_duration_since(put_at);
    println!(
        "push revocation (one instance): refused {} ms after PutEvents",
        latency.as_millis()
    );
    assert_eq!(body["code"], "key_unavailable", "{body}");
    assert!(latency <= PUSH_BOUND, "refused after {latency:?}");
    broker.broker.dek_cache.run_pending_tasks().await;
    assert_eq!(
        broker.broker.dek_cache.stats().entries,
        0,
        "the hot DEK was purged"
    );

    // EnableKey restores only after the verification's round trip succeeds.
    raw_kms(TENANT_ACCOUNT)
        .await
        .enable_key()
        .key_id(&key_arn)
        .send()
        .await
        .unwrap();
    pipeline.put(TENANT_ACCOUNT, "EnableKey", &key_arn).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while broker.call("GET", &path, None).await.status != 200 {
        assert!(Instant::now() < deadline, "never restored");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_malformed_message_goes_to_the_dlq_and_the_consumer_keeps_revoking() {
    let pipeline = Pipeline::create("push-dlq").await;
    let broker = start(&pipeline).await;
    let (_, key_arn) = register(&broker, "org_dlq", TENANT_ACCOUNT).await;
    let path = hot_object(&broker, "org_dlq", &key_arn).await;

    for body in [
        "not an event",
        r#"{"source":"aws.kms","detail":{"eventName":"DisableKey"}}"#,
    ] {
        pipeline
            .sqs
            .send_message()
            .queue_url(&pipeline.queue_url)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }
    pipeline
        .wait_for_depth(&pipeline.dlq_url, 2, Duration::from_secs(15))
        .await;
    assert_eq!(broker.call("GET", &path, None).await.status, 200);

    // A PutKeyPolicy (or grant) event is checked with a round trip, not trusted: the key was
    // disabled without a DisableKey event, and the check finds it out.
    disable_in_tenant_account(&key_arn).await;
    let put_at = Instant::now();
    pipeline.put(TENANT_ACCOUNT, "PutKeyPolicy", &key_arn).await;
    let (refused_at, body) = refused(&broker, &path, Duration::from_secs(5)).await;
    println!(
        "push revocation after malformed messages (PutKeyPolicy check): refused {} ms after PutEvents",
        refused_at.saturating_duration_since(put_at).as_millis()
    );
    assert_eq!(body["code"], "key_unavailable", "{body}");
    assert!(refused_at.saturating_duration_since(put_at) <= PUSH_BOUND);
    pipeline
        .wait_for_depth(&pipeline.queue_url, 0, Duration::from_secs(5))
        .await;
}

#[tokio::test]
async fn with_two_instances_every_instance_refuses_within_a_second() {
    let pipeline = Pipeline::create("push-many").await;
    let settings = settings(&pipeline);
    let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let Some(instances) = Instances::spawn("push-many", 2, &settings).await else {
        return;
    };
    let ports = [instances.port(0), instances.port(1)];
    let key_arn = create_key(TENANT_ACCOUNT).await;
    let (status, registered) = request(
        ports[0],
        ADMIN_KEY,
        "POST",
        "/admin/v1/byok-keys",
        &registration("org_push_many", &key_arn, TENANT_ACCOUNT).to_string(),
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{registered}");
    let body =
        json!({"name": "s", "value": "v", "key_context": {"organization_id": "org_push_many"}});
    let (status, created) = request(ports[0], APP_KEY, "POST", "/vault/v1/kv", &body.to_string())
        .await
        .unwrap();
    assert_eq!(status, 201, "{created}");
    let path = format!("/vault/v1/kv/{}", created["id"].as_str().unwrap());
    // Both serve it (B once it learnt of the registration): its DEK is hot on both.
    for port in ports {
        let deadline = Instant::now() + Duration::from_secs(5);
        while request(port, APP_KEY, "GET", &path, "").await.unwrap().0 != 200 {
            assert!(Instant::now() < deadline, "never served on {port}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    disable_in_tenant_account(&key_arn).await;
    let put_at = Instant::now();
    pipeline.put(TENANT_ACCOUNT, "DisableKey", &key_arn).await;
    for port in ports {
        let deadline = put_at + Duration::from_secs(5);
        let (status, body) = loop {
            let (status, body) = request(port, APP_KEY, "GET", &path, "").await.unwrap();
            if status != 200 {
                break (status, body);
            }
            assert!(Instant::now() < deadline, "still served on {port}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let latency = put_at.elapsed();
        println!(
            "push revocation (instance on {port}): refused within {} ms of PutEvents",
            latency.as_millis()
        );
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("key_unavailable")),
            "{body}"
        );
        assert!(latency <= PUSH_BOUND, "port {port}: {latency:?}");
    }
}
