//! The AWS provider and the envelope against real KMS semantics in LocalStack: round trip, context
//! binding, key pinning across tenants, revocation classes, and a tenant CMK in another account
//! reached through AssumeRole with an ExternalId.

use crate::common;

use byok_broker::envelope::{SealedValue, ValueBinding, WrappedKey, open_value, seal_value};
use byok_broker::kms::{KekRef, KeyProvider, KmsErrorClass, KmsFailure, TenantAccess};
use common::*;
use uuid::Uuid;

#[tokio::test]
async fn envelope_round_trip_through_kms() {
    let kms = broker_kms().await;
    let kek = KekRef::platform(create_key(PLATFORM_ACCOUNT).await);
    let ctx = context(&[("organization_id", "org_acme"), ("data_type", "pii")]);

    let generated = kms.generate_data_key(&kek, &ctx).await.unwrap();
    assert_eq!(
        generated.kek_id, kek.key_id,
        "KMS answers with the key ARN we asked for"
    );
    let wrapped = WrappedKey {
        kek_id: generated.kek_id.clone(),
        wrapped: generated.wrapped.clone(),
    };
    let sealed = seal_value(
        &generated.key,
        Uuid::new_v4(),
        wrapped,
        &ctx,
        ValueBinding {
            object_id: "obj_1",
            version_id: "ver_1",
        },
        b"4111 1111 1111 1111",
    )
    .unwrap();
    let stored = sealed.encode().unwrap();

    // A later read: only the stored bytes and the KMS.
    let loaded = SealedValue::decode(&stored).unwrap();
    let dek = kms
        .decrypt(
            &KekRef::platform(&loaded.key.kek_id),
            &loaded.key.wrapped,
            &ctx,
        )
        .await
        .unwrap();
    assert_eq!(dek.expose_secret(), generated.key.expose_secret());
    assert_eq!(
        &*open_value(
            &dek,
            &loaded,
            &ctx,
            ValueBinding {
                object_id: "obj_1",
                version_id: "ver_1"
            }
        )
        .unwrap(),
        b"4111 1111 1111 1111"
    );
}

#[tokio::test]
async fn wrong_context_is_an_integrity_error() {
    let kms = broker_kms().await;
    let kek = KekRef::platform(create_key(PLATFORM_ACCOUNT).await);
    let ctx = context(&[("organization_id", "org_acme")]);
    let generated = kms.generate_data_key(&kek, &ctx).await.unwrap();

    let other = context(&[("organization_id", "org_evil")]);
    let err = kms
        .decrypt(&kek, &generated.wrapped, &other)
        .await
        .unwrap_err();
    assert_eq!(err.class(), KmsErrorClass::Integrity, "{err}");
    assert_eq!(err.failure, KmsFailure::InvalidCiphertext);
}

#[tokio::test]
async fn a_dek_of_tenant_a_cannot_be_opened_claiming_tenant_b_key() {
    let kms = broker_kms().await;
    let kek_a = KekRef::platform(create_key(PLATFORM_ACCOUNT).await);
    let kek_b = KekRef::platform(create_key(PLATFORM_ACCOUNT).await);
    let ctx = context(&[("organization_id", "org_a")]);
    let generated = kms.generate_data_key(&kek_a, &ctx).await.unwrap();

    let err = kms
        .decrypt(&kek_b, &generated.wrapped, &ctx)
        .await
        .unwrap_err();
    assert_eq!(err.class(), KmsErrorClass::Integrity, "{err}");
    assert_eq!(err.failure, KmsFailure::IncorrectKey);
}

#[tokio::test]
async fn disable_key_revokes_generate_and_decrypt_and_enable_restores() {
    let kms = broker_kms().await;
    let arn = create_key(PLATFORM_ACCOUNT).await;
    let kek = KekRef::platform(&arn);
    let ctx = context(&[("organization_id", "org_acme")]);
    let generated = kms.generate_data_key(&kek, &ctx).await.unwrap();

    let raw = raw_kms(PLATFORM_ACCOUNT).await;
    raw.disable_key().key_id(&arn).send().await.unwrap();
    for err in [
        kms.decrypt(&kek, &generated.wrapped, &ctx)
            .await
            .unwrap_err(),
        kms.generate_data_key(&kek, &ctx).await.unwrap_err(),
    ] {
        assert_eq!(err.class(), KmsErrorClass::Revoked, "{err}");
        assert_eq!(err.failure, KmsFailure::KeyDisabled);
    }
    let described = kms.describe(&kek).await.unwrap();
    assert!(
        !described.enabled && described.state == "Disabled",
        "{described:?}"
    );

    raw.enable_key().key_id(&arn).send().await.unwrap();
    kms.decrypt(&kek, &generated.wrapped, &ctx).await.unwrap();
}

