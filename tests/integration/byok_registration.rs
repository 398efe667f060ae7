//! BYOK registration against LocalStack: the broker generates each organization's external id
//! (the confused-deputy defence) and uses it, `role_arn` is required unless direct key access is
//! enabled, `match_context` must name the organization, and verification failures carry a reason
//! and a fixed message, never KMS or STS text.

use crate::common;

use common::broker::{HttpResponse, TestBroker, admin};
use common::{TENANT_ACCOUNT, create_key, registration};
use serde_json::{Value, json};

fn code(response: &HttpResponse) -> (u16, Option<&str>) {
    (response.status, response.body["code"].as_str())
}

#[tokio::test]
async fn the_broker_generates_one_external_id_per_organization_and_uses_it() {
    let broker = TestBroker::start("byok-ext-id").await;
    let first = admin(&broker, "GET", "/admin/v1/byok-external-ids/org_ext", None).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    let external_id = first.body["external_id"].as_str().unwrap().to_owned();
    assert!(external_id.len() >= 32, "{external_id}");
    let again = admin(&broker, "GET", "/admin/v1/byok-external-ids/org_ext", None).await;
    assert_eq!(again.body["external_id"], json!(external_id), "stable");
    let other = admin(
        &broker,
        "GET",
        "/admin/v1/byok-external-ids/org_other",
        None,
    )
    .await;
    assert_ne!(
        other.body["external_id"],
        json!(external_id),
        "one per organization"
    );

    // A caller may not choose the external id (it could name another tenant's)...
    let mut chosen = registration("org_ext", &create_key(TENANT_ACCOUNT).await, TENANT_ACCOUNT);
    chosen["external_id"] = json!("org_ext-external-id");
    let refused = admin(&broker, "POST", "/admin/v1/byok-keys", Some(&chosen)).await;
    assert_eq!(
        code(&refused),
        (422, Some("invalid_external_id")),
        "{:?}",
        refused.body
    );
    // ...but may echo the broker's; omitted, the broker's is used. Either way it is returned.
    let mut echoed = registration("org_ext", &create_key(TENANT_ACCOUNT).await, TENANT_ACCOUNT);
    echoed["external_id"] = json!(external_id);
    let created = admin(&broker, "POST", "/admin/v1/byok-keys", Some(&echoed)).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(created.body["external_id"], json!(external_id));
    let created = admin(
        &broker,
        "POST",
        "/admin/v1/byok-keys",
        Some(&registration(
            "org_other",
            &create_key(TENANT_ACCOUNT).await,
            TENANT_ACCOUNT,
        )),
    )
    .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(created.body["external_id"], other.body["external_id"]);
}

#[tokio::test]
async fn role_and_organization_are_required_unless_direct_access_is_enabled() {
    let broker = TestBroker::start("byok-role-required").await;
    let key = create_key(TENANT_ACCOUNT).await;
    let mut direct = registration("org_direct", &key, TENANT_ACCOUNT);
    direct.as_object_mut().unwrap().remove("role_arn");
    let refused = admin(&broker, "POST", "/admin/v1/byok-keys", Some(&direct)).await;
    assert_eq!(
        code(&refused),
        (422, Some("role_arn_required")),
        "{:?}",
        refused.body
    );

    let mut no_org = registration("x", &key, TENANT_ACCOUNT);
    no_org["match_context"] = json!({"data_type": "pii"});
    let refused = admin(&broker, "POST", "/admin/v1/byok-keys", Some(&no_org)).await;
    assert_eq!(
        code(&refused),
        (422, Some("invalid_match_context")),
        "{:?}",
        refused.body
    );
    let listed = admin(&broker, "GET", "/admin/v1/byok-keys", None).await;
    assert_eq!(listed.body["data"], json!([]), "nothing saved");

    // The operator allows direct key access: the broker's own identity uses the tenant's key
    // (in AWS the key policy pins kms:EncryptionContext:organization_id; LocalStack does not).
    let direct_broker = TestBroker::start_with(
        "byok-direct",
        &[("BYOK_BROKER_BYOK_ALLOW_DIRECT_KEY_ACCESS", "true")],
    )
    .await;
    let own_key = create_key(common::PLATFORM_ACCOUNT).await;
    let mut direct = registration("org_direct", &own_key, TENANT_ACCOUNT);
    direct.as_object_mut().unwrap().remove("role_arn");
    let created = admin(&direct_broker, "POST", "/admin/v1/byok-keys", Some(&direct)).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(
        (
            created.body["role_arn"].clone(),
            created.body["external_id"].clone()
        ),
        (Value::Null, Value::Null)
    );
}

#[tokio::test]
async fn verification_failures_name_the_reason_without_kms_text() {
    let broker = TestBroker::start("byok-verify-msg").await;
    let unknown = format!(
        "arn:aws:kms:us-east-1:{TENANT_ACCOUNT}:key/{}",
        uuid::Uuid::new_v4()
    );
    let response = admin(
        &broker,
        "POST",
        "/admin/v1/byok-keys",
        Some(&registration("org_unknown", &unknown, TENANT_ACCOUNT)),
    )
    .await;
    assert_eq!(
        code(&response),
        (422, Some("byok_verification_failed")),
        "{:?}",
        response.body
    );
    assert_eq!(
        response.body["message"],
        json!(
            "key verification failed (key_not_found): no key with this ARN exists in that account and region"
        )
    );
}
