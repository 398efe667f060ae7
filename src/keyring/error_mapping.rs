//! How a keyring refusal reaches the caller: `KeyAccessError` → the top-level `Error`. Kept on the
//! keyring's side so `error` stays below every component (it imports none of them).

use super::KeyAccessError;
use crate::error::{Error, ErrorCode};
use crate::store::KekCreationRefused;

impl From<KeyAccessError> for Error {
    fn from(e: KeyAccessError) -> Self {
        match e {
            KeyAccessError::Revoked { .. } => Error::KeyRevoked,
            KeyAccessError::Unavailable { reason } => Error::KeyUnavailable { reason },
            KeyAccessError::Kms(e) => Error::from_kms(e),
            // Reached from stored rows only (blobs map it to 422 themselves): the database names
            // a key that does not protect the object, which is corruption or tampering.
            KeyAccessError::NotHeldForContext => Error::Internal(
                "integrity failure: a stored row names a KEK not held for its context".into(),
            ),
            KeyAccessError::MissingSelectorField { field } => Error::invalid(
                ErrorCode::InvalidContext,
                format!("the key context must contain {field:?}: it selects the platform key"),
            ),
            KeyAccessError::CreationRefused(KekCreationRefused::HourlyQuota { retry_after }) => {
                Error::KekQuotaExceeded(retry_after)
            }
            KeyAccessError::CreationRefused(KekCreationRefused::Total { limit }) => {
                Error::KekLimitReached(limit)
            }
            KeyAccessError::Store(e) => e.into(),
        }
    }
}
