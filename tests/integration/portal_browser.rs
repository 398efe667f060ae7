//! The portal in a real browser (issue 13): headless Chromium from Debian, driven over WebDriver,
//! against LocalStack. The link comes from the official WorkOS Node SDK; the tenant admin reads the
//! policies, enters a wrong key ARN and reads the verdict, fixes it, onboards existing objects
//! until the progress bar shows 100 %, disables (the app's reads fail with 403) and re-enables;
//! values with markup are shown as text. A screenshot of each step goes to the test's output
//! folder (`$CARGO_TARGET_TMPDIR/portal-browser/`).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::broker::{ADMIN_KEY, TestBroker};
use crate::common::webdriver::Browser;
use crate::common::{PLATFORM_ACCOUNT, TENANT_ACCOUNT, create_key, role_arn};

const WAIT: Duration = Duration::from_secs(20);

/// Generates the link as an application would: `workos.adminPortal.generateLink` of
/// @workos-inc/node 11 (tests/sdk, installed here with `npm ci` if it is not yet). Off the
/// runtime's thread, which serves the in-process broker the SDK calls.
async fn link_from_sdk(port: u16, organization: &str, success_url: &str) -> String {
    let (organization, success_url) = (organization.to_owned(), success_url.to_owned());
    tokio::task::spawn_blocking(move || run_sdk(port, &organization, &success_url))
        .await
        .unwrap()
}

