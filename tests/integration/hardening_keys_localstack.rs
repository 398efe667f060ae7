//! Issue 9 (points 1, 3, 10) against LocalStack, end to end: a blob or a stored row naming a KEK
//! the broker does not hold for its context is refused before any KMS data-plane call, with one
//! answer whatever that key is; a rolled-back version row or a relabelled blob never opens; a
//! malformed region in a KEK ARN is the caller's error, never a 500.

use crate::common;

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use byok_broker::error::Error;
use byok_broker::kms::{KekRef, KeyProvider};
use common::broker::{HttpResponse, TestBroker, admin, register};
use common::database;
use common::{PLATFORM_ACCOUNT, TENANT_ACCOUNT, broker_kms, context, create_key, raw_kms};
use serde_json::{Value, json};

/// Issues a data key for `org` and returns its `encrypted_keys`.
async fn data_key(broker: &TestBroker, org: &str) -> String {
    let response = broker
        .call(
            "POST",
            "/vault/v1/keys/data-key",
            Some(&json!({"context": {"organization_id": org}})),
        )
        .await;
    assert_eq!(response.status, 200, "{:?}", response.body);
    response.body["encrypted_keys"].as_str().unwrap().to_owned()
}

/// The first (KEK id, wrapped DEK) entry of a blob the broker issued (format: magic, version,
/// DEK id, u32-length context, entry count, then u16-length KEK id and wrapped DEK per entry).
fn first_entry(blob_b64: &str) -> (String, Vec<u8>) {
    let bytes = STANDARD.decode(blob_b64).unwrap();
    let context_len = u32::from_be_bytes(bytes[21..25].try_into().unwrap()) as usize;
    let mut at = 25 + context_len + 1;
    let mut short = |bytes: &[u8]| {
        let len = u16::from_be_bytes(bytes[at..at + 2].try_into().unwrap()) as usize;
        let field = bytes[at + 2..at + 2 + len].to_vec();
        at += 2 + len;
        field
    };
    let kek_id = String::from_utf8(short(&bytes)).unwrap();
    (kek_id, short(&bytes))
}

/// A blob as an attacker writes it by hand: the legacy (v1) layout, which carries no tag.
fn legacy_blob(org: &str, kek_id: &str, wrapped: &[u8]) -> String {
    let canonical = context(&[("organization_id", org)]).canonical_bytes();
    let mut out = b"BBEK\x01".to_vec();
    out.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    out.extend_from_slice(&(canonical.len() as u32).to_be_bytes());
    out.extend_from_slice(&canonical);
    out.push(1);
    out.extend_from_slice(&(kek_id.len() as u16).to_be_bytes());
    out.extend_from_slice(kek_id.as_bytes());
    out.extend_from_slice(&(wrapped.len() as u16).to_be_bytes());
    out.extend_from_slice(wrapped);
    STANDARD.encode(out)
}

fn answer(response: &HttpResponse) -> (u16, Value, Value) {
    (
        response.status,
        response.body["code"].clone(),
        response.body["message"].clone(),
    )
}

async fn decrypt(broker: &TestBroker, blob: &str) -> HttpResponse {
    broker
        .call(
            "POST",
            "/vault/v1/keys/decrypt",
            Some(&json!({"keys": blob})),
        )
        .await
}

async fn rekey(broker: &TestBroker, blob: &str) -> HttpResponse {
    let body =
        json!({"context": {"organization_id": "org_a", "data_type": "x"}, "encrypted_keys": blob});
    broker
        .call("POST", "/vault/v1/keys/rekey", Some(&body))
        .await
}

