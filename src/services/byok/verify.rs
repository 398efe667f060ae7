//! Verification of a tenant CMK before the broker relies on it: `DescribeKey` (enabled, symmetric,
//! ENCRYPT_DECRYPT) and a `GenerateDataKey` + `Decrypt` round trip with the binding's match context
//! as encryption context, through the tenant role when one is given.

use crate::context::KeyContext;
use crate::error::Error;
use crate::kms::{KekRef, KeyProvider, KmsError, KmsErrorClass, KmsFailure};

/// Checks `kek` end to end. Transient KMS failures are 503 (retry), not a verdict on the key.
pub async fn verify_kek(
    provider: &dyn KeyProvider,
    kek: &KekRef,
    match_context: &KeyContext,
) -> Result<(), Error> {
    let description = provider.describe(kek).await.map_err(failed)?;
    if !description.enabled {
        return Err(Error::ByokVerificationFailed {
            reason: "key_disabled",
            detail: message("key_disabled").into(),
        });
    }
    if !description.symmetric_encrypt_decrypt {
        return Err(Error::ByokVerificationFailed {
            reason: "wrong_key_spec",
            detail: "the key must be SYMMETRIC_DEFAULT with usage ENCRYPT_DECRYPT".into(),
        });
    }
    let generated = provider
        .generate_data_key(kek, match_context)
        .await
        .map_err(failed)?;
    let unwrapped = provider
        .decrypt(kek, &generated.wrapped, match_context)
        .await
        .map_err(failed)?;
    if unwrapped.expose_secret() != generated.key.expose_secret() {
        return Err(Error::ByokVerificationFailed {
            reason: "round_trip_failed",
            detail: "a data key did not survive GenerateDataKey + Decrypt".into(),
        });
    }
    Ok(())
}

/// A verdict names its reason and a fixed message: KMS and STS text (which can quote ARNs,
/// accounts and policies of either side) goes to the operator's log only, never to the caller.
fn failed(e: KmsError) -> Error {
    if e.class() == KmsErrorClass::Retryable {
        return Error::KmsUnavailable(e);
    }
    let reason = match e.failure {
        KmsFailure::KeyDisabled => "key_disabled",
        KmsFailure::KeyPendingDeletionOrInvalidState => "key_invalid_state",
        KmsFailure::AccessDenied => "access_denied",
        KmsFailure::KeyNotFound => "key_not_found",
        KmsFailure::RoleNotAssumable => "role_not_assumable",
        _ => "invalid_key",
    };
    tracing::warn!(reason, detail = %e.detail, "BYOK key verification failed");
    Error::ByokVerificationFailed {
        reason,
        detail: message(reason).into(),
    }
}

fn message(reason: &str) -> &'static str {
    match reason {
        "key_disabled" => "the key is not enabled in KMS",
        "key_invalid_state" => "the key is pending deletion or in a state that cannot be used",
        "access_denied" => {
            "the role may not use the key: check the role's policy and the key policy"
        }
        "key_not_found" => "no key with this ARN exists in that account and region",
        "role_not_assumable" => {
            "the broker cannot assume the role: check its trust policy (the broker's account and the sts:ExternalId condition)"
        }
        _ => "KMS refused to use this key for encryption",
    }
}
