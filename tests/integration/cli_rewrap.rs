//! `byok-broker rewrap` against a running broker (both the binary, LocalStack behind): it starts a
//! job, prints progress, exits 0 on completion and non-zero when objects could not be moved.

use crate::common;

use std::process::Command;

use common::process::{ADMIN_KEY, APP_KEY, request, spawn_broker, temp_dir};
use common::{TENANT_ACCOUNT as TENANT, create_key, key_spec, raw_kms};
use serde_json::{Value, json};

fn rewrap_cli(port: u16, byok_id: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_byok-broker"))
        .args([
            "rewrap",
            "--source-byok-key",
            byok_id,
            "--url",
            &format!("http://127.0.0.1:{port}"),
        ])
        .env("BYOK_BROKER_ADMIN_KEY", ADMIN_KEY)
        .output()
        .expect("run the CLI")
}

#[tokio::test]
async fn the_cli_runs_a_job_to_completion_and_fails_loudly() {
    let data_dir = temp_dir("cli");
    let mut broker = spawn_broker(
        &data_dir,
        &common::unique_prefix("cli"),
        &[("BYOK_BROKER_REWRAP_KMS_CALLS_PER_SECOND", "100")],
    )
    .await;
    let port = broker.port;
    let call = |key: &'static str, method: &'static str, path: String, body: Value| async move {
        request(port, key, method, &path, &body.to_string())
            .await
            .expect("answer")
    };

    for org in ["org_cli_ok", "org_cli_fail"] {
        let key_a = create_key(TENANT).await;
        let mut registration = key_spec(&key_a);
        registration["match_context"] = json!({"organization_id": org});
        registration["provider"] = json!("aws_kms");
        let (status, body) = call(
            ADMIN_KEY,
            "POST",
            "/admin/v1/byok-keys".into(),
            registration,
        )
        .await;
        assert_eq!(status, 201, "{body}");
        let byok_id = body["id"].as_str().unwrap().to_owned();
        for i in 0..150 {
            let (status, _) = call(APP_KEY, "POST", "/vault/v1/kv".into(), json!({"name": format!("{org}-{i}"), "value": "v", "key_context": {"organization_id": org}})).await;
            assert_eq!(status, 201);
        }
        let (status, _) = call(
            ADMIN_KEY,
            "PUT",
            format!("/admin/v1/byok-keys/{byok_id}"),
            key_spec(&create_key(TENANT).await),
        )
        .await;
        assert_eq!(status, 200);
        let failing = org == "org_cli_fail";
        if failing {
            raw_kms(TENANT)
                .await
                .disable_key()
                .key_id(&key_a)
                .send()
                .await
                .unwrap();
        }

        let output = tokio::task::spawn_blocking(move || rewrap_cli(port, &byok_id))
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        let final_state: Value = serde_json::from_slice(output.stdout.trim_ascii())
            .expect("the final job state as JSON");
        println!("{org}: exit {:?}\n{stderr}", output.status.code());
        assert!(
            stderr.contains("started rewrap job") && stderr.contains("/150"),
            "{stderr}"
        );
        if failing {
            assert!(!output.status.success(), "a failed job exits non-zero");
            assert_eq!(
                final_state["failures"],
                json!([{"reason": "key_unavailable", "objects": 150}])
            );
        } else {
            assert!(output.status.success(), "{stderr}");
            assert_eq!(
                (final_state["state"].as_str(), final_state["done"].as_u64()),
                (Some("completed"), Some(150))
            );
        }
    }
    let bad = Command::new(env!("CARGO_BIN_EXE_byok-broker"))
        .args([
            "rewrap",
            "--source-byok-key",
            "byok_nope",
            "--url",
            &format!("http://127.0.0.1:{port}"),
        ])
        .env("BYOK_BROKER_ADMIN_KEY", ADMIN_KEY)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("404"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    broker.child.kill().unwrap();
    broker.child.wait().unwrap();
}
