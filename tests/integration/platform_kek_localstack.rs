//! Platform KEKs against LocalStack: selector fields share one KMS key between contexts while the
//! whole context stays bound as encryption context, and a platform KEK disabled in AWS stops
//! serving its cached DEKs within the watcher's published bound, then recovers.

use crate::common;

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use byok_broker::data_key::DataKey;
use byok_broker::envelope::DataKeyBlob;
use common::broker::TestBroker;
use common::{PLATFORM_ACCOUNT, raw_kms};
use serde_json::{Value, json};

const WATCH_INTERVAL_MS: u64 = 1000;

/// The blob and the plaintext data key the broker issued for `context`.
async fn data_key_blob(broker: &TestBroker, context: &Value) -> (DataKeyBlob, DataKey) {
    let issued = broker
        .call(
            "POST",
            "/vault/v1/keys/data-key",
            Some(&json!({ "context": context })),
        )
        .await;
    assert_eq!(issued.status, 200, "{:?}", issued.body);
    let bytes = STANDARD
        .decode(issued.body["encrypted_keys"].as_str().expect("blob"))
        .expect("base64");
    let key = STANDARD
        .decode(issued.body["data_key"].as_str().expect("data key"))
        .expect("base64");
    let blob = DataKeyBlob::decode(&bytes).expect("blob decodes").blob;
    (blob, DataKey::from_vec(key).expect("32 bytes"))
}

#[tokio::test]
async fn selector_fields_share_one_kms_key_and_the_whole_context_stays_bound() {
    let broker = TestBroker::start_with(
        "selector",
        &[("BYOK_BROKER_PLATFORM_KEK_CONTEXT_FIELDS", "organization_id")],
    )
    .await;
    let pii = json!({"organization_id": "org_sel", "data_type": "pii"});
    let logs = json!({"organization_id": "org_sel", "data_type": "logs"});
    let (pii_blob, pii_key) = data_key_blob(&broker, &pii).await;
    let (logs_blob, _) = data_key_blob(&broker, &logs).await;
    let kek_id = pii_blob.entries[0].kek_id.clone();
    assert_eq!(kek_id, logs_blob.entries[0].kek_id, "one KMS key");
    assert_eq!(broker.kms.created_keys.lock().expect("lock").len(), 1);

    // In KMS itself: the DEK opens under its own full context and not under its sibling's.
    let kms = raw_kms(PLATFORM_ACCOUNT).await;
    let decrypt = |context: &DataKeyBlob| {
        let mut request =
            kms.decrypt()
                .key_id(&kek_id)
                .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(
                    pii_blob.entries[0].wrapped.clone(),
                ));
        for (name, value) in context.context.pairs() {
            request = request.encryption_context(name, value);
        }
        request.send()
    };
    assert!(decrypt(&pii_blob).await.is_ok());
    let wrong = decrypt(&logs_blob)
        .await
        .expect_err("wrong context refused");
    assert!(
        wrong
            .as_service_error()
            .is_some_and(|e| e.is_invalid_ciphertext_exception()),
        "{wrong:?}"
    );
    // Through the broker too: the pii blob relabelled with the logs context (and tagged with its
    // own DEK, as a client holding that DEK could) does not open: KMS binds the context.
    let forged = DataKeyBlob {
        dek_id: pii_blob.dek_id,
        context: logs_blob.context.clone(),
        entries: pii_blob.entries.clone(),
    };
    let opened = broker
        .call(
            "POST",
            "/vault/v1/keys/decrypt",
            Some(&json!({"keys": STANDARD.encode(forged.encode(&pii_key).expect("encodes"))})),
        )
        .await;
    assert_eq!(opened.status, 422, "{:?}", opened.body);
}

