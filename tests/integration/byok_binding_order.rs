//! Routing views are ordered: a reload that read the bindings before an admin disable, and finishes
//! after the disable's own reload, must not install its older view (that would route the tenant's
//! writes through a disabled key again: fail open). Runs on the local key provider.

use crate::common;

use byok_broker::context::KeyContext;
use byok_broker::keyring::bindings::BindingState;
use byok_broker::store::{ByokKeyRecord, TenantKekRecord};
use common::broker::TestBroker;
use serde_json::json;

/// Saves a binding straight into the store (registration verifies the key against AWS KMS).
async fn bind(broker: &TestBroker<byok_broker::kms::local::LocalKms>, org: &str) -> String {
    let id = format!("byok_order_{org}");
    let key_arn = format!(
        "arn:aws:kms:us-east-1:111111111111:key/{}",
        uuid::Uuid::new_v4()
    );
    let context = KeyContext::new([("organization_id", org)]).expect("context");
    let record = ByokKeyRecord {
        id: id.clone(),
        match_context_json: serde_json::to_string(&context).expect("json"),
        match_context_hash: context.hash().to_hex(),
        provider: "aws_kms".into(),
        current_kek: key_arn.clone(),
        admin_disabled: false,
        retired: false,
        created_at: String::new(),
        updated_at: String::new(),
        keks: Vec::new(),
    };
    let kek = TenantKekRecord {
        key_arn,
        byok_key_id: id.clone(),
        region: None,
        role_arn: None,
        external_id: None,
        available: true,
        reason: None,
        last_checked_at: None,
    };
    broker
        .broker
        .store
        .insert_byok_key(record, kek)
        .await
        .expect("insert");
    broker.broker.byok.reload_bindings().await.expect("reload");
    id
}

#[tokio::test]
async fn a_slow_reload_never_undoes_an_admin_disable() {
    let broker = TestBroker::start_local("binding_order").await;
    let id = bind(&broker, "org_order").await;

    // A reload reads the bindings (still active) and stalls before installing them...
    let stale = broker.broker.store.byok_snapshot().await.expect("snapshot");
    // ...while an admin disables the key, which reloads and installs its own view...
    broker
        .broker
        .byok
        .disable_byok_key(&id)
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
