//! Just-in-time platform KEKs in LocalStack: 50 concurrent first uses of one context, split over two
//! independent keyrings (two broker processes), all end on one KEK; the losing process's orphan key
//! is scheduled for deletion; later keyrings find the KEK without creating one.

use crate::common;

use std::sync::Arc;

use byok_broker::keyring::Keyring;
use byok_broker::kms::{KekRef, KeyProvider};
use common::*;
use futures_util::future::join_all;

#[tokio::test]
async fn fifty_concurrent_first_uses_from_two_processes_share_one_kek() {
    let prefix = unique_prefix("jit-race");
    let process_a = Keyring::new(Arc::new(broker_kms().await), &prefix).unwrap();
    let process_b = Keyring::new(Arc::new(broker_kms().await), &prefix).unwrap();
    let ctx = context(&[("organization_id", "org_race"), ("data_type", "pii")]);

    let calls = (0..50).map(|i| {
        let keyring = if i % 2 == 0 { &process_a } else { &process_b };
        keyring.platform_kek(&ctx)
    });
    let results: Vec<KekRef> = join_all(calls)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let winner = &results[0].key_id;
    assert!(
        results.iter().all(|k| &k.key_id == winner),
        "every caller uses the same KEK"
    );

    let (a, b) = (process_a.stats(), process_b.stats());
    println!(
        "keys created: {} + {}, orphans scheduled for deletion: {} + {}",
        a.keks_created,
        b.keks_created,
        a.orphans_scheduled_for_deletion,
        b.orphans_scheduled_for_deletion
    );
    // Single flight inside each process: at most one creation attempt per process.
    assert!(a.keks_created <= 1 && b.keks_created <= 1);
    let created = a.keks_created + b.keks_created;
    let orphans = a.orphans_scheduled_for_deletion + b.orphans_scheduled_for_deletion;
    assert!(created >= 1);
    assert_eq!(
        orphans,
        created - 1,
        "every key but the winner is scheduled for deletion"
    );

    let kms = broker_kms().await;
    let described = kms.describe(&KekRef::platform(winner)).await.unwrap();
    assert!(described.enabled, "the winner stays enabled");
    assert_eq!(
        kms.find_alias(&process_a.alias_for(&ctx))
            .await
            .unwrap()
            .as_deref(),
        Some(winner.as_str())
    );

    // A third process finds the KEK by alias and creates nothing.
    let process_c = Keyring::new(Arc::new(broker_kms().await), &prefix).unwrap();
    assert_eq!(&process_c.platform_kek(&ctx).await.unwrap().key_id, winner);
    assert_eq!(process_c.stats().keks_created, 0);
}

#[tokio::test]
async fn a_lost_creation_race_schedules_the_orphan_for_deletion() {
    let prefix = unique_prefix("orphan");
    let ctx = context(&[("organization_id", "org_orphan")]);
    // The other process: creates the KEK and its alias first.
    let other = Keyring::new(Arc::new(broker_kms().await), &prefix).unwrap();
    let winner = other.platform_kek(&ctx).await.unwrap().key_id;
    // This process looked the alias up just before that, so it goes on to create its own key.
    let provider = Arc::new(CountingProvider::new(broker_kms().await));
    provider
        .hide_next_alias
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let keyring = Keyring::new(provider.clone(), &prefix).unwrap();

    assert_eq!(keyring.platform_kek(&ctx).await.unwrap().key_id, winner);
    let stats = keyring.stats();
    assert_eq!(
        (stats.keks_created, stats.orphans_scheduled_for_deletion),
        (1, 1)
    );
    let orphan = provider.created_keys.lock().unwrap()[0].clone();
    assert_ne!(orphan, winner);
    let kms = broker_kms().await;
    assert_eq!(
        kms.describe(&KekRef::platform(&orphan))
            .await
            .unwrap()
            .state,
        "PendingDeletion"
    );
    assert!(
        kms.describe(&KekRef::platform(&winner))
            .await
            .unwrap()
            .enabled
    );
}

#[tokio::test]
async fn distinct_contexts_get_distinct_keks() {
    let keyring = Keyring::new(Arc::new(broker_kms().await), &unique_prefix("distinct")).unwrap();
    let a = keyring
        .platform_kek(&context(&[("organization_id", "org_a")]))
        .await
        .unwrap();
    let b = keyring
        .platform_kek(&context(&[("organization_id", "org_b")]))
        .await
        .unwrap();
    let a_pii = keyring
        .platform_kek(&context(&[
            ("organization_id", "org_a"),
            ("data_type", "pii"),
        ]))
        .await
        .unwrap();
    assert_ne!(a.key_id, b.key_id);
    assert_ne!(a.key_id, a_pii.key_id);
    assert_eq!(keyring.stats().keks_created, 3);
}
