//! The admin portal (issue 13): `POST /portal/generate_link` on the WorkOS wire, single-use
//! expiring links, organization-scoped sessions, the portal API's refusal of API keys and of
//! cross-site requests, and what the page and logs must never contain. Against LocalStack where a
//! key is verified. The real-browser flow is `portal_browser`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::broker::{ADMIN_KEY, APP_KEY, TestBroker, admin, register};
use crate::common::portal::{generate_link, launch, launch_path, open_session};
use crate::common::process::{self, spawn_broker, temp_dir};
use crate::common::{OTHER_TENANT_ACCOUNT, TENANT_ACCOUNT, create_key, role_arn};

const PUBLIC_URL: &str = "https://portal.example.test";

#[tokio::test]
async fn generate_link_speaks_the_workos_wire_and_refuses_other_intents() {
    let broker = TestBroker::start_local_with(
        "portal-link",
        &[("BYOK_BROKER_PORTAL_PUBLIC_URL", PUBLIC_URL)],
    )
    .await;
    // As the SDKs send it, with the fields this broker ignores.
    let body = json!({"organization": "org_link", "intent": "bring_your_own_key",
        "return_url": "https://app.example/settings", "success_url": "https://app.example/done",
        "admin_emails": ["it@example.com"]});
    let created = admin(&broker, "POST", "/portal/generate_link", Some(&body)).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let link = created.body["link"].as_str().unwrap();
    assert!(
        link.starts_with(&format!("{PUBLIC_URL}/portal/launch?token=ptl_")),
        "{link}"
    );
    assert_eq!(created.body.as_object().unwrap().len(), 1, "only `link`");

    for intent in ["sso", "dsync", "audit_logs", ""] {
        let body = json!({"organization": "org_link", "intent": intent});
        let refused = admin(&broker, "POST", "/portal/generate_link", Some(&body)).await;
        assert_eq!(refused.status, 422, "{intent}: {:?}", refused.body);
        assert_eq!(refused.body["code"], "invalid_intent");
        assert!(
            refused.body["message"]
                .as_str()
                .unwrap()
                .contains("bring_your_own_key")
        );
    }
    let no_intent = json!({"organization": "org_link"});
    let refused = admin(&broker, "POST", "/portal/generate_link", Some(&no_intent)).await;
    assert_eq!(
        (refused.status, refused.body["code"].as_str()),
        (422, Some("invalid_intent"))
    );
    let body = json!({"organization": "org_link", "intent": "bring_your_own_key", "success_url": "javascript:alert(1)"});
    let refused = admin(&broker, "POST", "/portal/generate_link", Some(&body)).await;
    assert_eq!(
        (refused.status, refused.body["code"].as_str()),
        (422, Some("invalid_url"))
    );
    // An app key may not generate links.
    let body = json!({"organization": "org_link", "intent": "bring_your_own_key"});
    let app = broker
        .call("POST", "/portal/generate_link", Some(&body))
        .await;
    assert_eq!(app.status, 403, "{:?}", app.body);
    // The event names the admin key, never the token.
    let events = admin(
        &broker,
        "GET",
        "/admin/v1/events?events=portal.link.generated&organization_id=org_link",
        None,
    )
    .await;
    let event = &events.body["data"][0];
    assert_eq!(event["data"]["actor_source"], "api");
    assert!(
        !events
            .body
            .to_string()
            .contains(link.split("token=").nth(1).unwrap())
    );
}