#[tokio::test]
async fn blobs_naming_a_kek_not_held_for_their_context_are_refused_alike_before_any_kms_call() {
    let broker = TestBroker::start("foreign-kek").await;
    let (org_b_id, org_b_cmk) = register(&broker, "org_b", TENANT_ACCOUNT).await;
    let own_blob = data_key(&broker, "org_a").await;
    let (_, org_b_wrapped) = first_entry(&data_key(&broker, "org_b").await);
    let (org_c_platform_kek, org_c_wrapped) = first_entry(&data_key(&broker, "org_c").await);

    // A data key another system made under some other key in the broker's account, bound to
    // org_a's context: today the broker opens it for anyone who may use org_a.
    let stray_key = create_key(PLATFORM_ACCOUNT).await;
    let stray = raw_kms(PLATFORM_ACCOUNT)
        .await
        .generate_data_key()
        .key_id(&stray_key)
        .number_of_bytes(32)
        .encryption_context("organization_id", "org_a")
        .send()
        .await
        .unwrap();
    let stray_wrapped = stray.ciphertext_blob().unwrap().as_ref().to_vec();

    let foreign = vec![
        (
            "another tenant's CMK",
            legacy_blob("org_a", &org_b_cmk, &org_b_wrapped),
        ),
        (
            "a stray key in the broker's account",
            legacy_blob("org_a", &stray_key, &stray_wrapped),
        ),
        (
            "another context's platform KEK",
            legacy_blob("org_a", &org_c_platform_kek, &org_c_wrapped),
        ),
        ("garbage", legacy_blob("org_a", "not-a-key", &[7; 64])),
        (
            "a region with spaces",
            legacy_blob(
                "org_a",
                "arn:aws:kms:us east 1:000000000000:key/5d1b",
                &[7; 64],
            ),
        ),
        (
            "a region with a comma",
            legacy_blob(
                "org_a",
                "arn:aws:kms:us,east-1:000000000000:key/5d1b",
                &[7; 64],
            ),
        ),
        (
            "a region with a slash",
            legacy_blob(
                "org_a",
                "arn:aws:kms:us-east-1/x:000000000000:key/5d1b",
                &[7; 64],
            ),
        ),
    ];
    let decrypts_before = broker.kms.decrypt_calls();
    let expected = answer(&decrypt(&broker, &foreign[0].1).await);
    assert_eq!(expected.0, 422, "{expected:?}");
    for (what, blob) in &foreign {
        assert_eq!(
            answer(&decrypt(&broker, blob).await),
            expected,
            "decrypt, {what}"
        );
        assert_eq!(
            answer(&rekey(&broker, blob).await),
            expected,
            "rekey, {what}"
        );
    }
    // Disabling org_b (in the broker, then in AWS) changes nothing an org_a caller can observe.
    assert_eq!(
        admin(
            &broker,
            "POST",
            &format!("/admin/v1/byok-keys/{org_b_id}/disable"),
            None
        )
        .await
        .status,
        200
    );
    assert_eq!(
        answer(&decrypt(&broker, &foreign[0].1).await),
        expected,
        "org_b disabled in the broker"
    );
    assert_eq!(
        broker.kms.decrypt_calls(),
        decrypts_before,
        "no refused blob reached KMS Decrypt"
    );
    assert_eq!(
        admin(
            &broker,
            "POST",
            &format!("/admin/v1/byok-keys/{org_b_id}/enable"),
            None
        )
        .await
        .status,
        200
    );
    // Enabling verifies org_b's CMK again (a Decrypt of the admin's own): count from here.
    let decrypts_before = broker.kms.decrypt_calls();
    raw_kms(TENANT_ACCOUNT)
        .await
        .disable_key()
        .key_id(&org_b_cmk)
        .send()
        .await
        .unwrap();
    assert_eq!(
        answer(&decrypt(&broker, &foreign[0].1).await),
        expected,
        "org_b disabled in AWS"
    );
    assert_eq!(
        broker.kms.decrypt_calls(),
        decrypts_before,
        "no refused blob reached KMS Decrypt"
    );

    assert_eq!(
        decrypt(&broker, &own_blob).await.status,
        200,
        "a genuine blob still opens"
    );
    assert_eq!(
        rekey(&broker, &own_blob).await.status,
        200,
        "and still rekeys"
    );
}

