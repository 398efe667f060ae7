//! The checks on a create request, without a store.

use super::*;

fn code(result: Result<NewKeyRequest<'_>, Error>) -> ErrorCode {
    match result {
        Ok(_) => panic!("request accepted"),
        Err(e) => e.code(),
    }
}

fn scope(json: &str) -> Option<ContextJson> {
    Some(serde_json::from_str(json).unwrap())
}

#[test]
fn names_are_trimmed_and_1_to_100_characters() {
    assert_eq!(
        NewKeyRequest::check("  ci  ", "app", None).unwrap().name,
        "ci"
    );
    assert!(NewKeyRequest::check(&"é".repeat(100), "app", None).is_ok());
    for name in ["", "   ", &"x".repeat(101)] {
        assert_eq!(
            code(NewKeyRequest::check(name, "app", None)),
            ErrorCode::InvalidName
        );
    }
}

#[test]
fn roles_are_app_or_admin() {
    assert!(NewKeyRequest::check("k", "admin", None).unwrap().role == Role::Admin);
    assert_eq!(
        code(NewKeyRequest::check("k", "root", None)),
        ErrorCode::InvalidRole
    );
}

#[test]
fn only_app_keys_take_a_valid_scope() {
    let scoped = NewKeyRequest::check("k", "app", scope(r#"{"organization_id":"org_a"}"#));
    assert!(scoped.unwrap().scope.is_some());
    let admin = NewKeyRequest::check("k", "admin", scope(r#"{"organization_id":"org_a"}"#));
    assert_eq!(code(admin), ErrorCode::InvalidScope);
    assert_eq!(
        code(NewKeyRequest::check("k", "app", scope("{}"))),
        ErrorCode::InvalidContext
    );
}
