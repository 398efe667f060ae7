//! The typed admin bodies serialize to the same bytes as the `json!` bodies they replaced.

use serde_json::{Value, json};

use super::*;

fn record(scope_json: Option<&str>) -> ApiKeyRecord {
    ApiKeyRecord {
        id: "key_1".into(),
        name: "ci".into(),
        role: "app".into(),
        scope_json: scope_json.map(str::to_owned),
        key_hash: Vec::new(),
        created_at: "2024-01-01T00:00:00Z".into(),
        revoked_at: None,
    }
}

/// What the handler used to build for a key.
fn old_api_key_json(record: &ApiKeyRecord) -> Value {
    let scope: Option<Value> = record
        .scope_json
        .as_ref()
        .map(|json| serde_json::from_str(json).unwrap());
    json!({
        "object": "api_key",
        "id": record.id,
        "name": record.name,
        "role": record.role,
        "scope": scope,
        "created_at": record.created_at,
        "revoked_at": record.revoked_at,
    })
}

#[test]
fn api_key_bytes_are_unchanged() {
    for scope in [
        None,
        Some(r#"{"organization_id":"org_acme","data_type":"pii"}"#),
    ] {
        let record = record(scope);
        let typed = serde_json::to_string(&ApiKey::of(&record).unwrap()).unwrap();
        assert_eq!(typed, old_api_key_json(&record).to_string());

        let mut old = old_api_key_json(&record);
        old["key"] = Value::String("app_token".into());
        let typed = serde_json::to_string(&ApiKey::with_token(&record, "app_token").unwrap());
        assert_eq!(typed.unwrap(), old.to_string());

        let list = serde_json::to_string(&List::of(vec![ApiKey::of(&record).unwrap()]));
        let old = json!({"object": "list", "data": [old_api_key_json(&record)]});
        assert_eq!(list.unwrap(), old.to_string());
    }
}

#[test]
fn event_list_bytes_are_unchanged() {
    let event = AuditEvent {
        id: "evt_1".into(),
        event: "vault.data.created".into(),
        organization_id: Some("org_acme".into()),
        data_json: json!({"object_id": "o1", "context": {"z": "1", "a": "2"}}).to_string(),
        created_at: "2024-01-01T00:00:00Z".into(),
    };
    for after in [None, Some("evt_1".to_owned())] {
        let typed = List::paged(vec![Event::of(&event).unwrap()], after.clone());
        let data: Value = serde_json::from_str(&event.data_json).unwrap();
        let old_event = json!({"object": "event", "id": event.id, "event": event.event, "data": data, "created_at": event.created_at, "context": {}});
        let old = json!({"object": "list", "data": [old_event], "list_metadata": {"after": after}});
        assert_eq!(serde_json::to_string(&typed).unwrap(), old.to_string());
    }
}
