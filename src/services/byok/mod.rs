//! Bring your own key: tenant CMK bindings (registration with verification, enable/disable,
//! rotation, deletion), state changes, and the key-state watcher's passes over tenant CMKs and
//! platform KEKs. The routing view it maintains lives in `keyring::bindings`.

pub mod external_id;
mod key_event;
mod object_counts;
pub mod platform_kek_watch;
pub mod push;
mod refresh;
mod rotation_status;
pub mod service;
mod verify;
pub mod watcher;

use std::sync::Arc;

use crate::audit::AuditLog;
use crate::cache::DekCache;
use crate::keyring::Keyring;
use crate::kms::KeyProvider;
use crate::metrics::Metrics;
// Re-exported: the BYOK key view shows it without the HTTP layer reaching into the store.
use crate::store::Store;
pub use crate::store::TenantKekRotation;

/// The BYOK use cases. Every change is written to the store first, then the routing view is
/// reloaded (revisioned: an older view never replaces a newer one) and affected DEKs purged.
pub struct Byok {
    store: Store,
    keyring: Arc<Keyring>,
    dek_cache: DekCache,
    audit: AuditLog,
    metrics: Arc<Metrics>,
    /// The store's reserved connections, for reloading the routing view (see `Store::reserved`).
    routing_store: Store,
    /// The operator allows registrations without a role (the broker's own identity reaches the key).
    allow_direct_key_access: bool,
}

/// What the BYOK service is built from.
pub struct ByokParts {
    pub store: Store,
    pub keyring: Arc<Keyring>,
    pub dek_cache: DekCache,
    pub audit: AuditLog,
    pub metrics: Arc<Metrics>,
    pub allow_direct_key_access: bool,
}

impl Byok {
    pub fn new(parts: ByokParts) -> Self {
        Self {
            routing_store: parts.store.reserved(),
            store: parts.store,
            keyring: parts.keyring,
            dek_cache: parts.dek_cache,
            audit: parts.audit,
            metrics: parts.metrics,
            allow_direct_key_access: parts.allow_direct_key_access,
        }
    }

    fn provider(&self) -> &dyn KeyProvider {
        self.keyring.provider().as_ref()
    }
}
