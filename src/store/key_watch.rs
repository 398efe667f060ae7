//! What the key-state watcher shares between instances about platform KEKs: the failure its
//! leader found for each (read by every instance, which refuses the KEK), and which KEKs some
//! instance holds DEKs of in its cache (so the leader, which polls KMS alone, checks those too).
//! Times are on the database's clock.

use std::time::Duration;

use super::sql::{Sql, args};
use super::{Store, StoreError};

impl Store {
    /// Notes that this instance has DEKs of `kek_ids` cached: the leader checks them until
    /// `for_at_least` from now (the caller reports again each interval while they stay cached).
    pub async fn report_cached_platform_keks(
        &self,
        kek_ids: Vec<String>,
        for_at_least: Duration,
    ) -> Result<(), StoreError> {
        if kek_ids.is_empty() {
            return Ok(());
        }
        let ttl = i64::try_from(for_at_least.as_millis()).unwrap_or(i64::MAX);
        self.run(move |tx| {
            let now = tx.dialect().now_ms();
            let sql = format!(
                "INSERT INTO platform_kek_watch (kek_id, cached_until_ms) VALUES (?1, {now} + ?2) \
                 ON CONFLICT (kek_id) DO UPDATE SET cached_until_ms = excluded.cached_until_ms"
            );
            for kek_id in &kek_ids {
                tx.execute(&sql, args![kek_id, ttl])?;
            }
            Ok(())
        })
        .await
    }

    /// Platform KEKs the leader should check: cached by some instance now, or marked unusable
    /// (to notice their recovery).
    pub async fn watched_platform_keks(&self) -> Result<Vec<String>, StoreError> {
        self.read(|c| {
            let sql = format!(
                "SELECT kek_id FROM platform_kek_watch WHERE failure IS NOT NULL OR cached_until_ms > {} ORDER BY kek_id",
                c.dialect().now_ms()
            );
            c.query(&sql, &[])?.iter().map(|r| r.get(0)).collect()
        })
        .await
    }

    /// Records the leader's verdict on a platform KEK (`None`: usable); true when it changed
    /// what was stored.
    pub async fn record_platform_kek_state(
        &self,
        kek_id: &str,
        failure: Option<String>,
    ) -> Result<bool, StoreError> {
        let kek_id = kek_id.to_owned();
        self.run(move |tx| {
            let stored: Option<Option<String>> = tx
                .query_opt(
                    "SELECT failure FROM platform_kek_watch WHERE kek_id = ?1",
                    args![kek_id],
                )?
                .map(|r| r.get(0))
                .transpose()?;
            // No row is "usable": only a failure is news then.
            if stored.clone().flatten() == failure {
                return Ok(false);
            }
            // An upsert: an instance may report the KEK cached in between.
            tx.execute(
                "INSERT INTO platform_kek_watch (kek_id, failure) VALUES (?1, ?2) \
                 ON CONFLICT (kek_id) DO UPDATE SET failure = excluded.failure",
                args![kek_id, failure],
            )?;
            Ok(true)
        })
        .await
    }

    /// Platform KEKs the leader found unusable, with the failure each reports.
    pub async fn platform_kek_failures(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.read(|c: &mut dyn Sql| {
            c.query(
                "SELECT kek_id, failure FROM platform_kek_watch WHERE failure IS NOT NULL ORDER BY kek_id",
                &[],
            )?
            .iter()
            .map(|r| Ok((r.get(0)?, r.get(1)?)))
            .collect()
        })
        .await
    }
}
