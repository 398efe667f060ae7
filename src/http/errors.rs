//! Error → HTTP response: `{"error", "message", "code"}` with the status from `Error`, a
//! `Retry-After` on 503, and the cause logged (5xx detail stays in the log).

use axum::Json;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{Error, ErrorCode};

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let code = self.code();
        let status = code.status();
        if matches!(self, Error::KmsBusy(_)) {
            // Capacity, by design under a flood: a warning, not an error line per refusal.
            tracing::warn!(code = code.as_str(), error = %self, "refused: no KMS capacity in time");
        } else if status.is_server_error() {
            tracing::error!(code = code.as_str(), error = %self, detail = ?self, "request failed");
        } else if matches!(self, Error::KeyUnavailable { .. } | Error::KeyRevoked) {
            tracing::warn!(code = code.as_str(), error = %self, "refused: tenant key not usable");
        }
        // Both SDK generations honour Retry-After when they retry 429 and 503.
        let retry_after = match &self {
            Error::RateLimited(wait) => Some(wait.as_secs() + 1),
            Error::IdempotencyInFlight => Some(1),
            Error::KekQuotaExceeded(wait) => Some(wait.as_secs().max(1)),
            _ if status == StatusCode::SERVICE_UNAVAILABLE => Some(1),
            _ => None,
        };
        let mut response = error_response(code, &self.public_message());
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from(seconds));
        }
        response
    }
}

/// The JSON error body. Fields in alphabetical order: the bytes match what earlier releases sent
/// (a `serde_json::Map` without `preserve_order` sorts its keys).
#[derive(Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody<'a> {
    pub code: ErrorCode,
    /// The message again, under the name the WorkOS SDKs read.
    pub error: &'a str,
    pub message: &'a str,
}

impl<'a> ErrorBody<'a> {
    pub fn new(code: ErrorCode, message: &'a str) -> Self {
        Self {
            code,
            error: message,
            message,
        }
    }
}

/// An error answer with the code's status and the JSON body.
pub fn error_response(code: ErrorCode, message: &str) -> Response {
    (code.status(), Json(ErrorBody::new(code, message))).into_response()
}