#[tokio::test]
async fn a_retired_and_deleted_byok_keys_blobs_no_longer_open_with_the_brokers_identity() {
    let broker = TestBroker::start("deleted-byok").await;
    let (id, _) = register(&broker, "org_d", TENANT_ACCOUNT).await;
    let blob = data_key(&broker, "org_d").await;
    assert_eq!(
        admin(
            &broker,
            "POST",
            &format!("/admin/v1/byok-keys/{id}/retire"),
            None
        )
        .await
        .status,
        200
    );
    assert_eq!(
        decrypt(&broker, &blob).await.status,
        200,
        "a retired key's CMK still opens its blobs"
    );
    assert_eq!(
        admin(
            &broker,
            "DELETE",
            &format!("/admin/v1/byok-keys/{id}"),
            None
        )
        .await
        .status,
        200
    );
    let decrypts_before = broker.kms.decrypt_calls();
    let refused = decrypt(&broker, &blob).await;
    assert_eq!(
        (refused.status, refused.body["code"].as_str()),
        (422, Some("invalid_encrypted_keys")),
        "{:?}",
        refused.body
    );
    assert_eq!(broker.kms.decrypt_calls(), decrypts_before);
}

/// Runs one statement on the broker's database (SQLite or PostgreSQL) that must change one row.
async fn sql(data_dir: &Path, statement: &str, params: &[&str]) {
    assert_eq!(
        database::execute(data_dir, statement, params).await,
        1,
        "{statement}"
    );
}

