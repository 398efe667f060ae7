//! The wire contract's error codes: every `code` a non-2xx JSON body can carry, with its status.
//! The README's error-code table is checked against this enum both ways (see the tests below), so
//! a code is added here, in one row, and in the README table together.

use axum::http::StatusCode;

/// Defines `ErrorCode` from one table, so a code's name, string and status cannot drift apart.
macro_rules! error_codes {
    ($($variant:ident => $code:literal, $status:ident;)+) => {
        /// A stable snake_case error code, as sent in the `code` field.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($variant,)+
        }

        impl ErrorCode {
            /// Every code, in the README table's order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)+];

            /// The code as sent on the wire.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)+
                }
            }

            /// The HTTP status every answer with this code carries.
            pub const fn status(self) -> StatusCode {
                match self {
                    $(ErrorCode::$variant => StatusCode::$status,)+
                }
            }
        }
    };
}

error_codes! {
    // Refused before routing (the accept loop, hyper's parser, `http/guard.rs`).
    InvalidPath => "invalid_path", BAD_REQUEST;
    MalformedRequest => "malformed_request", BAD_REQUEST;
    Unauthorized => "unauthorized", UNAUTHORIZED;
    PortalSessionRequired => "portal_session_required", UNAUTHORIZED;
    Forbidden => "forbidden", FORBIDDEN;
    OutOfScope => "out_of_scope", FORBIDDEN;
    CsrfCheckFailed => "csrf_check_failed", FORBIDDEN;
    KeyRevoked => "key_revoked", FORBIDDEN;
    KeyUnavailable => "key_unavailable", FORBIDDEN;
    // Not 429 or 503: retrying cannot help until an operator acts, so SDKs must not retry.
    KekLimitReached => "kek_limit_reached", FORBIDDEN;
    NotFound => "not_found", NOT_FOUND;
    MethodNotAllowed => "method_not_allowed", METHOD_NOT_ALLOWED;
    RequestTimeout => "request_timeout", REQUEST_TIMEOUT;
    NameTaken => "name_taken", CONFLICT;
    AmbiguousName => "ambiguous_name", CONFLICT;
    VersionConflict => "version_conflict", CONFLICT;
    AlreadyExists => "already_exists", CONFLICT;
    KeyInUse => "key_in_use", CONFLICT;
    AmbiguousMatchContext => "ambiguous_match_context", CONFLICT;
    IdempotencyInFlight => "idempotency_in_flight", CONFLICT;
    KekRotationRefused => "kek_rotation_refused", CONFLICT;
    PayloadTooLarge => "payload_too_large", PAYLOAD_TOO_LARGE;
    UriTooLong => "uri_too_long", URI_TOO_LONG;
    HeadersTooLarge => "headers_too_large", REQUEST_HEADER_FIELDS_TOO_LARGE;
    InvalidJson => "invalid_json", UNPROCESSABLE_ENTITY;
    InvalidBody => "invalid_body", UNPROCESSABLE_ENTITY;
    InvalidRequest => "invalid_request", UNPROCESSABLE_ENTITY;
    InvalidContext => "invalid_context", UNPROCESSABLE_ENTITY;
    InvalidName => "invalid_name", UNPROCESSABLE_ENTITY;
    InvalidCursor => "invalid_cursor", UNPROCESSABLE_ENTITY;
    InvalidLimit => "invalid_limit", UNPROCESSABLE_ENTITY;
    InvalidOrder => "invalid_order", UNPROCESSABLE_ENTITY;
    InvalidUpdatedAfter => "invalid_updated_after", UNPROCESSABLE_ENTITY;
    ValueTooLarge => "value_too_large", UNPROCESSABLE_ENTITY;
    InvalidEncryptedKeys => "invalid_encrypted_keys", UNPROCESSABLE_ENTITY;
    InvalidKeyId => "invalid_key_id", UNPROCESSABLE_ENTITY;
    IdempotencyKeyReused => "idempotency_key_reused", UNPROCESSABLE_ENTITY;
    InvalidIdempotencyKey => "invalid_idempotency_key", UNPROCESSABLE_ENTITY;
    ByokVerificationFailed => "byok_verification_failed", UNPROCESSABLE_ENTITY;
    ByokUnavailable => "byok_unavailable", UNPROCESSABLE_ENTITY;
    RoleArnRequired => "role_arn_required", UNPROCESSABLE_ENTITY;
    CannotRevokeSelf => "cannot_revoke_self", UNPROCESSABLE_ENTITY;
    WeakApiKey => "weak_api_key", UNPROCESSABLE_ENTITY;
    InvalidRole => "invalid_role", UNPROCESSABLE_ENTITY;
    InvalidScope => "invalid_scope", UNPROCESSABLE_ENTITY;
    InvalidTime => "invalid_time", UNPROCESSABLE_ENTITY;
    InvalidProvider => "invalid_provider", UNPROCESSABLE_ENTITY;
    InvalidKeyArn => "invalid_key_arn", UNPROCESSABLE_ENTITY;
    InvalidRoleArn => "invalid_role_arn", UNPROCESSABLE_ENTITY;
    InvalidMatchContext => "invalid_match_context", UNPROCESSABLE_ENTITY;
    InvalidExternalId => "invalid_external_id", UNPROCESSABLE_ENTITY;
    InvalidSource => "invalid_source", UNPROCESSABLE_ENTITY;
    InvalidKekId => "invalid_kek_id", UNPROCESSABLE_ENTITY;
    InvalidIntent => "invalid_intent", UNPROCESSABLE_ENTITY;
    InvalidUrl => "invalid_url", UNPROCESSABLE_ENTITY;
    InvalidFormat => "invalid_format", UNPROCESSABLE_ENTITY;
    RateLimited => "rate_limited", TOO_MANY_REQUESTS;
    KekQuotaExceeded => "kek_quota_exceeded", TOO_MANY_REQUESTS;
    InternalError => "internal_error", INTERNAL_SERVER_ERROR;
    NotReady => "not_ready", SERVICE_UNAVAILABLE;
    KmsUnavailable => "kms_unavailable", SERVICE_UNAVAILABLE;
    KmsBusy => "kms_busy", SERVICE_UNAVAILABLE;
    TooManyConnections => "too_many_connections", SERVICE_UNAVAILABLE;
    StorageUnavailable => "storage_unavailable", SERVICE_UNAVAILABLE;
    ProcessingTimeout => "processing_timeout", SERVICE_UNAVAILABLE;
    StorageFull => "storage_full", INSUFFICIENT_STORAGE;
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(test)]
#[path = "error_code_tests.rs"]
mod tests;
