//! DEK cache against LocalStack: 100 concurrent decrypts of one wrapped DEK make exactly one KMS
//! `Decrypt` (counted both by the cache and by an independent counting provider), and a purge by
//! KEK forces the next read back to KMS.

use crate::common;

use std::time::Duration;

use byok_broker::cache::{DekCache, DekCacheConfig};
use byok_broker::kms::{KekRef, KeyProvider};
use common::*;
use futures_util::future::join_all;

#[tokio::test]
async fn hundred_concurrent_decrypts_make_one_kms_call() {
    let kms = CountingProvider::new(broker_kms().await);
    let kek = KekRef::platform(create_key(PLATFORM_ACCOUNT).await);
    let ctx = context(&[("organization_id", "org_cache")]);
    let generated = kms.generate_data_key(&kek, &ctx).await.unwrap();
    let cache = DekCache::new(DekCacheConfig {
        ttl: Duration::from_secs(60),
        capacity: 1000,
    });

    let reads = (0..100).map(|_| cache.unwrap(&kms, &kek, &generated.wrapped, &ctx));
    let keys = join_all(reads).await;
    assert!(
        keys.iter()
            .all(|k| k.as_ref().unwrap().expose_secret() == generated.key.expose_secret())
    );
    cache.run_pending_tasks().await; // entry counts settle lazily
    let stats = cache.stats();
    assert_eq!(stats.entries, 1);
    println!(
        "100 concurrent decrypts: KMS Decrypt calls seen by provider = {}, cache stats = {stats:?}",
        kms.decrypt_calls()
    );
    assert_eq!(kms.decrypt_calls(), 1);
    assert_eq!(stats.kms_calls, 1);
    assert_eq!(stats.hits + stats.misses, 100);

    // Another 100 reads, sequential and warm: all hits, still one KMS call in total.
    for _ in 0..100 {
        cache
            .unwrap(&kms, &kek, &generated.wrapped, &ctx)
            .await
            .unwrap();
    }
    assert_eq!(kms.decrypt_calls(), 1);
    assert_eq!(cache.stats().hits, stats.hits + 100);

    cache.purge_kek(&kek.key_id).await;
    cache
        .unwrap(&kms, &kek, &generated.wrapped, &ctx)
        .await
        .unwrap();
    assert_eq!(
        kms.decrypt_calls(),
        2,
        "a purged DEK is fetched from KMS again"
    );
}

#[tokio::test]
async fn a_failed_unwrap_is_not_cached() {
    let kms = CountingProvider::new(broker_kms().await);
    let arn = create_key(PLATFORM_ACCOUNT).await;
    let kek = KekRef::platform(&arn);
    let ctx = context(&[("organization_id", "org_cache_fail")]);
    let generated = kms.generate_data_key(&kek, &ctx).await.unwrap();
    let cache = DekCache::new(DekCacheConfig::default());

    let raw = raw_kms(PLATFORM_ACCOUNT).await;
    raw.disable_key().key_id(&arn).send().await.unwrap();
    assert!(
        cache
            .unwrap(&kms, &kek, &generated.wrapped, &ctx)
            .await
            .unwrap_err()
            .is_revoked()
    );
    raw.enable_key().key_id(&arn).send().await.unwrap();
    cache
        .unwrap(&kms, &kek, &generated.wrapped, &ctx)
        .await
        .unwrap();
    assert_eq!(kms.decrypt_calls(), 2);
}