async fn create(broker: &TestBroker, name: &str, org: &str, value: &str) -> String {
    let body = json!({"name": name, "value": value, "key_context": {"organization_id": org}});
    let response = broker.call("POST", "/vault/v1/kv", Some(&body)).await;
    assert_eq!(response.status, 201, "{:?}", response.body);
    response.body["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_stored_row_redirected_to_another_tenants_cmk_is_refused_before_any_kms_call() {
    let broker = TestBroker::start("redirect-row").await;
    register(&broker, "org_b", TENANT_ACCOUNT).await;
    let victim = create(&broker, "victim", "org_a", "a's value").await;
    let other = create(&broker, "other", "org_b", "b's value").await;
    // A database writer points org_a's object at org_b's CMK (org_b's sealed value and KEK id).
    sql(
        &broker.data_dir,
        "UPDATE versions SET sealed = (SELECT v.sealed FROM versions v JOIN objects o ON o.current_version = v.id WHERE o.id = $1), \
         kek_id = (SELECT v.kek_id FROM versions v JOIN objects o ON o.current_version = v.id WHERE o.id = $1) \
         WHERE id = (SELECT current_version FROM objects WHERE id = $2)",
        &[&other, &victim],
    )
    .await;
    let decrypts_before = broker.kms.decrypt_calls();
    let read = broker
        .call("GET", &format!("/vault/v1/kv/{victim}"), None)
        .await;
    assert_eq!(
        (read.status, read.body["code"].as_str()),
        (500, Some("internal_error")),
        "{:?}",
        read.body
    );
    assert_eq!(
        broker.kms.decrypt_calls(),
        decrypts_before,
        "org_b's CMK was not asked"
    );
}

#[tokio::test]
async fn an_older_versions_sealed_value_copied_over_the_current_row_does_not_open() {
    let broker = TestBroker::start("rollback").await;
    let id = create(&broker, "rolled", "org_a", "first value").await;
    let updated = broker
        .call(
            "PUT",
            &format!("/vault/v1/kv/{id}"),
            Some(&json!({"value": "second value"})),
        )
        .await;
    assert_eq!(updated.status, 201, "{:?}", updated.body);
    sql(
        &broker.data_dir,
        "UPDATE versions SET sealed = (SELECT sealed FROM versions WHERE object_id = $1 AND seq = (SELECT MIN(seq) FROM versions WHERE object_id = $1)), \
         kek_id = (SELECT kek_id FROM versions WHERE object_id = $1 AND seq = (SELECT MIN(seq) FROM versions WHERE object_id = $1)) \
         WHERE id = (SELECT current_version FROM objects WHERE id = $1)",
        &[&id],
    )
    .await;
    let read = broker
        .call("GET", &format!("/vault/v1/kv/{id}"), None)
        .await;
    assert_eq!(
        (read.status, read.body["code"].as_str()),
        (500, Some("internal_error")),
        "the old value must not be served as current: {:?}",
        read.body
    );
}

#[tokio::test]
async fn a_blob_with_a_relabelled_id_or_a_spliced_entry_does_not_open() {
    let broker = TestBroker::start("relabel").await;
    let blob = STANDARD.decode(data_key(&broker, "org_a").await).unwrap();
    let mut relabelled = blob.clone();
    relabelled[5..21].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    let response = decrypt(&broker, &STANDARD.encode(&relabelled)).await;
    assert_eq!(
        (response.status, response.body["code"].as_str()),
        (422, Some("invalid_encrypted_keys")),
        "a blob's id is bound to its DEK: {:?}",
        response.body
    );

    // The same context's second data key, spliced under the first one's id.
    let second = STANDARD.decode(data_key(&broker, "org_a").await).unwrap();
    let mut spliced = second.clone();
    spliced[5..21].copy_from_slice(&blob[5..21]);
    let response = decrypt(&broker, &STANDARD.encode(&spliced)).await;
    assert_eq!(response.status, 422, "{:?}", response.body);
}

#[tokio::test]
async fn a_malformed_region_in_a_kek_arn_is_an_invalid_input_error() {
    let kms = broker_kms().await;
    let ctx = context(&[("organization_id", "org_a")]);
    for region in ["us east 1", "us,east-1", "us-east-1/x", "-us-east-1"] {
        let kek = KekRef::platform(format!("arn:aws:kms:{region}:000000000000:key/5d1b"));
        for e in [
            kms.decrypt(&kek, &[7; 64], &ctx).await.err(),
            kms.generate_data_key(&kek, &ctx).await.err(),
        ] {
            let e = e.expect("a malformed region never succeeds");
            let (status, code) = Error::from_kms(e.clone()).status_and_code();
            assert_eq!(
                (status.as_u16(), code),
                (422, "invalid_key_id"),
                "{region:?}: {e}"
            );
        }
    }
}

/// A format 2 blob rewritten as format 1: version byte 1, the tag cut off, a forged DEK id.
fn downgraded(blob: &[u8], forged_id: uuid::Uuid) -> String {
    let mut legacy = blob[..blob.len() - 32].to_vec();
    legacy[4] = 1;
    legacy[5..21].copy_from_slice(forged_id.as_bytes());
    STANDARD.encode(legacy)
}

#[tokio::test]
async fn a_tagged_blob_downgraded_to_format_1_gets_no_vouched_id_and_can_be_refused() {
    let forged = uuid::Uuid::new_v4();
    let broker = TestBroker::start("downgrade").await;
    let blob = STANDARD.decode(data_key(&broker, "org_a").await).unwrap();
    let legacy = downgraded(&blob, forged);
    // Accepted by default (format 1 blobs from earlier releases keep working), but rekey issues
    // a fresh id instead of writing the forged one into a tagged blob.
    let opened = decrypt(&broker, &legacy).await;
    assert_eq!(opened.status, 200, "{:?}", opened.body);
    let rekeyed = rekey(&broker, &legacy).await;
    assert_eq!(rekeyed.status, 200, "{:?}", rekeyed.body);
    let new_id = rekeyed.body["id"].as_str().expect("id");
    assert_ne!(new_id, forged.to_string(), "rekey vouched for a forged id");

    // With format 1 turned off, the downgrade is refused before any KMS call.
    let strict = TestBroker::start_with(
        "downgrade-strict",
        &[("BYOK_BROKER_ACCEPT_LEGACY_DATA_KEY_BLOBS", "false")],
    )
    .await;
    let blob = STANDARD.decode(data_key(&strict, "org_a").await).unwrap();
    let calls = strict.kms.decrypt_calls();
    let refused = decrypt(&strict, &downgraded(&blob, forged)).await;
    assert_eq!(
        (refused.status, refused.body["code"].as_str()),
        (422, Some("invalid_encrypted_keys")),
        "{:?}",
        refused.body
    );
    assert_eq!(
        strict.kms.decrypt_calls(),
        calls,
        "no KMS call for a refused blob"
    );
    let fresh = data_key(&strict, "org_a").await;
    assert_eq!(decrypt(&strict, &fresh).await.status, 200);
}
