//! The embedded local provider honours the same contract as AWS KMS: context binding, key pinning,
//! disabled keys refused, and alias creation that converges across processes sharing a directory.

use std::path::PathBuf;
use std::sync::Arc;

use byok_broker::context::KeyContext;
use byok_broker::keyring::Keyring;
use byok_broker::kms::local::LocalKms;
use byok_broker::kms::{KekRef, KeyProvider, KmsErrorClass, KmsFailure};
use futures_util::future::join_all;

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("byok-local-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn ctx(org: &str) -> KeyContext {
    KeyContext::new([("organization_id", org)]).unwrap()
}

#[tokio::test]
async fn local_provider_round_trip_and_bindings() {
    let dir = temp_dir();
    let kms = LocalKms::open(&dir).await.unwrap();
    let kek = KekRef::platform(kms.create_key("test").await.unwrap());
    let other = KekRef::platform(kms.create_key("other").await.unwrap());
    let generated = kms.generate_data_key(&kek, &ctx("org_a")).await.unwrap();

    let dek = kms
        .decrypt(&kek, &generated.wrapped, &ctx("org_a"))
        .await
        .unwrap();
    assert_eq!(dek.expose_secret(), generated.key.expose_secret());
    let err = kms
        .decrypt(&kek, &generated.wrapped, &ctx("org_b"))
        .await
        .unwrap_err();
    assert_eq!(err.failure, KmsFailure::InvalidCiphertext);
    let err = kms
        .decrypt(&other, &generated.wrapped, &ctx("org_a"))
        .await
        .unwrap_err();
    assert_eq!(err.failure, KmsFailure::IncorrectKey);

    kms.set_enabled(&kek.key_id, false).await.unwrap();
    let err = kms
        .decrypt(&kek, &generated.wrapped, &ctx("org_a"))
        .await
        .unwrap_err();
    assert_eq!(
        (err.class(), err.failure),
        (KmsErrorClass::Revoked, KmsFailure::KeyDisabled)
    );
    kms.set_enabled(&kek.key_id, true).await.unwrap();

    // A restart (a new instance on the same directory) still opens old DEKs.
    let reopened = LocalKms::open(&dir).await.unwrap();
    let dek = reopened
        .decrypt(&kek, &generated.wrapped, &ctx("org_a"))
        .await
        .unwrap();
    assert_eq!(dek.expose_secret(), generated.key.expose_secret());

    let moved = kms
        .reencrypt(
            &kek,
            &generated.wrapped,
            &ctx("org_a"),
            &other,
            &ctx("org_a"),
        )
        .await
        .unwrap();
    let dek = kms.decrypt(&other, &moved, &ctx("org_a")).await.unwrap();
    assert_eq!(dek.expose_secret(), generated.key.expose_secret());
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn unknown_and_malformed_inputs_are_errors() {
    let dir = temp_dir();
    let kms = LocalKms::open(&dir).await.unwrap();
    let missing = KekRef::platform(format!("local/{}", uuid::Uuid::new_v4()));
    assert_eq!(
        kms.generate_data_key(&missing, &ctx("a"))
            .await
            .unwrap_err()
            .failure,
        KmsFailure::KeyNotFound
    );
    let bogus = KekRef::platform("local/../../etc/passwd");
    assert_eq!(
        kms.describe(&bogus).await.unwrap_err().failure,
        KmsFailure::KeyNotFound
    );
    let kek = KekRef::platform(kms.create_key("k").await.unwrap());
    for junk in [&b""[..], b"BBL1", b"garbage bytes that are not a key"] {
        assert_eq!(
            kms.decrypt(&kek, junk, &ctx("a"))
                .await
                .unwrap_err()
                .class(),
            KmsErrorClass::Integrity
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn concurrent_first_uses_across_two_local_instances_share_one_kek() {
    let dir = temp_dir();
    let a = Keyring::new(Arc::new(LocalKms::open(&dir).await.unwrap()), "byok-broker").unwrap();
    let b = Keyring::new(Arc::new(LocalKms::open(&dir).await.unwrap()), "byok-broker").unwrap();
    let context = ctx("org_race");
    let calls = (0..50).map(|i| {
        if i % 2 == 0 {
            a.platform_kek(&context)
        } else {
            b.platform_kek(&context)
        }
    });
    let ids: Vec<String> = join_all(calls)
        .await
        .into_iter()
        .map(|k| k.unwrap().key_id)
        .collect();
    assert!(ids.iter().all(|id| id == &ids[0]));
    let orphans =
        a.stats().orphans_scheduled_for_deletion + b.stats().orphans_scheduled_for_deletion;
    assert_eq!(orphans, a.stats().keks_created + b.stats().keks_created - 1);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn the_embedded_default_keeps_its_data_directory_private() {
    use std::os::unix::fs::PermissionsExt;
    let parent = temp_dir();
    let data_dir = parent.join("data");
    let config = byok_broker::config::Config::load(None, |name| match name {
        "BYOK_BROKER_DATA_DIR" => Some(data_dir.display().to_string()),
        _ => None,
    })
    .unwrap();
    let supervisor = byok_broker::supervisor::Supervisor::new();
    let broker = byok_broker::broker::Broker::start(config, &supervisor)
        .await
        .unwrap();
    assert_eq!(
        std::fs::metadata(&data_dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let keys_file = data_dir.join("bootstrap-api-keys.txt");
    assert_eq!(
        std::fs::metadata(&keys_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(data_dir.join("local-kms/master.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert_eq!(broker.provider().name(), "local");
    std::fs::remove_dir_all(parent).unwrap();
}
