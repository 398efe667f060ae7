//! The portal API's own answers (`/portal/api/session`, `sign_out`, `setup`). Fields are in
//! alphabetical order, the order the earlier `json!` bodies had.

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// The session the page runs as, and the CSRF token its changes must carry.
#[derive(Serialize, ToSchema)]
pub struct PortalSessionInfo<'a> {
    /// Sent back in `X-CSRF-Token` on every state-changing request.
    pub csrf_token: String,
    pub organization_id: &'a str,
    pub return_url: Option<&'a str>,
    pub success_url: Option<&'a str>,
}

#[derive(Serialize, ToSchema)]
pub struct SignedOut {
    pub signed_out: bool,
}

/// What the tenant creates in its AWS account, as JSON documents the page shows.
#[derive(Serialize, ToSchema)]
pub struct PortalSetup<'a> {
    pub broker_principal_arn: String,
    /// An EventBridge rule forwarding the key's CloudTrail events, when the broker listens for them.
    #[schema(value_type = Option<Object>)]
    pub event_rule: Option<Value>,
    pub external_id: String,
    /// KMS key settings to create the key with.
    #[schema(value_type = Object)]
    pub key_settings: Value,
    pub organization_id: &'a str,
    /// The IAM policy of the role the broker assumes.
    #[schema(value_type = Object)]
    pub role_policy: Value,
    /// The trust policy of that role.
    #[schema(value_type = Object)]
    pub trust_policy: Value,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn portal_bytes_are_unchanged() {
        let info = PortalSessionInfo {
            csrf_token: "t".into(),
            organization_id: "org_a",
            return_url: None,
            success_url: Some("https://example.com/ok"),
        };
        let old = json!({"organization_id": "org_a", "csrf_token": "t", "return_url": null, "success_url": "https://example.com/ok"});
        assert_eq!(serde_json::to_string(&info).unwrap(), old.to_string());
        let setup = PortalSetup {
            broker_principal_arn: "arn:p".into(),
            event_rule: None,
            external_id: "x".into(),
            key_settings: json!({"b": 1, "a": 2}),
            organization_id: "org_a",
            role_policy: json!({}),
            trust_policy: json!({"t": true}),
        };
        let old = json!({"organization_id": "org_a", "external_id": "x", "broker_principal_arn": "arn:p", "key_settings": {"b": 1, "a": 2}, "trust_policy": {"t": true}, "role_policy": {}, "event_rule": null});
        assert_eq!(serde_json::to_string(&setup).unwrap(), old.to_string());
        let old = json!({"signed_out": true});
        let typed = serde_json::to_string(&SignedOut { signed_out: true });
        assert_eq!(typed.unwrap(), old.to_string());
    }
}
