//! The `/vault/v1` wire API over real HTTP: every endpoint's happy path and the error paths (401,
//! 404, 405, 409, 413, 422), version checks under concurrency, pagination, idempotent creates and
//! data keys on the local key provider; the KEK's ARN, a KEK disabled in AWS and readiness on
//! LocalStack.

use crate::common;

use common::broker::{ADMIN_KEY, TestBroker};
use futures_util::future::join_all;
use serde_json::{Value, json};

fn acme() -> Value {
    json!({"organization_id": "org_acme", "data_type": "pii"})
}

#[tokio::test]
async fn object_lifecycle_over_http() {
    let broker = TestBroker::start("lifecycle").await;
    let created = broker
        .call(
            "POST",
            "/vault/v1/kv",
            Some(&json!({"name": "card/4111", "value": "s3cr3t", "key_context": acme()})),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let id = created.body["id"].as_str().unwrap().to_owned();
    assert_eq!(created.body["context"], acme());
    assert!(
        created.body["key_id"]
            .as_str()
            .unwrap()
            .starts_with("arn:aws:kms:")
    );
    assert!(created.headers.contains_key("x-request-id"));
    let v1 = created.body["version_id"].as_str().unwrap().to_owned();

    let read = broker
        .call("GET", &format!("/vault/v1/kv/{id}"), None)
        .await;
    assert_eq!(
        (read.status, read.body["value"].as_str()),
        (200, Some("s3cr3t"))
    );
    assert_eq!(read.body["metadata"]["updated_by"]["name"], "bootstrap-app");
    // Names arrive percent-encoded, as the SDK sends them.
    let by_name = broker
        .call("GET", "/vault/v1/kv/name/card%2F4111", None)
        .await;
    assert_eq!(
        (by_name.status, by_name.body["id"].as_str()),
        (200, Some(id.as_str()))
    );
    let described = broker
        .call("GET", &format!("/vault/v1/kv/{id}/metadata"), None)
        .await;
    assert_eq!(described.status, 200);
    assert!(
        described.body.get("value").is_none(),
        "metadata never carries the value"
    );

    let updated = broker
        .call(
            "PUT",
            &format!("/vault/v1/kv/{id}"),
            Some(&json!({"value": "n3w", "version_check": v1})),
        )
        .await;
    assert_eq!(updated.status, 201, "{:?}", updated.body);
    assert!(updated.body.get("value").is_none());
    let v2 = updated.body["metadata"]["version_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(v1, v2);
    let stale = broker
        .call(
            "PUT",
            &format!("/vault/v1/kv/{id}"),
            Some(&json!({"value": "x", "version_check": v1})),
        )
        .await;
    assert_eq!(
        (stale.status, stale.body["code"].as_str()),
        (409, Some("version_conflict"))
    );

    let versions = broker
        .call("GET", &format!("/vault/v1/kv/{id}/versions"), None)
        .await;
    let data = versions.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[0]["id"], v2.as_str());
    assert_eq!(
        (
            data[0]["current_version"].as_bool(),
            data[1]["current_version"].as_bool()
        ),
        (Some(true), Some(false))
    );
    assert_eq!(data[0]["size"], 3);
    assert_eq!(
        broker
            .call("GET", &format!("/vault/v1/kv/{id}"), None)
            .await
            .body["value"],
        "n3w"
    );

    let stale_delete = broker
        .call(
            "DELETE",
            &format!("/vault/v1/kv/{id}?version_check={v1}"),
            None,
        )
        .await;
    assert_eq!(stale_delete.status, 409);
    let deleted = broker
        .call(
            "DELETE",
            &format!("/vault/v1/kv/{id}?version_check={v2}"),
            None,
        )
        .await;
    assert_eq!(
        (deleted.status, deleted.body["success"].as_bool()),
        (200, Some(true))
    );
    assert_eq!(
        broker
            .call("GET", &format!("/vault/v1/kv/{id}"), None)
            .await
            .status,
        404
    );
    // A deleted object's name can be reused.
    let again = broker
        .call(
            "POST",
            "/vault/v1/kv",
            Some(&json!({"name": "card/4111", "value": "v", "key_context": acme()})),
        )
        .await;
    assert_eq!(again.status, 201);
}

#[tokio::test]
async fn error_paths_answer_json_with_stable_codes() {
    let broker = TestBroker::start_local("errors").await;
    let cases: Vec<(u16, &str, common::broker::HttpResponse)> = vec![
        (
            401,
            "unauthorized",
            broker
                .call_with("GET", "/vault/v1/kv", None, None, &[])
                .await,
        ),
        (
            401,
            "unauthorized",
            broker
                .call_with(
                    "GET",
                    "/vault/v1/kv",
                    None,
                    Some("wrong-key-0123456789"),
                    &[],
                )
                .await,
        ),
        (
            403,
            "forbidden",
            broker
                .call_with("GET", "/vault/v1/kv", None, Some(ADMIN_KEY), &[])
                .await,
        ),
        (
            404,
            "not_found",
            broker
                .call(
                    "GET",
                    "/vault/v1/kv/00000000-0000-0000-0000-000000000000",
                    None,
                )
                .await,
        ),
        (
            404,
            "not_found",
            broker.call("GET", "/vault/v1/nothing-here", None).await,
        ),
        (
            405,
            "method_not_allowed",
            broker.call("PATCH", "/vault/v1/kv", None).await,
        ),
        (
            422,
            "invalid_json",
            broker
                .raw(
                    "POST",
                    "/vault/v1/kv",
                    b"{not json",
                    Some(common::broker::APP_KEY),
                    &[],
                )
                .await,
        ),
        (
            422,
            "invalid_request",
            broker
                .call("POST", "/vault/v1/kv", Some(&json!({"name": "x"})))
                .await,
        ),
        (
            422,
            "invalid_context",
            broker
                .call(
                    "POST",
                    "/vault/v1/kv",
                    Some(&json!({"name": "x", "value": "v", "key_context": {}})),
                )
                .await,
        ),
        (
            422,
            "invalid_context",
            broker
                .call(
                    "POST",
                    "/vault/v1/keys/data-key",
                    Some(&json!({"context": {"org": 7}})),
                )
                .await,
        ),
        (
            422,
            "invalid_name",
            broker
                .call(
                    "POST",
                    "/vault/v1/kv",
                    Some(&json!({"name": "n".repeat(201), "value": "v", "key_context": acme()})),
                )
                .await,
        ),
        (
            422,
            "value_too_large",
            broker
                .call(
                    "POST",
                    "/vault/v1/kv",
                    Some(
                        &json!({"name": "big", "value": "v".repeat(70_000), "key_context": acme()}),
                    ),
                )
                .await,
        ),
        (
            413,
            "payload_too_large",
            broker
                .raw(
                    "POST",
                    "/vault/v1/kv",
                    &vec![b' '; 3 * 1024 * 1024],
                    Some(common::broker::APP_KEY),
                    &[],
                )
                .await,
        ),
        (
            422,
            "invalid_limit",
            broker.call("GET", "/vault/v1/kv?limit=0", None).await,
        ),
        (
            422,
            "invalid_updated_after",
            broker
                .call("GET", "/vault/v1/kv?updated_after=yesterday", None)
                .await,
        ),
        (
            422,
            "invalid_encrypted_keys",
            broker
                .call(
                    "POST",
                    "/vault/v1/keys/decrypt",
                    Some(&json!({"keys": "bm90IGEgYmxvYg=="})),
                )
                .await,
        ),
    ];
    for (status, code, response) in cases {
        assert_eq!(response.status, status, "{code}: {:?}", response.body);
        assert_eq!(response.body["code"], code, "{:?}", response.body);
        assert!(response.body["error"].is_string() && response.body["message"].is_string());
    }
    let context_error = broker
        .call(
            "POST",
            "/vault/v1/kv",
            Some(&json!({"name": "x", "value": "v", "key_context": {"org": "v".repeat(501)}})),
        )
        .await;
    assert!(
        context_error.body["message"]
            .as_str()
            .unwrap()
            .contains("\"org\""),
        "names the offending pair"
    );
    let first = broker
        .call(
            "POST",
            "/vault/v1/kv",
            Some(&json!({"name": "dup", "value": "v", "key_context": acme()})),
        )
        .await;
    assert_eq!(first.status, 201);
    let dup = broker
        .call(
            "POST",
            "/vault/v1/kv",
            Some(&json!({"name": "dup", "value": "v", "key_context": acme()})),
        )
        .await;
    assert_eq!(
        (dup.status, dup.body["code"].as_str()),
        (409, Some("name_taken"))
    );
}

/// A context object naming a pair twice is refused (422 `invalid_context` naming it) wherever a
/// context is parsed, instead of the last value silently winning; nothing is written.
#[tokio::test]
async fn duplicate_context_names_are_refused_everywhere() {
    let broker = TestBroker::start_local("dup-context").await;
    let dup = r#"{"organization_id":"org_a","organization_id":"org_b"}"#;
    let cases = [
        (
            "/vault/v1/kv",
            format!(r#"{{"name":"dup","value":"v","key_context":{dup}}}"#),
            common::broker::APP_KEY,
        ),
        (
            "/vault/v1/keys/data-key",
            format!(r#"{{"context":{dup}}}"#),
            common::broker::APP_KEY,
        ),
        (
            "/vault/v1/keys/rekey",
            format!(r#"{{"context":{dup},"encrypted_keys":"AAAA"}}"#),
            common::broker::APP_KEY,
        ),
        (
            "/admin/v1/api-keys",
            format!(r#"{{"name":"k","role":"app","scope":{dup}}}"#),
            ADMIN_KEY,
        ),
        (
            "/admin/v1/byok-keys",
            format!(
                r#"{{"match_context":{dup},"provider":"aws_kms","key_arn":"arn:aws:kms:us-east-1:111111111111:key/k","role_arn":"arn:aws:iam::111111111111:role/r"}}"#
            ),
            ADMIN_KEY,
        ),
    ];
    for (path, body, key) in cases {
        let response = broker
            .raw("POST", path, body.as_bytes(), Some(key), &[])
            .await;
        assert_eq!(
            (response.status, response.body["code"].as_str()),
            (422, Some("invalid_context")),
            "{path}: {:?}",
            response.body
        );
        let message = response.body["message"].as_str().unwrap_or_default();
        assert!(message.contains("organization_id"), "{path}: {message}");
    }
    let read = broker.call("GET", "/vault/v1/kv/name/dup", None).await;
    assert_eq!(read.status, 404, "nothing was written: {:?}", read.body);
    let keys = broker
        .call_with("GET", "/admin/v1/api-keys", None, Some(ADMIN_KEY), &[])
        .await;
    assert_eq!(
        keys.body["data"].as_array().map(Vec::len),
        Some(2),
        "{:?}",
        keys.body
    );
}

#[tokio::test]
async fn of_fifty_concurrent_updates_with_one_version_check_exactly_one_wins() {
    let broker = TestBroker::start_local("race").await;
    let created = broker
        .call(
            "POST",
            "/vault/v1/kv",
            Some(&json!({"name": "counter", "value": "0", "key_context": acme()})),
        )
        .await;
    let id = created.body["id"].as_str().unwrap().to_owned();
    let version = created.body["version_id"].as_str().unwrap().to_owned();
    let path = format!("/vault/v1/kv/{id}");
    let bodies: Vec<Value> = (0..50)
        .map(|i| json!({"value": format!("v{i}"), "version_check": version}))
        .collect();
    let statuses: Vec<u16> = join_all(bodies.iter().map(|b| broker.call("PUT", &path, Some(b))))
        .await
        .into_iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        49,
        "{statuses:?}"
    );
    let versions = broker.call("GET", &format!("{path}/versions"), None).await;
    assert_eq!(versions.body["data"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn listing_pages_filters_and_idempotent_create() {
    let broker = TestBroker::start_local("list").await;
    for i in 0..5 {
        let r = broker
            .call(
                "POST",
                "/vault/v1/kv",
                Some(&json!({"name": format!("item-{i}"), "value": "v", "key_context": acme()})),
            )
            .await;
        assert_eq!(r.status, 201);
    }
    let first = broker
        .call("GET", "/vault/v1/kv?limit=2&order=asc", None)
        .await;
    let names: Vec<&str> = first.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["item-0", "item-1"]);
    assert!(first.body["list_metadata"]["before"].is_null());
    let after = first.body["list_metadata"]["after"]
        .as_str()
        .unwrap()
        .to_owned();
    let second = broker
        .call(
            "GET",
            &format!("/vault/v1/kv?limit=2&order=asc&after={after}"),
            None,
        )
        .await;
    assert_eq!(second.body["data"][0]["name"], "item-2");
    let newest = broker.call("GET", "/vault/v1/kv?limit=1", None).await;
    assert_eq!(
        newest.body["data"][0]["name"], "item-4",
        "default order is desc"
    );
    let search = broker.call("GET", "/vault/v1/kv?search=ITEM-3", None).await;
    assert_eq!(search.body["data"].as_array().unwrap().len(), 1);
    let js_date = "Mon+Jan+01+2024+00%3A00%3A00+GMT%2B0000+%28Coordinated+Universal+Time%29";
    let recent = broker
        .call(
            "GET",
            &format!("/vault/v1/kv?updated_after={js_date}"),
            None,
        )
        .await;
    assert_eq!(recent.body["data"].as_array().unwrap().len(), 5);
    let future = broker
        .call(
            "GET",
            "/vault/v1/kv?updatedAfter=2999-01-01T00:00:00Z",
            None,
        )
        .await;
    assert_eq!(future.body["data"].as_array().unwrap().len(), 0);

    let body = json!({"name": "once", "value": "v", "key_context": acme()});
    let headers = [("Idempotency-Key", "retry-1234")];
    let a = broker
        .call_with(
            "POST",
            "/vault/v1/kv",
            Some(&body),
            Some(common::broker::APP_KEY),
            &headers,
        )
        .await;
    let b = broker
        .call_with(
            "POST",
            "/vault/v1/kv",
            Some(&body),
            Some(common::broker::APP_KEY),
            &headers,
        )
        .await;
    assert_eq!((a.status, b.status), (201, 201));
    assert_eq!(
        a.body["id"], b.body["id"],
        "a retried create replays the first response"
    );
    let other = json!({"name": "other", "value": "v", "key_context": acme()});
    let reused = broker
        .call_with(
            "POST",
            "/vault/v1/kv",
            Some(&other),
            Some(common::broker::APP_KEY),
            &headers,
        )
        .await;
    assert_eq!(reused.status, 422);
}

#[tokio::test]
async fn data_keys_create_decrypt_and_rekey() {
    let broker = TestBroker::start_local("datakeys").await;
    let created = broker
        .call(
            "POST",
            "/vault/v1/keys/data-key",
            Some(&json!({"context": acme()})),
        )
        .await;
    assert_eq!(created.status, 200, "{:?}", created.body);
    let data_key = created.body["data_key"].as_str().unwrap().to_owned();
    let blob = created.body["encrypted_keys"].as_str().unwrap().to_owned();
    let decrypted = broker
        .call(
            "POST",
            "/vault/v1/keys/decrypt",
            Some(&json!({"keys": blob})),
        )
        .await;
    assert_eq!(
        (decrypted.status, decrypted.body["data_key"].as_str()),
        (200, Some(data_key.as_str()))
    );
    assert_eq!(decrypted.body["id"], created.body["id"]);

    let new_context = json!({"organization_id": "org_acme", "data_type": "archive"});
    let rekeyed = broker
        .call(
            "POST",
            "/vault/v1/keys/rekey",
            Some(&json!({"context": new_context, "encrypted_keys": blob})),
        )
        .await;
    assert_eq!(rekeyed.status, 200, "{:?}", rekeyed.body);
    assert_eq!(
        rekeyed.body["data_key"],
        data_key.as_str(),
        "rekey keeps the same DEK"
    );
    assert_eq!(rekeyed.body["context"], new_context);
    let again = broker
        .call(
            "POST",
            "/vault/v1/keys/decrypt",
            Some(&json!({"keys": rekeyed.body["encrypted_keys"]})),
        )
        .await;
    assert_eq!(again.body["data_key"], data_key.as_str());
}

#[tokio::test]
async fn a_disabled_kek_fails_closed_with_403() {
    let broker = TestBroker::start("revoked").await;
    let created = broker
        .call(
            "POST",
            "/vault/v1/kv",
            Some(&json!({"name": "s", "value": "v", "key_context": acme()})),
        )
        .await;
    let id = created.body["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{:?}", created.body))
        .to_owned();
    let kek = created.body["key_id"].as_str().unwrap().to_owned();
    common::raw_kms(common::PLATFORM_ACCOUNT)
        .await
        .disable_key()
        .key_id(&kek)
        .send()
        .await
        .unwrap();
    broker.broker.dek_cache.purge_kek(&kek).await;
    let read = broker
        .call("GET", &format!("/vault/v1/kv/{id}"), None)
        .await;
    assert_eq!(
        (read.status, read.body["code"].as_str()),
        (403, Some("key_unavailable")),
        "{:?}",
        read.body
    );
    let write = broker
        .call(
            "PUT",
            &format!("/vault/v1/kv/{id}"),
            Some(&json!({"value": "x"})),
        )
        .await;
    assert_eq!(write.status, 403);
}

#[tokio::test]
async fn a_key_over_its_rate_limit_gets_429_with_retry_after() {
    let broker =
        TestBroker::start_local_with("ratelimit", &[("BYOK_BROKER_RATE_LIMIT_PER_SECOND", "2")])
            .await;
    let mut statuses = Vec::new();
    for _ in 0..150 {
        statuses.push(broker.call("GET", "/vault/v1/kv", None).await);
    }
    let limited: Vec<_> = statuses.iter().filter(|r| r.status == 429).collect();
    assert!(
        !limited.is_empty(),
        "a burst of 150 beyond the default burst of 100 is limited"
    );
    assert_eq!(limited[0].body["code"], "rate_limited");
    assert!(
        limited[0]
            .headers
            .get("retry-after")
            .is_some_and(|v| v.parse::<u64>().unwrap() >= 1)
    );
    assert!(
        statuses.iter().take(100).all(|r| r.status == 200),
        "the burst itself passes"
    );
}

#[tokio::test]
async fn readiness_reports_the_key_provider() {
    let broker = TestBroker::start("ready").await;
    let ready = broker.call_with("GET", "/readyz", None, None, &[]).await;
    assert_eq!(
        (ready.status, ready.body["kms"].as_str()),
        (200, Some("aws_kms"))
    );
    let health = broker.call_with("GET", "/healthz", None, None, &[]).await;
    assert_eq!(health.status, 200);
}
