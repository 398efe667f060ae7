//! Issue 14, "complete": every admin action is an event with its actor (an admin key or a portal
//! session), every refused attempt is one too (`vault.access.denied`: out of scope, disabled key,
//! bad blob, no/unknown/revoked key, wrong role; coalesced counts for refusals before
//! authentication), listing versions is recorded, a rekey is recorded for both organizations and
//! a decrypt names the KEK that opened the DEK. Each test reads the events back through
//! `GET /admin/v1/events`. BYOK registration and rotation run against LocalStack; the rest on the
//! local key provider.

use crate::common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::broker::{ADMIN_KEY, APP_KEY, TestBroker, admin, bind_in_store, register};
use common::portal::open_session;
use common::{TENANT_ACCOUNT, context, create_key, key_spec};
use serde_json::{Value, json};

/// Every event named `name` (optionally of `org`), oldest first, after the refusal counts so far
/// are committed.
async fn events<P>(broker: &TestBroker<P>, name: &str, org: Option<&str>) -> Vec<Value> {
    broker.broker.refusals.flush().await;
    let mut path = format!("/admin/v1/events?events={name}&limit=100");
    if let Some(org) = org {
        path.push_str(&format!("&organization_id={org}"));
    }
    let response = admin(broker, "GET", &path, None).await;
    assert_eq!(response.status, 200, "{:?}", response.body);
    response.body["data"].as_array().expect("data").clone()
}

/// The one event named `name` (of `org`) whose data has `field` = `value`.
async fn the_event<P>(
    broker: &TestBroker<P>,
    name: &str,
    org: Option<&str>,
    field: &str,
    value: &str,
) -> Value {
    let found: Vec<Value> = events(broker, name, org)
        .await
        .into_iter()
        .filter(|e| e["data"][field] == value)
        .collect();
    assert_eq!(found.len(), 1, "{name} with {field}={value}: {found:?}");
    found.into_iter().next().unwrap()
}

/// The id of the API key named `name`.
async fn key_id<P>(broker: &TestBroker<P>, name: &str) -> String {
    let keys = admin(broker, "GET", "/admin/v1/api-keys", None).await;
    keys.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == name)
        .and_then(|k| k["id"].as_str())
        .expect("key")
        .to_owned()
}

fn assert_admin_actor(event: &Value, admin_id: &str) {
    let data = &event["data"];
    assert_eq!(data["actor_id"], admin_id, "{event}");
    assert_eq!(data["actor_source"], "api", "{event}");
    assert_eq!(data["actor_name"], "bootstrap-admin", "{event}");
}