fn run_sdk(port: u16, organization: &str, success_url: &str) -> String {
    let sdk = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk");
    if !sdk.join("node_modules/workos11").exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&sdk)
            .status()
            .expect("npm (the WorkOS SDK for the browser test)");
        assert!(status.success(), "npm ci in tests/sdk failed");
    }
    let script = "import { WorkOS } from 'workos11';\n\
        const workos = new WorkOS(process.env.ADMIN_KEY, { apiHostname: '127.0.0.1', port: Number(process.env.PORT), https: false, maxRetries: 0 });\n\
        const { link } = await workos.adminPortal.generateLink({ organization: process.env.ORG, intent: 'bring_your_own_key', successUrl: process.env.SUCCESS_URL });\n\
        console.log(link);";
    let output = Command::new("node")
        .args(["--input-type=module", "-e", script])
        .current_dir(&sdk)
        .env("ADMIN_KEY", ADMIN_KEY)
        .env("PORT", port.to_string())
        .env("ORG", organization)
        .env("SUCCESS_URL", success_url)
        .output()
        .expect("node");
    assert!(
        output.status.success(),
        "the SDK did not generate a link: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

struct Shots {
    dir: PathBuf,
    count: usize,
}

impl Shots {
    fn new() -> Self {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("portal-browser");
        std::fs::create_dir_all(&dir).unwrap();
        Self { dir, count: 0 }
    }

    async fn take(&mut self, browser: &Browser, name: &str) {
        self.count += 1;
        let path = self.dir.join(format!("{:02}-{name}.png", self.count));
        browser.screenshot(&path).await;
        eprintln!("screenshot: {}", path.display());
    }
}

/// Scrolls the element into view (for the screenshot of that step).
async fn scroll_to(browser: &Browser, css: &str) {
    browser
        .run(
            "document.querySelector(arguments[0]).scrollIntoView({block: 'start'}); return true;",
            json!([css]),
        )
        .await;
}

#[tokio::test]
async fn a_tenant_admin_sets_up_byok_in_a_real_browser() {
    let principal = format!("arn:aws:iam::{PLATFORM_ACCOUNT}:role/byok-broker");
    let broker = TestBroker::start_with(
        "portal-browser",
        &[("BYOK_BROKER_PORTAL_BROKER_PRINCIPAL_ARN", &principal)],
    )
    .await;
    let org = "org_browser";
    let base = format!("http://{}", broker.address);
    for n in 0..12 {
        let body = json!({"name": format!("invoice-{n}"), "value": format!("secret {n}"), "key_context": {"organization_id": org}});
        assert_eq!(
            broker
                .call("POST", "/vault/v1/kv", Some(&body))
                .await
                .status,
            201
        );
    }
    // The in-process broker listens on another port than its configuration says: the link's path
    // is opened on the real address.
    let link = link_from_sdk(broker.address.port(), org, "https://app.example/byok-done").await;
    let launch = &link[link.find("/portal/launch").expect("a portal link")..];
    let browser = Browser::start().await;
    let mut shots = Shots::new();

    // Open the link: the session starts and the page loads.
    browser.goto(&format!("{base}{launch}")).await;
    browser
        .wait_for(
            "the page",
            "return document.body.dataset.ready === 'true';",
            WAIT,
        )
        .await;
    assert_eq!(browser.url().await, format!("{base}/portal/"));
    assert_eq!(browser.text("#organization").await, org);
    let page_source = browser
        .run("return document.documentElement.outerHTML;", json!([]))
        .await;
    let token = link.split("token=").nth(1).unwrap();
    assert!(
        !page_source.as_str().unwrap().contains(token),
        "the token is not in the page"
    );
    shots.take(&browser, "prepare-aws-account").await;

    // Read the policies: the trust policy names the organization's external id.
    let external_id = browser.text("#doc-external-id").await;
    assert!(external_id.starts_with("byok-"), "{external_id}");
    let trust: Value = serde_json::from_str(&browser.text("#doc-trust-policy").await).unwrap();
    assert_eq!(
        trust["Statement"][0]["Condition"]["StringEquals"]["sts:ExternalId"],
        external_id.as_str()
    );
    let role_policy: Value = serde_json::from_str(&browser.text("#doc-role-policy").await).unwrap();
    assert!(
        role_policy["Statement"][0]["Action"]
            .to_string()
            .contains("kms:GenerateDataKey")
    );

    // A wrong key ARN: a verdict in plain words.
    let role = role_arn(TENANT_ACCOUNT);
    let wrong =
        format!("arn:aws:kms:us-east-1:{TENANT_ACCOUNT}:key/00000000-0000-0000-0000-000000000000");
    browser.type_into("#key-arn", &wrong).await;
    browser.type_into("#role-arn", &role).await;
    browser.click("#verify").await;
    browser
        .wait_for("the verdict", "const v = document.getElementById('verdict'); return !v.hidden && v.dataset.reason === 'key_not_found';", WAIT)
        .await;
    assert_eq!(browser.text("#verdict-title").await, "Key not found");
    assert!(browser.text("#verdict-text").await.contains("region"));
    scroll_to(&browser, "#step-connect").await;
    shots.take(&browser, "verify-wrong-key-arn").await;

    // Fixed: connected, and the existing objects are still under the platform key.
    let key_arn = create_key(TENANT_ACCOUNT).await;
    browser.type_into("#key-arn", &key_arn).await;
    browser.click("#verify").await;
    browser
        .wait_for("the key to connect", "return document.getElementById('verdict').dataset.reason === 'ok' && !document.getElementById('step-status').hidden;", WAIT)
        .await;
    assert_eq!(browser.text("#key-state").await, "active");
    assert_eq!(browser.text("#key-current").await, key_arn);
    assert_eq!(browser.text("#objects-platform").await, "12");
    assert_eq!(browser.text("#objects-tenant").await, "0");
    scroll_to(&browser, "#step-connect").await;
    shots.take(&browser, "key-connected").await;

    // Move the existing data: the progress bar reaches 100 %.
    browser.click("#onboard").await;
    browser
        .wait_for("the onboarding to finish", "const b = document.getElementById('progress-box'); return !b.hidden && b.dataset.finished === 'true' && document.getElementById('objects-tenant').textContent === '12';", Duration::from_secs(60))
        .await;
    assert_eq!(
        browser
            .run(
                "return document.getElementById('progress').value;",
                json!([])
            )
            .await,
        json!(100)
    );
    assert!(browser.text("#progress-text").await.starts_with("100 %"));
    assert_eq!(browser.text("#objects-platform").await, "0");
    scroll_to(&browser, "#step-status").await;
    shots.take(&browser, "onboarding-complete").await;

    // Disable, with a confirmation: the app's reads of the organization fail with 403.
    browser.click("#disable").await;
    assert!(
        browser
            .text("#confirm-text")
            .await
            .contains("cannot be read")
    );
    shots.take(&browser, "disable-confirmation").await;
    browser.click("#confirm-yes").await;
    browser
        .wait_for(
            "the key to be disabled",
            "return document.getElementById('key-state').textContent === 'disabled';",
            WAIT,
        )
        .await;
    let read = broker
        .call("GET", "/vault/v1/kv/name/invoice-3", None)
        .await;
    assert_eq!(read.status, 403, "{:?}", read.body);
    assert_eq!(read.body["code"], "key_revoked");
    shots.take(&browser, "disabled").await;

    // Re-enable: reads work again; the success link leads back to the application.
    browser.click("#enable").await;
    browser.click("#confirm-yes").await;
    browser
        .wait_for(
            "the key to be active again",
            "return document.getElementById('key-state').textContent === 'active';",
            WAIT,
        )
        .await;
    let read = broker
        .call("GET", "/vault/v1/kv/name/invoice-3", None)
        .await;
    assert_eq!(
        (read.status, read.body["value"].as_str()),
        (200, Some("secret 3"))
    );
    assert_eq!(
        browser.run("const a = document.getElementById('success-link'); return a.hidden ? null : a.href;", json!([])).await,
        json!("https://app.example/byok-done")
    );

    // Key activity: this organization's events, newest state changes included.
    // Oldest first, a page at a time: "More events" until the re-enabling shows.
    browser.click("#events-refresh").await;
    let listed = "return Array.from(document.querySelectorAll('#events td')).some(td => td.textContent === 'portal.byok_key.enabled');";
    for _ in 0..50 {
        browser
            .wait_for(
                "a page of events",
                "return document.querySelectorAll('#events tr').length > 0;",
                WAIT,
            )
            .await;
        if browser.run(listed, json!([])).await == json!(true) {
            break;
        }
        let rows = browser
            .run(
                "return document.querySelectorAll('#events tr').length;",
                json!([]),
            )
            .await;
        browser.click("#events-more").await;
        browser
            .wait_for(
                "the next page",
                &format!("return document.querySelectorAll('#events tr').length > {rows};"),
                WAIT,
            )
            .await;
    }
    assert_eq!(
        browser.run(listed, json!([])).await,
        json!(true),
        "the re-enabling is listed"
    );
    for kind in [
        "vault.data.created",
        "vault.data.read",
        "vault.byok_key.verification_completed",
        "vault.byok_key.disabled",
    ] {
        let script = format!(
            "return Array.from(document.querySelectorAll('#events td')).some(td => td.textContent === '{kind}');"
        );
        assert_eq!(
            browser.run(&script, json!([])).await,
            json!(true),
            "{kind} is listed"
        );
    }
    scroll_to(&browser, "#step-activity").await;
    shots.take(&browser, "key-activity").await;

    // Markup in a value is shown as text: an organization id with an <img onerror> handler.
    let hostile = "org_<img src=x onerror=\"document.title='pwned'\">";
    let link = link_from_sdk(broker.address.port(), hostile, "https://app.example/done").await;
    let launch = &link[link.find("/portal/launch").unwrap()..];
    browser.goto(&format!("{base}{launch}")).await;
    browser
        .wait_for(
            "the page",
            "return document.body.dataset.ready === 'true';",
            WAIT,
        )
        .await;
    assert_eq!(browser.text("#organization").await, hostile);
    assert_eq!(
        browser
            .run("return document.querySelectorAll('img').length;", json!([]))
            .await,
        json!(0)
    );
    assert_ne!(
        browser.run("return document.title;", json!([])).await,
        json!("pwned")
    );
    let events = browser.text("#events").await;
    assert!(events.contains("portal session of org_<img"), "{events}");
    assert!(
        !page_source.as_str().unwrap().contains("pts_"),
        "no session secret in the page"
    );
    shots.take(&browser, "escaped-markup").await;
}
