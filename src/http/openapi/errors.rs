//! Which error codes each operation can answer, grouped into the sets they share. The document's
//! error responses are built from this table (one response per status, naming its codes), and a
//! test checks that every operation has a row and every row an operation.

use crate::error::ErrorCode::{self, *};

/// Any request: refused before routing (parser, guard), timed out, or failed inside.
const ANY: &[ErrorCode] = &[
    MalformedRequest,
    InvalidPath,
    PayloadTooLarge,
    UriTooLong,
    HeadersTooLarge,
    InternalError,
    ProcessingTimeout,
    TooManyConnections,
];
/// An API key (`Authorization: Bearer`) of the operation's role, within its rate.
const API_KEY: &[ErrorCode] = &[Unauthorized, Forbidden, RateLimited, StorageUnavailable];
/// A portal session cookie (the portal refuses API keys).
const SESSION: &[ErrorCode] = &[PortalSessionRequired, StorageUnavailable];
/// A state-changing portal request: the CSRF token, from the portal's own page.
const CSRF: &[ErrorCode] = &[CsrfCheckFailed];
/// A JSON body.
const BODY: &[ErrorCode] = &[RequestTimeout, InvalidJson, InvalidBody, InvalidRequest];
/// A write to the store.
const WRITE: &[ErrorCode] = &[StorageFull];
/// A KMS call under a tenant's or the platform's key.
const KMS: &[ErrorCode] = &[KeyRevoked, KeyUnavailable, KmsUnavailable, KmsBusy];
/// A context that may need a new platform KEK.
const NEW_KEK: &[ErrorCode] = &[KekLimitReached, KekQuotaExceeded, InvalidContext];
/// Registering or rotating a tenant's KMS key (verified against KMS).
const BYOK_KEY: &[ErrorCode] = &[
    InvalidKeyArn,
    InvalidRoleArn,
    RoleArnRequired,
    InvalidExternalId,
    ByokVerificationFailed,
    ByokUnavailable,
    KmsUnavailable,
    KmsBusy,
];
/// Changing the state of an existing BYOK key.
const BYOK_CHANGE: &[ErrorCode] = &[NotFound, KeyInUse, AlreadyExists, AmbiguousMatchContext];
/// A page of a list with a `limit`.
const PAGED: &[ErrorCode] = &[InvalidLimit, InvalidCursor, InvalidRequest];