async fn create_object(broker: &TestBroker, name: &str, org: &str) -> (String, String) {
    let created = broker
        .call(
            "POST",
            "/vault/v1/kv",
            Some(&json!({"name": name, "value": name, "key_context": {"organization_id": org}})),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let path = format!("/vault/v1/kv/{}", created.body["id"].as_str().expect("id"));
    // Read once: the DEK is hot in the cache and could be served without asking KMS.
    assert_eq!(broker.call("GET", &path, None).await.status, 200);
    (
        path,
        created.body["key_id"].as_str().expect("kek").to_owned(),
    )
}

#[tokio::test]
async fn a_platform_kek_disabled_in_aws_stops_serving_cached_deks_within_the_bound() {
    let broker = TestBroker::start_with(
        "platform-watch",
        &[("BYOK_BROKER_BYOK_WATCH_INTERVAL_MS", "1000")],
    )
    .await;
    let (victim, kek_id) = create_object(&broker, "victim", "org_platform_victim").await;
    let (bystander, other_kek) = create_object(&broker, "bystander", "org_platform_other").await;
    assert_ne!(kek_id, other_kek);
    let kms = raw_kms(PLATFORM_ACCOUNT).await;

    let bystander_reads = async {
        let (mut reads, mut errors) = (0, 0);
        let deadline = Instant::now() + Duration::from_millis(2 * WATCH_INTERVAL_MS + 2500);
        while Instant::now() < deadline {
            reads += 1;
            if broker.call("GET", &bystander, None).await.status != 200 {
                errors += 1;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (reads, errors)
    };
    let revocation = async {
        kms.disable_key()
            .key_id(&kek_id)
            .send()
            .await
            .expect("disable");
        let disabled_at = Instant::now();
        loop {
            let read = broker.call("GET", &victim, None).await;
            if read.status == 403 {
                assert_eq!(read.body["code"], "key_unavailable");
                break disabled_at.elapsed();
            }
            assert_eq!(read.status, 200, "{:?}", read.body);
            assert!(
                disabled_at.elapsed() < Duration::from_secs(10),
                "cached DEKs of a disabled platform KEK kept being served"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let ((reads, errors), latency) = tokio::join!(bystander_reads, revocation);
    println!(
        "platform KEK revocation latency: {} ms (interval {WATCH_INTERVAL_MS} ms); bystander: {reads} reads, {errors} errors",
        latency.as_millis()
    );
    assert!(
        latency <= Duration::from_millis(WATCH_INTERVAL_MS + 1000),
        "revocation took {latency:?}"
    );
    assert_eq!(errors, 0, "other contexts are unaffected");

    kms.enable_key()
        .key_id(&kek_id)
        .send()
        .await
        .expect("enable");
    let enabled_at = Instant::now();
    while broker.call("GET", &victim, None).await.status != 200 {
        assert!(
            enabled_at.elapsed() < Duration::from_millis(WATCH_INTERVAL_MS + 2000),
            "not restored"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_rewrap_job_never_uses_a_platform_kek_the_watcher_marked_unusable() {
    // A long interval: the test runs the watcher's pass itself.
    let broker = TestBroker::start_with(
        "platform-rewrap",
        &[("BYOK_BROKER_BYOK_WATCH_INTERVAL_MS", "60000")],
    )
    .await;
    let (_, kek_id) = create_object(&broker, "onboard-me", "org_platform_rewrap").await;
    // Onboarding: the context now resolves to a tenant CMK, the object is still under its KEK.
    common::broker::register(&broker, "org_platform_rewrap", common::TENANT_ACCOUNT).await;
    raw_kms(PLATFORM_ACCOUNT)
        .await
        .disable_key()
        .key_id(&kek_id)
        .send()
        .await
        .expect("disable");
    assert!(broker.broker.byok.check_platform_keks(4).await.checked >= 1);

    let decrypts = broker.kms.decrypt_calls();
    let started = common::broker::admin(
        &broker,
        "POST",
        "/admin/v1/rewrap-jobs",
        Some(&json!({"source": {"kek_id": kek_id}})),
    )
    .await;
    assert_eq!(started.status, 202, "{:?}", started.body);
    let path = format!(
        "/admin/v1/rewrap-jobs/{}",
        started.body["id"].as_str().expect("job id")
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let status = common::broker::admin(&broker, "GET", &path, None)
            .await
            .body;
        if status["state"] != "running" {
            break status;
        }
        assert!(Instant::now() < deadline, "the job never ended: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        status["failures"],
        json!([{"reason": "key_unavailable", "objects": 1}]),
        "{status}"
    );
    assert_eq!(
        broker.kms.decrypt_calls(),
        decrypts,
        "the keyring refused the marked KEK before any KMS call"
    );
}
