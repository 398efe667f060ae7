//! Audit listing and export (`GET /admin/v1/events`): the events query, read after the writer's
//! queue is flushed so a caller sees its own earlier requests' events. Writing goes through
//! `AuditLog`; verifying the hash chain is `audit_verify`.

use crate::audit::AuditLog;
use crate::error::Error;
use crate::store::Store;
pub use crate::store::{AuditEvent, ChainLink, EventQuery, ExportQuery, StoredEvent};

pub struct Audit {
    log: AuditLog,
    store: Store,
}

impl Audit {
    pub fn new(log: AuditLog, store: Store) -> Self {
        Self { log, store }
    }

    /// The audit writer's queue depth, commit latency and batch sizes.
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.log.register_metrics(registry);
    }

    /// Waits until every event queued so far is committed.
    pub async fn flush(&self) {
        self.log.flush().await;
    }

    /// One page of events matching `query`, and whether more follow.
    pub async fn list_events(&self, query: EventQuery) -> Result<(Vec<AuditEvent>, bool), Error> {
        // Read your writes: events still queued for group commit are committed first.
        self.flush().await;
        Ok(self.store.list_events(query).await?)
    }

    /// Up to `limit` events matching `query` after `after_seq` (`StoredEvent::seq`), with their
    /// chain fields, oldest first: an export holds one such page at a time. The first page
    /// (`after_seq` 0) waits for queued events first, as a listing does.
    pub async fn export_page(
        &self,
        query: ExportQuery,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, Error> {
        if after_seq == 0 {
            self.flush().await;
        }
        Ok(self.store.export_events(query, after_seq, limit).await?)
    }
}
