//! The admin plane over HTTP: API keys (create, list, revoke, scopes) and audit events (filters,
//! pagination), on the local key provider (no LocalStack).

use crate::common;

use std::sync::atomic::Ordering;

use common::broker::{APP_KEY, TestBroker, admin};
use serde_json::{Value, json};

#[tokio::test]
async fn api_keys_are_created_listed_scoped_and_revoked() {
    let broker = TestBroker::start_local("apikeys").await;
    let created = admin(&broker, "POST", "/admin/v1/api-keys", Some(&json!({"name": "acme backend", "role": "app", "scope": {"organization_id": "org_acme"}}))).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let token = created.body["key"].as_str().unwrap().to_owned();
    assert!(token.starts_with("bkb_app_"));
    let key_id = created.body["id"].as_str().unwrap().to_owned();

    let listed = admin(&broker, "GET", "/admin/v1/api-keys", None).await;
    let entry = listed.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == key_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(entry["scope"], json!({"organization_id": "org_acme"}));
    assert!(entry.get("key").is_none(), "the token is shown only once");
    assert!(!listed.body.to_string().contains(&token));

    // The unscoped app key writes one object for another organization.
    let other = broker.call("POST", "/vault/v1/kv", Some(&json!({"name": "globex", "value": "v", "key_context": {"organization_id": "org_globex"}}))).await;
    let other_id = other.body["id"].as_str().unwrap().to_owned();

    let scoped = |method: &'static str, path: String, body: Option<Value>| {
        let token = token.clone();
        let broker = &broker;
        async move {
            broker
                .call_with(method, &path, body.as_ref(), Some(&token), &[])
                .await
        }
    };
    let inside = scoped("POST", "/vault/v1/kv".into(), Some(json!({"name": "acme", "value": "v", "key_context": {"organization_id": "org_acme", "data_type": "pii"}}))).await;
    assert_eq!(inside.status, 201, "{:?}", inside.body);

    let kms_calls_before = broker.kms.generates.load(Ordering::SeqCst);
    let outside = scoped(
        "POST",
        "/vault/v1/kv".into(),
        Some(json!({"name": "x", "value": "v", "key_context": {"organization_id": "org_globex"}})),
    )
    .await;
    assert_eq!(
        (outside.status, outside.body["code"].as_str()),
        (403, Some("out_of_scope"))
    );
    let data_key = scoped(
        "POST",
        "/vault/v1/keys/data-key".into(),
        Some(json!({"context": {"organization_id": "org_globex"}})),
    )
    .await;
    assert_eq!(data_key.status, 403);
    assert_eq!(
        broker.kms.generates.load(Ordering::SeqCst),
        kms_calls_before,
        "refused before any KMS call"
    );

    let hidden = scoped("GET", format!("/vault/v1/kv/{other_id}"), None).await;
    assert_eq!(
        hidden.status, 404,
        "objects outside the scope are invisible"
    );
    let by_name = scoped("GET", "/vault/v1/kv/name/globex".into(), None).await;
    assert_eq!(by_name.status, 404);
    let listed = scoped("GET", "/vault/v1/kv?limit=100".into(), None).await;
    let names: Vec<&str> = listed.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["acme"]);

    let revoked = admin(
        &broker,
        "DELETE",
        &format!("/admin/v1/api-keys/{key_id}"),
        None,
    )
    .await;
    assert_eq!(revoked.status, 200);
    assert!(revoked.body["revoked_at"].is_string());
    assert_eq!(scoped("GET", "/vault/v1/kv".into(), None).await.status, 401);
    assert_eq!(
        admin(&broker, "DELETE", "/admin/v1/api-keys/key_nope", None)
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn admin_endpoints_refuse_app_keys_and_bad_input() {
    let broker = TestBroker::start_local("adminerr").await;
    let as_app = broker
        .call_with("GET", "/admin/v1/api-keys", None, Some(APP_KEY), &[])
        .await;
    assert_eq!(
        (as_app.status, as_app.body["code"].as_str()),
        (403, Some("forbidden"))
    );
    let no_key = broker
        .call_with("GET", "/admin/v1/events", None, None, &[])
        .await;
    assert_eq!(no_key.status, 401);
    let bad_role = admin(
        &broker,
        "POST",
        "/admin/v1/api-keys",
        Some(&json!({"name": "x", "role": "root"})),
    )
    .await;
    assert_eq!(
        (bad_role.status, bad_role.body["code"].as_str()),
        (422, Some("invalid_role"))
    );
    let bad_scope = admin(
        &broker,
        "POST",
        "/admin/v1/api-keys",
        Some(&json!({"name": "x", "role": "app", "scope": {}})),
    )
    .await;
    assert_eq!(
        (bad_scope.status, bad_scope.body["code"].as_str()),
        (422, Some("invalid_context"))
    );
    let scoped_admin = admin(
        &broker,
        "POST",
        "/admin/v1/api-keys",
        Some(&json!({"name": "x", "role": "admin", "scope": {"a": "b"}})),
    )
    .await;
    assert_eq!(scoped_admin.status, 422);
}

#[tokio::test]
async fn audit_events_are_recorded_filtered_and_paginated() {
    let broker = TestBroker::start_local("events").await;
    let acme = json!({"organization_id": "org_acme"});
    let created = broker
        .call(
            "POST",
            "/vault/v1/kv",
            Some(&json!({"name": "s1", "value": "top secret value", "key_context": acme})),
        )
        .await;
    let id = created.body["id"].as_str().unwrap().to_owned();
    broker
        .call("GET", &format!("/vault/v1/kv/{id}"), None)
        .await;
    broker.call("POST", "/vault/v1/kv", Some(&json!({"name": "s2", "value": "v", "key_context": {"organization_id": "org_globex"}}))).await;
    let dk = broker
        .call(
            "POST",
            "/vault/v1/keys/data-key",
            Some(&json!({"context": acme})),
        )
        .await;
    broker
        .call(
            "POST",
            "/vault/v1/keys/decrypt",
            Some(&json!({"keys": dk.body["encrypted_keys"]})),
        )
        .await;

    let all = admin(&broker, "GET", "/admin/v1/events?limit=100", None).await;
    assert_eq!(all.status, 200);
    let names: Vec<&str> = all.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    for expected in [
        "vault.kek.created",
        "vault.data.created",
        "vault.data.read",
        "vault.dek.read",
        "vault.dek.decrypted",
    ] {
        assert!(names.contains(&expected), "{expected} in {names:?}");
    }
    assert_eq!(
        names.iter().filter(|n| **n == "vault.kek.created").count(),
        2,
        "one KEK per organization context"
    );
    let text = all.body.to_string();
    assert!(
        !text.contains("top secret value") && !text.contains(dk.body["data_key"].as_str().unwrap()),
        "no values or keys in events"
    );
    let read = all.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "vault.data.read")
        .unwrap();
    assert_eq!(read["data"]["kv_name"], "s1");
    assert_eq!(read["data"]["actor_name"], "bootstrap-app");
    assert_eq!(read["data"]["actor_source"], "api");

    let created_only = admin(
        &broker,
        "GET",
        "/admin/v1/events?events=vault.data.created&organization_id=org_acme",
        None,
    )
    .await;
    let data = created_only.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["data"]["key_context"], acme);

    let first = admin(&broker, "GET", "/admin/v1/events?limit=2", None).await;
    let cursor = first.body["list_metadata"]["after"]
        .as_str()
        .unwrap()
        .to_owned();
    let second = admin(
        &broker,
        "GET",
        &format!("/admin/v1/events?limit=2&after={cursor}"),
        None,
    )
    .await;
    assert_ne!(first.body["data"][0]["id"], second.body["data"][0]["id"]);
    let future = admin(
        &broker,
        "GET",
        "/admin/v1/events?range_start=2999-01-01T00:00:00Z",
        None,
    )
    .await;
    assert_eq!(future.body["data"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn metrics_are_served_as_openmetrics() {
    let broker = TestBroker::start_local("metricstype").await;
    let metrics = admin(&broker, "GET", "/admin/v1/metrics", None).await;
    assert_eq!(metrics.status, 200);
    assert_eq!(
        metrics.headers.get("content-type").map(String::as_str),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let text = metrics.body.as_str().unwrap_or_default();
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
}

/// An `after` cursor naming an event that no longer exists (purged by retention) or never did is
/// refused: listing again from the oldest event would hand a consumer everything twice.
#[tokio::test]
async fn an_audit_cursor_to_a_missing_event_is_refused_not_restarted() {
    let broker = TestBroker::start_local("events-cursor").await;
    broker
        .call(
            "POST",
            "/vault/v1/kv",
            Some(&json!({"name": "c", "value": "v", "key_context": {"organization_id": "org_c"}})),
        )
        .await;
    let page = admin(&broker, "GET", "/admin/v1/events?limit=1", None).await;
    let cursor = page.body["list_metadata"]["after"]
        .as_str()
        .unwrap()
        .to_owned();
    let next = admin(
        &broker,
        "GET",
        &format!("/admin/v1/events?limit=1&after={cursor}"),
        None,
    )
    .await;
    assert_eq!(next.status, 200, "{}", next.body);
    let gone = admin(
        &broker,
        "GET",
        "/admin/v1/events?after=event_purged_long_ago",
        None,
    )
    .await;
    assert_eq!(
        (gone.status, gone.body["code"].as_str()),
        (422, Some("invalid_cursor")),
        "{}",
        gone.body
    );
}
