//! The BYOK routing revision moves when routing can change, and only then: a watcher pass that
//! finds a CMK as it was (only `last_checked_at` moves) must not bump it, or every broker sharing
//! the database would reload its routing view after every check of every key.

use std::path::Path;

use crate::common;

use common::broker::TestBroker;
use common::database;

async fn revision(data_dir: &Path) -> i64 {
    database::query_i64(data_dir, "SELECT revision FROM byok_revision", &[]).await
}

#[tokio::test]
async fn a_check_that_changes_nothing_leaves_the_routing_revision_alone() {
    let broker = TestBroker::start_local("byok-revision").await;
    let dir = &broker.data_dir;
    database::execute(
        dir,
        "INSERT INTO byok_keys (id, match_context_json, match_context_hash, provider, current_kek, created_at, updated_at) \
         VALUES ('byok_rev', '{}', 'rev-hash', 'aws_kms', 'arn:rev', '2026', '2026')",
        &[],
    )
    .await;
    database::execute(
        dir,
        "INSERT INTO tenant_keks (key_arn, byok_key_id, added_at) VALUES ('arn:rev', 'byok_rev', '2026')",
        &[],
    )
    .await;
    let before = revision(dir).await;
    database::execute(
        dir,
        "UPDATE tenant_keks SET last_checked_at = $1 WHERE key_arn = 'arn:rev'",
        &["2026-11-29T00:00:00.000000Z"],
    )
    .await;
    assert_eq!(
        revision(dir).await,
        before,
        "an unchanged check is not a routing change"
    );
    database::execute(
        dir,
        "UPDATE tenant_keks SET available = 0, reason = 'disabled' WHERE key_arn = 'arn:rev'",
        &[],
    )
    .await;
    assert!(revision(dir).await > before, "an availability change is");
}

/// The CMK's state as the broker's routing view has it: (available, state_seq).
fn kek_state<P>(broker: &TestBroker<P>, key_arn: &str) -> (bool, i64) {
    let bindings = broker.broker.keyring.bindings();
    let kek = bindings
        .owner_of(key_arn)
        .and_then(|binding| binding.kek(key_arn))
        .expect("registered");
    (kek.available, kek.state_seq)
}

/// A check that read a CMK's state before a revocation (another instance's watcher pass, a key
/// event's re-check) and reports "available" after it must not restore the CMK: the revocation
/// is newer. A check that started after it may.
#[tokio::test]
async fn a_check_older_than_a_revocation_does_not_restore_the_key() {
    let broker = TestBroker::start_local("byok-stale-check").await;
    let (_, key_arn) = common::broker::bind_in_store(&broker, "org_stale_check", None).await;
    let byok = &broker.broker.byok;
    let (available, seen_before) = kek_state(&broker, &key_arn);
    assert!(available);

    // Revoked meanwhile (a request met a disabled key, or a DisableKey event).
    byok.record_kek_state(&key_arn, false, Some("key_disabled".into()), None)
        .await
        .unwrap();
    // The older check's verdict arrives late.
    byok.record_kek_state(&key_arn, true, None, Some(seen_before))
        .await
        .unwrap();
    let (available, seen_after) = kek_state(&broker, &key_arn);
    assert!(!available, "a stale check restored a revoked key");
    assert_ne!(seen_after, seen_before);

    // A check that read the state after the revocation does restore it.
    byok.record_kek_state(&key_arn, true, None, Some(seen_after))
        .await
        .unwrap();
    assert!(kek_state(&broker, &key_arn).0);
}
