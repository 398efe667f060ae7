//! The OpenAPI 3.1 description of every endpoint, derived from the handlers' `#[utoipa::path]`
//! annotations and the wire types' `ToSchema`, served at `GET /openapi.json` (no auth: it is not
//! secret). `docs/openapi.json` is a committed copy; a test fails when the two differ and prints
//! the command that regenerates it. The error responses come from one table (`errors.rs`), the
//! security schemes are the broker's real ones (`Authorization: Bearer` API keys by role, the
//! portal's session cookie and CSRF header), and `links` chain create → read → update → delete.

mod errors;
mod schemas;

use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{Modify, OpenApi};

use super::errors::ErrorBody;
use super::wire::admin::EventsFormat;
use crate::error::{Error, ErrorCode};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "byok-broker",
        description = "Multi-tenant key broker speaking the WorkOS Vault wire API (`/vault/v1`), with \
            envelope encryption and bring-your-own AWS KMS keys; its admin plane (`/admin/v1`) and the \
            BYOK portal (`/portal`). Every error answer is a JSON `Error` whose `code` is stable."
    ),
    paths(
        super::healthz,
        super::readyz,
        openapi_document,
        super::vault::create_object,
        super::vault::list_objects,
        super::vault::read_object,
        super::vault::read_object_by_name,
        super::vault::describe_object,
        super::vault::update_object,
        super::vault::delete_object,
        super::vault::list_versions,
        super::vault::create_data_key,
        super::vault::decrypt_data_key,
        super::vault::rekey,
        super::admin::create_api_key,
        super::admin::list_api_keys,
        super::admin::revoke_api_key,
        super::admin::list_events,
        super::byok::register,
        super::byok::list,
        super::byok::show,
        super::byok::rotate,
        super::byok::disable,
        super::byok::enable,
        super::byok::retire,
        super::byok::remove,
        super::byok::external_id,
        super::byok::metrics,
        super::rewrap::start,
        super::rewrap::show,
        super::rewrap::cancel,
        super::keks::list,
        super::keks::rotate,
        super::portal::generate_link,
        super::portal::page::index,
        super::portal::page::index_without_slash,
        super::portal::page::script,
        super::portal::page::style,
        super::portal::page::launch,
        super::portal::api::session,
        super::portal::api::sign_out,
        super::portal::api::setup,
        super::portal::api::list,
        super::portal::api::register,
        super::portal::api::show,
        super::portal::api::rotate,
        super::portal::api::disable,
        super::portal::api::enable,
        super::portal::api::retire,
        super::portal::api::onboard,
        super::portal::api::rewrap_job,
        super::portal::api::events,
    ),
    // Referenced from query parameters, which utoipa does not collect on its own.
    components(schemas(ErrorBody, ErrorCode, EventsFormat)),
    modifiers(&SecuritySchemes, &ErrorResponses, &Links),
    tags(
        (name = "vault", description = "The WorkOS Vault data plane: objects and data keys (app keys)"),
        (name = "admin", description = "API keys, audit events and metrics (admin keys)"),
        (name = "byok", description = "Tenants' own KMS keys (admin keys)"),
        (name = "rewrap", description = "Moving objects between keys (admin keys)"),
        (name = "keks", description = "The platform KEK inventory (admin keys)"),
        (name = "portal", description = "The BYOK setup page and its API (portal sessions)"),
        (name = "health", description = "Liveness, readiness and this document"),
    )
)]
struct ApiDoc;

/// The document as served and committed: pretty JSON and a final newline.
pub fn document() -> Result<String, serde_json::Error> {
    let mut json = ApiDoc::openapi().to_pretty_json()?;
    json.push('\n');
    Ok(json)
}

/// Built once: the document does not change while the process runs.
static DOCUMENT: LazyLock<Result<String, String>> =
    LazyLock::new(|| document().map_err(|e| e.to_string()));

/// This document.
#[utoipa::path(get, path = "/openapi.json", operation_id = "openapi_document", tag = "health",
    responses((status = 200, description = "The OpenAPI 3.1 description of this broker", body = Object)))]
