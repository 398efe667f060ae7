//! Issue 9 hardening of `/vault/v1` over real HTTP on the local key provider: scoped keys learn
//! nothing about other scopes' names (and a refused probe costs no KMS call), list cursors keep
//! their position when their object is deleted, and loose input gets a clear 422.

use crate::common;

use std::sync::atomic::Ordering;

use common::broker::{ADMIN_KEY, HttpResponse, TestBroker};
use serde_json::{Value, json};

type LocalBroker = TestBroker<byok_broker::kms::local::LocalKms>;

/// Creates an app key scoped to `organization_id = org` and returns its token.
async fn scoped_key(broker: &LocalBroker, org: &str) -> String {
    let body =
        json!({"name": format!("{org} backend"), "role": "app", "scope": {"organization_id": org}});
    let created = broker
        .call_with(
            "POST",
            "/admin/v1/api-keys",
            Some(&body),
            Some(ADMIN_KEY),
            &[],
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    created.body["key"].as_str().unwrap().to_owned()
}

async fn as_key(
    broker: &LocalBroker,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> HttpResponse {
    broker.call_with(method, path, body, Some(token), &[]).await
}

fn kms_calls(broker: &LocalBroker) -> u64 {
    broker.kms.generates.load(Ordering::SeqCst) + broker.kms.decrypts.load(Ordering::SeqCst)
}

/// The parts of an answer a caller can observe (everything but the request id).
fn observable(response: &HttpResponse) -> (u16, Value) {
    (response.status, response.body.clone())
}

#[tokio::test]
async fn a_scoped_key_learns_nothing_about_names_outside_its_scope() {
    let broker = TestBroker::start_local("scoped-names").await;
    let key_a = scoped_key(&broker, "org_a").await;
    let key_b = scoped_key(&broker, "org_b").await;
    let create = |org: &str| json!({"name": "db-password", "value": "v", "key_context": {"organization_id": org}});

    let a_created = as_key(
        &broker,
        &key_a,
        "POST",
        "/vault/v1/kv",
        Some(&create("org_a")),
    )
    .await;
    assert_eq!(a_created.status, 201, "{:?}", a_created.body);
    let a_id = a_created.body["id"].as_str().unwrap().to_owned();

    // B takes the same name in its own context: its own object, not a hint that A has one.
    let b_created = as_key(
        &broker,
        &key_b,
        "POST",
        "/vault/v1/kv",
        Some(&create("org_b")),
    )
    .await;
    assert_eq!(b_created.status, 201, "{:?}", b_created.body);
    let b_id = b_created.body["id"].as_str().unwrap().to_owned();

    // Refused probes cost no KMS call: a taken name in the caller's own context, and a context
    // outside the caller's scope.
    let before = kms_calls(&broker);
    let taken = as_key(
        &broker,
        &key_b,
        "POST",
        "/vault/v1/kv",
        Some(&create("org_b")),
    )
    .await;
    assert_eq!(
        (taken.status, taken.body["code"].as_str()),
        (409, Some("name_taken"))
    );
    let foreign = as_key(
        &broker,
        &key_b,
        "POST",
        "/vault/v1/kv",
        Some(&create("org_a")),
    )
    .await;
    assert_eq!(
        (foreign.status, foreign.body["code"].as_str()),
        (403, Some("out_of_scope"))
    );
    assert_eq!(kms_calls(&broker), before, "a refused probe calls KMS");

    // Reads by name are scoped: each key sees its own object.
    let path = "/vault/v1/kv/name/db-password";
    let a_read = as_key(&broker, &key_a, "GET", path, None).await;
    assert_eq!(
        (a_read.status, a_read.body["id"].as_str()),
        (200, Some(a_id.as_str()))
    );
    let b_read = as_key(&broker, &key_b, "GET", path, None).await;
    assert_eq!(
        (b_read.status, b_read.body["id"].as_str()),
        (200, Some(b_id.as_str()))
    );
    // A key that sees both gets a clear conflict rather than a guess.
    let ambiguous = broker.call("GET", path, None).await;
    assert_eq!(
        (ambiguous.status, ambiguous.body["code"].as_str()),
        (409, Some("ambiguous_name")),
        "{:?}",
        ambiguous.body
    );

    // A foreign id and an unknown id as a cursor give identical answers.
    let unknown = "00000000-0000-4000-8000-000000000000";
    for parameter in ["after", "before"] {
        let with_foreign = as_key(
            &broker,
            &key_b,
            "GET",
            &format!("/vault/v1/kv?{parameter}={a_id}"),
            None,
        )
        .await;
        let with_unknown = as_key(
            &broker,
            &key_b,
            "GET",
            &format!("/vault/v1/kv?{parameter}={unknown}"),
            None,
        )
        .await;
        assert_eq!(
            observable(&with_foreign),
            observable(&with_unknown),
            "{parameter}"
        );
        assert_eq!(with_foreign.body["code"], "invalid_cursor", "{parameter}");
    }
    // The caller's own id is still accepted as a cursor (the WorkOS docs describe `after` as one).
    let own = as_key(
        &broker,
        &key_b,
        "GET",
        &format!("/vault/v1/kv?order=asc&after={b_id}"),
        None,
    )
    .await;
    assert_eq!(
        (own.status, own.body["data"].as_array().map(Vec::len)),
        (200, Some(0))
    );
}

#[tokio::test]
async fn concurrent_creates_of_one_name_in_one_context_leave_one_object() {
    let broker = TestBroker::start_local("name-race").await;
    let body = json!({"name": "once", "value": "v", "key_context": {"organization_id": "org_a"}});
    let creates = (0..10).map(|_| broker.call("POST", "/vault/v1/kv", Some(&body)));
    let mut statuses: Vec<u16> = futures_util::future::join_all(creates)
        .await
        .iter()
        .map(|r| r.status)
        .collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 409, 409, 409, 409, 409, 409, 409, 409, 409]);
    let listed = broker.call("GET", "/vault/v1/kv?search=once", None).await;
    assert_eq!(listed.body["data"].as_array().map(Vec::len), Some(1));
}

