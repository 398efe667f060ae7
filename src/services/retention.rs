//! The retention purge: at start and then every `store.purge_interval_seconds`, deletes expired
//! idempotency records and, when `store.audit_retention_days` is set, older audit events. The
//! store deletes in bounded batches; a failed run is logged and the next one resumes.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::{Purged, Store};
use crate::timestamp::Timestamp;

pub async fn run(store: Store, interval: Duration, stop: CancellationToken) {
    loop {
        // A purge in progress finishes its batch: shutdown waits for at most one write.
        match store.purge_expired(Timestamp::now()).await {
            Ok(purged) if purged != Purged::default() => tracing::info!(
                idempotency_records = purged.idempotency_records,
                audit_events = purged.audit_events,
                "retention purge"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retention purge failed; the next run resumes"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}
