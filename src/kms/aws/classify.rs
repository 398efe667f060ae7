//! Classifies AWS SDK errors into the broker's KMS taxonomy from typed variants: the SDK error kind,
//! the service-wide `aws_sdk_kms::Error` enum, the error code of unmodeled errors and the HTTP status.
//! Message text is kept only as detail for operators, never used to decide.

use std::error::Error as StdError;

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_kms::config::http::HttpResponse;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sts::operation::assume_role::AssumeRoleError;

use crate::kms::{KmsError, KmsFailure};

/// Classifies any KMS operation error. Works for every operation because each operation error
/// converts into the service-wide `aws_sdk_kms::Error`.
pub(super) fn classify<E>(err: SdkError<E, HttpResponse>) -> KmsError
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    aws_sdk_kms::Error: From<SdkError<E, HttpResponse>>,
{
    let detail = chain_text(&err);
    let status = match &err {
        SdkError::ServiceError(service) => service.raw().status().as_u16(),
        SdkError::TimeoutError(_) => return KmsError::new(KmsFailure::Timeout, detail),
        SdkError::DispatchFailure(dispatch) => {
            if let Some(failure) = credentials_failure(&err) {
                return KmsError::new(failure, detail);
            }
            let failure = if dispatch.is_timeout() {
                KmsFailure::Timeout
            } else if dispatch.is_user() {
                KmsFailure::InvalidRequest
            } else {
                KmsFailure::Unreachable
            };
            return KmsError::new(failure, detail);
        }
        SdkError::ResponseError(_) => return KmsError::new(KmsFailure::ServiceInternal, detail),
        SdkError::ConstructionFailure(_) => {
            return KmsError::new(KmsFailure::InvalidRequest, detail);
        }
        _ => return KmsError::new(KmsFailure::Unreachable, detail),
    };
    let service: aws_sdk_kms::Error = err.into();
    KmsError::new(classify_service_error(&service, status), detail)
}

