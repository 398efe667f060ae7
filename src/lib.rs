//! byok-broker: multi-tenant envelope encryption with bring-your-own AWS KMS keys.
//! Module declarations and re-exports only; see ARCHITECTURE.md for the module map.

pub mod aead;
pub mod audit;
pub mod auth;
pub mod broker;
pub mod byok;
pub mod cache;
pub mod config;
pub mod context;
pub mod context_json;
pub mod data_key;
pub mod envelope;
pub mod error;
pub mod http;
pub mod keyring;
pub mod kms;
pub mod metrics;
pub mod platform_kek;
pub mod platform_kek_watch;
pub mod rate_limit;
pub mod rewrap;
pub mod store;
pub mod timestamp;
pub mod vault;