#[tokio::test]
async fn byok_changes_rewrap_jobs_and_api_keys_are_recorded_with_the_admin_as_actor() {
    let broker = TestBroker::start("audit-admin").await;
    let org = "org_audit_admin";
    let admin_id = key_id(&broker, "bootstrap-admin").await;
    let (id, key_a) = register(&broker, org, TENANT_ACCOUNT).await;
    let created = the_event(
        &broker,
        "vault.byok_key.created",
        Some(org),
        "byok_key_id",
        &id,
    )
    .await;
    assert_admin_actor(&created, &admin_id);
    assert_eq!(created["data"]["key_arn"], key_a);
    assert_eq!(created["data"]["organization_id"], org);

    let key_b = create_key(TENANT_ACCOUNT).await;
    let path = format!("/admin/v1/byok-keys/{id}");
    let rotated = admin(&broker, "PUT", &path, Some(&key_spec(&key_b))).await;
    assert_eq!(rotated.status, 200, "{:?}", rotated.body);
    for action in ["disable", "enable", "retire"] {
        let done = admin(&broker, "POST", &format!("{path}/{action}"), None).await;
        assert_eq!(done.status, 200, "{action}: {:?}", done.body);
    }
    let job = admin(
        &broker,
        "POST",
        "/admin/v1/rewrap-jobs",
        Some(&json!({"source": {"byok_key_id": id}})),
    )
    .await;
    assert_eq!(job.status, 202, "{:?}", job.body);
    let job_id = job.body["id"].as_str().unwrap();
    let cancel = format!("/admin/v1/rewrap-jobs/{job_id}/cancel");
    assert_eq!(admin(&broker, "POST", &cancel, None).await.status, 200);
    assert_eq!(admin(&broker, "DELETE", &path, None).await.status, 200);

    for name in [
        "vault.byok_key.rotated",
        "vault.byok_key.disabled",
        "vault.byok_key.enabled",
        "vault.byok_key.retired",
        "vault.byok_key.deleted",
    ] {
        let event = the_event(&broker, name, Some(org), "byok_key_id", &id).await;
        assert_admin_actor(&event, &admin_id);
    }
    let rotated = the_event(
        &broker,
        "vault.byok_key.rotated",
        Some(org),
        "byok_key_id",
        &id,
    )
    .await;
    assert_eq!(rotated["data"]["key_arn"], key_b);
    let started = the_event(
        &broker,
        "vault.rewrap_job.started",
        Some(org),
        "rewrap_job_id",
        job_id,
    )
    .await;
    assert_admin_actor(&started, &admin_id);
    assert_eq!(started["data"]["byok_key_id"], id);
    let cancelled = the_event(
        &broker,
        "vault.rewrap_job.cancelled",
        None,
        "rewrap_job_id",
        job_id,
    )
    .await;
    assert_admin_actor(&cancelled, &admin_id);
    // Nothing to move: the job may have completed before the cancel arrived.
    assert!(cancelled["data"]["cancelled"].is_boolean(), "{cancelled}");

    // API keys: created and revoked, with the admin as actor and never the token.
    let body = json!({"name": "audited", "role": "app", "scope": {"organization_id": org}});
    let created_key = admin(&broker, "POST", "/admin/v1/api-keys", Some(&body)).await;
    assert_eq!(created_key.status, 201, "{:?}", created_key.body);
    let token = created_key.body["key"].as_str().unwrap().to_owned();
    let new_id = created_key.body["id"].as_str().unwrap().to_owned();
    let revoke = format!("/admin/v1/api-keys/{new_id}");
    assert_eq!(admin(&broker, "DELETE", &revoke, None).await.status, 200);
    for name in ["api_key.created", "api_key.revoked"] {
        let event = the_event(&broker, name, Some(org), "api_key_id", &new_id).await;
        assert_admin_actor(&event, &admin_id);
        assert_eq!(event["data"]["name"], "audited");
        assert!(!event.to_string().contains(&token), "{event}");
    }
    let created = the_event(&broker, "api_key.created", Some(org), "api_key_id", &new_id).await;
    assert_eq!(created["data"]["scope"], json!({"organization_id": org}));
}

#[tokio::test]
async fn byok_changes_made_in_the_portal_name_the_session_as_actor() {
    let broker = TestBroker::start("audit-portal").await;
    let org = "org_audit_portal";
    let session = open_session(&broker, org).await;
    let key_arn = create_key(TENANT_ACCOUNT).await;
    let registered = session
        .post(
            &broker,
            "/portal/api/keys",
            Some(&json!({"key_arn": key_arn, "role_arn": common::role_arn(TENANT_ACCOUNT)})),
        )
        .await;
    assert_eq!(registered.status, 201, "{:?}", registered.body);
    let id = registered.body["id"].as_str().unwrap().to_owned();
    let disabled = session
        .post(&broker, &format!("/portal/api/keys/{id}/disable"), None)
        .await;
    assert_eq!(disabled.status, 200, "{:?}", disabled.body);

    let started = events(&broker, "portal.session.started", Some(org)).await;
    let session_id = started[0]["data"]["actor_id"].as_str().unwrap().to_owned();
    assert!(session_id.starts_with("portal_session_"), "{session_id}");
    for name in ["vault.byok_key.created", "vault.byok_key.disabled"] {
        let event = the_event(&broker, name, Some(org), "byok_key_id", &id).await;
        let data = &event["data"];
        assert_eq!(data["actor_source"], "portal", "{event}");
        assert_eq!(data["actor_id"], session_id.as_str(), "{event}");
        assert_eq!(data["actor_name"], format!("portal session of {org}"));
        assert_eq!(data["organization_id"], org);
    }
}

