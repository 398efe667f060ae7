//! The broker's top-level error: semantic variants, and the one exhaustive mapping to an HTTP
//! status and a stable snake_case code. 5xx messages are generic; details go to the log only.

use axum::http::StatusCode;

use crate::context::ContextError;
use crate::envelope::{EnvelopeError, FormatError};
use crate::kms::{KmsError, KmsErrorClass, KmsFailure};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("missing or invalid API key")]
    Unauthorized,
    #[error("this API key may not call this endpoint")]
    WrongRole,
    #[error("the key context is outside this API key's scope")]
    OutOfScope,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("an object with this name already exists")]
    NameTaken,
    #[error("version check failed: the object has changed")]
    VersionConflict,
    #[error(
        "several objects this key can see have this name (in different key contexts); read by id"
    )]
    AmbiguousName,
    #[error("{0}")]
    InvalidContext(#[from] ContextError),
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    #[error("request body is too large")]
    PayloadTooLarge,
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    #[error("the Idempotency-Key was already used for a different request")]
    IdempotencyKeyReused,
    #[error("a request with this Idempotency-Key is still in progress, retry later")]
    IdempotencyInFlight,
    #[error("the tenant's key is disabled in the broker")]
    KeyRevoked,
    #[error("the key protecting this data is unavailable ({reason})")]
    KeyUnavailable { reason: String },
    #[error("{0} already exists")]
    AlreadyExists(&'static str),
    #[error("{0} objects still depend on this key")]
    InUse(u64),
    #[error(
        "match_context overlaps an equally specific BYOK key ({0}); routing would be ambiguous"
    )]
    AmbiguousMatch(String),
    #[error("key verification failed ({reason}): {detail}")]
    ByokVerificationFailed {
        reason: &'static str,
        detail: String,
    },
    #[error("the key management service is unavailable, retry later")]
    KmsUnavailable(KmsError),
    #[error("the encrypted keys do not open under their key and context")]
    EncryptedKeysIntegrity,
    #[error("too many requests for this API key, retry later")]
    RateLimited(std::time::Duration),
    #[error("the broker's storage is full")]
    StorageFull(String),
    #[error("the broker's storage is unavailable, retry later")]
    StorageUnavailable(String),
    #[error("this API key caused its hourly number of new platform keys; retry later")]
    KekQuotaExceeded(std::time::Duration),
    #[error(
        "the deployment holds its limit of {0} platform keys; no new key context can get one until the operator raises limits.max_platform_keks"
    )]
    KekLimitReached(u64),
    #[error("internal error")]
    Internal(String),
}

impl Error {
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            code,
            message: message.into(),
        }
    }

    /// Status and stable code, in one exhaustive match.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Error::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Error::WrongRole => (StatusCode::FORBIDDEN, "forbidden"),
            Error::OutOfScope => (StatusCode::FORBIDDEN, "out_of_scope"),
            Error::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Error::NameTaken => (StatusCode::CONFLICT, "name_taken"),
            Error::VersionConflict => (StatusCode::CONFLICT, "version_conflict"),
            Error::AmbiguousName => (StatusCode::CONFLICT, "ambiguous_name"),
            Error::InvalidContext(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_context"),
            Error::Invalid { code, .. } => (StatusCode::UNPROCESSABLE_ENTITY, code),
            Error::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Error::BodyTimeout => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            Error::IdempotencyKeyReused => {
                (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
            }
            Error::IdempotencyInFlight => (StatusCode::CONFLICT, "idempotency_in_flight"),
            Error::KeyRevoked => (StatusCode::FORBIDDEN, "key_revoked"),
            Error::KeyUnavailable { .. } => (StatusCode::FORBIDDEN, "key_unavailable"),
            Error::AlreadyExists(_) => (StatusCode::CONFLICT, "already_exists"),
            Error::InUse(_) => (StatusCode::CONFLICT, "key_in_use"),
            Error::AmbiguousMatch(_) => (StatusCode::CONFLICT, "ambiguous_match_context"),
            Error::ByokVerificationFailed { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "byok_verification_failed")
            }
            Error::KmsUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "kms_unavailable"),
            Error::EncryptedKeysIntegrity => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid_encrypted_keys")
            }
            Error::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            Error::StorageFull(_) => (StatusCode::INSUFFICIENT_STORAGE, "storage_full"),
            Error::StorageUnavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable")
            }
            Error::KekQuotaExceeded(_) => (StatusCode::TOO_MANY_REQUESTS, "kek_quota_exceeded"),
            // Not 429 or 503: retrying cannot help until an operator acts, so SDKs must not retry.
            Error::KekLimitReached(_) => (StatusCode::FORBIDDEN, "kek_limit_reached"),
            Error::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }

    /// The message clients see: specific for 4xx, generic for 5xx.
    pub fn public_message(&self) -> String {
        match self {
            Error::Internal(_) => "internal error".into(),
            other => other.to_string(),
        }
    }

    /// Maps a KMS failure met while serving data: revoked keys fail closed with 403, transient
    /// failures are 503, and anything else is an internal error.
    pub fn from_kms(e: KmsError) -> Self {
        if e.failure == KmsFailure::InvalidKeyId {
            // Only input names a malformed key id: the caller's error, with no KMS detail echoed.
            return Error::invalid(
                "invalid_key_id",
                "the key id is not a well-formed KMS key id",
            );
        }
        match e.class() {
            KmsErrorClass::Revoked => Error::KeyUnavailable {
                reason: e.failure.as_str().to_owned(),
            },
            KmsErrorClass::Retryable => Error::KmsUnavailable(e),
            KmsErrorClass::Integrity | KmsErrorClass::Invalid => Error::Internal(e.to_string()),
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Error::NotFound("object"),
            StoreError::NameTaken => Error::NameTaken,
            StoreError::VersionMismatch { .. } => Error::VersionConflict,
            StoreError::AlreadyExists => Error::AlreadyExists("resource"),
            StoreError::InUse(count) => Error::InUse(count),
            StoreError::IdempotencyClaimLost => Error::IdempotencyInFlight,
            StoreError::Full(cause) => Error::StorageFull(cause),
            StoreError::Unavailable(cause) => Error::StorageUnavailable(cause),
            StoreError::Internal(message) => Error::Internal(message),
        }
    }
}

impl From<EnvelopeError> for Error {
    fn from(e: EnvelopeError) -> Self {
        Error::Internal(format!("stored value: {e}"))
    }
}

impl From<FormatError> for Error {
    fn from(e: FormatError) -> Self {
        Error::Internal(format!("format: {e}"))
    }
}
