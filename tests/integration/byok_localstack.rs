//! BYOK against LocalStack, end to end over HTTP: registration (good key, disabled key, wrong spec,
//! unknown key, bad role), routing and fail-closed behaviour, admin disable, AWS-side disable with
//! the measured revocation bound, recovery, rotation, deletion, and isolation of other tenants.

use crate::common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::broker::{TestBroker, admin, register};
use common::{OTHER_TENANT_ACCOUNT, TENANT_ACCOUNT, create_key, raw_kms, registration};
use serde_json::{Value, json};

const WATCH_INTERVAL_MS: u64 = 1000;

async fn create_object(broker: &TestBroker, name: &str, context: Value) -> Value {
    let response = broker
        .call(
            "POST",
            "/vault/v1/kv",
            Some(
                &json!({"name": name, "value": format!("value of {name}"), "key_context": context}),
            ),
        )
        .await;
    assert_eq!(response.status, 201, "{:?}", response.body);
    response.body
}

async fn start() -> TestBroker {
    TestBroker::start_with("byok", &[("BYOK_BROKER_BYOK_WATCH_INTERVAL_MS", "1000")]).await
}

#[tokio::test]
async fn registration_verifies_the_key_before_saving_it() {
    let broker = start().await;
    let (id, key_arn) = register(&broker, "org_reg", TENANT_ACCOUNT).await;
    let shown = admin(&broker, "GET", &format!("/admin/v1/byok-keys/{id}"), None).await;
    let generated = admin(&broker, "GET", "/admin/v1/byok-external-ids/org_reg", None).await;
    assert_eq!(
        (
            shown.body["key_arn"].as_str(),
            shown.body["external_id"].as_str()
        ),
        (
            Some(key_arn.as_str()),
            generated.body["external_id"].as_str()
        )
    );

    let duplicate = admin(
        &broker,
        "POST",
        "/admin/v1/byok-keys",
        Some(&registration(
            "org_reg",
            &create_key(TENANT_ACCOUNT).await,
            TENANT_ACCOUNT,
        )),
    )
    .await;
    assert_eq!(
        (duplicate.status, duplicate.body["code"].as_str()),
        (409, Some("already_exists"))
    );
    // Two equally specific, overlapping match contexts: routing could not choose.
    let mut pii = registration("org_amb", &create_key(TENANT_ACCOUNT).await, TENANT_ACCOUNT);
    pii["match_context"] = json!({"organization_id": "org_amb", "data_type": "pii"});
    let pii = admin(&broker, "POST", "/admin/v1/byok-keys", Some(&pii)).await;
    assert_eq!(pii.status, 201, "{:?}", pii.body);
    let mut ambiguous = registration("x", &create_key(TENANT_ACCOUNT).await, TENANT_ACCOUNT);
    ambiguous["match_context"] = json!({"organization_id": "org_amb", "region": "eu"});
    let ambiguous = admin(&broker, "POST", "/admin/v1/byok-keys", Some(&ambiguous)).await;
    assert_eq!(
        (ambiguous.status, ambiguous.body["code"].as_str()),
        (409, Some("ambiguous_match_context"))
    );

    let disabled_key = create_key(TENANT_ACCOUNT).await;
    raw_kms(TENANT_ACCOUNT)
        .await
        .disable_key()
        .key_id(&disabled_key)
        .send()
        .await
        .unwrap();
    let signing_key = raw_kms(TENANT_ACCOUNT)
        .await
        .create_key()
        .key_spec(aws_sdk_kms::types::KeySpec::Rsa2048)
        .key_usage(aws_sdk_kms::types::KeyUsageType::SignVerify)
        .send()
        .await
        .unwrap()
        .key_metadata()
        .unwrap()
        .arn()
        .unwrap()
        .to_owned();
    let unknown = format!(
        "arn:aws:kms:us-east-1:{TENANT_ACCOUNT}:key/{}",
        uuid::Uuid::new_v4()
    );
    for (org, key, reason) in [
        ("org_d", disabled_key.as_str(), "key_disabled"),
        ("org_s", signing_key.as_str(), "wrong_key_spec"),
        ("org_u", unknown.as_str(), "key_not_found"),
    ] {
        let response = admin(
            &broker,
            "POST",
            "/admin/v1/byok-keys",
            Some(&registration(org, key, TENANT_ACCOUNT)),
        )
        .await;
        assert_eq!(
            (response.status, response.body["code"].as_str()),
            (422, Some("byok_verification_failed")),
            "{org}: {:?}",
            response.body
        );
        assert!(
            response.body["message"].as_str().unwrap().contains(reason),
            "{org}: {:?}",
            response.body
        );
    }
    let mut bad_role = registration("org_r", &create_key(TENANT_ACCOUNT).await, TENANT_ACCOUNT);
    bad_role["role_arn"] = json!("not-an-arn");
    let response = admin(&broker, "POST", "/admin/v1/byok-keys", Some(&bad_role)).await;
    assert_eq!(
        (response.status, response.body["code"].as_str()),
        (422, Some("invalid_role_arn"))
    );
    let mut alias = registration("org_a", "alias/tenant-key", TENANT_ACCOUNT);
    alias["key_arn"] = json!("alias/tenant-key");
    assert_eq!(
        admin(&broker, "POST", "/admin/v1/byok-keys", Some(&alias))
            .await
            .body["code"],
        "invalid_key_arn"
    );

    let events = admin(
        &broker,
        "GET",
        "/admin/v1/events?events=vault.byok_key.verification_completed&limit=100",
        None,
    )
    .await;
    let verdicts: Vec<bool> = events.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"]["verified"].as_bool().unwrap())
        .collect();
    assert!(
        verdicts.contains(&true) && verdicts.iter().filter(|v| !**v).count() >= 3,
        "{verdicts:?}"
    );
    let listed = admin(&broker, "GET", "/admin/v1/byok-keys", None).await;
    assert_eq!(
        listed.body["data"].as_array().unwrap().len(),
        2,
        "failed registrations are not saved"
    );
}

