//! The typed BYOK key body serializes to the same bytes as the `json!` body it replaced.

use serde_json::{Value, json};

use super::*;
use crate::keyring::bindings::ByokKeyRecord;

fn kek(arn: &str, available: bool) -> TenantKekRecord {
    TenantKekRecord {
        key_arn: arn.into(),
        byok_key_id: "byok_1".into(),
        region: Some("us-east-1".into()),
        role_arn: None,
        external_id: Some("ext".into()),
        available,
        reason: (!available).then(|| "disabled".into()),
        last_checked_at: None,
        state_seq: 0,
    }
}

/// A CMK's rotation as the old bodies would have shown it (`rotation` came after them).
fn rotation_json(key_arn: &str, rotations: &Rotations) -> Value {
    match rotations.get(key_arn) {
        None => {
            json!({"checked_at": null, "enabled": null, "error": null, "next_rotation_at": null, "period_days": null, "warning": null})
        }
        Some(r) => json!({
            "checked_at": r.checked_at,
            "enabled": r.enabled,
            "error": r.error,
            "next_rotation_at": r.next_rotation,
            "period_days": r.period_days,
            "warning": (r.enabled == Some(false)).then_some("automatic rotation is off for this key: its backing material never changes unless the tenant rotates it"),
        }),
    }
}

/// What the handler used to build for a binding.
fn old_json(
    binding: &Binding,
    counts: &HashMap<String, u64>,
    outside: u64,
    rotations: &Rotations,
) -> Value {
    let record = &binding.record;
    let current = binding.current_kek();
    let state = binding.state();
    let reason = match &state {
        BindingState::Unavailable(reason) => Some(reason.clone()),
        BindingState::Disabled => Some("disabled_by_admin".to_owned()),
        BindingState::Active | BindingState::Retired => None,
    };
    let keks: Vec<Value> = record
        .keks
        .iter()
        .map(|k| {
            json!({
                "key_arn": k.key_arn,
                "current": k.key_arn == record.current_kek,
                "region": k.region,
                "role_arn": k.role_arn,
                "external_id": k.external_id,
                "available": k.available,
                "reason": k.reason,
                "last_checked_at": k.last_checked_at,
                "objects": counts.get(&k.key_arn).copied().unwrap_or(0),
                "rotation": rotation_json(&k.key_arn, rotations),
            })
        })
        .collect();
    json!({
        "object": "byok_key",
        "id": record.id,
        "match_context": binding.match_context,
        "provider": record.provider,
        "key_arn": record.current_kek,
        "region": current.and_then(|k| k.region.clone()),
        "role_arn": current.and_then(|k| k.role_arn.clone()),
        "external_id": current.and_then(|k| k.external_id.clone()),
        "state": state.as_str(),
        "reason": reason,
        "last_checked_at": current.and_then(|k| k.last_checked_at.clone()),
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "keks": keks,
        "objects_under_other_keys": outside,
        "rotation": rotation_json(&record.current_kek, rotations),
    })
}

#[test]
fn byok_key_bytes_are_unchanged() {
    let match_context = KeyContext::new([("organization_id", "org_a"), ("data_type", "pii")]);
    for (admin_disabled, available) in [(false, true), (true, true), (false, false)] {
        let binding = Binding {
            record: ByokKeyRecord {
                id: "byok_1".into(),
                match_context_json: String::new(),
                match_context_hash: String::new(),
                provider: "aws_kms".into(),
                current_kek: "arn:new".into(),
                admin_disabled,
                retired: false,
                created_at: "2024-01-01T00:00:00Z".into(),
                updated_at: "2024-01-02T00:00:00Z".into(),
                keks: vec![kek("arn:old", true), kek("arn:new", available)],
            },
            match_context: match_context.clone().unwrap(),
        };
        let counts = HashMap::from([("arn:old".to_owned(), 3)]);
        let rotations = Rotations::from([(
            "arn:new".to_owned(),
            TenantKekRotation {
                enabled: Some(!admin_disabled),
                period_days: (!admin_disabled).then_some(365),
                next_rotation: (!admin_disabled).then(|| "2025-01-01T00:00:00.000000Z".into()),
                error: None,
                checked_at: "2024-01-03T00:00:00.000000Z".into(),
                changed_at: None,
            },
        )]);
        let typed = serde_json::to_string(&ByokKey::of(&binding, &counts, 7, &rotations)).unwrap();
        assert_eq!(
            typed,
            old_json(&binding, &counts, 7, &rotations).to_string()
        );
    }
}
