//! Bring your own key: tenant CMK bindings (registration with verification, enable/disable,
//! rotation, deletion), the routing view every request consults, and the key-state watcher.

pub mod bindings;
pub mod external_id;
pub mod service;
mod verify;
pub mod watcher;
