//! Audit events with WorkOS event names and payloads (`vault.data.created`, `vault.dek.decrypted`,
//! ...). Every payload carries the actor; none ever carries a value, a DEK or an API key.

use serde_json::{Map, Value, json};

use crate::auth::Principal;
use crate::error::Error;
use crate::store::{AuditEvent, Store};
use crate::timestamp::Timestamp;

/// Records one event. The organization (from the key context) is indexed for filtering.
pub async fn record(
    store: &Store,
    actor: &Principal,
    event: &str,
    organization_id: Option<&str>,
    fields: Value,
) -> Result<(), Error> {
    let mut data = match fields {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    data.insert("actor_id".into(), json!(actor.key_id));
    data.insert("actor_source".into(), json!("api"));
    data.insert("actor_name".into(), json!(actor.name));
    let event = AuditEvent {
        id: format!("event_{}", uuid::Uuid::new_v4().simple()),
        event: event.to_owned(),
        organization_id: organization_id.map(str::to_owned),
        data_json: Value::Object(data).to_string(),
        created_at: Timestamp::now().to_rfc3339(),
    };
    store.insert_events(vec![event]).await?;
    Ok(())
}
