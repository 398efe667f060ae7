//! Recently read object records (current version, sealed bytes: ciphertext only, no secrets),
//! so a hot read does not go to the database. Every write of an object through this store
//! invalidates it, and a read that raced with a write never re-inserts what it read (generation
//! check). Sound only while this process is the only writer of its database (the embedded SQLite
//! store): another process's write would stay unseen here for up to the TTL. So on PostgreSQL,
//! which other broker processes may share, it is off and every read asks the database.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::objects::ObjectRecord;

/// Upper bound on cached record bytes.
const CAPACITY_BYTES: u64 = 64 * 1024 * 1024;
/// A safety net: even without a write, a record is re-read after this long.
const TTL: Duration = Duration::from_secs(60);

pub(super) struct RecordCache {
    records: moka::sync::Cache<String, Arc<ObjectRecord>>,
    generation: AtomicU64,
    /// `false`: nothing is kept (a database other processes write).
    enabled: bool,
}

impl RecordCache {
    /// A cache that keeps nothing: for a database other processes may write.
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::new()
        }
    }

    pub fn new() -> Self {
        Self {
            enabled: true,
            records: moka::sync::Cache::builder()
                .max_capacity(CAPACITY_BYTES)
                .weigher(|id: &String, record: &Arc<ObjectRecord>| {
                    let bytes = id.len()
                        + record.sealed.len()
                        + record.name.len()
                        + record.context_json.len()
                        + 256;
                    u32::try_from(bytes).unwrap_or(u32::MAX)
                })
                .time_to_live(TTL)
                .build(),
            generation: AtomicU64::new(0),
        }
    }

    pub fn get(&self, id: &str) -> Option<Arc<ObjectRecord>> {
        self.records.get(id)
    }

    /// The generation to pass to [`RecordCache::insert_if_current`] for a read that starts now.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Caches a record read from the database, unless a write happened since the read began.
    pub fn insert_if_current(&self, record: Arc<ObjectRecord>, generation_at_read: u64) {
        if self.enabled && self.generation() == generation_at_read {
            self.records.insert(record.id.clone(), record);
        }
    }

    /// Called after every committed write of `id`.
    pub fn invalidate(&self, id: &str) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.records.invalidate(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, version: &str) -> Arc<ObjectRecord> {
        Arc::new(ObjectRecord {
            id: id.into(),
            name: "n".into(),
            context_json: "{}".into(),
            current_version: version.into(),
            updated_at: String::new(),
            updated_by_id: String::new(),
            updated_by_name: String::new(),
            kek_id: "k".into(),
            sealed: vec![1, 2, 3],
        })
    }

    #[test]
    fn a_read_that_raced_with_a_write_is_not_cached() {
        let cache = RecordCache::new();
        let before_read = cache.generation();
        cache.invalidate("a"); // a write commits while the read is in flight
        cache.insert_if_current(record("a", "v1"), before_read);
        assert!(
            cache.get("a").is_none(),
            "the stale read must not be cached"
        );

        let fresh = cache.generation();
        cache.insert_if_current(record("a", "v2"), fresh);
        assert_eq!(cache.get("a").unwrap().current_version, "v2");
        cache.invalidate("a");
        assert!(cache.get("a").is_none());
    }

    #[test]
    fn a_disabled_cache_keeps_nothing() {
        let cache = RecordCache::disabled();
        cache.insert_if_current(record("a", "v1"), cache.generation());
        assert!(cache.get("a").is_none());
    }
}
