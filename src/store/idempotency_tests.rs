//! A stale claim (its holder crashed or hung) can be taken over, and the late holder's completion
//! then fails and rolls its object back: a takeover never yields two objects for one key.

use super::*;
use crate::store::NewVersion;

fn object(name: &str) -> NewObject {
    NewObject {
        id: uuid::Uuid::new_v4().to_string(),
        name: name.into(),
        context_json: "{}".into(),
        context_hash: "00".into(),
        actor_id: "key_1".into(),
        actor_name: "app".into(),
        version: NewVersion {
            id: uuid::Uuid::new_v4().to_string(),
            created_at: Timestamp::now(),
            size: 1,
            etag: "e".into(),
            kek_id: "kek".into(),
            sealed: vec![1],
        },
    }
}

fn response(hash: &[u8]) -> StoredResponse {
    StoredResponse {
        request_hash: hash.to_vec(),
        status: 201,
        body: "{}".into(),
    }
}

#[tokio::test]
async fn a_stale_claim_is_taken_over_and_its_late_completion_creates_nothing() {
    let path = std::env::temp_dir().join(format!("byok-idem-{}.db", uuid::Uuid::new_v4().simple()));
    let store = Store::open(&path).await.unwrap();
    let ClaimOutcome::Won(slow) = store
        .claim_idempotency("key_1", "k", vec![1])
        .await
        .unwrap()
    else {
        panic!("the first claim wins");
    };
    let fresh = store
        .claim_idempotency("key_1", "k", vec![2])
        .await
        .unwrap();
    assert!(matches!(
        fresh,
        ClaimOutcome::Taken(IdempotencyRecord::InFlight { ref request_hash }) if request_hash == &[1]
    ));
    // Age the claim past the stale bound, as if its holder hung.
    let aside = rusqlite::Connection::open(&path).unwrap();
    aside
        .execute(
            "UPDATE idempotency SET created_at = '2000-01-01T00:00:00.000000Z'",
            [],
        )
        .unwrap();
    let ClaimOutcome::Won(taker) = store
        .claim_idempotency("key_1", "k", vec![2])
        .await
        .unwrap()
    else {
        panic!("a stale claim is taken over");
    };
    let late = store
        .insert_object_idempotent(object("late"), vec![], &slow, response(&[1]))
        .await;
    assert_eq!(late, Err(StoreError::IdempotencyClaimLost));
    store
        .insert_object_idempotent(object("taker"), vec![], &taker, response(&[2]))
        .await
        .unwrap();
    let names: Vec<String> = aside
        .prepare("SELECT name FROM objects")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(names, ["taker"]);
    assert_eq!(
        store.find_idempotent("key_1", "k").await.unwrap(),
        Some(IdempotencyRecord::Completed(response(&[2])))
    );
    let _ = std::fs::remove_file(path);
}
