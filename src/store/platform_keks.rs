//! The ledger of platform KEKs created just in time, kept for the creation limits: one row per
//! creation, reserved in the same transaction that checks the limits (so concurrent creations
//! can never overshoot), confirmed with the KEK id once its alias exists, released if it failed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::objects::serialize_counting;
use super::sql::args;
use super::{Store, StoreError};

const HOUR_SECONDS: i64 = 3600;

/// A reserved creation: confirm it once the KEK's alias exists, release it otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlatformKekReservation(i64);

/// Why a new platform KEK may not be created now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KekCreationRefused {
    /// The creator made its hourly number of KEKs; the oldest of them leaves the window after this.
    HourlyQuota { retry_after: Duration },
    /// The deployment holds its maximum number of platform KEKs.
    Total { limit: u64 },
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Store {
    /// Reserves one new platform KEK if the deployment holds fewer than `max_total` and `creator`
    /// (an API key id; `None` for the broker's own jobs, which only the total limits) created
    /// fewer than `per_hour` in the last hour.
    pub async fn reserve_platform_kek(
        &self,
        creator: Option<&str>,
        context_hash: &str,
        per_hour: u32,
        max_total: u64,
    ) -> Result<Result<PlatformKekReservation, KekCreationRefused>, StoreError> {
        let (creator, context_hash) = (creator.map(str::to_owned), context_hash.to_owned());
        self.run(move |tx| {
            // The limits are counts, not rows to lock: reservations take turns.
            serialize_counting(tx, "platform_keks")?;
            let now = unix_now();
            let total: u64 = tx.query_one("SELECT COUNT(*) FROM platform_keks", &[])?.get(0)?;
            if total >= max_total {
                return Ok(Err(KekCreationRefused::Total { limit: max_total }));
            }
            if let Some(creator) = &creator {
                let row = tx.query_one(
                    "SELECT COUNT(*), MIN(created_unix) FROM platform_keks WHERE creator = ?1 AND created_unix > ?2",
                    args![creator, now - HOUR_SECONDS],
                )?;
                let (recent, oldest): (u64, Option<i64>) = (row.get(0)?, row.get(1)?);
                if recent >= u64::from(per_hour) {
                    let leaves_window = oldest.map_or(HOUR_SECONDS, |t| t + HOUR_SECONDS - now);
                    let retry_after = Duration::from_secs(leaves_window.clamp(1, HOUR_SECONDS) as u64);
                    return Ok(Err(KekCreationRefused::HourlyQuota { retry_after }));
                }
            }
            let id: i64 = tx
                .query_one(
                    "INSERT INTO platform_keks (creator, kek_id, context_hash, created_unix) VALUES (?1, NULL, ?2, ?3) RETURNING id",
                    args![creator, context_hash, now],
                )?
                .get(0)?;
            Ok(Ok(PlatformKekReservation(id)))
        })
        .await
    }

    /// Records the KEK a reservation created.
    pub async fn confirm_platform_kek(
        &self,
        reservation: PlatformKekReservation,
        kek_id: &str,
    ) -> Result<(), StoreError> {
        let kek_id = kek_id.to_owned();
        self.run(move |c| {
            c.execute(
                "UPDATE platform_keks SET kek_id = ?2 WHERE id = ?1",
                args![reservation.0, kek_id],
            )?;
            Ok(())
        })
        .await
    }

    /// The context hash of the selection a confirmed platform KEK was created for; `None` when the
    /// table does not know `kek_id`, `Some("")` for KEKs counted at upgrade (selection unknown).
    pub async fn platform_kek_selection(&self, kek_id: &str) -> Result<Option<String>, StoreError> {
        let kek_id = kek_id.to_owned();
        self.read(move |c| {
            c.query_opt(
                "SELECT context_hash FROM platform_keks WHERE kek_id = ?1",
                args![kek_id],
            )?
            .map(|row| row.get(0))
            .transpose()
        })
        .await
    }

    /// Gives a reservation back: the creation failed or another process's KEK won the alias.
    pub async fn release_platform_kek(
        &self,
        reservation: PlatformKekReservation,
    ) -> Result<(), StoreError> {
        self.run(move |c| {
            c.execute(
                "DELETE FROM platform_keks WHERE id = ?1",
                args![reservation.0],
            )?;
            Ok(())
        })
        .await
    }
}
