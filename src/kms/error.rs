//! One error taxonomy for every key provider. Providers classify their native errors once (the AWS
//! provider from the SDK's typed errors, never from message text); callers decide only by class.

use std::fmt;

/// What a caller does with a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KmsErrorClass {
    /// The key can no longer be used by the broker (disabled, pending deletion, access removed,
    /// gone, role no longer assumable). Fail closed: refuse and purge cached DEKs.
    Revoked,
    /// A transient condition (throttling, timeouts, KMS internal errors, unreachable endpoint).
    Retryable,
    /// The ciphertext does not open under this key and context: tampering or a wrong binding.
    Integrity,
    /// The request itself is wrong (bad key id format, wrong key usage or spec, bad parameters).
    Invalid,
}

/// The classified cause. The class follows from the cause, so the two can never disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KmsFailure {
    KeyDisabled,
    KeyPendingDeletionOrInvalidState,
    AccessDenied,
    KeyNotFound,
    RoleNotAssumable,
    Throttled,
    Timeout,
    KeyUnavailable,
    ServiceInternal,
    Unreachable,
    InvalidCiphertext,
    IncorrectKey,
    InvalidRequest,
    /// The key id is malformed (e.g. its ARN's region is not a host label): the caller's input,
    /// refused before any request is built.
    InvalidKeyId,
    /// The broker's own KMS budget had no capacity for the call in time (`kms::budget`): never
    /// sent to KMS.
    BudgetExhausted,
}

impl KmsFailure {
    pub fn class(self) -> KmsErrorClass {
        use KmsFailure::*;
        match self {
            KeyDisabled
            | KeyPendingDeletionOrInvalidState
            | AccessDenied
            | KeyNotFound
            | RoleNotAssumable => KmsErrorClass::Revoked,
            Throttled | Timeout | KeyUnavailable | ServiceInternal | Unreachable
            | BudgetExhausted => KmsErrorClass::Retryable,
            InvalidCiphertext | IncorrectKey => KmsErrorClass::Integrity,
            InvalidRequest | InvalidKeyId => KmsErrorClass::Invalid,
        }
    }

    /// The failure [`Self::as_str`] names (as stored by another instance); `None` for a name this
    /// build does not know.
    pub fn from_name(name: &str) -> Option<Self> {
        use KmsFailure::*;
        [
            KeyDisabled,
            KeyPendingDeletionOrInvalidState,
            AccessDenied,
            KeyNotFound,
            RoleNotAssumable,
            Throttled,
            Timeout,
            KeyUnavailable,
            ServiceInternal,
            Unreachable,
            InvalidCiphertext,
            IncorrectKey,
            InvalidRequest,
            InvalidKeyId,
            BudgetExhausted,
        ]
        .into_iter()
        .find(|f| f.as_str() == name)
    }

    /// A stable snake_case name for logs, metrics and API error details.
    pub fn as_str(self) -> &'static str {
        use KmsFailure::*;
        match self {
            KeyDisabled => "key_disabled",
            KeyPendingDeletionOrInvalidState => "key_invalid_state",
            AccessDenied => "access_denied",
            KeyNotFound => "key_not_found",
            RoleNotAssumable => "role_not_assumable",
            Throttled => "throttled",
            Timeout => "timeout",
            KeyUnavailable => "key_unavailable",
            ServiceInternal => "kms_internal",
            Unreachable => "kms_unreachable",
            InvalidCiphertext => "invalid_ciphertext",
            IncorrectKey => "incorrect_key",
            InvalidRequest => "invalid_request",
            InvalidKeyId => "invalid_key_id",
            BudgetExhausted => "kms_busy",
        }
    }
}

impl fmt::Display for KmsErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KmsErrorClass::Revoked => "revoked",
            KmsErrorClass::Retryable => "retryable",
            KmsErrorClass::Integrity => "integrity",
            KmsErrorClass::Invalid => "invalid",
        })
    }
}

/// A classified provider failure. `detail` carries the provider's error code and message, which
/// name keys and operations but never key material or data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} ({}): {detail}", failure.class(), failure.as_str())]
pub struct KmsError {
    pub failure: KmsFailure,
    pub detail: String,
}

impl KmsError {
    pub fn new(failure: KmsFailure, detail: impl Into<String>) -> Self {
        Self {
            failure,
            detail: detail.into(),
        }
    }

    pub fn class(&self) -> KmsErrorClass {
        self.failure.class()
    }

    pub fn is_revoked(&self) -> bool {
        self.class() == KmsErrorClass::Revoked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_name_reads_back_as_its_failure() {
        for failure in [
            KmsFailure::KeyDisabled,
            KmsFailure::KeyPendingDeletionOrInvalidState,
            KmsFailure::KeyNotFound,
            KmsFailure::InvalidKeyId,
        ] {
            assert_eq!(KmsFailure::from_name(failure.as_str()), Some(failure));
        }
        assert_eq!(KmsFailure::from_name("no_such_failure"), None);
    }

    #[test]
    fn classes_follow_the_taxonomy() {
        use KmsFailure::*;
        for f in [
            KeyDisabled,
            KeyPendingDeletionOrInvalidState,
            AccessDenied,
            KeyNotFound,
            RoleNotAssumable,
        ] {
            assert_eq!(f.class(), KmsErrorClass::Revoked, "{f:?}");
        }
        for f in [
            Throttled,
            Timeout,
            KeyUnavailable,
            ServiceInternal,
            Unreachable,
        ] {
            assert_eq!(f.class(), KmsErrorClass::Retryable, "{f:?}");
        }
        for f in [InvalidCiphertext, IncorrectKey] {
            assert_eq!(f.class(), KmsErrorClass::Integrity, "{f:?}");
        }
        assert_eq!(InvalidRequest.class(), KmsErrorClass::Invalid);
        assert_eq!(InvalidKeyId.class(), KmsErrorClass::Invalid);
    }

    #[test]
    fn display_names_class_and_cause() {
        let e = KmsError::new(
            KmsFailure::KeyDisabled,
            "DisabledException: key/abc is disabled.",
        );
        assert_eq!(
            e.to_string(),
            "revoked (key_disabled): DisabledException: key/abc is disabled."
        );
    }
}