pub async fn openapi_document() -> Response {
    match &*DOCUMENT {
        Ok(json) => ([(CONTENT_TYPE, "application/json")], json.clone()).into_response(),
        Err(e) => Error::Internal(format!("OpenAPI document: {e}")).into_response(),
    }
}

/// The broker's ways to authenticate (`src/auth.rs`, `src/http/portal/session.rs`).
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |description: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(description))
                    .build(),
            )
        };
        components.add_security_scheme(
            "app_key",
            bearer("An API key of role `app` (`Authorization: Bearer <key>`): the data plane."),
        );
        components.add_security_scheme(
            "admin_key",
            bearer("An API key of role `admin` (`Authorization: Bearer <key>`): the admin plane."),
        );
        components.add_security_scheme(
            "portal_session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "byok_portal",
                "The portal session cookie `GET /portal/launch` sets. The portal API refuses any \
                 `Authorization` header.",
            ))),
        );
        components.add_security_scheme(
            "portal_csrf",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-CSRF-Token",
                "The session's `csrf_token` (`GET /portal/api/session`), required on every \
                 state-changing portal request, which must also come from the portal's own origin.",
            ))),
        );
    }
}

/// Every `method` → operation of the document, mutably.
fn operations(openapi: &mut utoipa::openapi::OpenApi) -> impl Iterator<Item = &mut Operation> {
    openapi.paths.paths.values_mut().flat_map(|item| {
        [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .filter_map(Option::as_mut)
    })
}

/// One error response per status an operation can answer, naming its codes; JSON `Error` bodies,
/// with `Retry-After` where the broker sends it.
struct ErrorResponses;

impl Modify for ErrorResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for operation in operations(openapi) {
            let id = operation.operation_id.clone().unwrap_or_default();
            // An operation missing from the table gets no error responses; a test catches it.
            let Some(codes) = errors::codes_of(&id) else {
                continue;
            };
            let mut by_status: BTreeMap<u16, Vec<ErrorCode>> = BTreeMap::new();
            for code in codes {
                by_status
                    .entry(code.status().as_u16())
                    .or_default()
                    .push(code);
            }
            for (status, codes) in by_status {
                let names: Vec<String> = codes.iter().map(|c| format!("`{c}`")).collect();
                let description = format!("Error codes: {}", names.join(", "));
                let content = ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Error")))
                    .build();
                let key = status.to_string();
                match operation.responses.responses.get_mut(&key) {
                    // A documented non-JSON answer with this status (the portal's launch page).
                    Some(RefOr::T(existing)) => {
                        existing.description = format!("{}. {description}", existing.description);
                        existing
                            .content
                            .insert("application/json".into(), RefOr::T(content));
                    }
                    _ => {
                        let mut response = ResponseBuilder::new()
                            .description(description)
                            .content("application/json", content);
                        if status == 429 || status == 503 {
                            response = response.header(
                                "Retry-After",
                                HeaderBuilder::new()
                                    .schema(Some(ObjectBuilder::new().schema_type(Type::Integer)))
                                    .description(Some("Seconds to wait before retrying"))
                                    .build(),
                            );
                        }
                        operation
                            .responses
                            .responses
                            .insert(key, RefOr::T(response.build()));
                    }
                }
            }
        }
    }
}

