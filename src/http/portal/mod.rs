//! `/portal`: the BYOK setup page a tenant's IT admin opens from a link, and its API.
//! - `POST /portal/generate_link` (admin key; WorkOS wire): `{organization, intent, return_url?,
//!   success_url?}` → `{"link"}`, a single-use link.
//! - `GET /portal/launch?token=…`: consumes the link, sets the session cookie (`HttpOnly`,
//!   `SameSite=Strict`, `Secure` over TLS) and moves on to the page.
//! - `GET /portal/`, `/portal/portal.js`, `/portal/portal.css`: the page, compiled into the binary.
//! - `/portal/api/*` (`api.rs`): the page's API. Only the session cookie authenticates there, never
//!   an API key; every request is confined to the session's organization; every state-changing
//!   request needs the session's CSRF token and must not come from another site.

// Visible to `http::openapi`, which lists their handlers.
pub(in crate::http) mod api;
pub(in crate::http) mod page;
mod session;

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{AdminCaller, JsonBody};
use crate::broker::Broker;
use crate::error::Error;

pub fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route("/portal/generate_link", post(generate_link))
        .merge(page::routes())
        .merge(api::routes())
}

/// `POST /portal/generate_link` as the WorkOS SDKs send it (they add `intent_options` and
/// `admin_emails`, which this broker does not use).
#[derive(Deserialize, ToSchema)]
struct GenerateLinkRequest {
    organization: String,
    /// `bring_your_own_key`, the one intent this broker serves. Optional in the Python SDK's
    /// signature: a missing intent is `invalid_intent` too.
    #[serde(default)]
    #[schema(pattern = "^bring_your_own_key$")]
    intent: Option<String>,
    #[serde(default)]
    return_url: Option<String>,
    #[serde(default)]
    success_url: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct GeneratedLink<'a> {
    link: &'a str,
}

/// A single-use link to the BYOK setup page for an organization (intent `bring_your_own_key`).
#[utoipa::path(post, path = "/portal/generate_link", operation_id = "generate_portal_link", tag = "portal",
    security(("admin_key" = [])), request_body = GenerateLinkRequest,
    responses((status = 201, description = "The link", body = GeneratedLink)))]
async fn generate_link(
    State(broker): State<Arc<Broker>>,
    AdminCaller(admin): AdminCaller,
    JsonBody(body): JsonBody<GenerateLinkRequest>,
) -> Result<Response, Error> {
    let base = base_url(&broker);
    let link = broker
        .portal
        .generate_link(
            &admin,
            &body.organization,
            body.intent.as_deref().unwrap_or_default(),
            body.return_url,
            body.success_url,
            &base,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(GeneratedLink {
            link: link.as_str(),
        }),
    )
        .into_response())
}

/// Where links point: `portal.public_url`, else the listener's own address and scheme.
fn base_url(broker: &Broker) -> String {
    match &broker.config.portal.public_url {
        Some(url) => url.clone(),
        None => {
            let scheme = if broker.config.tls.is_some() {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{}", broker.config.listen)
        }
    }
}
