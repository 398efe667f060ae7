//! Refused data-plane requests are audit events too (`vault.access.denied`): a scoped key reaching
//! outside its scope, a key the broker or KMS refuses (disabled, unavailable, KMS down), a blob
//! that does not open. The request is authenticated, so each refusal is recorded like a read:
//! with its actor, durable before the refusal is answered (a flood of them is bounded by the
//! key's rate limit). Refusals before authentication are counted in `services::refusals`.

use serde_json::json;

use crate::audit;
use crate::auth::Principal;
use crate::context::KeyContext;
use crate::error::{Error, ErrorCode};

use super::{Vault, org};

/// What a request was after, filled in as the use case learns it: the operation (the event it
/// would have recorded) and the key context it touched.
pub(super) struct Attempt<'a> {
    pub principal: &'a Principal,
    operation: &'static str,
    context: Option<KeyContext>,
    /// The target exists but lies outside the key's scope (answered as not found, recorded as
    /// `out_of_scope`).
    hidden: bool,
}

impl<'a> Attempt<'a> {
    pub fn new(principal: &'a Principal, operation: &'static str) -> Self {
        Self {
            principal,
            operation,
            context: None,
            hidden: false,
        }
    }

    /// The key context the request touches, once known.
    pub fn touches(&mut self, context: &KeyContext) {
        self.context = Some(context.clone());
    }

    /// The request named something outside its key's scope (answered as if it did not exist).
    pub fn hidden(&mut self, context: &KeyContext) {
        self.touches(context);
        self.hidden = true;
    }
}

/// The `reason` a refusal is recorded with; `None` for errors that refuse nothing (bad input,
/// not found, conflicts, capacity, the broker's own failures).
fn reason(error: &Error) -> Option<&'static str> {
    Some(match error {
        Error::OutOfScope => "out_of_scope",
        Error::KeyRevoked => "key_disabled",
        Error::KeyUnavailable { .. } => "key_unavailable",
        Error::KmsUnavailable(_) => "kms_unavailable",
        Error::EncryptedKeysIntegrity => "bad_blob",
        Error::Invalid {
            code: ErrorCode::InvalidEncryptedKeys,
            ..
        } => "bad_blob",
        // Stored ciphertext that does not open under its own key: tampering or corruption.
        Error::Envelope(_) | Error::Format(_) => "bad_ciphertext",
        _ => return None,
    })
}

impl Vault {
    /// Records `outcome` as `vault.access.denied` when it is a refusal, and returns it. A refusal
    /// whose event cannot be stored fails with the audit's error, like any other request.
    pub(super) async fn settle<T>(
        &self,
        attempt: Attempt<'_>,
        outcome: Result<T, Error>,
    ) -> Result<T, Error> {
        let Err(error) = &outcome else {
            return outcome;
        };
        let reason = if attempt.hidden {
            Some("out_of_scope")
        } else {
            reason(error)
        };
        let Some(reason) = reason else {
            return outcome;
        };
        let organization = attempt.context.as_ref().and_then(org);
        let fields = json!({
            "reason": reason,
            "code": error.code().as_str(),
            "operation": attempt.operation,
            "key_context": attempt.context,
            // One request: the same field as the coalesced refusals, so counts add up alike.
            "count": 1,
        });
        self.audit
            .record(audit::event(
                Some(attempt.principal),
                "vault.access.denied",
                organization,
                fields,
            ))
            .await?;
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kms::{KmsError, KmsFailure};

    #[test]
    fn refusals_have_reasons_and_other_errors_none() {
        assert_eq!(reason(&Error::OutOfScope), Some("out_of_scope"));
        assert_eq!(reason(&Error::KeyRevoked), Some("key_disabled"));
        assert_eq!(
            reason(&Error::KeyUnavailable {
                reason: "disabled".into()
            }),
            Some("key_unavailable")
        );
        assert_eq!(
            reason(&Error::KmsUnavailable(KmsError::new(
                KmsFailure::Unreachable,
                "down"
            ))),
            Some("kms_unavailable")
        );
        assert_eq!(reason(&Error::EncryptedKeysIntegrity), Some("bad_blob"));
        assert_eq!(
            reason(&Error::invalid(ErrorCode::InvalidEncryptedKeys, "x")),
            Some("bad_blob")
        );
        for other in [
            Error::NotFound("object"),
            Error::NameTaken,
            Error::invalid(ErrorCode::InvalidName, "x"),
            Error::Internal("x".into()),
        ] {
            assert_eq!(reason(&other), None, "{other}");
        }
    }
}
