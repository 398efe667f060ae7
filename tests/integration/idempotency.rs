//! `Idempotency-Key` on creates under concurrency and with bad keys: the key is claimed atomically,
//! so one key never yields two objects or a `name_taken` for a retry of the same request.

use crate::common;

use common::broker::TestBroker;
use futures_util::future::join_all;
use serde_json::json;

fn create_body(name: &str) -> Vec<u8> {
    json!({"name": name, "value": "v", "key_context": {"organization_id": "org_idem"}})
        .to_string()
        .into_bytes()
}

#[tokio::test]
async fn fifty_concurrent_retries_of_one_create_make_one_object_and_replay_it() {
    let broker = TestBroker::start_local_with("idem-same", &[]).await;
    let body = create_body("charged-once");
    let headers = [("Idempotency-Key", "retry-same-body")];
    let answers =
        join_all((0..50).map(|_| broker.send("POST", "/vault/v1/kv", &body, &headers))).await;
    let created: Vec<_> = answers
        .iter()
        .filter(|(status, _)| *status == 201)
        .collect();
    assert!(!created.is_empty(), "{answers:?}");
    for (status, answer) in &answers {
        match status {
            201 => assert_eq!(answer["id"], created[0].1["id"], "every 201 is the replay"),
            409 => assert_eq!(answer["code"], "idempotency_in_flight", "{answer}"),
            _ => panic!("unexpected answer {status} {answer}"),
        }
    }
    assert_eq!(broker.object_names().await, ["charged-once"]);
    // Once the first request finished, a retry replays it.
    let (status, replay) = broker.send("POST", "/vault/v1/kv", &body, &headers).await;
    assert_eq!((status, &replay["id"]), (201, &created[0].1["id"]));
}

#[tokio::test]
async fn twenty_concurrent_creates_with_one_key_and_different_bodies_make_one_object() {
    let broker = TestBroker::start_local_with("idem-diff", &[]).await;
    let bodies: Vec<Vec<u8>> = (0..20).map(|i| create_body(&format!("item-{i}"))).collect();
    let headers = [("Idempotency-Key", "retry-different-bodies")];
    let answers = join_all(
        bodies
            .iter()
            .map(|body| broker.send("POST", "/vault/v1/kv", body, &headers)),
    )
    .await;
    let statuses: Vec<u16> = answers.iter().map(|(status, _)| *status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{answers:?}"
    );
    for (status, answer) in &answers {
        if *status != 201 {
            assert_eq!(
                (*status, answer["code"].as_str()),
                (422, Some("idempotency_key_reused")),
                "{answer}"
            );
        }
    }
    assert_eq!(broker.object_names().await.len(), 1);
}

#[tokio::test]
async fn a_failed_first_attempt_releases_the_key_for_a_retry() {
    let broker = TestBroker::start_local_with("idem-release", &[]).await;
    let headers = [("Idempotency-Key", "retry-after-failure")];
    // The name is taken by another object: the first attempt fails with 409 name_taken.
    let (status, _) = broker
        .send("POST", "/vault/v1/kv", &create_body("taken"), &[])
        .await;
    assert_eq!(status, 201);
    let body = create_body("taken");
    let (status, answer) = broker.send("POST", "/vault/v1/kv", &body, &headers).await;
    assert_eq!((status, answer["code"].as_str()), (409, Some("name_taken")));
    // The same key with a corrected body is a new attempt, not a reuse.
    let fixed = create_body("free");
    let (status, answer) = broker.send("POST", "/vault/v1/kv", &fixed, &headers).await;
    assert_eq!(status, 201, "{answer}");
}

#[tokio::test]
async fn idempotency_keys_must_be_1_to_255_printable_ascii_characters() {
    let broker = TestBroker::start_local_with("idem-invalid", &[]).await;
    let huge = "k".repeat(100 * 1024);
    let longest = "k".repeat(255);
    // 100 KB does not even reach the handler: the header section is over the server's bound.
    let (status, answer) = broker
        .send(
            "POST",
            "/vault/v1/kv",
            &create_body("huge"),
            &[("Idempotency-Key", &huge)],
        )
        .await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (431, Some("headers_too_large")),
        "huge: {answer}"
    );
    for (key, name) in [
        ("retry-ключ", "non-ascii"),
        ("tab\tinside", "control"),
        (&"k".repeat(256), "just-too-long"),
    ] {
        let (status, answer) = broker
            .send(
                "POST",
                "/vault/v1/kv",
                &create_body(name),
                &[("Idempotency-Key", key)],
            )
            .await;
        assert_eq!(
            (status, answer["code"].as_str()),
            (422, Some("invalid_idempotency_key")),
            "{name}: {answer}"
        );
    }
    assert!(
        broker.object_names().await.is_empty(),
        "nothing was created"
    );
    let (status, answer) = broker
        .send(
            "POST",
            "/vault/v1/kv",
            &create_body("longest"),
            &[("Idempotency-Key", &longest)],
        )
        .await;
    assert_eq!(status, 201, "{answer}");
}
