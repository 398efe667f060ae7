//! The `Idempotency-Key` header of creates: validated (1–255 printable ASCII characters, else 422;
//! a key is never silently ignored), and a stored response replayed. The claim, wait and replay
//! decisions are `Vault::create_object_idempotent`'s.

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::error::{Error, ErrorCode};

/// Longest key accepted (Stripe's bound; the SDKs send `retry-<uuid>`, 42 characters).
pub const MAX_KEY_CHARS: usize = 255;

/// The request's `Idempotency-Key`, if any; present but malformed (or repeated) is an error.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Error> {
    let mut values = headers.get_all("idempotency-key").iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let bytes = value.as_bytes();
    let printable = bytes.iter().all(|b| (0x20..=0x7e).contains(b));
    if values.next().is_some() || bytes.is_empty() || bytes.len() > MAX_KEY_CHARS || !printable {
        return Err(Error::invalid(
            ErrorCode::InvalidIdempotencyKey,
            format!(
                "Idempotency-Key must be one header of 1-{MAX_KEY_CHARS} printable ASCII characters"
            ),
        ));
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// The stored first response to a create, sent again for a retry.
pub fn replay(status: u16, body: &str) -> Result<Response, Error> {
    let status = StatusCode::from_u16(status)
        .map_err(|e| Error::Internal(format!("stored idempotent status: {e}")))?;
    let body: Value = serde_json::from_str(body)
        .map_err(|e| Error::Internal(format!("stored idempotent body: {e}")))?;
    Ok((status, Json(body)).into_response())
}