#[tokio::test]
async fn covered_contexts_use_the_cmk_and_fail_closed_when_disabled_by_an_admin() {
    let broker = start().await;
    let (id, key_arn) = register(&broker, "org_acme", TENANT_ACCOUNT).await;
    let acme = create_object(
        &broker,
        "acme-1",
        json!({"organization_id": "org_acme", "data_type": "pii"}),
    )
    .await;
    assert_eq!(
        acme["key_id"],
        key_arn.as_str(),
        "a covered context uses the tenant CMK"
    );
    let globex = create_object(
        &broker,
        "globex-1",
        json!({"organization_id": "org_globex"}),
    )
    .await;
    assert_ne!(globex["key_id"], key_arn.as_str());
    let acme_path = format!("/vault/v1/kv/{}", acme["id"].as_str().unwrap());
    let globex_path = format!("/vault/v1/kv/{}", globex["id"].as_str().unwrap());
    assert_eq!(broker.call("GET", &acme_path, None).await.status, 200);
    assert_eq!(broker.call("GET", &globex_path, None).await.status, 200);
    broker.broker.dek_cache.run_pending_tasks().await;
    assert_eq!(
        broker.broker.dek_cache.stats().entries,
        2,
        "both DEKs are cached"
    );

    let disabled = admin(
        &broker,
        "POST",
        &format!("/admin/v1/byok-keys/{id}/disable"),
        None,
    )
    .await;
    assert_eq!(
        (disabled.status, disabled.body["state"].as_str()),
        (200, Some("disabled"))
    );
    let kms_before =
        broker.kms.decrypts.load(Ordering::SeqCst) + broker.kms.generates.load(Ordering::SeqCst);
    let read = broker.call("GET", &acme_path, None).await;
    assert_eq!(
        (read.status, read.body["code"].as_str()),
        (403, Some("key_revoked"))
    );
    let write = broker.call("POST", "/vault/v1/kv", Some(&json!({"name": "acme-2", "value": "v", "key_context": {"organization_id": "org_acme"}}))).await;
    assert_eq!(
        (write.status, write.body["code"].as_str()),
        (403, Some("key_revoked")),
        "never a platform KEK for a covered context"
    );
    let data_key = broker
        .call(
            "POST",
            "/vault/v1/keys/data-key",
            Some(&json!({"context": {"organization_id": "org_acme"}})),
        )
        .await;
    assert_eq!(data_key.status, 403);
    assert_eq!(
        broker.kms.decrypts.load(Ordering::SeqCst) + broker.kms.generates.load(Ordering::SeqCst),
        kms_before,
        "refused with no KMS call"
    );
    broker.broker.dek_cache.run_pending_tasks().await;
    assert_eq!(
        broker.broker.dek_cache.stats().entries,
        1,
        "only the other tenant's DEK stays cached"
    );
    assert_eq!(
        broker.call("GET", &globex_path, None).await.status,
        200,
        "other tenants are unaffected"
    );

    let enabled = admin(
        &broker,
        "POST",
        &format!("/admin/v1/byok-keys/{id}/enable"),
        None,
    )
    .await;
    assert_eq!(
        (enabled.status, enabled.body["state"].as_str()),
        (200, Some("active"))
    );
    assert_eq!(broker.call("GET", &acme_path, None).await.status, 200);
}