#[tokio::test]
async fn refusals_at_the_door_are_counted_per_source_and_name_no_token() {
    let broker = TestBroker::start_local("audit-door").await;
    let route = "/vault/v1/kv/{id}";
    let path = "/vault/v1/kv/00000000-0000-0000-0000-000000000000";
    for _ in 0..3 {
        let refused = broker.call_with("GET", path, None, None, &[]).await;
        assert_eq!(refused.status, 401);
    }
    let guess = "bkb_app_ThisIsAGuessedTokenThatMatchesNoKeyAtAll0000";
    assert_eq!(
        broker
            .call_with("GET", path, None, Some(guess), &[])
            .await
            .status,
        401
    );
    let revoked = broker.new_app_key("soon-revoked").await;
    let revoked_id = key_id(&broker, "soon-revoked").await;
    let revoke = format!("/admin/v1/api-keys/{revoked_id}");
    assert_eq!(admin(&broker, "DELETE", &revoke, None).await.status, 200);
    assert_eq!(
        broker
            .call_with("GET", path, None, Some(&revoked), &[])
            .await
            .status,
        401
    );
    // An app key on the admin plane.
    let wrong = broker
        .call_with("GET", "/admin/v1/api-keys", None, Some(APP_KEY), &[])
        .await;
    assert_eq!(wrong.status, 403);

    let denied = events(&broker, "vault.access.denied", None).await;
    let text = Value::Array(denied.clone()).to_string();
    for secret in [guess, revoked.as_str(), APP_KEY, ADMIN_KEY] {
        assert!(!text.contains(secret), "a token in the events: {text}");
    }
    let find = |reason: &str, field: &str, value: &str| -> Value {
        denied
            .iter()
            .find(|e| e["data"]["reason"] == reason && e["data"][field] == value)
            .unwrap_or_else(|| panic!("no {reason} with {field}={value}: {text}"))
            .clone()
    };
    let anonymous = find("unauthorized", "credential", "none");
    assert_eq!(anonymous["data"]["count"], 3, "{anonymous}");
    assert_eq!(anonymous["data"]["route"], route);
    assert_eq!(anonymous["data"]["method"], "GET");
    assert_eq!(anonymous["data"]["source"], "127.0.0.1");
    assert_eq!(anonymous["data"]["code"], "unauthorized");
    assert!(anonymous["data"].get("actor_id").is_none());
    assert_eq!(
        find("unauthorized", "credential", "bkb_app")["data"]["count"],
        1
    );
    let by_revoked = find("api_key_revoked", "actor_id", &revoked_id);
    assert_eq!(by_revoked["data"]["actor_name"], "soon-revoked");
    let app_id = key_id(&broker, "bootstrap-app").await;
    let by_app = find("wrong_role", "actor_id", &app_id);
    assert_eq!(by_app["data"]["route"], "/admin/v1/api-keys");
    assert_eq!(by_app["data"]["code"], "forbidden");
}

