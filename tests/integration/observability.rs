//! What operators see: JSON log lines carrying each request's id, route, status, latency, caller
//! key id and context hash, with none of the values, tokens or DEKs the requests carried (the
//! broker runs at debug level); `/readyz` naming each dependency; and the metrics families the
//! README documents.

use serde_json::{Value, json};

use crate::common::process::{self, ADMIN_KEY, APP_KEY, call, spawn_broker, temp_dir};

/// Every stderr line, parsed: a line that is not JSON fails the test.
fn json_lines(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

#[tokio::test]
async fn json_logs_carry_each_requests_facts_and_never_a_secret() {
    let dir = temp_dir("obs-logs");
    let broker = spawn_broker(
        &dir,
        &format!("obs-{}", uuid::Uuid::new_v4().simple()),
        &[("RUST_LOG", "debug"), ("BYOK_BROKER_LOG_FORMAT", "json")],
    )
    .await;
    let port = broker.port;
    let secret_value = format!("value-{}", uuid::Uuid::new_v4().simple());
    let context = json!({"organization_id": "org_obs", "data_type": "pii"});

    let (status, created) = call(
        port,
        APP_KEY,
        "POST",
        "/vault/v1/kv",
        &json!({"name": "obs-object", "value": secret_value, "key_context": context}),
        &[("x-request-id", "obs-create-1")],
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("object id").to_owned();
    let (status, read) = call(
        port,
        APP_KEY,
        "GET",
        &format!("/vault/v1/kv/{id}"),
        &Value::Null,
        &[],
    )
    .await;
    assert_eq!(
        (status, read["value"].as_str()),
        (200, Some(secret_value.as_str()))
    );

    let (status, pair) = call(
        port,
        APP_KEY,
        "POST",
        "/vault/v1/keys/data-key",
        &json!({"context": context}),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{pair}");
    let data_key = pair["data_key"].as_str().expect("data_key").to_owned();
    let encrypted_keys = pair["encrypted_keys"]
        .as_str()
        .expect("encrypted_keys")
        .to_owned();
    let (status, opened) = call(
        port,
        APP_KEY,
        "POST",
        "/vault/v1/keys/decrypt",
        &json!({"keys": encrypted_keys}),
        &[],
    )
    .await;
    assert_eq!(
        (status, opened["data_key"].as_str()),
        (200, Some(data_key.as_str()))
    );

    let (status, key) = call(
        port,
        ADMIN_KEY,
        "POST",
        "/admin/v1/api-keys",
        &json!({"name": "obs", "role": "app", "scope": {"organization_id": "org_obs"}}),
        &[],
    )
    .await;
    assert_eq!(status, 201, "{key}");
    let new_token = key["key"].as_str().expect("token").to_owned();
    let app_key_id = key["id"].as_str().expect("key id").to_owned();
    let (status, _) = call(
        port,
        &new_token,
        "GET",
        &format!("/vault/v1/kv/{id}"),
        &Value::Null,
        &[("x-request-id", "obs-read-2")],
    )
    .await;
    assert_eq!(status, 200);
    let wrong_token = format!("bkb_app_{}", uuid::Uuid::new_v4().simple());
    let (status, _) = call(
        port,
        &wrong_token,
        "GET",
        &format!("/vault/v1/kv/{id}"),
        &Value::Null,
        &[],
    )
    .await;
    assert_eq!(status, 401);

    // The log is written as requests are answered: give the last line a moment.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let stderr = broker.stderr();
    for secret in [
        secret_value.as_str(),
        data_key.as_str(),
        APP_KEY,
        ADMIN_KEY,
        new_token.as_str(),
        wrong_token.as_str(),
    ] {
        assert!(
            !stderr.contains(secret),
            "a secret reached the log: {secret}"
        );
    }
    let lines = json_lines(&stderr);
    let requests: Vec<&Value> = lines
        .iter()
        .filter(|l| l["target"] == "byok_broker::access")
        .collect();
    assert!(
        requests.len() >= 7,
        "{} request lines:\n{stderr}",
        requests.len()
    );
    for line in &requests {
        for field in ["request_id", "route", "method"] {
            assert!(line["span"][field].is_string(), "{field} missing: {line}");
        }
        assert!(
            line["status"].is_u64() && line["latency_ms"].is_f64(),
            "{line}"
        );
    }
    let by_request_id = |wanted: &str| {
        requests
            .iter()
            .find(|l| l["span"]["request_id"] == wanted)
            .copied()
            .unwrap_or_else(|| panic!("no request line for {wanted}:\n{stderr}"))
    };
    let create = by_request_id("obs-create-1");
    assert_eq!(create["status"], 201);
    assert_eq!(create["span"]["route"], "/vault/v1/kv");
    assert_eq!(create["span"]["method"], "POST");
    let hash = create["span"]["context_hash"]
        .as_str()
        .expect("context hash");
    assert!(
        hash.len() == 64 && hash.chars().all(|c| c.is_ascii_hexdigit()),
        "{hash}"
    );
    assert!(create["span"]["key_id"].is_string(), "{create}");
    let read = by_request_id("obs-read-2");
    assert_eq!(read["span"]["key_id"], app_key_id.as_str());
    assert_eq!(read["span"]["route"], "/vault/v1/kv/{id}");
    assert_eq!(
        read["span"]["context_hash"], hash,
        "the same context, the same hash"
    );
    // Fresh ids for requests without one.
    assert!(
        requests.iter().any(|l| l["span"]["request_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("req_"))),
        "{stderr}"
    );
    drop(broker);
}

#[tokio::test]
async fn an_unknown_log_format_stops_the_start_naming_the_variable() {
    let dir = temp_dir("obs-format");
    let (mut command, _) =
        process::local_broker_command(&dir, &[("BYOK_BROKER_LOG_FORMAT", "xml")], None);
    let output = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run the broker");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("BYOK_BROKER_LOG_FORMAT"), "{stderr}");
}

#[tokio::test]
async fn readiness_names_each_dependency() {
    let dir = temp_dir("obs-ready");
    let broker = spawn_broker(&dir, &format!("obs-{}", uuid::Uuid::new_v4().simple()), &[]).await;
    let (status, ready) = call(broker.port, APP_KEY, "GET", "/readyz", &Value::Null, &[]).await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["status"], "ready");
    for dependency in ["database", "key_provider"] {
        assert_eq!(
            ready["checks"][dependency],
            json!({"ready": true, "required": true}),
            "{ready}"
        );
    }
    if crate::common::database::is_postgres() {
        assert_eq!(ready["checks"]["routing_view"]["ready"], true, "{ready}");
        assert_eq!(
            ready["checks"]["notifications"]["required"], false,
            "{ready}"
        );
    } else {
        assert!(ready["checks"].get("notifications").is_none(), "{ready}");
    }
    drop(broker);

    // A key provider that does not answer: not ready, and the check says which.
    let dead = process::free_port();
    let dir = temp_dir("obs-not-ready");
    let broker = spawn_broker(
        &dir,
        &format!("obs-{}", uuid::Uuid::new_v4().simple()),
        &[("AWS_ENDPOINT_URL", &format!("http://127.0.0.1:{dead}"))],
    )
    .await;
    let (status, ready) = call(broker.port, APP_KEY, "GET", "/readyz", &Value::Null, &[]).await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["code"], "not_ready");
    assert_eq!(ready["checks"]["database"]["ready"], true, "{ready}");
    assert_eq!(ready["checks"]["key_provider"]["ready"], false, "{ready}");
    assert!(
        ready["checks"]["key_provider"]["reason"].is_string(),
        "{ready}"
    );
    assert!(
        ready["message"]
            .as_str()
            .is_some_and(|m| m.contains("key_provider")),
        "{ready}"
    );
}

/// The metrics the README documents, read after real traffic: request latency by route and
/// status, the DEK cache, KMS calls, BYOK key states and their changes, the time from a disable
/// to the first request it refused, and (PostgreSQL) the database pool.
#[tokio::test]
async fn metrics_cover_requests_cache_kms_key_states_and_revocation_timing() {
    use crate::common::TENANT_ACCOUNT;
    use crate::common::broker::{TestBroker, admin, register};

    let broker = TestBroker::start("obs-metrics").await;
    let org = format!("org_obs_{}", uuid::Uuid::new_v4().simple());
    let (byok_id, _) = register(&broker, &org, TENANT_ACCOUNT).await;
    let context = json!({"organization_id": org});
    let created = broker
        .call(
            "POST",
            "/vault/v1/kv",
            Some(&json!({"name": "m1", "value": "v", "key_context": context})),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let path = format!("/vault/v1/kv/{}", created.body["id"].as_str().expect("id"));
    assert_eq!(broker.call("GET", &path, None).await.status, 200);

    let disabled = admin(
        &broker,
        "POST",
        &format!("/admin/v1/byok-keys/{byok_id}/disable"),
        None,
    )
    .await;
    assert_eq!(disabled.status, 200, "{:?}", disabled.body);
    for _ in 0..2 {
        let refused = broker.call("GET", &path, None).await;
        assert_eq!(refused.status, 403, "{:?}", refused.body);
    }

    let metrics = admin(&broker, "GET", "/admin/v1/metrics", None).await;
    assert_eq!(metrics.status, 200);
    let text = metrics.body.as_str().expect("the text exposition");
    for expected in [
        r#"byok_broker_http_request_duration_seconds_count{route="/vault/v1/kv",method="POST",status="201"} 1"#,
        r#"byok_broker_http_request_duration_seconds_count{route="/vault/v1/kv/{id}",method="GET",status="403"} 2"#,
        r#"byok_broker_key_state_changes_total{from="active",to="disabled"} 1"#,
        "byok_broker_revocation_to_refusal_seconds_count 1",
        r#"byok_broker_byok_keys{state="disabled"} 1"#,
        "byok_broker_dek_cache_entries",
        "byok_broker_audit_queue_depth 0",
        "byok_broker_audit_commit_duration_seconds_count",
        "byok_broker_audit_batch_events_bucket",
        r#"operation="generate_data_key",outcome="ok""#,
    ] {
        assert!(text.contains(expected), "missing {expected}:\n{text}");
    }
    assert_eq!(
        text.contains("byok_broker_db_pool_connections"),
        crate::common::database::is_postgres(),
        "the pool's use is reported on PostgreSQL only:\n{text}"
    );
}

/// `metrics_listen`: a second listener serving `GET /metrics` without a key, and nothing else;
/// the API listener still requires the admin key for its metrics.
#[tokio::test]
async fn the_metrics_listener_serves_only_metrics_without_a_key() {
    use crate::common::http_client::HttpClient;

    let dir = temp_dir("obs-metrics-listener");
    let metrics_port = process::free_port();
    let broker = spawn_broker(
        &dir,
        &format!("obs-{}", uuid::Uuid::new_v4().simple()),
        &[(
            "BYOK_BROKER_METRICS_LISTEN",
            &format!("127.0.0.1:{metrics_port}"),
        )],
    )
    .await;
    let (status, _) = call(broker.port, APP_KEY, "GET", "/healthz", &Value::Null, &[]).await;
    assert_eq!(status, 200);
    let scraper =
        HttpClient::new(&format!("http://127.0.0.1:{metrics_port}"), None).expect("client");
    let scraped = scraper
        .send("GET", "/metrics", b"", &[])
        .await
        .expect("the metrics listener answers");
    assert_eq!(scraped.status, 200);
    assert!(scraped.headers["content-type"].starts_with("application/openmetrics-text"));
    let text = String::from_utf8_lossy(&scraped.body);
    assert!(text.contains(r#"byok_broker_http_request_duration_seconds_count{route="/healthz",method="GET",status="200"} 1"#), "{text}");
    for path in ["/admin/v1/metrics", "/healthz", "/vault/v1/kv"] {
        let other = scraper.send("GET", path, b"", &[]).await.expect("answers");
        assert_eq!(other.status, 404, "{path} on the metrics listener");
    }
    let api = HttpClient::new(&format!("http://127.0.0.1:{}", broker.port), None).expect("client");
    assert_eq!(
        api.send("GET", "/admin/v1/metrics", b"", &[])
            .await
            .expect("answers")
            .status,
        401
    );
}
