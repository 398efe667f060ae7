//! Request extraction: the authenticated principal (by role) and JSON bodies whose every failure
//! (malformed JSON, wrong shape, too large) becomes the broker's JSON error, never a text body.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::guard::BodyTimedOut;
use super::server::ClientCertificate;
use crate::auth::{Principal, Role};
use crate::broker::Broker;
use crate::error::{Error, ErrorCode};

/// A caller holding an `app` key.
pub struct AppCaller(pub Principal);

/// A caller holding an `admin` key.
pub struct AdminCaller(pub Principal);

async fn caller_with_role(parts: &Parts, broker: &Broker, role: Role) -> Result<Principal, Error> {
    let header = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let mut principal = broker.api_keys.authenticate(header).await?;
    super::layers::record_caller(&principal.key_id);
    // The connection's verified client certificate, when the listener requires one: recorded
    // with the key in the audit actor.
    principal.client_certificate = parts
        .extensions
        .get::<ClientCertificate>()
        .map(|certificate| Arc::clone(&certificate.subject));
    if principal.role != role {
        return Err(Error::WrongRole);
    }
    broker
        .rate_limiter
        .check(&principal.key_id)
        .map_err(Error::RateLimited)?;
    Ok(principal)
}

impl FromRequestParts<Arc<Broker>> for AppCaller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, broker: &Arc<Broker>) -> Result<Self, Error> {
        caller_with_role(parts, broker, Role::App)
            .await
            .map(AppCaller)
    }
}

impl FromRequestParts<Arc<Broker>> for AdminCaller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, broker: &Arc<Broker>) -> Result<Self, Error> {
        caller_with_role(parts, broker, Role::Admin)
            .await
            .map(AdminCaller)
    }
}

/// A query string parsed with serde into a typed struct. axum's own `Query` rejection is a
/// text/plain 400; this maps it to the broker's JSON 422 `invalid_request` instead. Parameters the
/// struct does not name are ignored (clients may send more than the broker reads).
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned> FromRequestParts<Arc<Broker>> for QueryParams<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _broker: &Arc<Broker>) -> Result<Self, Error> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(query)| QueryParams(query))
            .map_err(|e| Error::invalid(ErrorCode::InvalidRequest, e.body_text()))
    }
}

/// A JSON body parsed with serde; rejections map to 400/413/422 JSON errors.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Arc<Broker>> for JsonBody<T> {
    type Rejection = Error;

    async fn from_request(request: Request, broker: &Arc<Broker>) -> Result<Self, Error> {
        let RawBody(bytes) = RawBody::from_request(request, broker).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// The raw body, for handlers that hash it (idempotency) before parsing.
pub struct RawBody(pub Bytes);

impl FromRequest<Arc<Broker>> for RawBody {
    type Rejection = Error;

    async fn from_request(request: Request, broker: &Arc<Broker>) -> Result<Self, Error> {
        Bytes::from_request(request, broker)
            .await
            .map(RawBody)
            .map_err(|e: BytesRejection| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    Error::PayloadTooLarge
                } else if caused_by_body_deadline(&e) {
                    Error::BodyTimeout
                } else {
                    Error::invalid(ErrorCode::InvalidBody, e.body_text())
                }
            })
    }
}

/// Whether buffering failed because the body missed the deadline `guard` puts on it.
fn caused_by_body_deadline(rejection: &BytesRejection) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(rejection);
    while let Some(error) = cause {
        if error.is::<BodyTimedOut>() {
            return true;
        }
        cause = error.source();
    }
    false
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|e| {
        let code = if e.is_data() {
            ErrorCode::InvalidRequest
        } else {
            ErrorCode::InvalidJson
        };
        Error::invalid(code, format!("request body: {e}"))
    })
}
