//! How long this process may trust its routing view. With several brokers on one database,
//! another broker's revocation reaches this one through a notification or, at worst, the next
//! revision check; the coherence worker confirms the view after every check that read the stored
//! revisions (and reloaded the view if they moved). When checks stop succeeding (the database is
//! slow, unreachable, or locked), a revocation made elsewhere could be going unseen, so once the
//! last confirmation's bound has passed every key resolution is refused (fail closed) until a
//! check succeeds again. Nothing is enforced until the first confirmation: a single process on
//! SQLite never confirms, since nothing else can change its view.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::store::StoreError;

/// Not enforced (no confirmation yet).
const UNENFORCED: u64 = u64::MAX;

pub struct ViewFreshness {
    origin: Instant,
    /// Milliseconds after `origin` until which the view is trusted, or [`UNENFORCED`].
    valid_until_ms: AtomicU64,
}

impl Default for ViewFreshness {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            valid_until_ms: AtomicU64::new(UNENFORCED),
        }
    }
}

impl ViewFreshness {
    /// The view is known current as of a check, and may be trusted until `until`.
    pub fn confirm_until(&self, until: Instant) {
        let ms = until.saturating_duration_since(self.origin).as_millis();
        self.valid_until_ms.store(
            u64::try_from(ms).unwrap_or(UNENFORCED - 1),
            Ordering::Release,
        );
    }

    /// Refuses when the last confirmation has run out.
    pub fn check(&self) -> Result<(), StoreError> {
        let until = self.valid_until_ms.load(Ordering::Acquire);
        if until == UNENFORCED {
            return Ok(());
        }
        let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(UNENFORCED);
        if now <= until {
            return Ok(());
        }
        Err(StoreError::Unavailable(
            "this broker cannot confirm its key routing is current (its revision check has not reached the database in time); refusing rather than risk serving a key revoked through another broker".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn trusted_until_the_confirmation_runs_out_and_again_after_the_next() {
        let freshness = ViewFreshness::default();
        assert!(
            freshness.check().is_ok(),
            "not enforced before a confirmation"
        );
        freshness.confirm_until(Instant::now() + Duration::from_secs(60));
        assert!(freshness.check().is_ok());
        freshness.confirm_until(Instant::now());
        std::thread::sleep(Duration::from_millis(5));
        assert!(matches!(freshness.check(), Err(StoreError::Unavailable(_))));
        freshness.confirm_until(Instant::now() + Duration::from_secs(60));
        assert!(freshness.check().is_ok());
    }
}
