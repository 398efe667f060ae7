//! Use cases, one module each. A service holds only the components it needs (private fields) and
//! never the application state; handlers call services, services call keyring, cache, store, kms.

pub mod actor;
pub mod api_keys;
pub mod audit;
pub mod audit_verify;
pub mod byok;
pub mod coherence;
pub mod platform_keks;
pub mod portal;
pub mod readiness;
pub mod refusals;
pub mod retention;
pub mod rewrap;
pub mod vault;
