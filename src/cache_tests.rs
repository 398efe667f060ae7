//! DEK cache unit tests with an in-memory loader: single flight, expiry, purge (also of loads in
//! flight), errors not cached, and the disabled mode. The LocalStack version lives in tests/.

use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use futures_util::future::join_all;

use super::*;
use crate::kms::KmsFailure;

fn ctx() -> KeyContext {
    KeyContext::new([("organization_id", "org_acme")]).unwrap()
}

fn cache(ttl_ms: u64) -> DekCache {
    DekCache::new(DekCacheConfig {
        ttl: Duration::from_millis(ttl_ms),
        capacity: 1000,
    })
}

async fn slow_key(calls: &AtomicUsize) -> Result<DataKey, KmsError> {
    calls.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(50)).await;
    Ok(DataKey::from_slice(&[5; 32]).unwrap())
}

#[tokio::test]
async fn concurrent_misses_load_once() {
    let cache = cache(60_000);
    let calls = AtomicUsize::new(0);
    let context = ctx();
    let lookups =
        (0..100).map(|_| cache.get_or_load("kek-a", b"wrapped", &context, || slow_key(&calls)));
    let keys = join_all(lookups).await;
    assert!(
        keys.iter()
            .all(|k| k.as_ref().unwrap().expose_secret() == &[5; 32])
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let stats = cache.stats();
    assert_eq!((stats.kms_calls, stats.hits + stats.misses), (1, 100));
    cache
        .get_or_load("kek-a", b"wrapped", &context, || slow_key(&calls))
        .await
        .unwrap();
    assert_eq!(cache.stats().hits, stats.hits + 1);
}

#[tokio::test]
async fn key_includes_kek_wrapped_bytes_and_context() {
    let cache = cache(60_000);
    let calls = AtomicUsize::new(0);
    let other_ctx = KeyContext::new([("organization_id", "org_b")]).unwrap();
    cache
        .get_or_load("kek-a", b"w1", &ctx(), || slow_key(&calls))
        .await
        .unwrap();
    cache
        .get_or_load("kek-b", b"w1", &ctx(), || slow_key(&calls))
        .await
        .unwrap();
    cache
        .get_or_load("kek-a", b"w2", &ctx(), || slow_key(&calls))
        .await
        .unwrap();
    cache
        .get_or_load("kek-a", b"w1", &other_ctx, || slow_key(&calls))
        .await
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn entries_expire_after_ttl() {
    let cache = cache(100);
    let calls = AtomicUsize::new(0);
    cache
        .get_or_load("k", b"w", &ctx(), || slow_key(&calls))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    cache
        .get_or_load("k", b"w", &ctx(), || slow_key(&calls))
        .await
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn purge_drops_only_that_keks_entries() {
    let cache = cache(60_000);
    let calls = AtomicUsize::new(0);
    cache
        .get_or_load("kek-a", b"w", &ctx(), || slow_key(&calls))
        .await
        .unwrap();
    cache
        .get_or_load("kek-b", b"w", &ctx(), || slow_key(&calls))
        .await
        .unwrap();
    cache.purge_kek("kek-a").await;
    assert_eq!(cache.stats().entries, 1);
    cache
        .get_or_load("kek-b", b"w", &ctx(), || slow_key(&calls))
        .await
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2, "kek-b stayed cached");
    cache
        .get_or_load("kek-a", b"w", &ctx(), || slow_key(&calls))
        .await
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 3, "kek-a was reloaded");
}

#[tokio::test]
async fn purge_during_a_load_keeps_its_result_out_of_the_cache() {
    let cache = cache(60_000);
    let calls = AtomicUsize::new(0);
    let context = ctx();
    let load = cache.get_or_load("kek-a", b"w", &context, || slow_key(&calls));
    let purge = async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        cache.purge_kek("kek-a").await;
    };
    let (loaded, ()) = tokio::join!(load, purge);
    loaded.unwrap();
    cache.run_pending_tasks().await;
    assert_eq!(cache.stats().entries, 0);
}

#[tokio::test]
async fn errors_are_shared_but_not_cached() {
    let cache = cache(60_000);
    let failing = || async { Err(KmsError::new(KmsFailure::KeyDisabled, "disabled")) };
    let err = cache
        .get_or_load("k", b"w", &ctx(), failing)
        .await
        .unwrap_err();
    assert_eq!(err.failure, KmsFailure::KeyDisabled);
    let calls = AtomicUsize::new(0);
    cache
        .get_or_load("k", b"w", &ctx(), || slow_key(&calls))
        .await
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn zero_ttl_disables_caching() {
    let cache = cache(0);
    let calls = AtomicUsize::new(0);
    for _ in 0..3 {
        cache
            .get_or_load("k", b"w", &ctx(), || slow_key(&calls))
            .await
            .unwrap();
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(cache.stats().kms_calls, 3);
}