#[tokio::test]
async fn disable_in_aws_is_enforced_within_the_published_bound_and_recovers() {
    let broker = start().await;
    let (id, key_arn) = register(&broker, "org_revoke", TENANT_ACCOUNT).await;
    let (_, other_arn) = register(&broker, "org_bystander", OTHER_TENANT_ACCOUNT).await;
    let victim = create_object(&broker, "victim", json!({"organization_id": "org_revoke"})).await;
    let bystander = create_object(
        &broker,
        "bystander",
        json!({"organization_id": "org_bystander"}),
    )
    .await;
    assert_eq!(bystander["key_id"], other_arn.as_str());
    let victim_path = format!("/vault/v1/kv/{}", victim["id"].as_str().unwrap());
    let bystander_path = format!("/vault/v1/kv/{}", bystander["id"].as_str().unwrap());
    // Both DEKs are hot in the cache: the broker could serve reads without asking KMS.
    assert_eq!(broker.call("GET", &victim_path, None).await.status, 200);
    assert_eq!(broker.call("GET", &bystander_path, None).await.status, 200);

    let bystander_reads = async {
        let mut errors = 0;
        let mut reads = 0;
        let deadline = Instant::now() + Duration::from_millis(2 * WATCH_INTERVAL_MS + 2500);
        while Instant::now() < deadline {
            reads += 1;
            if broker.call("GET", &bystander_path, None).await.status != 200 {
                errors += 1;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (reads, errors)
    };
    let revocation = async {
        // The tenant disables its CMK in its own account.
        raw_kms(TENANT_ACCOUNT)
            .await
            .disable_key()
            .key_id(&key_arn)
            .send()
            .await
            .unwrap();
        let disabled_at = Instant::now();
        loop {
            let read = broker.call("GET", &victim_path, None).await;
            if read.status == 403 {
                assert_eq!(read.body["code"], "key_unavailable");
                break disabled_at.elapsed();
            }
            assert_eq!(read.status, 200, "{:?}", read.body);
            assert!(
                disabled_at.elapsed() < Duration::from_secs(10),
                "never revoked"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let ((reads, errors), latency) = tokio::join!(bystander_reads, revocation);
    println!(
        "observed revocation latency: {} ms (watcher interval {WATCH_INTERVAL_MS} ms, bound {} ms); bystander: {reads} reads, {errors} errors",
        latency.as_millis(),
        WATCH_INTERVAL_MS + 1000
    );
    assert!(
        latency <= Duration::from_millis(WATCH_INTERVAL_MS + 1000),
        "revocation took {latency:?}"
    );
    assert_eq!(errors, 0, "other tenants see zero errors");
    let shown = admin(&broker, "GET", &format!("/admin/v1/byok-keys/{id}"), None).await;
    assert_eq!(
        (shown.body["state"].as_str(), shown.body["reason"].as_str()),
        (Some("unavailable"), Some("key_disabled"))
    );
    let events = admin(
        &broker,
        "GET",
        "/admin/v1/events?events=vault.byok_key.state_changed",
        None,
    )
    .await;
    assert_eq!(events.body["data"][0]["data"]["state"], "unavailable");

    // The tenant enables its key again: the watcher restores service by itself.
    raw_kms(TENANT_ACCOUNT)
        .await
        .enable_key()
        .key_id(&key_arn)
        .send()
        .await
        .unwrap();
    let enabled_at = Instant::now();
    while broker.call("GET", &victim_path, None).await.status != 200 {
        assert!(
            enabled_at.elapsed() < Duration::from_millis(WATCH_INTERVAL_MS + 2000),
            "not restored"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "observed recovery latency: {} ms",
        enabled_at.elapsed().as_millis()
    );
    let metrics = admin(&broker, "GET", "/admin/v1/metrics", None).await;
    let text = metrics.body.as_str().unwrap_or_default().to_owned();
    assert!(
        text.contains("byok_broker_revocations_total{cause=\"kms\"} 1"),
        "{text}"
    );
    assert!(text.contains(&format!("byok_broker_kms_calls_total{{account=\"{TENANT_ACCOUNT}\",operation=\"describe\",outcome=\"ok\"}}")), "{text}");
}

#[tokio::test]
async fn rotation_onboarding_counts_and_deletion() {
    let broker = start().await;
    // Objects exist under the platform KEK before the tenant turns BYOK on.
    let legacy = create_object(&broker, "legacy", json!({"organization_id": "org_rotate"})).await;
    let platform_kek = legacy["key_id"].as_str().unwrap().to_owned();
    let (id, key_a) = register(&broker, "org_rotate", TENANT_ACCOUNT).await;
    let shown = admin(&broker, "GET", &format!("/admin/v1/byok-keys/{id}"), None).await;
    assert_eq!(
        shown.body["objects_under_other_keys"], 1,
        "the admin API reports objects still under the platform KEK"
    );
    let under_a = create_object(&broker, "under-a", json!({"organization_id": "org_rotate"})).await;
    assert_eq!(under_a["key_id"], key_a.as_str());
    assert_eq!(
        broker
            .call(
                "GET",
                &format!("/vault/v1/kv/{}", legacy["id"].as_str().unwrap()),
                None
            )
            .await
            .status,
        200,
        "legacy objects stay readable until rewrapped"
    );
    assert_ne!(platform_kek, key_a);

    let key_b = create_key(TENANT_ACCOUNT).await;
    let rotated = admin(&broker, "PUT", &format!("/admin/v1/byok-keys/{id}"), Some(&json!({"key_arn": key_b, "role_arn": format!("arn:aws:iam::{TENANT_ACCOUNT}:role/byok-broker-access")}))).await;
    assert_eq!(rotated.status, 200, "{:?}", rotated.body);
    assert_eq!(rotated.body["key_arn"], key_b.as_str());
    let under_b = create_object(&broker, "under-b", json!({"organization_id": "org_rotate"})).await;
    assert_eq!(
        under_b["key_id"],
        key_b.as_str(),
        "new writes use the new CMK at once"
    );
    let old = broker
        .call(
            "GET",
            &format!("/vault/v1/kv/{}", under_a["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(
        (old.status, old.body["value"].as_str()),
        (200, Some("value of under-a")),
        "old objects read through the old CMK"
    );
    let keks = admin(&broker, "GET", &format!("/admin/v1/byok-keys/{id}"), None)
        .await
        .body["keks"]
        .clone();
    let count = |arn: &str| {
        keks.as_array()
            .unwrap()
            .iter()
            .find(|k| k["key_arn"] == arn)
            .unwrap()["objects"]
            .as_u64()
            .unwrap()
    };
    assert_eq!((count(&key_a), count(&key_b)), (1, 1));

    let refused = admin(
        &broker,
        "DELETE",
        &format!("/admin/v1/byok-keys/{id}"),
        None,
    )
    .await;
    assert_eq!(
        (refused.status, refused.body["code"].as_str()),
        (409, Some("key_in_use"))
    );
    for object in [&under_a, &under_b] {
        assert_eq!(
            broker
                .call(
                    "DELETE",
                    &format!("/vault/v1/kv/{}", object["id"].as_str().unwrap()),
                    None
                )
                .await
                .status,
            200
        );
    }
    let deleted = admin(
        &broker,
        "DELETE",
        &format!("/admin/v1/byok-keys/{id}"),
        None,
    )
    .await;
    assert_eq!(deleted.status, 200, "{:?}", deleted.body);
    let after = create_object(&broker, "after", json!({"organization_id": "org_rotate"})).await;
    assert_eq!(
        after["key_id"],
        platform_kek.as_str(),
        "with BYOK off the context is back on its platform KEK"
    );
}

#[tokio::test]
async fn a_revoked_answer_met_by_a_request_locks_the_key_at_once() {
    // The watcher is slow here (60 s): only the request path can notice the revocation.
    let broker = TestBroker::start_with(
        "byok-request",
        &[("BYOK_BROKER_BYOK_WATCH_INTERVAL_MS", "60000")],
    )
    .await;
    let (id, key_arn) = register(&broker, "org_fast", TENANT_ACCOUNT).await;
    let hot = create_object(&broker, "hot", json!({"organization_id": "org_fast"})).await;
    let cold = create_object(&broker, "cold", json!({"organization_id": "org_fast"})).await;
    let hot_path = format!("/vault/v1/kv/{}", hot["id"].as_str().unwrap());
    let cold_path = format!("/vault/v1/kv/{}", cold["id"].as_str().unwrap());
    assert_eq!(
        broker.call("GET", &hot_path, None).await.status,
        200,
        "the hot object's DEK is now cached"
    );

    raw_kms(TENANT_ACCOUNT)
        .await
        .disable_key()
        .key_id(&key_arn)
        .send()
        .await
        .unwrap();
    let cold_read = broker.call("GET", &cold_path, None).await;
    assert_eq!(
        (cold_read.status, cold_read.body["code"].as_str()),
        (403, Some("key_unavailable")),
        "KMS refused the uncached DEK"
    );
    let decrypts = broker.kms.decrypts.load(Ordering::SeqCst);
    let hot_read = broker.call("GET", &hot_path, None).await;
    assert_eq!(
        hot_read.status, 403,
        "the cached DEK is refused too, without waiting for the watcher"
    );
    assert_eq!(
        broker.kms.decrypts.load(Ordering::SeqCst),
        decrypts,
        "and without a KMS call"
    );
    let shown = admin(&broker, "GET", &format!("/admin/v1/byok-keys/{id}"), None).await;
    assert_eq!(
        (shown.body["state"].as_str(), shown.body["reason"].as_str()),
        (Some("unavailable"), Some("key_disabled"))
    );
}