/// The messages of the error chain (operation, error code, service message) for operators' logs.
/// Not `DisplayErrorContext`: it appends the SDK's Debug output, which holds the raw HTTP response.
fn chain_text(err: &(dyn StdError + 'static)) -> String {
    let mut text = err.to_string();
    let mut current = err.source();
    while let Some(e) = current {
        text.push_str(": ");
        text.push_str(&e.to_string());
        current = e.source();
    }
    text
}

fn classify_service_error(err: &aws_sdk_kms::Error, status: u16) -> KmsFailure {
    use aws_sdk_kms::Error as E;
    match err {
        E::DisabledException(_) => KmsFailure::KeyDisabled,
        E::KmsInvalidStateException(_) => KmsFailure::KeyPendingDeletionOrInvalidState,
        E::NotFoundException(_) => KmsFailure::KeyNotFound,
        E::InvalidCiphertextException(_) => KmsFailure::InvalidCiphertext,
        E::IncorrectKeyException(_) => KmsFailure::IncorrectKey,
        E::KeyUnavailableException(_) => KmsFailure::KeyUnavailable,
        E::KmsInternalException(_) => KmsFailure::ServiceInternal,
        E::DependencyTimeoutException(_) => KmsFailure::Timeout,
        E::LimitExceededException(_) => KmsFailure::Throttled,
        // AccessDenied and Throttling are not modeled variants in the KMS model: they arrive as
        // `Unhandled`, identified by their error code (a protocol field, not message text).
        other => match other.code() {
            Some("AccessDeniedException") => KmsFailure::AccessDenied,
            // The broker's own credentials are no longer accepted: no key is usable.
            Some("UnrecognizedClientException" | "InvalidSignatureException") => {
                KmsFailure::AccessDenied
            }
            Some("ThrottlingException" | "TooManyRequestsException" | "RequestLimitExceeded") => {
                KmsFailure::Throttled
            }
            _ if status >= 500 => KmsFailure::ServiceInternal,
            _ if status == 429 => KmsFailure::Throttled,
            _ => KmsFailure::InvalidRequest,
        },
    }
}

/// A dispatch failure whose cause is loading credentials for a tenant role. Only STS *refusing*
/// the AssumeRole (denied: trust removed, external id wrong, role deleted; or not found) revokes
/// the tenant's key. Throttling, STS 5xx, timeouts, network failures and anything else are
/// transient: a throttled STS must not lock a tenant out or record a revocation.
fn credentials_failure(err: &(dyn StdError + 'static)) -> Option<KmsFailure> {
    let mut credentials: Option<&CredentialsError> = None;
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(c) = e.downcast_ref::<CredentialsError>() {
            credentials.get_or_insert(c);
        }
        if credentials.is_some() {
            if let Some(SdkError::ServiceError(service)) =
                e.downcast_ref::<SdkError<AssumeRoleError, HttpResponse>>()
            {
                return Some(classify_assume_role(
                    service.err(),
                    service.raw().status().as_u16(),
                ));
            }
            if let Some(refusal) = e.downcast_ref::<AssumeRoleError>() {
                return Some(classify_assume_role(refusal, 0));
            }
        }
        current = e.source();
    }
    match credentials? {
        CredentialsError::ProviderTimedOut(_) => Some(KmsFailure::Timeout),
        _ => Some(KmsFailure::Unreachable),
    }
}

/// An STS answer to AssumeRole, from its typed variant, error code (a protocol field) and status.
fn classify_assume_role(err: &AssumeRoleError, status: u16) -> KmsFailure {
    if let AssumeRoleError::RegionDisabledException(_) = err {
        // STS is deactivated in the tenant account for this region: the tenant's decision.
        return KmsFailure::RoleNotAssumable;
    }
    match err.code() {
        Some("AccessDenied" | "AccessDeniedException" | "NoSuchEntity" | "NotFound") => {
            KmsFailure::RoleNotAssumable
        }
        // STS will never accept this role ARN or external id as given: as good as not found.
        Some("ValidationError") => KmsFailure::RoleNotAssumable,
        Some("Throttling" | "ThrottlingException" | "RequestLimitExceeded") => {
            KmsFailure::Throttled
        }
        _ if status == 429 => KmsFailure::Throttled,
        _ if status >= 500 => KmsFailure::ServiceInternal,
        // Unknown codes and the broker's own credentials being refused (expired token, bad
        // signature) say nothing about the tenant's key: retry, change no state.
        _ => KmsFailure::Unreachable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_kms::error::ErrorMetadata;

    fn unhandled(code: &str) -> aws_sdk_kms::Error {
        let meta = ErrorMetadata::builder().code(code).build();
        aws_sdk_kms::operation::decrypt::DecryptError::generic(meta).into()
    }

    #[test]
    fn unmodeled_codes_are_classified_by_code_and_status() {
        assert_eq!(
            classify_service_error(&unhandled("AccessDeniedException"), 400),
            KmsFailure::AccessDenied
        );
        assert_eq!(
            classify_service_error(&unhandled("ThrottlingException"), 400),
            KmsFailure::Throttled
        );
        assert_eq!(
            classify_service_error(&unhandled("InternalError"), 500),
            KmsFailure::ServiceInternal
        );
        assert_eq!(
            classify_service_error(&unhandled("SomethingNew"), 400),
            KmsFailure::InvalidRequest
        );
    }

    #[test]
    fn credentials_errors_split_into_revoked_and_transient() {
        let timed_out = CredentialsError::provider_timed_out(std::time::Duration::from_secs(5));
        assert_eq!(credentials_failure(&timed_out), Some(KmsFailure::Timeout));
        let sts = |code: &str, status: u16| {
            let refusal = AssumeRoleError::generic(
                aws_sdk_sts::error::ErrorMetadata::builder()
                    .code(code)
                    .message("raw STS text")
                    .build(),
            );
            let raw = HttpResponse::new(status.try_into().expect("status"), "".into());
            credentials_failure(&CredentialsError::provider_error(SdkError::service_error(
                refusal, raw,
            )))
        };
        assert_eq!(sts("AccessDenied", 403), Some(KmsFailure::RoleNotAssumable));
        assert_eq!(sts("Throttling", 400), Some(KmsFailure::Throttled));
        assert_eq!(
            sts("InternalFailure", 500),
            Some(KmsFailure::ServiceInternal)
        );
        assert_eq!(
            sts("ServiceUnavailable", 503),
            Some(KmsFailure::ServiceInternal)
        );
        assert_eq!(sts("ExpiredToken", 400), Some(KmsFailure::Unreachable));
        let other = std::io::Error::other("connection reset");
        assert_eq!(credentials_failure(&other), None);
    }

    #[test]
    fn detail_keeps_the_code_but_not_the_raw_response() {
        let refusal = aws_sdk_kms::operation::decrypt::DecryptError::generic(
            ErrorMetadata::builder()
                .code("AccessDeniedException")
                .build(),
        );
        let raw = HttpResponse::new(403.try_into().expect("status"), "RAW-BODY-SECRET".into());
        let error = classify(SdkError::service_error(refusal, raw));
        assert_eq!(error.failure, KmsFailure::AccessDenied);
        assert!(
            error.detail.contains("AccessDeniedException"),
            "{}",
            error.detail
        );
        assert!(
            !error.detail.contains("RAW-BODY-SECRET"),
            "{}",
            error.detail
        );
    }
}
