//! The broker's top-level error: semantic variants, and the one exhaustive mapping to an HTTP
//! status and a stable snake_case code. 5xx messages are generic; details go to the log only.

use axum::http::StatusCode;

use crate::context::ContextError;
use crate::envelope::{EnvelopeError, FormatError};
pub use crate::error_code::ErrorCode;
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
    Invalid { code: ErrorCode, message: String },
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
    #[error("the key management service is at capacity for this broker, retry later")]
    KmsBusy(KmsError),
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
    /// A key provider answer that is neither the caller's fault nor transient (an integrity
    /// failure on data the broker stored, a request the broker got wrong): 500, chain in the log.
    #[error("key provider failure")]
    Provider(#[source] KmsError),
    /// Stored data the broker wrote does not open (tampering or corruption): 500.
    #[error("stored data does not open")]
    Envelope(#[source] EnvelopeError),
    /// Stored or encoded data is malformed for its format: 500.
    #[error("stored data is malformed")]
    Format(#[source] FormatError),
    /// A storage failure the client cannot act on; the store's error stays as the source, so the
    /// log shows the chain down to SQLite.
    #[error("internal error")]
    Storage(#[source] StoreError),
}

impl Error {
    pub fn invalid(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Invalid {
            code,
            message: message.into(),
        }
    }

    /// The stable code (and through it the status), in one exhaustive match.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Unauthorized => ErrorCode::Unauthorized,
            Error::WrongRole => ErrorCode::Forbidden,
            Error::OutOfScope => ErrorCode::OutOfScope,
            Error::NotFound(_) => ErrorCode::NotFound,
            Error::NameTaken => ErrorCode::NameTaken,
            Error::VersionConflict => ErrorCode::VersionConflict,
            Error::AmbiguousName => ErrorCode::AmbiguousName,
            Error::InvalidContext(_) => ErrorCode::InvalidContext,
            Error::Invalid { code, .. } => *code,
            Error::PayloadTooLarge => ErrorCode::PayloadTooLarge,
            Error::BodyTimeout => ErrorCode::RequestTimeout,
            Error::IdempotencyKeyReused => ErrorCode::IdempotencyKeyReused,
            Error::IdempotencyInFlight => ErrorCode::IdempotencyInFlight,
            Error::KeyRevoked => ErrorCode::KeyRevoked,
            Error::KeyUnavailable { .. } => ErrorCode::KeyUnavailable,
            Error::AlreadyExists(_) => ErrorCode::AlreadyExists,
            Error::InUse(_) => ErrorCode::KeyInUse,
            Error::AmbiguousMatch(_) => ErrorCode::AmbiguousMatchContext,
            Error::ByokVerificationFailed { .. } => ErrorCode::ByokVerificationFailed,
            Error::KmsUnavailable(_) => ErrorCode::KmsUnavailable,
            Error::KmsBusy(_) => ErrorCode::KmsBusy,
            Error::EncryptedKeysIntegrity => ErrorCode::InvalidEncryptedKeys,
            Error::RateLimited(_) => ErrorCode::RateLimited,
            Error::StorageFull(_) => ErrorCode::StorageFull,
            Error::StorageUnavailable(_) => ErrorCode::StorageUnavailable,
            Error::KekQuotaExceeded(_) => ErrorCode::KekQuotaExceeded,
            Error::KekLimitReached(_) => ErrorCode::KekLimitReached,
            Error::Internal(_)
            | Error::Storage(_)
            | Error::Provider(_)
            | Error::Envelope(_)
            | Error::Format(_) => ErrorCode::InternalError,
        }
    }

    /// Status and code string, as the wire carries them.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        let code = self.code();
        (code.status(), code.as_str())
    }

    /// The message clients see: specific for 4xx, generic for 5xx.
    pub fn public_message(&self) -> String {
        match self {
            Error::Internal(_)
            | Error::Storage(_)
            | Error::Provider(_)
            | Error::Envelope(_)
            | Error::Format(_) => "internal error".into(),
            other => other.to_string(),
        }
    }

    /// Maps a KMS failure met while serving data: revoked keys fail closed with 403, transient
    /// failures are 503, and anything else is an internal error.
    pub fn from_kms(e: KmsError) -> Self {
        if e.failure == KmsFailure::InvalidKeyId {
            // Only input names a malformed key id: the caller's error, with no KMS detail echoed.
            return Error::invalid(
                ErrorCode::InvalidKeyId,
                "the key id is not a well-formed KMS key id",
            );
        }
        match e.class() {
            KmsErrorClass::Revoked => Error::KeyUnavailable {
                reason: e.failure.as_str().to_owned(),
            },
            // Capacity, not availability: the broker's budget, or KMS throttling the account.
            KmsErrorClass::Retryable
                if matches!(
                    e.failure,
                    KmsFailure::BudgetExhausted | KmsFailure::Throttled
                ) =>
            {
                Error::KmsBusy(e)
            }
            KmsErrorClass::Retryable => Error::KmsUnavailable(e),
            KmsErrorClass::Integrity | KmsErrorClass::Invalid => Error::Provider(e),
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(thing) => Error::NotFound(thing),
            StoreError::NameTaken => Error::NameTaken,
            StoreError::VersionMismatch { .. } => Error::VersionConflict,
            StoreError::AlreadyExists(thing) => Error::AlreadyExists(thing),
            StoreError::InUse(count) => Error::InUse(count),
            StoreError::IdempotencyClaimLost => Error::IdempotencyInFlight,
            StoreError::Full(cause) => Error::StorageFull(cause),
            StoreError::Unavailable(cause) => Error::StorageUnavailable(cause),
            e @ StoreError::UnknownCursor => {
                Error::invalid(ErrorCode::InvalidCursor, e.to_string())
            }
            e @ StoreError::UnstorableText => {
                Error::invalid(ErrorCode::InvalidRequest, e.to_string())
            }
            e @ (StoreError::Internal(_)
            | StoreError::Database(_)
            | StoreError::SchemaTooNew { .. }) => Error::Storage(e),
        }
    }
}

impl From<EnvelopeError> for Error {
    fn from(e: EnvelopeError) -> Self {
        Error::Envelope(e)
    }
}

impl From<FormatError> for Error {
    fn from(e: FormatError) -> Self {
        Error::Format(e)
    }
}

#[cfg(test)]
#[path = "error_tests.rs"]
mod tests;
