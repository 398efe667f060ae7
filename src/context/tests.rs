//! Unit and property tests for key contexts: validation messages, canonical form, hash identity.

use super::*;
use proptest::prelude::*;

fn ctx(pairs: &[(&str, &str)]) -> KeyContext {
    KeyContext::new(pairs.iter().copied()).expect("valid context")
}

#[test]
fn valid_context_round_trips_through_json() {
    let json = serde_json::json!({"organization_id": "org_acme", "data_type": "pii"});
    let context = KeyContext::from_json(&json).unwrap();
    assert_eq!(context.get("organization_id"), Some("org_acme"));
    assert_eq!(serde_json::to_value(&context).unwrap(), json);
}

#[test]
fn every_violation_is_named() {
    assert_eq!(
        KeyContext::new(Vec::<(String, String)>::new()),
        Err(ContextError::Empty)
    );
    let eleven: Vec<_> = (0..11)
        .map(|i| (format!("k{i}"), "v".to_string()))
        .collect();
    assert_eq!(
        KeyContext::new(eleven),
        Err(ContextError::TooManyPairs { count: 11 })
    );
    assert_eq!(KeyContext::new([("", "v")]), Err(ContextError::EmptyName));
    let long_name = "n".repeat(121);
    let err = KeyContext::new([(long_name.as_str(), "v")]).unwrap_err();
    assert!(
        matches!(err, ContextError::NameTooLong { chars: 121, .. }),
        "{err}"
    );
    let err = KeyContext::new([("org", "")]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "key context value for \"org\" is empty; values must be 1-500 characters"
    );
    let err = KeyContext::new([("org", "v".repeat(501))]).unwrap_err();
    assert_eq!(
        err,
        ContextError::ValueTooLong {
            name: "org".into(),
            chars: 501
        }
    );
    let err = KeyContext::from_json(&serde_json::json!({"org": 5})).unwrap_err();
    assert_eq!(err, ContextError::NotAString { name: "org".into() });
    assert_eq!(
        KeyContext::from_json(&serde_json::json!(["a"])),
        Err(ContextError::NotAnObject)
    );
    assert_eq!(
        KeyContext::new([("a", "1"), ("a", "2")]),
        Err(ContextError::DuplicateName { name: "a".into() })
    );
}

#[test]
fn limits_count_characters_not_bytes() {
    // 120 three-byte characters is 360 bytes but within the 120-character limit.
    assert!(KeyContext::new([("é".repeat(120), "v".to_string())]).is_ok());
    assert!(KeyContext::new([("k".to_string(), "€".repeat(500))]).is_ok());
}

#[test]
fn subset_matching() {
    let full = ctx(&[("organization_id", "org_acme"), ("data_type", "pii")]);
    assert!(full.contains(&ctx(&[("organization_id", "org_acme")])));
    assert!(full.contains(&full));
    assert!(!full.contains(&ctx(&[("organization_id", "org_other")])));
    assert!(!full.contains(&ctx(&[("region", "eu")])));
}

#[test]
fn canonical_encoding_is_injective_where_naive_joining_is_not() {
    // "a=b,c" + "d" versus "a" + "b,c=d": a separator-joined encoding would confuse these.
    let one = ctx(&[("a", "b,c=d")]);
    let two = ctx(&[("a", "b"), ("c", "d")]);
    assert_ne!(one.canonical_bytes(), two.canonical_bytes());
    assert_ne!(one.hash(), two.hash());
}

#[test]
fn hash_is_stable_across_releases() {
    // Platform KEK aliases derive from this hash: changing it would orphan every platform KEK.
    // The expected value was computed independently (Python hashlib over the documented layout).
    let context = ctx(&[("organization_id", "org_acme")]);
    assert_eq!(
        context.hash().to_hex(),
        "57e8fcf76d3db8203b557c240101b20e8193b2e2601596f345d04890bb296425"
    );
}

fn pair_strategy() -> impl Strategy<Value = (String, String)> {
    ("[a-z_]{1,12}", "\\PC{1,20}")
}

proptest! {
    #[test]
    fn canonical_form_ignores_insertion_order(pairs in prop::collection::btree_map("[a-z_]{1,12}", "\\PC{1,20}", 1..=10)) {
        let forward: Vec<_> = pairs.clone().into_iter().collect();
        let mut backward = forward.clone();
        backward.reverse();
        let a = KeyContext::new(forward).unwrap();
        let b = KeyContext::new(backward).unwrap();
        prop_assert_eq!(a.canonical_bytes(), b.canonical_bytes());
        prop_assert_eq!(a.hash(), b.hash());
        prop_assert_eq!(KeyContext::from_canonical_bytes(&a.canonical_bytes()), Some(a));
    }

    #[test]
    fn distinct_contexts_have_distinct_hashes(
        a in prop::collection::vec(pair_strategy(), 1..=4),
        b in prop::collection::vec(pair_strategy(), 1..=4),
    ) {
        let (Ok(a), Ok(b)) = (KeyContext::new(a), KeyContext::new(b)) else { return Ok(()) };
        prop_assert_eq!(a == b, a.hash() == b.hash());
        prop_assert_eq!(a == b, a.canonical_bytes() == b.canonical_bytes());
    }

    #[test]
    fn parsing_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Some(context) = KeyContext::from_canonical_bytes(&bytes) {
            prop_assert_eq!(context.canonical_bytes(), bytes);
        }
    }
}

#[test]
fn duplicate_names_in_json_are_refused_not_overwritten() {
    let text = r#"{"organization_id":"a","organization_id":"b"}"#;
    let parsed: crate::context::json::ContextJson = serde_json::from_str(text).unwrap();
    assert_eq!(
        parsed.into_context(),
        Err(ContextError::DuplicateName {
            name: "organization_id".into()
        })
    );
    let err = serde_json::from_str::<KeyContext>(text).unwrap_err();
    assert!(err.to_string().contains("appears twice"), "{err}");
    // Not an object, or a non-string value: the same errors as `from_json`.
    let number: crate::context::json::ContextJson = serde_json::from_str("7").unwrap();
    assert_eq!(number.into_context(), Err(ContextError::NotAnObject));
    let list: crate::context::json::ContextJson =
        serde_json::from_str(r#"["a", {"b": 1}]"#).unwrap();
    assert_eq!(list.into_context(), Err(ContextError::NotAnObject));
    let nested: crate::context::json::ContextJson =
        serde_json::from_str(r#"{"a": {"a": "x", "a": "y"}}"#).unwrap();
    assert_eq!(
        nested.into_context(),
        Err(ContextError::NotAString { name: "a".into() })
    );
    let fine: crate::context::json::ContextJson =
        serde_json::from_str(r#"{"b":"2","a":"1"}"#).unwrap();
    assert_eq!(fine.into_context(), Ok(ctx(&[("a", "1"), ("b", "2")])));
}