fn names(page: &HttpResponse) -> Vec<String> {
    page.body["data"]
        .as_array()
        .unwrap_or_else(|| panic!("a page: {:?}", page.body))
        .iter()
        .map(|o| o["name"].as_str().unwrap().to_owned())
        .collect()
}

/// "List a page, delete objects of it, fetch the next" must visit every object once, whether each
/// object of the page is deleted or only the one the cursor names (the last).
async fn delete_while_paging(order: &str, only_the_last: bool) {
    let broker = TestBroker::start_local(&format!("page-delete-{order}")).await;
    let mut created = Vec::new();
    for i in 0..7 {
        let name = format!("item-{i}");
        let body = json!({"name": name, "value": "v", "key_context": {"organization_id": "org_a"}});
        assert_eq!(
            broker
                .call("POST", "/vault/v1/kv", Some(&body))
                .await
                .status,
            201
        );
        created.push(name);
    }
    if order == "desc" {
        created.reverse();
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let after = cursor
            .as_ref()
            .map(|c| format!("&after={c}"))
            .unwrap_or_default();
        let page = broker
            .call(
                "GET",
                &format!("/vault/v1/kv?limit=2&order={order}{after}"),
                None,
            )
            .await;
        assert_eq!(page.status, 200, "{:?}", page.body);
        let data = page.body["data"].as_array().unwrap();
        let skip = if only_the_last {
            data.len().saturating_sub(1)
        } else {
            0
        };
        for object in data.iter().skip(skip) {
            let id = object["id"].as_str().unwrap();
            let deleted = broker
                .call("DELETE", &format!("/vault/v1/kv/{id}"), None)
                .await;
            assert_eq!(deleted.status, 200);
        }
        seen.extend(names(&page));
        match page.body["list_metadata"]["after"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(
        seen, created,
        "every object once, in {order} order (only the last deleted: {only_the_last})"
    );
}

#[tokio::test]
async fn deleting_each_object_of_a_page_keeps_the_next_page_newest_first() {
    delete_while_paging("desc", false).await;
    delete_while_paging("desc", true).await;
}

#[tokio::test]
async fn deleting_each_object_of_a_page_keeps_the_next_page_oldest_first() {
    delete_while_paging("asc", false).await;
    delete_while_paging("asc", true).await;
}

#[tokio::test]
async fn a_before_cursor_keeps_its_position_when_its_object_is_deleted() {
    let broker = TestBroker::start_local("page-before").await;
    for i in 0..4 {
        let body = json!({"name": format!("item-{i}"), "value": "v", "key_context": {"organization_id": "org_a"}});
        assert_eq!(
            broker
                .call("POST", "/vault/v1/kv", Some(&body))
                .await
                .status,
            201
        );
    }
    let first = broker
        .call("GET", "/vault/v1/kv?limit=2&order=asc", None)
        .await;
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
    assert_eq!(names(&second), ["item-2", "item-3"]);
    let before = second.body["list_metadata"]["before"]
        .as_str()
        .unwrap()
        .to_owned();
    let first_of_second = second.body["data"][0]["id"].as_str().unwrap().to_owned();
    let deleted = broker
        .call("DELETE", &format!("/vault/v1/kv/{first_of_second}"), None)
        .await;
    assert_eq!(deleted.status, 200);
    let back = broker
        .call(
            "GET",
            &format!("/vault/v1/kv?limit=2&order=asc&before={before}"),
            None,
        )
        .await;
    assert_eq!(names(&back), ["item-0", "item-1"], "{:?}", back.body);
}

#[tokio::test]
async fn loose_input_gets_a_clear_422() {
    let broker = TestBroker::start_local("validation").await;
    for name in [
        "nul\0byte",
        "header\r\ninjection",
        "line\nfeed",
        "tab\tname",
        "del\u{7f}",
        "\u{1b}[31m",
        "trailing\r\n",
    ] {
        let body = json!({"name": name, "value": "v", "key_context": {"organization_id": "org_a"}});
        let response = broker.call("POST", "/vault/v1/kv", Some(&body)).await;
        assert_eq!(
            (response.status, response.body["code"].as_str()),
            (422, Some("invalid_name")),
            "{name:?}: {:?}",
            response.body
        );
    }
    let garbage = [
        "garbage",
        "%00%ff",
        "AAAA",
        "AQ",
        "not-a-uuid-0000-0000-000000000000",
    ];
    for parameter in ["after", "before"] {
        for cursor in garbage {
            let response = broker
                .call("GET", &format!("/vault/v1/kv?{parameter}={cursor}"), None)
                .await;
            assert_eq!(
                (response.status, response.body["code"].as_str()),
                (422, Some("invalid_cursor")),
                "{parameter}={cursor}: {:?}",
                response.body
            );
        }
    }
    for kek_id in [
        String::new(),
        "k".repeat(100_000),
        "arn:aws:kms:us-east-1:000000000000:key/\n".to_owned(),
    ] {
        let body = json!({"source": {"kek_id": kek_id}});
        let response = broker
            .call_with(
                "POST",
                "/admin/v1/rewrap-jobs",
                Some(&body),
                Some(ADMIN_KEY),
                &[],
            )
            .await;
        assert_eq!(
            (response.status, response.body["code"].as_str()),
            (422, Some("invalid_kek_id")),
            "{} chars: {:?}",
            kek_id.len(),
            response.body
        );
    }
}

/// A timestamp whose last character is multi-byte used to panic inside the parser (a slice cut
/// through `é`), and the client got a cut connection instead of an answer.
#[tokio::test]
async fn a_non_ascii_updated_after_gets_422_not_a_cut_connection() {
    let broker = TestBroker::start_local("updated-after-utf8").await;
    for text in [
        "2024-01-01T00:00:0%C3%A9",
        "2024-01-01T00:00:%C3%A9Z",
        "%C3%A9",
    ] {
        let response = broker
            .call("GET", &format!("/vault/v1/kv?updated_after={text}"), None)
            .await;
        assert_eq!(
            (response.status, response.body["code"].as_str()),
            (422, Some("invalid_updated_after")),
            "{text}: {:?}",
            response.body
        );
    }
}

/// PostgreSQL cannot store U+0000 in text (SQLite can): a key context carrying one is refused on
/// both backends with the same 422, instead of a 500 from one of them.
#[tokio::test]
async fn a_nul_character_in_a_key_context_is_refused_on_every_backend() {
    let broker = TestBroker::start_local("nul-context").await;
    for context in [
        json!({"organization_id": "org\u{0}acme"}),
        json!({"org\u{0}id": "org_acme"}),
    ] {
        let created = broker
            .call(
                "POST",
                "/vault/v1/kv",
                Some(&json!({"name": "n", "value": "v", "key_context": context})),
            )
            .await;
        assert_eq!(created.status, 422, "{}", created.body);
        assert_eq!(created.body["code"], "invalid_context", "{}", created.body);
    }
    // A search for it finds nothing on SQLite; PostgreSQL cannot even compare such text, and
    // says so in a 422 rather than failing with a 500.
    let searched = broker.call("GET", "/vault/v1/kv?search=a%00b", None).await;
    match searched.status {
        200 => assert_eq!(searched.body["data"], json!([]), "{}", searched.body),
        status => assert_eq!(
            (status, searched.body["code"].as_str()),
            (422, Some("invalid_request")),
            "{}",
            searched.body
        ),
    }
}
