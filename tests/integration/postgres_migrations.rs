//! Migrations on PostgreSQL: brokers starting together on an empty database migrate it once (the
//! advisory lock), and a database a newer broker migrated is refused with both versions named.
//! SQLite's side of the second is a unit test (src/store/migrations/sqlite.rs).

use crate::common;

use byok_broker::config::{Redacted, StoreOptions};
use byok_broker::store::{Store, StoreError};
use common::{TestDir, database};
use futures_util::future::join_all;

/// Store options for the PostgreSQL database of `dir`; `None` on a SQLite run.
fn postgres_options(dir: &TestDir) -> Option<StoreOptions> {
    let Some(url) = database::broker_url(dir) else {
        eprintln!("not run: PostgreSQL-only (BYOK_TEST_DATABASE_URL is unset)");
        return None;
    };
    Some(StoreOptions {
        url: Some(Redacted(zeroize::Zeroizing::new(url))),
        ..StoreOptions::default()
    })
}

#[tokio::test]
async fn brokers_starting_together_on_an_empty_database_migrate_it_once() {
    let dir = TestDir::new("migrate-together");
    let Some(options) = postgres_options(&dir) else {
        return;
    };
    let opened = join_all((0..6).map(|_| Store::open_configured(&dir, options.clone()))).await;
    for store in &opened {
        assert!(
            store.is_ok(),
            "every store opened: {:?}",
            store.as_ref().err()
        );
    }
    for store in opened.into_iter().flatten() {
        store.close().await.unwrap();
    }
    let version = database::query_i64(&dir, "SELECT version FROM schema_version", &[]).await;
    let revisions = database::query_i64(&dir, "SELECT COUNT(*) FROM byok_revision", &[]).await;
    assert_eq!(revisions, 1, "the baseline ran once");
    assert!(version >= 9, "at the latest schema: {version}");
}

#[tokio::test]
async fn a_database_a_newer_broker_migrated_is_refused_naming_both_versions() {
    let dir = TestDir::new("migrate-newer");
    let Some(options) = postgres_options(&dir) else {
        return;
    };
    let store = Store::open_configured(&dir, options.clone()).await.unwrap();
    store.close().await.unwrap();
    let current = database::query_i64(&dir, "SELECT version FROM schema_version", &[]).await;
    database::execute(&dir, "UPDATE schema_version SET version = version + 5", &[]).await;
    let Err(refused) = Store::open_configured(&dir, options).await else {
        panic!("a newer schema was accepted")
    };
    assert_eq!(
        refused,
        StoreError::SchemaTooNew {
            database: current + 5,
            binary: current
        }
    );
    let message = refused.to_string();
    assert!(
        message.contains(&(current + 5).to_string()) && message.contains(&current.to_string()),
        "{message}"
    );
}