/// Where an answer names the resource another operation takes: (operation, status, target
/// operation, target parameter, runtime expression).
const LINKS: &[(&str, &str, &str, &str, &str)] = &[
    (
        "create_object",
        "201",
        "read_object",
        "id",
        "$response.body#/id",
    ),
    (
        "create_object",
        "201",
        "describe_object",
        "id",
        "$response.body#/id",
    ),
    (
        "create_object",
        "201",
        "update_object",
        "id",
        "$response.body#/id",
    ),
    (
        "create_object",
        "201",
        "list_versions",
        "id",
        "$response.body#/id",
    ),
    (
        "create_object",
        "201",
        "delete_object",
        "id",
        "$response.body#/id",
    ),
    (
        "read_object",
        "200",
        "read_object_by_name",
        "name",
        "$response.body#/name",
    ),
    (
        "update_object",
        "201",
        "read_object",
        "id",
        "$response.body#/id",
    ),
    (
        "update_object",
        "201",
        "delete_object",
        "id",
        "$response.body#/id",
    ),
    (
        "create_api_key",
        "201",
        "revoke_api_key",
        "id",
        "$response.body#/id",
    ),
    (
        "register_byok_key",
        "201",
        "get_byok_key",
        "id",
        "$response.body#/id",
    ),
    (
        "register_byok_key",
        "201",
        "rotate_byok_key",
        "id",
        "$response.body#/id",
    ),
    (
        "register_byok_key",
        "201",
        "disable_byok_key",
        "id",
        "$response.body#/id",
    ),
    (
        "register_byok_key",
        "201",
        "enable_byok_key",
        "id",
        "$response.body#/id",
    ),
    (
        "register_byok_key",
        "201",
        "retire_byok_key",
        "id",
        "$response.body#/id",
    ),
    (
        "register_byok_key",
        "201",
        "delete_byok_key",
        "id",
        "$response.body#/id",
    ),
    (
        "start_rewrap_job",
        "202",
        "get_rewrap_job",
        "id",
        "$response.body#/id",
    ),
    (
        "start_rewrap_job",
        "202",
        "cancel_rewrap_job",
        "id",
        "$response.body#/id",
    ),
    (
        "list_platform_keks",
        "200",
        "rotate_platform_kek",
        "id",
        "$response.body#/data/0/id",
    ),
    (
        "list_byok_keys",
        "200",
        "get_byok_key",
        "id",
        "$response.body#/data/0/id",
    ),
    (
        "list_byok_keys",
        "200",
        "rotate_byok_key",
        "id",
        "$response.body#/data/0/id",
    ),
    (
        "list_byok_keys",
        "200",
        "disable_byok_key",
        "id",
        "$response.body#/data/0/id",
    ),
    (
        "list_byok_keys",
        "200",
        "enable_byok_key",
        "id",
        "$response.body#/data/0/id",
    ),
    (
        "list_byok_keys",
        "200",
        "retire_byok_key",
        "id",
        "$response.body#/data/0/id",
    ),
    (
        "list_byok_keys",
        "200",
        "delete_byok_key",
        "id",
        "$response.body#/data/0/id",
    ),
    (
        "portal_register_key",
        "201",
        "portal_get_key",
        "id",
        "$response.body#/id",
    ),
    (
        "portal_list_keys",
        "200",
        "portal_get_key",
        "id",
        "$response.body#/data/0/id",
    ),
    (
        "portal_list_keys",
        "200",
        "portal_rotate_key",
        "id",
        "$response.body#/data/0/id",
    ),
    (
        "portal_list_keys",
        "200",
        "portal_disable_key",
        "id",
        "$response.body#/data/0/id",
    ),
    (
        "portal_list_keys",
        "200",
        "portal_enable_key",
        "id",
        "$response.body#/data/0/id",
    ),
    (
        "portal_list_keys",
        "200",
        "portal_retire_key",
        "id",
        "$response.body#/data/0/id",
    ),
    (
        "portal_list_keys",
        "200",
        "portal_onboard_key",
        "id",
        "$response.body#/data/0/id",
    ),
];

/// The OpenAPI `links` of [`LINKS`]: what schemathesis's stateful phase follows.
struct Links;

impl Modify for Links {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for operation in operations(openapi) {
            let id = operation.operation_id.clone().unwrap_or_default();
            for (_, status, target, parameter, expression) in
                LINKS.iter().filter(|(source, ..)| *source == id)
            {
                if let Some(RefOr::T(response)) = operation.responses.responses.get_mut(*status) {
                    let link = LinkBuilder::new()
                        .operation_id(*target)
                        .parameter(*parameter, *expression)
                        .build();
                    response.links.insert((*target).to_owned(), RefOr::T(link));
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
