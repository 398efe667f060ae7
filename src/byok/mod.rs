//! Bring your own key: tenant CMK bindings (registration with verification, enable/disable,
//! rotation, deletion) and the key-state watcher; the routing view lives in `keyring::bindings`.

pub mod external_id;
pub mod service;
mod verify;
pub mod watcher;
