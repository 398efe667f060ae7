//! A tenant admin's portal session, as a browser holds it: the cookie the link's launch set and
//! the CSRF token the page reads; requests go to an in-process broker over real HTTP.

use serde_json::{Value, json};

use super::broker::{HttpResponse, TestBroker, admin};

pub struct PortalSession {
    pub cookie: String,
    pub csrf: String,
}

/// Generates a link for `org` with the admin key; returns the link.
pub async fn generate_link<P>(broker: &TestBroker<P>, org: &str) -> String {
    let body = json!({"organization": org, "intent": "bring_your_own_key"});
    let response = admin(broker, "POST", "/portal/generate_link", Some(&body)).await;
    assert_eq!(response.status, 201, "{:?}", response.body);
    response.body["link"].as_str().expect("link").to_owned()
}

/// The path and query of a link (`/portal/launch?token=…`), to send to the test broker.
pub fn launch_path(link: &str) -> String {
    let start = link.find("/portal/launch").expect("a launch link");
    link[start..].to_owned()
}

/// Opens `link`: the launch answer, and the session's cookie pair (`name=value`) if one was set.
pub async fn launch<P>(broker: &TestBroker<P>, link: &str) -> (HttpResponse, Option<String>) {
    let response = broker
        .call_with("GET", &launch_path(link), None, None, &[])
        .await;
    let cookie = response
        .headers
        .get("set-cookie")
        .and_then(|c| c.split(';').next())
        .map(str::to_owned);
    (response, cookie)
}

/// A session of `org`: a link generated, opened, and the page's session call made.
pub async fn open_session<P>(broker: &TestBroker<P>, org: &str) -> PortalSession {
    let link = generate_link(broker, org).await;
    let (response, cookie) = launch(broker, &link).await;
    assert_eq!(response.status, 200, "{:?}", response.body);
    let cookie = cookie.expect("a session cookie");
    let session = broker
        .call_with(
            "GET",
            "/portal/api/session",
            None,
            None,
            &[("cookie", &cookie)],
        )
        .await;
    assert_eq!(session.status, 200, "{:?}", session.body);
    assert_eq!(session.body["organization_id"], org);
    PortalSession {
        cookie,
        csrf: session.body["csrf_token"]
            .as_str()
            .expect("csrf")
            .to_owned(),
    }
}

impl PortalSession {
    /// A GET with the session's cookie.
    pub async fn get<P>(&self, broker: &TestBroker<P>, path: &str) -> HttpResponse {
        broker
            .call_with("GET", path, None, None, &[("cookie", &self.cookie)])
            .await
    }

    /// A POST as the page sends it: cookie, CSRF token, same-origin fetch headers.
    pub async fn post<P>(
        &self,
        broker: &TestBroker<P>,
        path: &str,
        body: Option<&Value>,
    ) -> HttpResponse {
        let origin = format!("http://{}", broker.address);
        broker
            .call_with(
                "POST",
                path,
                body,
                None,
                &[
                    ("cookie", &self.cookie),
                    ("x-csrf-token", &self.csrf),
                    ("origin", &origin),
                    ("sec-fetch-site", "same-origin"),
                ],
            )
            .await
    }
}
