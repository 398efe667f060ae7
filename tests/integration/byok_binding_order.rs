//! Routing views are ordered: a reload that read the bindings before an admin disable, and finishes
//! after the disable's own reload, must not install its older view (that would route the tenant's
//! writes through a disabled key again: fail open). Runs on the local key provider.

use crate::common;

use byok_broker::auth::{Principal, Role};
use byok_broker::keyring::bindings::BindingState;
use byok_broker::services::actor::Actor;
use common::broker::{TestBroker, bind_in_store};
use serde_json::json;

/// The admin the disable is recorded for.
fn operator() -> Principal {
    Principal {
        key_id: "key_operator".into(),
        name: "operator".into(),
        role: Role::Admin,
        scope: None,
        client_certificate: None,
    }
}

#[tokio::test]
async fn a_slow_reload_never_undoes_an_admin_disable() {
    let broker = TestBroker::start_local("binding_order").await;
    let (id, _) = bind_in_store(&broker, "org_order", None).await;

    // A reload reads the bindings (still active) and stalls before installing them...
    let stale = broker.broker.store.byok_snapshot().await.expect("snapshot");
    // ...while an admin disables the key, which reloads and installs its own view...
    broker
        .broker
        .byok
        .disable_byok_key(Actor::ApiKey(&operator()), &id)
        .await
        .expect("disable");
    // ...then the slow reload finishes.
    broker
        .broker
        .byok
        .install_bindings(stale)
        .expect("late install");

    let bindings = broker.broker.keyring.bindings();
    let binding = bindings.get(&id).expect("binding");
    assert_eq!(
        binding.state(),
        BindingState::Disabled,
        "the newer view wins"
    );
    let write = broker
        .call(
            "POST",
            "/vault/v1/kv",
            Some(&json!({"name": "after-disable", "value": "v", "key_context": {"organization_id": "org_order"}})),
        )
        .await;
    assert_eq!(write.status, 403, "{}", write.body);
    assert_eq!(write.body["code"], "key_revoked");
}
