use std::collections::BTreeSet;

use serde_json::Value;

use super::*;

/// The committed copy, next to the README.
const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
/// The one line that rewrites it.
const REGENERATE: &str = "BYOK_UPDATE_OPENAPI=1 cargo test --lib http::openapi";

fn parsed() -> Value {
    serde_json::from_str(&document().unwrap()).unwrap()
}

fn operation_ids(document: &Value) -> Vec<String> {
    let mut ids = Vec::new();
    for item in document["paths"].as_object().unwrap().values() {
        for operation in item.as_object().unwrap().values() {
            ids.push(operation["operationId"].as_str().unwrap().to_owned());
        }
    }
    ids
}

#[test]
fn committed_copy_is_current() {
    let served = document().unwrap();
    if std::env::var_os("BYOK_UPDATE_OPENAPI").is_some() {
        std::fs::write(COMMITTED, &served).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(COMMITTED).unwrap_or_default();
    assert!(
        committed == served,
        "docs/openapi.json differs from the document the code describes: regenerate it with `{REGENERATE}`"
    );
}

#[test]
fn is_openapi_3_1() {
    assert_eq!(parsed()["openapi"], "3.1.0");
}

#[test]
fn every_operation_has_a_unique_id_and_a_row_in_the_error_table() {
    let document = parsed();
    let ids = operation_ids(&document);
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "duplicate operation ids: {ids:?}");
    for id in &ids {
        assert!(
            errors::codes_of(id).is_some(),
            "{id} has no row in openapi/errors.rs"
        );
    }
    for id in errors::operation_ids() {
        assert!(
            ids.iter().any(|i| i == id),
            "errors.rs names {id}, which is not an operation"
        );
    }
}

#[test]
fn links_name_real_operations() {
    let ids = operation_ids(&parsed());
    for (source, _, target, ..) in LINKS {
        assert!(ids.iter().any(|i| i == source), "{source}");
        assert!(ids.iter().any(|i| i == target), "{target}");
    }
}

#[test]
fn error_schema_lists_every_code_and_responses_use_it() {
    let document = parsed();
    let codes = &document["components"]["schemas"]["ErrorCode"]["enum"];
    let expected: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(codes, &serde_json::json!(expected));
    let error = &document["paths"]["/vault/v1/kv/{id}"]["get"]["responses"]["404"];
    assert_eq!(
        error["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Error"
    );
    assert!(
        error["description"]
            .as_str()
            .unwrap()
            .contains("`not_found`")
    );
}

#[test]
fn api_key_operations_name_their_role_and_portal_changes_need_the_csrf_token() {
    let document = parsed();
    let security = |path: &str, method: &str| document["paths"][path][method]["security"].clone();
    assert_eq!(
        security("/vault/v1/kv", "post"),
        serde_json::json!([{"app_key": []}])
    );
    assert_eq!(
        security("/admin/v1/api-keys", "get"),
        serde_json::json!([{"admin_key": []}])
    );
    assert_eq!(
        security("/portal/api/keys", "post"),
        serde_json::json!([{"portal_csrf": [], "portal_session": []}])
    );
    assert_eq!(security("/healthz", "get"), Value::Null);
}