#[tokio::test]
async fn a_link_opens_one_session_once_and_expires() {
    let broker = TestBroker::start_local_with(
        "portal-once",
        &[("BYOK_BROKER_PORTAL_LINK_TTL_SECONDS", "1")],
    )
    .await;
    let link = generate_link(&broker, "org_once").await;
    let token = link.split("token=").nth(1).unwrap().to_owned();
    let (opened, cookie) = launch(&broker, &link).await;
    assert_eq!(opened.status, 200);
    let set_cookie = &opened.headers["set-cookie"];
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/portal"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(!set_cookie.contains("Secure"), "plain HTTP: {set_cookie}");
    assert_eq!(opened.headers["referrer-policy"], "no-referrer");
    let page = opened.body.to_string();
    assert!(!page.contains(&token), "the token stays out of the page");
    let cookie = cookie.unwrap();
    assert!(!page.contains(cookie.split('=').nth(1).unwrap()));

    // Used: refused, and no second session.
    let (again, second) = launch(&broker, &link).await;
    assert_eq!(again.status, 403);
    assert!(second.is_none());
    assert!(
        again
            .body
            .to_string()
            .contains("expired or was already used")
    );

    // Expired: refused though never used.
    let unused = generate_link(&broker, "org_once").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (late, none) = launch(&broker, &unused).await;
    assert_eq!(late.status, 403);
    assert!(none.is_none());
    // A made-up token, and none.
    for path in ["/portal/launch?token=ptl_00", "/portal/launch"] {
        let guessed = broker.call_with("GET", path, None, None, &[]).await;
        assert_eq!(guessed.status, 403, "{path}");
        assert!(!guessed.headers.contains_key("set-cookie"));
    }
    // Only hashes are stored.
    let rows = crate::common::database::query(
        &broker.data_dir,
        "SELECT token_hash FROM portal_links",
        &[],
    )
    .await;
    assert_eq!(rows.len(), 2);
    for row in rows {
        assert_ne!(row[0].text(), token);
        assert_eq!(row[0].text().len(), 64);
    }
}

#[tokio::test]
async fn the_portal_api_takes_only_its_session_never_an_api_key() {
    let broker = TestBroker::start_local_with(
        "portal-keys",
        &[("BYOK_BROKER_PORTAL_SESSION_IDLE_SECONDS", "2")],
    )
    .await;
    let session = open_session(&broker, "org_keys").await;
    for key in [ADMIN_KEY, APP_KEY] {
        let refused = broker
            .call_with("GET", "/portal/api/keys", None, Some(key), &[])
            .await;
        assert_eq!(refused.status, 401, "{:?}", refused.body);
        assert_eq!(refused.body["code"], "portal_session_required");
        // Not even next to a valid cookie.
        let both = broker
            .call_with(
                "GET",
                "/portal/api/keys",
                None,
                Some(key),
                &[("cookie", &session.cookie)],
            )
            .await;
        assert_eq!(both.status, 401);
    }
    let none = broker
        .call_with("GET", "/portal/api/keys", None, None, &[])
        .await;
    assert_eq!(none.status, 401);
    let forged = broker
        .call_with(
            "GET",
            "/portal/api/keys",
            None,
            None,
            &[("cookie", "byok_portal=pts_forged")],
        )
        .await;
    assert_eq!(forged.status, 401);
    assert_eq!(session.get(&broker, "/portal/api/keys").await.status, 200);

    // Activity keeps it alive; idleness ends it.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert_eq!(
            session.get(&broker, "/portal/api/session").await.status,
            200
        );
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        session.get(&broker, "/portal/api/session").await.status,
        401
    );

    // Signing out ends a session at once.
    let other = open_session(&broker, "org_keys").await;
    assert_eq!(
        other
            .post(&broker, "/portal/api/sign_out", None)
            .await
            .status,
        200
    );
    assert_eq!(other.get(&broker, "/portal/api/keys").await.status, 401);
    let events = admin(&broker, "GET", "/admin/v1/events?organization_id=org_keys&events=portal.session.started,portal.session.ended", None).await;
    let names: Vec<&str> = events.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        names
            .iter()
            .filter(|n| **n == "portal.session.started")
            .count(),
        2,
        "{names:?}"
    );
    assert!(names.contains(&"portal.session.ended"));
    for event in events.body["data"].as_array().unwrap() {
        assert_eq!(event["data"]["actor_source"], "portal");
        assert_eq!(event["data"]["actor_name"], "portal session of org_keys");
    }
}

