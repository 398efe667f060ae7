//! Audit events with WorkOS event names and payloads (`vault.data.created`, `vault.dek.decrypted`,
//! ...). Every API-caused payload carries the actor; none ever carries a value, a DEK or an API key.

use serde_json::{Map, Value, json};

use crate::auth::Principal;
use crate::error::Error;
use crate::store::{AuditEvent, Store};
use crate::timestamp::Timestamp;

/// Records one event caused by an API caller. The organization (from the key context) is indexed
/// for filtering.
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
    record_system(store, event, organization_id, Value::Object(data)).await
}

/// Records an event with no API actor (the broker's own doing, e.g. the key-state watcher, or an
/// event WorkOS defines without actor fields).
pub async fn record_system(
    store: &Store,
    event: &str,
    organization_id: Option<&str>,
    data: Value,
) -> Result<(), Error> {
    let event = AuditEvent {
        id: format!("event_{}", uuid::Uuid::new_v4().simple()),
        event: event.to_owned(),
        organization_id: organization_id.map(str::to_owned),
        data_json: data.to_string(),
        created_at: Timestamp::now().to_rfc3339(),
    };
    store.insert_events(vec![event]).await?;
    Ok(())
}
