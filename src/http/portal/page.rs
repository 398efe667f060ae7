//! The page itself: plain HTML, JavaScript and CSS compiled into the binary (no build step, no
//! external assets), served with a strict Content-Security-Policy; and `/portal/launch`, where a
//! link becomes a session. The page holds no data: the script loads everything from the portal
//! API, and puts every value into the DOM as text, never as markup.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use utoipa::IntoParams;

use super::session::set_cookie;
use crate::broker::Broker;
use crate::error::Error;

use super::super::extract::QueryParams;

const INDEX_HTML: &str = include_str!("assets/index.html");
const PORTAL_JS: &str = include_str!("assets/portal.js");
const PORTAL_CSS: &str = include_str!("assets/portal.css");

/// Same-origin script, style and fetches only; no inline script or style, no frames, no plugins.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
     img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route("/portal", get(index_without_slash))
        .route("/portal/", get(index))
        .route("/portal/portal.js", get(script))
        .route("/portal/portal.css", get(style))
        .route("/portal/launch", get(launch))
}

/// Headers every portal answer carries.
pub fn secured(status: StatusCode, content_type: &'static str, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    let pairs: [(HeaderName, &'static str); 6] = [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    for (name, value) in pairs {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[utoipa::path(get, path = "/portal/", operation_id = "portal_page", tag = "portal",
    responses((status = 200, description = "The BYOK setup page", body = String, content_type = "text/html; charset=utf-8")))]
async fn index() -> Response {
    secured(
        StatusCode::OK,
        "text/html; charset=utf-8",
        INDEX_HTML.into(),
    )
}

/// The same page at `/portal`: its own operation, so the description names both paths.
#[utoipa::path(get, path = "/portal", operation_id = "portal_page_without_slash", tag = "portal",
    responses((status = 200, description = "The BYOK setup page", body = String,
        content_type = "text/html; charset=utf-8")))]
async fn index_without_slash() -> Response {
    index().await
}

#[utoipa::path(get, path = "/portal/portal.js", operation_id = "portal_script", tag = "portal",
    responses((status = 200, description = "The page's script", body = String, content_type = "text/javascript; charset=utf-8")))]
async fn script() -> Response {
    secured(
        StatusCode::OK,
        "text/javascript; charset=utf-8",
        PORTAL_JS.into(),
    )
}

#[utoipa::path(get, path = "/portal/portal.css", operation_id = "portal_style", tag = "portal",
    responses((status = 200, description = "The page's style sheet", body = String, content_type = "text/css; charset=utf-8")))]
async fn style() -> Response {
    secured(StatusCode::OK, "text/css; charset=utf-8", PORTAL_CSS.into())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct LaunchQuery {
    /// The link's single-use token.
    #[serde(default)]
    token: String,
}

/// A small page rather than a redirect: a `SameSite=Strict` cookie is not sent on a redirect that
/// a cross-site click (the link in an email) started, but is on the same-site navigation this
/// page makes. The token stays out of the page, and `no-referrer` keeps it out of later requests.
#[utoipa::path(get, path = "/portal/launch", operation_id = "portal_launch", tag = "portal",
    params(LaunchQuery),
    responses(
        (status = 200, description = "The session started: a page that moves on to `/portal/` (sets the `byok_portal` cookie)",
            body = String, content_type = "text/html; charset=utf-8"),
        (status = 403, description = "The link has expired or was already used", body = String,
            content_type = "text/html; charset=utf-8")))]
async fn launch(
    State(broker): State<Arc<Broker>>,
    QueryParams(query): QueryParams<LaunchQuery>,
) -> Result<Response, Error> {
    let opened = if query.token.is_empty() {
        None
    } else {
        broker.portal.open(&query.token).await?
    };
    let Some(opened) = opened else {
        return Ok(secured(
            StatusCode::FORBIDDEN,
            "text/html; charset=utf-8",
            message_page(
                "This link cannot be used",
                "It has expired or was already used. Ask your provider for a new link.",
            ),
        ));
    };
    let mut response = secured(StatusCode::OK, "text/html; charset=utf-8", continue_page());
    let cookie = set_cookie(Some(&opened.secret), broker.config.tls.is_some());
    let value = HeaderValue::from_str(&cookie)
        .map_err(|e| Error::Internal(format!("session cookie: {e}")))?;
    response.headers_mut().insert(header::SET_COOKIE, value);
    Ok(response)
}

fn continue_page() -> String {
    "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
     <meta http-equiv=\"refresh\" content=\"0;url=/portal/\">\
     <title>Bring your own key</title><link rel=\"stylesheet\" href=\"/portal/portal.css\"></head>\
     <body><main><h1>Bring your own key</h1><p><a id=\"continue\" href=\"/portal/\">Continue to the setup page</a></p></main></body></html>"
        .into()
}

/// A fixed page: both texts are constants of this file, never request data.
fn message_page(title: &'static str, text: &'static str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <link rel=\"stylesheet\" href=\"/portal/portal.css\"></head>\
         <body><main><h1>{title}</h1><p id=\"message\">{text}</p></main></body></html>"
    )
}
