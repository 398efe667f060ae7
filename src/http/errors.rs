//! Error → HTTP response: `{"error", "message", "code"}` with the status from `Error`, a
//! `Retry-After` on 503, and the cause logged (5xx detail stays in the log).

use axum::Json;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::Error;

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            tracing::error!(code, error = %self, detail = ?self, "request failed");
        } else if matches!(self, Error::KeyUnavailable { .. } | Error::KeyRevoked) {
            tracing::warn!(code, error = %self, "refused: tenant key not usable");
        }
        // Both SDK generations honour Retry-After when they retry 429 and 503.
        let retry_after = match &self {
            Error::RateLimited(wait) => Some(wait.as_secs() + 1),
            Error::IdempotencyInFlight => Some(1),
            Error::KekQuotaExceeded(wait) => Some(wait.as_secs().max(1)),
            _ if status == StatusCode::SERVICE_UNAVAILABLE => Some(1),
            _ => None,
        };
        let mut response = error_response(status, code, &self.public_message());
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from(seconds));
        }
        response
    }
}

pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": message, "message": message, "code": code})),
    )
        .into_response()
}