#[tokio::test]
async fn a_flood_of_anonymous_refusals_is_counted_in_full_in_few_events() {
    let broker = TestBroker::start_local("audit-flood").await;
    let requests = 300;
    let mut refused = Vec::new();
    for _ in 0..requests {
        refused.push(broker.call_with("GET", "/vault/v1/kv", None, Some("nope-0123456789"), &[]));
    }
    for response in futures_util::future::join_all(refused).await {
        assert_eq!(response.status, 401);
    }
    let denied = events(&broker, "vault.access.denied", None).await;
    let counted: u64 = denied
        .iter()
        .filter(|e| e["data"]["credential"] == "other")
        .map(|e| e["data"]["count"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, requests, "every refusal is counted");
    // Coalesced per second: a handful of events, not one per request.
    assert!(denied.len() <= 10, "{} events", denied.len());
}

#[tokio::test]
async fn refusals_past_authentication_are_recorded_with_the_key_and_the_target_organization() {
    let broker = TestBroker::start_local("audit-denied").await;
    let body = json!({"name": "scoped", "role": "app", "scope": {"organization_id": "org_mine"}});
    let created = admin(&broker, "POST", "/admin/v1/api-keys", Some(&body)).await;
    let scoped = created.body["key"].as_str().unwrap().to_owned();
    let scoped_id = created.body["id"].as_str().unwrap().to_owned();

    // Out of scope: a data key for another organization, and another organization's object.
    let refused = broker
        .data_key(&scoped, json!({"organization_id": "org_theirs"}))
        .await;
    assert_eq!(refused.status, 403);
    let object =
        json!({"name": "theirs", "value": "v", "key_context": {"organization_id": "org_theirs"}});
    let theirs = broker.call("POST", "/vault/v1/kv", Some(&object)).await;
    assert_eq!(theirs.status, 201, "{:?}", theirs.body);
    let object_path = format!("/vault/v1/kv/{}", theirs.body["id"].as_str().unwrap());
    let hidden = broker
        .call_with("GET", &object_path, None, Some(&scoped), &[])
        .await;
    assert_eq!(hidden.status, 404, "answered as absent");
    let versions = format!("{object_path}/versions");
    let hidden = broker
        .call_with("GET", &versions, None, Some(&scoped), &[])
        .await;
    assert_eq!(hidden.status, 404);

    let denied = events(&broker, "vault.access.denied", Some("org_theirs")).await;
    let operations: Vec<&str> = denied
        .iter()
        .map(|e| {
            assert_eq!(e["data"]["reason"], "out_of_scope", "{e}");
            assert_eq!(e["data"]["actor_id"], scoped_id.as_str(), "{e}");
            assert_eq!(
                e["data"]["key_context"],
                json!({"organization_id": "org_theirs"})
            );
            e["data"]["operation"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        operations,
        ["vault.dek.read", "vault.data.read", "vault.versions.listed"]
    );

    // Bad blobs: malformed, and tampered with (a flipped byte in the wrapped DEK).
    let broker_ref = &broker;
    let decrypt = |blob: String| async move {
        broker_ref
            .call(
                "POST",
                "/vault/v1/keys/decrypt",
                Some(&json!({"keys": blob})),
            )
            .await
    };
    assert_eq!(decrypt("bm90IGEgYmxvYg==".into()).await.status, 422);
    let issued = broker
        .data_key(APP_KEY, json!({"organization_id": "org_blob"}))
        .await;
    let mut bytes = STANDARD
        .decode(issued.body["encrypted_keys"].as_str().unwrap())
        .unwrap();
    let last = bytes.len() - 40; // inside the wrapped DEK, before the 32-byte tag
    bytes[last] ^= 1;
    let tampered = decrypt(STANDARD.encode(&bytes)).await;
    assert_eq!(tampered.status, 422, "{:?}", tampered.body);
    let bad: Vec<Value> = events(&broker, "vault.access.denied", None)
        .await
        .into_iter()
        .filter(|e| e["data"]["reason"] == "bad_blob")
        .collect();
    assert_eq!(bad.len(), 2, "{bad:?}");
    assert_eq!(bad[0]["data"]["operation"], "vault.dek.decrypted");
    assert_eq!(
        bad[1]["data"]["key_context"],
        json!({"organization_id": "org_blob"})
    );
    let of_org = events(&broker, "vault.access.denied", Some("org_blob")).await;
    assert_eq!(
        of_org.len(),
        1,
        "stored under the blob's organization: {of_org:?}"
    );
    assert_eq!(of_org[0]["data"]["count"], 1);

    // A BYOK key disabled in the broker (no KMS call: refused by the routing view).
    let (byok_id, _) = bind_in_store(&broker, "org_disabled", None).await;
    let disable = format!("/admin/v1/byok-keys/{byok_id}/disable");
    assert_eq!(admin(&broker, "POST", &disable, None).await.status, 200);
    let refused = broker
        .data_key(APP_KEY, json!({"organization_id": "org_disabled"}))
        .await;
    assert_eq!(refused.status, 403, "{:?}", refused.body);
    let denied = events(&broker, "vault.access.denied", Some("org_disabled")).await;
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0]["data"]["reason"], "key_disabled");
    assert_eq!(denied[0]["data"]["code"], refused.body["code"]);
}

/// A format 1 (untagged) blob with two entries: `entries` of (KEK id, wrapped DEK).
fn legacy_blob(org: &str, entries: &[(&str, &[u8])]) -> String {
    let canonical = context(&[("organization_id", org)]).canonical_bytes();
    let mut out = b"BBEK\x01".to_vec();
    out.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    out.extend_from_slice(&(canonical.len() as u32).to_be_bytes());
    out.extend_from_slice(&canonical);
    out.push(entries.len() as u8);
    for (kek_id, wrapped) in entries {
        out.extend_from_slice(&(kek_id.len() as u16).to_be_bytes());
        out.extend_from_slice(kek_id.as_bytes());
        out.extend_from_slice(&(wrapped.len() as u16).to_be_bytes());
        out.extend_from_slice(wrapped);
    }
    STANDARD.encode(out)
}

/// The first (KEK id, wrapped DEK) entry of a blob the broker issued.
fn first_entry(blob_b64: &str) -> (String, Vec<u8>) {
    let bytes = STANDARD.decode(blob_b64).unwrap();
    let context_len = u32::from_be_bytes(bytes[21..25].try_into().unwrap()) as usize;
    let mut at = 25 + context_len + 1;
    let mut short = |bytes: &[u8]| {
        let len = u16::from_be_bytes(bytes[at..at + 2].try_into().unwrap()) as usize;
        let field = bytes[at + 2..at + 2 + len].to_vec();
        at += 2 + len;
        field
    };
    let kek_id = String::from_utf8(short(&bytes)).unwrap();
    (kek_id, short(&bytes))
}

#[tokio::test]
async fn versions_rekeys_and_decrypts_record_what_actually_happened() {
    let broker = TestBroker::start_local("audit-ops").await;
    let app_id = key_id(&broker, "bootstrap-app").await;

    // Listing versions.
    let object =
        json!({"name": "history", "value": "v1", "key_context": {"organization_id": "org_ops"}});
    let created = broker.call("POST", "/vault/v1/kv", Some(&object)).await;
    let versions = format!(
        "/vault/v1/kv/{}/versions",
        created.body["id"].as_str().unwrap()
    );
    assert_eq!(broker.call("GET", &versions, None).await.status, 200);
    let listed = the_event(
        &broker,
        "vault.versions.listed",
        Some("org_ops"),
        "kv_name",
        "history",
    )
    .await;
    assert_eq!(listed["data"]["actor_id"], app_id.as_str());
    assert_eq!(listed["data"]["versions"], 1);

    // A rekey from org_src to org_dst is in both organizations' events.
    let issued = broker
        .data_key(APP_KEY, json!({"organization_id": "org_src"}))
        .await;
    let blob = issued.body["encrypted_keys"].as_str().unwrap().to_owned();
    let (source_kek, wrapped) = first_entry(&blob);
    let body = json!({"context": {"organization_id": "org_dst"}, "encrypted_keys": blob});
    let rekeyed = broker
        .call("POST", "/vault/v1/keys/rekey", Some(&body))
        .await;
    assert_eq!(rekeyed.status, 200, "{:?}", rekeyed.body);
    let (destination_kek, _) = first_entry(rekeyed.body["encrypted_keys"].as_str().unwrap());
    for org in ["org_src", "org_dst"] {
        let found = events(&broker, "vault.dek.rekeyed", Some(org)).await;
        assert_eq!(found.len(), 1, "{org}: {found:?}");
        let data = &found[0]["data"];
        assert_eq!(data["key_id"], source_kek.as_str());
        assert_eq!(data["key_context"], json!({"organization_id": "org_src"}));
        assert_eq!(data["destination_key_id"], destination_kek.as_str());
        assert_eq!(
            data["destination_key_context"],
            json!({"organization_id": "org_dst"})
        );
        assert_eq!(data["actor_id"], app_id.as_str());
    }

    // A blob whose first entry names another key: the event names the KEK that opened the DEK.
    let named_first = "arn:aws:kms:us-east-1:000000000000:key/named-but-not-used";
    let two_entries = legacy_blob(
        "org_src",
        &[(named_first, &[7; 64]), (&source_kek, &wrapped)],
    );
    let opened = broker
        .call(
            "POST",
            "/vault/v1/keys/decrypt",
            Some(&json!({"keys": two_entries})),
        )
        .await;
    assert_eq!(opened.status, 200, "{:?}", opened.body);
    let decrypted = events(&broker, "vault.dek.decrypted", Some("org_src")).await;
    assert_eq!(decrypted.len(), 1, "{decrypted:?}");
    assert_eq!(decrypted[0]["data"]["key_id"], source_kek.as_str());
    assert!(!decrypted[0].to_string().contains(named_first));
}

#[tokio::test]
async fn requests_over_the_rate_limit_are_counted_with_their_key() {
    let broker = TestBroker::start_local_with(
        "audit-ratelimit",
        &[("BYOK_BROKER_RATE_LIMIT_PER_SECOND", "1")],
    )
    .await;
    let app_id = key_id(&broker, "bootstrap-app").await;
    let mut limited = 0;
    // Past the default burst of 100.
    for _ in 0..130 {
        if broker.call("GET", "/vault/v1/kv", None).await.status == 429 {
            limited += 1;
        }
    }
    assert!(limited > 0);
    // Read with the admin key, whose bucket is its own.
    let denied = events(&broker, "vault.access.denied", None).await;
    let counted: u64 = denied
        .iter()
        .filter(|e| e["data"]["reason"] == "rate_limited")
        .map(|e| {
            assert_eq!(e["data"]["actor_id"], app_id.as_str(), "{e}");
            assert_eq!(e["data"]["code"], "rate_limited");
            e["data"]["count"].as_u64().unwrap()
        })
        .sum();
    assert_eq!(counted, limited);
}
