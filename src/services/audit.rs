//! Audit listing (`GET /admin/v1/events`): the events query, read after the writer's queue is
//! flushed so a caller sees its own earlier requests' events. Writing goes through `AuditLog`.

use crate::audit::AuditLog;
use crate::error::Error;
use crate::store::Store;
pub use crate::store::{AuditEvent, EventQuery};

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
}