#[tokio::test]
async fn cross_site_and_tokenless_changes_are_refused() {
    let broker = TestBroker::start_local("portal-csrf").await;
    let session = open_session(&broker, "org_csrf").await;
    let origin = format!("http://{}", broker.address);
    let attempts: [(&str, Vec<(&str, &str)>); 4] = [
        ("no token", vec![("cookie", &session.cookie)]),
        (
            "a wrong token",
            vec![("cookie", &session.cookie), ("x-csrf-token", "0000")],
        ),
        (
            "another site (Sec-Fetch-Site)",
            vec![
                ("cookie", &session.cookie),
                ("x-csrf-token", &session.csrf),
                ("sec-fetch-site", "cross-site"),
            ],
        ),
        (
            "another origin",
            vec![
                ("cookie", &session.cookie),
                ("x-csrf-token", &session.csrf),
                ("origin", "https://evil.example"),
            ],
        ),
    ];
    for (what, headers) in attempts {
        let refused = broker
            .call_with("POST", "/portal/api/sign_out", None, None, &headers)
            .await;
        assert_eq!(refused.status, 403, "{what}: {:?}", refused.body);
        assert_eq!(refused.body["code"], "csrf_check_failed", "{what}");
    }
    // Another session's token is no good either.
    let other = open_session(&broker, "org_csrf").await;
    let mixed = broker
        .call_with(
            "POST",
            "/portal/api/sign_out",
            None,
            None,
            &[
                ("cookie", &session.cookie),
                ("x-csrf-token", &other.csrf),
                ("origin", &origin),
            ],
        )
        .await;
    assert_eq!(mixed.status, 403);
    assert_eq!(
        session.get(&broker, "/portal/api/keys").await.status,
        200,
        "the session lives on"
    );
    assert_eq!(
        session
            .post(&broker, "/portal/api/sign_out", None)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn a_session_of_one_organization_cannot_see_or_change_another() {
    let broker = TestBroker::start("portal-isolation").await;
    let (b_key, _) = register(&broker, "org_portal_b", OTHER_TENANT_ACCOUNT).await;
    let a = open_session(&broker, "org_portal_a").await;

    assert_eq!(
        a.get(&broker, "/portal/api/keys").await.body["data"],
        json!([])
    );
    let show = a.get(&broker, &format!("/portal/api/keys/{b_key}")).await;
    assert_eq!(show.status, 404, "{:?}", show.body);
    for action in ["disable", "retire", "enable", "onboard"] {
        let refused = a
            .post(&broker, &format!("/portal/api/keys/{b_key}/{action}"), None)
            .await;
        assert_eq!(refused.status, 404, "{action}: {:?}", refused.body);
    }
    let rotate = a
        .post(&broker, &format!("/portal/api/keys/{b_key}/rotate"), Some(&json!({"key_arn": create_key(TENANT_ACCOUNT).await, "role_arn": role_arn(TENANT_ACCOUNT)})))
        .await;
    assert_eq!(rotate.status, 404);
    let b = admin(
        &broker,
        "GET",
        &format!("/admin/v1/byok-keys/{b_key}"),
        None,
    )
    .await;
    assert_eq!(b.body["state"], "active");
    assert_eq!(b.body["keks"].as_array().unwrap().len(), 1);

    // A registration is always for the session's organization: a match context is refused.
    let key_arn = create_key(TENANT_ACCOUNT).await;
    let smuggled = a
        .post(&broker, "/portal/api/keys", Some(&json!({"key_arn": key_arn, "role_arn": role_arn(TENANT_ACCOUNT), "match_context": {"organization_id": "org_portal_b"}})))
        .await;
    assert_eq!(smuggled.status, 422, "{:?}", smuggled.body);
    let registered = a
        .post(
            &broker,
            "/portal/api/keys",
            Some(&json!({"key_arn": key_arn, "role_arn": role_arn(TENANT_ACCOUNT)})),
        )
        .await;
    assert_eq!(registered.status, 201, "{:?}", registered.body);
    assert_eq!(
        registered.body["match_context"],
        json!({"organization_id": "org_portal_a"})
    );

    // B's own session sees B's key and not A's; B's rewrap jobs and events stay B's.
    let b_session = open_session(&broker, "org_portal_b").await;
    let b_keys = b_session.get(&broker, "/portal/api/keys").await;
    let ids: Vec<&str> = b_keys.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![b_key.as_str()]);
    let job = admin(
        &broker,
        "POST",
        "/admin/v1/rewrap-jobs",
        Some(&json!({"source": {"byok_key_id": b_key}})),
    )
    .await;
    assert_eq!(job.status, 202, "{:?}", job.body);
    let job_id = job.body["id"].as_str().unwrap();
    assert_eq!(
        a.get(&broker, &format!("/portal/api/rewrap-jobs/{job_id}"))
            .await
            .status,
        404
    );
    let events = a.get(&broker, "/portal/api/events").await;
    assert_eq!(events.status, 200);
    let text = events.body.to_string();
    assert!(
        !text.contains("org_portal_b") && !text.contains(&b_key),
        "{text}"
    );
    assert!(text.contains("portal.byok_key.registration_attempted"));
    // The setup documents carry A's external id, not B's.
    let setup_a = a.get(&broker, "/portal/api/setup").await.body;
    let b_external = admin(
        &broker,
        "GET",
        "/admin/v1/byok-external-ids/org_portal_b",
        None,
    )
    .await
    .body["external_id"]
        .clone();
    assert_ne!(setup_a["external_id"], b_external);
    assert_eq!(
        setup_a["trust_policy"]["Statement"][0]["Condition"]["StringEquals"]["sts:ExternalId"],
        setup_a["external_id"]
    );
}

#[tokio::test]
async fn verification_failures_and_the_full_key_lifecycle_through_the_portal() {
    let broker = TestBroker::start("portal-lifecycle").await;
    let org = "org_portal_life";
    let session = open_session(&broker, org).await;
    // Objects written before the key exists sit under the platform KEK.
    for n in 0..3 {
        let body = json!({"name": format!("before-{n}"), "value": "v", "key_context": {"organization_id": org}});
        assert_eq!(
            broker
                .call("POST", "/vault/v1/kv", Some(&body))
                .await
                .status,
            201
        );
    }
    // A key that does not exist: a verdict naming the reason, the ARN not echoed.
    let missing =
        format!("arn:aws:kms:us-east-1:{TENANT_ACCOUNT}:key/00000000-0000-0000-0000-000000000000");
    let failed = session
        .post(
            &broker,
            "/portal/api/keys",
            Some(&json!({"key_arn": missing, "role_arn": role_arn(TENANT_ACCOUNT)})),
        )
        .await;
    assert_eq!(failed.status, 422, "{:?}", failed.body);
    assert_eq!(failed.body["code"], "byok_verification_failed");
    assert!(
        failed.body["message"]
            .as_str()
            .unwrap()
            .contains("(key_not_found)")
    );
    let markup = session
        .post(
            &broker,
            "/portal/api/keys",
            Some(&json!({"key_arn": "<img src=x onerror=alert(1)>"})),
        )
        .await;
    assert_eq!(markup.body["code"], "invalid_key_arn");
    assert!(!markup.body.to_string().contains("<img"));

    let key_arn = create_key(TENANT_ACCOUNT).await;
    let key = session
        .post(
            &broker,
            "/portal/api/keys",
            Some(&json!({"key_arn": key_arn, "role_arn": role_arn(TENANT_ACCOUNT)})),
        )
        .await;
    assert_eq!(key.status, 201, "{:?}", key.body);
    let id = key.body["id"].as_str().unwrap().to_owned();
    assert_eq!(key.body["objects_under_other_keys"], 3);

    // Onboarding: the jobs move all three, and the page can follow them.
    let jobs = session
        .post(&broker, &format!("/portal/api/keys/{id}/onboard"), None)
        .await;
    assert_eq!(jobs.status, 202, "{:?}", jobs.body);
    let job_id = jobs.body["data"][0]["id"].as_str().unwrap().to_owned();
    let mut finished = Value::Null;
    for _ in 0..100 {
        let job = session
            .get(&broker, &format!("/portal/api/rewrap-jobs/{job_id}"))
            .await;
        assert_eq!(job.status, 200, "{:?}", job.body);
        if job.body["state"] != "running" {
            finished = job.body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(finished["state"], "completed", "{finished}");
    let after = session
        .get(&broker, &format!("/portal/api/keys/{id}"))
        .await;
    assert_eq!(after.body["objects_under_other_keys"], 0);
    assert_eq!(after.body["keks"][0]["objects"], 3);

    // Disable: the app's reads fail with 403; enable: they work again.
    let disabled = session
        .post(&broker, &format!("/portal/api/keys/{id}/disable"), None)
        .await;
    assert_eq!(disabled.body["state"], "disabled");
    let read = broker.call("GET", "/vault/v1/kv/name/before-0", None).await;
    assert_eq!(read.status, 403, "{:?}", read.body);
    let enabled = session
        .post(&broker, &format!("/portal/api/keys/{id}/enable"), None)
        .await;
    assert_eq!(enabled.body["state"], "active", "{:?}", enabled.body);
    assert_eq!(
        broker
            .call("GET", "/vault/v1/kv/name/before-0", None)
            .await
            .status,
        200
    );

    // Rotate to a new key, then retire (offboarding): the move back starts from the portal too.
    let next_arn = create_key(TENANT_ACCOUNT).await;
    let rotated = session
        .post(
            &broker,
            &format!("/portal/api/keys/{id}/rotate"),
            Some(&json!({"key_arn": next_arn, "role_arn": role_arn(TENANT_ACCOUNT)})),
        )
        .await;
    assert_eq!(rotated.status, 200, "{:?}", rotated.body);
    assert_eq!(rotated.body["key_arn"], next_arn.as_str());
    assert_eq!(rotated.body["keks"].as_array().unwrap().len(), 2);
    let retired = session
        .post(&broker, &format!("/portal/api/keys/{id}/retire"), None)
        .await;
    assert_eq!(retired.body["state"], "retired", "{:?}", retired.body);
    let back = session
        .post(&broker, &format!("/portal/api/keys/{id}/onboard"), None)
        .await;
    assert_eq!(back.status, 202, "{:?}", back.body);
    assert_eq!(
        back.body["data"][0]["source"]["byok_key_id"],
        id.as_str(),
        "{:?}",
        back.body
    );

    // The actions are audited with the session as actor.
    let events = admin(
        &broker,
        "GET",
        &format!("/admin/v1/events?organization_id={org}&limit=100"),
        None,
    )
    .await;
    let portal_events: Vec<&Value> = events.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"].as_str().unwrap().starts_with("portal.byok_key."))
        .collect();
    let names: Vec<&str> = portal_events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    for expected in [
        "portal.byok_key.registration_attempted",
        "portal.byok_key.onboarding_started",
        "portal.byok_key.disabled",
        "portal.byok_key.enabled",
    ] {
        assert!(names.contains(&expected), "{expected} in {names:?}");
    }
    for event in portal_events {
        assert_eq!(
            event["data"]["actor_name"],
            format!("portal session of {org}")
        );
    }
}

#[tokio::test]
async fn the_page_is_self_contained_and_writes_values_as_text() {
    let broker = TestBroker::start_local("portal-page").await;
    let page = broker.call_with("GET", "/portal/", None, None, &[]).await;
    assert_eq!(page.status, 200);
    let csp = &page.headers["content-security-policy"];
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
    let html = page.body.as_str().unwrap();
    // No external asset, no inline script or style (the CSP would block them anyway).
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "{html}"
    );
    assert!(!html.contains("<script>") && !html.contains("style="));
    let script = broker
        .call_with("GET", "/portal/portal.js", None, None, &[])
        .await;
    assert_eq!(
        script.headers["content-type"],
        "text/javascript; charset=utf-8"
    );
    let js = script.body.as_str().unwrap();
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
    ] {
        assert!(!js.contains(sink), "the script must not use {sink}");
    }
    assert!(js.contains("textContent"));
}

/// The binary's log at debug level: neither the link's token nor the session secret nor its CSRF
/// token appears, through a link generated, opened, used and reused.
#[tokio::test]
async fn no_token_or_secret_reaches_the_log() {
    let dir = temp_dir("portal-log");
    let mut broker = spawn_broker(
        &dir,
        &crate::common::unique_prefix("portal-log"),
        &[("RUST_LOG", "debug")],
    )
    .await;
    let port = broker.port;
    let body = json!({"organization": "org_log", "intent": "bring_your_own_key"});
    let (status, created) = process::call(
        port,
        process::ADMIN_KEY,
        "POST",
        "/portal/generate_link",
        &body,
        &[],
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let link = created["link"].as_str().unwrap();
    let token = link.split("token=").nth(1).unwrap();
    let client =
        crate::common::http_client::HttpClient::new(&format!("http://127.0.0.1:{port}"), None)
            .unwrap();
    let opened = client
        .send("GET", &launch_path(link), b"", &[])
        .await
        .unwrap();
    assert_eq!(opened.status, 200);
    let cookie = opened.headers["set-cookie"]
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let secret = cookie.split('=').nth(1).unwrap().to_owned();
    let session = client
        .send("GET", "/portal/api/session", b"", &[("cookie", &cookie)])
        .await
        .unwrap();
    let csrf = serde_json::from_slice::<Value>(&session.body).unwrap()["csrf_token"]
        .as_str()
        .unwrap()
        .to_owned();
    client
        .send("GET", "/portal/api/setup", b"", &[("cookie", &cookie)])
        .await
        .unwrap();
    let reused = client
        .send("GET", &launch_path(link), b"", &[])
        .await
        .unwrap();
    assert_eq!(reused.status, 403);
    let _ = broker.child.kill();
    let _ = broker.child.wait();
    let log = broker.stderr();
    assert!(log.contains("/portal/"), "the log has the requests: {log}");
    for (what, secret) in [
        ("link token", token),
        ("session secret", secret.as_str()),
        ("CSRF token", csrf.as_str()),
    ] {
        assert!(!log.contains(secret), "the {what} is in the log");
    }
}

/// Over TLS, links are https:// and the session cookie is `Secure`.
#[tokio::test]
async fn over_tls_the_link_is_https_and_the_cookie_secure() {
    use crate::common::certs::{TestCa, client_config};
    let dir = temp_dir("portal-tls");
    let ca = TestCa::new("portal test CA");
    let broker = crate::tls::tls_broker(&dir, &ca.server(&["127.0.0.1"], false), None).await;
    let admin_client = crate::tls::https(broker.port, process::ADMIN_KEY, client_config(&ca, None));
    let body = json!({"organization": "org_tls_portal", "intent": "bring_your_own_key"});
    let created = admin_client
        .send(
            "POST",
            "/portal/generate_link",
            body.to_string().as_bytes(),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(created.status, 201);
    let link = serde_json::from_slice::<Value>(&created.body).unwrap()["link"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        link.starts_with(&format!(
            "https://127.0.0.1:{}/portal/launch?token=",
            broker.port
        )),
        "{link}"
    );
    let browser = crate::common::http_client::HttpClient::with_tls(
        &format!("https://127.0.0.1:{}", broker.port),
        None,
        Some(client_config(&ca, None)),
    )
    .unwrap();
    let opened = browser
        .send("GET", &launch_path(&link), b"", &[])
        .await
        .unwrap();
    assert_eq!(opened.status, 200);
    let cookie = &opened.headers["set-cookie"];
    for attribute in ["HttpOnly", "SameSite=Strict", "Secure"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
}

/// Several instances on PostgreSQL: a link generated through one opens on another, only once,
/// and the session works on every instance.
#[tokio::test]
async fn links_and_sessions_work_across_instances() {
    let Some(instances) =
        crate::common::instances::Instances::spawn("portal-instances", 2, &[]).await
    else {
        return;
    };
    let body = json!({"organization": "org_multi", "intent": "bring_your_own_key"});
    let (status, created) = process::call(
        instances.port(0),
        process::ADMIN_KEY,
        "POST",
        "/portal/generate_link",
        &body,
        &[],
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let path = launch_path(created["link"].as_str().unwrap());
    let client = |port: u16| {
        crate::common::http_client::HttpClient::new(&format!("http://127.0.0.1:{port}"), None)
            .unwrap()
    };
    let opened = client(instances.port(1))
        .send("GET", &path, b"", &[])
        .await
        .unwrap();
    assert_eq!(opened.status, 200);
    let again = client(instances.port(0))
        .send("GET", &path, b"", &[])
        .await
        .unwrap();
    assert_eq!(again.status, 403, "used on the other instance");
    let cookie = opened.headers["set-cookie"]
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    for index in [0, 1] {
        let session = client(instances.port(index))
            .send("GET", "/portal/api/session", b"", &[("cookie", &cookie)])
            .await
            .unwrap();
        assert_eq!(session.status, 200, "instance {index}");
    }
}
