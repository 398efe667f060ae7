//! Who an admin action is recorded as: an admin API key (`actor_source: "api"`, as
//! `audit::event` writes it) or a tenant IT admin's portal session (`actor_source: "portal"`,
//! the session's id and organization; the broker knows no person's name). Services that change
//! keys, jobs or API keys take an [`Actor`], so the same change is recorded with whoever made it
//! whichever door it came through.

use serde_json::{Value, json};

use crate::audit;
use crate::auth::Principal;
use crate::services::portal::PortalSession;
use crate::store::AuditEvent;

/// The caller of an admin action.
#[derive(Debug, Clone, Copy)]
pub enum Actor<'a> {
    /// An admin API key (with its connection's client certificate, if any).
    ApiKey(&'a Principal),
    /// A portal session, acting for its organization only.
    Portal(&'a PortalSession),
}

impl Actor<'_> {
    /// The event `name` with this actor's fields (`actor_id`, `actor_source`, `actor_name`).
    pub fn event(self, name: &str, organization_id: Option<&str>, fields: Value) -> AuditEvent {
        match self {
            Actor::ApiKey(principal) => {
                audit::event(Some(principal), name, organization_id, fields)
            }
            Actor::Portal(session) => {
                let mut fields = match fields {
                    Value::Object(map) => map,
                    _ => serde_json::Map::new(),
                };
                fields.insert("actor_id".into(), json!(session.id));
                fields.insert("actor_source".into(), json!("portal"));
                fields.insert("actor_name".into(), json!(session.actor_name()));
                fields
                    .entry("organization_id")
                    .or_insert_with(|| json!(session.organization_id));
                // A session acts for its organization only: its events belong to it.
                let organization_id = organization_id.or(Some(&session.organization_id));
                audit::event(None, name, organization_id, Value::Object(fields))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    fn data(event: &AuditEvent) -> Value {
        serde_json::from_str(&event.data_json).unwrap()
    }

    #[test]
    fn an_api_key_and_a_portal_session_are_told_apart() {
        let admin = Principal {
            key_id: "key_1".into(),
            name: "ops".into(),
            role: Role::Admin,
            scope: None,
            client_certificate: None,
        };
        let by_key = Actor::ApiKey(&admin).event("x", Some("org_a"), json!({"a": 1}));
        assert_eq!(data(&by_key)["actor_id"], "key_1");
        assert_eq!(data(&by_key)["actor_source"], "api");
        assert_eq!(data(&by_key)["a"], 1);

        let session = PortalSession {
            id: "portal_session_1".into(),
            organization_id: "org_a".into(),
            return_url: None,
            success_url: None,
        };
        let by_portal = Actor::Portal(&session).event("x", Some("org_a"), json!({}));
        let fields = data(&by_portal);
        assert_eq!(fields["actor_id"], "portal_session_1");
        assert_eq!(fields["actor_source"], "portal");
        assert_eq!(fields["actor_name"], "portal session of org_a");
        assert_eq!(fields["organization_id"], "org_a");
        assert_eq!(by_portal.organization_id.as_deref(), Some("org_a"));
    }
}