#[tokio::test]
async fn scheduled_deletion_and_unknown_keys_are_revoked() {
    let kms = broker_kms().await;
    let arn = create_key(PLATFORM_ACCOUNT).await;
    let kek = KekRef::platform(&arn);
    let ctx = context(&[("organization_id", "org_acme")]);
    let generated = kms.generate_data_key(&kek, &ctx).await.unwrap();

    kms.schedule_key_deletion(&arn).await.unwrap();
    let err = kms
        .decrypt(&kek, &generated.wrapped, &ctx)
        .await
        .unwrap_err();
    assert_eq!(
        (err.class(), err.failure),
        (
            KmsErrorClass::Revoked,
            KmsFailure::KeyPendingDeletionOrInvalidState
        ),
        "{err}"
    );

    let unknown = KekRef::platform(format!(
        "arn:aws:kms:{REGION}:{PLATFORM_ACCOUNT}:key/{}",
        Uuid::new_v4()
    ));
    let err = kms.generate_data_key(&unknown, &ctx).await.unwrap_err();
    assert_eq!(
        (err.class(), err.failure),
        (KmsErrorClass::Revoked, KmsFailure::KeyNotFound),
        "{err}"
    );
}

#[tokio::test]
async fn tenant_cmk_in_another_account_through_assume_role() {
    // The tenant creates a key in its own account (a 12-digit access key id is that account).
    let tenant_key = create_key(TENANT_ACCOUNT).await;
    assert!(
        tenant_key.contains(&format!(":{TENANT_ACCOUNT}:key/")),
        "{tenant_key}"
    );

    let kms = broker_kms().await;
    let kek = KekRef {
        key_id: tenant_key.clone(),
        region: None,
        access: Some(TenantAccess {
            role_arn: format!("arn:aws:iam::{TENANT_ACCOUNT}:role/byok-broker-access"),
            external_id: Some("acme-external-id".into()),
        }),
    };
    let ctx = context(&[("organization_id", "org_acme")]);
    let generated = kms.generate_data_key(&kek, &ctx).await.unwrap();
    assert_eq!(generated.kek_id, tenant_key);
    let dek = kms.decrypt(&kek, &generated.wrapped, &ctx).await.unwrap();
    assert_eq!(dek.expose_secret(), generated.key.expose_secret());

    // The tenant disables its key from its own account: the broker is locked out.
    raw_kms(TENANT_ACCOUNT)
        .await
        .disable_key()
        .key_id(&tenant_key)
        .send()
        .await
        .unwrap();
    let err = kms
        .decrypt(&kek, &generated.wrapped, &ctx)
        .await
        .unwrap_err();
    assert_eq!(err.class(), KmsErrorClass::Revoked, "{err}");
    let described = kms.describe(&kek).await.unwrap();
    assert!(!described.enabled, "{described:?}");
}

#[tokio::test]
async fn a_role_that_cannot_be_assumed_is_revoked() {
    let kms = broker_kms().await;
    let kek = KekRef {
        key_id: create_key(TENANT_ACCOUNT).await,
        region: None,
        // LocalStack refuses an AssumeRole whose role ARN is malformed (it enforces no trust policy).
        access: Some(TenantAccess {
            role_arn: "not-an-arn".into(),
            external_id: Some("x".into()),
        }),
    };
    let err = kms
        .generate_data_key(&kek, &context(&[("organization_id", "org_acme")]))
        .await
        .unwrap_err();
    assert_eq!(
        (err.class(), err.failure),
        (KmsErrorClass::Revoked, KmsFailure::RoleNotAssumable),
        "{err}"
    );
}

#[tokio::test]
async fn reencrypt_moves_a_dek_between_keys_without_the_broker_seeing_it() {
    let kms = broker_kms().await;
    let source = KekRef::platform(create_key(PLATFORM_ACCOUNT).await);
    let destination = KekRef::platform(create_key(PLATFORM_ACCOUNT).await);
    let ctx = context(&[("organization_id", "org_acme")]);
    let generated = kms.generate_data_key(&source, &ctx).await.unwrap();

    let moved = kms
        .reencrypt(&source, &generated.wrapped, &ctx, &destination, &ctx)
        .await
        .unwrap();
    let dek = kms.decrypt(&destination, &moved, &ctx).await.unwrap();
    assert_eq!(dek.expose_secret(), generated.key.expose_secret());
    assert_eq!(
        kms.decrypt(&source, &moved, &ctx)
            .await
            .unwrap_err()
            .class(),
        KmsErrorClass::Integrity
    );

    // encrypt() wraps an existing DEK under another key (the cross-credential path).
    let rewrapped = kms.encrypt(&destination, &dek, &ctx).await.unwrap();
    let again = kms.decrypt(&destination, &rewrapped, &ctx).await.unwrap();
    assert_eq!(again.expose_secret(), generated.key.expose_secret());
}

#[tokio::test]
async fn unreachable_kms_is_retryable() {
    let mut options = options_for(PLATFORM_ACCOUNT);
    options.endpoint_url = Some("http://127.0.0.1:9".into()); // discard port: nothing listens
    let kms = byok_broker::kms::aws::AwsKms::connect(&options)
        .await
        .unwrap();
    let kek = KekRef::platform(format!(
        "arn:aws:kms:{REGION}:{PLATFORM_ACCOUNT}:key/{}",
        Uuid::new_v4()
    ));
    let err = kms
        .generate_data_key(&kek, &context(&[("a", "b")]))
        .await
        .unwrap_err();
    assert_eq!(err.class(), KmsErrorClass::Retryable, "{err}");
}