/// Every operation (by `operation_id`) and the sets of codes it can answer besides [`ANY`].
const OPERATIONS: &[(&str, &[&[ErrorCode]])] = &[
    ("healthz", &[]),
    ("readyz", &[&[NotReady]]),
    ("openapi_document", &[]),
    // The Vault data plane.
    (
        "create_object",
        &[
            API_KEY,
            BODY,
            WRITE,
            KMS,
            NEW_KEK,
            &[
                OutOfScope,
                InvalidName,
                ValueTooLarge,
                NameTaken,
                InvalidIdempotencyKey,
                IdempotencyKeyReused,
                IdempotencyInFlight,
            ],
        ],
    ),
    ("read_object", &[API_KEY, KMS, &[NotFound, OutOfScope]]),
    (
        "read_object_by_name",
        &[API_KEY, KMS, &[NotFound, OutOfScope, AmbiguousName]],
    ),
    ("describe_object", &[API_KEY, &[NotFound, OutOfScope]]),
    (
        "update_object",
        &[
            API_KEY,
            BODY,
            WRITE,
            KMS,
            NEW_KEK,
            &[NotFound, OutOfScope, ValueTooLarge, VersionConflict],
        ],
    ),
    (
        "delete_object",
        &[API_KEY, WRITE, &[NotFound, OutOfScope, VersionConflict]],
    ),
    (
        "list_objects",
        &[API_KEY, PAGED, &[InvalidOrder, InvalidUpdatedAfter]],
    ),
    ("list_versions", &[API_KEY, &[NotFound, OutOfScope]]),
    (
        "create_data_key",
        &[API_KEY, BODY, KMS, NEW_KEK, &[OutOfScope]],
    ),
    (
        "decrypt_data_key",
        &[
            API_KEY,
            BODY,
            KMS,
            &[OutOfScope, InvalidEncryptedKeys, InvalidKeyId],
        ],
    ),
    (
        "rekey",
        &[
            API_KEY,
            BODY,
            KMS,
            NEW_KEK,
            &[OutOfScope, InvalidEncryptedKeys, InvalidKeyId],
        ],
    ),
    // The admin plane.
    (
        "create_api_key",
        &[
            API_KEY,
            BODY,
            WRITE,
            &[
                InvalidName,
                InvalidRole,
                InvalidScope,
                InvalidContext,
                WeakApiKey,
            ],
        ],
    ),
    ("list_api_keys", &[API_KEY]),
    (
        "revoke_api_key",
        &[API_KEY, WRITE, &[NotFound, CannotRevokeSelf]],
    ),
    (
        "list_events",
        &[API_KEY, PAGED, &[InvalidTime, InvalidFormat]],
    ),
    ("get_metrics", &[API_KEY]),
    (
        "register_byok_key",
        &[
            API_KEY,
            BODY,
            WRITE,
            BYOK_KEY,
            BYOK_CHANGE,
            &[InvalidProvider, InvalidMatchContext, InvalidContext],
        ],
    ),
    ("list_byok_keys", &[API_KEY]),
    ("get_byok_key", &[API_KEY, &[NotFound]]),
    (
        "rotate_byok_key",
        &[API_KEY, BODY, WRITE, BYOK_KEY, BYOK_CHANGE],
    ),
    ("disable_byok_key", &[API_KEY, WRITE, BYOK_CHANGE]),
    ("enable_byok_key", &[API_KEY, WRITE, BYOK_CHANGE, KMS]),
    ("retire_byok_key", &[API_KEY, WRITE, BYOK_CHANGE]),
    ("delete_byok_key", &[API_KEY, WRITE, BYOK_CHANGE]),
    ("get_byok_external_id", &[API_KEY, WRITE, &[InvalidRequest]]),
    (
        "start_rewrap_job",
        &[
            API_KEY,
            BODY,
            WRITE,
            &[InvalidSource, InvalidKekId, NotFound, AlreadyExists],
        ],
    ),
    ("get_rewrap_job", &[API_KEY, &[NotFound]]),
    ("cancel_rewrap_job", &[API_KEY, WRITE, &[NotFound]]),
    ("list_platform_keks", &[API_KEY, PAGED]),
    (
        "rotate_platform_kek",
        &[
            API_KEY,
            WRITE,
            KMS,
            &[NotFound, KekRotationRefused, InvalidKekId],
        ],
    ),
    // The portal.
    (
        "generate_portal_link",
        &[
            API_KEY,
            BODY,
            WRITE,
            &[InvalidIntent, InvalidUrl, InvalidRequest],
        ],
    ),
    ("portal_page", &[]),
    ("portal_page_without_slash", &[]),
    ("portal_script", &[]),
    ("portal_style", &[]),
    (
        "portal_launch",
        &[WRITE, &[StorageUnavailable, InvalidRequest]],
    ),
    ("portal_session", &[SESSION]),
    ("portal_sign_out", &[SESSION, CSRF, WRITE]),
    ("portal_setup", &[SESSION, WRITE]),
    ("portal_list_keys", &[SESSION]),
    (
        "portal_register_key",
        &[SESSION, CSRF, BODY, WRITE, BYOK_KEY, BYOK_CHANGE],
    ),
    ("portal_get_key", &[SESSION, &[NotFound]]),
    (
        "portal_rotate_key",
        &[SESSION, CSRF, BODY, WRITE, BYOK_KEY, BYOK_CHANGE],
    ),
    ("portal_disable_key", &[SESSION, CSRF, WRITE, BYOK_CHANGE]),
    (
        "portal_enable_key",
        &[SESSION, CSRF, WRITE, BYOK_CHANGE, KMS],
    ),
    ("portal_retire_key", &[SESSION, CSRF, WRITE, BYOK_CHANGE]),
    (
        "portal_onboard_key",
        &[
            SESSION,
            CSRF,
            WRITE,
            &[NotFound, AlreadyExists, InvalidSource],
        ],
    ),
    ("portal_get_rewrap_job", &[SESSION, &[NotFound]]),
    ("portal_list_events", &[SESSION, &[InvalidCursor]]),
];

/// The codes an operation can answer, in the error table's order, or `None` for an operation the
/// table does not know.
pub fn codes_of(operation_id: &str) -> Option<Vec<ErrorCode>> {
    let (_, sets) = OPERATIONS.iter().find(|(id, _)| *id == operation_id)?;
    let mut codes: Vec<ErrorCode> = ANY.to_vec();
    for code in sets.iter().flat_map(|set| set.iter()) {
        if !codes.contains(code) {
            codes.push(*code);
        }
    }
    // The README table's order, so each response's description lists its codes predictably.
    codes.sort_by_key(|code| ErrorCode::ALL.iter().position(|c| c == code));
    Some(codes)
}

/// Every operation the table knows.
#[cfg(test)]
pub fn operation_ids() -> impl Iterator<Item = &'static str> {
    OPERATIONS.iter().map(|(id, _)| *id)
}
