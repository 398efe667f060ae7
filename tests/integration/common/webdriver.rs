//! A headless Chromium driven over WebDriver (W3C, JSON over HTTP) with the tests' own HTTP
//! client: Debian's `chromium` and `chromium-driver`, which scripts/test.sh and .ci/run install.
//! Just the commands the browser tests use: navigate, find, click, type, run a script, screenshot.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

use super::http_client::HttpClient;
use super::process::free_port;

/// Debian's paths.
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// The longest a WebDriver command may take (starting the browser included).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// W3C's key for a WebElement reference in JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    client: HttpClient,
    session: String,
    _profile: super::TestDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session. Fails loudly when the browser is not
    /// installed: the test command installs it, and a skipped browser test would prove nothing.
    pub async fn start() -> Self {
        for path in [CHROMEDRIVER, CHROMIUM] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing: install Debian's chromium and chromium-driver (scripts/test.sh does: apt-get install chromium chromium-driver)"
            );
        }
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            // Its own process group, with the browser it starts: both end together on drop.
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let client = HttpClient::new(&format!("http://127.0.0.1:{port}"), None).expect("url");
        let deadline = Instant::now() + Duration::from_secs(20);
        while client.send("GET", "/status", b"", &[]).await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = super::TestDir::new("chromium-profile");
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                // --no-sandbox: CI runs as root, where Chromium's sandbox cannot start.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,1600", format!("--user-data-dir={}", profile.display())]
            }
        }}});
        let mut browser = Self {
            driver,
            client,
            session: String::new(),
            _profile: profile,
        };
        let created = browser.command("POST", "/session", &capabilities).await;
        browser.session = created["sessionId"]
            .as_str()
            .expect("session id")
            .to_owned();
        browser
    }

    /// One WebDriver command; its `value`. A WebDriver error fails the test with its message.
    async fn command(&self, method: &str, path: &str, body: &Value) -> Value {
        let payload = if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        // Bounded: a browser that stops answering fails the test instead of hanging it.
        let response = tokio::time::timeout(
            COMMAND_TIMEOUT,
            self.client.send(method, path, &payload, &[]),
        )
        .await
        .unwrap_or_else(|_| {
            panic!("WebDriver {method} {path}: no answer within {COMMAND_TIMEOUT:?}")
        })
        .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let answer: Value = serde_json::from_slice(&response.body).expect("WebDriver JSON");
        assert_eq!(response.status, 200, "WebDriver {method} {path}: {answer}");
        answer["value"].clone()
    }

    async fn session_command(&self, method: &str, path: &str, body: &Value) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.command(method, &path, body).await
    }

    pub async fn goto(&self, url: &str) {
        self.session_command("POST", "/url", &json!({"url": url}))
            .await;
    }

    /// The element `css` selects (the first); fails the test when there is none.
    async fn find(&self, css: &str) -> String {
        let found = self
            .session_command(
                "POST",
                "/element",
                &json!({"using": "css selector", "value": css}),
            )
            .await;
        found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_owned()
    }

    pub async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.session_command("POST", &format!("/element/{id}/click"), &json!({}))
            .await;
    }

    /// Replaces the input's value with `text`, typed as a user would.
    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.session_command("POST", &format!("/element/{id}/clear"), &json!({}))
            .await;
        self.session_command(
            "POST",
            &format!("/element/{id}/value"),
            &json!({"text": text}),
        )
        .await;
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page; its result.
    pub async fn run(&self, script: &str, args: Value) -> Value {
        self.session_command(
            "POST",
            "/execute/sync",
            &json!({"script": script, "args": args}),
        )
        .await
    }

    /// The text of the element `css` selects (`textContent`, hidden or not).
    pub async fn text(&self, css: &str) -> String {
        self.run(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
            json!([css]),
        )
        .await
        .as_str()
        .unwrap_or_else(|| panic!("no element {css}"))
        .to_owned()
    }

    /// Waits until `script` returns true; fails the test after `limit` with `what`.
    pub async fn wait_for(&self, what: &str, script: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if self.run(script, json!([])).await == Value::Bool(true) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves a PNG of the viewport to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let data = self
            .session_command("GET", "/screenshot", &Value::Null)
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().expect("base64"))
            .expect("a PNG");
        std::fs::write(path, png).expect("write the screenshot");
    }

    /// The current URL.
    pub async fn url(&self) -> String {
        self.session_command("GET", "/url", &Value::Null)
            .await
            .as_str()
            .expect("url")
            .to_owned()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The group chromedriver leads: chromedriver and every browser process it started.
        // `-s KILL -- -<pgid>`: procps's kill reads a bare `-KILL -<pgid>` otherwise.
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.wait();
    }
}
