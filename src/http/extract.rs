//! Request extraction: the authenticated principal (by role) and JSON bodies whose every failure
//! (malformed JSON, wrong shape, too large) becomes the broker's JSON error, never a text body.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, MatchedPath, Query, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use serde::de::DeserializeOwned;

use super::guard::BodyTimedOut;
use super::server::ClientCertificate;
use crate::auth::{Principal, Role};
use crate::broker::Broker;
use crate::error::{Error, ErrorCode};
use crate::services::refusals::Origin;

/// A caller holding an `app` key.
pub struct AppCaller(pub Principal);

/// A caller holding an `admin` key.
pub struct AdminCaller(pub Principal);

/// A refused request as the audit counts it: method, route template, peer address.
fn origin(parts: &Parts) -> Origin {
    let method = match parts.method {
        // A caller can send any token as a method: only the standard ones are recorded.
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    Origin {
        method,
        route: parts
            .extensions
            .get::<MatchedPath>()
            .map_or("unmatched", MatchedPath::as_str)
            .to_owned(),
        source: parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(address)| address.ip()),
    }
}

/// Every refusal here is counted in `broker.refusals` (see `services::refusals`).
async fn caller_with_role(parts: &Parts, broker: &Broker, role: Role) -> Result<Principal, Error> {
    let header = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let mut principal = match broker.api_keys.identify(header).await {
        Ok(principal) => principal,
        Err(rejection) => {
            broker.refusals.rejected(&origin(parts), &rejection);
            return Err(rejection.into_error());
        }
    };
    super::layers::record_caller(&principal.key_id);
    // The connection's verified client certificate, when the listener requires one: recorded
    // with the key in the audit actor.
    principal.client_certificate = parts
        .extensions
        .get::<ClientCertificate>()
        .map(|certificate| Arc::clone(&certificate.subject));
    if principal.role != role {
        let error = Error::WrongRole;
        broker
            .refusals
            .refused(&origin(parts), "wrong_role", error.code(), &principal);
        return Err(error);
    }
    if let Err(wait) = broker.rate_limiter.check(&principal.key_id) {
        let error = Error::RateLimited(wait);
        broker
            .refusals
            .refused(&origin(parts), "rate_limited", error.code(), &principal);
        return Err(error);
    }
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
