//! The portal's caller: a live session named by its cookie. An `Authorization` header is refused
//! outright (the portal never accepts admin or app keys), and a state-changing request must carry
//! the session's CSRF token in `X-CSRF-Token` and must not come from another site (`Origin`,
//! `Sec-Fetch-Site`), on top of the cookie's `SameSite=Strict`.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::{AUTHORIZATION, COOKIE, HOST, ORIGIN};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};
use zeroize::Zeroizing;

use crate::broker::Broker;
use crate::error::{Error, ErrorCode};
use crate::services::portal::{Portal, PortalSession};

/// The session cookie's name.
pub const COOKIE_NAME: &str = "byok_portal";
/// The header the page sends its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// A request of a live portal session.
pub struct PortalCaller {
    pub session: PortalSession,
    /// The cookie's secret: for the CSRF token and sign-out; never logged.
    pub secret: Zeroizing<String>,
}

/// The `Set-Cookie` value that starts a session (`None`: the one that ends it).
pub fn set_cookie(secret: Option<&str>, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    match secret {
        Some(secret) => {
            format!("{COOKIE_NAME}={secret}; Path=/portal; HttpOnly; SameSite=Strict{secure}")
        }
        None => {
            format!("{COOKIE_NAME}=; Path=/portal; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
        }
    }
}

fn cookie_secret(headers: &HeaderMap) -> Option<Zeroizing<String>> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| Zeroizing::new(value.to_owned()))
        .filter(|value| !value.is_empty())
}

fn session_required(message: &str) -> Error {
    Error::invalid(ErrorCode::PortalSessionRequired, message)
}

fn csrf_failed(message: &str) -> Error {
    Error::invalid(ErrorCode::CsrfCheckFailed, message)
}

/// Refuses a request another site sent: browsers set `Sec-Fetch-Site` and, on POST, `Origin`.
fn check_same_site(headers: &HeaderMap) -> Result<(), Error> {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = header("sec-fetch-site")
        && site != "same-origin"
    {
        return Err(csrf_failed(
            "the portal accepts changes from its own page only",
        ));
    }
    if let Some(origin) = header(ORIGIN.as_str()) {
        let origin_host = origin.split_once("://").map(|(_, host)| host);
        if origin_host.is_none() || origin_host != header(HOST.as_str()) {
            return Err(csrf_failed(
                "the portal accepts changes from its own page only",
            ));
        }
    }
    Ok(())
}

impl FromRequestParts<Arc<Broker>> for PortalCaller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, broker: &Arc<Broker>) -> Result<Self, Error> {
        if parts.headers.contains_key(AUTHORIZATION) {
            return Err(session_required(
                "the portal API accepts a portal session only, never an API key",
            ));
        }
        let secret = cookie_secret(&parts.headers)
            .ok_or_else(|| session_required("no portal session: open a new portal link"))?;
        let session = broker.portal.authenticate(&secret).await?.ok_or_else(|| {
            session_required("the portal session has ended or expired: open a new portal link")
        })?;
        if !matches!(parts.method, Method::GET | Method::HEAD) {
            check_same_site(&parts.headers)?;
            let presented = parts
                .headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !Portal::csrf_matches(&secret, presented) {
                return Err(csrf_failed("missing or wrong CSRF token"));
            }
        }
        Ok(Self { session, secret })
    }
}
